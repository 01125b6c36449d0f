"""hefl: homomorphic-encryption federated learning.

The public namespaces are ``hefl`` (runtime and errors), ``hefl.crypto``, ``hefl.codec``,
``hefl.transports``, ``hefl.protocols.batchcrypt`` and ``hefl.protocols.vf2boost``.
"""

from hefl._config import FederationConfig, PartySpec, load_federation, run_party, run_party_async
from hefl._dask import placement_executor
from hefl._executor import Executor, InlineExecutor, LazyProcessPool, cpu_count
from hefl._federation import RunResult, run, run_async
from hefl._options import RuntimeOptions
from hefl._party import Party
from hefl._streams import StreamReceiver, StreamSender
from hefl._tasks import task_group
from hefl._tracing import Span, Trace, Tracer, merge_statistics
from hefl._version import __version__
from hefl.errors import (
    CiphertextRangeError,
    CodecError,
    ConfigError,
    CryptoError,
    HeflError,
    KeyMismatchError,
    PackingOverflowError,
    PeerFailed,
    PlaintextRangeError,
    ProtocolError,
    TransportBroken,
    TransportClosed,
    TransportError,
)
from hefl.transports.curve import (
    CurveKeyPair,
    generate_curve_keypair,
    load_curve_keypair,
    save_curve_keypair,
)


def __getattr__(name: str) -> object:
    # DaskExecutor is optional (hefl[dask]): imported on first use, so importing hefl never
    # imports dask
    if name == "DaskExecutor":
        from hefl._dask import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module 'hefl' has no attribute {name!r}")


__all__ = [
    "CiphertextRangeError",
    "CodecError",
    "ConfigError",
    "CryptoError",
    "CurveKeyPair",
    "DaskExecutor",
    "Executor",
    "FederationConfig",
    "HeflError",
    "InlineExecutor",
    "KeyMismatchError",
    "LazyProcessPool",
    "PackingOverflowError",
    "Party",
    "PartySpec",
    "PeerFailed",
    "PlaintextRangeError",
    "ProtocolError",
    "RunResult",
    "RuntimeOptions",
    "Span",
    "StreamReceiver",
    "StreamSender",
    "Trace",
    "Tracer",
    "TransportBroken",
    "TransportClosed",
    "TransportError",
    "__version__",
    "cpu_count",
    "generate_curve_keypair",
    "load_curve_keypair",
    "load_federation",
    "merge_statistics",
    "placement_executor",
    "run",
    "run_async",
    "run_party",
    "run_party_async",
    "save_curve_keypair",
    "task_group",
]
