"""Obfuscators: DJN tables, key-holder CRT path, and the background ObfuscatorPool."""

import pickle
import random
from concurrent.futures import ThreadPoolExecutor

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hefl import ConfigError, CryptoError, KeyMismatchError
from hefl.crypto import ObfuscatorPool, generate_keypair
from hefl.crypto._native import AVAILABLE as NATIVE
from hefl.crypto._native import IFMA
from hefl.crypto._obfuscation import (
    CrtObfuscator,
    FixedBaseTable,
    draw_djn_base,
    public_obfuscators,
)

needs_native = pytest.mark.skipif(not NATIVE, reason="hefl's C kernel is not built")


@pytest.mark.parametrize("native", [False, pytest.param(True, marks=needs_native)])
def test_fixed_base_table_matches_powmod(keypair, native):
    pk, _ = keypair
    h = draw_djn_base(pk.n)
    for w in (3, 8, 10):
        table = FixedBaseTable(h, pk.nsquare, 512, w, native=native)
        digits = table.random_digits(5, 512)
        assert digits.shape == (5, table.n_windows)
        for row, r in zip(digits.tolist(), table.powers(digits), strict=True):
            x = sum(d << (w * i) for i, d in enumerate(row))
            assert x < 2**512
            assert r == gmpy2.powmod(h, x, pk.nsquare)
        zeros = np.zeros((1, table.n_windows), dtype=np.uint16)
        assert table.powers(zeros) == [1]
    with pytest.raises(ConfigError):
        FixedBaseTable(h, pk.nsquare, 512, 17, native=native)


@needs_native
@settings(max_examples=60, deadline=None)
@given(
    modulus=st.integers(2, 2**700).map(lambda m: m | 1),
    base=st.integers(0, 2**700),
    window=st.integers(1, 12),
    exp_bits=st.integers(1, 160),
    data=st.data(),
)
def test_native_table_equals_python_table(modulus, base, window, exp_bits, data):
    """The C kernel and the gmpy2 loop compute the same residues for any modulus, base and
    exponent (odd moduli of any size, including ones that are not whole limbs)."""
    m = gmpy2.mpz(modulus)
    b = gmpy2.mpz(base) % m
    native = FixedBaseTable(b, m, exp_bits, window, native=True)
    python = FixedBaseTable(b, m, exp_bits, window, native=False)
    k = native.windows_for(exp_bits)
    top = exp_bits - (k - 1) * window
    rows = data.draw(
        st.lists(
            st.lists(st.integers(0, 2**window - 1), min_size=k, max_size=k), min_size=1, max_size=4
        )
    )
    digits = np.array(rows, dtype=np.uint16).reshape(-1, k)
    digits[:, -1] &= (1 << top) - 1
    assert native.powers(digits) == python.powers(digits)
    x = [sum(int(d) << (window * i) for i, d in enumerate(row)) for row in digits]
    assert native.powers(digits) == [gmpy2.powmod(b, e, m) for e in x]


needs_ifma = pytest.mark.skipif(not IFMA, reason="the CPU has no AVX-512 IFMA")


@needs_ifma
@settings(max_examples=80, deadline=None)
@given(
    bits=st.sampled_from([3, 64, 200, 415, 416, 417, 1000, 1024, 2048, 2049, 3000, 4096, 4158]),
    seed=st.integers(0, 2**64),
    window=st.integers(1, 9),
    data=st.data(),
)
def test_ifma_table_equals_gmp_table(bits, seed, window, data):
    """The IFMA path (Montgomery form, radix 2^52) and the plain GMP products give the same
    residues, for odd moduli around every vector boundary (416 bits per vector) up to the
    largest it takes, for units and for bases sharing a factor with the modulus or zero."""
    rng = random.Random(seed)
    m = gmpy2.mpz(rng.getrandbits(bits) | (1 << (bits - 1)) | 1)
    base = data.draw(st.sampled_from(["unit", "zero", "factor"]))
    b = {"unit": gmpy2.mpz(rng.getrandbits(bits + 8)) % m, "zero": gmpy2.mpz(0)}.get(base)
    if b is None:
        f = gmpy2.mpz(3) if m % 3 == 0 else gmpy2.mpz(1)
        b = f * gmpy2.mpz(rng.getrandbits(bits // 2 + 1)) % m
    exp_bits = data.draw(st.integers(1, 96))
    ifma = FixedBaseTable(b, m, exp_bits, window, native=True, ifma=True)
    gmp = FixedBaseTable(b, m, exp_bits, window, native=True, ifma=False)
    assert ifma._kernel.ifma and not gmp._kernel.ifma
    digits = ifma.random_digits(5, exp_bits)
    assert ifma.powers(digits) == gmp.powers(digits)
    x = [sum(int(d) << (window * i) for i, d in enumerate(row)) for row in digits]
    assert ifma.powers(digits) == [gmpy2.powmod(b, e, m) for e in x]


@needs_ifma
def test_ifma_path_declines_what_it_cannot_take():
    """Even moduli and moduli over 4158 bits keep the GMP products (and stay correct)."""
    for m in (gmpy2.mpz(2**600 + 2), gmpy2.mpz(2**4200 + 1)):
        table = FixedBaseTable(m // 3, m, 40, 4, native=True, ifma=True)
        assert not table._kernel.ifma
        digits = table.random_digits(3, 40)
        x = [sum(int(d) << (4 * i) for i, d in enumerate(row)) for row in digits]
        assert table.powers(digits) == [gmpy2.powmod(m // 3, e, m) for e in x]


@needs_native
def test_native_table_refuses_bad_input(keypair):
    from hefl.crypto import _cmodmul

    pk, _ = keypair
    table = FixedBaseTable(draw_djn_base(pk.n), pk.nsquare, 64, 4, native=True)
    bad = np.full((1, table.n_windows), 16, dtype=np.uint16)  # a 5-bit digit in a 4-bit window
    with pytest.raises(ValueError, match="digit out of range"):
        table.powers(bad)
    too_long = np.zeros((1, table.n_windows + 1), dtype=np.uint16)
    with pytest.raises(ValueError, match="k must be"):
        table.powers(too_long)
    w = 8 * -(-pk.nsquare.bit_length() // 64)
    big = (pk.nsquare + 1).to_bytes(w, "little")
    with pytest.raises(ValueError, match="reduced"):
        _cmodmul.table_new(big, pk.nsquare.to_bytes(w, "little"), 4, 4)
    with pytest.raises(ValueError, match="modulus"):
        _cmodmul.table_new(b"\x01", b"\x01", 4, 4)


@pytest.mark.parametrize("method", ["djn", "djn-short", "rn"])
def test_obfuscators_are_nth_residues(keypair, method):
    """r^φ(n) = 1 mod n² iff r is an n-th residue (for r a unit): a wrong r breaks decryption."""
    pk, sk = keypair
    phi = (sk.p - 1) * (sk.q - 1)
    for r in public_obfuscators(pk.n, 4, method) + sk.obfuscators(4, method=method):
        assert gmpy2.gcd(r, pk.n) == 1
        assert gmpy2.powmod(r, phi, pk.nsquare) == 1


def test_crt_combine(keypair):
    _, sk = keypair
    crt = CrtObfuscator(sk.p, sk.q)
    x = gmpy2.mpz(123456789) ** 20 % (sk.public_key.nsquare)
    assert crt.combine([x % crt.psq], [x % crt.qsq]) == [x]


def test_pool_in_processes(small_keypair):
    pk, sk = small_keypair
    with ObfuscatorPool(pk, capacity=64, chunk=16) as pool:
        assert pool.wait(64, timeout=60)
        rs = pool.take(40)
        assert len(rs) == 40 and len(set(rs)) == 40
        cv = pk.encrypt(list(range(-10, 10)), pool=pool)
        assert sk.decrypt(cv) == list(range(-10, 10))
        more = pool.take(1000)  # runs dry: returns what it has, never repeats
        assert not set(more) & set(rs)
        assert pool.handed_out == 40 + 20 + len(more)


def test_pool_with_given_executor_and_key_holder(small_keypair):
    pk, sk = small_keypair
    with ThreadPoolExecutor(1) as ex:
        pool = ObfuscatorPool(pk, capacity=20, chunk=5, executor=ex, private_key=sk)
        assert pool.wait(20, timeout=30)
        cv = pk.encrypt([1, 2, 3], pool=pool)
        assert sk.decrypt(cv) == [1, 2, 3]
        assert sk.decrypt(cv.obfuscate(pool=pool)) == [1, 2, 3]
        pool.close()
        with pytest.raises(CryptoError, match="closed"):
            pool.take(1)


def test_pool_dry_falls_back(small_keypair):
    pk, sk = small_keypair
    pool = ObfuscatorPool(pk, capacity=5, start=False)
    pool.fill_now(3)
    cv = pk.encrypt([4, 5, 6, 7, 8], pool=pool)  # 3 from the pool, 2 computed inline
    assert sk.decrypt(cv) == [4, 5, 6, 7, 8]
    assert pool.available == 0
    pool.close()


def test_pool_refusals(small_keypair, keypair):
    pk = small_keypair[0]
    with pytest.raises(ConfigError):
        ObfuscatorPool(pk, capacity=0, start=False)
    with pytest.raises(ConfigError):
        ObfuscatorPool(pk, method="weak", start=False)
    with pytest.raises(ConfigError):
        ObfuscatorPool(pk, private_key=keypair[1], start=False)
    pool = ObfuscatorPool(keypair[0], start=False)
    with pytest.raises(KeyMismatchError):
        pk.encrypt([1], pool=pool)
    with pytest.raises(TypeError):
        pickle.dumps(pool)
    pool.close()


def _worker_niceness() -> int:
    import os

    return os.nice(0)


def test_pool_low_priority_workers_and_resize(small_keypair):
    """low_priority workers really run at nice 19; resize() stops refills without dropping
    what is buffered, and raising it again resumes them."""
    pk, sk = small_keypair
    with ObfuscatorPool(pk, capacity=32, chunk=8, workers=2, private_key=sk,
                        low_priority=True) as pool:  # fmt: skip
        assert pool.wait(32, timeout=60)
        assert pool._executor.submit(_worker_niceness).result(timeout=30) == 19
        pool.resize(0)
        taken = pool.take(32)
        assert len(taken) == 32 and pool.available == 0
        assert not pool.wait(1, timeout=0.5)  # capacity 0: nothing is refilled
        pool.resize(8)
        assert pool.wait(8, timeout=60)
        assert not set(pool.take(8)) & set(taken)
        with pytest.raises(ConfigError):
            pool.resize(-1)


def test_public_table_starts_light_and_grows_with_use(monkeypatch):
    """A process that draws few public obfuscators never builds the large table; one that
    draws many builds it once the draws pay for it; either way r is an n-th residue."""
    from hefl.crypto import _obfuscation as ob

    pk, sk = generate_keypair(2048)
    phi = (sk.p - 1) * (sk.q - 1)
    assert ob._big_table_pays_after(2048, "djn-short") > 10_000
    assert ob._big_table_pays_after(1024, "djn") == 0  # same window: nothing to save
    light = ob.public_table(pk.n, "djn-short", 10)
    assert light.window == ob.LIGHT_WINDOW
    assert not ob._has_big_table(pk.n, "djn-short")
    for r in public_obfuscators(pk.n, 3, "djn-short"):
        assert gmpy2.powmod(r, phi, pk.nsquare) == 1
    monkeypatch.setattr(ob, "_big_table_pays_after", lambda n_bits, method: 20)
    big = ob.public_table(pk.n, "djn-short", 10)
    assert big.window == ob.short_window(2048) and ob._has_big_table(pk.n, "djn-short")
    for r in public_obfuscators(pk.n, 3, "djn-short"):
        assert gmpy2.powmod(r, phi, pk.nsquare) == 1
    # a large table built ahead of time is used from the first draw
    pk2, _ = generate_keypair(2048)
    ob.djn_table(pk2.n)
    assert ob.public_table(pk2.n, "djn", 1).window == ob.default_window(2048)
