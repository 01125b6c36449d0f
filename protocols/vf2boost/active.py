"""The active party's role: labels, its own features and the only private key.

Setup (:mod:`~hefl.protocols.vf2boost.active_setup`): greet the passive parties, make the keys,
warm the executor's workers and start the obfuscator pool. Then per tree
(:mod:`~hefl.protocols.vf2boost.active_tree`): compute g and h, encode them with one global
fixed-point scale, encrypt and stream them (:mod:`~hefl.protocols.vf2boost.active_stream`),
and grow the tree layer by layer, the passive parties' candidates decrypted and checked by
:mod:`~hefl.protocols.vf2boost.decode`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hefl import Party, task_group
from hefl.crypto import PrivateKey, PublicKey
from hefl.errors import ConfigError
from hefl.protocols.vf2boost.active_setup import (
    ActiveCrypto,
    greet,
    prefill_obfuscators,
    start_keys,
    start_obfuscators,
    warm_up,
)
from hefl.protocols.vf2boost.active_tree import Training, grow_tree
from hefl.protocols.vf2boost.binning import MISSING_BIN, Binner, check_features
from hefl.protocols.vf2boost.checkpoint import TreeCheckpoint
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.evaluation import Evaluation, cut, eval_digest, evaluate_round
from hefl.protocols.vf2boost.frame import values_of
from hefl.protocols.vf2boost.model import PartyModel
from hefl.protocols.vf2boost.objectives import config_objective
from hefl.protocols.vf2boost.reference import check_labels
from hefl.protocols.vf2boost.tree import candidate_mask

Progress = Callable[..., None]


async def active_party(
    party: Party,
    X: np.ndarray,
    y: np.ndarray,
    cfg: VF2BoostConfig,
    *,
    passives: list[str] | None = None,
    keypair: tuple[PublicKey, PrivateKey] | None = None,
    progress: Progress | None = None,
    prefill: bool = False,
    eval_set: tuple[Any, Any] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run the active party of a VF2Boost training.

    Args:
        party: the runtime's Party.
        X: this party's features, NaN = missing.
        y: labels (0/1, or the objective's targets).
        cfg: the training config.
        passives: the passive parties' names in party-index order (default: sorted peers).
        keypair: an existing Paillier keypair (default: a fresh one of ``cfg.key_bits``).
        progress: called as ``progress(trees_done, n_trees, seconds_of_last_tree)`` after
            every tree; with an eval set, the last tree of a round adds the keyword
            ``metrics={eval_metric: value}``.
        prefill: with ``cfg.precompute``, make every tree's obfuscators before the first
            tree (an offline phase; tree times are then online times).
        eval_set: (this party's eval columns, the eval labels): scored after every round
            with ``cfg.metric`` (see :mod:`~hefl.protocols.vf2boost.evaluation`).
        checkpoint_dir: write this party's share after every tree into
            ``<checkpoint_dir>/<party name>`` (see :mod:`~hefl.protocols.vf2boost.checkpoint`).
        resume: continue the checkpoint found there, from the last tree every party holds
            (with an eval set, also its metric history, best round and early stopping).

    Returns:
        A dict with ``model`` (this party's PartyModel as JSON), ``statistics``,
        ``tree_seconds`` (a list), ``hit_rate`` (a float, or None without optimistic
        splitting), ``evals`` and ``best_iteration`` (None without an eval set).

    Raises:
        ConfigError: bad features/labels/config, a passive party whose rows or config do
            not match (named in the message), or a checkpoint of another training.
        ProtocolError: a passive party sent malformed or inconsistent data (named).
        PeerFailed: a passive party failed or disconnected.
    """
    X = check_features(X, who=f"party {party.name!r}")
    who = f"party {party.name!r}"
    yf = check_labels(y, X.shape[0], who=who, objective=cfg.objective, num_class=cfg.num_class)
    n, cfg = X.shape[0], cfg.resolve(X.shape[0])  # "auto" frac_bits: one int, greet checks
    passives = list(passives) if passives is not None else sorted(party.peers)
    evaluated = _eval_data(eval_set, X, cfg, who)
    data = (values_of(X, who), yf)
    ckpt = TreeCheckpoint.for_active(checkpoint_dir, resume, party.name, passives, cfg, data)
    n_eval = 0 if evaluated is None else len(evaluated[1])
    n_features = await greet(party, n, cfg, passives, n_eval)
    crypto = await start_keys(party, n, cfg, passives, ckpt.keypair(keypair, cfg, party))
    await ckpt.agree(party, party.name, passives)
    async with task_group() as background:
        background.create_task(warm_up(party, crypto, cfg))
        need = start_obfuscators(party, crypto, cfg, n, prefill)
        try:
            if prefill and crypto.pool is not None:
                await prefill_obfuscators(party, crypto.pool, need)
            run = _training(party, X, cfg, crypto, n_features)
            tree_seconds = await _train(run, yf, (progress, prefill), evaluated, ckpt)
        finally:
            if crypto.pool is not None:
                crypto.pool.close()
    return {
        "model": run.model.to_json(),
        "statistics": party.statistics(),
        "tree_seconds": tree_seconds,
        "hit_rate": (run.hits / run.speculated if run.speculated else None)
        if cfg.optimistic
        else None,
        **(run.evaluation.summary() if run.evaluation is not None else {}),
    }


def _eval_data(
    eval_set: tuple[Any, Any] | None, X: Any, cfg: VF2BoostConfig, who: str
) -> tuple[Any, np.ndarray] | None:
    """The checked eval columns and labels (None without an eval set).

    Raises:
        ConfigError: eval columns that differ from the training columns, or bad labels.
    """
    if eval_set is None:
        return None
    X_eval = check_features(eval_set[0], who=f"{who} eval set")
    if X_eval.shape[1] != X.shape[1]:
        raise ConfigError(
            f"{who}: the eval set has {X_eval.shape[1]} columns but the training data "
            f"{X.shape[1]}; the eval set must be split by columns like the training data"
        )
    y_eval = check_labels(
        eval_set[1], X_eval.shape[0], f"{who} eval set", cfg.objective, cfg.num_class
    )
    return X_eval, y_eval


def _training(
    party: Party,
    X: np.ndarray,
    cfg: VF2BoostConfig,
    crypto: ActiveCrypto,
    n_features: dict[str, int],
) -> Training:
    """Bin this party's features and gather what every tree needs."""
    binner = Binner.fit(X, cfg.max_bin, who=party.name)
    width = int(binner.n_bins.max()) if binner.n_features else 1
    bins = binner.transform(X)
    return Training(
        party=party,
        cfg=cfg,
        crypto=crypto,
        sessions={name: crypto.session(cfg, k) for name, k in n_features.items()},
        bins=bins,
        width=width,
        mask=candidate_mask(
            binner.n_bins, width, (bins == MISSING_BIN).any(axis=0), binner.categorical
        ),
        model=PartyModel(index=0, name=party.name, binner=binner),
    )


async def _train(
    run: Training,
    y: np.ndarray,
    hooks: tuple[Progress | None, bool],
    evaluated: tuple[Any, np.ndarray] | None,
    ckpt: TreeCheckpoint,
) -> list[float]:
    """Grow every tree not restored from the checkpoint, round by round (until early
    stopping); returns the seconds each took."""
    (progress, prefill), cfg, pool = hooks, run.cfg, run.crypto.pool
    objective = config_objective(cfg)
    margin, start, partial = _start_margin(run, y, ckpt)
    K, tree_seconds = objective.trees_per_round, []
    digest, first = _start_evaluation(run, evaluated, ckpt, start // K)
    for r in range(first, cfg.n_estimators):
        grads = objective.round_gradients(margin, y)  # from the round's start, as XGBoost
        for t, out in partial:  # a resumed round's trees already grown
            objective.add_tree(margin, t, out)
        partial = []
        for t in range(max(start, r * K), (r + 1) * K):
            t0 = time.perf_counter()
            if pool is not None and not prefill:
                # this tree takes what is buffered; refill only what later trees will use
                later = run.crypto.per_row * len(y) * (cfg.n_trees - t - 1)
                pool.resize(min(pool.capacity, later))
            out = await grow_tree(run, t, *grads[t - r * K])
            objective.add_tree(margin, t, out)
            if run.evaluation is None or t + 1 < (r + 1) * K:
                await ckpt.save(t, run.model, out)  # else saved with the round's evaluation
            tree_seconds.append(time.perf_counter() - t0)
            if progress is not None and (run.evaluation is None or (t + 1) % K):
                progress(t + 1, cfg.n_trees, tree_seconds[-1])
        if run.evaluation is not None and evaluated is not None:
            ev = run.evaluation
            stop = await evaluate_round(run.party, ev, run.model, evaluated[0], run.passives, r)
            await ckpt.save((r + 1) * K - 1, run.model, out, ev.state(digest))
            if progress is not None:
                metrics = {cfg.metric: ev.history[-1]}
                progress((r + 1) * K, cfg.n_trees, tree_seconds[-1], metrics=metrics)
            if stop:
                break
    if run.evaluation is not None and cfg.early_stopping_rounds is not None:
        cut(run.model, run.evaluation.best + 1, K)
    return tree_seconds


def _start_evaluation(
    run: Training, evaluated: tuple[Any, np.ndarray] | None, ckpt: TreeCheckpoint, first: int
) -> tuple[str, int]:
    """Start the evaluation (none without an eval set), continuing the checkpoint's.

    Returns:
        (the eval set's digest, the first round to grow: none left if training had stopped).

    Raises:
        ConfigError: the checkpoint's rounds have no evaluation state or another eval set's.
    """
    if evaluated is None:
        return "", first
    X_eval, y_eval = evaluated
    digest = eval_digest(values_of(X_eval, f"party {run.party.name!r} eval set"), y_eval)
    run.evaluation = Evaluation.start(run.cfg, y_eval, run.model.base_margin)
    rounds, state, where = ckpt.round_state(run.evaluation.per_round)
    if rounds:
        run.evaluation.restore(state, rounds, digest, where)
    return digest, run.cfg.n_estimators if run.evaluation.stopped else first


def _start_margin(
    run: Training, y: np.ndarray, ckpt: TreeCheckpoint
) -> tuple[np.ndarray, int, list[tuple[int, np.ndarray]]]:
    """The model's base, and the margins at the start of the first round to grow.

    Returns:
        (margins, trees restored from the checkpoint, the restored trees of an unfinished
        round and their outputs: added after that round's gradients are taken).
    """
    cfg = run.cfg
    objective = config_objective(cfg)
    run.model.base_margin = objective.base_margin(y, cfg.base_score)
    run.model.objective = objective.name
    run.model.num_class = objective.num_class
    run.model.vector_leaves = objective.vector_leaves
    start = ckpt.restore(run.model)
    first = start // objective.trees_per_round * objective.trees_per_round
    partial: list[tuple[int, np.ndarray]] = []

    def add(margin: np.ndarray, t: int, out: np.ndarray) -> None:
        if t < first:
            objective.add_tree(margin, t, out)
        else:
            partial.append((t, out))

    margin = ckpt.replay(objective.initial_margin(len(y), run.model.base_margin), add)
    return margin, start, partial
