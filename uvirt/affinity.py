"""Run a device's service thread on the CPU where the thread it serves last ran (issue 14).

A device thread that answers a host event (an ivshmem ring: write the MSI-X message into
guest RAM) while the vCPU thread spins in guest code contends with it for the GIL the
moment the guest reacts: the guest sees the message within nanoseconds and its next
register access calls into Python while the device thread is still unwinding.  On
another CPU the vCPU thread then sleeps on the GIL and is woken when the device thread
lets go -- a cross-CPU wake-up of an idle CPU, tens of microseconds on a virtualised
host, once per event.  On the vCPU's own CPU the woken device thread preempts the
spinning guest instead (a sleeper that wakes gets the CPU), does its few microseconds of
Python and sleeps again; only then does the vCPU thread run on, and it finds the GIL
free.  Measured (``python -m benchmarks.ivshmem_breakdown 0``, same load): the guest's
leg of a polled doorbell round went from ~39 to ~7 us.

The leader (the vCPU thread) reports where it runs at points it passes anyway (a
doorbell write); the follower's affinity is changed only when that CPU changed, so the
scheduler still moves the vCPU thread freely and the follower comes after.  A follower
whose affinity cannot be set (a CPU outside its cpuset, a thread that ended) stops
following; a process allowed one CPU never follows.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Callable


def _libc_sched_getcpu() -> Callable[[], int] | None:
    """glibc's ``sched_getcpu`` (a vDSO/rseq read, no system call); os has none in 3.11."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sched_getcpu
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = ()
    return fn


_SCHED_GETCPU = _libc_sched_getcpu()


def _allowed_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (OSError, AttributeError):
        return 1


class CpuFollower:
    """Keeps one thread (the follower) on the CPU another (the leader) last reported."""

    __slots__ = ("_getcpu", "_set_affinity", "tid", "cpu", "moves")

    def __init__(self, getcpu: Callable[[], int] | None = None,
                 set_affinity: Callable[[int, set[int]], None] | None = None,
                 enabled: bool | None = None) -> None:
        self._getcpu = getcpu if getcpu is not None else _SCHED_GETCPU
        self._set_affinity = set_affinity if set_affinity is not None else os.sched_setaffinity
        if enabled is None:
            enabled = self._getcpu is not None and _allowed_cpus() > 1
        #: the follower's kernel thread id; 0: nobody follows (yet, or any more)
        self.tid = 0 if enabled else -1
        self.cpu = -1                   # the CPU the follower is bound to now
        self.moves = 0                  # affinity changes made

    def follow(self) -> None:
        """On the follower thread, when it starts."""
        if self.tid == 0:
            self.tid = threading.get_native_id()

    def stop(self) -> None:
        """The follower ends (its id may be reused by another thread)."""
        self.tid = -1

    def here(self) -> None:
        """On the leader thread: bring the follower to this CPU if it is elsewhere."""
        if self.tid <= 0:
            return
        cpu = self._getcpu()
        if cpu == self.cpu or cpu < 0:
            return
        self.cpu = cpu
        try:
            self._set_affinity(self.tid, {cpu})
        except OSError:                 # CPU outside its cpuset, thread gone: let it be
            self.tid = -1
            return
        self.moves += 1
