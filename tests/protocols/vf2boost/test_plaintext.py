"""Config, binning, model and the plaintext reference (checked against XGBoost)."""

import math

import numpy as np
import pytest

from hefl.data import ADULT_ACTIVE_COLUMNS, ADULT_PASSIVE_COLUMNS
from hefl.errors import ConfigError
from hefl.protocols.vf2boost.binning import MISSING_BIN, Binner
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.metrics import roc_auc
from hefl.protocols.vf2boost.model import FederatedModel
from hefl.protocols.vf2boost.reference import plaintext_reference
from hefl.protocols.vf2boost.tree import exact_group_sums


@pytest.mark.parametrize(
    "field,value",
    [
        ("n_estimators", 0),
        ("max_depth", 0),
        ("learning_rate", 0.0),
        ("learning_rate", math.nan),
        ("reg_lambda", -1.0),
        ("max_bin", 1),
        ("base_score", 1.0),
        ("key_bits", 1024),
        ("encoding", "float"),
        ("chunk_size", 0),
        ("blaster", 1),
    ],
)
def test_config_refuses_invalid_values(field, value):
    with pytest.raises(ConfigError, match=field):
        VF2BoostConfig(**{field: value})


def test_config_small_keys_need_opt_in_and_phe_cannot_pack():
    assert VF2BoostConfig(key_bits=1024, allow_insecure=True).key_bits == 1024
    with pytest.raises(ConfigError, match="pack"):
        VF2BoostConfig(encoding="phe")
    base = VF2BoostConfig.serial_baseline(n_estimators=3)
    assert (base.encoding, base.blaster, base.pack_gh, base.n_estimators) == (
        "phe",
        False,
        False,
        3,
    )
    with pytest.raises(ConfigError, match="unknown"):
        VF2BoostConfig().replace(depth=3)
    with pytest.raises(ConfigError, match="unknown"):  # was a TypeError from the dataclass
        VF2BoostConfig.serial_baseline(depth=3)
    assert VF2BoostConfig.from_dict(base.to_dict()) == base


def test_binning_missing_bin_cuts_and_inf():
    X = np.array([[1.0, 5.0], [2.0, np.nan], [3.0, 5.0], [np.nan, 7.0]])
    b = Binner.fit(X, max_bin=4)
    bins = b.transform(X)
    assert bins[:, 0].tolist() == [1, 2, 3, MISSING_BIN]
    assert bins[:, 1].tolist() == [1, MISSING_BIN, 1, 2]
    assert b.n_bins.tolist() == [4, 3]
    assert b.threshold(0, 2) == 3.0  # bins 1-2 (values 1, 2) go left: x < 3
    # unseen values fall into the outer bins; cut points round-trip through JSON
    assert Binner.from_json(b.to_json()).transform(np.array([[-9.0, 99.0]])).tolist() == [[1, 2]]
    with pytest.raises(ConfigError, match="infinite"):
        Binner.fit(np.array([[1.0], [np.inf]]), 4)
    with pytest.raises(ConfigError, match="columns"):
        b.transform(np.zeros((2, 3)))


def test_binning_quantiles_respect_max_bin():
    x = np.random.default_rng(0).normal(size=(5000, 1))
    b = Binner.fit(x, max_bin=32)
    counts = np.bincount(b.transform(x)[:, 0], minlength=b.n_bins[0])
    assert b.n_bins[0] == 33 and counts[0] == 0
    # equal-frequency bins up to the quantile sketch's rank error (rows / (8 * max_bin) per cut)
    assert np.abs(counts[1:] - 5000 / 32).max() <= 2 * 5000 / (8 * 32)


def test_binning_adapts_to_a_heavy_value():
    """A value holding 90 % of the rows shares the first bin with a bin's worth of the other
    values; the other 31 bins still split the remaining rows evenly (fixed quantiles would
    all land on the heavy value). XGBoost's sketch does the same."""
    rng = np.random.default_rng(2)
    x = np.concatenate([np.zeros(9000), rng.uniform(1, 100, size=1000)]).reshape(-1, 1)
    b = Binner.fit(x, max_bin=32)
    counts = np.bincount(b.transform(x)[:, 0], minlength=b.n_bins[0])
    assert b.n_bins[0] == 33 and b.cuts[0][0] > 0.0 and counts[1] <= 9000 + 1000 / 31 * 1.2
    assert counts[2:].min() >= 1000 / 31 * 0.8 and counts[2:].max() <= 1000 / 31 * 1.2


def test_exact_group_sums_match_python_ints():
    rng = np.random.default_rng(1)
    v = rng.integers(-(2**62), 2**62, size=3000, dtype=np.int64)
    g = rng.integers(0, 7, size=3000)
    got = exact_group_sums(v, g, 7)
    want = [sum(int(a) for a, b in zip(v, g, strict=True) if b == k) for k in range(7)]
    assert list(got) == want


def test_roc_auc_with_ties():
    assert roc_auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.5, 0.5])) == 0.875
    with pytest.raises(ConfigError):
        roc_auc(np.array([1, 1]), np.array([0.1, 0.2]))


def test_reference_matches_xgboost_on_adult(adult):
    """Full Adult with its missing values, official split, 10 trees, depth 5, lr 0.3, 32 bins,
    λ=1: the reference and XGBoost on the same pre-binned features (missing values kept
    missing) build the same model, default directions included."""
    xgb = pytest.importorskip("xgboost")
    train, test = adult
    parts = [train.select(ADULT_ACTIVE_COLUMNS), train.select(ADULT_PASSIVE_COLUMNS)]
    tparts = [test.select(ADULT_ACTIVE_COLUMNS), test.select(ADULT_PASSIVE_COLUMNS)]
    model = plaintext_reference(parts, train.y, VF2BoostConfig())
    ours = model.predict_proba(tparts)
    auc = roc_auc(test.y, ours)
    assert auc >= 0.91  # 0.91307 (XGBoost on the raw features: the same, see test_xgboost_cuts)

    def binned(xs):  # bin codes, with the missing bin 0 given to XGBoost as NaN again
        b = np.hstack([p.binner.transform(X) for p, X in zip(model.parties, xs, strict=True)])
        return np.where(b == 0, np.nan, b.astype(np.float64))

    params = {
        "objective": "binary:logistic", "tree_method": "hist", "max_bin": 256,
        "max_depth": 5, "eta": 0.3, "reg_lambda": 1.0, "min_child_weight": 1.0,
        "base_score": float(train.y.mean()), "nthread": 1,
    }  # fmt: skip
    booster = xgb.train(params, xgb.DMatrix(binned(parts), label=train.y), 10)
    theirs = booster.predict(xgb.DMatrix(binned(tparts)))
    assert np.abs(theirs - ours).max() < 1e-6  # 8.7e-8 measured
    assert abs(roc_auc(test.y, theirs) - auc) < 0.002


def test_model_json_round_trip_and_bad_prediction_input(tmp_path, adult_small):
    two, _, y = adult_small
    model = plaintext_reference(two, y, VF2BoostConfig(n_estimators=2, max_depth=3))
    model.save(tmp_path)
    loaded = FederatedModel.load(tmp_path)
    assert loaded.resolved_trees() == model.resolved_trees()
    np.testing.assert_array_equal(loaded.predict_proba(two), model.predict_proba(two))
    # the passive party's file holds no leaf values and only its own splits
    passive = loaded.parties[1]
    assert passive.base_margin is None and all(t.leaf_values is None for t in passive.trees)
    with pytest.raises(ConfigError, match="row counts"):
        model.predict_proba([two[0], two[1][:10]])
    with pytest.raises(ConfigError, match="2 feature blocks"):
        model.predict_proba([two[0]])


def test_reference_refuses_bad_training_input(adult_small):
    two, _, y = adult_small
    cfg = VF2BoostConfig(n_estimators=1)
    with pytest.raises(ConfigError, match=r"passive1.*rows"):
        plaintext_reference([two[0], two[1][:-1]], y, cfg)
    with pytest.raises(ConfigError, match="0 or 1"):
        plaintext_reference(two, np.where(y == 1, 2, 0), cfg)
    y_nan = y.astype(float)
    y_nan[3] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        plaintext_reference(two, y_nan, cfg)
    bad = two[1].copy()
    bad[5, 2] = -np.inf
    with pytest.raises(ConfigError, match=r"passive1.*infinite"):
        plaintext_reference([two[0], bad], y, cfg)
