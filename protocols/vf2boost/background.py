"""Background jobs a VF2Boost role starts ahead of need, and drops when it fails.

A role starts work before it needs the result (table warm-ups, the root histogram of each
gradient chunk, per-node seal and decrypt jobs, speculative children) and awaits it later.
If the role fails in between, those futures must not outlive it: pending ones are cancelled
(their executor jobs are not started, or their results are ignored), and finished ones have
their exception retrieved, so asyncio does not log a second, misleading "exception was never
retrieved" after the role's own error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


def discard(futures: Iterable[asyncio.Future | None]) -> None:
    """Cancel the pending futures of a failing role and retrieve the finished ones' errors."""
    for fut in futures:
        if fut is None:
            continue
        if not fut.done():
            fut.cancel()
        elif not fut.cancelled():
            fut.exception()  # marks it retrieved; the role's own error is the one raised


__all__ = ["discard"]
