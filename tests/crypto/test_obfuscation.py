"""Obfuscators: DJN tables, key-holder CRT path, and the background ObfuscatorPool."""

import pickle
from concurrent.futures import ThreadPoolExecutor

import gmpy2
import pytest

from hefl import ConfigError, CryptoError, KeyMismatchError
from hefl.crypto import ObfuscatorPool
from hefl.crypto._obfuscation import (
    CrtObfuscator,
    FixedBaseTable,
    draw_djn_base,
    public_obfuscators,
)


def test_fixed_base_table_matches_powmod(keypair):
    pk, _ = keypair
    h = draw_djn_base(pk.n)
    for w in (3, 8, 10):
        table = FixedBaseTable(h, pk.nsquare, 512, w)
        for digits in table.random_digits(5, 512):
            x = sum(d << (w * i) for i, d in enumerate(digits))
            assert x < 2**512
            assert table.power(digits) == gmpy2.powmod(h, x, pk.nsquare)
        assert table.powers([[0] * table.n_windows]) == [1]
    with pytest.raises(ConfigError):
        FixedBaseTable(h, pk.nsquare, 512, 17)


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
