"""Paillier keys: generation, encryption, CRT decryption, JSON and phe interop.

The scheme is phe's: g = n + 1, Enc(m) = (1 + m·n)·r mod n², so a ciphertext produced here
is the same integer phe would hold for the same m and r, and keys convert both ways.

Plaintexts are *signed*: m in [−max_int, max_int] with max_int = (n − 1)/2 is encoded as
m mod n, and decryption maps back into that interval. (phe only decodes ``|m| <= n/3 − 1`` as a
number; values between n/3 and n/2 decrypt fine here but raise OverflowError in phe.)
"""

from __future__ import annotations

import hashlib
import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gmpy2
from gmpy2 import mpz

from hefl.crypto import _native, _openssl
from hefl.crypto._ints import as_int_list, check_signed_range
from hefl.crypto._obfuscation import CrtObfuscator, check_method, public_obfuscators
from hefl.crypto._types import ObfuscatorSource
from hefl.crypto._vector import CipherVector
from hefl.errors import ConfigError, CryptoError, KeyMismatchError

DEFAULT_KEY_BITS = 2048
MIN_SECURE_BITS = 2048
MIN_INSECURE_BITS = 128  # below this even tests make no sense (plaintext space too small)
_BLOCK = 1024  # values encrypted per block (bounds the temporary obfuscator list)
_JSON_PUBLIC = "hefl.paillier.public"
_JSON_PRIVATE = "hefl.paillier.private"


def _encrypt_with(n: mpz, nsq: mpz, ms: list[int], rs: list[mpz]) -> list[mpz]:
    """(1 + m·n)·r mod n² for signed m (already range-checked).

    Computed as r + n·(m·r mod n) (mod n²), since m·n·r ≡ n·(m·r mod n) (mod n²): for the
    small m of real data this replaces a 4096-bit modular multiplication by a short product,
    a reduction mod n and a 2048-bit multiplication (about 2× faster).
    """
    out: list[mpz] = []
    append = out.append
    for m, r in zip(ms, rs, strict=True):
        c = r + n * (m * r % n)
        append(c - nsq if c >= nsq else c)
    return out


class PublicKey:
    """A Paillier public key (g = n + 1).

    Attributes:
        n: the modulus (gmpy2 ``mpz``).
        nsquare: n².
        n_bits: bit length of n.
        max_int: the largest ``|m|`` a plaintext may have, (n − 1)/2.
        key_id: an 8-byte fingerprint of n (SHA-256), to tag ciphertexts on the wire.
    """

    __slots__ = ("key_id", "max_int", "n", "n_bits", "nsquare")

    def __init__(self, n: int) -> None:
        """Wrap a modulus.

        Args:
            n: the Paillier modulus (odd, >= 128 bits). Loading does not enforce 2048 bits;
                :func:`generate_keypair` does.

        Raises:
            CryptoError: n is not an odd integer of at least 128 bits.
        """
        try:
            n = mpz(n)
        except TypeError as exc:
            raise CryptoError(f"a Paillier modulus must be an integer, got {type(n)}") from exc
        if n.bit_length() < MIN_INSECURE_BITS or n % 2 == 0:
            raise CryptoError(
                f"invalid Paillier modulus: must be odd and >= {MIN_INSECURE_BITS} bits, "
                f"got {n.bit_length()} bits"
            )
        self.n = n
        self.nsquare = n * n
        self.n_bits = n.bit_length()
        self.max_int = (n - 1) // 2
        self.key_id = hashlib.sha256(int(n).to_bytes((self.n_bits + 7) // 8, "big")).digest()[:8]

    # -- identity -------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self.n == other.n

    def __hash__(self) -> int:
        return hash(("hefl.PublicKey", int(self.n)))

    def __repr__(self) -> str:
        return f"PublicKey(n_bits={self.n_bits}, key_id={self.key_id.hex()})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Precomputed tables are process-wide caches and are rebuilt on demand after unpickling.
        return (PublicKey, (int(self.n),))

    @property
    def ciphertext_bytes(self) -> int:
        """Width in bytes of one serialized ciphertext (512 at 2048 bits)."""
        return (2 * self.n_bits + 7) // 8

    # -- encryption -----------------------------------------------------------------------
    def encrypt(
        self, ints: Any, *, pool: ObfuscatorSource | None = None, method: str = "djn"
    ) -> CipherVector:
        """Encrypt a vector of signed integers.

        Args:
            ints: list / tuple / numpy integer array of values in [−max_int, max_int].
            pool: an :class:`ObfuscatorPool` for this key; when warm, encryption is only
                (1 + m·n)·r mod n² per value (falls back to ``method`` when it runs dry).
            method: ``"djn"`` (default, ``|x| = n_bits/2``), ``"djn-short"`` (opt-in 256-bit
                exponents, extra short-exponent assumption) or ``"rn"`` (textbook rⁿ).

        Returns:
            A :class:`CipherVector` under this key.

        Raises:
            ConfigError: a value is not an integer, or an unknown method.
            PlaintextRangeError: a value is outside [−max_int, max_int].
            KeyMismatchError: the pool belongs to another key.
        """
        check_method(method)
        ms = as_int_list(ints)
        check_signed_range(ms, int(self.max_int))
        out: list[mpz] = []
        for a in range(0, len(ms), _BLOCK):  # obfuscators made and used block by block
            block = ms[a : a + _BLOCK]
            rs = self.obfuscators(len(block), pool=pool, method=method)
            out.extend(_encrypt_with(self.n, self.nsquare, block, rs))
        return CipherVector._make(self, out)

    def obfuscators(
        self, count: int, *, pool: ObfuscatorSource | None = None, method: str = "djn"
    ) -> list[mpz]:
        """Draw ``count`` fresh obfuscators r (n-th residues mod n²), never reused.

        Raises:
            KeyMismatchError: the pool belongs to another key.
        """
        check_method(method)
        if pool is not None:
            if pool.public_key != self:
                raise KeyMismatchError("the obfuscator pool was made for a different key")
            rs = pool.take(count)
            if len(rs) < count:
                rs.extend(public_obfuscators(self.n, count - len(rs), method))
            return rs
        return public_obfuscators(self.n, count, method)

    def encrypt_zero(self, count: int, **kwargs: Any) -> CipherVector:
        """Encrypt ``count`` zeros (fresh randomness each)."""
        return self.encrypt([0] * count, **kwargs)

    # -- serialization --------------------------------------------------------------------
    def to_json(self) -> str:
        """Serialize as JSON: ``{"kind": "hefl.paillier.public", "n": "<hex>"}``."""
        return json.dumps({"kind": _JSON_PUBLIC, "n": format(int(self.n), "x")})

    @classmethod
    def from_json(cls, s: str | bytes) -> PublicKey:
        """Parse :meth:`to_json` output.

        Raises:
            CryptoError: malformed JSON or modulus.
        """
        d = _load_json(s, _JSON_PUBLIC)
        return cls(_hex_int(d, "n"))

    # -- phe interop ----------------------------------------------------------------------
    @classmethod
    def from_phe(cls, phe_public_key: Any) -> PublicKey:
        """Wrap a ``phe.PaillierPublicKey`` (same n, same g = n + 1)."""
        if phe_public_key.g != phe_public_key.n + 1:
            raise CryptoError("only phe keys with g = n + 1 are supported")
        return cls(phe_public_key.n)

    def to_phe(self) -> Any:
        """Return the equivalent ``phe.PaillierPublicKey``."""
        import phe

        return phe.PaillierPublicKey(int(self.n))


class PrivateKey:
    """A Paillier private key (the factors p, q), with CRT decryption and encryption.

    Attributes:
        public_key: the matching :class:`PublicKey`.
        p, q: the prime factors (p < q).
    """

    __slots__ = ("_crt", "_hp", "_hq", "_psq", "_q_inv_p", "_qsq", "p", "public_key", "q")

    def __init__(self, public_key: PublicKey, p: int, q: int) -> None:
        """Build a private key from its factors.

        Raises:
            CryptoError: p·q != n, or p == q.
        """
        p, q = mpz(p), mpz(q)
        if p == q or p * q != public_key.n:
            raise CryptoError(
                "private key factors do not match the public key (p·q != n or p == q)"
            )
        if q < p:
            p, q = q, p
        self.public_key = public_key
        self.p, self.q = p, q
        self._psq, self._qsq = p * p, q * q
        # h_p = L_p(g^(p−1) mod p²)⁻¹ mod p, as in phe
        g = public_key.n + 1
        self._hp = gmpy2.invert((gmpy2.powmod(g, p - 1, self._psq) - 1) // p, p)
        self._hq = gmpy2.invert((gmpy2.powmod(g, q - 1, self._qsq) - 1) // q, q)
        self._q_inv_p = gmpy2.invert(q, p)
        self._crt: CrtObfuscator | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKey) and self.p == other.p and self.q == other.q

    def __hash__(self) -> int:
        return hash(("hefl.PrivateKey", int(self.p), int(self.q)))

    def __repr__(self) -> str:
        return f"PrivateKey(n_bits={self.public_key.n_bits}, key_id={self.public_key.key_id.hex()})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PrivateKey, (self.public_key, int(self.p), int(self.q)))

    # -- decryption -----------------------------------------------------------------------
    def decrypt(self, cv: CipherVector, *, threads: int = 1) -> list[int]:
        """Decrypt a :class:`CipherVector` into signed Python ints in [−max_int, max_int].

        Args:
            cv: ciphertexts under this key.
            threads: > 1 runs the modular exponentiations in that many threads with
                ``gmpy2.powmod_base_list``, which releases the GIL (decryption is the one
                long-powmod operation that scales with threads; default 1, one core).

        Raises:
            KeyMismatchError: ``cv`` is under another key.
            ConfigError: not a CipherVector, or threads < 1.
        """
        if not isinstance(cv, CipherVector):
            raise ConfigError(f"decrypt expects a CipherVector, got {type(cv).__name__}")
        if cv.public_key != self.public_key:
            raise KeyMismatchError(
                f"ciphertexts are under key {cv.public_key.key_id.hex()}, "
                f"this private key is for {self.public_key.key_id.hex()}"
            )
        return self.decrypt_raw(cv._c, threads=threads)

    def decrypt_raw(self, ciphertexts: list[mpz], *, threads: int = 1) -> list[int]:
        """Decrypt raw ciphertext integers (no key check) into signed ints (CRT, as phe)."""
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads must be a positive int, got {threads!r}")
        p, q, psq, qsq = self.p, self.q, self._psq, self._qsq
        hp, hq, qinv = self._hp, self._hq, self._q_inv_p
        pm1, qm1 = p - 1, q - 1
        n = self.public_key.n
        half = self.public_key.max_int
        cs = list(ciphertexts)
        if threads > 1 and len(cs) > 1:
            ups, uqs = _parallel_powmods(cs, pm1, psq, qm1, qsq, threads)
        else:  # constant-time exponentiation: IFMA or libcrypto where there (_openssl.powmods)
            ups = _openssl.powmods(cs, pm1, psq)
            uqs = _openssl.powmods(cs, qm1, qsq)
        out: list[int] = []
        append = out.append
        for up, uq in zip(ups, uqs, strict=True):
            mp = (up - 1) // p * hp % p
            mq = (uq - 1) // q * hq % q
            m = mq + q * ((mp - mq) * qinv % p)
            append(int(m - n) if m > half else int(m))
        return out

    # -- key-holder encryption ------------------------------------------------------------
    def encrypt(self, ints: Any, *, method: str = "djn") -> CipherVector:
        """Encrypt with the key-holder CRT fast path (same ciphertext distribution as
        :meth:`PublicKey.encrypt`, computed modulo p² and q²).

        Raises:
            ConfigError, PlaintextRangeError: as :meth:`PublicKey.encrypt`.
        """
        pk = self.public_key
        check_method(method)
        ms = as_int_list(ints)
        check_signed_range(ms, int(pk.max_int))
        out: list[mpz] = []
        for a in range(0, len(ms), _BLOCK):
            block = ms[a : a + _BLOCK]
            rs = self.obfuscators(len(block), method=method)
            out.extend(_encrypt_with(pk.n, pk.nsquare, block, rs))
        return CipherVector._make(pk, out)

    def obfuscators(self, count: int, *, method: str = "djn") -> list[mpz]:
        """Draw ``count`` fresh obfuscators with the CRT fast path."""
        if self._crt is None:
            self._crt = CrtObfuscator(self.p, self.q)
        return self._crt.obfuscators(count, method)

    # -- serialization --------------------------------------------------------------------
    def to_json(self) -> str:
        """Serialize as JSON with hex p, q (keep it secret)."""
        return json.dumps(
            {
                "kind": _JSON_PRIVATE,
                "n": format(int(self.public_key.n), "x"),
                "p": format(int(self.p), "x"),
                "q": format(int(self.q), "x"),
            }
        )

    @classmethod
    def from_json(cls, s: str | bytes) -> PrivateKey:
        """Parse :meth:`to_json` output.

        Raises:
            CryptoError: malformed JSON, or factors that do not match n.
        """
        d = _load_json(s, _JSON_PRIVATE)
        return cls(PublicKey(_hex_int(d, "n")), _hex_int(d, "p"), _hex_int(d, "q"))

    # -- phe interop ----------------------------------------------------------------------
    @classmethod
    def from_phe(cls, phe_private_key: Any) -> PrivateKey:
        """Wrap a ``phe.PaillierPrivateKey``."""
        pk = PublicKey.from_phe(phe_private_key.public_key)
        return cls(pk, phe_private_key.p, phe_private_key.q)

    def to_phe(self) -> Any:
        """Return the equivalent ``phe.PaillierPrivateKey``."""
        import phe

        return phe.PaillierPrivateKey(self.public_key.to_phe(), int(self.p), int(self.q))


def _parallel_powmods(
    cs: list[mpz], pm1: mpz, psq: mpz, qm1: mpz, qsq: mpz, threads: int
) -> tuple[list[mpz], list[mpz]]:
    """c^(p−1) mod p² and c^(q−1) mod q² for all c, in ``threads`` GIL-free threads."""
    parts = max(1, threads // 2)
    size = -(-len(cs) // parts)
    chunks = [cs[i : i + size] for i in range(0, len(cs), size)]
    # all release the GIL: the IFMA kernel, ctypes during each libcrypto call, gmpy2 during
    # the list
    fn = _openssl.powmods if _openssl.available() or _native.IFMA else gmpy2.powmod_base_list
    with ThreadPoolExecutor(threads) as ex:
        fp = [ex.submit(fn, ch, pm1, psq) for ch in chunks]
        fq = [ex.submit(fn, ch, qm1, qsq) for ch in chunks]
        ups = [u for f in fp for u in f.result()]
        uqs = [u for f in fq for u in f.result()]
    return ups, uqs


def _load_json(s: str | bytes, kind: str) -> dict[str, Any]:
    try:
        d = json.loads(s)
    except (TypeError, ValueError) as exc:
        raise CryptoError(f"not a JSON key: {exc}") from exc
    if not isinstance(d, dict) or d.get("kind") != kind:
        raise CryptoError(f"expected a JSON object with kind {kind!r}")
    return d


def _hex_int(d: dict[str, Any], field: str) -> int:
    v = d.get(field)
    if not isinstance(v, str):
        raise CryptoError(f"key JSON field {field!r} must be a hex string")
    try:
        return int(v, 16)
    except ValueError as exc:
        raise CryptoError(f"key JSON field {field!r} is not valid hex") from exc


def _random_prime(bits: int) -> mpz:
    """A random prime of exactly ``bits`` bits with the top two bits set (CSPRNG start)."""
    while True:
        start = mpz(secrets.randbits(bits)) | (mpz(3) << (bits - 2)) | 1
        p = gmpy2.next_prime(start)
        if p.bit_length() == bits:
            return p


def generate_keypair(
    n_bits: int = DEFAULT_KEY_BITS, *, allow_insecure: bool = False
) -> tuple[PublicKey, PrivateKey]:
    """Generate a Paillier key pair from the OS CSPRNG.

    Args:
        n_bits: bit length of n (default 2048).
        allow_insecure: must be True to generate keys below 2048 bits (tests only).

    Returns:
        ``(public_key, private_key)`` with n of exactly ``n_bits`` bits.

    Raises:
        ConfigError: n_bits < 2048 without ``allow_insecure``, or below 128 bits at all.
    """
    if isinstance(n_bits, bool) or not isinstance(n_bits, int):
        raise ConfigError(f"n_bits must be an int, got {type(n_bits).__name__}")
    if n_bits < MIN_SECURE_BITS and not allow_insecure:
        raise ConfigError(
            f"{n_bits}-bit Paillier keys are insecure; use >= {MIN_SECURE_BITS} bits, "
            "or pass allow_insecure=True (tests only)"
        )
    if n_bits < MIN_INSECURE_BITS:
        raise ConfigError(f"n_bits must be >= {MIN_INSECURE_BITS}, got {n_bits}")
    p_bits = n_bits // 2
    q_bits = n_bits - p_bits
    while True:
        p = _random_prime(p_bits)
        q = _random_prime(q_bits)
        if p == q:
            continue
        n = p * q
        # equal-length primes make gcd(n, φ(n)) = 1 automatically, but check anyway
        if n.bit_length() == n_bits and gmpy2.gcd(n, (p - 1) * (q - 1)) == 1:
            break
    pk = PublicKey(n)
    return pk, PrivateKey(pk, p, q)
