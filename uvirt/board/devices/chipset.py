"""Small pieces of QEMU 7.2's pc chipset that firmware programs.

Port92 (hw/i386/port92.c, port 0x92): a byte register; bit 1 is the A20 gate (uvirt's
    CPU always has A20 on, as QEMU's does from reset; the bit is kept for read-back), a
    0 -> 1 edge of bit 0 requests a system reset.  Reset clears bit 0.

AcpiPm (hw/acpi/piix4.c ``pm_io_space_update``, hw/acpi/core.c): PIIX4's power
    management I/O block, 64 ports at PMBA (config 0x40 & 0xFFC0), decoded while
    PMREGMISC (config 0x80) bit 0 is set:
      +0 PM1_STS (16-bit, write 1 to clear)   +2 PM1_EN   +4 PM1_CNT (16-bit)
      +8 PM_TMR: 24-bit counter at 3.579545 MHz of the guest's virtual time (QEMU
         ``acpi_pm_tmr_get``: muldiv64(virtual ns, PM_TIMER_FREQUENCY, 1e9) & 0xffffff)
    Ports of the block nobody decodes read all ones.

Apm (hw/isa/apm.c, ports 0xB2/0xB3): APM control and status bytes.  A write to 0xB2
    other than ACPI enable/disable (0xF1/0xF0) raises an SMI when PIIX4 DEVACTB
    APMC_EN (config 0x5B bit 1) is set: the CPU enters System Management Mode
    (``Board.raise_smi``, uvirt/cpu/smm.py).

I8257 (hw/dma/i8257.c ``i8257_dma_init(isa_bus, 0)``): the two 8237 DMA controllers'
    registers.  Controller 1: channel address/count at 0x00-0x07 (one byte at a time
    through the flip-flop), command/request/single mask/mode/clear flip-flop/master
    clear/clear mask/write mask at 0x08-0x0F, page registers at 0x81-0x83 and 0x87;
    controller 2 the same with every register two ports wide at 0xC0-0xDF and pages at
    0x89-0x8B, 0x8F.  Reading 0x08/0xD0 gives the status (request bits cleared), 0x09/
    0xD2 the mask (QEMU's ``i8257_read_cont``), other control ports 0.  No ISA device
    requests DMA in uvirt, so nothing ever transfers.

KvmVapic (hw/i386/kvmvapic.c, port 0x7E; only with ``-bios``, where uvirt offers QEMU's
    ``genroms/kvmvapic.bin`` as QEMU's TCG pc does): the ROM's 16-bit write reports its
    state structure's offset; QEMU then maps the ROM's pages as writable RAM over
    everything (priority 1000: ``vapic_map_rom_writable``) and patches the ROM's
    ``vmcall`` hypercalls into ``nop; out 0x7e, eax`` (``patch_hypercalls``).  Reads give
    all ones.  The TPR-access reporting that follows (for Windows XP's TPR accesses)
    is not modelled.
"""

from __future__ import annotations

import time
from typing import Callable

PM_TIMER_FREQUENCY = 3579545
PM_IO_SIZE = 64
ACPI_ENABLE, ACPI_DISABLE = 0xF1, 0xF0


class Port92:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("outport",)

    def __init__(self, request_reset: Callable[[], None]) -> None:
        self.outport = 0
        self._request_reset = request_reset

    def reset(self) -> None:
        self.outport &= ~1

    def read(self, offset: int, size: int) -> int:
        return self.outport

    def write(self, offset: int, size: int, value: int) -> None:
        old, self.outport = self.outport, value & 0xFF
        if value & 1 and not old & 1:
            self._request_reset()


class AcpiPm:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("sts", "en", "cnt")

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.clock = clock
        self.sts = self.en = self.cnt = 0

    def reset(self) -> None:
        self.sts = self.en = self.cnt = 0

    def timer(self) -> int:
        return (self.clock() * PM_TIMER_FREQUENCY // 1_000_000_000) & 0xFFFFFF

    def read(self, offset: int, size: int) -> int:
        if 8 <= offset < 12:
            return (self.timer() >> (8 * (offset - 8))) & ((1 << (8 * size)) - 1)
        regs = self.sts | self.en << 16 | self.cnt << 32
        if offset < 6:
            return (regs >> (8 * offset)) & ((1 << (8 * size)) - 1)
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            o, b = offset + i, (value >> (8 * i)) & 0xFF
            if o < 2:
                self.sts &= ~(b << (8 * o))
            elif o < 4:
                self.en = (self.en & ~(0xFF << (8 * (o - 2)))) | b << (8 * (o - 2))
            elif o < 6:
                self.cnt = (self.cnt & ~(0xFF << (8 * (o - 4)))) | b << (8 * (o - 4))


class Apm:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("cnt", "sts")

    def __init__(self, smi_enabled: Callable[[], bool], on_smi: Callable[[int], None]) -> None:
        self.cnt = self.sts = 0
        self._smi_enabled = smi_enabled
        self._on_smi = on_smi

    def reset(self) -> None:
        pass                               # QEMU's apm has no reset handler

    def read(self, offset: int, size: int) -> int:
        return self.cnt if offset == 0 else self.sts

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == 0:
            self.cnt = value
            if value not in (ACPI_ENABLE, ACPI_DISABLE) and self._smi_enabled():
                self._on_smi(value)
        else:
            self.sts = value


ROM_BLOCK_SIZE = 512
VMCALL = bytes((0xB8, 0x1, 0, 0, 0, 0xF, 0x1))
OUTL_PATCH = bytes((0x90, 0xE7, 0x7E))


class KvmVapic:
    def __init__(self, ram: memoryview, cpu_pc: Callable[[], int],
                 map_writable: Callable[[int, int], None], write_ram: Callable[[int, bytes], None]) -> None:
        self.ram = ram
        self.cpu_pc = cpu_pc                # linear CS:EIP of the accessing instruction
        self.map_writable = map_writable
        self.write_ram = write_ram
        self.rom_state_paddr = 0

    def reset(self) -> None:
        self.rom_state_paddr = 0

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        if size == 2 and not self.rom_state_paddr:
            self.rom_state_paddr = (self.cpu_pc() & ~(ROM_BLOCK_SIZE - 1)) + value
        if size in (1, 2) and self.rom_state_paddr:
            self._prepare()

    def _prepare(self) -> None:
        rom = self.rom_state_paddr & ~(ROM_BLOCK_SIZE - 1)
        if rom + 2 >= len(self.ram) or not self.ram[rom + 2]:
            self.rom_state_paddr = 0
            return
        rom_size = self.ram[rom + 2] * ROM_BLOCK_SIZE
        start = rom & ~0xFFF
        end = (rom + rom_size + 0xFFF) & ~0xFFF
        self.map_writable(start, end - start)
        data = bytes(self.ram[rom:rom + rom_size])
        for pos in range(rom_size - 8):
            if data[pos:pos + 7] == VMCALL and data[pos + 7] in (0xC1, 0xD9):
                self.write_ram(rom + pos + 5, OUTL_PATCH)


CHANNELS_OF_PAGE = (-1, 2, 3, 1, -1, -1, -1, 0)


class I8257:
    """One 8237 (``dshift`` 0: controller 1, 1: controller 2)."""

    snapshot_state = ("base", "now", "mode", "page", "flip_flop", "mask", "status", "command")

    def __init__(self, dshift: int) -> None:
        self.dshift = dshift
        self.base = [[0, 0] for _ in range(4)]      # [address, count] as written
        self.now = [[0, 0] for _ in range(4)]
        self.mode = [0] * 4
        self.page = [0] * 4
        self.reset()

    def reset(self) -> None:
        self.flip_flop = 0
        self.mask = 0xFF
        self.status = 0
        self.command = 0

    def firmware_state(self) -> None:
        """SeaBIOS dma_setup: channel 4 (the cascade, controller 2's channel 0) in
        cascade mode and unmasked."""
        if self.dshift:
            self.mode[0] = 0xC0
            self.mask &= ~1

    def _ff(self) -> int:
        ff, self.flip_flop = self.flip_flop, self.flip_flop ^ 1
        return ff

    # channel registers
    def read_chan(self, port: int) -> int:
        iport = (port >> self.dshift) & 0x0F
        ch, reg = iport >> 1, iport & 1
        direction = -1 if (self.mode[ch] >> 5) & 1 else 1
        ff = self._ff()
        if reg:
            val = (self.base[ch][1] << self.dshift) - self.now[ch][1]
        else:
            val = self.now[ch][0] + self.now[ch][1] * direction
        return (val >> (self.dshift + (ff << 3))) & 0xFF

    def write_chan(self, port: int, value: int) -> None:
        iport = (port >> self.dshift) & 0x0F
        ch, reg = iport >> 1, iport & 1
        if self._ff():
            self.base[ch][reg] = (self.base[ch][reg] & 0xFF) | ((value << 8) & 0xFF00)
            self.now[ch] = [self.base[ch][0] << self.dshift, 0]
        else:
            self.base[ch][reg] = (self.base[ch][reg] & 0xFF00) | (value & 0xFF)

    # control registers
    def read_cont(self, port: int) -> int:
        iport = (port >> self.dshift) & 0x0F
        if iport == 0:
            val, self.status = self.status, self.status & 0xF0
            return val
        return self.mask if iport == 1 else 0

    def write_cont(self, port: int, value: int) -> None:
        iport = (port >> self.dshift) & 0x0F
        value &= 0xFF
        if iport == 0:
            if value and value & 0xFD:              # CMD_NOT_SUPPORTED bits: ignored
                return
            self.command = value
        elif iport == 1:
            ch = value & 3
            if value & 4:
                self.status |= 1 << (ch + 4)
            else:
                self.status &= ~(1 << (ch + 4))
            self.status &= ~(1 << ch)
        elif iport == 2:
            if value & 4:
                self.mask |= 1 << (value & 3)
            else:
                self.mask &= ~(1 << (value & 3))
        elif iport == 3:
            self.mode[value & 3] = value
        elif iport == 4:
            self.flip_flop = 0
        elif iport == 5:
            self.reset()
        elif iport == 6:
            self.mask = 0
        elif iport == 7:
            self.mask = value


class DmaPorts:
    """A port range of an I8257 as a region device: ``kind`` chan | cont | page."""

    snapshot_state = ("dma",)       # a view: the controller holds the state

    def __init__(self, dma: I8257, kind: str, first: int = 0, count: int = 0) -> None:
        self.dma, self.kind, self.first, self.count = dma, kind, first, count

    def reset(self) -> None:
        if self.kind == "cont":
            self.dma.reset()

    def read(self, offset: int, size: int) -> int:
        if self.kind == "chan":
            return self.dma.read_chan(offset)
        if self.kind == "cont":
            return self.dma.read_cont(offset)
        # QEMU's portio list (softmmu/ioport.c portio_read): byte entries answer bytes;
        # a word is two bytes (0xff above the entry's end); anything wider all ones
        if size == 1:
            return self._page(offset)
        if size == 2:
            high = self._page(offset + 1) if offset + 1 < self.count else 0xFF
            return self._page(offset) | high << 8
        return (1 << (8 * size)) - 1

    def _page(self, offset: int) -> int:
        ch = CHANNELS_OF_PAGE[(self.first + offset) & 7]
        return 0 if ch < 0 else self.dma.page[ch]

    def write(self, offset: int, size: int, value: int) -> None:
        if self.kind == "chan":
            self.dma.write_chan(offset, value)
        elif self.kind == "cont":
            self.dma.write_cont(offset, value)
        elif size <= 2:
            for i in range(size):
                if offset + i < self.count:
                    ch = CHANNELS_OF_PAGE[(self.first + offset + i) & 7]
                    if ch >= 0:
                        self.dma.page[ch] = (value >> (8 * i)) & 0xFF
