"""Every BatchCrypt wire message: valid ones survive the codec unchanged, malformed ones are
refused with ProtocolError (KeyMismatchError for ciphertexts under another key) whose text
names the sender, the message and the field; and in a real federation a party that sends a
malformed message under a real tag fails the honest party with that error."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest

import hefl
from hefl.codec import Codec
from hefl.crypto import CipherVector, generate_keypair
from hefl.errors import KeyMismatchError, PeerFailed, ProtocolError
from hefl.protocols.batchcrypt import BatchCryptConfig
from hefl.protocols.batchcrypt.messages import (
    DecryptedShare,
    DownloadChunk,
    Expect,
    KeyHandout,
    PlainSum,
    PlainUpdate,
    PreStats,
    PreStatsSum,
    PublicKeyNotice,
    RoundHeader,
    RoundStats,
    RoundStatsSum,
    UploadChunk,
)
from hefl.protocols.batchcrypt.roles import aggregator, client

pytestmark = pytest.mark.timeout(60)

SENDER = "client1"


@functools.cache
def keys(which: int = 0) -> Any:
    return generate_keypair(512, allow_insecure=True)


def pk(which: int = 0) -> Any:
    return keys(which)[0]


def sk(which: int = 0) -> Any:
    return keys(which)[1]


def other_pk() -> Any:
    return keys(1)[0]


def over_the_wire(obj: Any) -> Any:
    codec = Codec()
    return codec.decode(codec.encode(obj))


def refused(kind: Any, obj: Any, expect: Expect, field: str | None, error: type = ProtocolError):
    with pytest.raises(error) as info:
        kind.from_wire(SENDER, obj, expect)
    text = str(info.value)
    assert SENDER in text and kind.__name__ in text, text
    assert field is None or repr(field) in text, text
    return text


def same(a: Any, b: Any) -> bool:
    if isinstance(a, CipherVector):
        return a.public_key == b.public_key and list(a.ciphertexts) == list(b.ciphertexts)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


def header(**changes: Any) -> list[Any]:
    base = RoundHeader(3, 10, "<f8", (4, 6), "batchcrypt", pk().key_id.hex(), pre=True, done=False)
    wire = base.to_wire()
    names = ["round", "n", "dtype", "layers", "mode", "key", "pre", "done"]
    for name, value in changes.items():
        wire[names.index(name)] = value
    return wire


# -- valid messages: a round trip through the codec ------------------------------------------
def valid_messages() -> list[tuple[Any, Expect]]:
    cv = pk().encrypt([1, 2, 3])
    return [
        (KeyHandout(secret=sk()), Expect(key_bits=512)),
        (PublicKeyNotice(key=pk()), Expect(key_bits=512)),
        (RoundHeader.from_wire(SENDER, header()), Expect()),
        (RoundHeader.finished(4, "phe", pk().key_id.hex()), Expect()),
        (PreStats(sums=cv), Expect(pk(), length=3)),
        (PreStatsSum(sums=cv), Expect(pk(), length=3)),
        (RoundStats(sums=cv), Expect(pk(), length=3)),
        (RoundStatsSum(sums=cv), Expect(pk(), length=3)),
        (UploadChunk(ciphers=cv), Expect(pk(), length=3)),
        (DownloadChunk(ciphers=cv), Expect(pk(), length=3)),
        (DecryptedShare.pack([5, -7, 0], pk()), Expect(pk(), length=3)),
        (PlainUpdate(values=np.arange(4, dtype=np.float32)), Expect(length=4, dtype="<f4")),
        (PlainSum(total=np.linspace(-1, 1, 5)), Expect(length=5)),
    ]


@pytest.mark.parametrize("index", range(13))
def test_valid_message_round_trips(index):
    message, expect = valid_messages()[index]
    back = type(message).from_wire(SENDER, over_the_wire(message.to_wire()), expect)
    assert type(back) is type(message)
    for name in message.__dataclass_fields__:
        assert same(getattr(message, name), getattr(back, name)), name


def test_tags_are_the_protocol_tags():
    assert KeyHandout.tag() == "bc/key" and PublicKeyNotice.tag() == "bc/pk"
    expected = {
        RoundHeader: "hdr",
        PreStats: "pre",
        PreStatsSum: "pre_sum",
        UploadChunk: "up",
        RoundStats: "stats",
        RoundStatsSum: "stats_sum",
        DownloadChunk: "down",
        DecryptedShare: "share",
        PlainUpdate: "plain",
        PlainSum: "plain_sum",
    }
    for kind, suffix in expected.items():
        assert kind.tag(t=7) == f"bc/7/{suffix}"


def test_decrypted_share_keeps_signs():
    share = DecryptedShare.from_wire(
        SENDER, DecryptedShare.pack([5, -7, 0], pk()).to_wire(), Expect(pk())
    )
    assert share.values(pk()) == [5, -7, 0]


# -- malformed messages ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind",
    [
        KeyHandout,
        PublicKeyNotice,
        RoundHeader,
        PreStats,
        PreStatsSum,
        RoundStats,
        RoundStatsSum,
        UploadChunk,
        DownloadChunk,
        DecryptedShare,
        PlainUpdate,
        PlainSum,
    ],
)
@pytest.mark.parametrize("obj", [None, {"x": 1}, b"raw", [], [1, 2, 3, 4, 5, 6, 7, 8, 9]])
def test_every_message_refuses_a_wrong_shape(kind, obj):
    text = refused(kind, obj, Expect(), None)
    assert "expected a list of" in text


@pytest.mark.parametrize(
    ("obj", "expect", "field"),
    [
        ([42], Expect(), "secret"),
        (["{not json"], Expect(), "secret"),
        (['{"kind": "public"}'], Expect(), "secret"),
        ([None], Expect(), "secret"),
    ],
)
def test_key_handout_refuses(obj, expect, field):
    refused(KeyHandout, obj, expect, field)


def test_key_handout_refuses_the_wrong_key_size():
    text = refused(KeyHandout, KeyHandout(secret=sk()).to_wire(), Expect(key_bits=2048), "secret")
    assert "512-bit" in text and "2048" in text


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        ("a key", Expect()),
        (12345, Expect()),
        (None, Expect()),
        ([1, 2], Expect()),
        (sk(), Expect()),  # the private key where the public key belongs
        (pk(), Expect(key_bits=1024)),
    ],
)
def test_public_key_notice_refuses(value, expect):
    refused(PublicKeyNotice, [value], expect, "key")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("round", -1),
        ("round", "3"),
        ("round", True),
        ("round", 3.0),
        ("n", 0),
        ("n", -5),
        ("n", None),
        ("dtype", "<i8"),
        ("dtype", "float64"),
        ("dtype", 8),
        ("layers", "4,6"),
        ("layers", [4, -6]),
        ("layers", [4, 6.0]),
        ("layers", [5, 6]),  # do not add up to n
        ("mode", "fast"),
        ("mode", None),
        ("key", "zz"),
        ("key", b"\x00"),
        ("pre", 1),
        ("done", "no"),
    ],
)
def test_round_header_refuses(field, value):
    refused(RoundHeader, header(**{field: value}), Expect(), field)


def test_a_done_header_needs_no_update():
    done = RoundHeader.from_wire(SENDER, header(n=0, dtype="", layers=[], done=True))
    assert done.done and done.n == 0
    refused(RoundHeader, header(n=0, dtype="<f8", layers=[], done=True), Expect(), "dtype")


LAYER_SUMS = [PreStats, PreStatsSum, RoundStats, RoundStatsSum]
CHUNKS = [UploadChunk, DownloadChunk]


@pytest.mark.parametrize("kind", LAYER_SUMS + CHUNKS)
@pytest.mark.parametrize("value", [b"\x00" * 64, [1, 2, 3], None, 7, "ciphertexts", np.arange(3)])
def test_ciphertext_messages_refuse_what_is_not_ciphertexts(kind, value):
    text = refused(kind, [value], Expect(pk(), length=3), "ciphers" if kind in CHUNKS else "sums")
    assert "where ciphertexts belong" in text


@pytest.mark.parametrize("kind", LAYER_SUMS + CHUNKS)
@pytest.mark.parametrize("length", [0, 2, 4])
def test_ciphertext_messages_refuse_the_wrong_count(kind, length):
    cv = pk().encrypt(list(range(length)))
    text = refused(kind, [cv], Expect(pk(), length=3), "ciphers" if kind in CHUNKS else "sums")
    assert f"got {length}" in text


@pytest.mark.parametrize("kind", LAYER_SUMS + CHUNKS)
def test_ciphertext_messages_refuse_another_key(kind):
    cv = other_pk().encrypt([1, 2, 3])
    field = "ciphers" if kind in CHUNKS else "sums"
    text = refused(kind, [cv], Expect(pk(), length=3), field, KeyMismatchError)
    assert other_pk().key_id.hex() in text and pk().key_id.hex() in text


def test_a_sum_from_the_aggregator_under_another_key_names_it():
    with pytest.raises(KeyMismatchError, match="'aggregator' sent ciphertexts under key"):
        DownloadChunk.from_wire("aggregator", [other_pk().encrypt([1])], Expect(pk()))


@pytest.mark.parametrize(
    ("blob", "expect", "why"),
    [
        ("text", Expect(pk(), length=1), "must be bytes"),
        (None, Expect(pk(), length=1), "must be bytes"),
        (b"\x00" * 63, Expect(pk(), length=1), "must hold 1 values of 64 bytes"),
        (b"\x00" * 128, Expect(pk(), length=1), "must hold 1 values"),
        (b"\x00" * 65, Expect(pk()), "multiple of 64 bytes"),
        (b"\xff" * 64, Expect(pk(), length=1), "outside [0, n)"),
        (int(pk().n).to_bytes(64, "big"), Expect(pk(), length=1), "outside [0, n)"),
    ],
)
def test_decrypted_share_refuses(blob, expect, why):
    assert why in refused(DecryptedShare, [blob], expect, "blob")


@pytest.mark.parametrize(
    ("values", "why"),
    [
        (np.arange(5, dtype=np.float64), "shape"),
        (np.arange(4, dtype=np.int64), "dtype"),
        (np.arange(4, dtype=np.float32), "dtype <f8"),
        (np.array([0.0, np.nan, 1.0, 2.0]), "finite"),
        (np.array([0.0, np.inf, 1.0, 2.0]), "finite"),
        (np.zeros((2, 2)), "shape"),
        ([0.0, 1.0, 2.0, 3.0], "numpy array"),
        (None, "numpy array"),
    ],
)
def test_plain_update_refuses(values, why):
    assert why in refused(PlainUpdate, [values], Expect(length=4, dtype="<f8"), "values")


@pytest.mark.parametrize(
    "total", [np.zeros(2), np.array([1.0, np.nan, 0.0]), np.array([1, 2, 3]), "sum", None]
)
def test_plain_sum_refuses(total):
    refused(PlainSum, [total], Expect(length=3), "total")


# -- a federation with a party that sends a malformed message under a real tag ---------------
SMALL = {"key_bits": 512, "allow_insecure": True}


async def _bad_header_client(party, cfg, work_):
    wire = RoundHeader(0, len(work_), work_.dtype.str, (len(work_),), cfg.mode, "", False, False)
    malformed = wire.to_wire()
    malformed[3] = [len(work_), 1]  # layer sizes that do not add up to n
    await party.send("aggregator", RoundHeader.tag(t=0), malformed)
    await party.recv("aggregator", PlainSum.tag(t=0))


async def _short_sum_aggregator(party, cfg):
    peers = sorted(party.peers)
    await party.gather(RoundHeader.tag(t=0), peers=peers)
    await party.gather(PlainUpdate.tag(t=0), peers=peers)
    await party.broadcast(PlainSum.tag(t=0), [np.zeros(3)], peers=peers)  # 3 of 20 values
    await party.gather(RoundHeader.tag(t=1), peers=peers)


async def _bad_key_holder(party, cfg, work_):
    await party.send("client1", KeyHandout.tag(), ["not a key"])
    await party.recv("client1", "bc/never")


def _run(cfg, aggregator_role=aggregator, client_roles=None):
    rng = np.random.default_rng(0)
    roles = {"aggregator": functools.partial(aggregator_role, cfg=cfg)}
    for i in range(2):
        role = (client_roles or {}).get(i, client)
        roles[f"client{i}"] = functools.partial(role, cfg=cfg, work_=rng.uniform(-1, 1, 20))
    with pytest.raises(PeerFailed) as info:
        hefl.run(roles, executor="inline", timeout=30)
    return info.value


def test_aggregator_refuses_a_malformed_header_naming_the_client_and_field():
    cfg = BatchCryptConfig(n_clients=2, mode="plain", **SMALL)
    exc = _run(cfg, client_roles={1: _bad_header_client})
    assert exc.peer == "aggregator" and isinstance(exc.__cause__, ProtocolError)
    assert "client1 sent a malformed RoundHeader message: field 'layers'" in exc.cause


def test_client_refuses_a_malformed_sum_naming_the_aggregator_and_field():
    cfg = BatchCryptConfig(n_clients=2, mode="plain", **SMALL)
    exc = _run(cfg, aggregator_role=_short_sum_aggregator)
    assert exc.peer in ("client0", "client1") and isinstance(exc.__cause__, ProtocolError)
    assert "aggregator sent a malformed PlainSum message: field 'total'" in exc.cause


def test_client_refuses_a_malformed_private_key_naming_the_key_holder():
    cfg = BatchCryptConfig(n_clients=2, clipping=1.0, **SMALL)
    exc = _run(cfg, client_roles={0: _bad_key_holder})
    assert exc.peer == "client1" and isinstance(exc.__cause__, ProtocolError)
    assert "client0 sent a malformed KeyHandout message: field 'secret'" in exc.cause
