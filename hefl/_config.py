"""Multi-host federations: a TOML description and a function to run ONE party of it.

Every host gets the same TOML file and runs its own party::

    [federation]
    heartbeat_interval = 2.0     # seconds between heartbeats (default 2; 0 = off)
    peer_timeout = 30.0          # a peer silent this long fails the federation (default 30)
    connect_timeout = 120.0      # how long to wait for every peer to come up
    max_message_bytes = 1073741824
    stream_window = 32
    curve = true                 # encrypt + authenticate (needs every party's public_key)
    protocol = "vf2boost"        # optional: what the hosts run (hefl party checks it)
    active = "alice"             # who plays which part: VF2Boost's active party,
    # aggregator = "hub"         # or BatchCrypt's aggregator (hefl party needs the one it uses)
    # insecure_transport = true  # allow addresses off this host without CURVE (plain TCP)

    [parties.alice]
    address = "tcp://10.0.0.1:7001"   # where the peers reach alice
    bind = "tcp://0.0.0.0:7001"       # optional: where alice binds (default: address)
    public_key = "Z85 public key of alice (hefl keygen)"
    secret_key_file = "keys/alice.key_secret"  # optional, only on alice's host

    [parties.bob]
    address = "tcp://10.0.0.2:7001"
    public_key = "..."

``hefl.run_party("federation.toml", "alice", role)`` then runs alice's role; relative key paths
are resolved against the TOML file's folder. Party names are the TOML keys; the order of the
``[parties.*]`` tables is the federation order (``party.peers``); it assigns no role.

Secure by default: a federation with any address (or bind address) off this host, i.e. not
loopback, ``localhost`` or ``ipc://``, must use CURVE, or say ``insecure_transport = true``
(then every party logs a warning when it starts): otherwise it is refused with a ConfigError.
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hefl._assembly import RunResult, executor_scope, loop_factory, run_party_role
from hefl._options import RunOptions, RuntimeOptions, check_name
from hefl._party import Party
from hefl.codec import DEFAULT_MAX_MESSAGE_BYTES
from hefl.crypto._orphans import check_main_guarded
from hefl.errors import ConfigError
from hefl.transports.addresses import is_local_address
from hefl.transports.curve import CurveKeyPair, check_curve_key, curve_public, load_curve_key

log = logging.getLogger("hefl")

_FEDERATION_KEYS = {
    "heartbeat_interval",
    "peer_timeout",
    "connect_timeout",
    "recv_timeout",
    "max_message_bytes",
    "stream_window",
    "curve",
    "insecure_transport",
    "protocol",
    "active",
    "aggregator",
}
#: ``[federation]`` keys that name the party playing a part (their value is a party name).
ROLE_KEYS = ("active", "aggregator")
_PARTY_KEYS = {"address", "bind", "public_key", "secret_key_file"}


@dataclass(frozen=True)
class PartySpec:
    """One party of a TOML federation.

    Attributes:
        name: the party's name (its TOML key).
        address: where peers connect to it.
        bind: where it binds its ROUTER.
        public_key: its CURVE public key (Z85), or None.
        secret_key_file: path of its CURVE secret key file (only meaningful on its host).
    """

    name: str
    address: str
    bind: str
    public_key: str | None = None
    secret_key_file: Path | None = None


@dataclass(frozen=True)
class FederationConfig:
    """A federation loaded from TOML (see the module docstring for the format).

    Attributes:
        parties: ``{name: PartySpec}`` in file order.
        options: the runtime options (heartbeats on by default for multi-host).
        max_message_bytes: the message size limit.
        curve: whether connections use CURVE.
        protocol: the protocol the file says the hosts run, or None.
        roles: who plays which part, ``{"active": name}`` / ``{"aggregator": name}`` (the
            ``[federation]`` keys ``active`` and ``aggregator`` the file sets).
        insecure_transport: the file allows plain TCP off this host.
    """

    parties: dict[str, PartySpec]
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    curve: bool = False
    protocol: str | None = None
    roles: dict[str, str] = field(default_factory=dict)
    insecure_transport: bool = False

    @property
    def names(self) -> list[str]:
        """Party names in federation order."""
        return list(self.parties)

    @property
    def exposed_address(self) -> str | None:
        """The first address or bind address off this host, or None if all are local."""
        for spec in self.parties.values():
            for addr in (spec.address, spec.bind):
                if not is_local_address(addr):
                    return addr
        return None

    def role(self, key: str) -> str:
        """The party the file names for part ``key`` (``"active"``, ``"aggregator"``).

        Raises:
            ConfigError: the file does not name one; the message says what to add.
        """
        if key not in self.roles:
            part = "active party" if key == "active" else key
            raise ConfigError(
                f"the federation file does not say which party is the {part}: add "
                f'{key} = "<one of {self.names}>" to its [federation] table'
            )
        return self.roles[key]


def load_federation(source: str | Path | Mapping[str, Any]) -> FederationConfig:
    """Load and validate a federation description.

    Args:
        source: a path to a TOML file, TOML text (containing a newline), or an already
            parsed mapping.

    Returns:
        the validated :class:`FederationConfig`.

    Raises:
        ConfigError: the file is missing or malformed, or a value is invalid (the message names
            the key).
    """
    data, base = _read_source(source)
    unknown = set(data) - {"federation", "parties"}
    if unknown:
        raise ConfigError(f"unknown top-level TOML tables {sorted(unknown)}")
    fed = data.get("federation", {})
    if not isinstance(fed, dict):
        raise ConfigError("[federation] must be a table")
    bad = set(fed) - _FEDERATION_KEYS
    if bad:
        raise ConfigError(
            f"unknown [federation] keys {sorted(bad)}; known: {sorted(_FEDERATION_KEYS)}"
        )
    curve, insecure = (_flag(fed, key) for key in ("curve", "insecure_transport"))
    parties_raw = data.get("parties")
    if not isinstance(parties_raw, dict) or len(parties_raw) < 2:
        raise ConfigError("a federation needs a [parties.<name>] table for at least two parties")
    parties = {name: _party_spec(name, spec, curve, base) for name, spec in parties_raw.items()}
    max_bytes = fed.get("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)
    if type(max_bytes) is not int or max_bytes <= 0:
        raise ConfigError(f"max_message_bytes must be a positive integer, got {max_bytes!r}")
    protocol = fed.get("protocol")
    if protocol is not None and (not isinstance(protocol, str) or not protocol):
        raise ConfigError(f"[federation] protocol must be a protocol name, got {protocol!r}")
    roles = _roles(fed, list(parties))
    options = _runtime_options(fed)
    config = FederationConfig(parties, options, max_bytes, curve, protocol, roles, insecure)
    _check_exposure(config)
    return config


def _check_exposure(config: FederationConfig) -> None:
    """Refuse plain TCP off this host unless the federation opts in explicitly."""
    exposed = config.exposed_address
    if exposed is not None and not config.curve and not config.insecure_transport:
        raise ConfigError(
            f"the federation uses {exposed}, an address off this host, without CURVE, so its "
            "traffic (keys included) would cross the network in the clear: set curve = true "
            "in [federation] with every party's public_key (hefl keygen curve), or accept "
            "plain TCP explicitly with insecure_transport = true"
        )


def _flag(fed: dict[str, Any], key: str) -> bool:
    value = fed.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"[federation] {key} must be true or false, got {value!r}")
    return value


def _roles(fed: dict[str, Any], names: list[str]) -> dict[str, str]:
    """The parts the file assigns: ``{key: party}`` for the ROLE_KEYS it sets."""
    roles = {}
    for key in ROLE_KEYS:
        if key in fed:
            if fed[key] not in names:
                raise ConfigError(
                    f"[federation] {key} = {fed[key]!r} is not a party of this federation; "
                    f"its parties: {names}"
                )
            roles[key] = fed[key]
    return roles


def _read_source(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], Path]:
    """The parsed TOML and the folder relative key paths are resolved against."""
    if isinstance(source, Mapping):
        return dict(source), Path.cwd()
    base = Path.cwd()
    text = str(source)
    if isinstance(source, Path) or "\n" not in text:
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read federation file {path}: {exc}") from exc
        base = path.resolve().parent
    try:
        return tomllib.loads(text), base
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"federation TOML is malformed: {exc}") from exc


def _party_spec(name: str, spec: Any, curve: bool, base: Path) -> PartySpec:
    """Validate one ``[parties.<name>]`` table."""
    check_name(name)
    if not isinstance(spec, dict):
        raise ConfigError(f"[parties.{name}] must be a table")
    bad = set(spec) - _PARTY_KEYS
    if bad:
        raise ConfigError(f"unknown keys {sorted(bad)} in [parties.{name}]")
    address = spec.get("address")
    if not isinstance(address, str) or not address.startswith(("tcp://", "ipc://")):
        raise ConfigError(
            f"[parties.{name}] address must be a tcp:// or ipc:// address, got {address!r}"
        )
    bind = spec.get("bind", address)
    if not isinstance(bind, str) or not bind.startswith(("tcp://", "ipc://")):
        raise ConfigError(f"[parties.{name}] bind must be a tcp:// or ipc:// address")
    public_key = spec.get("public_key")
    if public_key is not None:
        check_curve_key(public_key, f"public_key of party {name!r}")
    elif curve:
        raise ConfigError(f"curve = true but [parties.{name}] has no public_key")
    secret = spec.get("secret_key_file")
    secret_path = None
    if secret is not None:
        if not isinstance(secret, str):
            raise ConfigError(f"[parties.{name}] secret_key_file must be a path string")
        secret_path = Path(secret) if Path(secret).is_absolute() else base / secret
    return PartySpec(name, address, bind, public_key, secret_path)


def _runtime_options(fed: dict[str, Any]) -> RuntimeOptions:
    """The runtime options of ``[federation]`` (heartbeats on by default across hosts)."""
    heartbeat = fed.get("heartbeat_interval", 2.0)
    if heartbeat == 0:  # TOML has no null: 0 switches heartbeats off
        heartbeat = None
    peer_timeout = fed.get("peer_timeout", 30.0) if heartbeat is not None else None
    return RuntimeOptions(
        stream_window=fed.get("stream_window", 32),
        connect_timeout=fed.get("connect_timeout", 120.0),
        heartbeat_interval=heartbeat,
        peer_timeout=peer_timeout,
        recv_timeout=fed.get("recv_timeout"),
    )


def _resolve_keys(
    config: FederationConfig, name: str, secret_key: str | CurveKeyPair | Path | None
) -> CurveKeyPair | None:
    if not config.curve:
        if secret_key is not None:
            raise ConfigError("a secret_key was given but the federation has curve = false")
        return None
    spec = config.parties[name]
    if isinstance(secret_key, CurveKeyPair):
        keys = secret_key
    else:
        if secret_key is None:
            if spec.secret_key_file is None:
                raise ConfigError(
                    f"party {name!r} needs its CURVE secret key: pass secret_key= or set "
                    f"secret_key_file in [parties.{name}]"
                )
            secret = load_curve_key(spec.secret_key_file, "secret key")
        elif isinstance(secret_key, Path):
            secret = load_curve_key(secret_key, "secret key")
        else:
            secret = check_curve_key(secret_key, "secret key")
        keys = CurveKeyPair(spec.public_key, secret)  # type: ignore[arg-type]
    if curve_public(keys.secret) != spec.public_key:
        raise ConfigError(
            f"the secret key given for {name!r} does not match its public_key in the federation "
            "file (wrong key file?)"
        )
    return keys


async def run_party_async(
    config: FederationConfig | str | Path | Mapping[str, Any],
    name: str,
    role: Callable[[Party], Any],
    *,
    secret_key: str | CurveKeyPair | Path | None = None,
    executor: Any = "process",
    max_workers: int | None = None,
    agreement: Mapping[str, str] | None = None,
) -> RunResult:
    """Run party ``name`` of a TOML federation inside a running loop; see :func:`run_party`."""
    if not isinstance(config, FederationConfig):
        config = load_federation(config)
    if name not in config.parties:
        raise ConfigError(f"party {name!r} is not in the federation {config.names}")
    if not callable(role):
        raise ConfigError(f"role must be an async function taking a Party, got {role!r}")
    from hefl.transports.zmq import ZmqTransport

    if executor == "process":
        check_main_guarded()  # the pool's workers would re-run an unguarded script
    keys = _resolve_keys(config, name, secret_key)
    _check_exposure(config)  # also for a FederationConfig built in code
    if config.exposed_address is not None and not config.curve:
        log.warning(
            "party %r runs without CURVE over %s, an address off this host "
            "(insecure_transport = true): anyone on the network can read and inject traffic",
            name,
            config.exposed_address,
        )
    peers = [p for p in config.names if p != name]
    options = RunOptions(
        executor=executor,
        max_workers=max_workers,
        max_message_bytes=config.max_message_bytes,
        curve=config.curve,
        runtime=config.options,
        agreement=agreement,
    )
    transport = ZmqTransport(
        name,
        config.parties[name].bind,
        {p: config.parties[p].address for p in peers},
        curve=keys,
        peer_keys={p: config.parties[p].public_key for p in peers} if keys else None,  # type: ignore[misc]
        max_message_bytes=config.max_message_bytes,
    )
    try:
        await transport.start()
    except BaseException:
        await transport.close(linger=0)
        raise
    with executor_scope(executor, max_workers) as pool:
        outcome = await run_party_role(name, peers, transport, role, options, pool)
    if outcome.error is not None:
        raise outcome.error
    return RunResult({name: outcome.value}, {name: outcome.statistics}, outcome.spans)


def run_party(
    config: FederationConfig | str | Path | Mapping[str, Any],
    name: str,
    role: Callable[[Party], Any],
    *,
    secret_key: str | CurveKeyPair | Path | None = None,
    executor: Any = "process",
    max_workers: int | None = None,
    use_uvloop: bool = True,
    agreement: Mapping[str, str] | None = None,
) -> RunResult:
    """Run ONE party of a federation described in TOML (multi-host use).

    Args:
        config: a :class:`FederationConfig`, a TOML path or text, or a parsed mapping.
        name: which party this process is.
        role: its role, ``async def role(party)``.
        secret_key: this party's CURVE secret key (Z85 text, a key file Path, or a
            :class:`CurveKeyPair`); defaults to ``secret_key_file`` from the TOML.
        executor, max_workers: where :meth:`Party.offload` runs (see :func:`hefl.run`).
        use_uvloop: run on uvloop when installed.
        agreement: values every party must share, ``{field: value}`` (e.g. the protocol and
            its version, who is the active party or the aggregator, a digest of the protocol
            configuration). Parties compare them and the hefl version in the handshake; a
            difference fails every party at once with a ConfigError naming the field, both
            values and the peer (a party told of it by a peer first raises PeerFailed
            carrying the same message).

    Returns:
        a :class:`RunResult` ``{name: return value}`` with this party's statistics and trace.

    Raises:
        ConfigError: invalid file, unknown party, missing or mismatched keys, or a peer that
            disagrees on ``agreement`` or the hefl version.
        TransportBroken: the bind address is in use.
        PeerFailed: another party failed, died or went silent past ``peer_timeout``, or did not
            come up within ``connect_timeout``.
    """
    with asyncio.Runner(loop_factory=loop_factory(use_uvloop)) as runner:
        return runner.run(
            run_party_async(
                config,
                name,
                role,
                secret_key=secret_key,
                executor=executor,
                max_workers=max_workers,
                agreement=agreement,
            )
        )


__all__ = ["FederationConfig", "PartySpec", "load_federation", "run_party", "run_party_async"]
