"""VF2Boost over emulated wide-area links: seconds per tree on loopback vs 50 ms each way at
100 Mbit/s and at 10 Mbit/s, against the transfer floor (bytes / bandwidth).

Each setting runs the same two-party training (active party "bank", passive party "shop", UCI
Adult rows split vertically, CURVE-encrypted ZeroMQ as across real hosts) as two OS
processes: on loopback in this namespace, then each party in its own network namespace joined
by one emulated link (see ``benchmarks/netlab.py``: tc netem on a veth pair where the kernel
has netem, the same link model in user space otherwise). Heartbeats and timeouts are the
federation file's defaults (2 s / 30 s): a spurious peer-lost would fail the run.

The g‖h of a tree is streamed in chunks of 500 rows (``--chunk``; the config's default, 4096,
would send these 4,000 rows as one chunk and leave nothing to pipeline). Per setting it reports
the median seconds per tree, the bytes each way per tree, the floor
``max(bytes each way) / bandwidth``, and how much of the floor shows up as extra time over
loopback: ``(wan - loopback) / floor``. Below 1, the pipeline (streamed chunks, histograms
built while later chunks are in flight, optimistic splits) hides part of the transfer behind
computation; the rest of the extra time is round trips (about two per tree layer).

Usage (root; needs ``ip`` and ``tc``)::

    python benchmarks/wan.py            # 4,000 rows, 3 trees of depth 4, 2048-bit keys, 2 repeats
    python benchmarks/wan.py --quick    # 1,000 rows, 2 trees of depth 3, 1024-bit keys
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netlab import Lab, Link, curve_federation, unavailable

NAMES = ("bank", "shop")
SETTINGS = {
    "loopback": None,
    "wan-100mbit": Link(delay_ms=50, rate_mbit=100),
    "wan-10mbit": Link(delay_ms=50, rate_mbit=10),
}
RESULTS = Path(__file__).resolve().parent / "results"


def federation(directory: Path, addresses: tuple[str, str], ports: tuple[int, int]) -> Path:
    """A CURVE federation file for bank and shop (keys made here)."""
    return curve_federation(directory, NAMES, addresses, ports)


def party(args: argparse.Namespace) -> None:
    """One party's training (run inside its namespace); prints its figures as JSON."""
    import hefl
    from hefl._demos import subsample
    from hefl.data import adult_vertical_parts, load_adult
    from hefl.protocols.vf2boost import VF2BoostConfig, active_party, passive_party

    cfg = VF2BoostConfig(
        n_estimators=args.trees,
        max_depth=args.depth,
        key_bits=args.bits,
        allow_insecure=args.bits < 2048,
        chunk_size=args.chunk,
    )
    train = subsample(load_adult("train"), args.rows)
    index = NAMES.index(args.party)
    X = adult_vertical_parts(train, 2)[index]
    if index == 0:
        role = functools.partial(active_party, X=X, y=train.y, cfg=cfg, passives=[NAMES[1]])
    else:
        role = functools.partial(passive_party, X=X, cfg=cfg, active=NAMES[0])
    result = hefl.run_party(args.config, args.party, role)
    out = {"statistics": result.statistics[args.party]}
    if index == 0:
        out["tree_seconds"] = result[args.party]["tree_seconds"]
    print(json.dumps(out, default=float))


def run_setting(link: Link | None, args: argparse.Namespace, workdir: Path) -> dict:
    """Train once under ``link`` (None: loopback); returns the parties' figures."""
    flags = ["--rows", str(args.rows), "--trees", str(args.trees), "--depth", str(args.depth)]
    flags += ["--bits", str(args.bits), "--chunk", str(args.chunk)]
    me = [sys.executable, os.path.abspath(__file__)]

    def argv(name: str, toml: Path) -> list[str]:
        return [*me, "--party", name, "--config", str(toml), *flags]

    if link is None:
        toml = federation(workdir, ("127.0.0.1", "127.0.0.1"), _free_ports())
        procs = [subprocess.Popen(argv(n, toml), stdout=subprocess.PIPE, text=True) for n in NAMES]
        return _collect(procs, "loopback")
    with Lab(link) as lab:
        toml = federation(workdir, lab.addresses, (7001, 7002))
        procs = [
            lab.popen(i, argv(n, toml), stdout=subprocess.PIPE, text=True)
            for i, n in enumerate(NAMES)
        ]
        return _collect(procs, lab.mode)


def _collect(procs: list[subprocess.Popen], mode: str) -> dict:
    outs = {}
    try:
        for name, p in zip(NAMES, procs, strict=True):
            stdout, _ = p.communicate(timeout=3600)
            if p.returncode != 0:
                raise SystemExit(f"party {name} failed (exit {p.returncode})")
            outs[name] = json.loads(stdout.strip().splitlines()[-1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return {"emulation": mode, **outs}


def _free_ports() -> tuple[int, int]:
    import socket

    socks = [socket.socket() for _ in NAMES]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = tuple(s.getsockname()[1] for s in socks)
    for s in socks:
        s.close()
    return ports  # type: ignore[return-value]


def summarize(name: str, link: Link | None, run: dict, trees: int, loopback: float | None) -> dict:
    """Seconds per tree, bytes per tree each way, the transfer floor and the hidden share."""
    per_tree = statistics.median(run["bank"]["tree_seconds"])
    sent = {n: run[n]["statistics"]["bytes_sent"] / trees for n in NAMES}
    row = {
        "setting": name,
        "link": "loopback" if link is None else link.describe(),
        "emulation": run["emulation"],
        "seconds_per_tree": per_tree,
        "bytes_per_tree": sent,
    }
    if link is not None and link.rate_mbit is not None:
        floor = max(sent.values()) * 8 / (link.rate_mbit * 1e6)
        row["floor_seconds_per_tree"] = floor
        if loopback is not None:
            row["extra_over_loopback"] = per_tree - loopback
            row["extra_over_floor"] = (per_tree - loopback) / floor
    return row


def _merge(runs: list[dict]) -> dict:
    """One run's figures from several repeats: every tree's seconds, the first repeat's bytes
    (the same in every repeat: the protocol's traffic does not depend on timing)."""
    first = runs[0]
    trees = [s for r in runs for s in r["bank"]["tree_seconds"]]
    return {**first, "bank": {**first["bank"], "tree_seconds": trees}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rows", type=int)
    p.add_argument("--trees", type=int)
    p.add_argument("--depth", type=int)
    p.add_argument("--bits", type=int)
    p.add_argument("--repeats", type=int, default=2, help="runs of each setting (interleaved)")
    p.add_argument(
        "--chunk", type=int, default=500, help="rows per streamed g||h chunk (default 500)"
    )
    p.add_argument("--party", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args()
    quick = {"rows": 1000, "trees": 2, "depth": 3, "bits": 1024}
    full = {"rows": 4000, "trees": 3, "depth": 4, "bits": 2048}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.party:
        party(args)
        return
    why = unavailable()
    if why is not None:
        raise SystemExit(f"cannot emulate a WAN here: {why}")
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        # settings interleaved, repeat by repeat: load from elsewhere on a shared machine
        # then falls on every setting alike
        for r in range(args.repeats):
            for name, link in SETTINGS.items():
                t0 = time.perf_counter()
                run = run_setting(link, args, Path(tmp) / f"{name}-{r}")
                run["wall_seconds"] = time.perf_counter() - t0
                runs[name].append(run)
                print(name, r, json.dumps(run["bank"]["tree_seconds"]), flush=True)
    rows, loopback = [], None
    for name, link in SETTINGS.items():
        merged = _merge(runs[name])
        row = summarize(name, link, merged, args.trees, loopback)
        loopback = row["seconds_per_tree"] if link is None else loopback
        row["tree_seconds_by_repeat"] = [r["bank"]["tree_seconds"] for r in runs[name]]
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {
        "benchmark": "vf2boost-wan",
        "parameters": {
            k: getattr(args, k) for k in ("rows", "trees", "depth", "bits", "repeats", "chunk")
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / ("wan-quick.json" if args.quick else "wan.json")).write_text(
        json.dumps(report, indent=2)
    )


if __name__ == "__main__":
    main()
