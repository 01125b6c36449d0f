"""Evaluation during training: ``eval_set``, ``eval_metric`` and ``early_stopping_rounds``.

The eval set is split by columns like the training data: each party holds its own columns of
the eval rows, the active party their labels. After every round each passive party sends the
active party, for the round's trees, which leaves each eval row can still reach given its own
splits (:class:`~hefl.protocols.vf2boost.messages.Evaluate`, as in federated prediction: no
party sees another's columns); the active party combines them with its own, adds the round's
leaf weights to the eval margins, scores the metric, and tells every passive party whether
training stops and which round is the best so far
(:class:`~hefl.protocols.vf2boost.messages.Verdict`). With early stopping every party cuts its
share after the best round. The plaintext reference runs the same :class:`Evaluation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hefl import Party
from hefl.errors import ConfigError
from hefl.messages import gather, recv, send
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.messages import Evaluate, Verdict, refuse
from hefl.protocols.vf2boost.metrics import METRICS, evaluate
from hefl.protocols.vf2boost.model import PartyModel
from hefl.protocols.vf2boost.objectives import config_objective, leaf_output


@dataclass
class Evaluation:
    """The active party's eval margins, metric history and best round.

    Attributes:
        cfg: the training config.
        y: the eval labels.
        margin: the eval rows' margins so far.
        history: the metric after every round.
        best: the best round so far.
    """

    cfg: VF2BoostConfig
    y: np.ndarray
    margin: np.ndarray
    history: list[float] = field(default_factory=list)
    best: int = 0

    @classmethod
    def start(cls, cfg: VF2BoostConfig, y: np.ndarray, base_margin: float) -> Evaluation:
        """Margins of the eval rows before the first tree."""
        return cls(cfg, y, config_objective(cfg).initial_margin(len(y), base_margin))

    @property
    def per_round(self) -> int:
        return config_objective(self.cfg).trees_per_round

    def add_round(self, r: int, active: PartyModel, masks: list[list[np.ndarray]]) -> bool:
        """Add round ``r``'s trees from every party's leaf masks (party order, one (leaves ×
        rows) mask per tree of the round); returns whether training stops.

        Raises:
            ConfigError: masks that do not single out one leaf per row.
        """
        loss = config_objective(self.cfg)
        for i in range(self.per_round):
            t = r * self.per_round + i
            reach = np.logical_and.reduce([m[i] for m in masks])
            if not np.all(reach.sum(axis=0) == 1):
                raise ConfigError(f"tree {t}: the parties' eval leaf masks do not agree")
            loss.add_tree(self.margin, t, leaf_output(active.trees[t].leaf_values, reach))
        value = evaluate(self.cfg.metric, self.y, loss.transform(self.margin))
        self.history.append(value)
        higher = METRICS[self.cfg.metric][1]
        best = self.history[self.best]
        if r and (value > best if higher else value < best):
            self.best = r
        esr = self.cfg.early_stopping_rounds
        return esr is not None and r - self.best >= esr

    def summary(self) -> dict[str, Any]:
        """The metric history and, with early stopping, the best round (the model's end)."""
        best = self.best if self.cfg.early_stopping_rounds is not None else None
        return {"evals": {self.cfg.metric: list(self.history)}, "best_iteration": best}


def cut(model: PartyModel, rounds: int, per_round: int) -> None:
    """Keep the first ``rounds`` rounds of ``model``'s trees, and only the splits they use."""
    model.trees = model.trees[: rounds * per_round]
    used = {n["split"] for t in model.trees for n in t.nodes if n.get("owner") == model.index}
    model.splits = {i: s for i, s in model.splits.items() if i in used}


def check_eval_masks(name: str, reply: Evaluate, leaves: list[int], n: int) -> list[np.ndarray]:
    """A passive party's eval leaf masks, checked against the round's trees and ``n`` rows.

    Raises:
        ProtocolError: another row count, or masks of other trees (names the party and field).
    """
    if reply.n_rows != n:
        raise refuse(name, Evaluate, "n_rows", f"is {reply.n_rows}, the eval set has {n} rows")
    shapes = [m.shape[0] for m in reply.masks]
    if shapes != leaves:
        raise refuse(name, Evaluate, "masks", f"hold {shapes} leaves, the trees have {leaves}")
    return [np.unpackbits(m, axis=1, count=n).astype(bool) for m in reply.masks]


async def evaluate_round(
    party: Party,
    evaluation: Evaluation,
    model: PartyModel,
    X_eval: Any,
    passives: list[str],
    r: int,
) -> bool:
    """The active party's evaluation of round ``r``: gather, score, send the verdict.

    Returns:
        Whether training stops here.

    Raises:
        ProtocolError: a passive party's masks do not fit the round (named).
    """
    K, n = evaluation.per_round, len(evaluation.y)
    own = model.leaf_masks(X_eval, start=r * K)
    leaves = [t.n_leaves for t in model.trees[r * K :]]
    replies = await gather(party, Evaluate, peers=passives, r=r)
    masks = [own] + [check_eval_masks(name, replies[name], leaves, n) for name in passives]
    stop = evaluation.add_round(r, model, masks)
    for name in passives:
        await send(party, name, Verdict(stop=stop, best=evaluation.best), r=r)
    return stop


async def passive_round(
    party: Party, model: PartyModel, X_eval: Any, active: str, r: int, per_round: int
) -> Verdict:
    """A passive party's part of round ``r``'s evaluation: its masks, then the verdict."""
    masks = model.leaf_masks(X_eval, start=r * per_round)
    packed = [np.packbits(m, axis=1) for m in masks]
    await send(party, active, Evaluate(n_rows=int(np.shape(X_eval)[0]), masks=packed), r=r)
    verdict = await recv(party, active, Verdict, r=r)
    if verdict.best > r:
        raise refuse(active, Verdict, "best", f"is round {verdict.best}, after round {r}")
    return verdict


__all__ = [
    "Evaluation",
    "check_eval_masks",
    "cut",
    "evaluate_round",
    "passive_round",
]
