"""The 16550A behind -serial (uvirt/board/devices/serial.py), as SeaBIOS and Linux probe it."""

from uvirt.board.devices.serial import Uart16550


def make():
    out, irq = bytearray(), []
    return Uart16550(out.extend, irq.append), out, irq


def test_reset_values_are_qemus():
    u, _, _ = make()
    assert [u.read(i, 1) for i in range(8)] == [0, 0, 0x01, 0, 0x08, 0x60, 0xB0, 0]


def test_thr_goes_to_the_chardev_and_thri_is_reported_once():
    u, out, irq = make()
    u.write(1, 1, 0x02)                         # IER.THRI with THR empty: pending at once
    assert irq == [1] and u.read(2, 1) == 0x02
    assert u.read(2, 1) == 0x01 and irq == [1, 0]   # the IIR read cleared it
    u.write(0, 1, ord("A"))
    assert bytes(out) == b"A" and irq[-1] == 1


def test_divisor_latch_and_fifo_bits():
    u, _, _ = make()
    u.write(3, 1, 0x80)
    u.write(0, 1, 0x01)
    u.write(1, 1, 0x00)
    assert (u.read(0, 1), u.read(1, 1)) == (0x01, 0x00)
    u.write(3, 1, 0x03)
    u.write(2, 1, 0x07)
    assert u.read(2, 1) == 0xC1


def test_loopback_echoes_and_maps_modem_lines():
    u, out, _ = make()
    u.write(4, 1, 0x1F)
    u.write(0, 1, 0x5A)
    assert bytes(out) == b"" and u.read(5, 1) & 1 and u.read(0, 1) == 0x5A
    assert u.read(6, 1) == 0xF0
