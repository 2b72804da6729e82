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
    APMC_EN (config 0x5B bit 1) is set; uvirt has no SMM, so the SMI is recorded as a
    guest error ("smi") and nothing runs.

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
    #: what a snapshot holds (uvirt/snapshot.py)
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
    #: what a snapshot holds (uvirt/snapshot.py)
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
    #: what a snapshot holds (uvirt/snapshot.py)
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
