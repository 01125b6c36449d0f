"""hefl VF2Boost side by side with SecretFlow SGB on UCI Adult, in one interleaved run.

The same data and split as benchmarks/vf2boost.py: Adult (bundled in hefl), active party
(label holder, key holder) age, workclass, fnlwgt, education, education_num, marital_status,
occupation; passive party the other seven. 10 trees, depth 5, learning rate 0.3, 32 bins,
λ = 1, 2048-bit keys; SGB with ``first_tree_with_label_holder_feature=False``.

SecretFlow is never a dependency of hefl: it needs Python 3.10, so this driver (run in hefl's
venv) creates a separate venv outside the repository if it is missing (``--sf-venv``, default
/work/sf-venv, from ``--sf-python``) with ``secretflow==1.14.0b0``, writes the arrays to an
.npz file, and runs ``secretflow_sgb_worker.py`` in that venv once per SGB configuration.

SGB refuses NaN, so missing values (Adult's workclass, occupation, native_country) are given
to it as -1, below every category code: its quantile bins then keep them in the lowest bin,
as hefl's dedicated missing bin (which always goes left) does.

Each round runs, in this order: SGB Paillier, hefl default (2048-bit Paillier, all
techniques on, end to end: the obfuscator pool fills during training), SGB OU, hefl with
short-exponent obfuscators (opt-in ``obfuscation="djn-short"``). Seconds per tree are the
whole fit's wall time divided by the trees (setup and binning included, key generation
excluded, for both systems); hefl's own per-tree times are reported too.

``--same-bins`` also trains hefl's plaintext reference (the model every federated run
reproduces exactly) on SGB's own bins with SGB's settings, which separates binning from the
protocol in the AUC comparison.

Run:  python benchmarks/secretflow_sgb.py [--trees 10] [--rounds 2] [--same-bins] [--append]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hefl.crypto import _native as native
from hefl.crypto import generate_keypair
from hefl.data import adult_vertical_parts, load_adult
from hefl.protocols.vf2boost import VF2BoostConfig, fit, plaintext_reference, roc_auc

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
WORKER = ROOT / "secretflow_sgb_worker.py"
SF_VERSION = "1.14.0b0"


def ensure_venv(venv: Path, python: str) -> Path:
    """The SecretFlow venv's python, creating the venv (and installing secretflow) if missing."""
    py = venv / "bin" / "python"
    if py.exists():
        check = subprocess.run([str(py), "-c", "import secretflow"], capture_output=True)
        if check.returncode == 0:
            return py
    if not py.exists():
        print(f"creating the SecretFlow venv {venv} with {python}")
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    log = venv / "install.log"
    print(f"installing secretflow=={SF_VERSION} into {venv} (log: {log})")
    with open(log, "ab") as f:
        for args in (["-U", "pip"], [f"secretflow=={SF_VERSION}"]):
            r = subprocess.run([str(py), "-m", "pip", "install", *args], stdout=f, stderr=f)
            if r.returncode != 0:
                sys.exit(f"pip install {' '.join(args)} failed; see {log}")
    return py


def run_sgb(py: Path, data: Path, schema: str, trees: int, y_test: np.ndarray, log: Path) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = Path(tmp.name)
    t0 = time.perf_counter()
    with open(log, "ab") as f:
        r = subprocess.run([str(py), str(WORKER), str(data), str(out), "--schema", schema,
                            "--trees", str(trees)], stdout=f, stderr=f)  # fmt: skip
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"SGB worker ({schema}) failed with code {r.returncode}; see {log}")
    res = json.loads(out.read_text())
    out.unlink()
    pred = np.asarray(res.pop("test_pred"))
    res["test_auc"] = roc_auc(y_test, pred)
    res["process_wall_seconds"] = wall
    return res


def hefl_commit() -> str | None:
    """The commit hefl's working tree is at (the measured code), if it is a git checkout."""
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)  # fmt: skip
    return r.stdout.strip() or None


def run_hefl(parts, y, tparts, y_test, kp, trees: int, obfuscation: str, **kw) -> dict:
    opts = {"max_bin": 32, **kw}
    cfg = VF2BoostConfig(n_estimators=trees, max_depth=5, learning_rate=0.3, reg_lambda=1.0,
                         obfuscation=obfuscation, **opts)  # fmt: skip
    res = fit(parts, y, cfg, keypair=kp)
    stats = res.statistics
    return {
        "obfuscation": obfuscation,
        "trees": len(res.tree_seconds),
        "fit_seconds": res.seconds,
        "seconds_per_tree": res.seconds / len(res.tree_seconds),
        "tree_seconds": res.tree_seconds,
        "mean_tree_seconds": float(np.mean(res.tree_seconds)),
        "test_auc": roc_auc(y_test, res.model.predict_proba(tparts)),
        "idle_share": {
            p: s.get("idle_seconds", 0.0) / max(s["wall_seconds"], 1e-9) for p, s in stats.items()
        },
        "hit_rate": res.hit_rate,
        "hefl_commit": hefl_commit(),
        "native_kernel": native.AVAILABLE,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    ap.add_argument("--sf-venv", type=Path, default=Path("/work/sf-venv"))
    ap.add_argument("--sf-python", default="/root/.pyenv/versions/3.10.13/bin/python")
    ap.add_argument("--only", choices=["sgb", "hefl"], help="run one system only")
    ap.add_argument("--same-bins", action="store_true",
                    help="also train hefl's plaintext reference (which every federated run "
                    "reproduces exactly) on SGB's own bins with SGB's settings "
                    "(min_child_weight 0, base score 0.5), to compare the AUCs")  # fmt: skip
    ap.add_argument(
        "--append",
        action="store_true",
        help="add this run's rounds to an existing secretflow_sgb.json",
    )
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    train, test = load_adult("train"), load_adult("test")
    parts, tparts = adult_vertical_parts(train), adult_vertical_parts(test)
    py = ensure_venv(args.sf_venv, args.sf_python) if args.only != "hefl" else None
    work = Path(tempfile.mkdtemp(prefix="hefl-sgb-"))
    data = work / "adult.npz"

    def missing_low(x: np.ndarray) -> np.ndarray:
        return np.nan_to_num(x, nan=-1.0)

    np.savez(data, xa_train=missing_low(parts[0]), xp_train=missing_low(parts[1]),
             y_train=train.y.astype(np.float64), xa_test=missing_low(tparts[0]),
             xp_test=missing_low(tparts[1]), y_test=test.y)  # fmt: skip
    log = work / "sgb.log"
    kp = generate_keypair(2048) if args.only != "sgb" else None
    # "no_optimistic": optimistic splitting off. Its speculative histograms only pay when the
    # passive party would otherwise idle; here every party shares one process's executor, so
    # they compete with the active party's decryptions for the same two cores.
    # "20bit": g and h with 20 fractional bits, the precision SGB encodes them with (hefl's
    # default is 53): 71-bit instead of 137-bit Horner slots, so half the squarings and
    # decryptions per histogram entry. Every hefl run is still exactly its plaintext reference.
    names = ("sgb_paillier", "hefl_default", "hefl_default_no_optimistic", "sgb_ou",
             "hefl_djn_short", "hefl_djn_short_no_optimistic",
             "hefl_djn_short_20bit_no_optimistic")  # fmt: skip
    runs: dict[str, list[dict]] = {name: [] for name in names}
    previous: dict = {}
    if args.append and (RESULTS / "secretflow_sgb.json").exists():
        previous = json.loads((RESULTS / "secretflow_sgb.json").read_text())
        runs.update(previous["runs"])
    first = max((r["round"] for rs in runs.values() for r in rs), default=-1) + 1
    for rnd in range(first, first + args.rounds):
        steps = [
            ("sgb_paillier", lambda: run_sgb(py, data, "paillier", args.trees, test.y, log)),
            ("hefl_default", lambda: run_hefl(parts, train.y, tparts, test.y, kp, args.trees,
                                              "djn")),
            ("hefl_default_no_optimistic", lambda: run_hefl(
                parts, train.y, tparts, test.y, kp, args.trees, "djn", optimistic=False)),
            ("sgb_ou", lambda: run_sgb(py, data, "ou", args.trees, test.y, log)),
            ("hefl_djn_short", lambda: run_hefl(parts, train.y, tparts, test.y, kp, args.trees,
                                                "djn-short")),
            ("hefl_djn_short_no_optimistic", lambda: run_hefl(
                parts, train.y, tparts, test.y, kp, args.trees, "djn-short", optimistic=False)),
            ("hefl_djn_short_20bit_no_optimistic", lambda: run_hefl(
                parts, train.y, tparts, test.y, kp, args.trees, "djn-short", optimistic=False,
                frac_bits=20)),
        ]  # fmt: skip
        for name, step in steps:
            if args.only and not name.startswith(args.only):
                continue
            t0 = time.perf_counter()
            r = step()
            r["round"] = rnd
            runs[name].append(r)
            print(
                f"round {rnd} {name:34} {r['seconds_per_tree']:7.2f} s/tree  "
                f"AUC {r['test_auc']:.5f}  ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            partial = {"runs": runs}
            (RESULTS / "secretflow_sgb.partial.json").write_text(
                json.dumps(partial, indent=1, default=float)
            )

    same_bins = previous.get("same_bins")
    if args.same_bins:
        # the bins SGB's quantile sketch makes (cut by SecretFlow's own code in its venv), with
        # SGB's defaults where they differ from hefl's: no min_child_weight and an initial
        # prediction of 0.5. max_bin 64 keeps SGB's (at most 33) bins as they are.
        bins = work / "sgb_bins.npz"
        subprocess.run([str(py), str(WORKER), str(data), str(bins), "--export-bins"],
                       check=True)  # fmt: skip
        b = np.load(bins)
        base = {"n_estimators": args.trees, "max_depth": 5, "learning_rate": 0.3,
                "reg_lambda": 1.0}  # fmt: skip
        same_bins = {}
        for name, (xtr, xte, kw) in {
            "hefl bins, hefl defaults": (parts, tparts, {"max_bin": 32}),
            "hefl bins, SGB settings": (parts, tparts, {"max_bin": 32, "min_child_weight": 0.0,
                                                        "base_score": 0.5}),
            "SGB bins, hefl defaults": ([b["xa_train"], b["xp_train"]],
                                        [b["xa_test"], b["xp_test"]], {"max_bin": 64}),
            "SGB bins, SGB settings": ([b["xa_train"], b["xp_train"]],
                                       [b["xa_test"], b["xp_test"]],
                                       {"max_bin": 64, "min_child_weight": 0.0,
                                        "base_score": 0.5}),
        }.items():  # fmt: skip
            ref = plaintext_reference(xtr, train.y, VF2BoostConfig(**base, **kw))
            same_bins[name] = roc_auc(test.y, ref.predict_proba(xte))
            print(f"plaintext reference, {name:28} test AUC {same_bins[name]:.5f}")

    def med(name: str, key: str = "seconds_per_tree") -> float | None:
        vals = [r[key] for r in runs[name]]
        return float(np.median(vals)) if vals else None

    summary = {name: {"median_seconds_per_tree": med(name), "test_auc": med(name, "test_auc"),
                      "runs": len(runs[name])} for name in runs}  # fmt: skip
    for name in names:
        if name.startswith("hefl") and runs[name]:
            summary[name]["median_mean_tree_seconds"] = med(name, "mean_tree_seconds")
    ratios = {}
    pairs = [("sgb_paillier", "hefl_default"), ("sgb_paillier", "hefl_default_no_optimistic"),
             ("sgb_ou", "hefl_djn_short"), ("sgb_ou", "hefl_djn_short_no_optimistic"),
             ("sgb_ou", "hefl_djn_short_20bit_no_optimistic"), ("sgb_ou", "hefl_default")]  # fmt: skip
    for sgb, hefl in pairs:
        # per round (interleaved neighbours of the same round), then the median
        by_round = {r["round"]: r["seconds_per_tree"] for r in runs[hefl]}
        per_round = [s["seconds_per_tree"] / by_round[s["round"]] for s in runs[sgb]
                     if s["round"] in by_round]  # fmt: skip
        if per_round:
            ratios[f"{sgb}/{hefl}"] = {"median": float(np.median(per_round)),
                                       "per_round": per_round}  # fmt: skip
    print(f"\n{'configuration':34} {'s/tree (median)':>16} {'test AUC':>9} {'runs':>5}")
    for name, s in summary.items():
        if s["runs"]:
            print(f"{name:34} {s['median_seconds_per_tree']:>16.2f} {s['test_auc']:>9.5f} "
                  f"{s['runs']:>5}")  # fmt: skip
    for k, v in ratios.items():
        print(f"{k:48} SGB/hefl = {v['median']:.2f}x  (per round {np.round(v['per_round'], 2)})")
    out = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
        },
        "secretflow": SF_VERSION,
        "secretflow_mode": "single process (sf.init(parties, debug_mode=True))",
        "trees": args.trees,
        "rounds": first + args.rounds,
        "order_per_round": list(runs),
        "summary": summary,
        "sgb_over_hefl": ratios,
        "runs": runs,
    }
    if same_bins is not None:
        out["same_bins"] = same_bins
    (RESULTS / "secretflow_sgb.json").write_text(json.dumps(out, indent=1, default=float))
    (RESULTS / "secretflow_sgb.partial.json").unlink(missing_ok=True)
    print(f"wrote {RESULTS / 'secretflow_sgb.json'} (SGB log: {log})")


if __name__ == "__main__":
    main()
