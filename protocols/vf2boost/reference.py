"""plaintext_reference: the same GBDT as the federation, without encryption — the oracle.

The objective's loss, depth-wise growth, histogram split finding on each party's own bins, histogram
subtraction (build the smaller child, derive the sibling), gain and leaf-weight formulas and
tie rule from :mod:`hefl.protocols.vf2boost.tree`. The federated protocol must build exactly
these trees; the tests compare them split by split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hefl.errors import ConfigError
from hefl.protocols.vf2boost.binning import MISSING_BIN, Binner, check_columns, check_features
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.evaluation import Evaluation, cut
from hefl.protocols.vf2boost.model import FederatedModel, PartyModel, TreeStructure
from hefl.protocols.vf2boost.objectives import config_objective, objective_of
from hefl.protocols.vf2boost.sampling import apply_sampling, sample_columns
from hefl.protocols.vf2boost.tree import (
    Candidate,
    SplitParams,
    best_position,
    candidate_mask,
    cover,
    decode_position,
    encode_gh,
    exact_group_sums,
    go_left,
    leaf_weight,
    loss_change,
    node_sums,
    pick,
    pick_winner,
    score_cumulative,
    split_sums,
)


def party_names(n_parties: int) -> list[str]:
    """Default party names: "active", "passive1", "passive2", ..."""
    return ["active"] + [f"passive{i}" for i in range(1, n_parties)]


def check_labels(
    y: object,
    n_rows: int | None = None,
    who: str = "active",
    objective: str = "binary:logistic",
    num_class: int = 0,
) -> np.ndarray:
    """Validate labels for ``objective`` and return them as float64.

    Raises:
        ConfigError: not 1-D, NaN, values outside the objective's range, or a row count
            mismatch (names the party and the objective).
    """
    return objective_of(objective, num_class).check_labels(y, n_rows, who)


def check_parts(
    X_parts: object, y: object, objective: str = "binary:logistic", num_class: int = 0
) -> tuple[list[np.ndarray], np.ndarray]:
    """Validate vertically split features and labels (X_parts[0] is the active party's).

    Raises:
        ConfigError: naming the party whose block is wrong.
    """
    if not isinstance(X_parts, list | tuple) or len(X_parts) < 2:
        raise ConfigError("X_parts must be a list of >= 2 feature blocks (active party first)")
    names = party_names(len(X_parts))
    parts = [
        check_columns(check_features(X, who=f"party {n!r}"), who=f"party {n!r}")
        for n, X in zip(names, X_parts, strict=True)
    ]
    n = parts[0].shape[0]
    for name, X in zip(names, parts, strict=True):
        if X.shape[0] != n:
            raise ConfigError(
                f"party {name!r} has {X.shape[0]} rows but the active party has {n}; "
                "the parties' rows must be aligned (same instances, same order)"
            )
    if n < 2:
        raise ConfigError("training needs at least 2 rows")
    return parts, check_labels(y, n, objective=objective, num_class=num_class)


@dataclass
class _Node:
    index: int  # position in the tree's node list
    depth: int
    rows: np.ndarray
    G: int
    H: int
    hists: list[tuple[np.ndarray, np.ndarray]] | None = None  # per party (g, h) F × W
    parent_hists: list[tuple[np.ndarray, np.ndarray]] | None = None  # for subtraction
    sibling: _Node | None = None


def party_histogram(
    bins: np.ndarray, width: int, rows: np.ndarray, gi: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (features × width) histograms of g and h encodings over ``rows``
    ((classes × features × width) for (rows × K) encodings: vector leaves)."""
    if gi.ndim == 2:
        per_class = [
            party_histogram(bins, width, rows, gi[:, k], hi[:, k]) for k in range(gi.shape[1])
        ]
        return np.stack([c[0] for c in per_class]), np.stack([c[1] for c in per_class])
    F = bins.shape[1]
    groups = (bins[rows].astype(np.int64) + (np.arange(F) * width)[None, :]).ravel()
    hg = exact_group_sums(np.repeat(gi[rows], F), groups, F * width).reshape(F, width)
    hh = exact_group_sums(np.repeat(hi[rows], F), groups, F * width).reshape(F, width)
    return hg, hh


@dataclass
class _Parties:
    """Every party's bins, candidates and model share, as the reference sees them."""

    cfg: VF2BoostConfig
    bins: list[np.ndarray]
    widths: list[int]
    masks: list[np.ndarray]  # per party, (features × width × 2) valid candidates
    models: list[PartyModel]
    params: SplitParams | None = None  # the current tree's
    tree_masks: list[np.ndarray] | None = None  # the masks with the tree's column sample

    @classmethod
    def fit(cls, parts: list[np.ndarray], cfg: VF2BoostConfig) -> _Parties:
        names = party_names(len(parts))
        binners = [Binner.fit(X, cfg.max_bin, who=n) for X, n in zip(parts, names, strict=True)]
        widths = [int(b.n_bins.max()) if b.n_features else 1 for b in binners]
        bins = [b.transform(X) for b, X in zip(binners, parts, strict=True)]
        return cls(
            cfg=cfg,
            bins=bins,
            widths=widths,
            masks=[
                candidate_mask(b.n_bins, w, (x == MISSING_BIN).any(axis=0), b.categorical)
                for b, w, x in zip(binners, widths, bins, strict=True)
            ],
            models=[
                PartyModel(index=i, name=n, binner=b)
                for i, (n, b) in enumerate(zip(names, binners, strict=True))
            ],
        )

    def start_tree(self, t: int, g_exp: int) -> None:
        """Set tree ``t``'s scoring parameters and column samples."""
        self.params = SplitParams.of(self.cfg, g_exp)
        self.tree_masks = [
            m & sample_columns(self.cfg, t, p, m.shape[0])[:, None, None]
            for p, m in enumerate(self.masks)
        ]


def check_eval_set(
    eval_set: object, parts: list[Any], cfg: VF2BoostConfig
) -> tuple[list[Any], np.ndarray]:
    """Validate an eval set (feature blocks split like ``parts``, and labels).

    Raises:
        ConfigError: not (blocks, labels), another number of blocks, a party whose eval
            columns differ from its training columns (named), row counts that differ, or labels
            outside the objective's range.
    """
    if not isinstance(eval_set, list | tuple) or len(eval_set) != 2:
        raise ConfigError("eval_set must be (X_parts, y): feature blocks and labels")
    E_parts, y_eval = eval_set
    if not isinstance(E_parts, list | tuple) or len(E_parts) != len(parts):
        raise ConfigError(f"eval_set needs {len(parts)} feature blocks, one per party")
    names = party_names(len(parts))
    out = [
        check_features(E, who=f"party {n!r} eval set") for n, E in zip(names, E_parts, strict=True)
    ]
    for name, X, E in zip(names, parts, out, strict=True):
        if E.shape[1] != X.shape[1] or E.shape[0] != out[0].shape[0]:
            raise ConfigError(
                f"party {name!r}: the eval set block is {E.shape[0]} × {E.shape[1]}, the training "
                f"block has {X.shape[1]} columns; the eval set must be split by columns like the "
                "training data, with the same rows in every block"
            )
    y_checked = check_labels(
        y_eval, out[0].shape[0], "active eval set", cfg.objective, cfg.num_class
    )
    return out, y_checked


def plaintext_reference(
    X_parts: list[np.ndarray],
    y: np.ndarray,
    cfg: VF2BoostConfig | None = None,
    eval_set: tuple[list[Any], Any] | None = None,
) -> FederatedModel:
    """Train the federation's GBDT in plaintext on the same bins.

    Args:
        X_parts: feature blocks, one per party (X_parts[0]: the active party's), same rows.
        y: labels (0/1, or the objective's targets).
        cfg: the configuration (crypto switches are ignored).
        eval_set: (feature blocks split like ``X_parts``, labels): scored after every round
            (and early stopping), as the federation does.

    Returns:
        A :class:`FederatedModel` with one :class:`PartyModel` per block.

    Raises:
        ConfigError: invalid features, labels or config.
    """
    cfg = cfg or VF2BoostConfig()
    parts, yf = check_parts(X_parts, y, cfg.objective, cfg.num_class)
    cfg = cfg.resolve(len(yf))  # the precision the federation uses: identical quantization
    ps = _Parties.fit(parts, cfg)
    objective = config_objective(cfg)
    margin0 = objective.base_margin(yf, cfg.base_score)
    ps.models[0].base_margin = margin0
    ps.models[0].objective = objective.name
    ps.models[0].num_class = objective.num_class
    ps.models[0].vector_leaves = objective.vector_leaves
    margin = objective.initial_margin(yf.shape[0], margin0)
    evaluation = None
    if eval_set is not None:
        E_parts, y_eval = check_eval_set(eval_set, parts, cfg)
        evaluation = Evaluation.start(cfg, y_eval, margin0)
    t = 0
    for r in range(cfg.n_estimators):
        for g_t, h_t in objective.round_gradients(margin, yf):
            g, h = apply_sampling(cfg, t, g_t, h_t)
            gi, hi, g_exp = encode_gh(g, h, cfg.resolved_frac_bits)
            ps.start_tree(t, g_exp)
            nodes, leaf_values, stats = _grow_tree(ps, gi, hi)
            for m in ps.models:
                tree = TreeStructure(nodes=[dict(n) for n in nodes])
                if m.index == 0:
                    tree.leaf_values, tree.gains, tree.covers = list(leaf_values), *stats
                m.trees.append(tree)
            # the margin update uses the model's own prediction path on the training bins
            objective.add_tree(margin, t, _tree_output(nodes, leaf_values, ps.bins, ps.models))
            t += 1
        if evaluation is not None:
            masks = [
                m.leaf_masks(E, start=t - objective.trees_per_round)
                for m, E in zip(ps.models, E_parts, strict=True)
            ]
            if evaluation.add_round(r, ps.models[0], masks):
                break
    if evaluation is None:
        return FederatedModel(parties=ps.models)
    if cfg.early_stopping_rounds is not None:
        for m in ps.models:
            cut(m, evaluation.best + 1, objective.trees_per_round)
    return FederatedModel(parties=ps.models, **evaluation.summary())


def _grow_tree(
    ps: _Parties, gi: np.ndarray, hi: np.ndarray
) -> tuple[list[dict[str, int]], list[float], tuple[list[float], list[float]]]:
    """One tree, depth-wise; returns its nodes, leaf values and (gains, covers) per node."""
    cfg, params = ps.cfg, ps.params
    assert params is not None  # start_tree ran
    all_rows = np.arange(len(gi))
    G0, H0 = node_sums(gi), node_sums(hi)
    nodes: list[dict[str, int]] = [{}]
    leaf_values: list[float] = []
    gains: dict[int, float] = {}
    covers: dict[int, float] = {}
    layer = [_Node(0, 0, all_rows, G0, H0)]
    while layer:
        _fill_histograms(layer, ps.bins, ps.widths, gi, hi)
        next_layer: list[_Node] = []
        for node in layer:
            covers[node.index] = cover(node.H, params)
            winner = _best_split(ps, node) if node.depth < cfg.max_depth else None
            if winner is None:
                nodes[node.index] = {"leaf": len(leaf_values)}
                w = leaf_weight(node.G, node.H, params)
                leaf_values.append(w)
            else:
                gains[node.index] = loss_change(winner.gain, params)
                next_layer.extend(_split(ps, node, winner, nodes))
        layer = next_layer
    n = len(nodes)
    return (
        nodes,
        leaf_values,
        ([gains.get(i, 0.0) for i in range(n)], [covers[i] for i in range(n)]),
    )


def _best_split(ps: _Parties, node: _Node) -> Candidate | None:
    """The node's winning candidate across all parties (None: it becomes a leaf)."""
    assert node.hists is not None  # _fill_histograms filled every node of the layer
    assert ps.params is not None and ps.tree_masks is not None  # start_tree ran
    cands = []
    for p, (hg, hh) in enumerate(node.hists):
        GL, HL = split_sums(hg, hh, ps.models[p].binner.categorical)
        gains = score_cumulative(GL, HL, node.G, node.H, ps.params)
        gain, pos = best_position(np.where(ps.tree_masks[p], gains, -np.inf))
        cands.append(Candidate(gain, p, pos))
    return pick_winner(cands)


def _split(
    ps: _Parties, node: _Node, winner: Candidate, nodes: list[dict[str, int]]
) -> list[_Node]:
    """Record the split of ``node`` by ``winner`` in its owner's model; returns the children."""
    assert node.hists is not None
    p = winner.party
    f, k, default_left = decode_position(winner.position, ps.widths[p])
    split_id = len(ps.models[p].splits)
    ps.models[p].splits[split_id] = (f, k, default_left)
    cat = ps.models[p].binner.categorical
    left_rows = go_left(ps.bins[p][node.rows, f], k, default_left, bool(cat[f]))
    GLs, HLs = split_sums(*node.hists[p], cat)
    GL, HL = pick(GLs, (f, k, int(default_left))), pick(HLs, (f, k, int(default_left)))
    i = len(nodes)
    left = _Node(i, node.depth + 1, node.rows[left_rows], GL, HL)
    right = _Node(i + 1, node.depth + 1, node.rows[~left_rows], node.G - GL, node.H - HL)
    nodes[node.index] = {"owner": p, "split": split_id, "left": i, "right": i + 1}
    nodes.extend([{}, {}])
    left.parent_hists = right.parent_hists = node.hists
    left.sibling, right.sibling = right, left
    return [left, right]


def _fill_histograms(
    layer: list[_Node], bins: list[np.ndarray], widths: list[int], gi: np.ndarray, hi: np.ndarray
) -> None:
    """Histograms for a layer: the root directly; for each sibling pair, the smaller child
    directly and the other as parent − child (exact, so identical to building it)."""
    done: set[int] = set()
    for node in layer:
        if node.index in done:
            continue
        parent, sib = node.parent_hists, node.sibling
        if parent is None or sib is None:
            node.hists = [
                party_histogram(b, w, node.rows, gi, hi) for b, w in zip(bins, widths, strict=True)
            ]
            done.add(node.index)
            continue
        small, big = (node, sib) if len(node.rows) <= len(sib.rows) else (sib, node)
        small.hists = [
            party_histogram(b, w, small.rows, gi, hi) for b, w in zip(bins, widths, strict=True)
        ]
        big.hists = [
            (pg - sg, ph - sh) for (pg, ph), (sg, sh) in zip(parent, small.hists, strict=True)
        ]
        done.update((small.index, big.index))
        node.parent_hists = sib.parent_hists = None  # free memory as the tree grows


def _tree_output(
    nodes: list[dict[str, int]],
    leaf_values: list[float],
    bins: list[np.ndarray],
    models: list[PartyModel],
) -> np.ndarray:
    n = bins[0].shape[0]
    out = np.zeros((n, len(leaf_values[0])) if isinstance(leaf_values[0], list) else n)
    stack = [(0, np.arange(n))]
    while stack:
        i, rows = stack.pop()
        node = nodes[i]
        if "leaf" in node:
            out[rows] = leaf_values[node["leaf"]]
            continue
        p = node["owner"]
        f, k, default_left = models[p].splits[node["split"]]
        left = go_left(bins[p][rows, f], k, default_left, bool(models[p].binner.categorical[f]))
        stack.append((node["left"], rows[left]))
        stack.append((node["right"], rows[~left]))
    return out
