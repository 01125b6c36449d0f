"""Feature importances from the parties' model shares, by XGBoost's importance types.

* ``weight``: how many splits use a feature.
* ``gain`` / ``total_gain``: the mean / total loss change of those splits.
* ``cover`` / ``total_cover``: the mean / total hessian sum of the nodes they split.

Split counts come from a party's own share: every party knows which splits are its own and on
which of its features. Gains and covers are known to the active party only (it scores every
split), so a passive party's ``gain`` and ``cover`` need the active party's share too (a local
run has all shares; a deployment decides whether the active party hands those numbers over).
The active party also gets per-party totals (:func:`party_importance`), which need only its own
share: it knows each split's owner, not its feature.
"""

from __future__ import annotations

import numpy as np

from hefl.errors import ConfigError
from hefl.protocols.vf2boost.model import FederatedModel, PartyModel

IMPORTANCE_TYPES = ("weight", "gain", "total_gain", "cover", "total_cover")


def _check(importance_type: str) -> None:
    if importance_type not in IMPORTANCE_TYPES:
        raise ConfigError(
            f"importance_type={importance_type!r} is not supported; use one of {IMPORTANCE_TYPES}"
        )


def _stats(active: PartyModel, t: int, kind: str) -> list[float]:
    values = getattr(active.trees[t], kind)
    if values is None:
        raise ConfigError(
            f"the active party's tree {t} holds no {kind} (a model saved before importances)"
        )
    return list(values)


def feature_importance(
    share: PartyModel, importance_type: str = "weight", active: PartyModel | None = None
) -> dict[str, float]:
    """Importances of ``share``'s own features (those used by at least one split).

    Args:
        share: a party's model share.
        importance_type: one of :data:`IMPORTANCE_TYPES`.
        active: the active party's share (needed for gain and cover of a passive share).

    Returns:
        Feature name (``share.feature_names``, else ``f<index>``) -> importance.

    Raises:
        ConfigError: an unknown type, or gain/cover of a passive share without the active's.
    """
    _check(importance_type)
    source = share if share.is_active else active
    if importance_type != "weight" and (source is None or not source.is_active):
        raise ConfigError(
            f"{importance_type} importances need the active party's share: only it knows the "
            f"gains and covers of party {share.name!r}'s splits"
        )
    kind = "covers" if "cover" in importance_type else "gains"
    totals: dict[int, float] = {}
    counts: dict[int, int] = {}
    for t, tree in enumerate(share.trees):
        values = _stats(source, t, kind) if source is not None and kind else None
        for i, node in enumerate(tree.nodes):
            if node.get("owner") != share.index:
                continue
            f = share.splits[node["split"]][0]
            counts[f] = counts.get(f, 0) + 1
            totals[f] = totals.get(f, 0.0) + (values[i] if values is not None else 0.0)
    names = share.feature_names
    out = {}
    for f in sorted(counts):
        name = names[f] if names is not None else f"f{f}"
        if importance_type == "weight":
            out[name] = float(counts[f])
        elif importance_type.startswith("total_"):
            out[name] = totals[f]
        else:
            out[name] = totals[f] / counts[f]
    return out


def party_importance(active: PartyModel, importance_type: str = "total_gain") -> dict[int, float]:
    """The active party's per-party totals: party index -> importance of all its splits.

    Raises:
        ConfigError: not the active party's share, or an unknown type.
    """
    _check(importance_type)
    if not active.is_active:
        raise ConfigError("per-party importances need the active party's share")
    kind = "covers" if "cover" in importance_type else "gains"
    totals: dict[int, list[float]] = {}
    for t, tree in enumerate(active.trees):
        values = _stats(active, t, kind)
        for i, node in enumerate(tree.nodes):
            if "owner" in node:
                totals.setdefault(node["owner"], []).append(values[i])
    if importance_type == "weight":
        return {p: float(len(v)) for p, v in sorted(totals.items())}
    if importance_type.startswith("total_"):
        return {p: float(np.sum(v)) for p, v in sorted(totals.items())}
    return {p: float(np.mean(v)) for p, v in sorted(totals.items())}


def all_importances(
    model: FederatedModel, importance_type: str = "weight"
) -> dict[str, dict[str, float]]:
    """Every party's feature importances, when all shares are at hand (a local run): party
    name -> feature -> value.

    Raises:
        ConfigError: an unknown importance type.
    """
    return {p.name: feature_importance(p, importance_type, model.active) for p in model.parties}


__all__ = ["IMPORTANCE_TYPES", "all_importances", "feature_importance", "party_importance"]
