"""The passive party's encrypted histograms and what it keeps of a tree.

Histograms are built with homomorphic additions only, on the executor's processes (features
split across them when ``cfg.workers`` > 1): where both siblings are open, the smaller one
directly and the other as parent − smaller (one subtraction instead of a pass over its rows).
The same rule builds the children of the active party's tentative splits (optimistic
splitting) while the active party scores the layer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from hefl import Party
from hefl.messages import Message
from hefl.protocols.vf2boost.encgh import EncGH, build_histogram
from hefl.protocols.vf2boost.messages import Layer, Spec, Split, Tentative, refuse


def _hist_job(enc: EncGH, bins: np.ndarray, width: int) -> EncGH:
    return build_histogram(enc, bins, width)


@dataclass
class TreeState:
    """What a passive party keeps during one tree.

    Attributes:
        rows: the rows of each node of the current layer.
        parent, sibling: the last splits' children -> their parent / sibling.
        hists: encrypted histograms by node (parents kept until their children are built).
        lookup: per open node, its candidates' random ids -> positions f·width + k.
    """

    rows: dict[int, np.ndarray]
    parent: dict[int, int] = field(default_factory=dict)
    sibling: dict[int, int] = field(default_factory=dict)
    hists: dict[int, EncGH] = field(default_factory=dict)
    lookup: dict[int, dict[int, int]] = field(default_factory=dict)

    def left_mask(
        self, sender: str, kind: type[Message], field: str, node: int, bits: np.ndarray
    ) -> np.ndarray:
        """The mask ``bits`` (rows going left) over the rows of ``node``, checked.

        Raises:
            ProtocolError: ``node`` is not a node of this layer, or ``bits`` has the wrong
                length (names the sender, the message and the field).
        """
        if node not in self.rows:
            raise refuse(sender, kind, field, f"names node {node}, which is not open")
        rows = self.rows[node]
        if len(bits) != (len(rows) + 7) // 8:
            why = f"holds {len(bits)} mask bytes for the {len(rows)} rows of node {node}"
            raise refuse(sender, kind, field, why)
        return np.unpackbits(bits, count=len(rows)).astype(bool)

    def apply_splits(self, sender: str, splits: list[Split]) -> None:
        """Record the children of the last layer's splits and their rows.

        Raises:
            ProtocolError: a split of an unknown node, or a mask of the wrong length.
        """
        for s in splits:
            mask = self.left_mask(sender, Layer, "splits", s.node, s.bits)
            if s.left in self.rows or s.right in self.rows:
                raise refuse(sender, Layer, "splits", f"numbers node {s.left} twice")
            rows = self.rows.pop(s.node)
            self.rows[s.left], self.rows[s.right] = rows[mask], rows[~mask]
            self.parent[s.left] = self.parent[s.right] = s.node
            self.sibling[s.left], self.sibling[s.right] = s.right, s.left


@dataclass
class Speculated:
    """The children's histograms of one tentative split, reused if it turns out real."""

    bits: np.ndarray
    left: EncGH
    right: EncGH


class Histograms:
    """Builds a passive party's encrypted histograms on the executor.

    Args:
        party: the passive party.
        bins: its binned features (rows × features).
        width: the histogram width (most bins of a feature).
        workers: processes one histogram is split across (by features).
    """

    def __init__(self, party: Party, bins: np.ndarray, width: int, workers: int) -> None:
        self.party, self.bins, self.width, self.workers = party, bins, width, workers

    async def build(self, enc: EncGH, rows: np.ndarray) -> EncGH:
        """The histogram of ``rows`` whose encrypted g‖h is ``enc``."""
        rows_bins = self.bins[rows]
        if self.workers == 1 or rows_bins.shape[1] < 2:
            return await self.party.offload(_hist_job, enc, rows_bins, self.width)
        groups = np.array_split(np.arange(rows_bins.shape[1]), self.workers)
        parts = await asyncio.gather(
            *(
                self.party.offload(_hist_job, enc, rows_bins[:, g], self.width)
                for g in groups
                if len(g)
            )
        )
        return EncGH.concat(list(parts))

    async def layer(self, st: TreeState, open_nodes: list[int], enc_all: EncGH) -> None:
        """Histograms of the open nodes into ``st.hists`` (the smaller sibling directly, the
        other by subtraction); the parents' are dropped."""
        opened = set(open_nodes)
        done = {n for n in open_nodes if n in st.hists}  # the root, or a speculation's
        direct: list[int] = []
        derive: list[tuple[int, int, int]] = []
        for node in open_nodes:
            if node in done:
                continue
            sib, parent = st.sibling.get(node), st.parent.get(node)
            if sib in opened and sib not in done and parent in st.hists:
                assert sib is not None and parent is not None
                small, big = (node, sib) if len(st.rows[node]) <= len(st.rows[sib]) else (sib, node)
                direct.append(small)
                derive.append((big, parent, small))
                done.update((node, sib))
            else:
                direct.append(node)
                done.add(node)
        built = await asyncio.gather(
            *(self.build(enc_all.take(st.rows[n]), st.rows[n]) for n in direct)
        )
        st.hists.update(zip(direct, built, strict=True))
        for big, parent, small in derive:
            st.hists[big] = st.hists[parent] - st.hists[small]
        for node in open_nodes:  # the parents are not needed any more
            st.hists.pop(st.parent.get(node, -1), None)

    async def speculate(
        self, sender: str, st: TreeState, spec: Spec, enc_all: EncGH
    ) -> dict[int, Speculated]:
        """The children's histograms of the active party's tentative splits, built while it
        scores the layer.

        Raises:
            ProtocolError: a tentative split of a node that is not open, or a mask of the
                wrong length (names the sender and the field).
        """
        checked = [(s, self._tentative_mask(sender, st, s)) for s in spec.splits]
        out = {}
        for s, mask in checked:
            rows = st.rows[s.node]
            left_rows, right_rows = rows[mask], rows[~mask]
            small = left_rows if len(left_rows) <= len(right_rows) else right_rows
            h_small = await self.build(enc_all.take(small), small)
            h_big = st.hists[s.node] - h_small
            left, right = (h_small, h_big) if small is left_rows else (h_big, h_small)
            out[s.node] = Speculated(s.bits, left, right)
        return out

    @staticmethod
    def _tentative_mask(sender: str, st: TreeState, s: Tentative) -> np.ndarray:
        mask = st.left_mask(sender, Spec, "splits", s.node, s.bits)
        if s.node not in st.hists:
            raise refuse(sender, Spec, "splits", f"names node {s.node}, which is not open")
        return mask
