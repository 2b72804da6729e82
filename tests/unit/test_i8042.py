"""The i8042 and its PS/2 keyboard as SeaBIOS drives them (uvirt/board/devices/i8042.py)."""

from uvirt.board.devices.i8042 import I8042


def make():
    irqs, resets = [], []
    return I8042(lambda irq, level: irqs.append((irq, level)), lambda: resets.append(1)), irqs, resets


def drain(k):
    out = []
    while k.read(4, 1) & 1:
        out.append(k.read(0, 1))
    return out


def test_reset_state_is_qemus():
    k, _, _ = make()
    assert k.read(4, 1) == 0x18                 # CMD | UNLOCKED, nothing to read
    k.write(4, 1, 0x20)
    assert drain(k) == [0x03]                   # command byte: both interrupts on


def test_self_test_and_interface_test():
    k, _, _ = make()
    k.write(4, 1, 0xAA)
    assert drain(k) == [0x55] and k.read(4, 1) & 0x04
    k.write(4, 1, 0xAB)
    assert drain(k) == [0x00]


def test_keyboard_reset_and_commands():
    k, irqs, _ = make()
    k.write(0, 1, 0xFF)
    assert (1, 1) in irqs                       # IRQ 1 while a byte waits
    assert drain(k) == [0xFA, 0xAA]
    assert (1, 0) in irqs[-2:]
    k.write(0, 1, 0xF5)
    k.write(0, 1, 0xED)
    k.write(0, 1, 0x02)
    k.write(0, 1, 0xF0)
    k.write(0, 1, 0x00)
    assert drain(k) == [0xFA, 0xFA, 0xFA, 0xFA, 0xFA, 0x41]    # F5, ED, 02, F0, 00 + set 2
    k.write(0, 1, 0x12)
    assert drain(k) == [0xFE]
    assert k.read(0, 1) == 0xFE                 # empty buffer: the last byte again


def test_command_byte_gates_the_interrupt():
    k, irqs, _ = make()
    k.write(4, 1, 0x60)
    k.write(0, 1, 0x00)
    k.write(0, 1, 0xF4)
    assert irqs == [] and drain(k) == [0xFA]


def test_pulse_and_output_port_reset():
    k, _, resets = make()
    k.write(4, 1, 0xFE)
    assert resets == [1]
    k.write(4, 1, 0xD1)
    k.write(0, 1, 0xCE)                         # bit 0 low
    assert resets == [1, 1]
