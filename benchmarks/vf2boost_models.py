"""VF2Boost's models against XGBoost: binary with missing values, multi-class, regression.

Data that ships in a package or in the repository only:

* ``adult``: UCI Adult (bundled with hefl), income > 50K, with its real missing values ('?' as
  NaN in workclass, occupation and native_country), official train/test split.
* ``adult-marital``: Adult, marital status in 3 classes (never / now / previously married),
  the target taken out of the active party's columns (``hefl demo --objective multi:softprob``).
* ``digits``: scikit-learn's bundled 8×8 digits, 10 classes.
* ``wine``: scikit-learn's bundled wine, 3 classes.
* ``adult-age``: Adult, age (regression), taken out of the active party's columns.
* ``diabetes``: scikit-learn's bundled diabetes progression (regression).
* ``fair``: statsmodels' bundled Fair (1978) affairs survey, 6,366 rows, time spent in
  affairs (regression) from 8 columns with 3 to 22 distinct values each.
* ``<set>-mot``: a multi-class set with ``multi_strategy="multi_output_tree"`` (one tree per
  round, every class's g‖h in one plaintext), against XGBoost's multi_output_tree.

Every data set is split vertically: the active party (labels) holds the first half of the
columns, the passive party the rest. The sklearn sets get a seeded 75/25 train/test split.

Accuracy: hefl's trees are identical to ``plaintext_reference`` (tested for every objective,
and checked again here on the federated runs), so the reference gives hefl's test metric on
all rounds; XGBoost trains on the raw features with the same max_bin, depth, eta, lambda,
min_child_weight, base score and rounds (``tree_method="hist"``). Each hefl party cuts its
columns where XGBoost's sketch would (:mod:`hefl.protocols.vf2boost.sketch`), so with the same
parameters the two see the same bins. Multi-class, XGBoost (3.x) starts from per-class
intercepts estimated from the labels, hefl from equal class margins: ``xgboost_equal_start`` is
XGBoost started as hefl starts (``base_score=0.5`` for every class), which then trains hefl's
model.

Cost: a federated run (2048-bit keys, one process, all techniques on) of ``--fed-rounds``
rounds per data set, reporting seconds per round and per tree, and the crypto work per round:
the ciphertexts the active party encrypts, the ciphertexts it decrypts and the bytes on the
wire, each against a binary round on the same rows (multi-class ``one_output_per_tree`` grows
K trees per round, so its cost is about K binary rounds).

Run:  python benchmarks/vf2boost_models.py [--rounds 20] [--fed-rounds 1] [--quick]
Needs the bench extra (xgboost-cpu, scikit-learn, statsmodels).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from hefl._demos import adult_task
from hefl.crypto import generate_keypair
from hefl.data import load_adult
from hefl.errors import PackingOverflowError
from hefl.protocols.vf2boost import VF2BoostConfig, fit, plaintext_reference, plan_bits
from hefl.protocols.vf2boost.metrics import evaluate

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
PARAMS = {"max_depth": 5, "learning_rate": 0.3, "reg_lambda": 1.0, "min_child_weight": 1.0,
          "max_bin": 32}  # fmt: skip


def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "fair":  # statsmodels, not scikit-learn: the one other bundled regression set
        from statsmodels.datasets import fair

        d = fair.load_pandas()
        return np.asarray(d.exog, dtype=np.float64), np.asarray(d.endog, dtype=np.float64)
    from sklearn import datasets

    loader = {"digits": datasets.load_digits, "wine": datasets.load_wine,
              "diabetes": datasets.load_diabetes}[name]  # fmt: skip
    d = loader()
    return np.asarray(d.data, dtype=np.float64), np.asarray(d.target, dtype=np.float64)


def _halves(X: np.ndarray) -> list[np.ndarray]:
    k = (X.shape[1] + 1) // 2
    return [X[:, :k], X[:, k:]]


def load(name: str) -> dict[str, Any]:
    """One data set: train/test feature blocks and labels, objective, num_class, metric
    (a ``-mot`` suffix: the same multi-class set with ``multi_output_tree``)."""
    if name.endswith("-mot"):
        return {**load(name[: -len("-mot")]), "strategy": "multi_output_tree"}
    if name.startswith("adult"):
        objective = {"adult": "binary:logistic", "adult-marital": "multi:softprob",
                     "adult-age": "reg:squarederror"}[name]  # fmt: skip
        train, test = load_adult("train"), load_adult("test")
        X_parts, y = adult_task(train, objective, 2)
        T_parts, y_test = adult_task(test, objective, 2)
        num_class = 3 if objective == "multi:softprob" else 0
    else:
        X, y_all = _sklearn(name)
        perm = np.random.default_rng(0).permutation(len(y_all))
        cut = int(0.75 * len(perm))
        tr, te = np.sort(perm[:cut]), np.sort(perm[cut:])
        # hefl refuses constant columns (digits' border pixels): both systems go without them
        X = X[:, np.ptp(X[tr], axis=0) > 0]
        X_parts, T_parts = _halves(X[tr]), _halves(X[te])
        y, y_test = y_all[tr], y_all[te]
        objective = "reg:squarederror" if name in ("diabetes", "fair") else "multi:softprob"
        num_class = int(y_all.max()) + 1 if objective == "multi:softprob" else 0
    metric = {"binary:logistic": "auc", "multi:softprob": "merror"}.get(objective, "rmse")
    return {"X": X_parts, "y": np.asarray(y), "T": T_parts, "y_test": np.asarray(y_test),
            "objective": objective, "num_class": num_class, "metric": metric,
            "strategy": "one_output_per_tree"}  # fmt: skip


def score(metric: str, y: np.ndarray, pred: np.ndarray) -> float:
    """AUC, accuracy (1 − merror) or RMSE."""
    value = evaluate(metric, y, pred)
    return 1.0 - value if metric == "merror" else value


def xgboost_score(d: dict[str, Any], rounds: int, equal_start: bool = False) -> tuple[float, float]:
    """XGBoost's test metric with the same parameters, and its seconds. Multi-class:
    XGBoost's default starts from per-class intercepts it estimates from the labels;
    ``equal_start`` starts every class from the same margin instead, as hefl does."""
    import xgboost as xgb

    params = {"objective": d["objective"], "tree_method": "hist", "max_bin": PARAMS["max_bin"],
              "max_depth": PARAMS["max_depth"], "eta": PARAMS["learning_rate"],
              "reg_lambda": PARAMS["reg_lambda"], "min_child_weight": PARAMS["min_child_weight"],
              "nthread": 1}  # fmt: skip
    if d["objective"] == "multi:softprob":
        params["num_class"] = d["num_class"]
        params["multi_strategy"] = d["strategy"]
        if equal_start:
            params["base_score"] = 0.5  # the same for every class: softmax ignores it
    else:
        params["base_score"] = float(np.mean(d["y"]))
    t0 = time.perf_counter()
    booster = xgb.train(params, xgb.DMatrix(np.hstack(d["X"]), label=d["y"]), rounds)
    seconds = time.perf_counter() - t0
    pred = booster.predict(xgb.DMatrix(np.hstack(d["T"])))
    return score(d["metric"], d["y_test"], pred), seconds


def config(d: dict[str, Any], rounds: int, key_bits: int = 2048, **kw: Any) -> VF2BoostConfig:
    """The data set's config; with multi_output_tree the largest frac_bits (<= 53) whose K
    class lanes fit two Horner slots of the key (the planner's bound)."""
    cfg = VF2BoostConfig(objective=d["objective"], num_class=d["num_class"],
                         multi_strategy=d["strategy"], n_estimators=rounds, key_bits=key_bits,
                         allow_insecure=key_bits < 2048, **PARAMS, **kw)  # fmt: skip
    if not cfg.vector_leaves:
        return cfg
    for frac_bits in range(53, 15, -1):
        try:
            plan_bits(len(d["y"]), frac_bits, key_bits, pack_gh=True, pack_histograms=True,
                      h_log2=-1, classes=d["num_class"])  # fmt: skip
        except PackingOverflowError:
            continue
        return cfg.replace(frac_bits=frac_bits)
    raise PackingOverflowError(f"{d['num_class']} classes do not fit a {key_bits}-bit key")


def federated(d: dict[str, Any], rounds: int, keypair: Any) -> dict[str, Any]:
    """A federated run: time and crypto work per round, checked against the reference."""
    cfg = config(d, rounds, key_bits=keypair[0].n_bits)
    res = fit(d["X"], d["y"], cfg, keypair=keypair)
    same = res.model.resolved_trees() == plaintext_reference(d["X"], d["y"], cfg).resolved_trees()
    per_round = cfg.n_trees // rounds
    spans = res.statistics["active"].get("span_seconds", {})
    return {
        "identical_to_reference": same,
        "trees_per_round": per_round,
        "seconds_per_round": float(np.sum(res.tree_seconds)) / rounds,
        "seconds_per_tree": float(np.mean(res.tree_seconds)),
        "encrypted_per_round": len(d["y"]) * per_round,  # one packed g‖h ciphertext per row
        "bytes_per_round": sum(res.bytes_sent.values()) / rounds,
        "active_bytes_per_round": res.bytes_sent["active"] / rounds,  # encrypted g‖h
        "passive_bytes_per_round": res.bytes_sent["passive1"] / rounds,  # packed histograms
        "active_encrypt_seconds_per_round": sum(
            v for k, v in spans.items() if k.startswith("encrypt")
        )
        / rounds,
        "active_decrypt_seconds_per_round": spans.get("decrypt", 0.0) / rounds,
    }


def run(names: list[str], rounds: int, fed_rounds: int, key_bits: int) -> dict[str, Any]:
    keypair = generate_keypair(key_bits, allow_insecure=key_bits < 2048)
    out: dict[str, Any] = {}
    for name in names:
        d = load(name)
        t0 = time.perf_counter()
        ref = plaintext_reference(d["X"], d["y"], config(d, rounds, key_bits))
        ours = score(d["metric"], d["y_test"], ref.predict(d["T"]))
        ref_seconds = time.perf_counter() - t0
        theirs, xgb_seconds = xgboost_score(d, rounds)
        entry = {"objective": d["objective"], "num_class": d["num_class"],
                 "multi_strategy": d["strategy"] if d["num_class"] else None,
                 "frac_bits": config(d, rounds, key_bits).frac_bits,
                 "rows": len(d["y"]), "columns": [X.shape[1] for X in d["X"]],
                 "metric": {"auc": "auc", "merror": "accuracy"}.get(d["metric"], "rmse"),
                 "hefl": ours, "xgboost": theirs, "reference_seconds": ref_seconds,
                 "xgboost_seconds": xgb_seconds}  # fmt: skip
        entry["gap"] = ours - theirs if d["metric"] != "rmse" else ours / theirs - 1.0
        if d["num_class"]:
            entry["xgboost_equal_start"] = xgboost_score(d, rounds, equal_start=True)[0]
        if fed_rounds:
            entry["federated"] = federated(d, fed_rounds, keypair)
        out[name] = entry
        print(name, json.dumps(entry), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="boosting rounds for accuracy")
    ap.add_argument("--fed-rounds", type=int, default=1, help="federated rounds (0: none)")
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--data", nargs="*", default=["adult", "adult-marital", "adult-marital-mot",
                                                  "digits", "digits-mot", "wine", "wine-mot",
                                                  "adult-age", "diabetes", "fair"])  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="small sets, 5 rounds, 1024-bit keys")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.key_bits, args.data = 5, 1024, ["wine", "wine-mot", "diabetes"]
    results = run(args.data, args.rounds, args.fed_rounds, args.key_bits)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("vf2boost_models_quick.json" if args.quick else "vf2boost_models.json")
    if path.exists():  # a run of some data sets updates theirs, keeps the others
        results = {**json.loads(path.read_text())["results"], **results}
    meta = {"rounds": args.rounds, "fed_rounds": args.fed_rounds, "key_bits": args.key_bits,
            "params": PARAMS, "machine": platform.platform()}  # fmt: skip
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
