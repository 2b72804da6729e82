"""PIIX4 ACPI PCI hotplug without a CPU: the 0xae00 registers (values read from QEMU
7.2.22 over qtest), and QMP device_add / device_del / eject / DEVICE_DELETED as libqos's
``qpci_unplug_acpi_device_test`` drives them."""

from __future__ import annotations

import json

import pytest

from uvirt.board.devices import acpi_hotplug as A
from uvirt.launch.device_table import BuildContext, DeviceCatalog
from uvirt.cpu.machine import Machine
from uvirt.board.memory import physmem
from uvirt.qtest.qmp import QmpContext, QmpMonitor


class Qmp:
    def __init__(self) -> None:
        self.m = Machine(cpu=False)
        self.h = self.m.services
        self.ctx = QmpContext(self.h, devices=DeviceCatalog(self.m.board, BuildContext()))
        self.sent: list[bytes] = []
        self.mon = QmpMonitor(self.ctx, self.sent.append)
        self.mon.opened()
        self("qmp_capabilities")

    def __call__(self, command: str, **args) -> list[dict]:
        self.sent.clear()
        self.mon.feed(json.dumps({"execute": command, "arguments": args}).encode())
        return self.take()

    def take(self) -> list[dict]:
        out = [json.loads(b) for b in self.sent]
        self.sent.clear()
        return out

    def events(self) -> list[dict]:
        return [e["data"] for e in self.take() if e.get("event") == "DEVICE_DELETED"]


@pytest.fixture
def q():
    s = Qmp()
    yield s
    s.m.close()


def inl(m, port):
    return int.from_bytes(physmem.read(m.io, port, 4), "little")


def outl(m, port, v):
    physmem.write(m.io, port, v.to_bytes(4, "little"))


def cfg_id(m, slot):
    outl(m, 0xCF8, 0x80000000 | slot << 11)
    return inl(m, 0xCFC)


def test_registers_at_reset_as_qemu(q):
    m = q.m
    assert [inl(m, 0xAE00 + o) for o in range(0, 0x18, 4)] == [0, 0, 0, 0xFFFFFFFC, 0, 0]
    assert inl(m, 0xAE18) == 0xFFFFFFFF                       # past the window
    assert physmem.read(m.io, 0xAE0C, 1) == b"\0"            # 4-byte accesses only
    assert physmem.read(m.io, 0xAE0C, 2) == b"\0\0"
    assert inl(m, 0xAE16) == 0xFFFF0000                       # split: invalid 2 + unassigned
    outl(m, 0xAE10, 5)                                        # another bsel: no bus, all removable
    assert inl(m, 0xAE10) == 5 and inl(m, 0xAE0C) == 0xFFFFFFFF
    outl(m, 0xAE10, 0x100)                                    # out of range: everything reads 0
    assert inl(m, 0xAE10) == 0 and inl(m, 0xAE0C) == 0
    outl(m, 0xAE10, 0)
    outl(m, 0xAE14, 1 << 1)
    assert inl(m, 0xAE14) == 0


def test_gpe0_status_enable_bytes(q):
    m = q.m
    assert inl(m, 0xAFE0) == 0 and physmem.read(m.io, 0xAFE4, 1) == b"\xff"
    physmem.write(m.io, 0xAFE2, b"\x34\x12")
    assert inl(m, 0xAFE0) == 0x12340000
    m.acpi_hotplug.gpe.event(A.PCI_HOTPLUG_STATUS)
    assert inl(m, 0xAFE0) == 0x12340002
    physmem.write(m.io, 0xAFE0, b"\x02")                      # write 1 to clear
    assert inl(m, 0xAFE0) == 0x12340000


def test_hotplug_and_eject_virtio_rng_as_libqos(q):
    m = q.m
    assert q("device_add", driver="virtio-rng-pci", id="rng1", addr="0x06") == [{"return": {}}]
    assert cfg_id(m, 6) == 0x10051AF4
    assert inl(m, 0xAE00) == 1 << 6 and inl(m, 0xAE00) == 0   # UP clears on read
    assert inl(m, 0xAFE0) & 2                                   # GPE status bit 1
    assert q("device_del", id="rng1") == [{"return": {}}]
    assert inl(m, 0xAE04) == 1 << 6
    assert "rng1" in q.h.peripherals and cfg_id(m, 6) == 0x10051AF4
    outl(m, 0xAE08, 1 << 6)
    assert q.events() == [{"path": "/machine/peripheral/rng1/virtio-backend"},
                          {"device": "rng1", "path": "/machine/peripheral/rng1"}]
    assert cfg_id(m, 6) == 0xFFFFFFFF and inl(m, 0xAE04) == 0
    assert "rng1" not in q.h.peripherals
    # the slot is free again
    assert q("device_add", driver="virtio-rng-pci", id="rng2", addr="06.0") == [{"return": {}}]


def test_eject_unmaps_bars(q):
    m = q.m
    q("device_add", driver="virtio-rng-pci", id="r", addr="6.0")
    fn = q.h.peripherals["r"].device
    outl(m, 0xCF8, 0x80000000 | 6 << 11 | 0x10)
    outl(m, 0xCFC, 0xC000)                                    # BAR0 (legacy I/O)
    outl(m, 0xCF8, 0x80000000 | 6 << 11 | 0x04)
    outl(m, 0xCFC, 0x1)                                       # I/O decode on
    assert physmem.read(m.io, 0xC000, 4) != b"\xff" * 4       # host features
    q("device_del", id="r")
    outl(m, 0xAE08, 1 << 6)
    assert physmem.read(m.io, 0xC000, 4) == b"\xff" * 4
    assert fn.bus is None


def test_repeated_device_del_is_accepted_and_builtins_never_eject(q):
    m = q.m
    q("device_add", driver="virtio-rng-pci", id="r", addr="06.0")
    assert q("device_del", id="r") == [{"return": {}}]
    assert q("device_del", id="r") == [{"return": {}}]
    outl(m, 0xAE08, 1 << 1)                                   # PIIX3/PM slot: fixed
    assert cfg_id(m, 1) == 0x70008086 and q.events() == []
    outl(m, 0xAE10, 3)
    outl(m, 0xAE08, 1 << 6)                                   # another bsel: no bus
    assert cfg_id(m, 6) == 0x10051AF4
    outl(m, 0xAE10, 0)
    outl(m, 0xAE08, 0)                                        # no bit: nothing
    assert cfg_id(m, 6) == 0x10051AF4
    outl(m, 0xAE08, (1 << 6) | (1 << 9))                      # lowest bit only
    assert len(q.events()) == 2


def test_anonymous_hotplugged_device_gets_a_peripheral_anon_path(q):
    q("device_add", driver="virtio-rng-pci", addr="06.0")
    outl(q.m, 0xAE08, 1 << 6)
    assert q.events() == [{"path": "/machine/peripheral-anon/device[0]/virtio-backend"},
                          {"path": "/machine/peripheral-anon/device[0]"}]


def test_reset_performs_pending_removes(q):
    q("device_add", driver="virtio-rng-pci", id="r", addr="06.0")
    q("device_del", id="r")
    q.m.reset()
    assert [e.get("device") for e in q.events()] == [None, "r"]
    assert cfg_id(q.m, 6) == 0xFFFFFFFF
    assert inl(q.m, 0xAE0C) == 0xFFFFFFFC and inl(q.m, 0xAFE0) == 0


def test_sci_follows_status_and_enable(q):
    hp = q.m.acpi_hotplug
    levels = []
    hp.gpe.on_sci = levels.append
    physmem.write(q.m.io, 0xAFE2, b"\x02")
    q("device_add", driver="virtio-rng-pci", id="r", addr="06.0")
    physmem.write(q.m.io, 0xAFE0, b"\x02")
    assert levels == [1, 0]
