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
* vector leaves (``multi_output_tree``, K classes), fixed point: the K values of a row share
  one plaintext in lanes of E + 1 bits, m = Σ_k v_k·2^(k(E+1)), where |v_k| < 2^E is the
  single-class entry bound. With ``pack_gh`` v_k = g_k·2^Wh + h_k (one plaintext per row);
  without, the K g's share one plaintext and the K h's another (two per row, E = F + b + 1,
  which bounds |ΣG| and ΣH alike). A sum of such plaintexts keeps every lane within ±2^E, so
  the lanes come back exactly by centred residues (lowest first). The entry bound is K(E + 1)
  bits. With ``encoding="phe"`` nothing is packed: every class's g and h is its own
  ciphertext (2K per row), each bounded as a single class's.
* ``pack_histograms``: every histogram entry e (a signed sum) gets a public offset O = 2^(S−1)
  (S = its bit bound + 1) so e + O lies in [0, 2^S); t = ⌊(key_bits − 2)/S⌋ entries are packed
  into one ciphertext by Horner's rule. O does not depend on the node, so nothing about a
  node's size is revealed by it.

Everything is checked with integers; an impossible plan raises :class:`BitBudgetError`
saying what to change. :func:`largest_frac_bits` finds the most precision (<= 53 bits) a
training's rows, classes, key and layout can hold: ``frac_bits="auto"`` uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hefl.crypto import horner_capacity
from hefl.errors import ConfigError, PackingOverflowError

#: the most precision ``frac_bits="auto"`` picks (a float64 holds 53 bits)
AUTO_MAX_FRAC_BITS = 53
#: the least precision any plan may use (VF2BoostConfig's lower bound of ``frac_bits``)
MIN_FRAC_BITS = 8


class BitBudgetError(PackingOverflowError, ConfigError):
    """The rows, classes, ``frac_bits``, key and layout of a training cannot fit a plaintext:
    a configuration error (catch it as :class:`~hefl.errors.ConfigError`) that is also the
    :class:`~hefl.errors.PackingOverflowError` it always was."""


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
        classes: K with vector leaves, else 1.
        lane_bits: the width of one class's lane (vector leaves, fixed point), else 0 (one
            class, or ``encoding="phe"``: every class's g and h is its own ciphertext).
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

    def join_lanes(self, rows: list[list[int]]) -> list[int]:
        """Rows of K signed values -> one plaintext per row, value k in lane k."""
        lane = self.lane_bits
        out = []
        for values in rows:
            m = 0
            for k, v in enumerate(values):
                m += v << (k * lane)
            out.append(m)
        return out

    def split_lanes(self, values: list[int]) -> list[list[int]]:
        """Summed lane-packed plaintexts -> per value, its K lanes' signed sums, exact.

        Raises:
            PackingOverflowError: a value holds more than K lanes (not an honest sum).
        """
        lane, half = self.lane_bits, 1 << (self.lane_bits - 1)
        mask = (1 << lane) - 1
        out = []
        for m in values:
            lanes = []
            for _ in range(self.classes):
                v = ((m & mask) ^ half) - half  # the centred residue: this lane's signed value
                lanes.append(v)
                m = (m - v) >> lane
            if m:
                raise PackingOverflowError("a packed class lane overflowed")
            out.append(lanes)
        return out

    def join_classes(self, g_int: list[list[int]], h_int: list[list[int]]) -> list[int]:
        """Rows of K g and h encodings -> one plaintext per row, class k's g‖h in lane k."""
        return self.join_lanes([self.join_gh(gs, hs) for gs, hs in zip(g_int, h_int, strict=True)])

    def split_classes(
        self, values: list[int]
    ) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
        """Summed g‖h plaintexts -> per entry, the K classes' (G sums, H sums), exact."""
        G, H = [], []
        for lanes in self.split_lanes(values):
            g, h = self.split_gh(lanes)
            G.append(tuple(g))
            H.append(tuple(h))
        return G, H

    def split_class_lanes(self, values: list[int]) -> list[tuple[int, ...]]:
        """Summed plaintexts of the K classes' g (or h) alone -> per entry, K exact sums."""
        return [tuple(lanes) for lanes in self.split_lanes(values)]

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
    encoding: str = "fixed",
) -> BitPlan:
    """Plan and prove the layout (see the module docs).

    Args:
        n_rows: training rows (the largest possible node).
        frac_bits: fixed-point precision of g and h.
        key_bits: the Paillier modulus size.
        pack_gh: pack g and h into one plaintext.
        pack_histograms: Horner-pack histogram entries.
        h_log2: the objective's hessian bound a (h <= 2^a).
        classes: K with vector leaves (lane-packed per plaintext with fixed point), else 1.
        encoding: ``"fixed"`` or ``"phe"`` (per-value exponents: classes are never packed).

    Returns:
        A :class:`BitPlan`.

    Raises:
        BitBudgetError: the layout cannot fit the key, with what to change.
    """
    b = max(int(n_rows), 1).bit_length()
    g_bits = frac_bits + b  # |ΣG| <= 2^(F+b)
    h_lane = frac_bits + h_log2 + b + 1  # ΣH <= 2^(F+a+b) < 2^h_lane
    entry_bits = g_bits + h_lane + 1 if pack_gh else g_bits + 1
    lane_bits = 0
    if classes > 1 and encoding != "phe":
        lane_bits = entry_bits + 1
        entry_bits = classes * lane_bits
    usable = key_bits - 2
    if entry_bits > usable:
        per = f"{classes} classes per plaintext" if lane_bits else "one class per plaintext"
        options = ["a larger key", "fewer frac_bits"]
        options += ["pack_gh=False"] if lane_bits and pack_gh else []
        options += ["one_output_per_tree"] if lane_bits else []
        raise BitBudgetError(
            f"sums of {n_rows} rows at frac_bits={frac_bits} need {entry_bits} bits ({per}) "
            f"but a {key_bits}-bit key holds {usable}: use "
            + ", ".join(options[:-1])
            + f" or {options[-1]}"
        )
    slot_bits, slots, offset = 0, 1, 0
    if pack_histograms:
        slot_bits = entry_bits + 1
        try:
            slots = horner_capacity(key_bits, slot_bits)
        except PackingOverflowError:
            slots = 0
        if slots < 2:
            raise BitBudgetError(
                f"histogram packing needs at least two {slot_bits}-bit slots per ciphertext "
                f"but a {key_bits}-bit key holds {usable} bits ({n_rows} rows, "
                f"frac_bits={frac_bits}): use a larger key, fewer frac_bits, or "
                "pack_histograms=False"
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


def largest_frac_bits(
    n_rows: int, key_bits: int, top: int = AUTO_MAX_FRAC_BITS, **layout: Any
) -> int | None:
    """The most precision (``frac_bits`` <= ``top``) whose plan fits, or None when even
    ``MIN_FRAC_BITS`` does not.

    Args:
        n_rows: training rows.
        key_bits: the Paillier modulus size.
        top: the most precision wanted.
        layout: the other keyword arguments of :func:`plan_bits` (``pack_gh``,
            ``pack_histograms``, ``h_log2``, ``classes``, ``encoding``).
    """
    for frac_bits in range(top, MIN_FRAC_BITS - 1, -1):
        try:
            plan_bits(n_rows, frac_bits, key_bits, **layout)
        except PackingOverflowError:
            continue
        return frac_bits
    return None
