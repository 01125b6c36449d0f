"""pandas DataFrames as a party's features (pandas is optional: only a DataFrame needs it).

A DataFrame keeps its column names in the party's share of the model (errors, importances and
model files use them). Numeric and boolean columns are read as floats (NaN, None and pd.NA are
missing values); a ``category`` column becomes its category codes, with its categories kept in
the share: each category gets its own bin and splits on it are *one category vs the rest*
(XGBoost's one-hot split), the category's rows going left. At prediction time categories are
matched by name; a category unseen in training is a missing value. Other dtypes (strings,
objects, dates) are refused by name: convert them first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hefl.errors import ConfigError


def is_frame(X: object) -> bool:
    """Whether ``X`` is a pandas DataFrame (checked without importing pandas)."""
    return (
        type(X).__module__.startswith("pandas") and hasattr(X, "dtypes") and hasattr(X, "columns")
    )


def read_frame(
    X: Any, who: str, categories: tuple[tuple[str, ...] | None, ...] | None = None
) -> tuple[np.ndarray, list[str], tuple[tuple[str, ...] | None, ...]]:
    """A DataFrame as (float64 values, column names, categories per column).

    Args:
        X: a pandas DataFrame.
        who: the party, for error messages.
        categories: the training's categories per column (prediction: codes follow them, a
            category not among them is missing); None in training (codes follow the frame's).

    Raises:
        ConfigError: a column of another dtype, or columns that differ from training (named).
    """
    names = [str(c) for c in X.columns]
    if categories is not None and len(categories) != len(names):
        raise ConfigError(
            f"{who}: expected {len(categories)} columns (as in training), got {len(names)}"
        )
    values = np.empty(X.shape, dtype=np.float64)
    cats: list[tuple[str, ...] | None] = []
    for j, name in enumerate(names):
        col = X.iloc[:, j]
        kind = str(col.dtype)
        if kind == "category":
            own = tuple(str(c) for c in col.cat.categories)
            known = own if categories is None else categories[j]
            if known is None:
                raise ConfigError(
                    f"{who}: column {name!r} is a category column but was numeric in training"
                )
            index = {c: i for i, c in enumerate(known)}
            codes = np.asarray(col.cat.codes, dtype=np.int64)
            mapped = np.array([index.get(own[c], -1) if c >= 0 else -1 for c in codes.tolist()])
            values[:, j] = np.where(mapped >= 0, mapped, np.nan)
            cats.append(known)
            continue
        if categories is not None and categories[j] is not None:
            raise ConfigError(
                f"{who}: column {name!r} was a category column in training, now {kind}"
            )
        try:
            values[:, j] = np.asarray(col.astype("float64"), dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{who}: column {name!r} has dtype {kind}; use numbers, booleans or the "
                "'category' dtype"
            ) from None
        cats.append(None)
    return values, names, tuple(cats)


def values_of(X: Any, who: str = "party") -> Any:
    """A DataFrame's float values (category codes, NaN for missing), else ``X`` itself: what
    a checkpoint fingerprints (an object array's bytes would be pointers)."""
    return read_frame(X, who)[0] if is_frame(X) else X


__all__ = ["is_frame", "read_frame", "values_of"]
