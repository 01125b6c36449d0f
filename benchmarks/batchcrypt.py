"""BatchCrypt benchmark: hefl against per-value phe, CKKS and plaintext, on two model sizes.

Setting: Fashion-MNIST split among 10 clients, FedAvg, 2048-bit Paillier keys, two models:
``mlp`` (784-128-10, 101,770 parameters, the paper's FMNIST model) and ``mlp-wide``
(784-1500-10, 1,192,510 parameters, the size of the paper's CIFAR-10 CNN). For each model and
scheme, all in one run, per client per round: online client CPU, background client CPU,
aggregator CPU, bytes on the wire, round time projected to links of 100 Mb/s, 1 Gb/s and
10 Gb/s, and test accuracy after the same number of rounds.

- plaintext FedAvg and hefl (default; short exponents; background randomness; background
  randomness with short exponents): full federated runs (all parties in one child process
  over the in-process transport, crypto in its 2-worker process pool), measured. Each run
  is its own child process, so its peak RSS is its own.
- CKKS through TenSEAL as NVIDIA FLARE's HE filters use it (poly_modulus_degree 8192,
  coeff_mod_bit_sizes [60, 40, 40, 60], scale 2^40, 4096-slot vectors): the same FedAvg
  clients, with every round's update encrypted, serialized, summed, decrypted for real.
- per-value phe (python-paillier, one ciphertext per value, as FATE does): a round would take
  hours, so ``--phe-values`` values are encrypted, added and decrypted and the per-value costs
  multiplied by the model's size (said so in the table).

CPU is process CPU time (``time.process_time`` of the worker or thread that did the work), so
other load on a shared machine inflates it far less than wall time; figures are medians over
the rounds after the first. Run: python benchmarks/batchcrypt.py [--quick] (see --help).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "batchcrypt.json"
MODELS = {"mlp": 128, "mlp-wide": 1500}  # hidden width of the 784-h-10 MLP
LINKS = {"100Mbps": 100.0, "1Gbps": 1000.0, "10Gbps": 10000.0}
CKKS_SLOTS = 4096
HEFL_SCHEMES = {
    "hefl default": {},
    "hefl short exponents": {"short_exponent": True},
    "hefl background randomness": {"background_randomness": "wait"},
    "hefl background + short exponents": {"background_randomness": "wait", "short_exponent": True},
}


def n_params(hidden: int) -> int:
    return 784 * hidden + hidden + hidden * 10 + 10


def _rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def _median(rounds: list[dict], key: str) -> float:
    rows = rounds[1:] if len(rounds) > 1 else rounds  # round 0 pays key setup and tables
    return float(statistics.median([r.get(key, 0.0) for r in rows]))


def run_hefl(cfg_kwargs: dict, spec_kwargs: dict) -> dict:
    """One federated training in this (child) process; the figures of its rounds."""
    from hefl.protocols.batchcrypt import BatchCryptConfig, train
    from hefl.protocols.batchcrypt.training import TrainSpec

    res = train(BatchCryptConfig(**cfg_kwargs), spec=TrainSpec(**spec_kwargs))
    r = res.rounds
    online = [x["encrypt"] + x["decrypt"] + x["decode"] for x in r]
    return {
        "online_cpu_s": _median([{"v": v} for v in online], "v"),
        "encrypt_s": _median(r, "encrypt"),
        "decrypt_s": _median(r, "decrypt"),
        "decode_s": _median(r, "decode"),
        "background_cpu_s": _median(r, "background"),
        "randomness_wait_s": _median(r, "randomness_wait"),
        "obfuscators_online": _median(r, "obfuscators_online"),
        "aggregator_cpu_s": _median(r, "aggregate"),
        "client_bytes": _median(r, "client_bytes"),
        "round_wall_s": _median(r, "wall"),
        "accuracy": res.final_accuracy,
        "accuracy_per_round": res.accuracy,
        # this process: every party's state (the pool workers' own peak is not measurable
        # here: Linux carries a parent's peak RSS into a spawned child's ru_maxrss)
        "peak_rss_mb": _rss_mb(resource.RUSAGE_SELF),
    }


def run_ckks(spec_kwargs: dict, k: int) -> dict:
    """FedAvg with every round's aggregation through TenSEAL CKKS (FLARE's settings)."""
    import tenseal as ts

    from hefl.protocols.batchcrypt.training import FedTrainer, TrainSpec

    spec = TrainSpec(**spec_kwargs)
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40, 60]
    )
    ctx.global_scale = 2**40
    trainers = [FedTrainer(spec, i, k, evaluate=i == 0) for i in range(k)]
    rounds, clock = [], time.process_time
    for t in range(spec.rounds):
        enc, dec, uploads = [], [], []
        for tr in trainers:
            x = tr.update(t)
            c0 = clock()
            uploads.append(
                [
                    ts.ckks_vector(ctx, x[i : i + CKKS_SLOTS]).serialize()
                    for i in range(0, len(x), CKKS_SLOTS)
                ]
            )
            enc.append(clock() - c0)
        c0 = clock()  # the aggregator: deserialize, add, serialize
        acc = [ts.ckks_vector_from(ctx, b) for b in uploads[0]]
        for blobs in uploads[1:]:
            acc = [a + ts.ckks_vector_from(ctx, b) for a, b in zip(acc, blobs, strict=True)]
        down = [a.serialize() for a in acc]
        agg = clock() - c0
        for tr in trainers:
            c0 = clock()
            total = np.concatenate([ts.ckks_vector_from(ctx, b).decrypt() for b in down])
            dec.append(clock() - c0)
            tr.receive(t, total[: len(x)], k)
        nbytes = sum(map(len, uploads[0])) + sum(map(len, down))
        rounds.append(
            {
                "enc": float(np.median(enc)),
                "dec": float(np.median(dec)),
                "agg": agg,
                "bytes": float(nbytes),
            }
        )
    first = trainers[0]
    return {
        "online_cpu_s": _median(rounds, "enc") + _median(rounds, "dec"),
        "encrypt_s": _median(rounds, "enc"),
        "decrypt_s": _median(rounds, "dec"),
        "decode_s": 0.0,
        "background_cpu_s": 0.0,
        "aggregator_cpu_s": _median(rounds, "agg"),
        "client_bytes": _median(rounds, "bytes"),
        "accuracy": first.accuracy[-1],
        "accuracy_per_round": first.accuracy,
        "peak_rss_mb": _rss_mb(resource.RUSAGE_SELF),
    }


def run_phe(n_values: int, params: int, k: int, key_bits: int) -> dict:
    """Per-value python-paillier, measured on n_values and multiplied up to ``params``."""
    import phe

    pub, priv = phe.generate_paillier_keypair(n_length=key_bits)
    xs = np.random.default_rng(0).normal(0, 0.01, size=n_values)
    c0 = time.process_time()
    enc = [pub.encrypt(float(v)) for v in xs]
    t_enc = (time.process_time() - c0) / n_values
    c0 = time.process_time()
    for _ in range(k - 1):
        for a, b in zip(enc, enc, strict=True):
            _ = a + b
    t_add = (time.process_time() - c0) / (n_values * max(1, k - 1))
    c0 = time.process_time()
    for c in enc:
        priv.decrypt(c)
    t_dec = (time.process_time() - c0) / n_values
    return {
        "online_cpu_s": (t_enc + t_dec) * params,
        "encrypt_s": t_enc * params,
        "decrypt_s": t_dec * params,
        "decode_s": 0.0,
        "background_cpu_s": 0.0,
        "aggregator_cpu_s": t_add * params * max(1, k - 1),
        # each value a 2·|n|-bit ciphertext up and down (exponents not counted: favours phe)
        "client_bytes": 2.0 * (2 * key_bits // 8) * params,
        "accuracy": float("nan"),
        "note": f"measured on {n_values} values (enc {t_enc * 1e3:.2f} ms, dec "
        f"{t_dec * 1e3:.2f} ms, add {t_add * 1e6:.0f} us per value), x{params:,}",
    }


def project(row: dict) -> None:
    """Round time per link speed: online client CPU + aggregator CPU + the client's bytes
    over its own link. Background CPU is left out: it runs while the client trains."""
    compute = row["online_cpu_s"] + row["aggregator_cpu_s"]
    for label, mbps in LINKS.items():
        row[f"round_{label}_s"] = compute + row["client_bytes"] * 8 / (mbps * 1e6)


def _child(fn: Any, *args: Any) -> dict:
    """Run ``fn(*args)`` in a fresh process: its own CPU, memory peak and process pool."""
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        out: dict = pool.submit(fn, *args).result()
    return out


def bench_model(model: str, args: argparse.Namespace, schemes: list[str]) -> list[dict]:
    hidden, k = MODELS[model], args.clients
    params = n_params(hidden)
    rounds = args.rounds if model == "mlp" else args.wide_rounds
    spec = {
        "dataset": "fmnist",
        "model": "mlp",
        "hidden": hidden,
        "rounds": rounds,
        "lr": 0.1,
        "local_steps": 10,
        "batch_size": 64,
    }
    base = {"n_clients": k, "key_bits": args.key_bits, "allow_insecure": args.key_bits < 2048}
    rows = []

    def add(name: str, row: dict) -> None:
        row.update(model=model, params=params, scheme=name, rounds=rounds)
        row.setdefault("note", "")
        project(row)
        rows.append(row)
        print(
            f"  {model} {name}: online {row['online_cpu_s']:.3f} s, background "
            f"{row['background_cpu_s']:.3f} s, acc {row['accuracy']:.4f}",
            file=sys.stderr,
            flush=True,
        )

    print(f"{model} ({params:,} parameters, {rounds} rounds):", file=sys.stderr, flush=True)
    if "plaintext" in schemes:
        add("plaintext FedAvg", _child(run_hefl, {**base, "mode": "plain"}, spec))
    for name, extra in HEFL_SCHEMES.items():
        if name in schemes:
            add(name, _child(run_hefl, {**base, **extra}, spec))
    if "CKKS" in schemes:
        try:
            add("CKKS (TenSEAL, FLARE settings)", _child(run_ckks, spec, k))
        except ImportError:
            print("TenSEAL not installed: no CKKS row (pip install tenseal)", file=sys.stderr)
    if "phe" in schemes:
        add("per-value phe (extrapolated)", run_phe(args.phe_values, params, k, args.key_bits))
    return rows


def ratios(rows: list[dict]) -> dict:
    """Per model: hefl rows against CKKS and plaintext."""
    out: dict[str, Any] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        by = {r["scheme"]: r for r in rows if r["model"] == model}
        ckks, plain = by.get("CKKS (TenSEAL, FLARE settings)"), by.get("plaintext FedAvg")
        for name, row in by.items():
            if not name.startswith("hefl"):
                continue
            entry: dict[str, float] = {}
            if ckks:
                entry["online_cpu_vs_ckks"] = row["online_cpu_s"] / ckks["online_cpu_s"]
                for label in LINKS:
                    entry[f"round_{label}_vs_ckks"] = (
                        row[f"round_{label}_s"] / ckks[f"round_{label}_s"]
                    )
                entry["bytes_ckks_over_hefl"] = ckks["client_bytes"] / row["client_bytes"]
            if plain:
                entry["accuracy_gap_points"] = 100 * (plain["accuracy"] - row["accuracy"])
            out[f"{model}: {name}"] = entry
    return out


COLUMNS = [
    ("model", "{:<8}"),
    ("scheme", "{:<34}"),
    ("online_cpu_s", "{:>8.3f}"),
    ("background_cpu_s", "{:>8.3f}"),
    ("aggregator_cpu_s", "{:>8.3f}"),
    ("client_bytes", "{:>13,.0f}"),
    ("round_100Mbps_s", "{:>8.2f}"),
    ("round_1Gbps_s", "{:>8.3f}"),
    ("round_10Gbps_s", "{:>8.3f}"),
    ("accuracy", "{:>7.4f}"),
    ("peak_rss_mb", "{:>7.0f}"),
]


def print_table(rows: list[dict], ratio: dict) -> None:
    print(" | ".join(name for name, _ in COLUMNS))
    print("|".join("---" for _ in COLUMNS))
    for row in rows:
        print(" | ".join(fmt.format(row.get(name, float("nan"))) for name, fmt in COLUMNS))
    for row in rows:
        if row.get("note"):
            print(f"  {row['model']} {row['scheme']}: {row['note']}")
    print("ratios:", json.dumps(ratio, indent=1, default=float))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smoke test: 1024-bit keys, 3 rounds")
    ap.add_argument("--rounds", type=int, default=8, help="rounds of the mlp runs")
    ap.add_argument("--wide-rounds", type=int, default=3, help="rounds of the mlp-wide runs")
    ap.add_argument("--models", default="mlp,mlp-wide", help="comma-separated: mlp,mlp-wide")
    every = ",".join(["plaintext", "CKKS", "phe", *HEFL_SCHEMES])
    ap.add_argument("--schemes", default=every, help="comma-separated subset of the mlp rows")
    ap.add_argument(
        "--wide-schemes",
        default=every.replace(",hefl background + short exponents", ""),
        help="comma-separated subset of the mlp-wide rows (default: all but background + short)",
    )
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--phe-values", type=int, default=200)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--table", type=Path, help="only re-print the table of a results JSON")
    args = ap.parse_args(argv)
    if args.table:
        saved = json.loads(args.table.read_text())
        print_table(saved["rows"], saved["ratios"])
        return 0
    if args.quick:
        args.rounds, args.wide_rounds, args.phe_values, args.key_bits = 3, 2, 20, 1024
    start, load = time.time(), os.getloadavg()
    rows = []
    for model in (m.strip() for m in args.models.split(",")):
        chosen = args.schemes if model == "mlp" else args.wide_schemes
        rows += bench_model(model, args, [s.strip() for s in chosen.split(",")])
    ratio = ratios(rows)
    print_table(rows, ratio)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    setting = {
        "clients": args.clients,
        "key_bits": args.key_bits,
        "dataset": "fmnist",
        "lr": 0.1,
        "local_steps": 10,
        "batch_size": 64,
        "bits": 16,
    }
    machine = {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_at_start": load,
        "load_average_at_end": os.getloadavg(),
        "seconds": time.time() - start,
    }
    command = " ".join(["python", "benchmarks/batchcrypt.py", *(argv or sys.argv[1:])])
    out = {"setting": setting, "machine": machine, "command": command, "rows": rows}
    args.out.write_text(json.dumps({**out, "ratios": ratio}, indent=2, default=float))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
