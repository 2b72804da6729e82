"""``Msix.notify`` (uvirt/board/pci/msix.py), written flat for the doorbell path (issue 14),
against QEMU ``msix_notify`` spelt out with the class's own accessors: every combination
of enable, mask-all, the vector's mask bit, bus mastering and vector index."""

from __future__ import annotations

import itertools

import pytest

from uvirt.board.pci.bus import PciFunction
from uvirt.board.pci.msix import ENTRY_SIZE, Msix
from uvirt.cpu.machine import Machine

NVEC = 3
RAM = 0x6000


def _function() -> tuple[Machine, PciFunction, Msix]:
    m = Machine(cpu=False)
    fn = PciFunction(vendor_id=0x1AF4, device_id=0x1110, class_code=0x0500)
    msix = Msix(fn, NVEC, bar=1, cap_offset=0x40)
    m.add_pci(fn, 4)
    for v in range(NVEC):
        fn_table = msix.table
        fn_table[v * ENTRY_SIZE:v * ENTRY_SIZE + 12] = (
            (RAM + 4 * v).to_bytes(8, "little") + (0x100 + v).to_bytes(4, "little"))
    return m, fn, msix


def _reference(msix: Msix, v: int) -> tuple[str, object]:
    """What QEMU's msix_notify does, through the accessors the flat code replaces."""
    if not msix.enabled or v >= msix.nvectors:
        return ("nothing", None)
    if msix.vector_masked(v):
        return ("pending", None)
    return ("send", msix.message(v))


@pytest.mark.parametrize("enable,maskall,masked,master,v",
                         list(itertools.product([0, 1], [0, 1], [0, 1], [0, 1], range(NVEC + 1))))
def test_notify_is_qemus_msix_notify(enable, maskall, masked, master, v):
    m, fn, msix = _function()
    try:
        fn.config.data[4] = 0x4 if master else 0               # bus master
        fn.config.data[0x43] = (0x80 if enable else 0) | (0x40 if maskall else 0)
        for w in range(NVEC):
            msix.table[w * ENTRY_SIZE + 12] = masked
        want, message = _reference(msix, v)
        sent = []
        msix.notify(v, lambda *a: sent.append(a))              # a device's own sender
        assert sent == ([(v, *message)] if want == "send" else [])
        assert msix.pba[0] == (1 << v if want == "pending" else 0)
        msix.pba[0] = 0
        msix.notify(v)                                         # the bus-master write
        written = m.memory.read(RAM + 4 * v, 4) if v < NVEC else 0
        assert written == (0x100 + v if want == "send" and master else 0)
        assert msix.pba[0] == (1 << v if want == "pending" else 0)
    finally:
        m.close()
