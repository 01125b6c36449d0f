"""Bundled datasets.

hefl ships UCI Adult (Census Income, 1994) inside the package so the demos, tutorials and tests
run offline. Source: Becker, B. & Kohavi, R. (1996). Adult. UCI Machine Learning Repository.
https://doi.org/10.24432/C5XW20. License: CC BY 4.0.
"""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from importlib import resources

import numpy as np

from hefl.errors import ConfigError

ADULT_COLUMNS: tuple[str, ...] = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
)
ADULT_NUMERIC: frozenset[str] = frozenset(
    {"age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"}
)
# The vertical split used for comparisons with other systems: the label holder (active party)
# keeps the first seven attributes, the passive party the other seven.
ADULT_ACTIVE_COLUMNS: tuple[str, ...] = ADULT_COLUMNS[:7]
ADULT_PASSIVE_COLUMNS: tuple[str, ...] = ADULT_COLUMNS[7:]


@dataclass(frozen=True)
class Dataset:
    """A table of features with a binary label.

    Attributes:
        X: float64 array (rows × columns). Categorical columns hold integer category codes
            (indices into ``categories[column]``); a missing value ('?') is NaN.
        y: int64 array of 0/1 labels (1 means income >50K).
        columns: the column names, in order.
        categories: for each categorical column, its category names; code i is categories[i].
    """

    X: np.ndarray
    y: np.ndarray
    columns: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]

    def select(self, columns: tuple[str, ...] | list[str]) -> np.ndarray:
        """Return the feature columns named in ``columns``, in that order."""
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise ConfigError(f"unknown column(s) {missing}; known: {list(self.columns)}")
        return self.X[:, [self.columns.index(c) for c in columns]]


def _read_rows(name: str) -> list[list[str]]:
    path = resources.files("hefl.data").joinpath(name)
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="ascii") as text:
        rows = []
        for line in text:
            line = line.strip()
            if not line or line.startswith("|"):
                continue  # blank lines and the test file's header comment
            rows.append([field.strip() for field in line.split(",")])
    return rows


@functools.cache
def _categories() -> dict[str, tuple[str, ...]]:
    seen: dict[str, set[str]] = {c: set() for c in ADULT_COLUMNS if c not in ADULT_NUMERIC}
    for name in ("adult.data.gz", "adult.test.gz"):
        for row in _read_rows(name):
            for column, value in zip(ADULT_COLUMNS, row, strict=False):
                if column in seen and value != "?":
                    seen[column].add(value)
    return {c: tuple(sorted(values)) for c, values in seen.items()}


def load_adult(split: str = "train") -> Dataset:
    """Load UCI Adult from the copy bundled with hefl.

    Args:
        split: "train" (32,561 rows from adult.data) or "test" (16,281 rows from adult.test),
            the official split.

    Returns:
        A :class:`Dataset`; categorical columns are coded with the same codes in both splits.

    Raises:
        ConfigError: if ``split`` is not "train" or "test".
    """
    if split not in _FILES:
        raise ConfigError(f"split must be 'train' or 'test', not {split!r}")
    X, y = _parse(split)
    # copies: callers may modify their arrays without changing later loads
    return Dataset(X=X.copy(), y=y.copy(), columns=ADULT_COLUMNS, categories=dict(_categories()))


_FILES = {"train": "adult.data.gz", "test": "adult.test.gz"}


@functools.cache
def _parse(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse one split once per process (the demos and tests load Adult many times)."""
    codes = {c: {v: i for i, v in enumerate(vals)} for c, vals in _categories().items()}
    rows = _read_rows(_FILES[split])
    X = np.empty((len(rows), len(ADULT_COLUMNS)), dtype=np.float64)
    y = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        for j, column in enumerate(ADULT_COLUMNS):
            value = row[j]
            if value == "?":
                X[i, j] = np.nan
            elif column in ADULT_NUMERIC:
                X[i, j] = float(value)
            else:
                X[i, j] = codes[column][value]
        y[i] = 1 if row[14].rstrip(".") == ">50K" else 0
    return X, y


def adult_design_matrix(train: Dataset, test: Dataset) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One-hot encode the categorical columns and standardize the numeric ones.

    The statistics (means, standard deviations) come from ``train`` only. A missing category
    becomes an all-zero one-hot group. The result suits linear models and MLPs.

    Returns:
        (X_train, X_test, feature_names), float64 arrays.
    """
    blocks_train, blocks_test, names = [], [], []
    for j, column in enumerate(train.columns):
        a, b = train.X[:, j], test.X[:, j]
        if column in ADULT_NUMERIC:
            if column in ("fnlwgt", "capital_gain", "capital_loss"):
                a, b = np.log1p(a), np.log1p(b)  # heavy tails
            mean, std = a.mean(), a.std() or 1.0
            blocks_train.append(((a - mean) / std)[:, None])
            blocks_test.append(((b - mean) / std)[:, None])
            names.append(column)
        else:
            cats = train.categories[column]
            eye = np.arange(len(cats))
            blocks_train.append((a[:, None] == eye[None, :]).astype(np.float64))
            blocks_test.append((b[:, None] == eye[None, :]).astype(np.float64))
            names.extend(f"{column}={c}" for c in cats)
    return np.hstack(blocks_train), np.hstack(blocks_test), names


def adult_vertical_parts(data: Dataset, n_parties: int = 2) -> list[np.ndarray]:
    """Adult's columns split among ``n_parties`` parties for vertical federated learning.

    The active party (index 0) keeps :data:`ADULT_ACTIVE_COLUMNS` (age, workclass, fnlwgt,
    education, education_num, marital_status, occupation); the other seven are dealt out to the
    passive parties in order (4 + 3 for three parties).

    Raises:
        ConfigError: fewer than 2 or more than 8 parties.
    """
    if not 2 <= n_parties <= 8:
        raise ConfigError(f"Adult's 14 columns split among 2..8 parties, not {n_parties}")
    passive = np.array_split(np.array(ADULT_PASSIVE_COLUMNS), n_parties - 1)
    return [data.select(ADULT_ACTIVE_COLUMNS)] + [data.select(list(cols)) for cols in passive]


__all__ = [
    "ADULT_ACTIVE_COLUMNS",
    "ADULT_COLUMNS",
    "ADULT_NUMERIC",
    "ADULT_PASSIVE_COLUMNS",
    "Dataset",
    "adult_design_matrix",
    "adult_vertical_parts",
    "load_adult",
]
