"""PIIX4 ACPI PCI hotplug (QEMU 7.2 hw/acpi/pcihp.c + the PIIX4 GPE0 block), so QMP
``device_add``/``device_del`` work on bus ``pci.0`` as libqos drives them.

Registers (``pc``: ``acpi-pci-hotplug-with-bridge-support=on``, so not the legacy
PIIX variant; values checked against QEMU 7.2 over qtest):

    0xae00 UP    slots hot-added on the selected bus; cleared by the read
    0xae04 DOWN  slots with an unplug request
    0xae08 EJ    reads 0; a write ejects the slot of the lowest set bit (every
                 hotpluggable function in it), clearing its UP/DOWN bits
    0xae0c RMV   slots whose devices may be removed: all but those holding built-in
                 (non-hotpluggable) functions at the last reset: 0xfffffffc on pc
    0xae10 SEL   bus selector (bsel; bus 0 is the only bus with one); a selector of
                 256 or more makes every register read 0
    0xae14 AIDX  a write of a slot bit latches that device's acpi-index (always 0:
                 uvirt has no acpi-index property); a read returns it and clears it;
                 any write clears it first
    4-byte accesses only (``.valid`` 4..4): other sizes and unaligned ones read 0.

    0xafe0 GPE0_STS (2 bytes, write 1 to clear), 0xafe2 GPE0_EN (2 bytes); byte-wise.
    A hotplug event sets status bit 1 (ACPI_PCI_HOTPLUG_STATUS); SCI (ISA IRQ 9) is
    raised while a status bit is also enabled.

Flow (libqos ``qtest_qmp_device_add`` / ``qpci_unplug_acpi_device_test``): QMP
``device_add`` creates the device (its ``addr``, e.g. 06.0), then ``plug`` sets its UP
bit and raises the GPE; ``device_del`` -> ``unplug_request`` sets the DOWN bit and
raises the GPE (a repeated ``device_del`` is accepted and re-signals, as QEMU's
expiring ``pending_deleted_event`` lets it be); the guest writes the slot bit to EJ ->
the functions are unplugged (INTx dropped, BARs unmapped, ``unrealize()`` called when
the function has one) and ``DEVICE_DELETED`` is emitted: for a virtio device first
``{"path": ".../ID/virtio-backend"}``, then ``{"device": ID, "path": ...}``.  A system
reset ejects the slots with pending removes, as QEMU's ``acpi_pcihp_reset``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uvirt.board.memory.regions import MmioRegion
from uvirt.board.services import Peripheral

if TYPE_CHECKING:
    from uvirt.board.board import Board
    from uvirt.board.pci.bus import PciFunction

PCIHP_BASE = 0xAE00
PCIHP_SIZE = 0x18
UP, DOWN, EJ, RMV, SEL, AIDX = 0x00, 0x04, 0x08, 0x0C, 0x10, 0x14
MAX_HOTPLUG_BUS = 256

GPE_BASE = 0xAFE0
GPE_LEN = 4
PCI_HOTPLUG_STATUS = 2
SCI_IRQ = 9
IOAPIC_PATH = "/machine/i440fx/ioapic"


def _ctz32(v: int) -> int:
    v &= 0xFFFFFFFF
    return 32 if v == 0 else (v & -v).bit_length() - 1


class Gpe0:
    """The PIIX4 GPE0 block at 0xafe0: status (w1c) and enable, two bytes each."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("sts", "en", "sci")

    def __init__(self, on_sci) -> None:
        self.sts = bytearray(GPE_LEN // 2)
        self.en = bytearray(GPE_LEN // 2)
        self.on_sci = on_sci
        self.sci = 0

    def read(self, offset: int, size: int) -> int:
        half = GPE_LEN // 2
        return self.sts[offset] if offset < half else self.en[offset - half]

    def write(self, offset: int, size: int, value: int) -> None:
        half = GPE_LEN // 2
        if offset < half:
            self.sts[offset] &= ~value & 0xFF
        else:
            self.en[offset - half] = value & 0xFF
        self.update()

    def event(self, bits: int) -> None:
        self.sts[0] |= bits & 0xFF
        self.update()

    def level(self) -> int:
        return int(any(s & e for s, e in zip(self.sts, self.en)))

    def update(self) -> None:
        level = self.level()
        if level != self.sci:
            self.sci = level
            self.on_sci(level)

    def reset(self) -> None:
        self.sts[:] = bytes(len(self.sts))
        self.en[:] = bytes(len(self.en))
        self.update()


class AcpiPciHotplug:
    """The 0xae00 registers and the ``services.hotplug["pci.0"]`` handler."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("hotplug_select", "acpi_index", "up", "down", "hotplug_enable", "gpe")

    def __init__(self, board: "Board") -> None:
        self.board = board
        self.bus = board.pci
        self.hotplug_select = 0
        self.acpi_index = 0
        self.up = [0] * MAX_HOTPLUG_BUS
        self.down = [0] * MAX_HOTPLUG_BUS
        self.hotplug_enable = [0xFFFFFFFF] * MAX_HOTPLUG_BUS
        #: functions that are not hotpluggable (the board's own): never ejected
        self.fixed: set[int] = {id(fn) for fn in board.pci.functions.values()}
        #: hot-added devices without an id (QEMU /machine/peripheral-anon/device[N])
        self.anonymous: dict[int, str] = {}
        self._anon_count = 0
        self.gpe = Gpe0(self._sci)
        self._update_enable()

    # -- the board
    def _sci(self, level: int) -> None:
        m = self.board
        ic = m.interrupts
        if ic is not None:
            ic.pic.set_irq(SCI_IRQ, level)
        gpio = m.services.gpio_devices.get(IOAPIC_PATH)
        gl = gpio.find(None, "in") if gpio is not None else None
        if gl is not None and gl.count > SCI_IRQ:
            gl.set(SCI_IRQ, level)

    def _slot_functions(self, slot: int) -> list["PciFunction"]:
        return [fn for dfn, fn in sorted(self.bus.functions.items()) if dfn >> 3 == slot]

    def _update_enable(self) -> None:
        self.hotplug_enable = [0xFFFFFFFF] * MAX_HOTPLUG_BUS
        for dfn, fn in self.bus.functions.items():
            if id(fn) in self.fixed:
                self.hotplug_enable[0] &= ~(1 << (dfn >> 3)) & 0xFFFFFFFF

    # -- registers (QEMU pci_read / pci_write)
    def read(self, offset: int, size: int) -> int:
        bsel = self.hotplug_select
        if not 0 <= bsel < MAX_HOTPLUG_BUS:
            return 0
        if offset == UP:
            val, self.up[bsel] = self.up[bsel], 0
            return val
        if offset == DOWN:
            return self.down[bsel]
        if offset == RMV:
            return self.hotplug_enable[bsel]
        if offset == SEL:
            return bsel
        if offset == AIDX:
            val, self.acpi_index = self.acpi_index, 0
            return val
        return 0                                    # EJ reads 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.acpi_index = 0
        if offset == AIDX:
            if 0 <= self.hotplug_select < MAX_HOTPLUG_BUS and self.hotplug_select == 0:
                slot = _ctz32(value)
                for fn in self._slot_functions(slot):
                    self.acpi_index = int(getattr(fn, "acpi_index", 0) or 0)
                    break
        elif offset == EJ:
            if 0 <= self.hotplug_select < MAX_HOTPLUG_BUS:
                self.eject_slot(self.hotplug_select, value)
        elif offset == SEL:
            self.hotplug_select = value & 0xFFFFFFFF
            if self.hotplug_select >= 1 << 31:            # an int in QEMU: negative
                self.hotplug_select -= 1 << 32

    # -- ejection
    def eject_slot(self, bsel: int, slots: int) -> None:
        """acpi_pcihp_eject_slot: the lowest set bit's slot on bus ``bsel``."""
        slot = _ctz32(slots)
        if bsel != 0 or slot > 31:                 # bus 0 is the only hotplug bus
            return
        self.down[bsel] &= ~(1 << slot) & 0xFFFFFFFF
        self.up[bsel] &= ~(1 << slot) & 0xFFFFFFFF
        for fn in self._slot_functions(slot):
            if id(fn) not in self.fixed:
                self._unplug(fn)

    def _unplug(self, fn: "PciFunction") -> None:
        entry = self._entry_for(fn)
        fn.set_intx(0)
        with self.board.batch():
            for bar in fn.bars:
                if bar is not None and bar.placement is not None:
                    bar.placement.remove()
                    bar.placement = None
                    for cb in bar.listeners:
                        cb(None)
            del self.bus.functions[fn.devfn]
        fn.bus = None
        unrealize = getattr(fn, "unrealize", None)
        if callable(unrealize):
            unrealize()
        h = self.board.services
        child = "virtio-backend" if _is_virtio(fn) else None
        if entry is not None:
            h.device_deleted(entry, child=child)
        else:
            path = self.anonymous.pop(id(fn), None)
            if path is not None:
                if child is not None:
                    h.emit_event("DEVICE_DELETED", {"path": f"{path}/{child}"})
                h.emit_event("DEVICE_DELETED", {"path": path})

    def _entry_for(self, fn: "PciFunction") -> Peripheral | None:
        for entry in self.board.services.peripherals.values():
            if entry.device is fn:
                return entry
        return None

    # -- services.hotplug["pci.0"]
    def plug(self, entry: Peripheral) -> None:
        fn = entry.device
        if entry.id.startswith("#"):
            self.anonymous[id(fn)] = f"/machine/peripheral-anon/device[{self._anon_count}]"
            self._anon_count += 1
        dfn = getattr(fn, "devfn", None)
        if dfn is None:
            return
        self.up[0] |= 1 << (dfn >> 3)
        self.gpe.event(PCI_HOTPLUG_STATUS)

    def unplug_request(self, entry: Peripheral) -> None:
        fn = entry.device
        dfn = getattr(fn, "devfn", None)
        if dfn is None or id(fn) in self.fixed:
            return
        self.down[0] |= 1 << (dfn >> 3)
        self.gpe.event(PCI_HOTPLUG_STATUS)
        entry.unplug_pending = False        # QEMU: the pending mark expires at once

    def reset(self) -> None:
        for bsel in range(MAX_HOTPLUG_BUS):    # pending removes happen at reset
            while self.down[bsel]:
                before = self.down[bsel]
                self.eject_slot(bsel, self.down[bsel])
                if self.down[bsel] == before:      # a bus without devices: drop
                    self.down[bsel] = 0
        self._update_enable()
        self.acpi_index = 0
        self.gpe.reset()


def _is_virtio(fn: Any) -> bool:
    """A virtio-pci function (uvirt/virtio/pci.py): it carries its virtio device."""
    return getattr(fn, "vdev", None) is not None


def install_acpi_hotplug(board: "Board") -> AcpiPciHotplug:
    """Call after the board's own functions are plugged: they are the fixed ones."""
    hp = AcpiPciHotplug(board)
    board.add_isa(MmioRegion("acpi-pci-hotplug", PCIHP_SIZE, hp, valid_sizes=(4,)), PCIHP_BASE, hp)
    board.add_isa(MmioRegion("acpi-gpe0", GPE_LEN, hp.gpe, valid_sizes=(1, 2, 4), impl_max=1),
                    GPE_BASE)
    board.services.hotplug["pci.0"] = hp
    board.acpi_hotplug = hp
    return hp
