"""The halted CPU's wait (uvirt/cpu/halt_wake.py) and the poll-before-sleep policy
(uvirt/polling.py), without a CPU and without timing assertions."""

from __future__ import annotations

import os
import threading

import pytest

from uvirt.cpu.halt_wake import HaltWake
from uvirt.polling import PollThenSleep


# --------------------------------------------------------------------------- PollThenSleep


def test_poll_returns_what_look_found_and_keeps_polling():
    p = PollThenSleep(poll_ns=10**9, busy_ns=10**9)      # a loaded host changes nothing
    calls = []

    def look():
        calls.append(1)
        return "ring" if len(calls) == 3 else None

    assert p.poll(look) == "ring" and len(calls) == 3
    assert (p.won, p.lost) == (1, 0)
    calls.clear()
    assert p.poll(look) == "ring"            # no back-off after a success


def test_a_lost_poll_skips_the_next_polls_doubling_up_to_the_cap():
    p = PollThenSleep(poll_ns=1000, backoff_max=4)
    looks = []
    pattern = []
    for _ in range(20):
        before = len(looks)
        assert p.poll(lambda: looks.append(1)) is None
        pattern.append(len(looks) > before)      # did this wait poll at all?
    # poll, skip 1, poll, skip 2, poll, skip 4, poll, skip 4 ...
    assert pattern[:12] == [True, False, True, False, False, True, False, False, False, False,
                            True, False]
    assert p.lost == sum(pattern)


def test_a_won_poll_resets_the_back_off():
    p = PollThenSleep(poll_ns=1000, backoff_max=1024)
    for _ in range(3):                          # lost, skip 1, lost, skip 2, lost -> skip 4
        while p.poll(lambda: None) is None and p._skip == 0:
            pass
        while p._skip:
            assert p.poll(lambda: 1 / 0) is None      # a skipped wait does not look
    assert p.poll(lambda: True) is True
    assert p.poll(lambda: None) is None and p._skip == 1


def test_poll_ns_zero_never_looks_and_a_short_deadline_is_not_a_loss():
    assert PollThenSleep(poll_ns=0).poll(lambda: 1 / 0) is None
    p = PollThenSleep(poll_ns=10**9)
    assert p.poll(lambda: None, timeout=0.0) is None
    assert p.lost == 0 and p._skip == 0


# --------------------------------------------------------------------------- HaltWake


class Source:
    """A wake source over an eventfd that logs what the wait does with it."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.log: list[str] = []
        self.closed = False

    def fileno(self) -> int:
        return -1 if self.closed else self.fd

    def pause(self) -> None:
        self.log.append("pause")

    def resume(self) -> None:
        self.log.append("resume")

    def ready(self) -> None:
        self.log.append(f"ready {os.eventfd_read(self.fd)}")

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture(params=[True, False], ids=["polling", "sleeping"])
def wake(request):
    w = HaltWake()
    if not request.param:
        w.polling.poll_ns = 0
    yield w
    w.close()


def test_without_sources_it_is_an_event():
    w = HaltWake()
    assert w.wait(0) is False
    w.set()
    assert w.is_set() and w.wait() is True
    w.clear()
    assert not w.is_set()
    w.clear()                                      # nothing to clear: still clear
    assert not w.is_set() and w.wait(0) is False
    w.set()
    assert w.wait(0) is True
    w.close()


def test_a_readable_source_is_serviced_before_its_thread_watches_again(wake):
    s = Source()
    wake.watch(s)
    os.eventfd_write(s.fd, 3)
    assert wake.wait(30) is False                  # serviced; nobody set the flag
    assert s.log == ["pause", "ready 3", "resume"]
    s.close()


def test_a_set_flag_returns_at_once_without_touching_the_sources(wake):
    s = Source()
    wake.watch(s)
    wake.set()
    assert wake.wait(30) is True and s.log == []
    s.close()


def test_set_from_another_thread_wakes_the_sleeping_wait(wake):
    s = Source()
    wake.watch(s)
    done = threading.Event()

    def kicker():
        while not wake._sleeping and not done.is_set():   # until the waiter sleeps
            pass
        wake.set()

    t = threading.Thread(target=kicker)
    wake.polling.poll_ns = 0                        # straight to sleep
    t.start()
    try:
        assert wake.wait(30) is True                # a lost kick would time out: False
    finally:
        done.set()
        t.join()
    assert s.log == ["pause", "resume"]
    s.close()


def test_a_closed_source_is_not_watched(wake):
    s = Source()
    wake.watch(s)
    s.closed = True
    assert wake.wait(0) is False and s.log == []
    wake.unwatch(s)
    assert wake._sources == []
    s.close()


def test_a_poll_that_lost_the_cpu_to_another_thread_stops_as_lost():
    p = PollThenSleep(poll_ns=10**9, busy_ns=-1)         # every yield "ran another thread"
    looks = []
    assert p.poll(lambda: looks.append(1)) is None
    assert len(looks) == 1 and p.lost == 1 and p._skip == 1


def test_the_event_is_threading_events_own_state_over_an_rlock():
    """HaltWake's event is threading.Event with its condition over an RLock (cheaper to
    make): the same attributes Event.__init__ makes, so Event's methods work on it; and
    a set() from another thread wakes a wait() as Event's does."""
    import threading
    from uvirt.cpu.halt_wake import _Event
    e = _Event()
    assert set(vars(e)) == set(vars(threading.Event()))
    assert e.wait(0) is False
    t = threading.Timer(0.01, e.set)
    t.start()
    assert e.wait(30) is True
    t.join()
    e.clear()
    assert not e.is_set()
