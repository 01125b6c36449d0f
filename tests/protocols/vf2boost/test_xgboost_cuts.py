"""hefl's bin cut points are XGBoost's ``hist`` cut points, and split the same way."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hefl.protocols.vf2boost import VF2BoostConfig, plaintext_reference
from hefl.protocols.vf2boost.binning import MISSING_BIN, Binner
from hefl.protocols.vf2boost.model import PartyModel

xgb = pytest.importorskip("xgboost")


def xgboost_cuts(X: np.ndarray, max_bin: int) -> list[np.ndarray]:
    """XGBoost's cut points per column (its first entry, below the minimum, and its last,
    above the maximum, bound the outer bins and are no split points)."""
    dm = xgb.DMatrix(X, label=np.zeros(len(X)))
    xgb.train({"tree_method": "hist", "max_bin": max_bin, "max_depth": 1, "nthread": 1}, dm, 1)
    ptr, values = dm.get_quantile_cut()
    return [values[ptr[j] + 1 : ptr[j + 1] - 1] for j in range(X.shape[1])]


def test_few_distinct_values_get_a_cut_at_each_value_as_xgboost():
    """A small feature with fewer distinct values than max_bin: one bin per value, a cut at
    every value but the smallest, and a value equal to a cut goes right."""
    x = np.array([3.0, 1.0, 2.0, 2.0, np.nan, 7.5, 1.0, 3.0, 7.5, 2.0, 10.0])
    X = np.column_stack([x, np.array([0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1.0])])
    b = Binner.fit(X, max_bin=16)
    ours = b.cuts
    theirs = xgboost_cuts(X, 16)
    assert [c.tolist() for c in ours] == [[2.0, 3.0, 7.5, 10.0], [1.0]]
    assert [c.tolist() for c in theirs] == [c.tolist() for c in ours]
    assert b.transform(X)[:, 0].tolist() == [3, 1, 2, 2, MISSING_BIN, 4, 1, 3, 4, 2, 5]
    assert b.threshold(0, 2) == 3.0  # bins 1..2 left: x < 3


@pytest.mark.parametrize("max_bin", [2, 4, 32, 256])
def test_cuts_equal_xgboost_small_and_streamed(max_bin):
    """Exactly XGBoost's cuts on columns it summarises exactly (few rows) and on columns it
    streams through its sketch (more rows than one sketch buffer), with ties, a heavy value,
    sorted order and missing values."""
    rng = np.random.default_rng(max_bin)
    for n in (7, 300, 5000):
        heavy = np.where(rng.random(n) < 0.85, 0.0, rng.integers(1, 400, n))
        cols = [
            rng.normal(size=n),
            rng.integers(0, 40, size=n).astype(float),
            heavy.astype(float),
            np.sort(np.round(rng.exponential(size=n), 2)),
            np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n)),
        ]
        X = np.column_stack(cols).astype(np.float32).astype(np.float64)  # XGBoost's precision
        X[0, 2], X[1, 2] = 0.0, 1.0  # never constant
        X[0, 4] = 0.5  # never all missing
        ours = Binner.fit(X, max_bin).cuts
        for j, theirs in enumerate(xgboost_cuts(X, max_bin)):
            assert ours[j].astype(np.float32).tolist() == theirs.tolist(), (n, j)


def test_same_tree_as_xgboost_on_a_few_valued_feature():
    """One split on a small integer feature: hefl's threshold and default side are XGBoost's
    split condition and missing direction, and unseen values between training values go
    the same way (x < threshold left)."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, size=60).astype(float) * 2.0  # values 0, 2, ..., 10
    y = (x >= 6).astype(float)
    x[::7] = np.nan
    X = x.reshape(-1, 1)
    noise = rng.normal(size=(60, 1))  # the passive party's column: too weak to win the root
    cfg = VF2BoostConfig(n_estimators=1, max_depth=1, max_bin=8, learning_rate=1.0)
    model = plaintext_reference([X, noise], y, cfg)
    params = {"tree_method": "hist", "max_bin": 8, "max_depth": 1, "eta": 1.0,
              "objective": "binary:logistic", "base_score": float(np.mean(y))}  # fmt: skip
    booster = xgb.train(params, xgb.DMatrix(np.hstack([X, noise]), label=y), 1)
    root = json.loads(booster.get_dump(dump_format="json")[0])
    (split,) = [n for n in model.resolved_trees()[0] if "bin" in n]
    assert split["party"] == 0 and split["feature"] == 0 and root["split"] == "f0"
    share = PartyModel.from_json(model.parties[0].to_json())
    assert share.binner.threshold(0, split["bin"]) == root["split_condition"] == 6.0
    assert bool(split["default_left"]) == (root["missing"] == root["yes"])
    probe = np.array([[5.999], [6.0], [7.0], [np.nan], [-3.0], [99.0]])
    other = np.zeros((len(probe), 1))
    theirs = booster.predict(xgb.DMatrix(np.hstack([probe, other])))
    assert np.allclose(model.predict_proba([probe, other]), theirs, atol=1e-6)


def test_format_1_model_files_keep_their_splits():
    """A model file written when x <= cut went left still sends every value the same way."""
    b = Binner.from_json([[1.0, 2.5]], legacy=True)
    x = np.array([[1.0], [np.nextafter(1.0, 2.0)], [2.5], [2.6]])
    assert b.transform(x)[:, 0].tolist() == [1, 2, 2, 3]


def test_same_model_as_xgboost_on_raw_adult_with_missing_values(adult):
    """Full Adult (its '?' as NaN), official split, 10 trees, depth 5, 32 bins: hefl's reference
    on the raw columns predicts what XGBoost's hist predicts on them (cuts, split sides and
    default directions all XGBoost's)."""
    from hefl.data import ADULT_ACTIVE_COLUMNS, ADULT_PASSIVE_COLUMNS

    train, test = adult
    parts = [train.select(ADULT_ACTIVE_COLUMNS), train.select(ADULT_PASSIVE_COLUMNS)]
    tparts = [test.select(ADULT_ACTIVE_COLUMNS), test.select(ADULT_PASSIVE_COLUMNS)]
    assert np.isnan(np.hstack(parts)).any()
    model = plaintext_reference(parts, train.y, VF2BoostConfig())
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_bin": 32,
              "max_depth": 5, "eta": 0.3, "reg_lambda": 1.0, "min_child_weight": 1.0,
              "base_score": float(np.mean(train.y)), "nthread": 1}  # fmt: skip
    booster = xgb.train(params, xgb.DMatrix(np.hstack(parts), label=train.y), 10)
    theirs = booster.predict(xgb.DMatrix(np.hstack(tparts)))
    assert np.abs(model.predict_proba(tparts) - theirs).max() < 1e-6
