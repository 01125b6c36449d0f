"""The structural types the crypto modules name each other by.

A public key makes :class:`~hefl.crypto.CipherVector` objects, a vector needs its key's
modulus, and an :class:`~hefl.crypto.ObfuscatorPool` serves a key. Naming the concrete
classes in each other's signatures would tie ``_keys``, ``_vector`` and ``_pool`` into one
import circle, so each module names what it uses of the others through these protocols.
"""

from __future__ import annotations

from typing import Any, Protocol

from gmpy2 import mpz


class KeyModulus(Protocol):
    """What a ciphertext vector uses of its public key: the modulus and its derived sizes."""

    n: mpz
    nsquare: mpz
    n_bits: int
    max_int: mpz
    key_id: bytes

    @property
    def ciphertext_bytes(self) -> int: ...

    def obfuscators(
        self, count: int, *, pool: ObfuscatorSource | None = None, method: str = "djn"
    ) -> list[mpz]: ...

    def to_phe(self) -> Any: ...


class KeyFactors(Protocol):
    """What an obfuscator pool uses of a private key: its public key and the factors of n."""

    public_key: Any
    p: mpz
    q: mpz


class ObfuscatorSource(Protocol):
    """What encryption uses of an obfuscator pool: whose key it serves, and fresh values."""

    public_key: Any

    def take(self, count: int) -> list[mpz]: ...
