"""The envelope every wire message travels in: ``[kind, tag, body]``.

The codec turns the envelope into frames and back; this module names the kinds, says which
count as data (in the statistics and against retired tags) and checks a decoded envelope's
shape. A mailbox slot is addressed by ``(peer, channel, tag)``: messages, stream chunks and
stream credits under the same tag wait in separate slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from hefl.codec import Codec
from hefl.errors import CodecError


class Kind(IntEnum):
    """What a wire message is (the first field of every envelope)."""

    MSG = 0
    CHUNK = 1
    END = 2
    ABORT = 3
    CREDIT = 4
    FAIL = 5
    BYE = 6
    HELLO = 7
    PING = 8


class Channel(IntEnum):
    """Which slots of a ``(peer, tag)`` an inbound envelope feeds."""

    MSG = 0  # send / recv
    STREAM = 1  # CHUNK, END and ABORT of streams, in order
    CREDIT = 2  # a stream consumer's credits, back to the producer


DATA_KINDS = frozenset((Kind.MSG, Kind.CHUNK, Kind.END, Kind.ABORT))
_KINDS = frozenset(int(k) for k in Kind)

SlotKey = tuple[str, int, str]
"""``(peer, channel, tag)``: the address of one mailbox slot."""


def encode(codec: Codec, kind: int, tag: str, body: Any) -> list:
    """Encode one envelope into frames.

    Raises:
        CodecError: ``body`` cannot be encoded or is over the codec's size limit.
    """
    return codec.encode([kind, tag, body])


def decode(codec: Codec, frames: Sequence[Any]) -> tuple[int, str, Any]:
    """Decode and check one envelope.

    Returns:
        ``(kind, tag, body)``.

    Raises:
        CodecError: the frames are not a valid hefl envelope.
    """
    msg = codec.decode(frames)
    if (
        type(msg) is not list
        or len(msg) != 3
        or type(msg[0]) is not int
        or msg[0] not in _KINDS
        or type(msg[1]) is not str
    ):
        raise CodecError("not a hefl envelope [kind, tag, body]")
    return msg[0], msg[1], msg[2]


__all__ = ["DATA_KINDS", "Channel", "Kind", "SlotKey", "decode", "encode"]
