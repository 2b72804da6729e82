"""The local APIC without a CPU: register reads as QEMU 7.2 gives them, MSI decoding,
priorities, EOI, SVR and TPR, and the controller's acknowledge path with the PIC."""

import pytest

from uvirt.board.interrupts import InterruptController
from uvirt.board.interrupts.lapic import LocalApic


@pytest.fixture
def apic():
    a = LocalApic()
    a.spurious_vec = 0x1FF
    return a


def test_reset_registers(apic):
    assert apic.read(0x30, 4) == 0x00050014
    assert apic.read(0x350, 4) == 0x700 and apic.read(0x360, 4) == 0x10000
    assert apic.read(0xE0, 4) == 0xFFFFFFFF


def test_narrow_access_reads_zero_and_is_ignored(apic):
    assert apic.read(0x30, 1) == 0
    apic.write(0x0, 2, 0x41)
    assert apic.irr == 0


def test_msi_sets_irr_and_tmr(apic):
    apic.write(0x0, 4, 0x8061)               # level, vector 0x61
    assert apic.read(0x230, 4) == 0x2 and apic.read(0x1B0, 4) == 0x2


def test_msi_below_16_is_accepted_as_qemu(apic):
    apic.write(0x0, 4, 0x05)
    assert apic.irr == 1 << 5 and apic.esr == 0 and apic.irq_pending() == 5


@pytest.mark.parametrize("offset", [0x1000, 0x4, 0x44000])
def test_msi_for_other_destinations_is_dropped(apic, offset):
    apic.write(offset, 4, 0x46)
    assert apic.irr == 0


def test_broadcast_msi(apic):
    apic.write(0xFF000, 4, 0x46)
    assert apic.irr == 1 << 0x46


def test_priority_ppr_and_eoi(apic):
    apic.write(0, 4, 0x45)
    apic.write(0, 4, 0x4A)
    assert apic.get_interrupt(0) == 0x4A
    assert apic.read(0xA0, 4) == 0x40
    assert apic.irq_pending() == -1          # 0x45 is in the same priority class
    apic.write(0xB0, 4, 0)
    assert apic.get_interrupt(0) == 0x45


def test_tpr_holds_back_and_svr_disables(apic):
    apic.write(0x80, 4, 0x50)
    apic.write(0, 4, 0x45)
    assert apic.irq_pending() < 0
    apic.write(0x80, 4, 0)
    apic.write(0xF0, 4, 0xFF)
    assert apic.irq_pending() == 0 and apic.irr == 1 << 0x45


def test_unknown_register_sets_esr(apic):
    assert apic.read(0x400, 4) == 0 and apic.read(0x280, 4) == 0x80


def test_controller_pic_wins_over_apic_and_firmware_state():
    ic = InterruptController(clock=lambda: 0)
    ic.firmware_state()
    assert (ic.pic.master.imr, ic.pic.slave.imr) == (0xB8, 0x8E)
    assert (ic.pic.master.elcr, ic.pic.slave.elcr) == (0x00, 0x0C)
    assert ic.apic.lvt[3] == 0x8700 and ic.apic.spurious_vec == 0x1FF
    ic.apic.write(0, 4, 0x41)
    ic.pic.slave.elcr_write(0x08)
    ic.pic.master.port_write(1, 0x00)
    ic.pic.slave.port_write(1, 0x00)
    ic.pic.set_irq(11, 1)
    assert ic.cpu_pending()
    assert ic.acknowledge() == 0x70 + 3      # ExtINT first (SeaBIOS's slave base 0x70)
    ic.pic.set_irq(11, 0)
    assert ic.acknowledge() == 0x41
