"""BatchCrypt: packed Paillier aggregation for horizontal federated learning.

Clients clip (dACIQ) and quantize their updates to r-bit integers, pack about a hundred of them
into each Paillier plaintext and encrypt it once; an aggregator that only ever holds the public
key multiplies the ciphertexts; the clients decrypt the exact lane sums. See
``docs/explanation/batchcrypt.md`` for the protocol flow and the trust model.
"""

from hefl.protocols.batchcrypt.aciq import aciq_c, daciq_alpha
from hefl.protocols.batchcrypt.config import AGGREGATOR, BatchCryptConfig, client_name
from hefl.protocols.batchcrypt.datasets import (
    TrainTest,
    load_adult_task,
    load_fmnist,
    load_task,
    split_horizontal,
)
from hefl.protocols.batchcrypt.local import aggregate_local
from hefl.protocols.batchcrypt.models import MLP, make_model
from hefl.protocols.batchcrypt.quantize import dequantize, quantize
from hefl.protocols.batchcrypt.roles import (
    AggregatorReport,
    ClientSession,
    OneShot,
    RoundSource,
    RoundTiming,
    aggregator,
    client,
)
from hefl.protocols.batchcrypt.training import (
    FedTrainer,
    TrainResult,
    TrainSpec,
    party_role,
    train,
)

__all__ = [
    "AGGREGATOR",
    "MLP",
    "AggregatorReport",
    "BatchCryptConfig",
    "ClientSession",
    "FedTrainer",
    "OneShot",
    "RoundSource",
    "RoundTiming",
    "TrainResult",
    "TrainSpec",
    "TrainTest",
    "aciq_c",
    "aggregate_local",
    "aggregator",
    "client",
    "client_name",
    "daciq_alpha",
    "dequantize",
    "load_adult_task",
    "load_fmnist",
    "load_task",
    "make_model",
    "party_role",
    "quantize",
    "split_horizontal",
    "train",
]
