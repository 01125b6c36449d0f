"""The losses VF2Boost trains: labels they accept, base margin, gradients and predictions.

* ``binary:logistic``: labels 0/1, margin = log-odds, prediction = probability of class 1.
* ``reg:logistic``: targets in [0, 1] (e.g. rates), the same loss and link as binary.
* ``reg:squarederror``: any finite targets, g = prediction − y, h = 1, prediction = margin.

Each objective states a bound on its hessian (``h_log2``: h <= 2^h_log2) that the bit-budget
planner uses for the h lane. Gradients need no fixed bound: each tree encodes g scaled by a
power of two that brings it into [−1, 1] (:func:`~hefl.protocols.vf2boost.tree.grad_exponent`):
logistic gradients are already there; squared-error gradients are residuals, unbounded by
nature, so their scale comes from the current residuals of the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hefl.errors import ConfigError
from hefl.protocols.vf2boost.tree import sigmoid

OBJECTIVES = ("binary:logistic", "reg:logistic", "reg:squarederror")


@dataclass(frozen=True)
class Objective:
    """One loss (see the module docs).

    Attributes:
        name: XGBoost's name of the objective.
        h_log2: h <= 2^h_log2 for every row (logistic: 1/4, squared error: 1).
    """

    name: str
    h_log2: int

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
        return arr

    def base_margin(self, y: np.ndarray, base_score: float | None) -> float:
        """The initial margin: logit(base_score) for the logistic losses, base_score itself
        for squared error; base_score defaults to the label mean.

        Raises:
            ConfigError: logistic labels whose mean is 0 or 1 (an infinite logit).
        """
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
        """g and h of the loss at the current margins."""
        if not self.logistic:
            return margin - y, np.ones_like(margin)
        p = sigmoid(margin)
        return p - y, p * (1.0 - p)

    def transform(self, margin: np.ndarray) -> np.ndarray:
        """Margins -> predictions (probabilities, or values for squared error)."""
        return sigmoid(margin) if self.logistic else np.asarray(margin, dtype=np.float64)


def objective_of(name: str) -> Objective:
    """The :class:`Objective` called ``name``.

    Raises:
        ConfigError: an objective hefl does not train (names it and the known ones).
    """
    if name not in OBJECTIVES:
        raise ConfigError(f"objective={name!r} is not supported; use one of {OBJECTIVES}")
    return Objective(name, h_log2=-2 if name != "reg:squarederror" else 0)


__all__ = ["OBJECTIVES", "Objective", "objective_of"]
