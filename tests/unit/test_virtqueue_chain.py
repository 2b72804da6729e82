"""Descriptor chains (uvirt.virtio.chain) on their own: descriptor layouts, split and packed
walks, indirect tables, mapping into pieces, and what an element reads and writes.  Pure:
a guest memory of RAM and one register window, no queue, no CPU."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvirt.board.memory.regions import MemoryMap, MmioRegion, RamRegion
from uvirt.virtio.chain import (VIRTQUEUE_MAX_SIZE, VRING_DESC_F_INDIRECT,
                                VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, ChainError, Descriptor,
                                DescriptorChain, Element, PackedChain, PackedDescriptor,
                                QueueBroken, indirect_table, map_buffer, map_chain, undo_map)

RAM = 1 << 20
MMIO = 0x20_0000                     # a 4 KiB register window right after the gap past RAM
TABLE = 0x1000
ROM = 0x30_0000                      # read-only memory (a firmware image), for the tests that need it
N, W, I = VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT


class Registers:
    """A device whose registers are plain bytes, to see what reaches it and when."""

    def __init__(self, size: int = 0x1000) -> None:
        self.bytes = bytearray(size)
        self.writes = 0

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.bytes[offset:offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes += 1
        self.bytes[offset:offset + size] = value.to_bytes(size, "little")


@pytest.fixture
def regs():
    return Registers()


@pytest.fixture
def mem(regs):
    mm = MemoryMap()
    mm.add(RamRegion("ram", RAM), 0)
    mm.add(MmioRegion("regs", 0x1000, regs), MMIO)
    return mm.guest


def split_table(mem, descs, at=TABLE):
    mem.write(at, b"".join(Descriptor(*d).pack() for d in descs))


def packed_table(mem, descs, at=TABLE):
    mem.write(at, b"".join(PackedDescriptor(*d).pack() for d in descs))


# --------------------------------------------------------------------------- layouts


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF),
       st.integers(0, 0xFFFF))
def test_descriptor_layouts_are_the_specs(addr, length, a, b):
    assert Descriptor(addr, length, a, b).pack() == struct.pack("<QIHH", addr, length, a, b)
    assert Descriptor.unpack(struct.pack("<QIHH", addr, length, a, b)) == Descriptor(addr, length, a, b)
    p = PackedDescriptor(addr, length, a, b)
    assert p.pack() == struct.pack("<QIHH", addr, length, a, b)          # id before flags
    assert PackedDescriptor.unpack(p.pack()) == p
    assert (p.addr, p.len, p.id, p.flags) == (addr, length, a, b)


def test_descriptor_flag_properties():
    d = Descriptor(0, 0, N | I, 0)
    assert d.has_next and d.is_indirect and not d.is_write_only
    d = Descriptor(0, 0, W, 0)
    assert d.is_write_only and not d.has_next and not d.is_indirect


def test_packed_descriptor_equality_and_repr():
    d = PackedDescriptor(0x1234, 0x10, 7, 0x80)
    assert d == PackedDescriptor(0x1234, 0x10, 7, 0x80)
    assert d != PackedDescriptor(0x1234, 0x10, 8, 0x80)
    assert d != (0x1234, 0x10, 7, 0x80)
    assert repr(d) == "PackedDescriptor(addr=0x1234, len=0x10, id=7, flags=0x0080)"


def test_pop_results_say_whether_the_queue_broke():
    assert not Element(0, (), ()).broken
    assert QueueBroken("loop", "Looped descriptor").broken
    assert ChainError("loop", "Looped descriptor", count=3).fields == {"count": 3}


# --------------------------------------------------------------------------- indirect tables


@pytest.mark.parametrize("length", [0, 8, 24, 17])
def test_indirect_table_length_must_be_a_positive_multiple_of_16(mem, length):
    with pytest.raises(ChainError) as e:
        indirect_table(mem, Descriptor(TABLE, length, I, 0))
    assert (e.value.kind, e.value.reason) == ("indirect_bad_size", "Invalid size for indirect buffer table")
    assert e.value.fields == {"len": length}


def test_indirect_table_gives_address_and_entries(mem):
    assert indirect_table(mem, Descriptor(TABLE, 48, I, 0)) == (TABLE, 3)
    assert indirect_table(mem, Descriptor(TABLE, 16, I, 0), 0, 1) == (TABLE, 1)


def test_indirect_table_with_the_descriptor_budget_spent_is_a_loop(mem):
    with pytest.raises(ChainError) as e:
        indirect_table(mem, Descriptor(TABLE, 32, I, 0), 4, 4)
    assert (e.value.kind, e.value.reason) == ("loop", "Looped descriptor")


def test_an_indirect_table_in_rom_is_read_like_ram():
    """The device only reads an indirect table: QEMU caches it with
    address_space_cache_init(..., is_write=false), so read-only memory serves."""
    mm = MemoryMap()
    mm.add(RamRegion("ram", RAM), 0)
    rom = RamRegion("rom", 0x1000, readonly=True)
    rom.buffer.view[0:32] = b"".join(Descriptor(0x100 * i, 4, 0, 0).pack() for i in (1, 2))
    mm.add(rom, ROM)
    assert indirect_table(mm.guest, Descriptor(ROM, 32, I, 0)) == (ROM, 2)
    assert indirect_table(mm.guest, Descriptor(ROM, 48, I, 0), 0, 4) == (ROM, 3)


@pytest.mark.parametrize("addr", [RAM - 16, MMIO + 0x1000 - 16])
def test_indirect_table_leaving_its_memory_region_cannot_be_mapped(mem, addr):
    with pytest.raises(ChainError) as e:
        indirect_table(mem, Descriptor(addr, 32, I, 0))
    assert (e.value.kind, e.value.reason) == ("indirect_unmappable", "Cannot map indirect buffer")
    assert e.value.fields == {"addr": addr, "len": 32}


# --------------------------------------------------------------------------- split walks


def walk(chain):
    return [(d.addr, d.len) for d in chain]


def test_split_chain_follows_next_in_any_order(mem):
    split_table(mem, [(0x5000, 1, N, 2), (0x6000, 3, 0, 0), (0x7000, 2, N, 1)])
    chain = DescriptorChain(mem, TABLE, 3, 0)
    assert walk(chain) == [(0x5000, 1), (0x7000, 2), (0x6000, 3)]
    assert chain.error is None and chain.end_reason is None and not chain.indirect


def test_split_chain_next_out_of_range(mem):
    split_table(mem, [(0x5000, 1, N, 3), (0, 0, 0, 0), (0, 0, 0, 0)])
    chain = DescriptorChain(mem, TABLE, 3, 0)
    assert walk(chain) == [(0x5000, 1)]
    assert chain.error == ("next_oob", "Desc next is 3", {"next": 3})
    assert chain.end_reason == "next_oob"


@pytest.mark.parametrize("size", [1, 2, 5])
def test_split_chain_loop_ends_after_one_more_than_the_table(mem, size):
    split_table(mem, [(0x5000 + i, 1, N, (i + 1) % size) for i in range(size)])
    chain = DescriptorChain(mem, TABLE, size, 0)
    assert len(walk(chain)) == size + 1
    assert chain.error == ("loop", "Looped descriptor", {"count": size + 1})


def test_split_chain_through_an_indirect_head(mem):
    split_table(mem, [(0x5000, 4, N, 1), (0x6000, 8, W, 0)], at=0x3000)
    split_table(mem, [(0x3000, 32, I, 0)])
    chain = DescriptorChain(mem, TABLE, 1, 0)
    assert walk(chain) == [(0x5000, 4), (0x6000, 8)]
    assert chain.indirect and chain.error is None and not chain.warnings


def test_split_chain_loop_inside_an_indirect_table_counts_its_entries(mem):
    split_table(mem, [(0x5000, 4, N, 1), (0x6000, 8, N, 0)], at=0x3000)
    split_table(mem, [(0x3000, 32, I, 0)] + [(0x9000, 1, N, 0)] * 7)
    chain = DescriptorChain(mem, TABLE, 8, 0)
    assert len(walk(chain)) == 3
    assert chain.end_reason == "loop"


def test_split_chain_indirect_warnings_and_strict_mode(mem):
    split_table(mem, [(0x5000, 4, I, 0)], at=0x3000)                # nested indirect
    split_table(mem, [(0x3000, 16, I | N, 1), (0, 0, 0, 0)])         # indirect with NEXT
    chain = DescriptorChain(mem, TABLE, 2, 0)
    assert walk(chain) == [(0x5000, 4)]
    assert [k for k, _, _ in chain.warnings] == ["indirect_with_next", "nested_indirect"]
    assert chain.warnings[0] == ("indirect_with_next", "Indirect descriptor with NEXT set",
                                 {"addr": 0x3000})
    strict = DescriptorChain(mem, TABLE, 2, 0, strict=True)
    assert walk(strict) == []
    assert strict.error == ("indirect_with_next", "Indirect descriptor with NEXT set",
                            {"addr": 0x3000})


def test_split_chain_indirect_after_the_head(mem):
    split_table(mem, [(0x6000, 8, W, 0)], at=0x3000)
    split_table(mem, [(0x5000, 4, N, 1), (0x3000, 16, I, 0)])
    chain = DescriptorChain(mem, TABLE, 2, 0)
    assert walk(chain) == [(0x5000, 4), (0x3000, 16)]                # QEMU: a plain buffer
    assert chain.warnings == [("indirect_not_head", "Indirect descriptor after the head",
                               {"addr": 0x3000})]
    strict = DescriptorChain(mem, TABLE, 2, 0, strict=True)
    assert walk(strict) == [(0x5000, 4), (0x6000, 8)]                # the spec: followed
    assert strict.indirect and strict.error is None


# --------------------------------------------------------------------------- packed walks


def test_packed_chain_runs_through_consecutive_slots_and_wraps(mem):
    packed_table(mem, [(0x6000, 2, 9, 0), (0x7000, 3, 9, 0), (0x4000, 5, 4, N), (0x5000, 1, 5, N)])
    chain = PackedChain(mem, TABLE, 4, 2)
    assert walk(chain) == [(0x4000, 5), (0x5000, 1), (0x6000, 2)]
    assert chain.buffer_id == 4 and chain.error is None          # the first one's id


def test_packed_chain_of_next_descriptors_only_is_a_loop(mem):
    packed_table(mem, [(0x4000 + i, 1, i, N) for i in range(3)])
    chain = PackedChain(mem, TABLE, 3, 1)
    assert len(walk(chain)) == 4
    assert chain.error == ("loop", "Looped descriptor", {"count": 4})


def test_packed_chain_walks_a_whole_indirect_table_whatever_next_says(mem):
    packed_table(mem, [(0x5000, 4, 0, 0), (0x6000, 8, 0, W), (0x7000, 2, 0, W | N)], at=0x3000)
    packed_table(mem, [(0, 0, 0, 0), (0x3000, 48, 6, I)])
    chain = PackedChain(mem, TABLE, 2, 1)
    assert walk(chain) == [(0x5000, 4), (0x6000, 8), (0x7000, 2)]
    assert chain.indirect and chain.buffer_id == 6 and chain.error is None


def test_packed_chain_indirect_violations(mem):
    packed_table(mem, [(0x5000, 4, 0, I)], at=0x3000)
    packed_table(mem, [(0x3000, 16, 1, I)])
    chain = PackedChain(mem, TABLE, 1, 0)
    assert walk(chain) == [(0x5000, 4)]
    assert chain.warnings == [("nested_indirect", "Nested indirect descriptor", {"addr": 0x5000})]
    packed_table(mem, [(0x5000, 4, 1, N), (0x3000, 16, 1, I)])
    chain = PackedChain(mem, TABLE, 2, 0)
    assert walk(chain) == [(0x5000, 4), (0x3000, 16)]
    assert chain.warnings == [("indirect_not_head", "Indirect descriptor inside a chain",
                               {"addr": 0x3000})]
    strict = PackedChain(mem, TABLE, 2, 0, strict=True)
    assert walk(strict) == [(0x5000, 4)] and strict.end_reason == "indirect_not_head"


# --------------------------------------------------------------------------- mapping


def test_map_chain_puts_readable_pieces_first_and_counts_descriptors(mem):
    split_table(mem, [(0x5000, 4, N, 1), (0x6000, 8, N | W, 2), (0x7000, 2, W, 0)])
    m = map_chain(mem, DescriptorChain(mem, TABLE, 3, 0))
    assert (m.readable, m.writable, m.bounce, m.count) == ([(0x5000, 4)], [(0x6000, 8), (0x7000, 2)], [], 3)


def test_map_chain_refuses_readable_after_writable(mem):
    split_table(mem, [(0x5000, 4, N | W, 1), (0x6000, 8, 0, 0)])
    with pytest.raises(ChainError) as e:
        map_chain(mem, DescriptorChain(mem, TABLE, 2, 0))
    assert (e.value.kind, e.value.fields) == ("desc_order", {"addr": 0x6000})


def test_map_chain_splits_a_buffer_leaving_ram_and_bounces_the_rest(mem):
    split_table(mem, [(0x5000, 4, N, 1), (RAM - 2, 4, 0, 0)])
    m = map_chain(mem, DescriptorChain(mem, TABLE, 2, 0))
    assert m.readable == [(0x5000, 4), (RAM - 2, 2), (RAM, 2)]
    kind, index, mapping = m.bounce[0]
    assert (kind, index, bytes(mapping.buffer)) == ("r", 2, bytes(2))     # unassigned reads 0
    assert mem.bounce is mapping
    undo_map(mem, m.bounce)
    assert mem.bounce is None


def test_map_chain_with_a_second_non_ram_piece_undoes_the_first(mem, regs):
    split_table(mem, [(MMIO, 4, N | W, 1), (MMIO + 8, 4, W, 0)])
    with pytest.raises(ChainError) as e:
        map_chain(mem, DescriptorChain(mem, TABLE, 2, 0))
    assert e.value.kind == "bogus_buffer" and e.value.fields == {"addr": MMIO + 8, "len": 4}
    assert mem.bounce is None and regs.writes == 0             # nothing written back


def test_map_chain_after_a_walk_error_releases_the_bounce(mem):
    split_table(mem, [(MMIO, 4, N | W, 1), (0x5000, 4, W | N, 7)])
    chain = DescriptorChain(mem, TABLE, 2, 0)
    m = map_chain(mem, chain)
    assert chain.end_reason == "next_oob" and m.count == 2
    assert mem.bounce is None


def test_map_buffer_refuses_zero_length_and_too_many_pieces(mem):
    with pytest.raises(ChainError) as e:
        map_buffer(mem, [], 4, 0x5000, 0, False, [])
    assert (e.value.kind, e.value.fields) == ("zero_len", {"addr": 0x5000})
    sg = [(0, 1)] * 3
    with pytest.raises(ChainError) as e:
        map_buffer(mem, sg, 3, 0x5000, 4, True, [])
    assert e.value.kind == "too_many_sg"
    assert map_buffer(mem, sg, 4, 0x5000, 4, True, []) is None and sg[-1] == (0x5000, 4)


def test_map_buffer_wraps_at_the_top_of_the_address_space(mem):
    sg, bounce = [], []
    map_buffer(mem, sg, VIRTQUEUE_MAX_SIZE, 2**64 - 16, 32, False, bounce)
    assert sg == [(2**64 - 16, 16), (0, 16)] and bounce[0][:2] == ("r", 0)


# --------------------------------------------------------------------------- elements

PIECES = st.lists(st.integers(1, 24), min_size=1, max_size=6)


def _element(mem, sizes, writable):
    pieces, addr = [], 0x8000
    for n in sizes:
        pieces.append((addr, n))
        addr += n + 40                                   # gaps: never contiguous
    pieces = tuple(pieces)
    return Element(3, () if writable else pieces, pieces if writable else ())


@settings(max_examples=60, deadline=None)
@given(sizes=PIECES, offset=st.integers(0, 160), size=st.integers(0, 160))
def test_element_reads_like_one_buffer(sizes, offset, size):
    mm = MemoryMap()
    mm.add(RamRegion("ram", RAM), 0)
    mem = mm.guest
    elem = _element(mem, sizes, writable=False)
    whole = bytes(range(1, sum(sizes) + 1))
    pos = 0
    for addr, n in elem.readable:
        mem.write(addr, whole[pos:pos + n])
        pos += n
    assert elem.readable_len == len(whole) and elem.writable_len == 0
    assert elem.read_at(mem, offset, size) == whole[offset:offset + size]
    assert elem.read(mem) == whole
    assert elem.read(mem, size) == whole[:size]


@settings(max_examples=60, deadline=None)
@given(sizes=PIECES, offset=st.integers(0, 160), size=st.integers(0, 160))
def test_element_writes_like_one_buffer(sizes, offset, size):
    mm = MemoryMap()
    mm.add(RamRegion("ram", RAM), 0)
    mem = mm.guest
    elem = _element(mem, sizes, writable=True)
    total = elem.writable_len
    data = bytes((0x80 + i) & 0xFF for i in range(size))
    done = elem.write_at(mem, offset, data)
    assert done == max(0, min(size, total - offset))
    want = bytearray(total)
    want[offset:offset + done] = data[:done]
    got = b"".join(mem.read(a, n) for a, n in elem.writable)
    assert got == bytes(want[:total])
    assert mem.read(elem.writable[-1][0] + elem.writable[-1][1], 8) == bytes(8)   # nothing past
    assert Element(0, (), elem.writable).write(mem, data) == min(size, total)


def test_element_reads_a_bounced_piece_as_it_was_at_pop(mem, regs):
    regs.bytes[:4] = b"abcd"
    mem.write(0x5000, b"1234")
    split_table(mem, [(0x5000, 4, N, 1), (MMIO, 4, 0, 0)])
    m = map_chain(mem, DescriptorChain(mem, TABLE, 2, 0))
    elem = Element(0, tuple(m.readable), (), 1, m.bounce[0])
    regs.bytes[:4] = b"WXYZ"                                 # changed after the pop
    assert elem.read(mem) == b"1234abcd"
    assert elem.read_at(mem, 2, 4) == b"34ab" and elem.read_at(mem, 5, 9) == b"bcd"


def test_element_writes_a_bounced_piece_at_unmap_as_far_as_the_used_length(mem, regs):
    mem.write(0x5000, bytes(4))
    split_table(mem, [(0x5000, 4, N | W, 1), (MMIO, 4, W, 0)])
    m = map_chain(mem, DescriptorChain(mem, TABLE, 2, 0))
    elem = Element(0, (), tuple(m.writable), 1, m.bounce[0])
    assert elem.write(mem, b"ABCDEFGH") == 8
    assert mem.read(0x5000, 4) == b"ABCD" and regs.writes == 0      # the bounce holds the rest
    elem.unmap(mem, 6)                                               # used length 6: 2 of 4
    assert bytes(regs.bytes[:4]) == b"EF\0\0" and mem.bounce is None


@pytest.mark.parametrize("length", [0, 3, 4])
def test_element_unmap_writes_nothing_when_the_used_length_stops_before_the_bounce(mem, regs, length):
    split_table(mem, [(0x5000, 4, N | W, 1), (MMIO, 4, W, 0)])
    m = map_chain(mem, DescriptorChain(mem, TABLE, 2, 0))
    elem = Element(0, (), tuple(m.writable), 1, m.bounce[0])
    elem.write(mem, b"ABCDEFGH")
    elem.unmap(mem, length)
    assert regs.writes == 0 and mem.bounce is None


def test_element_read_of_a_bounced_writable_piece_is_never_taken_from_the_bounce(mem, regs):
    mem.write(0x5000, b"1234")
    split_table(mem, [(0x5000, 4, N, 1), (MMIO, 4, W, 0)])
    m = map_chain(mem, DescriptorChain(mem, TABLE, 2, 0))
    elem = Element(0, tuple(m.readable), tuple(m.writable), 1, m.bounce[0])
    m.bounce[0][2].buffer[:] = b"zzzz"
    assert elem.read(mem) == b"1234"
    assert elem.write_at(mem, 0, b"q") == 1 and bytes(m.bounce[0][2].buffer[:1]) == b"q"
    elem.unmap(mem, 1)
    assert bytes(regs.bytes[:1]) == b"q"


def test_element_unmap_of_a_bounced_readable_piece_writes_nothing(mem, regs):
    regs.bytes[:4] = b"abcd"
    split_table(mem, [(MMIO, 4, 0, 0)])
    m = map_chain(mem, DescriptorChain(mem, TABLE, 1, 0))
    elem = Element(0, tuple(m.readable), (), 1, m.bounce[0])
    elem.unmap(mem, 4)
    assert regs.writes == 0 and mem.bounce is None


def test_element_without_bounce_unmaps_nothing(mem):
    Element(0, ((0x5000, 4),), ()).unmap(mem, 4)
    assert mem.bounce is None


def test_element_write_with_a_bounced_readable_piece_goes_to_memory(mem, regs):
    regs.bytes[:4] = b"abcd"
    split_table(mem, [(MMIO, 4, N, 1), (0x6000, 4, W, 0)])
    m = map_chain(mem, DescriptorChain(mem, TABLE, 2, 0))
    elem = Element(0, tuple(m.readable), tuple(m.writable), 1, m.bounce[0])
    assert elem.write(mem, b"WXYZ") == 4
    assert mem.read(0x6000, 4) == b"WXYZ" and bytes(m.bounce[0][2].buffer) == b"abcd"


def test_element_writes_into_the_middle_of_a_bounced_piece(mem, regs):
    split_table(mem, [(0x5000, 4, N | W, 1), (MMIO, 4, W, 0)])
    m = map_chain(mem, DescriptorChain(mem, TABLE, 2, 0))
    elem = Element(0, (), tuple(m.writable), 1, m.bounce[0])
    elem.write_at(mem, 0, b"0123ABCD")
    assert elem.write_at(mem, 5, b"x") == 1
    elem.unmap(mem, 8)
    assert bytes(regs.bytes[:4]) == b"AxCD" and mem.read(0x5000, 4) == b"0123"


def test_detaching_an_element_writes_nothing_of_its_bounce_back(mem, regs):
    """QEMU virtqueue_detach_element with len 0: the device's bytes in the bounce
    buffer are dropped."""
    from uvirt.testing.mock_driver import MockSplitQueue
    from uvirt.virtio.queue import SplitQueue

    drv = MockSplitQueue(mem, 0x40000, 4, layout="modern")
    q = SplitQueue(mem, 4)
    drv.configure(q)
    drv.write_desc(0, MMIO, 4, W, 0)
    drv.publish(0)
    elem = q.pop()
    elem.write(mem, b"abcd")
    q.detach(elem)
    assert regs.writes == 0 and q.inuse == 0 and mem.bounce is None


def test_chain_error_reads_as_qemus_message():
    e = ChainError("loop", "Looped descriptor", count=3)
    assert (str(e), e.kind, e.reason) == ("Looped descriptor", "loop", "Looped descriptor")


def test_a_packed_push_writes_the_bounced_piece_back(mem, regs):
    from uvirt.testing.mock_driver import MockPackedQueue
    from uvirt.virtio.packed import PackedQueue

    drv = MockPackedQueue(mem, 0x40000, 4)
    q = PackedQueue(mem, 4)
    drv.configure(q)
    drv.write_desc(0, MMIO, 4, id=2, flags=0x80 | W)
    elem = q.pop()
    elem.write(mem, b"wxyz")
    assert regs.writes == 0
    q.push(elem, 3)
    assert bytes(regs.bytes[:4]) == b"wxy\0" and mem.bounce is None
