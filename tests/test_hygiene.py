"""No process hefl starts outlives the run, however the run ends.

Each case starts a real command (``hefl demo``, ``hefl party`` hosts, or a script calling
``hefl.run(processes=True)``) in a session of its own and with a marker in its environment,
ends it one way (normal exit, an exception, Ctrl-C of the process group, SIGTERM or SIGKILL
of the parent, SIGKILL or SIGTERM of one party) at one moment (while the processes start, or
once every pool is up), then checks ALL descendants: every process of the session or carrying
the marker (grandchildren such as pool workers, the forkserver and the resource tracker
included, also after they were reparented) must be gone within 5 s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
    pytest.mark.timeout(90),
]

GRACE = 5.0  # the promise: gone within 5 s of the run ending
HEFL = [sys.executable, "-m", "hefl.cli"]


# --------------------------------------------------------------------------- processes


def _processes() -> dict[int, tuple[int, int, str]]:
    """Every live (non-zombie) process: ``{pid: (ppid, session id, command line)}``."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] != b"Z":
            out[int(entry)] = (int(fields[1]), int(fields[3]), cmd)
    return out


def _marked(marker: str) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if marker.encode() in fh.read():
                        found.add(int(entry))
            except OSError:
                continue
    return found


class Run:
    """Commands started in their own sessions, all carrying one environment marker."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.marker = f"HEFL_HYGIENE_{uuid.uuid4().hex}"
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], **kw) -> subprocess.Popen:
        n = len(self.procs)
        env = {**os.environ, self.marker: "1", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=self.tmp,
            stdout=open(self.tmp / f"out{n}.txt", "w"),  # noqa: SIM115 (closed by the child)
            stderr=open(self.tmp / f"err{n}.txt", "w"),  # noqa: SIM115
            start_new_session=True,
            # a terminal's foreground program gets Ctrl-C; one started from a background job
            # inherits SIGINT ignored (and Python then never raises KeyboardInterrupt)
            preexec_fn=_default_sigint,
            **kw,
        )
        self.procs.append(proc)
        return proc

    def output(self, n: int = 0) -> str:
        return (self.tmp / f"out{n}.txt").read_text() + (self.tmp / f"err{n}.txt").read_text()

    def tree(self) -> dict[int, tuple[int, int, str]]:
        """Every process of the runs' sessions or carrying the marker (not this one)."""
        sids = {p.pid for p in self.procs}
        procs = _processes()
        marked = _marked(self.marker)
        return {
            pid: info
            for pid, info in procs.items()
            if pid != os.getpid() and (info[1] in sids or pid in marked)
        }

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; {self.describe()}")
            time.sleep(0.05)

    def wait_size(self, size: int, timeout: float = 60.0) -> None:
        """Wait until the runs have at least ``size`` processes."""
        self.wait_for(lambda: len(self.tree()) >= size, timeout, f"{size} processes")

    def parties(self, top: subprocess.Popen) -> list[int]:
        """The party processes ``top`` started (its children that are not helpers)."""
        return [
            pid
            for pid, (ppid, _, cmd) in self.tree().items()
            if ppid == top.pid and "spawn_main" in cmd
        ]

    def describe(self) -> str:
        lines = [f"{pid} (parent {i[0]}): {i[2][:150]}" for pid, i in sorted(self.tree().items())]
        outs = [self.output(n)[-1500:] for n in range(len(self.procs))]
        return "processes:\n" + "\n".join(lines) + "\noutput:\n" + "\n----\n".join(outs)

    def assert_all_gone(self, ended: float) -> None:
        """Everything is gone within GRACE seconds of ``ended`` (the ending's time)."""
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, ended + GRACE + 60 - time.monotonic()))
        deadline = ended + GRACE
        while self.tree() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.tree()
        assert not left, f"processes alive {GRACE:g} s after the run ended: {self.describe()}"

    def cleanup(self) -> None:
        for pid in self.tree():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def run(tmp_path):
    r = Run(tmp_path)
    yield r
    r.cleanup()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _end(run: Run, top: subprocess.Popen, how: str) -> float:
    """End the run ``how``; returns when (monotonic) it was ended."""
    if how == "ctrl-c":  # what a terminal does: SIGINT to the whole foreground group
        os.killpg(top.pid, signal.SIGINT)
    elif how == "sigterm-parent":
        top.send_signal(signal.SIGTERM)
    elif how == "sigkill-parent":
        top.send_signal(signal.SIGKILL)
    elif how == "sigkill-party":
        run.wait_for(lambda: len(run.parties(top)) >= 1, 30, "a party process")
        os.kill(run.parties(top)[-1], signal.SIGKILL)
    else:
        raise AssertionError(how)
    return time.monotonic()


# --------------------------------------------------------------------------- hefl demo

DEMO_SHORT = ["--rows", "300", "--bits", "512", "--insecure", "--trees", "1", "--depth", "2"]
DEMO_LONG = ["--rows", "4000", "--bits", "512", "--insecure", "--trees", "30", "--depth", "4"]


def test_demo_normal_exit_leaves_nothing(run):
    top = run.start([*HEFL, "demo", "vf2boost", *DEMO_SHORT, "--bins", "8"])
    assert top.wait(90) == 0, run.describe()
    run.assert_all_gone(time.monotonic())


@pytest.mark.parametrize(
    ("how", "size"),
    [
        ("ctrl-c", 3),  # while the party processes start
        ("ctrl-c", 7),  # every pool up (the case that once left 6 processes)
        ("sigterm-parent", 7),
        ("sigkill-parent", 4),
        ("sigkill-parent", 7),
        ("sigkill-party", 7),
    ],
)
def test_demo_ending_leaves_nothing(run, how, size):
    top = run.start([*HEFL, "demo", "vf2boost", *DEMO_LONG])
    run.wait_size(size)
    ended = _end(run, top, how)
    run.assert_all_gone(ended)
    if how != "sigkill-parent":
        assert top.returncode != 0


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm-parent"])
def test_inproc_demo_ending_leaves_nothing(run, how):
    """Every party in the demo's own process: its process pool and obfuscator pool."""
    top = run.start([*HEFL, "demo", "vf2boost", "--inproc", *DEMO_LONG])
    run.wait_size(5)  # the demo, the resource tracker, a pool worker, the forkserver, ...
    ended = _end(run, top, how)
    run.assert_all_gone(ended)
    assert top.returncode == 130, run.describe()


@pytest.mark.parametrize("how", ["ctrl-c", "sigkill-party"])
def test_batchcrypt_demo_ending_leaves_nothing(run, how):
    small = ["--bits", "512", "--insecure", "--clients", "2", "--rounds", "50"]
    top = run.start([*HEFL, "demo", "batchcrypt", *small])
    size = 6  # the demo, its resource tracker, three parties and a pool worker
    run.wait_size(size)
    ended = _end(run, top, how)
    run.assert_all_gone(ended)
    if how != "sigkill-parent":
        assert top.returncode != 0


# --------------------------------------------------------------------------- hefl party


def _federation(tmp: Path, ports: list[int]) -> Path:
    path = tmp / "federation.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [federation]
            protocol = "vf2boost"
            active = "alice"
            heartbeat_interval = 0.5
            peer_timeout = 2.0
            connect_timeout = 60.0

            [parties.alice]
            address = "tcp://127.0.0.1:{ports[0]}"

            [parties.bob]
            address = "tcp://127.0.0.1:{ports[1]}"
            """
        )
    )
    return path


@pytest.mark.parametrize("how", ["exit", "sigkill-party", "sigterm-party", "ctrl-c-party"])
def test_party_hosts_leave_nothing(run, free_ports, how):
    path = _federation(run.tmp, free_ports(2))
    args = ["--config", str(path), "--bits", "512", "--insecure"]
    size = ["--rows", "300", "--trees", "1"] if how == "exit" else DEMO_LONG
    hosts = [run.start([*HEFL, "party", *args, "--name", n, *size]) for n in ("alice", "bob")]
    if how == "exit":
        for host in hosts:
            assert host.wait(90) == 0, run.describe()
        run.assert_all_gone(time.monotonic())
        return
    run.wait_size(5)  # both hosts, their pool workers, the active party's obfuscator pool
    victim = hosts[1]
    if how == "ctrl-c-party":  # Ctrl-C in bob's terminal: SIGINT to bob's process group
        os.killpg(victim.pid, signal.SIGINT)
    else:
        victim.send_signal(signal.SIGKILL if how == "sigkill-party" else signal.SIGTERM)
    ended = time.monotonic()
    survivor = hosts[0]
    survivor.wait(30)
    # the survivor notices within peer_timeout (2 s) of a SIGKILL, at once on SIGTERM
    run.assert_all_gone(ended + (2.0 if how == "sigkill-party" else 0.0))
    assert survivor.returncode == 1, run.describe()
    assert "bob" in run.output(0)


# --------------------------------------------------------------------------- hefl.run


SCRIPT = """
import asyncio, os, sys, time
import hefl
from hefl.crypto import ObfuscatorPool, generate_keypair


def square(x):
    return x * x


async def role(party):
    assert await party.offload(square, 7) == 49  # starts this party's process pool
    pk, _ = generate_keypair(512, allow_insecure=True)
    with ObfuscatorPool(pk, capacity=16, chunk=4, workers=1) as pool:  # and a forkserver
        pool.wait(4, timeout=30)
        if sys.argv[1] == "error" and party.name == "b":
            raise ValueError("boom in b")
        if sys.argv[1] != "exit":
            await asyncio.sleep(60)
    return party.name


if __name__ == "__main__":
    print(hefl.run({"a": role, "b": role}, processes=True, max_workers=1))
"""


@pytest.mark.parametrize(
    ("how", "size"),
    [
        ("exit", 0),
        ("error", 0),
        ("ctrl-c", 8),
        ("sigterm-parent", 8),  # no handler: the script dies outright, like SIGKILL
        ("sigkill-parent", 3),
        ("sigkill-party", 8),
    ],
)
def test_run_processes_script_leaves_nothing(run, how, size):
    script = run.tmp / "script.py"
    script.write_text(SCRIPT)
    mode = how if how in ("exit", "error") else "sleep"
    top = run.start([sys.executable, str(script), mode])
    if how in ("exit", "error"):
        code = top.wait(90)
        ended = time.monotonic()
        assert (code == 0) == (how == "exit"), run.describe()
        if how == "error":
            assert "boom in b" in run.output()
    else:
        run.wait_size(size)
        ended = _end(run, top, how)
    run.assert_all_gone(ended)
