"""Every BatchCrypt wire message, one frozen dataclass each, with its tag and its checks.

A receiver never looks inside a raw message: it calls ``Kind.from_wire(sender, obj, expect)``,
which checks every field (type, range, length against the agreed layout, ciphertexts under
the session key) and raises :class:`hefl.ProtocolError` naming the sender, the message and
the field, or :class:`hefl.KeyMismatchError` for ciphertexts under another key.
:class:`Expect` carries what the receiver already knows the message must match.

Tags (``t`` is the round)::

    bc/key            KeyHandout       first client -> each other client
    bc/pk             PublicKeyNotice  first client -> aggregator
    bc/{t}/hdr        RoundHeader      client -> aggregator (also ends the session)
    bc/{t}/pre        PreStats         client -> aggregator  (first dACIQ round)
    bc/{t}/pre_sum    PreStatsSum      aggregator -> clients
    bc/{t}/up         UploadChunk      client -> aggregator  (stream)
    bc/{t}/stats      RoundStats       client -> aggregator  (dACIQ, for the next round)
    bc/{t}/stats_sum  RoundStatsSum    aggregator -> clients
    bc/{t}/down       DownloadChunk    aggregator -> client  (stream)
    bc/{t}/share      DecryptedShare   client -> every other client (shared decryption)
    bc/{t}/plain      PlainUpdate      client -> aggregator  (mode "plain")
    bc/{t}/plain_sum  PlainSum         aggregator -> clients (mode "plain")
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from hefl.crypto import CipherVector, KeyModulus, PrivateKey, PublicKey
from hefl.errors import HeflError, KeyMismatchError
from hefl.messages import Fields, Message, check_array, check_int
from hefl.protocols.batchcrypt.config import MODES

_FLOAT_DTYPE = re.compile(r"^[<>=|]f(2|4|8|16)$")
_NO_DTYPE = re.compile(r"^$")  # a done header announces no update
_KEY_ID = re.compile(r"^([0-9a-f]{2})*$")


@dataclass(frozen=True)
class Expect:
    """What a receiver knows a message must match (None: not checked).

    Attributes:
        key: the session's public key: ciphertexts must be under it (KeyMismatchError
            otherwise); a decrypted share's values must lie in [0, n).
        key_bits: the modulus size the configuration asks for (key messages).
        length: ciphertexts in a ciphertext field, values in an array or a share.
        dtype: the dtype string (``np.dtype.str``) of a plaintext update.
    """

    key: PublicKey | None = None
    key_bits: int | None = None
    length: int | None = None
    dtype: str | None = None


ANYTHING = Expect()
ROUND_PREFIX = "bc/{t}"  # every tag of round t starts with it (retired when the round ends)


def round_prefix(t: int) -> str:
    """The tag prefix of every message of round ``t``."""
    return ROUND_PREFIX.format(t=t)


class BatchCryptMessage(Message):
    """A BatchCrypt message: read with ``from_wire(sender, obj, expect)``, an :class:`Expect`
    as the context (default: nothing expected)."""

    @staticmethod
    def expect_of(f: Fields) -> Expect:
        """What the receiver expects of the message ``f`` belongs to."""
        return f.context if isinstance(f.context, Expect) else ANYTHING


# -- field checks ----------------------------------------------------------------------------
def foreign_key_text(sender: str, theirs: KeyModulus, ours: KeyModulus) -> str:
    """What went wrong when ``sender`` used ``theirs`` instead of the session key ``ours``."""
    return (
        f"{sender!r} sent ciphertexts under key {theirs.key_id.hex()}, "
        f"not the federation's key {ours.key_id.hex()}"
    )


def _ciphers(f: Fields, name: str) -> CipherVector:
    expect = BatchCryptMessage.expect_of(f)

    def check(value: Any) -> CipherVector:
        if not isinstance(value, CipherVector):
            raise TypeError(f"holds {type(value).__name__} where ciphertexts belong")
        if expect.key is not None and value.public_key != expect.key:
            raise KeyMismatchError(foreign_key_text(f.sender, value.public_key, expect.key))
        if expect.length is not None and len(value) != expect.length:
            raise ValueError(f"must hold {expect.length} ciphertexts, got {len(value)}")
        return value

    return f.get(name, check)


def _key_size(key: PublicKey, expect: Expect) -> None:
    if expect.key_bits is not None and key.n_bits != expect.key_bits:
        raise ValueError(
            f"is a {key.n_bits}-bit key; the configuration asks for {expect.key_bits} bits"
        )


def _layers(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"must be a list of ints, not {type(value).__name__}")
    try:
        return tuple(check_int(v, min=0) for v in value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"every layer size {exc}") from None


def _text(pattern: re.Pattern[str], what: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"must be a str, not {type(value).__name__}")
        if not pattern.fullmatch(value):
            raise ValueError(f"must be {what}, got {value[:40]!r}")
        return value

    return check


_DTYPE_TEXT = _text(_FLOAT_DTYPE, "a float dtype")
_NO_DTYPE_TEXT = _text(_NO_DTYPE, "empty in a done header")
_KEY_ID_TEXT = _text(_KEY_ID, "a hex key id")


# -- keys ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyHandout(BatchCryptMessage):
    """The private key, from the first client to each other client (never the aggregator)."""

    TAG: ClassVar[str] = "bc/key"
    secret: PrivateKey

    def to_wire(self) -> list[Any]:
        return [self.secret.to_json()]

    @classmethod
    def parse(cls, f: Fields) -> Self:
        expect = cls.expect_of(f)

        def check(value: Any) -> PrivateKey:
            if not isinstance(value, str):
                raise TypeError(f"must be a JSON private key, not {type(value).__name__}")
            try:
                secret = PrivateKey.from_json(value)
            except HeflError as exc:
                raise ValueError(f"is not a private key: {exc}") from None
            _key_size(secret.public_key, expect)
            return secret

        return cls(secret=f.get("secret", check))


@dataclass(frozen=True)
class PublicKeyNotice(BatchCryptMessage):
    """The public key, from the first client to the aggregator."""

    TAG: ClassVar[str] = "bc/pk"
    key: PublicKey

    @classmethod
    def parse(cls, f: Fields) -> Self:
        expect = cls.expect_of(f)

        def check(value: Any) -> PublicKey:
            if not isinstance(value, PublicKey):
                raise TypeError(f"holds {type(value).__name__} where the public key belongs")
            _key_size(value, expect)
            return value

        return cls(key=f.get("key", check))


# -- round header ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RoundHeader(BatchCryptMessage):
    """What a client is about to send in round ``round``, or (``done``) that it has finished.

    Attributes:
        round: the round number.
        n: values in the update (0 in a ``done`` header).
        dtype: the update's float dtype string ("" in a ``done`` header).
        layers: layer sizes adding up to ``n``.
        mode: the client's ``cfg.mode``.
        key: hex id of the key it encrypts under ("" in mode "plain").
        pre: it takes part in the first-round dACIQ exchange.
        done: it has no more rounds.
    """

    TAG: ClassVar[str] = "bc/{t}/hdr"
    round: int
    n: int
    dtype: str
    layers: tuple[int, ...]
    mode: str
    key: str
    pre: bool
    done: bool

    @classmethod
    def finished(cls, t: int, mode: str, key: str) -> RoundHeader:
        """The header that ends a client's session in place of round ``t``."""
        return cls(t, n=0, dtype="", layers=(), mode=mode, key=key, pre=False, done=True)

    @classmethod
    def parse(cls, f: Fields) -> Self:
        done = f.flag("done")
        header = cls(
            round=f.integer("round", min=0),
            n=f.integer("n", min=0 if done else 1),
            dtype=f.get("dtype", _NO_DTYPE_TEXT if done else _DTYPE_TEXT),
            layers=f.get("layers", _layers),
            mode=f.text("mode", choices=MODES),
            key=f.get("key", _KEY_ID_TEXT),
            pre=f.flag("pre"),
            done=done,
        )
        if sum(header.layers) != header.n:
            raise f.fail("layers", f"must add up to n={header.n}, got {list(header.layers)}")
        return header


# -- dACIQ statistics ------------------------------------------------------------------------
@dataclass(frozen=True)
class _LayerSums(BatchCryptMessage):
    """Encrypted fixed-point sums of squares, one ciphertext per layer."""

    sums: CipherVector

    @classmethod
    def parse(cls, f: Fields) -> Self:
        return cls(sums=_ciphers(f, "sums"))


@dataclass(frozen=True)
class PreStats(_LayerSums):
    """A client's Enc(Σx² per layer) of the first dACIQ round, before its upload."""

    TAG: ClassVar[str] = "bc/{t}/pre"


@dataclass(frozen=True)
class PreStatsSum(_LayerSums):
    """The aggregator's Enc(Σ_clients Σx² per layer) answering :class:`PreStats`."""

    TAG: ClassVar[str] = "bc/{t}/pre_sum"


@dataclass(frozen=True)
class RoundStats(_LayerSums):
    """A client's Enc(Σx² per layer) of this round, for the next round's clipping."""

    TAG: ClassVar[str] = "bc/{t}/stats"


@dataclass(frozen=True)
class RoundStatsSum(_LayerSums):
    """The aggregator's Enc(Σ_clients Σx² per layer) answering :class:`RoundStats`."""

    TAG: ClassVar[str] = "bc/{t}/stats_sum"


# -- streamed ciphertexts --------------------------------------------------------------------
@dataclass(frozen=True)
class UploadChunk(BatchCryptMessage):
    """One chunk of a client's encrypted update (chunk i covers the same positions for all)."""

    TAG: ClassVar[str] = "bc/{t}/up"
    ciphers: CipherVector

    @classmethod
    def parse(cls, f: Fields) -> Self:
        return cls(ciphers=_ciphers(f, "ciphers"))


@dataclass(frozen=True)
class DownloadChunk(BatchCryptMessage):
    """One chunk of the aggregate (or of the client's slice of it), aggregator to client."""

    TAG: ClassVar[str] = "bc/{t}/down"
    ciphers: CipherVector

    @classmethod
    def parse(cls, f: Fields) -> Self:
        return cls(ciphers=_ciphers(f, "ciphers"))


# -- shared decryption -----------------------------------------------------------------------
@dataclass(frozen=True)
class DecryptedShare(BatchCryptMessage):
    """A client's decrypted slice of the aggregate: each plaintext mod n, big-endian, in a
    fixed width of ``ceil(n_bits / 8)`` bytes."""

    TAG: ClassVar[str] = "bc/{t}/share"
    blob: bytes

    @classmethod
    def pack(cls, values: Sequence[int], key: PublicKey) -> DecryptedShare:
        """The share of signed plaintexts ``values`` under ``key``."""
        n, width = int(key.n), _width(key)
        return cls(blob=b"".join((v % n).to_bytes(width, "big") for v in values))

    def values(self, key: PublicKey) -> list[int]:
        """The signed plaintexts (those above n/2 are negative)."""
        n, width, half = int(key.n), _width(key), int(key.max_int)
        raw = (
            int.from_bytes(self.blob[i : i + width], "big") for i in range(0, len(self.blob), width)
        )
        return [v - n if v > half else v for v in raw]

    @classmethod
    def parse(cls, f: Fields) -> Self:
        expect = cls.expect_of(f)
        key = expect.key

        def check(value: Any) -> bytes:
            if not isinstance(value, bytes):
                raise TypeError(f"must be bytes, not {type(value).__name__}")
            if key is None:
                return value
            width = _width(key)
            if expect.length is not None and len(value) != expect.length * width:
                raise ValueError(
                    f"must hold {expect.length} values of {width} bytes, got {len(value)} bytes"
                )
            if len(value) % width:
                raise ValueError(f"must be a multiple of {width} bytes, got {len(value)}")
            n = int(key.n)
            for i in range(0, len(value), width):
                if int.from_bytes(value[i : i + width], "big") >= n:
                    raise ValueError(f"value {i // width} lies outside [0, n)")
            return value

        return cls(blob=f.get("blob", check))


def _width(key: PublicKey) -> int:
    return (key.n_bits + 7) // 8


# -- mode "plain" ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PlainUpdate(BatchCryptMessage):
    """A client's update in the clear (mode ``"plain"``, the no-encryption baseline)."""

    TAG: ClassVar[str] = "bc/{t}/plain"
    values: np.ndarray

    @classmethod
    def parse(cls, f: Fields) -> Self:
        expect = cls.expect_of(f)

        def check(value: Any) -> np.ndarray:
            array = check_array(value, kinds="f", shape=(expect.length,))
            if expect.dtype is not None and array.dtype.str != expect.dtype:
                raise TypeError(f"must have dtype {expect.dtype}, not {array.dtype.str}")
            return array

        return cls(values=f.get("values", check))


@dataclass(frozen=True)
class PlainSum(BatchCryptMessage):
    """The aggregator's float64 sum of the clients' plaintext updates."""

    TAG: ClassVar[str] = "bc/{t}/plain_sum"
    total: np.ndarray

    @classmethod
    def parse(cls, f: Fields) -> Self:
        expect = cls.expect_of(f)
        return cls(total=f.array("total", kinds="f", shape=(expect.length,)))


__all__ = [
    "ANYTHING",
    "BatchCryptMessage",
    "DecryptedShare",
    "DownloadChunk",
    "Expect",
    "KeyHandout",
    "PlainSum",
    "PlainUpdate",
    "PreStats",
    "PreStatsSum",
    "PublicKeyNotice",
    "RoundHeader",
    "RoundStats",
    "RoundStatsSum",
    "UploadChunk",
    "foreign_key_text",
    "round_prefix",
]
