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

import math
from dataclasses import dataclass
from typing import Any

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


def encode_fixed(x: np.ndarray, frac_bits: int) -> np.ndarray:
    """round(x·2^frac_bits) as int64 (|x| <= 1 and frac_bits <= 62, so it always fits)."""
    return np.rint(np.ldexp(np.asarray(x, dtype=np.float64), frac_bits)).astype(np.int64)


def decode_fixed(ints: np.ndarray | list[int], frac_bits: int) -> np.ndarray:
    """Exact integers -> float64, each correctly rounded (Python int true division)."""
    scale = 1 << frac_bits
    return np.array(
        [int(v) / scale for v in np.asarray(ints, dtype=object).ravel()], dtype=np.float64
    ).reshape(np.shape(ints))


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


@dataclass(frozen=True)
class SplitParams:
    """What scoring a tree's splits needs: the fixed-point scales and the regularization.

    Attributes:
        frac_bits: h was encoded as round(h·2^frac_bits).
        g_exp: g was encoded as round(g·2^(frac_bits − g_exp)) (see :func:`grad_exponent`).
        reg_lambda, reg_alpha, max_delta_step, gamma, min_child_weight, learning_rate: as in
            :class:`~hefl.protocols.vf2boost.config.VF2BoostConfig`.
    """

    frac_bits: int
    g_exp: int = 0
    reg_lambda: float = 1.0
    reg_alpha: float = 0.0
    max_delta_step: float = 0.0
    gamma: float = 0.0
    min_child_weight: float = 1.0
    learning_rate: float = 0.3

    @classmethod
    def of(cls, cfg: Any, g_exp: int = 0) -> SplitParams:
        """The parameters of a config (a VF2BoostConfig) for a tree whose g used ``g_exp``."""
        return cls(
            frac_bits=cfg.resolved_frac_bits,
            g_exp=g_exp,
            reg_lambda=float(cfg.reg_lambda),
            reg_alpha=float(cfg.reg_alpha),
            max_delta_step=float(cfg.max_delta_step),
            gamma=float(cfg.gamma),
            min_child_weight=float(cfg.min_child_weight),
            learning_rate=float(cfg.learning_rate),
        )

    def decode_g(self, ints: Any) -> np.ndarray:
        """Exact g sums -> float64 (scaling by 2^g_exp is exact)."""
        return np.ldexp(decode_fixed(ints, self.frac_bits), self.g_exp)

    def decode_h(self, ints: Any) -> np.ndarray:
        """Exact h sums -> float64."""
        return decode_fixed(ints, self.frac_bits)

    def weight(self, g: np.ndarray, h: np.ndarray) -> np.ndarray:
        """XGBoost's leaf weight −T_α(G)/(H+λ), clipped to ±max_delta_step when it is > 0."""
        w = -_threshold_l1(g, self.reg_alpha) / (h + self.reg_lambda)
        if self.max_delta_step > 0:
            w = np.clip(w, -self.max_delta_step, self.max_delta_step)
        return w

    def node_gain(self, g: np.ndarray, h: np.ndarray) -> np.ndarray:
        """XGBoost's structure score of a node: T_α(G)²/(H+λ), or with a clipped weight w,
        −(2Gw + (H+λ)w²) + α|w|."""
        if self.max_delta_step == 0:
            t = _threshold_l1(g, self.reg_alpha)
            return t * t / (h + self.reg_lambda)
        w = self.weight(g, h)
        return -(2.0 * g * w + (h + self.reg_lambda) * w * w) + self.reg_alpha * np.abs(w)


def _threshold_l1(g: np.ndarray, alpha: float) -> np.ndarray:
    """G shrunk towards 0 by α (L1 regularization), as XGBoost does."""
    if alpha == 0:
        return g
    return np.sign(g) * np.maximum(np.abs(g) - alpha, 0.0)


def grad_exponent(g: np.ndarray) -> int:
    """The smallest e >= 0 with |g| <= 2^e for every g: g is encoded as g·2^-e, so every
    encoding stays within ±2^frac_bits (the bit plan's bound) whatever the loss.

    Logistic gradients (|g| <= 1) always get 0; squared-error gradients (residuals) get the
    exponent of their largest magnitude in this tree.
    """
    top = float(np.max(np.abs(g))) if np.size(g) else 0.0
    if not math.isfinite(top):
        raise ConfigError("the gradients are not finite: the labels or predictions overflow")
    if top <= 1.0:
        return 0
    m, e = math.frexp(top)  # top = m·2^e, 0.5 <= m < 1
    return e - 1 if m == 0.5 else e


def encode_gh(g: np.ndarray, h: np.ndarray, frac_bits: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One tree's g and h as fixed-point int64 encodings, and g's exponent.

    Returns:
        (g encodings, h encodings, g_exp): g_int = round(g·2^(frac_bits − g_exp)),
        h_int = round(h·2^frac_bits).
    """
    e = grad_exponent(g)
    return encode_fixed(np.ldexp(g, -e), frac_bits), encode_fixed(h, frac_bits), e


def _classes(a: Any) -> np.ndarray:
    """Per-class exact sums as an object array whose first axis is the class (a plain int is
    one class)."""
    arr = np.asarray(a, dtype=object)
    return arr.reshape(1) if arr.ndim == 0 else arr


def score_cumulative(
    GL: np.ndarray, HL: np.ndarray, G: Any, H: Any, params: SplitParams
) -> np.ndarray:
    """Gains of candidate splits from exact cumulative sums.

    Args:
        GL, HL: object arrays of Python ints: exact left-child sums of g and h encodings,
            one per candidate (any shape); with vector leaves (classes × candidates...).
        G, H: exact sums at the node: ints, or one per class (vector leaves).
        params: the scales and regularization of this tree.

    Returns:
        float64 gains ½ Σ_classes [S(L) + S(R) − S(node)] − γ (S:
        :meth:`SplitParams.node_gain`; one output: XGBoost's gain, −inf where a child's
        hessian sum is below ``min_child_weight``; vector leaves: the classes' gains summed,
        a class whose hessian sum is below ``min_child_weight`` scoring 0, as XGBoost's
        multi-target trees do).
    """
    Gc, Hc = _classes(G), _classes(H)
    GLo = np.asarray(GL, dtype=object)
    HLo = np.asarray(HL, dtype=object)
    if np.ndim(G) == 0:
        GLo, HLo = GLo[None], HLo[None]
    extra = (1,) * (GLo.ndim - 1)
    gl, hl = params.decode_g(GLo), params.decode_h(HLo)
    gr = params.decode_g(Gc.reshape(-1, *extra) - GLo)
    hr = params.decode_h(Hc.reshape(-1, *extra) - HLo)
    g, h = params.decode_g(Gc).reshape(-1, *extra), params.decode_h(Hc).reshape(-1, *extra)
    mcw, vector = params.min_child_weight, GLo.shape[0] > 1
    with np.errstate(divide="ignore", invalid="ignore"):
        parts = [params.node_gain(a, b) for a, b in ((gl, hl), (gr, hr), (g, h))]
        if vector:  # XGBoost's multi-target rule: a class below min_child_weight scores 0
            parts = [np.where(b >= mcw, p, 0.0) for p, b in zip(parts, (hl, hr, h), strict=True)]
        score = parts[0] + parts[1] - parts[2]
    gains = 0.5 * score.sum(axis=0) - params.gamma
    ok = ~np.isnan(gains)  # λ = 0 with an empty child gives 0/0: never a valid candidate
    if not vector:
        ok &= (hl[0] >= mcw) & (hr[0] >= mcw)
    return np.where(ok, gains, -np.inf)


def leaf_weight(G: Any, H: Any, params: SplitParams) -> Any:
    """The leaf weight (:meth:`SplitParams.weight`) times the learning rate, from exact sums:
    a float for one output, a list of floats (one per class) for vector leaves (0 for a class
    whose hessian sum is below ``min_child_weight``, as XGBoost's)."""
    h = params.decode_h(_classes(H))
    w = params.weight(params.decode_g(_classes(G)), h)
    if np.ndim(G):
        w = np.where(h >= params.min_child_weight, w, 0.0)
    w = w * params.learning_rate
    return float(w[0]) if np.ndim(G) == 0 else [float(v) for v in w]


def node_sums(v: np.ndarray) -> Any:
    """Exact sums of int64 encodings: a Python int for (rows,), an object array of one int
    per class for (rows × K) (vector leaves)."""
    if v.ndim == 1:
        return exact_group_sums(v, np.zeros(len(v), dtype=np.int64), 1)[0] if len(v) else 0
    return np.array([node_sums(v[:, k]) for k in range(v.shape[1])], dtype=object)


def pick(sums: np.ndarray, index: tuple[int, ...]) -> Any:
    """One candidate's sums from (…) or (classes × …) sums: an int, or one per class."""
    if sums.ndim == len(index):
        return int(sums[index])
    return np.array([int(per_class[index]) for per_class in sums], dtype=object)


def cover(H: Any, params: SplitParams) -> float:
    """A node's cover: its hessian sum (over the classes with vector leaves)."""
    return float(params.decode_h(_classes(H)).sum())


def loss_change(gain: float, params: SplitParams) -> float:
    """XGBoost's loss change of a split (its importance "gain") from our ½-scaled gain net of
    γ: 2·(gain + γ)."""
    return 2.0 * (float(gain) + params.gamma)


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


def candidate_mask(
    n_bins: np.ndarray, width: int, has_missing: np.ndarray, categorical: Any = None
) -> np.ndarray:
    """Boolean (features × width × 2) mask of the valid candidates (see :func:`split_sums`).

    Numeric features: direction 0 (missing values right) for k = 1 .. n_bins − 2, and
    n_bins − 1 (every value left, the missing ones right) for a feature with missing values;
    direction 1 (missing left) for k = 0 .. n_bins − 2, only for a feature with missing values
    in training: without any, both directions have the same sums and direction 0 (first in the
    tie order) always wins. Categorical features: every category k = 1 .. n_bins − 1 on its
    own, direction 1 again only with missing values.
    """
    k = np.arange(width)[None, :]
    top = np.asarray(n_bins)[:, None] - 1
    miss = np.asarray(has_missing, dtype=bool)[:, None]
    cat = _flags(categorical, len(top))[:, None]
    right = np.where(cat, (k >= 1) & (k <= top), ((k >= 1) & (k < top)) | (miss & (k == top)))
    left = miss & np.where(cat, (k >= 1) & (k <= top), k < top)
    return np.stack([right, left], axis=2)


def _flags(categorical: Any, n: int) -> np.ndarray:
    """Per-feature categorical flags (all False when None or empty)."""
    if categorical is None or not len(categorical):
        return np.zeros(n, dtype=bool)
    return np.asarray(categorical, dtype=bool)


def split_sums(
    hg: np.ndarray, hh: np.ndarray, categorical: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Left-child sums of every candidate from (features × width) histograms.

    Bin 0 of a feature holds its missing rows, bins 1.. its values. Candidate (f, k, d) sends
    the values in bins 1..k left (a categorical feature: only category bin k), and the
    missing rows right (d = 0) or left (d = 1), as XGBoost's learned default direction.

    Returns:
        (GL, HL), each (features × width × 2) ((classes × features × width × 2) for
        (classes × features × width) histograms).
    """
    cat = _flags(categorical, hg.shape[-2])[:, None]
    out = []
    for hist in (hg, hh):
        cum = np.cumsum(hist, axis=-1)  # bins 0..k: missing rows and values <= k
        values = np.where(cat, hist, cum - hist[..., :1])
        out.append(np.stack([values, values + hist[..., :1]], axis=-1))
    return out[0], out[1]


def decode_position(position: int, width: int) -> tuple[int, int, bool]:
    """A candidate's position in the flattened (features × width × 2) space ->
    (feature, bin k, missing values go left)."""
    fk, d = divmod(int(position), 2)
    f, k = divmod(fk, width)
    return f, k, bool(d)


def go_left(
    column_bins: np.ndarray, k: int, default_left: bool, categorical: bool = False
) -> np.ndarray:
    """Rows going left under split (k, default_left): values in bins 1..k (a categorical
    feature: category bin k only), and missing values (bin 0) when ``default_left``."""
    col = np.asarray(column_bins)
    values = (col == k) if categorical else (col <= k)
    return (values & (col != 0)) | ((col == 0) & default_left)
