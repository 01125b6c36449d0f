"""Cut points placed the way XGBoost's ``hist`` method places them, for one feature.

XGBoost summarises a column with a weighted quantile sketch (Chen & Guestrin 2016, appendix):
a summary is a sorted list of distinct values, each with the lowest and highest rank it can
have (``rmin``, ``rmax``) and its own weight (``w``). Rows stream into a buffer of
``2 * limit`` entries (equal neighbouring values share an entry); a full buffer becomes an exact
summary that is pruned to ``limit`` entries and merged up a ladder of levels, as in a
merge-and-prune sketch. The final summary is pruned to ``max_bin * 8`` entries, then to
``max_bin + 1``; its values after the first become the cut points, and a value goes to the
bin *below* the first cut that is greater than it (``x < cut`` goes left, a value equal to a
cut goes right).

Consequences worth knowing: a feature with at most ``max_bin`` distinct values gets a cut at
every distinct value but the smallest (one bin per value); a column of at most ``2 * limit``
rows (514 for ``max_bin=32``) is summarised exactly, so hefl's cuts are XGBoost's exactly; larger
columns are summarised in arrival order, which hefl reproduces step by step (the sketch's
error bound, ``1 / (8 * max_bin)`` of the rows, holds either way). This module is plain numpy
written from the published algorithm; it reads no XGBoost code at run time.

Weights are one per row (hefl has no sample weights).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

#: XGBoost's sketch keeps ``K_FACTOR * max_bin`` summary entries before the final prune.
K_FACTOR = 8


class Summary(NamedTuple):
    """A weighted quantile summary: sorted distinct values and their rank bounds."""

    value: np.ndarray
    rmin: np.ndarray
    rmax: np.ndarray
    w: np.ndarray

    @property
    def size(self) -> int:
        return int(self.value.size)

    def take(self, idx: np.ndarray) -> Summary:
        return Summary(self.value[idx], self.rmin[idx], self.rmax[idx], self.w[idx])


def exact_summary(values: np.ndarray) -> Summary:
    """The exact summary of a batch of values (unit weights).

    Args:
        values: finite float64 values, any order.

    Returns:
        Their distinct values with exact rank bounds.
    """
    v, counts = np.unique(values, return_counts=True)
    w = counts.astype(np.float64)
    rmax = np.cumsum(w)
    return Summary(v, rmax - w, rmax, w)


def prune(s: Summary, maxsize: int) -> Summary:
    """Keep at most ``maxsize`` entries: the first, the last, and those nearest to
    ``maxsize - 2`` evenly spaced ranks between them (no entry twice).

    Args:
        s: a summary.
        maxsize: entries to keep at most (>= 2).

    Returns:
        ``s`` itself when it is small enough, else the pruned summary.
    """
    if s.size <= maxsize:
        return s
    begin = s.rmax[0]
    span = s.rmin[-1] - s.rmax[0]
    n = maxsize - 1
    dx2 = 2.0 * ((np.arange(1, n) * span) / n + begin)  # twice the target ranks
    mid2 = s.rmax + s.rmin  # twice each entry's mid rank
    i = np.maximum(np.searchsorted(mid2, dx2, side="right") - 1, 1)
    stop = np.flatnonzero(i >= s.size - 1)
    if stop.size:  # past the last entry's mid rank: nothing more to pick
        i, dx2 = i[: stop[0]], dx2[: stop[0]]
    upper = dx2 >= (s.rmin[i] + s.w[i]) + (s.rmax[i + 1] - s.w[i + 1])
    picked = np.where(upper, i + 1, i)
    return s.take(np.unique(np.concatenate(([0], picked, [s.size - 1]))))


def combine(a: Summary, b: Summary) -> Summary:
    """Merge the summaries of two disjoint row sets: ranks add up, and a value both hold
    becomes one entry with both sides' ranks and weights.

    Args:
        a: one summary.
        b: the other.

    Returns:
        The summary of both row sets.
    """
    if a.size == 0:
        return b
    if b.size == 0:
        return a
    ea, _ = _merged_side(a, b)
    eb, in_a = _merged_side(b, a)
    keep_b = ~in_a  # a value both hold is taken once, from a's side
    value = np.concatenate((a.value, b.value[keep_b]))
    order = np.argsort(value, kind="stable")
    rmin, rmax, w = (np.concatenate((x, y[keep_b]))[order] for x, y in zip(ea, eb, strict=True))
    # restore the rank invariants float rounding could break (exact with unit weights)
    rmin = np.maximum.accumulate(rmin)
    rmax = np.maximum.accumulate(np.maximum(rmax, rmin + w))
    return Summary(value[order], rmin, rmax, w)


def _merged_side(a: Summary, b: Summary) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """``a``'s entries with ``b``'s rows counted in, and which of a's values b also holds.

    For a value b lacks, b's rows certainly below it add to its lowest rank and b's rows
    possibly not above it to its highest; for a value b holds, both ranks and weights add."""
    left = np.searchsorted(b.value, a.value, side="left")
    right = np.searchsorted(b.value, a.value, side="right")
    same = right > left
    below = np.maximum(left - 1, 0)
    lo = np.where(left > 0, (b.rmin + b.w)[below], 0.0)
    top = np.minimum(right, b.size - 1)
    hi = np.where(right < b.size, (b.rmax - b.w)[top], b.rmax[-1])
    eq = np.minimum(left, b.size - 1)
    rmin = a.rmin + np.where(same, b.rmin[eq], lo)
    rmax = a.rmax + np.where(same, b.rmax[eq], hi)
    w = a.w + np.where(same, b.w[eq], 0.0)
    return (rmin, rmax, w), same


def limit_size(n_rows: int, max_bin: int) -> int:
    """Entries per summary level of XGBoost's sketch for a column of ``n_rows`` values.

    Args:
        n_rows: the column's non-missing values.
        max_bin: most bins per feature.

    Returns:
        The level size (the buffer holds twice as many entries).
    """
    eps = 1.0 / (max(min(max_bin, n_rows), 1) * K_FACTOR)
    level = 1
    while True:
        size = math.ceil(level / eps) + 1
        if (1 << level) * size >= n_rows:
            return size
        level += 1


def stream_summary(values: np.ndarray, limit: int) -> Summary:
    """Summarise values in arrival order through the merge-and-prune ladder.

    Args:
        values: one column's non-missing values, in row order.
        limit: entries per level (:func:`limit_size`).

    Returns:
        The column's summary, at most ``limit`` entries.
    """
    # buffer entries: runs of equal neighbouring values; a full buffer (2 * limit entries)
    # is summarised and pushed up the ladder before the next value comes in
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    cap = 2 * limit
    if starts.size <= cap:
        out = exact_summary(values)
        return prune(out, limit)
    levels: list[Summary | None] = []
    for c in range(0, starts.size - cap, cap):
        lo, hi = starts[c], starts[c + cap]
        _push(levels, exact_summary(values[lo:hi]), limit)
    out = prune(exact_summary(values[starts[(starts.size - 1) // cap * cap] :]), limit)
    for level in levels:
        if level is not None:
            out = prune(combine(out, level), limit)
    return out


def _push(levels: list[Summary | None], temp: Summary, limit: int) -> None:
    """Carry a full buffer's summary up the ladder: merge with each occupied level and move
    on while the merge is larger than one level holds."""
    for lv in range(len(levels) + 1):
        if lv == len(levels):
            levels.append(None)
        held = levels[lv]
        if held is None:
            levels[lv] = prune(temp, limit)
            return
        temp = combine(prune(temp, limit), held)
        if temp.size <= limit:
            levels[lv] = temp
            return
        levels[lv] = None


def xgboost_cuts(values: np.ndarray, max_bin: int) -> np.ndarray:
    """Cut points of one feature's non-missing values (``x < cut`` goes left): those of
    XGBoost's ``hist`` with the same ``max_bin``.

    Args:
        values: the column's non-missing values, in row order (order matters once the
            column outgrows one sketch buffer, as in XGBoost).
        max_bin: most bins per feature.

    Returns:
        Sorted distinct cut points, at most ``max_bin - 1`` of them (empty for no values or
        one distinct value).
    """
    if values.size == 0:
        return np.empty(0)
    summary = stream_summary(values, limit_size(values.size, max_bin))
    wide = min(values.size, max_bin * K_FACTOR)
    bins = min(wide, max_bin)
    final = prune(prune(summary, wide), bins + 1)
    cuts = final.value[1 : min(final.size, bins)]
    return np.asarray(cuts, dtype=np.float64)  # distinct and increasing already
