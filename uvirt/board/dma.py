"""Device work outside register accesses, in bounded pieces; re-entrancy of device DMA.

QEMU 7.2 runs device request processing in its main loop, not inside the guest's
register access: a kick with ``ioeventfd=on`` (the default of virtio-rng/blk/serial-pci,
under TCG too) only sets an event notifier, and the main loop later calls the queue's
handler; virtio-rng's default back end (``rng-builtin``) delivers entropy from a bottom
half; virtio-blk completes requests from AIO completion bottom halves.  uvirt models this
with one FIFO of *work* per machine (``DeviceWork``):

* A device schedules work (``schedule(fn)``).  Outside any register access the work runs
  at once; inside one (a guest kick, a DMA write that lands in a device register) it is
  queued and runs when the outermost access returns, before the guest's next instruction.
  This is one of the interleavings QEMU allows (its main loop taking the lock right after
  the vCPU's access), it keeps completion deterministic, and it turns MMIO -> DMA -> MMIO
  chains into a queue instead of a recursion: a DMA write into a device's notify register
  schedules that device's handler behind the current work, never inside it.
* ``fn()`` may return a generator: the work then runs in pieces, one ``yield`` per piece
  (a device yields after at most ``PIECE`` bytes of DMA).  A run does pieces until the
  slice budget (``SLICE_SECONDS``) is spent or ``should_stop()`` says a stop is pending
  (wall-clock or instruction budget, Ctrl-C); the rest waits for ``continue_later``, which
  the machine points at its run loop, so the CPU runs between slices and every stop lands
  within one piece.  Without a machine (unit tests, qtest), work runs to completion.

Re-entrancy (QEMU 7.2.22 as Debian ships it, which carries the 8.0 guard backported:
softmmu/memory.c ``access_with_adjusted_size``): every MMIO/port access to a device's
registers engages that device's ``MemReentrancyGuard`` for its duration; a second access
to any register of the same device while it is engaged (a DMA the device itself started
from inside the first) is dropped — a read gives 0 — and reported once
("Blocked re-entrant IO").  ``ReentrancyGuard`` is that flag; regions of one device share
it.  Work queued here runs with no guard engaged, as main-loop bottom halves do in QEMU.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Iterator

#: Bytes a device moves per piece of work (one entropy draw, one block read).
PIECE = 1 << 20
#: Wall-clock time a run of work may take before the CPU gets its turn.
SLICE_SECONDS = 0.02

Work = Callable[[], "Iterator | None"]

#: Yielded by a handler that runs inside a register access (``ioeventfd=off``) where
#: QEMU's part inside the access ends: the rest (AIO completions) is main-loop work.
AFTER_ACCESS = object()


class DeviceWork:
    """The machine's queue of device work (QEMU's main-loop bottom halves).

    Queue entries are ``[fn, owner, generator]``: ``fn`` not yet called, or the
    generator it returned, run one piece per step."""

    def __init__(self) -> None:
        #: the FIFO (one deque for the board's life: register-access wrappers keep a
        #: reference); read it, change it through schedule / cancel / discard
        self.queue: deque = deque()
        self.depth = 0                 # register accesses in progress (guest or DMA)
        self.running = False
        #: ``() -> bool``: a stop is pending; work yields at the next piece boundary.
        self.should_stop: Callable[[], bool] = lambda: False
        #: ``() -> None``: called when work is left over after a slice (the machine
        #: resumes it between CPU slices).  None: run everything now.
        self.continue_later: Callable[[], None] | None = None
        self.pieces = 0                # pieces run so far (tests, trace)

    @property
    def pending(self) -> bool:
        return bool(self.queue)

    def schedule(self, fn: Work, owner: object = None) -> None:
        """Queue ``fn`` (runs now when no register access is in progress).  ``owner``
        (a device) lets ``cancel`` drop it at the device's reset."""
        self.queue.append([fn, owner, None])
        if not self.depth and not self.running:
            self.run()

    def enter(self) -> None:
        self.depth += 1

    def leave(self) -> None:
        self.depth -= 1
        if not self.depth and self.queue and not self.running:
            self.run()

    def cancel(self, owner: object) -> None:
        """Drop queued work of ``owner`` (a device reset)."""
        keep = [w for w in self.queue if w[1] is not owner]
        self.queue.clear()                  # in place: a run in progress holds the deque
        self.queue.extend(keep)

    def discard(self) -> None:
        """Drop every queued piece of work (a snapshot restore: the restored devices
        never scheduled it)."""
        self.queue.clear()

    def run(self, budget: float | None = SLICE_SECONDS) -> bool:
        """Run queued work for at most ``budget`` seconds (None: until done); True when
        the queue is empty afterwards.  The clock starts after the first piece: the
        common run (one kick, one piece) reads no clock, and a piece is bounded anyway."""
        if self.running:
            return not self.queue
        self.running = True
        later = self.continue_later
        timed = budget is not None and later is not None
        deadline = None
        q = self.queue
        stop = self.should_stop
        try:
            while q and not stop():
                entry = q[0]
                gen = entry[2]
                if gen is None:
                    gen = entry[0]()
                    if gen is None:
                        if q and q[0] is entry:
                            q.popleft()
                        else:
                            _remove(q, entry)
                        continue
                    entry[2] = gen
                if next(gen, _END) is _END:
                    if q and q[0] is entry:         # _remove(q, entry), the usual case
                        q.popleft()
                    else:
                        _remove(q, entry)
                self.pieces += 1
                if timed and q:
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + budget
                    if now >= deadline:
                        break
        finally:
            self.running = False
        if q and later is not None and not stop():
            later()
        return not q

    def drain(self) -> None:
        """Run everything (tests, qtest)."""
        while self.queue and not self.should_stop():
            self.run(None)


_END = object()          # next(gen, _END): the piece was the last one


def _remove(q: deque, entry: list) -> None:
    """Take a finished entry off the queue (normally its head; work may have cancelled
    or reordered the queue meanwhile)."""
    if q and q[0] is entry:
        q.popleft()
        return
    for i, e in enumerate(q):
        if e is entry:
            del q[i]
            return


class ReentrancyGuard:
    """QEMU's ``MemReentrancyGuard`` for one device (every register region it owns).

    ``enter`` returns False when the device is already inside an access: the caller
    drops the access (reads 0).  Also counts the access in ``work.depth`` so queued work
    waits for the outermost access to return."""

    __slots__ = ("name", "engaged", "work", "on_blocked", "blocked")

    def __init__(self, name: str, work: DeviceWork) -> None:
        self.name = name
        self.engaged = False
        self.work = work
        self.on_blocked: Callable[[str], None] | None = None
        self.blocked = 0

    def enter(self, what: str) -> bool:
        if self.engaged:
            self.block(what)
            return False
        self.engaged = True
        self.work.enter()
        return True

    def block(self, what: str) -> None:
        """An access made while engaged: dropped (QEMU MEMTX_ACCESS_ERROR), reported."""
        self.blocked += 1
        if self.on_blocked is not None:
            self.on_blocked(f"Blocked re-entrant IO on MemoryRegion: {self.name} {what}")

    def leave(self) -> None:
        self.engaged = False
        self.work.leave()
