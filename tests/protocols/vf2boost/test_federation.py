"""The federated protocol builds exactly the plaintext reference's trees (lossless)."""

import functools

import numpy as np
import pytest

import hefl
from hefl.crypto import generate_keypair
from hefl.errors import ConfigError, PackingOverflowError, PeerFailed, ProtocolError
from hefl.messages import send
from hefl.protocols.vf2boost import passive
from hefl.protocols.vf2boost.active import active_party
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.encgh import EncGH
from hefl.protocols.vf2boost.local import fit, fit_local
from hefl.protocols.vf2boost.messages import Hello
from hefl.protocols.vf2boost.passive import passive_party
from hefl.protocols.vf2boost.reference import plaintext_reference

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def kp1024():
    return generate_keypair(1024, allow_insecure=True)


@pytest.fixture(scope="module")
def kp512():
    return generate_keypair(512, allow_insecure=True)


def small_cfg(bits, **kw):
    base = {"n_estimators": 2, "max_depth": 3, "key_bits": bits, "allow_insecure": True,
            "chunk_size": 700}  # fmt: skip
    base.update(kw)
    return VF2BoostConfig(**base)


def assert_lossless(model, ref, X_parts):
    assert model.resolved_trees() == ref.resolved_trees()  # same splits, bins, leaf weights
    np.testing.assert_array_equal(model.predict_proba(X_parts), ref.predict_proba(X_parts))


@pytest.mark.parametrize("n_parties", [2, 3])
def test_identical_to_reference_all_on(adult_small, kp1024, n_parties):
    two, three, y = adult_small
    X_parts = two if n_parties == 2 else three
    cfg = small_cfg(1024)
    res = fit(X_parts, y, cfg, keypair=kp1024)
    assert_lossless(res.model, plaintext_reference(X_parts, y, cfg), X_parts)
    assert len(res.tree_seconds) == 2 and res.bytes_sent["active"] > 0
    # optimistic splitting both hit and missed here, and no speculative branch leaked
    assert res.hit_rate is not None and 0 < res.hit_rate < 1
    # the passive parties kept their thresholds: the active party's share has none of them
    owners = {n["owner"] for t in res.model.active.trees for n in t.nodes if "owner" in n}
    assert owners - {0}, "the test data should give passive parties some splits"
    assert all(p.splits for p in res.model.parties[1:]) or n_parties == 3


@pytest.mark.parametrize(
    "switches",
    [
        {"blaster": False},
        {"pack_gh": False},
        {"pack_gh": False, "pack_histograms": False},
        {"pack_histograms": False},
        {"encoding": "phe", "pack_gh": False, "pack_histograms": False, "reorder": True},
        "serial",
    ],
    ids=["no-blaster", "pair", "pair-unpacked", "no-hist-packing", "phe-reorder", "serial"],
)
def test_every_switch_is_lossless(adult_small, kp512, switches):
    two, _, y = adult_small
    n = 600  # smaller: the phe path rescales per value
    X_parts, y = [two[0][:n], two[1][:n]], y[:n]
    if switches == "serial":
        cfg = VF2BoostConfig.serial_baseline(n_estimators=2, max_depth=3, key_bits=512,
                                             allow_insecure=True)  # fmt: skip
    else:
        cfg = small_cfg(512, chunk_size=250, **switches)
    model = fit_local(X_parts, y, cfg, keypair=kp512)
    assert_lossless(model, plaintext_reference(X_parts, y, cfg), X_parts)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("n_parties", [2, 3])
def test_one_process_per_party_over_zeromq(adult_small, kp512, n_parties):
    pytest.importorskip("hefl._processes", reason="multi-process runtime not available")
    two, three, y = adult_small
    X_parts = [X[:500] for X in (two if n_parties == 2 else three)]
    cfg = small_cfg(512, n_estimators=1, max_depth=2, chunk_size=200)
    res = fit(X_parts, y[:500], cfg, processes=True, keypair=kp512, max_workers=1)
    assert_lossless(res.model, plaintext_reference(X_parts, y[:500], cfg), X_parts)


def test_bit_budget_refused_before_training(adult_small):
    two, _, y = adult_small
    cfg = VF2BoostConfig(key_bits=256, allow_insecure=True, frac_bits=53)  # "auto" would fit
    with pytest.raises(PackingOverflowError, match=r"larger key.*frac_bits=52 fits"):
        fit(two, y, cfg)


def _run(roles):
    return hefl.run(roles, executor="inline", timeout=60)


def test_row_count_and_config_mismatch_name_the_party(adult_small, kp512):
    two, _, y = adult_small
    cfg = small_cfg(512, n_estimators=1)
    roles = {
        "active": functools.partial(active_party, X=two[0], y=y, cfg=cfg, keypair=kp512),
        "passive1": functools.partial(passive_party, X=two[1][:-5], cfg=cfg),
    }
    with pytest.raises(PeerFailed) as info:
        _run(roles)
    assert "passive1" in str(info.value) and "rows" in str(info.value)
    roles["passive1"] = functools.partial(passive_party, X=two[1], cfg=cfg.replace(max_bin=16))
    with pytest.raises(PeerFailed, match="different VF2BoostConfig"):
        _run(roles)


def test_passive_party_disconnecting_mid_tree(adult_small, kp512):
    two, _, y = adult_small
    cfg = small_cfg(512, n_estimators=1)
    agreed = cfg.resolve(len(y)).to_dict()  # the config as the parties resolve it

    async def quitter(party):
        await send(party, "active", Hello(n_rows=len(y), n_features=7, config=agreed))
        await party.recv("active", "vf2/setup")
        await party.send("active", "vf2/resume/have", [-1, b""])  # keeps no checkpoint
        await party.recv("active", "vf2/resume/from")
        async for _ in party.stream_from("active", "vf2/gh/0"):
            pass
        raise ConnectionResetError("link lost")

    roles = {
        "active": functools.partial(active_party, X=two[0], y=y, cfg=cfg, keypair=kp512),
        "passive1": quitter,
    }
    with pytest.raises(PeerFailed) as info:
        _run(roles)
    assert info.value.peer == "passive1"


@pytest.mark.parametrize("attack", ["wrong-key", "tampered"])
def test_tampered_or_wrong_key_histograms_are_refused(adult_small, kp512, monkeypatch, attack):
    two, _, y = adult_small
    cfg = small_cfg(512, n_estimators=1)
    other_pk, _ = generate_keypair(512, allow_insecure=True)
    honest = passive._seal_job

    def evil(hist, n_bins, width, order, plan, method):
        sealed = honest(hist, n_bins, width, order, plan, method)
        cv = sealed.parts[0]
        if attack == "wrong-key":
            bad = other_pk.encrypt([1] * len(cv))
        else:  # corrupt the first ciphertext, as a bit flip on the wire would
            cs = cv.ciphertexts
            cs[0] = cs[0] * 12345 % cv.public_key.nsquare
            bad = type(cv).from_ciphertexts(cv.public_key, cs)
        return EncGH(sealed.layout, [bad, *sealed.parts[1:]], sealed.reorder)

    monkeypatch.setattr(passive, "_seal_job", evil)
    roles = {
        "active": functools.partial(active_party, X=two[0], y=y, cfg=cfg, keypair=kp512),
        "passive1": functools.partial(passive_party, X=two[1], cfg=cfg),
    }
    with pytest.raises(PeerFailed) as info:
        _run(roles)
    assert "passive1" in str(info.value)
    assert "tampered" in str(info.value) or "key" in str(info.value)


def test_fit_refuses_bad_labels_and_features(adult_small):
    two, _, y = adult_small
    with pytest.raises(ConfigError, match="0 or 1"):
        fit(two, y * 3, small_cfg(512))
    bad = two[0].copy()
    bad[0, 0] = np.inf
    with pytest.raises(ConfigError, match="infinite"):
        fit([bad, two[1]], y, small_cfg(512))


def test_federated_prediction_matches_local(adult_small, adult):
    from hefl.data import ADULT_ACTIVE_COLUMNS, ADULT_PASSIVE_COLUMNS
    from hefl.protocols.vf2boost import predict

    two, _, y = adult_small
    model = plaintext_reference(two, y, VF2BoostConfig(n_estimators=3, max_depth=3))
    _, test = adult
    tparts = [test.select(ADULT_ACTIVE_COLUMNS)[:3000], test.select(ADULT_PASSIVE_COLUMNS)[:3000]]
    np.testing.assert_array_equal(predict(tparts, model), model.predict_proba(tparts))
    with pytest.raises(PeerFailed, match="rows"):
        predict([tparts[0], tparts[1][:10]], model)


def test_malformed_histograms_under_the_real_tag_fail_the_active_party(adult_small, kp512):
    """A passive party that follows the protocol up to its first histograms, then sends a
    malformed Hist: the active party refuses it, naming the sender, the message and the field."""
    two, _, y = adult_small
    cfg = small_cfg(512, n_estimators=1)
    agreed = cfg.resolve(len(y)).to_dict()  # the config as the parties resolve it

    async def mallory(party):
        await send(party, "active", Hello(n_rows=len(y), n_features=7, config=agreed))
        await party.recv("active", "vf2/setup")
        await party.send("active", "vf2/resume/have", [-1, b""])  # keeps no checkpoint
        await party.recv("active", "vf2/resume/from")
        async for _ in party.stream_from("active", "vf2/gh/0"):
            pass
        await party.recv("active", "vf2/layer/0/0")
        await party.send("active", "vf2/hist/0/0/0", [np.array([5, 5]), ["packed", []]])
        await party.recv("active", "vf2/win/0/0")

    roles = {
        "active": functools.partial(active_party, X=two[0], y=y, cfg=cfg, keypair=kp512),
        "passive1": mallory,
    }
    with pytest.raises(PeerFailed) as info:
        _run(roles)
    assert info.value.peer == "active"
    assert isinstance(info.value.__cause__, ProtocolError)
    assert "passive1 sent a malformed Hist message: field 'ids'" in info.value.cause


def test_malformed_setup_fails_the_passive_party(adult_small):
    """An active party whose setup names party index 0: the passive party refuses it."""
    two, _, y = adult_small
    cfg = small_cfg(512, n_estimators=1)
    pk, _ = generate_keypair(512, allow_insecure=True)

    async def mallory(party):
        await party.recv("passive1", "vf2/hello")
        await party.send("passive1", "vf2/setup", [pk, 0, len(y)])
        await party.recv("passive1", "vf2/hist/0/0/0")

    roles = {"active": mallory, "passive1": functools.partial(passive_party, X=two[1], cfg=cfg)}
    with pytest.raises(PeerFailed) as info:
        _run(roles)
    assert info.value.peer == "passive1"
    assert isinstance(info.value.__cause__, ProtocolError)
    assert "active sent a malformed Setup message: field 'index' must be >= 1" in info.value.cause


def test_prefilled_obfuscators_keep_the_model_lossless(adult_small, kp512):
    """prefill: every tree's obfuscators are made before the first tree (waited for without
    blocking the event loop), then each chunk is encrypted with them."""
    two, _, y = adult_small
    X_parts, y = [two[0][:300], two[1][:300]], y[:300]
    cfg = small_cfg(512, chunk_size=100)
    res = fit(X_parts, y, cfg, keypair=kp512, prefill=True)
    assert_lossless(res.model, plaintext_reference(X_parts, y, cfg), X_parts)
    names = {s.name for s in res.trace.spans}
    assert {"prefill-obfuscators", "encrypt-warm"} <= names
