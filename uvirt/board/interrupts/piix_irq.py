"""PIIX3 PCI interrupt routing (QEMU ``hw/isa/piix3.c``, QEMU 7.2).

A function's INTx pin reaches PIRQ ``(pin - 1 + slot - 1) & 3`` (``pci_slot_get_pirq``:
00:03.0 and 00:04.0 INTA are PIRQC and PIRQD); PIIX3 config registers 0x60-0x63 route
PIRQA-D to an ISA IRQ, a value of 16 or more (0x80 after reset) disconnecting it.  Lines
are levels: a PIRQ is asserted while any function on it asserts its pin, an ISA IRQ while
any PIRQ routed to it is asserted.  Writing a route recomputes every PIRQ and drives all
16 ISA lines from the PCI levels, as ``piix3_write_config`` does.

Installed as ``PciBus.intx_sink``; ``set_isa_irq(irq, level)`` is the board's ISA IRQ
input (the PIC).
"""

from __future__ import annotations

from typing import Callable

PIIX_PIRQCA = 0x60
PIIX_NUM_PIRQS = 4
PIIX_NUM_PIC_IRQS = 16


def pci_slot_get_pirq(devfn: int, pin: int) -> int:
    """PIRQ index (0-3) of ``pin`` (1 = INTA) of the function at ``devfn``."""
    return ((pin - 1) + (devfn >> 3) - 1) & 3


class PiixPirqRouter:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("_asserted", "pic_levels")

    def __init__(self, piix3, set_isa_irq: Callable[[int, int], None]) -> None:
        self.piix3 = piix3
        self.set_isa_irq = set_isa_irq
        self._asserted: list[set[tuple[int, int]]] = [set() for _ in range(PIIX_NUM_PIRQS)]
        self.pic_levels = 0

    def route(self, pirq: int) -> int:
        return self.piix3.config.data[PIIX_PIRQCA + pirq]

    def pirq_level(self, pirq: int) -> int:
        return 1 if self._asserted[pirq] else 0

    def intx(self, fn, pin: int, level: int) -> None:
        """``PciBus.intx_sink``: ``fn`` drives INTx ``pin`` to ``level``."""
        devfn = fn.devfn or 0
        pirq = pci_slot_get_pirq(devfn, pin)
        key = (devfn, pin)
        if level:
            self._asserted[pirq].add(key)
        else:
            self._asserted[pirq].discard(key)
        self._set_irq_level(pirq, self.pirq_level(pirq), drive=True)

    def _set_irq_level(self, pirq: int, level: int, *, drive: bool) -> None:
        pic_irq = self.route(pirq)
        if pic_irq >= PIIX_NUM_PIC_IRQS:
            return
        mask = 1 << (pic_irq * PIIX_NUM_PIRQS + pirq)
        self.pic_levels = (self.pic_levels & ~mask) | (mask if level else 0)
        if drive:
            self._drive(pic_irq)

    def _drive(self, pic_irq: int) -> None:
        group = ((1 << PIIX_NUM_PIRQS) - 1) << (pic_irq * PIIX_NUM_PIRQS)
        self.set_isa_irq(pic_irq, 1 if self.pic_levels & group else 0)

    def routes_changed(self) -> None:
        """After a write to 0x60-0x63 (``piix3_update_irq_levels`` + every ISA line)."""
        self.pic_levels = 0
        for pirq in range(PIIX_NUM_PIRQS):
            self._set_irq_level(pirq, self.pirq_level(pirq), drive=False)
        for pic_irq in range(PIIX_NUM_PIC_IRQS):
            self._drive(pic_irq)

    def watch_config(self) -> None:
        """Hook the PIIX3 function's config writes so route changes take effect."""
        fn = self.piix3
        original = fn.config_write

        def config_write(offset: int, size: int, value: int):
            changes = original(offset, size, value)
            if offset < PIIX_PIRQCA + PIIX_NUM_PIRQS and offset + size > PIIX_PIRQCA:
                self.routes_changed()
            return changes

        fn.config_write = config_write
