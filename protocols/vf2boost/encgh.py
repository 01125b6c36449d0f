"""Encrypted g/h vectors and the histogram operations passive parties run on them.

Three layouts, chosen by the config:

* ``"packed"`` (``pack_gh``, fixed point): one ciphertext per row, plaintext g·2^Wh + h.
* ``"pair"`` (fixed point): two ciphertexts per row, g and h.
* ``"phe"``: two ciphertexts per row with phe's per-value base-16 exponents (the
  FATE-compatible path); sums need rescaling, done re-ordered (grouped by exponent) or naively.

With vector leaves (K classes, g and h given as rows × K) the fixed-point layouts keep their
ciphertext counts: every class's value goes into its own lane of the same plaintext
(:class:`~hefl.protocols.vf2boost.budget.BitPlan`), so "packed" holds all K g‖h in one
ciphertext per row and "pair" the K g's in one and the K h's in another. "phe" cannot share a
plaintext (each value has its own exponent): it carries 2K parts, every class's g, then every
class's h.

:class:`EncGH` wraps the parts so the roles are written once. Every function here is pure and
module-level, so it can run in a process pool (``party.offload``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hefl.crypto import (
    CipherVector,
    EncryptedExpVector,
    PrivateKey,
    PublicKey,
    naive_group_sum,
    pack_ciphertexts,
    reordered_group_sum,
    unpack_slots,
)
from hefl.crypto._expencoding import LOG2_BASE
from hefl.errors import CryptoError
from hefl.protocols.vf2boost.budget import BitPlan


@dataclass
class EncGH:
    """Encrypted g/h of some rows (or histogram entries) in one of the three layouts.

    Attributes:
        layout: "packed", "pair" or "phe".
        parts: ``[cv]`` (packed), ``[cv_g, cv_h]`` (pair), ``[ev_g, ev_h]`` (phe).
        reorder: phe only: group by exponent when summing.
    """

    layout: str
    parts: list[Any]
    reorder: bool = True

    def __len__(self) -> int:
        return len(self.parts[0])

    def take(self, rows: np.ndarray) -> EncGH:
        return EncGH(self.layout, [p[rows] for p in self.parts], self.reorder)

    def group_sum(self, groups: np.ndarray, n_groups: int) -> EncGH:
        """Per-feature histograms: groups is (rows × F); result is F·n_groups entries."""
        if self.layout != "phe":
            return EncGH(self.layout, [p.group_sum(groups, n_groups) for p in self.parts])
        fn = reordered_group_sum if self.reorder else naive_group_sum
        out = []
        for ev in self.parts:
            per_f = [fn(ev, groups[:, f], n_groups) for f in range(groups.shape[1])]
            out.append(_concat_exp(per_f))
        return EncGH(self.layout, out, self.reorder)

    def __add__(self, other: EncGH) -> EncGH:
        return EncGH(
            self.layout, [a + b for a, b in zip(self.parts, other.parts, strict=True)], self.reorder
        )

    def __sub__(self, other: EncGH) -> EncGH:
        if self.layout != "phe":
            return EncGH(self.layout, [a - b for a, b in zip(self.parts, other.parts, strict=True)])
        out = [
            a + EncryptedExpVector(-b.cv, b.exponents)
            for a, b in zip(self.parts, other.parts, strict=True)
        ]
        return EncGH(self.layout, out, self.reorder)

    @staticmethod
    def concat(items: list[EncGH]) -> EncGH:
        first = items[0]
        parts: list[Any]  # EncryptedExpVectors (phe) or CipherVectors
        if first.layout == "phe":
            parts = [_concat_exp([it.parts[i] for it in items]) for i in range(len(first.parts))]
        else:
            parts = [
                CipherVector.concat([it.parts[i] for it in items]) for i in range(len(first.parts))
            ]
        return EncGH(first.layout, parts, first.reorder)

    def to_wire(self) -> list[Any]:
        """``[layout, parts]``: only CipherVectors and numeric arrays cross the network (read
        back by :func:`hefl.protocols.vf2boost.session.read_enc`)."""
        if self.layout == "phe":
            return [self.layout, [[ev.cv, ev.exponents.astype(np.int16)] for ev in self.parts]]
        return [self.layout, list(self.parts)]


def _concat_exp(evs: list[EncryptedExpVector]) -> EncryptedExpVector:
    return EncryptedExpVector(
        CipherVector.concat([e.cv for e in evs]), np.concatenate([e.exponents for e in evs])
    )


def layout_of(pack_gh: bool, encoding: str) -> str:
    """The layout of a config's ``pack_gh`` and ``encoding``."""
    if encoding == "phe":
        return "phe"
    return "packed" if pack_gh else "pair"


# ---------------------------------------------------------------------------------------------
# active party: encryption and decoding


def encrypt_gh(
    key: PublicKey | PrivateKey,
    gi: np.ndarray,
    hi: np.ndarray,
    plan: BitPlan,
    layout: str,
    method: str,
    reorder: bool = True,
    pool: Any = None,
) -> EncGH:
    """Encrypt one chunk of g/h encodings (runs in a process pool, or in-process with a warm
    :class:`~hefl.crypto.ObfuscatorPool`).

    ``key`` is the private key for the key holder's CRT fast path, or the public key (the
    serial baseline encrypts like phe, without it). With ``pool`` the public key encrypts
    with precomputed obfuscators.
    """
    if pool is not None:
        key = key if isinstance(key, PublicKey) else key.public_key
    kw = {"method": method} if pool is None else {"method": method, "pool": pool}
    if layout == "phe":  # one part per value: g and h, or every class's g then every h
        pk = key if isinstance(key, PublicKey) else key.public_key
        scale = 2.0**-plan.frac_bits  # exact: |g_int| <= 2^53, so g_int·2^-F is a float
        columns = [gi, hi] if gi.ndim == 1 else [*gi.T, *hi.T]
        parts = [
            EncryptedExpVector.encrypt(pk, np.asarray(v, dtype=np.float64) * scale, **kw)
            for v in columns
        ]
        return EncGH(layout, parts, reorder)
    if gi.ndim == 2:  # vector leaves: every class of a row in its own lane of one plaintext
        g2, h2 = gi.tolist(), hi.tolist()
        if layout == "packed":
            return EncGH(layout, [key.encrypt(plan.join_classes(g2, h2), **kw)])
        return EncGH(layout, [key.encrypt(plan.join_lanes(v), **kw) for v in (g2, h2)])
    g = [int(v) for v in gi.tolist()]
    h = [int(v) for v in hi.tolist()]
    if layout == "packed":
        return EncGH(layout, [key.encrypt(plan.join_gh(g, h), **kw)])
    return EncGH(layout, [key.encrypt(g, **kw), key.encrypt(h, **kw)])


def decrypt_entries(sk: PrivateKey, enc: EncGH, plan: BitPlan, count: int) -> tuple[list, list]:
    """Decrypt histogram entries to exact integer (G, H) sums (runs in a process pool).

    Args:
        sk: the private key.
        enc: entries as sent by a passive party (Horner-packed if plan.slots > 1).
        plan: the bit plan.
        count: number of (g, h) entries.

    Returns:
        (G ints, H ints), each of length ``count`` (with vector leaves, a tuple of K ints per
        entry).

    Raises:
        CryptoError: the data cannot be what an honest party sent (PackingOverflowError
            when a packed slot overflows).
    """
    if enc.layout == "phe":
        out = [_decrypt_exp(sk, ev, plan.frac_bits) for ev in enc.parts]
        if len(out) != 2 * plan.classes or any(len(v) != count for v in out):
            got = [len(v) for v in out]
            raise CryptoError(f"expected {2 * plan.classes} parts of {count} entries, got {got}")
        if plan.classes == 1:
            return out[0], out[1]
        K = plan.classes  # every class's G sums, then every class's H sums
        return list(zip(*out[:K], strict=True)), list(zip(*out[K:], strict=True))
    n_values = count if enc.layout == "packed" else 2 * count
    cv = enc.parts[0] if enc.layout == "packed" else CipherVector.concat(enc.parts)
    plain = sk.decrypt(cv)
    if plan.slots > 1:
        plain = [v - plan.offset for v in unpack_slots(plain, plan.slot_bits, n_values)]
    elif len(plain) != n_values:
        raise CryptoError(f"expected {n_values} entries, got {len(plain)}")
    if enc.layout == "packed":
        return plan.split_classes(plain) if plan.classes > 1 else plan.split_gh(plain)
    if plan.classes > 1:  # the K classes' G sums in one plaintext, their H sums in another
        return plan.split_class_lanes(plain[:count]), plan.split_class_lanes(plain[count:])
    return plain[:count], plain[count:]


def _decrypt_exp(sk: PrivateKey, ev: EncryptedExpVector, frac_bits: int) -> list[int]:
    """phe-encoded sums -> exact integers value·2^frac_bits.

    Raises:
        CryptoError: a sum that is not a multiple of 2^-frac_bits (not an honest sum).
    """
    vals = []
    for m, e in zip(sk.decrypt(ev.cv), ev.exponents.tolist(), strict=True):
        shift = LOG2_BASE * e + frac_bits  # value·2^F = m·2^shift
        if shift >= 0:
            vals.append(m << shift)
        else:
            if m % (1 << -shift):
                raise CryptoError("a phe-encoded sum is not a multiple of 2^-frac_bits")
            vals.append(m >> -shift)
    return vals


# ---------------------------------------------------------------------------------------------
# passive party: histograms


def build_histogram(enc: EncGH, bins: np.ndarray, width: int) -> EncGH:
    """Encrypted (features × width) histogram of the rows in ``enc`` (bins: rows × F)."""
    return enc.group_sum(bins.astype(np.int64), width)


def cumulative_entries(
    hist: EncGH, n_bins: np.ndarray, width: int, order: np.ndarray, categorical: Any = None
) -> EncGH:
    """The left sums of the candidates in ``order``, followed by each feature's total.

    Positions index the (features × width × 2) candidate space of
    :func:`~hefl.protocols.vf2boost.tree.split_sums`: (f, k, 0) sums value bins 1..k of
    feature f (bin k alone for a categorical feature; its missing rows go right), (f, k, 1)
    adds its bin 0 (missing rows go left).
    """
    F = len(n_bins)
    cat = [False] * F if categorical is None or not len(categorical) else list(categorical)
    pick = np.asarray(order, dtype=np.int64).tolist()
    if hist.layout == "phe":
        exp_parts = [_prefix_exp(ev, cat, width, pick) for ev in hist.parts]
        return EncGH("phe", exp_parts, hist.reorder)
    parts: list[CipherVector] = []
    for cv in hist.parts:
        pk = cv.public_key
        nsq = pk.nsquare
        cs = cv.ciphertexts

        def mul(a: int, b: int, nsq: int = nsq) -> int:
            return a * b % nsq

        parts.append(CipherVector.from_ciphertexts(pk, _both_sides(cs, cat, width, pick, mul)))
    return EncGH(hist.layout, parts)


def _both_sides(
    items: Any, categorical: list[bool], width: int, pick: list[int], add: Any
) -> list[Any]:
    """The entries at ``pick`` of every feature's left sums (prefix sums over value bins, or a
    categorical feature's bins alone), without and with its missing bin, then every feature's
    total (``add`` combines two encrypted sums)."""
    wanted = set(pick)
    found: dict[int, Any] = {}
    totals = []
    for f, cat in enumerate(categorical):
        base = f * width
        missing, running = items[base], None
        for k in range(1, width):
            running = items[base + k] if running is None else add(running, items[base + k])
            acc = items[base + k] if cat else running
            pos = (base + k) * 2
            if pos in wanted:
                found[pos] = acc
            if pos + 1 in wanted:
                found[pos + 1] = add(acc, missing)
        if base * 2 + 1 in wanted:  # missing rows alone go left (numeric k = 0)
            found[base * 2 + 1] = missing
        totals.append(missing if running is None else add(running, missing))
    return [found[i] for i in pick] + totals


def _prefix_exp(
    ev: EncryptedExpVector, categorical: list[bool], width: int, pick: list[int]
) -> EncryptedExpVector:
    items = [ev[i] for i in range(len(categorical) * width)]
    return _concat_exp(_both_sides(items, categorical, width, pick, lambda a, b: a + b))


def seal_entries(entries: EncGH, plan: BitPlan, method: str) -> EncGH:
    """Offset, Horner-pack (if planned) and re-randomize entries before they go to the key
    holder. Re-randomizing matters: a homomorphic sum is a deterministic product of the key
    holder's own ciphertexts, so without fresh randomness it could test which rows went into a
    bin."""
    if entries.layout != "phe" and plan.slots > 1:
        cv = entries.parts[0] if entries.layout == "packed" else CipherVector.concat(entries.parts)
        packed = pack_ciphertexts(cv + plan.offset, plan.slot_bits)
        return EncGH(entries.layout, [packed.obfuscate(method=method)])
    if entries.layout == "phe":
        parts = [
            EncryptedExpVector(ev.cv.obfuscate(method=method), ev.exponents) for ev in entries.parts
        ]
        return EncGH("phe", parts, entries.reorder)
    return EncGH(entries.layout, [p.obfuscate(method=method) for p in entries.parts])
