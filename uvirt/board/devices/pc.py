"""QEMU ``-machine pc``'s built-in PCI functions: i440FX host bridge and PIIX3.

    00:00.0  i440FX host bridge  8086:1237 rev 02 class 0600
    00:01.0  PIIX3 ISA bridge    8086:7000 rev 00 class 0601 (multi-function)
    00:01.1  PIIX3 IDE           8086:7010 rev 00 class 0101 prog-if 80, BAR4 = BMDMA (16 B I/O)
    00:01.3  PIIX4 ACPI/PM       8086:7113 rev 03 class 0680 pin A

Reset values are QEMU 7.2's as read over qtest before any firmware ran
(tests/data/qemu/pc_nodefaults_config_reset.txt); what SeaBIOS writes on top of them
(tests/data/qemu/pc_nodefaults_config_dump.txt, read by a guest) lives in each
function's ``on_firmware`` hook, so ``-accel qtest`` sees reset values and a booted
guest sees SeaBIOS's.  ``tests/unit/test_pc_builtins.py`` checks both dumps byte for byte.

Also the PIIX3 reset control register at port 0xCF9 (``rcr_ops``): bit 2 written with
bit 1 requests a system reset; it overlaps the 0xCF8 latch window with priority 1,
as in QEMU; fw_cfg (``fw_cfg.py``) and PIIX4's ACPI PCI hotplug + GPE0 registers
(``acpi_hotplug.py``).
"""

from __future__ import annotations

from uvirt.board.board import DEFAULT_RAM_SIZE, Board
from uvirt.board.devices.acpi_hotplug import install_acpi_hotplug
from uvirt.board.devices.acpi_tables import install_acpi_tables
from uvirt.board.devices.chipset import AcpiPm, Apm, DmaPorts, I8257, Port92
from uvirt.board.devices.fw_cfg import install_fw_cfg, pc_ram_split
from uvirt.board.devices.i8042 import I8042, Port
from uvirt.board.devices.pam import LowMemory
from uvirt.board.devices.rtc import Rtc, pc_cmos_memory
from uvirt.board.devices.smbios import install_smbios
from uvirt.board.interrupts import InterruptController
from uvirt.board.memory.regions import MmioRegion
from uvirt.board.pci.bus import PciBus, PciFunction, devfn


def _poke(fn: PciFunction, values: dict[int, int]) -> None:
    for off, v in values.items():
        fn.config.data[off] = v


class I440FX(PciFunction):
    """The host bridge; PAM (0x59-0x5F) and SMRAM (0x72) decide what 0xA0000-0xFFFFF
    shows (``pam.LowMemory``, QEMU ``i440fx_update_memory_mappings``)."""

    name = "i440FX"
    qom_type = "i440FX"
    #: what a snapshot holds beyond the config space (uvirt/cpu/snapshot.py): the low
    #: megabyte's own state (the kvmvapic window); PAM and SMRAM are config bytes, and
    #: ``update_mappings`` re-derives the map from them after a restore
    snapshot_state = ("lowmem",)

    def __init__(self, ram_size: int = 128 << 20) -> None:
        super().__init__(vendor_id=0x8086, device_id=0x1237, class_code=0x0600, revision=0x02)
        # i440fx_init: the RAM size in 8 MiB units at 0x57 (at most 255); i440fx_realize:
        # SMRAM C_BASE_SEG=010.  PAM0-6 are 0 (all PCI space) until firmware sets them.
        _poke(self, {0x57: min(ram_size >> 23, 255), 0x72: 0x02})
        self.lowmem = None           # pam.LowMemory, set when the board has memory
        #: the firmware sets SMM up (-machine smm=on/auto): it leaves SMRAM G_SMRAME set;
        #: with smm=off SeaBIOS skips its SMM set-up and SMRAM keeps its reset value
        self.firmware_smm = True

    def _memory_changed(self) -> None:
        if self.lowmem is not None:
            self.lowmem.update(self.config.data)

    def config_write(self, offset: int, size: int, value: int):
        changes = super().config_write(offset, size, value)
        if offset < 0x60 and offset + size > 0x59 or offset <= 0x72 < offset + size:
            self._memory_changed()
        return changes

    def update_mappings(self):
        """After a snapshot restore the config bytes are back: the PAM/SMRAM windows and
        the kvmvapic window follow them (nothing happens when they already do)."""
        changes = super().update_mappings()
        if self.lowmem is not None:
            self.lowmem.follow(self.config.data)
        return changes

    def reset(self):
        changes = super().reset()
        self._memory_changed()
        return changes

    def on_firmware(self, bus: PciBus, cmd: int) -> int:
        # SeaBIOS make_bios_readonly: PAM0 and the option-ROM windows read-only (0x1x),
        # 0xE8000-0xEFFFF stays read/write; SMRAM G_SMRAME set (when it set SMM up).
        _poke(self, {0x59: 0x10, 0x5A: 0x11, 0x5B: 0x11, 0x5C: 0x11, 0x5D: 0x11, 0x5E: 0x11,
                     0x5F: 0x33, 0x72: 0x0A if self.firmware_smm else 0x02})
        self._memory_changed()
        if self.lowmem is not None:
            self.lowmem.vapic_window()       # QEMU's kvmvapic ROM, see devices/pam.py
        return cmd


class Piix3Isa(PciFunction):
    name = "PIIX3"
    qom_type = "PIIX3"
    snapshot_state = ()              # beyond the config space: nothing (uvirt/cpu/snapshot.py)

    def __init__(self) -> None:
        super().__init__(vendor_id=0x8086, device_id=0x7000, class_code=0x0601,
                         header_type=0x80)
        self.config.set(0x06, 2, 0x0200)         # devsel medium
        # piix3_reset: PIRQ routes disabled (0x80), TOM, MBDMA, APIC base... as QEMU
        _poke(self, {0x4C: 0x4D, 0x4E: 0x03, 0x60: 0x80, 0x61: 0x80, 0x62: 0x80, 0x63: 0x80,
                     0x69: 0x02, 0x70: 0x80, 0x76: 0x0C, 0x77: 0x0C, 0x78: 0x02, 0xA0: 0x08,
                     0xA8: 0x0F})

    def on_firmware(self, bus: PciBus, cmd: int) -> int:
        # SeaBIOS piix_isa_bridge_setup: route PIRQA..D to IRQ 10, 10, 11, 11.
        for i, irq in enumerate((10, 10, 11, 11)):
            self.config.data[0x60 + i] = irq
        return cmd


class _Bmdma:
    """PIIX bus-master IDE registers (two channels of cmd/status/PRD address).

    Storage only: no drives are attached under ``-nodefaults``, so no transfer starts.
    """
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("regs",)

    def __init__(self) -> None:
        self.regs = bytearray(16)

    def reset(self) -> None:
        self.regs[:] = bytes(16)

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.regs[offset:offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            o = offset + i
            b = (value >> (8 * i)) & 0xFF
            if o & 7 == 2:       # status: bits 5-6 R/W, bits 1-2 W1C, bit 0 RO
                self.regs[o] = (b & 0x60) | (self.regs[o] & 1) | (self.regs[o] & ~b & 0x06)
            elif o & 7 == 0:
                self.regs[o] = b & 0x09
            elif o & 7 >= 4:
                self.regs[o] = b & (0xFC if o & 7 == 4 else 0xFF)


class Piix3Ide(PciFunction):
    name = "PIIX3 IDE"
    qom_type = "piix3-ide"
    snapshot_state = ()              # the BMDMA registers are their own object (_Bmdma)

    def __init__(self) -> None:
        super().__init__(vendor_id=0x8086, device_id=0x7010, class_code=0x0101, prog_if=0x80)
        self.config.set(0x06, 2, 0x0280)         # fast back-to-back, devsel medium
        self.bmdma = _Bmdma()
        self.register_bar(4, MmioRegion("piix-bmdma", 16, self.bmdma, valid_sizes=(1, 2, 4)), io=True)

    def on_firmware(self, bus: PciBus, cmd: int) -> int:
        # SeaBIOS piix_ide_setup: enable the primary and secondary IDE decoders.
        self.config.set(0x40, 2, 0x8000)
        self.config.set(0x42, 2, 0x8000)
        return cmd


class Piix4Pm(PciFunction):
    """PIIX4 power management; its I/O block (chipset.AcpiPm) follows PMBA/PMREGMISC."""

    name = "PIIX4 PM"
    qom_type = "PIIX4_PM"
    pm_placement = None              # set by install_pc_builtins

    #: beyond the config space nothing: the PM block's placement follows PMBA/PMREGMISC
    #: (``update_mappings`` re-derives it after a snapshot restore, uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def _pm_io_update(self) -> None:
        p = self.pm_placement
        if p is not None:
            p.move(self.config.get(0x40, 4) & 0xFFC0)
            p.set_enabled(bool(self.config.data[0x80] & 1))
            p.space.commit()

    def update_mappings(self):
        changes = super().update_mappings()
        p = self.pm_placement
        if p is not None and (p.addr != self.config.get(0x40, 4) & 0xFFC0
                              or p.enabled != bool(self.config.data[0x80] & 1)):
            self._pm_io_update()
        return changes

    def config_write(self, offset: int, size: int, value: int):
        changes = super().config_write(offset, size, value)
        if offset < 0x44 and offset + size > 0x40 or offset <= 0x80 < offset + size:
            self._pm_io_update()
        return changes

    def reset(self):
        changes = super().reset()
        self._pm_io_update()
        return changes

    def __init__(self) -> None:
        super().__init__(vendor_id=0x8086, device_id=0x7113, class_code=0x0680, revision=0x03,
                         interrupt_pin=1)
        self.config.set(0x06, 2, 0x0280)
        # QEMU's piix4_pm at reset: PM base I/O indicator, SMBus base 0xb100, SMBus
        # host enabled with IRQ 9 (read over qtest with -S: nothing has run yet)
        _poke(self, {0x40: 0x01, 0x5F: 0x10, 0x63: 0x60, 0x90: 0x01, 0x91: 0xB1, 0xD2: 0x09})

    def on_firmware(self, bus: PciBus, cmd: int) -> int:
        # SeaBIOS piix4_pm_setup: PM base 0x600, PMREGMISC (0x80) on, SMBus base 0x700,
        # 0x5B bit 1; the SCI stays on IRQ 9 although PIIX routing would give slot 1
        # pin A IRQ 10.
        _poke(self, {0x41: 0x06, 0x3C: 9, 0x5B: 0x02, 0x80: 0x01, 0x91: 0x07})
        self._pm_io_update()
        return cmd


class _ResetControl:
    """PIIX3 RCR at 0xCF9 (``rcr_write``): bit 2 requests a reset, bit 1 is kept."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("rcr",)

    def __init__(self, board: "Board") -> None:
        self.board = board
        self.rcr = 0

    def reset(self) -> None:
        self.rcr = 0

    def read(self, offset: int, size: int) -> int:
        return self.rcr

    def write(self, offset: int, size: int, value: int) -> None:
        if value & 4:
            self.board.request_reset()
            return
        self.rcr = value & 2


def pc_board(*, ram_size: int = DEFAULT_RAM_SIZE, no_reboot: bool = True) -> Board:
    """QEMU ``-machine pc`` without its CPU: a ``Board`` with pc's built-in devices and
    interrupt controllers."""
    board = Board(ram_size=ram_size, no_reboot=no_reboot)
    with board.batch():
        install_pc_builtins(board)
        board.interrupts = InterruptController()
        board.interrupts.install(board)
    return board


def install_pc_builtins(board: Board) -> None:
    host = I440FX(board.ram_size)
    board.lowmem = host.lowmem = LowMemory(board.memory, board.ram, board.ram_placement)
    board.pci.plug(host, devfn(0, 0))        # (its update_mappings maps the low window)
    board.pci.plug(Piix3Isa(), devfn(1, 0))
    board.pci.plug(Piix3Ide(), devfn(1, 1))
    pm = Piix4Pm()
    board.pci.plug(pm, devfn(1, 3))
    acpi = AcpiPm()
    pm.pm_placement = board.io.add(MmioRegion("piix4-pm", 12, acpi, valid_sizes=(1, 2, 4)), 0,
                                     enabled=False)
    board.resettables.append(acpi)
    pm._pm_io_update()
    board.dma = []
    for dshift, base, page in ((0, 0x00, 0x80), (1, 0xC0, 0x88)):
        dma = I8257(dshift)
        board.dma.append(dma)
        size = 8 << dshift
        board.add_isa(MmioRegion("dma-chan", size, DmaPorts(dma, "chan"), valid_sizes=(1, 2, 4),
                                   impl_max=1), base)
        cont = DmaPorts(dma, "cont")
        board.add_isa(MmioRegion("dma-cont", size, cont, valid_sizes=(1, 2, 4), impl_max=1),
                        base + size, cont)
        for first, count in ((1, 3), (7, 1)):        # page_portio_list: +1..+3, +7
            board.add_isa(MmioRegion("dma-page", count, DmaPorts(dma, "page", first, count),
                                       valid_sizes=(1, 2, 4), unaligned=True), page + first)
    port92 = board.port92 = Port92(board.request_reset)
    board.add_isa(MmioRegion("port92", 1, port92, valid_sizes=(1, 2, 4), impl_max=1), 0x92, port92)
    apm = Apm(lambda: bool(pm.config.data[0x5B] & 2), lambda value: board.raise_smi())
    board.add_isa(MmioRegion("apm-io", 2, apm, valid_sizes=(1, 2, 4), impl_max=1), 0xB2, apm)
    def rtc_irq(level: int) -> None:          # ISA IRQ 8: the PIC and the IOAPIC's pin 8
        if board.interrupts is not None:
            board.interrupts.pic.set_irq(8, level)
        gpio = board.services.gpio_devices.get("/machine/i440fx/ioapic")
        lines = gpio.find(None, "in") if gpio is not None else None
        if lines is not None and lines.count > 8:
            lines.set(8, level)

    rtc = Rtc(pc_cmos_memory(*pc_ram_split(board.ram_size)), set_irq=rtc_irq)
    board.add_isa(MmioRegion("rtc", 2, rtc, valid_sizes=(1, 2, 4), impl_max=1), 0x70, rtc)
    board.rtc = rtc
    kbd = I8042(lambda irq, level: board.interrupts and board.interrupts.pic.set_irq(irq, level),
                board.request_reset)
    # QEMU's i8042/cmos/port92/apm ops: .impl 1 byte, any valid size (wider accesses split)
    board.add_isa(MmioRegion("i8042-data", 1, Port(kbd, 0), valid_sizes=(1, 2, 4), impl_max=1), 0x60, kbd)
    board.add_isa(MmioRegion("i8042-cmd", 1, Port(kbd, 4), valid_sizes=(1, 2, 4), impl_max=1), 0x64)
    board.i8042 = kbd
    rcr = _ResetControl(board)
    board.add_isa(MmioRegion("piix3-reset-control", 1, rcr, valid_sizes=(1,)), 0xCF9, rcr, priority=1)
    fw = install_fw_cfg(board)              # 0x510-0x511, DMA 0x514-0x51b
    install_acpi_tables(board, fw)        # etc/acpi/*, etc/table-loader, built when read
    install_smbios(board, fw)             # etc/smbios/smbios-anchor, -tables
    install_acpi_hotplug(board)           # PIIX4 ACPI PCI hotplug 0xae00, GPE0 0xafe0
