"""Hardening figures: the adversarial suite's outcomes plus a longer codec fuzz run.

Runs ``tests/adversarial`` under pytest with a small plugin that records every test's outcome
and the inputs tried / faults injected it reports, then fuzzes :func:`hefl.codec.loads` with
mutated valid messages and random bytes for ``--fuzz-seconds``, and prints one table:

    python benchmarks/hardening.py [--fuzz-examples 1500] [--fuzz-seconds 60]

Outcomes: ``hefl error`` (the case ended with the exact hefl error it asserts, or the correct
result), ``crash`` (any other exception), ``hang`` (a test timeout), ``wrong`` (an assertion
failed: a wrong result or the wrong error). JSON goes to benchmarks/results/hardening.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "hardening.json"


class Collector:
    """A pytest plugin: one record per test (call phase, or setup when it failed)."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown":  # the tally is recorded as user properties at teardown
            props = dict(report.user_properties)
            for rec in self.records:
                if rec["nodeid"] == report.nodeid:
                    rec["inputs"] = int(props.get("inputs", 0))
                    rec["faults"] = int(props.get("faults", 0))
            if not report.failed:
                return
        if report.when != "call" and not report.failed:
            return
        text = str(report.longrepr or "")
        if report.passed:
            outcome = "hefl error"
        elif "Timeout" in text or "timeout" in text.split("\n")[-1]:
            outcome = "hang"
        elif "AssertionError" in text or "Failed: DID NOT RAISE" in text:
            outcome = "wrong"
        else:
            outcome = "crash"
        props = dict(report.user_properties)
        self.records.append(
            {
                "nodeid": report.nodeid,
                "test": report.nodeid.split("::", 1)[1],
                "file": report.nodeid.split("::", 1)[0].rsplit("/", 1)[-1],
                "outcome": outcome,
                "seconds": round(report.duration, 3),
                "inputs": int(props.get("inputs", 0)),
                "faults": int(props.get("faults", 0)),
            }
        )


GROUPS = {
    "test_codec_fuzz.py": "codec fuzzing (hypothesis)",
    "test_ciphertexts.py": "hostile ciphertexts in the protocols",
    "test_peers.py": "hostile peers, floods, CURVE",
    "test_faults.py": "SIGKILL / stall / freeze, multi-process",
    "test_overflow.py": "packing at the bit-budget edge",
    "test_audit.py": "safe-defaults audit",
}


def run_suite(fuzz_examples: int) -> tuple[list[dict], float]:
    os.environ["HEFL_FUZZ_EXAMPLES"] = str(fuzz_examples)
    collector = Collector()
    t0 = time.monotonic()
    pytest.main(
        [str(ROOT / "tests" / "adversarial"), "-q", "-p", "no:cacheprovider", "-o",
         "addopts=--import-mode=importlib"],
        plugins=[collector],
    )  # fmt: skip
    return collector.records, time.monotonic() - t0


def _mutate(blob: bytes, rng: random.Random) -> bytes:
    data = bytearray(blob)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        pos = rng.randrange(len(data) + 1)
        if op < 0.4 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op < 0.6:
            data[pos:pos] = os.urandom(rng.randint(1, 8))
        elif op < 0.8 and data:
            del data[pos : pos + rng.randint(1, 8)]
        else:  # a huge declared length
            data[pos:pos] = rng.choice([b"\xc6", b"\xdb", b"\xdd", b"\xdf", b"\xc9"]) + (
                rng.randrange(2**32).to_bytes(4, "big")
            )
    return bytes(data)


def fuzz_codec(seconds: float) -> dict:
    """Mutation fuzzing of hefl.codec.loads for ``seconds``: only CodecError may escape."""
    import numpy as np

    import hefl
    from hefl.crypto import generate_keypair
    from hefl.errors import CodecError

    pk, _ = generate_keypair(512, allow_insecure=True)
    seeds = [
        hefl.codec.dumps(obj)
        for obj in (
            None,
            [1, 2**70, -(2**90), 1.5, "x", b"y"],
            {"a": (1, (2, [3])), 4: {"b": None}},
            np.arange(12, dtype=np.int64).reshape(3, 4),
            [np.zeros(3, np.float32), (np.ones(2, np.uint8),)],
            pk.encrypt([1, 2, 3]),
            {"pk": pk, "cv": pk.encrypt([0])},
        )
    ]
    rng = random.Random(0)
    counts = {"inputs": 0, "codec_error": 0, "decoded": 0, "crash": 0, "hang": 0}
    crashes: list[str] = []
    slowest = 0.0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        blob = (
            os.urandom(rng.randint(0, 200))
            if rng.random() < 0.2
            else _mutate(rng.choice(seeds), rng)
        )
        t = time.perf_counter()
        try:
            hefl.codec.loads(blob)
            counts["decoded"] += 1
        except CodecError:
            counts["codec_error"] += 1
        except Exception as exc:
            counts["crash"] += 1
            if len(crashes) < 5:
                crashes.append(f"{type(exc).__name__}: {exc} for {blob[:40]!r}")
        took = time.perf_counter() - t
        slowest = max(slowest, took)
        counts["hang"] += took > 1.0
        counts["inputs"] += 1
    counts["slowest_ms"] = round(slowest * 1e3, 2)
    counts["rss_growth_mb"] = round(
        (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1
    )
    counts["crash_examples"] = crashes
    return counts


def table(records: list[dict], fuzz: dict, suite_seconds: float) -> str:
    head = f"{'group':44s} {'tests':>5} {'inputs':>8} {'faults':>6} {'hefl err':>8} " \
           f"{'crash':>5} {'hang':>4} {'wrong':>5}"  # fmt: skip
    lines = [head, "-" * len(head)]
    total = {"tests": 0, "inputs": 0, "faults": 0, "hefl error": 0, "crash": 0, "hang": 0,
             "wrong": 0}  # fmt: skip
    for file, label in GROUPS.items():
        rs = [r for r in records if r["file"] == file]
        row = {
            "tests": len(rs),
            "inputs": sum(r["inputs"] for r in rs),
            "faults": sum(r["faults"] for r in rs),
            **{o: sum(r["outcome"] == o for r in rs) for o in ("hefl error", "crash", "hang",
                                                              "wrong")},
        }  # fmt: skip
        for k in total:
            total[k] += row[k]
        lines.append(
            f"{label:44s} {row['tests']:>5} {row['inputs']:>8} {row['faults']:>6} "
            f"{row['hefl error']:>8} {row['crash']:>5} {row['hang']:>4} {row['wrong']:>5}"
        )
    lines.append(
        f"{'codec mutation fuzz (' + str(int(fuzz['seconds'])) + ' s)':44s} {'-':>5} "
        f"{fuzz['inputs']:>8} {'-':>6} {fuzz['codec_error'] + fuzz['decoded']:>8} "
        f"{fuzz['crash']:>5} {fuzz['hang']:>4} {'-':>5}"
    )
    lines.append("-" * len(head))
    lines.append(
        f"{'adversarial suite total (' + f'{suite_seconds:.0f} s)':44s} {total['tests']:>5} "
        f"{total['inputs']:>8} {total['faults']:>6} {total['hefl error']:>8} "
        f"{total['crash']:>5} {total['hang']:>4} {total['wrong']:>5}"
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--fuzz-examples",
        type=int,
        default=1500,
        help="hypothesis examples per codec property (the suite uses 150)",
    )
    ap.add_argument("--fuzz-seconds", type=float, default=60.0,
                    help="seconds of mutation fuzzing of hefl.codec.loads")  # fmt: skip
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    records, suite_seconds = run_suite(args.fuzz_examples)
    fuzz = fuzz_codec(args.fuzz_seconds)
    fuzz["seconds"] = args.fuzz_seconds
    text = table(records, fuzz, suite_seconds)
    print()
    print(text)
    for r in records:
        if r["outcome"] != "hefl error":
            print(f"  {r['outcome']}: {r['file']}::{r['test']}")
    for c in fuzz["crash_examples"]:
        print(f"  fuzz crash: {c}")
    print(f"\nfuzz: slowest input {fuzz['slowest_ms']} ms, max RSS growth "
          f"{fuzz['rss_growth_mb']} MB")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": "python benchmarks/hardening.py " + " ".join(sys.argv[1:]),
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                "fuzz_examples_per_property": args.fuzz_examples,
                "suite_seconds": round(suite_seconds, 1),
                "tests": records,
                "codec_mutation_fuzz": fuzz,
                "table": text,
            },
            indent=1,
        )
    )
    bad = [r for r in records if r["outcome"] != "hefl error"]
    return 1 if bad or fuzz["crash"] or fuzz["hang"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
