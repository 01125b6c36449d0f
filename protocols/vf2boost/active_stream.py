"""The active party's g‖h: encrypt one tree's gradients and hessians and send them.

Without ``blaster`` every row is encrypted on the executor, then sent in one message. With
it, the rows go in chunks, each encrypted while earlier ones are on the wire: chunks covered by
precomputed obfuscators are encrypted on the event loop (one multiplication per value), the
others on the executor's processes, all started at once.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import numpy as np

from hefl import Party, task_group
from hefl.messages import send
from hefl.protocols.vf2boost.active_setup import ActiveCrypto
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.encgh import EncGH, encrypt_gh
from hefl.protocols.vf2boost.messages import Gradients


async def stream_gh(
    party: Party,
    crypto: ActiveCrypto,
    cfg: VF2BoostConfig,
    passives: list[str],
    t: int,
    gi: np.ndarray,
    hi: np.ndarray,
) -> None:
    """Encrypt tree ``t``'s g and h encodings and send them to every passive party.

    Raises:
        CryptoError: encryption failed (e.g. the obfuscator pool broke).
        PeerFailed: a passive party failed.
    """
    if not cfg.blaster:
        await _send_whole(party, crypto, cfg, passives, t, gi, hi)
    else:
        await _send_chunks(party, crypto, cfg, passives, t, gi, hi)


async def _send_whole(
    party: Party,
    crypto: ActiveCrypto,
    cfg: VF2BoostConfig,
    passives: list[str],
    t: int,
    gi: np.ndarray,
    hi: np.ndarray,
) -> None:
    with party.span("encrypt", tree=t, rows=len(gi)):
        enc = await party.offload(
            encrypt_gh,
            crypto.enc_key,
            gi,
            hi,
            crypto.plan,
            crypto.layout,
            cfg.obfuscation,
            cfg.reorder,
        )
    with party.span("send-gh", tree=t):
        for name in passives:
            await send(party, name, Gradients(enc), t=t)


def warm_chunks(starts: list[int], n_rows: int, chunk_size: int, per_row: int, ready: int) -> int:
    """How many leading chunks the ``ready`` precomputed obfuscators cover (the last chunk
    may be short: it needs only its own rows' obfuscators)."""
    covered = 0
    for s in starts:
        need = per_row * min(chunk_size, n_rows - s)
        if ready < need:
            break
        ready -= need
        covered += 1
    return covered


async def _send_chunks(
    party: Party,
    crypto: ActiveCrypto,
    cfg: VF2BoostConfig,
    passives: list[str],
    t: int,
    gi: np.ndarray,
    hi: np.ndarray,
) -> None:
    n, size = len(gi), cfg.chunk_size
    starts = list(range(0, n, size))
    ready = crypto.pool.available if crypto.pool is not None else 0
    n_warm = warm_chunks(starts, n, size, crypto.per_row, ready)
    # at most one chunk per executor worker at a time: the executor is first come, first
    # served, and a passive party sharing it (one process) must get its histograms of the
    # first chunks in between, not after every chunk is encrypted
    slots = asyncio.Semaphore(party.capacity)

    async def cold(s: int) -> EncGH:
        async with slots:
            return await party.offload(
                encrypt_gh,
                crypto.enc_key,
                gi[s : s + size],
                hi[s : s + size],
                crypto.plan,
                crypto.layout,
                cfg.obfuscation,
                cfg.reorder,
            )

    async with task_group() as jobs, AsyncExitStack() as opened:
        pending = [jobs.create_task(cold(s)) for s in starts[n_warm:]]
        streams = [
            await opened.enter_async_context(party.stream(name, Gradients.tag(t=t)))
            for name in passives
        ]
        for i, s in enumerate(starts):
            if i < n_warm:
                with party.span("encrypt-warm", tree=t, chunk=i):
                    enc = encrypt_gh(
                        crypto.pk,
                        gi[s : s + size],
                        hi[s : s + size],
                        crypto.plan,
                        crypto.layout,
                        cfg.obfuscation,
                        cfg.reorder,
                        crypto.pool,
                    )
                await asyncio.sleep(0)  # let the wire and peers make progress
            else:
                with party.span("encrypt-wait", tree=t, chunk=i):
                    enc = await pending[i - n_warm]
            wire = Gradients(enc).to_wire()
            for stream in streams:
                await stream.send(wire)
