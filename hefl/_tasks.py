"""Background work of a role, held in an :class:`asyncio.TaskGroup`.

A role starts work before it needs the result (VF2Boost's table warm-ups, root-histogram
chunks, seal and decrypt jobs, speculative children; BatchCrypt's chunk encryptions and the
aggregator's per-client sums) and awaits it later. Each such task lives in the task group of
its tree, round or role: if the role fails, the group cancels what is still pending and waits
for it, so nothing outlives the role and no failed task goes unretrieved. Every protocol uses
this one helper.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """An :class:`asyncio.TaskGroup` that fails with its first error, not an exception group.

    The role's callers (the runtime, the tests) expect the error itself, e.g. the
    ProtocolError naming a peer; a task group wraps it in a BaseExceptionGroup, which this
    unwraps (other errors of the group are secondary: they come from the same failure).

    Raises:
        BaseException: the first error of the body or of a task of the group.
    """
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except BaseExceptionGroup as failed:
        first = _first(failed)
        raise first from first.__cause__  # keeps its own cause, drops the group as context


def _first(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


__all__ = ["task_group"]
