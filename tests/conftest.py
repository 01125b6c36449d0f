"""Fixtures shared by every test package."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest


@pytest.fixture(scope="session")
def free_ports() -> Callable[[int], list[int]]:
    """``free_ports(k)``: k TCP ports on 127.0.0.1 that were free a moment ago."""

    def pick(count: int) -> list[int]:
        socks = [socket.socket() for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        ports = [s.getsockname()[1] for s in socks]
        for s in socks:
            s.close()
        return ports

    return pick
