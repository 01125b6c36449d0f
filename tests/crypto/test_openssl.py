"""Decryption's exponentiations (hefl's IFMA kernel, libcrypto) give gmpy2's numbers (or fall
back to it)."""

from __future__ import annotations

import secrets
import subprocess
import sys

import gmpy2
import pytest
from gmpy2 import mpz

from hefl.crypto import _native, _openssl, generate_keypair

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["ifma", "libcrypto"])
def kernel(request, monkeypatch):
    """Run a test with hefl's IFMA exponentiation, then with it switched off."""
    if request.param == "ifma" and not _native.IFMA:
        pytest.skip("the CPU has no AVX-512 IFMA")
    if request.param == "libcrypto":
        monkeypatch.setattr(_native, "IFMA", False)
    return request.param


@pytest.mark.parametrize("bits", [64, 512, 1024, 2048, 4096])
@pytest.mark.parametrize("exp_bits", [0, 1, 5, 6, 600])
def test_powmods_match_gmpy2(kernel, bits, exp_bits):
    m = mpz(secrets.randbits(bits)) | 1 | (mpz(1) << (bits - 1))
    e = mpz(secrets.randbits(exp_bits)) | (mpz(1) << (exp_bits - 1)) if exp_bits else mpz(0)
    # bases below, equal to and far above the modulus, zero and one
    bases = [mpz(0), mpz(1), m - 1, m, m + 5, mpz(secrets.randbits(2 * bits + 3))]
    bases += [mpz(secrets.randbits(bits)) for _ in range(20)]
    assert _openssl.powmods(bases, e, m) == [gmpy2.powmod(b, e, m) for b in bases]


def test_even_modulus_falls_back():
    m = mpz(1) << 600
    e, b = mpz(12345), mpz(secrets.randbits(700))
    assert _openssl.powmods([b], e, m) == [gmpy2.powmod(b, e, m)]


@pytest.mark.parametrize("threads", [1, 3])
def test_decryption_is_exact_either_way(kernel, threads):
    pk, sk = generate_keypair(1024, allow_insecure=True)
    xs = [0, 1, -1, int(pk.max_int), -int(pk.max_int), *range(-40, 40)]
    assert sk.decrypt(sk.encrypt(xs), threads=threads) == xs


def test_switched_off_by_environment():
    code = "from hefl.crypto import _openssl; print(_openssl.available())"
    env_off = {"HEFL_OPENSSL": "0", "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env_off, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
