"""Missing values, regression objectives, sampling and XGBoost's parameter names: the
federation stays identical to the plaintext reference, and the reference to XGBoost."""

import numpy as np
import pytest

from hefl.crypto import generate_keypair
from hefl.errors import ConfigError
from hefl.protocols.vf2boost.binning import Binner
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.local import fit_local
from hefl.protocols.vf2boost.model import FederatedModel
from hefl.protocols.vf2boost.predict import predict
from hefl.protocols.vf2boost.reference import plaintext_reference
from hefl.protocols.vf2boost.tree import grad_exponent

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def kp512():
    return generate_keypair(512, allow_insecure=True)


def small_cfg(**kw):
    base = {"n_estimators": 2, "max_depth": 3, "key_bits": 512, "allow_insecure": True,
            "chunk_size": 250}  # fmt: skip
    base.update(kw)
    return VF2BoostConfig(**base)


def with_holes(X, rate, seed):
    """X with a share ``rate`` of its values missing in every column."""
    X = X.copy()
    X[np.random.default_rng(seed).random(X.shape) < rate] = np.nan
    return X


def regression_target(parts, seed=0):
    """A target mixing both parties' columns (missing values count as 0), plus noise."""
    a, p = (np.nan_to_num(X) for X in parts)
    rng = np.random.default_rng(seed)
    return 3.0 * a[:, 0] - 2.0 * p[:, 1] + a[:, 2] * p[:, 0] + rng.normal(0, 0.5, len(a))


def class_labels(parts, K=4):
    """K roughly equal classes from :func:`regression_target`'s quantiles."""
    s = regression_target(parts)
    return np.digitize(s, np.quantile(s, np.arange(1, K) / K))


def assert_lossless(model, ref, X_parts):
    assert model.resolved_trees() == ref.resolved_trees()
    np.testing.assert_array_equal(model.predict(X_parts), ref.predict(X_parts))


@pytest.mark.parametrize(
    "objective", ["binary:logistic", "reg:logistic", "reg:squarederror", "multi:softprob"]
)
@pytest.mark.parametrize("missing", [0.0, 0.2])
def test_every_objective_is_lossless_with_and_without_missing_values(
    adult_small, kp512, objective, missing
):
    two, _, y = adult_small
    n = 500
    X_parts = [with_holes(X[:n], missing, s) for s, X in enumerate(two)]
    y = y[:n].astype(float)
    if objective == "reg:logistic":
        y = np.clip(0.3 + 0.4 * y + np.random.default_rng(1).normal(0, 0.1, n), 0, 1)
    elif objective == "reg:squarederror":
        y = 40.0 * regression_target([X[:n] for X in two])  # residuals far above 1
    elif objective == "multi:softprob":
        y = class_labels([X[:n] for X in two])
    num_class = 4 if objective == "multi:softprob" else 0
    cfg = small_cfg(objective=objective, num_class=num_class)
    model = fit_local(X_parts, y, cfg, keypair=kp512)
    ref = plaintext_reference(X_parts, y, cfg)
    assert_lossless(model, ref, X_parts)
    assert model.objective == objective
    assert model.n_trees == cfg.n_estimators * max(1, num_class)
    if missing:  # some split learned to send the missing values left, and some right
        sides = {n["default_left"] for t in ref.resolved_trees() for n in t if "bin" in n}
        assert sides == {True, False}


def test_prediction_routes_missing_values_by_the_learned_direction(adult_small):
    two, _, y = adult_small
    X_parts = [with_holes(X, 0.3, s) for s, X in enumerate(two)]
    model = plaintext_reference(X_parts, y, VF2BoostConfig(n_estimators=1, max_depth=1))
    (root,) = [n for n in model.resolved_trees()[0] if "bin" in n]
    party, f, k = root["party"], root["feature"], root["bin"]
    leaves = [n["leaf"] for n in model.resolved_trees()[0] if "leaf" in n]
    row = [X[:1].copy() for X in X_parts]
    row[party][0, f] = np.nan
    base = model.active.base_margin
    assert leaves[0] != leaves[1]
    side = 0 if root["default_left"] else 1
    assert model.decision_function(row)[0] == pytest.approx(base + leaves[side], abs=1e-12)
    # a value in bin k goes left whatever the default side (x < threshold goes left)
    row[party][0, f] = np.nextafter(model.parties[party].binner.threshold(f, k), -np.inf)
    assert model.decision_function(row)[0] == pytest.approx(base + leaves[0], abs=1e-12)


def test_regression_matches_xgboost(adult_small):
    """reg:squarederror on pre-binned features with missing values: the same model as
    XGBoost's hist method (same bins, depth, eta, lambda, rounds)."""
    xgb = pytest.importorskip("xgboost")
    two, _, _ = adult_small
    X_parts = [with_holes(X, 0.1, s) for s, X in enumerate(two)]
    y = 1000.0 * regression_target(two)
    cfg = VF2BoostConfig(objective="reg:squarederror", n_estimators=5, max_depth=4)
    model = plaintext_reference(X_parts, y, cfg)
    b = np.hstack([p.binner.transform(X) for p, X in zip(model.parties, X_parts, strict=True)])
    binned = np.where(b == 0, np.nan, b.astype(np.float64))
    params = {"objective": "reg:squarederror", "tree_method": "hist", "max_bin": 256,
              "max_depth": 4, "eta": 0.3, "reg_lambda": 1.0, "min_child_weight": 1.0,
              "base_score": float(y.mean()), "nthread": 1}  # fmt: skip
    booster = xgb.train(params, xgb.DMatrix(binned, label=y), 5)
    theirs = booster.predict(xgb.DMatrix(binned))
    ours = model.predict(X_parts)
    assert np.abs(theirs - ours).max() < 1e-6 * np.abs(y).max()  # float32 in XGBoost


def test_l1_max_delta_step_and_sampling_are_lossless_and_reproducible(adult_small, kp512):
    two, _, y = adult_small
    n = 400
    X_parts, y = [X[:n] for X in two], y[:n]
    cfg = small_cfg(reg_alpha=0.5, max_delta_step=0.4, subsample=0.7, colsample_bytree=0.5,
                    seed=11)  # fmt: skip
    model = fit_local(X_parts, y, cfg, keypair=kp512)
    ref = plaintext_reference(X_parts, y, cfg)
    assert_lossless(model, ref, X_parts)
    assert plaintext_reference(X_parts, y, cfg).resolved_trees() == ref.resolved_trees()
    other = plaintext_reference(X_parts, y, cfg.replace(seed=12))
    assert other.resolved_trees() != ref.resolved_trees()
    leaves = [n["leaf"] for t in ref.resolved_trees() for n in t if "leaf" in n]
    assert max(abs(v) for v in leaves) <= 0.4 * cfg.learning_rate + 1e-12


def test_xgboost_parameter_names(adult_small):
    cfg = VF2BoostConfig.from_dict({"eta": 0.1, "lambda": 2.0, "alpha": 0.5, "max_depth": 3})
    assert (cfg.learning_rate, cfg.reg_lambda, cfg.reg_alpha) == (0.1, 2.0, 0.5)
    with pytest.raises(ConfigError, match="colsample_bylevel"):
        VF2BoostConfig.from_dict({"colsample_bylevel": 0.5})
    with pytest.raises(ConfigError, match="scale_pos_weight"):
        VF2BoostConfig().replace(scale_pos_weight=3)
    with pytest.raises(ConfigError, match="same parameter"):
        VF2BoostConfig.from_dict({"eta": 0.1, "learning_rate": 0.2})
    with pytest.raises(ConfigError, match="objective"):
        VF2BoostConfig(objective="multi:softmax")
    with pytest.raises(ConfigError, match="subsample"):
        VF2BoostConfig(subsample=0.0)
    with pytest.raises(ConfigError, match="base_score"):
        VF2BoostConfig(base_score=1.5)
    assert VF2BoostConfig(objective="reg:squarederror", base_score=1.5).base_score == 1.5


def test_bad_training_input_names_party_column_and_objective(adult_small):
    two, _, y = adult_small
    cfg = VF2BoostConfig(n_estimators=1)
    with pytest.raises(ConfigError, match=r"reg:logistic.*row 0"):
        plaintext_reference(two, np.where(np.arange(len(y)) == 0, 1.5, 0.5), cfg.replace(
            objective="reg:logistic"))  # fmt: skip
    bad = two[1].copy()
    bad[:, 3] = np.nan
    with pytest.raises(ConfigError, match=r"passive1.*column 3.*all missing"):
        plaintext_reference([two[0], bad], y, cfg)
    bad[:, 3] = 7.0
    with pytest.raises(ConfigError, match=r"passive1.*column 3.*constant"):
        fit_local([two[0], bad], y, cfg)
    y_inf = y.astype(float)
    y_inf[4] = np.inf
    with pytest.raises(ConfigError, match=r"inf.*row 4"):
        fit_local(two, y_inf, cfg.replace(objective="reg:squarederror"))
    # one value plus missing values is a valid feature: missing vs present
    ok = two[1].copy()
    ok[:, 3] = np.where(np.arange(len(y)) % 3 == 0, np.nan, 7.0)
    Binner.fit(ok, 32)


def test_grad_exponent_and_regression_model_files(tmp_path, adult_small):
    assert grad_exponent(np.array([0.5, -1.0])) == 0
    assert grad_exponent(np.array([2.0])) == 1 and grad_exponent(np.array([-2.5])) == 2
    two, _, _ = adult_small
    y = regression_target(two)
    model = plaintext_reference(two, y, VF2BoostConfig(objective="reg:squarederror",
                                                       n_estimators=2))  # fmt: skip
    model.save(tmp_path)
    loaded = FederatedModel.load(tmp_path)
    assert loaded.objective == "reg:squarederror"
    np.testing.assert_array_equal(loaded.predict(two), model.predict(two))
    np.testing.assert_array_equal(predict(two, loaded), model.predict(two))
    with pytest.raises(ConfigError, match="predict"):
        loaded.predict_proba(two)


def test_multiclass_matches_xgboost_and_predicts_class_probabilities(adult_small, tmp_path):
    xgb = pytest.importorskip("xgboost")
    two, _, _ = adult_small
    X_parts = [with_holes(X, 0.1, s) for s, X in enumerate(two)]
    y = class_labels(two, K=4)
    cfg = VF2BoostConfig(objective="multi:softprob", num_class=4, n_estimators=3, max_depth=3)
    model = plaintext_reference(X_parts, y, cfg)
    b = np.hstack([p.binner.transform(X) for p, X in zip(model.parties, X_parts, strict=True)])
    binned = np.where(b == 0, np.nan, b.astype(np.float64))
    params = {"objective": "multi:softprob", "num_class": 4, "tree_method": "hist",
              "max_bin": 256, "max_depth": 3, "eta": 0.3, "reg_lambda": 1.0, "nthread": 1}  # fmt: skip
    booster = xgb.train(params, xgb.DMatrix(binned, label=y), 3)
    proba = model.predict_proba(X_parts)
    assert proba.shape == (len(y), 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.abs(booster.predict(xgb.DMatrix(binned)) - proba).max() < 1e-6  # 6.6e-8 seen
    model.save(tmp_path)
    loaded = FederatedModel.load(tmp_path)
    np.testing.assert_array_equal(predict(X_parts, loaded), proba)


def test_multiclass_bad_input(adult_small):
    two, _, _ = adult_small
    y = class_labels(two, K=4)
    cfg = VF2BoostConfig(objective="multi:softprob", num_class=4, n_estimators=1)
    with pytest.raises(ConfigError, match=r"integers 0..3.*row"):
        plaintext_reference(two, np.where(y == 3, 4, y), cfg)
    with pytest.raises(ConfigError, match=r"num_class=5 disagrees.*\[4\]"):
        fit_local(two, y, cfg.replace(num_class=5))
    with pytest.raises(ConfigError, match="num_class"):
        VF2BoostConfig(objective="multi:softprob")
    with pytest.raises(ConfigError, match="num_class"):
        VF2BoostConfig(num_class=3)
    with pytest.raises(ConfigError, match="pack_histograms"):  # phe cannot Horner-pack
        cfg.replace(multi_strategy="multi_output_tree", encoding="phe", pack_gh=False)
    with pytest.raises(ConfigError, match="multi_strategy"):
        VF2BoostConfig(multi_strategy="multi_output_tree")
    with pytest.raises(ConfigError, match="multi_strategy"):
        cfg.replace(multi_strategy="one_tree")


def test_importances_match_xgboost_and_the_federation(adult_small, kp512):
    xgb = pytest.importorskip("xgboost")
    from hefl.protocols.vf2boost.importance import (
        all_importances,
        feature_importance,
        party_importance,
    )

    two, _, y = adult_small
    cfg = VF2BoostConfig(n_estimators=3, max_depth=3)
    model = plaintext_reference(two, y, cfg)
    b = np.hstack([p.binner.transform(X) for p, X in zip(model.parties, two, strict=True)])
    binned = np.where(b == 0, np.nan, b.astype(np.float64))
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_bin": 256,
              "max_depth": 3, "eta": 0.3, "base_score": float(y.mean()), "nthread": 1}  # fmt: skip
    booster = xgb.train(params, xgb.DMatrix(binned, label=y), 3)
    n_active = two[0].shape[1]
    for kind in ("weight", "total_gain", "total_cover"):
        theirs = booster.get_score(importance_type=kind)
        ours = {}
        for p, imp in zip(model.parties, all_importances(model, kind).values(), strict=True):
            ours.update({f"f{int(k[1:]) + p.index * n_active}": v for k, v in imp.items()})
        assert set(ours) == set(theirs), kind
        for k, v in theirs.items():
            assert ours[k] == pytest.approx(v, rel=1e-4), (kind, k)
    totals = party_importance(model.active, "weight")
    assert sum(totals.values()) == sum(len(p.splits) for p in model.parties)
    assert totals[1] == len(model.parties[1].splits)
    # the federation records the same importances; a passive share alone has split counts
    fed = fit_local(two, y, small_cfg(n_estimators=3, max_depth=3), keypair=kp512)
    ref = plaintext_reference(two, y, small_cfg(n_estimators=3, max_depth=3))
    assert all_importances(fed, "gain") == all_importances(ref, "gain")
    assert feature_importance(fed.parties[1]) == all_importances(ref)["passive1"]
    with pytest.raises(ConfigError, match="active party's share"):
        feature_importance(fed.parties[1], "gain")
    with pytest.raises(ConfigError, match="importance_type"):
        feature_importance(fed.active, "split")


def test_multi_output_tree_is_lossless_matches_xgboost_and_costs_about_a_binary_round(
    adult_small,
):
    """Vector leaves: every class's g‖h in one plaintext per row, one packed histogram per
    node for all classes; the federation equals the reference, the reference equals XGBoost's
    multi_output_tree, and a round costs about what a binary round costs."""
    from hefl.protocols.vf2boost.local import fit

    two, _, y2 = adult_small
    n = 500
    X_parts = [with_holes(X[:n], 0.1, s) for s, X in enumerate(two)]
    y = class_labels([X[:n] for X in two])
    kp = generate_keypair(1024, allow_insecure=True)
    base = {"n_estimators": 2, "max_depth": 3, "key_bits": 1024, "allow_insecure": True,
            "chunk_size": 250, "frac_bits": 40}  # fmt: skip
    cfg = VF2BoostConfig(objective="multi:softprob", num_class=4,
                         multi_strategy="multi_output_tree", **base)  # fmt: skip
    res = fit(X_parts, y, cfg, keypair=kp)
    ref = plaintext_reference(X_parts, y, cfg)
    assert res.model.resolved_trees() == ref.resolved_trees()
    assert res.model.n_trees == 2 and len(ref.resolved_trees()[0][-1]["leaf"]) == 4
    np.testing.assert_array_equal(predict(X_parts, res.model), ref.predict_proba(X_parts))
    binary = fit(X_parts, y2[:n], VF2BoostConfig(**base), keypair=kp)
    ratio = sum(res.bytes_sent.values()) / sum(binary.bytes_sent.values())
    assert ratio <= 2.0, ratio
    xgb = pytest.importorskip("xgboost")
    b = np.hstack([p.binner.transform(X) for p, X in zip(ref.parties, X_parts, strict=True)])
    binned = np.where(b == 0, np.nan, b.astype(np.float64))
    params = {"objective": "multi:softprob", "num_class": 4, "tree_method": "hist",
              "multi_strategy": "multi_output_tree", "max_bin": 256, "max_depth": 3,
              "eta": 0.3, "nthread": 1}  # fmt: skip
    booster = xgb.train(params, xgb.DMatrix(binned, label=y), 2)
    assert np.abs(booster.predict(xgb.DMatrix(binned)) - ref.predict_proba(X_parts)).max() < 1e-6


@pytest.mark.parametrize("objective", ["reg:squarederror", "multi:softprob"])
@pytest.mark.parametrize("switches", ["serial", {"pack_gh": False, "optimistic": False}])
def test_serial_baseline_and_switches_for_other_objectives(adult_small, kp512, objective,
                                                           switches):  # fmt: skip
    two, _, _ = adult_small
    n = 300
    X_parts = [with_holes(X[:n], 0.1, s) for s, X in enumerate(two)]
    if objective == "multi:softprob":
        y, extra = class_labels([X[:n] for X in two], K=3), {"num_class": 3}
    else:
        y, extra = 40.0 * regression_target([X[:n] for X in two]), {}
    common = {"n_estimators": 1, "max_depth": 2, "key_bits": 512, "allow_insecure": True,
              "objective": objective, **extra}  # fmt: skip
    if switches == "serial":
        cfg = VF2BoostConfig.serial_baseline(**common)
    else:
        cfg = small_cfg(**{**common, **switches})
    model = fit_local(X_parts, y, cfg, keypair=kp512)
    assert_lossless(model, plaintext_reference(X_parts, y, cfg), X_parts)
