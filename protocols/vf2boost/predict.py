"""Federated prediction in one round.

Each passive party computes, per tree, which leaves every row can still reach using only its
own splits (bit-packed masks) and sends them to the active party, which ANDs them with its own
and sums the leaf weights. The active party learns, per row, the leaf each row lands in (as in
SecureBoost); passive parties learn nothing from prediction, and no threshold leaves its owner.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

import hefl
from hefl.errors import ConfigError, ProtocolError
from hefl.protocols.vf2boost import tags
from hefl.protocols.vf2boost.model import FederatedModel, PartyModel
from hefl.protocols.vf2boost.tree import sigmoid


def _as_party_model(model: PartyModel | str) -> PartyModel:
    return model if isinstance(model, PartyModel) else PartyModel.from_json(model)


async def predict_passive(
    party: Any, X: np.ndarray, model: PartyModel | str, *, active: str = "active"
) -> None:
    """A passive party's side of federated prediction.

    Args:
        party: the runtime's Party.
        X: this party's features of the rows to score.
        model: its :class:`PartyModel` (or its JSON).
        active: the active party's name.

    Raises:
        ConfigError: features that do not match the model.
    """
    pm = _as_party_model(model)
    masks = pm.leaf_masks(X)
    await party.send(
        active,
        tags.PREDICT,
        {
            "n_rows": int(np.shape(X)[0]),
            "masks": [np.packbits(m, axis=1) for m in masks],
        },
    )


async def predict_active(
    party: Any, X: np.ndarray, model: PartyModel | str, *, passives: list[str] | None = None
) -> np.ndarray:
    """The active party's side: returns the probabilities of class 1.

    Raises:
        ConfigError: features that do not match, or row counts that differ between parties.
        ProtocolError: a passive party's masks do not fit the model.
    """
    pm = _as_party_model(model)
    passives = list(passives) if passives is not None else sorted(party.peers)
    own = pm.leaf_masks(X)
    n = own[0].shape[1] if own else np.shape(X)[0]
    replies = await party.gather(tags.PREDICT, peers=passives)
    all_masks = [own]
    for name in passives:
        r = replies[name]
        if not isinstance(r, dict) or r.get("n_rows") != n:
            raise ConfigError(
                f"party {name!r} scored {r.get('n_rows') if isinstance(r, dict) else '?'} rows "
                f"but the active party has {n}; the rows must be aligned"
            )
        try:
            masks = [
                np.unpackbits(np.asarray(m, dtype=np.uint8), axis=1, count=n).astype(bool)
                for m in r["masks"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"party {name!r} sent malformed leaf masks: {exc!r}") from None
        if len(masks) != len(pm.trees) or any(
            m.shape != (t.n_leaves, n) for m, t in zip(masks, pm.trees, strict=True)
        ):
            raise ProtocolError(f"party {name!r} sent leaf masks of another model")
        all_masks.append(masks)
    try:
        margin = pm.combine_margin(all_masks)
    except ConfigError as exc:
        raise ProtocolError(f"the parties' models do not match: {exc}") from None
    return sigmoid(margin)


def predict(
    X_parts: list[np.ndarray],
    model: FederatedModel,
    *,
    transport: str = "inproc",
    processes: bool = False,
    names: list[str] | None = None,
) -> np.ndarray:
    """Federated prediction with every party run by this call (one message per passive party).

    Args:
        X_parts: one feature block per party, active first.
        model: the parties' model shares.
        transport, processes: as :func:`hefl.run`.
        names: party names (default: the names stored in the model).

    Returns:
        Probabilities of class 1.
    """
    if not isinstance(X_parts, list | tuple) or len(X_parts) != len(model.parties):
        raise ConfigError(f"expected {len(model.parties)} feature blocks, one per party")
    names = list(names) if names is not None else [p.name for p in model.parties]
    roles: dict[str, Any] = {
        names[0]: functools.partial(
            predict_active, X=X_parts[0], model=model.parties[0].to_json(), passives=names[1:]
        )
    }
    for name, X, pm in zip(names[1:], X_parts[1:], model.parties[1:], strict=True):
        roles[name] = functools.partial(predict_passive, X=X, model=pm.to_json(), active=names[0])
    result = hefl.run(roles, transport=transport, processes=processes, executor="inline")
    return np.asarray(result[names[0]])
