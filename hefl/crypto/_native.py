"""Bridge to the optional C kernel in ``_cmodmul.c``: fixed-base products for obfuscators.

The extension is built at install time when a C compiler and GMP's headers are present (see
``setup.py``); without it :data:`AVAILABLE` is False and :class:`FixedBaseTable` uses its
pure-Python gmpy2 loop, which computes the same numbers. Set ``HEFL_NATIVE=0`` in the
environment to force the pure-Python loop (for comparison runs).

On CPUs with AVX-512 IFMA the kernel keeps tables in Montgomery form and multiplies eight
52-bit digits per instruction (:data:`IFMA`); ``HEFL_IFMA=0`` keeps the plain GMP products.
Both return the same numbers.

Numbers cross into C as little-endian byte strings of a fixed width, so the C side needs no
Python-integer internals; the C code checks every digit before it indexes the table.
"""

from __future__ import annotations

import os

import numpy as np
from gmpy2 import mpz

try:
    from hefl.crypto import _cmodmul  # type: ignore[attr-defined]
except ImportError:  # not built: no compiler or no GMP headers at install time
    _cmodmul = None

AVAILABLE: bool = _cmodmul is not None and os.environ.get("HEFL_NATIVE", "1") != "0"
# an extension built by an older hefl has no IFMA paths: it keeps working without them
IFMA: bool = (
    AVAILABLE
    and getattr(_cmodmul, "ifma_available", lambda: False)()
    and os.environ.get("HEFL_IFMA", "1") != "0"
)


def _width(modulus: mpz) -> int:
    """Bytes per number in the C kernels: whole 64-bit limbs of the modulus."""
    return 8 * -(-modulus.bit_length() // 64)


def _join(values: list[mpz], width: int) -> bytes:
    """Numbers as one string of fixed-width little-endian fields (the inverse of _split)."""
    return b"".join(v.to_bytes(width, "little") for v in values)


def _split(data: bytes, width: int) -> list[mpz]:
    view = memoryview(data)
    from_bytes = mpz.from_bytes
    return [from_bytes(view[i : i + width], "little") for i in range(0, len(data), width)]


class FixedBase:
    """A fixed-base table held in C: ``powers(digits)`` = base^x mod m for digit rows of x.

    Args:
        base: the base, reduced modulo ``modulus``.
        modulus: the modulus (> 1).
        n_windows: rows of the table (⌈max exponent bits / window⌉).
        window: digit width in bits (1..16).
        ifma: take the AVX-512 IFMA path where it applies (odd modulus of at most 4158 bits,
            a CPU that has it); :attr:`ifma` says whether it did.
    """

    def __init__(
        self, base: mpz, modulus: mpz, n_windows: int, window: int, *, ifma: bool = IFMA
    ) -> None:
        if _cmodmul is None:
            raise RuntimeError("hefl's native kernels were not built")
        self.width = _width(modulus)
        self._table = _cmodmul.table_new(
            base.to_bytes(self.width, "little"),
            modulus.to_bytes(self.width, "little"),
            n_windows,
            window,
            ifma,
        )
        self.ifma: bool = _cmodmul.table_uses_ifma(self._table)

    def powers(self, digits: np.ndarray) -> list[mpz]:
        """Products of table entries, one per row of ``digits`` (uint16, shape (count, k))."""
        count, k = digits.shape
        if count == 0:
            return []
        rows = np.ascontiguousarray(digits, dtype="<u2")
        return _split(_cmodmul.table_powers(self._table, rows.tobytes(), k), self.width)


def ifma_takes(modulus: mpz) -> bool:
    """Whether the IFMA-only kernels (:func:`group_sums`, :func:`horner_pack`,
    :func:`powm_ct`) take ``modulus``: the IFMA paths are on and the modulus is odd with at
    most 4158 bits (n² of keys up to 2078 bits)."""
    return IFMA and modulus % 2 == 1 and 1 < modulus.bit_length() <= 4158


def group_sums(values: list[mpz], ids: np.ndarray, n_groups: int, modulus: mpz) -> list[mpz]:
    """Products modulo ``modulus`` of ``values`` per group id, for k groupings in one pass.

    Args:
        values: residues, each below ``modulus``.
        ids: int64 array of shape (len(values), k): row r's group in each of k groupings.
        n_groups: groups per grouping; ids are in [0, n_groups).
        modulus: odd, as :func:`ifma_takes` requires.

    Returns:
        k·n_groups residues, grouping-major (grouping j's group g at j·n_groups + g); an empty
        group gives 1.
    """
    width = _width(modulus)
    k = ids.shape[1]
    if not values:
        return [mpz(1)] * (k * n_groups)
    rows = np.ascontiguousarray(ids, dtype="<i8").tobytes()
    out = _cmodmul.group_sums(_join(values, width), _join([modulus], width), rows, k, n_groups)
    return _split(out, width)


def horner_pack(values: list[mpz], sizes: list[int], shift_bits: int, modulus: mpz) -> list[mpz]:
    """Horner's rule per consecutive group: acc ← acc^(2^shift_bits)·c mod ``modulus``.

    Args:
        values: residues below ``modulus``, split in order into groups of ``sizes``.
        sizes: group sizes (each ≥ 1, summing to ``len(values)``).
        shift_bits: the slot width w.
        modulus: odd, as :func:`ifma_takes` requires.

    Returns:
        One residue per group.
    """
    width = _width(modulus)
    groups = np.asarray(sizes, dtype="<i8").tobytes()
    out = _cmodmul.horner_pack(_join(values, width), _join([modulus], width), groups, shift_bits)
    return _split(out, width)


def powm_ct(bases: list[mpz], exponent: mpz, modulus: mpz) -> list[mpz]:
    """``[b^exponent mod modulus for b in bases]`` for a secret exponent: a fixed window over
    every exponent bit and table reads that do not depend on it, with IFMA products.

    Args:
        bases: any integers (reduced modulo ``modulus`` here).
        exponent: non-negative.
        modulus: odd, as :func:`ifma_takes` requires.
    """
    width = _width(modulus)
    data = _join([b % modulus for b in bases], width)
    exp = exponent.to_bytes((exponent.bit_length() + 7) // 8 or 1, "little")
    return _split(_cmodmul.powm_ct(data, exp, _join([modulus], width)), width)
