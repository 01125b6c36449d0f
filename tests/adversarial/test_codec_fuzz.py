"""Codec fuzzing: whatever bytes a peer sends, ``hefl.codec`` raises CodecError or returns one
of the documented types, never another exception, and never allocates in proportion to a
length the peer merely declares."""

from __future__ import annotations

import os
import struct
import tracemalloc

import msgpack
import numpy as np
import pytest
from hefl_faults import TALLY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hefl
from hefl.codec import EXT_BIGINT, EXT_BYTES, EXT_CIPHERS, EXT_NDARRAY, EXT_PUBKEY, Codec
from hefl.errors import CodecError

pytestmark = pytest.mark.timeout(60)

EXAMPLES = int(os.environ.get("HEFL_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ALLOWED = (type(None), bool, int, float, str, bytes, list, tuple, dict, np.ndarray)


def _check_types(obj, depth=0):
    from hefl.crypto import CipherVector, PublicKey

    assert isinstance(obj, (*ALLOWED, CipherVector, PublicKey)), type(obj)
    if isinstance(obj, np.ndarray):
        assert obj.dtype.kind in "biufc"
    if isinstance(obj, list | tuple):
        for x in obj:
            _check_types(x, depth + 1)
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_types(k, depth + 1)
            _check_types(v, depth + 1)


def decode_or_refuse(data, codec=None, frames=None):
    """Decode; the only allowed failure is CodecError. Returns the object or None."""
    TALLY["inputs"] += 1
    codec = codec or hefl.codec._DEFAULT
    try:
        obj = codec.decode(frames) if frames is not None else codec.loads(data)
    except CodecError:
        return None
    _check_types(obj)
    return obj


# -- strategies -------------------------------------------------------------------------------
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
arrays = st.builds(
    lambda dt, n: np.arange(n).astype(dt),
    st.sampled_from(["<i8", "<f4", "|u1", "|b1", "<c16"]),
    st.integers(0, 20),
)
values = st.recursive(
    scalars | arrays,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=5) | st.integers(-5, 5), inner, max_size=5)
    ),
    max_leaves=20,
)
ext_codes = st.integers(-128, 127)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data):
    decode_or_refuse(data)


@FUZZ
@given(values, st.data())
def test_truncated_and_mutated_messages(obj, data):
    blob = hefl.codec.dumps(obj)
    cut = data.draw(st.integers(0, len(blob) - 1))
    assert decode_or_refuse(blob[:cut]) is None  # msgpack is prefix-free: always refused
    pos = data.draw(st.integers(0, len(blob) - 1))
    byte = data.draw(st.integers(0, 255))
    decode_or_refuse(blob[:pos] + bytes([byte]) + blob[pos + 1 :])
    decode_or_refuse(blob + data.draw(st.binary(min_size=1, max_size=8)))  # trailing bytes


@FUZZ
@given(ext_codes, st.binary(max_size=80), st.integers(0, 3))
def test_wrong_and_malformed_extension_types(code, payload, depth):
    # raw ext8 bytes: msgpack.ExtType refuses negative (reserved) codes, a peer need not
    blob = b"\xc7" + bytes([len(payload), code & 0xFF]) + payload
    for _ in range(depth):
        blob = b"\x91" + blob
    decode_or_refuse(blob)
    # the known extensions with payloads of the wrong shape
    for known in (EXT_BIGINT, 2, EXT_NDARRAY, EXT_CIPHERS, EXT_PUBKEY, EXT_BYTES):
        decode_or_refuse(msgpack.packb(msgpack.ExtType(known, payload)))


@FUZZ
@given(
    st.sampled_from(["<f8", "<i4", "|u1"]),
    st.lists(st.integers(0, 2**62), min_size=1, max_size=4),
    st.binary(max_size=64),
)
def test_ndarray_shapes_that_lie(dtype, shape, data):
    blob = msgpack.packb(msgpack.ExtType(EXT_NDARRAY, msgpack.packb([dtype, shape, data])))
    obj = decode_or_refuse(blob)
    if obj is not None:
        assert obj.nbytes == len(data)


@FUZZ
@given(st.lists(st.binary(max_size=50), min_size=0, max_size=4), st.binary(max_size=60))
def test_framed_decode(frames, head):
    decode_or_refuse(None, frames=[head, *frames])
    if frames:
        decode_or_refuse(None, frames=frames)


# -- declared lengths, nesting and memory -----------------------------------------------------
HUGE = [
    ("bin32", b"\xc6" + struct.pack(">I", 2**32 - 1) + b"abc"),
    ("str32", b"\xdb" + struct.pack(">I", 2**32 - 1) + b"abc"),
    ("array32", b"\xdd" + struct.pack(">I", 2**32 - 1) + b"\x90" * 8),
    ("map32", b"\xdf" + struct.pack(">I", 2**32 - 1) + b"\x01\x02"),
    ("ext32", b"\xc9" + struct.pack(">I", 2**32 - 1) + b"\x01abc"),
    (
        "ndarray of 2^40 bytes",
        msgpack.packb(msgpack.ExtType(EXT_NDARRAY, msgpack.packb(["|u1", [2**40], b""]))),
    ),
    (
        "ndarray of 2^40 float64",
        msgpack.packb(msgpack.ExtType(EXT_NDARRAY, msgpack.packb(["<f8", [2**20, 2**20], b"x"]))),
    ),
    (
        "CipherVector of 2^40 ciphertexts",
        msgpack.packb(
            msgpack.ExtType(
                EXT_CIPHERS, msgpack.packb([((1 << 1023) + 1).to_bytes(129, "big"), 2**40, b""])
            )
        ),
    ),
    ("bigint of 2^32 bytes", b"\xc9" + struct.pack(">I", 2**32 - 1) + bytes([EXT_BIGINT])),
]


@pytest.mark.parametrize(("what", "blob"), HUGE, ids=[h[0] for h in HUGE])
def test_declared_lengths_are_refused_without_allocating(what, blob):
    tracemalloc.start()
    try:
        with pytest.raises(CodecError):
            hefl.codec.loads(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    TALLY["inputs"] += 1
    assert peak < 1 << 20, f"{what}: {peak} bytes allocated"


def test_small_message_cannot_expand_into_huge_memory():
    """Regression: 20 MB of msgpack empty lists used to decode into 1.4 GB of Python lists.
    Now the number of msgpack items per message is bounded (Codec.max_items)."""
    codec = Codec(max_items=10_000)
    n = 50_000
    flat = b"\xdd" + struct.pack(">I", n) + b"\x90" * n
    nested = b"\xdc" + struct.pack(">H", 5000) + (b"\x92\x90\x90" * 5000)
    for blob in (flat, nested):
        with pytest.raises(
            CodecError, match=r"more than 10000 msgpack items|exceeds max_array_len"
        ):
            codec.loads(blob)
    assert codec.loads(b"\xdc" + struct.pack(">H", 9000) + b"\x01" * 9000) == [1] * 9000
    # the default limit refuses the 20M-list message at its header, before building anything
    big = b"\xdd" + struct.pack(">I", 20_000_000) + b"\x90" * 20_000_000
    tracemalloc.start()
    try:
        with pytest.raises(CodecError):
            hefl.codec.loads(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    TALLY["inputs"] += 3


@pytest.mark.parametrize("depth", [100, 10_000, 200_000])
def test_deep_nesting(depth):
    arrays = b"\x91" * depth + b"\xc0"
    maps = b"\x81\x00" * depth + b"\xc0"
    tup = msgpack.packb(None)
    for _ in range(min(depth, 300)):
        tup = msgpack.packb(msgpack.ExtType(2, b"\x91" + tup))
    for blob in (arrays, maps, tup):
        decode_or_refuse(blob)
    if depth >= 10_000:
        with pytest.raises(CodecError):
            hefl.codec.loads(arrays)


def test_msgpack_timestamps_are_refused():
    """Regression: msgpack decodes its timestamp extension (-1) itself, bypassing the codec's
    ext hook, so a peer could hand a role a msgpack.Timestamp; now CodecError."""
    ts = b"\xd6\xff\x00\x00\x00\x00"
    for blob in (ts, b"\x91" + ts, b"\x81" + ts + b"\x01", b"\x81\x01" + ts):
        with pytest.raises(CodecError, match="timestamps"):
            hefl.codec.loads(blob)
    with pytest.raises(CodecError, match="timestamps"):
        hefl.codec.loads(msgpack.packb(msgpack.ExtType(2, b"\x91" + ts)))
    TALLY["inputs"] += 5


def test_frames_that_lie_about_references():
    codec = Codec(oob_threshold=16)
    frames = codec.encode({"a": b"x" * 64, "b": np.arange(8)})
    assert len(frames) == 3
    for bad in (frames[:2], [frames[0], frames[2], frames[1]], [*frames, b"extra"], [frames[0]]):
        decode_or_refuse(None, codec=codec, frames=bad)
    with pytest.raises(CodecError):
        codec.decode([*frames, b"extra"])


@pytest.mark.parametrize("dtype", ["<,f4", "f4,i4", "(2)f4", "<U4", "O", "[('a', '<f8')]", "<M8"])
def test_dtype_strings_numpy_would_parse_as_formats_are_refused(dtype):
    """Regression (found by benchmarks/hardening.py's mutation fuzzer): numpy parses
    comma-separated dtype strings with Python's parser, so "<,f4" raised SyntaxError from the
    codec instead of CodecError; the receiver then blamed itself for an internal error."""
    blob = msgpack.packb(msgpack.ExtType(EXT_NDARRAY, msgpack.packb([dtype, [1], b"\0" * 8])))
    with pytest.raises(CodecError, match="dtype"):
        hefl.codec.loads(blob)
    TALLY["inputs"] += 1


@FUZZ
@given(st.text(max_size=8), st.lists(st.integers(0, 4), max_size=3), st.binary(max_size=32))
def test_random_dtype_strings(dtype, shape, data):
    decode_or_refuse(
        msgpack.packb(msgpack.ExtType(EXT_NDARRAY, msgpack.packb([dtype, shape, data])))
    )
