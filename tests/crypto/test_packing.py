"""Plaintext slot packer: exact sums at the extremes, round trips, bit-budget refusals."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hefl import ConfigError, PackingOverflowError
from hefl.crypto import plan_slots

LAYOUTS = ["offset", "signed", "unsigned"]


def _sum_packed(layout, vectors):
    total = None
    for v in vectors:
        ps = layout.pack(v)
        total = ps if total is None else [a + b for a, b in zip(total, ps, strict=True)]
    return total


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("r", [2, 3, 8, 16, 31, 32])
@pytest.mark.parametrize("k", [1, 2, 3, 10, 999, 1000])
def test_extremes_exact(kind, r, k):
    """k copies of all-max, all-min and alternating extremes sum exactly in every lane."""
    lay = plan_slots(1024, r, k, kind)
    assert lay.lane_bits == r + (k - 1).bit_length()
    assert lay.slots_per_plaintext * lay.lane_bits <= 1024 - 2
    count = 2 * lay.slots_per_plaintext + 3  # last plaintext partly filled
    mixed = np.where(np.arange(count) % 2 == 0, lay.max_value, lay.min_value)
    for pattern in (np.full(count, lay.max_value), np.full(count, lay.min_value), mixed):
        ps = [p * k for p in lay.pack(pattern)]  # k identical summands
        out = lay.unpack(ps, count, k)
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, pattern.astype(np.int64) * k)


@pytest.mark.parametrize("kind", LAYOUTS)
def test_random_many_summands(kind):
    rng = np.random.default_rng(7)
    k, r = 1000, 16
    lay = plan_slots(2048, r, k, kind)
    vecs = [rng.integers(lay.min_value, lay.max_value, size=300, endpoint=True) for _ in range(k)]
    out = lay.unpack(_sum_packed(lay, vecs), 300, k)
    np.testing.assert_array_equal(out, np.sum(vecs, axis=0))
    # fewer summands than planned
    out = lay.unpack(_sum_packed(lay, vecs[:37]), 300, 37)
    np.testing.assert_array_equal(out, np.sum(vecs[:37], axis=0))


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("r", [63, 64, 74, 90])
def test_wide_values_python_ints(kind, r):
    k = 1 << 20  # e.g. VF2Boost: sums over a million instances
    lay = plan_slots(2048, r, k, kind)
    lo, hi = lay.min_value, lay.max_value
    vals = [lo, hi, 0, hi // 3, lo // 7 if lo else 5]
    ps = [p * k for p in lay.pack(vals)]
    out = lay.unpack(ps, len(vals), k)
    assert out.dtype == object
    assert out.tolist() == [v * k for v in vals]


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(LAYOUTS),
    r=st.integers(2, 40),
    k=st.integers(1, 50),
    data=st.data(),
)
def test_round_trip_hypothesis(kind, r, k, data):
    lay = plan_slots(512, r, k, kind)
    n_vec = data.draw(st.integers(1, k))
    count = data.draw(st.integers(0, 3 * lay.slots_per_plaintext))
    vals = st.integers(lay.min_value, lay.max_value)
    vecs = [data.draw(st.lists(vals, min_size=count, max_size=count)) for _ in range(n_vec)]
    total = _sum_packed(lay, [np.array(v, dtype=np.int64) for v in vecs])
    out = lay.unpack(total, count, n_vec)
    assert out.tolist() == [sum(col) for col in zip(*vecs, strict=True)] if count else out.size == 0


@pytest.mark.parametrize("kind", LAYOUTS)
def test_through_encryption(keypair, kind):
    pk, sk = keypair
    k = 10
    lay = plan_slots(pk, 8, k, kind)
    rng = np.random.default_rng(3)
    vecs = [rng.integers(lay.min_value, lay.max_value, size=200, endpoint=True) for _ in range(k)]
    acc = None
    for v in vecs:
        cv = pk.encrypt(lay.pack(v))
        acc = cv if acc is None else acc + cv
    out = lay.unpack(sk.decrypt(acc), 200, k)
    np.testing.assert_array_equal(out, np.sum(vecs, axis=0))
    # plaintexts given modulo n (unsigned) are centred when the plan knows the key
    raw = [p % int(pk.n) for p in sk.decrypt(acc)]
    np.testing.assert_array_equal(lay.unpack(raw, 200, k), np.sum(vecs, axis=0))


def test_slot_counts_match_the_paper():
    # BatchCrypt: 2048-bit key, r = 16, k = 10 -> about 100 lanes; r = 8 -> about 160
    assert plan_slots(2048, 16, 10).slots_per_plaintext == 2046 // 20
    assert plan_slots(2048, 8, 10).slots_per_plaintext == 2046 // 12


def test_bad_input():
    lay = plan_slots(1024, 8, 10, "signed")
    with pytest.raises(PackingOverflowError):
        lay.pack([128])
    with pytest.raises(PackingOverflowError):
        lay.pack(np.array([-129]))
    with pytest.raises(PackingOverflowError):
        lay.pack([2**80])
    with pytest.raises(PackingOverflowError):
        plan_slots(1024, 8, 10, "unsigned").pack([-1])
    with pytest.raises(ConfigError):
        lay.pack([1.5])
    with pytest.raises(PackingOverflowError, match="summands"):
        lay.unpack(lay.pack([1]), 1, 11)
    with pytest.raises(ConfigError):
        lay.unpack(lay.pack([1]), 1, 0)
    with pytest.raises(ConfigError):
        lay.unpack([], 5)
    with pytest.raises(PackingOverflowError):
        lay.unpack([1 << 1100], 1)
    off = plan_slots(1024, 8, 10, "offset")
    with pytest.raises(PackingOverflowError):  # lanes larger than 10 summands can produce
        off.unpack([p * 15 for p in off.pack([127])], 1, 10)
    with pytest.raises(PackingOverflowError):  # a lane cannot fit the key
        plan_slots(512, 501, 1000)
    for args in ((1024, 0, 1), (1024, 8, 0), (1024, 8, 1, "twos"), (1024, 8.0, 1)):
        with pytest.raises(ConfigError):
            plan_slots(*args)


def test_pack_is_vectorized_and_fast():
    import time

    lay = plan_slots(2048, 16, 10, "signed")
    v = np.random.default_rng(0).integers(-(2**15), 2**15, size=200_000)
    t = time.perf_counter()
    out = lay.unpack(lay.pack(v), len(v), 1)
    assert time.perf_counter() - t < 2.0  # ~0.03 s; a per-value Python loop would take seconds
    np.testing.assert_array_equal(out, v)
