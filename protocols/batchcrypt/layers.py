"""Per-layer arithmetic of a client's update: dACIQ statistics, quantization, dequantization.

An update concatenates layers; each layer gets its own clipping threshold α. With dACIQ, α
comes from σ, estimated from the clients' summed squares, which travel encrypted as
fixed-point integers of ``STATS_FRAC_BITS`` fraction bits.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from hefl.crypto import SlotLayout, plan_slots
from hefl.errors import ConfigError, PackingOverflowError
from hefl.protocols.batchcrypt.aciq import daciq_alpha, sigma_from_sums
from hefl.protocols.batchcrypt.quantize import SystemUniform, dequantize, quantize

STATS_FRAC_BITS = 40  # fixed-point fraction bits of the encrypted per-layer sums of squares


def _bounds(layers: tuple[int, ...]) -> list[tuple[int, int]]:
    return list(itertools.pairwise(np.cumsum((0, *layers)).tolist()))


def layer_square_sums(x: np.ndarray, layers: tuple[int, ...]) -> list[int]:
    """Σx² of each layer of ``x``, as fixed-point integers (what a client encrypts)."""
    return [round(float(np.dot(x[a:b], x[a:b])) * 2**STATS_FRAC_BITS) for a, b in _bounds(layers)]


def daciq_alphas(sums: list[int], layers: tuple[int, ...], n_clients: int, bits: int) -> np.ndarray:
    """The per-layer clipping thresholds from the decrypted sums over all clients.

    Args:
        sums: the fixed-point Σ over clients of Σx² per layer.
        layers: the layer sizes.
        n_clients: how many clients' values the sums cover.
        bits: quantization bits r (α = c(r)·σ).

    Returns:
        One α per layer.
    """
    squares = np.array([v / 2**STATS_FRAC_BITS for v in sums])
    sigma = sigma_from_sums(squares, np.array(layers) * n_clients)
    return np.array([daciq_alpha(float(s), bits) for s in sigma])


def quantize_layers(
    x: np.ndarray, layers: tuple[int, ...], alphas: np.ndarray, bits: int, rng: SystemUniform
) -> np.ndarray:
    """Clip each layer at its α and quantize it to ``bits``-bit integers (int64), rounding
    stochastically with ``rng`` (the OS CSPRNG)."""
    parts = [
        quantize(x[a:b], float(alpha), bits, rng)
        for (a, b), alpha in zip(_bounds(layers), alphas, strict=True)
    ]
    return np.concatenate(parts or [np.zeros(0, dtype=np.int64)])


def dequantize_layers(
    lanes: np.ndarray, layers: tuple[int, ...], alphas: np.ndarray, bits: int
) -> np.ndarray:
    """Turn summed lanes back into floats, each layer with its own α (float64)."""
    parts = [
        dequantize(np.asarray(lanes[a:b]), float(alpha), bits)
        for (a, b), alpha in zip(_bounds(layers), alphas, strict=True)
    ]
    return np.concatenate(parts or [np.zeros(0)])


# Σx² statistics travel packed, several layers per ciphertext, in unsigned lanes this wide:
# a layer's Σx² may reach 2^(250 − STATS_FRAC_BITS) = 2^210, far beyond any real update
STATS_VALUE_BITS = 250


def stats_layout(public_key: Any, n_clients: int) -> SlotLayout:
    """The packing of the per-layer sums of squares (unsigned lanes, room for ``n_clients``
    summands), so a client decrypts one ciphertext per ~7 layers instead of one per layer.

    Raises:
        ConfigError: ``n_clients`` is not a positive int.
    """
    guard = (int(n_clients) - 1).bit_length()
    bits = min(STATS_VALUE_BITS, int(public_key.n_bits) - 2 - guard)
    return plan_slots(public_key, bits, n_clients, layout="unsigned")


def pack_square_sums(layout: SlotLayout, sums: list[int]) -> list[int]:
    """Pack the fixed-point sums of squares of :func:`layer_square_sums` into plaintexts.

    Raises:
        ConfigError: a layer's sum of squares is too large for the lanes (an absurd update).
    """
    try:
        return layout.pack(sums)
    except PackingOverflowError as exc:
        raise ConfigError(
            f"a layer's sum of squares needs {max(sums).bit_length()} bits with "
            f"{STATS_FRAC_BITS} fraction bits, more than the {layout.value_bits} its lanes "
            "hold; the update's values are far too large to aggregate"
        ) from exc
