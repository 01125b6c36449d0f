"""A client's Paillier randomness for its next round, made in the background.

The costly part of encrypting a round is the obfuscators (one n-th residue per ciphertext),
and they do not depend on the update. How many a round needs is known before the update is:
the layout fixes the ciphertexts per round (⌈values / lanes⌉, streamed in chunks of
``chunk_size``) and the packed dACIQ statistics add one per few layers. So when a round ends the client
asks its executor (``party.offload``: the cores it has) for exactly those obfuscators, one
:class:`~hefl.crypto.ObfuscatorBatch` per upload chunk, and they are made while it trains
locally. The next round's online encryption is then quantize, pack and one product per
ciphertext.

Every batch is handed out once (it leaves the reserve when taken) and refuses a second use,
so no obfuscator is ever used twice. When background work falls behind, the ``"wait"``
policy waits for it and the ``"online"`` policy makes that chunk's obfuscators online instead
(the late batch is cancelled, or thrown away when it arrives, never kept for later); each
round's :class:`~hefl.protocols.batchcrypt.federation.RoundTiming` says which happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from hefl import Party
from hefl.crypto import ObfuscatorBatch, PrivateKey
from hefl.errors import ConfigError
from hefl.protocols.batchcrypt import work
from hefl.protocols.batchcrypt.federation import RoundTiming

POLICIES: tuple[str, ...] = ("off", "wait", "online")

# what a round encrypts, in the order it does: the start-up statistics (first dACIQ round),
# the upload chunks, the statistics for the next round's clipping
PURPOSES: tuple[str, ...] = ("pre", "up", "stats")

_BatchTask = asyncio.Task  # an offloaded work.make_obfuscators: (ObfuscatorBatch, seconds)


class Reserve:
    """The obfuscators a client has planned for its next round, made in its executor.

    Args:
        party: the client's Party (its executor makes the obfuscators).
        sk: the session's private key (CRT fast path; it stays in this client's own workers).
        short_exponent: draw short-exponent obfuscators (the configuration's opt-in).
        policy: ``"wait"`` or ``"online"`` (what to do when a batch is not ready in time).
    """

    def __init__(self, party: Party, sk: PrivateKey, short_exponent: bool, policy: str) -> None:
        if policy not in POLICIES[1:]:
            raise ConfigError(
                f"background randomness policy must be 'wait' or 'online', not {policy!r}"
            )
        self.party = party
        self.sk = sk
        self.short_exponent = short_exponent
        self.policy = policy
        self.planned: dict[str, tuple[int, ...]] = {}
        self._batches: dict[str, deque[tuple[int, _BatchTask]]] = {}

    def plan(self, sizes: dict[str, Sequence[int]]) -> None:
        """Start making the next round's batches: ``sizes[purpose]`` lists the obfuscators of
        each encryption job of that purpose, in order. Batches left from an earlier plan are
        dropped (cancelled, never used).
        """
        self.discard()
        loop = asyncio.get_running_loop()
        for purpose in PURPOSES:
            counts = tuple(int(k) for k in sizes.get(purpose, ()))
            self.planned[purpose] = counts
            self._batches[purpose] = deque(
                (k, loop.create_task(self._make(k))) for k in counts if k > 0
            )

    async def _make(self, count: int) -> tuple[ObfuscatorBatch, float]:
        out: tuple[ObfuscatorBatch, float] = await self.party.offload(
            work.make_obfuscators, self.sk, count, self.short_exponent
        )
        return out

    def check(self, purpose: str, counts: Sequence[int], what: str) -> None:
        """Refuse a round whose ``purpose`` jobs do not match the plan.

        Raises:
            ConfigError: the plan holds other counts (``what`` names the update and the plan).
        """
        planned = self.planned.get(purpose)
        if planned is not None and tuple(counts) != planned:
            raise ConfigError(
                f"{what}: it needs {sum(counts)} {purpose!r} obfuscators in {len(counts)} "
                f"batch(es) but the background randomness was planned for {sum(planned)} in "
                f"{len(planned)}; an update must keep the size and layers it was planned with"
            )

    async def take(self, purpose: str, count: int, timing: RoundTiming) -> ObfuscatorBatch | None:
        """The next batch of ``purpose`` (of exactly ``count`` obfuscators), or None when the
        job must draw its obfuscators online (nothing planned, or late under ``"online"``).

        Raises:
            ConfigError: the next planned batch has another size.
            CryptoError (or the worker's error): the background job failed.
        """
        queue = self._batches.get(purpose)
        if not queue:
            timing.obfuscators_online += count
            return None
        size, task = queue.popleft()  # leaves the reserve: never handed out again
        if size != count:
            task.cancel()
            raise ConfigError(
                f"a {purpose!r} job needs {count} obfuscators but the batch planned for it "
                f"holds {size}"
            )
        if not task.done():
            if self.policy == "online":
                task.cancel()  # not started: never runs; running: its result is dropped
                timing.obfuscators_online += count
                timing.randomness = "online"
                return None
            start = time.perf_counter()
            await asyncio.wait({task})
            timing.randomness_wait += time.perf_counter() - start
            timing.randomness = "waited"
        batch, secs = task.result()
        timing.background += secs
        timing.obfuscators_background += count
        return batch

    def discard(self) -> None:
        """Cancel and drop every batch not taken (they are never used)."""
        for queue in self._batches.values():
            while queue:
                _, task = queue.popleft()
                task.cancel()
                task.add_done_callback(_retrieve)
        self._batches = {}
        self.planned = {}

    async def close(self) -> None:
        """Drop what is left and wait until the cancelled jobs have settled."""
        tasks = [task for queue in self._batches.values() for _, task in queue]
        self.discard()
        if tasks:
            await asyncio.wait(tasks)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Consume a dropped job's outcome (a failure there matters to no round)."""
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
