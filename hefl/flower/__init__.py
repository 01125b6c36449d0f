"""BatchCrypt inside Flower: packed-Paillier FedAvg whose server never sees the model.

Two changes turn a Flower app (message API) into one whose server only adds ciphertexts: the
ServerApp runs :class:`BatchCryptFedAvg` instead of ``FedAvg``, and the ClientApp gets
``mods=[batchcrypt_mod(cfg)]``. The clients agree on a Paillier key through the server, sealed
client-to-client (X25519 + HKDF + AES-GCM), quantize their updates with dACIQ clipping per
layer, pack and encrypt them; the server adds the ciphertexts; each client decrypts 1/k of the
sum and the slices travel sealed client-to-client. :func:`run_local` runs an app on Flower's
simulation engine in one process (no Ray). Needs the ``flower`` extra (``pip install
hefl[flower]``). See ``docs/tutorials/flower.md`` and ``docs/reference/flower.md``.
"""

from hefl.flower._client import BatchCryptMod, batchcrypt_mod
from hefl.flower._runtime import InProcessBackend, LocalRun, MessageLog, Relayed, run_local
from hefl.flower._server import BatchCryptFedAvg
from hefl.flower._state import global_arrays

__all__ = [
    "BatchCryptFedAvg",
    "BatchCryptMod",
    "InProcessBackend",
    "LocalRun",
    "MessageLog",
    "Relayed",
    "batchcrypt_mod",
    "global_arrays",
    "run_local",
]
