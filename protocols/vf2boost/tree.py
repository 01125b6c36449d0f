"""Split-finding math shared by the federated protocol and the plaintext reference.

Losslessness rests on one rule: gradient sums are *exact integers*. g and h are encoded once
per tree with one global fixed-point scale (round(x·2^frac_bits)); every histogram entry,
cumulative sum and node total is the exact integer sum of those encodings, whether it was
computed under Paillier (the federation) or in plaintext (the reference). Both then turn the
same integers into the same floats with the same function and score them with the same numpy
expressions, so both pick the same splits bit for bit, including ties, which are broken by
(party index, feature index, bin): the first candidate in that order wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hefl.errors import ConfigError

# A split is taken only if its gain exceeds this, like XGBoost's kRtEps = 1e-6 on its
# (unhalved) loss change; our gain carries the ½ of the SecureBoost formula.
MIN_GAIN = 0.5e-6
_LIMB = 26  # bits per limb: sums of up to 2^27 rows of 26-bit limbs stay exact in float64
MAX_ROWS = 1 << 27


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    out = np.empty_like(x, dtype=np.float64)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def logistic_gradients(margin: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """g = p - y and h = p(1 - p) of the logistic loss at the current margins."""
    p = sigmoid(margin)
    return p - y, p * (1.0 - p)


def encode_fixed(x: np.ndarray, frac_bits: int) -> np.ndarray:
    """round(x·2^frac_bits) as int64 (|x| <= 1 and frac_bits <= 62, so it always fits)."""
    return np.rint(np.ldexp(np.asarray(x, dtype=np.float64), frac_bits)).astype(np.int64)


def decode_fixed(ints: np.ndarray | list[int], frac_bits: int) -> np.ndarray:
    """Exact integers -> float64, each correctly rounded (Python int true division)."""
    scale = 1 << frac_bits
    return np.array(
        [int(v) / scale for v in np.asarray(ints, dtype=object).ravel()], dtype=np.float64
    ).reshape(np.shape(ints))


def base_margin(y: np.ndarray, base_score: float | None) -> float:
    """logit(base_score), base_score defaulting to the label mean."""
    p = float(np.mean(y)) if base_score is None else float(base_score)
    if not 0 < p < 1:
        raise ConfigError(
            "labels are all 0 or all 1, so the base score logit(mean) is infinite; "
            "a boosted model needs both classes (or pass base_score explicitly)"
        )
    return float(np.log(p / (1 - p)))


def exact_group_sums(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Exact per-group sums of int64 values, as an object array of Python ints.

    The values are split into 26-bit limbs whose per-group sums are exact in float64
    (np.bincount is fast), then recombined with Python ints.
    """
    if values.size > MAX_ROWS:
        raise ConfigError(f"at most {MAX_ROWS} rows are supported per node histogram")
    v = values.astype(np.int64)
    total = np.zeros(n_groups, dtype=object)
    shift = 0
    mask = (1 << _LIMB) - 1
    while True:
        top = np.all((v >= -(1 << _LIMB)) & (v < (1 << _LIMB)))
        limb = v if top else (v & mask)
        s = np.bincount(groups, weights=limb.astype(np.float64), minlength=n_groups)
        total = total + (s.astype(np.int64).astype(object) * (1 << shift))
        if top:
            return total
        v = v >> _LIMB
        shift += _LIMB


@dataclass(frozen=True)
class Candidate:
    """A scored split candidate of one party at one node.

    Attributes:
        gain: ½[G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ)] − γ (−inf if invalid).
        party: party index (0 = active).
        position: index of the candidate in the party's canonical order (feature-major,
            then bin); the tie-breaker inside a party.
    """

    gain: float
    party: int
    position: int


def score_cumulative(
    GL: np.ndarray,
    HL: np.ndarray,
    G: int,
    H: int,
    frac_bits: int,
    reg_lambda: float,
    gamma: float,
    min_child_weight: float,
) -> np.ndarray:
    """Gains of candidate splits from exact cumulative sums.

    Args:
        GL, HL: object arrays of Python ints: exact left-child sums of g and h encodings,
            one per candidate (any shape).
        G, H: exact sums at the node.
        frac_bits: the fixed-point scale.
        reg_lambda, gamma, min_child_weight: as in :class:`VF2BoostConfig`.

    Returns:
        float64 gains, −inf where a child's hessian sum is below ``min_child_weight``.
    """
    GLo = np.asarray(GL, dtype=object)
    HLo = np.asarray(HL, dtype=object)
    gl = decode_fixed(GLo, frac_bits)
    hl = decode_fixed(HLo, frac_bits)
    gr = decode_fixed(G - GLo, frac_bits)
    hr = decode_fixed(H - HLo, frac_bits)
    g, h = decode_fixed(np.array([G, H], dtype=object), frac_bits)
    lam = float(reg_lambda)
    gains = 0.5 * (gl * gl / (hl + lam) + gr * gr / (hr + lam) - g * g / (h + lam)) - gamma
    # λ = 0 with an empty child gives 0/0: such a candidate is never valid
    ok = (hl >= min_child_weight) & (hr >= min_child_weight) & ~np.isnan(gains)
    return np.where(ok, gains, -np.inf)


def leaf_weight(G: int, H: int, frac_bits: int, reg_lambda: float, learning_rate: float) -> float:
    """−G/(H+λ)·learning_rate from exact sums."""
    g, h = decode_fixed(np.array([G, H], dtype=object), frac_bits)
    return float(-g / (h + reg_lambda) * learning_rate)


def best_position(gains: np.ndarray) -> tuple[float, int]:
    """Best gain of one party and its first position in canonical order (−inf, -1 if none)."""
    flat = np.asarray(gains, dtype=np.float64).ravel()
    if flat.size == 0:
        return -np.inf, -1
    i = int(np.argmax(flat))  # first occurrence of the maximum: the tie rule
    return float(flat[i]), i


def pick_winner(candidates: list[Candidate]) -> Candidate | None:
    """The winning candidate across parties (given in party order), or None if no split
    beats :data:`MIN_GAIN`. Strictly greater gain wins, so the lower party index wins ties."""
    best: Candidate | None = None
    for c in candidates:
        if c.position < 0 or not np.isfinite(c.gain):
            continue
        if best is None or c.gain > best.gain:
            best = c
    if best is None or not best.gain > MIN_GAIN:
        return None
    return best


def candidate_mask(n_bins: np.ndarray, width: int) -> np.ndarray:
    """Boolean (features × width) mask of valid candidates "bin <= k", k < n_bins[f] - 1."""
    k = np.arange(width)[None, :]
    return k < (np.asarray(n_bins)[:, None] - 1)
