"""Key generation, serialization, pickling and phe interop of keys."""

import json
import pickle

import phe
import pytest

from hefl import ConfigError, CryptoError, KeyMismatchError
from hefl.crypto import CipherVector, PrivateKey, PublicKey, generate_keypair


def test_refuses_small_keys_without_opt_in():
    with pytest.raises(ConfigError, match="allow_insecure"):
        generate_keypair(1024)
    with pytest.raises(ConfigError):
        generate_keypair(64, allow_insecure=True)
    with pytest.raises(ConfigError):
        generate_keypair("2048")


@pytest.mark.parametrize("bits", [512, 768, 1024])
def test_exact_size_and_distinct_primes(bits):
    pk, sk = generate_keypair(bits, allow_insecure=True)
    assert pk.n_bits == bits == pk.n.bit_length()
    assert sk.p != sk.q and sk.p * sk.q == pk.n
    assert pk.max_int == (pk.n - 1) // 2
    assert len(pk.key_id) == 8


def test_keys_are_fresh_each_time():
    a, _ = generate_keypair(512, allow_insecure=True)
    b, _ = generate_keypair(512, allow_insecure=True)
    assert a != b and a.key_id != b.key_id


def test_json_round_trip(keypair):
    pk, sk = keypair
    pk2 = PublicKey.from_json(pk.to_json())
    sk2 = PrivateKey.from_json(sk.to_json())
    assert pk2 == pk and hash(pk2) == hash(pk) and pk2.key_id == pk.key_id
    assert sk2 == sk and sk2.public_key == pk
    assert sk2.decrypt(pk.encrypt([42, -42])) == [42, -42]
    assert json.loads(pk.to_json())["kind"] == "hefl.paillier.public"


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"kind": "other"}',
        '{"kind": "hefl.paillier.public", "n": 5}',
        '{"kind": "hefl.paillier.public", "n": "zz"}',
        '{"kind": "hefl.paillier.public", "n": "10"}',
    ],
)
def test_bad_public_json(text):
    with pytest.raises(CryptoError):
        PublicKey.from_json(text)


def test_private_json_with_wrong_factors(keypair, other_keypair):
    _, sk = keypair
    d = json.loads(sk.to_json())
    d["p"] = format(int(other_keypair[1].p), "x")
    with pytest.raises(CryptoError, match="factors"):
        PrivateKey.from_json(json.dumps(d))


def test_pickle_keys(keypair):
    pk, sk = keypair
    pk2, sk2 = pickle.loads(pickle.dumps((pk, sk)))
    assert pk2 == pk and sk2 == sk
    assert sk2.decrypt(pk2.encrypt([7])) == [7]


def test_phe_key_round_trip(keypair):
    pk, sk = keypair
    ppk, psk = pk.to_phe(), sk.to_phe()
    assert isinstance(ppk, phe.PaillierPublicKey) and ppk.n == pk.n
    assert PublicKey.from_phe(ppk) == pk
    assert PrivateKey.from_phe(psk) == sk


def test_phe_generated_keys_work():
    ppk, psk = phe.generate_paillier_keypair(n_length=512)
    pk, sk = PublicKey.from_phe(ppk), PrivateKey.from_phe(psk)
    cv = pk.encrypt([3, -4])
    assert sk.decrypt(cv) == [3, -4]
    assert [psk.decrypt(x) for x in cv.to_phe()] == [3, -4]
    assert sk.decrypt(CipherVector.from_phe(pk, [ppk.encrypt(9), ppk.encrypt(-1)])) == [9, -1]


def test_decrypt_with_wrong_key(keypair, other_keypair):
    cv = keypair[0].encrypt([1])
    with pytest.raises(KeyMismatchError):
        other_keypair[1].decrypt(cv)
