"""The firmware step: what SeaBIOS leaves behind on QEMU's ``pc`` before ``-kernel`` runs.

A guest on QEMU finds every PCI device already programmed by SeaBIOS
(``src/fw/pciinit.c``), so uvirt does the same before the guest starts (not under
``-accel qtest``, where QEMU runs no firmware either):

* BARs are sized and placed like ``pci_bios_map_devices``: per region type (I/O,
  32-bit memory, prefetchable memory) entries are sorted by size, largest first, and
  packed upward from the region base; I/O starts at 0xC000; the two memory regions are
  stacked downward from 0xFEC00000, prefetchable on top unless the other one's
  alignment is smaller (``pci_bios_init_root_regions_mem``);
  memory BARs are at least 4 KiB (``PCI_DEVICE_MEM_MIN``), I/O BARs at least 4 bytes.
* command gets I/O + memory decode + SERR (``pci_bios_init_device``); bus master only
  where a SeaBIOS driver uses the device (its ``on_firmware`` hook says so).
* the interrupt line gets PIIX's routing ``[10, 10, 11, 11][(pin - 1 + slot - 1) & 3]``,
  and the PIIX3 PIRQ route registers 0x60..0x63 that routing.
* the interrupt controllers as SeaBIOS leaves them: PIC bases 0x08/0x70, IMR b8/8e,
  ELCR 00/0c, PIT channel 0 in mode 2, LAPIC SVR 0x1ff, LINT0 0x8700, LINT1 0x8400
  (``InterruptController.firmware_state``).
* the rest of the chipset as SeaBIOS leaves it (firmware/chipset_probe.S on QEMU 7.2):
  port 0x92 = 0x02 (A20 on), the i8042 after its self test with command byte 0x61
  (keyboard interrupt, translation, aux disabled), the second 8237 with channel 4 in
  cascade mode and unmasked, and with ``-nographic`` the UART at 0x3F8 that sercon
  set to 8N1 with its FIFO on.
* SMM as bios-256k.bin leaves it (unless ``-machine smm=off``): SMBASE relocated to
  0xA0000 (SMRAM, which the CPU sees only in SMM) with a handler at 0xA8000 that returns
  at once (``rsm``; SeaBIOS's ``handle_smi`` does nothing for an APM command other than
  its own call32 one), so a guest's write to port 0xB2 comes back as on QEMU.

The BAR addresses and interrupt lines are firmware choices: a differential test compares
everything else.  Exact placement is a best effort at SeaBIOS 1.16's algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

from uvirt.board.pci.bus import Command, PciBus, PciFunction, PciReg, ROM_SLOT

IO_BASE = 0xC000
IO_END = 0x10000
MEM_END = 0xFEC00000
MEM_START = 0xE0000000
PCI_DEVICE_MEM_MIN = 0x1000
PCI_DEVICE_IO_MIN = 0x4
PIIX_PCI_IRQS = (10, 10, 11, 11)


@dataclass
class _Entry:
    fn: PciFunction
    index: int
    size: int


def piix_irq_line(slot: int, pin: int) -> int:
    return PIIX_PCI_IRQS[(pin - 1 + slot - 1) & 3]


#: SeaBIOS's last config-space access before it hands over (make_bios_readonly on the
#: i440FX PAM registers) leaves this in the 0xCF8 latch; a guest reading 0xCF8 first sees it.
LAST_CONFIG_ADDRESS = 0x8000005C


def firmware_step(machine, *, nographic: bool = False) -> None:
    """Everything SeaBIOS leaves behind that a guest can observe."""
    assign_resources(machine.pci)
    machine.pci_host.config_reg = LAST_CONFIG_ADDRESS
    if getattr(machine, "interrupts", None) is not None:
        machine.interrupts.firmware_state()
    _chipset_state(machine, nographic)
    _smm_state(machine)


SMBASE_SEABIOS = 0xA0000
RSM = b"\x0f\xaa"


def _smm_state(machine) -> None:
    board = getattr(machine, "board", None)
    if board is None or not board.smm_enabled or not hasattr(machine, "smbase"):
        return
    machine.smbase = SMBASE_SEABIOS
    board.ram.buffer.view[SMBASE_SEABIOS + 0x8000:SMBASE_SEABIOS + 0x8000 + len(RSM)] = RSM


def _chipset_state(machine, nographic: bool) -> None:
    port92 = getattr(machine, "port92", None)
    if port92 is not None:
        port92.outport = 0x02
    kbd = getattr(machine, "i8042", None)
    if kbd is not None:
        kbd.firmware_state()
    for dma in getattr(machine, "dma", ()):
        dma.firmware_state()
    if nographic:
        for base, uart in getattr(machine, "serial_ports", ()):
            if base == 0x3F8:                    # sercon_setup: 8N1, FIFO on
                uart.write(3, 1, 0x03)
                uart.write(2, 1, 0x01)


def assign_resources(bus: PciBus) -> None:
    with bus.memory.batch(), bus.io.batch():
        _assign(bus)


def _assign(bus: PciBus) -> None:
    io: list[_Entry] = []
    mem: list[_Entry] = []
    pref: list[_Entry] = []
    functions = sorted(bus.functions.items())
    for _dfn, fn in functions:
        for bar in fn.bars:
            if bar is None or bar.index == ROM_SLOT:
                continue
            if bar.io:
                io.append(_Entry(fn, bar.index, max(bar.size, PCI_DEVICE_IO_MIN)))
            elif bar.prefetch:
                pref.append(_Entry(fn, bar.index, max(bar.size, PCI_DEVICE_MEM_MIN)))
            else:
                mem.append(_Entry(fn, bar.index, max(bar.size, PCI_DEVICE_MEM_MIN)))

    def place(entries: list[_Entry], base: int) -> None:
        for e in sorted(entries, key=lambda e: -e.size):
            base = (base + e.size - 1) & ~(e.size - 1)
            _write_bar(bus, e.fn, e.index, base)
            base += e.size

    place(io, IO_BASE)
    if mem or pref:          # (pc's own functions have none)
        # pci_bios_init_root_regions_mem: prefetchable memory on top unless the plain
        # memory region's alignment is smaller ("swap regions to improve alignment")
        top, bottom = pref, mem
        if _align(mem) < _align(pref):
            top, bottom = mem, pref
        top_base = _align_down(MEM_END - _sum(top), _align(top))
        bottom_base = _align_down(top_base - _sum(bottom), _align(bottom))
        place(top, top_base)
        place(bottom, bottom_base)

    for dfn, fn in functions:
        slot = dfn >> 3
        pin = fn.config.get(PciReg.INTERRUPT_PIN, 1)
        if pin:
            bus.config_write(0, dfn, PciReg.INTERRUPT_LINE, 1, piix_irq_line(slot, pin))
        cmd = fn.config.get(PciReg.COMMAND, 2) | _DECODE_ON
        hook = getattr(fn, "on_firmware", None)
        if hook is not None:
            cmd = hook(bus, cmd)
        bus.config_write(0, dfn, PciReg.COMMAND, 2, int(cmd))


#: what pci_bios_init_device sets in every function's command register, as a plain int
#: (``int | IntFlag`` makes a new flag through enum.py)
_DECODE_ON = int(Command.IO | Command.MEMORY | Command.SERR)


def _write_bar(bus: PciBus, fn: PciFunction, index: int, addr: int) -> None:
    reg = fn.bar_reg(index)
    bar = fn.bars[index]
    assert bar is not None and fn.devfn is not None
    bus.config_write(0, fn.devfn, reg, 4, (addr & 0xFFFFFFFF) | bar.flags)
    if bar.mem64:
        bus.config_write(0, fn.devfn, reg + 4, 4, addr >> 32)


def _sum(entries: list[_Entry]) -> int:
    return sum(e.size for e in entries)


def _align(entries: list[_Entry]) -> int:
    return max((e.size for e in entries), default=1)


def _align_down(v: int, a: int) -> int:
    return v & ~(a - 1)
