"""CipherVector: encryption paths, homomorphic identities, indexing, serialization, phe."""

import pickle

import gmpy2
import numpy as np
import phe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hefl import (
    CiphertextRangeError,
    ConfigError,
    CryptoError,
    KeyMismatchError,
    PlaintextRangeError,
)
from hefl.crypto import CipherVector, _native

small_ints = st.lists(st.integers(-(2**200), 2**200), min_size=0, max_size=6)


@settings(max_examples=25, deadline=None)
@given(xs=small_ints, method=st.sampled_from(["djn", "djn-short", "rn"]))
def test_round_trip_all_paths(keypair, xs, method):
    pk, sk = keypair
    assert sk.decrypt(pk.encrypt(xs, method=method)) == xs
    assert sk.decrypt(sk.encrypt(xs, method=method)) == xs


@settings(max_examples=20, deadline=None)
@given(
    pair=st.integers(0, 5).flatmap(
        lambda k: st.tuples(
            st.lists(st.integers(-(2**100), 2**100), min_size=k, max_size=k),
            st.lists(st.integers(-(2**100), 2**100), min_size=k, max_size=k),
        )
    ),
    k=st.integers(-(2**64), 2**64),
)
def test_homomorphic_identities(keypair, pair, k):
    pk, sk = keypair
    a, b = pair
    ca, cb = pk.encrypt(a), sk.encrypt(b)
    assert sk.decrypt(ca + cb) == [x + y for x, y in zip(a, b, strict=True)]
    assert sk.decrypt(ca - cb) == [x - y for x, y in zip(a, b, strict=True)]
    assert sk.decrypt(-ca) == [-x for x in a]
    assert sk.decrypt(ca * k) == [x * k for x in a]
    assert sk.decrypt(k * ca) == [x * k for x in a]
    assert sk.decrypt(ca * b) == [x * y for x, y in zip(a, b, strict=True)]
    assert sk.decrypt(ca + b) == [x + y for x, y in zip(a, b, strict=True)]
    assert sk.decrypt(ca - b) == [x - y for x, y in zip(a, b, strict=True)]
    assert sk.decrypt(ca.sum()) == [sum(a)]


def test_extremes_and_wraparound(keypair):
    pk, sk = keypair
    m = int(pk.max_int)
    assert sk.decrypt(pk.encrypt([m, -m, 0])) == [m, -m, 0]
    # sums wrap modulo n into the signed range
    assert sk.decrypt(pk.encrypt([m]) + pk.encrypt([1])) == [-m]


def test_plaintext_out_of_range(keypair):
    pk, sk = keypair
    m = int(pk.max_int)
    for bad in ([m + 1], [-m - 1], [int(pk.n)]):
        with pytest.raises(PlaintextRangeError):
            pk.encrypt(bad)
        with pytest.raises(PlaintextRangeError):
            sk.encrypt(bad)


def test_refuses_non_integers(keypair):
    pk, _ = keypair
    with pytest.raises(ConfigError):
        pk.encrypt([1.5])
    with pytest.raises(ConfigError):
        pk.encrypt(np.array([1.0]))
    with pytest.raises(ConfigError):
        pk.encrypt([True])
    with pytest.raises(ConfigError):
        pk.encrypt(5)
    with pytest.raises(ConfigError):
        pk.encrypt([1], method="fast")
    cv = pk.encrypt([1])
    with pytest.raises(ConfigError):
        cv * 1.5
    with pytest.raises(CryptoError):
        cv * cv


def test_numpy_inputs(keypair):
    pk, sk = keypair
    arr = np.array([1, -2, 3], dtype=np.int64)
    assert sk.decrypt(pk.encrypt(arr)) == [1, -2, 3]
    assert sk.decrypt(pk.encrypt(np.array([2**70, -(2**70)], dtype=object))) == [2**70, -(2**70)]
    assert sk.decrypt(pk.encrypt(arr) * np.array([2, 2, 2])) == [2, -4, 6]


def test_fresh_randomness(keypair):
    pk, sk = keypair
    for method in ("djn", "djn-short", "rn"):
        c = pk.encrypt([5, 5], method=method).ciphertexts
        assert c[0] != c[1]
        assert sk.encrypt([5], method=method).ciphertexts[0] not in c
    cv = pk.encrypt([5])
    ob = cv.obfuscate()
    assert ob.ciphertexts != cv.ciphertexts and sk.decrypt(ob) == [5]


def test_indexing_and_concat(keypair):
    pk, sk = keypair
    cv = pk.encrypt(list(range(10)))
    assert sk.decrypt(cv[2:5]) == [2, 3, 4]
    assert sk.decrypt(cv[-1]) == [9]
    assert sk.decrypt(cv[np.array([9, 0, 0])]) == [9, 0, 0]
    assert sk.decrypt(cv[np.arange(10) % 3 == 0]) == [0, 3, 6, 9]
    assert sk.decrypt(CipherVector.concat([cv[:2], cv[8:]])) == [0, 1, 8, 9]
    assert len(cv) == 10 and len(cv[5:5]) == 0
    with pytest.raises(IndexError):
        cv[np.array([10])]
    with pytest.raises(ConfigError):
        CipherVector.concat([])


def test_group_sum(keypair):
    pk, sk = keypair
    rng = np.random.default_rng(0)
    vals = rng.integers(-1000, 1000, size=40)
    groups = rng.integers(0, 7, size=40)
    cv = pk.encrypt(vals)
    expect = [int(vals[groups == g].sum()) for g in range(8)]
    assert sk.decrypt(cv.group_sum(groups, 8)) == expect  # group 7 is empty -> 0
    g2 = np.stack([groups, (groups + 3) % 8], axis=1)
    expect2 = expect + [int(vals[g2[:, 1] == g].sum()) for g in range(8)]
    assert sk.decrypt(cv.group_sum(g2, 8)) == expect2
    for bad_groups, n in ((groups, 7 - 1), (groups - 1, 8), (groups[:5], 8), (groups * 1.0, 8)):
        with pytest.raises(ConfigError):
            cv.group_sum(bad_groups, n)
    with pytest.raises(ConfigError):
        cv.group_sum(groups, 0)


@settings(max_examples=60, deadline=None)
@given(
    n_rows=st.integers(0, 300),
    cards=st.lists(st.integers(1, 40), min_size=1, max_size=7),
    seed=st.integers(0, 2**32 - 1),
)
def test_group_sum_columns_share_joint_cells_bit_identically(keypair, n_rows, cards, seed):
    """Columns summed through their joint cells give the very ciphertexts a pass per column
    gives (products mod n² in another order), whatever the cardinalities."""
    from hefl.crypto._groupsum import group_sum_1d, joint_columns

    pk, _ = keypair
    rng = np.random.default_rng(seed)
    width = max(cards)
    g = np.stack([rng.integers(0, c, size=n_rows) for c in cards], axis=1)
    cv = pk.encrypt(rng.integers(-50, 50, size=n_rows))
    per_column = [
        c
        for f in range(g.shape[1])
        for c in group_sum_1d(cv._c, g[:, f].tolist(), width, pk.nsquare)
    ]
    assert cv.group_sum(g, width)._c == per_column
    grouped = sorted(f for cols, _ in joint_columns(g) for f in cols)
    assert grouped == list(range(g.shape[1]))  # every column once


def test_group_sum_joins_low_cardinality_columns(keypair):
    from hefl.crypto._groupsum import joint_columns

    rng = np.random.default_rng(1)
    few = [rng.integers(0, c, size=5000) for c in (2, 5, 6)]
    many = rng.integers(0, 10**6, size=5000) % 4999  # nearly one id per row: alone
    groups = joint_columns(np.stack([*few, many], axis=1))
    assert sorted(sorted(cols) for cols, _ in groups) == [[0, 1, 2], [3]]


def test_key_mismatch(keypair, other_keypair):
    a = keypair[0].encrypt([1, 2])
    b = other_keypair[0].encrypt([1, 2])
    for op in (lambda: a + b, lambda: a - b, lambda: CipherVector.concat([a, b])):
        with pytest.raises(KeyMismatchError):
            op()
    with pytest.raises(ConfigError):
        a + keypair[0].encrypt([1])  # length mismatch


def test_bytes_round_trip_and_width(keypair):
    pk, sk = keypair
    cv = pk.encrypt([1, -1, 2**300])
    data = cv.to_bytes()
    assert len(data) == 3 * pk.ciphertext_bytes == 3 * 2 * 1024 // 8
    assert sk.decrypt(CipherVector.from_bytes(pk, data)) == [1, -1, 2**300]
    assert sk.decrypt(CipherVector.from_bytes(pk, memoryview(data))) == [1, -1, 2**300]
    assert len(CipherVector.from_bytes(pk, b"")) == 0


def test_bytes_bad_input(keypair, other_keypair):
    pk, _ = keypair
    w = pk.ciphertext_bytes
    good = pk.encrypt([1]).to_bytes()
    with pytest.raises(CiphertextRangeError, match="multiple"):
        CipherVector.from_bytes(pk, good[:-1])
    with pytest.raises(CiphertextRangeError):
        CipherVector.from_bytes(pk, bytes(w))  # c = 0
    with pytest.raises(CiphertextRangeError):
        CipherVector.from_bytes(pk, int(pk.nsquare).to_bytes(w, "big"))  # c = n²
    with pytest.raises(CiphertextRangeError):
        CipherVector.from_bytes(pk, b"\xff" * w)  # c > n²
    p = keypair[1].p
    with pytest.raises(CiphertextRangeError, match="invertible"):
        CipherVector.from_bytes(pk, good + int(p * 12345).to_bytes(w, "big"))
    with pytest.raises(CiphertextRangeError):
        CipherVector.from_bytes(pk, "text")
    with pytest.raises(CiphertextRangeError):
        CipherVector(pk, [0])


def test_pickle_vector(keypair):
    pk, sk = keypair
    cv = pk.encrypt([1, 2, 3])
    cv2 = pickle.loads(pickle.dumps(cv))
    assert cv2.public_key == pk and sk.decrypt(cv2) == [1, 2, 3]


def test_cross_decryption_with_phe(keypair):
    pk, sk = keypair
    ppk, psk = pk.to_phe(), sk.to_phe()
    xs = [0, 5, -5, 2**200, -(2**200)]
    # hefl -> phe
    nums = pk.encrypt(xs).to_phe()
    assert [psk.decrypt(x) for x in nums] == xs
    assert psk.decrypt(nums[1] + nums[2] + 3) == 3  # phe arithmetic on them works
    assert [psk.decrypt(x) for x in sk.encrypt(xs).to_phe()] == xs
    # phe -> hefl
    enc = [ppk.encrypt(x) for x in xs]
    cv = CipherVector.from_phe(pk, enc)
    assert sk.decrypt(cv) == xs
    assert sk.decrypt(cv + cv) == [2 * x for x in xs]
    # same raw ciphertext integers
    assert [int(c) for c in cv.ciphertexts] == [x.ciphertext(be_secure=False) for x in enc]


def test_from_phe_refuses_bad_numbers(keypair, other_keypair):
    pk, _ = keypair
    with pytest.raises(KeyMismatchError):
        CipherVector.from_phe(pk, [other_keypair[0].to_phe().encrypt(1)])
    with pytest.raises(CryptoError, match="exponent"):
        CipherVector.from_phe(pk, [pk.to_phe().encrypt(0.5)])


def test_ciphertext_is_paillier(keypair):
    """The raw ciphertext has the textbook form: c^λ decodes with g = n + 1."""
    pk, sk = keypair
    c = pk.encrypt([12345]).ciphertexts[0]
    lam = gmpy2.lcm(sk.p - 1, sk.q - 1)
    u = gmpy2.powmod(c, lam, pk.nsquare)
    m = (u - 1) // pk.n * gmpy2.invert(lam, pk.n) % pk.n
    assert m == 12345
    assert isinstance(phe.EncryptedNumber(pk.to_phe(), int(c)), phe.EncryptedNumber)


def test_threaded_decrypt(keypair):
    pk, sk = keypair
    xs = list(range(-7, 8))
    cv = pk.encrypt(xs)
    assert sk.decrypt(cv, threads=2) == xs
    assert sk.decrypt(cv, threads=5) == xs
    with pytest.raises(ConfigError):
        sk.decrypt(cv, threads=0)


def test_from_ciphertexts_validation_switch(keypair):
    pk, sk = keypair
    cv = pk.encrypt([3, 4])
    raw = cv.ciphertexts
    assert sk.decrypt(CipherVector.from_ciphertexts(pk, raw)) == [3, 4]
    assert sk.decrypt(CipherVector.from_ciphertexts(pk, [int(c) for c in raw])) == [3, 4]
    prefix = [raw[0], raw[0] * raw[1] % pk.nsquare]
    assert sk.decrypt(CipherVector.from_ciphertexts(pk, prefix, validate=False)) == [3, 7]
    with pytest.raises(CiphertextRangeError):
        CipherVector.from_ciphertexts(pk, [0])


def test_numpy_on_the_left(keypair):
    pk, sk = keypair
    cv = pk.encrypt([1, 2, 3])
    assert sk.decrypt(np.array([2, 3, 4]) * cv) == [2, 6, 12]
    assert sk.decrypt(np.array([1, 1, 1]) + cv) == [2, 3, 4]
    assert sk.decrypt(np.array([10, 10, 10]) - cv) == [9, 8, 7]


def test_vectors_longer_than_one_block(small_keypair):
    pk, sk = small_keypair
    xs = list(range(-1100, 1100))  # crosses the 1024-value encryption blocks
    assert sk.decrypt(pk.encrypt(xs)) == xs
    assert sk.decrypt(sk.encrypt(xs)) == xs


@pytest.mark.skipif(not _native.IFMA, reason="the CPU has no AVX-512 IFMA")
@settings(max_examples=30, deadline=None)
@given(
    bits=st.sampled_from([64, 415, 417, 1024, 2048, 4096, 4158]),
    n_rows=st.integers(0, 40),
    k=st.integers(1, 3),
    n_groups=st.integers(1, 6),
    seed=st.integers(0, 2**32),
)
def test_native_group_sums_equal_the_gmpy2_loop(bits, n_rows, k, n_groups, seed):
    """The IFMA histogram kernel gives the products the gmpy2 loop gives, for moduli around
    the vector boundaries up to n² of a 2048-bit key (and 1 for empty groups)."""
    from hefl.crypto._groupsum import group_sum_1d

    rng = np.random.default_rng(seed)
    m = gmpy2.mpz(int(rng.integers(1, 2**62)) << (bits - 63)) | (1 << (bits - 1)) | 1
    values = [
        gmpy2.mpz(int.from_bytes(rng.bytes(bits // 8 + 8), "little")) % m for _ in range(n_rows)
    ]
    ids = rng.integers(0, n_groups, size=(n_rows, k))
    expected = [c for j in range(k) for c in group_sum_1d(values, ids[:, j].tolist(), n_groups, m)]
    assert _native.group_sums(values, ids, n_groups, m) == expected


@pytest.mark.skipif(not _native.IFMA, reason="the CPU has no AVX-512 IFMA")
def test_native_group_sums_refuse_bad_input():
    from hefl.crypto import _cmodmul

    m = gmpy2.mpz(2**1000 + 297)
    one = gmpy2.mpz(5).to_bytes(128, "little")
    mod = m.to_bytes(128, "little")
    with pytest.raises(ValueError, match="out of range"):
        _cmodmul.group_sums(one, mod, np.array([3], dtype="<i8").tobytes(), 1, 3)
    with pytest.raises(ValueError, match="not reduced"):
        _cmodmul.group_sums(m.to_bytes(128, "little"), mod, bytes(8), 1, 1)
    with pytest.raises(ValueError, match="no IFMA path"):
        _cmodmul.group_sums(one, (m + 1).to_bytes(128, "little"), bytes(8), 1, 1)
    with pytest.raises(ValueError, match="whole residues"):
        _cmodmul.group_sums(one[:-1], mod, bytes(8), 1, 1)
