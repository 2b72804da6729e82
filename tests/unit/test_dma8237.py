"""The 8237 DMA controllers' registers as QEMU 7.2's i8257 (uvirt/board/devices/chipset.py)."""

from uvirt.cpu.machine import Machine


def test_registers_through_the_port_space():
    m = Machine(cpu=False)
    io = m.io
    assert io.read(0x09, 1) == 0xFF                 # mask after reset: all masked
    io.write(0x0C, 1, 0)                            # clear flip-flop
    io.write(0x02, 1, 0x34)                         # channel 1 address, low then high
    io.write(0x02, 1, 0x12)
    io.write(0x0C, 1, 0)
    assert (io.read(0x02, 1), io.read(0x02, 1)) == (0x34, 0x12)
    io.write(0x83, 1, 0x56)                         # channel 1 page
    assert io.read(0x83, 1) == 0x56 and io.read(0x84, 1) == 0xFF    # 0x84: unassigned
    io.write(0x0A, 1, 0x01)                         # unmask channel 1
    assert io.read(0x09, 1) == 0xFD
    io.write(0xD6, 1, 0xC0)                         # SeaBIOS: channel 4 cascade
    io.write(0xD4, 1, 0x00)                         # unmask channel 4
    assert io.read(0xD2, 1) == 0xFE
    io.write(0x09, 1, 0x05)                         # software request channel 1
    assert io.read(0x08, 1) == 0x20 and io.read(0x08, 1) == 0x20   # request bits stay
    io.write(0x0D, 1, 0)                            # master clear
    assert io.read(0x09, 1) == 0xFF and io.read(0x08, 1) == 0
