"""FixedPointEncoder round trips and refusals."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hefl import ConfigError, PlaintextRangeError
from hefl.crypto import FixedPointEncoder

floats = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None)
@given(xs=st.lists(floats, max_size=20), frac=st.integers(0, 80))
def test_round_trip_error_bound(xs, frac):
    enc = FixedPointEncoder(frac)
    x = np.array(xs, dtype=np.float64)
    ints = enc.encode(x)
    assert ints.dtype == object and ints.shape == x.shape
    assert all(type(v) is int for v in ints.tolist())
    back = enc.decode(ints)
    assert np.all(np.abs(back - x) <= 2.0 ** -(frac + 1) + 1e-16 * np.abs(x))


@settings(max_examples=50, deadline=None)
@given(xs=st.lists(floats, min_size=1, max_size=50))
def test_sums_of_encodings_decode_to_sums(xs):
    enc = FixedPointEncoder()
    ints = enc.encode(np.array(xs))
    total = sum(ints.tolist())
    # math.fsum: a plain float sum of the inputs is itself off by up to an ulp per addition
    exact = math.fsum(xs)
    assert enc.decode([total])[0] == pytest.approx(exact, abs=len(xs) * 2.0**-53, rel=2.0**-52)


def test_huge_sums_beyond_int64():
    enc = FixedPointEncoder(53)
    ints = enc.encode(np.full(1000, 1e6))
    total = sum(ints.tolist())
    assert total > 2**63
    assert enc.decode([total, -total]).tolist() == [1e9, -1e9]


def test_exact_values():
    enc = FixedPointEncoder(53)
    assert enc.encode([1.0, -0.5]).tolist() == [2**53, -(2**52)]
    assert enc.encode(0.25).shape == ()
    assert enc.decode(np.array([2**53], dtype=np.int64)).tolist() == [1.0]


def test_refusals():
    enc = FixedPointEncoder()
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(PlaintextRangeError):
            enc.encode([1.0, bad])
    for frac in (-1, 2000, 1.5, True):
        with pytest.raises(ConfigError):
            FixedPointEncoder(frac)
    with pytest.raises(ConfigError):
        enc.decode([1.5])


def test_with_encryption(keypair):
    pk, sk = keypair
    enc = FixedPointEncoder()
    x = np.array([0.1, -0.7, 3.25])
    cv = pk.encrypt(enc.encode(x))
    total = enc.decode(sk.decrypt((cv + cv + cv).sum()))
    assert total[0] == pytest.approx(3 * x.sum(), abs=1e-12)
