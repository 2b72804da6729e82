"""i440FX PAM and SMRAM decoding of 0xA0000-0xFFFFF without a CPU (uvirt/board/devices/pam.py)."""

from uvirt.cpu.machine import Machine
from uvirt.board.devices.pam import PAM_SEGMENTS, pam_attribute


def cfg_write(m, off, val):
    m.pci.config_write(0, 0, off, 1, val)


def test_reset_values_are_qemus():
    m = Machine(cpu=False)
    fx = m.pci.find(0, 0)
    assert [fx.config.get(r, 1) for r in range(0x59, 0x60)] == [0] * 7
    assert fx.config.get(0x72, 1) == 0x02 and fx.config.get(0x57, 1) == 0x10


def test_pam_attribute_nibbles():
    cfg = bytearray(256)
    cfg[0x59] = 0x30
    cfg[0x5A] = 0x21
    assert pam_attribute(cfg, 0) == 3          # 0xF0000: PAM0 high nibble
    assert pam_attribute(cfg, 1) == 1          # 0xC0000: 0x5A low
    assert pam_attribute(cfg, 2) == 2          # 0xC4000: 0x5A high
    assert PAM_SEGMENTS[1] == (0xC0000, 0x4000) and PAM_SEGMENTS[12] == (0xEC000, 0x4000)


def test_segment_modes_through_the_cpu_less_path():
    m = Machine(cpu=False)
    m.ram.buffer.view[0xC4000] = 0x5A
    mem = m.memory
    assert mem.read(0xC4000, 1) == 0            # PAM 0: pc.rom (zeros)
    cfg_write(m, 0x5A, 0x10)                    # 0xC4000 read-only RAM
    assert mem.read(0xC4000, 1) == 0x5A
    mem.write(0xC4000, 1, 0x77)
    assert mem.read(0xC4000, 1) == 0x5A         # write dropped
    cfg_write(m, 0x5A, 0x30)
    mem.write(0xC4000, 1, 0x77)
    assert m.ram.buffer.view[0xC4000] == 0x77
    cfg_write(m, 0x5A, 0x20)                    # QEMU: write-only acts as RAM
    assert mem.read(0xC4000, 1) == 0x77


def test_vga_window_shows_ram_unless_a_bar_is_there_or_d_open():
    m = Machine(cpu=False)
    m.ram.buffer.view[0xA0000] = 0x42
    assert m.memory.read(0xA0000, 1) == 0x42    # the empty PCI alias is transparent
    pc = m.memory.lookup(0xA0000)
    assert pc.region.name == "vga-ram"
    cfg_write(m, 0x72, 0x42)
    assert m.memory.lookup(0xA0000).region.name == "vga-ram"


def test_reset_returns_to_pci_space():
    m = Machine(cpu=False)
    cfg_write(m, 0x5E, 0x33)
    assert m.memory.lookup(0xE0000).region.name == "pam-ram"
    m.reset()
    assert m.memory.lookup(0xE0000).region.name == "isa-bios"


def test_bios_image_at_the_top_and_its_tail_below_1m():
    m = Machine(cpu=False)
    image = bytes(range(256)) * 1024            # 256 KiB
    m.lowmem.load_bios(image)
    assert m.memory.read(0xFFFFFFF0, 4) == int.from_bytes(image[-16:-12], "little")
    assert m.memory.read(0xE0000, 4) == int.from_bytes(image[-0x20000:-0x20000 + 4], "little")
    assert m.memory.read(0xFFFC0000, 1) == image[0]
