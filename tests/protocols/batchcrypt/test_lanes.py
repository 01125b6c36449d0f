"""Exact lane sums of BatchCrypt's packing: the original decoder failed from 3 clients on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hefl.crypto import generate_keypair, plan_slots
from hefl.errors import PackingOverflowError
from hefl.protocols.batchcrypt.quantize import dequantize, max_level, quantize, step


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(1024, allow_insecure=True)


def _plain_sum(layout, n, per_client: list[np.ndarray]) -> np.ndarray:
    """Add packed plaintexts as Paillier does (integers mod n), then unpack."""
    packed = [layout.pack(q) for q in per_client]
    sums = [sum(col) % n for col in zip(*packed, strict=True)]
    sums = [s - n if s > n // 2 else s for s in sums]
    return layout.unpack(sums, len(per_client[0]), n_summands=len(per_client))


@settings(max_examples=40, deadline=None)
@given(
    bits=st.integers(2, 32),
    k=st.integers(1, 1000),
    layout=st.sampled_from(["offset", "signed"]),
    kind=st.sampled_from(["max", "min", "mixed", "random"]),
    size=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_lane_sums_exact_for_any_k_and_r(keys, bits, k, layout, kind, size, seed):
    pk, _ = keys
    lay = plan_slots(pk, bits, k, layout=layout)
    top = max_level(bits)
    rng = np.random.default_rng(seed)
    actual = int(rng.integers(1, k + 1)) if kind == "random" else k
    if kind == "max":
        qs = [np.full(size, top, dtype=np.int64)] * actual
    elif kind == "min":
        qs = [np.full(size, -top, dtype=np.int64)] * actual
    elif kind == "mixed":
        qs = [
            np.where(np.arange(size) % 2 == i % 2, top, -top).astype(np.int64)
            for i in range(actual)
        ]
    else:
        qs = [rng.integers(-top, top + 1, size=size) for _ in range(actual)]
    got = _plain_sum(lay, int(pk.n), qs)
    assert np.array_equal(got, np.sum(qs, axis=0))


def test_lane_sums_exact_under_encryption(keys):
    pk, sk = keys
    k, bits = 7, 16
    lay = plan_slots(pk, bits, k)
    rng = np.random.default_rng(3)
    top = max_level(bits)
    qs = [rng.integers(-top, top + 1, size=500) for _ in range(k - 1)]
    qs.append(np.full(500, top, dtype=np.int64))
    total = None
    for q in qs:
        cv = sk.encrypt(lay.pack(q))
        total = cv if total is None else total + cv
    got = lay.unpack(sk.decrypt(total), 500, n_summands=k)
    assert np.array_equal(got, np.sum(qs, axis=0))


def test_quantize_aggregate_dequantize_within_k_steps(keys):
    pk, sk = keys
    k, bits, alpha = 9, 8, 1.0
    lay = plan_slots(pk, bits, k)
    rng = np.random.default_rng(5)
    xs = [rng.uniform(-alpha, alpha, size=400) for _ in range(k)]
    total = None
    for x in xs:
        cv = sk.encrypt(lay.pack(quantize(x, alpha, bits)))
        total = cv if total is None else total + cv
    approx = dequantize(lay.unpack(sk.decrypt(total), 400, n_summands=k), alpha, bits)
    err = np.abs(approx - np.sum(xs, axis=0))
    assert err.max() <= k * step(alpha, bits)
    assert err.mean() < 0.5 * np.sqrt(k) * step(alpha, bits)  # stochastic rounding averages out


def test_more_summands_than_planned_is_refused(keys):
    pk, _ = keys
    lay = plan_slots(pk, 16, 3)
    with pytest.raises(PackingOverflowError):
        lay.unpack(lay.pack(np.zeros(5, dtype=np.int64)), 5, n_summands=4)
