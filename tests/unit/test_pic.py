"""The 8259 pair without a CPU: initialisation, edge/level, priorities, EOIs, reads via
OCW3, poll mode, spurious IRQs, the ELCR, and PIIX3 PIRQ routing."""

import pytest

from uvirt.board.interrupts.pic import PicPair
from uvirt.board.interrupts.piix_irq import PiixPirqRouter, pci_slot_get_pirq
from uvirt.board.pci.bus import PciFunction


def init(pair: PicPair, master_base=0x20, slave_base=0x28, icw4=0x01):
    for chip, base, icw3 in ((pair.master, master_base, 4), (pair.slave, slave_base, 2)):
        for port, val in ((0, 0x11), (1, base), (1, icw3), (1, icw4)):
            chip.port_write(port, val)


@pytest.fixture
def pic():
    p = PicPair()
    init(p)
    return p


def test_icw_sequence_sets_bases_and_unmasks(pic):
    assert (pic.master.irq_base, pic.slave.irq_base) == (0x20, 0x28)
    assert (pic.master.port_read(1), pic.slave.port_read(1)) == (0, 0)   # ICW1 clears IMR


def test_edge_irq_sets_irr_once_and_ack_moves_it_to_isr(pic):
    levels = []
    pic.on_output = levels.append
    pic.set_irq(0, 1)
    pic.set_irq(0, 1)                       # no new edge
    assert pic.master.irr == 1 and pic.output == 1 and levels[-1] == 1
    assert pic.read_irq() == 0x20
    assert (pic.master.irr, pic.master.isr, pic.output) == (0, 1, 0)
    pic.set_irq(0, 0)
    pic.set_irq(0, 1)                       # a new edge is remembered while in service
    assert pic.master.irr == 1 and pic.output == 0
    pic.master.port_write(0, 0x20)          # EOI
    assert pic.master.isr == 0 and pic.output == 1


def test_masked_irq_still_sets_irr_but_no_output(pic):
    pic.master.port_write(1, 0xFF)
    pic.set_irq(0, 1)
    assert pic.master.irr == 1 and pic.output == 0


def test_ocw3_selects_irr_or_isr(pic):
    pic.set_irq(1, 1)
    assert pic.master.port_read(0) == 0x02           # IRR by default
    pic.read_irq()
    pic.master.port_write(0, 0x0B)
    assert pic.master.port_read(0) == 0x02           # ISR
    pic.master.port_write(0, 0x0A)
    assert pic.master.port_read(0) == 0x00           # IRR again


def test_slave_cascade_and_vectors(pic):
    pic.set_irq(11, 1)
    assert pic.master.irr & 4 and pic.output
    assert pic.read_irq() == 0x2B
    assert (pic.slave.isr, pic.master.isr) == (0x08, 0x04)


def test_priority_lower_irq_number_first_and_nesting(pic):
    pic.set_irq(3, 1)
    pic.set_irq(1, 1)
    assert pic.read_irq() == 0x21
    pic.set_irq(0, 1)                        # higher priority nests
    assert pic.output == 1 and pic.read_irq() == 0x20
    assert pic.master.isr == 0x03
    pic.master.port_write(0, 0x20)           # non-specific EOI clears the highest (IRQ0)
    assert pic.master.isr == 0x02


def test_specific_eoi(pic):
    pic.set_irq(1, 1)
    pic.set_irq(3, 1)
    pic.read_irq()
    pic.master.port_write(0, 0x61)           # specific EOI for IRQ1
    assert pic.master.isr == 0


def test_level_triggered_irr_follows_the_line_and_survives_ack(pic):
    pic.slave.elcr_write(0x08)               # IRQ 11 level
    pic.set_irq(11, 1)
    assert pic.read_irq() == 0x2B
    assert pic.slave.irr == 0x08             # still asserted
    pic.slave.port_write(0, 0x20)
    pic.master.port_write(0, 0x20)
    assert pic.output == 1                   # re-delivered at once: a storm
    pic.set_irq(11, 0)
    assert pic.slave.irr == 0
    # the master's cascade input is edge-triggered: its IRR bit 2 stays latched, and the
    # next acknowledge finds nothing on the slave: spurious IRQ 15 (QEMU's model too)
    assert pic.output == 1 and pic.read_irq() == 0x2F


def test_elcr_masks_and_survives_icw1(pic):
    pic.master.elcr_write(0xFF)
    pic.slave.elcr_write(0xFF)
    assert (pic.master.elcr_read(), pic.slave.elcr_read()) == (0xF8, 0xDE)
    init(pic)
    assert (pic.master.elcr_read(), pic.slave.elcr_read()) == (0xF8, 0xDE)
    pic.reset()
    assert pic.master.elcr_read() == 0


def test_spurious_irq7_and_irq15(pic):
    assert pic.read_irq() == 0x27            # nothing pending: spurious on the master
    pic.slave.elcr_write(0x08)
    pic.set_irq(11, 1)
    pic.set_irq(11, 0)                       # level dropped before the acknowledge
    assert pic.read_irq() == 0x2F            # spurious on the slave


def test_auto_eoi_leaves_isr_clear():
    pic = PicPair()
    init(pic, icw4=0x03)
    pic.set_irq(0, 1)
    assert pic.read_irq() == 0x20 and pic.master.isr == 0


def test_poll_mode(pic):
    pic.set_irq(5, 1)
    pic.master.port_write(0, 0x0C)
    assert pic.master.port_read(0) == 0x85
    assert pic.master.isr == 0x20


def test_piix_swizzle_matches_qemu():
    # docs/qemu-7.2-observed.md: 00:03.0 and 00:04.0 INTA reach PIRQC and PIRQD (IRQ 11, 11)
    assert [pci_slot_get_pirq(slot << 3, 1) for slot in (1, 2, 3, 4, 5)] == [0, 1, 2, 3, 0]
    assert pci_slot_get_pirq(3 << 3, 2) == 3


class _Fn(PciFunction):
    def __init__(self):
        super().__init__(vendor_id=0x8086, device_id=0x7000, class_code=0x0601)


def test_piix_routing_levels_and_disabled_routes():
    piix3 = _Fn()
    lines = {}
    router = PiixPirqRouter(piix3, lambda irq, level: lines.__setitem__(irq, level))
    piix3.config.data[0x60:0x64] = bytes((0x80, 0x80, 0x80, 0x80))
    dev_a, dev_b = _Fn(), _Fn()
    dev_a.devfn, dev_b.devfn = 3 << 3, 4 << 3
    router.intx(dev_a, 1, 1)
    assert lines == {}                       # route disabled (>= 16)
    piix3.config.data[0x60:0x64] = bytes((10, 10, 11, 11))
    router.routes_changed()
    assert lines[11] == 1 and lines[10] == 0 and lines[0] == 0
    router.intx(dev_b, 1, 1)                 # PIRQD, also IRQ 11
    router.intx(dev_a, 1, 0)
    assert lines[11] == 1                    # still held by 00:04.0
    router.intx(dev_b, 1, 0)
    assert lines[11] == 0
