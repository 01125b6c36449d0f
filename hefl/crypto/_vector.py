"""`CipherVector`: many Paillier ciphertexts under one public key, as one object.

A vector holds a plain Python list of gmpy2 ``mpz`` (no per-value wrapper objects), so the
homomorphic operations are tight loops of one multiplication modulo n² per element.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz

from hefl.crypto import _native
from hefl.crypto._groupsum import group_sum_1d, joint_columns, native_group_sums
from hefl.crypto._ints import as_int_list, check_signed_range
from hefl.crypto._types import KeyModulus, ObfuscatorSource
from hefl.errors import CiphertextRangeError, ConfigError, CryptoError, KeyMismatchError

_ONE = mpz(1)
_MPZ = type(_ONE)


def batch_invert(values: list[mpz], modulus: mpz) -> list[mpz]:
    """Invert every value modulo ``modulus`` with one inversion (Montgomery's trick).

    Costs 3 multiplications per element plus one ``invert``, instead of one ``invert`` (about
    10 multiplications at 4096 bits) per element.

    Raises:
        CiphertextRangeError: some value is not invertible.
    """
    k = len(values)
    if k == 0:
        return []
    prefix = [values[0]]
    for v in values[1:]:
        prefix.append(prefix[-1] * v % modulus)
    try:
        inv = gmpy2.invert(prefix[-1], modulus)
    except ZeroDivisionError as exc:
        raise CiphertextRangeError("a ciphertext is not invertible modulo n²") from exc
    out = [_ONE] * k
    for i in range(k - 1, 0, -1):
        out[i] = inv * prefix[i - 1] % modulus
        inv = inv * values[i] % modulus
    out[0] = inv
    return out


class CipherVector:
    """A vector of Paillier ciphertexts under one :class:`PublicKey`.

    Build one with ``pk.encrypt(ints)``, ``sk.encrypt(ints)``, :meth:`from_bytes`,
    :meth:`from_phe` or :meth:`from_ciphertexts`. Operations (all element-wise):
    ``a + b`` (homomorphic add; ``b`` may also be plaintext ints), ``a - b``, ``-a``,
    ``a * k`` / ``a * [k1, k2, ...]`` (plaintext scalars, negative allowed), ``a.sum()``,
    ``len(a)``, ``a[i]`` / ``a[i:j]`` / ``a[index_array]`` (all return CipherVectors),
    :meth:`concat`, :meth:`group_sum`, :meth:`obfuscate`.

    Results of homomorphic operations are deterministic functions of their inputs:
    call :meth:`obfuscate` before sending them to a party that could test guesses.
    """

    __slots__ = ("_c", "public_key")
    # make numpy defer to our reflected operators: ``ints_array * cv`` means ``cv * ints_array``
    __array_ufunc__ = None

    def __init__(self, public_key: KeyModulus, ciphertexts: Sequence[int]) -> None:
        """Wrap raw ciphertext integers after validating them (0 < c < n², gcd(c, n) = 1).

        Raises:
            CiphertextRangeError: a value is out of range or not invertible.
        """
        cs = _as_mpz_list(ciphertexts)
        _validate(public_key, cs)
        self.public_key = public_key
        self._c = cs

    @classmethod
    def _make(cls, public_key: KeyModulus, cs: list[mpz]) -> CipherVector:
        """Internal constructor: trusts ``cs`` (a fresh list of mpz in range)."""
        obj = cls.__new__(cls)
        obj.public_key = public_key
        obj._c = cs
        return obj

    @classmethod
    def from_ciphertexts(
        cls, public_key: KeyModulus, ciphertexts: Sequence[int], *, validate: bool = True
    ) -> CipherVector:
        """Wrap raw ciphertext integers.

        Args:
            public_key: their key.
            ciphertexts: ints or ``mpz``.
            validate: check 0 < c < n² and gcd(c, n) = 1 (default). Pass False only for values
                this process computed itself from valid ciphertexts of the same key (e.g.
                prefix sums of ``cv.ciphertexts``); never for data from a peer.

        Raises:
            CiphertextRangeError: validation failed.
        """
        if validate:
            return cls(public_key, ciphertexts)
        return cls._make(public_key, _as_mpz_list(ciphertexts))

    @property
    def ciphertexts(self) -> list[mpz]:
        """The raw ciphertexts (a copy of the internal list of ``mpz``)."""
        return list(self._c)

    # -- container protocol ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._c)

    def __repr__(self) -> str:
        return f"CipherVector(len={len(self._c)}, key_id={self.public_key.key_id.hex()})"

    def __getitem__(self, index: Any) -> CipherVector:
        cs = self._c
        if isinstance(index, slice):
            return CipherVector._make(self.public_key, cs[index])
        if isinstance(index, int | np.integer) and not isinstance(index, bool):
            return CipherVector._make(self.public_key, [cs[index]])
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (len(cs),):
                raise ConfigError(f"boolean mask of shape {idx.shape} for a vector of {len(cs)}")
            idx = np.flatnonzero(idx)
        elif idx.dtype.kind not in "iu":
            raise ConfigError(
                f"index a CipherVector with ints, slices or int arrays, not {idx.dtype}"
            )
        idx = idx.reshape(-1)
        if idx.size and (idx.min() < -len(cs) or idx.max() >= len(cs)):
            raise IndexError(f"index out of range for a CipherVector of length {len(cs)}")
        return CipherVector._make(self.public_key, [cs[i] for i in idx.tolist()])

    take = __getitem__

    @classmethod
    def concat(cls, vectors: Sequence[CipherVector]) -> CipherVector:
        """Concatenate vectors under one key.

        Raises:
            ConfigError: no vectors given.
            KeyMismatchError: vectors under different keys.
        """
        vectors = list(vectors)
        if not vectors:
            raise ConfigError("concat needs at least one CipherVector (the key comes from it)")
        pk = vectors[0].public_key
        out: list[mpz] = []
        for v in vectors:
            _same_key(pk, v)
            out.extend(v._c)
        return cls._make(pk, out)

    # -- homomorphic operations -----------------------------------------------------------
    def _other(self, other: Any) -> list[mpz] | None:
        """Ciphertexts of ``other`` as a list matching self, or None if not supported."""
        if isinstance(other, CipherVector):
            _same_key(self.public_key, other)
            _same_len(self, len(other))
            return other._c
        return None

    def _plain_ints(self, other: Any) -> list[int]:
        """Plaintext operand as a range-checked list matching self."""
        if isinstance(other, int | np.integer) and not isinstance(other, bool):
            ms = [int(other)] * len(self._c)
        else:
            ms = as_int_list(other)
            _same_len(self, len(ms))
        check_signed_range(ms, int(self.public_key.max_int))
        return ms

    def __add__(self, other: Any) -> CipherVector:
        pk = self.public_key
        nsq = pk.nsquare
        cs = self._other(other)
        if cs is not None:
            return CipherVector._make(pk, [a * b % nsq for a, b in zip(self._c, cs, strict=True)])
        # c·(1 + m·n) ≡ c + n·(m·c mod n) (mod n²): no 4096-bit multiplication needed
        n = pk.n
        out = []
        for c, m in zip(self._c, self._plain_ints(other), strict=True):
            d = c + n * (m * c % n)
            out.append(d - nsq if d >= nsq else d)
        return CipherVector._make(pk, out)

    __radd__ = __add__

    def __neg__(self) -> CipherVector:
        return CipherVector._make(self.public_key, batch_invert(self._c, self.public_key.nsquare))

    def __sub__(self, other: Any) -> CipherVector:
        cs = self._other(other)
        nsq = self.public_key.nsquare
        if cs is None:
            if isinstance(other, int | np.integer) and not isinstance(other, bool):
                return self + (-int(other))
            return self + [-m for m in as_int_list(other)]
        inv = batch_invert(cs, nsq)
        return CipherVector._make(
            self.public_key, [a * b % nsq for a, b in zip(self._c, inv, strict=True)]
        )

    def __rsub__(self, other: Any) -> CipherVector:
        return (-self) + other

    def __mul__(self, other: Any) -> CipherVector:
        pk = self.public_key
        n, nsq = pk.n, pk.nsquare
        if isinstance(other, CipherVector):
            raise CryptoError("Paillier cannot multiply two ciphertexts; multiply by plaintexts")
        if isinstance(other, float | np.floating):
            raise ConfigError("multiply by integers; encode floats first (FixedPointEncoder)")
        if isinstance(other, int | np.integer) and not isinstance(other, bool):
            k = _signed_mod(int(other), n)
            return CipherVector._make(pk, _scale_all(self._c, k, nsq))
        ks = as_int_list(other, "scalars")
        _same_len(self, len(ks))
        ks = [_signed_mod(k, n) for k in ks]
        cs = self._c
        # negative scalars: invert those ciphertexts in one batch, then use |k| as exponent
        neg = [i for i, k in enumerate(ks) if k < 0]
        inv = dict(zip(neg, batch_invert([cs[i] for i in neg], nsq), strict=True))
        powmod = gmpy2.powmod
        out = []
        for i, (c, k) in enumerate(zip(cs, ks, strict=True)):
            if k < 0:
                c, k = inv[i], -k
            out.append(c if k == 1 else powmod(c, k, nsq))
        return CipherVector._make(pk, out)

    __rmul__ = __mul__

    def sum(self) -> CipherVector:
        """Homomorphic sum of all elements, as a length-1 vector (Enc(0) with r = 1 if empty)."""
        nsq = self.public_key.nsquare
        cs = self._c
        if not cs:
            return CipherVector._make(self.public_key, [_ONE])
        acc = cs[0]
        for c in cs[1:]:
            acc = acc * c % nsq
        return CipherVector._make(self.public_key, [acc])

    def group_sum(self, groups: Any, n_groups: int) -> CipherVector:
        """Homomorphic sum per group id: the histogram primitive.

        Args:
            groups: integer array of group ids in [0, n_groups), shape (len(self),), or
                shape (len(self), F) for F independent groupings at once (e.g. the bin of each
                instance for F features).
            n_groups: number of groups (bins).

        Returns:
            A CipherVector of length n_groups (or F·n_groups, feature-major: element
            f·n_groups + g sums the values whose column-f id is g). Empty groups hold Enc(0)
            with r = 1.

        Raises:
            ConfigError: wrong shape, non-integer or out-of-range group ids.
        """
        g = np.asarray(groups)
        if isinstance(n_groups, bool) or not isinstance(n_groups, int | np.integer) or n_groups < 1:
            raise ConfigError(f"n_groups must be a positive int, got {n_groups!r}")
        n_groups = int(n_groups)
        if g.dtype.kind not in "iu":
            raise ConfigError(f"group ids must be integers, got dtype {g.dtype}")
        if g.ndim not in (1, 2) or g.shape[0] != len(self._c):
            raise ConfigError(
                f"group ids must have shape ({len(self._c)},) or ({len(self._c)}, F), got {g.shape}"
            )
        if g.size and (g.min() < 0 or g.max() >= n_groups):
            raise ConfigError(f"group ids must be in [0, {n_groups}), got [{g.min()}, {g.max()}]")
        nsq = self.public_key.nsquare
        cs = self._c
        if _native.ifma_takes(nsq):
            sums2d = native_group_sums(cs, g[:, None] if g.ndim == 1 else g, n_groups, nsq)
            return CipherVector._make(self.public_key, sums2d)
        if g.ndim == 1:
            return CipherVector._make(self.public_key, group_sum_1d(cs, g.tolist(), n_groups, nsq))
        sums: list[list[mpz]] = [[] for _ in range(g.shape[1])]
        for cols, cell in joint_columns(g):
            if len(cols) == 1:
                sums[cols[0]] = group_sum_1d(cs, g[:, cols[0]].tolist(), n_groups, nsq)
                continue
            # one pass over the rows into the joint cells, then each column from the cells
            n_cells = int(cell.max()) + 1
            joint = group_sum_1d(cs, cell.tolist(), n_cells, nsq)
            for f in cols:
                cell_id = np.empty(n_cells, dtype=np.int64)
                cell_id[cell] = g[:, f]
                sums[f] = group_sum_1d(joint, cell_id.tolist(), n_groups, nsq)
        return CipherVector._make(self.public_key, [c for col in sums for c in col])

    def obfuscate(
        self, *, pool: ObfuscatorSource | None = None, method: str = "djn"
    ) -> CipherVector:
        """Re-randomize: multiply every ciphertext by a fresh obfuscator (same plaintexts).

        Args:
            pool, method: as :meth:`PublicKey.encrypt`.
        """
        pk = self.public_key
        rs = pk.obfuscators(len(self._c), pool=pool, method=method)
        nsq = pk.nsquare
        return CipherVector._make(pk, [c * r % nsq for c, r in zip(self._c, rs, strict=True)])

    # -- serialization --------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Fixed-width big-endian bytes, ``public_key.ciphertext_bytes`` (512 at 2048 bits)
        per ciphertext, concatenated. The key is not included (send ``key_id`` alongside)."""
        w = self.public_key.ciphertext_bytes
        return b"".join([c.to_bytes(w, "big") for c in self._c])

    @classmethod
    def from_bytes(
        cls, public_key: KeyModulus, data: bytes | bytearray | memoryview
    ) -> CipherVector:
        """Parse :meth:`to_bytes` output, validating every ciphertext.

        Raises:
            CiphertextRangeError: the length is not a multiple of the ciphertext width, or a
                ciphertext is not in 0 < c < n², or not invertible (gcd(c, n) != 1).
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise CiphertextRangeError(f"ciphertext data must be bytes, got {type(data).__name__}")
        mv = memoryview(data).cast("B")
        w = public_key.ciphertext_bytes
        if len(mv) % w:
            raise CiphertextRangeError(
                f"ciphertext data of {len(mv)} bytes is not a multiple of {w} bytes "
                f"(one ciphertext for a {public_key.n_bits}-bit key); wrong key or truncated data"
            )
        from_bytes = mpz.from_bytes
        cs = [from_bytes(mv[i : i + w], "big") for i in range(0, len(mv), w)]
        _validate(public_key, cs)
        return cls._make(public_key, cs)

    def __reduce__(self) -> tuple[Any, ...]:
        # For LOCAL process pools only (pickle can run code anyway, so re-validating would add
        # cost, not safety); data from the network goes through from_bytes.
        return (_unpickle, (self.public_key, self.to_bytes()))

    # -- phe interop ----------------------------------------------------------------------
    def to_phe(self) -> list[Any]:
        """Return a list of ``phe.EncryptedNumber`` (exponent 0) that phe can decrypt and add."""
        import phe

        ppk = self.public_key.to_phe()
        return [phe.EncryptedNumber(ppk, int(c), 0) for c in self._c]

    @classmethod
    def from_phe(cls, public_key: KeyModulus, numbers: Sequence[Any]) -> CipherVector:
        """Wrap ``phe.EncryptedNumber`` objects with exponent 0 (raw integers, e.g. from ``raw_encrypt``
        or ``encrypt(int)``).

        Raises:
            KeyMismatchError: a number is under another key.
            CryptoError: a number has a non-zero exponent (use :class:`EncryptedExpVector`).
        """
        cs = []
        for x in numbers:
            if int(x.public_key.n) != int(public_key.n):
                raise KeyMismatchError("a phe EncryptedNumber is under a different key")
            if x.exponent != 0:
                raise CryptoError(
                    f"phe EncryptedNumber has exponent {x.exponent}; CipherVector holds raw "
                    "integers (exponent 0): use EncryptedExpVector.from_phe for encoded floats"
                )
            cs.append(mpz(x.ciphertext(be_secure=False)))
        _validate(public_key, cs)
        return cls._make(public_key, cs)


def _as_mpz_list(values: Any) -> list[mpz]:
    """A fresh list of mpz; mpz inputs are taken as they are (no int round trip)."""
    if isinstance(values, list | tuple) and all(type(v) is _MPZ for v in values):
        return list(values)
    return [mpz(c) for c in as_int_list(values, "ciphertexts")]


def _unpickle(public_key: KeyModulus, data: bytes) -> CipherVector:
    w = public_key.ciphertext_bytes
    from_bytes = mpz.from_bytes
    return CipherVector._make(
        public_key, [from_bytes(data[i : i + w], "big") for i in range(0, len(data), w)]
    )


def _signed_mod(k: int, n: mpz) -> int:
    """k mod n as the representative of smallest magnitude (so negatives use short exponents)."""
    if -n // 2 <= k <= n // 2:
        return k
    k %= n
    return int(k - n) if k > n // 2 else int(k)


def _scale_all(cs: list[mpz], k: int, nsq: mpz) -> list[mpz]:
    if k == 1:
        return list(cs)
    if k == 0:
        return [_ONE] * len(cs)
    if k == -1:
        return batch_invert(cs, nsq)
    if k < 0:
        inv = batch_invert(cs, nsq)
        return [gmpy2.powmod(c, -k, nsq) for c in inv]
    return [gmpy2.powmod(c, k, nsq) for c in cs]


def _same_key(pk: KeyModulus, other: CipherVector) -> None:
    if other.public_key != pk:
        raise KeyMismatchError(
            f"cannot combine ciphertexts under key {other.public_key.key_id.hex()} with key "
            f"{pk.key_id.hex()}"
        )


def _same_len(cv: CipherVector, k: int) -> None:
    if k != len(cv._c):
        raise ConfigError(f"length mismatch: CipherVector of {len(cv._c)} vs {k} operands")


def _validate(public_key: KeyModulus, cs: list[mpz]) -> None:
    """Refuse ciphertexts outside 0 < c < n² or sharing a factor with n.

    The gcd test is batched: gcd(Π c mod n, n) = 1 iff every c is a unit, since n = p·q.
    """
    if not cs:
        return
    n, nsq = public_key.n, public_key.nsquare
    if min(cs) <= 0 or max(cs) >= nsq:
        raise CiphertextRangeError(
            "a ciphertext is outside 0 < c < n²; corrupted data or wrong key"
        )
    acc = _ONE
    for c in cs:
        acc = acc * c % n
    if gmpy2.gcd(acc, n) != 1:
        raise CiphertextRangeError(
            "a ciphertext is not invertible modulo n² (shares a factor with n); corrupted data"
        )
