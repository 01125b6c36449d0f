"""Encrypted g/h layouts and histogram operations against exact plaintext sums."""

import numpy as np
import pytest

from hefl.crypto import generate_keypair
from hefl.errors import PackingOverflowError
from hefl.protocols.vf2boost.budget import plan_bits
from hefl.protocols.vf2boost.encgh import (
    EncGH,
    build_histogram,
    cumulative_entries,
    decrypt_entries,
    encrypt_gh,
    seal_entries,
)
from hefl.protocols.vf2boost.messages import Hist, Session
from hefl.protocols.vf2boost.tree import encode_fixed, exact_group_sums, split_sums


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(512, allow_insecure=True)


def test_plan_bits_proves_and_refuses():
    plan = plan_bits(32561, 53, 2048, pack_gh=True, pack_histograms=True)
    assert plan.h_bits == 67 and plan.slot_bits == 137 and plan.slots == 14
    # the worst-case packed sum fits its lanes and slots
    G, H = -(32561 << 53), 32561 << 51
    v = (G << plan.h_bits) + H + plan.offset
    assert 0 <= v < 1 << plan.slot_bits
    assert plan.split_gh([(G << plan.h_bits) + H]) == ([G], [H])
    with pytest.raises(PackingOverflowError, match="larger key"):
        plan_bits(1 << 40, 53, 160, pack_gh=True, pack_histograms=False)
    with pytest.raises(PackingOverflowError, match="pack_histograms=False"):
        plan_bits(1 << 60, 53, 400, pack_gh=True, pack_histograms=True)


@pytest.mark.parametrize(
    "layout,pack_gh,pack_hist",
    [("packed", True, True), ("packed", True, False), ("pair", False, True),
     ("pair", False, False), ("phe", False, False)],
)  # fmt: skip
def test_histogram_entries_are_exact(keys, layout, pack_gh, pack_hist):
    pk, sk = keys
    rng = np.random.default_rng(3)
    n, F, W = 300, 3, 6
    p = rng.uniform(0.01, 0.99, n)
    y = rng.integers(0, 2, n)
    g, h = p - y, p * (1 - p)
    g[0] = -1.0  # the extreme encodings
    gi, hi = encode_fixed(g, 53), encode_fixed(h, 53)
    bins = rng.integers(0, W, size=(n, F))
    n_bins = np.array([W, W - 1, W])
    bins[:, 1] %= W - 1
    plan = plan_bits(n, 53, 512, pack_gh=pack_gh, pack_histograms=pack_hist)
    enc = EncGH.concat([encrypt_gh(sk, gi[:100], hi[:100], plan, layout, "djn"),
                        encrypt_gh(pk, gi[100:], hi[100:], plan, layout, "djn")])  # fmt: skip
    rows = np.sort(rng.choice(n, 200, replace=False))
    hist = build_histogram(enc.take(rows), bins[rows], W)
    # candidate positions (f·W + k)·2 + side in any order: side 1 adds the missing bin 0
    order = np.array([11, 1, 14, 27, 3])
    entries = seal_entries(cumulative_entries(hist, n_bins, W, order), plan, "djn")
    session = Session(key=pk, layout=layout, slots=plan.slots, n_features=F, max_bin=W)
    sent = Hist(ids=np.arange(len(order)), enc=entries).to_wire()
    got = Hist.from_wire("passive1", sent, session)
    G, H = decrypt_entries(sk, got.enc, plan, len(order) + F)
    groups = (bins[rows] + np.arange(F) * W).ravel()
    hg, hh = split_sums(
        exact_group_sums(np.repeat(gi[rows], F), groups, F * W).reshape(F, W),
        exact_group_sums(np.repeat(hi[rows], F), groups, F * W).reshape(F, W),
    )
    pick = list(order) + [(f * W + int(n_bins[f]) - 1) * 2 + 1 for f in range(F)]
    assert [hg.ravel()[i] for i in pick] == G
    assert [hh.ravel()[i] for i in pick] == H
    # subtraction gives the sibling exactly
    other = np.setdiff1d(np.arange(n), rows)
    sib = build_histogram(enc, bins, W) - hist
    ent2 = seal_entries(cumulative_entries(sib, n_bins, W, order), plan, "djn")
    G2, _ = decrypt_entries(sk, ent2, plan, len(order) + F)
    assert G2[-1] == sum(int(v) for v in gi[other])
