"""dACIQ: analytical clipping threshold for Gaussian-distributed gradients.

A layer's gradient is modelled as N(0, σ²). Clipping at α = c·σ costs the clipping error
    σ²·[(1 + c²)·erfc(c/√2) − √(2/π)·c·e^(−c²/2)]
and uniform r-bit quantization of [−α, α] adds noise Δ²/12. The usual model takes Δ ≈ 2α/2^r,
i.e. σ²·c²/(3·4^r); hefl uses the step its quantizer really has, Δ = α/(2^(r−1) − 1) (symmetric
levels, all r bits kept by every client), which is the same for large r and honest for small r.
c(r) minimises the sum; it does not depend on σ, so it is computed once per r.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from hefl.errors import ConfigError

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def clipping_error(c: float) -> float:
    """Mean squared clipping error of N(0, 1) clipped at ±c."""
    tail = math.erfc(c / math.sqrt(2.0))  # erfc, not 1 - erf: no cancellation for large c
    return (1.0 + c * c) * tail - _SQRT_2_OVER_PI * c * math.exp(-c * c / 2.0)


def quantization_error(c: float, bits: int) -> float:
    """Mean squared rounding noise Δ²/12 of r-bit quantization of [-c, c] (σ = 1)."""
    return c * c / (12.0 * _levels(bits) ** 2)


def _levels(bits: int) -> float:
    return float((1 << (bits - 1)) - 1)


def total_error(c: float, bits: int) -> float:
    """Clipping plus quantization error (σ = 1)."""
    return clipping_error(c) + quantization_error(c, bits)


@cache
def aciq_c(bits: int) -> float:
    """The clipping factor c(r) minimising :func:`total_error`.

    The derivative 2c·erfc(c/√2) − 2√(2/π)·e^(−c²/2) + 2c/(12·L²) (L = 2^(r−1) − 1 levels per
    side) is negative then positive on
    (0, ∞) (one minimum), so bisection on its sign finds c(r).

    Args:
        bits: quantization bits r (2..32), the bits each client really keeps.

    Returns:
        c(r); about 3.9 for r = 8 and 5.9 for r = 16.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 32:
        raise ConfigError(f"quantization bits must be an integer in 2..32, not {bits!r}")

    def slope(c: float) -> float:
        tail = math.erfc(c / math.sqrt(2.0))
        return (
            2 * c * tail
            - 2 * _SQRT_2_OVER_PI * math.exp(-c * c / 2)
            + 2 * c / (12 * _levels(bits) ** 2)
        )

    low, high = 1e-6, 40.0
    for _ in range(200):
        mid = (low + high) / 2
        if slope(mid) < 0:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def daciq_alpha(sigma: float, bits: int) -> float:
    """α = c(r)·σ for one layer.

    A layer whose σ is zero (all-zero gradients) gets a tiny positive α so quantization stays
    defined; every value then quantizes to 0.

    Args:
        sigma: the estimated standard deviation of one client's values in this layer.
        bits: quantization bits r.

    Returns:
        The clipping threshold α > 0.
    """
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ConfigError(f"sigma must be finite and >= 0, not {sigma}")
    return max(aciq_c(bits) * sigma, 1e-12)


def sigma_from_sums(sum_squares: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-layer σ from aggregated sums of squares: sqrt(Σ x² / count).

    The gradients are treated as zero-mean, as dACIQ's model does.
    """
    ss = np.asarray(sum_squares, dtype=np.float64)
    n = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return np.sqrt(np.maximum(ss, 0.0) / n)
