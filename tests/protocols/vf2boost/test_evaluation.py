"""eval_set, eval_metric and early stopping: federated evaluation equals the reference's."""

import numpy as np
import pytest

from hefl.crypto import generate_keypair
from hefl.errors import ConfigError
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.local import fit
from hefl.protocols.vf2boost.metrics import evaluate
from hefl.protocols.vf2boost.reference import plaintext_reference

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def kp512():
    return generate_keypair(512, allow_insecure=True)


@pytest.fixture(scope="module")
def split(adult_small):
    two, _, y = adult_small
    train = [X[:400] for X in two], y[:400]
    evals = [X[1000:1600] for X in two], y[1000:1600]
    return train, evals


def cfg_of(**kw):
    base = {"n_estimators": 8, "max_depth": 4, "learning_rate": 1.0, "reg_lambda": 0.0,
            "min_child_weight": 0.0, "key_bits": 512, "allow_insecure": True,
            "chunk_size": 200}  # fmt: skip
    base.update(kw)
    return VF2BoostConfig(**base)


def test_early_stopping_is_federated_and_identical_to_the_reference(split, kp512):
    (X_parts, y), (E_parts, y_eval) = split
    cfg = cfg_of(eval_metric="logloss", early_stopping_rounds=2)
    seen = []
    res = fit(X_parts, y, cfg, keypair=kp512, eval_set=(E_parts, y_eval),
              progress=lambda done, total, s, metrics=None: seen.append((done, metrics)))  # fmt: skip
    ref = plaintext_reference(X_parts, y, cfg, eval_set=(E_parts, y_eval))
    assert res.model.resolved_trees() == ref.resolved_trees()
    assert res.evals == ref.evals and res.best_iteration == ref.best_iteration
    history = res.evals["logloss"]
    best = res.best_iteration
    assert best is not None and best + 2 == len(history) - 1 < cfg.n_estimators - 1  # stopped
    assert history[best] == min(history)
    assert res.model.n_trees == best + 1  # cut at the best round, on every share
    assert all(len(p.trees) == best + 1 for p in res.model.parties)
    used = {n["split"] for t in res.model.parties[1].trees for n in t.nodes if n.get("owner") == 1}
    assert set(res.model.parties[1].splits) == used
    # the recorded metric is the model's own on the eval rows
    assert history[best] == pytest.approx(evaluate("logloss", y_eval, ref.predict(E_parts)))
    assert [m for _, m in seen] == [{"logloss": v} for v in history]


def test_multiclass_eval_without_early_stopping(split, kp512):
    (X_parts, _), (E_parts, _) = split
    y = (np.nan_to_num(X_parts[0][:, 0]) // 20 % 3).astype(int)
    y_eval = (np.nan_to_num(E_parts[0][:, 0]) // 20 % 3).astype(int)
    cfg = cfg_of(objective="multi:softprob", num_class=3, n_estimators=2, eval_metric="merror")
    res = fit(X_parts, y, cfg, keypair=kp512, eval_set=(E_parts, y_eval))
    ref = plaintext_reference(X_parts, y, cfg, eval_set=(E_parts, y_eval))
    assert res.model.resolved_trees() == ref.resolved_trees()
    assert res.evals == ref.evals and len(res.evals["merror"]) == 2
    assert res.best_iteration is None and res.model.n_trees == 6


def test_bad_eval_sets_are_refused(split):
    (X_parts, y), (E_parts, y_eval) = split
    cfg = cfg_of(n_estimators=1)
    with pytest.raises(ConfigError, match=r"passive1.*split by columns"):
        fit(X_parts, y, cfg, eval_set=([E_parts[0], E_parts[1][:, :-1]], y_eval))
    with pytest.raises(ConfigError, match=r"eval set.*0 or 1"):
        fit(X_parts, y, cfg, eval_set=(E_parts, y_eval + 2))
    with pytest.raises(ConfigError, match="2 feature blocks"):
        plaintext_reference(X_parts, y, cfg, eval_set=([E_parts[0]], y_eval))
    with pytest.raises(ConfigError, match="eval_metric"):
        cfg_of(eval_metric="mlogloss")
    with pytest.raises(ConfigError, match="early_stopping_rounds"):
        cfg_of(early_stopping_rounds=0)
