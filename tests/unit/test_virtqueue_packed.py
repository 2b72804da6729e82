"""Packed virtqueue engine (uvirt.virtio.packed) against QEMU 7.2's virtqueue_packed_pop & co."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvirt.errors import UvirtError
from uvirt.testing.mock_driver import MockPackedQueue, UsedEntry, avail_bytes_model, guest_ram
from uvirt.virtio import make_queue
from uvirt.virtio.features import VirtioFeature
from uvirt.virtio.packed import (VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED,
                                 VRING_PACKED_EVENT_FLAG_DESC, VRING_PACKED_EVENT_FLAG_DISABLE,
                                 VRING_PACKED_EVENT_FLAG_ENABLE, PackedQueue, is_desc_avail,
                                 packed_need_event)
from uvirt.virtio.queue import (VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
                                Element, QueueBroken, RecordingEvents)

RAM = 1 << 20
RING = 0x10000
AVAIL = VRING_PACKED_DESC_F_AVAIL          # "available" in the first lap


@pytest.fixture(scope="module")
def mem():
    return guest_ram(RAM)


@pytest.fixture
def events():
    return RecordingEvents()


def make(mem, events, size=8, features=0, strict=False):
    mem.bounce = None                          # the module's memory is shared: free its bounce
    drv = MockPackedQueue(mem, RING, size)
    q = PackedQueue(mem, size, events=events, strict=strict)
    q.set_features(features)
    assert drv.configure(q) is None
    return drv, q


def assert_broken(result, kind, reason, events):
    assert isinstance(result, QueueBroken), result
    assert (result.kind, result.reason) == (kind, reason)
    assert events.fatal_kinds[-1] == kind


def test_is_desc_avail_needs_avail_equal_wrap_and_used_different():
    assert is_desc_avail(AVAIL, True)
    assert not is_desc_avail(AVAIL | VRING_PACKED_DESC_F_USED, True)
    assert is_desc_avail(VRING_PACKED_DESC_F_USED, False)
    assert not is_desc_avail(0, True) and not is_desc_avail(0, False)


def test_make_queue_picks_packed(mem):
    assert isinstance(make_queue(mem, 8, packed=True), PackedQueue)


def test_pop_empty_returns_none(mem, events):
    _, q = make(mem, events)
    assert q.pop() is None


def test_pop_returns_chain_with_buffer_id(mem, events):
    drv, q = make(mem, events)
    chain = drv.add_chain([(16, False), (32, True), (8, True)], buffer_id=5)
    elem = q.pop()
    assert isinstance(elem, Element)
    assert (elem.head, elem.ndescs) == (5, 3)
    assert elem.readable == chain.readable and elem.writable == chain.writable
    assert (q.last_avail_idx, q.inuse) == (3, 3)


def test_pop_takes_buffer_id_from_first_descriptor_like_qemu(mem, events):
    drv, q = make(mem, events)
    drv.write_desc(1, 0x9100, 4, id=7, flags=AVAIL | VRING_DESC_F_WRITE)
    drv.write_desc(0, 0x9000, 4, id=3, flags=AVAIL | VRING_DESC_F_NEXT)
    assert q.pop().head == 3


def test_pop_walks_whole_indirect_table(mem, events):
    drv, q = make(mem, events)
    chain = drv.add_indirect_chain([(16, False), (8, True), (8, True)])
    elem = q.pop()
    assert elem.writable == chain.writable and elem.readable == chain.readable
    assert elem.ndescs == 1 and q.last_avail_idx == 1


def test_push_writes_used_descriptor_with_wrap_bits(mem, events):
    drv, q = make(mem, events)
    chain = drv.add_chain([(4, False), (4, True)])
    q.push(q.pop(), 4)
    d = drv.read_desc(0)
    assert (d.id, d.len, d.flags) == (chain.head, 4, AVAIL | VRING_PACKED_DESC_F_USED)
    assert drv.used_entries() == [UsedEntry(chain.head, 4)]
    assert (q.used_idx, q.inuse) == (2, 0)


@pytest.mark.parametrize("size", [8, 5, 3])
def test_ring_wraps_and_flips_counters(mem, events, size):
    drv, q = make(mem, events, size=size)
    for i in range(4 * size):
        chain = drv.add_chain([(4, False), (4, True)] if i % 3 else [(8, True)])
        elem = q.pop()
        assert elem.head == chain.head and elem.writable == chain.writable
        q.push(elem, i)
        assert drv.used_entries() == [UsedEntry(chain.head, i)]
        assert q.pop() is None


def test_flush_places_each_buffer_after_the_previous_chain(mem, events):
    drv, q = make(mem, events)
    chains = [drv.add_chain([(4, False), (4, True)]), drv.add_chain([(4, True)])]
    elems = [q.pop(), q.pop()]
    q.fill(elems[0], 1, 0)
    q.fill(elems[1], 2, 1)
    q.flush(2)
    assert drv.used_entries() == [UsedEntry(chains[0].head, 1), UsedEntry(chains[1].head, 2)]


def test_failed_pop_is_retried_not_skipped(mem, events):
    drv, q = make(mem, events)
    drv.write_desc(0, 0x9000, 0, id=0, flags=AVAIL)
    assert q.pop().kind == "zero_len"
    assert q.pop().kind == "zero_len"
    assert q.last_avail_idx == 0


def test_pop_rejects_chain_longer_than_ring(mem, events):
    drv, q = make(mem, events, size=4)
    for slot in range(4):
        drv.write_desc(slot, 0x9000 + 0x100 * slot, 4, flags=AVAIL | VRING_DESC_F_NEXT)
    assert_broken(q.pop(), "loop", "Looped descriptor", events)


def test_size_exceeded_when_inflight_reaches_size(mem, events):
    drv, q = make(mem, events, size=4)
    drv.add_chain([(4, True)] * 4)
    q.pop()
    q.last_avail_idx = 0                       # pretend the driver offers slot 0 again
    q.last_avail_wrap_counter = True
    assert_broken(q.pop(), "size_exceeded", "Virtqueue size exceeded", events)


CATALOGUE = [
    ("zero_length", [(0, 0x9000, 0, 0, AVAIL)], "zero_len", "virtio: zero sized buffers are not allowed"),
    ("huge_length", [(0, 0x9000, 0xFFFF_FFFF, 0, AVAIL | VRING_DESC_F_WRITE)], "bogus_buffer",
     "virtio: bogus descriptor or out of resources"),
    ("writable_before_readable", [(0, 0x9000, 4, 0, AVAIL | VRING_DESC_F_WRITE | VRING_DESC_F_NEXT),
                                  (1, 0x9100, 4, 0, AVAIL)], "desc_order", "Incorrect order for descriptors"),
    ("indirect_length_not_multiple_of_16", [(0, 0x9000, 20, 0, AVAIL | VRING_DESC_F_INDIRECT)],
     "indirect_bad_size", "Invalid size for indirect buffer table"),
    ("zero_length_indirect", [(0, 0x9000, 0, 0, AVAIL | VRING_DESC_F_INDIRECT)],
     "indirect_bad_size", "Invalid size for indirect buffer table"),
    ("indirect_table_outside_ram", [(0, RAM - 16, 32, 0, AVAIL | VRING_DESC_F_INDIRECT)],
     "indirect_unmappable", "Cannot map indirect buffer"),
]


@pytest.mark.parametrize("name, descs, kind, reason", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_guest_input_breaks_queue(mem, events, name, descs, kind, reason):
    drv, q = make(mem, events)
    for slot, addr, length, bid, flags in reversed(descs):
        drv.write_desc(slot, addr, length, bid, flags)
    assert_broken(q.pop(), kind, reason, events)
    assert q.inuse == 0


INDIRECT_ENTRY = [c for c in CATALOGUE if c[2] in ("indirect_bad_size", "indirect_unmappable")]


@pytest.mark.parametrize("name, descs, kind, reason", INDIRECT_ENTRY, ids=[c[0] for c in INDIRECT_ENTRY])
def test_avail_bytes_checks_an_indirect_table_as_pop_does(mem, events, name, descs, kind, reason):
    drv, q = make(mem, events)
    for slot, addr, length, bid, flags in reversed(descs):
        drv.write_desc(slot, addr, length, bid, flags)
    assert_broken(q.avail_bytes(), kind, reason, events)


def test_nested_indirect_is_plain_buffer_under_qemu_and_fatal_when_strict(mem, events):
    for strict in (False, True):
        drv, q = make(mem, events, strict=strict)
        drv.write_table(0x9000, [(0x9800, 16, 0, VRING_DESC_F_INDIRECT)])
        drv.write_desc(0, 0x9000, 16, 0, AVAIL | VRING_DESC_F_INDIRECT)
        result = q.pop()
        if strict:
            assert_broken(result, "nested_indirect", "Nested indirect descriptor", events)
        else:
            assert result.readable == ((0x9800, 16),)
            assert events.kinds == ["nested_indirect"]


def test_indirect_with_next_is_fatal_only_when_strict(mem, events):
    for strict in (False, True):
        drv, q = make(mem, events, strict=strict)
        drv.write_table(0x9000, [(0x9800, 16, 0, VRING_DESC_F_WRITE)])
        drv.write_desc(0, 0x9000, 16, 0, AVAIL | VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT)
        result = q.pop()
        assert result.broken == strict
        if not strict:
            assert result.ndescs == 1


def test_avail_bytes_sums_and_records_shadow(mem, events):
    drv, q = make(mem, events)
    drv.add_chain([(10, False), (20, True)])
    drv.add_indirect_chain([(5, False), (7, True)])
    assert q.avail_bytes() == (27, 15)
    assert (q.shadow_avail_idx, q.last_avail_idx) == (3, 0)


def test_packed_need_event_moves_other_lap_offset_back():
    assert packed_need_event(8, True, 1 | 1 << 15, 2, 1)
    assert not packed_need_event(8, True, 3 | 1 << 15, 2, 1)
    # Offset recorded in the previous lap (wrap bit differs): 7 - 8 = -1, crossed at 0.
    assert packed_need_event(8, True, 7, 1, 7)


@pytest.mark.parametrize("flags, expected", [(VRING_PACKED_EVENT_FLAG_ENABLE, [True, True]),
                                             (VRING_PACKED_EVENT_FLAG_DISABLE, [False, False])])
def test_should_notify_follows_driver_event_flags(mem, events, flags, expected):
    drv, q = make(mem, events)
    drv.set_driver_event(flags)
    got = []
    for _ in range(2):
        drv.add_chain([(4, True)])
        q.push(q.pop(), 4)
        got.append(q.should_notify())
    assert got == expected


def test_should_notify_desc_mode_waits_for_offset(mem, events):
    drv, q = make(mem, events)
    q.should_notify()
    drv.set_driver_event(VRING_PACKED_EVENT_FLAG_DESC, off_wrap=2 | 1 << 15)
    got = []
    for _ in range(4):
        drv.add_chain([(4, True)])
        q.push(q.pop(), 4)
        got.append(q.should_notify())
    assert got == [False, False, True, False]


def test_set_notification_writes_device_event_flags(mem, events):
    drv, q = make(mem, events)
    q.set_notification(False)
    assert drv.device_event()[1] == VRING_PACKED_EVENT_FLAG_DISABLE
    q.set_notification(True)
    assert drv.device_event()[1] == VRING_PACKED_EVENT_FLAG_ENABLE


def test_set_notification_with_event_idx_asks_for_shadow_position(mem, events):
    drv, q = make(mem, events, features=VirtioFeature.RING_EVENT_IDX)
    drv.add_chain([(4, True)] * 3)
    q.pop()
    q.set_notification(True)
    assert drv.device_event() == (3 | 1 << 15, VRING_PACKED_EVENT_FLAG_DESC)


def test_reset_restores_wrap_counters(mem, events):
    drv, q = make(mem, events, size=2)
    drv.add_chain([(4, True)] * 2)
    q.push(q.pop(), 0)
    assert not q.last_avail_wrap_counter
    q.reset()
    assert q.last_avail_wrap_counter and q.used_wrap_counter and q.shadow_avail_wrap_counter
    assert (q.desc, q.last_avail_idx, q.used_idx) == (0, 0, 0)


def test_ring_events_pop_fill_flush(mem, events):
    """The trace's ring events (uvirt/trace.py vq_pop, vq_fill, vq_flush) from a packed ring."""
    drv, q = make(mem, events)
    chain = drv.add_chain([(16, False), (32, True)], buffer_id=5)
    elem = q.pop()
    q.push(elem, 32)
    assert [n for n, _ in events.rings] == ["vq_pop", "vq_fill", "vq_flush"]
    assert events.rings[0][1]["writable"] == [list(p) for p in chain.writable]
    assert events.rings[1][1] == {"queue": 0, "slot": 0, "head": 5, "len": 32}
    assert events.rings[2][1] == {"queue": 0, "old": 0, "new": 2}


# --------------------------------------------------------------------------- avail_bytes
# What QEMU's virtqueue_packed_get_avail_bytes answers for well-formed rings, as a model:
# every descriptor of every available chain, in ring order, stopping after the one that
# reaches both maxima (uvirt.testing.mock_driver.avail_bytes_model).


U32 = 0xFFFF_FFFF
_MEM = guest_ram(RAM)
CHAIN = st.tuples(st.booleans(),                               # through an indirect table
                  st.lists(st.tuples(st.integers(1, 40), st.booleans()), min_size=1, max_size=4))


def _offer(drv, indirect, bufs):
    bufs = sorted(bufs, key=lambda b: b[1])                   # readable before writable
    if indirect:
        return drv.add_indirect_chain(bufs), bufs
    return drv.add_chain(bufs), bufs


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 9), served=st.integers(0, 20), chains=st.lists(CHAIN, max_size=8),
       max_in=st.one_of(st.just(U32), st.integers(0, 120)),
       max_out=st.one_of(st.just(U32), st.integers(0, 120)))
def test_avail_bytes_counts_every_available_chain_like_qemu(size, served, chains, max_in,
                                                            max_out):
    events = RecordingEvents()
    drv, q = make(_MEM, events, size=size)
    for _ in range(served):                                   # start anywhere in any lap
        drv.add_chain([(4, True)])
        q.push(q.pop(), 4)
        drv.used_entries()
    offered, free = [], size
    for indirect, bufs in chains:
        slots = 1 if indirect else len(bufs)
        if slots > free:
            continue
        free -= slots
        offered.append(_offer(drv, indirect, bufs)[1])
    before = (q.shadow_avail_idx, q.shadow_avail_wrap_counter)
    want, early = avail_bytes_model(offered, max_in, max_out)
    assert q.avail_bytes(max_in, max_out) == want
    if early:
        assert (q.shadow_avail_idx, q.shadow_avail_wrap_counter) == before
    else:
        assert (q.shadow_avail_idx, q.shadow_avail_wrap_counter) == (drv.next_avail, drv.avail_wrap)
    assert (q.last_avail_idx, q.inuse) == ((served % size), 0) and not events.errors
    for bufs in offered:                                      # and pop agrees
        elem = q.pop()
        assert (elem.writable_len, elem.readable_len) == avail_bytes_model([bufs], U32, U32)[0]


def test_avail_bytes_limit_is_per_chain_after_an_indirect_one(mem, events):
    """QEMU 7.2 starts each chain with a limit of N descriptors; a small indirect table
    before a longer direct chain is no loop."""
    drv, q = make(mem, events, size=8)
    drv.add_indirect_chain([(8, True)])
    drv.add_chain([(8, True), (8, True), (8, True)])
    assert q.avail_bytes() == (32, 0) and not events.errors
    assert (q.shadow_avail_idx, q.shadow_avail_wrap_counter) == (4, True)


def test_avail_bytes_direct_chains_share_one_descriptor_budget(mem, events):
    """The count of a direct chain starts where the chains before it ended: a chain that
    runs NEXT through every slot is a loop even if it started late."""
    drv, q = make(mem, events, size=4)
    drv.add_chain([(4, True)])
    for slot in range(1, 4):
        drv.write_desc(slot, 0x9000 + 0x100 * slot, 4, flags=AVAIL | VRING_DESC_F_WRITE | VRING_DESC_F_NEXT)
    assert_broken(q.avail_bytes(), "loop", "Looped descriptor", events)


def test_an_indirect_chain_counts_one_descriptor_of_the_budget(mem, events):
    """virtqueue_packed_get_avail_bytes: an indirect chain adds 1 to total_bufs, so a
    direct chain after two of them starts its count at 2; one that runs NEXT round the
    ring end into a counted slot goes past N and is a loop (3 + 4 slots into a 4-slot
    ring).  One indirect chain then three direct slots fits N exactly."""
    drv, q = make(mem, events, size=4)
    drv.add_indirect_chain([(8, True)])
    drv.add_chain([(4, True), (4, True), (4, True)])
    assert q.avail_bytes() == (20, 0) and not events.errors
    assert (q.shadow_avail_idx, q.shadow_avail_wrap_counter) == (0, False)
    drv, q = make(mem, events, size=4)
    drv.add_indirect_chain([(8, True)])
    drv.add_indirect_chain([(8, True)])
    for slot in (2, 3):                       # NEXT on the last slot: on to slot 0
        drv.write_desc(slot, 0x9000 + 0x100 * slot, 4, flags=AVAIL | VRING_DESC_F_WRITE | VRING_DESC_F_NEXT)
    assert_broken(q.avail_bytes(), "loop", "Looped descriptor", events)


def test_avail_bytes_stops_once_both_maxima_are_reached_exactly(mem, events):
    """``in_total >= max_in_bytes && out_total >= max_out_bytes``: reaching the maxima
    exactly is enough, and the chains after it are not read."""
    drv, q = make(mem, events, size=8)
    drv.add_chain([(8, False), (8, True)])
    drv.add_chain([(16, False), (16, True)])
    assert q.avail_bytes(max_in=8, max_out=8) == (8, 8)
    assert q.avail_bytes(max_in=8, max_out=0) == (8, 8)
    assert q.avail_bytes(max_in=9, max_out=8) == (24, 24)
    assert q.avail_bytes(max_in=0, max_out=24) == (8, 24)
    assert q.shadow_avail_idx == 0                # stopped early: no kick position recorded
    assert q.avail_bytes(max_in=25, max_out=0) == (24, 24)
    assert (q.shadow_avail_idx, q.shadow_avail_wrap_counter) == (4, True)


def test_a_broken_chain_in_avail_bytes_is_recorded_with_its_details(mem, events):
    drv, q = make(mem, events)
    drv.write_desc(0, 0x9000, 24, 0, AVAIL | VRING_DESC_F_INDIRECT)
    result = q.avail_bytes()
    assert_broken(result, "indirect_bad_size", "Invalid size for indirect buffer table", events)
    assert result.fields == {"len": 24} and events.errors[-1][1]["len"] == 24


def test_avail_bytes_of_an_unset_or_unmappable_queue(mem, events):
    q = PackedQueue(mem, 8, events=events)
    assert q.avail_bytes() == (0, 0)
    drv, q = make(mem, events, size=8)
    drv.add_chain([(4, True)])
    q.set_size(16)                            # QEMU keeps the ring cache checked for 8
    assert_broken(q.avail_bytes(), "desc_ring_unmappable", "Cannot map descriptor ring", events)
    assert_broken(q.pop(), "desc_ring_unmappable", "Cannot map descriptor ring", events)


def test_rewind_gives_back_descriptors_across_the_ring_end(mem, events):
    drv, q = make(mem, events, size=4)
    drv.add_chain([(4, True)] * 3)
    q.push(q.pop(), 0)
    drv.used_entries()
    chains = [drv.add_chain([(4, True)]), drv.add_chain([(4, True), (4, True)])]
    assert [q.pop().head for _ in range(2)] == [c.head for c in chains]
    assert (q.last_avail_idx, q.last_avail_wrap_counter, q.inuse) == (2, False, 3)
    assert not q.rewind(4) and q.inuse == 3
    assert q.rewind(3) and (q.last_avail_idx, q.last_avail_wrap_counter, q.inuse) == (3, True, 0)
    assert [q.pop().head for _ in range(2)] == [c.head for c in chains]
    assert q.rewind(2) and (q.last_avail_idx, q.last_avail_wrap_counter) == (0, False)
    assert q.pop().ndescs == 2


def test_detach_forgets_a_packed_element(mem, events):
    drv, q = make(mem, events)
    drv.add_chain([(4, True), (4, True)])
    q.detach(q.pop())
    assert q.inuse == 0 and drv.used_entries() == []


def test_device_event_writes_stay_inside_the_four_byte_area(mem, events):
    drv, q = make(mem, events, features=VirtioFeature.RING_EVENT_IDX)
    mem.write(drv.device_addr + 4, b"\xa5\xa5")
    q.set_notification(False)
    q.set_notification(True)
    assert mem.read(drv.device_addr, 6) == b"\x00\x80\x02\x00\xa5\xa5"


def test_set_notification_records_the_wish_even_without_rings(mem, events):
    q = PackedQueue(mem, 8, events=events)
    q.set_notification(False)
    assert q.notification is False
    q.set_notification(1)
    assert q.notification is True


def test_packed_queue_repr_names_its_state(mem, events):
    drv, q = make(mem, events, size=2)
    drv.add_chain([(4, True)] * 2)
    q.push(q.pop(), 0)
    assert repr(q) == (f"PackedQueue(index=0, size=2, desc=0x{drv.desc_addr:x}, "
                       f"driver=0x{drv.driver_addr:x}, device=0x{drv.device_addr:x}, "
                       f"last_avail=0/0, used_idx=0/0, inuse=0)")


@pytest.mark.parametrize("size, wrap, off_wrap, new, old, due", [
    # QEMU vring_packed_need_event: an offset marked with the device's wrap counter is
    # compared as it is; one marked with the other counter is moved back by N first
    (8, True, 2 | 1 << 15, 3, 1, True),
    (8, True, 2 | 1 << 15, 5, 3, False),
    (8, False, 2, 3, 2, True),
    (8, False, 2 | 1 << 15, 3, 2, False),         # offset 2 of the other lap: 2 - 8 = -6
    (8, True, 6, 0xFFFF, 0xFFF9, True),          # 6 - 8 = 0xFFFE, passed (mod 2^16)
    (8, True, 6 | 1 << 15, 0xFFFF, 0xFFF9, False),
    (4, False, 0x7FFF | 1 << 15, 0x7FFC, 0x7FFA, True),   # 0x7FFF - 4 = 0x7FFB, passed
    (4, False, 0x7FFF, 0x7FFC, 0x7FFA, False),
])
def test_packed_need_event_worked_values(size, wrap, off_wrap, new, old, due):
    assert packed_need_event(size, wrap, off_wrap, new, old) is due


def test_a_queue_without_rings_never_notifies(mem, events):
    """QEMU virtio_packed_should_notify: no region caches, no notification."""
    q = PackedQueue(mem, 8, events=events)
    assert not q.should_notify()
    drv, q = make(mem, events)
    assert q.should_notify()                           # first: unconditional (ENABLE)


def _serve(drv, q, n):
    for _ in range(n):
        drv.add_chain([(4, True)])
        q.push(q.pop(), 4)
        drv.used_entries()


def test_batch_flush_across_the_ring_end_flips_the_wrap_bits(mem, events):
    drv, q = make(mem, events, size=5)
    _serve(drv, q, 3)
    chains = [drv.add_chain([(4, True)]), drv.add_chain([(4, True)] * 2),
              drv.add_chain([(4, True)])]
    elems = [q.pop() for _ in chains]
    for i, (e, n) in enumerate(zip(elems, (10, 20, 30))):
        q.fill(e, n, i)
    q.flush(3)
    assert [(drv.read_desc(s).id, drv.read_desc(s).len, drv.read_desc(s).flags) for s in (3, 4, 1)] == [
        (chains[0].head, 10, AVAIL | VRING_PACKED_DESC_F_USED),   # lap 1: both bits set
        (chains[1].head, 20, AVAIL | VRING_PACKED_DESC_F_USED),   # slots 4 and 0
        (chains[2].head, 30, 0)]                                  # slot 6 - 5: lap 0
    assert drv.used_entries() == [UsedEntry(c.head, n) for c, n in zip(chains, (10, 20, 30))]
    assert (q.used_idx, q.used_wrap_counter, q.inuse) == (2, False, 0)
    assert [f["slot"] for n, f in events.rings if n == "vq_fill"][-3:] == [4, 1, 3]


def test_fill_by_buffer_id_and_defaults(mem, events):
    drv, q = make(mem, events)
    chain = drv.add_chain([(4, True)], buffer_id=0x8001)
    q.pop()
    q.fill(0x8001, 0xFFFF_FFFF)                 # an int: a buffer id of one descriptor
    q.flush(1)
    assert drv.used_entries() == [UsedEntry(chain.head, 0xFFFF_FFFF)]
    assert (q.used_idx, q.inuse) == (1, 0)


def test_flush_of_unfilled_or_too_many_elements_is_a_host_error(mem, events):
    drv, q = make(mem, events)
    drv.add_chain([(4, True)])
    elem = q.pop()
    with pytest.raises(UvirtError, match="virtqueue 0: flushing 1 elements, not all of them filled"):
        q.flush(1)
    q.fill(elem, 4, 0)
    q.fill(elem, 4, 1)
    with pytest.raises(UvirtError, match="virtqueue 0: flushing 2 descriptors with 1 in flight"):
        q.flush(2)


def test_disabled_packed_queue_drops_fills_but_counts_flushes(mem, events):
    drv, q = make(mem, events)
    drv.add_chain([(4, True)] * 2)
    elem = q.pop()
    q.disabled = True
    assert q.is_empty() and q.pop() is None
    q.fill(elem, 4)
    q.flush(1)
    # QEMU virtqueue_flush: inuse drops by the elements, not by their 2 descriptors
    assert q.inuse == 1 and q.used_idx == 0 and drv.used_entries() == []


def test_unset_packed_queue_is_empty(mem, events):
    q = PackedQueue(mem, 8, events=events)
    assert q.is_empty() and q.pop() is None and not events.errors


def test_packed_size_exceeded_names_the_descriptors_in_flight(mem, events):
    drv, q = make(mem, events, size=4)
    drv.add_chain([(4, True)] * 4)
    q.pop()
    q.last_avail_idx, q.last_avail_wrap_counter = 0, True      # offered again
    assert q.pop().fields == {"inuse": 4}


def test_desc_mode_after_a_wrap_notifies_unconditionally(mem, events):
    """QEMU virtqueue_packed_flush: the flush that wraps the used index clears
    signalled_used_valid, so the next notification does not look at the offset."""
    drv, q = make(mem, events, size=6, features=VirtioFeature.RING_EVENT_IDX)
    drv.set_driver_event(VRING_PACKED_EVENT_FLAG_DESC, off_wrap=5 | 1 << 15)
    for _ in range(5):
        _serve(drv, q, 1)
        q.should_notify()
    drv.set_driver_event(VRING_PACKED_EVENT_FLAG_DESC, off_wrap=4)      # far ahead in lap 0
    _serve(drv, q, 1)                                                    # wraps: 5 -> 0
    assert q.should_notify()
    _serve(drv, q, 1)
    assert not q.should_notify()
