"""Interrupts of QEMU's ``pc``: the 8259 pair + ELCR, the 8254 PIT (+ port 0x61), PIIX3
PIRQ routing, the local APIC with its MSI window, and IDT delivery (``delivery``).

``InterruptController`` is the board side: it owns the devices, places their ports and
the APIC window, installs itself as the PCI bus's ``intx_sink`` and answers the two
questions the CPU loop asks (machine.py): *is an interrupt pending for the CPU*
(``cpu_pending``) and *which vector does the acknowledge cycle give* (``acknowledge``).
``on_level`` is called with the new answer to the first whenever it changes (QEMU's
``cpu_interrupt``/``cpu_reset_interrupt`` of CPU_INTERRUPT_HARD): the machine raises or
lowers the CPU's interrupt line, and the CPU takes the interrupt at the next block
boundary where it accepts one (uvirt/cpu/irq_line.py).  ``on_change`` is called when it
turns true (a line raised, an EOI, an unmask, an MSI), for a CPU without that line: the
machine then stops the CPU at the end of the current translation block and delivers
(None while the line is all the CPU needs).  Everything here runs on the CPU thread (inside
port/MMIO hooks or between ``emu_start`` calls); other threads use
``Machine.call_soon_threadsafe``.

Plug-in points for devices: ``PciFunction.set_intx(level)`` (INTx, through PIIX3
routing) and ``PciFunction.msi_write(address, data)`` (MSI/MSI-X: a store into the APIC
window).  Nothing else is needed.
"""

from __future__ import annotations

import time
from typing import Callable

from uvirt.board.memory.regions import MmioRegion
from uvirt.board.interrupts.lapic import APIC_BASE, APIC_SPACE_SIZE, SV_ENABLE, LocalApic
from uvirt.board.interrupts.pic import PicPair
from uvirt.board.interrupts.piix_irq import PiixPirqRouter
from uvirt.board.interrupts.pit import Pit8254

__all__ = ["InterruptController", "LocalApic", "PicPair", "Pit8254", "PiixPirqRouter"]

APIC_PRIORITY = 0x1000        # QEMU maps the APIC window over everything


class InterruptController:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("pic", "apic", "pit", "router", "touched", "_was_pending", "_pic_level",
                      "delivered")

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.pic = PicPair()
        self.apic = LocalApic()
        self.pit = Pit8254(irq=lambda level: self.pic.set_irq(0, level), clock=clock)
        self.router: PiixPirqRouter | None = None
        self.on_change: Callable[[], None] | None = None
        self.on_level: Callable[[bool], None] = lambda level: None
        #: the 8259 pair's INT output, as its last update() presented it (QEMU's
        #: pic_update_irq raising or lowering the line, not a recomputation per question)
        self._pic_level = self.pic.output
        self.pic.on_output = self._pic_output
        self.pic.before_access = self._touch
        self._touched = 0                     # PIC and PIT accesses (the APIC counts its own)
        self._was_pending = False
        self.apic.on_change = self._notify
        self.delivered = 0                    # interrupts acknowledged (statistics)

    # -- wiring
    def install(self, machine) -> None:
        pic, pit, io = self.pic, self.pit, machine.io
        with machine.batch():
            for chip, port in ((pic.master, 0x20), (pic.slave, 0xA0)):
                io.add(MmioRegion("pic", 2, pic.chip_device(chip), valid_sizes=(1, 2, 4),
                                  impl_max=1), port)
            for chip, port in ((pic.master, 0x4D0), (pic.slave, 0x4D1)):
                io.add(MmioRegion("elcr", 1, pic.elcr_device(chip), valid_sizes=(1, 2, 4),
                                  impl_max=1), port)
            io.add(MmioRegion("pit", 4, _Touching(pit, self), valid_sizes=(1, 2, 4), impl_max=1), 0x40)
            io.add(MmioRegion("pcspk", 1, pit.speaker_device(), valid_sizes=(1, 2, 4),
                              impl_max=1), 0x61)
            machine.memory.add(MmioRegion("apic-msi", APIC_SPACE_SIZE, self.apic,
                                          valid_sizes=(1, 2, 4), impl_max=4),
                               APIC_BASE, priority=APIC_PRIORITY)
        piix3 = machine.pci.functions.get(8)          # 00:01.0
        if piix3 is not None:
            self.router = PiixPirqRouter(piix3, self.pic.set_irq)
            self.router.watch_config()
            machine.pci.intx_sink = self.router.intx
        machine.resettables.append(self)

    def reset(self) -> None:
        self.pic.reset()
        self.pit.reset()
        self.apic.reset()
        if self.router is not None:
            self.router.routes_changed()

    def firmware_state(self) -> None:
        """What SeaBIOS leaves (docs/qemu-7.2-observed.md "Interrupts", tests/data/qemu/
        irq_seabios_state.txt): PICs initialised with vector bases 0x08/0x70, IMR b8/8e,
        ELCR 00/0c; PIT channel 0 in mode 2 with count 0 (18.2 Hz); LAPIC SVR 0x1ff,
        LINT0 0x8700 (ExtINT), LINT1 0x8400 (NMI)."""
        m, s = self.pic.master, self.pic.slave
        for chip, base, icw3 in ((m, 0x08, 0x04), (s, 0x70, 0x02)):
            for port, val in ((0, 0x11), (1, base), (1, icw3), (1, 0x01)):
                chip.port_write(port, val)
        m.port_write(1, 0xB8)
        s.port_write(1, 0x8E)
        m.elcr_write(0x00)
        s.elcr_write(0x0C)
        for port, val in ((3, 0x34), (0, 0), (0, 0)):
            self.pit.write(port, 1, val)
        self.apic.spurious_vec = 0x1FF
        self.apic.lvt[3] = 0x8700
        self.apic.lvt[4] = 0x8400
        self.apic.icr = [0x000C4610, 0]       # its last IPI (SIPI to all but self)
        if self.router is not None:
            self.router.routes_changed()

    # -- change notification
    @property
    def touched(self) -> int:
        """Guest accesses to the PIC, PIT and APIC so far: a guest working on its
        interrupt set-up (machine.py keeps single-stepping a blocked interrupt then)."""
        return self._touched + self.apic.accesses

    @touched.setter
    def touched(self, value: int) -> None:
        self._touched = value - self.apic.accesses

    def _touch(self) -> None:
        self._touched += 1
        self.pit.sync()

    def _pic_output(self, level: int) -> None:
        self._pic_level = level
        self._notify()

    def _notify(self) -> None:
        """Call ``on_level`` when the CPU's interrupt line changes, and ``on_change`` when
        it rises (not on every update while it stays up: a pending interrupt the CPU
        cannot take yet must not stop it again and again)."""
        # cpu_pending() and the APIC's irq_pending(), inline: every MSI, TPR write and EOI
        # that leaves a vector in IRR comes here (tests/unit/test_lapic_fast_paths.py)
        apic = self.apic
        irr = apic.irr
        pending = False
        if irr and apic.spurious_vec & SV_ENABLE:
            ppr = apic.tpr
            isr = apic.isr
            if isr:
                isrv = (isr.bit_length() - 1) >> 4
                if ppr >> 4 < isrv:
                    ppr = isrv << 4
            irrv = irr.bit_length() - 1
            pending = irrv > 0 and (not ppr or (irrv & 0xF0) > (ppr & 0xF0))
        if pending or (self._pic_level and apic.accept_pic_intr()):
            if not self._was_pending:
                self._was_pending = True
                self.on_level(True)
                if self.on_change is not None:
                    self.on_change()
        elif self._was_pending:
            self._was_pending = False
            self.on_level(False)

    # -- the CPU's view
    def sync(self, now: int | None = None) -> None:
        self.pit.sync(now)

    def cpu_pending(self) -> bool:
        """CPU_INTERRUPT_HARD: an APIC vector above the processor priority, or the PIC's
        INT through LINT0."""
        apic = self.apic
        if apic.irq_pending() > 0:
            return True
        return bool(self._pic_level) and apic.accept_pic_intr()

    def acknowledge(self) -> int | None:
        """The interrupt acknowledge cycle (``cpu_get_pic_interrupt``): a vector, or None."""
        apic = self.apic
        vector = apic.get_interrupt(self._pic_level)
        if vector < 0:
            if not apic.accept_pic_intr():
                return None
            vector = self.pic.read_irq()
        self.delivered += 1
        pending = bool(apic.irr and apic.irq_pending() > 0
                       or self._pic_level and apic.accept_pic_intr())
        if pending != self._was_pending:
            self._was_pending = pending
            self.on_level(pending)
        return vector

    def next_deadline(self, now: int) -> int | None:
        """Host time (monotonic ns) of the next timer event that could interrupt the CPU."""
        if self.pic.master.imr & 1:
            return None
        return self.pit.next_rising_edge(now)


class _Touching:
    """A device whose guest accesses count in ``InterruptController.touched``."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, dev, ctl: InterruptController) -> None:
        self.dev, self.ctl = dev, ctl

    def read(self, offset: int, size: int) -> int:
        self.ctl._touched += 1
        return self.dev.read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.ctl._touched += 1
        self.dev.write(offset, size, value)

