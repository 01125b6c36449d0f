"""The BatchCrypt roles, gathered in one place: ``aggregator(party, cfg)`` and
``client(party, cfg, work_)``.

One round (mode ``"batchcrypt"``), with k clients (message classes of :mod:`.messages`)::

    client_i  --RoundHeader (length, dtype, layers, key id)--------------------->  aggregator
    client_i  --[first round, dACIQ] PreStats: Enc(per-layer Σx²)-------------->  aggregator
    client_i  <-[first round, dACIQ] PreStatsSum: Enc(Σ_i Σx²) -----------------  aggregator
    client_i  --UploadChunk stream: Enc(packed quantized lanes)----------------->  aggregator
    client_i  --RoundStats: Enc(per-layer Σx²) for the next round's α---------->  aggregator
                                   (the aggregator adds chunks as they arrive)
    client_i  <-DownloadChunk stream (all of it, or only slice i when shared)----  aggregator
    client_i  --DecryptedShare: decrypted slice i------------------------------->  client_j
    client_i  <-RoundStatsSum: Enc(Σ_i Σx²) for the next round ------------------  aggregator
    every client unpacks the lane sums and dequantizes them per layer

Where each step lives: :mod:`.keys` (key agreement), :mod:`.client` (the client's round),
:mod:`.layers` (clipping and quantization per layer), :mod:`.decryption` (download and
shared decryption), :mod:`.aggregator` (the aggregator's round), :mod:`.federation` (who is
who, timing, background tasks). See ``docs/explanation/batchcrypt.md`` for what each party
learns.
"""

from hefl.protocols.batchcrypt.aggregator import Aggregator, AggregatorReport, aggregator
from hefl.protocols.batchcrypt.client import ClientSession, OneShot, RoundSource, client
from hefl.protocols.batchcrypt.federation import RoundTiming, federation_clients

__all__ = [
    "Aggregator",
    "AggregatorReport",
    "ClientSession",
    "OneShot",
    "RoundSource",
    "RoundTiming",
    "aggregator",
    "client",
    "federation_clients",
]
