"""The active party's role: labels, its own features and the only private key.

Per tree: compute g and h, encode them with one global fixed-point scale, encrypt (in chunks
on the executor's processes and streamed with ``blaster``), and grow the tree layer by layer:
its own candidates from plaintext histograms, the passive parties' from decrypted cumulative
sums, the best across all parties by the shared rule of :mod:`~hefl.protocols.vf2boost.tree`.
Passive-party splits are known to it only by a masked id; their owner reports the placement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hefl import cpu_count
from hefl.crypto import ObfuscatorPool, PrivateKey, PublicKey, generate_keypair
from hefl.errors import ConfigError, HeflError, ProtocolError
from hefl.protocols.vf2boost import tags
from hefl.protocols.vf2boost.background import discard
from hefl.protocols.vf2boost.binning import Binner, check_features
from hefl.protocols.vf2boost.budget import BitPlan, plan_bits
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.encgh import EncGH, decrypt_entries, encrypt_gh, layout_of
from hefl.protocols.vf2boost.model import PartyModel, TreeStructure
from hefl.protocols.vf2boost.reference import check_labels, party_histogram
from hefl.protocols.vf2boost.tree import (
    MIN_GAIN,
    Candidate,
    base_margin,
    best_position,
    candidate_mask,
    encode_fixed,
    exact_group_sums,
    leaf_weight,
    logistic_gradients,
    pick_winner,
    score_cumulative,
)


@dataclass
class _Node:
    index: int
    depth: int
    rows: np.ndarray
    G: int
    H: int
    hist: tuple[np.ndarray, np.ndarray] | None = None
    parent: _Node | None = None
    sibling: _Node | None = None


def _decrypt_job(sk: PrivateKey, wire: Any, plan: BitPlan, count: int, reorder: bool, horner):
    enc = EncGH.from_wire(wire, sk.public_key, reorder=reorder, horner=horner)
    return decrypt_entries(sk, enc, plan, count)


def _warm_job(key: PublicKey | PrivateKey, method: str) -> None:
    """Start an executor worker early and build its key-holder tables (~1.6 s at 2048 bits)
    before the first chunk needs them."""
    if isinstance(key, PrivateKey) and method != "rn":
        key.obfuscators(1, method=method)


def _exact_sum(v: np.ndarray) -> int:
    return int(exact_group_sums(v, np.zeros(len(v), dtype=np.int64), 1)[0]) if len(v) else 0


async def active_party(
    party: Any,
    X: np.ndarray,
    y: np.ndarray,
    cfg: VF2BoostConfig,
    *,
    passives: list[str] | None = None,
    keypair: tuple[PublicKey, PrivateKey] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    prefill: bool = False,
) -> dict[str, Any]:
    """Run the active party of a VF2Boost training.

    Args:
        party: the runtime's Party.
        X: this party's features, NaN = missing.
        y: 0/1 labels.
        cfg: the training config.
        passives: the passive parties' names in party-index order (default: sorted peers).
        keypair: an existing Paillier keypair (default: a fresh one of ``cfg.key_bits``).
        progress: called as ``progress(trees_done, n_trees, seconds_of_last_tree)``.
        prefill: with ``cfg.precompute``, make every tree's obfuscators before the first
            tree (an offline phase; tree times are then online times).

    Returns:
        A dict with ``model`` (this party's PartyModel as JSON), ``statistics``,
        ``tree_seconds`` (a list), ``passive_bytes`` and ``hit_rate`` (a float, or None).

    Raises:
        ConfigError: bad features/labels/config, or a passive party whose rows or config do
            not match (named in the message).
        ProtocolError: a passive party sent malformed or inconsistent data (named).
        PeerFailed: a passive party failed or disconnected.
    """
    X = check_features(X, who=f"party {party.name!r}")
    yf = check_labels(y, X.shape[0], who=f"party {party.name!r}")
    n = X.shape[0]
    passives = list(passives) if passives is not None else sorted(party.peers)
    hellos = await party.gather(tags.HELLO, peers=passives)
    n_features: dict[str, int] = {}
    for name in passives:
        h = hellos[name]
        if not isinstance(h, dict) or "n_rows" not in h:
            raise ProtocolError(f"party {name!r} sent a malformed hello")
        if h["n_rows"] != n:
            raise ConfigError(
                f"party {name!r} has {h['n_rows']} rows but the active party has {n}; "
                "the parties' rows must be aligned (same instances, same order)"
            )
        n_features[name] = int(h.get("n_features", -1))
        if h.get("config") != cfg.to_dict():
            raise ConfigError(f"party {name!r} was started with a different VF2BoostConfig")
    if keypair is None:
        with party.span("keygen"):
            pk, sk = generate_keypair(cfg.key_bits, allow_insecure=cfg.allow_insecure)
    else:
        pk, sk = keypair
    plan = plan_bits(
        n, cfg.frac_bits, pk.n_bits, pack_gh=cfg.pack_gh, pack_histograms=cfg.pack_histograms
    )
    for i, name in enumerate(passives, start=1):
        await party.send(name, tags.SETUP, {"public_key": pk, "index": i, "n_rows": n})
    layout = layout_of(cfg.pack_gh, cfg.encoding)
    horner = plan.slots > 1 and layout != "phe"
    per_row = 1 if layout == "packed" else 2
    # textbook rⁿ (the serial baseline) encrypts like phe, with the public key; otherwise the
    # key holder's CRT fast path
    enc_key: PublicKey | PrivateKey = pk if cfg.obfuscation == "rn" else sk
    # a process executor spawns its workers on first use: start them now, with their tables
    # (offline with prefill, otherwise while the passive parties bin their features), rather
    # than at the first chunk or decryption, where every party would wait for them
    warm = asyncio.gather(
        *(party.offload(_warm_job, enc_key, cfg.obfuscation) for _ in range(cpu_count()))
    )
    pool = None
    if cfg.precompute and cfg.blaster:
        # up to two trees' worth of obfuscators, refilled by one process per core at the
        # lowest CPU priority: they only use the CPU time that training leaves idle (the
        # passive parties' histogram phases, the gaps between layers) and carry it over to the
        # next tree. With prefill, every tree's worth is made up front at normal priority (an
        # offline phase).
        need = per_row * n * (cfg.n_estimators if prefill else min(cfg.n_estimators, 2))
        pool = ObfuscatorPool(
            pk,
            capacity=need,
            chunk=256,
            workers=cpu_count(),
            low_priority=not prefill,
            method=cfg.obfuscation,
            private_key=sk,
        )
        if prefill:
            with party.span("prefill-obfuscators"):
                while not pool.wait(need, timeout=0.05):
                    await asyncio.sleep(0.05)
    binner = Binner.fit(X, cfg.max_bin, who=party.name)
    bins = binner.transform(X)
    width = int(binner.n_bins.max()) if binner.n_features else 1
    mask = candidate_mask(binner.n_bins, width)
    model = PartyModel(index=0, name=party.name, binner=binner)
    margin0 = base_margin(yf, cfg.base_score)
    model.base_margin = margin0
    margin = np.full(n, margin0)
    fb = cfg.frac_bits
    tree_seconds: list[float] = []
    speculated = hits = 0

    async def send_gh(t: int, gi: np.ndarray, hi: np.ndarray) -> None:
        if not cfg.blaster:
            with party.span("encrypt", tree=t, rows=n):
                enc = await party.offload(
                    encrypt_gh, enc_key, gi, hi, plan, layout, cfg.obfuscation, cfg.reorder
                )
            wire = enc.to_wire()
            with party.span("send-gh", tree=t):
                for name in passives:
                    await party.send(name, tags.gh(t), wire)
            return
        # Blaster: chunks are encrypted while earlier ones are on the wire. Chunks covered by
        # precomputed obfuscators are encrypted here (a multiplication per value); the others
        # on the executor's processes, all started at once.
        starts = list(range(0, n, cfg.chunk_size))
        ready = pool.available if pool is not None else 0
        n_warm = 0
        while n_warm < len(starts):
            # the last chunk may be short: it needs only its own rows' obfuscators
            need_chunk = per_row * min(cfg.chunk_size, n - starts[n_warm])
            if ready < need_chunk:
                break
            ready -= need_chunk
            n_warm += 1

        def chunk(s: int) -> tuple[np.ndarray, np.ndarray]:
            return gi[s : s + cfg.chunk_size], hi[s : s + cfg.chunk_size]

        # at most one chunk per core in the executor at a time: the executor is first come,
        # first served, and a passive party sharing it (one process) must get its histograms
        # of the first chunks in between, not after every chunk is encrypted
        slots = asyncio.Semaphore(cpu_count())

        async def cold(s: int) -> EncGH:
            async with slots:
                return await party.offload(
                    encrypt_gh, enc_key, *chunk(s), plan, layout, cfg.obfuscation, cfg.reorder
                )

        jobs: list[Any] = [None] * n_warm + [
            asyncio.ensure_future(cold(s)) for s in starts[n_warm:]
        ]
        streams = [party.stream(name, tags.gh(t)) for name in passives]
        for s in streams:
            await s.__aenter__()
        try:
            for i, job in enumerate(jobs):
                if job is None:
                    with party.span("encrypt-warm", tree=t, chunk=i):
                        enc = encrypt_gh(
                            pk, *chunk(starts[i]), plan, layout, cfg.obfuscation, cfg.reorder, pool
                        )
                    wire = enc.to_wire()
                    await asyncio.sleep(0)  # let the wire and peers make progress
                else:
                    with party.span("encrypt-wait", tree=t, chunk=i):
                        wire = (await job).to_wire()
                for s in streams:
                    await s.send(wire)
        except BaseException as exc:
            discard(jobs)
            for s in streams:
                await s.__aexit__(type(exc), exc, None)
            raise
        for s in streams:
            await s.__aexit__(None, None, None)

    def own_candidate(node: _Node) -> tuple[Candidate, np.ndarray, np.ndarray]:
        assert node.hist is not None  # _own_histograms filled every open node
        hg, hh = node.hist
        GLc, HLc = np.cumsum(hg, axis=1), np.cumsum(hh, axis=1)
        gains = score_cumulative(
            GLc, HLc, node.G, node.H, fb, cfg.reg_lambda, cfg.gamma, cfg.min_child_weight
        )
        gains = np.where(mask, gains, -np.inf)
        gain, pos = best_position(gains)
        return Candidate(gain, 0, pos), GLc, HLc

    try:
        for t in range(cfg.n_estimators):
            t0 = time.perf_counter()
            g, h = logistic_gradients(margin, yf)
            gi, hi = encode_fixed(g, fb), encode_fixed(h, fb)
            if pool is not None and not prefill:
                # this tree takes what is buffered; refill only what later trees will use
                pool.resize(min(pool.capacity, per_row * n * (cfg.n_estimators - t - 1)))
            sender = asyncio.ensure_future(send_gh(t, gi, hi))
            root = _Node(0, 0, np.arange(n), _exact_sum(gi), _exact_sum(hi))
            nodes: list[dict[str, int]] = [{}]
            leaf_values: list[float] = []
            layer = [root]
            splits_msg: list[list[Any]] = []
            tree_out = np.zeros(n)  # this tree's output on the training rows, leaf by leaf
            d = 0
            try:
                while True:
                    open_nodes = [nd for nd in layer if _splittable(nd, cfg, fb)]
                    if not open_nodes:
                        for nd in layer:
                            _make_leaf(nd, nodes, leaf_values, tree_out, cfg)
                        for name in passives:
                            await party.send(
                                name,
                                tags.layer(t, d),
                                {"splits": splits_msg, "open": [], "nodes": nodes},
                            )
                        break
                    open_ids = [nd.index for nd in open_nodes]
                    for name in passives:
                        await party.send(
                            name, tags.layer(t, d), {"splits": splits_msg, "open": open_ids}
                        )
                    with party.span("own-histograms", tree=t, layer=d):
                        _own_histograms(open_nodes, bins, width, gi, hi)
                        own = {nd.index: own_candidate(nd) for nd in open_nodes}
                    if cfg.optimistic:
                        # Optimistic splitting: assume our own best split wins and tell the
                        # passive parties now, so they build the children's histograms while
                        # we wait for, decrypt and score theirs. A miss is discarded.
                        spec: list[list[Any]] = []  # [node, packed left mask]
                        for nd in open_nodes:
                            cand = own[nd.index][0]
                            useful = nd.depth + 1 < cfg.max_depth  # children get split
                            if useful and cand.position >= 0 and cand.gain > MIN_GAIN:
                                f, k = divmod(cand.position, width)
                                spec.append([nd.index, np.packbits(bins[nd.rows, f] <= k)])
                        for name in passives:
                            await party.send(name, tags.spec(t, d), spec)
                        spec_nodes = {int(it[0]) for it in spec}
                    if d == 0:
                        await sender  # surface encryption/sending errors before waiting on peers
                    with party.span("decrypt", tree=t, layer=d):
                        theirs = await _decode_passive(
                            party, t, d, passives, n_features, open_nodes, sk, plan, cfg, horner
                        )
                    with party.span("score", tree=t, layer=d):
                        winners: dict[int, tuple[Candidate, Any]] = {}
                        for nd in open_nodes:
                            cands = [own[nd.index][0]]
                            extra = {}
                            for p, name in enumerate(passives, start=1):
                                gains, ids, GLs, HLs = theirs[name][nd.index]
                                best = float(gains.max()) if gains.size else -np.inf
                                tied = ids[gains == best] if np.isfinite(best) else ids[:0]
                                cands.append(Candidate(best, p, 0 if tied.size else -1))
                                extra[p] = (
                                    tied,
                                    {
                                        (int(a), int(b))
                                        for a, b in zip(
                                            GLs[gains == best], HLs[gains == best], strict=True
                                        )
                                    },
                                )
                            win = pick_winner(cands)
                            if win is not None:
                                winners[nd.index] = (win, extra.get(win.party))
                            if cfg.optimistic and nd.index in spec_nodes:
                                speculated += 1
                                hits += int(win is not None and win.party == 0)
                    for p, name in enumerate(passives, start=1):
                        mine = [[i, w[1][0]] for i, w in winners.items() if w[0].party == p]
                        await party.send(name, tags.win(t, d), mine)
                    placed = await party.gather(tags.place(t, d), peers=passives)
                    placements = _check_placements(placed, passives, winners, layer, gi, hi)
                    next_layer: list[_Node] = []
                    splits_msg = []
                    for nd in layer:
                        w = winners.get(nd.index)
                        if w is None:
                            _make_leaf(nd, nodes, leaf_values, tree_out, cfg)
                            continue
                        cand = w[0]
                        if cand.party == 0:
                            f, k = divmod(cand.position, width)
                            split_id = len(model.splits)
                            model.splits[split_id] = (f, k)
                            left_mask = bins[nd.rows, f] <= k
                            _, GLc, HLc = own[nd.index]
                            GL, HL = int(GLc[f, k]), int(HLc[f, k])
                        else:
                            split_id, left_mask, GL, HL = placements[nd.index]
                        left = _Node(len(nodes), nd.depth + 1, nd.rows[left_mask], GL, HL)
                        right = _Node(
                            len(nodes) + 1, nd.depth + 1, nd.rows[~left_mask], nd.G - GL, nd.H - HL
                        )
                        left.parent = right.parent = nd
                        left.sibling, right.sibling = right, left
                        nodes[nd.index] = {
                            "owner": cand.party,
                            "split": split_id,
                            "left": left.index,
                            "right": right.index,
                        }
                        nodes.extend([{}, {}])
                        splits_msg.append(
                            [nd.index, left.index, right.index, np.packbits(left_mask)]
                        )
                        next_layer.extend([left, right])
                    for nd in layer:  # free parents' histograms
                        if nd.parent is not None:
                            nd.parent.hist = None
                    layer = next_layer
                    d += 1
            finally:
                if not sender.done():
                    sender.cancel()
            await sender
            party.retire(*tags.tree_tags(t))  # a replayed message of tree t is refused from now
            model.trees.append(TreeStructure(nodes=nodes, leaf_values=leaf_values))
            margin = margin + tree_out
            tree_seconds.append(time.perf_counter() - t0)
            if progress is not None:
                progress(t + 1, cfg.n_estimators, tree_seconds[-1])
    except BaseException:
        discard([warm])
        raise
    finally:
        if pool is not None:
            pool.close()
    await warm
    return {
        "model": model.to_json(),
        "statistics": party.statistics(),
        "tree_seconds": tree_seconds,
        "hit_rate": (hits / speculated if speculated else None) if cfg.optimistic else None,
    }


def _splittable(nd: _Node, cfg: VF2BoostConfig, fb: int) -> bool:
    """Whether a node can have a valid split at all (skipping it changes nothing: a split
    needs both children's hessian sums >= min_child_weight, hence H >= 2·min_child_weight)."""
    if nd.depth >= cfg.max_depth or len(nd.rows) < 2:
        return False
    h = nd.H / (1 << fb)
    return h * (1 + 1e-12) >= 2 * cfg.min_child_weight


def _make_leaf(
    nd: _Node,
    nodes: list[dict[str, int]],
    leaf_values: list[float],
    out: np.ndarray,
    cfg: VF2BoostConfig,
) -> None:
    w = leaf_weight(nd.G, nd.H, cfg.frac_bits, cfg.reg_lambda, cfg.learning_rate)
    nodes[nd.index] = {"leaf": len(leaf_values)}
    leaf_values.append(w)
    out[nd.rows] = w


def _own_histograms(
    open_nodes: list[_Node], bins: np.ndarray, width: int, gi: np.ndarray, hi: np.ndarray
) -> None:
    """Plaintext histograms of the active party's features, with sibling subtraction."""
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


async def _decode_passive(
    party: Any,
    t: int,
    d: int,
    passives: list[str],
    n_features: dict[str, int],
    open_nodes: list[_Node],
    sk: PrivateKey,
    plan: BitPlan,
    cfg: VF2BoostConfig,
    horner: bool,
) -> dict[str, dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]:
    """Receive, decrypt and check every passive party's candidates; return gains per node.

    Each node's histograms come in their own message (``vf2/hist/{t}/{d}/{node}``) and are
    decrypted as soon as they arrive, while the passive party still seals the next node.
    """
    by_index = {nd.index: nd for nd in open_nodes}
    jobs: list[asyncio.Future] = []
    keys = []
    try:
        for name in passives:
            for node in by_index:
                reply = await party.recv(name, tags.hist(t, d, node))
                try:
                    ids, wire = np.asarray(reply[0], dtype=np.int64), reply[1]
                    ok = len(reply) == 2
                except (TypeError, ValueError, IndexError, KeyError) as exc:
                    raise ProtocolError(
                        f"party {name!r} sent malformed histograms: {exc!r}"
                    ) from None
                if not ok or ids.ndim != 1 or len(set(ids.tolist())) != len(ids):
                    raise ProtocolError(f"party {name!r} sent duplicate or malformed split ids")
                count = len(ids) + n_features[name]
                jobs.append(
                    asyncio.ensure_future(
                        party.offload(_decrypt_job, sk, wire, plan, count, cfg.reorder, horner)
                    )
                )
                keys.append((name, node, ids))
    except BaseException:
        discard(jobs)
        raise
    results = await asyncio.gather(*jobs, return_exceptions=True)
    out: dict[str, dict[int, Any]] = {name: {} for name in passives}
    for (name, node, ids), res in zip(keys, results, strict=True):
        if isinstance(res, BaseException):
            if isinstance(res, HeflError | ValueError | TypeError):
                raise ProtocolError(
                    f"party {name!r} sent histograms that do not decrypt to valid sums "
                    f"({res}); the data was tampered with or encrypted under another key"
                ) from None
            raise res
        G, H = res
        nd = by_index[node]
        m = len(ids)
        if any(v != nd.G for v in G[m:]) or any(v != nd.H for v in H[m:]):
            raise ProtocolError(
                f"party {name!r} sent histograms whose totals differ from the node's gradient "
                "sums; the data was tampered with or encrypted under another key"
            )
        GL = np.array(G[:m], dtype=object)
        HL = np.array(H[:m], dtype=object)
        bound = len(nd.rows) << cfg.frac_bits  # |g| <= 1 per row
        if m and (min(HL) < 0 or max(HL) > nd.H or max(abs(v) for v in GL) > bound):
            raise ProtocolError(
                f"party {name!r} sent impossible gradient sums; the data was tampered with "
                "or encrypted under another key"
            )
        gains = score_cumulative(
            GL, HL, nd.G, nd.H, cfg.frac_bits, cfg.reg_lambda, cfg.gamma, cfg.min_child_weight
        )
        out[name][node] = (gains, ids, GL, HL)
    return out


def _check_placements(
    placed: dict[str, Any],
    passives: list[str],
    winners: dict[int, tuple[Candidate, Any]],
    layer: list[_Node],
    gi: np.ndarray,
    hi: np.ndarray,
) -> dict[int, tuple[int, np.ndarray, int, int]]:
    """Validate the owners' placements: the rows sent left must sum to the winning
    candidate's (G_L, H_L) exactly, so an owner cannot misreport them."""
    by_index = {nd.index: nd for nd in layer}
    out: dict[int, tuple[int, np.ndarray, int, int]] = {}
    for p, name in enumerate(passives, start=1):
        want = {i for i, w in winners.items() if w[0].party == p}
        got = {}
        try:
            for item in placed[name]:
                got[int(item[0])] = (int(item[1]), np.asarray(item[2], dtype=np.uint8))
        except (TypeError, ValueError, IndexError) as exc:
            raise ProtocolError(f"party {name!r} sent malformed placements: {exc!r}") from None
        if set(got) != want:
            raise ProtocolError(
                f"party {name!r} placed nodes {sorted(got)}, expected {sorted(want)}"
            )
        for node, (split_id, bits) in got.items():
            nd = by_index[node]
            if bits.ndim != 1 or len(bits) != (len(nd.rows) + 7) // 8:
                raise ProtocolError(f"party {name!r} sent a placement of the wrong length")
            mask = np.unpackbits(bits, count=len(nd.rows)).astype(bool)
            GL, HL = _exact_sum(gi[nd.rows[mask]]), _exact_sum(hi[nd.rows[mask]])
            if (GL, HL) not in winners[node][1][1]:
                raise ProtocolError(
                    f"party {name!r} sent a placement that does not match its winning split"
                )
            out[node] = (split_id, mask, GL, HL)
    return out
