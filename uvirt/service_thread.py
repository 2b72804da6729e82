"""Daemon threads that never take the process's signals.

Linux hands a process-directed signal (Ctrl-C's SIGINT, SIGTERM) to any thread that does
not block it.  Python runs signal handlers only in the main thread, so a SIGINT taken by
a service thread wakes nothing there: a main thread blocked in a read (a ``-kernel`` FIFO
nobody writes to) would never see its KeyboardInterrupt.  Every service thread therefore
blocks the signals the main thread handles, and the kernel delivers them to the main
thread alone.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

MAIN_THREAD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def start_service_thread(target: Callable[..., Any], name: str, *args: Any) -> threading.Thread:
    """Start ``target(*args)`` in a daemon thread that blocks ``MAIN_THREAD_SIGNALS``."""

    def run() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, MAIN_THREAD_SIGNALS)
        target(*args)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread
