"""virtio-serial without a CPU: the device behind the transport's register methods, rings
built by the mock driver (values measured on QEMU 7.2; differential tests in
tests/guest/test_virtio_blk_serial.py)."""

from __future__ import annotations

import struct

import pytest

from uvirt.backends.chardev import MemoryChardev
from uvirt.virtio.serial import VirtioSerialError
from uvirt.testing.mock_driver import MockSplitQueue, guest_ram
from uvirt.virtio.serial import (CONSOLE_PORT, DEVICE_READY, PORT_ADD, PORT_NAME, PORT_OPEN, PORT_READY,
                                 PORT_REMOVE, VirtioSerial, VirtioSerialPort)
from uvirt.virtio.pci import VirtioPci


def _ctrl(port, event, value):
    return struct.pack("<IHH", port, event, value)


def _device(max_ports=31, **kw):
    dev = VirtioSerial(max_ports=max_ports, **kw)
    fn = VirtioPci(dev, class_code=0x0780)
    mem = guest_ram(8 << 20)
    fn.realize(mem)
    errors = []
    fn.guest_error = lambda kind, detail: errors.append((kind, detail))
    return fn, dev, mem, errors


def _up(fn, mem, queues, accept=0x6):
    fn.legacy_write(0x12, 1, 1)
    fn.legacy_write(0x12, 1, 3)
    fn.legacy_write(0x04, 4, accept)
    drivers = {}
    for q in queues:
        drivers[q] = MockSplitQueue(mem, 0x10000 + 0x10000 * q, fn.vdev.queue_num(q), data_size=0x8000)
        fn.legacy_write(0x0E, 2, q)
        fn.legacy_write(0x08, 4, drivers[q].pfn)
    fn.legacy_write(0x12, 1, 7)
    return drivers


def test_identity_features_config_queues():
    fn, dev, _, _ = _device()
    assert (fn.config.get(2, 2), fn.config.get(0x0A, 2), fn.config.get(0x2E, 2)) == (0x1003, 0x0780, 3)
    assert fn.legacy_read(0, 4) == 0x79000006
    assert [dev.config_read(i, 1) for i in range(13)] == [0, 0, 0, 0, 31, 0, 0, 0, 0, 0, 0, 0, 0xFF]
    assert [dev.queue_num(q) for q in (0, 1, 2, 3, 4, 63, 64)] == [128, 128, 32, 32, 128, 128, 0]
    _, dev1, _, _ = _device(max_ports=1, emergency_write=False)
    assert not dev1.host_features & 0b110 and dev1.config_len == 8


@pytest.mark.parametrize("max_ports,message", [(0, "Maximum number of serial ports not specified"),
                                               (512, "maximum ports supported: 511")])
def test_max_ports_errors(max_ports, message):
    with pytest.raises(VirtioSerialError, match=message):
        VirtioSerial(max_ports=max_ports)


def test_port_ids_and_errors():
    _, dev, _, _ = _device(max_ports=4)
    con = dev.plug(VirtioSerialPort(is_console=True))
    port = dev.plug(VirtioSerialPort(name="a"))
    assert (con.id, port.id) == (0, 1)
    with pytest.raises(VirtioSerialError, match="A port already exists at id 1"):
        dev.plug(VirtioSerialPort(), 1)
    with pytest.raises(VirtioSerialError, match="A port already exists by name a"):
        dev.plug(VirtioSerialPort(name="a"))
    with pytest.raises(VirtioSerialError, match="Out-of-range port id specified, max. allowed: 3"):
        dev.plug(VirtioSerialPort(), 4)
    _, dev, _, _ = _device(max_ports=4)
    with pytest.raises(VirtioSerialError, match="Port number 0 on virtio-serial devices reserved"):
        dev.plug(VirtioSerialPort(), 0)
    assert dev.plug(VirtioSerialPort()).id == 1              # id 0 stays reserved


def test_control_protocol_and_output():
    fn, dev, mem, errors = _device(max_ports=4)
    out0, out1 = MemoryChardev(), MemoryChardev()
    dev.plug(VirtioSerialPort(chardev=out0, is_console=True))
    dev.plug(VirtioSerialPort(chardev=out1, name="org.uvirt.p1"))
    d = _up(fn, mem, [0, 1, 2, 3, 4, 5])
    assert fn.legacy_read(0x13, 1) == 1                       # DRIVER_OK kicked queues 1, 3, 5
    rx = [d[2].add_chain([(32, True)], publish=True) for _ in range(8)]
    fn.legacy_write(0x10, 2, 2)

    def recv():
        return [(e.len, d[2].read_written(next(c for c in rx if c.head == e.id), e.len))
                for e in d[2].used_entries()]

    d[3].add_chain([8], data=_ctrl(0, DEVICE_READY, 1))
    fn.legacy_write(0x10, 2, 3)
    assert recv() == [(8, _ctrl(0, PORT_ADD, 1)), (8, _ctrl(1, PORT_ADD, 1))]
    d[3].add_chain([8], data=_ctrl(0, PORT_READY, 1))
    d[3].add_chain([8], data=_ctrl(1, PORT_READY, 1))
    d[3].add_chain([8], data=_ctrl(9, PORT_READY, 1))
    fn.legacy_write(0x10, 2, 3)
    assert recv() == [(8, _ctrl(0, CONSOLE_PORT, 1)), (8, _ctrl(0, PORT_OPEN, 1)),
                      (21, _ctrl(1, PORT_NAME, 1) + b"org.uvirt.p1\0"), (8, _ctrl(1, PORT_OPEN, 1))]
    assert errors[-1][1].endswith("Unexpected port id 9 for device virtio-serial-bus.0")
    d[1].add_chain([5, 4], data=b"hello\n!!!")
    d[5].add_chain([3], data=b"abc")
    fn.legacy_write(0x10, 2, 1)
    fn.legacy_write(0x10, 2, 5)
    assert out0.data == b"hello\n!!!" and out1.data == b"abc"
    assert [e.len for e in d[1].used_entries()] == [0]
    dev.config_store(8, 4, ord("Z"))                          # emergency write
    assert out0.data.endswith(b"Z") and dev.config_read(8, 4) == 0
    dev.unplug(dev.port(1))
    assert recv() == [(8, _ctrl(1, PORT_REMOVE, 1))]


def test_lost_messages_and_short_buffers():
    fn, dev, mem, _ = _device(max_ports=2)
    dev.plug(VirtioSerialPort(chardev=MemoryChardev(), is_console=True))
    d = _up(fn, mem, [0, 1, 2, 3])
    d[3].add_chain([8], data=_ctrl(0, DEVICE_READY, 1))
    fn.legacy_write(0x10, 2, 3)                               # no rx buffer: PORT_ADD is lost
    c = d[2].add_chain([(4, True)])
    fn.legacy_write(0x10, 2, 2)
    assert d[2].used_entries() == []
    d[3].add_chain([8], data=_ctrl(0, PORT_READY, 1))
    fn.legacy_write(0x10, 2, 3)
    (e,) = d[2].used_entries()[:1]
    assert e.len == 8 and d[2].read_written(c, 4) == _ctrl(0, CONSOLE_PORT, 1)[:4]


def test_transmit_queue_without_port_is_drained():
    fn, dev, mem, _ = _device(max_ports=2)
    d = _up(fn, mem, [0, 1, 2, 3, 4, 5])
    d[5].add_chain([6], data=b"nobody")
    fn.legacy_write(0x10, 2, 5)
    assert [e.len for e in d[5].used_entries()] == [0]


def test_bad_ring_is_virtio_error_not_exception():
    fn, dev, mem, errors = _device(max_ports=2)
    dev.plug(VirtioSerialPort(chardev=MemoryChardev(), is_console=True))
    d = _up(fn, mem, [0, 1])
    d[1].write_desc(0, 0x1000, 4, 1, 0)                       # a descriptor that loops to itself
    d[1].publish(0)
    fn.legacy_write(0x10, 2, 1)
    assert dev.broken and any(k == "virtio_error" for k, _ in errors)


def test_python_api_builds_devices_on_a_machine(tmp_path):
    from uvirt.launch.device_table import add_virtio_blk_pci, add_virtio_serial_pci, add_virtio_serial_port
    from uvirt.cpu.machine import Machine

    img = tmp_path / "d.img"
    img.write_bytes(bytes(64 << 10))
    with Machine(cpu=False) as m:
        blk = add_virtio_blk_pci(m, img, serial="s0", readonly=True)
        ser = add_virtio_serial_pci(m, max_ports="4")
        out = MemoryChardev()
        port = add_virtio_serial_port(ser, out)
        assert blk.vdev.backend.read_only and blk.vdev.serial == "s0"
        assert ser.vdev.max_ports == 4 and port.id == 0
        assert {fn.config.get(2, 2) for fn in (blk, ser)} == {0x1001, 0x1003}
