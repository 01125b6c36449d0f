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

Before starting any such process, hefl checks that it is not called from the top level of an
unguarded main script (:func:`check_main_guarded`), which every worker would re-run.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import os
import select
import signal
import sys
import threading
import time

from hefl.errors import ConfigError


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


# ---------------------------------------------------------------------- the unguarded script


def check_main_guarded() -> None:
    """Refuse to start worker processes from the top level of an unguarded ``__main__`` script.

    Spawned and forkserver processes re-import the main script (as ``__mp_main__``) to find
    the functions they run. A script that starts hefl's processes from its top level, outside
    ``if __name__ == "__main__":``, would then start them again in every child, which
    multiprocessing refuses with a confusing traceback in each child. This looks at the
    call stack before any process starts: if the main script's top-level code is running
    and the line it is at is not inside such a guard, it raises one clear error instead.
    Code that is not the main script's own file (``python -c``, notebook cells, even when a
    kernel keeps them in files) and scripts it cannot read (frozen apps) are let through.

    Raises:
        ConfigError: naming the script, the line and the guard to add.
    """
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file is None:  # python -c, a notebook, an interactive shell: nothing is re-run
        return
    main_globals = getattr(main, "__dict__", None)
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is main_globals:
            path, line = frame.f_code.co_filename, frame.f_lineno
            if os.path.abspath(path) != os.path.abspath(main_file):
                return  # code run in the main namespace from elsewhere (a notebook cell)
            if _unguarded(path, line):
                raise ConfigError(
                    f"{path} starts hefl's worker processes from its top level (line {line}), "
                    "and every worker re-imports that script: put the script's code under "
                    'if __name__ == "__main__":'
                )
            return
        frame = frame.f_back  # type: ignore[assignment]


def _unguarded(path: str, line: int) -> bool:
    try:
        tree = _parsed(path, os.stat(path).st_mtime_ns)
    except (OSError, SyntaxError, ValueError):
        return False  # not a readable script: nothing to say
    return not _guarded_in(tree.body, line)


@functools.lru_cache(maxsize=8)
def _parsed(path: str, mtime: int) -> ast.Module:
    with open(path, "rb") as fh:
        return ast.parse(fh.read(), path)


def _guarded_in(body: list[ast.stmt], line: int) -> bool:
    """Whether ``line`` of these statements runs only under ``__name__ == "__main__"``."""
    for node in body:
        if not node.lineno <= line <= (node.end_lineno or node.lineno):
            continue
        if isinstance(node, ast.If) and _is_main_test(node.test):
            return any(s.lineno <= line <= (s.end_lineno or s.lineno) for s in node.body)
        inner: list[ast.stmt] = []
        for name in ("body", "orelse", "finalbody"):
            inner += getattr(node, name, None) or []
        for handler in getattr(node, "handlers", None) or []:
            inner += handler.body
        return _guarded_in(inner, line)
    return False


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round, possibly inside ``and``)."""
    for node in ast.walk(test):
        if isinstance(node, ast.Compare) and all(isinstance(op, ast.Eq) for op in node.ops):
            sides = [node.left, *node.comparators]
            names = any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            if names and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides):
                return True
    return False
