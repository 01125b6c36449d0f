"""The Paillier crypto core shared by every hefl protocol.

Keys and ciphertext vectors (phe-compatible: g = n + 1, same raw ciphertexts), fast
obfuscation (DJN fixed-base tables, key-holder CRT), fixed-point encoding, a plaintext slot
packer and ciphertext-side Horner packing. Pure functions and small classes: no I/O, no asyncio.
"""

from hefl.crypto._encoding import FixedPointEncoder
from hefl.crypto._expencoding import (
    EncryptedExpVector,
    encode_exp,
    naive_group_sum,
    reordered_group_sum,
    reordered_sum,
)
from hefl.crypto._horner import horner_capacity, pack_ciphertexts, unpack_slots
from hefl.crypto._keys import PrivateKey, PublicKey, generate_keypair
from hefl.crypto._packing import SlotLayout, plan_slots
from hefl.crypto._pool import ObfuscatorBatch, ObfuscatorPool
from hefl.crypto._types import KeyModulus
from hefl.crypto._vector import CipherVector

__all__ = [
    "CipherVector",
    "EncryptedExpVector",
    "FixedPointEncoder",
    "KeyModulus",
    "ObfuscatorBatch",
    "ObfuscatorPool",
    "PrivateKey",
    "PublicKey",
    "SlotLayout",
    "encode_exp",
    "generate_keypair",
    "horner_capacity",
    "naive_group_sum",
    "pack_ciphertexts",
    "plan_slots",
    "reordered_group_sum",
    "reordered_sum",
    "unpack_slots",
]
