"""Options of a federation run, validated once where they enter.

:class:`RuntimeOptions` are the tunables every party of a federation shares (stream window,
timeouts, heartbeats, buffer limits). :class:`RunOptions` adds how a run is set up (executor,
message size limit, CURVE, event loop) and is the one object :func:`hefl.run`,
:func:`hefl.run_async`, the process runner and :func:`hefl.run_party` pass along, instead of
each repeating the same long argument list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypedDict

from hefl._agreement import check_agreement
from hefl.codec import DEFAULT_MAX_MESSAGE_BYTES
from hefl.errors import ConfigError


@dataclass(frozen=True)
class RuntimeOptions:
    """Tunables of the runtime shared by all parties of a federation.

    Attributes:
        stream_window: a stream producer waits when this many chunks are unconsumed.
        connect_timeout: seconds to wait for every peer to come up before failing.
        heartbeat_interval: seconds between heartbeats; None disables heartbeats.
        peer_timeout: a peer silent this long is declared failed (needs heartbeats).
        recv_timeout: default timeout of every receive; None waits as long as peers live.
        max_buffered_messages: how many messages one peer may have waiting in this party's
            buffers (delivered, not yet received by the role). More fails the federation
            naming that peer: a flood, or messages under a tag nobody receives, must not grow
            memory without bound. Streams stay far below it (their credit window).
        max_buffered_bytes: the same limit in bytes.

    Raises:
        ConfigError: a value is out of range, or only one of heartbeat_interval and
            peer_timeout is set.
    """

    stream_window: int = 32
    connect_timeout: float = 30.0
    heartbeat_interval: float | None = None
    peer_timeout: float | None = None
    recv_timeout: float | None = None
    max_buffered_messages: int = 100_000
    max_buffered_bytes: int = 1 << 31

    def __post_init__(self) -> None:
        for name in ("stream_window", "max_buffered_messages", "max_buffered_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        for name in ("connect_timeout", "heartbeat_interval", "peer_timeout", "recv_timeout"):
            value = getattr(self, name)
            if value is None and name != "connect_timeout":
                continue
            _check_seconds(name, value)
        if (self.peer_timeout is None) != (self.heartbeat_interval is None):
            raise ConfigError("peer_timeout and heartbeat_interval must be set together")
        if self.peer_timeout is not None and self.peer_timeout <= 2 * (
            self.heartbeat_interval or 0
        ):
            raise ConfigError("peer_timeout must exceed twice the heartbeat_interval")


class RunKeywords(TypedDict, total=False):
    """The keyword arguments :func:`hefl.run` and :func:`hefl.run_async` take besides the
    roles, ``transport`` and ``processes`` (see :func:`hefl.run` for their meaning)."""

    executor: Any
    max_workers: int | None
    timeout: float | None
    max_message_bytes: int
    curve: bool
    use_uvloop: bool
    stream_window: int | None
    connect_timeout: float | None
    heartbeat_interval: float | None
    peer_timeout: float | None
    recv_timeout: float | None
    max_buffered_messages: int | None
    max_buffered_bytes: int | None
    agreement: Mapping[str, str] | Mapping[str, Mapping[str, str]] | None


@dataclass(frozen=True)
class RunOptions:
    """How a federation (or one party of it) runs.

    Attributes:
        executor: where ``Party.offload`` runs work: ``"process"``, ``"thread"``,
            ``"inline"``, a ``concurrent.futures.Executor`` or a :class:`hefl.DaskExecutor`;
            or a mapping ``{party name: one of these}`` (parties it leaves out get a process
            pool).
        max_workers: pool size of a ``"process"``/``"thread"`` executor.
        timeout: fail if the whole federation takes longer (seconds); None: no limit.
        max_message_bytes: refuse messages larger than this (both ways).
        curve: with ZeroMQ, encrypt and authenticate connections with CURVE.
        use_uvloop: run on uvloop when it is installed.
        runtime: the :class:`RuntimeOptions` every party shares.
        agreement: values every party must share, ``{field: value}`` (strings), e.g. the
            protocol and its version, the role assignment, a digest of the protocol
            configuration. Parties exchange them (and the hefl version, always) in the
            handshake; any difference fails every party within about a second with a
            :class:`~hefl.errors.ConfigError` naming the field, both values and the peer.
            ``{party name: {field: value}}`` gives each party its own values (for tests).

    Raises:
        ConfigError: a value is invalid.
    """

    executor: Any = "process"
    max_workers: int | None = None
    timeout: float | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    curve: bool = False
    use_uvloop: bool = True
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    agreement: Mapping[str, str] | Mapping[str, Mapping[str, str]] | None = None

    def __post_init__(self) -> None:
        if self.agreement is not None:
            object.__setattr__(self, "agreement", _check_agreements(self.agreement))
        if self.timeout is not None:
            _check_seconds("timeout", self.timeout)
        if type(self.max_message_bytes) is not int or self.max_message_bytes <= 0:
            raise ConfigError(
                f"max_message_bytes must be a positive int, got {self.max_message_bytes!r}"
            )
        if not isinstance(self.curve, bool):
            raise ConfigError(f"curve must be True or False, got {self.curve!r}")
        if isinstance(self.executor, Mapping):
            for name in self.executor:
                check_name(name, "party name in executor=")
        elif self.max_workers is not None and self.executor not in ("process", "thread"):
            raise ConfigError(
                f"max_workers sizes a 'process' or 'thread' executor; it cannot apply to "
                f"executor={self.executor!r} (leave max_workers out, or size that executor "
                "yourself)"
            )

    def agreement_of(self, name: str) -> dict[str, str]:
        """The agreement values party ``name`` sends (without the hefl version)."""
        values = self.agreement or {}
        if values and all(isinstance(v, Mapping) for v in values.values()):
            return dict(values.get(name, {}))  # type: ignore[arg-type]
        return dict(values)  # type: ignore[arg-type]

    @classmethod
    def from_keywords(cls, keywords: RunKeywords | dict[str, Any]) -> RunOptions:
        """Build the options from :func:`hefl.run`'s keyword arguments.

        Runtime tunables left None keep their defaults.

        Raises:
            ConfigError: an unknown keyword, or an invalid value.
        """
        run_names = {f.name for f in fields(cls)} - {"runtime"}
        runtime_names = {f.name for f in fields(RuntimeOptions)}
        unknown = set(keywords) - run_names - runtime_names
        if unknown:
            raise ConfigError(
                f"unknown option(s) {sorted(unknown)}; known: {sorted(run_names | runtime_names)}"
            )
        given: dict[str, Any] = dict(keywords)
        runtime = {k: v for k, v in given.items() if k in runtime_names and v is not None}
        own = {k: v for k, v in given.items() if k in run_names}
        return cls(**own, runtime=RuntimeOptions(**runtime))


def check_name(name: Any, what: str = "party name") -> str:
    """Validate a party name (it is a ZeroMQ routing id and a TOML key).

    Returns:
        the name.

    Raises:
        ConfigError: if the name is not a short non-empty printable string.
    """
    if (
        not isinstance(name, str)
        or not name
        or len(name.encode()) > 200
        or not name.isprintable()
        or name != name.strip()
    ):
        raise ConfigError(
            f"{what} must be a non-empty printable string without edge spaces, got {name!r}"
        )
    return name


def _check_agreements(values: Any) -> dict[str, Any]:
    if (
        isinstance(values, Mapping)
        and values
        and all(isinstance(v, Mapping) for v in values.values())
    ):
        return {check_name(k): check_agreement(v, f"agreement of {k!r}") for k, v in values.items()}
    return check_agreement(values)


def _check_seconds(name: str, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")


__all__ = ["RunKeywords", "RunOptions", "RuntimeOptions", "check_name"]
