"""Conversion of user-supplied integer sequences, shared by the crypto modules.

Every public entry point that takes plaintext integers funnels them through
:func:`as_int_list`, so floats, bools hidden in object arrays, and NaNs are refused in one place
instead of being truncated silently by ``int()``.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

import numpy as np

from hefl.errors import ConfigError, PlaintextRangeError


def as_int_list(values: Any, what: str = "plaintexts") -> list[int]:
    """Return ``values`` as a list of Python ints, refusing anything that is not an integer.

    Args:
        values: a list/tuple/iterable of ints, or a numpy array of an integer (or object) dtype.
        what: how to name the values in error messages.

    Returns:
        A new list of Python ints.

    Raises:
        ConfigError: a value is not an integer (e.g. a float: encode it first).
    """
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            values = values.reshape(-1)
        kind = values.dtype.kind
        if kind in "iu":
            return values.tolist()
        if kind == "b":
            raise ConfigError(f"{what} must be integers, got a boolean array")
        if kind != "O":
            raise ConfigError(
                f"{what} must be integers, got a {values.dtype} array; "
                "encode floats first (e.g. hefl.crypto.FixedPointEncoder)"
            )
        values = values.tolist()
    elif isinstance(values, int | np.integer):
        raise ConfigError(f"{what} must be a sequence of integers, got a single {type(values)}")
    elif not isinstance(values, list | tuple):
        if not isinstance(values, Iterable):
            raise ConfigError(f"{what} must be a sequence of integers, got {type(values)}")
        values = list(values)
    try:
        out = list(map(operator.index, values))
    except TypeError as exc:
        bad = next(v for v in values if not _is_index(v))
        raise ConfigError(
            f"{what} must be integers, got {type(bad).__name__} {bad!r}; "
            "encode floats first (e.g. hefl.crypto.FixedPointEncoder)"
        ) from exc
    if any(type(v) is bool for v in values):
        raise ConfigError(f"{what} must be integers, got a bool")
    return out


def _is_index(v: Any) -> bool:
    try:
        operator.index(v)
    except TypeError:
        return False
    return True


def check_signed_range(values: list[int], bound: int, what: str = "plaintext") -> None:
    """Refuse any value outside ``[-bound, bound]``.

    Raises:
        PlaintextRangeError: naming the first offending value and the allowed range.
    """
    if not values:
        return
    lo, hi = min(values), max(values)
    if lo < -bound or hi > bound:
        bad = lo if lo < -bound else hi
        raise PlaintextRangeError(
            f"{what} {bad} is outside the key's signed range [-{bound}, {bound}] "
            f"(|m| must be < n/2, about 2^{bound.bit_length()}); use a larger key or scale down"
        )
