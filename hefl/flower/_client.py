"""The client side: a Flower mod that runs hefl's steps around the ClientApp's own functions.

``ClientApp(mods=[batchcrypt_mod(cfg)])`` is the one change a client needs. The mod answers
the set-up steps itself (X25519 keys, Paillier key agreement), runs the app's unchanged
``@app.train()`` function on the global model it holds, and turns the trained model into an
encrypted, quantized update (:mod:`hefl.flower._round`). ``evaluate`` messages get the global
model the client holds put in as their ``"arrays"``, so ``@app.evaluate()`` stays unchanged too.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from hefl import crypto
from hefl.errors import ConfigError, HeflError, KeyMismatchError, ProtocolError
from hefl.flower import _legacy, _round
from hefl.flower._sealing import BoxKeys, open_box, seal
from hefl.flower._state import Session, has_session, load_session, save_global, save_session
from hefl.flower._state import global_arrays as held_arrays
from hefl.flower._wire import (
    ARRAYS_KEY,
    check_config,
    content,
    error_reply,
    field,
    fingerprint,
    fingerprint_diff,
    public_key_bytes,
    public_key_from,
    step_of,
    step_record,
)
from hefl.protocols.batchcrypt.config import BatchCryptConfig

CallNext = Callable[[Message, Context], Message]
KEY_PURPOSE = "paillier-key"


class BatchCryptMod:
    """A Flower client mod running hefl's BatchCrypt steps (see the module docs).

    Args:
        cfg: the federation's BatchCryptConfig; must match the server's (refused otherwise).
        weight_key: the train reply's metric that weights the client in the average
            (Flower's FedAvg uses ``"num-examples"``).
        threads: threads decrypting this client's slice of the aggregate (GIL-free
            modular exponentiations); all cores by default.

    Raises:
        ConfigError: ``cfg`` is not a BatchCryptConfig of mode ``"batchcrypt"``, or a bad
            ``threads``.
    """

    def __init__(
        self, cfg: BatchCryptConfig, weight_key: str = "num-examples", threads: int = 0
    ) -> None:
        self.cfg = check_config(cfg)
        self.weight_key = weight_key
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ConfigError(f"threads must be an integer >= 0 (0: all cores), not {threads!r}")
        self.threads = threads or os.cpu_count() or 1

    def __call__(self, msg: Message, context: Context, call_next: CallNext) -> Message:
        """Handle a hefl step, or pass an ordinary message on to the app.

        Returns:
            The reply; a hefl failure becomes a Flower Error reply naming its hefl class.
        """
        step = step_of(msg)
        if step is None:
            if msg.metadata.message_type.startswith("evaluate") and has_session(context):
                return self._evaluate(msg, context, call_next)
            return call_next(msg, context)
        try:
            return self._dispatch(msg, context, call_next, step)
        except HeflError as exc:
            return error_reply(msg, exc)

    def _dispatch(
        self, msg: Message, context: Context, call_next: CallNext, step: ConfigRecord
    ) -> Message:
        name = field(step, "step", str, "the server")
        session = field(step, "session", str, "the server")
        if name == "hello":
            out = self._hello(msg, context, step)
        elif name == "keygen":
            out = self._keygen(load_session(context, session), context, step)
        elif name == "key":
            out = self._key(load_session(context, session), context, step)
        else:
            s = load_session(context, session)
            out = _round.handle(self, s, msg, context, call_next, step)
        return Message(out, reply_to=msg)

    def _hello(self, msg: Message, context: Context, step: ConfigRecord) -> RecordDict:
        theirs = field(step, "fingerprint", str, "the server")
        mine = fingerprint(self.cfg)
        if theirs != mine:
            raise ConfigError(
                f"node {context.node_id}: the server's hefl config differs from this client's "
                f"({fingerprint_diff(theirs, mine)})"
            )
        arrays = msg.content.array_records.get(ARRAYS_KEY)
        if not isinstance(arrays, ArrayRecord):
            raise ProtocolError("the server's hello carries no initial model 'arrays'")
        box = BoxKeys.generate()
        save_session(context, Session(session=str(step["session"]), node=context.node_id, box=box))
        save_global(context, arrays)
        reply = step_record("hello", str(step["session"]), 0, fingerprint=mine, public=box.public)
        return content(reply)

    def _roster(self, s: Session, step: ConfigRecord) -> Session:
        roster = tuple(int(v) for v in field(step, "roster", list, "the server"))
        publics = tuple(field(step, "publics", list, "the server"))
        if len(roster) != self.cfg.n_clients or len(publics) != len(roster):
            raise ProtocolError(
                f"the server's roster has {len(roster)} nodes and {len(publics)} keys, "
                f"expected {self.cfg.n_clients}"
            )
        if len(set(roster)) != len(roster) or len(set(publics)) != len(publics):
            raise ProtocolError("the server's roster repeats a node or an X25519 key")
        if s.node not in roster or publics[roster.index(s.node)] != s.box.public:
            raise ProtocolError(f"the server's roster misses node {s.node} or its key")
        return Session(s.session, s.node, s.box, roster, publics, s.secret_json)

    def _keygen(self, s: Session, context: Context, step: ConfigRecord) -> RecordDict:
        s = self._roster(s, step)
        if s.roster[0] != s.node:
            raise ProtocolError(f"node {s.node} was asked to make the keys but is not first")
        cfg = self.cfg
        pk, sk = crypto.generate_keypair(cfg.key_bits, allow_insecure=cfg.allow_insecure)
        secret = sk.to_json().encode()
        boxes = [
            b""
            if peer == s.node
            else seal(s.box, pub, s.session, KEY_PURPOSE, s.node, peer, secret)
            for peer, pub in zip(s.roster, s.publics, strict=True)
        ]
        save_session(context, Session(s.session, s.node, s.box, s.roster, s.publics, sk.to_json()))
        reply = step_record(
            "keygen", s.session, 0, n=public_key_bytes(pk), boxes=boxes, key_id=pk.key_id.hex()
        )
        return content(reply)

    def _key(self, s: Session, context: Context, step: ConfigRecord) -> RecordDict:
        s = self._roster(s, step)
        holder = s.roster[0]
        pk = public_key_from(field(step, "n", bytes, "the server"), self.cfg, f"node {holder}")
        sealed = field(step, "box", bytes, "the server")
        secret = open_box(
            s.box, s.peer_public(holder), s.session, KEY_PURPOSE, holder, s.node, sealed
        )
        try:
            sk = crypto.PrivateKey.from_json(secret)
        except HeflError as exc:
            raise ProtocolError(f"node {holder} sent a malformed Paillier key: {exc}") from exc
        if sk.public_key != pk:
            raise KeyMismatchError(
                f"the key node {holder} sealed for node {s.node} is {sk.public_key.key_id.hex()}, "
                f"but the server announced {pk.key_id.hex()}"
            )
        save_session(context, Session(s.session, s.node, s.box, s.roster, s.publics, sk.to_json()))
        return content(step_record("key", s.session, 0, key_id=pk.key_id.hex()))

    def _evaluate(self, msg: Message, context: Context, call_next: CallNext) -> Message:
        msg.content = _legacy.evaluate_content(msg.content, held_arrays(context))
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        return Message(_legacy.evaluated(reply.content, self.weight_key), reply_to=msg)


def batchcrypt_mod(
    cfg: BatchCryptConfig, weight_key: str = "num-examples", threads: int = 0
) -> BatchCryptMod:
    """The client mod that makes a Flower ClientApp take part in BatchCrypt aggregation.

    Args:
        cfg: the federation's configuration (the same as the server strategy's).
        weight_key: the train reply's metric weighting the client (``"num-examples"``).
        threads: threads decrypting the client's slice of the aggregate (0: all cores).

    Returns:
        A mod for ``ClientApp(mods=[...])``.

    Raises:
        ConfigError: ``cfg`` is not a BatchCryptConfig of mode ``"batchcrypt"``, or bad
            ``threads``.
    """
    return BatchCryptMod(cfg, weight_key, threads)
