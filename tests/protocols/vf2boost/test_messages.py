"""The VF2Boost wire messages: every message round-trips through the codec, and every kind of
malformed field is refused with ProtocolError (KeyMismatchError for ciphertexts under another
key) whose text names the sender, the message and the field."""

import numpy as np
import pytest

from hefl import codec
from hefl.crypto import CipherVector, EncryptedExpVector, generate_keypair
from hefl.errors import ConfigError, KeyMismatchError, ProtocolError
from hefl.protocols.vf2boost.encgh import EncGH
from hefl.protocols.vf2boost.messages import (
    Gradients,
    Hello,
    Hist,
    Layer,
    Place,
    Placement,
    Predict,
    Session,
    Setup,
    Spec,
    Split,
    Tentative,
    Win,
    Winner,
    tree_prefixes,
)

SENDER = "mallory"
KEY, _ = generate_keypair(512, allow_insecure=True)
OTHER, _ = generate_keypair(512, allow_insecure=True)
GH_SESSION = Session(key=KEY, layout="packed", max_rows=4)
# one feature of at most 4 bins: a Hist holds at most 8 candidates (4 per default direction),
# then the feature's total
HIST_SESSION = Session(key=KEY, layout="packed", n_features=1, max_bin=4)
BITS = np.packbits(np.array([1, 0, 1], dtype=bool))
TREE_END = [{"owner": 1, "split": 0, "left": 1, "right": 2}, {"leaf": 0}, {"leaf": 1}]


def _packed(n, key=KEY):
    return EncGH("packed", [key.encrypt(list(range(n)))])


def _valid():
    """One valid message of every kind, with the session it is read under (or None)."""
    return {
        "Hello": (Hello(n_rows=10, n_features=3, config={"max_bin": 4}), None),
        "Setup": (Setup(public_key=KEY, index=1, n_rows=10), None),
        "Gradients": (Gradients(_packed(3)), GH_SESSION),
        "Hist": (Hist(ids=np.array([7, 3], dtype=np.int64), enc=_packed(3)), HIST_SESSION),
        "Layer": (Layer(splits=[Split(0, 1, 2, BITS)], open=[1, 2]), None),
        "LayerEnd": (Layer(splits=[], open=[], nodes=TREE_END), None),
        "Spec": (Spec([Tentative(0, BITS)]), None),
        "Win": (Win([Winner(0, np.array([7], dtype=np.int64))]), None),
        "Place": (Place([Placement(node=0, split=0, bits=BITS)]), None),
        "Predict": (Predict(n_rows=3, masks=[np.zeros((2, 1), dtype=np.uint8)]), None),
    }


def _read(kind, wire, session):
    obj = codec.loads(codec.dumps(wire))  # as it arrives over the network
    return kind.from_wire(SENDER, obj) if session is None else kind.from_wire(SENDER, obj, session)


def _plain(obj):
    """A comparable form of a wire value (arrays and ciphertexts by content)."""
    if isinstance(obj, np.ndarray):
        return ("array", obj.dtype.kind, obj.shape, obj.tolist())
    if isinstance(obj, CipherVector):
        return ("ciphers", obj.public_key.n, obj.to_bytes())
    if isinstance(obj, EncryptedExpVector):
        return ("exp", _plain(obj.cv), obj.exponents.tolist())
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


@pytest.mark.parametrize("name", list(_valid()))
def test_valid_messages_round_trip(name):
    msg, session = _valid()[name]
    got = _read(type(msg), msg.to_wire(), session)
    assert type(got) is type(msg)
    assert _plain(got.to_wire()) == _plain(msg.to_wire())


def test_phe_gradients_and_horner_packed_histograms_round_trip():
    session = Session(key=KEY, layout="phe", max_rows=4)
    enc = EncGH("phe", [EncryptedExpVector(KEY.encrypt([1, 2]), [0, -3])] * 2)
    got = _read(Gradients, Gradients(enc).to_wire(), session)
    assert got.enc.layout == "phe" and got.enc.parts[1].exponents.tolist() == [0, -3]
    # 2 candidates + 1 total = 3 entries, 2 per ciphertext when Horner-packed: 2 ciphertexts
    packed = Session(key=KEY, layout="packed", slots=2, n_features=1, max_bin=4)
    hist = Hist(ids=np.array([1, 2], dtype=np.int64), enc=_packed(2))
    assert len(_read(Hist, hist.to_wire(), packed).enc) == 2
    with pytest.raises(ProtocolError, match="parts of \\[2\\] ciphertexts"):
        _read(Hist, Hist(ids=hist.ids, enc=_packed(3)).to_wire(), packed)


def _set(path, value):
    """A wire mutation: set the item at ``path`` (indices into nested lists) to ``value``."""

    def mutate(wire):
        target = wire
        for i in path[:-1]:
            target = target[i]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value
        return wire

    return mutate


#: (valid message, mutation of its wire list, field named in the error)
MALFORMED = [
    ("Hello", lambda w: w[:2], "n_rows, n_features, config"),
    ("Hello", _set([0], "10"), "'n_rows'"),
    ("Hello", _set([0], 0), "'n_rows'"),
    ("Hello", _set([1], -1), "'n_features'"),
    ("Hello", _set([2], [1, 2]), "'config'"),
    ("Setup", _set([0], "key"), "'public_key'"),
    ("Setup", _set([1], 0), "'index'"),
    ("Setup", _set([2], True), "'n_rows'"),
    ("Setup", lambda w: {"public_key": w[0]}, "public_key, index, n_rows"),
    ("Gradients", lambda w: [*w, 1], "(enc)"),
    ("Gradients", _set([0], "ciphertexts"), "'enc'"),
    ("Gradients", _set([0, 0], "pair"), "'enc'"),
    ("Gradients", _set([0, 1], [[1, 2, 3]]), "'enc'"),
    ("Gradients", _set([0, 1], lambda p: [*p, p[0]]), "'enc'"),
    ("Gradients", _set([0], lambda e: _packed(5).to_wire()), "'enc'"),
    ("Hist", _set([0], np.array([7, 7])), "'ids'"),
    ("Hist", _set([0], np.array([7.0, 3.0])), "'ids'"),
    ("Hist", _set([0], np.arange(9)), "'ids'"),
    ("Hist", _set([0], [7, 3]), "'ids'"),
    ("Hist", _set([1], lambda e: _packed(2).to_wire()), "'enc'"),
    ("Hist", _set([1, 1], "nothing"), "'enc'"),
    ("Layer", _set([0, 0, 3], [1, 0, 1]), "'bits'"),
    ("Layer", _set([0, 0, 2], 3), "'right'"),
    ("Layer", _set([0, 0, 1], 0), "'left'"),
    ("Layer", _set([0, 0], [0, 1, 2]), "'splits[0]'"),
    ("Layer", _set([1], [1, 1]), "'open'"),
    ("Layer", _set([1], [-1]), "'open'"),
    ("Layer", _set([2], TREE_END), "'nodes'"),
    ("LayerEnd", _set([2], None), "'nodes'"),
    ("LayerEnd", _set([2, 1], {"leaf": 0, "owner": 1}), "'nodes'"),
    ("LayerEnd", _set([2, 0, "left"], 7), "'nodes'"),
    ("LayerEnd", _set([2, 2, "leaf"], -1), "'nodes'"),
    ("Spec", _set([0], "splits"), "'splits'"),
    ("Spec", _set([0, 0, 0], -1), "'node'"),
    ("Spec", _set([0, 0, 1], BITS.astype(np.int16)), "'bits'"),
    ("Win", _set([0], lambda ws: [ws[0], ws[0]]), "'winners'"),
    ("Win", _set([0, 0, 1], np.array([], dtype=np.int64)), "'ids'"),
    ("Win", _set([0, 0, 1], np.array([7, 7])), "'ids'"),
    ("Win", _set([0, 0, 0], "0"), "'node'"),
    ("Place", _set([0], lambda ps: [ps[0], ps[0]]), "'placements'"),
    ("Place", _set([0, 0, 1], -1), "'split'"),
    ("Place", _set([0, 0, 2], np.zeros((1, 1), dtype=np.uint8)), "'bits'"),
    ("Place", _set([0, 0], [0, 0]), "'placements[0]'"),
    ("Predict", _set([0], -1), "'n_rows'"),
    ("Predict", _set([1], [np.zeros((2, 2), dtype=np.uint8)]), "'masks'"),
    ("Predict", _set([1], np.zeros((2, 1), dtype=np.uint8)), "'masks'"),
    ("Predict", _set([1, 0], np.zeros((2, 1), dtype=bool)), "'masks'"),
]


@pytest.mark.parametrize(
    ("name", "mutate", "field"), MALFORMED, ids=[f"{m[0]}-{i}" for i, m in enumerate(MALFORMED)]
)
def test_malformed_messages_are_refused_naming_sender_message_and_field(name, mutate, field):
    msg, session = _valid()[name]
    with pytest.raises(ProtocolError) as info:
        _read(type(msg), mutate(msg.to_wire()), session)
    text = str(info.value)
    assert SENDER in text and f"{type(msg).__name__} message" in text and field in text, text


@pytest.mark.parametrize("name", ["Gradients", "Hist"])
def test_ciphertexts_under_another_key_are_refused(name):
    msg, session = _valid()[name]
    wire = msg.to_wire()
    other = _packed(3, key=OTHER).to_wire()
    if name == "Gradients":
        wire[0] = other
    else:
        wire[1] = other
    with pytest.raises(KeyMismatchError) as info:
        _read(type(msg), wire, session)
    text = str(info.value)
    assert SENDER in text and f"{name} message" in text and "'enc'" in text, text


def test_messages_with_ciphertexts_need_the_session():
    msg, _ = _valid()["Hist"]
    with pytest.raises(ConfigError, match="Session"):
        Hist.from_wire(SENDER, msg.to_wire())


def test_tags_and_tree_prefixes_are_the_protocol_strings():
    assert Hello.tag() == "vf2/hello" and Setup.tag() == "vf2/setup"
    assert Predict.tag() == "vf2/predict" and Gradients.tag(t=3) == "vf2/gh/3"
    assert Layer.tag(t=1, d=2) == "vf2/layer/1/2" and Spec.tag(t=1, d=2) == "vf2/spec/1/2"
    assert Hist.tag(t=1, d=2, node=5) == "vf2/hist/1/2/5"
    assert Win.tag(t=1, d=2) == "vf2/win/1/2" and Place.tag(t=1, d=2) == "vf2/place/1/2"
    assert tree_prefixes(4) == (
        "vf2/gh/4",
        "vf2/layer/4",
        "vf2/spec/4",
        "vf2/hist/4",
        "vf2/win/4",
        "vf2/place/4",
    )
