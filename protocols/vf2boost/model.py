"""FederatedModel: boosted trees whose split thresholds stay with the party that owns them.

Every party keeps a :class:`PartyModel`: the shared tree *structure* (for each internal node the
owner's party index and an owner-local split id; children), its own split table
``split id -> (feature, bin)``, its own bin cut points, and — the active party only — the leaf
weights and the base margin. Prediction is federated in one round: each party computes, per
tree, which leaves every row can still reach given only its own splits (a party that does not
own a node lets rows go both ways); the active party ANDs these masks (exactly one leaf
remains per row) and sums the leaf weights. Models are saved as one JSON file per party.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hefl.errors import ConfigError
from hefl.protocols.vf2boost.binning import Binner
from hefl.protocols.vf2boost.objectives import OBJECTIVES, Objective, leaf_output, objective_of
from hefl.protocols.vf2boost.tree import go_left

FORMAT = "hefl.vf2boost.party-model/2"
#: Format 1 sent x <= cut left; format 2 sends x < cut left (XGBoost's rule). Both load.
FORMAT_1 = "hefl.vf2boost.party-model/1"


@dataclass
class TreeStructure:
    """One tree as seen by every party.

    Attributes:
        nodes: a list; internal node ``{"owner": int, "split": int, "left": i, "right": j}``,
            leaf ``{"leaf": k}`` with k the leaf's index in the tree (0..n_leaves-1).
        leaf_values: the leaf weights (active party only; None elsewhere); a list of K
            weights per leaf with vector leaves.
        gains: per node, XGBoost's loss change of its split (0 for a leaf); active party only.
        covers: per node, its hessian sum; active party only.
    """

    nodes: list[dict[str, int]]
    leaf_values: list[Any] | None = None
    gains: list[float] | None = None
    covers: list[float] | None = None

    @property
    def n_leaves(self) -> int:
        return sum(1 for n in self.nodes if "leaf" in n)


@dataclass
class PartyModel:
    """One party's share of a trained model.

    Attributes:
        index: the party's index (0 = active).
        name: the party's name in the federation.
        binner: its bin cut points.
        splits: split id -> (feature, bin k, default_left) for splits it owns: values in bins
            1..k go left, missing values left if default_left (else right).
        trees: the tree structures (with leaf values for the active party).
        base_margin: initial margin (active party only).
        objective: the loss (active party only; it turns margins into predictions).
        num_class: K for multi:softprob (tree t adds to class t mod K), else 1.
        vector_leaves: multi_output_tree: every leaf holds K weights, one per class.
        feature_names: optional names of its columns.
    """

    index: int
    name: str
    binner: Binner
    splits: dict[int, tuple[int, int, bool]] = field(default_factory=dict)
    trees: list[TreeStructure] = field(default_factory=list)
    base_margin: float | None = None
    objective: str | None = None
    num_class: int = 1
    vector_leaves: bool = False
    feature_names: list[str] | None = None

    def __post_init__(self) -> None:
        if self.feature_names is None and self.binner.names is not None:
            self.feature_names = list(self.binner.names)  # a DataFrame's column names

    @property
    def is_active(self) -> bool:
        return self.index == 0

    def leaf_masks(self, X: np.ndarray, start: int = 0) -> list[np.ndarray]:
        """Per tree (from tree ``start`` on), a bool array (n_leaves × rows): which leaves
        each row can reach using only this party's splits.

        Raises:
            ConfigError: X does not match the training columns or holds ±inf.
        """
        bins = self.binner.transform(X, who=self.name)
        n = bins.shape[0]
        out = []
        for tree in self.trees[start:]:
            masks = np.zeros((tree.n_leaves, n), dtype=bool)
            stack = [(0, np.ones(n, dtype=bool))]
            while stack:
                i, reach = stack.pop()
                node = tree.nodes[i]
                if "leaf" in node:
                    masks[node["leaf"]] = reach
                    continue
                if node["owner"] == self.index:
                    f, k, default_left = self.splits[node["split"]]
                    cat = bool(self.binner.categorical[f])
                    left = go_left(bins[:, f], k, default_left, cat)
                    stack.append((node["left"], reach & left))
                    stack.append((node["right"], reach & ~left))
                else:
                    stack.append((node["left"], reach))
                    stack.append((node["right"], reach))
            out.append(masks)
        return out

    def loss(self) -> Objective:
        """The model's :class:`~hefl.protocols.vf2boost.objectives.Objective`."""
        return objective_of(self.objective or "binary:logistic", self.num_class, self.vector_leaves)

    def combine_margin(self, masks_by_party: list[list[np.ndarray]], n: int) -> np.ndarray:
        """Active party: margins of ``n`` rows from every party's leaf masks (this party's
        included): (rows,), or (rows × K) for multi:softprob.

        Raises:
            ConfigError: called on a passive model or with inconsistent masks.
        """
        if not self.is_active or self.base_margin is None:
            raise ConfigError("only the active party's model holds leaf values")
        loss = self.loss()
        margin = loss.initial_margin(n, self.base_margin)
        for t, tree in enumerate(self.trees):
            reach = np.logical_and.reduce([m[t] for m in masks_by_party])
            if not np.all(reach.sum(axis=0) == 1):
                raise ConfigError(
                    f"tree {t}: the parties' leaf masks do not single out one leaf per row; "
                    "the party models do not belong to the same training"
                )
            loss.add_tree(margin, t, leaf_output(tree.leaf_values, reach))
        return margin

    def to_json(self) -> str:
        """Serialise this party's share (JSON, no pickle)."""
        return json.dumps(
            {
                "format": FORMAT,
                "index": self.index,
                "name": self.name,
                "cuts": self.binner.to_json(),
                "categories": [None if c is None else list(c) for c in self.binner.categories]
                if self.binner.categories
                else None,
                "splits": {str(k): list(v) for k, v in self.splits.items()},
                "trees": [
                    {
                        "nodes": t.nodes,
                        "leaf_values": t.leaf_values,
                        "gains": t.gains,
                        "covers": t.covers,
                    }
                    for t in self.trees
                ],
                "base_margin": self.base_margin,
                "objective": self.objective,
                "num_class": self.num_class,
                "vector_leaves": self.vector_leaves,
                "feature_names": self.feature_names,
            }
        )

    @classmethod
    def from_json(cls, s: str | bytes) -> PartyModel:
        """Parse :meth:`to_json` output.

        Raises:
            ConfigError: not a hefl VF2Boost party model, or malformed.
        """
        try:
            d = json.loads(s)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"not a JSON party model: {exc}") from None
        if not isinstance(d, dict) or d.get("format") not in (FORMAT, FORMAT_1):
            raise ConfigError(f"not a hefl VF2Boost party model (expected format {FORMAT!r})")
        try:
            splits = {int(k): _split_entry(v) for k, v in d["splits"].items()}
            trees = [
                TreeStructure(
                    nodes=[{k: int(v) for k, v in n.items()} for n in t["nodes"]],
                    leaf_values=_floats(t["leaf_values"]),
                    gains=_floats(t.get("gains")),
                    covers=_floats(t.get("covers")),
                )
                for t in d["trees"]
            ]
            return cls(
                index=int(d["index"]),
                name=str(d["name"]),
                binner=Binner.from_json(
                    d["cuts"], d.get("categories"), d.get("feature_names"), d["format"] == FORMAT_1
                ),
                splits=splits,
                trees=trees,
                base_margin=None if d["base_margin"] is None else float(d["base_margin"]),
                objective=_objective_entry(d.get("objective"), d["base_margin"]),
                num_class=int(d.get("num_class", 1)),
                vector_leaves=bool(d.get("vector_leaves", False)),
                feature_names=d.get("feature_names"),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"malformed party model: {exc!r}") from None


def _floats(v: Any) -> Any:
    """A saved list of floats, or of lists of floats (vector leaves), or None."""
    if v is None:
        return None
    return [[float(y) for y in x] if isinstance(x, list) else float(x) for x in v]


def _split_entry(v: Any) -> tuple[int, int, bool]:
    """A saved split: [feature, bin, default_left] ([feature, bin] in files written before
    learned default directions, where missing values always went left)."""
    if not isinstance(v, list) or len(v) not in (2, 3):
        raise ValueError(f"a split must be [feature, bin, default_left], got {v!r}")
    return int(v[0]), int(v[1]), bool(v[2]) if len(v) == 3 else True


def _objective_entry(name: Any, base_margin: Any) -> str | None:
    """A saved objective (an active party's file without one is binary:logistic)."""
    if name is None:
        return None if base_margin is None else "binary:logistic"
    if not isinstance(name, str) or name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {name!r}")
    return name


@dataclass
class FederatedModel:
    """All parties' shares of one trained model (as held together in a local run).

    In a real deployment each party only has its own :class:`PartyModel`; this container is
    what :func:`fit_local` returns and what the tests compare.

    Attributes:
        parties: the shares, active party first.
        evals: with an eval set, the metric after every round ({metric: [values]}).
        best_iteration: with early stopping, the best round (the model ends there).
    """

    parties: list[PartyModel]
    evals: dict[str, list[float]] | None = None
    best_iteration: int | None = None

    @property
    def active(self) -> PartyModel:
        return self.parties[0]

    @property
    def n_trees(self) -> int:
        return len(self.active.trees)

    def decision_function(self, X_parts: list[np.ndarray]) -> np.ndarray:
        """Raw margins for rows split vertically like the training data.

        Raises:
            ConfigError: wrong number of parts, row counts that differ, bad features.
        """
        if not isinstance(X_parts, list | tuple) or len(X_parts) != len(self.parties):
            raise ConfigError(
                f"expected {len(self.parties)} feature blocks (one per party), "
                f"got {len(X_parts) if isinstance(X_parts, list | tuple) else type(X_parts)}"
            )
        rows = {np.shape(X)[0] for X in X_parts}
        if len(rows) != 1:
            raise ConfigError(f"the parties' feature blocks have different row counts {rows}")
        masks = [p.leaf_masks(X) for p, X in zip(self.parties, X_parts, strict=True)]
        return self.active.combine_margin(masks, rows.pop())

    @property
    def objective(self) -> str:
        """The model's loss (XGBoost's name)."""
        return self.active.objective or "binary:logistic"

    def predict(self, X_parts: list[np.ndarray]) -> np.ndarray:
        """Predictions: probabilities of class 1 (or of the target, ``reg:logistic``), class
        probabilities (rows × K, ``multi:softprob``), or values (``reg:squarederror``)."""
        return self.active.loss().transform(self.decision_function(X_parts))

    def predict_proba(self, X_parts: list[np.ndarray]) -> np.ndarray:
        """Probability of class 1 for each row, or (rows × K) class probabilities.

        Raises:
            ConfigError: a regression model (use :meth:`predict`).
        """
        if self.objective == "reg:squarederror":
            raise ConfigError("a reg:squarederror model predicts values: use predict()")
        return self.predict(X_parts)

    def resolved_trees(self) -> list[list[dict[str, Any]]]:
        """Trees with every split resolved to (party, feature, bin) and leaf values: what
        the losslessness tests compare (needs all parties' shares)."""
        out = []
        for t, tree in enumerate(self.active.trees):
            leaf_values = tree.leaf_values
            if leaf_values is None:
                raise ConfigError(f"the active party's tree {t} has no leaf values")
            nodes: list[dict[str, Any]] = []
            for node in tree.nodes:
                if "leaf" in node:
                    nodes.append({"leaf": leaf_values[node["leaf"]]})
                else:
                    owner = self.parties[node["owner"]]
                    f, k, default_left = owner.splits[node["split"]]
                    nodes.append(
                        {
                            "party": node["owner"],
                            "feature": f,
                            "bin": k,
                            "default_left": default_left,
                            "left": node["left"],
                            "right": node["right"],
                        }
                    )
            out.append(nodes)
        return out

    def save(self, directory: str | Path) -> list[Path]:
        """Write one JSON file per party (``party-<index>.json``) into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = []
        for p in self.parties:
            path = d / f"party-{p.index}.json"
            path.write_text(p.to_json())
            paths.append(path)
        return paths

    @classmethod
    def load(cls, directory: str | Path) -> FederatedModel:
        """Read the files written by :meth:`save`.

        Raises:
            ConfigError: missing or malformed files.
        """
        d = Path(directory)
        files = sorted(d.glob("party-*.json"), key=lambda p: int(p.stem.split("-")[1]))
        if not files:
            raise ConfigError(f"no party-<i>.json files in {d}")
        parties = [PartyModel.from_json(p.read_text()) for p in files]
        if [p.index for p in parties] != list(range(len(parties))):
            raise ConfigError(f"party model files in {d} are not numbered 0..{len(parties) - 1}")
        return cls(parties=parties)
