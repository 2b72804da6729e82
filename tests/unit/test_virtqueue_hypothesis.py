"""Random rings against the virtqueue engine: garbage never raises or hangs, and well-formed
chains come back exactly as the mock driver offered them."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uvirt.testing.mock_driver import MockPackedQueue, MockSplitQueue, UsedEntry, guest_ram
from uvirt.virtio.features import VirtioFeature
from uvirt.virtio.packed import VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED, PackedQueue
from uvirt.virtio.queue import (VIRTQUEUE_MAX_SIZE, Descriptor, Element, QueueBroken,
                                RecordingEvents, SplitQueue)

RAM = 0x40000
RING = 0x10000
TABLES = 0x8000                 # where garbage indirect tables live
MEM = guest_ram(RAM)

#: UVIRT_HYPOTHESIS_EXAMPLES=5000 for a longer, randomised run (the default keeps the file < 1 s).
_EXAMPLES = int(os.environ.get("UVIRT_HYPOTHESIS_EXAMPLES", "0"))
SETTINGS = settings(max_examples=_EXAMPLES or 50, deadline=None, derandomize=not _EXAMPLES,
                    suppress_health_check=[HealthCheck.too_slow])

addresses = st.one_of(st.integers(0, RAM - 1), st.sampled_from([TABLES, TABLES + 0x40, RAM - 8]),
                      st.integers(0, (1 << 64) - 1))
lengths = st.one_of(st.integers(0, 64), st.sampled_from([16, 32, 48, 0x400, 0xFFFF_FFFF]),
                    st.integers(0, 0xFFFF_FFFF))
flag_bits = st.integers(0, 0xFFFF)


def check_result(result, size):
    assert result is None or isinstance(result, (Element, QueueBroken))
    if isinstance(result, Element):
        assert len(result.readable) + len(result.writable) <= VIRTQUEUE_MAX_SIZE
        for addr, n in result.readable + result.writable:
            assert n > 0 and MEM.is_ram(addr, n)


def drive(q, rounds, data):
    """Pop/push/notify a bounded number of times; returns the results seen."""
    results = []
    for _ in range(rounds):
        r = q.pop()
        check_result(r, q.size)
        results.append(r)
        if isinstance(r, Element):
            q.push(r, data.draw(st.integers(0, 0xFFFF_FFFF)))
        q.should_notify()
        ab = q.avail_bytes(data.draw(st.integers(0, 64)), data.draw(st.integers(0, 64)))
        assert isinstance(ab, (tuple, QueueBroken))
        q.set_notification(data.draw(st.booleans()))
    return results


@SETTINGS
@given(size=st.sampled_from([1, 2, 3, 4, 8, 16]), layout=st.sampled_from(["legacy", "modern"]),
       strict=st.booleans(), event_idx=st.booleans(), data=st.data())
def test_split_garbage_never_raises_or_hangs(size, layout, strict, event_idx, data):
    drv = MockSplitQueue(MEM, RING, size, layout=layout)
    descs = data.draw(st.lists(st.tuples(addresses, lengths, flag_bits,
                                         st.one_of(st.integers(0, size + 1), st.integers(0, 0xFFFF))),
                               min_size=size, max_size=size))
    for i, d in enumerate(descs):
        drv.write_desc(i, *d)
    tables = data.draw(st.lists(st.tuples(addresses, lengths, flag_bits, st.integers(0, 6)),
                                max_size=8))
    drv.write_table(TABLES, [Descriptor(*t) for t in tables])
    for slot in range(size):
        drv.set_avail_ring(slot, data.draw(st.one_of(st.integers(0, size), st.integers(0, 0xFFFF))))
    drv.set_avail_idx(data.draw(st.one_of(st.integers(0, 2 * size + 1), st.integers(0, 0xFFFF))))
    drv.avail_flags = data.draw(st.integers(0, 0xFFFF))
    events = RecordingEvents()
    q = SplitQueue(MEM, size, events=events, strict=strict)
    q.set_features(VirtioFeature.RING_EVENT_IDX if event_idx else 0)
    drv.configure(q)
    results = drive(q, 2 * size + 3, data)
    broken = [r for r in results if isinstance(r, QueueBroken)]
    assert len(broken) <= len(events.fatal_kinds)


@SETTINGS
@given(size=st.sampled_from([1, 2, 3, 5, 8, 16]), strict=st.booleans(), data=st.data())
def test_packed_garbage_never_raises_or_hangs(size, strict, data):
    drv = MockPackedQueue(MEM, RING, size)
    avail_bias = st.sampled_from([VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED, 0,
                                  VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED])
    for slot in range(size):
        addr, length = data.draw(addresses), data.draw(lengths)
        flags = data.draw(flag_bits) & 0x7F7F | data.draw(avail_bias)
        drv.write_desc(slot, addr, length, data.draw(st.integers(0, 0xFFFF)), flags)
    tables = data.draw(st.lists(st.tuples(addresses, lengths, st.integers(0, 0xFFFF), flag_bits),
                                max_size=8))
    drv.write_table(TABLES, tables)
    drv.set_driver_event(data.draw(st.integers(0, 3)), data.draw(st.integers(0, 0xFFFF)))
    q = PackedQueue(MEM, size, events=RecordingEvents(), strict=strict)
    drv.configure(q)
    drive(q, 2 * size + 3, data)


def chain_specs(max_descs):
    buf = st.tuples(st.integers(1, 300), st.booleans())
    return st.lists(buf, min_size=1, max_size=max_descs).map(
        lambda bufs: sorted(bufs, key=lambda b: b[1]))       # readable before writable


@SETTINGS
@given(size=st.sampled_from([2, 4, 8, 16, 32]), layout=st.sampled_from(["legacy", "modern"]),
       data=st.data())
def test_split_well_formed_chains_come_back_as_offered(size, layout, data):
    drv = MockSplitQueue(MEM, RING, size, layout=layout, seed=data.draw(st.integers(0, 99)))
    q = SplitQueue(MEM, size)
    drv.configure(q)
    for _ in range(data.draw(st.integers(1, 3))):              # several laps of the rings
        offered = []
        while len(drv.free):
            specs = data.draw(chain_specs(min(len(drv.free), 6)))
            if data.draw(st.booleans()):
                offered.append(drv.add_indirect_chain(specs))
            else:
                offered.append(drv.add_chain(specs))
            if data.draw(st.integers(0, 3)) == 0:
                break
        for chain in offered:
            elem = q.pop()
            assert (elem.head, elem.readable, elem.writable) == \
                   (chain.head, chain.readable, chain.writable)
            q.push(elem, elem.writable_len)
        assert q.pop() is None
        assert drv.used_entries() == [UsedEntry(c.head, sum(n for _, n in c.writable))
                                      for c in offered]


@SETTINGS
@given(size=st.sampled_from([1, 2, 3, 5, 8, 16]), data=st.data())
def test_packed_well_formed_chains_come_back_as_offered(size, data):
    drv = MockPackedQueue(MEM, RING, size, seed=data.draw(st.integers(0, 99)))
    q = PackedQueue(MEM, size)
    drv.configure(q)
    for _ in range(data.draw(st.integers(1, 4))):
        offered = []
        while drv.in_flight < size:
            specs = data.draw(chain_specs(min(size - drv.in_flight, 6)))
            if data.draw(st.booleans()):
                offered.append(drv.add_indirect_chain(specs))
            else:
                offered.append(drv.add_chain(specs))
            if data.draw(st.integers(0, 3)) == 0:
                break
        for chain in offered:
            elem = q.pop()
            assert (elem.head, elem.readable, elem.writable) == \
                   (chain.head, chain.readable, chain.writable)
            q.push(elem, len(elem.readable))
        assert q.pop() is None
        assert drv.used_entries() == [UsedEntry(c.head, len(c.readable)) for c in offered]
