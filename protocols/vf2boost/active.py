"""The active party's role: labels, its own features and the only private key.

Setup (:mod:`~hefl.protocols.vf2boost.active_setup`): greet the passive parties, make the keys,
warm the executor's workers and start the obfuscator pool. Then per tree
(:mod:`~hefl.protocols.vf2boost.active_tree`): compute g and h, encode them with one global
fixed-point scale, encrypt and stream them (:mod:`~hefl.protocols.vf2boost.active_stream`),
and grow the tree layer by layer, the passive parties' candidates decrypted and checked by
:mod:`~hefl.protocols.vf2boost.decode`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hefl import Party, task_group
from hefl.crypto import PrivateKey, PublicKey
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
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.model import PartyModel
from hefl.protocols.vf2boost.objectives import config_objective
from hefl.protocols.vf2boost.reference import check_labels
from hefl.protocols.vf2boost.tree import candidate_mask

Progress = Callable[[int, int, float], None]


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
) -> dict[str, Any]:
    """Run the active party of a VF2Boost training.

    Args:
        party: the runtime's Party.
        X: this party's features, NaN = missing.
        y: labels (0/1, or the objective's targets).
        cfg: the training config.
        passives: the passive parties' names in party-index order (default: sorted peers).
        keypair: an existing Paillier keypair (default: a fresh one of ``cfg.key_bits``).
        progress: called as ``progress(trees_done, n_trees, seconds_of_last_tree)``.
        prefill: with ``cfg.precompute``, make every tree's obfuscators before the first
            tree (an offline phase; tree times are then online times).

    Returns:
        A dict with ``model`` (this party's PartyModel as JSON), ``statistics``,
        ``tree_seconds`` (a list) and ``hit_rate`` (a float, or None without optimistic
        splitting).

    Raises:
        ConfigError: bad features/labels/config, or a passive party whose rows or config do
            not match (named in the message).
        ProtocolError: a passive party sent malformed or inconsistent data (named).
        PeerFailed: a passive party failed or disconnected.
    """
    X = check_features(X, who=f"party {party.name!r}")
    who = f"party {party.name!r}"
    yf = check_labels(y, X.shape[0], who=who, objective=cfg.objective, num_class=cfg.num_class)
    n = X.shape[0]
    passives = list(passives) if passives is not None else sorted(party.peers)
    n_features = await greet(party, n, cfg, passives)
    crypto = await start_keys(party, n, cfg, passives, keypair)
    async with task_group() as background:
        background.create_task(warm_up(party, crypto, cfg))
        need = start_obfuscators(crypto, cfg, n, prefill)
        try:
            if prefill and crypto.pool is not None:
                await prefill_obfuscators(party, crypto.pool, need)
            run = _training(party, X, cfg, crypto, n_features)
            tree_seconds = await _train(run, yf, progress, prefill)
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
    }


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
    run: Training, y: np.ndarray, progress: Progress | None, prefill: bool
) -> list[float]:
    """Grow every tree; returns the seconds each took."""
    cfg, pool = run.cfg, run.crypto.pool
    objective = config_objective(cfg)
    run.model.base_margin = objective.base_margin(y, cfg.base_score)
    run.model.objective = objective.name
    run.model.num_class = objective.num_class
    margin = objective.initial_margin(len(y), run.model.base_margin)
    tree_seconds: list[float] = []
    for _ in range(cfg.n_estimators):
        for g, h in objective.round_gradients(margin, y):
            t = len(tree_seconds)
            t0 = time.perf_counter()
            if pool is not None and not prefill:
                # this tree takes what is buffered; refill only what later trees will use
                later = run.crypto.per_row * len(y) * (cfg.n_trees - t - 1)
                pool.resize(min(pool.capacity, later))
            objective.add_tree(margin, t, await grow_tree(run, t, g, h))
            tree_seconds.append(time.perf_counter() - t0)
            if progress is not None:
                progress(t + 1, cfg.n_trees, tree_seconds[-1])
    return tree_seconds
