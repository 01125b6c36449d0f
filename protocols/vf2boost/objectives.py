"""The losses VF2Boost trains: labels they accept, base margin, gradients and predictions.

* ``binary:logistic``: labels 0/1, margin = log-odds, prediction = probability of class 1.
* ``reg:logistic``: targets in [0, 1] (e.g. rates), the same loss and link as binary.
* ``reg:squarederror``: any finite targets, g = prediction − y, h = 1, prediction = margin.
* ``multi:softprob``: labels 0..K−1 (``num_class`` = K), one margin per class, softmax
  probabilities; g_k = p_k − [y = k], h_k = 2·p_k(1 − p_k) as XGBoost's. With
  ``multi_strategy="one_output_per_tree"`` every round grows one tree per class from the
  gradients at the round's start.

Each objective states a bound on its hessian (``h_log2``: h <= 2^h_log2) that the bit-budget
planner uses for the h lane. Gradients need no fixed bound: each tree encodes g scaled by a
power of two that brings it into [−1, 1] (:func:`~hefl.protocols.vf2boost.tree.grad_exponent`):
logistic gradients are already there; squared-error gradients are residuals, unbounded by
nature, so their scale comes from the current residuals of the labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hefl.errors import ConfigError
from hefl.protocols.vf2boost.budget import BitPlan, plan_bits
from hefl.protocols.vf2boost.tree import sigmoid

OBJECTIVES = ("binary:logistic", "reg:logistic", "reg:squarederror", "multi:softprob")
MAX_CLASSES = 32


@dataclass(frozen=True)
class Objective:
    """One loss (see the module docs).

    Attributes:
        name: XGBoost's name of the objective.
        h_log2: h <= 2^h_log2 for every row (logistic: 1/4, softmax: 1/2, squared error: 1).
        num_class: K for ``multi:softprob``, else 1 (one margin per row).
    """

    name: str
    h_log2: int
    num_class: int = 1
    vector_leaves: bool = False

    @property
    def outputs(self) -> int:
        """Margins a tree adds to per row: K with vector leaves, else 1."""
        return self.num_class if self.vector_leaves else 1

    @property
    def trees_per_round(self) -> int:
        return 1 if self.vector_leaves else self.num_class

    @property
    def multi(self) -> bool:
        return self.name == "multi:softprob"

    @property
    def logistic(self) -> bool:
        return self.name != "reg:squarederror"

    def check_labels(self, y: object, n_rows: int | None = None, who: str = "active") -> np.ndarray:
        """Validate the labels for this objective and return them as float64.

        Raises:
            ConfigError: not 1-D, NaN or ±inf, outside the objective's range, or a row count
                that differs from the features' (names the party and the objective).
        """
        try:
            arr = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{who}: labels must be numeric, got {exc}") from None
        if arr.ndim != 1:
            raise ConfigError(f"{who}: labels must be a 1-D array, got shape {arr.shape}")
        if np.isnan(arr).any():
            raise ConfigError(f"{who}: labels contain NaN at row {int(np.argmax(np.isnan(arr)))}")
        if np.isinf(arr).any():
            raise ConfigError(f"{who}: labels contain ±inf at row {int(np.argmax(np.isinf(arr)))}")
        if self.name == "binary:logistic":
            bad, why = ~np.isin(arr, (0.0, 1.0)), "must be 0 or 1"
        elif self.multi:
            K = self.num_class
            bad, why = ~np.isin(arr, np.arange(K)), f"must be integers 0..{K - 1} (num_class={K})"
        elif self.name == "reg:logistic":
            bad, why = (arr < 0) | (arr > 1), "must be in [0, 1]"
        else:
            bad, why = np.zeros(arr.shape, dtype=bool), ""
        if bad.any():
            i = int(np.argmax(bad))
            raise ConfigError(f"{who}: labels {why} for {self.name}; row {i} is {arr[i]!r}")
        if n_rows is not None and arr.shape[0] != n_rows:
            raise ConfigError(
                f"{who}: {arr.shape[0]} labels for {n_rows} feature rows; they must match"
            )
        if self.multi:
            absent = sorted(set(range(self.num_class)) - set(np.unique(arr).astype(int).tolist()))
            if absent:
                raise ConfigError(
                    f"{who}: num_class={self.num_class} disagrees with the labels: class(es) "
                    f"{absent} never occur"
                )
        return arr

    def base_margin(self, y: np.ndarray, base_score: float | None) -> float:
        """The initial margin: logit(base_score) for the logistic losses, base_score itself
        for squared error; base_score defaults to the label mean.

        Raises:
            ConfigError: logistic labels whose mean is 0 or 1 (an infinite logit).
        """
        if self.multi:  # one margin for every class: softmax does not see it (XGBoost's 0.5)
            return 0.5 if base_score is None else float(base_score)
        p = float(np.mean(y)) if base_score is None else float(base_score)
        if not self.logistic:
            return p
        if not 0 < p < 1:
            raise ConfigError(
                "labels are all 0 or all 1, so the base score logit(mean) is infinite; "
                "a boosted model needs both classes (or pass base_score explicitly)"
            )
        return float(np.log(p / (1 - p)))

    def gradients(self, margin: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """g and h of the loss at the current margins (rows × K for ``multi:softprob``)."""
        if self.multi:
            p = softmax(margin)
            onehot = np.arange(self.num_class)[None, :] == y.astype(np.int64)[:, None]
            return p - onehot, np.maximum(2.0 * p * (1.0 - p), 1e-16)
        if not self.logistic:
            return margin - y, np.ones_like(margin)
        p = sigmoid(margin)
        return p - y, p * (1.0 - p)

    def transform(self, margin: np.ndarray) -> np.ndarray:
        """Margins -> predictions (probabilities, (rows × K) for softmax, or values)."""
        if self.multi:
            return softmax(margin)
        return sigmoid(margin) if self.logistic else np.asarray(margin, dtype=np.float64)

    def initial_margin(self, n_rows: int, base_margin: float) -> np.ndarray:
        """The margins before the first tree: (rows,), or (rows × K) for softmax."""
        shape = (n_rows, self.num_class) if self.multi else (n_rows,)
        return np.full(shape, base_margin, dtype=np.float64)

    def round_gradients(
        self, margin: np.ndarray, y: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The (g, h) of each tree of a round: one pair, or one per class for softmax (all
        from the margins at the round's start, as XGBoost)."""
        g, h = self.gradients(margin, y)
        if not self.multi or self.vector_leaves:
            return [(g, h)]
        return [(g[:, k], h[:, k]) for k in range(self.num_class)]

    def add_tree(self, margin: np.ndarray, t: int, out: np.ndarray) -> None:
        """Add tree ``t``'s output to the margins (in place; its class's column, or every
        column with vector leaves)."""
        if self.vector_leaves:
            margin += out
        elif self.multi:
            margin[:, self.tree_class(t)] += out
        else:
            margin += out

    def tree_class(self, t: int) -> int:
        """The class (margin column) tree ``t`` adds to: t mod K (0 with one margin)."""
        return t % self.num_class


def softmax(margin: np.ndarray) -> np.ndarray:
    """Row-wise softmax of a (rows × K) margin matrix (shifted by the row max: stable)."""
    z = np.asarray(margin, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def leaf_output(leaf_values: Any, reach: np.ndarray) -> np.ndarray:
    """A tree's output per row from its leaf values and a (leaves × rows) one-hot reach:
    (rows,), or (rows × K) for vector leaves."""
    values = np.asarray(leaf_values, dtype=np.float64)
    if values.ndim == 1:
        return values @ reach
    return (values.T @ reach).T


def objective_of(name: str, num_class: int = 0, vector_leaves: bool = False) -> Objective:
    """The :class:`Objective` called ``name`` (``num_class`` classes for multi:softprob).

    Raises:
        ConfigError: an objective hefl does not train (names it and the known ones), or a
            multi-class objective without 2 < num_class <= 32.
    """
    if name not in OBJECTIVES:
        raise ConfigError(f"objective={name!r} is not supported; use one of {OBJECTIVES}")
    if name == "multi:softprob":
        if not 2 < num_class <= MAX_CLASSES:
            raise ConfigError(
                f"num_class={num_class!r}: multi:softprob needs 2 < num_class <= {MAX_CLASSES} "
                "(use binary:logistic for two classes)"
            )
        return Objective(name, h_log2=-1, num_class=num_class, vector_leaves=vector_leaves)
    return Objective(name, h_log2=0 if name == "reg:squarederror" else -2)


def config_objective(cfg: Any) -> Objective:
    """The objective of a VF2BoostConfig (its ``objective`` and ``num_class``)."""
    return objective_of(cfg.objective, cfg.num_class, cfg.vector_leaves)


def plan_layout(cfg: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`~hefl.protocols.vf2boost.budget.plan_bits` that a
    VF2BoostConfig fixes (everything but rows, precision and key size)."""
    objective = config_objective(cfg)
    return {
        "pack_gh": cfg.pack_gh,
        "pack_histograms": cfg.pack_histograms,
        "h_log2": objective.h_log2,
        "classes": objective.outputs,
        "encoding": cfg.encoding,
    }


def training_plan(cfg: Any, n_rows: int, key_bits: int) -> BitPlan:
    """The bit plan of a training with ``cfg`` (its ``frac_bits`` resolved) on ``n_rows`` rows
    under a ``key_bits`` key: the same at every party, since each derives it from the same
    values.

    Raises:
        ConfigError: ``cfg.frac_bits`` is still ``"auto"``.
        BitBudgetError: the plan does not fit the key.
    """
    return plan_bits(n_rows, cfg.resolved_frac_bits, key_bits, **plan_layout(cfg))


__all__ = [
    "MAX_CLASSES",
    "OBJECTIVES",
    "Objective",
    "config_objective",
    "leaf_output",
    "objective_of",
    "plan_layout",
    "softmax",
    "training_plan",
]
