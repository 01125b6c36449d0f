"""The training's session: what VF2Boost messages carrying ciphertexts must look like.

A :class:`Session` holds the training's public key and layout (and the sender's bounds);
:class:`SessionMessage` messages are read with ``from_wire(sender, obj, session)``, and
:func:`read_enc` rebuilds an :class:`~hefl.protocols.vf2boost.encgh.EncGH` from its wire form
``[layout, parts]`` with every part checked: ciphertexts under another key raise
:class:`~hefl.errors.KeyMismatchError`; anything else malformed raises TypeError/ValueError,
which ``Fields.get`` turns into the ProtocolError naming the sender, the message and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hefl.crypto import CipherVector, EncryptedExpVector, PublicKey
from hefl.errors import ConfigError, KeyMismatchError
from hefl.messages import Fields, Message, check_array
from hefl.protocols.vf2boost.encgh import EncGH


@dataclass(frozen=True)
class Session:
    """What this training's ciphertext messages must look like.

    Attributes:
        key: the training's public key; every ciphertext must be under it.
        layout: "packed", "pair" or "phe" (:func:`~hefl.protocols.vf2boost.encgh.layout_of`).
        reorder: phe only: group by exponent when summing (kept locally, not on the wire).
        slots: histogram entries per ciphertext (1: histograms are not Horner-packed).
        max_rows: the most rows one :class:`~hefl.protocols.vf2boost.messages.Gradients` message may carry.
        n_features: the sender's feature count (:class:`~hefl.protocols.vf2boost.messages.Hist`: each feature's total follows
            the candidates).
        max_bin: the config's ``max_bin`` (a feature has at most that many candidates).
        classes: K with vector leaves, else 1 (phe then sends a g and an h part per class).
    """

    key: PublicKey
    layout: str
    reorder: bool = True
    slots: int = 1
    max_rows: int = 0
    n_features: int = 0
    max_bin: int = 0
    classes: int = 1

    @property
    def parts(self) -> int:
        """Ciphertext vectors per :class:`EncGH`: one packed, g and h apart, or phe's g and h
        of every class."""
        if self.layout == "phe":
            return 2 * self.classes
        return 1 if self.layout == "packed" else 2

    @property
    def horner(self) -> bool:
        """Whether histogram entries travel Horner-packed (a g/h pair then as one vector)."""
        return self.slots > 1 and self.layout != "phe"

    def hist_ciphertexts(self, count: int) -> list[int]:
        """The ciphertexts per part of a :class:`~hefl.protocols.vf2boost.messages.Hist` holding ``count`` (g, h) entries."""
        if self.layout == "phe":
            return [count] * self.parts
        per_entry = 1 if self.layout == "packed" else 2
        if self.horner:
            return [math.ceil(per_entry * count / self.slots)]
        return [count] * per_entry


class SessionMessage(Message):
    """A message carrying ciphertexts: read with ``from_wire(sender, obj, session)``, the
    training's :class:`Session` as the context.

    Its ``EncGH`` fields travel as ``[layout, parts]`` (phe parts as ``[ciphertexts,
    exponents]``).
    """

    def to_wire(self) -> list[Any]:
        return [v.to_wire() if isinstance(v, EncGH) else v for v in super().to_wire()]

    @staticmethod
    def session_of(f: Fields) -> Session:
        """The session ``f`` is read under (``from_wire``'s context).

        Raises:
            ConfigError: the message was read without the training's session.
        """
        if not isinstance(f.context, Session):
            raise ConfigError(f"{f.kind.__name__}.from_wire needs the training's Session")
        return f.context


def read_enc(session: Session, value: Any, lengths: list[int] | None = None) -> EncGH:
    """An :class:`EncGH` from its wire form ``[layout, parts]``, checked against ``session``.

    Args:
        session: the training's session (key and layout).
        value: the wire value.
        lengths: the ciphertexts each part must hold (default: any, but all parts equal).

    Raises:
        KeyMismatchError: ciphertexts under another key.
        ValueError, TypeError: anything else malformed (the caller's field check names it).
    """
    if not isinstance(value, list) or len(value) != 2:
        raise TypeError("must be a list [layout, parts]")
    layout, parts = value
    if layout != session.layout:
        raise ValueError(f"must use this training's layout {session.layout!r}, got {layout!r}")
    if not isinstance(parts, list):
        raise TypeError(f"must hold a list of parts, not {type(parts).__name__}")
    out = [_read_part(session, layout, p) for p in parts]
    sizes = [len(p) for p in out]
    want = lengths if lengths is not None else [sizes[0] if sizes else 0] * session.parts
    if sizes != want:
        raise ValueError(f"must hold parts of {want} ciphertexts, got {sizes}")
    return EncGH(layout, out, session.reorder)


def _read_part(session: Session, layout: str, part: Any) -> CipherVector | EncryptedExpVector:
    if layout == "phe":
        if not isinstance(part, list) or len(part) != 2:
            raise TypeError("a phe part must be a list [ciphertexts, exponents]")
        cv = _ciphers(session.key, part[0])
        ex = check_array(part[1], kinds="iu", shape=(len(cv),))
        return EncryptedExpVector(cv, ex.astype(np.int64))
    return _ciphers(session.key, part)


def _ciphers(key: PublicKey, value: Any) -> CipherVector:
    if not isinstance(value, CipherVector):
        raise TypeError(f"must hold ciphertexts, not {type(value).__name__}")
    if value.public_key.n != key.n:
        raise KeyMismatchError("ciphertexts are under another Paillier key")
    return value


__all__ = ["Session", "SessionMessage", "read_enc"]
