"""Ciphertext-side Horner packing and its unpacking."""

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hefl import ConfigError, PackingOverflowError
from hefl.crypto import _native, horner_capacity, pack_ciphertexts, plan_slots, unpack_slots


@settings(max_examples=20, deadline=None)
@given(data=st.data(), w=st.integers(1, 120))
def test_round_trip(small_keypair, data, w):
    pk, sk = small_keypair
    t = horner_capacity(pk, w)
    count = data.draw(st.integers(0, 3 * t + 1))
    vals = data.draw(st.lists(st.integers(0, (1 << w) - 1), min_size=count, max_size=count))
    packed = pack_ciphertexts(pk.encrypt(vals), w)
    assert len(packed) == -(-count // t)
    assert unpack_slots(sk.decrypt(packed), w, count) == vals


def test_sums_then_pack_at_the_extremes(keypair):
    """Histogram sums of offset-layout values, packed: all-max, all-min, mixed."""
    pk, sk = keypair
    k = 1000
    w = 40
    maxv = (1 << w) // k - 1
    for vals in ([maxv] * 50, [0] * 50, [maxv if i % 2 else 0 for i in range(50)]):
        cv = pk.encrypt(vals) * k  # k summands each
        out = unpack_slots(sk.decrypt(pack_ciphertexts(cv, w)), w, 50)
        assert out == [v * k for v in vals]


def test_slot_order_documented(small_keypair):
    pk, sk = small_keypair
    packed = pack_ciphertexts(pk.encrypt([1, 2, 3]), 8)
    assert sk.decrypt(packed) == [(1 << 16) | (2 << 8) | 3]  # first input in the highest slot


def test_balanced_groups(small_keypair):
    pk, sk = small_keypair
    t = horner_capacity(pk, 100)  # 5 slots at 512 bits
    assert t == 5
    vals = list(range(11))  # 3 outputs of 4, 4, 3
    packed = pack_ciphertexts(pk.encrypt(vals), 100)
    ps = sk.decrypt(packed)
    assert len(ps) == 3 and ps[2] == (8 << 200) | (9 << 100) | 10
    assert unpack_slots(ps, 100, 11) == vals


def test_with_offset_packed_gh(keypair):
    """VF2Boost style: g‖h packed in one plaintext, summed, then Horner-packed."""
    pk, sk = keypair
    lay = plan_slots(pk, 20, 64, "offset", max_slots=2)
    rng = np.random.default_rng(0)
    g = rng.integers(lay.min_value, lay.max_value, size=(64, 6), endpoint=True)
    h = rng.integers(0, lay.max_value, size=(64, 6), endpoint=True)
    cts = [pk.encrypt(lay.pack(np.stack([g[i], h[i]], axis=1).reshape(-1))) for i in range(64)]
    total = cts[0]
    for c in cts[1:]:
        total = total + c
    w = lay.plaintext_bits
    packed = pack_ciphertexts(total, w)
    plain = unpack_slots(sk.decrypt(packed), w, len(total))
    out = lay.unpack(plain, 12, 64).reshape(6, 2)
    np.testing.assert_array_equal(out[:, 0], g.sum(axis=0))
    np.testing.assert_array_equal(out[:, 1], h.sum(axis=0))


def test_bad_input(small_keypair):
    pk, sk = small_keypair
    with pytest.raises(PackingOverflowError):
        pack_ciphertexts(pk.encrypt([1]), 511)
    with pytest.raises(PackingOverflowError):
        horner_capacity(512, 600)
    with pytest.raises(ConfigError):
        horner_capacity(512, 0)
    with pytest.raises(PackingOverflowError, match="offset"):
        unpack_slots(sk.decrypt(pack_ciphertexts(pk.encrypt([-1, 1]), 8)), 8, 2)
    with pytest.raises(PackingOverflowError):
        unpack_slots(sk.decrypt(pack_ciphertexts(pk.encrypt([255, 256]), 8)), 8, 2)
    with pytest.raises(ConfigError):
        unpack_slots([1, 2], 8, 1)
    with pytest.raises(ConfigError):
        unpack_slots([], 8, 3)


@pytest.mark.skipif(not _native.IFMA, reason="the CPU has no AVX-512 IFMA")
@settings(max_examples=25, deadline=None)
@given(
    bits=st.sampled_from([100, 1024, 2048, 4096, 4158]),
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=5),
    shift=st.integers(1, 70),
    seed=st.integers(0, 2**32),
)
def test_native_horner_equals_the_gmpy2_rule(bits, sizes, shift, seed):
    """The IFMA Horner kernel gives acc^(2^w)·c mod m group by group, as gmpy2 computes it."""
    rng = np.random.default_rng(seed)
    m = gmpy2.mpz(int.from_bytes(rng.bytes(bits // 8 + 1), "little")) % (1 << bits)
    m |= (1 << (bits - 1)) | 1
    values = [
        gmpy2.mpz(int.from_bytes(rng.bytes(bits // 8 + 8), "little")) % m for _ in range(sum(sizes))
    ]
    expected, i = [], 0
    for size in sizes:
        acc = values[i]
        for c in values[i + 1 : i + size]:
            acc = gmpy2.powmod(acc, 1 << shift, m) * c % m
        expected.append(acc)
        i += size
    assert _native.horner_pack(values, sizes, shift, m) == expected


@pytest.mark.skipif(not _native.IFMA, reason="the CPU has no AVX-512 IFMA")
def test_native_horner_refuses_bad_input():
    from hefl.crypto import _cmodmul

    m = gmpy2.mpz(2**1000 + 297)
    mod, one = m.to_bytes(128, "little"), gmpy2.mpz(5).to_bytes(128, "little")
    sizes = np.array([2], dtype="<i8").tobytes()
    with pytest.raises(ValueError, match="add up"):
        _cmodmul.horner_pack(one, mod, sizes, 8)
    with pytest.raises(ValueError, match="shift"):
        _cmodmul.horner_pack(one, mod, sizes, 0)
    with pytest.raises(ValueError, match="add up"):
        _cmodmul.horner_pack(one, mod, np.array([0, 1], dtype="<i8").tobytes(), 8)
    with pytest.raises(ValueError, match="not reduced"):
        _cmodmul.horner_pack(one + m.to_bytes(128, "little"), mod, sizes, 8)
