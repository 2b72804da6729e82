"""PCI config space, BAR sizing and mapping rules, conf1 — no CPU."""

import pytest
from hypothesis import given, settings, strategies as st

from uvirt.board.memory.regions import IoSpace, MemoryMap, MmioRegion, RamRegion
from uvirt.board.pci.bus import (BarChange, Command, PciBus, PciConfigSpace, PciFunction, PciHostConf1,
                           PciReg, devfn)


class Null:
    def read(self, offset, size):
        return 0

    def write(self, offset, size, value):
        pass


def make_fn():
    fn = PciFunction(vendor_id=0x1AF4, device_id=0x1005, class_code=0x00FF)
    fn.register_bar(0, MmioRegion("io", 32, Null()), io=True)
    fn.register_bar(1, MmioRegion("msix", 0x1000, Null()))
    fn.register_bar(4, RamRegion("modern", 0x4000), mem64=True, prefetch=True)
    fn.register_rom(RamRegion("rom", 0x10000, readonly=True))
    return fn


@pytest.mark.parametrize("index,reg,expected", [
    (0, 0x10, 0xFFFFFFE1),           # I/O 32 B: upper 16 bits writable too, as QEMU
    (1, 0x14, 0xFFFFF000),
    (4, 0x20, 0xFFFFC00C),           # 64-bit prefetchable 16 KiB, low dword
    (4, 0x24, 0xFFFFFFFF),           # high dword
    (6, 0x30, 0xFFFF0001),           # ROM 64 KiB, enable bit writable
])
def test_bar_sizing_readback(index, reg, expected):
    fn = make_fn()
    fn.config_write(reg, 4, 0xFFFFFFFF)
    assert fn.config_read(reg, 4) == expected


def test_unimplemented_bar_reads_zero_after_all_ones():
    fn = make_fn()
    fn.config_write(0x18, 4, 0xFFFFFFFF)
    assert fn.config_read(0x18, 4) == 0


def test_command_write_mask_is_qemus_0507():
    fn = make_fn()
    fn.config_write(PciReg.COMMAND, 2, 0xFFFF)
    assert fn.config_read(PciReg.COMMAND, 2) == 0x0507


def test_status_error_bits_are_write_one_to_clear_and_others_read_only():
    fn = make_fn()
    fn.config.set(PciReg.STATUS, 2, 0xF910)
    fn.config_write(PciReg.STATUS, 2, 0x0900)
    assert fn.config_read(PciReg.STATUS, 2) == 0xF010


def test_ids_are_read_only():
    fn = make_fn()
    fn.config_write(0, 4, 0)
    assert fn.config_read(0, 4) == 0x10051AF4


def test_config_write_returns_mapping_changes_for_decode_toggle_and_move():
    fn = make_fn()
    fn.config_write(0x14, 4, 0xFEB00000)
    assert fn.config_write(PciReg.COMMAND, 2, Command.MEMORY) == [BarChange(1, None, 0xFEB00000)]
    assert fn.config_write(0x14, 4, 0xFEA00000) == [BarChange(1, 0xFEB00000, 0xFEA00000)]
    assert fn.config_write(PciReg.COMMAND, 2, 0) == [BarChange(1, 0xFEA00000, None)]


def test_bar_at_zero_or_being_sized_is_unmapped():
    fn = make_fn()
    fn.config_write(PciReg.COMMAND, 2, Command.MEMORY | Command.IO)
    assert fn.bar_address(1) is None                 # address 0
    fn.config_write(0x10, 4, 0xFFFFFFFF)
    assert fn.bar_address(0) is None                 # all ones: end wraps past 4 GiB


def test_64bit_bar_with_high_dword_set_is_out_of_reach_of_the_guest():
    m = MemoryMap()
    bus = PciBus(m, IoSpace())
    fn = make_fn()
    bus.plug(fn, devfn(3))
    bus.config_write(0, devfn(3), 0x20, 4, 0xC)
    bus.config_write(0, devfn(3), 0x24, 4, 0x1)
    bus.config_write(0, devfn(3), PciReg.COMMAND, 2, Command.MEMORY)
    assert fn.bar_address(4) == 0x1_0000_0000
    assert not any(pc.region.name == "modern" for pc in m.flatten())


def test_rom_needs_its_enable_bit():
    fn = make_fn()
    fn.config_write(PciReg.COMMAND, 2, Command.MEMORY)
    fn.config_write(0x30, 4, 0xFEB40000)
    assert fn.bar_address(6) is None
    fn.config_write(0x30, 4, 0xFEB40001)
    assert fn.bar_address(6) == 0xFEB40000


def test_capability_list_is_built_head_first_and_read_only():
    fn = make_fn()
    fn.add_capability(0x11, 0x40, 12)
    fn.add_capability(0x09, 0x50, 16)
    assert fn.capabilities() == [(0x09, 0x50), (0x11, 0x40)]
    assert fn.config_read(PciReg.STATUS, 2) & 0x10
    fn.config_write(0x50, 4, 0)
    assert fn.config_read(0x50, 1) == 0x09


def conf1():
    m, io = MemoryMap(), IoSpace()
    bus = PciBus(m, io)
    bus.plug(make_fn(), devfn(3))
    host = PciHostConf1(bus)
    for region, port in zip(host.regions(), (0xCF8, 0xCFC)):
        io.add(region, port)
    io.commit()
    return io


def test_conf1_latch_reads_back_and_ignores_narrow_writes():
    io = conf1()
    io.write(0xCF8, 4, 0x80000000)
    io.write(0xCFB, 1, 0x01)
    assert io.read(0xCF8, 4) == 0x80000000


def test_conf1_byte_lanes_and_disabled_and_absent():
    io = conf1()
    io.write(0xCF8, 4, 0x80001800)                    # 00:03.0 reg 0
    assert io.read(0xCFC, 4) == 0x10051AF4
    assert io.read(0xCFE, 2) == 0x1005
    assert io.read(0xCFD, 1) == 0x1A
    io.write(0xCF8, 4, 0x00001800)
    assert io.read(0xCFC, 4) == 0xFFFFFFFF            # enable bit clear
    io.write(0xCF8, 4, 0x80011800)
    assert io.read(0xCFC, 4) == 0xFFFFFFFF            # bus 1
    io.write(0xCF8, 4, 0x8000F800)
    assert io.read(0xCFC, 2) == 0xFFFF                # slot 31


def test_function_without_function_zero_is_invisible():
    m, io = MemoryMap(), IoSpace()
    bus = PciBus(m, io)
    bus.plug(make_fn(), devfn(5, 2))
    assert bus.config_read(0, devfn(5, 2), 0, 2) == 0xFFFF


def _bytewise_write(data, wmask, w1c, offset, size, value):
    """QEMU's pci_default_write_config, byte by byte: the reference for guest_write."""
    for i in range(size):
        b = (value >> (8 * i)) & 0xFF
        o = offset + i
        data[o] = ((data[o] & ~wmask[o]) | (b & wmask[o])) & ~(b & w1c[o]) & 0xFF


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=8),
       st.binary(min_size=8, max_size=8), st.integers(0, 4), st.sampled_from([1, 2, 3, 4]),
       st.one_of(st.integers(0, (1 << 40) - 1), st.sampled_from([0, 0xFFFFFFFF, 0xE0000000])))
def test_a_guest_write_goes_through_the_masks_byte_by_byte(data, wmask, w1c, offset, size, value):
    """guest_write does a 1, 2 or 4-byte access as one word: every byte ends as the
    byte-by-byte rule puts it, bits of the value above the access ignored."""
    c = PciConfigSpace()
    c.data[0xF0:0xF8], c.wmask[0xF0:0xF8], c.w1cmask[0xF0:0xF8] = data, wmask, w1c
    ref = bytearray(c.data)
    c.guest_write(0xF0 + offset, size, value)
    _bytewise_write(ref, c.wmask, c.w1cmask, 0xF0 + offset, size, value)
    assert c.data == ref


_u16, _u8 = st.integers(0, 0xFFFF), st.integers(0, 0xFF)


@settings(max_examples=200, deadline=None)
@given(_u16, _u16, _u16, _u8, _u8, _u8, _u16, _u16, _u8)
def test_a_new_functions_header_is_its_identity_over_qemus_masks(vendor, device, cls, rev, prog_if,
                                                                 header, sub_vendor, sub_id, pin):
    """PciFunction copies the masks from constants and packs its identity in one go:
    the same bytes as setting each field and mask in turn (pci_init_wmask,
    pci_init_w1cmask, the ID registers)."""
    fn = PciFunction(vendor_id=vendor, device_id=device, class_code=cls, revision=rev,
                     prog_if=prog_if, header_type=header, subsystem_vendor_id=sub_vendor,
                     subsystem_id=sub_id, interrupt_pin=pin)
    want = PciConfigSpace()
    for reg, size, value in ((PciReg.VENDOR_ID, 2, vendor), (PciReg.DEVICE_ID, 2, device),
                             (PciReg.REVISION_ID, 1, rev), (PciReg.CLASS_PROG, 1, prog_if),
                             (PciReg.CLASS_DEVICE, 2, cls), (PciReg.HEADER_TYPE, 1, header),
                             (PciReg.SUBSYSTEM_VENDOR_ID, 2, sub_vendor),
                             (PciReg.SUBSYSTEM_ID, 2, sub_id), (PciReg.INTERRUPT_PIN, 1, pin)):
        want.set(reg, size, value)
    want.set_wmask(PciReg.CACHE_LINE_SIZE, 1, 0xFF)
    want.set_wmask(PciReg.INTERRUPT_LINE, 1, 0xFF)
    want.set_wmask(PciReg.COMMAND, 2, 0x0507)
    want.set_w1cmask(PciReg.STATUS, 2, 0xF900)
    want.wmask[0x40:] = b"\xff" * 0xC0
    assert (fn.config.data, fn.config.wmask, fn.config.w1cmask) == (want.data, want.wmask, want.w1cmask)
    other = PciFunction(vendor_id=1, device_id=2, class_code=3)
    other.config.wmask[0x50] = 0                   # a capability's bytes: its own masks only
    assert fn.config.wmask[0x50] == 0xFF


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=256, max_size=256), st.integers(-4, 260), st.integers(0, 9))
def test_config_get_reads_little_endian_bytes_as_a_slice_does(data, offset, size):
    """``PciConfigSpace.get``: a 1, 2 or 4-byte word inside the space through struct, any
    other read (wider, clipped at the end) as the bytes of the slice."""
    c = PciConfigSpace()
    c.data[:] = data
    assert c.get(offset, size) == int.from_bytes(bytes(data)[offset:offset + size], "little")
