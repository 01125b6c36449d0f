"""The client-to-client boxes that travel through the Flower server."""

from __future__ import annotations

import pytest

pytest.importorskip("cryptography")

from hefl.errors import ProtocolError
from hefl.flower._sealing import BoxKeys, open_box, seal

A, B, C = BoxKeys.generate(), BoxKeys.generate(), BoxKeys.generate()


def test_a_box_opens_for_its_receiver_only():
    box = seal(A, B.public, "s1", "share/1", 10, 20, b"slice of the aggregate")
    assert open_box(B, A.public, "s1", "share/1", 10, 20, box) == b"slice of the aggregate"
    assert b"slice" not in box
    with pytest.raises(ProtocolError, match="from node 10 does not authenticate"):
        open_box(C, A.public, "s1", "share/1", 10, 30, box)  # another receiver's key


@pytest.mark.parametrize(
    "session, purpose, sender, receiver",
    [
        ("s2", "share/1", 10, 20),
        ("s1", "share/2", 10, 20),
        ("s1", "paillier-key", 10, 20),
        ("s1", "share/1", 11, 20),
    ],
)
def test_a_box_is_bound_to_session_purpose_and_nodes(session, purpose, sender, receiver):
    box = seal(A, B.public, "s1", "share/1", 10, 20, b"x")
    with pytest.raises(ProtocolError, match="does not authenticate"):
        open_box(B, A.public, session, purpose, sender, receiver, box)


def test_tampered_or_truncated_boxes_are_refused():
    box = bytearray(seal(A, B.public, "s1", "k", 1, 2, b"secret"))
    box[-1] ^= 1
    with pytest.raises(ProtocolError, match="does not authenticate"):
        open_box(B, A.public, "s1", "k", 1, 2, bytes(box))
    with pytest.raises(ProtocolError, match="truncated"):
        open_box(B, A.public, "s1", "k", 1, 2, b"short")
    with pytest.raises(ProtocolError, match="32 bytes"):
        seal(A, b"\x01" * 31, "s1", "k", 1, 2, b"x")


def test_every_box_has_a_fresh_nonce():
    boxes = {seal(A, B.public, "s", "p", 1, 2, b"same") for _ in range(20)}
    assert len(boxes) == 20
