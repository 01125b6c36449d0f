"""Benchmark: hefl.crypto against phe (python-paillier), and HEU's Z-Paillier when installed.

phe and hefl run on the same 2048-bit key and the same vectors in one run, interleaved round by
round (the machine is shared, so absolute times drift: compare the ratios). HEU (``sf-heu``)
cannot import a foreign key, so it uses its own key of the same size.

    python benchmarks/crypto.py            # full run (~2-3 minutes)
    python benchmarks/crypto.py --quick    # smaller vectors, fewer rounds

Prints a table (µs per value, speed-up over phe) and writes benchmarks/results/crypto.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gmpy2
import numpy as np
import phe

from hefl.crypto import CipherVector, ObfuscatorPool, PrivateKey, PublicKey
from hefl.crypto import _native as native
from hefl.crypto._obfuscation import djn_table

RESULTS = Path(__file__).resolve().parent / "results" / "crypto.json"


def _time(fn: Callable[[], object], count: int) -> float:
    """Microseconds per value for one call of ``fn`` that processes ``count`` values."""
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) / count * 1e6


def _switched_off(switch: str, fn: Callable[[], object]) -> object:
    """Run ``fn`` with one of hefl's kernels off: ``"AVAILABLE"`` (the whole native kernel:
    pure-Python gmpy2 loops) or ``"IFMA"`` (its AVX-512 IFMA paths: GMP products, libcrypto)."""
    saved = getattr(native, switch)
    setattr(native, switch, False)
    try:
        return fn()
    finally:
        setattr(native, switch, saved)


def _pure_python(fn: Callable[[], object]) -> object:
    """Run ``fn`` with hefl's native kernel switched off (its pure-Python gmpy2 loops)."""
    return _switched_off("AVAILABLE", fn)


def _no_ifma(fn: Callable[[], object]) -> object:
    """Run ``fn`` with the native kernel's IFMA paths off (GMP products, libcrypto)."""
    return _switched_off("IFMA", fn)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _heu_peer(n_values: int, xs: list[int], rounds: int) -> dict[str, float] | None:
    """Time HEU's Z-Paillier numpy batch API on one thread; None if sf-heu is missing."""
    try:
        from heu import numpy as hnp
        from heu import phe as hphe
    except ImportError:
        return None
    kit = hnp.setup(hphe.SchemaType.ZPaillier, 2048)
    enc_ = kit.integer_encoder()
    encryptor, decryptor, evaluator = kit.encryptor(), kit.decryptor(), kit.evaluator()
    pt = kit.array(np.array(xs, dtype=np.int64), enc_)
    ks = kit.array(np.array(xs, dtype=np.int64) % 1000 + 1, enc_)
    times: dict[str, list[float]] = {
        k: [] for k in ("encrypt_pk", "decrypt", "add", "scalar_mul", "serialize")
    }
    for _ in range(rounds):
        times["encrypt_pk"].append(_time(lambda: encryptor.encrypt(pt), n_values))
        ct = encryptor.encrypt(pt)
        times["decrypt"].append(_time(lambda ct=ct: decryptor.decrypt(ct), n_values))
        times["add"].append(_time(lambda ct=ct: evaluator.add(ct, ct), n_values))
        times["scalar_mul"].append(_time(lambda ct=ct: evaluator.mul(ct, ks), n_values))
        times["serialize"].append(_time(lambda ct=ct: ct.serialize(), n_values))
    out = {k: statistics.median(v) for k, v in times.items()}
    assert (decryptor.decrypt(encryptor.encrypt(pt)).to_numpy(enc_) == np.array(xs)).all()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer values and rounds")
    ap.add_argument("--values", type=int, default=None, help="values per vector")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (median)")
    ap.add_argument("--no-heu", action="store_true", help="skip the HEU peer")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    n_values = args.values or (40 if args.quick else 200)
    rounds = args.rounds or (3 if args.quick else 5)

    print(f"keygen (phe, 2048 bits); {n_values} values x {rounds} interleaved rounds", flush=True)
    ppk, psk = phe.generate_paillier_keypair(n_length=2048)
    pk, sk = PublicKey.from_phe(ppk), PrivateKey.from_phe(psk)

    # one-off precomputation, reported separately (it happens once per process and key)
    t = time.perf_counter()
    djn_table(pk.n)
    table_s = time.perf_counter() - t
    t = time.perf_counter()
    djn_table(pk.n, method="djn-short")
    short_table_s = time.perf_counter() - t
    t = time.perf_counter()
    sk.obfuscators(1)
    crt_table_s = time.perf_counter() - t
    if native.AVAILABLE:  # the pure-Python loops' own tables, for the comparison rows
        _pure_python(lambda: (djn_table(pk.n), sk.obfuscators(1)))
    if native.IFMA:  # and the GMP-product tables
        _no_ifma(lambda: (djn_table(pk.n), sk.obfuscators(1)))

    rng = np.random.default_rng(secrets.randbits(64))
    xs = rng.integers(-(2**31), 2**31, size=n_values).tolist()
    ys = rng.integers(-(2**31), 2**31, size=n_values).tolist()
    ks = rng.integers(-(2**31), 2**31, size=n_values).tolist()
    groups = rng.integers(0, 32, size=n_values)

    # warm obfuscator pool: filled in the background by a worker process, then timed on the
    # critical path only
    pool = ObfuscatorPool(pk, capacity=n_values * rounds, chunk=64, workers=1)
    t = time.perf_counter()
    pool.wait(timeout=3600)
    pool_fill_s = time.perf_counter() - t

    ops = [
        "encrypt_pk",
        "encrypt_keyholder",
        "encrypt_pk_python",
        "encrypt_keyholder_python",
        "encrypt_pk_no_ifma",
        "encrypt_keyholder_no_ifma",
        "encrypt_pool_warm",
        "encrypt_short",
        "encrypt_rn",
        "decrypt",
        "decrypt_2threads",
        "decrypt_no_ifma",
        "add",
        "scalar_mul",
        "group_sum",
        "group_sum_no_ifma",
        "serialize",
        "deserialize",
    ]
    phe_t: dict[str, list[float]] = {op: [] for op in ops}
    hefl_t: dict[str, list[float]] = {op: [] for op in ops}
    sizes = {}
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}", flush=True)
        # -- encryption (phe has one path; every hefl path is compared with it)
        phe_enc = _time(lambda: [ppk.encrypt(x) for x in xs], n_values)
        for op in ops[:9]:
            if native.IFMA or "no_ifma" not in op:
                phe_t[op].append(phe_enc)
        hefl_t["encrypt_pk"].append(_time(lambda: pk.encrypt(xs), n_values))
        hefl_t["encrypt_keyholder"].append(_time(lambda: sk.encrypt(xs), n_values))
        # the same two paths without the native kernel (identical numbers, Python loops)
        hefl_t["encrypt_pk_python"].append(
            _time(lambda: _pure_python(lambda: pk.encrypt(xs)), n_values)
        )
        hefl_t["encrypt_keyholder_python"].append(
            _time(lambda: _pure_python(lambda: sk.encrypt(xs)), n_values)
        )
        if native.IFMA:  # the same without the IFMA paths (GMP products)
            hefl_t["encrypt_pk_no_ifma"].append(
                _time(lambda: _no_ifma(lambda: pk.encrypt(xs)), n_values)
            )
            hefl_t["encrypt_keyholder_no_ifma"].append(
                _time(lambda: _no_ifma(lambda: sk.encrypt(xs)), n_values)
            )
        hefl_t["encrypt_pool_warm"].append(_time(lambda: pk.encrypt(xs, pool=pool), n_values))
        hefl_t["encrypt_short"].append(_time(lambda: pk.encrypt(xs, method="djn-short"), n_values))
        hefl_t["encrypt_rn"].append(_time(lambda: pk.encrypt(xs, method="rn"), n_values))

        ea = [ppk.encrypt(x) for x in xs]
        eb = [ppk.encrypt(y) for y in ys]
        ca, cb = CipherVector.from_phe(pk, ea), CipherVector.from_phe(pk, eb)
        # -- decryption
        phe_t["decrypt"].append(_time(lambda ea=ea: [psk.decrypt(e) for e in ea], n_values))
        hefl_t["decrypt"].append(_time(lambda ca=ca: sk.decrypt(ca), n_values))
        # not a one-core figure: powmod_base_list releases the GIL, two threads on two cores
        phe_t["decrypt_2threads"].append(phe_t["decrypt"][-1])
        hefl_t["decrypt_2threads"].append(_time(lambda ca=ca: sk.decrypt(ca, threads=2), n_values))
        if native.IFMA:  # libcrypto's exponentiation instead of the IFMA one
            phe_t["decrypt_no_ifma"].append(phe_t["decrypt"][-1])
            hefl_t["decrypt_no_ifma"].append(
                _time(lambda ca=ca: _no_ifma(lambda: sk.decrypt(ca)), n_values)
            )
        # -- homomorphic add and scalar multiply
        phe_t["add"].append(
            _time(lambda ea=ea, eb=eb: [a + b for a, b in zip(ea, eb, strict=True)], n_values)
        )
        hefl_t["add"].append(_time(lambda ca=ca, cb=cb: ca + cb, n_values))
        phe_t["scalar_mul"].append(
            _time(lambda ea=ea: [a * k for a, k in zip(ea, ks, strict=True)], n_values)
        )
        hefl_t["scalar_mul"].append(_time(lambda ca=ca: ca * ks, n_values))

        # -- histogram accumulation: add each value into one of 32 bins
        def phe_bins(ea=ea):
            acc = [None] * 32
            for e, g in zip(ea, groups.tolist(), strict=True):
                acc[g] = e if acc[g] is None else acc[g] + e
            return acc

        phe_t["group_sum"].append(_time(phe_bins, n_values))
        hefl_t["group_sum"].append(_time(lambda ca=ca: ca.group_sum(groups, 32), n_values))
        if native.IFMA:
            phe_t["group_sum_no_ifma"].append(phe_t["group_sum"][-1])
            hefl_t["group_sum_no_ifma"].append(
                _time(lambda ca=ca: _no_ifma(lambda: ca.group_sum(groups, 32)), n_values)
            )
        # -- serialization: phe's documented JSON form (decimal strings) vs fixed-width bytes
        phe_t["serialize"].append(
            _time(
                lambda ea=ea: json.dumps([[str(e.ciphertext()), e.exponent] for e in ea]),
                n_values,
            )
        )
        hefl_t["serialize"].append(_time(lambda ca=ca: ca.to_bytes(), n_values))
        js = json.dumps([[str(e.ciphertext()), e.exponent] for e in ea])
        raw = ca.to_bytes()
        sizes = {
            "phe_json_bytes_per_value": len(js) / n_values,
            "hefl_bytes_per_value": len(raw) / n_values,
        }
        phe_t["deserialize"].append(
            _time(
                lambda js=js: [phe.EncryptedNumber(ppk, int(c), e) for c, e in json.loads(js)],
                n_values,
            )
        )
        hefl_t["deserialize"].append(
            _time(lambda raw=raw: CipherVector.from_bytes(pk, raw), n_values)
        )
        # correctness guard: the timed paths must give the right answers
        assert sk.decrypt(ca + cb) == [x + y for x, y in zip(xs, ys, strict=True)]
        assert sk.decrypt(ca * ks)[:5] == [x * k for x, k in zip(xs[:5], ks[:5], strict=True)]
    pool.close()

    heu = None if args.no_heu else _heu_peer(n_values, xs, rounds)

    rows = []
    for op in ops:
        if not hefl_t[op]:  # the no-IFMA rows on a CPU without IFMA
            continue
        p, h = statistics.median(phe_t[op]), statistics.median(hefl_t[op])
        row = {
            "op": op,
            "phe_us": round(p, 2),
            "hefl_us": round(h, 2),
            "speedup_vs_phe": round(p / h, 2),
        }
        if heu is not None and op in heu:
            row["heu_us"] = round(heu[op], 2)
            row["heu_speedup_vs_phe"] = round(p / heu[op], 2)
        rows.append(row)

    bars = {
        "encrypt_pk": 14,
        "encrypt_pool_warm": 500,
        "encrypt_short": 60,
        "add": 1.5,
        "decrypt": 1.0,
        "serialize": 10,
    }
    print()
    header = f"{'operation':<20}{'phe µs':>11}{'hefl µs':>11}{'× phe':>9}{'bar':>7}"
    if heu is not None:
        header += f"{'HEU µs':>11}{'HEU × phe':>11}"
    print(header)
    print("-" * len(header))
    for row in rows:
        bar = bars.get(row["op"])
        line = (
            f"{row['op']:<20}{row['phe_us']:>11.1f}{row['hefl_us']:>11.1f}"
            f"{row['speedup_vs_phe']:>9.1f}{('>=' + str(bar)) if bar else '':>7}"
        )
        if heu is not None:
            hv = row.get("heu_us")
            line += f"{hv:>11.1f}{row['heu_speedup_vs_phe']:>11.1f}" if hv else ""
        print(line)
    print(
        f"\nserialized size per value: phe JSON {sizes['phe_json_bytes_per_value']:.0f} B, "
        f"hefl {sizes['hefl_bytes_per_value']:.0f} B"
    )
    print(
        f"one-off: DJN table {table_s:.2f} s, short-exponent table {short_table_s:.2f} s, "
        f"key-holder CRT tables {crt_table_s:.2f} s, "
        f"pool fill of {n_values * rounds} in background {pool_fill_s:.2f} s"
    )

    result = {
        "benchmark": "crypto",
        "command": "python benchmarks/crypto.py" + (" --quick" if args.quick else ""),
        "key_bits": 2048,
        "values": n_values,
        "rounds": rounds,
        "statistic": "median over rounds of µs per value",
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "gmpy2": gmpy2.version(),
            "phe": phe.__version__,
            "native_kernel": native.AVAILABLE,
            "ifma": native.IFMA,
            "platform": platform.platform(),
        },
        "one_off_seconds": {
            "djn_table": round(table_s, 3),
            "short_exponent_table": round(short_table_s, 3),
            "crt_tables": round(crt_table_s, 3),
            "pool_fill_background": round(pool_fill_s, 3),
        },
        "sizes": sizes,
        "heu": "sf-heu Z-Paillier numpy API, own 2048-bit key" if heu is not None else None,
        "results": rows,
        "bars": bars,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
