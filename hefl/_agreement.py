"""Agreement at the handshake: values every party of a federation must share.

Each party sends, in its hello, a small mapping ``{field: value}`` of strings: the hefl
version always, plus what its caller supplies through ``RunOptions.agreement`` (for
``hefl party``: the protocol name, the role assignment and a digest of the protocol
configuration). A party whose hello disagrees with this party's values fails the federation at
the handshake with a :class:`~hefl.errors.ConfigError` naming the field, both values and the
peer, instead of letting mismatched roles wait on each other forever.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from hefl._version import __version__
from hefl.errors import ConfigError

#: The field the runtime always fills: the hefl version.
VERSION_FIELD = "hefl"


def check_agreement(values: Any, what: str = "agreement") -> dict[str, str]:
    """Validate a mapping of agreement values.

    Returns:
        a plain dict copy.

    Raises:
        ConfigError: not a mapping of short strings to short strings, or it sets ``"hefl"``
            (the runtime fills that field itself).
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{what} must be a mapping of str to str, got {values!r}")
    out: dict[str, str] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigError(f"{what} must map str to str, got {key!r}: {value!r}")
        if not key or len(key) > 100 or len(value) > 1000:
            raise ConfigError(f"{what}: field {key!r} or its value is empty or too long")
        if key == VERSION_FIELD:
            raise ConfigError(f"{what}: the field {VERSION_FIELD!r} is filled by hefl itself")
        out[key] = value
    return out


def hello_values(agreement: Mapping[str, str] | None) -> dict[str, str]:
    """What a party sends in its hello: the hefl version and the caller's values."""
    return {VERSION_FIELD: __version__, **(agreement or {})}


def disagreement(me: str, mine: Mapping[str, str], peer: str, theirs: Any) -> str | None:
    """Why ``peer``'s hello values disagree with this party's, or None if they agree.

    Fields are compared in this party's order (the hefl version first, then the caller's, so
    a caller lists the most telling field first), then the peer's extra fields. A hello
    without a mapping (a malformed or older hello) disagrees on the hefl version.
    """
    if not isinstance(theirs, dict):
        theirs = {}
    for key in [*mine, *(k for k in theirs if k not in mine)]:
        a, b = mine.get(key), theirs.get(key)
        if a != b:
            return f"{peer} disagrees on {key!r}: {peer} has {_shown(b)}, {me} has {_shown(a)}"
    return None


def config_digest(*parts: Any) -> str:
    """A sha256 of a canonical JSON of ``parts`` (objects with ``to_dict()``, dataclasses or
    JSON-able values): equal configurations give equal digests on every host."""

    def plain(obj: Any) -> Any:
        if hasattr(obj, "to_dict"):
            return obj.to_dict()
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        return repr(obj)

    text = json.dumps(list(parts), sort_keys=True, separators=(",", ":"), default=plain)
    return hashlib.sha256(text.encode()).hexdigest()


def _shown(value: Any) -> str:
    return "no value" if value is None else repr(value)


__all__ = ["VERSION_FIELD", "check_agreement", "config_digest", "disagreement", "hello_values"]
