"""Where the CPU of ``hefl demo vf2boost`` goes, and the floor of its time per tree.

Two readings of the same runs:

* the machine's busy share from /proc/stat over the whole run (every process counts, the
  obfuscator pool's forkserver workers included), against ``/usr/bin/time``-style rusage of the
  command, which misses those workers: they are children of a forkserver that the command
  never waits for, so their CPU never reaches its rusage;
* the CPU cost of the key holder's randomness, one obfuscator per training row per tree,
  measured here for full-length and short exponents: with ``cores`` cores no schedule makes a
  tree faster than (rows × cost per obfuscator) / cores, before decryption and histograms.

Run on an otherwise idle machine (the busy share counts every process):

    python benchmarks/demo_cpu.py                 # 4 trees, default and --short-exponent
    python benchmarks/demo_cpu.py --trees 10 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from hefl import cpu_count
from hefl.crypto import _native as native
from hefl.crypto import generate_keypair
from hefl.data import load_adult

RESULTS = Path(__file__).resolve().parent / "results" / "demo_cpu.json"


def _cpu_ticks() -> tuple[int, int]:
    """(all ticks, idle ticks) of the whole machine, from /proc/stat."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def run_demo(trees: int, short: bool) -> dict[str, float]:
    """One ``hefl demo vf2boost`` run: wall time, s/tree, machine busy share, rusage share."""
    cmd = [sys.executable, "-m", "hefl.cli", "demo", "vf2boost", "--trees", str(trees)]
    cmd += ["--quiet", "--json"] + (["--short-exponent"] if short else [])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    total0, idle0 = _cpu_ticks()
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    total1, idle1 = _cpu_ticks()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rusage_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    busy = ((total1 - total0) - (idle1 - idle0)) / max(1, total1 - total0)
    report = json.loads(out.stdout)
    return {
        "wall_s": wall,
        "s_per_tree": report["seconds_per_tree"],
        "identical_to_plaintext_reference": report["identical_to_plaintext_reference"],
        "test_auc": report["test_auc"],
        "machine_busy_pct": 100 * busy * (os.cpu_count() or 1),
        "rusage_pct": 100 * rusage_cpu / wall,
    }


def obfuscator_cost(bits: int, count: int) -> dict[str, float]:
    """CPU seconds per key-holder obfuscator (CRT, hefl's kernel), by method."""
    _, sk = generate_keypair(bits)
    out = {}
    for method in ("djn", "djn-short"):
        sk.obfuscators(8, method=method)  # build the fixed-base tables first
        t0 = time.process_time()
        sk.obfuscators(count, method=method)
        out[method] = (time.process_time() - t0) / count
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved runs of each setting")
    ap.add_argument("--count", type=int, default=2000, help="obfuscators timed per method")
    args = ap.parse_args()
    rows = len(load_adult("train").y)
    cores = cpu_count()
    runs: dict[str, list[dict[str, float]]] = {"djn": [], "djn-short": []}
    for _ in range(args.repeats):
        for method in runs:
            runs[method].append(run_demo(args.trees, short=method == "djn-short"))
    cost = obfuscator_cost(2048, args.count)
    print(f"hefl demo vf2boost, {args.trees} trees, {rows} rows, {cores} cores (medians)")
    print(f"{'obfuscators':<12} {'s/tree':>7} {'busy %':>7} {'rusage %':>9} {'floor s/tree':>13}")
    for method, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        floor = rows * cost[method] / cores
        print(
            f"{method:<12} {med['s_per_tree']:>7.2f} {med['machine_busy_pct']:>7.0f} "
            f"{med['rusage_pct']:>9.0f} {floor:>13.2f}"
        )
    for method, c in cost.items():
        print(f"{method}: {c * 1e6:.0f} µs CPU per obfuscator, {rows * c:.1f} CPU-s per tree")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": "python benchmarks/demo_cpu.py " + " ".join(sys.argv[1:]),
                "date": time.strftime("%Y-%m-%d"),
                "rows": rows,
                "cores": cores,
                "trees": args.trees,
                "native_kernel": native.AVAILABLE,
                "ifma": native.IFMA,
                "obfuscator_cpu_s": cost,
                "runs": runs,
            },
            indent=1,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
