"""Emulated wide-area links between two Linux network namespaces (benchmarks and tests).

:class:`Lab` creates two fresh network namespaces, one per party, joined by one link with a
one-way delay and a bandwidth, and runs commands inside them (``ip netns exec``). Traffic
between the parties never leaves the two namespaces: they have no other interface and no
route out. Everything is removed on exit, whatever happens (namespace names are unique per
process and lab, so labs of concurrent runs never meet).

The link is emulated, by preference, with the kernel: a veth pair whose two ends each get
``tc qdisc ... netem delay D rate R limit 1000``. Kernels built without netem (sch_netem) get
the same link model in user space: each namespace gets a TUN device instead of a veth end, and
a small "wire" process moves every IP packet from one to the other, holding it for its
serialization time at the link's rate (a FIFO per direction, as netem's rate does) plus the
delay, and dropping it when 1000 packets are already held in that direction (netem's default
``limit``). ``Lab.mode`` says which one a lab uses.

Needs root, ``ip`` and ``tc`` (iproute2). :func:`unavailable` says why a lab cannot be made.
With ``NETLAB_DEBUG=1`` the user-space wire reports, when it stops, how many packets it dropped
and how late (past their due time) it delivered the latest one: CPU starvation shows there.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import itertools
import os
import select
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ADDRESSES = ("10.77.0.1", "10.77.0.2")
LIMIT = 1000  # packets held per direction, as netem's default
_TUNSETIFF = 0x400454CA
_IFF_TUN, _IFF_NO_PI = 0x0001, 0x1000
_SEQ = itertools.count()


@dataclass(frozen=True)
class Link:
    """A link's one-way delay (ms, each way) and bandwidth (Mbit/s, each way; None: unlimited)."""

    delay_ms: float
    rate_mbit: float | None

    def describe(self) -> str:
        rate = "unlimited" if self.rate_mbit is None else f"{self.rate_mbit:g} Mbit/s"
        return f"{self.delay_ms:g} ms each way, {rate}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (None when they can)."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"the {tool!r} command (iproute2) is not installed"
    name = f"hlprobe{os.getpid()}"
    made = _ip("netns", "add", name, check=False)
    if made.returncode != 0:
        return f"'ip netns add' failed: {made.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    if not netem_available() and not os.path.exists("/dev/net/tun"):
        return "neither the netem qdisc (sch_netem) nor /dev/net/tun is available"
    return None


def netem_available() -> bool:
    """Whether the kernel has the netem qdisc (tried on a throwaway namespace's loopback)."""
    name = f"hlnetem{os.getpid()}"
    if _ip("netns", "add", name, check=False).returncode != 0:
        return False
    try:
        probe = ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
        return (
            subprocess.run(["ip", "netns", "exec", name, *probe], capture_output=True).returncode
            == 0
        )
    finally:
        _ip("netns", "del", name, check=False)


class Lab:
    """Two namespaces joined by one emulated link (a context manager).

    Args:
        link: the link's delay and bandwidth.
        mode: ``"netem"``, ``"tun"`` or ``"auto"`` (netem when the kernel has it).

    Attributes:
        namespaces: the two namespaces' names.
        addresses: the two parties' IP addresses (``ADDRESSES``), one per namespace.
        mode: the emulation used.
    """

    def __init__(self, link: Link, mode: str = "auto") -> None:
        why = unavailable()
        if why is not None:
            raise RuntimeError(why)
        self.link = link
        self.mode = ("netem" if netem_available() else "tun") if mode == "auto" else mode
        tag = f"{os.getpid()}x{next(_SEQ)}"
        self.namespaces = (f"hefl{tag}a", f"hefl{tag}b")
        self.addresses = ADDRESSES
        self._devices = (f"hl{tag}a"[:15], f"hl{tag}b"[:15])
        self._wire: subprocess.Popen[bytes] | None = None
        self._alive_w: int | None = None

    def __enter__(self) -> Lab:
        try:
            for ns in self.namespaces:
                _ip("netns", "add", ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            self._netem() if self.mode == "netem" else self._tun()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _netem(self) -> None:
        a, b = self._devices
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        for dev, ns, addr in zip(self._devices, self.namespaces, self.addresses, strict=True):
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            qdisc = ["netem", "delay", f"{self.link.delay_ms:g}ms", "limit", str(LIMIT)]
            if self.link.rate_mbit is not None:
                qdisc += ["rate", f"{self.link.rate_mbit:g}mbit"]
            tc = ["tc", "qdisc", "add", "dev", dev, "root", *qdisc]
            subprocess.run(["ip", "netns", "exec", ns, *tc], check=True, capture_output=True)

    def _tun(self) -> None:
        fds = []
        try:
            for dev, ns, addr, peer in zip(
                self._devices, self.namespaces, self.addresses, self.addresses[::-1], strict=True
            ):
                fd = os.open("/dev/net/tun", os.O_RDWR)
                fds.append(fd)
                fcntl.ioctl(
                    fd, _TUNSETIFF, struct.pack("16sH", dev.encode(), _IFF_TUN | _IFF_NO_PI)
                )
                # the device moves into the namespace; this process's descriptor stays attached
                _ip("link", "set", dev, "netns", ns)
                _ip("-n", ns, "addr", "add", addr, "peer", peer, "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
            alive_r, self._alive_w = os.pipe()  # the wire exits when this end closes
            rate = "0" if self.link.rate_mbit is None else str(self.link.rate_mbit * 1e6)
            argv = [sys.executable, os.path.abspath(__file__), "--wire", str(fds[0]), str(fds[1])]
            argv += [str(alive_r), str(self.link.delay_ms / 1000), rate]
            self._wire = subprocess.Popen(argv, pass_fds=(*fds, alive_r))
            os.close(alive_r)
        finally:
            for fd in fds:
                os.close(fd)

    def popen(self, index: int, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside namespace ``index`` (0 or 1)."""
        return subprocess.Popen(["ip", "netns", "exec", self.namespaces[index], *argv], **kwargs)  # type: ignore[call-overload]

    def close(self) -> None:
        """Stop the wire and delete both namespaces (with everything in them)."""
        if self._alive_w is not None:
            os.close(self._alive_w)
            self._alive_w = None
        if self._wire is not None:
            try:
                self._wire.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._wire.kill()
                self._wire.wait()
            self._wire = None
        for ns in self.namespaces:
            _ip("netns", "del", ns, check=False)


def curve_federation(
    directory: Path,
    names: Sequence[str],
    addresses: Sequence[str],
    ports: Sequence[int],
    settings: Sequence[str] = (),
) -> Path:
    """Write ``directory/federation.toml``: a CURVE federation of ``names`` reachable at
    ``tcp://address:port``, with a fresh key pair per party under ``directory/keys`` and extra
    ``[federation]`` lines ``settings``."""
    from hefl import generate_curve_keypair, save_curve_keypair

    lines = ["[federation]", "curve = true", *settings]
    for name, addr, port in zip(names, addresses, ports, strict=True):
        keys = generate_curve_keypair()
        _, secret = save_curve_keypair(keys, directory / "keys", name)
        lines += [f"[parties.{name}]", f'address = "tcp://{addr}:{port}"']
        lines += [f'public_key = "{keys.public}"', f'secret_key_file = "{secret}"']
    path = directory / "federation.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _wire(fd_a: int, fd_b: int, alive: int, delay: float, rate_bps: float) -> None:
    """Move packets between two TUN descriptors through the link model (see the module docs)
    until ``alive`` reaches end of file."""
    other = {fd_a: fd_b, fd_b: fd_a}
    busy = {fd_a: 0.0, fd_b: 0.0}  # when each direction's serializer is free again
    held = {fd_a: 0, fd_b: 0}
    heap: list[tuple[float, int, int, int, bytes]] = []
    seq = itertools.count()
    dropped, late = 0, 0.0
    for fd in (fd_a, fd_b):
        os.set_blocking(fd, False)
    while True:
        wait = max(0.0, heap[0][0] - time.monotonic()) if heap else 1.0
        ready, _, _ = select.select([fd_a, fd_b, alive], [], [], wait)
        if alive in ready:
            if os.environ.get("NETLAB_DEBUG"):
                print(f"wire: dropped {dropped}, latest {late * 1000:.1f} ms late", file=sys.stderr)
            return
        now = time.monotonic()
        for src in (fd for fd in ready if fd != alive):
            while True:
                try:
                    packet = os.read(src, 65535)
                except BlockingIOError:
                    break
                if held[src] >= LIMIT:
                    dropped += 1
                    continue  # the queue is full: drop, as netem does
                start = max(now, busy[src])
                busy[src] = start + (len(packet) * 8 / rate_bps if rate_bps else 0.0)
                held[src] += 1
                heapq.heappush(heap, (busy[src] + delay, next(seq), src, other[src], packet))
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            due, _, src, dst, packet = heapq.heappop(heap)
            late = max(late, now - due)
            held[src] -= 1
            with contextlib.suppress(OSError):
                os.write(dst, packet)


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "--wire":
    _wire(
        int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
    )
