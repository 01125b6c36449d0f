"""Worker processes that end when the process that owns them ends.

A pool worker started by the forkserver is the forkserver's child, not its owner's, and a
worker blocked on its task queue holds both ends of that queue's pipe, so neither notices
when the owner is SIGKILLed or exits without shutting the pool down: the worker, the
forkserver and the resource tracker then live on. Each worker therefore watches its owner by
pid (a pidfd on Linux, polling elsewhere) and exits when the owner is gone. The same watch
serves every process hefl starts (party processes, process-pool workers): a chain of
watchers takes a whole tree down, whichever process of it is killed first.

A watched process also ignores SIGINT: Ctrl-C in a terminal reaches the whole foreground
process group, and the owner decides how its workers end (a worker interrupted mid-task
would only break the owner's pool and print a traceback).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time


def watch_owner(owner_pid: int) -> None:
    """Worker initializer: exit this process as soon as ``owner_pid`` has ended.

    Call it first thing in the new process (from its main thread, so SIGINT can be ignored).

    Args:
        owner_pid: the pid of the process that created the pool (or started this process).
    """
    with contextlib.suppress(ValueError):  # not the main thread: keep the handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(
        target=_wait_then_exit, args=(owner_pid,), daemon=True, name="hefl-watch-owner"
    ).start()


def _wait_then_exit(owner_pid: int) -> None:
    try:
        fd = os.pidfd_open(owner_pid)
    except (AttributeError, OSError):  # no pidfd (older kernel, not Linux), or already gone
        while _alive(owner_pid):
            time.sleep(0.5)
    else:
        select.select([fd], [], [])  # readable once the owner has exited (or at once if it has)
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
