"""The wire codec: msgpack with extension types, never pickle.

A message from a peer must not be able to run code, so hefl serializes with msgpack and a short
list of extension types, and every decode validates what it builds:

==========  ===============================================================================
ext code    payload
==========  ===============================================================================
1 BIGINT    a Python int outside msgpack's 64-bit range, as signed big-endian bytes
2 TUPLE     a tuple, as a msgpack array (msgpack would otherwise turn tuples into lists)
3 NDARRAY   ``[dtype str, shape, data]``: numeric dtypes only (no object arrays)
4 CIPHERS   a ``hefl.crypto.CipherVector``: ``[n, count, data]``, data = fixed-width ciphertexts
5 PUBKEY    a ``hefl.crypto.PublicKey``: ``n`` as big-endian bytes
6 BYTES     a large ``bytes`` body sent as its own frame
==========  ===============================================================================

``data`` is either the bytes themselves (inline) or, in the framed form, the index of a
separate frame. :meth:`Codec.encode` returns a list of frames (a msgpack head plus one frame
per large body ≥ ``oob_threshold``), so a transport can send big bodies without copying them
into the head (ZeroMQ ``copy=False``). :func:`dumps` / :func:`loads` give the single-buffer form.

Large bytes bodies go to their own frame when they are the message itself or an item of a
top-level list/tuple/dict; deeper ones are sent inline (still correct, one more copy).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

from hefl.crypto import CipherVector, PublicKey
from hefl.errors import CodecError, CryptoError

EXT_BIGINT = 1
EXT_TUPLE = 2
EXT_NDARRAY = 3
EXT_CIPHERS = 4
EXT_PUBKEY = 5
EXT_BYTES = 6

#: The default size limit of one message (all frames together).
DEFAULT_MAX_MESSAGE_BYTES = 1 << 30
#: Bodies at least this large travel as separate frames (ZeroMQ copies smaller frames anyway).
DEFAULT_OOB_THRESHOLD = 1 << 16
#: The default limit on msgpack items (array elements and map entries) in one message. A byte
#: of msgpack can become a 64-byte Python object (``0x90`` is an empty list), so without a
#: count a 20 MB message made 1.4 GB of lists; bulk data travels as ndarray/CipherVector/bytes
#: bodies, which count as one item each.
DEFAULT_MAX_ITEMS = 1 << 22

# Only plain numeric dtypes cross the wire: object arrays could smuggle arbitrary objects.
_DTYPE_KINDS = frozenset("biufc")
_MAX_NDIM = 32
_MAX_NESTED_EXT = 64
_DTYPE_RE = re.compile(r"[<>|=]?[biufc][0-9]{1,2}")

Buffer = bytes | bytearray | memoryview


def _int_to_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 8) // 8 or 1, "big", signed=True)


class _Encoder:
    """One encoding: collects the out-of-band frames of one message."""

    __slots__ = ("codec", "frames")

    def __init__(self, codec: Codec, framed: bool) -> None:
        self.codec = codec
        self.frames: list[Buffer] | None = [] if framed else None

    def body(self, data: Buffer) -> Buffer | int:
        """Return ``data`` inline or the index of a new frame holding it."""
        if self.frames is not None and len(data) >= self.codec.oob_threshold:
            self.frames.append(data)
            return len(self.frames)  # frame 0 is the head
        return bytes(data) if not isinstance(data, bytes) else data

    def pack(self, obj: Any) -> bytes:
        return msgpack.packb(obj, default=self.default, strict_types=True, use_bin_type=True)

    def lift(self, obj: Any) -> Any:
        """Move a large bytes body of a top-level container to its own frame."""
        if (
            self.frames is not None
            and type(obj) in (bytes, bytearray, memoryview)
            and len(obj) >= self.codec.oob_threshold
        ):
            return msgpack.ExtType(EXT_BYTES, self.pack(self.body(memoryview(obj).cast("B"))))
        return obj

    def default(self, obj: Any) -> Any:
        if isinstance(obj, msgpack.ExtType):
            return obj
        if isinstance(obj, bool):
            return bool(obj)
        if isinstance(obj, int):
            if type(obj) is not int:
                return int(obj)
            return msgpack.ExtType(EXT_BIGINT, _int_to_bytes(obj))
        if isinstance(obj, tuple):
            return msgpack.ExtType(EXT_TUPLE, self.pack([self.lift(x) for x in obj]))
        if isinstance(obj, np.ndarray):
            return self._ndarray(obj)
        if isinstance(obj, np.generic):
            return obj.item() if obj.dtype.kind in _DTYPE_KINDS else self._refuse(obj)
        if isinstance(obj, float):
            return float(obj)
        if isinstance(obj, str):
            return str(obj)
        if isinstance(obj, bytearray | memoryview):
            return bytes(obj)
        if isinstance(obj, dict):
            return dict(obj)
        if isinstance(obj, list):
            return list(obj)
        if isinstance(obj, CipherVector):
            raw = obj.to_bytes()
            n = obj.public_key.n
            return msgpack.ExtType(
                EXT_CIPHERS, self.pack([_int_to_bytes(int(n)), len(obj), self.body(raw)])
            )
        if isinstance(obj, PublicKey):
            return msgpack.ExtType(EXT_PUBKEY, _int_to_bytes(int(obj.n)))
        return self._refuse(obj)

    def _ndarray(self, arr: np.ndarray) -> msgpack.ExtType:
        if arr.dtype.kind not in _DTYPE_KINDS or arr.dtype.fields is not None:
            raise CodecError(
                f"cannot send a numpy array of dtype {arr.dtype}: only bool, int, uint, float "
                "and complex arrays cross the wire (convert object arrays, e.g. with astype)"
            )
        if not arr.flags.c_contiguous:  # (ascontiguousarray would turn 0-d into 1-d)
            arr = arr.copy(order="C")
        view: Any = memoryview(arr)  # type: ignore[arg-type]
        data = view.cast("B") if arr.size else b""
        return msgpack.ExtType(
            EXT_NDARRAY, self.pack([arr.dtype.str, list(arr.shape), self.body(data)])
        )

    @staticmethod
    def _refuse(obj: Any) -> Any:
        raise CodecError(
            f"cannot send an object of type {type(obj).__module__}.{type(obj).__qualname__}: "
            "hefl sends None, bool, int, float, str, bytes, list, tuple, dict, numpy arrays, "
            "CipherVector and PublicKey (never pickle); convert it to one of those"
        )


class _Decoder:
    """One decoding: resolves frame references and validates every extension value."""

    __slots__ = ("codec", "depth", "frames", "items", "keys", "used")

    def __init__(self, codec: Codec, frames: Sequence[Buffer]) -> None:
        self.codec = codec
        self.frames = frames
        self.used = [False] * len(frames)
        self.depth = 0
        self.items = 0

    def unpack(self, data: Buffer) -> Any:
        # msgpack bounds each container by the buffer length; the hooks bound the total, so
        # at most one container of ``left`` items is built before the message is refused.
        left = max(0, self.codec.max_items - self.items)
        obj = msgpack.unpackb(
            data,
            ext_hook=self.ext_hook,
            list_hook=self.list_hook,
            object_hook=self.object_hook,
            raw=False,
            strict_map_key=False,
            use_list=True,
            max_array_len=min(len(data), left),
            max_map_len=min(len(data), left),
        )
        if type(obj) is msgpack.Timestamp:
            raise _timestamp_refused()
        return obj

    def _count(self, n: int) -> None:
        self.items += n
        if self.items > self.codec.max_items:
            raise CodecError(
                f"message holds more than {self.codec.max_items} msgpack items; send bulk data "
                "as numpy arrays or bytes, or raise the codec's max_items"
            )

    def list_hook(self, items: list) -> list:
        self._count(len(items) + 1)
        # msgpack decodes its timestamp extension (-1) itself, bypassing ext_hook: refuse it
        # here, so a peer can only produce the types this module documents.
        if items and msgpack.Timestamp in set(map(type, items)):
            raise _timestamp_refused()
        return items

    def object_hook(self, mapping: dict) -> dict:
        self._count(len(mapping) + 1)
        if mapping and (
            msgpack.Timestamp in set(map(type, mapping))
            or msgpack.Timestamp in set(map(type, mapping.values()))
        ):
            raise _timestamp_refused()
        return mapping

    def body(self, ref: Any, what: str) -> Buffer:
        if isinstance(ref, bytes):
            return ref
        if type(ref) is int:
            if not 1 <= ref < len(self.frames):
                raise CodecError(
                    f"{what} refers to frame {ref}, but the message has {len(self.frames)} frames"
                )
            if self.used[ref]:
                raise CodecError(f"{what} refers to frame {ref}, which is already used")
            self.used[ref] = True
            return self.frames[ref]
        raise CodecError(f"{what} body must be bytes or a frame index, not {type(ref).__name__}")

    def ext_hook(self, code: int, payload: bytes) -> Any:
        self.depth += 1
        try:
            if self.depth > _MAX_NESTED_EXT:
                raise CodecError(f"message nests extension types deeper than {_MAX_NESTED_EXT}")
            return self._ext(code, payload)
        finally:
            self.depth -= 1

    def _ext(self, code: int, payload: bytes) -> Any:
        if code == EXT_BIGINT:
            if not payload:
                raise CodecError("empty big-int extension")
            return int.from_bytes(payload, "big", signed=True)
        if code == EXT_TUPLE:
            items = self.unpack(payload)
            if not isinstance(items, list):
                raise CodecError("tuple extension does not hold an array")
            return tuple(items)
        if code == EXT_NDARRAY:
            return self._ndarray(payload)
        if code == EXT_BYTES:
            ref = self.unpack(payload)
            if type(ref) is not int:
                raise CodecError("bytes extension must hold a frame index")
            return bytes(self.body(ref, "bytes body"))
        if code == EXT_CIPHERS:
            return self._ciphers(payload)
        if code == EXT_PUBKEY:
            return self._public_key(payload)
        raise CodecError(f"unknown msgpack extension type {code}; the peer may run a newer hefl")

    def _fields(self, payload: bytes, n: int, what: str) -> list:
        fields = self.unpack(payload)
        if not isinstance(fields, list) or len(fields) != n:
            raise CodecError(f"{what} extension must hold {n} fields")
        return fields

    def _ndarray(self, payload: bytes) -> np.ndarray:
        dtype_str, shape, ref = self._fields(payload, 3, "ndarray")
        # Only a plain "<f8"-style string reaches np.dtype: numpy parses comma-separated
        # strings as record formats (with Python's parser: "<,f4" raised SyntaxError).
        if not isinstance(dtype_str, str) or not _DTYPE_RE.fullmatch(dtype_str):
            raise CodecError(f"bad numpy dtype {dtype_str!r}")
        try:
            dtype = np.dtype(dtype_str)
        except Exception as exc:  # whatever numpy raises for a string it cannot parse
            raise CodecError(f"bad numpy dtype {dtype_str!r}") from exc
        if dtype.kind not in _DTYPE_KINDS or dtype.fields is not None or dtype.str != dtype_str:
            raise CodecError(f"numpy dtype {dtype_str!r} is not allowed on the wire")
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_NDIM
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise CodecError(f"bad numpy shape {shape!r}")
        data = self.body(ref, "ndarray")
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            raise CodecError(
                f"ndarray of shape {tuple(shape)} and dtype {dtype_str} needs {expected} bytes, "
                f"got {len(data)}"
            )
        # A private, writable copy: the receiver owns its arrays (no aliasing of frame memory).
        return np.frombuffer(data, dtype=dtype).reshape(tuple(shape)).copy()

    def _public_key(self, payload: bytes) -> Any:
        n = int.from_bytes(payload, "big", signed=True)
        return self.codec.public_key(n)

    def _ciphers(self, payload: bytes) -> Any:
        n_bytes, count, ref = self._fields(payload, 3, "CipherVector")
        if not isinstance(n_bytes, bytes) or type(count) is not int or count < 0:
            raise CodecError("CipherVector extension has a bad key or count")
        pk = self.codec.public_key(int.from_bytes(n_bytes, "big", signed=True))
        data = self.body(ref, "CipherVector")
        width = pk.ciphertext_bytes
        if len(data) != count * width:
            raise CodecError(
                f"CipherVector of {count} ciphertexts needs {count * width} bytes for a "
                f"{pk.n_bits}-bit key, got {len(data)}"
            )
        try:  # from_bytes checks 0 < c < n² and gcd(c, n) = 1 for every ciphertext
            return CipherVector.from_bytes(pk, data)
        except CryptoError as exc:
            raise CodecError(f"invalid ciphertexts in message: {exc}") from exc


def _timestamp_refused() -> CodecError:
    return CodecError("msgpack timestamps (extension type -1) are not part of hefl's wire format")


class Codec:
    """Encode and decode hefl messages (msgpack + extension types; never pickle).

    Args:
        max_message_bytes: refuse to encode or decode a message larger than this (all frames).
        oob_threshold: in the framed form, bodies at least this large get their own frame.
        max_key_bits: refuse public keys (and ciphertexts under them) with a larger modulus.
        max_items: refuse to decode a message with more msgpack items (array elements and map
            entries, over all containers); bounds the memory a small message can expand into.

    Raises:
        ConfigError: if a limit is not a positive int.
    """

    def __init__(
        self,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        oob_threshold: int = DEFAULT_OOB_THRESHOLD,
        max_key_bits: int = 16384,
        max_items: int = DEFAULT_MAX_ITEMS,
    ) -> None:
        from hefl.errors import ConfigError

        for name, value in (
            ("max_message_bytes", max_message_bytes),
            ("oob_threshold", oob_threshold),
            ("max_key_bits", max_key_bits),
            ("max_items", max_items),
        ):
            if type(value) is not int or value <= 0:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        self.max_message_bytes = max_message_bytes
        self.oob_threshold = oob_threshold
        self.max_key_bits = max_key_bits
        self.max_items = max_items
        self._keys: dict[int, Any] = {}

    def public_key(self, n: int) -> Any:
        """Return the (cached) PublicKey with modulus ``n``, validating it.

        Raises:
            CodecError: if ``n`` is not a plausible Paillier modulus.
        """
        pk = self._keys.get(n)
        if pk is not None:
            return pk
        if n < 3 or n % 2 == 0 or n.bit_length() > self.max_key_bits:
            raise CodecError(
                f"received an implausible Paillier modulus ({n.bit_length()} bits); "
                f"expected an odd n of at most {self.max_key_bits} bits"
            )
        try:
            pk = PublicKey(n)
        except CryptoError as exc:
            raise CodecError(f"received an invalid public key: {exc}") from exc
        if len(self._keys) < 64:  # a peer must not grow this cache without bound
            self._keys[n] = pk
        return pk

    def encode(self, obj: Any) -> list[Buffer]:
        """Encode ``obj`` as frames: a msgpack head, then one frame per large body.

        Raises:
            CodecError: if ``obj`` holds an unsupported type or the message is too large.
        """
        enc = _Encoder(self, framed=True)
        try:
            if type(obj) is dict:
                obj = {k: enc.lift(v) for k, v in obj.items()}
            elif type(obj) is list:
                obj = [enc.lift(v) for v in obj]
            else:
                obj = enc.lift(obj)
            head = enc.pack(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, CodecError):
                raise
            raise CodecError(f"cannot encode message: {exc}") from exc
        frames: list[Buffer] = [head, *enc.frames]  # type: ignore[misc]
        self._check_size(sum(len(f) for f in frames))
        return frames

    def decode(self, frames: Sequence[Buffer]) -> Any:
        """Decode frames produced by :meth:`encode`, validating everything.

        Raises:
            CodecError: if the frames are malformed, truncated, too large or hold a refused type.
        """
        if not frames:
            raise CodecError("empty message (no frames)")
        self._check_size(sum(len(f) for f in frames))
        dec = _Decoder(self, frames)
        try:
            obj = dec.unpack(frames[0])
        except CodecError:
            raise
        except Exception as exc:  # a peer's bytes must only ever produce CodecError
            raise CodecError(f"malformed message: {type(exc).__name__}: {exc}") from exc
        if not all(dec.used[1:]):
            raise CodecError("message has frames that nothing refers to")
        return obj

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj`` into one buffer (every body inline)."""
        enc = _Encoder(self, framed=False)
        try:
            data = enc.pack(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, CodecError):
                raise
            raise CodecError(f"cannot encode message: {exc}") from exc
        self._check_size(len(data))
        return data

    def loads(self, data: Buffer) -> Any:
        """Decode one buffer produced by :meth:`dumps`."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise CodecError(f"loads expects bytes, got {type(data).__name__}")
        return self.decode([data])

    def _check_size(self, size: int) -> None:
        if size > self.max_message_bytes:
            raise CodecError(
                f"message of {size} bytes exceeds the limit of {self.max_message_bytes} bytes; "
                "send it as a stream of chunks or raise max_message_bytes"
            )


_DEFAULT = Codec()


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` into bytes with the default :class:`Codec`.

    Raises:
        CodecError: if ``obj`` holds an unsupported type or is too large.
    """
    return _DEFAULT.dumps(obj)


def loads(data: Buffer) -> Any:
    """Decode bytes produced by :func:`dumps`, validating everything.

    Raises:
        CodecError: if ``data`` is malformed, truncated or too large.
    """
    return _DEFAULT.loads(data)


__all__ = [
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_OOB_THRESHOLD",
    "Codec",
    "dumps",
    "loads",
]
