"""The bit-budget planner: proves before training that no packed value can overflow.

Encodings (F = frac_bits, N = rows, b = bit_length(N) so N <= 2^b):

* g_int = round(g·2^(F−e)) with |g_int| <= 2^F: each tree picks the exponent e >= 0 that
  brings its gradients into [−1, 1] (logistic gradients need none; squared-error residuals
  are unbounded by nature and get the exponent of their largest one).
* h_int = round(h·2^F) with 0 <= h_int <= 2^(F+a), h <= 2^a the objective's hessian bound
  (a = −2 for the logistic losses, h = p(1−p) <= 1/4; a = 0 for squared error, h = 1).
  Any sum over <= N rows: |ΣG| <= 2^(F+b), 0 <= ΣH <= 2^(F+a+b).
* ``pack_gh``: one plaintext m = g_int·2^Wh + h_int with Wh = F + a + b + 1, so ΣH < 2^Wh
  never reaches the g lane; after decryption H = Σm mod 2^Wh and G = Σm >> Wh (floor), exact
  for negative G too. |Σm| < 2^(F+b+Wh+1) must stay below n/2 > 2^(key_bits−2).
* vector leaves (``multi_output_tree``, K classes): the K packed values v_k = g_k·2^Wh + h_k
  (|v_k| < 2^E, E the single-class entry bound) share one plaintext in lanes of E + 1 bits,
  m = Σ_k v_k·2^(k(E+1)); a sum of such plaintexts keeps every lane within ±2^E, so the lanes
  come back exactly by centred residues (lowest first). The entry bound is K(E + 1) bits: one
  ciphertext per row and one histogram entry per candidate for all K classes.
* ``pack_histograms``: every histogram entry e (a signed sum) gets a public offset O = 2^(S−1)
  (S = its bit bound + 1) so e + O lies in [0, 2^S); t = ⌊(key_bits − 2)/S⌋ entries are packed
  into one ciphertext by Horner's rule. O does not depend on the node, so nothing about a
  node's size is revealed by it.

Everything is checked with integers; an impossible plan raises :class:`PackingOverflowError`
saying what to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from hefl.crypto import horner_capacity
from hefl.errors import PackingOverflowError


@dataclass(frozen=True)
class BitPlan:
    """How g/h and histogram entries are laid out for one training.

    Attributes:
        n_rows, frac_bits, key_bits: the inputs the plan was proven for.
        pack_gh: g and h share one plaintext.
        h_bits: Wh, the width of the h lane (pack_gh) — ΣH < 2^h_bits always.
        entry_bits: bound on the bits of ``|entry|``: ``|entry| < 2^entry_bits`` for every
            histogram entry (the packed g‖h value, or a g sum; h sums are smaller).
        slot_bits: Horner slot width (entry_bits + 1), or 0 without histogram packing.
        slots: entries per Horner-packed ciphertext (1 without histogram packing).
        offset: added to every entry before Horner packing (0 without).
        classes: g‖h pairs per plaintext (K with vector leaves, else 1).
        lane_bits: the width of one class's lane (vector leaves), else 0.
    """

    n_rows: int
    frac_bits: int
    key_bits: int
    pack_gh: bool
    h_bits: int
    entry_bits: int
    slot_bits: int
    slots: int
    offset: int
    classes: int = 1
    lane_bits: int = 0

    def join_classes(self, g_int: list[list[int]], h_int: list[list[int]]) -> list[int]:
        """Rows of K g and h encodings -> one plaintext per row, class k in lane k."""
        w, lane = self.h_bits, self.lane_bits
        out = []
        for gs, hs in zip(g_int, h_int, strict=True):
            m = 0
            for k, (g, h) in enumerate(zip(gs, hs, strict=True)):
                m += ((g << w) + h) << (k * lane)
            out.append(m)
        return out

    def split_classes(
        self, values: list[int]
    ) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
        """Summed plaintexts -> per entry, the K classes' (G sums, H sums), exact."""
        lane, half = self.lane_bits, 1 << (self.lane_bits - 1)
        mask = (1 << lane) - 1
        G, H = [], []
        for m in values:
            lanes = []
            for _ in range(self.classes):
                v = ((m & mask) ^ half) - half  # the centred residue: this lane's signed value
                lanes.append(v)
                m = (m - v) >> lane
            if m:
                raise PackingOverflowError("a packed class lane overflowed")
            g, h = self.split_gh(lanes)
            G.append(tuple(g))
            H.append(tuple(h))
        return G, H

    def split_gh(self, values: list[int]) -> tuple[list[int], list[int]]:
        """Packed g‖h sums -> (G sums, H sums), exact."""
        mask = (1 << self.h_bits) - 1
        return [v >> self.h_bits for v in values], [v & mask for v in values]

    def join_gh(self, g_int: list[int], h_int: list[int]) -> list[int]:
        """g, h encodings -> packed plaintexts g·2^Wh + h."""
        w = self.h_bits
        return [(g << w) + h for g, h in zip(g_int, h_int, strict=True)]


def plan_bits(
    n_rows: int,
    frac_bits: int,
    key_bits: int,
    *,
    pack_gh: bool,
    pack_histograms: bool,
    h_log2: int = -2,
    classes: int = 1,
) -> BitPlan:
    """Plan and prove the layout (see the module docs).

    Args:
        n_rows: training rows (the largest possible node).
        frac_bits: fixed-point precision of g and h.
        key_bits: the Paillier modulus size.
        pack_gh: pack g and h into one plaintext.
        pack_histograms: Horner-pack histogram entries.
        h_log2: the objective's hessian bound a (h <= 2^a).
        classes: g‖h pairs packed per plaintext (vector leaves: K; needs ``pack_gh``).

    Returns:
        A :class:`BitPlan`.

    Raises:
        PackingOverflowError: the layout cannot fit the key, with what to change.
    """
    b = max(int(n_rows), 1).bit_length()
    g_bits = frac_bits + b  # |ΣG| <= 2^(F+b)
    h_lane = frac_bits + h_log2 + b + 1  # ΣH <= 2^(F+a+b) < 2^h_lane
    entry_bits = g_bits + h_lane + 1 if pack_gh else g_bits + 1
    lane_bits = 0
    if classes > 1:
        if not pack_gh:
            raise PackingOverflowError("packing several classes per plaintext needs pack_gh")
        lane_bits = entry_bits + 1
        entry_bits = classes * lane_bits
    usable = key_bits - 2
    if entry_bits > usable:
        raise PackingOverflowError(
            f"sums of {n_rows} rows at {frac_bits} fractional bits need {entry_bits} bits "
            f"({classes} class(es) per plaintext) but a {key_bits}-bit key holds {usable}: use "
            "a larger key, fewer frac_bits, pack_gh=False or one_output_per_tree"
        )
    slot_bits, slots, offset = 0, 1, 0
    if pack_histograms:
        slot_bits = entry_bits + 1
        try:
            slots = horner_capacity(key_bits, slot_bits)
        except PackingOverflowError:
            slots = 0
        if slots < 2:
            raise PackingOverflowError(
                f"histogram packing needs at least two {slot_bits}-bit slots per ciphertext "
                f"but a {key_bits}-bit key holds {usable} bits ({n_rows} rows, {frac_bits} "
                "fractional bits): use a larger key, fewer frac_bits, or pack_histograms=False"
            )
        offset = 1 << entry_bits
    return BitPlan(
        n_rows=int(n_rows),
        frac_bits=frac_bits,
        key_bits=key_bits,
        pack_gh=pack_gh,
        h_bits=h_lane,
        entry_bits=entry_bits,
        slot_bits=slot_bits,
        slots=slots,
        offset=offset,
        classes=classes,
        lane_bits=lane_bits,
    )
