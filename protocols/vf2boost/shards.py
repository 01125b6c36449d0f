"""A passive party's histograms built where its rows live: row shards on Dask workers.

With an executor that places data (:class:`hefl.DaskExecutor`), the passive party cuts its
binned columns into contiguous row shards, one per worker thread, and sends each to its
worker once. Per tree only the new ciphertexts travel: each arriving chunk of encrypted g‖h
is split at the shard boundaries and each piece goes to its shard's worker, which sums the
piece into a partial root histogram at once. Every later histogram is one task per shard
given only row indices; the worker takes its pieces' ciphertexts and its bins of those rows
and builds a partial histogram with the same kernel as the process pool
(:func:`~hefl.protocols.vf2boost.encgh.build_histogram`); the partials are added (a
homomorphic sum needs no order). Parents − smaller children and everything else stay as in
:class:`~hefl.protocols.vf2boost.passive_hist.Histograms`.

A worker lost with its shard (its placed data has no lineage to recompute from) makes the
histograms of that tree fall back to plain offloading with the ciphertexts at hand; the next
tree places the shards again on the workers then alive.
"""

from __future__ import annotations

import asyncio
import functools
import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hefl import Party, placement_executor
from hefl.errors import HeflError
from hefl.protocols.vf2boost.encgh import EncGH, build_histogram
from hefl.protocols.vf2boost.passive_hist import Histograms


def piece_histogram(piece: EncGH, bins: np.ndarray, offset: int, width: int) -> EncGH:
    """On a worker: the histogram of a just-placed piece whose first row is ``offset`` rows
    into the shard's ``bins``."""
    return build_histogram(piece, bins[offset : offset + len(piece)], width)


def shard_histogram(
    bins: np.ndarray, local: np.ndarray, spans: list[tuple[int, int]], width: int, *pieces: EncGH
) -> EncGH:
    """On a worker: the histogram of the shard rows ``local`` (ascending, shard-relative)
    from the pieces covering them (``spans``: each piece's shard-relative [start, stop))."""
    parts = []
    for (a, b), piece in zip(spans, pieces, strict=True):
        inside = local[(local >= a) & (local < b)]
        if len(inside):
            parts.append(piece.take(inside - a))
    enc = parts[0] if len(parts) == 1 else EncGH.concat(parts)
    return build_histogram(enc, bins[local], width)


@dataclass
class Shard:
    """Rows [start, stop) of the party, placed on ``worker``.

    Attributes:
        bins: the future of the shard's bins on its worker.
        pieces: this tree's placed ciphertext pieces: (start, stop, future), shard-relative.
    """

    start: int
    stop: int
    worker: str
    bins: Any
    pieces: list[tuple[int, int, Any]] = field(default_factory=list)


class ShardedHistograms(Histograms):
    """:class:`Histograms` whose builds run on the row shards' workers.

    Args:
        party: the passive party.
        bins: its binned features (rows × features).
        width: the histogram width.
        executor: its placing executor (see :func:`hefl.placement_executor`).
    """

    def __init__(self, party: Party, bins: np.ndarray, width: int, executor: Any) -> None:
        super().__init__(party, bins, width, 1)
        self.executor = executor
        self.shards: list[Shard] = []
        self.placed = 0  # rows of this tree whose ciphertexts are on the workers
        self.broken = False  # a shard was lost: plain offloading until the next tree

    async def new_tree(self) -> None:
        """Forget the last tree's ciphertexts; place the shards (again, if a worker left)."""
        old = [p[2] for s in self.shards for p in s.pieces]
        for s in self.shards:
            s.pieces = []
        self.placed = 0
        if old:
            await self.executor.forget(old)
        workers = await self.executor.worker_addresses()
        if self.broken or not self.shards or any(s.worker not in workers for s in self.shards):
            self.broken = False
            await self._place(workers)

    async def _place(self, workers: list[str]) -> None:
        if self.shards:
            await self.executor.forget([s.bins for s in self.shards])
        n = len(self.bins)
        cuts = np.linspace(0, n, min(len(workers), n) + 1).astype(int)
        shards = []
        for i, worker in enumerate(workers[: len(cuts) - 1]):
            a, b = int(cuts[i]), int(cuts[i + 1])
            future = await self.executor.scatter_to(self.bins[a:b], worker)
            shards.append(Shard(a, b, worker, future))
        self.shards = shards

    async def build(self, enc: EncGH, rows: np.ndarray) -> EncGH:
        """The histogram of ``rows`` (their ciphertexts ``enc``): new rows are placed on
        their shards first; a lost shard falls back to :meth:`Histograms.build`."""
        if self.broken or not self.shards:
            return await super().build(enc, rows)
        fresh = self.placed < len(self.bins)
        if fresh and not _follows(rows, self.placed):
            self.broken = True  # new rows out of order: not this module's layout
            return await super().build(enc, rows)
        if fresh:
            jobs = self._place_new(enc, rows)  # synchronous bookkeeping: chunk order kept
        try:
            parts = await (asyncio.gather(*jobs) if fresh else self._from_shards(rows))
        except HeflError:
            raise
        except Exception:  # placed data lost with its worker: this tree goes the plain way
            self.broken = True
            return await super().build(enc, rows)
        return functools.reduce(operator.add, parts)

    def _place_new(self, enc: EncGH, rows: np.ndarray) -> list[asyncio.Task[EncGH]]:
        first = self.placed
        self.placed += len(rows)
        jobs = []
        for s in self.shards:
            a, b = max(s.start, first), min(s.stop, first + len(rows))
            if a < b:
                piece = enc.take(np.arange(a - first, b - first))
                placed = asyncio.ensure_future(self.executor.scatter_to(piece, s.worker))
                s.pieces.append((a - s.start, b - s.start, placed))
                jobs.append(asyncio.ensure_future(self._piece(s, placed, a - s.start)))
        return jobs

    async def _piece(self, s: Shard, placed: asyncio.Future, offset: int) -> EncGH:
        future = await placed
        return await self.executor.run_at(
            s.worker, piece_histogram, future, s.bins, offset, self.width
        )

    async def _from_shards(self, rows: np.ndarray) -> list[EncGH]:
        rows = np.sort(rows)
        jobs = []
        for s in self.shards:
            lo, hi = np.searchsorted(rows, [s.start, s.stop])
            if lo == hi:
                continue
            local = rows[lo:hi] - s.start
            used = [p for p in s.pieces if np.any((local >= p[0]) & (local < p[1]))]
            futures = [await p[2] for p in used]
            spans = [(p[0], p[1]) for p in used]
            jobs.append(
                self.executor.run_at(
                    s.worker, shard_histogram, s.bins, local, spans, self.width, *futures
                )
            )
        return list(await asyncio.gather(*jobs))


def _follows(rows: np.ndarray, placed: int) -> bool:
    """Whether ``rows`` are the next rows after the ``placed`` first ones, in order."""
    n = len(rows)
    return n == 0 or (int(rows[0]) == placed and int(rows[-1]) == placed + n - 1)


def histograms_for(party: Party, bins: np.ndarray, width: int, workers: int) -> Histograms:
    """The passive party's histogram builder: row shards on its executor's workers when the
    executor places data, else the process pool's (features split over ``workers``)."""
    executor = placement_executor(party)
    if executor is None:
        return Histograms(party, bins, width, workers)
    return ShardedHistograms(party, bins, width, executor)


async def start_tree(histograms: Histograms) -> None:
    """Get ``histograms`` ready for a new tree (places the shards; nothing otherwise)."""
    if isinstance(histograms, ShardedHistograms):
        await histograms.new_tree()


__all__ = [
    "ShardedHistograms",
    "histograms_for",
    "piece_histogram",
    "shard_histogram",
    "start_tree",
]
