"""Fault injection in multi-process runs (one OS process per party over ZeroMQ): SIGKILL of
each role at several points of BatchCrypt and VF2Boost, a stalled party and a frozen one.
Every other party fails fast with PeerFailed naming the failed one, within the configured
timeout, and no process the run started (nor any they started: obfuscator pools, forkservers)
nor any socket is left behind."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid

import pytest
from hefl_faults import TALLY, Fault, batchcrypt_roles, child_pids, open_sockets, vf2boost_roles

import hefl
from hefl.errors import PeerFailed

pytestmark = pytest.mark.timeout(60, method="thread")

BC = {"n": 400, "chunk_size": 2, "shared_decryption": True}
KILLS = [
    # (protocol, victim, fault, what)
    ("batchcrypt", "client0", Fault("send", r"bc/key", "kill"), "key hand-out"),
    ("batchcrypt", "client1", Fault("send", r"bc/0/up", "kill", nth=3), "mid-upload"),
    ("batchcrypt", "aggregator", Fault("send", r"bc/0/down", "kill", nth=2), "mid-download"),
    ("batchcrypt", "client1", Fault("send", r"bc/0/share", "kill"), "shared decryption"),
    ("vf2boost", "active", Fault("send", r"vf2/setup", "kill"), "setup"),
    ("vf2boost", "passive1", Fault("recv", r"vf2/gh/0", "kill", nth=2), "mid-gradient-stream"),
    ("vf2boost", "active", Fault("recv", r"vf2/hist/0/0/\d+", "kill"), "decryption"),
    ("vf2boost", "passive1", Fault("recv", r"vf2/layer/1/0", "kill"), "between trees"),
]


def roles_for(protocol, victim, fault):
    if protocol == "batchcrypt":
        n = BC["n"]
        cfg = {k: v for k, v in BC.items() if k != "n"}
        return batchcrypt_roles(n=n, faults={victim: fault}, **cfg)
    return vf2boost_roles(faults={victim: fault})


def marked_processes(marker: str) -> set[int]:
    """Live processes whose environment carries ``marker``: every process the run started and
    every process those started (pool workers, forkservers), also once reparented, except
    this one and the helpers multiprocessing keeps for it (its resource tracker)."""
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = fh.read()
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        ours = int(fields[1]) == os.getpid() and b"resource_tracker" in cmd
        if marker.encode() in environ and fields[0] != b"Z" and not ours:
            found.add(int(pid))
    return found


def run_in_processes(roles, timeout=40.0, **kw):
    children, sockets = child_pids(), open_sockets()
    marker = f"HEFL_FAULTS_{uuid.uuid4().hex}"
    os.environ[marker] = "1"  # inherited by every descendant of the run
    try:
        t0 = time.monotonic()
        with pytest.raises(PeerFailed) as info:
            hefl.run(roles, processes=True, executor="inline", timeout=timeout, **kw)
        took = time.monotonic() - t0
    finally:
        del os.environ[marker]
    TALLY["faults"] += 1
    assert not multiprocessing.active_children()
    assert child_pids() <= children, "a party process outlived the run"
    deadline = time.monotonic() + 5
    while marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not marked_processes(marker), "a process the run started outlived it by 5 s"
    assert open_sockets() <= sockets
    return info.value, took


@pytest.mark.parametrize(
    ("protocol", "victim", "fault"),
    [k[:3] for k in KILLS],
    ids=[f"{k[0]}-{k[1]}-{k[3].replace(' ', '-')}" for k in KILLS],
)
def test_sigkill(protocol, victim, fault):
    exc, took = run_in_processes(roles_for(protocol, victim, fault))
    assert exc.peer == victim and "SIGKILL" in exc.cause
    assert took < 40


def test_stalled_party_is_named_within_recv_timeout():
    """passive1 sleeps forever in its event loop instead of sending its histograms (its process
    and transport stay alive, so only a receive timeout can tell): the active party names it
    within recv_timeout, and the staller itself is told and ends.

    (In a chain, e.g. BatchCrypt's client -> aggregator -> client, a party further down may
    time out first and name the party it waits for, which is itself waiting: recv_timeout
    names the peer that did not send, not the root cause.)"""
    fault = Fault("send", r"vf2/hist/0/1/\d+", "stall")
    roles = vf2boost_roles(faults={"passive1": fault})
    exc, took = run_in_processes(roles, recv_timeout=3)
    assert exc.peer == "passive1" and "within 3 s" in exc.cause
    assert took < 3 + 15  # the timeout plus process start-up


def test_frozen_party_is_named_within_peer_timeout():
    """passive1's whole process blocks (no heartbeats): the active party declares it failed
    after peer_timeout; the supervisor then kills the frozen process."""
    fault = Fault("recv", r"vf2/layer/0/1", "freeze")
    roles = vf2boost_roles(faults={"passive1": fault})
    exc, took = run_in_processes(roles, heartbeat_interval=0.5, peer_timeout=2.0)
    assert exc.peer == "passive1" and "silent for" in exc.cause
    assert took < 2 + 5 + 15  # peer_timeout, the supervisor's kill grace, start-up
