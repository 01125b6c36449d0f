"""hefl.codec: round trips (hypothesis), ciphertexts, and refusal of malformed input."""

from __future__ import annotations

import contextlib
import math

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import hefl
from hefl import codec
from hefl.codec import Codec

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**5000), max_value=2**5000)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
objects = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(objects)
def test_round_trip_dumps_and_frames(obj):
    assert codec.loads(codec.dumps(obj)) == obj
    small = Codec(oob_threshold=8)  # force the multi-frame path for bodies >= 8 bytes
    frames = small.encode([obj, b"x" * 9, {"k": b"y" * 10}])
    assert small.decode(frames) == [obj, b"x" * 9, {"k": b"y" * 10}]


def test_tuples_and_types_are_preserved():
    obj = {"t": (1, (2, 3), []), (1, 2): "tuple key", 5: 2**100, "neg": -(2**100)}
    out = codec.loads(codec.dumps(obj))
    assert out == obj and isinstance(out["t"], tuple) and isinstance(out["t"][1], tuple)
    assert codec.loads(codec.dumps(np.float64(1.5))) == 1.5
    assert codec.loads(codec.dumps(np.int64(-3))) == -3


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from(["<i8", "<i4", "u1", "<f8", "<f4", "?", "<c16", ">i4"]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=5),
    )
)
def test_ndarray_round_trip(arr):
    for c in (Codec(), Codec(oob_threshold=1)):
        out = c.decode(c.encode(arr))
        assert out.dtype == arr.dtype and out.shape == arr.shape
        assert np.array_equal(out, arr, equal_nan=True)
        assert out.flags.writeable


def test_ndarray_non_contiguous_and_big_goes_out_of_band():
    arr = np.arange(100_000, dtype=np.float64).reshape(1000, 100)[:, ::2]
    frames = Codec().encode({"a": arr})
    assert len(frames) == 2 and len(frames[1]) == arr.nbytes
    assert np.array_equal(Codec().decode(frames)["a"], arr)


def test_refuses_object_arrays_and_unknown_types():
    with pytest.raises(hefl.CodecError, match="object"):
        codec.dumps(np.array([1, "a"], dtype=object))
    with pytest.raises(hefl.CodecError, match="cannot send"):
        codec.dumps({"f": lambda x: x})
    with pytest.raises(hefl.CodecError):
        codec.dumps({1, 2})


def test_size_limit_both_ways():
    c = Codec(max_message_bytes=1000)
    with pytest.raises(hefl.CodecError, match="exceeds the limit"):
        c.dumps(b"x" * 2000)
    with pytest.raises(hefl.CodecError, match="exceeds the limit"):
        c.loads(codec.dumps(b"x" * 2000))


def _ext(code, payload):
    return msgpack.packb(msgpack.ExtType(code, payload))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x93\x01",  # truncated array
        codec.dumps([1, 2]) + b"\x00",  # trailing bytes
        _ext(99, b"x"),  # unknown extension
        _ext(1, b""),  # empty big int
        _ext(2, msgpack.packb(5)),  # tuple that is not an array
        _ext(3, msgpack.packb(["|O", [1], b"\x00" * 8])),  # object dtype
        _ext(3, msgpack.packb(["<f8", [3], b"\x00" * 8])),  # wrong data size
        _ext(3, msgpack.packb(["<f8", [-1], b""])),  # negative dimension
        _ext(3, msgpack.packb(["V8", [1], b"\x00" * 8])),  # void dtype
        _ext(3, msgpack.packb(["<f8", [1], 1])),  # frame reference that does not exist
        _ext(6, msgpack.packb(1)),  # bytes frame that does not exist
        _ext(5, (4).to_bytes(1, "big")),  # even modulus
        msgpack.packb({(1,): 2}, use_bin_type=True)[:-1],  # truncated map
        b"\xa3\xff\xfe\xfd",  # invalid UTF-8 string
    ],
)
def test_malformed_input_raises_codec_error(data):
    with pytest.raises(hefl.CodecError):
        codec.loads(data)


def test_unreferenced_and_reused_frames_are_refused():
    c = Codec(oob_threshold=4)
    frames = c.encode([b"abcdef"])
    with pytest.raises(hefl.CodecError, match="nothing refers"):
        c.decode([*frames, b"extra"])
    head = msgpack.packb([_ext_obj(6, 1), _ext_obj(6, 1)])
    with pytest.raises(hefl.CodecError, match="already used"):
        c.decode([head, b"abcdef"])


def _ext_obj(code, value):
    return msgpack.ExtType(code, msgpack.packb(value))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_never_crash(data):
    with contextlib.suppress(hefl.CodecError):
        codec.loads(data)


@settings(max_examples=200, deadline=None)
@given(objects, st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_fuzz_bit_flips_only_raise_codec_error(obj, pos, byte):
    data = bytearray(codec.dumps(obj))
    if data:
        data[pos % len(data)] = byte
    with contextlib.suppress(hefl.CodecError):
        codec.loads(bytes(data))


crypto = pytest.importorskip("hefl.crypto")


@pytest.fixture(scope="module")
def keys():
    return crypto.generate_keypair(512, allow_insecure=True)


def test_ciphervector_and_public_key_round_trip(keys):
    pk, sk = keys
    cv = pk.encrypt([1, -2, 3, 2**100])
    for c in (Codec(), Codec(oob_threshold=16)):
        out = c.decode(c.encode({"cv": cv, "pk": pk}))
        assert out["pk"] == pk
        assert sk.decrypt(out["cv"]) == [1, -2, 3, 2**100]
    assert sk.decrypt(codec.loads(codec.dumps(cv[:0]))) == []


def test_ciphertext_out_of_range_is_refused(keys):
    pk, _ = keys
    cv = pk.encrypt([5, 6])
    width = pk.ciphertext_bytes
    raw = bytearray(cv.to_bytes())
    n_bytes = int(pk.n).to_bytes((pk.n_bits + 8) // 8, "big", signed=True)
    bad_values = [0, int(pk.nsquare), int(pk.n)]  # zero, >= n², shares a factor with n
    for value in bad_values:
        raw[width:] = value.to_bytes(width, "big") if value < 256**width else b"\xff" * width
        msg = _ext(4, msgpack.packb([n_bytes, 2, bytes(raw)]))
        with pytest.raises(hefl.CodecError, match="invalid ciphertexts"):
            codec.loads(msg)
    short = _ext(4, msgpack.packb([n_bytes, 2, bytes(raw[:-1])]))
    with pytest.raises(hefl.CodecError, match="needs"):
        codec.loads(short)


def test_codec_size_of_ciphertexts_is_fixed_width(keys):
    pk, _ = keys
    cv = pk.encrypt(list(range(100)))
    frames = Codec().encode(cv)
    assert sum(len(f) for f in frames) < 100 * pk.ciphertext_bytes + 200
    assert math.isclose(len(codec.dumps(cv)) / (100 * pk.ciphertext_bytes), 1, rel_tol=0.01)
