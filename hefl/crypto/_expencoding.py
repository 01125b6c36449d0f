"""phe-compatible variable-exponent encoding, and sums with re-ordered accumulation.

phe's ``EncodedNumber`` stores a float x as a signed integer mantissa m and a public base-16
exponent e with x ≈ m·16^e, choosing e from the float's own binary exponent (53 significant
bits). Adding two ciphertexts with different exponents first *rescales* the one with the
larger exponent: c^(16^Δ) mod n², a modular exponentiation that costs dozens of
multiplications. Summing in arbitrary order (as phe's ``sum`` does) rescales the running sum
every time a smaller exponent arrives.

Re-ordered accumulation (VF2Boost's third technique) groups the ciphertexts by their public
exponent, sums each group with one multiplication per element, and rescales only the few group
sums to the smallest exponent before adding them: one rescale per distinct exponent instead of
up to one per element. (hefl's own :class:`FixedPointEncoder` avoids rescaling altogether with
one global scale; this module is for phe interoperability.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gmpy2
import numpy as np
from gmpy2 import mpz

from hefl.crypto._ints import check_signed_range
from hefl.crypto._types import KeyModulus
from hefl.crypto._vector import CipherVector, _same_key
from hefl.errors import ConfigError, KeyMismatchError, PlaintextRangeError

if TYPE_CHECKING:
    from hefl.crypto._keys import PrivateKey, PublicKey

BASE = 16
LOG2_BASE = 4
FLOAT_MANTISSA_BITS = 53
_ONE = mpz(1)


def encode_exp(
    public_key: PublicKey, values: Any, max_exponent: int | None = None
) -> tuple[list[int], np.ndarray]:
    """Encode floats exactly as phe's ``EncodedNumber.encode`` (precision=None), vectorized.

    Args:
        public_key: the key (for the range check).
        values: 1-D floats (or an integer array: exponent 0, as phe does for ints).
        max_exponent: cap on the exponent (phe's ``max_exponent``), e.g. to align vectors.

    Returns:
        ``(mantissas, exponents)``: signed Python ints and an int64 array.

    Raises:
        PlaintextRangeError: NaN/inf, or a mantissa beyond the key's range.
    """
    x = np.asarray(values)
    if x.ndim != 1:
        x = x.reshape(-1)
    if x.dtype.kind in "iu":
        ex = np.zeros(len(x), dtype=np.int64)
        if max_exponent is not None:
            ex = np.minimum(ex, max_exponent)
        mant = [
            int(v) << (LOG2_BASE * -int(e)) for v, e in zip(x.tolist(), ex.tolist(), strict=True)
        ]
        check_signed_range(mant, int(public_key.max_int), "encoded mantissa")
        return mant, ex
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise PlaintextRangeError("cannot encode NaN or infinity")
    _, bin_exp = np.frexp(x)
    # phe: floor((frexp exponent − 53) / 4); frexp(0) gives 0 as in math.frexp
    ex = np.floor_divide(bin_exp.astype(np.int64) - FLOAT_MANTISSA_BITS, LOG2_BASE)
    if max_exponent is not None:
        ex = np.minimum(ex, int(max_exponent))
    # x·16^−e is exact in float64 (a power-of-two scaling) unless it exceeds 2^1023, which
    # only happens with a low max_exponent: then fall back to exact Python arithmetic.
    shift = -LOG2_BASE * ex
    if (bin_exp.astype(np.int64) + shift).max(initial=0) < 62:
        mant = np.rint(np.ldexp(x, shift.astype(np.int32))).astype(np.int64).tolist()
    else:
        from fractions import Fraction

        mant = [
            round(Fraction(v) * Fraction(BASE) ** -e)
            for v, e in zip(x.tolist(), ex.tolist(), strict=True)
        ]
    check_signed_range(mant, int(public_key.max_int), "encoded mantissa")
    return mant, ex


class EncryptedExpVector:
    """Ciphertexts with per-element public base-16 exponents (phe's EncryptedNumber model).

    Attributes:
        cv: the :class:`CipherVector` of encrypted mantissas.
        exponents: int64 array, one exponent per element.
    """

    __slots__ = ("cv", "exponents")

    def __init__(self, cv: CipherVector, exponents: Any) -> None:
        ex = np.asarray(exponents)
        if ex.dtype.kind not in "iu" or ex.shape != (len(cv),):
            raise ConfigError(f"need {len(cv)} integer exponents, got shape {ex.shape}")
        self.cv = cv
        self.exponents = ex.astype(np.int64)

    @property
    def public_key(self) -> KeyModulus:
        return self.cv.public_key

    def __len__(self) -> int:
        return len(self.cv)

    def __getitem__(self, index: Any) -> EncryptedExpVector:
        if isinstance(index, int | np.integer):
            index = [int(index)]
        return EncryptedExpVector(self.cv[index], np.atleast_1d(self.exponents[index]))

    @classmethod
    def encrypt(
        cls, public_key: PublicKey, values: Any, *, max_exponent: int | None = None, **kwargs: Any
    ) -> EncryptedExpVector:
        """phe-encode floats and encrypt the mantissas (``kwargs`` go to ``pk.encrypt``)."""
        mant, ex = encode_exp(public_key, values, max_exponent)
        return cls(public_key.encrypt(mant, **kwargs), ex)

    def decrypt(self, private_key: PrivateKey) -> np.ndarray:
        """Decrypt to float64: mantissa·16^exponent, correctly rounded."""
        ms = private_key.decrypt(self.cv)
        out = np.empty(len(ms), dtype=np.float64)
        for i, (m, e) in enumerate(zip(ms, self.exponents.tolist(), strict=True)):
            out[i] = m / (1 << (-LOG2_BASE * e)) if e < 0 else float(m << (LOG2_BASE * e))
        return out

    def to_phe(self) -> list[Any]:
        """A list of phe ``EncryptedNumber`` with the same ciphertexts and exponents."""
        import phe

        ppk = self.public_key.to_phe()
        return [
            phe.EncryptedNumber(ppk, int(c), int(e))
            for c, e in zip(self.cv._c, self.exponents.tolist(), strict=True)
        ]

    @classmethod
    def from_phe(cls, public_key: PublicKey, numbers: Any) -> EncryptedExpVector:
        """Wrap phe ``EncryptedNumber`` objects of any exponents.

        Raises:
            KeyMismatchError: a number is under another key.
        """
        numbers = list(numbers)
        cs = []
        for x in numbers:
            if int(x.public_key.n) != int(public_key.n):
                raise KeyMismatchError("a phe EncryptedNumber is under a different key")
            cs.append(x.ciphertext(be_secure=False))
        return cls(CipherVector(public_key, cs), [int(x.exponent) for x in numbers])

    def __add__(self, other: EncryptedExpVector) -> EncryptedExpVector:
        """Element-wise add, rescaling whichever side has the larger exponent (as phe)."""
        if not isinstance(other, EncryptedExpVector):
            return NotImplemented
        _same_key(self.public_key, other.cv)
        if len(other) != len(self):
            raise ConfigError(f"length mismatch: {len(self)} vs {len(other)}")
        nsq = self.public_key.nsquare
        out, ex = [], []
        for a, ea, b, eb in zip(
            self.cv._c, self.exponents.tolist(), other.cv._c, other.exponents.tolist(), strict=True
        ):
            a, b, e = _align(a, ea, b, eb, nsq)
            out.append(a * b % nsq)
            ex.append(e)
        return EncryptedExpVector(CipherVector._make(self.public_key, out), ex)


def _rescale(c: mpz, delta: int, nsq: mpz) -> mpz:
    """Lower an exponent by ``delta`` >= 0: multiply the mantissa by 16^delta homomorphically."""
    return c if delta == 0 else gmpy2.powmod(c, mpz(1) << (LOG2_BASE * delta), nsq)


def _align(a: mpz, ea: int, b: mpz, eb: int, nsq: mpz) -> tuple[mpz, mpz, int]:
    if ea > eb:
        return _rescale(a, ea - eb, nsq), b, eb
    if eb > ea:
        return a, _rescale(b, eb - ea, nsq), ea
    return a, b, ea


def _check_groups(ev: EncryptedExpVector, groups: Any, n_groups: int) -> list[int]:
    g = np.asarray(groups)
    if isinstance(n_groups, bool) or not isinstance(n_groups, int | np.integer) or n_groups < 1:
        raise ConfigError(f"n_groups must be a positive int, got {n_groups!r}")
    if g.dtype.kind not in "iu" or g.shape != (len(ev),):
        raise ConfigError(f"group ids must be an int array of shape ({len(ev)},), got {g.shape}")
    if g.size and (g.min() < 0 or g.max() >= n_groups):
        raise ConfigError(f"group ids must be in [0, {n_groups})")
    return g.tolist()


def _check_spread(
    ev: EncryptedExpVector, ids: list[int], buckets: dict[tuple[int, int], mpz], emin: list[int]
) -> None:
    """Refuse sums whose rescaled mantissas could wrap modulo n.

    A float encoding has a mantissa below 2^57; rescaling by Δ multiplies it by 16^Δ, and a
    group of k values adds log₂ k bits. (phe performs no such check and silently wraps.)
    """
    if not buckets:
        return
    spread = max(e - emin[g] for g, e in buckets)
    k = max(np.bincount(np.asarray(ids, dtype=np.int64)).max(), 1)
    need = 57 + int(k).bit_length() + LOG2_BASE * spread
    if need > ev.public_key.n_bits - 2:
        raise PlaintextRangeError(
            f"exponents in one group span {spread} base-16 digits: the rescaled sum needs "
            f"~{need} bits but the key holds {ev.public_key.n_bits - 2}; encode with a "
            "max_exponent (or use FixedPointEncoder's single scale)"
        )


def reordered_group_sum(ev: EncryptedExpVector, groups: Any, n_groups: int) -> EncryptedExpVector:
    """Per-group sums with re-ordered accumulation: sum each (group, exponent) bucket with one
    multiplication per element, then rescale only the bucket sums to the group's smallest
    exponent.

    Args:
        ev: the encrypted values.
        groups: int array of group ids in [0, n_groups), one per element.
        n_groups: number of groups.

    Returns:
        An EncryptedExpVector of length ``n_groups``; empty groups are Enc(0) (r = 1) with
        exponent 0.

    Raises:
        ConfigError: bad group ids.
        PlaintextRangeError: exponents too far apart for the key (the sum could wrap).
    """
    ids = _check_groups(ev, groups, n_groups)
    nsq = ev.public_key.nsquare
    buckets: dict[tuple[int, int], mpz] = {}
    for c, g, e in zip(ev.cv._c, ids, ev.exponents.tolist(), strict=True):
        key = (g, e)
        a = buckets.get(key)
        buckets[key] = c if a is None else a * c % nsq
    acc: list[mpz] = [_ONE] * n_groups
    emin = [0] * n_groups
    seen = [False] * n_groups
    for g, e in buckets:
        if not seen[g] or e < emin[g]:
            emin[g] = e
            seen[g] = True
    _check_spread(ev, ids, buckets, emin)
    for (g, e), c in buckets.items():
        acc[g] = acc[g] * _rescale(c, e - emin[g], nsq) % nsq
    return EncryptedExpVector(CipherVector._make(ev.public_key, acc), emin)


def naive_group_sum(ev: EncryptedExpVector, groups: Any, n_groups: int) -> EncryptedExpVector:
    """Per-group sums in element order, rescaling as phe's ``EncryptedNumber.__add__`` does
    (the running sum whenever a smaller exponent arrives, or the new element when larger).
    For comparison with :func:`reordered_group_sum`; same decrypted result."""
    ids = _check_groups(ev, groups, n_groups)
    nsq = ev.public_key.nsquare
    acc: list[mpz | None] = [None] * n_groups
    ex = [0] * n_groups
    for c, g, e in zip(ev.cv._c, ids, ev.exponents.tolist(), strict=True):
        a = acc[g]
        if a is None:
            acc[g], ex[g] = c, e
            continue
        a, c, ex[g] = _align(a, ex[g], c, e, nsq)
        acc[g] = a * c % nsq
    return EncryptedExpVector(
        CipherVector._make(ev.public_key, [_ONE if a is None else a for a in acc]), ex
    )


def reordered_sum(ev: EncryptedExpVector) -> EncryptedExpVector:
    """Sum of all elements with re-ordered accumulation (length-1 result)."""
    return reordered_group_sum(ev, np.zeros(len(ev), dtype=np.int64), 1)


__all__ = [
    "EncryptedExpVector",
    "encode_exp",
    "naive_group_sum",
    "reordered_group_sum",
    "reordered_sum",
]
