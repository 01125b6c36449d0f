"""Config validation, quantization, dACIQ, models and data splits (no crypto, no runtime)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hefl.errors import ConfigError
from hefl.protocols.batchcrypt.aciq import aciq_c, daciq_alpha, sigma_from_sums, total_error
from hefl.protocols.batchcrypt.config import BatchCryptConfig
from hefl.protocols.batchcrypt.datasets import load_fmnist, split_horizontal
from hefl.protocols.batchcrypt.models import MLP, make_model
from hefl.protocols.batchcrypt.quantize import dequantize, max_level, quantize, step


# --- config ---------------------------------------------------------------------------------
def test_config_defaults_are_secure():
    cfg = BatchCryptConfig()
    assert (cfg.bits, cfg.key_bits, cfg.clipping, cfg.mode) == (16, 2048, "daciq", "batchcrypt")
    assert cfg.shared_decryption and not cfg.short_exponent
    assert cfg.parties == ("aggregator", "client0", "client1", "client2")


@pytest.mark.parametrize(
    "changes",
    [
        {"bits": 1},
        {"bits": 33},
        {"bits": 8.0},
        {"n_clients": 0},
        {"n_clients": 1001},
        {"key_bits": 1024},  # small key without the opt-in
        {"clipping": "aciq"},
        {"clipping": -1.0},
        {"clipping": float("nan")},
        {"clipping": True},
        {"layout": "twos"},
        {"mode": "ckks"},
        {"chunk_size": 0},
        {"shared_decryption": "yes"},
        {"round_timeout": 0},
    ],
)
def test_config_refuses_bad_values(changes):
    with pytest.raises(ConfigError):
        BatchCryptConfig(**changes)


def test_config_small_key_needs_opt_in():
    assert BatchCryptConfig(key_bits=512, allow_insecure=True).key_bits == 512
    assert BatchCryptConfig(clipping=0.5).clipping == 0.5
    with pytest.raises(ConfigError):
        BatchCryptConfig().with_(bits=0)


# --- quantization ---------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(2, 32),
    alpha=st.floats(1e-3, 1e3),
    values=st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=50),
)
def test_quantize_stays_in_r_bits_and_within_one_step(bits, alpha, values):
    x = np.array(values)
    q = quantize(x, alpha, bits)
    assert q.dtype == np.int64
    assert np.all(np.abs(q) <= max_level(bits))
    err = np.abs(dequantize(q, alpha, bits) - np.clip(x, -alpha, alpha))
    assert np.all(err <= step(alpha, bits) * (1 + 1e-9))


def test_stochastic_rounding_is_unbiased():
    rng = np.random.default_rng(1)
    x = np.full(200_000, 0.3)  # 0.3 of a step at alpha = max_level
    q = quantize(x, alpha=1.0, bits=2, rng=rng)  # levels -1, 0, 1; step 1
    assert set(np.unique(q)) == {0, 1}
    assert abs(q.mean() - 0.3) < 0.005


def test_quantize_refuses_nan_and_inf():
    with pytest.raises(ConfigError, match="NaN or infinite"):
        quantize(np.array([1.0, np.nan]), 1.0, 8)
    with pytest.raises(ConfigError):
        quantize(np.array([np.inf]), 1.0, 8)
    with pytest.raises(ConfigError):
        quantize(np.array([1.0]), 0.0, 8)


# --- dACIQ ----------------------------------------------------------------------------------
def test_aciq_factors_match_the_gaussian_model():
    assert 3.8 <= aciq_c(8) <= 4.0
    assert 5.8 <= aciq_c(16) <= 6.0
    values = [aciq_c(r) for r in range(2, 33)]
    assert values == sorted(values)  # more bits -> clip later
    for r in (4, 8, 16):  # it is the minimum of the error model
        c = aciq_c(r)
        assert total_error(c, r) <= min(total_error(c * 0.97, r), total_error(c * 1.03, r))


def test_daciq_alpha_and_sigma():
    sigma = sigma_from_sums(np.array([400.0, 0.0]), np.array([100, 5]))
    assert np.allclose(sigma, [2.0, 0.0])
    assert math.isclose(daciq_alpha(2.0, 16), 2.0 * aciq_c(16))
    assert daciq_alpha(0.0, 8) > 0
    with pytest.raises(ConfigError):
        daciq_alpha(float("nan"), 8)


# --- models and data ------------------------------------------------------------------------
def test_mlp_shape_and_gradient_check():
    assert MLP([784, 128, 10]).n_params == 101_770
    m = make_model("mlp", 5, 3, hidden=4, seed=1)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(7, 5)), rng.integers(0, 3, 7)
    g = m.gradient(X, y)
    w = m.get_flat()
    num = np.zeros_like(w)
    for i in range(len(w)):
        e = np.zeros_like(w)
        e[i] = 1e-6
        m.set_flat(w + e)
        up = m.loss(X, y)
        m.set_flat(w - e)
        num[i] = (up - m.loss(X, y)) / 2e-6
    m.set_flat(w)
    assert np.abs(g - num).max() < 1e-6
    with pytest.raises(ConfigError):
        make_model("cnn", 5, 3)


def test_logreg_learns_a_separable_problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    m = make_model("logreg", 3, 2)
    for _ in range(200):
        m.set_flat(m.get_flat() - 1.0 * m.gradient(X, y))
    assert m.accuracy(X, y) > 0.95


def test_split_horizontal_partitions_rows():
    X = np.arange(20.0).reshape(10, 2)
    y = np.arange(10)
    parts = split_horizontal(X, y, 3)
    assert [len(p[1]) for p in parts] == [4, 3, 3]
    assert sorted(np.concatenate([p[1] for p in parts]).tolist()) == list(range(10))
    with pytest.raises(ConfigError):
        split_horizontal(X, y, 11)


def test_fmnist_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(ConfigError, match="apt-get install -y dataset-fashion-mnist"):
        load_fmnist(tmp_path)
