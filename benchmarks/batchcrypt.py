"""BatchCrypt benchmark: the paper's FMNIST setting, hefl against per-value phe, CKKS and plaintext.

Setting: 784-128-10 MLP (101,770 parameters), Fashion-MNIST split among 10 clients, 2048-bit
Paillier keys. For each scheme one round is split into encrypt / transfer / aggregate /
decrypt / decode, with bytes on the wire per client, and projected to links of 10 Mb/s and
1 Gb/s between sites. Accuracy after the same number of rounds is compared for plaintext
FedAvg and hefl.

- plaintext, hefl r=16 / r=8 with and without shared decryption: full federated rounds
  (all parties in this process over the in-process transport, each party's crypto in the
  shared process pool), measured.
- per-value phe (python-paillier, one ciphertext per value, as FATE does): a full round would
  take tens of minutes per client, so ``--phe-values`` values are encrypted, added and
  decrypted with phe and the per-value costs are extrapolated to 101,770 values (said so in
  the table).
- CKKS through TenSEAL as NVIDIA FLARE's HE filters use it (poly_modulus_degree 8192,
  coeff_mod_bit_sizes [60, 40, 40, 60], scale 2^40, 4096-slot vectors): one full round of
  crypto measured (encrypt + serialize, 10-way add, decrypt); skipped if TenSEAL is missing.

Run: python benchmarks/batchcrypt.py [--quick] [--rounds 20] (see --help).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from hefl.protocols.batchcrypt import BatchCryptConfig, train
from hefl.protocols.batchcrypt.models import MLP

RESULTS = Path(__file__).resolve().parent / "results" / "batchcrypt.json"
N_PARAMS = 101_770


def link_seconds(nbytes: float, mbps: float) -> float:
    return nbytes * 8 / (mbps * 1e6)


def row_from_training(name: str, res, note: str = "") -> dict:
    """Per-round means (skipping the first round, which pays key setup and pool start-up)."""
    rounds = res.rounds[1:] if len(res.rounds) > 1 else res.rounds
    mean = {k: statistics.median([r[k] for r in rounds]) for k in rounds[0]}
    client_cpu = mean["encrypt"] + mean["decrypt"] + mean["decode"]
    return {
        "scheme": name,
        "encrypt_s": mean["encrypt"],
        # wall minus own compute in this one-machine run: loopback transfer plus waiting for
        # the other parties' CPU (10 clients share 2 cores here), not a network figure
        "wait_s": mean["transfer"],
        "aggregate_s": mean["aggregate"],
        "decrypt_s": mean["decrypt"],
        "decode_s": mean["decode"],
        "client_cpu_s": client_cpu,
        "crypto_s": mean["encrypt"] + mean["decrypt"] + mean["aggregate"],
        "round_wall_s": mean["wall"],
        "client_bytes": mean["client_bytes"],
        "accuracy": res.final_accuracy,
        "rounds": len(res.rounds),
        "note": note,
    }


def bench_phe(n_values: int, n_clients: int, key_bits: int) -> dict:
    """Per-value python-paillier, measured on n_values and extrapolated to N_PARAMS."""
    import phe

    pub, priv = phe.generate_paillier_keypair(n_length=key_bits)
    rng = np.random.default_rng(0)
    xs = rng.normal(0, 0.01, size=n_values)
    t0 = time.perf_counter()
    enc = [pub.encrypt(float(v)) for v in xs]
    t_enc = (time.perf_counter() - t0) / n_values
    others = [pub.encrypt(float(v)) for v in xs[:50]]
    t0 = time.perf_counter()
    for _ in range(n_clients - 1):
        for a, b in zip(enc[:50], others, strict=True):
            _ = a + b
    t_add = (time.perf_counter() - t0) / (50 * (n_clients - 1))
    t0 = time.perf_counter()
    for c in enc:
        priv.decrypt(c)
    t_dec = (time.perf_counter() - t0) / n_values
    # Bytes: phe/FATE ship each ciphertext as a 2·|n|-bit integer (512 B at 2048 bits) plus an
    # exponent; count only the ciphertext (favours phe).
    ct_bytes = 2 * key_bits // 8
    return {
        "scheme": "per-value phe (extrapolated)",
        "encrypt_s": t_enc * N_PARAMS,
        "wait_s": float("nan"),
        "aggregate_s": t_add * N_PARAMS * (n_clients - 1),
        "decrypt_s": t_dec * N_PARAMS,
        "decode_s": 0.0,
        "client_cpu_s": (t_enc + t_dec) * N_PARAMS,
        "crypto_s": (t_enc + t_dec) * N_PARAMS + t_add * N_PARAMS * (n_clients - 1),
        "round_wall_s": float("nan"),
        "client_bytes": 2 * ct_bytes * N_PARAMS,
        "accuracy": float("nan"),
        "rounds": 0,
        "note": f"measured on {n_values} values (enc {t_enc * 1e3:.2f} ms, dec "
        f"{t_dec * 1e3:.2f} ms, add {t_add * 1e6:.0f} us per value), x{N_PARAMS}",
    }


def bench_ckks(n_clients: int) -> dict | None:
    """TenSEAL CKKS as NVIDIA FLARE configures it: one round of crypto for N_PARAMS values."""
    try:
        import tenseal as ts
    except ImportError:
        print("TenSEAL not installed: skipping CKKS (pip install tenseal)", file=sys.stderr)
        return None
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40, 60]
    )
    ctx.global_scale = 2**40
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.01, size=N_PARAMS)
    slots = 4096
    t0 = time.perf_counter()
    blobs = [ts.ckks_vector(ctx, x[i : i + slots]).serialize() for i in range(0, N_PARAMS, slots)]
    t_enc = time.perf_counter() - t0
    up = sum(len(b) for b in blobs)
    t0 = time.perf_counter()
    acc = [ts.ckks_vector_from(ctx, b) for b in blobs]
    for _ in range(n_clients - 1):  # the aggregator adds the other clients' vectors
        acc = [a + ts.ckks_vector_from(ctx, b) for a, b in zip(acc, blobs, strict=True)]
    out = [a.serialize() for a in acc]
    t_agg = time.perf_counter() - t0
    down = sum(len(b) for b in out)
    t0 = time.perf_counter()
    total = np.concatenate([np.array(ts.ckks_vector_from(ctx, b).decrypt()) for b in out])
    t_dec = time.perf_counter() - t0
    err = float(np.abs(total[:N_PARAMS] - n_clients * x).max())
    return {
        "scheme": "CKKS (TenSEAL, FLARE settings)",
        "encrypt_s": t_enc,
        "wait_s": float("nan"),
        "aggregate_s": t_agg,
        "decrypt_s": t_dec,
        "decode_s": 0.0,
        "client_cpu_s": t_enc + t_dec,
        "crypto_s": t_enc + t_dec + t_agg,
        "round_wall_s": float("nan"),
        "client_bytes": float(up + down),
        "accuracy": float("nan"),
        "rounds": 0,
        "note": f"{len(blobs)} vectors of {slots} slots; max abs error {err:.1e}",
    }


def bench_encrypt_rate(key_bits: int, n_clients: int, repeats: int = 3) -> dict:
    """One client's quantize + pack + encrypt of all N_PARAMS values on one core, isolated.

    The same functions the client role runs in its pool workers; CPU seconds, best of
    ``repeats`` after a warm-up that builds the obfuscator tables.
    """
    from hefl.crypto import generate_keypair, plan_slots
    from hefl.protocols.batchcrypt import work
    from hefl.protocols.batchcrypt.quantize import quantize

    pk, sk = generate_keypair(key_bits, allow_insecure=key_bits < 2048)
    layout = plan_slots(pk, 16, n_clients)
    x = np.random.default_rng(0).normal(0, 0.01, N_PARAMS)
    work.encrypt_packed(sk, layout, np.zeros(layout.slots_per_plaintext, np.int64), False)
    out = {}
    for short in (False, True):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            q = quantize(x, 0.06, 16)
            work.encrypt_packed(sk, layout, q, short)
            best = min(best, time.process_time() - t0)
        out["short_exponent" if short else "default"] = N_PARAMS / best
    return out


def project(row: dict) -> None:
    """Transfer and round time with 10 Mb/s and 1 Gb/s links between sites.

    Each client has its own link to the aggregator and to the other clients; a round is the
    client's compute plus the aggregator's plus the client's bytes (both ways) over its link.
    """
    compute = row["client_cpu_s"] + row["aggregate_s"]
    for label, mbps in (("10Mbps", 10.0), ("1Gbps", 1000.0)):
        row[f"transfer_{label}_s"] = link_seconds(row["client_bytes"], mbps)
        row[f"round_{label}_s"] = compute + row[f"transfer_{label}_s"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small run (1024-bit keys, few rounds)")
    ap.add_argument("--rounds", type=int, default=20, help="rounds for the accuracy runs")
    ap.add_argument("--timing-rounds", type=int, default=3, help="rounds for timing-only runs")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--phe-values", type=int, default=300)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--table", type=Path, help="only re-print the table of a results JSON")
    args = ap.parse_args(argv)
    if args.table:
        saved = json.loads(args.table.read_text())
        for row in saved["rows"]:
            row.setdefault("wait_s", row.pop("transfer_s", float("nan")))
            project(row)
        print_table(saved["rows"], saved["ratios"])
        return 0
    if args.quick:
        args.rounds, args.timing_rounds, args.phe_values, args.key_bits = 3, 2, 50, 1024
    assert MLP([784, 128, 10]).n_params == N_PARAMS
    k = args.clients
    base = BatchCryptConfig(
        n_clients=k, key_bits=args.key_bits, allow_insecure=args.key_bits < 2048
    )
    hyper = {"model": "mlp", "dataset": "fmnist", "lr": 0.1, "local_steps": 10, "batch_size": 64}
    rows = []

    def run(name: str, cfg: BatchCryptConfig, rounds: int, note: str = "") -> dict:
        print(f"running {name} ({rounds} rounds) ...", file=sys.stderr, flush=True)
        res = train(cfg, rounds=rounds, **hyper)
        row = row_from_training(name, res, note)
        row["accuracy_per_round"] = res.accuracy
        rows.append(row)
        return row

    plain = run("plaintext FedAvg", base.with_(mode="plain"), args.rounds)
    r16 = run("hefl r=16, shared decryption", base, args.rounds)
    run("hefl r=16, no shared decryption", base.with_(shared_decryption=False), args.timing_rounds)
    run("hefl r=8, shared decryption", base.with_(bits=8), args.timing_rounds)
    run(
        "hefl r=8, no shared decryption",
        base.with_(bits=8, shared_decryption=False),
        args.timing_rounds,
    )
    print("measuring per-value phe ...", file=sys.stderr, flush=True)
    phe_row = bench_phe(args.phe_values, k, args.key_bits)
    rows.append(phe_row)
    print("measuring CKKS ...", file=sys.stderr, flush=True)
    ckks = bench_ckks(k)
    if ckks is not None:
        rows.append(ckks)
    for row in rows:
        project(row)
    print("measuring one core's encryption rate ...", file=sys.stderr, flush=True)
    rate = bench_encrypt_rate(args.key_bits, k)

    ratios = {
        "crypto_vs_phe": phe_row["crypto_s"] / r16["crypto_s"],
        "bytes_vs_phe": phe_row["client_bytes"] / r16["client_bytes"],
        "bytes_vs_ckks": (ckks["client_bytes"] / r16["client_bytes"]) if ckks else None,
        "accuracy_gap_points": 100 * (plain["accuracy"] - r16["accuracy"]),
        "values_encrypted_per_s_per_core": N_PARAMS / r16["encrypt_s"],
        "values_encrypted_per_s_one_core_isolated": rate["default"],
        "values_encrypted_per_s_one_core_short_exponent": rate["short_exponent"],
        "client_cpu_s_r16_shared": r16["client_cpu_s"],
    }
    print_table(rows, ratios)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "setting": {
                    "params": N_PARAMS,
                    "clients": k,
                    "key_bits": args.key_bits,
                    **hyper,
                    "accuracy_rounds": args.rounds,
                    "timing_rounds": args.timing_rounds,
                },
                "machine": {
                    "python": platform.python_version(),
                    "cpu": platform.processor() or platform.machine(),
                    "cores": __import__("os").cpu_count(),
                },
                "command": " ".join(
                    ["python", "benchmarks/batchcrypt.py", *(argv or sys.argv[1:])]
                ),
                "rows": rows,
                "ratios": ratios,
            },
            indent=2,
            default=float,
        )
    )
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def print_table(rows: list[dict], ratios: dict) -> None:
    cols = [
        ("scheme", "{:<34}"), ("encrypt_s", "{:>9.3f}"), ("aggregate_s", "{:>9.3f}"),
        ("decrypt_s", "{:>9.3f}"), ("decode_s", "{:>8.3f}"), ("client_cpu_s", "{:>9.3f}"),
        ("client_bytes", "{:>12,.0f}"), ("transfer_10Mbps_s", "{:>9.2f}"),
        ("transfer_1Gbps_s", "{:>9.3f}"), ("round_10Mbps_s", "{:>9.2f}"),
        ("round_1Gbps_s", "{:>9.2f}"), ("round_wall_s", "{:>8.2f}"), ("accuracy", "{:>7.4f}"),
    ]  # fmt: skip
    print(" | ".join(name for name, _ in cols))
    print("|".join("---" for _ in cols))
    for row in rows:
        print(" | ".join(fmt.format(row[name]) for name, fmt in cols))
    for row in rows:
        if row["note"]:
            print(f"  {row['scheme']}: {row['note']}")
    print("ratios:", json.dumps(ratios, indent=1, default=float))


if __name__ == "__main__":
    raise SystemExit(main())
