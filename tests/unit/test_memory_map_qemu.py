"""The pure memory map as QEMU 7.2's softmmu/memory.c renders it, without a CPU.

``render_memory_region``/``generate_memory_topology``: the highest priority wins an
overlap, among equal priorities the subregion added last; a container without its own
ops is transparent in its gaps and competes with its siblings as a whole;
``memory_region_access_valid`` and ``access_with_adjusted_size`` decide what a device
sees; unassigned memory reads 0 and ports read all ones.  The flattened view is
checked against a per-address reference model over random placements (Hypothesis).
"""

import mmap
import os

import pytest
from hypothesis import given, settings, strategies as st

from uvirt.board.dma import DeviceWork, ReentrancyGuard
from uvirt.board.memory.regions import (AddressSpace, Container, HostBuffer, IoSpace, MemoryMap,
                                        MmioRegion, PAGE_SIZE, RamRegion)
from uvirt.errors import MemoryMapError


class Log:
    """A device that answers ``value`` (wider than any access) and logs every call."""

    def __init__(self, value=0x8877_6655_4433_2211):
        self.value = value
        self.log = []

    def read(self, offset, size):
        self.log.append(("r", offset, size))
        return self.value

    def write(self, offset, size, value):
        self.log.append(("w", offset, size, value))


def winner(space, addr):
    pc = space.lookup(addr)
    return None if pc is None else (pc.region.name, pc.offset + addr - pc.start)


# --------------------------------------------------------------------------- regions


@pytest.mark.parametrize("what,make", [
    ("region", lambda size: RamRegion("r", size)), ("region", lambda size: MmioRegion("r", size, Log())),
    ("container", lambda size: Container("r", size)), ("host buffer", lambda size: HostBuffer(size, name="r")),
])
def test_sizes_must_be_positive_and_one_byte_is_enough(what, make):
    assert make(1).size == 1
    with pytest.raises(MemoryMapError, match=f"^{what} r: size 0x0 must be positive"):
        make(0)
    with pytest.raises(MemoryMapError, match="must be positive"):
        make(-16)


def test_ram_region_views_its_buffer_at_an_offset_little_endian():
    buf = HostBuffer(0x2000)
    assert buf.name == "anon" and RamRegion("guest-ram", 0x1000).buffer.name == "guest-ram"
    ram = RamRegion("win", 0x1000, buf, buffer_offset=0x800)
    ram.write(0x10, 4, 0x1_4433_2211)
    assert bytes(buf.view[0x810:0x815]) == b"\x11\x22\x33\x44\x00"
    assert ram.read(0x10, 2) == 0x2211 and ram.read(0x11, 8) == 0x443322
    with pytest.raises(MemoryMapError, match=r"0x1800\+0x1000 exceeds its buffer of 0x2000"):
        RamRegion("too-far", 0x1000, buf, buffer_offset=0x1800)
    RamRegion("fits", 0x800, buf, buffer_offset=0x1800)
    rom = RamRegion("rom", 0x1000, buf, readonly=True)
    rom.write(0x810, 1, 0xFF)                                 # ROM: the store is dropped
    assert rom.read(0x810, 1) == 0x11


def test_host_buffer_from_a_file_is_shared_unless_asked_private(tmp_path):
    path = tmp_path / "shm"
    path.write_bytes(bytes(0x3000))
    shared = HostBuffer.from_file(str(path), 0x1000)
    private = HostBuffer.from_file(str(path), 0x1000, shared=False)
    assert shared.name == str(path)
    shared.view[0:2] = b"sh"
    private.view[2:4] = b"pv"
    fd = os.open(path, os.O_RDWR)
    try:
        at_page = HostBuffer(0x1000, fd=fd, offset=mmap.PAGESIZE)      # shared by default
        at_page.view[0:2] = b"p1"
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert data[0:4] == b"sh\x00\x00" and data[mmap.PAGESIZE:mmap.PAGESIZE + 2] == b"p1"
    for b in (shared, private, at_page):
        b.close()


# --------------------------------------------------------------------------- access rules


def test_default_mmio_region_takes_eight_bytes_as_two_dword_accesses():
    """MemoryRegionOps without .impl: max_access_size 4, so an 8-byte access is split."""
    dev = Log()
    r = MmioRegion("r", 0x10, dev)
    assert r.read(8, 8) == 0x4433_2211_4433_2211
    r.write(0, 8, 0x1122_3344_5566_7788)
    assert dev.log == [("r", 8, 4), ("r", 12, 4), ("w", 0, 4, 0x5566_7788), ("w", 4, 4, 0x1122_3344)]


def test_valid_accesses_reach_the_device_masked_to_their_size():
    dev = Log()
    r = MmioRegion("r", 0x10, dev, valid_sizes=(1, 2, 4))
    assert (r.read(4, 4), r.read(2, 2), r.read(3, 1)) == (0x4433_2211, 0x2211, 0x11)
    r.write(4, 2, 0xABCDEF)
    assert dev.log[-1] == ("w", 4, 2, 0xCDEF)


def test_byte_lanes_of_a_split_write_and_read():
    dev = Log(0x1FF)
    r = MmioRegion("r", 0x10, dev, valid_sizes=(4,), impl_min=1, impl_max=1)
    r.write(8, 4, 0x4433_2211)
    assert dev.log == [("w", 8, 1, 0x11), ("w", 9, 1, 0x22), ("w", 10, 1, 0x33), ("w", 11, 1, 0x44)]
    assert r.read(4, 4) == 0xFFFF_FFFF


@pytest.mark.parametrize("offset,size,ok", [(2, 4, False), (4, 4, True), (1, 2, False), (6, 2, True),
                                            (3, 1, True), (4, 8, False)])
def test_misaligned_or_undeclared_accesses_are_guest_errors(offset, size, ok):
    """memory_region_access_valid: unaligned accesses fail unless .unaligned; a failed
    read returns 0 and a failed write is dropped, and both are reported."""
    errors = []
    space = MemoryMap()
    space.on_guest_error = lambda kind, detail: errors.append((kind, detail))
    dev = Log(0xFFFF_FFFF)
    space.add(MmioRegion("regs", 0x10, dev, valid_sizes=(1, 2, 4)), 0x9000)
    value = space.read(0x9000 + offset, size)
    space.write(0x9000 + offset, size, 0x5A)
    if ok:
        assert value == (1 << 8 * size) - 1 and not errors and len(dev.log) == 2
    else:
        assert value == 0 and dev.log == []
        assert errors == [("invalid_access", f"regs: {size}-byte read at +0x{offset:x} not accepted"),
                          ("invalid_access", f"regs: {size}-byte write at +0x{offset:x} not accepted")]


def test_unaligned_region_takes_misaligned_accesses_whole():
    dev = Log()
    r = MmioRegion("r", 0x10, dev, valid_sizes=(1, 2, 4), unaligned=True)
    assert r.read(1, 4) == 0x4433_2211 and r.read(3, 2) == 0x2211
    r.write(5, 4, 0x1_0000_0001)
    r.write(7, 8, 1)                                            # 8 is not declared
    assert dev.log == [("r", 1, 4), ("r", 3, 2), ("w", 5, 4, 1)]


def test_unaligned_region_splits_what_its_device_cannot_take():
    dev = Log(0xC1)
    r = MmioRegion("r", 0x10, dev, valid_sizes=(1, 2, 4), unaligned=True, impl_max=1)
    assert r.read(1, 2) == 0xC1C1 and r.read(3, 1) == 0xC1
    r.write(5, 2, 0xBBAA)
    assert dev.log == [("r", 1, 1), ("r", 2, 1), ("r", 3, 1), ("w", 5, 1, 0xAA), ("w", 6, 1, 0xBB)]


def test_a_region_reports_to_its_own_hook_before_the_space():
    mine, spaces = [], []
    r = MmioRegion("own", 4, Log(), valid_sizes=(4,))
    r.on_guest_error = lambda kind, detail: mine.append(detail)
    space = MemoryMap()
    space.on_guest_error = lambda kind, detail: spaces.append(detail)
    space.add(r, 0x100)
    space.read(0x100, 1)
    assert mine == ["own: 1-byte read at +0x0 not accepted"] and spaces == []


# --------------------------------------------------------------------------- re-entrancy


class Reenter:
    """A device whose register access makes a second access to its own region (a DMA
    aimed at its own BAR), and queues work to run after the outer access."""

    def __init__(self, work):
        self.region = None
        self.inner = []
        self.work = work
        self.ran = []

    def read(self, offset, size):
        if offset == 4:
            self.inner.append(self.region.read(0, 4))
            self.work.schedule(lambda: self.ran.append("after read"))
        return 0x1234

    def write(self, offset, size, value):
        if offset == 4:
            self.region.write(0, 4, value)
            self.work.schedule(lambda: self.ran.append("after write"))
        self.inner.append(("w", offset, value))


def test_reentrant_access_is_dropped_and_work_waits_for_the_outer_access():
    """QEMU's mem_reentrancy_guard in access_with_adjusted_size: an access the device
    makes to itself while inside one is blocked (reads 0); bottom halves run after."""
    work = DeviceWork()
    guard = ReentrancyGuard("dev", work)
    blocked = []
    guard.on_blocked = blocked.append
    dev = Reenter(work)
    r = dev.region = MmioRegion("dev-bar", 0x10, dev, valid_sizes=(4,))
    r.set_guard(guard)
    assert r.guard is guard
    assert r.read(4, 4) == 0x1234 and dev.inner == [0]
    assert dev.ran == ["after read"] and work.depth == 0 and not guard.engaged
    r.write(4, 4, 0x99)
    assert dev.inner == [0, ("w", 4, 0x99)] and dev.ran == ["after read", "after write"]
    assert blocked == ["Blocked re-entrant IO on MemoryRegion: dev at +0x0 (dev-bar, read)",
                       "Blocked re-entrant IO on MemoryRegion: dev at +0x0 (dev-bar, write)"]
    assert r.read(0, 4) == 0x1234 and r.read(0, 2) == 0       # 2 bytes: not valid here
    r.write(8, 4, 7)
    assert dev.inner[-1] == ("w", 8, 7) and work.depth == 0 and not guard.engaged


class Chain:
    """Device A's register access reaches device B (another region, its own guard)."""

    def __init__(self, work, other=None):
        self.work, self.other, self.region, self.ran = work, other, None, []

    def read(self, offset, size):
        if self.other is not None:
            self.work.schedule(lambda: self.ran.append(self.work.depth))
            self.other.region.read(0, 4)
            assert self.ran == []                       # still inside A: not yet
        return 1

    def write(self, offset, size, value):
        if self.other is not None:
            self.work.schedule(lambda: self.ran.append(("w", self.work.depth)))
            self.other.region.write(0, 4, value)
            assert self.ran == []                       # still inside A: not yet


def test_device_work_waits_for_every_nested_access_of_other_devices():
    work = DeviceWork()
    b = Chain(work)
    b.region = MmioRegion("b", 4, b, valid_sizes=(4,))
    b.region.set_guard(ReentrancyGuard("b", work))
    a = Chain(work, other=b)
    a.region = MmioRegion("a", 4, a, valid_sizes=(4,))
    a.region.set_guard(ReentrancyGuard("a", work))
    assert a.region.read(0, 4) == 1
    assert a.ran == [0] and work.depth == 0
    a.ran.clear()
    a.region.write(0, 4, 5)
    assert a.ran == [("w", 0)] and work.depth == 0
    b.region.write(0, 4, 6)                             # nothing queued: nothing runs
    assert a.ran == [("w", 0)] and work.depth == 0


def test_a_guarded_port_region_is_dispatched_through_its_guard():
    work = DeviceWork()
    dev = Reenter(work)
    r = dev.region = MmioRegion("dev-io", 0x10, dev, valid_sizes=(4,))
    io = IoSpace()
    io.add(r, 0x600)
    io.commit()
    r.set_guard(ReentrancyGuard("dev", work))
    io.commit()
    assert port_in(io, 0x604, 4) == 0x1234 and dev.inner == [0]
    assert io.read(0x604, 4) == 0x1234 and io.read(0x606, 2) == 0      # 2 bytes: not valid
    port_out(io, 0x608, 4, 5)
    io.write(0x60C, 4, 6)
    assert dev.inner[-2:] == [("w", 8, 5), ("w", 12, 6)]


# --------------------------------------------------------------------------- flattening


def test_placements_overlap_by_priority_then_order():
    mm = MemoryMap()
    low = mm.add(RamRegion("low", 0x4000), 0x1000, priority=-1)
    mid = mm.add(RamRegion("mid", 0x1000), 0x2000)
    mm.add(RamRegion("top", 0x100), 0x2800, priority=5)
    assert [winner(mm, a) for a in (0x1000, 0x2000, 0x2800, 0x2900, 0x3000, 0x4FFF, 0x5000)] == [
        ("low", 0), ("mid", 0), ("top", 0), ("mid", 0x900), ("low", 0x2000), ("low", 0x3FFF), None]
    assert mm.read(0x3004, 1) == 0 and low.end == 0x5000
    mid.remove()
    assert winner(mm, 0x2000) == ("low", 0x1000) and mid not in mm.placements
    mm.add(RamRegion("default", 0x100), 0x4000)                 # default priority 0 ...
    mm.add(RamRegion("explicit", 0x100), 0x4000, priority=0)    # ... so the later one wins
    assert winner(mm, 0x4000) == ("explicit", 0)


def test_a_lower_priority_region_shows_only_between_the_higher_ones():
    mm = MemoryMap()
    mm.add(RamRegion("a", 0x4), 0x0, priority=1)
    mm.add(RamRegion("b", 0x10), 0x20, priority=1)
    mm.add(RamRegion("c", 0x20), 0x5, priority=0)
    assert [(pc.start, pc.end, pc.region.name, pc.offset) for pc in mm.flatten()] == [
        (0x0, 0x4, "a", 0), (0x5, 0x20, "c", 0), (0x20, 0x30, "b", 0)]


def test_reenabling_or_moving_counts_as_placing_last_but_a_no_op_move_does_not():
    """A BAR whose decode is switched back on, or that moves, is deleted and added again
    (pci_update_mappings), so among equal priorities it is now the last added."""
    mm = MemoryMap()
    a = mm.add(MmioRegion("a", 0x1000, Log()), 0x10000)
    b = mm.add(MmioRegion("b", 0x1000, Log()), 0x10000)
    a.move(0x10000)
    assert winner(mm, 0x10000) == ("b", 0)
    a.set_enabled(False)
    a.set_enabled(False)
    assert winner(mm, 0x10000) == ("b", 0)
    a.set_enabled(True)
    assert winner(mm, 0x10000) == ("a", 0)
    b.set_enabled(True)                                       # already on: no change
    assert winner(mm, 0x10000) == ("a", 0)
    b.set_enabled(False)
    b.set_enabled(True)
    c = mm.add(MmioRegion("c", 0x1000, Log()), 0x10000, enabled=False)
    assert winner(mm, 0x10000) == ("b", 0)
    c.set_enabled(True)
    assert winner(mm, 0x10000) == ("c", 0)


def test_flatten_is_rebuilt_only_after_a_change():
    mm = MemoryMap()
    p = mm.add(RamRegion("r", 0x1000), 0)
    first = mm.flatten()
    gen = mm.generation
    assert mm.flatten() is first and mm.generation == gen
    p.move(0x1000)
    pieces = mm.flatten()
    assert mm.generation == gen + 1 and [(pc.start, pc.end) for pc in pieces] == [(0x1000, 0x2000)]


def test_background_fills_what_nothing_claims():
    bg = MmioRegion("bg", 0x100, Log())
    space = AddressSpace("s", 0x100, background=bg)
    space.add(RamRegion("r", 0x10), 0x20)
    pieces = [(pc.start, pc.end, pc.region.name, pc.offset) for pc in space.flatten()]
    assert pieces == [(0, 0x20, "bg", 0), (0x20, 0x30, "r", 0), (0x30, 0x100, "bg", 0x30)]
    assert space.read(0x40, 4) == 0x4433_2211 and space.name == "s"
    empty = AddressSpace("e", 0x10, background=bg)
    assert winner(empty, 0) == ("bg", 0)


def test_containers_are_transparent_and_compete_as_a_whole():
    mm = MemoryMap()
    mm.add(RamRegion("ram", 0x10000), 0)
    box = Container("box", 0x4000)
    box.add_subregion(0x1000, MmioRegion("inner-lo", 0x2000, Log()), priority=0)
    box.add_subregion(0x2000, MmioRegion("inner-hi", 0x1000, Log()), priority=1)
    box.add_subregion(0x2800, MmioRegion("inner-late", 0x800, Log()), priority=1)
    mm.add(box, 0x4000, priority=1)
    mm.add(MmioRegion("sibling", 0x1000, Log()), 0x5000, priority=0)
    assert [winner(mm, a) for a in (0x4000, 0x5000, 0x6000, 0x6800, 0x7000, 0x8000)] == [
        ("ram", 0x4000), ("inner-lo", 0), ("inner-hi", 0), ("inner-late", 0),
        ("ram", 0x7000), ("ram", 0x8000)]


def test_container_children_compete_by_priority_then_order_not_offset():
    box = Container("box", 0x100)
    wide, narrow, late = Log(1), Log(2), Log(3)
    box.add_subregion(0x20, MmioRegion("wide", 0x40, wide))
    box.add_subregion(0x10, MmioRegion("narrow", 0x20, narrow), priority=1)
    box.add_subregion(0x50, MmioRegion("late", 0x20, late), priority=-1)
    box.add_subregion(0x08, MmioRegion("later", 0x60, Log(4)), priority=-1)
    assert [box.read(o, 4) for o in (0x20, 0x30, 0x58, 0x64, 0x0C)] == [2, 1, 1, 4, 4]
    box.write(0x24, 4, 9)
    assert narrow.log[-1] == ("w", 0x14, 4, 9) and wide.log == [("r", 0x10, 4), ("r", 0x38, 4)]
    mm = MemoryMap()
    mm.add(box, 0)
    assert [winner(mm, a)[0] for a in (0x20, 0x30, 0x58, 0x64, 0x0C)] == [
        "narrow", "wide", "wide", "later", "later"]


def test_container_children_are_addressed_from_the_container():
    inner = Container("inner", 0x100)
    lo, hi = Log(1), Log(2)
    inner.add_subregion(0x10, MmioRegion("lo", 0x20, lo))
    inner.add_subregion(0x20, MmioRegion("hi", 0x10, hi), priority=1)
    assert (inner.read(0x10, 4), inner.read(0x20, 4), inner.read(0x2F, 1), inner.read(0x30, 4)) == (1, 2, 2, 0)
    inner.write(0x10, 1, 0x01)
    assert lo.log[-1] == ("w", 0x0, 1, 0x01)
    inner.write(0x14, 4, 0xAB)
    inner.write(0x24, 2, 0xCD)
    inner.write(0x30, 4, 0xEF)                                  # nobody there
    assert lo.log[-1] == ("w", 0x4, 4, 0xAB) and hi.log[-1] == ("w", 0x4, 2, 0xCD)
    assert inner.read(0xF, 1) == 0 and ("r", 0x0, 4) in lo.log
    outer = Container("outer", 0x200)
    outer.add_subregion(0x100, inner)
    mm = MemoryMap()
    mm.add(outer, 0x10000)
    assert winner(mm, 0x10110) == ("lo", 0) and winner(mm, 0x10121) == ("hi", 1)
    assert mm.read(0x10124, 4) == 2 and winner(mm, 0x1010F) is None


@pytest.mark.parametrize("offset,size,ok", [(0, 0x100, True), (0xF0, 0x10, True), (-1, 0x10, False),
                                            (0xF1, 0x10, False), (0, 0x101, False)])
def test_subregions_must_fit_their_container(offset, size, ok):
    box = Container("box", 0x100)
    if ok:
        box.add_subregion(offset, RamRegion("r", size))
        assert len(box.children) == 1
    else:
        with pytest.raises(MemoryMapError, match=f"box: subregion r at .*0x{size:x} exceeds its 0x100 bytes"):
            box.add_subregion(offset, RamRegion("r", size))


def test_a_placed_container_republishes_when_its_children_change():
    """ivshmem's BAR2: the RAM arrives after the BAR is mapped, and may go away."""
    io = IoSpace()
    errors = []
    io.on_guest_error = lambda kind, detail: errors.append(detail)
    box = Container("box", 0x10)
    early = MmioRegion("early", 4, Log(5), valid_sizes=(4,))
    box.add_subregion(0, early)
    io.add(box, 0x700)
    io.add(box, 0x800)                                          # one container, two places
    io.commit()
    late = MmioRegion("late", 4, Log(7), valid_sizes=(4,))
    box.add_subregion(8, late)
    assert io.read(0x708, 4) == 7 and io.read(0x808, 4) == 7
    io.read(0x709, 2)                                           # reported through the space
    early.read(0, 1)
    assert errors == ["late: 2-byte read at +0x1 not accepted", "early: 1-byte read at +0x0 not accepted"]
    box.remove_subregion(late)
    assert io.read(0x708, 4) == 0xFFFF_FFFF and io.read(0x700, 4) == 5
    assert box.children == [(0, early, 0, 1)]


def test_a_space_clips_what_overhangs_its_end():
    io = IoSpace()
    box = Container("box", 0x20)
    box.add_subregion(0x8, MmioRegion("tail", 0x10, Log(3), valid_sizes=(1,)))
    io.add(box, 0xFFF0)
    io.commit()
    assert [(pc.start, pc.end, pc.offset) for pc in io.flatten()] == [(0xFFF8, 0x10000, 0)]
    assert io.read(0xFFFF, 1) == 3


# -- the reference model: per address, the first enabled placement by (priority, order)
# descending that has something there; a container looks among its own children alike.

def ref_at(children, addr):
    """children: [(start, region, priority, order)] -> (leaf name, offset) or None."""
    if addr >= SIZE:
        return None
    for start, region, _prio, _order in sorted(children, key=lambda c: (c[2], c[3]), reverse=True):
        if start <= addr < start + region.size:
            if isinstance(region, Container):
                hit = ref_at([(o, r, p, s) for o, r, p, s in region.children], addr - start)
                if hit is not None:
                    return hit
                continue
            return region.name, addr - start
    return None


SIZE = 0x40
leaf = st.tuples(st.integers(0, SIZE + 4), st.integers(1, 24), st.integers(-2, 2), st.booleans())


@st.composite
def layouts(draw):
    n = draw(st.integers(1, 7))
    out = []
    for i in range(n):
        addr, size, prio, enabled = draw(leaf)
        kind = draw(st.sampled_from(["ram", "mmio", "box"]))
        out.append((kind, addr, size, prio, enabled, draw(st.lists(leaf, max_size=3)),
                    draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, SIZE)), max_size=2))))
    return out


@settings(max_examples=80, deadline=None, derandomize=True)
@given(layouts())
def test_flatten_matches_the_reference_rendering(layout):
    space = AddressSpace("s", SIZE)
    placements, model = [], []
    for i, (kind, addr, size, prio, enabled, kids, _moves) in enumerate(layout):
        if kind == "box":
            region = Container(f"box{i}", size)
            for j, (off, ksize, kprio, _) in enumerate(kids):
                if off + ksize <= size:
                    region.add_subregion(off, RamRegion(f"k{i}.{j}", ksize), kprio)
        elif kind == "ram":
            region = RamRegion(f"r{i}", size)
        else:
            region = MmioRegion(f"m{i}", size, Log())
        placements.append(space.add(region, addr, prio, enabled=enabled))
    for _kind, *_rest, moves in layout:
        for target, new_addr in moves:
            placements[target].move(new_addr)
    for p in placements[::3]:
        p.set_enabled(not p.enabled)
    pieces = space.flatten()
    assert all(a.end <= b.start for a, b in zip(pieces, pieces[1:]))
    assert all(pc.start < pc.end for pc in pieces) and all(0 <= pc.start and pc.end <= SIZE for pc in pieces)
    live = [(p.addr, p.region, p.priority, p.seq) for p in space.placements if p.enabled]
    for addr in range(SIZE + 2):
        assert winner(space, addr) == ref_at(live, addr), hex(addr)


# --------------------------------------------------------------------------- port space


def port_in(io, port, size):
    """What the CPU's IN hook does with the port table (uvirt/cpu: hook_in)."""
    region, base, dev_read, _w, direct, amask = io.table.get(port, io.unassigned_entry)
    off = port - base
    if size in direct and not off & (size - 1) & amask:
        return dev_read(off, size) & ((1 << 8 * size) - 1)
    return region.read(off, size)


def port_out(io, port, size, value):
    region, base, _r, dev_write, direct, amask = io.table.get(port, io.unassigned_entry)
    off = port - base
    if size in direct and not off & (size - 1) & amask:
        dev_write(off, size, value & ((1 << 8 * size) - 1))
    else:
        region.write(off, size, value)


def test_port_table_dispatch_agrees_with_the_access_rules():
    io = IoSpace()
    strict, loose, split = Log(0xA1A2A3A4), Log(0xB1B2B3B4), Log(0xC1)
    io.add(MmioRegion("strict", 8, strict, valid_sizes=(1, 2, 4)), 0x100)
    io.add(MmioRegion("loose", 8, loose, valid_sizes=(1, 2, 4), unaligned=True), 0x200)
    io.add(MmioRegion("split", 8, split, valid_sizes=(2, 4), impl_max=1), 0x300)
    io.add(MmioRegion("cover", 2, Log(0xD1), valid_sizes=(1, 2, 4)), 0x300, priority=1)
    io.commit()
    cases = [(p, s) for p in (0x100, 0x101, 0x102, 0x104, 0x200, 0x201, 0x203, 0x302, 0x303,
                              0x304, 0x0FF, 0x2FF) for s in (1, 2, 4)]
    got = [port_in(io, p, s) for p, s in cases]
    assert got == [io.read(p, s) for p, s in cases]
    assert dict(zip(cases, got))[(0x101, 2)] == 0                     # misaligned: invalid
    assert dict(zip(cases, got))[(0x201, 4)] == 0xB1B2B3B4
    assert dict(zip(cases, got))[(0x304, 4)] == 0xC1C1C1C1            # split in bytes
    assert dict(zip(cases, got))[(0x0FF, 2)] == 0                    # unassigned, misaligned
    assert dict(zip(cases, got))[(0x0FF, 1)] == 0xFF
    split.log.clear()
    port_out(io, 0x304, 2, 0x1_BBAA)
    port_out(io, 0x303, 1, 0x5)                                     # 1 byte: not valid there
    io.write(0x302, 2, 0xDDCC)
    assert split.log == [("w", 4, 1, 0xAA), ("w", 5, 1, 0xBB), ("w", 2, 1, 0xCC), ("w", 3, 1, 0xDD)]
    port_out(io, 0x1FFF0, 1, 0)                                     # nobody: dropped
    io.write(0x1FF0, 4, 0)


def test_a_port_region_covered_at_its_start_keeps_its_own_offsets():
    io = IoSpace()
    dev = Log()
    io.add(MmioRegion("dev", 8, dev, valid_sizes=(1, 2, 4)), 0x400)
    io.add(MmioRegion("over", 2, Log(), valid_sizes=(1, 2, 4)), 0x400, priority=1)
    io.commit()
    port_in(io, 0x404, 4)
    port_out(io, 0x406, 2, 1)
    io.read(0x402, 2)
    assert dev.log == [("r", 4, 4), ("w", 6, 2, 1), ("r", 2, 2)]


def test_ram_in_the_port_space_is_read_through_its_region():
    io = IoSpace()
    ram = RamRegion("scratch", 4)
    ram.write(0, 4, 0x4433_2211)
    io.add(ram, 0x90)
    io.commit()
    assert io.read(0x91, 2) == 0x3322 and port_in(io, 0x90, 4) == 0x4433_2211


def test_port_entries_follow_a_device_swap():
    io = IoSpace()
    region = MmioRegion("r", 4, Log(1), valid_sizes=(1, 2, 4))
    io.add(region, 0x510)
    io.commit()
    assert port_in(io, 0x510, 4) == 1
    region.device = Log(2)
    io.commit()
    assert port_in(io, 0x510, 4) == 2


def test_batch_defers_commits_to_the_outermost_end():
    io = IoSpace()
    with io.batch():
        with io.batch() as same:
            assert same is io
            io.add(MmioRegion("r", 4, Log(9), valid_sizes=(4,)), 0x80)
            io.commit()
        io.commit()
        assert port_in(io, 0x80, 4) == 0xFFFF_FFFF
    assert port_in(io, 0x80, 4) == 9
    with io.batch():
        pass                                                    # nothing pending: no commit
    assert port_in(io, 0x80, 4) == 9


# --------------------------------------------------------------------------- RAM lookup


def test_ram_lookup_stops_at_the_end_of_a_ram_piece():
    mm = MemoryMap()
    mm.add(RamRegion("ram", 0x1000), 0)
    mm.add(MmioRegion("regs", 0x1000, Log()), 0x1000)
    mm.commit()
    assert mm.ram_piece(0x0FFF).region.name == "ram"
    assert mm.ram_piece(0x1000) is None and mm.ram_piece(0) is not None
    assert mm.guest.is_ram(0, 0x1000) and not mm.guest.is_ram(0x800, 0x1000)


# --------------------------------------------------------------------------- device DMA


def dma_map():
    """RAM split around a hole, a second RAM region right after, MMIO, ROM, unassigned."""
    mm = MemoryMap()
    lo = RamRegion("lo", 0x3000)
    for i in range(0x3000):
        lo.buffer.view[i] = i & 0xFF
    mm.add(lo, 0)
    mm.add(MmioRegion("hole", 0x100, Log(0xEE), valid_sizes=(1, 2, 4)), 0x1000, priority=1)
    mm.add(RamRegion("hi", 0x1000), 0x3000)
    regs = Log(0x8877_6655_4433_2211)
    mm.add(MmioRegion("regs", 0x100, regs, valid_sizes=(1, 2, 4, 8)), 0x5000)
    byte = Log(0xA5)
    mm.add(MmioRegion("bytes", 0x10, byte, valid_sizes=(1,), unaligned=True), 0x5100)
    rom = RamRegion("rom", 0x1000, readonly=True)
    rom.buffer.view[0:4] = b"ROM!"
    mm.add(rom, 0x8000)
    mm.commit()
    return mm, regs, byte


def test_dma_reads_and_writes_follow_address_space_rw():
    """flatview_read/write_continue: RAM copied, MMIO in memory_access_size pieces
    (largest valid size, bounded by alignment), unassigned reads 0 and drops writes."""
    mm, regs, byte = dma_map()
    g = mm.guest
    assert g.read(0x0FFE, 4) == b"\xfe\xff\xee\x00"                 # RAM then the hole
    assert g.read(0x1100, 2) == b"\x00\x01"                          # lo again, its own offset
    assert g.read(0x2FFF, 2) == b"\xff\x00"                          # lo then hi
    assert g.read(0x4FFE, 4) == b"\x00\x00\x11\x22"                  # unassigned then regs
    regs.log.clear()
    assert g.read(0x5002, 14) == bytes.fromhex("1122 11223344 1122334411223344")
    assert [e[1:] for e in regs.log] == [(2, 2), (4, 4), (8, 4), (12, 4)]   # 8: split by impl
    assert g.read(0x5101, 3) == b"\xa5\xa5\xa5" and [e[2] for e in byte.log] == [1, 1, 1]
    g.write(0x2FFE, b"abcd")
    assert g.read(0x2FFE, 4) == b"abcd"
    g.write(0x8001, b"xy")                                           # ROM: dropped
    assert g.read(0x8000, 4) == b"ROM!"
    g.write(0x7FFE, b"zzzz")
    assert g.read(0x7FFC, 8) == b"\x00\x00\x00\x00ROM!"
    regs.log.clear()
    g.write(0x5006, b"\x01\x02\x03\x04\x05\x06")
    assert [e[1:] for e in regs.log] == [(6, 2, 0x0201), (8, 4, 0x06050403)]
    assert g.read(0xFFFF_FFFE, 4) == bytes(4) and g.read(0x1_0000_0000, 2) == bytes(2)
    g.write(0xFFFF_FFFF, b"\x01\x02")                                # hwaddr: no wrap at 4 GiB
    assert g.read(0, 1) == b"\x00"
    assert g.read(0x10, 0) == b""
    with pytest.raises(Exception, match="negative size"):
        g.read(0x10, -1)


def test_dma_accessors_are_little_endian_and_masked():
    mm, regs, byte = dma_map()
    g = mm.guest
    g.write_u8(0x3000, 0x1FF)
    g.write_u16(0x3002, 0x1_BBAA)
    g.write_u32(0x3004, 0x1_4433_2211)
    g.write_u64(0x3008, 0x1_8877_6655_4433_2211)
    assert g.read(0x3000, 16) == bytes.fromhex("ff00aabb11223344 1122334455667788")
    assert (g.read_u8(0x3003), g.read_u16(0x3002), g.read_u32(0x3004), g.read_u64(0x3008)) == (
        0xBB, 0xBBAA, 0x4433_2211, 0x8877_6655_4433_2211)


def test_dma_writes_to_ram_are_logged_for_snapshots():
    mm, regs, byte = dma_map()
    seen = []
    mm.dirty_log = lambda addr, size: seen.append((addr, size))
    mm.guest.write(0x3010, b"12")
    mm.guest.write(0x2FFF, b"34")                                    # slow path: two pieces
    mm.guest.write(0x5000, b"5678")                                  # MMIO: not RAM
    mm.guest.write(0x8000, b"9")                                     # ROM: dropped
    assert seen == [(0x3010, 2), (0x2FFF, 1), (0x3000, 1)]


def test_map_is_direct_for_ram_and_bounces_one_page_otherwise():
    """address_space_map: RAM as far as the same region continues; anything else through
    the single bounce buffer, at most a page and to the end of the region."""
    mm, regs, byte = dma_map()
    g = mm.guest
    m = g.map(0x0800, 0x10000, False)
    assert not m.bounced and (m.addr, m.length) == (0x800, 0x800)    # up to the hole
    assert g.map(0x1100, 0x10000, True).length == 0x1F00             # lo to its end, not into hi
    assert g.map(0x8000, 0x10, False).length == 0x10                 # ROM read: direct
    b = g.map(0x8000, 0x2000, True)                                  # ROM write: bounced
    assert b.bounced and b.length == 0x1000 and b.is_write
    assert g.map(0x3000, 0, False) is None
    assert g.map(0x5000, 4, False) is None                           # the bounce is taken
    assert g.map(0x3000, 0x10, False).length == 0x10                 # RAM still maps
    b.buffer[0:2] = b"no"
    g.unmap(b, 2)
    assert g.bounce is None and g.read(0x8000, 4) == b"ROM!"
    r = g.map(0x5004, 0x1000, False)
    assert r.bounced and r.length == 0xFC and r.buffer[:4] == bytes.fromhex("11223344")
    g.unmap(m, 0x10)                                                 # not the bounce: no-op
    assert g.bounce is r
    g.unmap(r, 4)                                                    # a read bounce: not written back
    u = g.map(0x4800, 0x2000, True)
    assert u.bounced and u.length == 0x800                           # unassigned up to regs
    u.buffer[:] = b"\x01" * 0x800
    g.unmap(u, 0x800)
    assert g.read(0x4800, 4) == bytes(4)
    w = g.map(0x5000, 8, True)
    w.buffer[:] = bytes.fromhex("0102030405060708")
    regs.log.clear()
    g.unmap(w, 8)
    assert regs.log == [("w", 0, 4, 0x0403_0201), ("w", 4, 4, 0x0807_0605)]


def test_cache_covers_what_address_space_cache_init_would():
    mm, regs, byte = dma_map()
    g = mm.guest
    assert g.cache_len(0x2FF0, 0x100, False) == 0x10                 # lo ends: hi is another region
    assert g.cache_len(0x0FF0, 0x100, True) == 0x10                  # the hole
    assert g.cache_len(0x5010, 0x1000, False) == 0xF0                # MMIO: to its end
    assert g.cache_len(0x8000, 0x2000, True) == 0x1000               # ROM for writing: to its end
    assert g.cache_len(0x8000, 0x10, False) == 0x10
    assert g.cache_len(0x6000, 0x10_0000, False) == 0x10_0000        # unassigned: all of it


def test_ram_windows_last_until_the_map_changes():
    mm, regs, byte = dma_map()
    g = mm.guest
    win = g.ram_window(0x3010, 0x20)
    assert win is not None and win.valid() and (win.lo, win.hi) == (0x3000, 0x4000)
    win.view[0x3010 - win.delta] = 0x77
    assert g.read_u8(0x3010) == 0x77
    for addr, size in ((0x3FF0, 0x20), (0x5000, 4), (0x8000, 4), (0x3000, 0), (0x4800, 4)):
        assert g.ram_window(addr, size) is None
    mm.add(RamRegion("late", 0x1000), 0x9000)
    assert not win.valid()
    mm.flatten()
    assert not win.valid()


def test_is_ram_for_loaders():
    mm, regs, byte = dma_map()
    g = mm.guest
    assert g.is_ram(0x2000, 0x2000) and g.is_ram(0x8000, 0x1000)
    assert not g.is_ram(0x0F00, 0x200) and not g.is_ram(0x3F00, 0x200)
    assert not g.is_ram(-1, 2) and not g.is_ram(0, -1) and not g.is_ram(0xFFFF_F000, 0x2000)
    assert g.is_ram(0x100, 0)


# --------------------------------------------------------------------------- the CPU's side of the map


class Backend:
    """A MemoryBackend that keeps what the map hands it (the CPU's mappings)."""

    def __init__(self):
        self.published, self.invalidated = [], []

    def publish(self, pieces, changed=None):
        self.published.append([(pc.start, pc.end, pc.region.name) for pc in pieces])

    def invalidate_code(self, addr, size):
        self.invalidated.append((addr, size))


def test_each_commit_publishes_the_flattened_view_once_and_batches_publish_once():
    mm = MemoryMap()
    assert mm.commits == 0                                    # and no CPU attached:
    assert (mm.backend, mm.cpu_thread, mm.post_to_cpu, mm.replay, mm.tracer) == (None,) * 5
    backend = mm.backend = Backend()
    with mm.batch():
        pass                                                  # nothing pending: no commit
    assert mm.commits == 0 and backend.published == []
    mm.add(RamRegion("ram", 0x2000), 0x1000)
    mm.commit()
    with mm.batch():
        mm.add(MmioRegion("regs", 0x1000, Log()), 0x3000)
        mm.commit()
        mm.add(RamRegion("hi", 0x1000), 0x8000)
        mm.commit()
    assert mm.commits == 2
    assert backend.published == [[(0x1000, 0x3000, "ram")],
                                 [(0x1000, 0x3000, "ram"), (0x3000, 0x4000, "regs"), (0x8000, 0x9000, "hi")]]


def test_host_writes_invalidate_translated_code_and_are_logged_for_snapshots():
    """A device's DMA into RAM is a host write: the CPU must drop code translated from
    it (QEMU's tb_invalidate_phys_range via address_space_write), and a held snapshot
    must learn the page is dirty."""
    mm = MemoryMap()
    mm.add(RamRegion("ram", 0x4000), 0)
    mm.commit()
    mm.guest.write(0x1234, b"\x90" * 3)                         # no backend: nothing to tell
    backend = mm.backend = Backend()
    logged = []
    mm.dirty_log = lambda addr, size: logged.append((addr, size))
    mm.guest.write(0x2000, b"\xcc")
    mm.guest.write(0x2100, b"")                                 # nothing written: nothing dropped
    mm.invalidate_code(0x3000, 0x10)
    assert backend.invalidated == [(0x2000, 1), (0x3000, 0x10)]
    assert logged == [(0x2000, 1), (0x2100, 0), (0x3000, 0x10)]


def test_an_unclaimed_page_touched_by_the_cpu_reads_zero_at_the_lowest_priority():
    """The CPU's unmapped-access hook backs the touched page with QEMU's unassigned
    memory (reads 0, writes dropped, any size at any alignment, no guest error), once per
    page, beneath anything a device places later."""
    mm = MemoryMap()
    errors = []
    mm.on_guest_error = lambda kind, detail: errors.append(kind)
    backend = mm.backend = Backend()
    mm.map_unassigned_page(0x5_6789)
    mm.map_unassigned_page(0x5_6000)                            # the same page again
    mm.map_unassigned_page(0x5_6FFF)
    assert mm.commits == 1 and backend.published == [[(0x5_6000, 0x5_7000, "unassigned")]]
    assert [(p.addr, p.region.size) for p in mm.placements] == [(0x5_6000, PAGE_SIZE)]
    for size in (1, 2, 4, 8):
        for off in (0, 1, 3, 0xFF9):
            assert mm.read(0x5_6000 + off, size) == 0
            mm.write(0x5_6000 + off, size, (1 << 8 * size) - 1)
    assert errors == []
    assert mm.guest.read(0x5_6FFE, 2) == b"\0\0"
    # anything placed later wins, whatever its (negative) priority
    mm.add(RamRegion("late", PAGE_SIZE), 0x5_6000, priority=-(1 << 29))
    mm.commit()
    assert winner(mm, 0x5_6010) == ("late", 0x10)
    mm.map_unassigned_page(0x9_0000)
    assert winner(mm, 0x9_0FFF) == ("unassigned", 0xFFF) and winner(mm, 0x5_6000) == ("late", 0)


def test_port_entries_follow_a_swapped_accessor_of_a_non_device_region():
    """An entry depends on what its region dispatches to now: a tracing proxy put on a
    RAM region's read or write (alone) is what the IN/OUT hooks call after the commit."""
    io = IoSpace()
    ram = RamRegion("scratch", 4)
    ram.write(0, 4, 0x4433_2211)
    io.add(ram, 0x90)
    io.commit()
    first = io.table[0x90]
    assert all(io.table[p] is first for p in range(0x90, 0x94))  # one entry per placed region
    io.add(MmioRegion("other", 4, Log(), valid_sizes=(1, 2, 4)), 0x200)
    io.commit()
    assert io.table[0x90] is first                                # an unrelated change keeps it
    seen = []
    plain_read, plain_write = ram.read, ram.write
    ram.read = lambda off, size: seen.append(("r", off, size)) or plain_read(off, size)
    io.commit()
    assert port_in(io, 0x91, 2) == 0x3322 and seen == [("r", 1, 2)]
    ram.write = lambda off, size, v: seen.append(("w", off, size)) or plain_write(off, size, v)
    io.commit()
    port_out(io, 0x92, 1, 0x77)
    assert seen[-1] == ("w", 2, 1) and port_in(io, 0x90, 4) == 0x4477_2211


def test_a_port_region_split_by_an_overlap_keeps_one_entry():
    io = IoSpace()
    dev = Log(0xA1)
    io.add(MmioRegion("wide", 8, dev, valid_sizes=(1, 2, 4)), 0x300)
    io.add(MmioRegion("mid", 2, Log(0xB2), valid_sizes=(1, 2, 4)), 0x303, priority=1)
    io.commit()
    assert io.table[0x300] is io.table[0x306] and io.table[0x303] is not io.table[0x300]
    assert (port_in(io, 0x302, 1), port_in(io, 0x303, 1), port_in(io, 0x306, 2)) == (0xA1, 0xB2, 0xA1)
    assert dev.log == [("r", 2, 1), ("r", 6, 2)]


class RangeBackend(Backend):
    """Keeps the changed ranges each publish came with, too."""

    def __init__(self):
        super().__init__()
        self.changes = []

    def publish(self, pieces, changed=None):
        super().publish(pieces, changed)
        self.changes.append(changed)


def test_a_commit_hands_the_backend_the_ranges_that_changed():
    """The CPU's backend remaps only where the view changed (QEMU's
    address_space_update_topology compares the old and new flat views): a move hands it
    the old and the new extent, never a 'rebuilt whole' None once a view exists."""
    mm = MemoryMap()
    backend = mm.backend = RangeBackend()
    mm.add(RamRegion("ram", 0x4000), 0)
    mm.commit()
    bar = mm.add(MmioRegion("bar", 0x1000, Log()), 0x10000)
    mm.commit()
    mm.move(bar, 0x20000)
    mm.commit()
    last = backend.changes[-1]
    assert last is not None
    covered = lambda a: any(lo <= a < hi for lo, hi in last)
    assert covered(0x10000) and covered(0x10FFF) and covered(0x20000) and covered(0x20FFF)
    assert not covered(0x0) and not covered(0x3FFF)          # RAM did not change


def test_host_writes_skip_pages_that_never_held_code():
    """A device's DMA into RAM asks the CPU's TLB first (``may_hold_code``): where no code
    was ever translated nothing is dropped; where it may have been, that range is."""
    mm = MemoryMap()
    mm.add(RamRegion("ram", 0x4000), 0)
    mm.commit()
    backend = mm.backend = Backend()
    asked = []

    def may_hold_code(addr, size):
        asked.append((addr, size))
        return addr >= 0x3000
    mm.may_hold_code = may_hold_code
    mm.guest.write(0x1000, b"\x01\x02")
    mm.guest.write(0x3010, b"\x90" * 4)
    assert asked == [(0x1000, 2), (0x3010, 4)]
    assert backend.invalidated == [(0x3010, 4)]


def test_canonical_form_joins_only_pieces_that_continue_each_other():
    """The flattened view's canonical form (QEMU's flatview_simplify): neighbours showing
    one region at contiguous offsets are one piece; a gap, another region or an offset
    jump keeps them apart.  A rebuild and an incremental splice both end in this form."""
    from uvirt.board.memory.regions import Piece, _canonical
    a, b = RamRegion("a", 0x10000), RamRegion("b", 0x10000)
    assert _canonical([Piece(0, 0x1000, a, 0), Piece(0x1000, 0x2000, a, 0x1000),
                       Piece(0x2000, 0x2800, a, 0x2000)]) == [Piece(0, 0x2800, a, 0)]
    assert _canonical([Piece(0x3000, 0x4000, a, 0x100), Piece(0x4000, 0x5000, a, 0x1100)]) == \
        [Piece(0x3000, 0x5000, a, 0x100)]
    apart = [
        [Piece(0, 0x1000, a, 0), Piece(0x1001, 0x2000, a, 0x1001)],    # a gap
        [Piece(0, 0x1000, a, 0), Piece(0x1000, 0x2000, b, 0x1000)],    # another region
        [Piece(0, 0x1000, a, 0), Piece(0x1000, 0x2000, a, 0x2000)],    # an offset jump
        [Piece(0, 0x1000, a, 0x1000), Piece(0x1000, 0x2000, a, 0)],    # offsets backwards
    ]
    for pieces in apart:
        assert _canonical(pieces) == pieces
    assert _canonical([Piece(0, 0x1000, a, 0), Piece(0x1000, 0x2000, b, 0),
                       Piece(0x2000, 0x3000, b, 0x1000)]) == \
        [Piece(0, 0x1000, a, 0), Piece(0x1000, 0x3000, b, 0)]
    assert _canonical([]) == []
