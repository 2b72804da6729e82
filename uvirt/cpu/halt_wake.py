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
sources for a while (uvirt/polling.py, as KVM polls a halted vCPU), then sleeps in ``select`` on
the sources and one eventfd that ``set()`` writes only while a waiter sleeps, so a kick
costs no system call when nobody sleeps.
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import Protocol

from uvirt.polling import PollThenSleep


class HaltSource(Protocol):
    def fileno(self) -> int: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def ready(self) -> None: ...


class _Event(threading.Event):
    """``threading.Event`` with its condition over an ``RLock``.  Over a plain ``Lock``
    (``Event()``), ``Condition()`` looks for three methods the lock lacks, raising and
    catching an AttributeError for each: about 5 us of every machine's creation.  An
    RLock has them, and an Event never takes its lock twice, so it behaves the same."""

    def __init__(self) -> None:               # threading.Event.__init__, but the lock
        self._cond = threading.Condition(threading.RLock())
        self._flag = False


class HaltWake:
    def __init__(self) -> None:
        self._event = _Event()
        self._sources: list[HaltSource] = []
        self._efd = -1
        self._sleeping = False
        #: polls the sources before sleeping (uvirt/polling.py)
        self.polling = PollThenSleep()

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
        # Event.clear takes the condition's lock even when there is nothing to clear (the
        # run loop clears at every run); a set() racing with either is ordered after it
        if self._event.is_set():
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
            event = self._event
            start = time.monotonic()
            got = self.polling.poll(lambda: _select_now(fds) or event.is_set(), timeout)
            if isinstance(got, list):
                ready = got
            if not ready and not event.is_set():
                if timeout is not None:
                    timeout = max(0.0, timeout - (time.monotonic() - start))
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


def _select_now(fds: list[int]) -> list[int]:
    try:
        return select.select(fds, [], [], 0)[0]
    except (OSError, ValueError):           # a source closed under us: sleep instead
        return []
