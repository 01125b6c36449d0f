"""Growing one tree at the active party, layer by layer.

Per layer: announce the open nodes (:class:`~hefl.protocols.vf2boost.messages.Layer`), find
its own best splits from plaintext histograms, optionally announce them as tentative splits
(optimistic splitting: the passive parties build the children's histograms meanwhile), decrypt
and score the passive parties' candidates, pick each node's winner by the shared rule of
:mod:`~hefl.protocols.vf2boost.tree`, tell each passive party the nodes it won, take their
placements, and split. Passive-party splits are known here only by a masked id; their owner
reports which rows go left.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hefl import Party, task_group
from hefl.messages import send
from hefl.protocols.vf2boost.active_setup import ActiveCrypto
from hefl.protocols.vf2boost.active_stream import stream_gh
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.decode import (
    PassiveCandidates,
    Placed,
    decode_layer,
    exact_sum,
    receive_placements,
)
from hefl.protocols.vf2boost.evaluation import Evaluation
from hefl.protocols.vf2boost.messages import (
    Layer,
    Session,
    Spec,
    Split,
    Tentative,
    Win,
    Winner,
    tree_prefixes,
)
from hefl.protocols.vf2boost.model import PartyModel, TreeStructure
from hefl.protocols.vf2boost.reference import party_histogram
from hefl.protocols.vf2boost.sampling import apply_sampling, sample_columns
from hefl.protocols.vf2boost.tree import (
    MIN_GAIN,
    Candidate,
    SplitParams,
    best_position,
    cover,
    decode_position,
    encode_gh,
    go_left,
    leaf_weight,
    loss_change,
    pick,
    pick_winner,
    score_cumulative,
    split_sums,
)


@dataclass
class Node:
    """A node of the tree being grown: its rows, exact sums and (while open) histograms."""

    index: int
    depth: int
    rows: np.ndarray
    G: Any  # an exact int, or one per class (vector leaves)
    H: Any
    hist: tuple[np.ndarray, np.ndarray] | None = None
    parent: Node | None = None
    sibling: Node | None = None


@dataclass
class Training:
    """What every tree of the active party's training needs.

    Attributes:
        party: the active party.
        cfg: the training config.
        crypto: keys, bit plan and obfuscators.
        sessions: each passive party's session, in party-index order.
        bins: this party's binned features (rows × features).
        width: the histogram width (most bins of a feature).
        mask: (features × width × 2) valid candidates (both default directions).
        model: this party's model, filled tree by tree.
        speculated, hits: optimistic splits announced, and how many of them won.
        evaluation: the eval set's margins and metrics (None without an eval set).
    """

    party: Party
    cfg: VF2BoostConfig
    crypto: ActiveCrypto
    sessions: dict[str, Session]
    bins: np.ndarray
    width: int
    mask: np.ndarray
    model: PartyModel
    speculated: int = 0
    hits: int = 0
    evaluation: Evaluation | None = None

    @property
    def passives(self) -> list[str]:
        return list(self.sessions)


@dataclass
class OwnBest:
    """The active party's best split of a node and its cumulative sums (to split by)."""

    candidate: Candidate
    GL: np.ndarray
    HL: np.ndarray


@dataclass
class Choice:
    """A node's winning split: the candidate, and for a passive winner its tied candidate
    ids and their (G_L, H_L) sums (what its placement must add up to)."""

    candidate: Candidate
    tied: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    sums: set[tuple[int, int]] = field(default_factory=set)


async def grow_tree(run: Training, t: int, g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Grow tree ``t`` from its gradients and hessians and add it to the model.

    Returns:
        The tree's output on the training rows.

    Raises:
        ProtocolError: a passive party sent malformed or inconsistent data (named).
        PeerFailed: a passive party failed.
    """
    g, h = apply_sampling(run.cfg, t, g, h)
    gi, hi, g_exp = encode_gh(g, h, run.cfg.resolved_frac_bits)
    grower = TreeGrower(run, t, gi, hi, SplitParams.of(run.cfg, g_exp))
    async with task_group() as tree_tasks:  # the g‖h stream runs while the layers grow
        grower.sender = tree_tasks.create_task(
            stream_gh(run.party, run.crypto, run.cfg, run.passives, t, gi, hi)
        )
        structure = await grower.grow()
    run.party.retire(*tree_prefixes(t))  # a replayed message of tree t is refused from now
    run.model.trees.append(structure)
    return grower.out


class TreeGrower:
    """One tree of the active party, grown layer by layer (see the module docs)."""

    def __init__(
        self, run: Training, t: int, gi: np.ndarray, hi: np.ndarray, params: SplitParams
    ) -> None:
        self.run, self.t, self.gi, self.hi, self.params = run, t, gi, hi, params
        columns = sample_columns(run.cfg, t, 0, run.mask.shape[0])
        self.mask = run.mask & columns[:, None, None]
        n = len(gi)
        self.layer = [Node(0, 0, np.arange(n), exact_sum(gi), exact_sum(hi))]
        self.nodes: list[dict[str, int]] = [{}]
        self.leaf_values: list[float] = []
        self.gains: dict[int, float] = {}  # node -> loss change of its split (importances)
        self.hess: dict[int, int] = {}  # node -> exact hessian sum (its cover)
        self.splits: list[Split] = []  # the last layer's, announced with the next layer
        # the tree's output on the training rows, leaf by leaf (a column per class with vector
        # leaves: gi is then rows × K)
        self.out = np.zeros(gi.shape)
        self.sender: asyncio.Task[None] | None = None  # the g‖h stream

    async def grow(self) -> TreeStructure:
        """Grow every layer; returns the tree's structure with its leaf values."""
        d = 0
        while await self.grow_layer(d):
            d += 1
        covers = [0.0] * len(self.nodes)
        for i, H in self.hess.items():
            covers[i] = cover(H, self.params)
        gains = [self.gains.get(i, 0.0) for i in range(len(self.nodes))]
        return TreeStructure(self.nodes, self.leaf_values, gains=gains, covers=covers)

    async def grow_layer(self, d: int) -> bool:
        """Split layer ``d``; False when no node is left open (the tree is done)."""
        run, span = self.run, {"tree": self.t, "layer": d}
        open_nodes = [nd for nd in self.layer if self.splittable(nd)]
        if not open_nodes:
            await self.finish(d)
            return False
        await self.announce(d, [nd.index for nd in open_nodes])
        with run.party.span("own-histograms", **span):
            own = self.own_candidates(open_nodes)
        spec_nodes = await self.speculate(d, open_nodes, own) if run.cfg.optimistic else set()
        if self.sender is not None:
            # the stream ends before any histogram can come: finish it first, so its time is
            # this party's work (not a wait for peers) and its errors surface before any wait
            await self.sender
            self.sender = None
        with run.party.span("decrypt", **span):
            crypto = run.crypto
            theirs = await decode_layer(
                run.party,
                self.params,
                crypto.sk,
                crypto.plan,
                run.sessions,
                (self.t, d),
                open_nodes,
            )
        with run.party.span("score", **span):
            winners = self.score(open_nodes, own, theirs, spec_nodes)
        placed = await self.settle(d, winners)
        self.apply_winners(winners, own, placed)
        return True

    def splittable(self, nd: Node) -> bool:
        """Whether a node can have a valid split at all (skipping it changes nothing: a split
        needs both children's hessian sums >= min_child_weight, hence H >= 2·min_child_weight)."""
        cfg = self.run.cfg
        if nd.depth >= cfg.max_depth or len(nd.rows) < 2:
            return False
        if np.ndim(nd.H):  # vector leaves: XGBoost's multi-target rule has no such bound
            return True
        h = nd.H / (1 << cfg.resolved_frac_bits)
        return h * (1 + 1e-12) >= 2 * cfg.min_child_weight

    async def announce(self, d: int, open_ids: list[int]) -> None:
        """Tell every passive party the last layer's splits and the nodes open now."""
        msg = Layer(splits=self.splits, open=open_ids)
        for name in self.run.passives:
            await send(self.run.party, name, msg, t=self.t, d=d)

    async def finish(self, d: int) -> None:
        """Make the last layer's nodes leaves and send the tree's structure."""
        for nd in self.layer:
            self.hess[nd.index] = nd.H
            self.make_leaf(nd)
        msg = Layer(splits=self.splits, open=[], nodes=self.nodes)
        for name in self.run.passives:
            await send(self.run.party, name, msg, t=self.t, d=d)

    def own_candidates(self, open_nodes: list[Node]) -> dict[int, OwnBest]:
        """This party's best split of every open node, from plaintext histograms."""
        self.own_histograms(open_nodes)
        out = {}
        for nd in open_nodes:
            assert nd.hist is not None  # own_histograms filled every open node
            GL, HL = split_sums(*nd.hist, self.run.model.binner.categorical)
            gains = score_cumulative(GL, HL, nd.G, nd.H, self.params)
            gain, pos = best_position(np.where(self.mask, gains, -np.inf))
            out[nd.index] = OwnBest(Candidate(gain, 0, pos), GL, HL)
        return out

    def own_histograms(self, open_nodes: list[Node]) -> None:
        """Plaintext histograms of this party's features, with sibling subtraction."""
        bins, width, gi, hi = self.run.bins, self.run.width, self.gi, self.hi
        opened = {nd.index for nd in open_nodes}
        for nd in open_nodes:
            if nd.hist is not None:
                continue
            sib, parent = nd.sibling, nd.parent
            if (
                sib is not None
                and sib.index in opened
                and parent is not None
                and parent.hist is not None
            ):
                small, big = (nd, sib) if len(nd.rows) <= len(sib.rows) else (sib, nd)
                small.hist = party_histogram(bins, width, small.rows, gi, hi)
                big.hist = (parent.hist[0] - small.hist[0], parent.hist[1] - small.hist[1])
            else:
                nd.hist = party_histogram(bins, width, nd.rows, gi, hi)

    async def speculate(self, d: int, open_nodes: list[Node], own: dict[int, OwnBest]) -> set[int]:
        """Optimistic splitting: assume this party's best split wins and tell the passive
        parties now, so they build the children's histograms while this party waits for,
        decrypts and scores theirs. A miss is discarded. Returns the nodes announced."""
        run = self.run
        tentative = []
        for nd in open_nodes:
            cand = own[nd.index].candidate
            useful = nd.depth + 1 < run.cfg.max_depth  # the children get split
            if useful and cand.position >= 0 and cand.gain > MIN_GAIN:
                f, k, default_left = decode_position(cand.position, run.width)
                cat = bool(run.model.binner.categorical[f])
                left = go_left(run.bins[nd.rows, f], k, default_left, cat)
                tentative.append(Tentative(nd.index, np.packbits(left)))
        for name in run.passives:
            await send(run.party, name, Spec(tentative), t=self.t, d=d)
        return {s.node for s in tentative}

    def score(
        self,
        open_nodes: list[Node],
        own: dict[int, OwnBest],
        theirs: dict[str, dict[int, PassiveCandidates]],
        spec_nodes: set[int],
    ) -> dict[int, Choice]:
        """Each open node's winner across all parties (none: the node becomes a leaf)."""
        run = self.run
        winners = {}
        for nd in open_nodes:
            cands = [own[nd.index].candidate]
            choices = {}
            for p, name in enumerate(run.passives, start=1):
                cand, tied, sums = theirs[name][nd.index].best(p)
                cands.append(cand)
                choices[p] = Choice(cand, tied, sums)
            win = pick_winner(cands)
            if win is not None:
                winners[nd.index] = choices.get(win.party, Choice(win))
            if nd.index in spec_nodes:
                run.speculated += 1
                run.hits += int(win is not None and win.party == 0)
        return winners

    async def settle(self, d: int, winners: dict[int, Choice]) -> dict[int, Placed]:
        """Tell every passive party the nodes it won and take its checked placements."""
        run = self.run
        won = {}
        for p, name in enumerate(run.passives, start=1):
            mine = {i: c for i, c in winners.items() if c.candidate.party == p}
            msg = Win([Winner(node=i, ids=c.tied) for i, c in mine.items()])
            await send(run.party, name, msg, t=self.t, d=d)
            won[name] = {i: c.sums for i, c in mine.items()}
        nodes = {nd.index: nd for nd in self.layer}
        return await receive_placements(run.party, (self.t, d), won, nodes, self.gi, self.hi)

    def apply_winners(
        self, winners: dict[int, Choice], own: dict[int, OwnBest], placed: dict[int, Placed]
    ) -> None:
        """Split every node that has a winner, make the others leaves; the children are the
        next layer."""
        next_layer: list[Node] = []
        self.splits = []
        for nd in self.layer:
            choice = winners.get(nd.index)
            self.hess[nd.index] = nd.H
            if choice is None:
                self.make_leaf(nd)
                continue
            self.gains[nd.index] = loss_change(choice.candidate.gain, self.params)
            if choice.candidate.party == 0:
                next_layer.extend(self.split_own(nd, choice.candidate, own[nd.index]))
            else:
                p = placed[nd.index]
                next_layer.extend(
                    self.split(nd, choice.candidate.party, p.split, p.left, p.GL, p.HL)
                )
        for nd in self.layer:  # the parents' histograms are not needed any more
            if nd.parent is not None:
                nd.parent.hist = None
        self.layer = next_layer

    def split_own(self, nd: Node, cand: Candidate, best: OwnBest) -> list[Node]:
        """Split ``nd`` by this party's candidate, recorded in its own split table."""
        model = self.run.model
        f, k, default_left = decode_position(cand.position, self.run.width)
        split_id = len(model.splits)
        model.splits[split_id] = (f, k, default_left)
        cat = bool(model.binner.categorical[f])
        left = go_left(self.run.bins[nd.rows, f], k, default_left, cat)
        d = int(default_left)
        return self.split(nd, 0, split_id, left, pick(best.GL, (f, k, d)), pick(best.HL, (f, k, d)))

    def split(
        self, nd: Node, owner: int, split_id: int, left_mask: np.ndarray, GL: Any, HL: Any
    ) -> list[Node]:
        """Record the split of ``nd`` and return its two children."""
        i = len(self.nodes)
        left = Node(i, nd.depth + 1, nd.rows[left_mask], GL, HL, parent=nd)
        right = Node(i + 1, nd.depth + 1, nd.rows[~left_mask], nd.G - GL, nd.H - HL, parent=nd)
        left.sibling, right.sibling = right, left
        self.nodes[nd.index] = {"owner": owner, "split": split_id, "left": i, "right": i + 1}
        self.nodes.extend([{}, {}])
        self.splits.append(Split(nd.index, i, i + 1, np.packbits(left_mask)))
        return [left, right]

    def make_leaf(self, nd: Node) -> None:
        """Make ``nd`` a leaf: its weight, and its rows' output."""
        w = leaf_weight(nd.G, nd.H, self.params)
        self.nodes[nd.index] = {"leaf": len(self.leaf_values)}
        self.leaf_values.append(w)
        self.out[nd.rows] = w
