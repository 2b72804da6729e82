"""Virtqueues on a guest memory that refuses some accesses.  The GuestMemory protocol lets
``read``/``write`` raise ``GuestMemoryError`` (an access no memory answers); a ring then
behaves as QEMU's does when a ring cache cannot be used: descriptor reads break the queue
with "Cannot map descriptor ring", other ring fields read 0 and their writes are dropped,
each recorded as a guest error, and nothing raises into the host."""

from __future__ import annotations

import pytest

from uvirt.errors import GuestMemoryError
from uvirt.testing.mock_driver import MockPackedQueue, MockSplitQueue, guest_ram
from uvirt.virtio.chain import PackedChain
from uvirt.virtio.features import VirtioFeature
from uvirt.virtio.packed import PackedQueue
from uvirt.virtio.queue import QueueBroken, RecordingEvents, SplitQueue

RAM = 1 << 20
RING = 0x10000


class FaultyMemory:
    """A guest memory whose reads and writes in ``[lo, hi)`` raise GuestMemoryError; no
    RAM window, so every ring access takes the GuestMemory path."""

    def __init__(self, mem) -> None:
        self._mem = mem
        self.lo = self.hi = 0

    def poison(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def _check(self, addr: int, size: int) -> None:
        if addr < self.hi and addr + size > self.lo:
            raise GuestMemoryError(addr, size, "poisoned")

    def read(self, addr: int, size: int) -> bytes:
        self._check(addr, size)
        return self._mem.read(addr, size)

    def read_u16(self, addr: int) -> int:
        self._check(addr, 2)
        return self._mem.read_u16(addr)

    def write(self, addr: int, data) -> None:
        self._check(addr, len(data))
        self._mem.write(addr, data)

    def write_u16(self, addr: int, value: int) -> None:
        self._mem.write_u16(addr, value)

    def __getattr__(self, name):
        if name == "ram_window":
            raise AttributeError(name)
        return getattr(self._mem, name)


@pytest.fixture
def mem():
    return FaultyMemory(guest_ram(RAM))


def _split(mem, **kw):
    drv = MockSplitQueue(mem._mem, RING, 8, layout="modern")
    events = RecordingEvents()
    q = SplitQueue(mem, 8, events=events)
    q.set_features(kw.get("features", 0))
    assert drv.configure(q) is None
    return drv, q, events


def _packed(mem, **kw):
    drv = MockPackedQueue(mem._mem, RING, 8)
    events = RecordingEvents()
    q = PackedQueue(mem, 8, events=events)
    q.set_features(kw.get("features", 0))
    assert drv.configure(q) is None
    return drv, q, events


def _broken(result, events, kind="desc_ring_unmappable", reason="Cannot map descriptor ring"):
    assert isinstance(result, QueueBroken)
    assert (result.kind, result.reason) == (kind, reason)
    assert events.fatal_kinds == [kind]
    return result


def test_split_descriptor_that_cannot_be_read_breaks_the_queue(mem):
    drv, q, events = _split(mem)
    chain = drv.add_chain([(4, True)])
    mem.poison(drv.desc_addr, drv.desc_addr + 16 * 8)
    r = _broken(q.pop(), events)
    assert r.fields == {"head": chain.head, "addr": drv.desc_addr + 16 * chain.head}


def test_split_avail_bytes_with_an_unreadable_descriptor(mem):
    drv, q, events = _split(mem)
    drv.add_chain([(4, True)])
    mem.poison(drv.desc_addr, drv.desc_addr + 16 * 8)
    _broken(q.avail_bytes(), events)


def test_split_indirect_table_that_cannot_be_read(mem):
    drv, q, events = _split(mem)
    chain = drv.add_indirect_chain([(4, True), (4, True)])
    mem.poison(chain.table, chain.table + 32)
    r = _broken(q.pop(), events)
    assert r.fields["addr"] == chain.table


def test_split_ring_fields_read_0_and_writes_are_dropped_with_a_guest_error(mem):
    drv, q, events = _split(mem, features=VirtioFeature.RING_EVENT_IDX)
    drv.add_chain([(4, True)])
    mem.poison(drv.avail_addr, drv.avail_addr + 4)          # avail.flags and avail.idx
    assert q.pop() is None                                  # avail.idx reads 0
    assert events.kinds == ["ring_access"] and not events.fatal_kinds
    assert events.errors[0][1]["addr"] == drv.avail_addr + 2
    mem.poison(drv.used_addr, drv.used_addr + 8 + 8 * 8)
    q.set_notification(True)                                # avail_event write refused
    assert events.kinds[-1] == "ring_access"
    assert events.errors[-1][1]["reason"].startswith("guest memory access")


def test_packed_descriptor_that_cannot_be_read(mem):
    drv, q, events = _packed(mem)
    drv.add_chain([(4, True)])
    drv.add_chain([(4, True)])
    mem.poison(drv.desc_addr + 16, drv.desc_addr + 30)      # slot 1 but for its flags
    assert q.pop().head == 0
    r = _broken(q.pop(), events)
    assert r.fields == {"head": 1, "addr": drv.desc_addr + 16}


def test_packed_avail_bytes_with_an_unreadable_descriptor(mem):
    drv, q, events = _packed(mem)
    drv.add_chain([(4, True)])
    drv.add_chain([(4, True), (8, True)])
    mem.poison(drv.desc_addr + 32, drv.desc_addr + 46)      # the chain's second descriptor
    r = _broken(q.avail_bytes(), events)
    assert r.fields == {"addr": drv.desc_addr + 32}


def test_packed_indirect_table_that_cannot_be_read(mem):
    drv, q, events = _packed(mem)
    chain = drv.add_indirect_chain([(4, True), (4, True)])
    mem.poison(chain.table + 16, chain.table + 32)
    _broken(q.pop(), events)
    walk = PackedChain(mem, drv.desc_addr, 8, 0)
    assert len(list(walk)) == 1 and walk.end_reason == "desc_ring_unmappable"


def test_packed_event_areas_that_cannot_be_used(mem):
    drv, q, events = _packed(mem, features=VirtioFeature.RING_EVENT_IDX)
    drv.add_chain([(4, True)])
    q.push(q.pop(), 4)
    mem.poison(drv.driver_addr, drv.driver_addr + 4)
    assert q.should_notify()                    # flags read 0 (ENABLE): notify
    mem.poison(drv.device_addr, drv.device_addr + 4)
    q.set_notification(False)
    assert drv.device_event() == (0, 0)         # nothing reached the device area
    assert set(events.kinds) == {"ring_access"} and not events.fatal_kinds
