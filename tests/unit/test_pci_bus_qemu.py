"""The PCI bus as QEMU 7.2's hw/pci/pci.c and pci_host.c behave, without a CPU.

Each test names the QEMU function whose behaviour it pins: ``pci_init_wmask`` (what a
guest can write), ``pci_bar_address`` (where a BAR decodes), ``pci_update_mappings``
(BAR regions placed over the bus's address spaces), ``pci_default_write_config`` and
``pci_update_irq_disabled`` (INTx), ``pci_add_capability``, ``do_pci_register_device``
(plug rules), ``pci_host_config_*``/``pci_host_data_*`` (0xCF8/0xCFC).  They go through
public entry points only (config reads and writes, BarChange lists, what the memory
map and port space show), so the layers can be refactored under them.
"""

import pytest

from uvirt.board.memory.regions import IoSpace, MemoryMap, MmioRegion, RamRegion
from uvirt.board.pci.bus import (BarChange, Command, PciAddressError, PciBus, PciConfigSpace,
                                 PciFunction, PciHostConf1, PciPlugError, PciReg, devfn)
from uvirt.trace import Tracer

MEM, IO = int(Command.MEMORY), int(Command.IO)


class Regs:
    """A register window that answers its name's first letter and logs writes."""

    def __init__(self, value=0):
        self.value = value
        self.writes = []

    def read(self, offset, size):
        return self.value

    def write(self, offset, size, value):
        self.writes.append((offset, size, value))


def fn_(**kw):
    kw.setdefault("vendor_id", 0x1234)
    kw.setdefault("device_id", 0x11E8)
    kw.setdefault("class_code", 0x00FF)
    return PciFunction(**kw)


def board():
    m, io = MemoryMap(), IoSpace()
    return m, io, PciBus(m, io)


def region_at(space, addr):
    pc = space.lookup(addr)
    return None if pc is None else pc.region.name


# --------------------------------------------------------------------------- header


def test_header_write_masks_are_pci_init_wmask():
    """Only command (0x0507), cache line size and interrupt line are writable in a
    type-0 header without BARs; 0x40-0xFF is writable until a capability claims it."""
    fn = fn_(revision=3, prog_if=0x10, interrupt_pin=1, header_type=0x80)
    before = bytes(fn.config_read(o, 1) for o in range(0x100))
    for o in range(0x100):
        fn.config_write(o, 1, 0xFF)
    after = bytes(fn.config_read(o, 1) for o in range(0x100))
    expected = bytearray(before)
    expected[0x04], expected[0x05] = 0x07, 0x05
    expected[0x0C] = expected[0x3C] = 0xFF
    expected[0x40:] = b"\xff" * 0xC0
    assert after == bytes(expected)


def test_identity_defaults_are_qemus_subsystem_and_zero():
    """pci_init_subsystem: 1af4:1100 unless set; class, revision, prog-if where PCI puts them."""
    fn = fn_()
    assert fn.config_read(PciReg.SUBSYSTEM_VENDOR_ID, 4) == 0x1100_1AF4
    assert [fn.config_read(o, 1) for o in (0x08, 0x09, 0x0E, 0x3D)] == [0, 0, 0, 0]
    fn = fn_(revision=0x10, prog_if=0x02, class_code=0x0C03, header_type=0x80,
             subsystem_vendor_id=0xABCD, subsystem_id=0x4321, interrupt_pin=2)
    assert fn.config_read(0x08, 4) == 0x0C03_0210
    assert fn.config_read(0x0C, 4) == 0x0080_0000
    assert fn.config_read(0x2C, 4) == 0x4321_ABCD
    assert fn.config_read(0x3C, 4) == 0x0000_0200
    assert fn.config_read(PciReg.COMMAND, 4) == 0        # command and status start clear


def test_host_store_truncates_to_its_width():
    c = PciConfigSpace()
    c.set(0x10, 2, 0x12345)
    c.set(0x20, 1, -1)
    assert c.get(0x10, 4) == 0x2345
    assert c.get(0x20, 2) == 0xFF


# --------------------------------------------------------------------------- BARs


@pytest.mark.parametrize("size,io,ok", [
    (16, False, True), (8, False, False), (24, False, False), (0x3000, False, False),
    (4, True, True), (8, True, True), (2, True, False), (12, True, False),
])
def test_bar_sizes_are_powers_of_two_at_least_16_or_4_for_io(size, io, ok):
    fn = fn_()
    region = MmioRegion("r", size, Regs())
    if ok:
        bar = fn.register_bar(1, region, io=io)
        assert bar.index == 1 and bar.size == size
        return
    with pytest.raises(ValueError) as e:
        fn.register_bar(1, region, io=io)
    assert f"BAR1 size 0x{size:x}" in str(e.value)
    assert str(e.value).endswith(">= 4" if io else ">= 16")


def test_64bit_bar_needs_a_second_register():
    fn = fn_()
    fn.register_bar(4, RamRegion("ok", 0x1000), mem64=True)
    with pytest.raises(ValueError, match="64-bit BAR cannot start at BAR5"):
        fn.register_bar(5, RamRegion("no", 0x1000), mem64=True)


def test_bars_registered_in_any_order_keep_flags_and_sizing_masks():
    fn = fn_()
    fn.register_bar(3, MmioRegion("io", 32, Regs()), io=True)
    fn.register_bar(2, MmioRegion("m32", 0x10, Regs()))
    fn.register_bar(0, RamRegion("m64", 0x4000), mem64=True, prefetch=True)
    assert [fn.config_read(0x10 + 4 * i, 4) for i in range(4)] == [0xC, 0, 0, 1]
    for i in range(4):
        fn.config_write(0x10 + 4 * i, 4, 0xFFFFFFFF)
    assert [fn.config_read(0x10 + 4 * i, 4) for i in range(4)] == [
        0xFFFFC00C, 0xFFFFFFFF, 0xFFFFFFF0, 0xFFFFFFE1]


def neighbours():
    """BARs whose neighbouring registers carry flag bits: a BAR must decode from its
    own register(s) only."""
    fn = fn_()
    fn.register_bar(0, RamRegion("b0-m64", 0x4000), mem64=True, prefetch=True)   # 0x10-0x17
    fn.register_bar(2, MmioRegion("b2-io", 32, Regs()), io=True)                 # 0x18
    fn.register_bar(3, MmioRegion("b3-m32", 0x1000, Regs()))                     # 0x1C
    fn.register_bar(4, MmioRegion("b4-io", 16, Regs()), io=True)                 # 0x20
    fn.register_bar(5, MmioRegion("b5-pf", 0x1000, Regs()), prefetch=True)       # 0x24
    return fn


def test_each_bar_decodes_its_own_register_only():
    fn = neighbours()
    fn.config_write(0x10, 4, 0xFE00_0000)
    fn.config_write(0x14, 4, 0)
    fn.config_write(0x18, 4, 0xC000)
    fn.config_write(0x1C, 4, 0xFEB0_0000)
    fn.config_write(0x20, 4, 0xC100)
    fn.config_write(0x24, 4, 0xFEB1_0000)
    changes = fn.config_write(PciReg.COMMAND, 2, MEM | IO)
    assert sorted(changes, key=lambda c: c.index) == [
        BarChange(0, None, 0xFE00_0000), BarChange(2, None, 0xC000),
        BarChange(3, None, 0xFEB0_0000), BarChange(4, None, 0xC100),
        BarChange(5, None, 0xFEB1_0000)]


def test_io_bar_follows_the_io_decode_bit_alone():
    """pci_bar_address: an I/O BAR needs PCI_COMMAND_IO; memory decode does not help."""
    fn = neighbours()
    fn.config_write(0x18, 4, 0xC000)
    fn.config_write(0x10, 4, 0xFE00_0000)
    assert fn.config_write(PciReg.COMMAND, 2, MEM) == [BarChange(0, None, 0xFE00_0000)]
    assert fn.bar_address(2) is None
    assert fn.config_write(PciReg.COMMAND, 2, IO) == [BarChange(0, 0xFE00_0000, None),
                                                      BarChange(2, None, 0xC000)]
    assert fn.bar_address(0) is None


@pytest.mark.parametrize("value,expected", [
    (0xC001, 0xC000),                # flag bit 0 is not address
    (0xC01F, 0xC000),                # nor the bits below the size
    (0x0000_0001, None),             # address 0: unmapped (pc has no pci_allow_0_address)
    (0xFFFF_FFE1, None),             # ends at 0xFFFFFFFF: unmapped (last >= UINT32_MAX)
    (0xFFFF_FFC1, 0xFFFF_FFC0),      # ends below it: mapped (beyond the 64 KiB port space)
])
def test_io_bar_address_rules(value, expected):
    fn = neighbours()
    fn.config_write(PciReg.COMMAND, 2, IO)
    fn.config_write(0x18, 4, value)
    assert fn.bar_address(2) == expected


@pytest.mark.parametrize("bar,low,high,expected", [
    (3, 0xFFFF_F000, None, None),                      # 32-bit BAR ending at 4 GiB
    (3, 0xFFFF_E000, None, 0xFFFF_E000),               # one page lower
    (0, 0xFFFF_C00C, 0, 0xFFFF_C000),                  # 64-bit BAR may end at 4 GiB
    (0, 0xFFFF_C00C, 0xFFFF_FFFF, None),               # all ones (sizing): ends at 2^64 - 1
    (0, 0xFFFF_800C, 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_8000),
    (0, 0x0000_000C, 0x1, 0x1_0000_0000),
])
def test_memory_bar_address_rules(bar, low, high, expected):
    fn = neighbours()
    fn.config_write(PciReg.COMMAND, 2, MEM)
    fn.config_write(0x10 + 4 * bar, 4, low)
    if high is not None:
        fn.config_write(0x14 + 4 * bar, 4, high)
    assert fn.bar_address(bar) == expected


def test_mappings_cover_every_registered_bar_after_gaps():
    fn = fn_()
    fn.register_bar(4, MmioRegion("late", 0x1000, Regs()))
    fn.config_write(0x20, 4, 0xFEC0_0000)
    assert fn.config_write(PciReg.COMMAND, 2, MEM) == [BarChange(4, None, 0xFEC0_0000)]


# --------------------------------------------------------------------------- bus placement


def test_bar_regions_go_where_pci_update_mappings_puts_them():
    """Memory BARs sit below RAM (the PCI hole's priority), I/O BARs over ISA ports;
    disabling decode hides a BAR and enabling it shows it again at its new address."""
    m, io, bus = board()
    m.add(RamRegion("ram", 0x10_0000), 0)
    isa = MmioRegion("isa", 0x20, Regs(0xAA), valid_sizes=(1, 2, 4))
    io.add(isa, 0xC000)
    io.commit()
    fn = fn_()
    fn.register_bar(0, MmioRegion("bar-io", 0x20, Regs(0x55), valid_sizes=(1, 2, 4)), io=True)
    fn.register_bar(1, MmioRegion("bar-mem", 0x1000, Regs()))
    seen, moves = [], []
    bus.on_change = lambda f, ch: seen.append((f, ch))
    fn.bars[1].listeners.append(moves.append)
    bus.plug(fn, devfn(3))
    bus.config_write(0, devfn(3), 0x10, 4, 0xC000)
    bus.config_write(0, devfn(3), 0x14, 4, 0x8000)               # under RAM
    bus.config_write(0, devfn(3), PciReg.COMMAND, 2, MEM | IO)   # both spaces at once
    assert io.read(0xC000, 1) == 0x55 and io.read(0xC01F, 1) == 0x55
    assert region_at(m, 0x8000) == "ram"
    bus.config_write(0, devfn(3), 0x14, 4, 0xFEB0_0000)
    assert region_at(m, 0xFEB0_0000) == "bar-mem" and region_at(m, 0x8000) == "ram"
    bus.config_write(0, devfn(3), PciReg.COMMAND, 2, MEM)
    assert io.read(0xC000, 1) == 0xAA                             # the ISA device again
    bus.config_write(0, devfn(3), PciReg.COMMAND, 2, 0)
    assert region_at(m, 0xFEB0_0000) is None
    bus.config_write(0, devfn(3), 0x14, 4, 0xFEA0_0000)
    bus.config_write(0, devfn(3), PciReg.COMMAND, 2, MEM | IO)
    assert region_at(m, 0xFEA0_0000) == "bar-mem" and region_at(m, 0xFEB0_0000) is None
    assert io.read(0xC000, 1) == 0x55
    assert moves == [0x8000, 0xFEB0_0000, None, 0xFEA0_0000]
    assert [ch for f, ch in seen if f is fn and ch.index == 1] == [
        BarChange(1, None, 0x8000), BarChange(1, 0x8000, 0xFEB0_0000),
        BarChange(1, 0xFEB0_0000, None), BarChange(1, None, 0xFEA0_0000)]


def test_each_config_write_commits_the_spaces_it_changed_once():
    """The bus applies a config write's BarChange list and commits each space it
    touched once (the memory map's commit is where a CPU's mappings change)."""
    m, io, bus = board()
    fn = fn_()
    fn.register_bar(0, MmioRegion("mem", 0x1000, Regs()))
    fn.register_bar(1, MmioRegion("io", 0x20, Regs()), io=True)
    bus.plug(fn, devfn(3))
    bus.config_write(0, devfn(3), 0x10, 4, 0xFEB0_0000)
    bus.config_write(0, devfn(3), 0x14, 4, 0xC000)
    before = m.commits
    bus.config_write(0, devfn(3), PciReg.COMMAND, 2, MEM | IO)     # mem, then io
    assert m.commits == before + 1 and port_mapped(io, 0xC000)
    bus.config_write(0, devfn(3), 0x14, 4, 0xC100)                  # io only
    assert m.commits == before + 1 and port_mapped(io, 0xC100)
    bus.config_write(0, devfn(3), 0x10, 4, 0xFEA0_0000)
    assert m.commits == before + 2


def port_mapped(io, port):
    return io.table.get(port) is not None


def test_a_function_programmed_before_plug_is_mapped_by_plug():
    m, io, bus = board()
    fn = fn_()
    fn.register_bar(1, MmioRegion("bar", 0x1000, Regs()))
    fn.config.set(0x14, 4, 0xFEB0_0000)
    fn.config.set(PciReg.COMMAND, 2, MEM)
    bus.plug(fn, devfn(5))
    assert region_at(m, 0xFEB0_0000) == "bar"


def test_reset_returns_to_the_plugged_image_and_unmaps():
    """pci_do_device_reset: command cleared, BARs back to their flags, INTx deasserted."""
    m, io, bus = board()
    lines = []
    bus.intx_sink = lambda f, pin, level: lines.append(level)
    fn = fn_(interrupt_pin=1)
    fn.register_bar(1, MmioRegion("bar", 0x1000, Regs()))
    bus.plug(fn, devfn(3))
    image = bytes(fn.config_read(o, 1) for o in range(0x100))
    bus.config_write(0, devfn(3), 0x14, 4, 0xFEB0_0000)
    bus.config_write(0, devfn(3), PciReg.COMMAND, 2, MEM)
    bus.config_write(0, devfn(3), 0x3C, 1, 11)
    fn.set_intx(1)
    bus.reset()
    assert bytes(fn.config_read(o, 1) for o in range(0x100)) == image
    assert region_at(m, 0xFEB0_0000) is None
    assert lines == [1, 0] and fn.intx_level == 0
    assert fn.reset() == []                         # nothing left to unmap


def test_a_function_keeps_the_reset_image_it_froze_before_plug():
    m, io, bus = board()
    fn = fn_()
    fn.config.set(0x40, 1, 0x5A)
    fn.freeze_reset_state()
    fn.config.set(0x40, 1, 0x00)
    bus.plug(fn, devfn(4))
    fn.config_write(0x41, 1, 0x77)
    bus.reset()
    assert fn.config_read(0x40, 2) == 0x005A


# --------------------------------------------------------------------------- INTx and MSI


def intx_board(pin=1):
    m, io, bus = board()
    lines = []
    bus.intx_sink = lambda f, p, level: lines.append((f, p, level))
    fn = fn_(interrupt_pin=pin)
    bus.plug(fn, devfn(3))
    return fn, bus, lines


def status_int(fn):
    return bool(fn.config_read(PciReg.STATUS, 2) & 0x8)


def test_intx_level_reaches_the_sink_and_status_follows_it():
    fn, bus, lines = intx_board(pin=2)
    fn.add_capability(0x09, 0x40, 4)                   # status bit 4 must stay as it is
    fn.set_intx(1)
    fn.set_intx(5)                      # still asserted: no second edge
    assert lines == [(fn, 2, 1)] and status_int(fn) and fn.intx_level == 1
    assert fn.config_read(PciReg.STATUS, 2) == 0x18
    fn.set_intx(0)
    fn.set_intx(0)
    assert lines == [(fn, 2, 1), (fn, 2, 0)] and not status_int(fn)
    assert fn.config_read(PciReg.STATUS, 2) == 0x10


def test_intx_disable_masks_the_line_but_not_the_status_bit():
    """pci_update_irq_disabled and pci_irq_handler: while PCI_COMMAND_INTX_DISABLE is set
    the bus sees no level, status bit 3 still shows the device's."""
    fn, bus, lines = intx_board()
    fn.set_intx(1)
    bus.config_write(0, devfn(3), PciReg.COMMAND, 2, 0x400)
    assert lines[-1] == (fn, 1, 0) and status_int(fn)
    fn.set_intx(0)
    fn.set_intx(1)
    assert len(lines) == 2 and status_int(fn)
    bus.config_write(0, devfn(3), PciReg.COMMAND, 2, 0)
    assert lines[-1] == (fn, 1, 1)
    bus.config_write(0, devfn(3), PciReg.COMMAND, 2, 0x400)
    fn.set_intx(0)
    bus.config_write(0, devfn(3), PciReg.COMMAND, 2, 0)
    assert lines == [(fn, 1, 1), (fn, 1, 0), (fn, 1, 1), (fn, 1, 0)]


def test_intx_disable_is_applied_by_writes_that_cover_the_command_low_byte_only():
    """pci_default_write_config calls pci_update_irq_disabled only when the write covers
    byte PCI_COMMAND (range_covers_byte(addr, l, PCI_COMMAND)): a byte store to 0x05
    sets the bit in config space but leaves an asserted line as it is; pci_irq_handler
    then drops level changes (disabled), so the line stays up, as on QEMU."""
    fn, bus, lines = intx_board()
    fn.set_intx(1)
    bus.config_write(0, devfn(3), 0x05, 1, 0x04)
    assert fn.config_read(PciReg.COMMAND, 2) == 0x400
    assert lines == [(fn, 1, 1)]
    fn.set_intx(0)
    assert lines == [(fn, 1, 1)] and not status_int(fn)
    bus.config_write(0, devfn(3), 0x02, 4, 0x0000_0000)      # covers 0x04: enabled, level 0
    assert lines == [(fn, 1, 1)]


def test_no_pin_or_no_bus_means_no_intx():
    fn, bus, lines = intx_board(pin=0)
    fn.set_intx(1)
    assert lines == [] and status_int(fn)
    m, io, quiet = board()                                    # a bus without a sink
    wired = fn_(interrupt_pin=1)
    quiet.plug(wired, devfn(3))
    wired.set_intx(1)
    assert status_int(wired)
    lone = fn_(interrupt_pin=1)
    lone.set_intx(1)                                          # not plugged: nowhere to go
    lone.config_write(PciReg.COMMAND, 2, 0x400)
    assert status_int(lone)


def test_msi_is_a_dword_store_by_a_bus_master():
    """pci_msi_trigger: address_space_stl_le through the bus-master address space, which
    is disabled while PCI_COMMAND_MASTER is clear."""
    m, io, bus = board()
    ram = RamRegion("ram", 0x2000)
    m.add(ram, 0x1000)
    fn = fn_()
    fn.msi_write(0x1100, 1)                                   # not plugged: dropped
    bus.plug(fn, devfn(3))
    fn.msi_write(0x1100, 0x4021)
    assert ram.read(0x100, 4) == 0
    bus.config_write(0, devfn(3), PciReg.COMMAND, 2, 0x4)
    fn.msi_write(0x1100, 0x1_2345_6789)
    assert ram.read(0x100, 8) == 0x2345_6789


def test_msi_above_4gib_reaches_nothing():
    """Nothing decodes above 4 GiB on uvirt's pc (RAM ends below 3.5 GiB): an MSI-X
    message with a non-zero upper address is lost, not delivered to its low half."""
    m, io, bus = board()
    ram = RamRegion("ram", 0x2000)
    m.add(ram, 0x1000)
    fn = fn_()
    bus.plug(fn, devfn(3))
    bus.config_write(0, devfn(3), PciReg.COMMAND, 2, 0x4)
    fn.msi_write(0x1_0000_1100, 0x55)
    assert ram.read(0x100, 4) == 0


# --------------------------------------------------------------------------- plug rules


def multi(**kw):
    return fn_(header_type=0x80, **kw)


@pytest.mark.parametrize("slot,fn,ok", [(0, 0, True), (31, 7, True), (0x1F, 0, True), (0, 7, True),
                                        (32, 0, False), (0, 8, False), (-1, 0, False), (0, -1, False),
                                        (33, 3, False), (3, 9, False)])
def test_a_devfn_is_a_slot_below_32_and_a_function_below_8(slot, fn, ok):
    """PCI_DEVFN(slot, fn): five bits of slot, three of function; anything else is a
    host mistake (an addr= property), one line naming the values in hex."""
    if ok:
        assert devfn(slot, fn) == slot * 8 + fn
    else:
        with pytest.raises(PciAddressError) as e:
            devfn(slot, fn)
        assert str(e.value) == (f"PCI slot {slot:#x} function {fn:#x}: a slot is 0..0x1f, "
                                f"a function 0..7")


@pytest.mark.parametrize("where,ok", [(0, True), (0xFF, True), (0x100, False), (-1, False)])
def test_plug_takes_a_devfn_on_the_bus_only(where, ok):
    m, io, bus = board()
    fn = fn_()
    if ok:
        bus.plug(fn, where)
        assert bus.functions[where] is fn and fn.devfn == where
    else:
        with pytest.raises(PciAddressError) as e:
            bus.plug(fn, where)
        assert str(e.value) == f"PCI devfn {where:#x} is past the bus (0..0xff)"
        assert bus.functions == {}


def test_a_functions_guest_errors_go_to_the_boards_record_or_nowhere():
    m, io, bus = board()
    bus.guest_error("pci_thing", "ignored without a recorder")
    seen = []
    bus.on_guest_error = lambda kind, detail: seen.append((kind, detail))
    bus.guest_error("pci_thing", "recorded")
    assert seen == [("pci_thing", "recorded")]


def test_a_taken_devfn_is_in_use():
    m, io, bus = board()
    first = fn_()
    bus.plug(first, devfn(3))
    with pytest.raises(PciPlugError) as e:
        bus.plug(fn_(), devfn(3))
    assert e.value.kind == "in-use" and e.value.other is first and e.value.devfn == devfn(3)
    first.name = "virtio-rng"
    assert str(PciPlugError("in-use", devfn(3), first)) == "PCI 00:03.0: in-use (virtio-rng at 00:03.0)"
    assert str(PciPlugError("full", None)) == "PCI bus 0: full"
    assert bus.functions[devfn(3)] is first


def test_single_function_zero_with_other_functions_present():
    m, io, bus = board()
    f1 = fn_()
    bus.plug(f1, devfn(3, 1))
    with pytest.raises(PciPlugError) as e:
        bus.plug(fn_(), devfn(3))
    assert e.value.kind == "single-function" and e.value.other is f1 and e.value.devfn == devfn(3)
    bus.plug(multi(), devfn(3))                     # a multifunction function 0 is fine
    assert bus.find(0, devfn(3, 1)) is f1


def test_functions_of_other_slots_do_not_count():
    m, io, bus = board()
    bus.plug(fn_(), devfn(5))
    bus.plug(fn_(), devfn(4))
    bus.plug(fn_(), devfn(3))
    bus.plug(fn_(), devfn(2, 7))
    with pytest.raises(PciPlugError) as e:
        bus.plug(fn_(), devfn(2))
    assert e.value.kind == "single-function" and e.value.other.devfn == devfn(2, 7)


def test_only_header_type_bit_7_says_multifunction():
    """A bridge's header type (0x01) is not the multifunction bit."""
    m, io, bus = board()
    bus.plug(fn_(), devfn(8, 1))
    with pytest.raises(PciPlugError):
        bus.plug(fn_(header_type=0x01), devfn(8))
    bus.plug(fn_(header_type=0x01), devfn(9))
    with pytest.raises(PciPlugError):
        bus.plug(fn_(), devfn(9, 1))


def test_function_beyond_zero_needs_a_multifunction_function_zero():
    m, io, bus = board()
    f0 = fn_()
    bus.plug(f0, devfn(6))
    with pytest.raises(PciPlugError) as e:
        bus.plug(fn_(), devfn(6, 2))
    assert e.value.kind == "function-0-single" and e.value.other is f0
    assert e.value.devfn == devfn(6, 2)
    bus.plug(multi(), devfn(7))
    bus.plug(fn_(), devfn(7, 2))
    assert bus.find(0, devfn(7, 2)) is not None


def test_free_slot_is_the_first_empty_slot_from_one():
    m, io, bus = board()
    assert bus.free_slot() == 1
    bus.plug(fn_(), devfn(1))
    bus.plug(fn_(), devfn(2))
    assert bus.free_slot() == 3 and bus.free_slot(10) == 10
    for slot in range(3, 32):
        bus.plug(fn_(), devfn(slot))
    with pytest.raises(PciPlugError) as e:
        bus.free_slot()
    assert e.value.kind == "full"


def test_functions_are_found_by_bus_and_devfn():
    m, io, bus = board()
    f0, f1 = multi(), fn_()
    bus.plug(f0, devfn(3))
    bus.plug(f1, devfn(3, 1))
    lone = fn_()
    bus.plug(lone, devfn(9, 3))
    assert bus.find(0, devfn(3)) is f0 and bus.find(0, devfn(3, 1)) is f1
    assert bus.find(1, devfn(3)) is None and bus.find(0, devfn(4)) is None
    assert bus.find(0, devfn(9, 3)) is None                  # no function 0 in slot 9
    bus.plug(fn_(), devfn(8, 3))
    assert bus.find(0, devfn(8, 3)) is None
    assert bus.config_read(0, devfn(3, 1), 0, 2) == 0x1234


# --------------------------------------------------------------------------- config access


def test_accesses_past_the_config_space_are_cut_at_its_end():
    """pci_host_config_read/write_common: MIN(len, limit - addr)."""
    m, io, bus = board()
    fn = fn_()
    bus.plug(fn, devfn(3))
    bus.config_write(0, devfn(3), 0xFE, 4, 0x4433_2211)
    assert bus.config_read(0, devfn(3), 0xFC, 4) == 0x2211_0000
    assert bus.config_read(0, devfn(3), 0xFF, 4) == 0x22


def test_config_accesses_are_traced_with_the_bdf():
    m, io, bus = board()
    bus.plug(fn_(), devfn(3, 0))
    bus.tracer = Tracer()
    bus.config_read(0, devfn(3), 0, 4)                        # tracer disabled: nothing
    events = bus.tracer.record()
    bus.config_read(0, devfn(3), 0xFE, 4)
    bus.config_write(0, devfn(3), 0x3C, 1, 0x0B)
    bus.config_write(0, devfn(4), 0x3C, 1, 0x0B)              # nobody there: not traced
    assert [(e.name, e.fields) for e in events] == [
        ("pci_cfg_read", {"bdf": "00:03.0", "offset": 0xFE, "size": 2, "value": 0}),
        ("pci_cfg_write", {"bdf": "00:03.0", "offset": 0x3C, "size": 1, "value": 0x0B})]


# --------------------------------------------------------------------------- capabilities


def test_capabilities_keep_their_bytes_and_the_header():
    """pci_add_capability writes only the ID and next pointer, makes the capability
    read-only, and sets PCI_STATUS_CAP_LIST without touching its neighbours."""
    fn = fn_(revision=7)
    fn.config.set(0x60, 4, 0xAABB_0000)                         # body written first
    fn.add_capability(0x09, 0x60, 16)
    fn.add_capability(0x05, 0x40, 16)                           # lower offset, added later
    assert fn.config_read(0x60, 4) == 0xAABB_0009
    assert fn.config_read(0x08, 1) == 7
    fn.config_write(0x60, 4, 0)
    fn.config_write(0x64, 4, 0xFFFF_FFFF)
    assert fn.config_read(0x60, 4) == 0xAABB_0009 and fn.config_read(0x64, 4) == 0
    fn.config_write(0x70, 1, 0x12)                              # past both: writable
    assert fn.config_read(0x70, 1) == 0x12
    assert fn.capabilities() == [(0x05, 0x40), (0x09, 0x60)]


def test_capability_walk_reads_one_byte_pointers_and_stops_on_a_loop():
    fn = fn_()
    fn.add_capability(0x09, 0x50, 16)
    fn.config.set(0x52, 1, 0x10)                                # vendor cap_len after next
    fn.add_capability(0x11, 0x40, 12)
    fn.config.set(0x42, 2, 0x8003)                              # MSI-X control after next
    assert fn.capabilities() == [(0x11, 0x40), (0x09, 0x50)]
    fn.config.set(0x51, 1, 0x40)                                # a device's broken list
    assert fn.capabilities() == [(0x11, 0x40), (0x09, 0x50)]


# --------------------------------------------------------------------------- conf1


def conf1(first="idx"):
    m, io, bus = board()
    fn = fn_()
    fn.register_bar(1, MmioRegion("bar", 0x1000, Regs()))
    bus.plug(fn, devfn(3))
    host = PciHostConf1(bus)
    idx, data = host.regions()
    order = [(idx, 0xCF8), (data, 0xCFC)]
    for region, port in (order if first == "idx" else order[::-1]):
        io.add(region, port)
    io.commit()
    return io, host, fn


def test_conf1_windows_are_qemus_regions():
    io, host, fn = conf1(first="data")
    assert [r.name for r in host.regions()] == ["pci-conf-idx", "pci-conf-data"]
    assert io.read(0xCF8, 4) == 0                       # the latch starts clear
    io.write(0xCF8, 4, 0x8000_1804)
    assert io.read(0xCF8, 1) == 0x04 and io.read(0xCF8, 2) == 0x1804
    io.write(0xCF8, 1, 0x00)                            # pci_host_config_write: only 4 bytes at 0
    io.write(0xCF8, 2, 0x0000)
    assert io.read(0xCF8, 4) == 0x8000_1804
    assert io.read(0xCFC, 2) == 0                       # the data window, not the latch
    assert io.read(0xD00, 4) == 0xFFFF_FFFF             # past the data window: nobody
    host.reset()                                        # QEMU: no reset handler
    assert io.read(0xCF8, 4) == 0x8000_1804


def test_conf1_data_writes_reach_the_latched_register_by_byte_lane():
    io, host, fn = conf1()
    io.write(0xCF8, 4, 0x8000_1814)                     # 00:03.0 BAR1
    io.write(0xCFE, 2, 0xFEB0)
    io.write(0xCF8, 4, 0x8000_1804)
    io.write(0xCFC, 1, MEM)
    assert fn.bar_address(1) == 0xFEB0_0000
    io.write(0xCF8, 4, 0x0000_1804)                     # enable bit clear: dropped
    io.write(0xCFC, 2, 0)
    io.write(0xCF8, 4, 0x8000_1904)                     # 00:03.1: absent, dropped
    io.write(0xCFC, 2, 0)
    assert fn.config_read(PciReg.COMMAND, 2) == MEM
    io.write(0xCF8, 4, 0x8000_1808)
    io.write(0xCFD, 1, 0x55)                            # revision is read-only
    assert fn.config_read(0x08, 4) == 0x00FF_0000
