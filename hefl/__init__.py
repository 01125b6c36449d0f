"""hefl: homomorphic-encryption federated learning.

The public namespaces are ``hefl`` (runtime and errors), ``hefl.crypto``, ``hefl.codec``,
``hefl.transports``, ``hefl.protocols.batchcrypt`` and ``hefl.protocols.vf2boost``.
"""

from hefl.errors import (
    CiphertextRangeError,
    CodecError,
    ConfigError,
    CryptoError,
    HeflError,
    KeyMismatchError,
    PackingOverflowError,
    PeerFailed,
    PlaintextRangeError,
    ProtocolError,
    TransportBroken,
    TransportClosed,
    TransportError,
)

__version__ = "0.1.0"

__all__ = [
    "CiphertextRangeError",
    "CodecError",
    "ConfigError",
    "CryptoError",
    "HeflError",
    "KeyMismatchError",
    "PackingOverflowError",
    "PeerFailed",
    "PlaintextRangeError",
    "ProtocolError",
    "TransportBroken",
    "TransportClosed",
    "TransportError",
    "__version__",
]
