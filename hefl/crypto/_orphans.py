"""Worker processes that end when the process that owns them ends.

A pool worker started by the forkserver is the forkserver's child, not its owner's, and a
worker blocked on its task queue holds both ends of that queue's pipe, so neither notices
when the owner is SIGKILLed or exits without shutting the pool down: the worker, the
forkserver and the resource tracker then live on. Each worker therefore watches its owner by
pid (a pidfd on Linux, polling elsewhere) and exits when the owner is gone.
"""

from __future__ import annotations

import os
import select
import threading
import time


def watch_owner(owner_pid: int) -> None:
    """Worker initializer: exit this process as soon as ``owner_pid`` has ended.

    Args:
        owner_pid: the pid of the process that created the pool.
    """
    threading.Thread(target=_wait_then_exit, args=(owner_pid,), daemon=True).start()


def _wait_then_exit(owner_pid: int) -> None:
    try:
        fd = os.pidfd_open(owner_pid)
    except (AttributeError, OSError):  # no pidfd (older kernel, not Linux): poll
        while _alive(owner_pid):
            time.sleep(0.5)
    else:
        select.select([fd], [], [])  # readable once the owner has exited
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
