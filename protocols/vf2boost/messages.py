"""The VF2Boost wire messages: one frozen dataclass per message, with its tag and its checks.

Setup and prediction (one exchange each):

* :class:`Hello` ``vf2/hello``: passive -> active, its row and feature counts and its config.
* :class:`Setup` ``vf2/setup``: active -> passive, the public key, its index and the row count.
* :class:`Predict` ``vf2/predict``: passive -> active, its leaf masks of the rows to score.

Per round ``r`` with an eval set:

* :class:`Evaluate` ``vf2/eval/{r}``: passive -> active, its leaf masks of the eval rows for
  the round's trees.
* :class:`Verdict` ``vf2/verdict/{r}``: active -> passive, whether training stops and the best
  round so far (early stopping).

Per tree ``t`` and layer ``d``:

* :class:`Gradients` ``vf2/gh/{t}``: active -> passive, the encrypted g‖h (a stream of chunks
  with ``blaster``, one message without).
* :class:`Layer` ``vf2/layer/{t}/{d}``: active -> passive, the last layer's splits and the
  open nodes (with the tree's structure when none is left open).
* :class:`Spec` ``vf2/spec/{t}/{d}``: active -> passive, tentative splits (``optimistic``).
* :class:`Hist` ``vf2/hist/{t}/{d}/{node}``: passive -> active, one node's sealed candidates.
* :class:`Win` ``vf2/win/{t}/{d}``: active -> passive, the winning ids among its candidates.
* :class:`Place` ``vf2/place/{t}/{d}``: passive -> active, the rows of each won node going left.

``Msg.from_wire(sender, obj)`` is the one place a received message is checked: a wrong type,
length or range raises :class:`~hefl.errors.ProtocolError` naming the sender, the message and
the field. Messages that carry ciphertexts (:class:`Gradients`, :class:`Hist`) are read with
the training's :class:`Session` and raise :class:`~hefl.errors.KeyMismatchError` for
ciphertexts under another key. The tag strings are part of the wire protocol (fault-injection
tests match them): change them only together with every peer.

The field checks below raise TypeError/ValueError, as :func:`hefl.messages.check_int` does:
``Fields.get`` turns them into the ProtocolError naming the sender, the message and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from hefl.crypto import PublicKey
from hefl.errors import ProtocolError
from hefl.messages import Fields, Message, check_array, check_int
from hefl.protocols.vf2boost.encgh import EncGH
from hefl.protocols.vf2boost.session import Session, SessionMessage, read_enc


def refuse(sender: str, kind: type[Message], field: str, why: str) -> ProtocolError:
    """The error (to raise) for a field that is well-formed but wrong in the receiver's state.

    Args:
        sender: the party that sent the message.
        kind: the message class.
        field: the field at fault.
        why: what is wrong with it ("names node 7, which is not open").
    """
    return ProtocolError(
        f"{sender} sent a malformed {kind.__name__} message: field {field!r} {why}"
    )


def _bits(value: Any) -> np.ndarray:
    """A bit-packed row mask: a 1-D uint8 array."""
    return check_array(value, kinds="u", ndim=1).astype(np.uint8, copy=False)


def _unique_ids(value: Any) -> np.ndarray:
    """A 1-D integer array of distinct values."""
    ids = check_array(value, kinds="iu", ndim=1).astype(np.int64, copy=False)
    if len(np.unique(ids)) != len(ids):
        raise ValueError("must not repeat an id")
    return ids


# ---------------------------------------------------------------------------------------------
# setup


@dataclass(frozen=True)
class Hello(Message):
    """A passive party's greeting: its row and feature counts, its config and its eval rows."""

    TAG: ClassVar[str] = "vf2/hello"
    n_rows: int
    n_features: int
    config: dict[str, Any]
    n_eval_rows: int = 0

    @classmethod
    def parse(cls, f: Fields) -> Self:
        return cls(
            f.integer("n_rows", min=1),
            f.integer("n_features", min=0),
            f.mapping("config"),
            f.integer("n_eval_rows", min=0),
        )


@dataclass(frozen=True)
class Setup(Message):
    """The active party's answer: the training's public key, the party's index, the rows."""

    TAG: ClassVar[str] = "vf2/setup"
    public_key: PublicKey
    index: int
    n_rows: int

    @classmethod
    def parse(cls, f: Fields) -> Self:
        return cls(
            f.public_key("public_key"), f.integer("index", min=1), f.integer("n_rows", min=1)
        )


# ---------------------------------------------------------------------------------------------
# encrypted payloads


@dataclass(frozen=True)
class Gradients(SessionMessage):
    """Encrypted g‖h of consecutive rows (one stream chunk, or every row at once)."""

    TAG: ClassVar[str] = "vf2/gh/{t}"
    enc: EncGH

    @classmethod
    def parse(cls, f: Fields) -> Self:
        session = cls.session_of(f)

        def check(v: Any) -> EncGH:
            enc = read_enc(session, v)
            if not 1 <= len(enc) <= session.max_rows:
                raise ValueError(f"must hold 1 to {session.max_rows} rows, got {len(enc)}")
            return enc

        return cls(f.get("enc", check))


@dataclass(frozen=True)
class Hist(SessionMessage):
    """One open node's sealed candidates: fresh random ids, then the (G, H) entries.

    ``enc`` holds the cumulative sums of the candidates in ``ids`` order, followed by each of
    the sender's features' totals (Horner-packed when the session says so).
    """

    TAG: ClassVar[str] = "vf2/hist/{t}/{d}/{node}"
    ids: np.ndarray
    enc: EncGH

    @classmethod
    def parse(cls, f: Fields) -> Self:
        session = cls.session_of(f)
        most = 2 * session.n_features * session.max_bin  # both default directions

        def check_ids(v: Any) -> np.ndarray:
            ids = _unique_ids(v)
            if len(ids) > most:
                raise ValueError(f"must hold at most {most} candidates, got {len(ids)}")
            return ids

        ids = f.get("ids", check_ids)
        lengths = session.hist_ciphertexts(len(ids) + session.n_features)
        return cls(ids, f.get("enc", lambda v: read_enc(session, v, lengths)))


# ---------------------------------------------------------------------------------------------
# the layer loop


def _tree_node(value: Any) -> dict[str, int]:
    """One node of a tree's structure: ``{"leaf": k}`` or owner, split, left and right."""
    if not isinstance(value, dict):
        raise TypeError(f"must be a dict, not {type(value).__name__}")
    if set(value) not in ({"leaf"}, {"owner", "split", "left", "right"}):
        raise ValueError(f"must have the keys of a leaf or a split, got {sorted(value)}")
    return {str(k): check_int(v, min=0) for k, v in value.items()}


def _tree_nodes(value: Any) -> list[dict[str, int]]:
    if not isinstance(value, list):
        raise TypeError(f"must be a list, not {type(value).__name__}")
    nodes = []
    for i, item in enumerate(value):
        try:
            nodes.append(_tree_node(item))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"item {i}: {exc}") from None
        child = max(nodes[-1].get("left", 0), nodes[-1].get("right", 0))
        if child and not i < child < len(value):
            raise ValueError(f"item {i}: child {child} is outside the tree")
    return nodes


@dataclass(frozen=True)
class Split(Message):
    """A split of the last layer: its children (numbered next) and the rows going left."""

    node: int
    left: int
    right: int
    bits: np.ndarray

    @classmethod
    def parse(cls, f: Fields) -> Self:
        node = f.integer("node", min=0)
        left = f.integer("left", min=node + 1)
        right = f.integer("right", min=left + 1, max=left + 1)
        return cls(node, left, right, f.get("bits", _bits))


@dataclass(frozen=True)
class Layer(Message):
    """The splits of the last layer and the nodes open now; the tree's structure at its end."""

    TAG: ClassVar[str] = "vf2/layer/{t}/{d}"
    splits: list[Split]
    open: list[int]
    nodes: list[dict[str, int]] | None = None

    @classmethod
    def parse(cls, f: Fields) -> Self:
        splits = f.messages("splits", Split)
        opened = f.ints("open", min=0)
        if len(set(opened)) != len(opened):
            raise f.fail("open", f"must not repeat a node, got {opened}")
        nodes = f.optional("nodes", lambda name: f.get(name, _tree_nodes))
        if (nodes is None) != bool(opened):
            raise f.fail("nodes", "must hold the tree's structure exactly when no node is open")
        return cls(splits, opened, nodes)


@dataclass(frozen=True)
class Tentative(Message):
    """A tentative split: the node and the rows going left if the active party's split wins."""

    node: int
    bits: np.ndarray

    @classmethod
    def parse(cls, f: Fields) -> Self:
        return cls(f.integer("node", min=0), f.get("bits", _bits))


@dataclass(frozen=True)
class Spec(Message):
    """The active party's tentative splits of a layer (optimistic splitting)."""

    TAG: ClassVar[str] = "vf2/spec/{t}/{d}"
    splits: list[Tentative]

    @classmethod
    def parse(cls, f: Fields) -> Self:
        return cls(f.messages("splits", Tentative))


@dataclass(frozen=True)
class Winner(Message):
    """A node won by the receiver: the ids of its candidates tied at the best gain."""

    node: int
    ids: np.ndarray

    @classmethod
    def parse(cls, f: Fields) -> Self:
        node = f.integer("node", min=0)
        ids = f.get("ids", _unique_ids)
        if not len(ids):
            raise f.fail("ids", "must name at least one candidate")
        return cls(node, ids)


@dataclass(frozen=True)
class Win(Message):
    """The nodes of a layer whose best split is one of the receiver's candidates."""

    TAG: ClassVar[str] = "vf2/win/{t}/{d}"
    winners: list[Winner]

    @classmethod
    def parse(cls, f: Fields) -> Self:
        winners = f.messages("winners", Winner)
        nodes = [w.node for w in winners]
        if len(set(nodes)) != len(nodes):
            raise f.fail("winners", f"must not repeat a node, got {nodes}")
        return cls(winners)


@dataclass(frozen=True)
class Placement(Message):
    """Where the owner of a won node sends its rows: its split id and the rows going left."""

    node: int
    split: int
    bits: np.ndarray

    @classmethod
    def parse(cls, f: Fields) -> Self:
        return cls(f.integer("node", min=0), f.integer("split", min=0), f.get("bits", _bits))


@dataclass(frozen=True)
class Place(Message):
    """The owner's placements of the nodes it won in a layer."""

    TAG: ClassVar[str] = "vf2/place/{t}/{d}"
    placements: list[Placement]

    @classmethod
    def parse(cls, f: Fields) -> Self:
        placements = f.messages("placements", Placement)
        nodes = [p.node for p in placements]
        if len(set(nodes)) != len(nodes):
            raise f.fail("placements", f"must not repeat a node, got {nodes}")
        return cls(placements)


# ---------------------------------------------------------------------------------------------
# prediction


@dataclass(frozen=True)
class Predict(Message):
    """A passive party's leaf masks: per tree, (leaves × rows) bits packed along the rows."""

    TAG: ClassVar[str] = "vf2/predict"
    n_rows: int
    masks: list[np.ndarray]

    @classmethod
    def parse(cls, f: Fields) -> Self:
        n_rows = f.integer("n_rows", min=0)
        width = (n_rows + 7) // 8
        masks = f.items("masks", lambda v: check_array(v, kinds="u", shape=(None, width)))
        return cls(n_rows, [m.astype(np.uint8, copy=False) for m in masks])


@dataclass(frozen=True)
class Evaluate(Predict):
    """A passive party's leaf masks of the eval rows for one round's trees."""

    TAG: ClassVar[str] = "vf2/eval/{r}"


@dataclass(frozen=True)
class Verdict(Message):
    """After a round with an eval set: whether training stops, and the best round so far."""

    TAG: ClassVar[str] = "vf2/verdict/{r}"
    stop: bool
    best: int

    @classmethod
    def parse(cls, f: Fields) -> Self:
        return cls(f.flag("stop"), f.integer("best", min=0))


#: the messages of one tree, in protocol order; retired (refused from then on) after the tree
TREE_MESSAGES: tuple[type[Message], ...] = (Gradients, Layer, Spec, Hist, Win, Place)


def tree_prefixes(t: int) -> tuple[str, ...]:
    """The tag prefixes of tree ``t``'s messages (``vf2/gh/3``, ``vf2/layer/3``, ...)."""
    return tuple(kind.TAG.split("{t}")[0] + str(t) for kind in TREE_MESSAGES)


__all__ = [
    "TREE_MESSAGES",
    "Evaluate",
    "Gradients",
    "Hello",
    "Hist",
    "Layer",
    "Place",
    "Placement",
    "Predict",
    "Session",
    "SessionMessage",
    "Setup",
    "Spec",
    "Split",
    "Tentative",
    "Verdict",
    "Win",
    "Winner",
    "refuse",
    "tree_prefixes",
]
