"""Run a whole VF2Boost federation from one call: fit_local (one process) and fit (any mode)."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import hefl
from hefl.protocols.vf2boost.active import active_party
from hefl.protocols.vf2boost.binning import Binner
from hefl.protocols.vf2boost.checkpoint import with_checkpoints
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.frame import is_frame
from hefl.protocols.vf2boost.model import FederatedModel, PartyModel
from hefl.protocols.vf2boost.objectives import training_plan
from hefl.protocols.vf2boost.passive import passive_party
from hefl.protocols.vf2boost.reference import check_eval_set, check_parts, party_names


@dataclass
class FitResult:
    """What a federated training produced and what it cost.

    Attributes:
        model: all parties' shares of the model.
        seconds: wall-clock seconds of the whole run (key generation and setup included).
        tree_seconds: the active party's seconds per tree.
        bytes_sent: bytes each party sent, by party name.
        bytes_received: bytes each party received, by party name.
        statistics: the runtime's per-party statistics (busy/idle seconds, messages, spans).
        hit_rate: optimistic-split hit rate (None when optimistic splitting was off).
        trace: the runtime's :class:`hefl.Trace` (``save_gantt``, ``save_chrome``).
        evals: with an eval set, the metric after every round ({metric: [values]}).
        best_iteration: with early stopping, the best round (the model ends there).
        config: the config the parties trained with, ``frac_bits`` resolved to an int.
    """

    model: FederatedModel
    seconds: float
    tree_seconds: list[float]
    bytes_sent: dict[str, int]
    bytes_received: dict[str, int]
    statistics: dict[str, dict[str, Any]]
    hit_rate: float | None
    trace: Any = field(default=None, repr=False)
    evals: dict[str, list[float]] | None = None
    best_iteration: int | None = None
    config: VF2BoostConfig | None = None

    @classmethod
    def from_run(cls, result: Any, names: list[str], seconds: float) -> FitResult:
        """Collect a FitResult from ``hefl.run``'s result of the VF2Boost roles.

        Args:
            result: the :class:`hefl.RunResult` (every party's role output).
            names: the party names, active party first.
            seconds: the wall time of the run.
        """
        stats = dict(
            getattr(result, "statistics", {}) or {n: result[n]["statistics"] for n in names}
        )
        active = result[names[0]]
        evals, best = active.get("evals"), active.get("best_iteration")
        return cls(
            model=FederatedModel(
                parties=[PartyModel.from_json(result[n]["model"]) for n in names],
                evals=evals,
                best_iteration=best,
            ),
            evals=evals,
            best_iteration=best,
            seconds=seconds,
            tree_seconds=list(result[names[0]]["tree_seconds"]),
            bytes_sent={n: int(stats[n].get("bytes_sent", 0)) for n in names},
            bytes_received={n: int(stats[n].get("bytes_received", 0)) for n in names},
            statistics=stats,
            hit_rate=result[names[0]].get("hit_rate"),
            trace=getattr(result, "trace", None),
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly one-screen summary."""
        return {
            "trees": self.model.n_trees,
            "seconds": self.seconds,
            "seconds_per_tree": float(np.mean(self.tree_seconds)) if self.tree_seconds else 0.0,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "idle_share": {
                p: (s.get("idle_seconds", 0.0) / s["wall_seconds"])
                if s.get("wall_seconds")
                else 0.0
                for p, s in self.statistics.items()
            },
            "hit_rate": self.hit_rate,
        }


def _check_budget(cfg: VF2BoostConfig, n_rows: int, keypair: Any) -> VF2BoostConfig:
    """Resolve ``frac_bits`` and refuse an impossible bit budget before any party starts.

    Returns:
        ``cfg`` with ``frac_bits`` an int (what every party resolves it to).

    Raises:
        BitBudgetError: (a ConfigError and a PackingOverflowError) the plan does not fit the
            key.
    """
    cfg = cfg.resolve(n_rows)
    key_bits = keypair[0].n_bits if keypair is not None else cfg.key_bits
    training_plan(cfg, n_rows, key_bits)
    return cfg


def fit(
    X_parts: list[np.ndarray],
    y: np.ndarray,
    cfg: VF2BoostConfig | None = None,
    *,
    transport: str = "inproc",
    processes: bool = False,
    names: list[str] | None = None,
    keypair: Any = None,
    progress: Callable[[int, int, float], None] | None = None,
    max_workers: int | None = None,
    timeout: float | None = None,
    executor: Any = "process",
    prefill: bool = False,
    eval_set: tuple[list[Any], Any] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> FitResult:
    """Train VF2Boost with every party run by this call.

    Args:
        X_parts: one feature block per party; ``X_parts[0]`` belongs to the active party.
        y: labels (0/1, or the objective's targets; held by the active party).
        cfg: the config (default :class:`VF2BoostConfig`).
        transport: ``"inproc"`` or ``"zmq"`` (``processes=True`` always uses ZeroMQ).
        processes: one OS process per party.
        names: party names (default "active", "passive1", ...).
        keypair: an existing (PublicKey, PrivateKey) for the active party (tests reuse one).
        progress: ``progress(trees_done, n_trees, seconds_of_last_tree)``, called in the
            active party's process after every tree (with ``processes=True`` it must be
            picklable; its output then comes from the active party's process).
        max_workers: processes of each party's crypto pool.
        timeout: fail if the run takes longer (seconds).
        executor: where crypto work is offloaded (see :func:`hefl.run`); its worker processes
            re-import the main script: guard a script with ``if __name__ == "__main__":``.
        prefill: fill the active party's obfuscator pool before tree 0 (needs ``cfg.precompute``).
        eval_set: (feature blocks split like ``X_parts``, labels): evaluated by federated
            prediction after every round with ``cfg.metric``; with
            ``cfg.early_stopping_rounds`` training stops and the model is cut at the best round.
        checkpoint_dir: save every party's share there after every tree (atomically).
        resume: continue those checkpoints from the last tree all parties hold.

    Returns:
        A :class:`FitResult`.

    Raises:
        ConfigError: invalid data or config, or an unguarded script (before any party starts).
        BitBudgetError: the bit budget does not fit the key (a ConfigError and a
            PackingOverflowError; ``frac_bits="auto"`` only fails when no precision fits).
        PeerFailed: a party failed during training (names it and why).
    """
    cfg = cfg or VF2BoostConfig()
    parts, yf = check_parts(X_parts, y, cfg.objective, cfg.num_class)
    cfg = _check_budget(cfg, len(yf), keypair)
    for name, X in zip(names or party_names(len(parts)), parts, strict=False):
        if is_frame(X):  # too many categories: refused here, before any party starts
            Binner.fit(X, cfg.max_bin, who=name)
    E_parts, y_eval = (
        check_eval_set(eval_set, parts, cfg)
        if eval_set is not None
        else ([None] * len(parts), None)
    )
    names = list(names) if names is not None else party_names(len(parts))
    if len(names) != len(parts) or len(set(names)) != len(names):
        raise hefl.ConfigError(f"need {len(parts)} distinct party names, got {names}")
    active_kw = {"keypair": keypair, "progress": progress, "prefill": prefill}
    roles = _roles(names, parts, yf, cfg, (E_parts, y_eval), active_kw)
    t0 = time.perf_counter()
    result = hefl.run(
        with_checkpoints(roles, checkpoint_dir, resume),
        transport="zmq" if processes else transport,  # processes always talk over ZeroMQ
        processes=processes,
        executor=executor,
        max_workers=max_workers,
        timeout=timeout,
    )
    out = FitResult.from_run(result, names, time.perf_counter() - t0)
    out.config = cfg
    return out


def _roles(
    names: list[str],
    parts: list[Any],
    y: np.ndarray,
    cfg: VF2BoostConfig,
    evals: tuple[list[Any], Any],
    active_kw: dict[str, Any],
) -> dict[str, Any]:
    """Every party's role for :func:`hefl.run` (the active party's with ``active_kw``)."""
    E_parts, y_eval = evals
    roles: dict[str, Any] = {
        names[0]: functools.partial(
            active_party,
            X=parts[0],
            y=y,
            cfg=cfg,
            passives=names[1:],
            eval_set=None if y_eval is None else (E_parts[0], y_eval),
            **active_kw,
        )
    }
    for name, X, E in zip(names[1:], parts[1:], E_parts[1:], strict=True):
        roles[name] = functools.partial(passive_party, X=X, cfg=cfg, active=names[0], X_eval=E)
    return roles


def fit_local(
    X_parts: list[np.ndarray], y: np.ndarray, cfg: VF2BoostConfig | None = None, **kwargs: Any
) -> FederatedModel:
    """Train VF2Boost with all parties as coroutines in this process (inproc transport).

    Scripts: the crypto work runs in worker processes, which re-import the main script; keep
    a script's top-level code under ``if __name__ == "__main__":`` (see :func:`fit`).

    Args:
        X_parts: one feature block per party; ``X_parts[0]`` belongs to the active party.
        y: labels (0/1, or the objective's targets).
        cfg: the config.
        kwargs: passed to :func:`fit` (e.g. ``keypair``, ``progress``).

    Returns:
        The :class:`FederatedModel`.
    """
    return fit(X_parts, y, cfg, **kwargs).model
