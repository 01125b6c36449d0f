"""Soak: one long VF2Boost training (300 small trees) and one long BatchCrypt FedAvg training
(500 rounds), watching memory, file descriptors and sockets as they go.

Every party runs in this process over real ZeroMQ sockets (``transport="zmq"``), with the
default process executor, so the samples cover the runtime, the transport, the protocols and
the crypto pools together. After every tree (round) the progress callback samples:

* RSS of this process and of all its descendants (pool workers), from ``/proc``;
* open file descriptors of this process, and how many of them are sockets;
* threads of this process.

The first 10 % of the trees (rounds) are the warm-up (pools started, caches filled, buffers
grown). The run passes when RSS grew by at most 10 % from the end of the warm-up to the end,
and the descriptor and socket counts at the end are no higher than at the end of the warm-up.

Usage::

    python benchmarks/soak.py                 # 300 trees, 500 rounds
    python benchmarks/soak.py --quick         # 60 trees, 100 rounds (to soak-short.json)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except OSError:
        return 0


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def sample(step: int) -> dict[str, float]:
    """Memory, descriptors, sockets and threads now."""
    me = os.getpid()
    fds = os.listdir("/proc/self/fd")
    sockets = 0
    for fd in fds:
        with contextlib.suppress(OSError):  # closed since listed
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    kids = _descendants(me)
    return {
        "step": step,
        "time": time.monotonic(),
        "rss_mb": _rss(me) / 1e6,
        "children_rss_mb": sum(_rss(k) for k in kids) / 1e6,
        "children": len(kids),
        "fds": len(fds),
        "sockets": sockets,
        "threads": len(os.listdir("/proc/self/task")),
    }


def verdict(samples: list[dict[str, float]], warmup: int) -> dict[str, object]:
    """Growth after the warm-up, and whether it is within the bounds."""
    base = next(s for s in samples if s["step"] >= warmup)
    end = samples[-1]
    growth = (end["rss_mb"] - base["rss_mb"]) / base["rss_mb"]
    total = lambda s: s["rss_mb"] + s["children_rss_mb"]  # noqa: E731
    out = {
        "warmup_steps": warmup,
        "steps": end["step"],
        "rss_mb_after_warmup": base["rss_mb"],
        "rss_mb_end": end["rss_mb"],
        "rss_growth": growth,
        "rss_with_workers_growth": (total(end) - total(base)) / total(base),
        "fds_after_warmup": base["fds"],
        "fds_end": end["fds"],
        "fds_max": max(s["fds"] for s in samples if s["step"] >= warmup),
        "sockets_after_warmup": base["sockets"],
        "sockets_end": end["sockets"],
        "threads_end": end["threads"],
        "seconds": end["time"] - samples[0]["time"],
    }
    out["ok"] = growth <= 0.10 and end["fds"] <= base["fds"] and end["sockets"] <= base["sockets"]
    return out


def soak_vf2boost(trees: int) -> dict[str, object]:
    """``trees`` small trees (1,000 Adult rows, depth 3, 1024-bit keys) in one training."""
    from hefl.data import ADULT_ACTIVE_COLUMNS, ADULT_PASSIVE_COLUMNS, load_adult
    from hefl.protocols.vf2boost import VF2BoostConfig, fit

    train = load_adult("train")
    rows = np.sort(np.random.default_rng(0).choice(len(train.y), 1000, replace=False))
    parts = [train.select(ADULT_ACTIVE_COLUMNS)[rows], train.select(ADULT_PASSIVE_COLUMNS)[rows]]
    cfg = VF2BoostConfig(n_estimators=trees, max_depth=3, key_bits=1024, allow_insecure=True)
    samples = [sample(0)]
    fit(
        parts,
        train.y[rows],
        cfg,
        transport="zmq",
        progress=lambda t, n, s: samples.append(sample(t)),
    )
    return {"samples": samples, **verdict(samples, max(1, trees // 10))}


def soak_batchcrypt(rounds: int) -> dict[str, object]:
    """``rounds`` rounds of BatchCrypt FedAvg (3 clients, logistic regression on Adult)."""
    from hefl.protocols.batchcrypt import BatchCryptConfig, train

    cfg = BatchCryptConfig(n_clients=3, key_bits=1024, allow_insecure=True)
    samples = [sample(0)]
    train(
        cfg,
        rounds=rounds,
        transport="zmq",
        local_steps=1,
        progress=lambda t, acc: samples.append(sample(t + 1)),
    )
    return {"samples": samples, **verdict(samples, max(1, rounds // 10))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--trees", type=int)
    p.add_argument("--rounds", type=int)
    args = p.parse_args()
    trees = args.trees or (60 if args.quick else 300)
    rounds = args.rounds or (100 if args.quick else 500)
    report: dict[str, object] = {
        "benchmark": "soak",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    for name, run in (
        ("vf2boost", lambda: soak_vf2boost(trees)),
        ("batchcrypt", lambda: soak_batchcrypt(rounds)),
    ):
        result = run()
        samples = result["samples"]
        assert isinstance(samples, list)
        # every 10th sample and the last are enough to plot the curves
        result["samples"] = samples[::10] + ([samples[-1]] if (len(samples) - 1) % 10 else [])
        report[name] = result
        brief = {k: v for k, v in result.items() if k != "samples"}
        print(name, json.dumps(brief), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / ("soak.json" if (trees, rounds) == (300, 500) else "soak-short.json")).write_text(
        json.dumps(report, indent=1)
    )


if __name__ == "__main__":
    main()
