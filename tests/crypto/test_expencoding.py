"""phe-compatible variable-exponent encoding and re-ordered accumulation."""

import numpy as np
import phe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hefl import ConfigError, KeyMismatchError, PlaintextRangeError
from hefl.crypto import (
    EncryptedExpVector,
    encode_exp,
    naive_group_sum,
    reordered_group_sum,
    reordered_sum,
)

floats = st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(x=floats)
def test_encoding_matches_phe(keypair, x):
    pk, _ = keypair
    ppk = pk.to_phe()
    mant, ex = encode_exp(pk, np.array([x]))
    ref = phe.EncodedNumber.encode(ppk, x)
    assert int(ex[0]) == ref.exponent
    assert mant[0] % int(pk.n) == ref.encoding


def test_encoding_ints_and_max_exponent(keypair):
    pk, _ = keypair
    ppk = pk.to_phe()
    mant, ex = encode_exp(pk, np.array([5, -3]))
    assert mant == [5, -3] and ex.tolist() == [0, 0]
    mant, ex = encode_exp(pk, np.array([0.5, 1e10]), max_exponent=-20)
    for m, e, x in zip(mant, ex.tolist(), [0.5, 1e10], strict=True):
        ref = phe.EncodedNumber.encode(ppk, x, max_exponent=-20)
        assert (m % int(pk.n), e) == (ref.encoding, ref.exponent)
    with pytest.raises(PlaintextRangeError):
        encode_exp(pk, np.array([np.nan]))
    with pytest.raises(PlaintextRangeError):
        encode_exp(pk, np.array([1e300]), max_exponent=-20)


def test_phe_interop_both_ways(keypair):
    pk, sk = keypair
    ppk, psk = pk.to_phe(), sk.to_phe()
    xs = [0.1, -2.5, 3e-7, 12345.678]
    ev = EncryptedExpVector.encrypt(pk, xs)
    assert [psk.decrypt(n) for n in ev.to_phe()] == xs
    nums = [ppk.encrypt(x) for x in xs]
    ev2 = EncryptedExpVector.from_phe(pk, nums)
    assert ev2.decrypt(sk).tolist() == xs
    assert (ev + ev2).decrypt(sk).tolist() == pytest.approx([2 * x for x in xs], rel=1e-15)
    with pytest.raises(KeyMismatchError):
        EncryptedExpVector.from_phe(
            pk, [phe.generate_paillier_keypair(n_length=512)[0].encrypt(1.0)]
        )


@settings(max_examples=15, deadline=None)
@given(
    xs=st.lists(
        st.floats(-1, 1, allow_nan=False).filter(lambda x: x == 0 or abs(x) > 1e-60),
        min_size=1,
        max_size=30,
    ),
    seed=st.integers(0, 99),
)
def test_reordered_equals_naive_equals_phe(keypair, xs, seed):
    pk, sk = keypair
    groups = np.random.default_rng(seed).integers(0, 4, size=len(xs))
    ev = EncryptedExpVector.encrypt(pk, xs)
    fast = reordered_group_sum(ev, groups, 4)
    slow = naive_group_sum(ev, groups, 4)
    a, b = fast.decrypt(sk), slow.decrypt(sk)
    np.testing.assert_array_equal(a, b)  # both exact on the same mantissas
    for g in range(4):
        sel = [x for x, gg in zip(xs, groups.tolist(), strict=True) if gg == g]
        # phe's own sum over the same EncryptedNumbers
        nums = [n for n, gg in zip(ev.to_phe(), groups.tolist(), strict=True) if gg == g]
        ref = sk.to_phe().decrypt(sum(nums[1:], nums[0])) if nums else 0.0
        assert a[g] == ref
        assert a[g] == pytest.approx(sum(sel), abs=1e-12)
    assert reordered_sum(ev).decrypt(sk)[0] == pytest.approx(sum(xs), abs=1e-12)


def test_reordering_saves_rescales(keypair):
    """Alternating exponents force the naive order to rescale at almost every step."""
    pk, sk = keypair
    xs = [0.5 if i % 2 else 0.001 for i in range(40)]
    ev = EncryptedExpVector.encrypt(pk, xs)
    assert len(set(ev.exponents.tolist())) == 2
    zeros = np.zeros(40, dtype=np.int64)
    assert reordered_group_sum(ev, zeros, 1).decrypt(sk)[0] == pytest.approx(sum(xs))
    assert naive_group_sum(ev, zeros, 1).decrypt(sk)[0] == pytest.approx(sum(xs))


def test_refuses_exponent_spread_that_would_wrap(keypair):
    pk, _ = keypair
    ev = EncryptedExpVector.encrypt(pk, [1.0, 7e-302])
    with pytest.raises(PlaintextRangeError, match="max_exponent"):
        reordered_sum(ev)


def test_bad_groups(keypair):
    pk, _ = keypair
    ev = EncryptedExpVector.encrypt(pk, [0.5, 0.25])
    for groups, n in ((np.array([0, 2]), 2), (np.array([0]), 2), (np.array([0.0, 1.0]), 2)):
        with pytest.raises(ConfigError):
            reordered_group_sum(ev, groups, n)
    with pytest.raises(ConfigError):
        EncryptedExpVector(ev.cv, [0])
