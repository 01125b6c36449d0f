"""Row and column sampling per tree (XGBoost's ``subsample`` and ``colsample_bytree``).

Draws are seeded by the config's ``seed`` and the tree's index (and, for columns, the party's
index), so a rerun with the same seed grows the same trees, the plaintext reference draws
exactly what the federation draws, and each party draws its own columns without telling anyone.
The draws are not secrets (a seed reproduces them); nothing about another party's data is in
them.
"""

from __future__ import annotations

import numpy as np

from hefl.protocols.vf2boost.config import VF2BoostConfig


def sample_rows(cfg: VF2BoostConfig, t: int, n_rows: int) -> np.ndarray | None:
    """Tree ``t``'s row sample: a bool mask (each row kept with probability ``subsample``, as
    XGBoost's uniform sampling), or None when every row is used.

    The rows left out get g = h = 0: they still flow down the tree, and contribute nothing.
    """
    if cfg.subsample >= 1.0:
        return None
    rng = np.random.default_rng([cfg.seed, t, 0])
    return rng.random(n_rows) < cfg.subsample


def sample_columns(cfg: VF2BoostConfig, t: int, party_index: int, n_features: int) -> np.ndarray:
    """The columns party ``party_index`` offers in tree ``t``: a bool mask of
    max(1, ⌊colsample_bytree · n_features⌋) of its features (all with 1.0)."""
    keep = np.ones(n_features, dtype=bool)
    if cfg.colsample_bytree >= 1.0 or n_features == 0:
        return keep
    count = max(1, int(cfg.colsample_bytree * n_features))
    rng = np.random.default_rng([cfg.seed, t, party_index + 1])
    keep[:] = False
    keep[rng.choice(n_features, size=count, replace=False)] = True
    return keep


def apply_sampling(
    cfg: VF2BoostConfig, t: int, g: np.ndarray, h: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """g and h with the rows out of tree ``t``'s sample set to 0."""
    rows = sample_rows(cfg, t, len(g))
    if rows is None:
        return g, h
    return np.where(rows, g, 0.0), np.where(rows, h, 0.0)


__all__ = ["apply_sampling", "sample_columns", "sample_rows"]
