"""Run a function in a forked child process and get its answer back as text.

For work that must not touch this process: probing Unicorn's internals (a wrong guess may
crash, uvirt/cpu/exits.py), or dropping privileges in a test.  The child never returns
into the caller's code: it writes the function's string result to a pipe and leaves with
``os._exit``.  A multiprocessing pool would hang if the child died; this reads "" instead.
"""
from __future__ import annotations

import os
from typing import Callable


def run_in_child(fn: Callable[[], str]) -> str:
    """``fn()`` in a forked child -> its result; "child error ..." if it raised, "" if the
    child died before answering."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                  # pragma: no cover - the child
        try:
            os.close(r)
            try:
                result = fn()
            except BaseException as e:
                result = f"child error {e!r}"
            os.write(w, result.encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            return f.read().decode(errors="replace")
    finally:
        os.waitpid(pid, 0)
