"""Split virtqueue engine (uvirt.virtio.queue) against QEMU 7.2's virtqueue_split_pop & co."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvirt.errors import UvirtError
from uvirt.testing.mock_driver import MockSplitQueue, UsedEntry, avail_bytes_model, guest_ram
from uvirt.virtio.features import VirtioFeature
from uvirt.virtio.queue import (VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT,
                                VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY,
                                Descriptor, DescriptorChain, Element, QueueBroken,
                                RecordingEvents, SplitQueue, legacy_layout, vring_need_event)

RAM = 1 << 20
RING = 0x10000
N = 8


@pytest.fixture(scope="module")
def mem():
    return guest_ram(RAM)


@pytest.fixture
def events():
    return RecordingEvents()


def make(mem, events, layout="legacy", size=N, features=0, strict=False):
    mem.bounce = None                          # the module's memory is shared: free its bounce
    drv = MockSplitQueue(mem, RING, size, layout=layout)
    q = SplitQueue(mem, size, events=events, strict=strict)
    q.set_features(features)
    assert drv.configure(q) is None
    return drv, q


@pytest.fixture(params=["legacy", "modern"])
def ring(request, mem, events):
    return make(mem, events, request.param)


def assert_broken(result, kind, reason, events):
    assert isinstance(result, QueueBroken), result
    assert (result.kind, result.reason) == (kind, reason)
    assert result.broken
    assert events.fatal_kinds[-1] == kind


# --------------------------------------------------------------------------- layout


@pytest.mark.parametrize("size, avail, used", [(8, 128, 4096), (128, 2048, 4096), (256, 4096, 8192)])
def test_legacy_layout_matches_worked_values(size, avail, used):
    lay = legacy_layout(0x10, size)
    assert (lay.desc, lay.avail - lay.desc, lay.used - lay.desc) == (0x10000, avail, used)


def test_legacy_layout_aligns_without_used_event_like_qemu():
    # 18*910 + 4 = 16384: QEMU puts the used ring at 16384, the spec formula at 20480.
    lay = legacy_layout(0, 910)
    assert lay.used == 16384


def test_set_legacy_pfn_derives_qemu_layout(mem, events):
    q = SplitQueue(mem, N, events=events)
    assert q.set_legacy_pfn(RING >> 12) is None
    assert (q.desc, q.avail, q.used, q.legacy_pfn) == (RING, RING + 128, RING + 4096, RING >> 12)
    assert q.ready


def test_set_rings_keeps_three_independent_areas(mem, events):
    q = SplitQueue(mem, N, events=events)
    assert q.set_rings(0x20000, 0x30000, 0x40000) is None
    assert (q.desc, q.avail, q.used) == (0x20000, 0x30000, 0x40000)


def test_ring_area_crossing_a_region_boundary_breaks_at_configuration(mem, events):
    q = SplitQueue(mem, N, events=events)
    result = q.set_rings(0x20000, 0x30000, RAM - 8)
    assert_broken(result, "ring_unmappable", "Cannot map used", events)
    assert q.pop() is None                     # QEMU: no caches, the ring reads empty


@pytest.mark.parametrize("desc, avail, used", [
    (0xFEB0_0000, 0x20000, 0x30000),            # descriptor table in unassigned space
    (0x20000, 0x30000, 0x1_0000_0000),          # used ring above 4 GiB
    (0xE000_0000, 0xE000_1000, 0xE000_2000),    # all three in the PCI hole
    (0x20000, 0x30000, RAM),                    # used ring just past RAM
])
def test_ring_area_in_any_single_region_is_accepted(mem, events, desc, avail, used):
    """QEMU virtio_init_region_cache: an area need not be RAM, only not cross out of the
    region it starts in; unassigned space reads 0, so such a queue looks empty."""
    q = SplitQueue(mem, N, events=events)
    assert q.set_rings(desc, avail, used) is None
    assert not events.errors and q.pop() is None


def test_desc_zero_means_not_set_up(mem, events):
    q = SplitQueue(mem, N, events=events)
    assert q.set_rings(0, 0x30000, 0x40000) is None
    assert q.pop() is None and events.errors == []


def test_event_idx_grows_ring_areas_and_rechecks_them(mem, events):
    q = SplitQueue(mem, N, events=events)
    used = RAM - (4 + 8 * N)                   # fits exactly without avail_event
    assert q.set_rings(0x20000, 0x30000, used) is None
    result = q.set_features(VirtioFeature.RING_EVENT_IDX)
    assert_broken(result, "ring_unmappable", "Cannot map used", events)


def test_set_size_ignores_zero_and_above_qemu_max(mem, events):
    q = SplitQueue(mem, N, events=events)
    assert not q.set_size(0)
    assert not q.set_size(1025)
    assert q.set_size(1024) and q.size == 1024   # QEMU checks VIRTQUEUE_MAX_SIZE only
    assert events.kinds == ["bad_queue_size", "bad_queue_size"]


def test_constructor_rejects_impossible_size(mem):
    with pytest.raises(UvirtError, match="size 0x401 outside"):
        SplitQueue(mem, 1025)


def test_reset_restores_defaults(ring, events):
    drv, q = ring
    drv.add_chain([(4, True)])
    q.push(q.pop(), 4)
    q.set_size(4)
    q.reset()
    assert (q.desc, q.avail, q.used, q.size) == (0, 0, 0, N)
    assert (q.last_avail_idx, q.used_idx, q.inuse, q.broken) == (0, 0, 0, None)
    assert q.notification and not q.ready


# --------------------------------------------------------------------------- pop


def test_pop_empty_returns_none(ring):
    _, q = ring
    assert q.pop() is None


def test_pop_returns_readable_then_writable_buffers(ring, mem):
    drv, q = ring
    chain = drv.add_chain([(16, False), (8, False), (64, True), (2, True)], data=b"R" * 24)
    elem = q.pop()
    assert isinstance(elem, Element)
    assert elem.head == chain.head
    assert elem.readable == chain.readable and elem.writable == chain.writable
    assert elem.read(mem) == b"R" * 24
    assert q.inuse == 1


def test_pop_follows_indirect_table(ring):
    drv, q = ring
    chain = drv.add_indirect_chain([(16, False), (32, True), (32, True)])
    elem = q.pop()
    assert elem.head == chain.head
    assert elem.readable == chain.readable and elem.writable == chain.writable
    assert elem.ndescs == 1


def test_pop_ignores_next_on_indirect_head_like_qemu(mem, events):
    drv, q = make(mem, events)
    chain = drv.add_indirect_chain([(16, True)], extra_flags=VRING_DESC_F_NEXT)
    assert q.pop().writable == chain.writable
    assert events.errors[0][0] == "indirect_with_next" and not events.errors[0][1]["fatal"]


def test_pop_maps_indirect_after_head_as_plain_buffer_like_qemu(mem, events):
    drv, q = make(mem, events)
    table = drv.alloc(16, 16)
    drv.write_table(table, [(drv.alloc(8), 8, VRING_DESC_F_WRITE, 0)])
    drv.write_desc(0, drv.alloc(4), 4, VRING_DESC_F_NEXT, 1)
    drv.write_desc(1, table, 16, VRING_DESC_F_INDIRECT, 0)
    drv.publish(0)
    elem = q.pop()
    assert elem.readable[1] == (table, 16)
    assert events.kinds == ["indirect_not_head"]


def test_strict_mode_follows_indirect_after_head(mem, events):
    drv, q = make(mem, events, strict=True)
    table = drv.alloc(16, 16)
    buf = drv.alloc(8)
    drv.write_table(table, [(buf, 8, VRING_DESC_F_WRITE, 0)])
    drv.write_desc(0, 0x9000, 4, VRING_DESC_F_NEXT, 1)
    drv.write_desc(1, table, 16, VRING_DESC_F_INDIRECT, 0)
    drv.publish(0)
    elem = q.pop()
    assert elem.readable == ((0x9000, 4),) and elem.writable == ((buf, 8),)


def test_pop_reads_avail_idx_only_when_shadow_used_up(mem, events):
    drv, q = make(mem, events)
    drv.add_chain([(4, True)])
    drv.add_chain([(4, True)])
    assert isinstance(q.pop(), Element)
    drv.set_avail_idx(2 + 100)                 # jump; not seen until the batch is used up
    assert isinstance(q.pop(), Element)
    assert_broken(q.pop(), "avail_idx_jump", "Guest moved used index from 2 to 102", events)


def test_avail_idx_jump_beyond_size_breaks_queue(mem, events):
    drv, q = make(mem, events)
    drv.set_avail_idx(N + 1)
    result = q.pop()
    assert_broken(result, "avail_idx_jump", "Guest moved used index from 0 to 9", events)
    assert q.broken == result and q.last_avail_idx == 0


def test_avail_idx_may_wrap_past_65535(mem, events):
    drv, q = make(mem, events)
    q.last_avail_idx = q.shadow_avail_idx = 0xFFFF
    drv.avail_idx = 0xFFFF
    chain = drv.add_chain([(4, True)])         # slot 0xFFFF % 8, idx wraps to 0
    assert drv.avail_idx == 0
    assert q.pop().head == chain.head and q.last_avail_idx == 0


def test_head_consumed_before_check_so_bad_chain_is_skipped(mem, events):
    drv, q = make(mem, events)
    drv.publish(N)                             # head out of range
    good = drv.add_chain([(4, True)])
    assert_broken(q.pop(), "head_oob", f"Guest says index {N} is available", events)
    assert q.pop().head == good.head


def test_size_exceeded_when_inflight_reaches_size(mem, events):
    drv, q = make(mem, events, size=2)
    drv.add_chain([(4, True)])
    drv.add_chain([(4, True)])
    q.pop(), q.pop()
    drv.publish(0)                             # a head that is already in flight
    assert_broken(q.pop(), "size_exceeded", "Virtqueue size exceeded", events)


def test_pop_rejects_descriptor_loop(mem, events):
    drv, q = make(mem, events)
    drv.write_desc(0, 0x9000, 4, VRING_DESC_F_NEXT, 1)
    drv.write_desc(1, 0x9100, 4, VRING_DESC_F_NEXT, 0)
    drv.publish(0)
    assert_broken(q.pop(), "loop", "Looped descriptor", events)


def test_pop_after_broken_result_goes_on_with_next_entry(mem, events):
    drv, q = make(mem, events)
    drv.write_desc(0, 0x9000, 0, 0, 0)
    drv.publish(0)
    drv.free.remove(0)
    good = drv.add_chain([(4, True)])
    assert q.pop().broken
    assert q.pop().head == good.head           # QEMU: pop itself is not blocked
    assert q.broken.kind == "zero_len"         # the first error stays recorded


# --------------------------------------------------------------------------- bad-guest catalogue


def _loop(drv):
    drv.write_desc(0, 0x9000, 4, VRING_DESC_F_NEXT, 0)
    drv.publish(0)


def _next_oob(drv):
    drv.write_desc(0, 0x9000, 4, VRING_DESC_F_NEXT, N)
    drv.publish(0)


def _addr_past_ram(drv):
    drv.write_desc(0, RAM - 2, 4, 0, 0)
    drv.publish(0)


def _addr_in_hole(drv):
    drv.write_desc(0, 0xFEB0_0000, 4, VRING_DESC_F_WRITE, 0)
    drv.publish(0)


def _huge_len(drv):
    drv.write_desc(0, 0x9000, 0xFFFF_FFFF, VRING_DESC_F_WRITE, 0)
    drv.publish(0)


def _addr_wraps(drv):
    drv.write_desc(0, 0xFFFF_FFFF_FFFF_FFF0, 0x20, 0, 0)
    drv.publish(0)


def _zero_len(drv):
    drv.write_desc(0, 0x9000, 0, 0, 0)
    drv.publish(0)


def _writable_before_readable(drv):
    drv.write_desc(0, 0x9000, 4, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1)
    drv.write_desc(1, 0x9100, 4, 0, 0)
    drv.publish(0)


def _head_oob(drv):
    drv.publish(0xFFFF)


def _avail_jump(drv):
    drv.set_avail_idx(0x8000)


def _indirect_zero_len(drv):
    drv.write_desc(0, 0x9000, 0, VRING_DESC_F_INDIRECT, 0)
    drv.publish(0)


def _indirect_odd_len(drv):
    drv.write_desc(0, 0x9000, 24, VRING_DESC_F_INDIRECT, 0)
    drv.publish(0)


def _indirect_outside_ram(drv):
    drv.write_desc(0, RAM - 16, 32, VRING_DESC_F_INDIRECT, 0)
    drv.publish(0)


def _indirect_loop(drv):
    drv.write_table(0x9000, [(0x9100, 4, VRING_DESC_F_NEXT, 1), (0x9200, 4, VRING_DESC_F_NEXT, 0)])
    drv.write_desc(0, 0x9000, 32, VRING_DESC_F_INDIRECT, 0)
    drv.publish(0)


def _indirect_next_oob(drv):
    drv.write_table(0x9000, [(0x9100, 4, VRING_DESC_F_NEXT, 2), (0x9200, 4, 0, 0)])
    drv.write_desc(0, 0x9000, 32, VRING_DESC_F_INDIRECT, 0)
    drv.publish(0)


def _indirect_too_many_pieces(drv):
    drv.write_table(0x20000, [(0x9000, 1, VRING_DESC_F_NEXT, i + 1) for i in range(1025)])
    drv.write_desc(0, 0x20000, 16 * 1026, VRING_DESC_F_INDIRECT, 0)
    drv.publish(0)


def _indirect_in_indirect(drv):
    drv.write_table(0x9000, [(0x9800, 16, VRING_DESC_F_INDIRECT, 0)])
    drv.write_desc(0, 0x9000, 16, VRING_DESC_F_INDIRECT, 0)
    drv.publish(0)


def _indirect_with_next(drv):
    drv.write_table(0x9000, [(0x9800, 16, VRING_DESC_F_WRITE, 0)])
    drv.write_desc(0, 0x9000, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 1)
    drv.write_desc(1, 0x9100, 4, VRING_DESC_F_WRITE, 0)
    drv.publish(0)


CATALOGUE = [
    ("loop", _loop, "loop", "Looped descriptor"),
    ("next_out_of_range", _next_oob, "next_oob", f"Desc next is {N}"),
    ("huge_length", _huge_len, "bogus_buffer", "virtio: bogus descriptor or out of resources"),
    ("zero_length", _zero_len, "zero_len", "virtio: zero sized buffers are not allowed"),
    ("writable_before_readable", _writable_before_readable, "desc_order", "Incorrect order for descriptors"),
    ("head_out_of_range", _head_oob, "head_oob", "Guest says index 65535 is available"),
    ("avail_index_jump", _avail_jump, "avail_idx_jump", "Guest moved used index from 0 to 32768"),
    ("zero_length_indirect", _indirect_zero_len, "indirect_bad_size", "Invalid size for indirect buffer table"),
    ("indirect_length_not_multiple_of_16", _indirect_odd_len, "indirect_bad_size", "Invalid size for indirect buffer table"),
    ("indirect_table_outside_ram", _indirect_outside_ram, "indirect_unmappable", "Cannot map indirect buffer"),
    ("loop_inside_indirect", _indirect_loop, "loop", "Looped descriptor"),
    ("next_out_of_indirect_table", _indirect_next_oob, "next_oob", "Desc next is 2"),
    ("more_than_1024_pieces", _indirect_too_many_pieces, "too_many_sg", "virtio: too many write descriptors in indirect table"),
]

#: Spec violations QEMU 7.2 lets through (flag ignored); fatal in strict mode.
STRICT_ONLY = [
    ("indirect_inside_indirect", _indirect_in_indirect, "nested_indirect", "Nested indirect descriptor"),
    ("indirect_with_next", _indirect_with_next, "indirect_with_next", "Indirect descriptor with NEXT set"),
]


#: Buffers outside RAM that QEMU maps anyway (address_space_map: RAM directly, the rest
#: through its one-page bounce buffer): (builder, expected pieces, bounced piece).
OUTSIDE_RAM = [
    ("address_past_ram", _addr_past_ram, ((RAM - 2, 2), (RAM, 2)), ("r", 1)),
    ("address_in_mmio_hole", _addr_in_hole, ((0xFEB0_0000, 4),), ("w", 0)),
    ("address_wraps_64_bits", _addr_wraps, ((0xFFFF_FFFF_FFFF_FFF0, 16), (0, 16)), ("r", 0)),
]


@pytest.mark.parametrize("name, build, pieces, bounced", OUTSIDE_RAM, ids=[c[0] for c in OUTSIDE_RAM])
def test_buffer_outside_ram_maps_through_the_bounce_buffer(mem, events, name, build, pieces, bounced):
    drv, q = make(mem, events)
    build(drv)
    elem = q.pop()
    assert isinstance(elem, Element) and not events.fatal_kinds
    assert (elem.readable or elem.writable) == pieces
    assert elem.bounce[:2] == bounced and mem.bounce is elem.bounce[2]
    q.push(elem, 0)
    assert mem.bounce is None                  # pushing unmaps: the bounce is free again


def test_a_second_non_ram_piece_fails_while_the_bounce_is_in_use(mem, events):
    drv, q = make(mem, events)
    drv.write_desc(0, 0xFEB0_0000, 4, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1)
    drv.write_desc(1, 0xFEC0_0000, 4, VRING_DESC_F_WRITE, 0)
    drv.publish(0)
    assert_broken(q.pop(), "bogus_buffer", "virtio: bogus descriptor or out of resources", events)
    assert mem.bounce is None                  # QEMU virtqueue_undo_map_desc


def test_bounce_holds_one_page_so_a_long_buffer_outside_ram_fails(mem, events):
    drv, q = make(mem, events)
    drv.write_desc(0, 0xFEB0_0000, 0x1001, VRING_DESC_F_WRITE, 0)
    drv.publish(0)
    assert_broken(q.pop(), "bogus_buffer", "virtio: bogus descriptor or out of resources", events)


def test_an_element_holding_the_bounce_makes_the_next_pop_fail(mem, events):
    drv, q = make(mem, events)
    drv.write_desc(0, 0xFEB0_0000, 4, VRING_DESC_F_WRITE, 0)
    drv.publish(0)
    drv.write_desc(1, 0xFEB0_1000, 4, VRING_DESC_F_WRITE, 0)
    drv.publish(1)
    first = q.pop()
    assert isinstance(first, Element)
    assert_broken(q.pop(), "bogus_buffer", "virtio: bogus descriptor or out of resources", events)


@pytest.mark.parametrize("name, build, kind, reason", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_guest_input_breaks_queue(mem, events, name, build, kind, reason):
    drv, q = make(mem, events)
    build(drv)
    result = q.pop()
    assert_broken(result, kind, reason, events)
    assert q.inuse == 0
    assert events.errors[-1][1]["reason"] == reason and events.errors[-1][1]["queue"] == 0


def _head_is_n(drv):
    drv.publish(N)                                 # one past the last descriptor


#: What virtqueue_get_avail_bytes checks as virtqueue_pop does (the rest are checks of
#: virtqueue_map_desc and the element's size, which only pop makes).
BOTH = [c for c in CATALOGUE if c[2] in ("head_oob", "avail_idx_jump", "loop", "next_oob",
                                          "indirect_bad_size", "indirect_unmappable")] + [
    ("head_equal_to_size", _head_is_n, "head_oob", f"Guest says index {N} is available")]


@pytest.mark.parametrize("name, build, kind, reason", BOTH, ids=[c[0] for c in BOTH])
def test_avail_bytes_reads_the_rings_as_pop_does(mem, events, name, build, kind, reason):
    """virtqueue_get_avail_bytes goes through virtqueue_num_heads, virtqueue_get_head and
    the descriptor walk as virtqueue_pop does: the same error, with the same details in
    the record."""
    drv, q = make(mem, events)
    build(drv)
    by_bytes = q.avail_bytes()
    assert_broken(by_bytes, kind, reason, events)
    assert events.errors[-1][1]["reason"] == reason
    drv, q = make(mem, RecordingEvents())
    build(drv)
    by_pop = q.pop()
    assert (by_pop.kind, by_pop.reason) == (kind, reason)
    assert events.errors[-1][1] == {**by_bytes.fields, "reason": reason, "fatal": True, "queue": 0}
    if kind in ("head_oob", "avail_idx_jump"):
        assert by_bytes.fields == by_pop.fields == {
            "head_oob": {"head": 0xFFFF if name == "head_out_of_range" else N},
            "avail_idx_jump": {"last_avail_idx": 0, "avail_idx": 0x8000}}[kind]
    else:                                     # the head, and the chain's details pop names too
        assert by_bytes.fields.items() <= by_pop.fields.items() and by_bytes.fields["head"] == 0
        assert kind == "loop" or len(by_bytes.fields) > 1


INDIRECT_ENTRY = [c for c in CATALOGUE if c[2] in ("indirect_bad_size", "indirect_unmappable")]


@pytest.mark.parametrize("name, build, kind, reason", INDIRECT_ENTRY, ids=[c[0] for c in INDIRECT_ENTRY])
def test_avail_bytes_checks_an_indirect_table_as_pop_does(mem, events, name, build, kind, reason):
    drv, q = make(mem, events)
    build(drv)
    assert_broken(q.avail_bytes(), kind, reason, events)


@pytest.mark.parametrize("name, build, kind, reason", STRICT_ONLY, ids=[c[0] for c in STRICT_ONLY])
def test_spec_violation_passes_under_qemu_rules(mem, events, name, build, kind, reason):
    drv, q = make(mem, events)
    build(drv)
    assert isinstance(q.pop(), Element)
    assert events.errors == [(kind, {"reason": reason, "fatal": False, "queue": 0,
                                     "addr": events.errors[0][1]["addr"]})]


@pytest.mark.parametrize("name, build, kind, reason", STRICT_ONLY, ids=[c[0] for c in STRICT_ONLY])
def test_spec_violation_breaks_queue_in_strict_mode(mem, events, name, build, kind, reason):
    drv, q = make(mem, events, strict=True)
    build(drv)
    assert_broken(q.pop(), kind, reason, events)


def test_descriptor_chain_iterator_reports_end_reason(mem):
    drv = MockSplitQueue(mem, RING, N)
    _loop(drv)
    chain = DescriptorChain(mem, drv.desc_addr, N, 0)
    descs = list(chain)
    assert len(descs) == N + 1
    assert chain.end_reason == "loop"
    assert descs[0] == Descriptor(0x9000, 4, VRING_DESC_F_NEXT, 0)


# --------------------------------------------------------------------------- push


def test_push_writes_used_entry_and_idx(ring, mem):
    drv, q = ring
    chain = drv.add_chain([(8, False), (16, True)])
    elem = q.pop()
    written = elem.write(mem, b"0123456789abcdefXYZ")
    assert written == 16
    q.push(elem, written)
    assert drv.used_entries() == [UsedEntry(chain.head, 16)]
    assert drv.read_written(chain, 16) == b"0123456789abcdef"
    assert (q.used_idx, q.inuse) == (1, 0)


def test_fill_and_flush_publish_a_batch_at_once(ring):
    drv, q = ring
    chains = [drv.add_chain([(4, True)]) for _ in range(3)]
    elems = [q.pop() for _ in range(3)]
    for i, e in enumerate(elems):
        q.fill(e, i + 1, i)
    assert drv.used_idx == 0
    q.flush(3)
    assert drv.used_entries() == [UsedEntry(c.head, i + 1) for i, c in enumerate(chains)]


def test_used_ring_wraps_with_free_running_index(ring):
    drv, q = ring
    for i in range(3 * N):
        chain = drv.add_chain([(4, True)])
        q.push(q.pop(), i)
        assert drv.used_entries() == [UsedEntry(chain.head, i)]


def test_flush_more_than_inflight_is_a_host_error(ring):
    _, q = ring
    with pytest.raises(UvirtError, match="flushing 1 elements with 0 in flight"):
        q.push(0, 0)


def test_rewind_makes_pop_return_the_same_element(ring):
    drv, q = ring
    chain = drv.add_chain([(4, True)])
    q.pop()
    assert q.rewind(1)
    assert q.pop().head == chain.head


# --------------------------------------------------------------------------- avail_bytes


def test_avail_bytes_sums_all_available_chains(ring):
    drv, q = ring
    drv.add_chain([(10, False), (20, True)])
    drv.add_indirect_chain([(5, False), (7, True)])
    assert q.avail_bytes() == (27, 15)
    assert q.last_avail_idx == 0


def test_avail_bytes_stops_once_both_maxima_reached(ring):
    drv, q = ring
    drv.add_chain([(10, True)])
    drv.add_chain([(10, True)])
    assert q.avail_bytes(max_in=5, max_out=0) == (10, 0)
    assert q.avail_bytes(max_in=10, max_out=0) == (10, 0)        # reached exactly: enough
    assert q.avail_bytes(max_in=11, max_out=0) == (20, 0)


def test_avail_bytes_detects_avail_idx_jump(mem, events):
    drv, q = make(mem, events)
    drv.set_avail_idx(N + 1)
    assert_broken(q.avail_bytes(), "avail_idx_jump", "Guest moved used index from 0 to 9", events)


# --------------------------------------------------------------------------- notification


def test_should_notify_respects_no_interrupt(ring):
    drv, q = ring
    assert q.should_notify()
    drv.avail_flags = VRING_AVAIL_F_NO_INTERRUPT
    assert not q.should_notify()


def test_notify_on_empty_overrides_no_interrupt_when_queue_drained(mem, events):
    drv, q = make(mem, events, features=VirtioFeature.NOTIFY_ON_EMPTY)
    drv.avail_flags = VRING_AVAIL_F_NO_INTERRUPT
    drv.add_chain([(4, True)])
    drv.add_chain([(4, True)])
    q.push(q.pop(), 4)
    assert not q.should_notify()               # another buffer still waits
    q.push(q.pop(), 4)
    assert q.should_notify()


def test_event_idx_need_event_wraps():
    assert vring_need_event(0, 1, 0)
    assert not vring_need_event(1, 1, 0)
    assert vring_need_event(0xFFFF, 0, 0xFFFF)     # crossing 65535 -> 0
    assert vring_need_event(0xFFFE, 2, 0xFFFD)
    assert not vring_need_event(3, 2, 0xFFFD)


def test_event_idx_first_notification_is_unconditional(mem, events):
    drv, q = make(mem, events, features=VirtioFeature.RING_EVENT_IDX)
    drv.used_event = 5
    drv.add_chain([(4, True)])
    q.push(q.pop(), 4)
    assert q.should_notify()
    drv.add_chain([(4, True)])
    q.push(q.pop(), 4)
    assert not q.should_notify()               # used idx 1 -> 2 does not cross 5


def test_event_idx_notifies_when_used_idx_crosses_used_event(mem, events):
    drv, q = make(mem, events, features=VirtioFeature.RING_EVENT_IDX)
    q.should_notify()
    drv.used_event = 2
    notified = []
    for _ in range(5):
        drv.add_chain([(4, True)])
        q.push(q.pop(), 4)
        notified.append(q.should_notify())
    assert notified == [False, False, True, False, False]


def test_event_idx_ignores_no_interrupt_flag(mem, events):
    drv, q = make(mem, events, features=VirtioFeature.RING_EVENT_IDX)
    drv.avail_flags = VRING_AVAIL_F_NO_INTERRUPT
    assert q.should_notify()


def test_event_idx_pop_writes_avail_event(mem, events):
    drv, q = make(mem, events, features=VirtioFeature.RING_EVENT_IDX)
    drv.add_chain([(4, True)])
    drv.add_chain([(4, True)])
    q.pop()
    assert drv.avail_event == 1
    q.set_notification(False)
    q.pop()
    assert drv.avail_event == 1                # not written while notifications are off


def test_set_notification_toggles_used_no_notify(ring):
    drv, q = ring
    q.set_notification(False)
    assert drv.used_flags == VRING_USED_F_NO_NOTIFY
    q.set_notification(True)
    assert drv.used_flags == 0


def test_set_notification_with_event_idx_writes_current_avail_idx(mem, events):
    drv, q = make(mem, events, features=VirtioFeature.RING_EVENT_IDX)
    drv.add_chain([(4, True)])
    drv.add_chain([(4, True)])
    q.set_notification(True)
    assert drv.avail_event == 2 and drv.used_flags == 0


def test_disabled_queue_pops_nothing(ring):
    drv, q = ring
    drv.add_chain([(4, True)])
    q.disabled = True
    assert q.pop() is None and q.is_empty()


# --------------------------------------------------------------------------- features (uvirt.virtio.features)


def test_feature_bits_have_spec_numbers():
    from uvirt.virtio.features import VirtioFeature as F
    assert [f.bit_length() - 1 for f in (F.NOTIFY_ON_EMPTY, F.ANY_LAYOUT, F.RING_INDIRECT_DESC,
                                         F.RING_EVENT_IDX, F.BAD_FEATURE, F.VERSION_1,
                                         F.ACCESS_PLATFORM, F.RING_PACKED, F.IN_ORDER,
                                         F.ORDER_PLATFORM, F.SR_IOV, F.NOTIFICATION_DATA,
                                         F.NOTIF_CONFIG_DATA, F.RING_RESET)] == \
        [24, 27, 28, 29, 30, 32, 33, 34, 35, 36, 37, 38, 39, 40]


def test_feature_pages_split_and_join_64_bit_words():
    from uvirt.virtio.features import page, set_page
    offered = 0x0000_0101_3000_0000          # QEMU 7.2 modern rng, as observed
    assert [page(offered, s) for s in range(3)] == [0x3000_0000, 0x0000_0101, 0]
    assert set_page(set_page(0, 0, 0x3000_0000), 1, 0x101) == offered
    assert set_page(offered, 0, 0xF_FFFF_FFF1) == 0x0000_0101_FFFF_FFF1   # value cut to 32 bits


def test_mask_unoffered_reports_dropped_bits():
    from uvirt.virtio.features import VirtioFeature as F, mask_unoffered
    offered = F.RING_EVENT_IDX | F.VERSION_1
    assert mask_unoffered(offered, F.RING_EVENT_IDX | F.RING_PACKED) == (F.RING_EVENT_IDX, F.RING_PACKED)


def test_legacy_bad_feature_write_means_bad_features():
    from uvirt.virtio.features import VirtioFeature as F, legacy_guest_features
    assert legacy_guest_features(F.BAD_FEATURE | F.RING_EVENT_IDX) == 0
    assert legacy_guest_features(F.RING_EVENT_IDX) == F.RING_EVENT_IDX


def test_feature_names_use_spec_names():
    from uvirt.virtio.features import VirtioFeature as F, feature_names
    assert feature_names(F.RING_INDIRECT_DESC | F.VERSION_1 | 1) == ["bit0", "RING_INDIRECT_DESC", "VERSION_1"]


# --------------------------------------------------------------------------- ring window


def _serve(drv, q, rounds):
    """A driver/device exchange whose every ring access goes through ``q``'s accessors."""
    seen = []
    for i in range(rounds):
        drv.add_chain([(8 + i, False), (16, True)], data=bytes([i]) * (8 + i))
        seen.append(q.avail_bytes())
        elem = q.pop()
        seen.append((elem.head, elem.readable, elem.writable))
        q.push(elem, i)
        seen.append(q.should_notify())
        seen.append(drv.used_entries())        # gives the descriptors back
    q.set_notification(False)
    return seen


@pytest.mark.parametrize("layout", ["legacy", "modern"])
def test_ring_window_agrees_with_the_guest_memory_path(layout):
    """The RAM window is only a translation cache: a queue without it (every ring
    access through GuestMemory.read/write) sees and writes exactly the same."""
    results = []
    for use_window in (True, False):
        mem = guest_ram(RAM)
        drv = MockSplitQueue(mem, RING, N, layout=layout)
        q = SplitQueue(mem, N, events=RecordingEvents())
        assert drv.configure(q) is None
        assert q._win is not None
        if not use_window:
            q._win = None
        seen = _serve(drv, q, 20)
        results.append((seen, mem.read(RING, 3 * 4096)))
    assert results[0] == results[1]


def test_ring_window_is_dropped_when_the_memory_map_changes():
    """A region placed over the used ring after the queue was set up: the next used
    element goes to that region, as QEMU's re-initialised region caches send it."""
    from uvirt.board.memory.regions import MmioRegion

    class Recorder:
        def __init__(self):
            self.writes = []

        def read(self, offset, size):
            return 0

        def write(self, offset, size, value):
            self.writes.append((offset, size, value))

    mem = guest_ram(RAM)
    drv = MockSplitQueue(mem, RING, N, layout="legacy")
    q = SplitQueue(mem, N, events=RecordingEvents())
    assert drv.configure(q) is None and q._win is not None
    drv.add_chain([(16, True)])
    elem = q.pop()
    dev = Recorder()
    mem._space.add(MmioRegion("over-used", 4096, dev), q.used, priority=1)
    mem._space.commit()
    before = mem._space.lookup(q.used).region
    assert isinstance(before, MmioRegion)
    q.push(elem, 5)
    assert (4, 4, elem.head) in dev.writes and (2, 2, 1) in dev.writes
    mem._space.remove(mem._space.placements[-1])
    mem._space.commit()
    assert drv.used_idx == 0               # RAM below never saw the push


def test_rewind_gives_back_several_elements_in_order_and_refuses_more_than_in_flight(ring):
    drv, q = ring
    chains = [drv.add_chain([(4, True)]) for _ in range(3)]
    popped = [q.pop() for _ in range(3)]
    assert not q.rewind(4) and (q.inuse, q.last_avail_idx) == (3, 3)
    assert q.rewind(2) and (q.inuse, q.last_avail_idx) == (1, 1)
    assert [q.pop().head for _ in range(2)] == [c.head for c in chains[1:]]
    assert q.pop() is None and popped[0].head == chains[0].head


def test_rewind_across_avail_index_wrap(mem, events):
    drv, q = make(mem, events)
    q.last_avail_idx = q.shadow_avail_idx = 0xFFFF
    drv.avail_idx = 0xFFFF
    chain = drv.add_chain([(4, True)])         # slot 0xFFFF % 8, idx wraps to 0
    assert q.pop().head == chain.head and q.last_avail_idx == 0
    assert q.rewind(1) and q.last_avail_idx == 0xFFFF
    assert q.pop().head == chain.head


def test_detach_forgets_an_element_and_writes_nothing_back(mem, events):
    drv, q = make(mem, events)
    drv.write_desc(0, 0xFEB0_0000, 4, VRING_DESC_F_WRITE, 0)   # bounced: MMIO hole
    drv.publish(0)
    elem = q.pop()
    elem.write(mem, b"abcd")
    q.detach(elem)
    assert q.inuse == 0 and mem.bounce is None
    assert q.used_idx == 0 and drv.used_entries() == []


def test_avail_event_is_two_bytes_at_the_end_of_the_used_ring(mem, events):
    drv, q = make(mem, events, layout="modern", features=VirtioFeature.RING_EVENT_IDX)
    end = drv.used_addr + 4 + 8 * N
    mem.write(end, b"\x00\x00\xa5\xa5")
    drv.add_chain([(4, True)])
    q.pop()
    assert mem.read(end, 4) == b"\x01\x00\xa5\xa5"


def test_split_queue_repr_names_its_state(ring):
    drv, q = ring
    drv.add_chain([(4, True)])
    q.pop()
    assert repr(q) == (f"SplitQueue(index=0, size={N}, desc=0x{q.desc:x}, avail=0x{q.avail:x}, "
                       f"used=0x{q.used:x}, last_avail=1, used_idx=0, inuse=1)")


# What QEMU's virtqueue_split_get_avail_bytes answers for well-formed rings, as a model:
# every descriptor of every available chain, in ring order, stopping after the one that
# reaches both maxima (uvirt.testing.mock_driver.avail_bytes_model).


U32 = 0xFFFF_FFFF
CHAIN = st.tuples(st.booleans(),                               # through an indirect table
                  st.lists(st.tuples(st.integers(1, 40), st.booleans()), min_size=1, max_size=4))
_MEM = guest_ram(RAM)


@settings(max_examples=60, deadline=None)
@given(size=st.sampled_from([1, 2, 4, 8]), served=st.integers(0, 20),
       chains=st.lists(CHAIN, max_size=8), layout=st.sampled_from(["legacy", "modern"]),
       max_in=st.one_of(st.just(U32), st.integers(0, 120)),
       max_out=st.one_of(st.just(U32), st.integers(0, 120)))
def test_avail_bytes_counts_every_available_chain_like_qemu(size, served, chains, layout,
                                                            max_in, max_out):
    events = RecordingEvents()
    drv, q = make(_MEM, events, layout=layout, size=size)
    for _ in range(served):
        drv.add_chain([(4, True)])
        q.push(q.pop(), 4)
        drv.used_entries()
    offered, free = [], size
    for indirect, bufs in chains:
        bufs = sorted(bufs, key=lambda b: b[1])               # readable before writable
        slots = 1 if indirect else len(bufs)
        if slots > free:
            continue
        free -= slots
        (drv.add_indirect_chain if indirect else drv.add_chain)(bufs)
        offered.append(bufs)
    assert q.avail_bytes(max_in, max_out) == avail_bytes_model(offered, max_in, max_out)[0]
    assert (q.last_avail_idx, q.inuse) == (served, 0) and not events.errors
    for bufs in offered:                                      # and pop agrees
        elem = q.pop()
        assert (elem.writable_len, elem.readable_len) == avail_bytes_model([bufs], U32, U32)[0]


def test_avail_bytes_limit_is_per_chain_after_an_indirect_one(mem, events):
    """QEMU 7.2 (7.2.22 as Debian ships it) starts each chain with a limit of N
    descriptors: a one-entry table before a two-descriptor chain is no loop."""
    drv, q = make(mem, events)
    drv.add_indirect_chain([(8, True)])
    drv.add_chain([(4, True), (4, True)])
    assert q.avail_bytes() == (16, 0) and not events.errors


def test_avail_bytes_direct_chains_share_one_descriptor_budget(mem, events):
    """The count of a direct chain starts where the direct chains before it ended, so a
    chain that loops back is found within N descriptors in all."""
    drv, q = make(mem, events, size=4)
    drv.add_chain([(4, True), (4, True)])
    drv.write_desc(2, 0x9000, 4, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 3)
    drv.write_desc(3, 0x9100, 4, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2)
    drv.publish(2)
    assert_broken(q.avail_bytes(), "loop", "Looped descriptor", events)
    assert events.errors[-1][1]["head"] == 2


def test_avail_bytes_budget_counts_direct_descriptors_and_one_per_indirect_chain(mem, events):
    """virtqueue_split_get_avail_bytes: after a direct chain total_bufs is its count,
    after an indirect one total_bufs + 1, and the next chain counts on from there against
    N: a chain that is no loop at all is "Looped descriptor" once the budget is spent."""
    drv, q = make(mem, events, size=4)
    drv.write_desc(0, 0x9000, 4, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1)
    drv.write_desc(1, 0x9100, 4, VRING_DESC_F_WRITE, 0)
    drv.publish(0)                                      # 2 descriptors
    drv.write_desc(2, 0x9200, 4, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 3)
    drv.write_desc(3, 0x9300, 4, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1)
    drv.publish(2)                                      # 2 -> 3 -> 1: 3 more, 5 > 4
    assert_broken(q.avail_bytes(), "loop", "Looped descriptor", events)
    assert isinstance(q.pop(), Element) and isinstance(q.pop(), Element)   # pop counts each alone
    drv, q = make(mem, events, size=8)
    for head, table in ((0, 0x9000), (1, 0x9100)):
        drv.write_table(table, [(0x9800, 4, VRING_DESC_F_WRITE, 0)])
        drv.write_desc(head, table, 16, VRING_DESC_F_INDIRECT, 0)
        drv.publish(head)                               # 1 each
    for i in range(2, 8):
        drv.write_desc(i, 0xA000 + 0x100 * i, 4, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, (i + 1) % 8)
    drv.publish(2)                                      # 2..7 -> 0: 7 more, 9 > 8
    assert_broken(q.avail_bytes(), "loop", "Looped descriptor", events)
    drv, q = make(mem, events, size=8)
    drv.write_table(0x9000, [(0x9800, 4, VRING_DESC_F_WRITE, 0)])
    drv.write_desc(0, 0x9000, 16, VRING_DESC_F_INDIRECT, 0)
    drv.publish(0)
    for i in range(1, 8):
        drv.write_desc(i, 0xA000 + 0x100 * i, 4, VRING_DESC_F_WRITE | (VRING_DESC_F_NEXT if i < 7 else 0), i + 1)
    drv.publish(1)                                      # 1 + 7 = 8: within the budget
    assert q.avail_bytes() == (32, 0)


def test_avail_bytes_of_a_queue_without_rings_or_with_a_grown_size(mem, events):
    q = SplitQueue(mem, N, events=events)
    assert q.avail_bytes() == (0, 0)
    drv, q = make(mem, events, layout="modern")
    drv.add_chain([(4, True)])
    q.set_size(2 * N)                         # QEMU keeps the ring cache checked for N
    assert_broken(q.avail_bytes(), "desc_ring_unmappable", "Cannot map descriptor ring", events)


def test_notify_decision_says_why_in_the_specs_words(mem, events):
    """The reasons `uvirt trace` prints next to each interrupt decision."""
    drv, q = make(mem, events, features=VirtioFeature.NOTIFY_ON_EMPTY)
    drv.add_chain([(4, True)])
    q.push(q.pop(), 4)
    assert q.notify_decision() == (True, "NOTIFY_ON_EMPTY negotiated and the ring is empty "
                                         "(§6.3 legacy)")
    drv, q = make(mem, events)
    drv.avail_flags = VRING_AVAIL_F_NO_INTERRUPT
    assert q.notify_decision() == (False, "avail.flags=0x0001: the driver set "
                                          "VIRTQ_AVAIL_F_NO_INTERRUPT (§2.7.7)")
    drv.avail_flags = 0
    assert q.notify_decision() == (True, "avail.flags=0x0000: VIRTQ_AVAIL_F_NO_INTERRUPT "
                                         "clear (§2.7.7)")
    drv, q = make(mem, events, features=VirtioFeature.RING_EVENT_IDX)
    for _ in range(2):
        drv.add_chain([(4, True)])
        q.push(q.pop(), 4)
    assert q.notify_decision() == (True, "first notification with VIRTIO_F_EVENT_IDX, "
                                         "used.idx=2 (§2.7.7.2)")


def test_set_notification_leaves_used_idx_alone(ring):
    drv, q = ring
    for _ in range(3):
        drv.add_chain([(4, True)])
        q.push(q.pop(), 4)
    q.set_notification(False)
    q.set_notification(True)
    assert drv.used_entries() == [UsedEntry(i, 4) for i in range(3)]
    assert q.used_idx == 3 and drv.mem.read_u16(drv.used_addr + 2) == 3


def test_disabled_queue_drops_fills_but_counts_flushes(ring):
    """QEMU virtqueue_fill/flush on a broken device: nothing reaches the used ring, the
    in-flight count still drops."""
    drv, q = ring
    drv.add_chain([(4, True)])
    elem = q.pop()
    q.disabled = True
    q.fill(elem, 4)
    q.flush(1)
    assert q.inuse == 0 and q.used_idx == 0 and drv.used_entries() == []
    assert mem_used_elem(drv, 0) == (0, 0)


def mem_used_elem(drv, slot):
    raw = drv.mem.read(drv.used_addr + 4 + 8 * slot, 8)
    return int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:], "little")


def test_used_length_is_a_full_32_bit_value(ring):
    drv, q = ring
    chain = drv.add_chain([(4, True)])
    q.fill(q.pop(), 0xFFFF_FFFF)                        # idx defaults to the next slot
    q.flush(1)
    assert drv.used_entries() == [UsedEntry(chain.head, 0xFFFF_FFFF)]


def test_split_ring_events_pop_fill_flush(mem, events):
    """The trace's ring events (uvirt/trace.py vq_pop, vq_fill, vq_flush) from a split ring."""
    drv, q = make(mem, events)
    q.index = 2
    chain = drv.add_chain([(16, False), (32, True)])
    q.push(q.pop(), 0x1_0000_0020)
    assert [n for n, _ in events.rings] == ["vq_pop", "vq_fill", "vq_flush"]
    assert events.rings[0][1] == {"queue": 2, "head": chain.head, "avail_idx": 1,
                                  "readable": [list(p) for p in chain.readable],
                                  "writable": [list(p) for p in chain.writable]}
    assert events.rings[1][1] == {"queue": 2, "slot": 0, "head": chain.head, "len": 32}
    assert events.rings[2][1] == {"queue": 2, "old": 0, "new": 1}


def test_legacy_layout_where_qemus_alignment_point_matters():
    # 18*455 + 4 = 8194: past 8192, so the used ring starts at 12288
    assert legacy_layout(1, 455).used - 0x1000 == 12288
    assert legacy_layout(1, 455, align=64).used - 0x1000 == 8256


def test_vring_align_rounds_up_to_the_alignment():
    from uvirt.virtio.queue import vring_align
    assert [vring_align(a, 4096) for a in (0, 1, 4095, 4096, 4097)] == [0, 4096, 4096, 4096, 8192]


def test_set_legacy_pfn_with_a_size_of_455(mem, events):
    q = SplitQueue(mem, 455, events=events)
    assert q.set_legacy_pfn(1) is None
    assert (q.avail - q.desc, q.used - q.desc) == (16 * 455, 12288)


def test_a_queue_without_alignment_takes_no_legacy_address(mem, events):
    """QEMU virtio_queue_update_rings: no alignment, nothing is set up."""
    q = SplitQueue(mem, N, events=events, align=0)
    assert q.set_legacy_pfn(RING >> 12) is None
    assert (q.desc, q.avail, q.used, q.ready) == (RING, 0, 0, False)


def test_event_idx_notifies_again_after_the_used_index_ran_half_the_index_space(mem, events):
    """QEMU virtqueue_split_flush: once used.idx has moved 2^15 past the last signalled
    index, that index can no longer tell whether used_event was crossed, so the next
    notification is unconditional."""
    drv, q = make(mem, events, features=VirtioFeature.RING_EVENT_IDX)
    drv.used_event = 0x4000
    chain = drv.add_chain([(4, True)])
    q.push(q.pop(), 4)
    assert q.notify_decision()[0]                       # the first: unconditional
    for _ in range(0x100):                              # the same buffer, over and over
        drv.publish(chain.head)
        q.push(q.pop(), 4)
    # ... 2^15 times in all: the indices as a snapshot of the queue would restore them
    # 0x7F00 buffers later (the last signalled index stays 1; pushing them one by one
    # takes seconds, and the mutation runs repeat this test for every mutant)
    q.last_avail_idx = q.shadow_avail_idx = q.used_idx = 0x8000
    drv.set_avail_idx(0x8000)
    drv.last_used_idx = 0x8000
    drv.publish(chain.head)
    q.push(q.pop(), 4)
    assert drv.used_idx == 0x8001 and q.signalled_used == 1
    drv.used_event = 0x9000               # 1 -> 0x8001 does not cross it, but 0x8001 - 1
    #                                       is half the index space
    assert q.notify_decision() == (True, "first notification with VIRTIO_F_EVENT_IDX, "
                                         "used.idx=32769 (§2.7.7.2)")


@pytest.mark.parametrize("build, fields", [
    (_avail_jump, {"last_avail_idx": 0, "avail_idx": 0x8000}),
    (_head_oob, {"head": 0xFFFF}),
])
def test_guest_errors_name_what_was_wrong(mem, events, build, fields):
    drv, q = make(mem, events)
    build(drv)
    assert q.pop().fields == fields
    assert {k: events.errors[-1][1][k] for k in fields} == fields


def test_size_exceeded_names_the_elements_in_flight(mem, events):
    drv, q = make(mem, events, size=2)
    drv.add_chain([(4, True)])
    drv.add_chain([(4, True)])
    q.pop(), q.pop()
    drv.publish(0)
    assert q.pop().fields == {"inuse": 2}


def test_pop_with_a_grown_size_cannot_map_the_descriptor_table(mem, events):
    drv, q = make(mem, events, layout="modern")
    drv.add_chain([(4, True)])
    q.set_size(2 * N)                         # QEMU keeps the ring cache checked for N
    assert_broken(q.pop(), "desc_ring_unmappable", "Cannot map descriptor ring", events)


def test_pop_after_the_rings_failed_their_check(mem, events):
    """Entries seen before the rings were set again, to an area that fails the check:
    QEMU's "Region caches not initialized"."""
    drv, q = make(mem, events, layout="modern")
    drv.add_chain([(4, True)])
    drv.add_chain([(4, True)])
    q.pop()
    assert q.set_rings(q.desc, RAM - 2, q.used).kind == "ring_unmappable"
    assert_broken(q.pop(), "rings_unmapped", "Region caches not initialized", events)


def test_rings_in_ram_that_does_not_start_at_0():
    """The ring window translates guest addresses into its RAM: RAM at 1 MiB."""
    mem = guest_ram(RAM, base=0x10_0000)
    drv = MockSplitQueue(mem, 0x10_0000 + RING, N, layout="modern")
    q = SplitQueue(mem, N)
    assert drv.configure(q) is None
    for n in range(3):
        chain = drv.add_chain([(8, False), (4, True)] if n % 2 else [(4, True)])
        elem = q.pop()
        assert (elem.head, elem.readable, elem.writable) == (chain.head, chain.readable, chain.writable)
        q.push(elem, n)
        assert drv.used_entries() == [UsedEntry(chain.head, n)]


def test_descriptor_table_covered_by_a_region_after_setup():
    """A register window placed over the descriptor table after the queue was set up:
    the descriptors are read from it (zeros here), not from the RAM under it."""
    from uvirt.board.memory.regions import MmioRegion

    class Zeros:
        def read(self, offset, size):
            return 0

        def write(self, offset, size, value):
            pass

    mem = guest_ram(RAM)
    events = RecordingEvents()
    drv = MockSplitQueue(mem, RING, N, layout="legacy")
    q = SplitQueue(mem, N, events=events)
    assert drv.configure(q) is None
    drv.add_chain([(16, True)])
    mem._space.add(MmioRegion("over-desc", 16 * N, Zeros()), q.desc, priority=1)
    mem._space.commit()
    assert_broken(q.pop(), "zero_len", "virtio: zero sized buffers are not allowed", events)


@pytest.mark.parametrize("event_idx", [False, True])
def test_ring_areas_may_end_exactly_at_the_end_of_ram(mem, events, event_idx):
    """QEMU virtio_queue_get_avail_size / get_used_size: 4 + 2N and 4 + 8N bytes, plus 2
    (used_event, avail_event) with EVENT_IDX; an area must not leave RAM."""
    extra = 2 if event_idx else 0
    avail_last = RAM - (4 + 2 * N + extra)          # the last address that fits
    used_last = RAM - (4 + 8 * N + extra)
    cases = [(avail_last, RING + 0x1000, None), (avail_last + 1, RING + 0x1000, "avail"),
             (RING + 0x800, used_last, None), (RING + 0x800, used_last + 1, "used")]
    for avail, used, failed in cases:
        q = SplitQueue(mem, N, events=events)
        q.set_features(VirtioFeature.RING_EVENT_IDX if event_idx else 0)
        result = q.set_rings(RING, avail, used)
        if failed is None:
            assert result is None and q.ready
        else:
            assert (result.kind, result.reason) == ("ring_unmappable", f"Cannot map {failed}")


def test_ignored_size_write_is_a_recorded_non_fatal_guest_error(mem, events):
    q = SplitQueue(mem, N, events=events)
    q.set_size(1025)
    assert events.errors == [("bad_queue_size", {"reason": "queue size 1025 ignored", "fatal": False,
                                                 "queue": 0, "size": 1025})]


def test_descriptor_table_leaving_ram_names_the_area(mem, events):
    q = SplitQueue(mem, N, events=events)
    result = q.set_rings(RAM - 16 * N + 16, 0x30000, 0x31000)
    assert_broken(result, "ring_unmappable", "Cannot map desc", events)
    assert result.fields == {"area": "desc", "addr": RAM - 16 * N + 16, "size": 16 * N}


def test_reset_forgets_the_negotiated_ring_features(mem, events):
    drv, q = make(mem, events, features=VirtioFeature.NOTIFY_ON_EMPTY | VirtioFeature.RING_EVENT_IDX)
    q.reset()
    assert drv.configure(q) is None
    drv.avail_flags = VRING_AVAIL_F_NO_INTERRUPT
    drv.add_chain([(4, True)])
    q.push(q.pop(), 4)
    assert q.notify_decision() == (False, "avail.flags=0x0001: the driver set "
                                          "VIRTQ_AVAIL_F_NO_INTERRUPT (§2.7.7)")
