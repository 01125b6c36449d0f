"""Fixed-point encoding of floats with one global scale.

Every value is encoded as round(x·2^frac_bits), so sums of encodings are encodings of sums with
the same scale and homomorphic additions never need a rescale (unlike phe's per-number base-16
exponents; see :mod:`hefl.crypto._expencoding` for that compatible path).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hefl.crypto._ints import as_int_list
from hefl.errors import ConfigError, PlaintextRangeError

_INT64_SAFE = float(2**63 - 1024)  # largest float64 below 2^63 that fits int64 after rint


class FixedPointEncoder:
    """Encode floats as integers round(x·2^frac_bits) and decode integers back to float64.

    Args:
        frac_bits: number of fractional bits (default 53: float64 precision for ``|x|`` in [1, 2)).

    The integers are exact, so decoding a sum of k encodings gives the sum of the rounded
    values (error <= k·2^−(frac_bits+1)), whatever k is, as long as it fits the key.
    """

    __slots__ = ("frac_bits", "scale")

    def __init__(self, frac_bits: int = 53) -> None:
        if isinstance(frac_bits, bool) or not isinstance(frac_bits, int):
            raise ConfigError(f"frac_bits must be an int, got {type(frac_bits).__name__}")
        if not 0 <= frac_bits <= 960:
            raise ConfigError(f"frac_bits must be in [0, 960], got {frac_bits}")
        self.frac_bits = frac_bits
        self.scale = 1 << frac_bits

    def __repr__(self) -> str:
        return f"FixedPointEncoder(frac_bits={self.frac_bits})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FixedPointEncoder) and other.frac_bits == self.frac_bits

    def __hash__(self) -> int:
        return hash(("FixedPointEncoder", self.frac_bits))

    def encode(self, values: Any) -> np.ndarray:
        """Encode floats.

        Args:
            values: a float, or an array-like of floats (any shape).

        Returns:
            An ``object`` numpy array of Python ints with the same shape (0-d for a scalar).

        Raises:
            PlaintextRangeError: a value is NaN or infinite.
        """
        x = np.asarray(values, dtype=np.float64)
        if not np.isfinite(x).all():
            raise PlaintextRangeError("cannot encode NaN or infinity as a fixed-point integer")
        scaled = np.rint(np.ldexp(x, self.frac_bits))
        out = np.empty(x.shape, dtype=object)
        if scaled.size == 0:
            return out
        if np.abs(scaled).max() < _INT64_SAFE:
            flat = scaled.astype(np.int64).ravel().tolist()
        else:  # int(float) is exact for integral floats of any size
            flat = [int(v) for v in scaled.ravel().tolist()]
        out.reshape(-1)[:] = flat
        return out

    def decode(self, ints: Any) -> np.ndarray:
        """Decode integers (e.g. decrypted sums of encodings) to float64.

        Args:
            ints: a list / array of ints of any size.

        Returns:
            A float64 array (same shape for numpy input, 1-D otherwise); each value is
            correctly rounded.

        Raises:
            ConfigError: a value is not an integer.
        """
        if isinstance(ints, np.ndarray) and ints.dtype.kind in "iu":
            return np.ldexp(ints.astype(np.float64), -self.frac_bits)
        shape = ints.shape if isinstance(ints, np.ndarray) else None
        vals = as_int_list(ints, "encoded values")
        try:
            arr = np.array(vals, dtype=np.int64)
            res = np.ldexp(arr.astype(np.float64), -self.frac_bits)
        except OverflowError:
            scale = self.scale
            res = np.array([v / scale for v in vals], dtype=np.float64)
        return res.reshape(shape) if shape is not None else res
