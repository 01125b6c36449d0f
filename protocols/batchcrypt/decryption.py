"""A client's end of a round: download its part of the aggregate, decrypt it on all cores
and, with shared decryption, swap decrypted slices with the other clients.

With shared decryption each of the k clients downloads and decrypts only slice i of the
aggregate and sends the plaintexts (:class:`DecryptedShare`) straight to every other client;
so the aggregator sends each ciphertext once and every client decrypts 1/k of them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from hefl import Party
from hefl.crypto import CipherVector, PrivateKey, PublicKey
from hefl.errors import ProtocolError
from hefl.protocols.batchcrypt import work
from hefl.protocols.batchcrypt.config import AGGREGATOR
from hefl.protocols.batchcrypt.federation import RoundTiming, chunk_bounds, slices
from hefl.protocols.batchcrypt.messages import DecryptedShare, DownloadChunk, Expect


@dataclass(frozen=True)
class Decryptor:
    """A client's keys and place in the federation, for the decryption steps of its rounds.

    Attributes:
        party: this client's Party.
        pk, sk: the session keys.
        clients: the federation's clients in agreed order.
        chunk_size: ciphertexts per streamed chunk.
        aggregator: the aggregator's party name.
    """

    party: Party
    pk: PublicKey
    sk: PrivateKey
    clients: tuple[str, ...]
    chunk_size: int
    aggregator: str = AGGREGATOR

    async def download(
        self, t: int, lo: int, hi: int, timing: RoundTiming | None = None
    ) -> CipherVector | None:
        """Receive positions lo..hi of round ``t``'s aggregate, checking every chunk (the
        parsing and checking are charged to ``timing.decrypt``).

        Raises:
            ProtocolError: a chunk is malformed or of the wrong length, or too many/few came.
            KeyMismatchError: a chunk is under another key.
        """
        expected = chunk_bounds(lo, hi, self.chunk_size)
        chunks: list[CipherVector] = []
        async for obj in self.party.stream_from(self.aggregator, DownloadChunk.tag(t=t)):
            if len(chunks) == len(expected):
                raise ProtocolError(
                    f"the aggregator sent more than the {len(expected)} aggregate chunks of "
                    f"round {t}"
                )
            a, b = expected[len(chunks)]
            c0 = time.thread_time()
            chunk = DownloadChunk.from_wire(self.aggregator, obj, Expect(self.pk, length=b - a))
            if timing is not None:
                timing.decrypt += time.thread_time() - c0
            chunks.append(chunk.ciphers)
        if len(chunks) != len(expected):
            raise ProtocolError(
                f"the aggregator sent {sum(len(c) for c in chunks)} aggregate ciphertexts for "
                f"round {t}, expected {hi - lo}"
            )
        return CipherVector.concat(chunks) if chunks else None

    async def decrypt(self, cv: CipherVector | None, timing: RoundTiming, phe: bool) -> list[int]:
        """Decrypt ``cv`` on all cores: one piece per worker (phe: the per-value baseline)."""
        if cv is None or len(cv) == 0:
            return []
        pieces = slices(len(cv), max(1, min(self.party.capacity, len(cv))))
        if phe:
            phe_pk, phe_sk = self.pk.to_phe(), self.sk.to_phe()
            raw = [int(c) for c in cv.ciphertexts]
            jobs = [
                self.party.offload(work.phe_decrypt, phe_sk, phe_pk, raw[a:b]) for a, b in pieces
            ]
        else:
            jobs = [self.party.offload(work.decrypt_vector, self.sk, cv[a:b]) for a, b in pieces]
        out: list[int] = []
        for ints, secs in await asyncio.gather(*jobs):
            out.extend(ints)
            timing.decrypt += secs
        return out

    async def swap_shares(
        self, t: int, mine: list[int], parts: list[tuple[int, int]], timing: RoundTiming
    ) -> list[int]:
        """Send my decrypted slice to every other client and assemble all slices in order.

        Args:
            t: the round.
            mine: my slice's signed plaintexts.
            parts: every client's [lo, hi) slice, in client order.
            timing: charged with the encoding and decoding (not the waiting).

        Returns:
            The plaintexts of the whole aggregate.

        Raises:
            ProtocolError: a peer's share is malformed (length, values outside [0, n)).
        """
        me = self.party.name
        others = [c for c in self.clients if c != me]
        t0 = time.thread_time()
        share = DecryptedShare.pack(mine, self.pk).to_wire()
        timing.decode += time.thread_time() - t0
        await self.party.broadcast(DecryptedShare.tag(t=t), share, peers=others)
        raw = await self.party.gather(DecryptedShare.tag(t=t), peers=others)
        t0 = time.thread_time()  # waiting for the peers' shares is transfer, not decode
        out: list[int] = []
        for peer, (lo, hi) in zip(self.clients, parts, strict=True):
            if peer == me:
                out.extend(mine)
                continue
            expect = Expect(self.pk, length=hi - lo)
            out.extend(DecryptedShare.from_wire(peer, raw[peer], expect).values(self.pk))
        timing.decode += time.thread_time() - t0
        return out
