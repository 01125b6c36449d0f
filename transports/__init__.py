"""Transports: how parties move frames (in-process queues, ZeroMQ).

``hefl.transports`` lives in the repository's top-level ``transports/`` folder (mapped into the
``hefl`` namespace by setuptools).
"""

from .base import Buffer, Transport
from .inproc import InprocNetwork, InprocTransport

__all__ = ["Buffer", "InprocNetwork", "InprocTransport", "Transport"]
