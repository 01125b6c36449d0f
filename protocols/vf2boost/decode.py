"""The active party's checks of what passive parties send: their histograms, decrypted into
scored candidates, and their placements of the splits they won.

Each node's histograms come in their own :class:`~hefl.protocols.vf2boost.messages.Hist`
message and are decrypted (on the executor) as soon as they arrive, while the passive party
still seals the next node. A decrypted histogram must be one an honest party could have sent:
its per-feature totals equal the node's gradient sums, its sums are within what the node's
rows can add up to. A placement must send left rows whose sums are exactly the winning
candidate's, so an owner cannot misreport them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hefl import Party, task_group
from hefl.crypto import PrivateKey
from hefl.errors import HeflError, KeyMismatchError, ProtocolError
from hefl.messages import gather
from hefl.protocols.vf2boost.budget import BitPlan
from hefl.protocols.vf2boost.encgh import EncGH, decrypt_entries
from hefl.protocols.vf2boost.messages import Hist, Place, Session, refuse
from hefl.protocols.vf2boost.tree import Candidate, SplitParams, node_sums, score_cumulative

_TAMPERED = "the data was tampered with or encrypted under another key"


class OpenNode(Protocol):
    """What decoding needs of a node: its index, rows and exact gradient sums."""

    index: int
    rows: np.ndarray
    G: Any
    H: Any


@dataclass(frozen=True)
class PassiveCandidates:
    """One passive party's decrypted candidates at one node.

    Attributes:
        gains: the candidates' gains (−inf where invalid).
        ids: their random ids (only the owner knows which feature and bin each is).
        GL, HL: their exact left sums (object arrays of Python ints).
    """

    gains: np.ndarray
    ids: np.ndarray
    GL: np.ndarray
    HL: np.ndarray

    def best(self, party_index: int) -> tuple[Candidate, np.ndarray, set[tuple[Any, Any]]]:
        """The best candidate, the ids tied at its gain and their (G_L, H_L) sums (per class
        tuples with vector leaves)."""
        best = float(self.gains.max()) if self.gains.size else -np.inf
        tied = self.gains == best if np.isfinite(best) else np.zeros(len(self.ids), dtype=bool)
        sums = {(sum_key(self.GL[..., i]), sum_key(self.HL[..., i])) for i in np.flatnonzero(tied)}
        return Candidate(best, party_index, 0 if tied.any() else -1), self.ids[tied], sums


def sum_key(v: Any) -> Any:
    """Exact sums as a hashable, comparable key: an int, or a tuple of ints (per class)."""
    return int(v) if np.ndim(v) == 0 else tuple(int(x) for x in v)


def exact_sum(v: np.ndarray) -> Any:
    """The exact sum of int64 encodings, as a Python int (one per class for (rows × K))."""
    return node_sums(v)


async def receive_hist(
    party: Party, name: str, session: Session, t: int, d: int, node: int
) -> Hist:
    """Receive and check one node's :class:`Hist` from passive party ``name``.

    Raises:
        ProtocolError: malformed, or its ciphertexts are under another key (named).
    """
    raw = await party.recv(name, Hist.tag(t=t, d=d, node=node))
    try:
        return Hist.from_wire(name, raw, session)
    except KeyMismatchError as exc:
        raise ProtocolError(
            f"party {name!r} sent histograms that do not decrypt to valid sums ({exc}); {_TAMPERED}"
        ) from exc


async def _decrypt(
    party: Party, name: str, sk: PrivateKey, enc: EncGH, plan: BitPlan, count: int
) -> tuple[list[int], list[int]]:
    try:
        return await party.offload(decrypt_entries, sk, enc, plan, count)
    except (HeflError, ValueError, TypeError) as exc:
        raise ProtocolError(
            f"party {name!r} sent histograms that do not decrypt to valid sums ({exc}); {_TAMPERED}"
        ) from None


async def decode_layer(
    party: Party,
    params: SplitParams,
    sk: PrivateKey,
    plan: BitPlan,
    sessions: dict[str, Session],
    ids: tuple[int, int],
    open_nodes: Sequence[OpenNode],
) -> dict[str, dict[int, PassiveCandidates]]:
    """Receive, decrypt and check every passive party's candidates of the open nodes.

    Args:
        party: the active party.
        params: the tree's scales and regularization.
        sk: the private key.
        plan: the bit plan.
        sessions: each passive party's session (its key, layout and feature count).
        ids: the tree and layer ``(t, d)``.
        open_nodes: the layer's open nodes.

    Returns:
        Per passive party and node index, its scored candidates.

    Raises:
        ProtocolError: a passive party sent malformed, undecryptable or impossible
            histograms (named).
    """
    t, d = ids
    jobs = []
    async with task_group() as decrypting:
        for name, session in sessions.items():
            for nd in open_nodes:
                hist = await receive_hist(party, name, session, t, d, nd.index)
                count = len(hist.ids) + session.n_features
                job = _decrypt(party, name, sk, hist.enc, plan, count)
                jobs.append((name, nd, hist.ids, decrypting.create_task(job)))
    out: dict[str, dict[int, PassiveCandidates]] = {name: {} for name in sessions}
    for name, nd, cand_ids, decrypted in jobs:
        G, H = decrypted.result()
        out[name][nd.index] = score_sums(name, params, nd, cand_ids, G, H)
    return out


def score_sums(
    name: str, params: SplitParams, nd: OpenNode, ids: np.ndarray, G: list[int], H: list[int]
) -> PassiveCandidates:
    """Check one node's decrypted sums and score its candidates.

    Raises:
        ProtocolError: totals that differ from the node's sums, or sums its rows cannot reach.
    """
    m = len(ids)
    node_g, node_h = sum_key(nd.G), sum_key(nd.H)
    if any(sum_key(v) != node_g for v in G[m:]) or any(sum_key(v) != node_h for v in H[m:]):
        raise ProtocolError(
            f"party {name!r} sent histograms whose totals differ from the node's gradient "
            f"sums; {_TAMPERED}"
        )
    GL = np.array(G[:m], dtype=object).T  # (classes × candidates) with vector leaves
    HL = np.array(H[:m], dtype=object).T
    bound = len(nd.rows) << params.frac_bits  # |g_int| <= 2^frac_bits per row
    top = np.asarray(nd.H, dtype=object).reshape(-1, *([1] * (HL.ndim - 1)))
    if m and ((HL < 0).any() or (top < HL).any() or (np.abs(GL) > bound).any()):
        raise ProtocolError(f"party {name!r} sent impossible gradient sums; {_TAMPERED}")
    gains = score_cumulative(GL, HL, nd.G, nd.H, params)
    return PassiveCandidates(gains, ids, GL, HL)


@dataclass(frozen=True)
class Placed:
    """A passive party's checked placement of a node it won."""

    split: int
    left: np.ndarray  # bool mask over the node's rows
    GL: Any  # an int, or one per class (vector leaves)
    HL: Any


async def receive_placements(
    party: Party,
    ids: tuple[int, int],
    won: dict[str, dict[int, set[tuple[Any, Any]]]],
    nodes: Mapping[int, OpenNode],
    gi: np.ndarray,
    hi: np.ndarray,
) -> dict[int, Placed]:
    """Receive and check the owners' placements of the nodes they won.

    Args:
        party: the active party.
        ids: the tree and layer ``(t, d)``.
        won: per passive party, its won nodes and the (G_L, H_L) sums of its tied winners.
        nodes: the layer's nodes by index.
        gi, hi: the tree's g and h encodings.

    Raises:
        ProtocolError: a placement of the wrong nodes, of the wrong length, or whose left rows
            do not add up to the winning split's sums (names the party and the field).
    """
    t, d = ids
    placed = await gather(party, Place, peers=list(won), t=t, d=d)
    out: dict[int, Placed] = {}
    for name, msg in placed.items():
        got = sorted(p.node for p in msg.placements)
        if got != sorted(won[name]):
            why = f"places nodes {got}, expected {sorted(won[name])}"
            raise refuse(name, Place, "placements", why)
        for p in msg.placements:
            nd = nodes[p.node]
            if len(p.bits) != (len(nd.rows) + 7) // 8:
                why = f"holds {len(p.bits)} bytes for the {len(nd.rows)} rows of node {p.node}"
                raise refuse(name, Place, "bits", why)
            left = np.unpackbits(p.bits, count=len(nd.rows)).astype(bool)
            GL, HL = exact_sum(gi[nd.rows[left]]), exact_sum(hi[nd.rows[left]])
            if (sum_key(GL), sum_key(HL)) not in won[name][p.node]:
                why = f"of node {p.node} do not match the party's winning split"
                raise refuse(name, Place, "bits", why)
            out[p.node] = Placed(p.split, left, GL, HL)
    return out


__all__ = [
    "PassiveCandidates",
    "Placed",
    "decode_layer",
    "exact_sum",
    "receive_hist",
    "receive_placements",
    "score_sums",
]
