"""Plaintext slot packing: many small integers in one Paillier plaintext.

One mechanism serves every layout. A value v goes into an L-bit *lane* as the non-negative
integer v + lane_shift; B lanes are concatenated (lane j at bit L·j) into one big integer, from
which a constant plain_shift is subtracted. Adding k packed plaintexts (homomorphically) adds
lane-wise as long as no lane sum reaches 2^L; after decryption, adding plain_shift back and
splitting the lanes gives lane sums, minus an unpack shift.

Layouts (value bits r, planned summands k, guard bits g = ⌈log₂ k⌉, L = r + g):

``"offset"``  values in [−2^(r−1), 2^(r−1) − 1] stored as v + 2^(r−1) ∈ [0, 2^r); a lane sum is
              at most k·(2^r − 1) < 2^L; unpack subtracts k·2^(r−1) (k = actual summands).
              Plaintexts are non-negative, so they also fit ciphertext-side Horner packing.
``"signed"``  signed radix: the plaintext is Σ v_j·2^(L·j) as a signed big integer (negative
              values borrow from the lane above). Lane sums lie in [−2^(L−1), 2^(L−1)), so
              adding Σ 2^(L−1)·2^(L·j) after decryption makes every lane non-negative without
              carries, and the signed lane sums are peeled off exactly.
``"unsigned"`` values in [0, 2^r − 1], no shift (e.g. hessians, or values already offset).

The bit budget: B·L <= n_bits − 2, so |plaintext| < 2^(n_bits−2) <= (n − 1)/2 and every sum
stays inside the key's signed range. Every check raises :class:`PackingOverflowError` *before*
anything could overflow: values outside [min_value, max_value] at pack time, more summands
than planned at unpack time, a lane that does not fit the key at plan time.

Packing and unpacking are vectorized with numpy (bit matrices and ``packbits``) with one
``int.from_bytes``/``to_bytes`` per plaintext, not a Python call per value (except for lanes
wider than 64 bits, which go through Python ints per value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hefl.crypto._ints import as_int_list
from hefl.errors import ConfigError, PackingOverflowError

LAYOUTS = ("offset", "signed", "unsigned")
_CHUNK = 1 << 16  # values per numpy block, bounds the bit matrices to a few MB


@dataclass(frozen=True)
class SlotLayout:
    """A planned packing of integers into Paillier plaintexts (see module docs).

    Attributes:
        layout: ``"offset"``, ``"signed"`` or ``"unsigned"``.
        value_bits: r, the bits of one value.
        n_summands: k, the most packed plaintexts that may be added together.
        guard_bits: ⌈log₂ k⌉ (+ any extra requested).
        lane_bits: L = value_bits + guard_bits.
        slots_per_plaintext: B, lanes per plaintext.
        key_bits: bit length of the key's n the plan was made for.
        modulus: n if the plan was made from a public key (then unpack centres mod n).
    """

    layout: str
    value_bits: int
    n_summands: int
    guard_bits: int
    lane_bits: int
    slots_per_plaintext: int
    key_bits: int
    modulus: int | None = field(default=None, repr=False, compare=False)

    # -- derived constants ----------------------------------------------------------------
    @property
    def min_value(self) -> int:
        """Smallest value :meth:`pack` accepts."""
        return 0 if self.layout == "unsigned" else -(1 << (self.value_bits - 1))

    @property
    def max_value(self) -> int:
        """Largest value :meth:`pack` accepts."""
        if self.layout == "unsigned":
            return (1 << self.value_bits) - 1
        return (1 << (self.value_bits - 1)) - 1

    @property
    def plaintext_bits(self) -> int:
        """Bits used per plaintext, B·L."""
        return self.slots_per_plaintext * self.lane_bits

    @property
    def _lane_shift(self) -> int:
        if self.layout == "offset":
            return 1 << (self.value_bits - 1)
        if self.layout == "signed":
            return 1 << (self.lane_bits - 1)
        return 0

    @property
    def _plain_shift(self) -> int:
        if self.layout != "signed":
            return 0
        # Σ_j 2^(L−1)·2^(L·j) for j < B
        lane = 1 << (self.lane_bits - 1)
        return lane * (((1 << self.plaintext_bits) - 1) // ((1 << self.lane_bits) - 1))

    def n_plaintexts(self, count: int) -> int:
        """Plaintexts needed for ``count`` values."""
        return -(-count // self.slots_per_plaintext)

    # -- packing --------------------------------------------------------------------------
    def pack(self, values: Any) -> list[int]:
        """Pack values into plaintext integers (B per plaintext, the last one zero-padded).

        Args:
            values: a 1-D numpy integer array, or a list / object array of Python ints
                (needed when value_bits > 62).

        Returns:
            ``n_plaintexts(len(values))`` Python ints, each within the key's signed range.

        Raises:
            ConfigError: values are not integers.
            PackingOverflowError: a value is outside [min_value, max_value].
        """
        arr, wide = self._as_values(values)
        count = len(arr)
        if count == 0:
            return []
        lo, hi = (int(arr.min()), int(arr.max())) if not wide else (min(arr), max(arr))
        if lo < self.min_value or hi > self.max_value:
            raise PackingOverflowError(
                f"value {lo if lo < self.min_value else hi} does not fit the {self.layout} layout "
                f"of {self.value_bits}-bit values [{self.min_value}, {self.max_value}]; "
                "quantize/clip first or plan more value_bits"
            )
        B, L = self.slots_per_plaintext, self.lane_bits
        n_pt = self.n_plaintexts(count)
        pad = n_pt * B - count
        shift = self._lane_shift
        nbytes_pt = (B * L + 7) // 8
        out: list[int] = []
        plain_shift = self._plain_shift
        # process whole plaintexts in blocks to bound memory
        per_block = max(1, _CHUNK // B)
        for start in range(0, n_pt, per_block):
            stop = min(n_pt, start + per_block)
            seg = arr[start * B : stop * B]
            if stop == n_pt and pad:
                seg = _pad(seg, pad, wide)
            bits = _lanes_to_bits(seg, shift, L, wide)  # (m·B, L) uint8
            bits = bits.reshape(stop - start, B * L)
            packed = np.packbits(bits, axis=1, bitorder="little")
            data = packed.tobytes()
            for i in range(stop - start):
                p = int.from_bytes(data[i * nbytes_pt : (i + 1) * nbytes_pt], "little")
                out.append(p - plain_shift)
        return out

    def unpack(self, plaintexts: Any, count: int, n_summands: int | None = None) -> np.ndarray:
        """Recover the lane sums from decrypted (sums of) packed plaintexts.

        Args:
            plaintexts: signed ints as returned by ``PrivateKey.decrypt``.
            count: number of values originally packed (drops the padding lanes).
            n_summands: how many packed vectors were added (k <= planned); defaults to the
                planned number. The offset layout needs the exact value.

        Returns:
            A 1-D array of the signed lane sums: int64 when lanes are <= 62 bits, else an
            object array of Python ints.

        Raises:
            PackingOverflowError: more summands than planned, or a plaintext / lane outside what
                k sums could produce (wrong key, wrong k or corrupted data).
            ConfigError: too few plaintexts for ``count``.
        """
        k = self.n_summands if n_summands is None else n_summands
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ConfigError(f"n_summands must be a positive int, got {n_summands!r}")
        if k > self.n_summands:
            raise PackingOverflowError(
                f"{k} summands exceed the {self.n_summands} this layout was planned for "
                f"({self.guard_bits} guard bits); lanes may have overflowed"
            )
        ps = as_int_list(plaintexts, "plaintexts")
        if count < 0 or self.n_plaintexts(count) > len(ps):
            raise ConfigError(f"{len(ps)} plaintexts cannot hold {count} values")
        ps = ps[: self.n_plaintexts(count)]
        B, L = self.slots_per_plaintext, self.lane_bits
        limit = 1 << (B * L)
        plain_shift = self._plain_shift
        n = self.modulus
        xs = []
        for p in ps:
            if n is not None and p > n // 2:
                p -= n  # tolerate plaintexts given mod n instead of signed
            x = p + plain_shift
            if not 0 <= x < limit:
                raise PackingOverflowError(
                    f"plaintext outside the {B * L}-bit {self.layout} packing range: "
                    "wrong key, wrong layout, too many summands or corrupted data"
                )
            xs.append(x)
        if not xs:
            return np.zeros(0, dtype=np.int64)
        nbytes_pt = (B * L + 7) // 8
        per_block = max(1, _CHUNK // B)
        blocks = []
        for start in range(0, len(xs), per_block):
            seg = xs[start : start + per_block]
            raw = np.frombuffer(
                b"".join([x.to_bytes(nbytes_pt, "little") for x in seg]), dtype=np.uint8
            ).reshape(len(seg), nbytes_pt)
            bits = np.unpackbits(raw, axis=1, bitorder="little")[:, : B * L]
            blocks.append(_bits_to_lanes(bits.reshape(len(seg) * B, L), L))
        lanes = np.concatenate(blocks)[:count]
        max_lane = k * ((1 << self.value_bits) - 1)
        sub = k * self._lane_shift if self.layout == "offset" else self._lane_shift
        if self.layout != "signed":
            top = lanes.max() if len(lanes) else 0
            if int(top) > max_lane:
                raise PackingOverflowError(
                    f"a lane sum {int(top)} exceeds what {k} summands of {self.value_bits}-bit "
                    "values can reach: wrong n_summands or corrupted data"
                )
        if lanes.dtype == object:
            out = np.empty(len(lanes), dtype=object)
            out[:] = [v - sub for v in lanes.tolist()]
            return out
        return lanes.astype(np.int64) - np.int64(sub)

    # -- helpers --------------------------------------------------------------------------
    def _as_values(self, values: Any) -> tuple[Any, bool]:
        """Return (values, wide): an int64 ndarray, or a list of Python ints if wide."""
        wide = self.lane_bits > 62
        if isinstance(values, np.ndarray) and values.dtype.kind in "iu" and not wide:
            if values.dtype.kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
                raise PackingOverflowError("value does not fit the layout")
            return values.reshape(-1).astype(np.int64, copy=False), False
        ints = as_int_list(values, "values")
        if wide:
            return ints, True
        try:
            return np.array(ints, dtype=np.int64).reshape(-1), False
        except OverflowError as exc:
            raise PackingOverflowError(
                f"a value does not fit the {self.value_bits}-bit {self.layout} layout"
            ) from exc


def _pad(seg: Any, pad: int, wide: bool) -> Any:
    if wide:
        return list(seg) + [0] * pad
    return np.concatenate([seg, np.zeros(pad, dtype=np.int64)])


def _lanes_to_bits(seg: Any, shift: int, L: int, wide: bool) -> np.ndarray:
    """Little-endian bit matrix (len(seg), L) of the lane integers seg + shift."""
    if not wide:  # L <= 62, so v + shift fits int64
        u = (seg + np.int64(shift)).astype("<u8")
        raw = u.view(np.uint8).reshape(len(seg), 8)
        return np.unpackbits(raw, axis=1, bitorder="little")[:, :L]
    nb = (L + 7) // 8
    raw = np.frombuffer(
        b"".join([(v + shift).to_bytes(nb, "little") for v in seg]), dtype=np.uint8
    ).reshape(len(seg), nb)
    return np.unpackbits(raw, axis=1, bitorder="little")[:, :L]


def _bits_to_lanes(bits: np.ndarray, L: int) -> np.ndarray:
    """Inverse of :func:`_lanes_to_bits`: uint64 lanes, or Python ints if L > 64."""
    nb = (L + 7) // 8
    packed = np.packbits(bits, axis=1, bitorder="little")  # (N, nb), high bits zero
    if L <= 64:
        full = np.zeros((bits.shape[0], 8), dtype=np.uint8)
        full[:, :nb] = packed
        return full.view("<u8").reshape(-1)
    data = packed.tobytes()
    vals = [int.from_bytes(data[i : i + nb], "little") for i in range(0, len(data), nb)]
    out = np.empty(len(vals), dtype=object)
    out[:] = vals
    return out


def plan_slots(
    key_bits_or_pk: Any,
    value_bits: int,
    n_summands: int,
    layout: str = "offset",
    *,
    extra_guard_bits: int = 0,
    max_slots: int | None = None,
) -> SlotLayout:
    """Plan lane width, guard bits and lanes per plaintext for a key.

    Args:
        key_bits_or_pk: the key's bit length, or a :class:`PublicKey`.
        value_bits: r, bits per value (>= 1; > 62 is supported with Python-int values).
        n_summands: k, the most packed plaintexts that will be added together (>= 1).
        layout: ``"offset"`` (default), ``"signed"`` or ``"unsigned"``.
        extra_guard_bits: additional guard bits per lane (e.g. headroom for later scaling).
        max_slots: cap on lanes per plaintext.

    Returns:
        A :class:`SlotLayout`.

    Raises:
        ConfigError: invalid arguments.
        PackingOverflowError: not even one lane fits the key.
    """
    modulus = None
    if hasattr(key_bits_or_pk, "n_bits") and hasattr(key_bits_or_pk, "n"):
        key_bits = int(key_bits_or_pk.n_bits)
        modulus = int(key_bits_or_pk.n)
    else:
        key_bits = key_bits_or_pk
    for name, v, lo in (
        ("key_bits", key_bits, 16),
        ("value_bits", value_bits, 1),
        ("n_summands", n_summands, 1),
        ("extra_guard_bits", extra_guard_bits, 0),
    ):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
            raise ConfigError(f"{name} must be an int >= {lo}, got {v!r}")
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    if max_slots is not None and (not isinstance(max_slots, int) or max_slots < 1):
        raise ConfigError(f"max_slots must be a positive int, got {max_slots!r}")
    # ⌈log₂ k⌉ computed exactly on ints
    guard = (int(n_summands) - 1).bit_length() + int(extra_guard_bits)
    lane = int(value_bits) + guard
    budget = int(key_bits) - 2
    slots = budget // lane
    if slots < 1:
        raise PackingOverflowError(
            f"one {lane}-bit lane ({value_bits} value bits + {guard} guard bits for "
            f"{n_summands} summands) does not fit a {key_bits}-bit key ({budget} usable bits)"
        )
    if max_slots is not None:
        slots = min(slots, max_slots)
    return SlotLayout(
        layout=layout,
        value_bits=int(value_bits),
        n_summands=int(n_summands),
        guard_bits=guard,
        lane_bits=lane,
        slots_per_plaintext=slots,
        key_bits=int(key_bits),
        modulus=modulus,
    )
