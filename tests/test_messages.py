"""hefl.messages: typed wire messages and the checks of their fields."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

import hefl
from hefl.crypto import CipherVector, generate_keypair
from hefl.errors import KeyMismatchError, ProtocolError
from hefl.messages import Fields, Message, broadcast, gather, recv, send


@dataclass(frozen=True)
class Part(Message):
    TAG: ClassVar[str] = "test/part/{i}"
    index: int
    label: str

    @classmethod
    def parse(cls, f: Fields) -> "Part":
        return cls(index=f.integer("index", min=0, max=9), label=f.text("label", choices="ab"))


@dataclass(frozen=True)
class Whole(Message):
    TAG: ClassVar[str] = "test/whole/{t}"
    weight: float
    ok: bool
    ids: list[int]
    mask: np.ndarray
    parts: list[Part]
    head: Part
    note: bytes | None
    sums: CipherVector

    @classmethod
    def parse(cls, f: Fields) -> "Whole":
        return cls(
            weight=f.number("weight"),
            ok=f.flag("ok"),
            ids=f.ints("ids", min=0, length=3),
            mask=f.array("mask", kinds="b", shape=(None, 2)),
            parts=f.messages("parts", Part),
            head=f.message("head", Part),
            note=f.optional("note", f.raw),
            sums=f.ciphers("sums", key=KEY, length=2),
        )


KEY, SECRET = generate_keypair(512, allow_insecure=True)
OTHER, _ = generate_keypair(512, allow_insecure=True)


def _whole(**changes):
    fields = dict(
        weight=0.5,
        ok=True,
        ids=[0, 1, 2],
        mask=np.zeros((4, 2), bool),
        parts=[Part(1, "a"), Part(2, "b")],
        head=Part(0, "a"),
        note=None,
        sums=KEY.encrypt([3, 4]),
    )
    return Whole(**{**fields, **changes})


def test_round_trip_through_the_codec():
    codec = hefl.codec.Codec()
    sent = _whole(note=b"x")
    got = Whole.from_wire("bob", codec.decode(codec.encode(sent.to_wire())))
    assert got.parts == sent.parts and got.head == sent.head and got.note == b"x"
    assert SECRET.decrypt(got.sums) == [3, 4]
    assert Whole.tag(t=7) == "test/whole/7"


@pytest.mark.parametrize(
    ("index", "value", "field", "why"),
    [
        (0, "0.5", "weight", "must be a number"),
        (0, float("nan"), "weight", "must be finite"),
        (1, 1, "ok", "must be a bool"),
        (2, [0, 1], "ids", "must have 3 items"),
        (2, [0, -1, 2], "ids", "item 1: must be >= 0"),
        (2, [0, True, 2], "ids", "must be an int, not bool"),
        (3, np.zeros((4, 3), bool), "mask", "must have shape"),
        (3, np.zeros((4, 2)), "mask", "dtype of kind 'b'"),
        (3, [[True, False]], "mask", "must be a numpy array"),
        (4, [[1, "c"]], "parts[0]", "field 'label' must be one of"),
        (5, [10, "a"], "head", "field 'index' must be <= 9"),
        (5, [1], "head", "expected a list of 2 fields"),
        (6, "text", "note", "must be bytes"),
        (7, [1, 2], "sums", "must be a CipherVector"),
        (7, KEY.encrypt([1]), "sums", "must hold 2 ciphertexts"),
    ],
)
def test_malformed_fields_name_sender_message_and_field(index, value, field, why):
    wire = _whole().to_wire()
    wire[index] = value
    with pytest.raises(ProtocolError) as err:
        Whole.from_wire("mallory", wire)
    text = str(err.value)
    assert text.startswith("mallory sent a malformed Whole message")
    assert repr(field) in text and why in text


@pytest.mark.parametrize("obj", [None, {}, "x", [1, 2], [*_whole().to_wire(), 1]])
def test_wrong_shape_is_refused(obj):
    with pytest.raises(ProtocolError, match="mallory sent a malformed Whole message: expected"):
        Whole.from_wire("mallory", obj)


def test_ciphertexts_under_another_key():
    wire = _whole().to_wire()
    wire[7] = OTHER.encrypt([1, 2])
    with pytest.raises(KeyMismatchError, match="mallory's Whole message, field 'sums'"):
        Whole.from_wire("mallory", wire)


async def test_send_recv_broadcast_gather_over_a_federation():
    async def leader(party: hefl.Party):
        await send(party, "bob", Part(1, "a"), i=1)
        await broadcast(party, Part(2, "b"), i=2)
        return await gather(party, Part, i=3)

    async def follower(party: hefl.Party):
        first = await recv(party, "alice", Part, i=1)
        second = await recv(party, "alice", Part, i=2)
        await send(party, "alice", Part(first.index + second.index, "b"), i=3)

    result = await hefl.run_async({"alice": leader, "bob": follower}, executor="inline")
    assert result["alice"] == {"bob": Part(3, "b")}
