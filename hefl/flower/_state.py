"""What a client keeps between hefl steps, in its Flower ``Context.state`` (client-side only).

The session record holds the client's X25519 secret, the roster, the peers' public keys and
the Paillier private key; the global-model record holds the model the clients agree on (the
server never has it after the first round); the round record holds what one round carries from
step to step. Parsed private keys are cached per process, so the CRT tables are built once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context

from hefl.crypto import PrivateKey, PublicKey
from hefl.errors import ProtocolError
from hefl.flower._sealing import BoxKeys

SESSION = "hefl.flower.session"
GLOBAL = "hefl.flower.global"
ROUND = "hefl.flower.round"
UPDATE = "hefl.flower.update"

_KEY_CACHE: dict[str, PrivateKey] = {}


@dataclass(frozen=True)
class Session:
    """A client's view of its hefl session.

    Attributes:
        session: the session id the server chose.
        node: this client's Flower node id.
        box: this client's X25519 key pair.
        roster: every client's node id, in the agreed order (``roster[0]`` made the keys).
        publics: every client's X25519 public key, in roster order.
        secret_json: the Paillier private key as JSON ("" until the key arrived).
    """

    session: str
    node: int
    box: BoxKeys
    roster: tuple[int, ...] = ()
    publics: tuple[bytes, ...] = ()
    secret_json: str = ""

    def keys(self) -> tuple[PublicKey, PrivateKey]:
        """The session's Paillier keys.

        Raises:
            ProtocolError: the key has not arrived yet.
        """
        if not self.secret_json:
            raise ProtocolError(
                f"node {self.node} has no Paillier key yet in session {self.session}"
            )
        sk = _KEY_CACHE.get(self.secret_json)
        if sk is None:
            sk = _KEY_CACHE.setdefault(self.secret_json, PrivateKey.from_json(self.secret_json))
        return sk.public_key, sk

    def peer_public(self, node: int) -> bytes:
        """The X25519 public key of ``node``.

        Raises:
            ProtocolError: ``node`` is not in the roster.
        """
        if node not in self.roster:
            raise ProtocolError(f"node {node} is not a client of session {self.session}")
        return self.publics[self.roster.index(node)]


def save_session(context: Context, s: Session) -> None:
    """Keep ``s`` in the client's context."""
    context.state[SESSION] = ConfigRecord(
        {
            "session": s.session,
            "node": s.node,
            "box_secret": s.box.secret,
            "box_public": s.box.public,
            "roster": list(s.roster),
            "publics": list(s.publics),
            "secret_json": s.secret_json,
        }
    )


def load_session(context: Context, session: str) -> Session:
    """The client's session ``session``.

    Raises:
        ProtocolError: this client has no such session (it missed the hello, or the server
            mixes sessions).
    """
    rec = context.state.config_records.get(SESSION)
    if rec is None or rec.get("session") != session:
        raise ProtocolError(
            f"node {context.node_id} has no hefl session {session!r}; it missed the set-up"
        )
    return Session(
        session=str(rec["session"]),
        node=int(rec["node"]),  # type: ignore[arg-type]
        box=BoxKeys(secret=rec["box_secret"], public=rec["box_public"]),  # type: ignore[arg-type]
        roster=tuple(rec["roster"]),  # type: ignore[arg-type]
        publics=tuple(rec["publics"]),  # type: ignore[arg-type]
        secret_json=str(rec["secret_json"]),
    )


def has_session(context: Context) -> bool:
    """Whether this client has joined a hefl session."""
    return SESSION in context.state.config_records


def global_arrays(context: Context) -> ArrayRecord:
    """The global model this client holds (what the federation agreed on last).

    Args:
        context: the ClientApp's Context.

    Returns:
        The model as an ArrayRecord (a copy).

    Raises:
        ProtocolError: the client has not joined a hefl session.
    """
    rec = context.state.array_records.get(GLOBAL)
    if rec is None:
        raise ProtocolError(f"node {context.node_id} holds no hefl global model yet")
    return ArrayRecord({k: Array(v.numpy().copy()) for k, v in rec.items()})


def save_global(context: Context, arrays: ArrayRecord) -> None:
    """Keep ``arrays`` as this client's global model."""
    context.state[GLOBAL] = ArrayRecord({k: Array(v.numpy().copy()) for k, v in arrays.items()})


def save_round(context: Context, **fields: Any) -> None:
    """Merge ``fields`` into the round record."""
    rec = context.state.config_records.get(ROUND) or ConfigRecord()
    for k, v in fields.items():
        rec[k] = v
    context.state[ROUND] = rec


def load_round(context: Context, round_: int) -> ConfigRecord:
    """The round record, checked to belong to ``round_``.

    Raises:
        ProtocolError: this client did not take part in the earlier steps of ``round_``.
    """
    rec = context.state.config_records.get(ROUND)
    if rec is None or rec.get("round") != round_:
        raise ProtocolError(f"node {context.node_id} missed the earlier steps of round {round_}")
    return rec


def save_update(context: Context, u: np.ndarray) -> None:
    """Keep this round's weighted update until it is encrypted."""
    context.state[UPDATE] = ArrayRecord({"u": Array(np.ascontiguousarray(u, dtype=np.float64))})


def pop_update(context: Context) -> np.ndarray:
    """Take back (and forget) this round's weighted update.

    Raises:
        ProtocolError: there is none (the client missed the round's train step).
    """
    rec = context.state.array_records.get(UPDATE)
    if rec is None:
        raise ProtocolError(f"node {context.node_id} has no update for this round")
    del context.state[UPDATE]
    return np.asarray(rec["u"].numpy(), dtype=np.float64)
