"""Every packing layout at its bit-budget edge: exactly full works (encrypt, add the planned
number of summands, decrypt, unpack: exact), one bit more is refused with
PackingOverflowError before anything is encrypted."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hefl_faults import TALLY

from hefl.crypto import (
    generate_keypair,
    horner_capacity,
    pack_ciphertexts,
    plan_slots,
    unpack_slots,
)
from hefl.errors import PackingOverflowError
from hefl.protocols.batchcrypt import BatchCryptConfig
from hefl.protocols.vf2boost.budget import plan_bits

pytestmark = pytest.mark.timeout(60)
KEY_BITS = 512


@functools.cache
def keys():
    return generate_keypair(KEY_BITS, allow_insecure=True)


@pytest.mark.parametrize("layout", ["offset", "signed", "unsigned"])
@pytest.mark.parametrize("k", [1, 2, 5, 8])
def test_slot_packer_at_its_edge(layout, k):
    pk, sk = keys()
    guard = (k - 1).bit_length()
    budget = pk.n_bits - 2
    # one lane filling the whole budget: exactly full
    edge = plan_slots(pk, budget - guard, k, layout)
    assert edge.slots_per_plaintext == 1 and edge.lane_bits == budget
    with pytest.raises(PackingOverflowError, match="does not fit"):
        plan_slots(pk, budget - guard + 1, k, layout)
    # several lanes filling the budget exactly, every value at its extreme, k summands
    lanes = 4
    value_bits = budget // lanes - guard
    layout_ = plan_slots(pk, value_bits, k, layout)
    assert layout_.plaintext_bits <= budget and layout_.slots_per_plaintext >= lanes
    count = 3 * layout_.slots_per_plaintext
    for extreme in (layout_.min_value, layout_.max_value):
        values = [extreme] * count
        packed = layout_.pack(np.array(values, dtype=object))
        total = functools.reduce(lambda a, b: a + b, [pk.encrypt(packed) for _ in range(k)])
        got = layout_.unpack(sk.decrypt(total), count, n_summands=k)
        assert [int(v) for v in got] == [k * extreme] * count
        for bad in (layout_.min_value - 1, layout_.max_value + 1):
            with pytest.raises(PackingOverflowError, match="does not fit"):
                layout_.pack(np.array([*values[:-1], bad], dtype=object))
    TALLY["inputs"] += 1


@pytest.mark.parametrize("bits", [4, 16, 32])
def test_batchcrypt_layouts_at_their_edge(bits):
    """The configured lanes of a BatchCrypt federation hold n_clients maximal sums; one more
    client than planned is refused up front (the guard bits were planned for n_clients)."""
    from hefl_faults import batchcrypt_roles

    import hefl

    for layout in ("offset", "signed"):
        cfg = BatchCryptConfig(n_clients=4, bits=bits, layout=layout, key_bits=KEY_BITS,
                               allow_insecure=True)  # fmt: skip
        slots = plan_slots(keys()[0], cfg.bits, cfg.n_clients, layout=cfg.layout)
        assert slots.lane_bits == bits + 2 and slots.plaintext_bits <= KEY_BITS - 2
    with pytest.raises(hefl.PeerFailed, match="n_clients=2"):
        hefl.run(batchcrypt_roles(k=3, n=10, n_clients=2), executor="inline", timeout=20)
    TALLY["faults"] += 1


@pytest.mark.parametrize("slot_bits", [1, 17, 170, KEY_BITS - 2])
def test_horner_capacity_and_packing_at_the_edge(slot_bits):
    pk, sk = keys()
    t = horner_capacity(pk, slot_bits)
    assert t == (KEY_BITS - 2) // slot_bits and t * slot_bits <= KEY_BITS - 2
    top = (1 << slot_bits) - 1
    values = [top, 0, top, 1][: max(1, min(4, t))] * 2
    packed = pack_ciphertexts(pk.encrypt(values), slot_bits)
    assert unpack_slots(sk.decrypt(packed), slot_bits, len(values)) == values
    TALLY["inputs"] += 1


def test_horner_capacity_one_past_the_edge():
    with pytest.raises(PackingOverflowError, match="does not fit"):
        horner_capacity(KEY_BITS, KEY_BITS - 1)
    assert horner_capacity(KEY_BITS, KEY_BITS - 2) == 1


@pytest.mark.parametrize("n_rows", [1, 1000, 4096])
def test_vf2boost_gh_packing_at_its_edge(n_rows):
    """pack_gh: entry_bits = 2F + 2b must fit key_bits − 2. At the largest F that fits, the
    most extreme node (every row g = −1, h = 1/4) packs, sums and splits back exactly."""
    pk, sk = keys()
    b = n_rows.bit_length()
    F = (KEY_BITS - 2 - 2 * b) // 2
    plan = plan_bits(n_rows, F, KEY_BITS, pack_gh=True, pack_histograms=False)
    assert plan.entry_bits <= KEY_BITS - 2
    with pytest.raises(PackingOverflowError, match="use a larger key"):
        plan_bits(n_rows, F + 1, KEY_BITS, pack_gh=True, pack_histograms=False)
    for g in (-(1 << F), 1 << F):
        g_int, h_int = [g] * n_rows, [1 << (F - 2)] * n_rows
        cv = pk.encrypt(plan.join_gh(g_int, h_int))
        total = cv.sum() if hasattr(cv, "sum") else functools.reduce(
            lambda a, b: a + b, [cv[i : i + 1] for i in range(len(cv))])  # fmt: skip
        (G,), (H,) = plan.split_gh(sk.decrypt(total))
        assert (sum(g_int), sum(h_int)) == (G, H)
    TALLY["inputs"] += 1


@pytest.mark.parametrize("pack_gh", [True, False])
def test_vf2boost_histogram_packing_at_its_edge(pack_gh):
    """pack_histograms needs two (entry_bits + 1)-bit slots; at the largest F with two slots
    the extreme offset entries Horner-pack and unpack exactly; F + 1 is refused."""
    pk, sk = keys()
    n_rows = 1000
    b = n_rows.bit_length()

    def entry_bits(F):
        return (2 * F + 2 * b) if pack_gh else (F + b + 1)

    F = max(f for f in range(2, 400) if 2 * (entry_bits(f) + 1) <= KEY_BITS - 2)
    plan = plan_bits(n_rows, F, KEY_BITS, pack_gh=pack_gh, pack_histograms=True)
    assert plan.slots == 2
    with pytest.raises(PackingOverflowError, match="two"):
        plan_bits(n_rows, F + 1, KEY_BITS, pack_gh=pack_gh, pack_histograms=True)
    lo, hi = -(1 << plan.entry_bits) + 1, (1 << plan.entry_bits) - 1
    entries = [lo, hi, hi, lo]
    cv = pk.encrypt(entries) + plan.offset
    packed = pack_ciphertexts(cv, plan.slot_bits)
    got = [v - plan.offset for v in unpack_slots(sk.decrypt(packed), plan.slot_bits, 4)]
    assert got == entries
    TALLY["inputs"] += 1
