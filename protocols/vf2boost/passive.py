"""The passive party's role: features only, no labels, no private key.

Per tree it receives the encrypted g‖h (chunk by chunk with ``blaster``, already adding each
chunk into the root histogram), and per layer it builds encrypted histograms of the open nodes
with homomorphic additions only (:mod:`~hefl.protocols.vf2boost.passive_hist`), turns them into
cumulative sums, shuffles the candidates under fresh random ids (a per-node lookup table that
never leaves this party), Horner-packs and re-randomizes them, and sends them to the active
party. When one of its candidates wins, only this party knows the feature and threshold: it
records the split and tells the active party which rows go left.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import os
import secrets
from typing import Any

import numpy as np

from hefl import Party, task_group
from hefl.crypto import PublicKey
from hefl.errors import ConfigError, KeyMismatchError, ProtocolError
from hefl.messages import recv, send
from hefl.protocols.vf2boost.binning import MISSING_BIN, Binner, check_features
from hefl.protocols.vf2boost.budget import BitPlan
from hefl.protocols.vf2boost.checkpoint import TreeCheckpoint
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.encgh import EncGH, cumulative_entries, layout_of, seal_entries
from hefl.protocols.vf2boost.evaluation import (
    cut,
    eval_digest,
    passive_round,
    restore_verdict,
    verdict_state,
)
from hefl.protocols.vf2boost.frame import values_of
from hefl.protocols.vf2boost.messages import (
    Gradients,
    Hello,
    Hist,
    Layer,
    Place,
    Placement,
    Session,
    Setup,
    Spec,
    Win,
    refuse,
    tree_prefixes,
)
from hefl.protocols.vf2boost.model import PartyModel, TreeStructure
from hefl.protocols.vf2boost.objectives import training_plan
from hefl.protocols.vf2boost.passive_hist import Speculated, TreeState
from hefl.protocols.vf2boost.sampling import sample_columns
from hefl.protocols.vf2boost.shards import histograms_for, start_tree
from hefl.protocols.vf2boost.tree import candidate_mask, decode_position, go_left

_sysrand = secrets.SystemRandom()


def _warm_job(pk: PublicKey, method: str) -> None:
    # builds this worker process's table for re-randomization (cached per process and key)
    pk.obfuscators(1, method=method)


def _seal_job(
    hist: EncGH,
    bins: tuple[np.ndarray, np.ndarray, int],
    order: np.ndarray,
    plan: BitPlan,
    method: str,
) -> EncGH:
    n_bins, categorical, width = bins
    return seal_entries(cumulative_entries(hist, n_bins, width, order, categorical), plan, method)


async def passive_party(
    party: Party,
    X: np.ndarray,
    cfg: VF2BoostConfig,
    *,
    active: str = "active",
    X_eval: Any = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run one passive party of a VF2Boost training.

    Args:
        party: the runtime's Party.
        X: this party's features (rows aligned with the active party's), NaN = missing.
        cfg: the training config (must equal the active party's).
        active: the active party's name.
        X_eval: this party's columns of the eval set (None: no eval set), split like ``X``.
        checkpoint_dir: write this party's share after every tree into
            ``<checkpoint_dir>/<party name>`` (see :mod:`~hefl.protocols.vf2boost.checkpoint`).
        resume: continue the checkpoint found there, from the last tree every party holds
            (with an eval set, also the verdict of its last whole round).

    Returns:
        A dict with ``model`` (this party's PartyModel as JSON) and ``statistics``
        (``party.statistics()``).

    Raises:
        ConfigError: invalid features, a config different from the active party's, or a
            checkpoint of another training.
        ProtocolError: the active party sent something malformed (names it and the field).
        PeerFailed: another party failed.
    """
    who = f"party {party.name!r}"
    X = check_features(X, who=who)
    cfg = cfg.resolve(X.shape[0])  # frac_bits="auto" -> the same int at every party
    role = PassiveParty(party, X, cfg, active)
    if X_eval is not None:
        role.X_eval = check_features(X_eval, who=f"{who} eval set")
        if role.X_eval.shape[1] != role.X.shape[1]:
            raise ConfigError(
                f"{who}: the eval set has {role.X_eval.shape[1]} columns but the training data "
                f"{role.X.shape[1]}; the eval set must be split by columns like the training data"
            )
    everyone = [party.name, *party.peers]
    ckpt = TreeCheckpoint.for_passive(
        checkpoint_dir, resume, party.name, everyone, active, cfg, values_of(role.X, who)
    )
    await role.setup()
    start = await ckpt.resume_passive(party, active, role.model, role.session.key)
    async with task_group() as background:
        if cfg.obfuscation != "rn":
            # build the re-randomization table while the first gradients arrive (this party
            # mostly waits then) rather than at the first seal, where the active party waits
            warm = party.offload(_warm_job, role.session.key, cfg.obfuscation)
            role.warm = background.create_task(warm)
        await role.train(start, ckpt)
    return {"model": role.model.to_json(), "statistics": party.statistics()}


class PassiveParty:
    """One passive party's training, step by step (see the module docs).

    Args:
        party: the runtime's Party.
        X: this party's checked features.
        cfg: the training config.
        active: the active party's name.
    """

    plan: BitPlan  # set by setup()
    session: Session  # set by setup(): the training's key and layout

    def __init__(self, party: Party, X: np.ndarray, cfg: VF2BoostConfig, active: str) -> None:
        self.party, self.X, self.cfg, self.active = party, X, cfg, active
        binner = Binner.fit(X, cfg.max_bin, who=party.name)
        self.bins = binner.transform(X)
        self.n_bins = binner.n_bins
        self.width = int(self.n_bins.max()) if binner.n_features else 1
        has_missing = (self.bins == MISSING_BIN).any(axis=0)
        self.categorical = binner.categorical
        self.mask = candidate_mask(self.n_bins, self.width, has_missing, self.categorical)
        self.valid = np.flatnonzero(self.mask.ravel())  # this tree's candidates
        self.model = PartyModel(index=0, name=party.name, binner=binner)
        self.histograms = histograms_for(party, self.bins, self.width, max(1, cfg.workers or 1))
        self.warm: asyncio.Task[None] | None = None  # the re-randomization warm-up
        self.X_eval: Any = None  # this party's eval columns, if any

    async def setup(self) -> None:
        """Greet the active party and take the training's key, this party's index and plan.

        Raises:
            ConfigError: the active party has another row count.
        """
        n_rows, cfg = self.X.shape[0], self.cfg
        n_eval = 0 if self.X_eval is None else int(self.X_eval.shape[0])
        hello = Hello(n_rows, self.X.shape[1], cfg.to_dict(), n_eval)
        await send(self.party, self.active, hello)
        setup = await recv(self.party, self.active, Setup)
        if setup.n_rows != n_rows:
            raise ConfigError(
                f"party {self.party.name!r} has {n_rows} rows, {self.active!r} has {setup.n_rows}"
            )
        pk = setup.public_key
        self.plan = training_plan(cfg, n_rows, pk.n_bits)
        self.model.index = setup.index
        chunk = cfg.chunk_size if cfg.blaster else n_rows
        self.session = Session(
            key=pk,
            layout=layout_of(cfg.pack_gh, cfg.encoding),
            reorder=cfg.reorder,
            max_rows=min(chunk, n_rows),
            classes=self.plan.classes,
        )

    async def train(self, start: int, ckpt: TreeCheckpoint) -> None:
        """Every round's trees from tree ``start`` on (the earlier ones restored from the
        checkpoint, each new one saved there), each round evaluated when there is an eval set
        (and cut at the best round with early stopping)."""
        per_round = self.cfg.n_trees // self.cfg.n_estimators
        best, first, digest = None, start // per_round, ""
        if self.X_eval is not None:
            digest = eval_digest(values_of(self.X_eval, f"party {self.party.name!r} eval set"))
            rounds, state, where = ckpt.round_state(per_round)
            if rounds:  # resumed: the verdict of the last whole round kept
                verdict = restore_verdict(state, rounds, digest, where)
                best, first = verdict.best, self.cfg.n_estimators if verdict.stop else first
        for r in range(first, self.cfg.n_estimators):
            for t in range(max(start, r * per_round), (r + 1) * per_round - 1):
                await self.grow_tree(t)
                await ckpt.save(t, self.model)
            await self.grow_tree((r + 1) * per_round - 1)
            if self.X_eval is None:
                await ckpt.save((r + 1) * per_round - 1, self.model)
                continue
            verdict = await passive_round(
                self.party, self.model, self.X_eval, self.active, r, per_round
            )
            await ckpt.save(
                (r + 1) * per_round - 1, self.model, None, verdict_state(verdict, digest)
            )
            best = verdict.best
            if verdict.stop:
                break
        if best is not None and self.cfg.early_stopping_rounds is not None:
            cut(self.model, best + 1, per_round)

    async def grow_tree(self, t: int) -> None:
        """Take part in tree ``t``: its gradients, then every layer."""
        st = TreeState(rows={0: np.arange(self.X.shape[0])})
        await start_tree(self.histograms)  # row shards placed on a Dask cluster's workers
        columns = sample_columns(self.cfg, t, self.model.index, self.X.shape[1])
        self.valid = np.flatnonzero((self.mask & columns[:, None, None]).ravel())
        async with task_group() as tree_tasks:
            enc_all = await self.receive_gh(t, st)
            spec: asyncio.Task[dict[int, Speculated]] | None = None
            for d in range(self.cfg.max_depth + 1):
                msg = await recv(self.party, self.active, Layer, t=t, d=d)
                if spec is not None:
                    self.reuse_speculation(st, msg, await spec)
                st.apply_splits(self.active, msg.splits)
                if msg.nodes is not None:
                    self.model.trees.append(TreeStructure(nodes=msg.nodes))
                    break
                if d == self.cfg.max_depth:
                    raise refuse(self.active, Layer, "open", "opens nodes below max_depth")
                await self.layer_step(t, d, st, msg.open, enc_all)
                spec = await self.start_speculation(t, d, st, enc_all, tree_tasks)
                await self.place(t, d, st)
        self.party.retire(*tree_prefixes(t))  # a replayed message of tree t is refused from now

    def _parse_gh(self, obj: Any) -> EncGH:
        try:
            return Gradients.from_wire(self.active, obj, self.session).enc
        except KeyMismatchError as exc:
            raise ProtocolError(f"bad encrypted gradients from {self.active!r}: {exc}") from exc

    async def receive_gh(self, t: int, st: TreeState) -> EncGH:
        """Tree ``t``'s encrypted g‖h; with ``blaster`` the root histogram is summed chunk by
        chunk as they arrive (a sum needs no order) into ``st.hists[0]``.

        Raises:
            ProtocolError: malformed chunks, or more or fewer rows than the training's.
        """
        n_rows = self.X.shape[0]
        with self.party.span("receive-gh", tree=t):
            if not self.cfg.blaster:
                enc = self._parse_gh(await self.party.recv(self.active, Gradients.tag(t=t)))
                if len(enc) != n_rows:
                    why = f"holds {len(enc)} rows, expected {n_rows}"
                    raise refuse(self.active, Gradients, "enc", why)
                return enc
            pieces, roots = await self._receive_chunks(t)
            received = sum(len(p) for p in pieces)
            if received != n_rows:
                why = f"streamed {received} rows, expected {n_rows}"
                raise refuse(self.active, Gradients, "enc", why)
            st.hists[0] = functools.reduce(operator.add, roots)
            return EncGH.concat(pieces)

    async def _receive_chunks(self, t: int) -> tuple[list[EncGH], list[EncGH]]:
        """The streamed chunks, and the histogram of each (built as the next ones arrive)."""
        n_rows = self.X.shape[0]
        pieces: list[EncGH] = []
        received = 0
        async with task_group() as summing:
            roots = []
            async for chunk in self.party.stream_from(self.active, Gradients.tag(t=t)):
                enc = self._parse_gh(chunk)
                if received + len(enc) > n_rows:
                    why = f"brings the stream to more than the training's {n_rows} rows"
                    raise refuse(self.active, Gradients, "enc", why)
                rows = np.arange(received, received + len(enc))
                roots.append(summing.create_task(self.histograms.build(enc, rows)))
                pieces.append(enc)
                received += len(enc)
        return pieces, [r.result() for r in roots]

    def reuse_speculation(self, st: TreeState, msg: Layer, spec: dict[int, Speculated]) -> None:
        """Keep the speculative children whose partition turned out to be the real one (a
        missed speculation's histograms are dropped)."""
        for s in msg.splits:
            got = spec.get(s.node)
            if got is not None and np.array_equal(got.bits, s.bits):
                st.hists[s.left], st.hists[s.right] = got.left, got.right

    async def layer_step(
        self, t: int, d: int, st: TreeState, open_nodes: list[int], enc_all: EncGH
    ) -> None:
        """Build the open nodes' histograms, then seal and send each node's candidates."""
        for node in open_nodes:
            if node not in st.rows:
                raise refuse(self.active, Layer, "open", f"names node {node}, which is not open")
        with self.party.span("histograms", tree=t, layer=d):
            await self.histograms.layer(st, open_nodes, enc_all)
        if self.warm is not None:
            await self.warm
            self.warm = None
        with self.party.span("seal", tree=t, layer=d):
            await self.seal(t, d, st, open_nodes)

    async def seal(self, t: int, d: int, st: TreeState, open_nodes: list[int]) -> None:
        """Seal every open node's candidates on the executor and send each as it is ready:
        the active party decrypts one node while this party seals the next."""
        async with task_group() as sealing:
            jobs = []
            for node in open_nodes:
                order = _shuffled(self.valid)  # hides which candidate is which feature and bin
                ids = _fresh_ids(len(order))
                st.lookup[node] = dict(zip(ids.tolist(), order.tolist(), strict=True))
                job = self.party.offload(
                    _seal_job,
                    st.hists[node],
                    (self.n_bins, self.categorical, self.width),
                    order,
                    self.plan,
                    self.cfg.obfuscation,
                )
                jobs.append((node, ids, sealing.create_task(job)))
            for node, ids, sealed in jobs:
                hist = Hist(ids=ids, enc=await sealed)
                await send(self.party, self.active, hist, t=t, d=d, node=node)

    async def start_speculation(
        self, t: int, d: int, st: TreeState, enc_all: EncGH, tasks: asyncio.TaskGroup
    ) -> asyncio.Task[dict[int, Speculated]] | None:
        """With ``optimistic``, take the tentative splits and build their children's
        histograms in the background (reused at the next layer if they are the real ones)."""
        if not self.cfg.optimistic:
            return None
        spec = await recv(self.party, self.active, Spec, t=t, d=d)
        return tasks.create_task(self.histograms.speculate(self.active, st, spec, enc_all))

    async def place(self, t: int, d: int, st: TreeState) -> None:
        """Record the splits this party won and tell the active party where their rows go.

        Raises:
            ProtocolError: a won node that is not open, or a candidate id this party never
                sent for it.
        """
        win = await recv(self.party, self.active, Win, t=t, d=d)
        placements = []
        for w in win.winners:
            table = st.lookup.get(w.node)
            if table is None or w.node not in st.rows:
                raise refuse(self.active, Win, "winners", f"names node {w.node}, which is not open")
            if any(int(i) not in table for i in w.ids):
                raise refuse(self.active, Win, "winners", "names a split id this party never sent")
            pos = min(table[int(i)] for i in w.ids)  # the tie rule: first (feature, bin, side)
            f, k, default_left = decode_position(pos, self.width)
            split_id = len(self.model.splits)
            self.model.splits[split_id] = (f, k, default_left)
            cat = bool(self.categorical[f])
            left = go_left(self.bins[st.rows[w.node], f], k, default_left, cat)
            placements.append(Placement(node=w.node, split=split_id, bits=np.packbits(left)))
        await send(self.party, self.active, Place(placements), t=t, d=d)


def _fresh_ids(count: int) -> np.ndarray:
    """``count`` distinct random 62-bit ids from the OS CSPRNG, in random order."""
    ids: set[int] = set()
    while len(ids) < count:
        ids.add(secrets.randbits(62))
    return _shuffled(np.array(sorted(ids), dtype=np.int64))


def _shuffled(a: np.ndarray) -> np.ndarray:
    """A copy of the 1-D array ``a`` in a uniformly random order drawn from the OS CSPRNG
    (numpy's generators are not for secrets; ``random.shuffle`` takes a list, not an array)."""
    perm = list(range(len(a)))
    _sysrand.shuffle(perm)
    return a[perm]
