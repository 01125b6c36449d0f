"""The passive party's role: features only, no labels, no private key.

Per tree it receives the encrypted g/h (chunk by chunk with ``blaster``, already adding each
chunk into the root histogram), and per layer it builds encrypted histograms of the open nodes
with homomorphic additions only (the smaller sibling directly, the other as parent − sibling),
turns them into cumulative sums, shuffles the candidates under fresh random ids (a per-node
lookup table that never leaves this party), Horner-packs and re-randomizes them, and sends
them to the active party. When one of its candidates wins, only this party knows the feature
and threshold: it records the split and tells the active party which rows go left.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import numpy as np

from hefl.errors import ConfigError, HeflError, ProtocolError
from hefl.protocols.vf2boost import tags
from hefl.protocols.vf2boost.background import discard
from hefl.protocols.vf2boost.binning import Binner, check_features
from hefl.protocols.vf2boost.budget import plan_bits
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.encgh import (
    EncGH,
    build_histogram,
    cumulative_entries,
    seal_entries,
)
from hefl.protocols.vf2boost.model import PartyModel, TreeStructure
from hefl.protocols.vf2boost.tree import candidate_mask

_sysrand = secrets.SystemRandom()


def _hist_job(enc: EncGH, bins: np.ndarray, width: int) -> EncGH:
    return build_histogram(enc, bins, width)


def _warm_job(pk: Any, method: str) -> None:
    # builds this worker process's table for re-randomization (cached per process and key)
    pk.obfuscators(1, method=method)


def _seal_job(hist: EncGH, n_bins: np.ndarray, width: int, order: np.ndarray, plan, method: str):
    return seal_entries(cumulative_entries(hist, n_bins, width, order), plan, method).to_wire()


class _PassiveState:
    """What a passive party keeps during one tree."""

    def __init__(self, n_rows: int) -> None:
        self.rows: dict[int, np.ndarray] = {0: np.arange(n_rows)}
        self.parent: dict[int, int] = {}
        self.sibling: dict[int, int] = {}
        self.hists: dict[int, EncGH] = {}
        self.lookup: dict[int, dict[int, int]] = {}


async def passive_party(
    party: Any, X: np.ndarray, cfg: VF2BoostConfig, *, active: str = "active"
) -> dict[str, Any]:
    """Run one passive party of a VF2Boost training.

    Args:
        party: the runtime's Party.
        X: this party's features (rows aligned with the active party's), NaN = missing.
        cfg: the training config (must equal the active party's).
        active: the active party's name.

    Returns:
        A dict with ``model`` (this party's PartyModel as JSON) and ``statistics``
        (``party.statistics()``).

    Raises:
        ConfigError: invalid features or a config different from the active party's.
        ProtocolError: the active party sent something malformed.
        PeerFailed: another party failed.
    """
    X = check_features(X, who=f"party {party.name!r}")
    binner = Binner.fit(X, cfg.max_bin, who=party.name)
    bins = binner.transform(X)
    n_bins = binner.n_bins
    width = int(n_bins.max()) if binner.n_features else 1
    valid = np.flatnonzero(candidate_mask(n_bins, width).ravel())
    await party.send(
        active,
        tags.HELLO,
        {"n_rows": int(X.shape[0]), "n_features": int(X.shape[1]), "config": cfg.to_dict()},
    )
    setup = await party.recv(active, tags.SETUP)
    try:
        pk = setup["public_key"]
        index = int(setup["index"])
        n_rows = int(setup["n_rows"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed setup from {active!r}: {exc!r}") from None
    if n_rows != X.shape[0]:
        raise ConfigError(f"party {party.name!r} has {X.shape[0]} rows, {active!r} has {n_rows}")
    plan = plan_bits(
        n_rows, cfg.frac_bits, pk.n_bits, pack_gh=cfg.pack_gh, pack_histograms=cfg.pack_histograms
    )
    model = PartyModel(index=index, name=party.name, binner=binner)
    split_workers = max(1, cfg.workers or 1)
    # build the re-randomization table while the first gradients arrive (this party mostly
    # waits then) rather than at the first seal, where the active party waits for it
    warm = (
        asyncio.ensure_future(party.offload(_warm_job, pk, cfg.obfuscation))
        if cfg.obfuscation != "rn"
        else None
    )

    def parse_enc(obj: Any) -> EncGH:
        try:
            return EncGH.from_wire(obj, pk, reorder=cfg.reorder)
        except (ValueError, TypeError, HeflError) as exc:
            raise ProtocolError(f"bad encrypted gradients from {active!r}: {exc}") from None

    async def histogram(enc: EncGH, rows_bins: np.ndarray) -> EncGH:
        # passive-party parallelism: features split across the executor's processes
        if split_workers == 1 or rows_bins.shape[1] < 2:
            return await party.offload(_hist_job, enc, rows_bins, width)
        groups = np.array_split(np.arange(rows_bins.shape[1]), split_workers)
        parts = await asyncio.gather(
            *(party.offload(_hist_job, enc, rows_bins[:, g], width) for g in groups if len(g))
        )
        return EncGH.concat(list(parts))

    # what is still running when the role fails: cancelled, not left behind (background.py)
    spec_task: asyncio.Future | None = None
    jobs: list[asyncio.Future] = []
    try:
        for t in range(cfg.n_estimators):
            st = _PassiveState(n_rows)
            spec_task = None
            with party.span("receive-gh", tree=t):
                if cfg.blaster:
                    pieces, jobs, start = [], [], 0
                    async for chunk in party.stream_from(active, tags.gh(t)):
                        enc = parse_enc(chunk)
                        rows = np.arange(start, start + len(enc))
                        if rows.size and rows[-1] >= n_rows:
                            raise ProtocolError(f"{active!r} streamed more than {n_rows} rows")
                        start += len(enc)
                        pieces.append(enc)
                        # start the root histogram from the first chunk (a sum needs no order)
                        jobs.append(asyncio.ensure_future(histogram(enc, bins[rows])))
                    if start != n_rows:
                        raise ProtocolError(f"{active!r} streamed {start} rows, expected {n_rows}")
                    parts = await asyncio.gather(*jobs)
                    root = parts[0]
                    for p in parts[1:]:
                        root = root + p
                    st.hists[0] = root
                    enc_all = EncGH.concat(pieces)
                else:
                    enc_all = parse_enc(await party.recv(active, tags.gh(t)))
                    if len(enc_all) != n_rows:
                        raise ProtocolError(
                            f"{active!r} sent {len(enc_all)} rows, expected {n_rows}"
                        )
            d = 0
            while True:
                msg = await party.recv(active, tags.layer(t, d))
                if spec_task is not None:
                    # reuse speculative children whose partition turned out to be the real one;
                    # histograms of a missed speculation are dropped
                    spec = await spec_task
                    spec_task = None
                    for item in msg.get("splits", []):
                        node, left, right, bits = int(item[0]), int(item[1]), int(item[2]), item[3]
                        got = spec.get(node)
                        if got is not None and np.array_equal(got[0], np.asarray(bits, np.uint8)):
                            st.hists[left], st.hists[right] = got[1], got[2]
                _apply_splits(st, msg.get("splits", []), active)
                open_nodes = [int(v) for v in msg.get("open", [])]
                if not open_nodes:
                    nodes = msg.get("nodes")
                    if not isinstance(nodes, list):
                        raise ProtocolError(f"{active!r} ended tree {t} without its structure")
                    model.trees.append(
                        TreeStructure(nodes=[{k: int(v) for k, v in n.items()} for n in nodes])
                    )
                    party.retire(
                        *tags.tree_tags(t)
                    )  # a replayed message of tree t is refused from now
                    break
                with party.span("histograms", tree=t, layer=d):
                    await _layer_histograms(st, open_nodes, enc_all, bins, histogram)
                out: list[tuple[int, np.ndarray]] = []
                if warm is not None:
                    await warm
                    warm = None
                with party.span("seal", tree=t, layer=d):
                    jobs = []
                    for node in open_nodes:
                        order = _shuffled(valid)  # hides which candidate is which feature/bin
                        ids = _fresh_ids(len(order))
                        st.lookup[node] = dict(zip(ids.tolist(), order.tolist(), strict=True))
                        jobs.append(
                            asyncio.ensure_future(
                                party.offload(
                                    _seal_job,
                                    st.hists[node],
                                    n_bins,
                                    width,
                                    order,
                                    plan,
                                    cfg.obfuscation,
                                )
                            )
                        )
                        out.append((node, ids))
                    # one message per node, sent as soon as it is sealed: the active party
                    # decrypts one node while this party seals the next
                    try:
                        for (node, ids), job in zip(out, jobs, strict=True):
                            await party.send(active, tags.hist(t, d, node), [ids, await job])
                    except BaseException:
                        discard(jobs)
                        raise
                if cfg.optimistic:
                    tentative = await party.recv(active, tags.spec(t, d))
                    spec_task = asyncio.ensure_future(
                        _speculate(st, tentative, enc_all, bins, histogram, active)
                    )
                wins = await party.recv(active, tags.win(t, d))
                placements = []
                for item in wins:
                    node, tied = int(item[0]), [int(v) for v in item[1]]
                    table = st.lookup.get(node, {})
                    if not tied or any(i not in table for i in tied):
                        raise ProtocolError(f"{active!r} named a split id this party never sent")
                    pos = min(table[i] for i in tied)  # the tie rule: first (feature, bin)
                    f, k = divmod(pos, width)
                    split_id = len(model.splits)
                    model.splits[split_id] = (int(f), int(k))
                    rows = st.rows[node]
                    left = bins[rows, f] <= k
                    placements.append([node, split_id, np.packbits(left)])
                await party.send(active, tags.place(t, d), placements)
                d += 1
    except BaseException:
        discard([warm, spec_task, *jobs])
        raise
    if warm is not None:  # no tree needed a histogram
        await warm
    return {"model": model.to_json(), "statistics": party.statistics()}


def _fresh_ids(count: int) -> np.ndarray:
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


def _apply_splits(st: _PassiveState, splits: Any, active: str) -> None:
    """Record the children of split nodes and their rows (left mask relative to the parent)."""
    for item in splits:
        try:
            node, left, right, bits = int(item[0]), int(item[1]), int(item[2]), item[3]
            rows = st.rows[node]
            mask = np.unpackbits(np.asarray(bits, dtype=np.uint8), count=len(rows)).astype(bool)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ProtocolError(f"malformed split from {active!r}: {exc!r}") from None
        st.rows[left], st.rows[right] = rows[mask], rows[~mask]
        st.parent[left] = st.parent[right] = node
        st.sibling[left], st.sibling[right] = right, left
        st.rows.pop(node, None)


async def _layer_histograms(
    st: _PassiveState, open_nodes: list[int], enc_all: EncGH, bins: np.ndarray, histogram
) -> None:
    """Histograms of the open nodes: where both siblings are open, the smaller one directly
    and the other as parent − smaller (one subtraction instead of a pass over its rows)."""
    opened = set(open_nodes)
    done = {n for n in open_nodes if n in st.hists}  # the root, accumulated while streaming
    direct: list[int] = []
    derive: list[tuple[int, int, int]] = []
    for node in open_nodes:
        if node in done:
            continue
        sib, parent = st.sibling.get(node), st.parent.get(node)
        if sib in opened and sib not in done and parent in st.hists:
            small, big = (node, sib) if len(st.rows[node]) <= len(st.rows[sib]) else (sib, node)
            direct.append(small)
            derive.append((big, parent, small))
            done.update((node, sib))
        else:
            direct.append(node)
            done.add(node)
    results = await asyncio.gather(
        *(histogram(enc_all.take(st.rows[n]), bins[st.rows[n]]) for n in direct)
    )
    for n, h in zip(direct, results, strict=True):
        st.hists[n] = h
    for big, parent, small in derive:
        st.hists[big] = st.hists[parent] - st.hists[small]
    for node in open_nodes:  # parents are not needed any more
        st.hists.pop(st.parent.get(node, -1), None)


async def _speculate(
    st: _PassiveState, tentative: Any, enc_all: EncGH, bins: np.ndarray, histogram, active: str
) -> dict[int, tuple[np.ndarray, EncGH, EncGH]]:
    """Histograms of the children of the active party's tentative splits (smaller child
    directly, the other by subtraction), built while the active party scores this layer."""
    out: dict[int, tuple[np.ndarray, EncGH, EncGH]] = {}
    for item in tentative:
        try:
            node, bits = int(item[0]), np.asarray(item[1], dtype=np.uint8)
            rows = st.rows[node]
            mask = np.unpackbits(bits, count=len(rows)).astype(bool)
            parent = st.hists[node]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ProtocolError(f"malformed tentative split from {active!r}: {exc!r}") from None
        left_rows, right_rows = rows[mask], rows[~mask]
        small = left_rows if len(left_rows) <= len(right_rows) else right_rows
        h_small = await histogram(enc_all.take(small), bins[small])
        h_big = parent - h_small
        hl, hr = (h_small, h_big) if small is left_rows else (h_big, h_small)
        out[node] = (bits, hl, hr)
    return out
