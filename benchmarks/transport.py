"""Raw pyzmq vs hefl's ZeroMQ transport, on the same work, in one run.

Two workloads, each run by two OS processes talking over ZeroMQ on tcp loopback:

* bulk: 200 MB in 2 MB chunks, each chunk 4096 ciphertext-sized (512-byte) records, i.e. one
  chunk of a 2048-bit CipherVector's wire form. Raw pyzmq sends each chunk as one frame; hefl
  sends it through ``party.stream`` (codec, envelope, credit window, statistics). Throughput
  is measured by the receiver from the first chunk's send to the last chunk's arrival.
* ping-pong: small messages (a short dict) bounced back and forth; round-trip time per
  iteration, median and p99.

Peers: raw pyzmq with the same socket layout as hefl (each process binds a ROUTER and connects a
DEALER to the other), both over asyncio on the same event loop type (uvloop when installed),
and raw pyzmq with blocking sockets (the floor). Ratios are hefl / raw-asyncio.

Usage::

    python benchmarks/transport.py            # full: 200 MB bulk, 5000 ping-pongs, 5 repeats
    python benchmarks/transport.py --quick    # 40 MB, 1000 ping-pongs, 1 repeat
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import zmq
import zmq.asyncio

import hefl
from hefl._federation import loop_factory

CHUNK_BYTES = 2 * 1024 * 1024
RECORD = 512


def _chunk(i: int) -> bytes:
    # distinct content per chunk without paying for randomness in the timed loop
    return (i.to_bytes(4, "big") * (RECORD // 4)) * (CHUNK_BYTES // RECORD)


# --------------------------------------------------------------------------- raw pyzmq


def _raw_sockets(ctx, me: str, bind: str, peer_addr: str | None):
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.RCVHWM, 1000)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(bind)
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.ROUTING_ID, me.encode())
    dealer.setsockopt(zmq.SNDHWM, 1000)
    dealer.setsockopt(zmq.LINGER, 10_000)
    return router, dealer


def _raw_async_proc(role: str, ports: dict, work: dict, out) -> None:
    with asyncio.Runner(loop_factory=loop_factory(True)) as runner:
        out.send(runner.run(_raw_async(role, ports, work)))


async def _raw_async(role: str, ports: dict, work: dict):
    ctx = zmq.asyncio.Context()
    other = "b" if role == "a" else "a"
    router, dealer = _raw_sockets(ctx, role, f"tcp://127.0.0.1:{ports[role]}", None)
    dealer.connect(f"tcp://127.0.0.1:{ports[other]}")
    # hello round so both sides are connected before timing
    await dealer.send_multipart([b"hi"])
    await router.recv_multipart()
    result = None
    if work["kind"] == "bulk":
        if role == "a":
            chunks = [_chunk(i) for i in range(work["n_chunks"])]
            c0 = time.process_time()
            await dealer.send_multipart([b"t0", str(time.time()).encode()])
            for c in chunks:
                await dealer.send_multipart([c], copy=False)
            await router.recv_multipart()  # done
            result = {"cpu": time.process_time() - c0}
        else:
            _, _, t0 = await router.recv_multipart()
            c0 = time.process_time()
            total = 0
            for _ in range(work["n_chunks"]):
                parts = await router.recv_multipart()  # bytes, like hefl delivers
                total += len(parts[1])
            t1 = time.time()
            await dealer.send_multipart([b"done"])
            result = {"seconds": t1 - float(t0), "bytes": total, "cpu": time.process_time() - c0}
    else:
        msg = [b'{"i": 1, "tag": "ping"}']
        c0 = time.process_time()
        if role == "a":
            rtts = []
            for _ in range(work["n_ping"]):
                t = time.perf_counter()
                await dealer.send_multipart(msg)
                await router.recv_multipart()
                rtts.append(time.perf_counter() - t)
            result = {"rtts": rtts, "cpu": time.process_time() - c0}
        else:
            for _ in range(work["n_ping"]):
                await router.recv_multipart()
                await dealer.send_multipart(msg)
            result = {"cpu": time.process_time() - c0}
    await asyncio.sleep(0.05)
    router.close()
    dealer.close()
    ctx.term()
    return result


def _raw_sync_proc(role: str, ports: dict, work: dict, out) -> None:
    ctx = zmq.Context()
    other = "b" if role == "a" else "a"
    router, dealer = _raw_sockets(ctx, role, f"tcp://127.0.0.1:{ports[role]}", None)
    dealer.connect(f"tcp://127.0.0.1:{ports[other]}")
    dealer.send_multipart([b"hi"])
    router.recv_multipart()
    result = None
    if work["kind"] == "bulk":
        if role == "a":
            chunks = [_chunk(i) for i in range(work["n_chunks"])]
            c0 = time.process_time()
            dealer.send_multipart([b"t0", str(time.time()).encode()])
            for c in chunks:
                dealer.send_multipart([c], copy=False)
            router.recv_multipart()
            result = {"cpu": time.process_time() - c0}
        else:
            _, _, t0 = router.recv_multipart()
            c0 = time.process_time()
            total = 0
            for _ in range(work["n_chunks"]):
                parts = router.recv_multipart()  # bytes, like hefl delivers
                total += len(parts[1])
            t1 = time.time()
            dealer.send_multipart([b"done"])
            result = {"seconds": t1 - float(t0), "bytes": total, "cpu": time.process_time() - c0}
    else:
        msg = [b'{"i": 1, "tag": "ping"}']
        c0 = time.process_time()
        if role == "a":
            rtts = []
            for _ in range(work["n_ping"]):
                t = time.perf_counter()
                dealer.send_multipart(msg)
                router.recv_multipart()
                rtts.append(time.perf_counter() - t)
            result = {"rtts": rtts, "cpu": time.process_time() - c0}
        else:
            for _ in range(work["n_ping"]):
                router.recv_multipart()
                dealer.send_multipart(msg)
            result = {"cpu": time.process_time() - c0}
    time.sleep(0.05)
    router.close()
    dealer.close()
    ctx.term()
    out.send(result)


def _free_ports(k: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(k)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_raw(target, work: dict):
    ctx = mp.get_context("spawn")
    pa, pb = _free_ports(2)
    ports = {"a": pa, "b": pb}
    pipes, procs = [], []
    for role in ("a", "b"):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=target, args=(role, ports, work, child))
        p.start()
        pipes.append(parent)
        procs.append(p)
    results = [pipe.recv() for pipe in pipes]
    for p in procs:
        p.join()
    return _merge(results[0], results[1])


def _merge(a: dict, b: dict) -> dict:
    """One result from both processes' results; CPU seconds are summed."""
    out = {**b, **a}
    out["cpu"] = a["cpu"] + b["cpu"]
    return out


# --------------------------------------------------------------------------- hefl


async def hefl_bulk_sender(party, n_chunks: int):
    chunks = [_chunk(i) for i in range(n_chunks)]
    c0 = time.process_time()
    await party.send("b", "t0", time.time())
    async with party.stream("b", "bulk") as s:
        for c in chunks:
            await s.send(c)
    await party.recv("b", "done")
    return {"cpu": time.process_time() - c0}


async def hefl_bulk_receiver(party, n_chunks: int):
    t0 = await party.recv("a", "t0")
    c0 = time.process_time()
    total = 0
    async for chunk in party.stream_from("a", "bulk"):
        total += len(chunk)
    t1 = time.time()
    await party.send("a", "done", None)
    return {"seconds": t1 - t0, "bytes": total, "cpu": time.process_time() - c0}


async def hefl_ping(party, n_ping: int):
    msg = {"i": 1, "tag": "ping"}
    rtts = []
    c0 = time.process_time()
    for _ in range(n_ping):
        t = time.perf_counter()
        await party.send("b", "ping", msg)
        await party.recv("b", "pong")
        rtts.append(time.perf_counter() - t)
    return {"rtts": rtts, "cpu": time.process_time() - c0}


async def hefl_pong(party, n_ping: int):
    c0 = time.process_time()
    for _ in range(n_ping):
        msg = await party.recv("a", "ping")
        await party.send("a", "pong", msg)
    return {"cpu": time.process_time() - c0}


def run_hefl(work: dict, curve: bool = False):
    from functools import partial

    if work["kind"] == "bulk":
        roles = {
            "a": partial(hefl_bulk_sender, n_chunks=work["n_chunks"]),
            "b": partial(hefl_bulk_receiver, n_chunks=work["n_chunks"]),
        }
        out = hefl.run(roles, processes=True, executor="inline", curve=curve)
        return _merge(out["a"], out["b"])
    roles = {
        "a": partial(hefl_ping, n_ping=work["n_ping"]),
        "b": partial(hefl_pong, n_ping=work["n_ping"]),
    }
    out = hefl.run(roles, processes=True, executor="inline", curve=curve)
    return _merge(out["a"], out["b"])


# --------------------------------------------------------------------------- driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--curve", action="store_true", help="also run hefl with CURVE")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "transport.json"))
    args = parser.parse_args()
    mb = 40 if args.quick else 200
    n_chunks = mb * 1024 * 1024 // CHUNK_BYTES
    n_ping = 1000 if args.quick else 5000
    repeats = args.repeats or (1 if args.quick else 5)

    peers = {
        "raw pyzmq (blocking)": lambda w: run_raw(_raw_sync_proc, w),
        "raw pyzmq (asyncio)": lambda w: run_raw(_raw_async_proc, w),
        "hefl zmq": lambda w: run_hefl(w),
    }
    if args.curve:
        peers["hefl zmq + CURVE"] = lambda w: run_hefl(w, curve=True)

    bulk: dict[str, list[float]] = {k: [] for k in peers}
    bulk_cpu: dict[str, list[float]] = {k: [] for k in peers}
    rtt_med: dict[str, list[float]] = {k: [] for k in peers}
    rtt_p99: dict[str, list[float]] = {k: [] for k in peers}
    rtt_cpu: dict[str, list[float]] = {k: [] for k in peers}
    for rep in range(repeats):
        for name, fn in peers.items():  # interleaved so drift hits every peer alike
            r = fn({"kind": "bulk", "n_chunks": n_chunks})
            bulk[name].append(r["bytes"] / r["seconds"] / 1e6)
            bulk_cpu[name].append(r["cpu"] / r["bytes"] * 1e9)
            r = fn({"kind": "ping", "n_ping": n_ping})
            rtts = sorted(r["rtts"][n_ping // 10 :])  # drop warm-up
            rtt_med[name].append(statistics.median(rtts) * 1e6)
            rtt_p99[name].append(rtts[int(len(rtts) * 0.99) - 1] * 1e6)
            rtt_cpu[name].append(r["cpu"] / n_ping * 1e6)
        print(f"repeat {rep + 1}/{repeats} done", file=sys.stderr)

    ref = "raw pyzmq (asyncio)"
    med = statistics.median
    rows = []
    for name in peers:
        rows.append(
            {
                "peer": name,
                "bulk_MB_per_s_median": round(med(bulk[name]), 1),
                "bulk_MB_per_s_best": round(max(bulk[name]), 1),
                "bulk_ratio_median": round(med(bulk[name]) / med(bulk[ref]), 3),
                "bulk_ratio_best": round(max(bulk[name]) / max(bulk[ref]), 3),
                "bulk_cpu_s_per_GB": round(med(bulk_cpu[name]), 3),
                "bulk_cpu_ratio": round(med(bulk_cpu[name]) / med(bulk_cpu[ref]), 3),
                "rtt_median_us": round(med(rtt_med[name]), 1),
                "rtt_p99_us": round(med(rtt_p99[name]), 1),
                "rtt_ratio": round(med(rtt_med[name]) / med(rtt_med[ref]), 3),
                "rtt_cpu_us": round(med(rtt_cpu[name]), 1),
                "rtt_cpu_ratio": round(med(rtt_cpu[name]) / med(rtt_cpu[ref]), 3),
                "bulk_runs_MB_per_s": [round(x, 1) for x in bulk[name]],
                "rtt_median_runs_us": [round(x, 1) for x in rtt_med[name]],
            }
        )
    header = (
        f"{'peer':22} {'bulk MB/s med':>13} {'best':>7} {'ratio':>6} {'CPU s/GB':>9} "
        f"{'ratio':>6} {'RTT med µs':>10} {'p99':>7} {'ratio':>6} {'CPU µs/RTT':>10} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['peer']:22} {r['bulk_MB_per_s_median']:>13.1f} {r['bulk_MB_per_s_best']:>7.1f} "
            f"{r['bulk_ratio_median']:>6.2f} {r['bulk_cpu_s_per_GB']:>9.3f} "
            f"{r['bulk_cpu_ratio']:>6.2f} {r['rtt_median_us']:>10.1f} {r['rtt_p99_us']:>7.1f} "
            f"{r['rtt_ratio']:>6.2f} {r['rtt_cpu_us']:>10.1f} {r['rtt_cpu_ratio']:>6.2f}"
        )
    print("ratios are hefl-or-peer / raw pyzmq (asyncio); CPU = both processes, all threads")
    h = next(r for r in rows if r["peer"] == "hefl zmq")
    raw_blocking = next(r for r in rows if r["peer"] == "raw pyzmq (blocking)")
    bars = {
        "bulk >= 80% of raw pyzmq asyncio (median)": h["bulk_ratio_median"] >= 0.8,
        "bulk >= 80% of raw pyzmq asyncio (best of runs)": h["bulk_ratio_best"] >= 0.8,
        "bulk >= 80% of raw pyzmq blocking (median)": h["bulk_MB_per_s_median"]
        >= 0.8 * raw_blocking["bulk_MB_per_s_median"],
        "ping-pong RTT <= 2x raw pyzmq asyncio": h["rtt_ratio"] <= 2.0,
        "ping-pong RTT <= 2x raw pyzmq blocking": h["rtt_median_us"]
        <= 2.0 * raw_blocking["rtt_median_us"],
    }
    for bar, ok in bars.items():
        print(f"{'PASS' if ok else 'FAIL'}  {bar}")
    result = {
        "benchmark": "transport",
        "command": "python benchmarks/transport.py" + (" --quick" if args.quick else ""),
        "workload": {
            "bulk_bytes": n_chunks * CHUNK_BYTES,
            "chunk_bytes": CHUNK_BYTES,
            "record_bytes": RECORD,
            "pingpongs": n_ping,
            "repeats": repeats,
            "transport": "tcp loopback, one process per party",
        },
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(),
            "loop": "uvloop" if loop_factory(True) else "asyncio",
        },
        "rows": rows,
        "bars": bars,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
