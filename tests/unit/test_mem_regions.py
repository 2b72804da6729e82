"""Memory map without a CPU: placement, priorities, sub-page pieces, commit plans."""

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_32, Uc

from uvirt.errors import GuestMemoryError
from uvirt.board.memory.regions import (PAGE_SIZE, HostBuffer, IoSpace, MemoryMap, MmioRegion,
                               RamRegion)
from uvirt.cpu.uc_memory import UnicornMemory, _spans


class Regs:
    def __init__(self, value=0x11223344):
        self.value = value
        self.log = []

    def read(self, offset, size):
        self.log.append(("r", offset, size))
        return self.value

    def write(self, offset, size, value):
        self.log.append(("w", offset, size, value))


def names(space, addrs):
    out = []
    for a in addrs:
        pc = space.lookup(a)
        out.append(None if pc is None else pc.region.name)
    return out


def test_higher_priority_wins_overlap():
    mm = MemoryMap()
    mm.add(RamRegion("ram", 0x10000), 0, priority=0)
    mm.add(MmioRegion("bar", 0x1000, Regs()), 0x8000, priority=-1)
    mm.add(MmioRegion("hole", 0x1000, Regs()), 0x2000, priority=1)
    assert names(mm, [0x1000, 0x2000, 0x8000, 0x10000]) == ["ram", "hole", "ram", None]


def test_equal_priority_last_placed_wins_and_move_counts_as_last():
    mm = MemoryMap()
    a = mm.add(MmioRegion("a", 0x1000, Regs()), 0x10000, priority=-1)
    b = mm.add(MmioRegion("b", 0x1000, Regs()), 0x20000, priority=-1)
    b.move(0x10000)
    assert names(mm, [0x10000]) == ["b"]
    a.move(0x10800)
    assert names(mm, [0x10000, 0x10800, 0x11000]) == ["b", "a", "a"]


def test_disabled_placement_is_invisible_and_reenabled_in_place():
    mm = MemoryMap()
    p = mm.add(MmioRegion("bar", 0x100, Regs()), 0x5000)
    p.set_enabled(False)
    assert mm.lookup(0x5000) is None
    assert mm.read(0x5000, 4) == 0          # unassigned memory reads 0
    p.set_enabled(True)
    assert mm.lookup(0x5000).region.name == "bar"


def test_unassigned_port_reads_all_ones_and_unaligned_reads_zero():
    io = IoSpace()
    assert io.read(0x1234, 1) == 0xFF
    assert io.read(0x1234, 2) == 0xFFFF
    assert io.read(0x1234, 4) == 0xFFFFFFFF
    assert io.read(0x1235, 4) == 0          # memory_region_access_valid: unaligned


def test_sub_page_region_makes_mixed_page_span():
    mm = MemoryMap()
    mm.add(RamRegion("ram", 0x4000), 0)
    mm.add(MmioRegion("bar0", 0x100, Regs()), 0xFEB00000, priority=-1)
    mm.add(RamRegion("shm", 0x2000), 0xFEB00800, priority=-1)
    spans = {(s.start, s.size, s.kind) for s in _spans(mm.flatten())}
    assert spans == {(0, 0x4000, "ram"), (0xFEB00000, PAGE_SIZE, "mixed"),
                     (0xFEB01000, PAGE_SIZE, "ram"), (0xFEB02000, PAGE_SIZE, "mixed")}


def test_access_wider_than_impl_is_split_little_endian():
    regs = Regs(0xAB)
    r = MmioRegion("r", 0x10, regs, impl_min=1, impl_max=1)
    assert r.read(0, 4) == 0xABABABAB
    assert [e[1:] for e in regs.log] == [(0, 1), (1, 1), (2, 1), (3, 1)]


def test_access_narrower_than_impl_widens_at_same_offset_and_masks():
    regs = Regs(0x11223344)
    r = MmioRegion("r", 0x10, regs, impl_min=4, impl_max=4)
    assert r.read(4, 1) == 0x44
    r.write(4, 1, 0x55)
    assert regs.log == [("r", 4, 4), ("w", 4, 4, 0x55)]


def test_invalid_size_reads_zero_drops_write_and_reports_guest_error():
    errors = []
    regs = Regs()
    mm = MemoryMap()
    mm.on_guest_error = lambda kind, detail: errors.append(kind)
    mm.add(MmioRegion("byteonly", 4, regs, valid_sizes=(1,)), 0x9000)
    assert mm.read(0x9000, 2) == 0
    mm.write(0x9000, 4, 1)
    assert regs.log == [] and errors == ["invalid_access", "invalid_access"]


def test_guest_memory_dma_reaches_ram_mmio_and_drops_unassigned_as_qemu():
    """address_space_rw: RAM across adjacent regions, MMIO in memory_access_size pieces,
    unassigned and >= 4 GiB reads 0 / drops writes, ROM writes dropped; never raises."""
    regs = Regs()
    mm = MemoryMap()
    mm.add(RamRegion("lo", 0x1000), 0)
    mm.add(RamRegion("hi", 0x1000), 0x1000)
    mm.add(MmioRegion("regs", 0x1000, regs), 0x2000)
    rom = RamRegion("rom", 0x1000, readonly=True)
    rom.buffer.view[0:4] = b"ROM!"
    mm.add(rom, 0x8000)
    g = mm.guest
    g.write(0xFFE, b"abcd")
    assert g.read(0xFFE, 4) == b"abcd"
    g.write(0x1FFE, b"\x01\x02\x03\x04\x05\x06\x07")     # RAM tail, then 4 + 1 bytes of MMIO
    assert g.read(0x1FFE, 2) == b"\x01\x02"
    assert [(op, off, size) for op, off, size, *_ in regs.log] == [("w", 0, 4), ("w", 4, 1)]
    assert g.read(0xFFFFFFFE, 4) == bytes(4)                      # unassigned, then above 4 GiB
    g.write(0x8000, b"xx")
    assert g.read(0x8000, 4) == b"ROM!"
    assert g.read(0x5000, 3) == bytes(3)


def test_map_bounces_one_page_outside_ram():
    mm = MemoryMap()
    mm.add(RamRegion("ram", 0x2000), 0)
    g = mm.guest
    m = g.map(0x1800, 0x10000, True)
    assert not m.bounced and m.length == 0x800                    # RAM up to its end
    b = g.map(0x2000, 0x10000, True)
    assert b.bounced and b.length == 0x1000                       # one page of bounce
    assert g.map(0x5000, 4, False) is None                        # bounce in use
    assert g.map(0x100, 4, False).length == 4                     # RAM still maps
    g.unmap(b, 0x10)
    assert g.bounce is None and g.map(0x5000, 4, False).bounced
    assert g.cache_len(0x1FF0, 0x20, False) == 0x10               # RAM, then a boundary
    assert g.cache_len(0x3000, 0x20000, True) == 0x20000          # unassigned: whole area


def test_commit_maps_once_and_only_diffs():
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    mm = MemoryMap()
    ram = RamRegion("ram", 0x100000)
    mm.add(ram, 0)
    bar = mm.add(MmioRegion("bar", 0x1000, Regs()), 0xFEB00000, priority=-1)
    ucm = UnicornMemory(mm, uc)
    before = dict(ucm._mapped)
    bar.move(0xFEC00000)
    mm.commit()
    after = dict(ucm._mapped)
    ram_keys = [k for k in before if k[2] == "ram"]
    assert ram_keys and all(k in after for k in ram_keys)       # RAM untouched by a BAR move
    assert sorted((s, n) for s, n, _ in ucm.mapped_spans) == [(0, 0x100000), (0xFEC00000, 0x1000)]
    assert sorted((b, e - b + 1) for b, e, _ in uc.mem_regions()) == [(0, 0x100000), (0xFEC00000, 0x1000)]
    ucm.detach()
    assert list(uc.mem_regions()) == []


def test_mapped_host_buffer_cannot_be_closed():
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    buf = HostBuffer(0x2000)
    mm = MemoryMap()
    mm.add(RamRegion("shm", 0x2000, buf), 0x10000)
    ucm = UnicornMemory(mm, uc)
    with pytest.raises(Exception, match="still mapped"):
        buf.close()
    ucm.detach()
    buf.close()


def test_host_writes_visible_to_guest_without_copy():
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    mm = MemoryMap()
    shm = RamRegion("shm", 0x1000)
    mm.add(shm, 0x20000)
    UnicornMemory(mm, uc)
    shm.buffer.view[0:4] = b"wxyz"
    assert bytes(uc.mem_read(0x20000, 4)) == b"wxyz"
    uc.mem_write(0x20004, b"1234")
    assert bytes(shm.buffer.view[4:8]) == b"1234"


def test_port_entries_follow_a_swapped_device():
    """The port table reuses entries across commits, but only while the region still
    dispatches to the same device: a device swapped in (a tracing or fuzzing proxy) is
    what the IN/OUT path reaches after the next commit."""
    class Reg:
        def __init__(self, value):
            self.value = value

        def reset(self):
            pass

        def read(self, offset, size):
            return self.value

        def write(self, offset, size, value):
            pass
    io = IoSpace()
    region = MmioRegion("r", 4, Reg(1), valid_sizes=(1, 2, 4))
    io.add(region, 0x510)
    io.commit()
    assert io.table[0x510].dev_read(0, 4) == 1
    region.device = Reg(2)
    region.read, region.write = region._fast_paths()
    io.commit()
    assert io.table[0x510].dev_read(0, 4) == 2


def test_region_accessors_are_made_on_first_use_and_ports_follow_swaps():
    """MmioRegion makes its read/write closures on first use (a board's untouched
    windows never do); the access contract is the same, and the port table still follows
    a guard set or a device swapped after the region was placed."""
    from uvirt.board.dma import DeviceWork, ReentrancyGuard
    dev = Regs()
    region = MmioRegion("r", 4, dev, valid_sizes=(1, 2), impl_max=1)
    errors = []
    region.on_guest_error = lambda kind, detail: errors.append(kind)
    assert "read" not in vars(region) and "write" not in vars(region)
    assert region.read(0, 2) == 0x4444                  # split into bytes, as before
    assert region.read(0, 4) == 0 and errors == ["invalid_access"]
    assert "read" in vars(region)                       # made once, kept
    io = IoSpace()
    io.add(region, 0x510)
    io.commit()
    assert io.table[0x510].dev_read == dev.read         # straight to the device
    assert "write" in vars(region) and io.read(0x510, 1) == 0x44
    other = Regs(0x55)
    region.device = other
    region.read, region.write = region._fast_paths()
    io.commit()
    assert io.read(0x510, 1) == 0x55                    # the swapped device
    guard = ReentrancyGuard("r", DeviceWork())
    region.set_guard(guard)
    io.commit()
    assert io.table[0x510].dev_read == region.read      # the guarded path now
    assert io.read(0x511, 1) == 0x55
