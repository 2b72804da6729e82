"""A device's service thread follows the CPU of the thread it serves (uvirt/affinity.py)."""

from __future__ import annotations

import os
import threading

import pytest

from uvirt.affinity import CpuFollower


class _Sched:
    """A scheduler stand-in: the leader's CPU, and the affinity calls made."""

    def __init__(self) -> None:
        self.cpu = 0
        self.calls: list[tuple[int, set[int]]] = []
        self.fail = False

    def getcpu(self) -> int:
        return self.cpu

    def set_affinity(self, tid: int, cpus: set[int]) -> None:
        if self.fail:
            raise OSError(22, "Invalid argument")
        self.calls.append((tid, cpus))


def _follower(s: _Sched, enabled: bool = True) -> CpuFollower:
    return CpuFollower(getcpu=s.getcpu, set_affinity=s.set_affinity, enabled=enabled)


def test_the_follower_is_moved_only_when_the_leaders_cpu_changes():
    s = _Sched()
    f = _follower(s)
    f.here()                                  # nobody follows yet
    assert s.calls == []
    f.follow()
    me = threading.get_native_id()
    s.cpu = 1
    f.here(), f.here()
    assert s.calls == [(me, {1})] and f.cpu == 1 and f.moves == 1
    s.cpu = 0
    f.here()
    s.cpu = -1                                # sched_getcpu failed: no move
    f.here()
    assert s.calls == [(me, {1}), (me, {0})] and f.moves == 2


def test_a_follower_that_cannot_be_moved_or_has_ended_is_left_alone():
    s = _Sched()
    f = _follower(s)
    f.follow()
    s.fail = True                             # a CPU outside its cpuset, a thread gone
    s.cpu = 1
    f.here()
    s.fail = False
    s.cpu = 0
    f.here()
    f.follow()                                # a stopped follower does not start again
    f.here()
    assert s.calls == [] and f.moves == 0
    g = _follower(s)
    g.follow()
    g.stop()                                  # its thread id may be reused: never moved
    g.here()
    h = _follower(s, enabled=False)           # one allowed CPU, no sched_getcpu
    h.follow()
    h.here()
    assert s.calls == []


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU allowed: nothing to follow")
def test_a_real_thread_is_bound_to_the_cpu_the_leader_reported():
    seen: list[int] = []
    f = CpuFollower()
    real = f._getcpu
    f._getcpu = lambda: seen.append(real()) or seen[-1]
    started, done = threading.Event(), threading.Event()

    def follower() -> None:
        f.follow()
        started.set()
        done.wait(10)

    t = threading.Thread(target=follower, daemon=True)
    t.start()
    try:
        assert started.wait(10)
        f.here()
        assert seen and 0 <= seen[-1] and os.sched_getaffinity(t.native_id) == {seen[-1]}
        assert len(os.sched_getaffinity(0)) >= 2          # the leader itself is not bound
    finally:
        done.set()
        t.join(10)
