"""Clipping and uniform symmetric r-bit quantization with stochastic (unbiased) rounding.

A client keeps all r bits of every value: the room the k-way sum needs comes from guard bits in
the packed lanes, not from dividing the range by k (the original BatchCrypt code did the latter
and lost log2(k) bits of precision).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hefl.errors import ConfigError


class SystemUniform:
    """Uniform floats in [0, 1) straight from the OS CSPRNG (53 random bits each).

    Stochastic rounding draws one per value. A numpy generator seeded from the CSPRNG would be
    faster to call but is not itself a CSPRNG (PCG64's state follows from its outputs); these
    draws cost ~1 ms per 100k values (os.urandom), small next to encrypting them.
    """

    def random(self, size: Any = None) -> Any:
        shape = () if size is None else size
        n = int(np.prod(shape))
        bits = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)
        out = (bits * (1.0 / (1 << 53))).reshape(shape)
        return float(out) if size is None else out


def new_rng() -> SystemUniform:
    """The rounding randomness of a client: the OS CSPRNG."""
    return SystemUniform()


def max_level(bits: int) -> int:
    """The largest quantized magnitude with r bits: 2^(r-1) - 1 (levels are symmetric)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 32:
        raise ConfigError(f"quantization bits must be an integer in 2..32, not {bits!r}")
    return (1 << (bits - 1)) - 1


def step(alpha: float, bits: int) -> float:
    """The quantization step Δ = α / (2^(r-1) - 1)."""
    if not (np.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"clipping alpha must be finite and > 0, not {alpha}")
    return float(alpha) / max_level(bits)


def quantize(values: np.ndarray, alpha: float, bits: int, rng: Any = None) -> np.ndarray:
    """Clip to [-α, α] and quantize to signed r-bit integers with stochastic rounding.

    Rounding is unbiased: a value x/Δ = i + f (0 <= f < 1) becomes i + 1 with probability f
    and i otherwise, so E[q]·Δ = clip(x).

    Args:
        values: float array (any shape).
        alpha: the clipping threshold α > 0.
        bits: quantization bits r (2..32); the output lies in [-(2^(r-1)-1), 2^(r-1)-1].
        rng: anything with numpy's ``random(shape)`` (uniform [0, 1)); the OS CSPRNG by
            default (a seeded numpy Generator makes tests reproducible).

    Returns:
        An int64 array of the same shape.

    Raises:
        ConfigError: on NaN/inf values, a bad α or bad r.
    """
    x = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ConfigError(f"cannot quantize: {bad} value(s) are NaN or infinite")
    delta = step(alpha, bits)
    top = max_level(bits)
    rng = rng if rng is not None else new_rng()
    scaled = np.clip(x, -alpha, alpha) / delta
    q = np.floor(scaled + rng.random(scaled.shape))
    # Float rounding of α/Δ can land a hair above the top level; clipping keeps the bound exact.
    return np.clip(q, -top, top).astype(np.int64)


def dequantize(q: np.ndarray, alpha: float, bits: int) -> np.ndarray:
    """Map (sums of) quantized integers back to floats: q·Δ.

    Args:
        q: integer array (a single client's values or a lane-wise sum of several).
        alpha: the α used to quantize.
        bits: the r used to quantize.

    Returns:
        A float64 array.
    """
    return np.asarray(q, dtype=np.float64) * step(alpha, bits)
