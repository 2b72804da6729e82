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


# --- the flattened view against QEMU's decode, for any PAM/SMRAM/SMM history -------------
# (pam.py keeps RAM under PCI space switched on everywhere and places each alias when it
# is first enabled; this checks that what every page shows is still exactly what
# i440fx_update_memory_mappings decodes, whatever happened before)

from hypothesis import given, settings, strategies as st

from uvirt.board.memory.regions import RamRegion
from uvirt.board.devices.pam import (PAM_RO, PAM_PCI, SMRAM_D_OPEN, SMRAM_G_SMRAME, SMRAM_REG,
                                     VGA_BASE, VGA_SIZE)

PAGES = range(0xA0000, 0x100000, 0x1000)


def _shown(m, addr):
    """What the CPU-less map shows at ``addr``: RAM (its buffer offset, read-only) or a ROM."""
    pc = m.memory.lookup(addr)
    region = pc.region
    assert isinstance(region, RamRegion)
    if region.buffer is m.ram.buffer:
        return ("ram", region.buffer_offset + pc.offset + addr - pc.start, region.readonly)
    return (region.name, pc.offset + addr - pc.start)


def _expected(m, config, smm, addr):
    if addr < VGA_BASE + VGA_SIZE:
        smram = config[SMRAM_REG]
        if smram & SMRAM_D_OPEN or (smm and smram & SMRAM_G_SMRAME):
            return ("ram", addr, False)
        if addr in BARS:
            return ("bar", 0)
        return ("ram", addr, False)           # PCI space is empty there: RAM shows through
    seg = 0 if addr >= 0xF0000 else 1 + (addr - 0xC0000) // 0x4000
    attr = pam_attribute(config, seg)
    if attr == PAM_PCI:                       # a BAR placed after pc.rom, pc.rom, isa-bios
        if addr in BARS:
            return ("bar", 0)
        return ("pc.rom", addr - 0xC0000) if addr < 0xE0000 else ("isa-bios", addr - 0xE0000)
    return ("ram", addr, attr == PAM_RO)


#: a one-page region in PCI space (a BAR's priority) in the VGA window and under a PAM segment
BARS = (0xB0000, 0xC8000)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.integers(0x59, 0x5F), st.integers(0, 0xFF)),
                          st.tuples(st.just(SMRAM_REG), st.sampled_from([0x02, 0x0A, 0x42, 0x4A])),
                          st.booleans()), max_size=12))
def test_every_page_shows_what_the_i440fx_decodes(history):
    m = Machine(cpu=False)
    for addr in BARS:
        m.memory.add(RamRegion("bar", 0x1000), addr, m.pci.MEM_BAR_PRIORITY)
    smm = False
    for step in history:
        if isinstance(step, bool):
            smm = step
            m.lowmem.set_smm(step)
        else:
            cfg_write(m, *step)
        config = m.pci.find(0, 0).config.data
        for addr in PAGES:
            assert _shown(m, addr) == _expected(m, config, smm, addr), hex(addr)
    m.reset()
    config, smm = m.pci.find(0, 0).config.data, m.lowmem.smm
    assert [_shown(m, a) for a in PAGES] == [_expected(m, config, smm, a) for a in PAGES]


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=7, max_size=7))
def test_pam_runs_are_the_segments_attributes_joined(pam):
    """``pam_runs``: every segment showing RAM lies in exactly one run, read-only as its
    attribute says; PCI segments in none; runs sorted, apart or of another kind where
    they touch (so no two could be one)."""
    from uvirt.board.devices.pam import pam_runs
    config = bytearray(256)
    config[0x59:0x60] = pam
    runs = pam_runs(bytes(pam))
    for seg, (start, length) in enumerate(PAM_SEGMENTS):
        attr = pam_attribute(config, seg)
        inside = [r for r in runs if r[0] <= start and start + length <= r[1]]
        if attr == PAM_PCI:
            assert not any(r[0] < start + length and start < r[1] for r in runs)
        else:
            assert len(inside) == 1 and inside[0][2] == (attr == PAM_RO)
    assert all(a[1] < b[0] or a[1] == b[0] and a[2] != b[2] for a, b in zip(runs, runs[1:]))


def test_seabios_pam_settings_make_three_aliases():
    """After the firmware step (make_bios_readonly: 0xC0000-0xE7FFF and 0xF0000-0xFFFFF
    read-only, 0xE8000-0xEFFFF read/write) the low window holds one alias per run."""
    m = Machine(cpu=False)
    from uvirt.boot.firmware_step import firmware_step
    firmware_step(m)
    assert sorted(m.lowmem.pam) == [(0xC0000, 0xE8000, True), (0xE8000, 0xF0000, False),
                                    (0xF0000, 0x100000, True)]
    names = {m.memory.lookup(a).region.name for a in range(0xC3000, 0x100000, 0x1000)}
    assert names == {"pam-rom", "pam-ram"}
