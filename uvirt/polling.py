"""Poll a little before sleeping: what a halted CPU and a waiting host peer do (issue 14).

Waking a thread that sleeps in ``select``/``epoll_wait`` costs tens of microseconds on a
virtualised host (the idle vCPU it ran on halted, and the wake-up is an IPI through the
hypervisor), more than the rest of an ivshmem doorbell's round trip.  When an answer
usually comes sooner than that, looking for it in a loop for a bounded time and only
then sleeping saves the wake-up; KVM does the same for a halted vCPU (``halt_poll_ns``,
200 us by default).

A poll that nothing ended was wasted CPU (and, in a process with other Python threads,
GIL time they waited for), so after one the next polls are skipped: 1 wait, then 2, 4 ...
up to ``BACKOFF_MAX`` waits, until a poll succeeds again.  A poll also ends, as lost, when
another thread wanted this CPU (the loop yields between looks, and a late return says so):
on a busy host sleeping is better, as KVM's poll loop also stops then.  A guest that halts for long
(a timer) or a peer whose answer needs the poller's own GIL thus polls at most once per
``BACKOFF_MAX`` waits.
"""

from __future__ import annotations

import os
import time
from typing import Callable, TypeVar

T = TypeVar("T")

#: How long one poll lasts at most (KVM's halt_poll_ns default).
POLL_NS = 200_000
#: At most one poll per this many waits while polls keep failing.
BACKOFF_MAX = 1024
#: A yield that took longer than this ran another thread: the host is busy.
BUSY_NS = 50_000


class PollThenSleep:
    """The poll-before-sleep policy of one waiter.  ``poll_ns=0`` never polls."""

    def __init__(self, poll_ns: int = POLL_NS, backoff_max: int = BACKOFF_MAX,
                 busy_ns: int = BUSY_NS) -> None:
        self.poll_ns = poll_ns
        self.backoff_max = backoff_max
        self.busy_ns = busy_ns
        self._skip = 0                  # waits left that do not poll
        self._backoff = 1
        self.won = 0                    # polls that found something
        self.lost = 0                   # polls that ran out

    def poll(self, look: Callable[[], T], timeout: float | None = None) -> T | None:
        """Call ``look()`` until it returns something true, for at most ``poll_ns`` (or
        ``timeout`` seconds if sooner); its result, or None if the caller must sleep."""
        if self.skip():
            return None
        return self.look_for(look, timeout)

    def skip(self) -> bool:
        """True if this wait does not poll (never polling, or backing off after lost
        polls; it counts as one of the waits skipped).  A caller that must prepare a poll
        (stop another thread watching the same fd) asks this, then calls ``look_for``."""
        if self.poll_ns <= 0:
            return True
        if self._skip:
            self._skip -= 1
            return True
        return False

    def look_for(self, look: Callable[[], T], timeout: float | None = None) -> T | None:
        """``poll`` after ``skip`` said this wait polls."""
        limit = self.poll_ns if timeout is None else min(self.poll_ns, int(timeout * 1e9))
        now = time.monotonic_ns()
        end = now + limit
        while True:
            got = look()
            if got:
                self.won += 1
                self._backoff = 1
                return got
            if now >= end:
                break
            # Any other runnable thread on this CPU goes first.  If one did (the yield
            # came back late), the host is busy: stop polling, as KVM's poll loop stops
            # when another task wants the CPU; a spinning waiter on a busy host loses the
            # scheduler's favour to sleepers and gives slices away at every yield.
            before = time.monotonic_ns()
            os.sched_yield()
            now = time.monotonic_ns()
            if now - before > self.busy_ns:
                limit = self.poll_ns          # counts as lost: back off
                break
        if limit == self.poll_ns:       # not cut short by the caller's deadline
            self.lost += 1
            self._skip = self._backoff
            self._backoff = min(self._backoff * 2, self.backoff_max)
        return None
