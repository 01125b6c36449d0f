"""Typed wire messages: one frozen dataclass per message a protocol sends.

A protocol declares each of its messages once, as a frozen dataclass deriving from
:class:`Message`, with its tag pattern and how to check it::

    @dataclass(frozen=True)
    class Placement(Message):
        TAG: ClassVar[str] = "vf2/place/{t}/{d}"
        node: int
        left: np.ndarray

        @classmethod
        def parse(cls, f: Fields) -> Placement:
            return cls(node=f.integer("node", min=0), left=f.array("left", kinds="u", ndim=1))

The sender builds the object and sends ``msg.to_wire()`` (its fields, in order, as a list);
the receiver calls ``Placement.from_wire(sender, obj)``, the one place a message is checked. A
field that is missing, of the wrong type or out of range raises :class:`hefl.ProtocolError`
naming the sender, the message and the field (a ciphertext under another key raises
:class:`hefl.KeyMismatchError`), so role code only ever sees well-formed messages.
:func:`send`, :func:`recv`, :func:`broadcast` and :func:`gather` do both ends over a
:class:`hefl.Party`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

import numpy as np

from hefl.crypto import CipherVector, PublicKey
from hefl.errors import KeyMismatchError, ProtocolError

if TYPE_CHECKING:
    from hefl._party import Party

T = TypeVar("T")
M = TypeVar("M", bound="Message")


class Message:
    """Base of a protocol's frozen dataclass messages.

    Subclasses set ``TAG`` (a ``str.format`` pattern such as ``"bc/{t}/hdr"``) and implement
    :meth:`parse`. Nested messages are sent as their own wire lists.
    """

    TAG: ClassVar[str]

    @classmethod
    def tag(cls, **ids: Any) -> str:
        """The tag of this message for the given ids (the fields of ``TAG``)."""
        return cls.TAG.format(**ids)

    def to_wire(self) -> list[Any]:
        """The fields in declaration order (nested messages as their own lists)."""
        return [_wire_value(getattr(self, f.name)) for f in dataclasses.fields(self)]  # type: ignore[arg-type]

    @classmethod
    def from_wire(cls, sender: str, obj: Any, context: Any = None) -> Self:
        """Check a received object and build the message.

        Args:
            sender: the party it came from (named in errors).
            obj: the decoded wire object.
            context: what the receiver already knows the message must match (a protocol's
                session or expectations), handed to :meth:`parse` as ``Fields.context``.

        Raises:
            ProtocolError: ``obj`` is not this message (names sender, message and field).
            KeyMismatchError: a ciphertext field is under another key.
        """
        return cls.parse(Fields(sender, cls, obj, context=context))

    @classmethod
    def parse(cls, f: Fields) -> Self:
        """Build the message from checked fields (each subclass says how)."""
        raise NotImplementedError(f"{cls.__name__}.parse")


def _wire_value(value: Any) -> Any:
    if isinstance(value, Message):
        return value.to_wire()
    if isinstance(value, list | tuple) and value and isinstance(value[0], Message):
        return [v.to_wire() for v in value]
    return value


class Fields:
    """A received message's fields, each taken out through a check.

    Args:
        sender: the party the message came from (named in errors).
        message: the :class:`Message` subclass being parsed.
        obj: what the codec decoded: a list with one value per dataclass field.
        context: what the receiver knows the message must match (nested messages share it).
        path: where these fields sit, for errors (set for nested messages).

    Raises:
        ProtocolError: ``obj`` is not a list of the message's length.
    """

    def __init__(
        self,
        sender: str,
        message: type[Message],
        obj: Any,
        *,
        context: Any = None,
        path: str | None = None,
    ) -> None:
        self.sender = sender
        self.kind = message
        self.context = context
        self._path = path or f"{message.__name__} message"
        names = [f.name for f in dataclasses.fields(message)]  # type: ignore[arg-type]
        if not isinstance(obj, list) or len(obj) != len(names):
            got = f"a list of {len(obj)}" if isinstance(obj, list) else type(obj).__name__
            raise ProtocolError(
                f"{sender} sent a malformed {self._path}: expected a list of {len(names)} "
                f"fields ({', '.join(names)}), got {got}"
            )
        self._values = dict(zip(names, obj, strict=True))

    def fail(self, name: str, why: str) -> ProtocolError:
        """The error for field ``name`` (raise it): names the sender, message and field."""
        return ProtocolError(f"{self.sender} sent a malformed {self._path}: field {name!r} {why}")

    def get(self, name: str, check: Callable[[Any], T]) -> T:
        """Field ``name`` through ``check``, whose ValueError/TypeError becomes ProtocolError."""
        try:
            return check(self._values[name])
        except ProtocolError:
            raise
        except KeyMismatchError as exc:
            raise KeyMismatchError(f"{self.sender}'s {self._path}, field {name!r}: {exc}") from exc
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            raise self.fail(name, str(exc)) from None

    def any(self, name: str) -> Any:
        """Field ``name`` unchecked (for values a later step checks in full)."""
        return self._values[name]

    def integer(self, name: str, *, min: int | None = None, max: int | None = None) -> int:
        """An int (not bool) in ``[min, max]``."""
        return self.get(name, lambda v: check_int(v, min, max))

    def number(self, name: str, *, finite: bool = True) -> float:
        """A real number (int or float, not bool), finite unless told otherwise."""

        def check(v: Any) -> float:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise TypeError(f"must be a number, not {type(v).__name__}")
            if finite and not math.isfinite(v):
                raise ValueError(f"must be finite, got {v!r}")
            return float(v)

        return self.get(name, check)

    def flag(self, name: str) -> bool:
        """A bool."""
        return self.get(name, lambda v: _typed(v, bool, "a bool"))

    def text(self, name: str, *, choices: Iterable[str] | None = None) -> str:
        """A str, one of ``choices`` when given."""
        allowed = None if choices is None else frozenset(choices)

        def check(v: Any) -> str:
            text = _typed(v, str, "a str")
            if allowed is not None and text not in allowed:
                raise ValueError(f"must be one of {sorted(allowed)}, got {text!r}")
            return text

        return self.get(name, check)

    def raw(self, name: str, *, size: int | None = None) -> bytes:
        """Bytes, of exactly ``size`` when given."""

        def check(v: Any) -> bytes:
            data = _typed(v, bytes, "bytes")
            if size is not None and len(data) != size:
                raise ValueError(f"must be {size} bytes, got {len(data)}")
            return data

        return self.get(name, check)

    def ints(
        self,
        name: str,
        *,
        min: int | None = None,
        max: int | None = None,
        length: int | None = None,
    ) -> list[int]:
        """A list of ints in ``[min, max]``, of ``length`` items when given."""
        return self.items(name, lambda v: check_int(v, min, max), length=length)

    def items(self, name: str, item: Callable[[Any], T], *, length: int | None = None) -> list[T]:
        """A list whose every item passes ``item`` (of ``length`` items when given)."""

        def check(v: Any) -> list[T]:
            items = _typed(v, list, "a list")
            if length is not None and len(items) != length:
                raise ValueError(f"must have {length} items, got {len(items)}")
            out = []
            for i, x in enumerate(items):
                try:
                    out.append(item(x))
                except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
                    raise ValueError(f"item {i}: {exc}") from None
            return out

        return self.get(name, check)

    def mapping(self, name: str) -> dict[Any, Any]:
        """A dict (its contents checked by the caller)."""
        return self.get(name, lambda v: _typed(v, dict, "a dict"))

    def array(
        self,
        name: str,
        *,
        kinds: str = "iuf",
        ndim: int | None = None,
        shape: tuple[int | None, ...] | None = None,
    ) -> np.ndarray:
        """A numpy array whose dtype kind is in ``kinds`` (``"b"`` bool, ``"i"``, ``"u"``,
        ``"f"``), of ``ndim`` dimensions or of ``shape`` (None matches any length)."""
        return self.get(name, lambda v: check_array(v, kinds, ndim, shape))

    def ciphers(
        self, name: str, *, key: PublicKey | None = None, length: int | None = None
    ) -> CipherVector:
        """A :class:`hefl.crypto.CipherVector` under ``key`` with ``length`` ciphertexts.

        Raises:
            KeyMismatchError: it is under another key.
        """

        def check(v: Any) -> CipherVector:
            cv = _typed(v, CipherVector, "a CipherVector")
            if key is not None and cv.public_key.n != key.n:
                raise KeyMismatchError("ciphertexts are under another Paillier key")
            if length is not None and len(cv) != length:
                raise ValueError(f"must hold {length} ciphertexts, got {len(cv)}")
            return cv

        return self.get(name, check)

    def public_key(self, name: str) -> PublicKey:
        """A :class:`hefl.crypto.PublicKey`."""
        return self.get(name, lambda v: _typed(v, PublicKey, "a PublicKey"))

    def message(self, name: str, kind: type[M]) -> M:
        """A nested message of class ``kind`` (errors name the path to the bad field)."""
        return kind.parse(self._nested(name, kind, self._values[name]))

    def messages(self, name: str, kind: type[M]) -> list[M]:
        """A list of nested messages of class ``kind``."""
        values = self.get(name, lambda v: _typed(v, list, "a list"))
        return [kind.parse(self._nested(f"{name}[{i}]", kind, v)) for i, v in enumerate(values)]

    def _nested(self, name: str, kind: type[Message], value: Any) -> Fields:
        path = f"{self._path}: field {name!r} ({kind.__name__})"
        return Fields(self.sender, kind, value, context=self.context, path=path)

    def optional(self, name: str, read: Callable[[str], T]) -> T | None:
        """None, or field ``name`` read with ``read`` (one of the methods above)."""
        return None if self._values[name] is None else read(name)


def check_int(value: Any, min: int | None = None, max: int | None = None) -> int:
    """``value`` as an int (not bool) within ``[min, max]``; TypeError/ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"must be an int, not {type(value).__name__}")
    if min is not None and value < min:
        raise ValueError(f"must be >= {min}, got {value}")
    if max is not None and value > max:
        raise ValueError(f"must be <= {max}, got {value}")
    return value


def check_array(
    value: Any,
    kinds: str = "iuf",
    ndim: int | None = None,
    shape: tuple[int | None, ...] | None = None,
) -> np.ndarray:
    """``value`` as a numpy array of a dtype kind in ``kinds`` and the given rank or shape."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"must be a numpy array, not {type(value).__name__}")
    if value.dtype.kind not in kinds:
        raise TypeError(f"must have a dtype of kind {kinds!r}, not {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"must have {ndim} dimension(s), got shape {value.shape}")
    if shape is not None and (
        value.ndim != len(shape)
        or any(
            want is not None and want != got for want, got in zip(shape, value.shape, strict=True)
        )
    ):
        raise ValueError(f"must have shape {shape}, got {value.shape}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise ValueError("must hold finite values only")
    return value


def _typed(value: Any, kind: type[T], what: str) -> T:
    if isinstance(value, bool) and kind is not bool:
        raise TypeError(f"must be {what}, not bool")
    if not isinstance(value, kind):
        raise TypeError(f"must be {what}, not {type(value).__name__}")
    return value


async def send(party: Party, peer: str, message: Message, **ids: Any) -> None:
    """Send ``message`` to ``peer`` under its tag for ``ids``."""
    await party.send(peer, message.tag(**ids), message.to_wire())


async def recv(
    party: Party, peer: str, kind: type[M], *, timeout: float | None = None, **ids: Any
) -> M:
    """Receive and check the ``kind`` message from ``peer`` under its tag for ``ids``."""
    return kind.from_wire(peer, await party.recv(peer, kind.tag(**ids), timeout=timeout))


async def broadcast(
    party: Party, message: Message, peers: Iterable[str] | None = None, **ids: Any
) -> None:
    """Send ``message`` to ``peers`` (default: every peer) under its tag for ``ids``."""
    await party.broadcast(message.tag(**ids), message.to_wire(), peers=peers)


async def gather(
    party: Party, kind: type[M], peers: Iterable[str] | None = None, **ids: Any
) -> dict[str, M]:
    """Receive and check one ``kind`` message from each of ``peers`` (default: every peer)."""
    raw: Mapping[str, Any] = await party.gather(kind.tag(**ids), peers=peers)
    return {peer: kind.from_wire(peer, obj) for peer, obj in raw.items()}


__all__ = [
    "Fields",
    "Message",
    "broadcast",
    "check_array",
    "check_int",
    "gather",
    "recv",
    "send",
]
