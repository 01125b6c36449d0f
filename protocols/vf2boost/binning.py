"""Per-party feature binning (quantile cut points), done once before training.

Every party bins only its own columns; cut points never leave the party. The cut points are
those XGBoost's ``hist`` method would place on the same column with the same ``max_bin``
(:mod:`~hefl.protocols.vf2boost.sketch`): one bin per distinct value when a feature has at
most ``max_bin`` of them, weighted-quantile cuts otherwise. Bin codes:

* bin 0 holds missing values (NaN), kept out of the value bins. It always exists, so a feature
  that has no NaN in training but some at prediction time still has a place for them. A split
  sends values in bins 1..k left and the missing values to its learned default side, as
  XGBoost does (:func:`~hefl.protocols.vf2boost.tree.go_left`).
* bins 1..m+1 hold values: x < c_1 -> 1, c_1 <= x < c_2 -> 2, ..., x >= c_m -> m+1, for
  sorted cut points c_1 < ... < c_m, m <= max_bin - 1. As in XGBoost, a value equal to a cut
  point goes to the bin above it (the right side of a split at that cut).

Infinite values are refused (they have no quantile and usually mean a data bug), and so are
columns that cannot split anything: all missing, or one value and no missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hefl.errors import ConfigError
from hefl.protocols.vf2boost.frame import is_frame, read_frame
from hefl.protocols.vf2boost.sketch import xgboost_cuts

MISSING_BIN = 0
#: How cut points are placed and which side a value equal to one goes: saved in checkpoints
#: (trees grown on other bins must not be continued on these) beside the configuration.
BINNING = "xgboost-hist"


def check_features(X: Any, who: str = "party") -> Any:
    """Validate a feature matrix: returns it as a float64 2-D array, or a pandas DataFrame
    itself once its columns are checked (:mod:`~hefl.protocols.vf2boost.frame`).

    Args:
        X: array-like (rows × features) of numbers, or a DataFrame; NaN marks a missing value.
        who: name used in error messages.

    Raises:
        ConfigError: not 2-D, non-numeric, or containing ±inf.
    """
    if is_frame(X):
        check_features(read_frame(X, who)[0], who)
        return X
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{who}: features must be numeric, got {exc}") from None
    if arr.ndim != 2:
        raise ConfigError(f"{who}: features must be a 2-D array (rows × columns), got {arr.ndim}-D")
    if np.isinf(arr).any():
        r, c = np.argwhere(np.isinf(arr))[0]
        raise ConfigError(
            f"{who}: feature column {c} row {r} is infinite; replace ±inf by a finite value "
            "or by NaN (missing) before training"
        )
    return arr


def _cut_points(values: np.ndarray, max_bin: int) -> np.ndarray:
    """Cut points for one feature's non-missing values, in row order (at most max_bin - 1):
    XGBoost's ``hist`` cut points for the same column (:func:`~hefl.protocols.vf2boost.sketch.xgboost_cuts`)."""
    return xgboost_cuts(values, max_bin)


def check_columns(X: Any, who: str, names: list[str] | None = None) -> Any:
    """Refuse training columns that cannot split anything: all missing, or one value with no
    missing one (one value plus missing values still splits: present vs missing).

    Returns:
        ``X`` itself.

    Raises:
        ConfigError: naming the party (``who``) and the column.
    """
    frame = X
    if is_frame(X):
        X, names, _ = read_frame(X, who)
    if X.shape[0] == 0:
        return frame
    missing = np.isnan(X)
    for j in np.flatnonzero(missing.all(axis=0)):
        raise ConfigError(f"{who}: feature column {_label(int(j), names)} is all missing (NaN)")
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanmin(X, axis=0), np.nanmax(X, axis=0)
    for j in np.flatnonzero((lo == hi) & ~missing.any(axis=0)):
        raise ConfigError(
            f"{who}: feature column {_label(int(j), names)} is constant ({float(lo[j])!r}); "
            "it cannot split anything: drop it"
        )
    return frame


def _label(j: int, names: list[str] | None) -> str:
    """How an error message names column ``j``."""
    return f"{j} ({names[j]!r})" if names is not None and j < len(names) else str(j)


@dataclass(frozen=True)
class Binner:
    """Cut points of every feature of one party.

    Attributes:
        cuts: one float64 array of sorted cut points per feature.
        categories: per feature, its categories (a DataFrame ``category`` column: one bin per
            category, code c in bin c + 1) or None (numeric); empty for arrays.
        names: the columns' names (a DataFrame's), or None.
    """

    cuts: tuple[np.ndarray, ...]
    categories: tuple[tuple[str, ...] | None, ...] = ()
    names: tuple[str, ...] | None = None

    @property
    def categorical(self) -> np.ndarray:
        """Per feature, whether it is a category column (one category vs rest splits)."""
        flags = [c is not None for c in self.categories] or [False] * self.n_features
        return np.array(flags, dtype=bool)

    @classmethod
    def fit(
        cls, X: np.ndarray, max_bin: int, who: str = "party", names: list[str] | None = None
    ) -> Binner:
        """Compute quantile cut points per feature.

        Args:
            X: rows × features, float64, NaN = missing.
            max_bin: most value bins per feature.
            who: name used in error messages.
            names: the columns' names (for error messages), or None.

        Raises:
            ConfigError: see :func:`check_features`; an all-missing or constant column (named).
        """
        X = check_columns(check_features(X, who), who, names)
        if not is_frame(X):
            return cls(cuts=tuple(_cut_points(col[~np.isnan(col)], max_bin) for col in X.T))
        values, names, categories = read_frame(X, who)
        cuts = []
        for j, cats in enumerate(categories):
            if cats is None:
                cuts.append(_cut_points(values[~np.isnan(values[:, j]), j], max_bin))
            elif len(cats) > max_bin:
                raise ConfigError(
                    f"{who}: category column {names[j]!r} has {len(cats)} categories, more "
                    f"than max_bin={max_bin} (one bin per category)"
                )
            else:  # one bin per category: code c falls in bin c + 1
                cuts.append(np.arange(1, len(cats), dtype=np.float64))
        return cls(cuts=tuple(cuts), categories=categories, names=tuple(names))

    @property
    def n_features(self) -> int:
        return len(self.cuts)

    @property
    def n_bins(self) -> np.ndarray:
        """Bins per feature, including the missing bin 0."""
        return np.array([len(c) + 2 for c in self.cuts], dtype=np.int64)

    def transform(self, X: np.ndarray, who: str = "party") -> np.ndarray:
        """Map features to bin codes (int16 array, same shape).

        Raises:
            ConfigError: wrong number of columns or invalid values.
        """
        if is_frame(X):
            X = read_frame(X, who, self.categories or (None,) * self.n_features)[0]
        X = check_features(X, who)
        if X.shape[1] != self.n_features:
            raise ConfigError(
                f"{who}: expected {self.n_features} feature columns (as in training), "
                f"got {X.shape[1]}"
            )
        out = np.empty(X.shape, dtype=np.int16)
        for j, c in enumerate(self.cuts):
            col = X[:, j]
            b = np.searchsorted(c, col, side="right") + 1  # x == cut: the bin above
            b[np.isnan(col)] = MISSING_BIN
            out[:, j] = b
        return out

    def threshold(self, feature: int, bin_: int) -> float:
        """The raw-value threshold of the split ``bin <= bin_``: x < threshold goes left, a
        value equal to it right (NaN to the split's default side), as in XGBoost's trees.
        For ``bin_ = 0`` no value goes left (-inf)."""
        if bin_ == MISSING_BIN:
            return float("-inf")
        return float(self.cuts[feature][bin_ - 1])

    def to_json(self) -> list[list[float]]:
        """Cut points as nested lists of floats (exact round trip through JSON); the
        categories and names are saved beside them (:class:`PartyModel` files)."""
        return [c.tolist() for c in self.cuts]

    @classmethod
    def from_json(
        cls, data: object, categories: object = None, names: object = None, legacy: bool = False
    ) -> Binner:
        """Inverse of :meth:`to_json` (with the saved categories and names, if any).

        Args:
            legacy: the cuts come from a model file that sent x <= cut left (format 1); each
                becomes the next float up, which sends exactly the same values left under
                today's x < cut.

        Raises:
            ConfigError: malformed data.
        """
        if not isinstance(data, list):
            raise ConfigError("binner cuts must be a list of lists of numbers")
        cuts = []
        for c in data:
            arr = np.asarray(c, dtype=np.float64)
            if arr.ndim != 1 or not np.isfinite(arr).all() or np.any(np.diff(arr) <= 0):
                raise ConfigError("binner cuts must be strictly increasing finite numbers")
            cuts.append(np.nextafter(arr, np.inf) if legacy else arr)
        cats: tuple[tuple[str, ...] | None, ...] = ()
        if categories is not None:
            if not isinstance(categories, list) or len(categories) != len(cuts):
                raise ConfigError("binner categories must be a list with one entry per feature")
            cats = tuple(None if c is None else tuple(str(v) for v in c) for c in categories)
        return cls(
            cuts=tuple(cuts),
            categories=cats,
            names=None if not isinstance(names, list) else tuple(str(n) for n in names),
        )
