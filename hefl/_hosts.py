"""What ``hefl party`` and ``hefl keygen curve`` do for one host of a multi-host federation.

The federation file says what runs and who plays which part (``protocol``, VF2Boost's
``active`` party, BatchCrypt's ``aggregator``); this module turns that and the protocol flags
into the role this host runs and the values every host must agree on at the handshake, and
makes the CURVE keys that secure the federation. The command line (:mod:`hefl.cli`) only
parses flags and maps errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hefl._config import FederationConfig
from hefl.errors import ConfigError

PROTOCOLS = ("vf2boost", "batchcrypt")


def party_protocol(given: str | None, stated: str | None, config: Path) -> str:
    """The protocol ``hefl party`` runs: ``--protocol``, or the federation file's ``protocol``.

    Raises:
        ConfigError: neither says it, they differ, or the file names an unknown protocol.
    """
    if given is not None and stated is not None and given != stated:
        raise ConfigError(f"--protocol {given} contradicts protocol = {stated!r} in {config}")
    protocol = given or stated
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"say which protocol to run: --protocol vf2boost|batchcrypt, or protocol = "
            f'"vf2boost" in the [federation] table of {config} (it has {protocol!r})'
        )
    return protocol


def vf2boost_party(args: Any, federation: FederationConfig, cfg: Any) -> tuple[Any, dict]:
    """The VF2Boost role of this host and its agreement; the file names the active party.

    Args:
        args: the parsed ``hefl party`` flags (``name``, ``config``, ``rows``,
            ``paillier_key``, ``protocol``).
        federation: the loaded federation file.
        cfg: the :class:`VF2BoostConfig` the flags ask for.

    Returns:
        ``(role, agreement)``.

    Raises:
        ConfigError: the file names no active party, or --paillier-key on a passive party.
    """
    from hefl import _demos

    active = federation.role("active")
    order = [active, *(n for n in federation.names if n != active)]
    keypair = None
    if args.paillier_key is not None:
        if args.name != active:
            raise ConfigError(
                f"--paillier-key is for the active party, {active!r} in {args.config}; "
                f"{args.name!r} is passive"
            )
        keypair = load_paillier(args.paillier_key, cfg.key_bits)
    role = _demos.vf2boost_party_role(order, args.name, cfg, rows=args.rows, keypair=keypair)
    roles = f"active={active}; passive={','.join(order[1:])}"
    return role, agreement(args.protocol, roles, cfg, {"rows": args.rows})


def batchcrypt_party(args: Any, federation: FederationConfig, cfg: Any) -> tuple[Any, dict]:
    """The BatchCrypt role of this host and its agreement; the file names the aggregator, and
    the clients, named freely, take their data shards in the protocol's client order.

    Args:
        args: the parsed ``hefl party`` flags (``name``, ``config``, ``model``, ``rounds``,
            ``protocol``).
        federation: the loaded federation file.
        cfg: the :class:`BatchCryptConfig` the flags ask for (one client per other party).

    Returns:
        ``(role, agreement)``.

    Raises:
        ConfigError: the file names no aggregator.
    """
    from hefl.protocols.batchcrypt import TrainSpec, party_role
    from hefl.protocols.batchcrypt.federation import client_order

    aggregator = federation.role("aggregator")
    cfg = cfg.with_(aggregator=aggregator)
    clients = client_order(n for n in federation.names if n != aggregator)
    spec = TrainSpec(dataset="adult", model=args.model, rounds=args.rounds)
    name = args.name if args.name == aggregator else cfg.clients[clients.index(args.name)]
    roles = f"aggregator={aggregator}; clients={','.join(clients)}"
    return party_role(name, cfg, spec), agreement(args.protocol, roles, cfg, spec)


def agreement(protocol: str, roles: str, *config: Any) -> dict[str, str]:
    """What every host of a ``hefl party`` federation must share: the protocol (versioned with
    hefl, whose version the runtime compares anyway), who plays which part and a digest of
    the protocol configuration (the protocol flags)."""
    from hefl._agreement import config_digest

    return {"protocol": protocol, "roles": roles, "config": config_digest(*config)}


def load_paillier(path: Path, key_bits: int) -> Any:
    """The ``(public, private)`` Paillier keys of a key file made by ``hefl keygen paillier``.

    Raises:
        ConfigError: the key's size differs from ``key_bits`` (--bits).
    """
    from hefl.crypto import PrivateKey

    sk = PrivateKey.from_json(path.read_text())
    if sk.public_key.n_bits != key_bits:
        raise ConfigError(
            f"{path} holds a {sk.public_key.n_bits}-bit key but --bits is {key_bits}; "
            "pass the same --bits on every host"
        )
    return sk.public_key, sk


def keygen_curve(names: list[str], out: Path) -> int:
    """One CURVE keypair per party, and the federation TOML lines that enrol them.

    Returns:
        the exit code (0).

    Raises:
        ConfigError: an invalid or repeated party name.
    """
    from hefl import generate_curve_keypair, save_curve_keypair
    from hefl._options import check_name

    for name in names:
        check_name(name)
    if len(set(names)) != len(names):
        raise ConfigError(f"--name repeats a party: {names}")
    print("# federation.toml: add to [federation]\ncurve = true")
    for name in names:
        keys = generate_curve_keypair()
        public, secret = save_curve_keypair(keys, out, name)
        print(f"\n# wrote {public} and {secret}: copy {secret.name} to {name}'s host only")
        print(f'[parties.{name}]\npublic_key = "{keys.public}"')
        print(f'secret_key_file = "{secret}"')
    return 0


__all__ = [
    "agreement",
    "batchcrypt_party",
    "keygen_curve",
    "load_paillier",
    "party_protocol",
    "vf2boost_party",
]
