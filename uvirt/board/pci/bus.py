"""Conventional PCI: configuration space, BARs, capabilities, the conf1 host interface.

Configuration space (QEMU ``hw/pci/pci.c``; docs/virtio-pci-facts.md §1)
    256 bytes of values plus a per-byte write mask and write-1-to-clear mask.  A write
    does ``cfg = (cfg & ~wmask) | (val & wmask)`` then ``cfg &= ~(val & w1cmask)``.
    Header defaults are QEMU's ``pci_init_wmask``/``pci_init_w1cmask``: command writable
    bits 0x0507, cache line size and interrupt line writable, status error bits W1C,
    bytes 0x40-0xFF writable until a capability claims them.

BARs (``pci_register_bar``, ``pci_bar_address``)
    A BAR register's wmask is ``~(size - 1)`` over the address bits, so sizing
    read-backs come for free.  After any config write touching the command register,
    a BAR or the ROM BAR, every BAR's effective address is recomputed with QEMU's rules
    (decode bit, ROM enable, address 0, wrap, 32-bit end >= 4 GiB) and
    ``config_write`` returns the resulting ``BarChange`` list; the bus applies it to
    the memory map or the port space and commits.  The change list is a plain value so
    tests assert it without a CPU.

Bus placement
    Memory BARs live in the PCI address space, which on QEMU's ``pc`` sits *below*
    system RAM (priority -1 against RAM's 0): a BAR programmed over RAM is hidden by
    RAM.  Among BARs the one mapped last wins.  I/O BARs sit at priority 1 over the
    ISA devices (priority 0), as QEMU's ``pci_update_mappings``.

Config mechanism #1 (``hw/pci/pci_host.c``)
    0xCF8 latches only 32-bit writes at offset 0 and reads back the latch; 0xCFC-0xCFF
    access ``latch | (port & 3)``; the enable bit clear or an absent bus/function read
    all ones and drop writes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Callable, NamedTuple

from uvirt.errors import UvirtError
from uvirt.board.memory.regions import IoSpace, MemoryMap, MmioRegion, Placement, RamRegion, Region

CONFIG_SPACE_SIZE = 0x100
HEADER_SIZE = 0x40
ROM_SLOT = 6


class PciReg(IntEnum):
    """Type-0 header (PCI Local Bus 3.0 §6.1; Linux ``pci_regs.h`` names)."""

    VENDOR_ID = 0x00
    DEVICE_ID = 0x02
    COMMAND = 0x04
    STATUS = 0x06
    REVISION_ID = 0x08
    CLASS_PROG = 0x09
    CLASS_DEVICE = 0x0A
    CACHE_LINE_SIZE = 0x0C
    LATENCY_TIMER = 0x0D
    HEADER_TYPE = 0x0E
    BIST = 0x0F
    BASE_ADDRESS_0 = 0x10
    CARDBUS_CIS = 0x28
    SUBSYSTEM_VENDOR_ID = 0x2C
    SUBSYSTEM_ID = 0x2E
    ROM_ADDRESS = 0x30
    CAPABILITY_LIST = 0x34
    INTERRUPT_LINE = 0x3C
    INTERRUPT_PIN = 0x3D
    MIN_GNT = 0x3E
    MAX_LAT = 0x3F


class Command(IntFlag):
    IO = 0x0001
    MEMORY = 0x0002
    MASTER = 0x0004
    SERR = 0x0100
    INTX_DISABLE = 0x0400


class Status(IntFlag):
    INTERRUPT = 0x0008
    CAP_LIST = 0x0010
    PARITY = 0x0100
    SIG_TARGET_ABORT = 0x0800
    REC_TARGET_ABORT = 0x1000
    REC_MASTER_ABORT = 0x2000
    SIG_SYSTEM_ERROR = 0x4000
    DETECTED_PARITY = 0x8000


class CapId(IntEnum):
    MSI = 0x05
    VENDOR = 0x09
    EXP = 0x10
    MSIX = 0x11


BAR_IO = 0x01
BAR_MEM_TYPE_64 = 0x04
BAR_MEM_PREFETCH = 0x08
ROM_ENABLE = 0x01

HEADER_MULTI_FUNCTION = 0x80

# Plain ints for hot paths: ``int & IntFlag`` dispatches to IntFlag.__rand__ (slow), and
# an IntEnum member compares slower than an int.
_COMMAND, _BAR0, _ROM = PciReg.COMMAND.value, PciReg.BASE_ADDRESS_0.value, PciReg.ROM_ADDRESS.value
_CMD_IO, _CMD_MEMORY, _CMD_MASTER, _CMD_INTX_DISABLE = 0x1, 0x2, 0x4, 0x400
_STATUS_INTERRUPT = 0x8

#: QEMU ``pci_init_wmask`` (command) and ``pci_init_w1cmask`` (status).
COMMAND_WMASK = Command.IO | Command.MEMORY | Command.MASTER | Command.SERR | Command.INTX_DISABLE
STATUS_W1C = (Status.PARITY | Status.SIG_TARGET_ABORT | Status.REC_TARGET_ABORT
              | Status.REC_MASTER_ABORT | Status.SIG_SYSTEM_ERROR | Status.DETECTED_PARITY)


#: little-endian reads of a 32 and a 64-bit BAR register
_U32, _U64 = struct.Struct("<I").unpack_from, struct.Struct("<Q").unpack_from
#: little-endian word access to config space by size: (unpack_from, pack_into)
_WORDS = {n: (struct.Struct(f).unpack_from, struct.Struct(f).pack_into)
          for n, f in ((1, "<B"), (2, "<H"), (4, "<I"))}


class PciConfigSpace:
    """Values + write masks; knows nothing of BARs or buses."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("data",)

    def __init__(self) -> None:
        self.data = bytearray(CONFIG_SPACE_SIZE)
        self.wmask = bytearray(CONFIG_SPACE_SIZE)
        self.w1cmask = bytearray(CONFIG_SPACE_SIZE)

    def get(self, offset: int, size: int) -> int:
        word = _WORDS.get(size)
        if word is not None and 0 <= offset <= CONFIG_SPACE_SIZE - size:
            return word[0](self.data, offset)[0]          # (no slice made)
        return int.from_bytes(self.data[offset:offset + size], "little")

    def set(self, offset: int, size: int, value: int) -> None:
        """Host-side store: ignores the masks."""
        self.data[offset:offset + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def set_wmask(self, offset: int, size: int, mask: int) -> None:
        self.wmask[offset:offset + size] = mask.to_bytes(size, "little")

    def set_w1cmask(self, offset: int, size: int, mask: int) -> None:
        self.w1cmask[offset:offset + size] = mask.to_bytes(size, "little")

    def guest_write(self, offset: int, size: int, value: int) -> None:
        """A guest store through the masks (QEMU ``pci_default_write_config``).  The
        masks apply bit by bit, so a whole 1, 2 or 4-byte access is done as one word
        (a BAR move is such a write); any other size (clipped at the end of the space)
        byte by byte."""
        data, wmask, w1c = self.data, self.wmask, self.w1cmask
        word = _WORDS.get(size)
        if word is not None:
            unpack, pack = word
            value &= (1 << (size << 3)) - 1
            w = unpack(wmask, offset)[0]
            new = (unpack(data, offset)[0] & ~w) | (value & w)
            pack(data, offset, new & ~(value & unpack(w1c, offset)[0]))
            return
        for i in range(size):
            b = (value >> (8 * i)) & 0xFF
            o = offset + i
            data[o] = ((data[o] & ~wmask[o]) | (b & wmask[o])) & ~(b & w1c[o]) & 0xFF


@dataclass
class Bar:
    """A base address register and the region it decodes."""

    index: int
    region: Region
    io: bool = False
    mem64: bool = False
    prefetch: bool = False
    placement: Placement | None = None
    #: ``callback(addr or None)`` after the BAR is mapped, moved or unmapped.
    listeners: list = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.region.size

    @property
    def flags(self) -> int:
        if self.io:
            return BAR_IO
        return (BAR_MEM_TYPE_64 if self.mem64 else 0) | (BAR_MEM_PREFETCH if self.prefetch else 0)


class BarChange(NamedTuple):
    """Result of a config write: BAR ``index`` moved from ``old`` to ``new`` (None = unmapped).
    (A named tuple, not a frozen dataclass: every BAR move makes one, and a frozen
    dataclass costs an ``object.__setattr__`` per field.)"""

    index: int
    old: int | None
    new: int | None


#: ``_new(BarChange, (index, old, new))``: without the named tuple's generated ``__new__``
_new = tuple.__new__


class PciError(UvirtError):
    """A host-side PCI mistake: a device model or the builder asked the bus for something
    it cannot do.  Never a guest's mistake (those are recorded guest errors)."""


class PciAddressError(PciError, ValueError):
    """A slot past 31 or a function past 7 (also a ValueError: a bad argument)."""


class PciBarError(PciError, ValueError):
    """A BAR a device model cannot have: not a power of two, too small, a 64-bit BAR at
    BAR5 (also a ValueError: a bad argument)."""


class PciPlugError(PciError):
    """A function that cannot go where it was asked (QEMU ``do_pci_register_device``):
    ``kind`` is ``in-use`` (the devfn is taken by ``other``), ``single-function`` (function
    0 without the multifunction bit while ``other`` sits at a higher function),
    ``function-0-single`` (function 0, ``other``, is not multifunction) or ``full``.
    The -device builder words it as QEMU does, with the device names
    (``uvirt.launch.device_table.pci_plug_words``)."""

    def __init__(self, kind: str, devfn_: int | None, other: "PciFunction | None" = None) -> None:
        self.kind, self.devfn, self.other = kind, devfn_, other
        where = bdf_str(devfn_) if devfn_ is not None else "bus 0"
        super().__init__(f"PCI {where}: {kind}" + (f" ({other.name} at "
                                                   f"{bdf_str(other.devfn)})" if other else ""))


def _header_masks() -> tuple[bytes, bytes]:
    """QEMU ``pci_init_wmask``/``pci_init_w1cmask``: cache line size, interrupt line and
    the command bits writable, the status error bits write-1-to-clear, 0x40-0xFF writable
    until a capability claims them."""
    c = PciConfigSpace()
    c.set_wmask(PciReg.CACHE_LINE_SIZE, 1, 0xFF)
    c.set_wmask(PciReg.INTERRUPT_LINE, 1, 0xFF)
    c.set_wmask(PciReg.COMMAND, 2, int(COMMAND_WMASK))
    c.set_w1cmask(PciReg.STATUS, 2, int(STATUS_W1C))
    c.wmask[HEADER_SIZE:] = b"\xff" * (CONFIG_SPACE_SIZE - HEADER_SIZE)
    return bytes(c.wmask), bytes(c.w1cmask)


#: the masks every function starts from (constants: made once, copied per function)
_HEADER_WMASK, _HEADER_W1CMASK = _header_masks()
#: a function's identity in its header: vendor and device ID (0x00), revision,
#: programming interface and class (0x08), header type (0x0E); subsystem vendor and ID
#: (0x2C); interrupt pin (0x3D)
_IDENTITY = struct.Struct("<HH4xBBH2xB")
_SUBSYSTEM = struct.Struct("<HH")
_SUBSYSTEM_VENDOR_ID, _INTERRUPT_PIN = PciReg.SUBSYSTEM_VENDOR_ID.value, PciReg.INTERRUPT_PIN.value


class PciFunction:
    """A PCI function: identity, config space, BARs, capabilities.

    Device models subclass it and override ``config_read``/``config_write`` for
    device-specific registers (calling ``super()``).  Never imports Unicorn.
    """
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("config", "intx_level")

    name = "pci-function"
    #: QEMU's type name and -device id, for QEMU's wording of a taken slot ("in use by
    #: PIIX3,id=(null)"); the -device builder sets both on what it creates
    qom_type: str | None = None
    qdev_id: str | None = None

    def __init__(self, *, vendor_id: int, device_id: int, class_code: int, revision: int = 0,
                 prog_if: int = 0, header_type: int = 0, subsystem_vendor_id: int = 0x1AF4,
                 subsystem_id: int = 0x1100, interrupt_pin: int = 0) -> None:
        self.config = c = PciConfigSpace()
        data = c.data
        _IDENTITY.pack_into(data, 0, vendor_id & 0xFFFF, device_id & 0xFFFF, revision & 0xFF,
                            prog_if & 0xFF, class_code & 0xFFFF, header_type & 0xFF)
        _SUBSYSTEM.pack_into(data, _SUBSYSTEM_VENDOR_ID, subsystem_vendor_id & 0xFFFF,
                             subsystem_id & 0xFFFF)
        data[_INTERRUPT_PIN] = interrupt_pin & 0xFF
        c.wmask[:] = _HEADER_WMASK
        c.w1cmask[:] = _HEADER_W1CMASK
        self.bars: list[Bar | None] = [None] * 7
        self.bar_addr: list[int | None] = [None] * 7
        #: (offset, size) of a config write -> the BARs whose register it overlaps
        self._written: dict[tuple[int, int], tuple[int, ...]] = {}
        self.devfn: int | None = None
        self.bus: PciBus | None = None
        self._reset_image: bytes | None = None
        self.intx_level = 0

    # -- construction (host side)
    def register_bar(self, index: int, region: Region, *, io: bool = False, mem64: bool = False,
                     prefetch: bool = False) -> Bar:
        size = region.size
        if size & (size - 1) or size < (4 if io else 16):
            raise PciBarError(f"{self.name}: BAR{index} size 0x{size:x} is not a power of two >= "
                              f"{'4' if io else '16'}")
        if mem64 and index >= 5:
            raise PciBarError(f"{self.name}: a 64-bit BAR cannot start at BAR{index}")
        bar = Bar(index, region, io=io, mem64=mem64, prefetch=prefetch)
        self.bars[index] = bar
        self._written = {}               # which BARs a write touches: made again on use
        reg = self.bar_reg(index)
        c = self.config
        c.set(reg, 4, bar.flags)
        if mem64:
            mask = ~(size - 1) & 0xFFFFFFFFFFFFFFFF
            c.set_wmask(reg, 8, mask)
        elif index == ROM_SLOT:
            c.set_wmask(reg, 4, (~(size - 1) & 0xFFFFFFFF) | ROM_ENABLE)
        else:
            c.set_wmask(reg, 4, ~(size - 1) & 0xFFFFFFFF)
        # QEMU keeps the IO BAR's upper 16 bits writable too (sizing reads 0xFFFFFFE1 for 32 B).
        return bar

    def register_rom(self, region: Region) -> Bar:
        return self.register_bar(ROM_SLOT, region)

    @staticmethod
    def bar_reg(index: int) -> int:
        return PciReg.ROM_ADDRESS if index == ROM_SLOT else PciReg.BASE_ADDRESS_0 + 4 * index

    def add_capability(self, cap_id: int, offset: int, size: int) -> int:
        """Insert a capability at the head of the list, as QEMU's ``pci_add_capability``;
        its bytes become read-only (device code opens the fields it wants writable)."""
        c = self.config
        c.set(offset, 1, cap_id)
        c.set(offset + 1, 1, c.get(PciReg.CAPABILITY_LIST, 1))
        c.set(PciReg.CAPABILITY_LIST, 1, offset)
        c.set(PciReg.STATUS, 2, c.get(PciReg.STATUS, 2) | Status.CAP_LIST)
        c.wmask[offset:offset + size] = bytes(size)
        return offset

    def capabilities(self) -> list[tuple[int, int]]:
        """(id, offset) in list order."""
        out, ptr, seen = [], self.config.get(PciReg.CAPABILITY_LIST, 1), set()
        while ptr >= 0x40 and ptr not in seen:
            seen.add(ptr)
            out.append((self.config.get(ptr, 1), ptr))
            ptr = self.config.get(ptr + 1, 1)
        return out

    def freeze_reset_state(self) -> None:
        """Remember the realized config image; ``reset()`` returns to it."""
        self._reset_image = bytes(self.config.data)

    # -- guest side
    def config_read(self, offset: int, size: int) -> int:
        return self.config.get(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> list[BarChange]:
        old_effective = self.intx_level and not self.command & _CMD_INTX_DISABLE
        self.config.guest_write(offset, size, value)
        end = offset + size
        if offset <= _COMMAND < end:
            # INTx disable toggled; QEMU looks only when the write covers byte 0x04
            # (range_covers_byte(addr, l, PCI_COMMAND)), though the bit is in byte 0x05
            self._propagate_intx(old_effective)
            return self.update_mappings()
        if offset < _BAR0 + 24 and _BAR0 < end or offset < _ROM + 4 and _ROM < end:
            if type(self).update_mappings is not PciFunction.update_mappings:
                return self.update_mappings()          # a subclass follows more than BARs
            # QEMU's pci_update_mappings looks at every BAR; only those whose register
            # was written can have moved (a BAR's address is its register and the
            # command bits): a BAR move (benchmarks/bench_regions.py) decodes one
            return self._update_bars(offset, size)
        return []

    @property
    def command(self) -> int:
        return self.config.get(PciReg.COMMAND, 2)

    def bar_address(self, index: int) -> int | None:
        """QEMU ``pci_bar_address``: where BAR ``index`` decodes now, or None."""
        bar = self.bars[index]
        if bar is None:
            return None
        data, size = self.config.data, bar.region.size
        cmd = data[4]                   # the command register's IO and MEMORY bits
        reg = 0x30 if index == ROM_SLOT else 0x10 + 4 * index      # bar_reg, inlined (BAR moves)
        if bar.io:
            if not cmd & _CMD_IO:
                return None
            addr = _U32(data, reg)[0] & ~(size - 1) & 0xFFFFFFFF
            last = addr + size - 1
            if last <= addr or last >= 0xFFFFFFFF or addr == 0:
                return None
            return addr
        if not cmd & _CMD_MEMORY:
            return None
        raw = (_U64 if bar.mem64 else _U32)(data, reg)[0]
        if index == ROM_SLOT and not raw & ROM_ENABLE:
            return None
        addr = raw & ~(size - 1) & 0xFFFFFFFFFFFFFFFF
        last = addr + size - 1
        if last <= addr or last == 0xFFFFFFFFFFFFFFFF or addr == 0:
            return None
        if not bar.mem64 and last >= 0xFFFFFFFF:
            return None
        return addr

    def _update_bars(self, offset: int, size: int) -> list[BarChange]:
        """``update_mappings`` for the BARs whose register overlaps a written range
        (``_bars_written``, kept per written range: a guest writes the same few)."""
        written = self._written.get((offset, size))
        if written is None:
            written = self._written[(offset, size)] = self._bars_written(offset, size)
        changes = []
        bar_addr = self.bar_addr
        for i in written:
            new = self.bar_address(i)
            if new != bar_addr[i]:
                changes.append(_new(BarChange, (i, bar_addr[i], new)))
                bar_addr[i] = new
        return changes

    def _bars_written(self, offset: int, size: int) -> tuple[int, ...]:
        """The registered BARs whose register overlaps [offset, offset + size): BARs 0-5
        from the one whose 8-byte register could reach ``offset`` to the last whose
        register starts before the end, and the ROM BAR."""
        end = offset + size
        first, last = (offset - 0x14) >> 2, (end - 0x11) >> 2
        indices = [*range(first if first > 0 else 0, (last if last < 5 else 5) + 1)]
        if offset < _ROM + 4 and _ROM < end:
            indices.append(ROM_SLOT)
        out = []
        for i in indices:
            bar = self.bars[i]
            if bar is not None:
                reg = 0x30 if i == ROM_SLOT else 0x10 + 4 * i
                if reg < end and offset < reg + (8 if bar.mem64 else 4):
                    out.append(i)
        return tuple(out)

    def update_mappings(self) -> list[BarChange]:
        changes = []
        for i, bar in enumerate(self.bars):
            if bar is None:
                continue
            new = self.bar_address(i)
            if new != self.bar_addr[i]:
                changes.append(BarChange(i, self.bar_addr[i], new))
                self.bar_addr[i] = new
        return changes

    def reset(self) -> list[BarChange]:
        """Device reset: config space back to its realized image, BARs unmapped."""
        if self._reset_image is not None:
            self.config.data[:] = self._reset_image
        self.set_intx(0)
        return self.update_mappings()

    # -- interrupts
    def set_intx(self, level: int) -> None:
        """Drive this function's INTx pin (QEMU ``pci_set_irq``).  Status bit 3 follows the
        level even while INTx is disabled; the bus sees it only while it is enabled."""
        level = 1 if level else 0
        data = self.config.data
        if level:
            data[6] |= _STATUS_INTERRUPT
        else:
            data[6] &= ~_STATUS_INTERRUPT & 0xFF
        if level == self.intx_level:
            return
        old_effective = self.intx_level and not data[5] & (_CMD_INTX_DISABLE >> 8)
        self.intx_level = level
        self._propagate_intx(old_effective)

    def _propagate_intx(self, old_effective: int) -> None:
        new_effective = self.intx_level and not self.config.data[5] & (_CMD_INTX_DISABLE >> 8)
        pin = self.config.data[PciReg.INTERRUPT_PIN]
        if bool(old_effective) != bool(new_effective) and pin and self.bus is not None:
            self.bus.intx_changed(self, pin, 1 if new_effective else 0)

    def bus_master(self) -> bool:
        return bool(self.config.data[4] & _CMD_MASTER)

    def msi_write(self, address: int, data: int) -> None:
        """Send an MSI/MSI-X message: a 32-bit write through the bus-master address space
        (QEMU ``msi_send_message``); dropped while bus mastering is off."""
        if self.bus is not None and self.bus_master():
            self.bus.msi_write(address, data)


# --------------------------------------------------------------------------- the bus


def devfn(slot: int, fn: int = 0) -> int:
    """``slot`` 0..31 and ``fn`` 0..7 as one devfn byte (QEMU ``PCI_DEVFN``)."""
    if not (0 <= slot < 32 and 0 <= fn < 8):
        raise PciAddressError(f"PCI slot {slot:#x} function {fn:#x}: a slot is 0..0x1f, "
                              f"a function 0..7")
    return (slot << 3) | fn


def bdf_str(devfn_: int, bus: int = 0) -> str:
    return f"{bus:02x}:{devfn_ >> 3:02x}.{devfn_ & 7:x}"


class PciBus:
    """Bus 0: functions by devfn, and the BAR placements they own."""

    MEM_BAR_PRIORITY = -1     # the PCI address space is below system RAM on pc
    IO_BAR_PRIORITY = 1       # over ISA devices

    def __init__(self, memory: MemoryMap, io: IoSpace) -> None:
        self.memory = memory
        self.io = io
        self.functions: dict[int, PciFunction] = {}
        self.on_change: Callable[[PciFunction, BarChange], None] | None = None
        self.tracer = None           # a uvirt.trace.Tracer, set by the board
        #: ``(kind, detail)``: where functions report guest errors (the board's record)
        self.on_guest_error: Callable[[str, str], None] | None = None
        #: INTx sink: (function, pin 1-4, level).  The interrupt controller (PIIX3 PIRQ
        #: routing -> 8259) installs itself here; without one, levels go nowhere.
        self.intx_sink: Callable[[PciFunction, int, int], None] | None = None

    def guest_error(self, kind: str, detail: str) -> None:
        """A plugged function's guest error: recorded by the board, never raised."""
        if self.on_guest_error is not None:
            self.on_guest_error(kind, detail)

    def intx_changed(self, fn: "PciFunction", pin: int, level: int) -> None:
        if self.intx_sink is not None:
            self.intx_sink(fn, pin, level)

    def msi_write(self, address: int, data: int) -> None:
        """An MSI message is a DMA write of ``data`` to ``address``: whatever decodes it
        (the local APIC window at 0xFEE00000, or RAM under qtest) receives it.  Nothing
        decodes above 4 GiB on pc: a 64-bit address with its upper half set is lost."""
        if address >> 32:
            return
        value = data & 0xFFFFFFFF
        if self.memory.ram_piece(address) is not None:
            # a message aimed at RAM (libqos under qtest, a fuzzer's table entry) is a DMA
            # store, as QEMU's address_space_stl_le: the snapshot's dirty log sees it and
            # code translated from it is dropped
            self.memory.guest.write(address, value.to_bytes(4, "little"))
            return
        self.memory.write(address, 4, value)

    def plug(self, fn: PciFunction, devfn_: int) -> None:
        """QEMU ``do_pci_register_device``'s checks, then the function is on the bus.  A
        function 0 without the multifunction bit (header type bit 7) keeps the slot's
        other functions empty, and a function > 0 needs function 0 to be multifunction."""
        if not 0 <= devfn_ < 256:
            raise PciAddressError(f"PCI devfn {devfn_:#x} is past the bus (0..0xff)")
        if devfn_ in self.functions:
            raise PciPlugError("in-use", devfn_, self.functions[devfn_])
        slot0 = devfn_ & ~7
        multi = fn.config.get(PciReg.HEADER_TYPE, 1) & 0x80
        if devfn_ == slot0 and not multi:
            for f in range(1, 8):
                if slot0 | f in self.functions:
                    raise PciPlugError("single-function", devfn_, self.functions[slot0 | f])
        f0 = self.functions.get(slot0)
        if devfn_ != slot0 and f0 is not None and not f0.config.get(PciReg.HEADER_TYPE, 1) & 0x80:
            raise PciPlugError("function-0-single", devfn_, f0)
        fn.devfn = devfn_
        fn.bus = self
        if fn._reset_image is None:
            fn.freeze_reset_state()
        self.functions[devfn_] = fn
        self.apply(fn, fn.update_mappings())

    def free_slot(self, start: int = 1) -> int:
        for slot in range(start, 32):
            if devfn(slot) not in self.functions:
                return slot
        raise PciPlugError("full", None)

    def find(self, bus: int, devfn_: int) -> PciFunction | None:
        if bus != 0:
            return None
        fn = self.functions.get(devfn_)
        if fn is None:
            return None
        # Functions other than 0 are visible only when function 0 exists.
        if devfn_ & 7 and (devfn_ & ~7) not in self.functions:
            return None
        return fn

    def config_read(self, bus: int, devfn_: int, offset: int, size: int) -> int:
        fn = self.find(bus, devfn_)
        if fn is None:
            return (1 << (8 * size)) - 1
        size = min(size, CONFIG_SPACE_SIZE - offset)
        value = fn.config_read(offset, size)
        if self.tracer is not None and self.tracer.enabled:
            self.tracer.emit("pci_cfg_read", bdf=bdf_str(devfn_, bus), offset=offset, size=size, value=value)
        return value

    def config_write(self, bus: int, devfn_: int, offset: int, size: int, value: int) -> None:
        fn = self.functions.get(devfn_) if bus == 0 else None
        if fn is None or devfn_ & 7 and (devfn_ & ~7) not in self.functions:
            return                       # find(), inline (every BAR move comes here)
        size = min(size, CONFIG_SPACE_SIZE - offset)
        if self.tracer is not None and self.tracer.enabled:
            self.tracer.emit("pci_cfg_write", bdf=bdf_str(devfn_, bus), offset=offset, size=size, value=value)
        self.apply(fn, fn.config_write(offset, size, value))

    def apply(self, fn: PciFunction, changes: list[BarChange]) -> None:
        """Move BAR regions where the config write says; commit each touched space once."""
        touched_mem = touched_io = False
        for ch in changes:
            bar = fn.bars[ch.index]
            assert bar is not None
            space = self.io if bar.io else self.memory
            if ch.new is None:
                if bar.placement is not None:
                    bar.placement.set_enabled(False)
            elif bar.placement is None:
                prio = self.IO_BAR_PRIORITY if bar.io else self.MEM_BAR_PRIORITY
                bar.placement = space.add(bar.region, ch.new, prio)
            else:
                p = bar.placement
                space.move(p, ch.new)
                if not p.enabled:
                    space.set_enabled(p, True)
            touched_io |= bar.io
            touched_mem |= not bar.io
            if self.on_change is not None:
                self.on_change(fn, ch)
            for cb in bar.listeners:
                cb(ch.new)
        if touched_mem:
            self.memory.commit()
        if touched_io:
            self.io.commit()

    def reset(self) -> None:
        for fn in self.functions.values():
            self.apply(fn, fn.reset())


class PciHostConf1:
    """Configuration mechanism #1: the 0xCF8 address latch and the 0xCFC data window.

    Two register windows (QEMU ``pci_host_conf_le_ops`` / ``pci_host_data_le_ops``),
    served by ``address_device`` and ``data_device``.
    """
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("config_reg",)

    CONFIG_ADDRESS = 0xCF8
    CONFIG_DATA = 0xCFC
    ENABLE = 0x80000000

    def __init__(self, bus: PciBus) -> None:
        self.bus = bus
        self.config_reg = 0
        self.address_device = _Conf1Address(self)
        self.data_device = _Conf1Data(self)

    def regions(self) -> tuple[MmioRegion, MmioRegion]:
        return (MmioRegion("pci-conf-idx", 4, self.address_device, valid_sizes=(1, 2, 4)),
                MmioRegion("pci-conf-data", 4, self.data_device, valid_sizes=(1, 2, 4)))

    def reset(self) -> None:
        """System reset keeps the latch: QEMU's PCI host bridge has no reset handler
        (qtest on QEMU 7.2: ``inl 0xcf8`` after QMP ``system_reset`` reads the old value)."""

    def _target(self, port_offset: int) -> tuple[int, int, int]:
        addr = self.config_reg | port_offset
        return (addr >> 16) & 0xFF, (addr >> 8) & 0xFF, addr & 0xFF


class _Conf1Address:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, host: PciHostConf1) -> None:
        self.host = host

    def read(self, offset: int, size: int) -> int:
        return self.host.config_reg

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0 and size == 4:           # byte/word stores to 0xCF8-0xCFB are ignored
            self.host.config_reg = value & 0xFFFFFFFF


class _Conf1Data:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, host: PciHostConf1) -> None:
        self.host = host

    def read(self, offset: int, size: int) -> int:
        h = self.host
        if not h.config_reg & PciHostConf1.ENABLE:
            return 0xFFFFFFFF
        bus, dfn, off = h._target(offset)
        return h.bus.config_read(bus, dfn, off, size)

    def write(self, offset: int, size: int, value: int) -> None:
        h = self.host
        if not h.config_reg & PciHostConf1.ENABLE:
            return
        bus, dfn, off = h._target(offset)
        h.bus.config_write(bus, dfn, off, size, value)


__all__ = [
    "Bar", "BarChange", "CapId", "Command", "PciBus", "PciConfigSpace", "PciFunction",
    "PciHostConf1", "PciReg", "Status", "bdf_str", "devfn", "RamRegion", "MmioRegion",
]
