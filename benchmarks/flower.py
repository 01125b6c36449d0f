"""hefl inside Flower against Flower's FedAvg, Flower's SecAgg+ and a TenSEAL CKKS strategy.

One app, four aggregations, each run in the same process on Flower's simulation engine
(:func:`hefl.flower.run_local`: every message crosses as Flower's protobuf bytes, which are
counted). The model is the BatchCrypt paper's 784-128-10 MLP (101,770 parameters); a client's
"training" adds a Gaussian step to each layer (the same work in every scheme), so the
differences are the aggregation's. Per client per round: bytes sent + received, the CPU
seconds of its ClientApp calls (``time.thread_time``; every scheme's crypto runs on the
calling thread), and the server-side round time (first message of a round to its last reply).

- **FedAvg**: ``flwr.serverapp.strategy.FedAvg``, plaintext; the server sees every model.
- **SecAgg+**: Flower's ``SecAggPlusWorkflow`` + ``secaggplus_mod`` (legacy ``NumPyClient``,
  as Flower's own SecAgg+ example); the server still learns the aggregate. Its key set-up runs
  every round and is counted.
- **CKKS**: a strategy written here as NVIDIA FLARE's HE filters configure TenSEAL
  (poly_modulus_degree 8192, coeff_mod_bit_sizes [60, 40, 40, 60], scale 2^40, 4096 slots per
  vector): clients encrypt n·w, the server adds, the clients decrypt the encrypted sum the
  next round. The CKKS keys are provisioned out of band (not counted).
- **hefl**: :class:`hefl.flower.BatchCryptFedAvg` + ``batchcrypt_mod`` (r = 16, 2048-bit key);
  its once-per-session key set-up is not counted in the rounds (reported separately).

Run: python benchmarks/flower.py [--clients 3] [--rounds 2] [--quick] (see --help).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from hefl.flower import BatchCryptFedAvg, LocalRun, batchcrypt_mod, run_local
from hefl.protocols.batchcrypt import BatchCryptConfig

RESULTS = Path(__file__).resolve().parent / "results" / "flower.json"
SHAPES = {"fc1.weight": (128, 784), "fc1.bias": (128,), "fc2.weight": (10, 128), "fc2.bias": (10,)}
STEP = {"fc1.weight": 0.01, "fc1.bias": 0.001, "fc2.weight": 0.05, "fc2.bias": 0.005}
N_EXAMPLES = 6000


def initial_record() -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in initial_arrays().items()})


def initial_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.normal(0, 0.05, s).astype(np.float32) for k, s in SHAPES.items()}


def local_step(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The stand-in for local training: the same cost in every scheme."""
    rng = np.random.default_rng()
    return {k: (a + rng.normal(0, STEP[k], a.shape)).astype(a.dtype) for k, a in arrays.items()}


def message_app(mods: list[Any]) -> ClientApp:
    """A message-API ClientApp (FedAvg and hefl)."""
    app = ClientApp(mods=mods)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        arrays = {k: v.numpy() for k, v in msg.content["arrays"].items()}
        out = ArrayRecord({k: Array(v) for k, v in local_step(arrays).items()})
        metrics = MetricRecord({"num-examples": N_EXAMPLES})
        return Message(RecordDict({"arrays": out, "metrics": metrics}), reply_to=msg)

    return app


def server(start: Any) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        start(grid, context)

    return app


def run_fedavg(k: int, rounds: int) -> LocalRun:
    from flwr.serverapp.strategy import FedAvg

    def start(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=k)
        strategy.start(grid=grid, initial_arrays=initial_record(), num_rounds=rounds)

    return run_local(server(start), message_app([]), k)


def run_hefl(k: int, rounds: int, key_bits: int) -> LocalRun:
    cfg = BatchCryptConfig(bits=16, n_clients=k, key_bits=key_bits, allow_insecure=key_bits < 2048)

    def start(grid: Grid, context: Context) -> None:
        strategy = BatchCryptFedAvg(cfg, fraction_evaluate=0.0)
        strategy.start(grid=grid, initial_arrays=initial_record(), num_rounds=rounds)

    # one decryption thread: time.thread_time then counts all of a client's CPU
    return run_local(server(start), message_app([batchcrypt_mod(cfg, threads=1)]), k)


def run_secaggplus(k: int, rounds: int) -> LocalRun:
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    names = list(SHAPES)

    class StepClient(NumPyClient):  # type: ignore[misc]
        def fit(self, parameters: list[np.ndarray], config: dict) -> tuple:
            new = local_step(dict(zip(names, parameters, strict=True)))
            return [new[n] for n in names], N_EXAMPLES, {}

    client = ClientApp(client_fn=lambda context: StepClient().to_client(), mods=[secaggplus_mod])

    def start(grid: Grid, context: Context) -> None:
        init = ndarrays_to_parameters(list(initial_arrays().values()))
        strategy = LegacyFedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_available_clients=k,
            initial_parameters=init,
        )
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy
        )
        workflow = SecAggPlusWorkflow(num_shares=k, reconstruction_threshold=max(2, k - 1))
        DefaultWorkflow(fit_workflow=workflow)(grid, legacy)

    return run_local(server(start), client, k)


def ckks_context() -> tuple[Any, bytes, bytes]:
    """TenSEAL CKKS as NVIDIA FLARE's HE filters set it up; (ts module, secret, public)."""
    import tenseal as ts

    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=8192,
        coeff_mod_bit_sizes=[60, 40, 40, 60],
        n_threads=1,
    )
    ctx.global_scale = 2**40
    return ts, ctx.serialize(save_secret_key=True), ctx.serialize(save_secret_key=False)


def run_ckks(k: int, rounds: int) -> LocalRun | None:
    try:
        ts, secret, public = ckks_context()
    except ImportError:
        print("TenSEAL not installed: skipping CKKS (pip install tenseal)", file=sys.stderr)
        return None
    slots, names = 4096, list(SHAPES)
    sizes = [int(np.prod(SHAPES[n])) for n in names]
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        ctx = ts.context_from(secret)
        if "arrays" in msg.content:
            arrays = {n: a.numpy() for n, a in msg.content["arrays"].items()}
        else:  # the encrypted sum of last round's n·w, and N
            blobs = msg.content["ckks"]["vectors"]
            flat = np.concatenate([ts.ckks_vector_from(ctx, b).decrypt() for b in blobs])
            flat = flat / float(msg.content["ckks"]["total"])
            parts = np.split(flat[: sum(sizes)], np.cumsum(sizes)[:-1])
            arrays = {
                n: p.reshape(SHAPES[n]).astype(np.float32)
                for n, p in zip(names, parts, strict=True)
            }
        new = local_step(arrays)
        flat = N_EXAMPLES * np.concatenate([new[n].ravel().astype(np.float64) for n in names])
        vectors = [
            ts.ckks_vector(ctx, flat[i : i + slots]).serialize() for i in range(0, len(flat), slots)
        ]
        content = RecordDict({"ckks": ConfigRecord({"vectors": vectors, "n": N_EXAMPLES})})
        return Message(content, reply_to=msg)

    def start(grid: Grid, context: Context) -> None:
        pub = ts.context_from(public)
        nodes = sorted(grid.get_node_ids())
        down: RecordDict = RecordDict({"arrays": initial_record()})
        for t in range(1, rounds + 1):
            msgs = [
                Message(down, dst_node_id=n, message_type="train", group_id=str(t)) for n in nodes
            ]
            replies = list(grid.send_and_receive(msgs, timeout=3600))
            acc = None
            for r in replies:
                vs = [ts.ckks_vector_from(pub, b) for b in r.content["ckks"]["vectors"]]
                acc = vs if acc is None else [a + v for a, v in zip(acc, vs, strict=True)]
            total = sum(int(r.content["ckks"]["n"]) for r in replies)
            down = RecordDict(
                {"ckks": ConfigRecord({"vectors": [a.serialize() for a in acc], "total": total})}
            )

    return run_local(server(start), app, k)


def summarize(name: str, run: LocalRun, k: int, rounds: int) -> dict:
    """Per client per round: bytes sent + received and ClientApp CPU, medians over every
    (client, round) pair; the round time is the median over rounds of the span from a
    round's first message to its last reply. hefl's once-per-session set-up (group "0") is
    reported apart."""
    entries = [e for e in run.log.entries if e.group != "0"]
    setup = [e for e in run.log.entries if e.group == "0"]
    cells: dict[tuple[int, str], list[float]] = {}
    spans: dict[str, list[float]] = {}
    for e in entries:
        b, c = cells.setdefault((e.node, e.group), [0.0, 0.0])
        cells[(e.node, e.group)] = [b + len(e.wire), c + e.cpu]
        spans.setdefault(e.group, []).append(e.at)
    if set(spans) == {""}:  # Flower's message-API FedAvg sets no group id: whole-run averages
        cells = {key: [b / rounds, c / rounds] for key, (b, c) in cells.items()}
        whole = spans[""]
        spans = {str(t): [0.0, (max(whole) - min(whole)) / rounds] for t in range(rounds)}
    return {
        "scheme": name,
        "client_bytes_per_round": statistics.median(b for b, _ in cells.values()),
        "client_cpu_s_per_round": statistics.median(c for _, c in cells.values()),
        "round_s": statistics.median(max(v) - min(v) for v in spans.values()),
        "rounds_seen": len(spans),
        "setup_bytes_per_client": sum(len(e.wire) for e in setup) / k,
        "setup_client_cpu_s_max": max([e.cpu for e in setup] or [0.0]),
        "run_s": run.seconds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--quick", action="store_true", help="1024-bit key, 2 rounds (a smoke run)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.key_bits, args.rounds = 1024, 2
    k, rounds = args.clients, args.rounds
    rows = []
    for name, fn in (
        ("Flower FedAvg (plaintext)", lambda: run_fedavg(k, rounds)),
        ("Flower SecAgg+", lambda: run_secaggplus(k, rounds)),
        ("CKKS (TenSEAL, FLARE settings)", lambda: run_ckks(k, rounds)),
        (f"hefl BatchCrypt r=16, {args.key_bits}-bit", lambda: run_hefl(k, rounds, args.key_bits)),
    ):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        run = fn()
        if run is not None:
            rows.append(summarize(name, run, k, rounds))
    print_table(rows)
    hefl, ckks = rows[-1], next((r for r in rows if r["scheme"].startswith("CKKS")), None)
    ratios = {
        "ckks_bytes_over_hefl": ckks["client_bytes_per_round"] / hefl["client_bytes_per_round"]
        if ckks
        else None,
        "hefl_bytes_over_fedavg": hefl["client_bytes_per_round"]
        / rows[0]["client_bytes_per_round"],
    }
    print(json.dumps(ratios, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "setting": {
                    "params": sum(int(np.prod(s)) for s in SHAPES.values()),
                    "clients": k,
                    "rounds": rounds,
                    "key_bits": args.key_bits,
                },
                "machine": {"python": platform.python_version(), "cores": os.cpu_count()},
                "command": " ".join(
                    [
                        "python",
                        "benchmarks/flower.py",
                        *(argv if argv is not None else sys.argv[1:]),
                    ]
                ),
                "rows": rows,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def print_table(rows: list[dict]) -> None:
    print(f"{'scheme':<34}{'MB/client/round':>16}{'client CPU s':>14}{'round s':>9}")
    for r in rows:
        print(
            f"{r['scheme']:<34}{r['client_bytes_per_round'] / 1e6:>16.3f}"
            f"{r['client_cpu_s_per_round']:>14.3f}{r['round_s']:>9.2f}"
        )


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    raise SystemExit(code)
