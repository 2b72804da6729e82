"""The virtual clock under ``-accel qtest`` (QEMU_CLOCK_VIRTUAL driven by qtest).

No CPU runs, so virtual time moves only when the qtest client says so: ``clock_step
[NS]`` and ``clock_set NS``.  Devices arm ``Timer``s on the clock; advancing it runs
every timer that falls due, in deadline order, each at its own deadline, exactly as
QEMU's ``qtest_clock_warp`` does: warp to the earlier of the destination and the next
deadline, run the expired timers, repeat.  A timer callback may re-arm timers (a
periodic device); those are honoured in the same warp.

``clock_step`` without an argument advances to the next deadline
(``qemu_clock_deadline_ns_all``); with no timer armed QEMU's deadline is -1 and the
clock does not move.  The clock starts at 0.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Callable


class Timer:
    """A one-shot timer on a ``VirtualClock`` (QEMU ``QEMUTimer``, nanosecond scale)."""

    def __init__(self, clock: "VirtualClock", callback: Callable[[], None]) -> None:
        self.clock = clock
        self.callback = callback
        self.expire: int | None = None
        self._token = 0

    @property
    def pending(self) -> bool:
        return self.expire is not None

    def mod(self, expire_ns: int) -> None:
        """Arm (or re-arm) to fire when the clock reaches ``expire_ns``."""
        self.clock._arm(self, expire_ns)

    def delete(self) -> None:
        self.expire = None
        self._token += 1


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0
        self._heap: list[tuple[int, int, int, Timer]] = []
        self._seq = itertools.count()

    def timer(self, callback: Callable[[], None]) -> Timer:
        return Timer(self, callback)

    def _arm(self, t: Timer, expire: int) -> None:
        t._token += 1
        t.expire = expire
        heapq.heappush(self._heap, (expire, next(self._seq), t._token, t))

    def _drop_stale(self) -> None:
        h = self._heap
        while h and (h[0][3].expire is None or h[0][2] != h[0][3]._token):
            heapq.heappop(h)

    def deadline_ns(self) -> int:
        """Nanoseconds until the next timer (0 if one is overdue), -1 if none is armed."""
        self._drop_stale()
        if not self._heap:
            return -1
        return max(0, self._heap[0][0] - self.now)

    def _run_expired(self) -> None:
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > self.now:
                return
            _, _, _, t = heapq.heappop(self._heap)
            t.expire = None
            t.callback()

    def warp(self, dest: int) -> int:
        """``qtest_clock_warp(dest)``: advance to ``dest`` (never backwards)."""
        while self.now < dest:
            deadline = self.deadline_ns()
            step = dest - self.now
            if 0 <= deadline < step:             # qemu_soonest_timeout: -1 is "never"
                step = deadline
            self.now += step
            self._run_expired()
        return self.now

    def step(self, ns: int | None = None) -> int:
        """``clock_step [NS]``; returns the new clock value."""
        if ns is None:
            ns = self.deadline_ns()
        return self.warp(self.now + ns)
