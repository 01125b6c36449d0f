"""Vector leaves (``multi_output_tree``) in every layout: packed g‖h, g and h apart ("pair"),
phe's per-value exponents, with and without histogram packing, under every obfuscation
method and in the serial baseline. The entries decrypt to the exact per-class sums, and the
federated trees are identical to the plaintext reference."""

import numpy as np
import pytest

from hefl.crypto import generate_keypair
from hefl.errors import CryptoError
from hefl.protocols.vf2boost.budget import plan_bits
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.encgh import (
    EncGH,
    build_histogram,
    cumulative_entries,
    decrypt_entries,
    encrypt_gh,
    seal_entries,
)
from hefl.protocols.vf2boost.local import fit
from hefl.protocols.vf2boost.messages import Gradients, Hist, Session
from hefl.protocols.vf2boost.reference import party_histogram, plaintext_reference
from hefl.protocols.vf2boost.tree import encode_fixed, split_sums

pytestmark = pytest.mark.timeout(120)

K = 3

LAYOUTS = [  # (layout, pack_gh, pack_histograms, encoding, ciphertexts per row)
    ("packed", True, True, "fixed", 1),
    ("packed", True, False, "fixed", 1),
    ("pair", False, True, "fixed", 2),
    ("pair", False, False, "fixed", 2),
    ("phe", False, False, "phe", 2 * K),
]


@pytest.fixture(scope="module")
def kp512():
    return generate_keypair(512, allow_insecure=True)


def softmax_gh(n, seed):
    """(rows × K) softmax gradients and hessians, with the extremes g = −1 and h = 1/2."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (n, K))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = rng.integers(0, K, n)
    g = p - (np.arange(K)[None, :] == y[:, None])
    h = 2 * p * (1 - p)
    g[0, 0], h[0, 1] = -1.0, 0.5
    return g, h


@pytest.mark.parametrize("layout,pack_gh,pack_hist,encoding,per_row", LAYOUTS)
def test_vector_entries_decrypt_to_exact_per_class_sums(
    kp512, layout, pack_gh, pack_hist, encoding, per_row
):
    pk, sk = kp512
    rng = np.random.default_rng(5)
    n, F, W, frac = 300, 3, 6, 20
    g, h = softmax_gh(n, 1)
    gi, hi = encode_fixed(g, frac), encode_fixed(h, frac)
    bins = rng.integers(0, W, size=(n, F))
    n_bins = np.full(F, W)
    plan = plan_bits(
        n,
        frac,
        512,
        pack_gh=pack_gh,
        pack_histograms=pack_hist,
        h_log2=-1,
        classes=K,
        encoding=encoding,
    )
    # the private key's CRT path and the public key's make the same layout
    enc = EncGH.concat(
        [
            encrypt_gh(sk, gi[:100], hi[:100], plan, layout, "djn"),
            encrypt_gh(pk, gi[100:], hi[100:], plan, layout, "rn"),
        ]
    )
    assert sum(len(p) for p in enc.parts) == per_row * n
    session = Session(
        key=pk, layout=layout, slots=plan.slots, max_rows=n, n_features=F, max_bin=W, classes=K
    )
    enc = Gradients.from_wire("active", Gradients(enc).to_wire(), session).enc
    rows = np.sort(rng.choice(n, 200, replace=False))
    order = np.array([11, 1, 14, 27, 3])
    hist = build_histogram(enc.take(rows), bins[rows], W)
    entries = seal_entries(cumulative_entries(hist, n_bins, W, order), plan, "djn-short")
    got = Hist.from_wire("passive1", Hist(ids=np.arange(5), enc=entries).to_wire(), session)
    G, H = decrypt_entries(sk, got.enc, plan, len(order) + F)
    hg, hh = split_sums(*party_histogram(bins, W, rows, gi, hi))  # (K × F × W × 2)
    pick = [*order, *((f * W + W - 1) * 2 + 1 for f in range(F))]
    assert [tuple(int(v) for v in hg.reshape(K, -1)[:, i]) for i in pick] == G
    assert [tuple(int(v) for v in hh.reshape(K, -1)[:, i]) for i in pick] == H
    assert H[-1] == tuple(int(v) for v in hi[rows].sum(axis=0))
    if layout == "phe":  # a class's part missing is refused, not misread
        short = EncGH("phe", got.enc.parts[:-1], True)
        with pytest.raises(CryptoError, match="parts"):
            decrypt_entries(sk, short, plan, len(order) + F)


def test_class_lanes_take_the_bound_values_exactly():
    """Every lane at its extreme sums (|ΣG| = 2^(F+b), ΣH at its bound) comes back exactly,
    in both fixed-point layouts."""
    n, frac = 1000, 30
    top = n << frac  # all rows at g = −1 (or 1)
    for pack_gh in (True, False):
        plan = plan_bits(n, frac, 2048, pack_gh=pack_gh, pack_histograms=True, h_log2=-1, classes=K)
        Gs, Hs = [-top, top, 0], [top >> 1, 0, top >> 1]
        if pack_gh:
            m = plan.join_classes([Gs], [Hs])
            assert plan.split_classes(m) == ([tuple(Gs)], [tuple(Hs)])
        else:
            assert plan.split_class_lanes(plan.join_lanes([Gs])) == [tuple(Gs)]
            assert plan.split_class_lanes(plan.join_lanes([Hs])) == [tuple(Hs)]
        assert abs(plan.join_lanes([Gs])[0]) + plan.offset < 1 << plan.slot_bits


def three_classes(adult_small, n):
    two, _, _ = adult_small
    X = [np.array(B[:n], dtype=float) for B in two]
    X[1][np.random.default_rng(2).random(X[1].shape) < 0.1] = np.nan  # missing values too
    s = np.nan_to_num(X[0][:, 0]) * 3 - np.nan_to_num(X[1][:, 1]) * 2 + X[0][:, 2]
    return X, np.digitize(s, np.quantile(s, [1 / 3, 2 / 3]))


SWITCHES = {
    "packed": {},
    "packed-unpacked-hists": {"pack_histograms": False},
    "pair": {"pack_gh": False},
    "pair-unpacked-hists": {"pack_gh": False, "pack_histograms": False},
    "phe": {"encoding": "phe", "pack_gh": False, "pack_histograms": False},
    "phe-naive-precomputed": {
        "encoding": "phe",
        "pack_gh": False,
        "pack_histograms": False,
        "reorder": False,
        "obfuscation": "djn-short",
    },
    "pair-rn-serial-steps": {
        "pack_gh": False,
        "obfuscation": "rn",
        "blaster": False,
        "optimistic": False,
    },
    "packed-djn-short-unpooled": {"obfuscation": "djn-short", "precompute": False},
    "serial": "serial",
}


@pytest.mark.parametrize("switches", list(SWITCHES.values()), ids=list(SWITCHES))
def test_multi_output_tree_is_lossless_in_every_layout(adult_small, kp512, switches):
    X_parts, y = three_classes(adult_small, 300)
    common = {
        "objective": "multi:softprob",
        "num_class": K,
        "multi_strategy": "multi_output_tree",
        "n_estimators": 2,
        "max_depth": 3,
        "key_bits": 512,
        "allow_insecure": True,
    }
    if switches == "serial":
        cfg = VF2BoostConfig.serial_baseline(**common)
    else:
        cfg = VF2BoostConfig(chunk_size=128, **common, **switches)
    res = fit(X_parts, y, cfg, keypair=kp512)
    ref = plaintext_reference(X_parts, y, cfg)
    assert res.model.resolved_trees() == ref.resolved_trees()
    assert res.model.n_trees == 2 and len(ref.resolved_trees()[0][-1]["leaf"]) == K
    np.testing.assert_array_equal(res.model.predict_proba(X_parts), ref.predict_proba(X_parts))
    # the parties used the precision the planner chose, the same as the reference's
    assert res.config is not None and res.config.frac_bits == cfg.resolve(len(y)).frac_bits
    assert isinstance(res.config.frac_bits, int)
