"""The one exception hierarchy of hefl.

Every error hefl raises on purpose derives from :class:`HeflError`, so a caller can catch
everything hefl refuses with one ``except`` clause, and narrower classes say which layer refused.
"""

from __future__ import annotations


class HeflError(Exception):
    """Base class of every error hefl raises on purpose."""


class ConfigError(HeflError, ValueError):
    """A configuration value, argument or option is invalid."""


class CryptoError(HeflError):
    """A cryptographic operation was refused (bad key, plaintext or ciphertext)."""


class KeyMismatchError(CryptoError):
    """An operation mixed ciphertexts or keys that belong to different Paillier keys."""


class PlaintextRangeError(CryptoError, ValueError):
    """A plaintext does not fit the key's message space."""


class CiphertextRangeError(CryptoError, ValueError):
    """A ciphertext is outside 0 < c < n² or not invertible mod n²."""


class PackingOverflowError(CryptoError, OverflowError):
    """A packing layout cannot hold the values or sums it was asked to hold."""


class CodecError(HeflError, ValueError):
    """A message could not be encoded or decoded (malformed, oversized or unknown type)."""


class TransportError(HeflError):
    """A transport failed to deliver or receive."""


class TransportClosed(TransportError):
    """The transport was closed by this party; it can no longer send or receive."""


class TransportBroken(TransportError):
    """The transport failed underneath (socket error, address in use, unreachable peer)."""


class PeerFailed(HeflError):
    """Another party of the federation failed, died or went silent.

    Attributes:
        peer: the name of the party that failed.
        cause: a short description of what happened to it.
    """

    def __init__(self, peer: str, cause: str) -> None:
        super().__init__(f"party {peer!r} failed: {cause}")
        self.peer = peer
        self.cause = cause

    def __reduce__(self):  # keep the two fields when crossing a process pool
        return (type(self), (self.peer, self.cause))


class ProtocolError(HeflError):
    """A party broke the protocol: unexpected message, wrong shape, inconsistent data."""


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
]
