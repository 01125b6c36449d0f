"""CPU-heavy steps of a BatchCrypt round, as module-level functions.

They run in the federation's executor (``party.offload``, a process pool by default), so they
must be picklable and must not touch the network. Each returns its result together with the
CPU seconds it used (``time.process_time`` of the worker), so a round's time can be split into
encrypt / decrypt / decode without counting the time a task waited in the pool's queue or lost
to other processes on a shared machine.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hefl.crypto import CipherVector, ObfuscatorBatch, PrivateKey, PublicKey, SlotLayout
from hefl.errors import CryptoError

ENC_METHOD = {False: "djn", True: "djn-short"}

# Keys arrive pickled with every task; a worker keeps the first copy it sees of each key so the
# key-holder's precomputed obfuscator tables are built once per worker, not once per chunk.
_KEY_CACHE: dict[tuple[str, bytes], Any] = {}


def _cached(key: Any) -> Any:
    public = getattr(key, "public_key", key)
    return _KEY_CACHE.setdefault((type(key).__name__, bytes(public.key_id)), key)


def _encrypt(
    key: PrivateKey | PublicKey, ints: list[int], short_exponent: bool, batch: Any
) -> CipherVector:
    if batch is None:  # obfuscators made now (online)
        return _cached(key).encrypt(ints, method=ENC_METHOD[short_exponent])
    if batch.count != len(ints):
        raise CryptoError(
            f"an obfuscator batch of {batch.count} cannot encrypt {len(ints)} plaintexts"
        )
    # made ahead of time: what is left is one product per value
    public: PublicKey = key.public_key if isinstance(key, PrivateKey) else key
    return public.encrypt(ints, pool=batch)


def encrypt_packed(
    key: PrivateKey | PublicKey,
    layout: SlotLayout,
    q: np.ndarray,
    short_exponent: bool,
    batch: ObfuscatorBatch | None = None,
) -> tuple[CipherVector, float]:
    """Pack quantized integers into lanes and encrypt each plaintext once.

    Args:
        key: the client's PrivateKey (CRT fast path) or a PublicKey.
        layout: the shared SlotLayout.
        q: int64 quantized values of this chunk.
        short_exponent: use the opt-in short-exponent obfuscators.
        batch: obfuscators made ahead of time, exactly one per plaintext of this chunk
            (None: draw them now).

    Returns:
        (CipherVector, seconds).

    Raises:
        CryptoError: ``batch`` does not hold one obfuscator per plaintext.
    """
    start = time.process_time()
    plaintexts = layout.pack(q)
    cv = _encrypt(key, plaintexts, short_exponent, batch)
    return cv, time.process_time() - start


def encrypt_plain(
    key: PrivateKey | PublicKey,
    ints: list[int],
    short_exponent: bool,
    batch: ObfuscatorBatch | None = None,
) -> tuple[CipherVector, float]:
    """Encrypt integers one per ciphertext (small side messages), with obfuscators from
    ``batch`` or drawn now. Returns (CipherVector, seconds)."""
    start = time.process_time()
    cv = _encrypt(key, ints, short_exponent, batch)
    return cv, time.process_time() - start


def make_obfuscators(
    key: PrivateKey | PublicKey, count: int, short_exponent: bool
) -> tuple[ObfuscatorBatch, float]:
    """Background work: ``count`` fresh obfuscators for a later encryption (CRT fast path
    with a private key). Returns (ObfuscatorBatch, seconds)."""
    start = time.process_time()
    batch = ObfuscatorBatch.draw(_cached(key), count, ENC_METHOD[short_exponent])
    return batch, time.process_time() - start


def decrypt_vector(sk: PrivateKey, cv: CipherVector) -> tuple[list[int], float]:
    """Decrypt a CipherVector with the CRT fast path. Returns (signed ints, seconds)."""
    start = time.process_time()
    ints = _cached(sk).decrypt(cv)
    return ints, time.process_time() - start


def phe_encrypt(phe_public_key: Any, ints: list[int]) -> tuple[list[int], float]:
    """The per-value baseline: one phe ``encrypt`` call per value, as FATE does.

    Returns the raw ciphertexts (phe ints, exponent 0) and the seconds spent.
    """
    start = time.process_time()
    raw = [phe_public_key.encrypt(int(v)).ciphertext(be_secure=False) for v in ints]
    return raw, time.process_time() - start


def phe_decrypt(
    phe_private_key: Any, phe_public_key: Any, raw: list[int]
) -> tuple[list[int], float]:
    """The per-value baseline: one phe ``decrypt`` call per value. Returns (ints, seconds)."""
    from phe import EncryptedNumber

    start = time.process_time()
    out = [phe_private_key.decrypt(EncryptedNumber(phe_public_key, int(c), 0)) for c in raw]
    return [int(v) for v in out], time.process_time() - start
