"""The split and packed queues' fast paths (a request whose rings and buffers lie in the
rings' RAM window) do exactly what the general code does.

Each example builds two identical memories and queues from the same random ring and runs
the same operations on both: one queue keeps its RAM window (so ``pop``, ``push`` and
the notification calls take their fast paths where they can), the other drops it
(``drop_ram_window``: every ring access through ``GuestMemory``, the reference path).
After every operation the results, the guest errors and ring events, the queue's whole
state, guest memory and the device registers' write log (packed: and every code
invalidation of a host write) must be the same.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uvirt.board.memory.regions import MemoryMap, MmioRegion, RamRegion
from uvirt.errors import UvirtError
from uvirt.testing.mock_driver import MockPackedQueue, MockSplitQueue, UsedEntry
from uvirt.virtio.chain import VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE
from uvirt.virtio.features import VirtioFeature
from uvirt.virtio.packed import VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED, PackedQueue
from uvirt.virtio.queue import (Descriptor, Element, QueueBroken, RecordingEvents, SplitQueue,
                                VirtqueueBase)

RAM = 0x21000                   # "ram"; then "ram2" (another region, adjacent), ROM, registers
RAM2 = 0x2000
ROM = RAM + RAM2
REGS = ROM + 0x1000
TABLES = 0x8000

_EXAMPLES = int(os.environ.get("UVIRT_HYPOTHESIS_EXAMPLES", "0"))
SETTINGS = settings(max_examples=_EXAMPLES or 40, deadline=None, derandomize=not _EXAMPLES,
                    suppress_health_check=[HealthCheck.too_slow])


class Registers:
    """A device's register window: reads a pattern, logs writes."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, int, int]] = []

    def reset(self) -> None:
        pass

    def read(self, offset: int, size: int) -> int:
        return (offset * 0x01030507) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


def memory():
    mm = MemoryMap()
    mm.ram, mm.ram2 = RamRegion("ram", RAM), RamRegion("ram2", RAM2)
    mm.add(mm.ram, 0)
    mm.add(mm.ram2, RAM)
    mm.add(RamRegion("rom", 0x1000, readonly=True), ROM)
    regs = Registers()
    mm.add(MmioRegion("regs", 0x1000, regs), REGS)
    mm.commit()
    return mm, regs


class Ring:
    """Random descriptors, ring entries and operations, from a ``random.Random`` that
    Hypothesis hands over (a stream of a few hundred operations per example).  Most
    descriptors are ones the fast path serves, or nearly (a buffer across the end of the
    rings' RAM piece, NEXT and WRITE in any order, next at or past the table's end, a zero
    length, an INDIRECT flag); with ``garbage`` some are anything at all, and so are some
    ring indices."""

    def __init__(self, rnd, size: int, garbage: bool) -> None:
        self.rnd, self.size, self.garbage = rnd, size, garbage

    def desc(self, entries: int | None = None) -> tuple[int, int, int, int]:
        r, n = self.rnd, self.size if entries is None else entries
        if self.garbage and r.random() < 0.3:
            addr = r.choice([r.randrange(0, REGS + 0x3000), r.randrange(1 << 64), TABLES, TABLES + 0x20,
                             ROM - 4, ROM, REGS, REGS + 0xFF8])
            length = r.choice([r.randrange(65), 16, 32, 0x1000, 0xFFFF_FFFF, r.randrange(1 << 32)])
            return addr, length, r.randrange(1 << 16), r.choice([r.randrange(n + 2), r.randrange(1 << 16)])
        length = r.randrange(1, 25) if r.random() < 0.95 else 0
        if r.random() < 0.8:
            addr = r.randrange(0x20000, 0x20400)
        else:                                   # ending just before, at or just past RAM's end
            addr = RAM - length + r.randrange(-1, 2)
        flags = r.randrange(4) if r.random() < 0.9 else r.randrange(8)
        nxt = r.randrange(n) if r.random() < 0.9 else n
        return addr, length, flags, nxt

    def head(self) -> int:
        r = self.rnd
        if self.garbage and r.random() < 0.2:
            return r.choice([self.size, r.randrange(1 << 16)])
        return r.randrange(self.size)

    def op(self):
        r, n = self.rnd, self.size
        kind = r.choices(["pop", "serve", "publish", "push", "fill_flush", "notification",
                          "should_notify", "notify_decision", "is_empty", "avail_bytes", "desc",
                          "avail_ring", "avail_flags", "used_event", "chain", "avail_idx", "burst",
                          "disabled", "set_size"],
                         [8, 10, 6, 2, 1, 2, 1, 1, 1, 1, 3, 2, 1, 1, 2, 1 if self.garbage else 0, 1,
                          0.3, 0.3])[0]
        length = r.randrange(65) if r.random() < 0.8 else r.randrange(1 << 32)
        if kind in ("serve", "push"):
            return kind, length
        if kind == "publish":
            return kind, r.randrange(n + 1)
        if kind == "fill_flush":
            return kind, length, r.randrange(1, 4)
        if kind == "notification":
            return kind, r.random() < 0.5
        if kind == "avail_bytes":
            return kind, r.randrange(65), r.randrange(65)
        if kind == "desc":
            return kind, r.randrange(n), *self.desc()
        if kind == "avail_ring":
            return kind, r.randrange(n), self.head()
        if kind == "avail_flags":
            return kind, r.randrange(4)
        if kind == "used_event":
            return kind, r.randrange(2 * n + 3) if r.random() < 0.8 else r.randrange(1 << 16)
        if kind == "avail_idx":                 # mostly near the device's index, now and then a jump
            return ("avail_idx_near", r.randrange(-2, n + 3)) if r.random() < 0.8 else (kind, r.randrange(1 << 16))
        if kind == "disabled":
            return kind, r.random() < 0.5
        if kind == "set_size":
            return kind, r.choice([n, 2 * n, n + 1, r.randrange(1, 1025)])
        if kind == "chain":
            bufs = [(r.randrange(1, 301), r.random() < 0.5) for _ in range(r.randrange(1, 5))]
            return kind, sorted(bufs, key=lambda b: b[1])
        return (kind,)


def _norm(r):
    """A pop result as comparable data (a bounce mapping by its contents)."""
    if r is None:
        return None
    if isinstance(r, QueueBroken):
        return ("broken", r.kind, r.reason, r.fields)
    b = r.bounce
    bounce = None if b is None else (b[0], b[1], b[2].addr, b[2].length, bytes(b[2].buffer))
    return ("elem", r.head, r.readable, r.writable, r.ndescs, bounce)


_NOT_DEVICE = object()


def _device_op(q, popped: list, kind: str, args: list):
    """What the device does, for both ring layouts (``Side`` and ``PackedSide`` add the
    driver's operations); ``_NOT_DEVICE`` when ``kind`` is the driver's."""
    if kind == "pop":
        r = q.pop()
        if isinstance(r, Element):
            popped.append(r)
        return _norm(r)
    if kind == "serve":                         # pop, and push what it gave
        r = q.pop()
        if isinstance(r, Element):
            q.push(r, args[0])
        return _norm(r)
    if kind == "push":
        if not popped:
            return None
        return q.push(popped.pop(0), args[0])
    if kind == "fill_flush":
        if not popped:
            return None
        n = min(args[1], len(popped))
        for k in range(n):
            q.fill(popped.pop(0), args[0], k)
        return q.flush(n)
    if kind == "notification":
        return q.set_notification(args[0])
    if kind == "should_notify":
        return q.should_notify()
    if kind == "notify_decision":
        return q.notify_decision()
    if kind == "is_empty":
        return q.is_empty()
    if kind == "avail_bytes":
        r = q.avail_bytes(*args)
        return _norm(r) if isinstance(r, QueueBroken) else r
    if kind == "rewind":
        return q.rewind(args[0])
    if kind == "disabled":                      # the device broke or was disabled, or came back
        q.disabled = args[0]
        return None
    if kind == "set_size":                      # a size write after the rings were set
        return q.set_size(args[0])
    return _NOT_DEVICE


class _Queued:
    """One memory, a driver (``make_driver(guest_memory)``) and a ``queue_type`` queue it
    configures, with the rings' RAM window (``fast``) or without it."""

    def __init__(self, queue_type, make_driver, size, features, tracing, strict, fast) -> None:
        self.mm, self.regs = memory()
        self.ram, self.ram2 = self.mm.ram, self.mm.ram2
        self.mem = self.mm.guest
        self.drv = make_driver(self.mem)
        self.events = RecordingEvents()
        self.events.tracing = tracing
        self.q = queue_type(self.mem, size, events=self.events, strict=strict)
        self.q.set_features(features)
        self.drv.configure(self.q)
        if not fast:
            self.q.drop_ram_window()
        self.popped: list[Element] = []


class Side(_Queued):
    """One memory, driver and queue."""

    def __init__(self, size, layout, base, features, tracing, strict, fast) -> None:
        super().__init__(SplitQueue, lambda mem: MockSplitQueue(mem, base, size, layout=layout),
                         size, features, tracing, strict, fast)

    def state(self):
        q = self.q
        fields = tuple(_norm(v) if isinstance(v, QueueBroken) else v
                       for v in (getattr(q, n) for n in SplitQueue.snapshot_state))
        ram = bytes(self.ram.buffer.view) + bytes(self.ram2.buffer.view)
        bounce = self.mem.bounce and (self.mem.bounce.addr, self.mem.bounce.length)
        return fields, ram, list(self.regs.writes), bounce, list(self.events.errors), list(self.events.rings)

    def apply(self, op):
        kind, *args = op
        q, drv = self.q, self.drv
        r = _device_op(q, self.popped, kind, args)
        if r is not _NOT_DEVICE:
            return r
        if kind == "burst":                     # pops without pushes, past the ring's size
            out = []
            for _ in range(q.size + 1):
                self.apply(("publish", 1))
                out.append(self.apply(("pop",)))
            return out
        if kind == "desc":
            return drv.write_desc(*args)
        if kind == "avail_idx":
            return drv.set_avail_idx(args[0])
        if kind == "avail_idx_near":
            return drv.set_avail_idx(q.last_avail_idx + args[0])
        if kind == "publish":                   # up to k more entries (whatever the slots hold)
            room = q.size - ((drv.avail_idx - q.last_avail_idx) & 0xFFFF)
            return drv.set_avail_idx(drv.avail_idx + max(0, min(args[0], room)))
        if kind == "avail_ring":
            return drv.set_avail_ring(args[0] % q.size, args[1])
        if kind == "avail_flags":
            drv.avail_flags = args[0]
            return None
        if kind == "used_event":
            return drv.set_avail_ring(q.size, args[0])        # used_event = avail.ring[N]
        if kind == "chain":
            if len(drv.free) < len(args[0]):
                return None
            return drv.add_chain(args[0]).head
        raise AssertionError(kind)


@SETTINGS
@given(size=st.sampled_from([1, 2, 3, 4, 8, 16]), layout=st.sampled_from(["legacy", "modern"]),
       base=st.sampled_from([0x10000, 0x10000, 0x10000, RAM - 0x100, RAM - 0x400]),
       features=st.sampled_from([0, 0, VirtioFeature.RING_EVENT_IDX, VirtioFeature.NOTIFY_ON_EMPTY,
                                 VirtioFeature.RING_EVENT_IDX | VirtioFeature.NOTIFY_ON_EMPTY]),
       tracing=st.booleans(), strict=st.booleans(), garbage=st.booleans(),
       start=st.one_of(st.just(0), st.integers(0, 0xFFFF), st.integers(0xFFF0, 0xFFFF)),
       signalled=st.one_of(st.none(), st.integers(-2, 3), st.integers(0, 0xFFFF).map(lambda v: (v,))),
       rnd=st.randoms(use_true_random=True))
def test_split_fast_paths_match_the_general_code(size, layout, base, features, tracing, strict,
                                                 garbage, start, signalled, rnd):
    """``start``: where the indices stand (a queue that has served requests before, near
    the 16-bit wrap too); ``signalled``: the last used index a notification was decided
    at, relative to ``start`` or ``(absolute,)`` (None: no decision yet).  ``rnd`` is a
    true ``random.Random`` seeded by Hypothesis: Hypothesis's own random draws ``choices``
    far from their weights, and with it the fast path served 5 elements in the whole run."""
    if layout == "legacy":
        base &= ~0xFFF
    fast = Side(size, layout, base, features, tracing, strict, fast=True)
    slow = Side(size, layout, base, features, tracing, strict, fast=False)
    ring = Ring(rnd, size, garbage)
    tables = [ring.desc(6) for _ in range(rnd.randrange(7))]
    descs = [ring.desc() for _ in range(size)]
    heads = [ring.head() for _ in range(size)]
    avail_idx = rnd.randrange(size + 1) if not garbage or rnd.random() < 0.9 else rnd.randrange(1 << 16)
    for side in (fast, slow):
        q = side.q
        q.last_avail_idx = q.shadow_avail_idx = q.used_idx = start
        q.signalled_used_valid = signalled is not None
        q.signalled_used = (0 if signalled is None else signalled[0] if isinstance(signalled, tuple)
                            else (start + signalled) & 0xFFFF)
        side.drv.mem.write_u16(side.drv.used_addr + 2, start)
        side.drv.write_table(TABLES, [Descriptor(*t) for t in tables])
        for i, d in enumerate(descs):
            side.drv.write_desc(i, *d)
        for slot, head in enumerate(heads):
            side.drv.set_avail_ring(slot, head)
        side.drv.set_avail_idx(start + avail_idx)
    assert fast.state() == slow.state()
    for _ in range(200):
        op = ring.op()
        assert fast.apply(op) == slow.apply(op), op
        assert fast.state() == slow.state(), op


def _well_formed(size=8):
    mm, _ = memory()
    drv = MockSplitQueue(mm.guest, 0x10000, size)
    q = SplitQueue(mm.guest, size)
    drv.configure(q)
    return drv, q


def test_the_usual_request_takes_the_fast_paths(monkeypatch):
    """A direct chain in the rings' RAM is popped, pushed and notified without the general
    code (a change that sent it there would still pass the comparison above, only slowly)."""
    drv, q = _well_formed()
    chain = drv.add_chain([(16, False), (4096, True), (1, True)])

    def general(*_a, **_k):
        raise AssertionError("the general path ran")

    for name in ("_pop", "_collect", "fill", "flush", "_decide", "_ld16", "_st"):
        monkeypatch.setattr(SplitQueue, name, general)
    q.set_notification(False)
    elem = q.pop()
    assert (elem.head, elem.readable, elem.writable) == (chain.head, chain.readable, chain.writable)
    q.push(elem, 4097)
    assert q.pop() is None
    q.set_notification(True)
    assert q.should_notify()
    assert drv.used_entries() == [UsedEntry(chain.head, 4097)]


@pytest.mark.parametrize("flags", [VRING_DESC_F_INDIRECT, 0])
def test_a_chain_the_fast_path_leaves_is_popped_by_the_general_code(flags):
    """An indirect head, or a buffer outside the rings' RAM piece, goes through
    ``_collect`` (the table or the bounce buffer)."""
    drv, q = _well_formed()
    drv.write_table(TABLES, [Descriptor(0x20100, 8, 0, 0)])
    addr, n = (TABLES, 16) if flags else (REGS, 8)
    drv.write_desc(0, addr, n, flags, 0)
    drv.publish(0)
    elem = q.pop()
    assert isinstance(elem, Element)
    assert elem.readable == (((0x20100, 8),) if flags else ((REGS, 8),))
    assert (elem.bounce is not None) == (not flags)


def test_a_next_index_at_the_tables_end_is_next_oob():
    """``next == size`` names the bytes after the table (here a valid-looking descriptor):
    the fast path must not follow it any more than the general walk does."""
    mm, _ = memory()
    drv = MockSplitQueue(mm.guest, 0x10000, 4, layout="modern")
    q = SplitQueue(mm.guest, 4, events=RecordingEvents())
    drv.configure(q)
    drv.write_desc(0, 0x20100, 16, 1, 4)                   # NEXT, next = 4 = size
    drv.write_desc(4, 0x20200, 16, 0, 0)                   # what lies after the table
    drv.publish(0)
    r = q.pop()
    assert isinstance(r, QueueBroken) and r.kind == "next_oob"


def _twins(size=4, layout="legacy", base=0x10000, features=0):
    return [Side(size, layout, base, features, True, False, fast) for fast in (True, False)]


def _same(sides, *ops):
    for op in ops:
        results = [side.apply(op) for side in sides]
        assert results[0] == results[1], op
        assert sides[0].state() == sides[1].state(), op


def test_a_bounced_element_is_pushed_by_the_general_code():
    """The bounce (a buffer in a device's registers) is written back at push."""
    sides = _twins()
    for side in sides:
        side.drv.write_desc(0, REGS + 0x10, 8, VRING_DESC_F_WRITE, 0)
    _same(sides, ("publish", 1), ("pop",))
    assert sides[0].popped[0].bounce is not None
    for side in sides:                      # the device's data, into the bounce
        side.popped[0].write(side.mem, b"\x11" * 8)
    _same(sides, ("push", 8))
    assert sides[0].regs.writes


def test_a_used_slot_across_the_windows_end_is_written_by_the_general_code():
    """After a size write the next used slot can straddle the end of the rings' RAM piece:
    its bytes go to both regions, through GuestMemory."""
    sides = _twins(size=4, layout="modern", base=RAM - 0x200)
    for side in sides:
        q = side.q
        used = RAM - (4 + 8 * 4) - 4        # the used ring ends 4 bytes before RAM's end
        assert q.set_rings(q.desc, q.avail, used) is None
        side.drv.write_desc(0, 0x20100, 8, VRING_DESC_F_WRITE, 0)
        q.used_idx = 4
    sides[1].q.drop_ram_window()
    assert sides[0].q._win is not None
    _same(sides, ("publish", 1), ("pop",), ("set_size", 5), ("push", 8))   # slot 4: RAM-4..RAM+4
    assert sides[0].ram2.buffer.view[:4] == (8).to_bytes(4, "little")


@pytest.mark.parametrize("signalled", [0, 1, 2])
def test_the_signalled_index_after_a_push(signalled):
    """flush's check on the last signalled used index, at and around the pushed index."""
    sides = _twins(features=VirtioFeature.RING_EVENT_IDX)
    for side in sides:
        side.q.signalled_used, side.q.signalled_used_valid = signalled, True
    _same(sides, ("chain", [(8, True)]), ("pop",), ("push", 8), ("should_notify",), ("notify_decision",))


def test_a_disabled_queue_drops_the_push():
    sides = _twins()
    _same(sides, ("chain", [(8, True)]), ("pop",), ("disabled", True), ("push", 8), ("disabled", False),
          ("chain", [(8, True)]), ("serve", 8))


@pytest.mark.parametrize("features", [0, VirtioFeature.NOTIFY_ON_EMPTY])
@pytest.mark.parametrize("flags", [0, 1])
def test_the_notification_decision_without_event_idx(features, flags):
    """avail.flags decides, but NOTIFY_ON_EMPTY overrides it for an empty ring with
    nothing in flight."""
    sides = _twins(features=features)
    _same(sides, ("avail_flags", flags), ("should_notify",), ("chain", [(8, True)]), ("should_notify",),
          ("pop",), ("should_notify",), ("push", 8), ("should_notify",))


# --------------------------------------------------------------------------- packed rings
#
# The same comparison for PackedQueue (pop, push, should_notify through the window).


class PackedRing:
    """Random driver-side contents of a packed ring: chains written at the device's next
    slot (wrapping at a size that need not be a power of two, across a lap, longer than
    the ring), indirect heads, raw descriptors in any slot, event suppression structures;
    most buffers are ones the fast path serves, or nearly (zero length, across the end of
    the rings' RAM piece, readable after writable); with ``garbage`` some are anything."""

    def __init__(self, rnd, size: int, garbage: bool) -> None:
        self.rnd, self.size, self.garbage = rnd, size, garbage

    def buf(self) -> tuple[int, int]:
        r = self.rnd
        if self.garbage and r.random() < 0.2:
            return (r.choice([r.randrange(0, REGS + 0x3000), r.randrange(1 << 64), TABLES, ROM - 4, ROM,
                              REGS, REGS + 0xFF8]),
                    r.choice([r.randrange(65), 16, 0x1000, 0xFFFF_FFFF, r.randrange(1 << 32)]))
        length = r.randrange(1, 25) if r.random() < 0.97 else 0
        if r.random() < 0.92:
            return r.randrange(0x20000, 0x20400), length
        return RAM - length + r.randrange(-1, 2), length     # ending just before, at or past RAM's end

    def lap_bits(self) -> str:
        """Which lap the AVAIL/USED bits name: the slot's own (available), the other one,
        or anything."""
        return self.rnd.choices(["lap", "other", "any"], [8, 1, 1])[0]

    def desc(self) -> tuple:
        r = self.rnd
        addr, length = self.buf()
        return addr, length, r.randrange(1 << 16), r.randrange(8) if r.random() < 0.9 else r.randrange(1 << 16)

    def chain(self) -> list:
        r = self.rnd
        n = r.choice([1, 1, 2, 3, 4, r.randrange(1, self.size + 3)])
        descs = []
        for k in range(n):
            addr, length = self.buf()
            write = r.random() < 0.5
            more = k < n - 1 if r.random() < 0.97 else k >= n - 1
            extra = VRING_DESC_F_INDIRECT if r.random() < 0.03 else 0
            descs.append((addr, length, r.randrange(self.size + 2) if r.random() < 0.9 else r.randrange(1 << 16),
                          write, more, extra, self.lap_bits()))
        if r.random() < 0.9:                            # readable before writable, mostly
            descs.sort(key=lambda d: d[3])
        return descs

    def op(self):
        r, n = self.rnd, self.size
        kind = r.choices(["pop", "serve", "chain", "indirect", "desc", "push", "fill_flush", "notification",
                          "should_notify", "driver_event", "is_empty", "avail_bytes", "rewind", "burst",
                          "disabled", "set_size"],
                         [4, 10, 10, 1.5, 2, 6, 1.5, 1, 2, 1, 1, 1, 0.5, 0.3, 0.3, 0.4])[0]
        length = r.randrange(65) if r.random() < 0.8 else r.randrange(1 << 32)
        if kind in ("serve", "push"):
            return kind, length
        if kind == "fill_flush":
            return kind, length, r.randrange(1, 4)
        if kind == "chain":
            return kind, self.chain()
        if kind == "indirect":
            entries = [self.desc() for _ in range(r.randrange(1, 5))]
            tlen = r.choice([16 * len(entries)] * 6 + [0, 8, 16 * len(entries) + 4])
            return kind, entries, tlen, r.choice([0, 0, 0, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE]), \
                r.randrange(n + 2), self.lap_bits()
        if kind == "desc":
            return kind, r.randrange(n + 1), *self.desc()
        if kind == "notification":
            return kind, r.random() < 0.5
        if kind == "driver_event":
            return kind, r.choice([0, 1, 2, 2, 3]), r.randrange(1 << 16)
        if kind == "avail_bytes":
            return kind, r.randrange(65), r.randrange(65)
        if kind == "rewind":
            return kind, r.randrange(4)
        if kind == "disabled":
            return kind, r.random() < 0.5
        if kind == "set_size":
            return kind, r.choice([n, n, n, 2 * n, n + 1, max(1, n - 1), r.randrange(1, 1025)])
        return (kind,)


class PackedSide(_Queued):
    """One memory, driver and packed queue."""

    def __init__(self, size, base, features, tracing, strict, fast) -> None:
        super().__init__(PackedQueue, lambda mem: MockPackedQueue(mem, base, size, data_size=0x1000),
                         size, features, tracing, strict, fast)
        #: every host write's code invalidation (what a held snapshot's dirty log sees)
        self.host_writes: list[tuple[int, int]] = []
        self.mm.dirty_log = lambda addr, n: self.host_writes.append((addr, n))

    def state(self):
        q = self.q
        fields = tuple(_norm(v) if isinstance(v, QueueBroken) else v
                       for v in (getattr(q, n) for n in PackedQueue.snapshot_state + VirtqueueBase.snapshot_state))
        ram = bytes(self.ram.buffer.view) + bytes(self.ram2.buffer.view)
        bounce = self.mem.bounce and (self.mem.bounce.addr, self.mem.bounce.length)
        return (fields, ram, list(self.regs.writes), bounce, list(self.events.errors), list(self.events.rings),
                list(self.host_writes))

    def bits(self, lap: bool, which: str) -> int:
        if which == "lap":
            return VRING_PACKED_DESC_F_AVAIL if lap else VRING_PACKED_DESC_F_USED
        if which == "other":
            return VRING_PACKED_DESC_F_USED if lap else VRING_PACKED_DESC_F_AVAIL
        return (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED, 0)[self.q.inuse & 1]

    def apply(self, op):
        try:
            return self._apply(op)
        except UvirtError as e:             # a host mistake (flushing more than is in flight)
            return ("raised", str(e))

    def _apply(self, op):
        kind, *args = op
        q, drv = self.q, self.drv
        r = _device_op(q, self.popped, kind, args)
        if r is not _NOT_DEVICE:
            return r
        if kind == "burst":                 # one-descriptor chains popped and not pushed, past the size
            out = []
            for _ in range(min(q.size, 2 * drv.size) + 1):
                self._apply(("chain", [(0x20100, 8, 7, True, False, 0, "lap")]))
                out.append(self._apply(("pop",)))
            return out
        if kind == "chain":                 # at the device's next slot, the head's flags last
            slot, lap = q.last_avail_idx, q.last_avail_wrap_counter
            writes = []
            for addr, length, bid, write, more, extra, which in args[0]:
                flags = (self.bits(lap, which) | extra | (VRING_DESC_F_WRITE if write else 0)
                         | (VRING_DESC_F_NEXT if more else 0))
                writes.append((slot, addr, length, bid, flags))
                slot += 1
                if slot >= q.size:
                    slot, lap = 0, not lap
            for w in writes[1:] + writes[:1]:
                drv.write_desc(*w)
            return None
        if kind == "indirect":
            entries, tlen, extra, bid, which = args
            drv.write_table(TABLES, entries)
            flags = self.bits(q.last_avail_wrap_counter, which) | VRING_DESC_F_INDIRECT | extra
            return drv.write_desc(q.last_avail_idx, TABLES, tlen, bid, flags)
        if kind == "desc":
            return drv.write_desc(*args)
        if kind == "driver_event":
            return drv.set_driver_event(*args)
        raise AssertionError(kind)


@SETTINGS
@given(size=st.sampled_from([1, 2, 3, 5, 7, 8, 16]),
       base=st.sampled_from([0x10000, 0x10000, 0x10000, RAM - 0x200, RAM - 0x400]),
       features=st.sampled_from([0, VirtioFeature.RING_EVENT_IDX]),
       tracing=st.booleans(), strict=st.booleans(), garbage=st.booleans(),
       avail_wrap=st.booleans(), used_wrap=st.booleans(), start=st.integers(0, 15),
       used=st.integers(0, 15), signalled=st.one_of(st.none(), st.integers(0, 15)),
       rnd=st.randoms(use_true_random=True))
def test_packed_fast_paths_match_the_general_code(size, base, features, tracing, strict, garbage,
                                                  avail_wrap, used_wrap, start, used, signalled, rnd):
    """``start``/``used`` (mod size) and the two wrap counters: where a queue that has served
    requests before stands; ``signalled``: the used index a notification was last decided at.
    ``rnd`` is a true ``random.Random`` (seeded by Hypothesis): Hypothesis's own random
    draws ``choices`` far from their weights, and the mix of operations matters here."""
    fast = PackedSide(size, base, features, tracing, strict, fast=True)
    slow = PackedSide(size, base, features, tracing, strict, fast=False)
    ring = PackedRing(rnd, size, garbage)
    descs = [ring.desc() for _ in range(size)]
    for side in (fast, slow):
        q = side.q
        q.last_avail_idx = q.shadow_avail_idx = start % size
        q.last_avail_wrap_counter = q.shadow_avail_wrap_counter = avail_wrap
        q.used_idx, q.used_wrap_counter = used % size, used_wrap
        q.signalled_used_valid = signalled is not None
        q.signalled_used = (signalled or 0) % size
        for i, d in enumerate(descs):
            side.drv.write_desc(i, *d)
    assert fast.state() == slow.state()
    for _ in range(200):
        op = ring.op()
        assert fast.apply(op) == slow.apply(op), op
        assert fast.state() == slow.state(), op


def _packed_well_formed(size=8, base=0x10000):
    mm, _ = memory()
    drv = MockPackedQueue(mm.guest, base, size)
    q = PackedQueue(mm.guest, size, events=RecordingEvents())
    drv.configure(q)
    return drv, q


@pytest.mark.parametrize("tracing", [False, True])
def test_the_usual_packed_request_takes_the_fast_paths(monkeypatch, tracing):
    """Direct chains in the rings' RAM (one across the ring's end, into the next lap) are
    popped, pushed and notified without the general code."""
    drv, q = _packed_well_formed(size=5)
    q.events.tracing = tracing

    def general(*_a, **_k):
        raise AssertionError("the general path ran")

    for name in ("_pop", "_collect", "fill", "flush", "_write_used_desc", "driver_event"):
        monkeypatch.setattr(PackedQueue, name, general)
    for specs, length in [([(16, False), (4096, True), (1, True)], 4097), ([(8, True)] * 4, 32),
                          ([(24, False)], 0)]:
        chain = drv.add_chain(specs)
        elem = q.pop()
        assert (elem.head, elem.readable, elem.writable, elem.ndescs) == \
            (chain.head, chain.readable, chain.writable, len(specs))
        q.push(elem, length)
        assert q.pop() is None
        assert q.should_notify()
        assert drv.used_entries() == [UsedEntry(chain.head, length)]
    assert (q.last_avail_idx, q.last_avail_wrap_counter, q.used_idx, q.used_wrap_counter) == (3, False, 3, False)
    assert q.events.errors == []
    assert [name for name, _ in q.events.rings] == (["vq_pop", "vq_fill", "vq_flush"] * 3 if tracing else [])


def test_a_packed_chain_the_fast_path_leaves_is_popped_by_the_general_code():
    """An indirect head and a buffer outside the rings' RAM piece go through ``_pop``."""
    drv, q = _packed_well_formed()
    ind = drv.add_indirect_chain([(16, False), (8, True)])
    elem = q.pop()
    assert (elem.head, elem.readable, elem.writable, elem.ndescs) == (ind.head, ind.readable, ind.writable, 1)
    q.push(elem, 8)
    (slot, wrap), = drv._slots(1)
    drv.write_desc(slot, REGS + 0x10, 8, 3, drv.avail_bits(wrap) | VRING_DESC_F_WRITE)
    elem = q.pop()
    assert elem.writable == ((REGS + 0x10, 8),) and elem.bounce is not None and elem.head == 3


@pytest.mark.parametrize("extra", [0, 1])
def test_a_direct_chain_of_size_descriptors_and_one_more(extra):
    """N descriptors are one element; N + 1 (NEXT on the N-th) is QEMU's loop."""
    drv, q = _packed_well_formed(size=3)
    for slot in range(3):
        flags = drv.avail_bits() | VRING_DESC_F_WRITE | (VRING_DESC_F_NEXT if slot < 2 or extra else 0)
        drv.write_desc(slot, 0x20100 + 0x10 * slot, 8, 9, flags)
    r = q.pop()
    if extra:
        assert isinstance(r, QueueBroken) and r.kind == "loop"
        assert (q.last_avail_idx, q.inuse) == (0, 0)
    else:
        assert isinstance(r, Element) and r.ndescs == 3 and r.head == 9
        assert (q.last_avail_idx, q.last_avail_wrap_counter, q.inuse) == (0, False, 3)


@pytest.mark.parametrize("used_idx", [0, 3, 4])
def test_a_packed_push_after_the_size_shrank(used_idx):
    """A size write below the used index: the used slot wraps once into the next lap (the
    trace names used_idx mod size), as ``_write_used_desc`` and ``flush`` have it."""
    sides = [PackedSide(5, 0x10000, 0, True, False, fast) for fast in (True, False)]
    for side in sides:
        side.q.used_idx = used_idx
    ops = [("chain", [(0x20100, 8, 7, True, True, 0, "lap"), (0x20200, 8, 7, True, False, 0, "lap")]),
           ("pop",), ("set_size", 3), ("push", 8), ("should_notify",),
           ("chain", [(0x20300, 8, 2, True, False, 0, "lap")]), ("serve", 4)]
    for op in ops:
        results = [side.apply(op) for side in sides]
        assert results[0] == results[1], op
        assert sides[0].state() == sides[1].state(), op
    assert [f["slot"] for name, f in sides[0].events.rings if name == "vq_fill"][0] == used_idx % 3
