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
from hefl import Party
from hefl.errors import ConfigError, ProtocolError
from hefl.messages import gather, send
from hefl.protocols.vf2boost.messages import Predict, refuse
from hefl.protocols.vf2boost.model import FederatedModel, PartyModel


def _as_party_model(model: PartyModel | str) -> PartyModel:
    return model if isinstance(model, PartyModel) else PartyModel.from_json(model)


async def predict_passive(
    party: Party, X: np.ndarray, model: PartyModel | str, *, active: str = "active"
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
    masks = _as_party_model(model).leaf_masks(X)
    packed = [np.packbits(m, axis=1) for m in masks]
    await send(party, active, Predict(n_rows=int(np.shape(X)[0]), masks=packed))


async def predict_active(
    party: Party, X: np.ndarray, model: PartyModel | str, *, passives: list[str] | None = None
) -> np.ndarray:
    """The active party's side: returns the predictions (probabilities of class 1, or values
    for ``reg:squarederror``).

    Args:
        party: the runtime's Party.
        X: this party's features of the rows to score.
        model: its :class:`PartyModel` (or its JSON).
        passives: the passive parties' names in party-index order (default: sorted peers).

    Raises:
        ConfigError: features that do not match, or row counts that differ between parties.
        ProtocolError: a passive party's masks do not fit the model (names it and the field).
    """
    pm = _as_party_model(model)
    passives = list(passives) if passives is not None else sorted(party.peers)
    own = pm.leaf_masks(X)
    n = own[0].shape[1] if own else int(np.shape(X)[0])
    replies = await gather(party, Predict, peers=passives)
    all_masks = [own] + [_unpack_masks(name, replies[name], pm, n) for name in passives]
    try:
        margin = pm.combine_margin(all_masks, n)
    except ConfigError as exc:
        raise ProtocolError(f"the parties' models do not match: {exc}") from None
    return pm.loss().transform(margin)


def _unpack_masks(name: str, reply: Predict, pm: PartyModel, n: int) -> list[np.ndarray]:
    """A passive party's leaf masks, checked against the model's trees and ``n`` rows.

    Raises:
        ConfigError: it scored another number of rows.
        ProtocolError: masks of another model (names the party and the field).
    """
    if reply.n_rows != n:
        raise ConfigError(
            f"party {name!r} scored {reply.n_rows} rows but the active party has {n}; "
            "the rows must be aligned"
        )
    shapes = [m.shape[0] for m in reply.masks]
    leaves = [t.n_leaves for t in pm.trees]
    if shapes != leaves:
        why = f"holds masks of {shapes} leaves, but the model's trees have {leaves}"
        raise refuse(name, Predict, "masks", why)
    return [np.unpackbits(m, axis=1, count=n).astype(bool) for m in reply.masks]


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
        The predictions (as :meth:`FederatedModel.predict`).
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
