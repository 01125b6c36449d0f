"""Every bad input listed in the crypto issue raises a clear error from the hefl hierarchy."""

import numpy as np
import pytest

import hefl
from hefl.crypto import CipherVector, generate_keypair, pack_ciphertexts, plan_slots


def _cases(pk, other_pk):
    w = pk.ciphertext_bytes
    cv = pk.encrypt([1, 2])
    lay = plan_slots(pk, 8, 4, "offset")
    return [
        (
            "plaintext above range",
            lambda: pk.encrypt([int(pk.max_int) + 1]),
            hefl.PlaintextRangeError,
        ),
        (
            "plaintext below range",
            lambda: pk.encrypt([-int(pk.max_int) - 1]),
            hefl.PlaintextRangeError,
        ),
        (
            "ciphertext bytes of wrong length",
            lambda: CipherVector.from_bytes(pk, b"\x01" * (w + 1)),
            hefl.CiphertextRangeError,
        ),
        (
            "ciphertext >= n^2",
            lambda: CipherVector.from_bytes(pk, b"\xff" * w),
            hefl.CiphertextRangeError,
        ),
        (
            "ciphertext zero",
            lambda: CipherVector.from_bytes(pk, bytes(w)),
            hefl.CiphertextRangeError,
        ),
        (
            "ciphertext not invertible",
            lambda: CipherVector(pk, [int(pk.n)]),
            hefl.CiphertextRangeError,
        ),
        ("mixing keys", lambda: cv + other_pk.encrypt([1, 2]), hefl.KeyMismatchError),
        ("packing value overflow", lambda: lay.pack([1000]), hefl.PackingOverflowError),
        (
            "packing too many summands",
            lambda: lay.unpack(lay.pack([1]), 1, 5),
            hefl.PackingOverflowError,
        ),
        ("packing lane cannot fit", lambda: plan_slots(pk, 2000, 10), hefl.PackingOverflowError),
        ("horner slot cannot fit", lambda: pack_ciphertexts(cv, 5000), hefl.PackingOverflowError),
        ("small key without opt-in", lambda: generate_keypair(1024), hefl.ConfigError),
        ("float plaintext", lambda: pk.encrypt(np.array([0.5])), hefl.ConfigError),
    ]


def test_every_bad_input_raises_a_hefl_error(keypair, other_keypair):
    for name, fn, err in _cases(keypair[0], other_keypair[0]):
        with pytest.raises(err) as info:
            fn()
        assert isinstance(info.value, hefl.HeflError), name
        assert len(str(info.value)) > 20, f"{name}: message should say what to do"


def test_crypto_errors_share_one_base(keypair, other_keypair):
    crypto_errors = [
        e for _, _, e in _cases(keypair[0], other_keypair[0]) if e is not hefl.ConfigError
    ]
    assert all(issubclass(e, hefl.CryptoError) for e in crypto_errors)
