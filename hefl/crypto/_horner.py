"""Ciphertext-side packing by Horner's rule (VF2Boost's polynomial histogram packing).

After homomorphic sums, each ciphertext holds a small non-negative plaintext (e.g. a histogram
bin of offset gradients). Before sending them to the key holder, t of them are packed into one
ciphertext: c ← c^(2^w)·cᵢ mod n² (shift the plaintext left by w bits, then add), so the key
holder decrypts once per t values.

Grouping and slot order: k inputs need P = ⌈k/t⌉ outputs, and are split in order into P
*balanced* consecutive groups (the first k mod P groups hold ⌈k/P⌉ inputs, the others ⌊k/P⌋),
so the receiver needs only k and P to unpack, not the key size. Within a packed ciphertext the
*first* input of its group ends up in the *highest* slot and the last in slot 0 (bits
0..w−1). :func:`unpack_slots` undoes exactly this and returns the values in input order.

Every slot value (after all sums) must lie in [0, 2^w): use an offset or unsigned layout
(e.g. ``plan_slots(..., layout="offset")`` plaintexts, or gradients shifted to be non-negative).
t = ⌊(n_bits − 2)/w⌋ keeps the packed plaintext below 2^(n_bits−2) < n/2.
"""

from __future__ import annotations

from typing import Any

import gmpy2
from gmpy2 import mpz

from hefl.crypto import _native
from hefl.crypto._ints import as_int_list
from hefl.crypto._vector import CipherVector
from hefl.errors import ConfigError, PackingOverflowError


def horner_capacity(key_bits_or_pk: Any, slot_bits: int) -> int:
    """Slots per packed ciphertext, t = ⌊(n_bits − 2)/slot_bits⌋.

    Raises:
        ConfigError: slot_bits is not a positive int.
        PackingOverflowError: t < 1 (a slot does not fit the key).
    """
    n_bits = getattr(key_bits_or_pk, "n_bits", key_bits_or_pk)
    if isinstance(slot_bits, bool) or not isinstance(slot_bits, int) or slot_bits < 1:
        raise ConfigError(f"slot_bits must be a positive int, got {slot_bits!r}")
    t = (int(n_bits) - 2) // slot_bits
    if t < 1:
        raise PackingOverflowError(
            f"a {slot_bits}-bit slot does not fit a {n_bits}-bit key ({int(n_bits) - 2} usable bits)"
        )
    return t


def pack_ciphertexts(cv: CipherVector, slot_bits: int) -> CipherVector:
    """Pack ciphertexts t per output by Horner's rule c ← c^(2^w)·cᵢ mod n².

    Args:
        cv: ciphertexts of non-negative plaintexts below 2^slot_bits.
        slot_bits: w, the slot width in bits.

    Returns:
        A CipherVector of ⌈len(cv)/t⌉ packed ciphertexts (see the module docs for slot order).
        Not re-randomized: call ``obfuscate()`` before sending it to the key holder if it must
        not be linkable to its inputs.

    Raises:
        PackingOverflowError: t < 1.
    """
    pk = cv.public_key
    t = horner_capacity(pk, slot_bits)
    nsq = pk.nsquare
    shift = mpz(1) << slot_bits
    powmod = gmpy2.powmod
    cs = cv._c
    bounds = _groups(len(cs), -(-len(cs) // t))
    if _native.ifma_takes(nsq) and cs:  # the squarings in Montgomery form, natively
        sizes = [stop - start for start, stop in bounds]
        return CipherVector._make(pk, _native.horner_pack(cs, sizes, slot_bits, nsq))
    out = []
    for start, stop in bounds:
        group = cs[start:stop]
        acc = group[0]
        for c in group[1:]:
            acc = powmod(acc, shift, nsq) * c % nsq
        out.append(acc)
    return CipherVector._make(pk, out)


def _groups(count: int, n_out: int) -> list[tuple[int, int]]:
    """Balanced consecutive groups: (start, stop) of each of ``n_out`` outputs."""
    if n_out == 0:
        return []
    q, r = divmod(count, n_out)
    bounds, start = [], 0
    for i in range(n_out):
        stop = start + q + (1 if i < r else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def unpack_slots(plaintexts: Any, slot_bits: int, count: int) -> list[int]:
    """Split decrypted Horner-packed plaintexts back into the ``count`` values, in input order.

    Args:
        plaintexts: decrypted packed plaintexts (signed ints from ``PrivateKey.decrypt``).
        slot_bits: w used for packing.
        count: number of values that were packed (the grouping follows from it and from the
            number of plaintexts).

    Returns:
        ``count`` non-negative Python ints.

    Raises:
        PackingOverflowError: a plaintext is negative or wider than its slots (its top slot
            was out of [0, 2^w)). A lower slot out of range borrows from or carries into its
            neighbour undetectably, which is why the inputs' range must be planned (offset
            layout, guard bits) before packing.
        ConfigError: bad slot_bits / count, or a number of plaintexts that cannot hold
            ``count`` values (none, or more than ``count``).
    """
    if isinstance(slot_bits, bool) or not isinstance(slot_bits, int) or slot_bits < 1:
        raise ConfigError(f"slot_bits must be a positive int, got {slot_bits!r}")
    ps = as_int_list(plaintexts, "plaintexts")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ConfigError(f"count must be a non-negative int, got {count!r}")
    if (count == 0) != (len(ps) == 0) or len(ps) > count:
        raise ConfigError(f"{len(ps)} packed plaintexts cannot hold exactly {count} values")
    mask = (1 << slot_bits) - 1
    out: list[int] = []
    for p, (start, stop) in zip(ps, _groups(count, len(ps)), strict=True):
        slots = stop - start
        if p < 0 or p >> (slot_bits * slots):
            raise PackingOverflowError(
                "a Horner-packed plaintext does not fit its slots: some slot value was negative "
                f"or >= 2^{slot_bits} (add an offset or widen the slots)"
            )
        vals = [(p >> (slot_bits * j)) & mask for j in range(slots)]
        out.extend(reversed(vals))
    return out
