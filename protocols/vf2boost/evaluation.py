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

A checkpointed training records, with every round's last tree, what early stopping needs to
go on exactly as if never interrupted: the active party :meth:`Evaluation.state` (the metric
history, the best round, whether training stopped, and the eval margins bit for bit), a
passive party the verdict it got (:func:`verdict_state`); both with a digest of their eval
columns, so that a resume with another eval set is refused.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hefl import Party
from hefl._checkpoint import fingerprint
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
        stopped: early stopping ended the training after the last round.
    """

    cfg: VF2BoostConfig
    y: np.ndarray
    margin: np.ndarray
    history: list[float] = field(default_factory=list)
    best: int = 0
    stopped: bool = False

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
        self.stopped = esr is not None and r - self.best >= esr
        return self.stopped

    def state(self, data: str) -> dict[str, Any]:
        """What a checkpoint keeps after a round: history, best round, stop flag and the
        eval margins' exact bits.

        Args:
            data: the eval set's digest (:func:`eval_digest`).

        Returns:
            A JSON-ready dict.
        """
        margin = np.ascontiguousarray(self.margin, dtype=np.float64)
        return {
            "data": data,
            "history": list(self.history),
            "best": self.best,
            "stop": self.stopped,
            "shape": list(margin.shape),
            "margin": base64.b64encode(margin.tobytes()).decode(),
        }

    def restore(self, state: Any, rounds: int, data: str, where: str) -> None:
        """Continue from a checkpoint's :meth:`state` after ``rounds`` rounds.

        Args:
            state: the ``eval`` entry of the record of the last whole round (None if absent).
            rounds: the whole rounds kept.
            data: this run's eval set digest.
            where: the record's path, for messages.

        Raises:
            ConfigError: no state (the checkpoint was made without an eval set), another
                eval set, or a malformed state (``where`` names the record).
        """
        _check_state(state, rounds, data, where)
        try:
            margin = np.frombuffer(base64.b64decode(state["margin"]), dtype=np.float64)
            margin = margin.reshape([int(d) for d in state["shape"]])
            history = [float(v) for v in state["history"]]
            best, stop = int(state["best"]), bool(state["stop"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed evaluation state in {where}: {exc!r}") from None
        if margin.shape != self.margin.shape or len(history) != rounds or best >= rounds:
            raise ConfigError(
                f"malformed evaluation state in {where}: it does not fit the eval set"
            )
        self.margin, self.history, self.best, self.stopped = margin.copy(), history, best, stop

    def summary(self) -> dict[str, Any]:
        """The metric history and, with early stopping, the best round (the model's end)."""
        best = self.best if self.cfg.early_stopping_rounds is not None else None
        return {"evals": {self.cfg.metric: list(self.history)}, "best_iteration": best}


def eval_digest(*arrays: Any) -> str:
    """The digest of an eval set.

    Args:
        arrays: this party's eval columns (and, at the active party, the eval labels).

    Returns:
        A hex SHA-256.
    """
    return fingerprint(*arrays)


def verdict_state(verdict: Verdict, data: str) -> dict[str, Any]:
    """What a passive party's checkpoint keeps after a round.

    Args:
        verdict: the round's verdict from the active party.
        data: this party's eval set digest.

    Returns:
        A JSON-ready dict.
    """
    return {"data": data, "best": verdict.best, "stop": verdict.stop}


def restore_verdict(state: Any, rounds: int, data: str, where: str) -> Verdict:
    """A passive party's verdict of the last round a checkpoint holds (see
    :func:`verdict_state`).

    Args:
        state: the ``eval`` entry of the record of the last whole round (None if absent).
        rounds: the whole rounds kept.
        data: this run's eval set digest.
        where: the record's path, for messages.

    Returns:
        The verdict.

    Raises:
        ConfigError: as :meth:`Evaluation.restore`.
    """
    _check_state(state, rounds, data, where)
    try:
        verdict = Verdict(stop=bool(state["stop"]), best=int(state["best"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed evaluation state in {where}: {exc!r}") from None
    if not 0 <= verdict.best < rounds:
        raise ConfigError(f"malformed evaluation state in {where}: best round {verdict.best}")
    return verdict


def _check_state(state: Any, rounds: int, data: str, where: str) -> None:
    """Refuse a missing state or one of another eval set."""
    if not isinstance(state, dict):
        raise ConfigError(
            f"the checkpoint holds {rounds} round(s) trained without an eval set ({where}); "
            "resume without eval_set, or start a new checkpoint"
        )
    if state.get("data") != data:
        raise ConfigError(
            f"the checkpoint's rounds were evaluated on another eval set ({where}); resume "
            "with the same eval_set"
        )


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
    "eval_digest",
    "evaluate_round",
    "passive_round",
    "restore_verdict",
    "verdict_state",
]
