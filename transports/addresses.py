"""Which addresses keep traffic on this machine.

A link whose traffic never leaves the host (in-process, a Unix socket, the loopback
interface) cannot be read on the network, so it is as confidential as a CURVE-encrypted one.
Names are not resolved: ``localhost`` counts as loopback, any other host name does not (a name
may resolve differently on each host, so only what the address itself says is trusted).
"""

from __future__ import annotations

import ipaddress

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_local_address(address: str) -> bool:
    """Whether traffic to or from ``address`` stays on this host.

    Args:
        address: a ZeroMQ endpoint (``tcp://host:port``, ``ipc://path``, ``inproc://name``).

    Returns:
        True for ``ipc://`` and ``inproc://`` endpoints and for ``tcp://`` endpoints on a
        loopback address (127.0.0.0/8, ``::1``, ``localhost``); False for anything else,
        including wildcards (``*``, ``0.0.0.0``) that listen on every interface.
    """
    if address.startswith(("ipc://", "inproc://")):
        return True
    if not address.startswith("tcp://"):
        return False
    host = address[len("tcp://") :].rsplit(":", 1)[0]
    if ";" in host:  # "source;destination" form: the destination decides
        host = host.rsplit(";", 1)[1]
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["is_local_address"]
