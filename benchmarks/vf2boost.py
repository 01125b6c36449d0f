"""VF2Boost benchmark: the serial per-value baseline, each technique alone, and all on.

Adult (UCI, bundled), split vertically: the active party holds age, workclass, fnlwgt,
education, education_num, marital_status, occupation; the passive party the other seven (a
third party takes half of them in the 3-party run). 2048-bit keys. Every configuration is
lossless (checked against plaintext_reference in the tests); this script measures time,
bytes and busy/idle shares, and saves Gantt charts of the serial baseline and of all-on.

The serial baseline (per-value phe-style ciphertexts with textbook rⁿ, no pipelining, no
packing) takes many minutes per tree on full Adult, so it is measured on a row subsample and
extrapolated: its row-proportional parts (the active party's encryption and the passive
party's histogram building) are scaled by rows/subsample, the rest is kept as measured. The
"each technique alone" rows run on the same subsample, so their ratios are measured, not
extrapolated. All-on is measured on full Adult.

The pinned run (``--pinned``, or ``--pinned-only`` for just the process rows) is one OS
process per party over ZeroMQ with each party process, its crypto pool and its obfuscator pool
pinned to its own core (os.sched_setaffinity: active on core 0, passive on core 1), so the
active party's background obfuscator pool only uses the active party's idle time.

Run:  python benchmarks/vf2boost.py [--sub 1000] [--trees 2] [--quick] [--pinned]
      python benchmarks/vf2boost.py --pinned-only [--trees 2]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import hefl
from hefl.crypto import generate_keypair
from hefl.data import adult_vertical_parts, load_adult
from hefl.protocols.vf2boost import (
    FitResult,
    VF2BoostConfig,
    active_party,  # fmt: skip
    fit,
    passive_party,
    roc_auc,
)
from hefl.protocols.vf2boost.reference import check_parts, party_names

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

OFF = {"blaster": False, "optimistic": False, "reorder": False, "pack_gh": False,
       "pack_histograms": False, "precompute": False}  # fmt: skip


def row(name, res, rows, note="", extrapolated=None):
    stats = res.statistics
    active, passive = stats["active"], stats["passive1"]
    per_tree = float(np.mean(res.tree_seconds))
    out = {
        "config": name,
        "rows": rows,
        "trees": len(res.tree_seconds),
        "seconds_per_tree": per_tree,
        "seconds_per_tree_full_adult": extrapolated if extrapolated is not None else per_tree,
        "bytes_active_to_passive": res.bytes_sent["active"] / len(res.tree_seconds),
        "bytes_passive_to_active": res.bytes_sent["passive1"] / len(res.tree_seconds),
        "active_idle_share": active["idle_seconds"] / max(active["wall_seconds"], 1e-9),
        "passive_idle_share": passive["idle_seconds"] / max(passive["wall_seconds"], 1e-9),
        "hit_rate": res.hit_rate,
        **training_idle(res),
        "note": note,
        "spans": {p: s.get("span_seconds", {}) for p, s in stats.items()},
    }
    return out


def training_idle(res) -> dict:
    """Idle shares over the training only: from the end of an offline prefill phase (or the
    first span) to the last span, from the trace's idle spans."""
    spans = getattr(res.trace, "spans", None)
    if not spans:
        return {}
    prefill = [s for s in spans if s.name == "prefill-obfuscators"]
    start = max(s.start_us + s.dur_us for s in prefill) if prefill else spans[0].start_us
    end = max(s.start_us + s.dur_us for s in spans)
    out = {}
    for party, key in (("active", "active"), ("passive1", "passive")):
        out[f"{key}_idle_share_training"] = idle_share(spans, party, start, end)
    out.update(steady_idle(spans))
    return out


def idle_share(spans, party: str, start: float, end: float) -> float:
    """The share of [start, end) that ``party`` spent in idle spans."""
    idle = sum(
        max(0.0, min(s.start_us + s.dur_us, end) - max(s.start_us, start))
        for s in spans
        if s.party == party and s.name == "idle"
    )
    return idle / max(end - start, 1e-9)


def tree_windows(spans) -> list[tuple[float, float]]:
    """Each tree's wall-clock window: from the first active-party span of tree t to the first
    of tree t + 1 (the last tree ends with the last span)."""
    first: dict[int, float] = {}
    for s in spans:
        t = s.attrs.get("tree")
        if s.party == "active" and isinstance(t, int):
            first[t] = min(first.get(t, s.start_us), s.start_us)
    starts = [first[t] for t in sorted(first)]
    end = max(s.start_us + s.dur_us for s in spans)
    return list(zip(starts, [*starts[1:], end], strict=True))


def steady_idle(spans) -> dict:
    """Per-tree idle shares, and their median over the trees after the first (the steady
    state: the first tree has no obfuscators made in the background yet)."""
    wins = tree_windows(spans)
    out: dict = {"tree_window_seconds": [(b - a) / 1e6 for a, b in wins]}
    for party, key in (("active", "active"), ("passive1", "passive")):
        shares = [idle_share(spans, party, a, b) for a, b in wins]
        out[f"{key}_idle_share_per_tree"] = shares
        later = shares[1:] or shares
        out[f"{key}_idle_share_steady"] = float(np.median(later)) if later else float("nan")
    return out


def run(parts, y, cfg, kp, **kw):
    return fit(parts, y, cfg, keypair=kp, **kw)


def pin_this_process(core: int) -> None:
    """Pin every thread of this process to one core; processes it starts later (its crypto
    pool, its obfuscator pool's forkserver) inherit the affinity."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just exited
            os.sched_setaffinity(int(tid), {core})


async def pinned_role(core: int, role, party):
    """Run a party's role in its own (spawned) process after pinning that process to a core."""
    pin_this_process(core)
    return await role(party)


def fit_pinned(parts, y, cfg, kp, *, cores=None, prefill=False) -> FitResult:
    """Like ``fit(..., processes=True, max_workers=1)``, each party process pinned to a core
    (party i on core cores[i], default i mod the cores this process may use)."""
    parts, yf = check_parts(parts, y)
    names = party_names(len(parts))
    avail = sorted(os.sched_getaffinity(0))
    cores = cores or [avail[i % len(avail)] for i in range(len(parts))]
    roles = {
        names[0]: functools.partial(
            active_party, X=parts[0], y=yf, cfg=cfg, passives=names[1:], keypair=kp, prefill=prefill
        )
    }
    for name, X in zip(names[1:], parts[1:], strict=True):
        roles[name] = functools.partial(passive_party, X=X, cfg=cfg, active=names[0])
    roles = {
        n: functools.partial(pinned_role, c, r)
        for (n, r), c in zip(roles.items(), cores, strict=False)
    }
    t0 = time.perf_counter()
    result = hefl.run(roles, processes=True, max_workers=1)
    return FitResult.from_run(result, names, time.perf_counter() - t0)


def pinned_rows(full_rows, yfull, base, n_trees, kp, rounds: int = 1) -> list[dict]:
    """Processes unpinned, pinned end to end and pinned online, interleaved ``rounds`` times;
    every row reports the median over its rounds."""
    cfg = VF2BoostConfig(**{**base, "n_estimators": n_trees})
    label = {
        "unpinned": "all on, one OS process per party over ZeroMQ (not pinned)",
        "pinned": "all on, one process per party, each pinned to its own core (end to end)",
        "pinned_online": "all on, one process per party, each pinned to its own core, online "
        "(obfuscators precomputed before)",
        "pinned_short": "all on + short exponents, one process per party, each pinned to its "
        "own core (end to end)",
    }
    short = VF2BoostConfig(**{**base, "n_estimators": n_trees, "obfuscation": "djn-short"})
    runs: dict[str, list[dict]] = {k: [] for k in label}
    for i in range(rounds):
        res = run(full_rows, yfull, cfg, kp, processes=True, max_workers=1)
        runs["unpinned"].append(row(label["unpinned"], res, len(yfull)))
        res = fit_pinned(full_rows, yfull, cfg, kp)
        runs["pinned"].append(row(label["pinned"], res, len(yfull)))
        res = fit_pinned(full_rows, yfull, cfg, kp, prefill=True)
        runs["pinned_online"].append(row(label["pinned_online"], res, len(yfull)))
        if i == 0 and res.trace is not None:
            res.trace.save_gantt(
                RESULTS / "vf2boost_gantt_pinned_online.png",
                title=f"VF2Boost all on, one core per party, online, Adult {len(yfull)} rows",
            )
        res = fit_pinned(full_rows, yfull, short, kp)
        runs["pinned_short"].append(row(label["pinned_short"], res, len(yfull)))
    out = []
    for rs in runs.values():
        r = dict(rs[len(rs) // 2])
        for key in ("seconds_per_tree", "seconds_per_tree_full_adult", "active_idle_share",
                    "passive_idle_share", "active_idle_share_training",
                    "passive_idle_share_training", "active_idle_share_steady",
                    "passive_idle_share_steady"):  # fmt: skip
            r[key] = float(np.median([x.get(key, float("nan")) for x in rs]))
        r["rounds"] = [{key: x.get(key) for key in ("seconds_per_tree", "active_idle_share",
                                                    "passive_idle_share",
                                                    "active_idle_share_training",
                                                    "passive_idle_share_training",
                                                    "passive_idle_share_per_tree",
                                                    "tree_window_seconds")}
                       for x in rs]  # fmt: skip
        out.append(r)
    return out


def obfuscator_seconds(kp, method: str, rows: int, sample: int = 2048) -> float:
    """CPU seconds one core spends on the key holder's obfuscators for ``rows`` ciphertexts
    (one per row: g‖h packed), timed on ``sample`` of them after the tables are built."""
    sk = kp[1]
    sk.obfuscators(1, method=method)  # build this process's tables first
    t0 = time.process_time()
    sk.obfuscators(sample, method=method)
    return (time.process_time() - t0) / sample * rows


def idle_floor(rows_out, kp, n_rows: int) -> dict:
    """The least passive idle share one core per party allows end to end.

    With one core, the active party must make every tree's obfuscators on that core: a tree
    takes at least (obfuscator CPU + the active party's own online work), and the passive
    party has its online work to fill it with. Both works come from the pinned online row
    (trees 2+), the obfuscator CPU from timing the key holder's CRT path here.
    """
    online = next(r for r in rows_out if "online" in r["config"])
    tree = float(np.median(online["tree_window_seconds"][1:] or online["tree_window_seconds"]))
    active_work = tree * (1 - online["active_idle_share_steady"])
    passive_work = tree * (1 - online["passive_idle_share_steady"])
    out = {"online_tree_seconds": tree, "active_online_work_seconds": active_work,
           "passive_online_work_seconds": passive_work}  # fmt: skip
    for method in ("djn", "djn-short"):
        obf = obfuscator_seconds(kp, method, n_rows)
        out[method] = {
            "obfuscator_cpu_seconds_per_tree": obf,
            "min_tree_seconds": obf + active_work,
            "min_passive_idle_share": max(0.0, 1 - passive_work / (obf + active_work)),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sub", type=int, default=1000, help="rows for baseline / single switches")
    ap.add_argument("--trees", type=int, default=2, help="trees of the full-Adult runs")
    ap.add_argument("--quick", action="store_true", help="tiny run to check the script")
    ap.add_argument(
        "--pinned",
        action="store_true",
        help="add the one-process-per-party runs pinned to one core each",
    )
    ap.add_argument("--pinned-only", action="store_true",
                    help="only the process runs (unpinned, pinned, pinned online) on full "
                    "Adult; writes vf2boost_pinned.json")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds of --pinned-only")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    train, test = load_adult("train"), load_adult("test")
    full, tparts = adult_vertical_parts(train), adult_vertical_parts(test)
    n_full = len(train.y)
    sub_n = 200 if args.quick else args.sub
    rng = np.random.default_rng(0)
    sub_rows = np.sort(rng.choice(n_full, sub_n, replace=False))
    sub = [X[sub_rows] for X in full]
    ysub = train.y[sub_rows]
    t0 = time.perf_counter()
    kp = generate_keypair(2048)
    print(f"2048-bit key in {time.perf_counter() - t0:.1f} s")
    base = {"n_estimators": 1, "max_depth": 5, "learning_rate": 0.3, "max_bin": 32,
            "reg_lambda": 1.0}  # fmt: skip
    rows_out = []
    if args.pinned_only:
        n_trees = 1 if args.quick else args.trees
        full_rows = full if not args.quick else [X[:2000] for X in full]
        yfull = train.y if not args.quick else train.y[:2000]
        rows_out = pinned_rows(full_rows, yfull, base, n_trees, kp, args.rounds)
        print(f"\n{'configuration':90} {'s/tree':>7} {'idle A':>7} {'idle P':>7} "
              f"{'(training only:':>15} {'A':>4} {'P)':>5} {'(trees 2+: A':>13} {'P)':>5}")  # fmt: skip
        for r in rows_out:
            print(
                f"{r['config'][:90]:90} {r['seconds_per_tree']:>7.2f} "
                f"{r['active_idle_share']:>7.0%} {r['passive_idle_share']:>7.0%} "
                f"{'':>15} {r['active_idle_share_training']:>4.0%} "
                f"{r['passive_idle_share_training']:>5.0%} "
                f"{r['active_idle_share_steady']:>13.0%} {r['passive_idle_share_steady']:>5.0%}"
            )
        floor = idle_floor(rows_out, kp, len(yfull))
        print(
            f"\nonline tree {floor['online_tree_seconds']:.2f} s: active works "
            f"{floor['active_online_work_seconds']:.2f} s, passive "
            f"{floor['passive_online_work_seconds']:.2f} s"
        )
        for method in ("djn", "djn-short"):
            f = floor[method]
            print(f"{method:9} obfuscators {f['obfuscator_cpu_seconds_per_tree']:5.2f} s CPU/tree -> "
                  f"one core per party end to end: tree >= {f['min_tree_seconds']:.2f} s, "
                  f"passive idle >= {f['min_passive_idle_share']:.0%}")  # fmt: skip
        out = {
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_average_at_end": os.getloadavg(),
            },
            "key_bits": 2048,
            "trees": n_trees,
            "rounds": args.rounds,
            "rows": rows_out,
            "end_to_end_floor_one_core": floor,
        }
        (RESULTS / "vf2boost_pinned.json").write_text(json.dumps(out, indent=1, default=float))
        print(f"wrote {RESULTS / 'vf2boost_pinned.json'}")
        return

    # --- subsample: serial baseline, each technique alone, all on ------------------------
    serial_cfg = VF2BoostConfig.serial_baseline(**base)
    res = run(sub, ysub, serial_cfg, kp)
    spans = res.statistics
    linear = spans["active"]["span_seconds"].get("encrypt", 0.0) + spans["passive1"][
        "span_seconds"
    ].get("histograms", 0.0)
    est = float(np.mean(res.tree_seconds)) + (n_full / sub_n - 1) * linear
    rows_out.append(row("serial baseline (per-value phe, rⁿ)", res, sub_n,
                        "full-Adult figure extrapolated", est))  # fmt: skip
    res.trace.save_gantt(RESULTS / "vf2boost_gantt_serial.png",
                         title=f"serial SecureBoost baseline, Adult {sub_n} rows, 1 tree")  # fmt: skip
    serial_sub = rows_out[-1]["seconds_per_tree"]
    alone = {
        "blaster (+ precomputed obfuscators)": {"blaster": True, "precompute": True,
                                                "encoding": "phe", "obfuscation": "djn"},
        "fixed-point encoding (no rescaling)": {"encoding": "fixed"},
        "phe encoding + re-ordered accumulation": {"reorder": True},
        "pack g‖h": {"encoding": "fixed", "pack_gh": True},
        "Horner histogram packing": {"encoding": "fixed", "pack_histograms": True},
    }  # fmt: skip
    for name, sw in alone.items():
        cfg = VF2BoostConfig(**{**base, **OFF, "encoding": "phe", "obfuscation": "rn", **sw})
        res = run(sub, ysub, cfg, kp)
        rows_out.append(row(name + " alone", res, sub_n, "subsample"))
    cfg_all = VF2BoostConfig(**base)
    res = run(sub, ysub, cfg_all, kp)
    rows_out.append(row("all on", res, sub_n, "subsample"))
    for r in rows_out[1:]:
        r["speedup_vs_serial_same_rows"] = serial_sub / r["seconds_per_tree"]

    # --- full Adult, all on -------------------------------------------------------------
    n_trees = 1 if args.quick else args.trees
    full_rows = full if not args.quick else [X[:2000] for X in full]
    yfull = train.y if not args.quick else train.y[:2000]
    cfg = VF2BoostConfig(**{**base, "n_estimators": n_trees})
    res = run(full_rows, yfull, cfg, kp)
    rows_out.append(row("all on, full Adult (end to end, pool filling during training)", res,
                        len(yfull)))  # fmt: skip
    res.trace.save_gantt(RESULTS / "vf2boost_gantt_all_on.png",
                         title=f"VF2Boost all on, Adult {len(yfull)} rows, 2048-bit")  # fmt: skip
    res = run(full_rows, yfull, cfg, kp, prefill=True)
    rows_out.append(row("all on, full Adult, online (obfuscators precomputed before)", res,
                        len(yfull)))  # fmt: skip
    short = VF2BoostConfig(**{**base, "n_estimators": n_trees, "obfuscation": "djn-short"})
    res = run(full_rows, yfull, short, kp)
    rows_out.append(row("all on + short-exponent obfuscators (opt-in)", res, len(yfull)))
    res = run(full_rows, yfull, cfg, kp, processes=True, max_workers=1)
    rows_out.append(row("all on, one OS process per party over ZeroMQ", res, len(yfull)))
    if args.pinned:
        rows_out += pinned_rows(full_rows, yfull, base, n_trees, kp)[1:]
    three = [full_rows[0], full_rows[1][:, :4], full_rows[1][:, 4:]]
    res3 = run(three, yfull, VF2BoostConfig(**{**base, "n_estimators": 1}), kp)
    rows_out.append(row("all on, 3 parties (1 tree)", res3, len(yfull)))
    serial_full = rows_out[0]["seconds_per_tree_full_adult"]
    for r in rows_out[len(alone) + 2 :]:
        r["speedup_vs_serial_full_adult"] = serial_full / r["seconds_per_tree"]

    # --- accuracy of the full model (10 trees would take long: AUC from the plaintext
    # reference, which the federation reproduces exactly)
    from hefl.protocols.vf2boost import plaintext_reference

    ref = plaintext_reference(full, train.y, VF2BoostConfig())
    auc = roc_auc(test.y, ref.predict_proba(tparts))

    print(f"\n{'configuration':66} {'rows':>6} {'s/tree':>8} {'full est':>9} {'×serial':>8} "
          f"{'MB A→P':>8} {'MB P→A':>7} {'idle A':>7} {'idle P':>7}")  # fmt: skip
    for r in rows_out:
        sp = r.get("speedup_vs_serial_full_adult", r.get("speedup_vs_serial_same_rows", 1.0))
        print(f"{r['config'][:66]:66} {r['rows']:>6} {r['seconds_per_tree']:>8.2f} "
              f"{r['seconds_per_tree_full_adult']:>9.1f} {sp:>8.1f} "
              f"{r['bytes_active_to_passive'] / 1e6:>8.2f} {r['bytes_passive_to_active'] / 1e6:>7.2f} "
              f"{r['active_idle_share']:>7.0%} {r['passive_idle_share']:>7.0%}")  # fmt: skip
    print(f"\nAUC (10 trees, depth 5, lr 0.3, 32 bins, λ=1; identical federated): {auc:.5f}")
    out = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "key_bits": 2048,
        "subsample_rows": sub_n,
        "rows": rows_out,
        "auc_10_trees": auc,
    }
    (RESULTS / "vf2boost.json").write_text(json.dumps(out, indent=1, default=float))
    print(f"wrote {RESULTS / 'vf2boost.json'}")


if __name__ == "__main__":
    main()
