"""What a halted CPU sleeps on: ``threading.Event``'s set/clear/is_set/wait, and device fds.

A guest in ``hlt`` with IF=1 sleeps until something can interrupt it: a kick from another
thread (a timer tick, posted work: ``set()``), or, with this class, an fd a device
watches.  Without the fds, a device's event would wake the device's own thread, which
posts the work to the CPU thread and wakes it in turn: two thread wake-ups in a row, each
tens of microseconds on a loaded or virtualised host, for one doorbell (issue 14).  With
them, the CPU thread wakes on the fd itself and runs the device's handler there, which is
also where the posted work would have run.

A *source* is an object with

* ``fileno()`` -- the fd to watch, or -1 while it has none (a closed device);
* ``pause()`` / ``resume()`` -- called around each sleep: the device's own thread stops
  watching the fd while the CPU thread does (else both wake for one event and contend for
  the GIL), and takes it back after;
* ``ready()`` -- the fd is readable: service it (on the CPU thread; it posts what it
  does through ``call_soon_threadsafe``, which ``set()``\\ s this object).

``wait`` without sources is ``threading.Event.wait``.  With them it first polls the
sources for a while (``_poll``, as KVM polls a halted vCPU), then sleeps in ``select`` on
the sources and one eventfd that ``set()`` writes only while a waiter sleeps, so a kick
costs no system call when nobody sleeps.
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import Protocol

#: How long a halted CPU with sources polls them before it sleeps.  Waking a sleeping
#: thread costs tens of microseconds on a virtualised host (an idle vCPU halts); a peer's
#: answer to a doorbell typically comes sooner.  KVM polls a halted vCPU the same way
#: (``halt_poll_ns``, 200 us by default).
POLL_NS = 200_000
#: At most one poll per this many halts while polls keep failing.
BACKOFF_MAX = 1024


class HaltSource(Protocol):
    def fileno(self) -> int: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def ready(self) -> None: ...


class HaltWake:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._sources: list[HaltSource] = []
        self._efd = -1
        self._sleeping = False
        self._skip = 0                  # halts left whose wait does not poll first
        self._backoff = 1
        self.polls_won = self.polls_lost = 0

    # -- threading.Event's interface
    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()
        # Read after the flag is set; the waiter sets _sleeping before it reads the flag,
        # so one of the two sees the other (both run under the GIL, in program order).
        if self._sleeping:
            try:
                os.eventfd_write(self._efd, 1)
            except OSError:
                pass

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float | None = None) -> bool:
        """Until ``set()``, a source's fd is readable (its ``ready()`` has run), or
        ``timeout`` seconds.  Returns the flag, as ``threading.Event.wait``."""
        sources = self._sources
        if not sources:
            return self._event.wait(timeout)
        if self._event.is_set():
            return True
        fds = [self._efd]
        watched = []
        for s in sources:
            fd = s.fileno()
            if fd >= 0:
                s.pause()
                fds.append(fd)
                watched.append((fd, s))
        ready: list[int] = []
        try:
            if not self._skip:
                ready = self._poll(fds, timeout)
            else:
                self._skip -= 1
            if not ready and not self._event.is_set():
                self._sleeping = True
                if not self._event.is_set():
                    try:
                        ready = select.select(fds, [], [], timeout)[0]
                    except (OSError, ValueError):      # a source closed while we slept
                        ready = []
                self._sleeping = False
            if self._efd in ready:
                try:
                    os.eventfd_read(self._efd)
                except BlockingIOError:
                    pass
            # Serviced before the device's thread watches again, or it would wake for
            # the same event.
            for fd, s in watched:
                if fd in ready:
                    s.ready()
        finally:
            self._sleeping = False
            for _fd, s in watched:
                s.resume()
        return self._event.is_set()

    def _poll(self, fds: list[int], timeout: float | None) -> list[int]:
        """Look at the sources for up to POLL_NS (or ``timeout``) before sleeping.

        Success (a source or a kick came) keeps polling on; a poll that nothing ended
        skips the next 1, 2, 4 ... BACKOFF_MAX halts' polls, so a guest that halts for
        long (a timer) or whose answer needs this thread's GIL (a peer in the same
        process) spends at most one poll per BACKOFF_MAX halts."""
        limit = POLL_NS if timeout is None else min(POLL_NS, int(timeout * 1e9))
        end = time.monotonic_ns() + limit
        event = self._event
        while True:
            try:
                ready = select.select(fds, [], [], 0)[0]
            except (OSError, ValueError):
                return []
            if ready or event.is_set():
                self.polls_won += 1
                self._backoff = 1
                return ready
            if time.monotonic_ns() >= end:
                break
        if limit == POLL_NS:                  # not a deadline that came first
            self.polls_lost += 1
            self._skip = self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        return []

    # -- sources
    def watch(self, source: HaltSource) -> None:
        """Also wake on ``source`` (from the CPU thread, or before the machine runs)."""
        if self._efd < 0:
            self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._sources.append(source)

    def unwatch(self, source: HaltSource) -> None:
        if source in self._sources:
            self._sources.remove(source)

    def close(self) -> None:
        self._sources.clear()
        if self._efd >= 0:
            os.close(self._efd)
            self._efd = -1
