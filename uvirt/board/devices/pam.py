"""The i440FX's view of the first megabyte above 640 KiB, and the firmware ROMs behind it.

QEMU 7.2 (hw/pci-host/i440fx.c ``i440fx_init`` / ``i440fx_update_memory_mappings``,
hw/pci-host/pam.c, hw/i386/x86.c ``x86_bios_rom_init``, hw/i386/pc.c ``pc_memory_init``)::

    0x000A0000-0x000BFFFF  "smram-region": an alias of the *PCI* address space, priority 1
                           over RAM, enabled while SMRAM (config 0x72) has D_OPEN (bit 6)
                           clear.  With no VGA device a BAR placed here is what the guest
                           sees.  An alias of a container is transparent where the
                           container has nothing: without a BAR the RAM beneath shows
                           (measured: firmware/lowmem_map.S, "VGA empty").
    0x000C0000-0x000EFFFF  PAM1..PAM6, 16 KiB segments (two per register 0x5A..0x5F,
    0x000F0000-0x000FFFFF  PAM0, 64 KiB (high nibble of 0x59)
                           each nibble selects one of four aliases, priority 1:
                           0 PCI space (transparent like the VGA window), 1 RAM
                           read-only (writes dropped), 2 RAM (QEMU's "XXX: should
                           distinguish read/write cases"), 3 RAM.

    PCI space (priority -1 below RAM; the ROMs and the BARs are all priority 1 in it, so
    a BAR placed after the machine was built wins over a ROM, as measured at 0xE0000):
      0x000C0000-0x000DFFFF  "pc.rom", 128 KiB of read-only zeros (option ROMs go to
                             shadow RAM through fw_cfg, never here)
      0x000E0000-0x000FFFFF  "isa-bios": the last 128 KiB of the BIOS image, read-only
      4 GiB - size .. 4 GiB  "pc.bios": the whole image, read-only

In the flat map: RAM lies below the PCI space (``RAM_UNDER_PCI``) all through
0xA0000-0xFFFFF, so where an alias shows PCI space, RAM shows wherever PCI space is
empty; where an alias shows RAM, RAM sits above it as well (hiding the RAM below, which
therefore never needs to be switched off).

kvmvapic (hw/i386/kvmvapic.c ``vapic_map_rom_writable``): under TCG, QEMU's kvmvapic
option ROM, which SeaBIOS puts at 0xC0800 after the 1 KiB multiboot ROM, makes its
pages [0xC0000, 0xC3000) writable RAM at priority 1000 whatever PAM says.  The firmware
step reproduces that window (``vapic_window``); under real firmware uvirt offers the
kvmvapic ROM too, and the ROM's report on port 0x7E opens the window
(devices/chipset.py ``KvmVapic``).

At reset every PAM register and D_OPEN are 0: the CPU's first fetches reach the BIOS
through PCI space.  SeaBIOS copies itself into RAM with PAM = 3 and leaves most
segments read-only (0x1x); a read-only segment is executable RAM whose writes the
machine drops (``Machine._drop_rom_write``).

Without ``-bios`` uvirt has no BIOS image: "isa-bios" and "pc.bios" are then zeros
(read-only), so a BAR placed under them stays hidden as it does on QEMU.
"""

from __future__ import annotations

from functools import lru_cache

from uvirt.board.memory.regions import HostBuffer, MemoryMap, Placement, RamRegion

VGA_BASE, VGA_SIZE = 0xA0000, 0x20000
LOWMEM_END = 0x100000
PC_ROM_BASE, PC_ROM_SIZE = 0xC0000, 0x20000
ISA_BIOS_MAX = 0x20000
PAM_REG, SMRAM_REG = 0x59, 0x72
SMRAM_D_OPEN, SMRAM_G_SMRAME = 0x40, 0x08
#: PCI-space ROMs: the same priority as the BARs (PciBus.MEM_BAR_PRIORITY), placed first
ROM_PRIORITY = -1
ALIAS_PRIORITY = 1
RAM_UNDER_PCI = -3
VAPIC_PRIORITY = 1000
VAPIC_WINDOW = (0xC0000, 0x3000)

#: (start, size) of PAM segment i, i = 0 (0xF0000, 64 KiB) .. 12 (0xEC000)
PAM_SEGMENTS = ((0xF0000, 0x10000),) + tuple((0xC0000 + i * 0x4000, 0x4000) for i in range(12))

PAM_PCI, PAM_RO, PAM_WO, PAM_RW = 0, 1, 2, 3


def pam_attribute(config: bytes | bytearray, segment: int) -> int:
    """QEMU ``pam_update``: segment 0 is PAM0's high nibble, then low/high of 0x5A.."""
    reg = config[PAM_REG + (segment + 1) // 2]
    return (reg >> (0 if segment & 1 else 4)) & 3


#: the segments by address: 0xC0000 (segment 1) .. 0xEC000 (12), then 0xF0000 (0)
_BY_ADDRESS = tuple(range(1, len(PAM_SEGMENTS))) + (0,)


@lru_cache(maxsize=64)
def pam_runs(pam: bytes) -> tuple[tuple[int, int, bool], ...]:
    """The RAM aliases the seven PAM bytes (0x59-0x5F) ask for, by address:
    (start, end, read-only) for each run of adjacent segments that show RAM the same
    way (read-only, or read/write: QEMU maps write-only as read/write); segments that
    show PCI space have none.  Pure, so cached: a guest writes the same few values."""
    runs: list[tuple[int, int, bool]] = []
    for seg in _BY_ADDRESS:
        attr = (pam[(seg + 1) // 2] >> (0 if seg & 1 else 4)) & 3      # pam_attribute
        if attr == PAM_PCI:
            continue
        start, length = PAM_SEGMENTS[seg]
        readonly = attr == PAM_RO
        if runs and runs[-1][1] == start and runs[-1][2] == readonly:
            runs[-1] = (runs[-1][0], start + length, readonly)
        else:
            runs.append((start, start + length, readonly))
    return tuple(runs)


class LowMemory:
    """The placements of 0xA0000-0xFFFFF and the firmware ROMs on one memory map.

    Its state for a snapshot (uvirt/cpu/snapshot.py) is where the kvmvapic window is;
    PAM and SMRAM live in the host bridge's config space, and ``follow`` re-derives the
    placements from both after a restore.  The BIOS image is configuration."""

    snapshot_state = ("vapic_at", "smm")

    def __init__(self, memory: MemoryMap, ram: RamRegion, ram_placement: Placement) -> None:
        self.memory = memory
        self.ram = ram
        buf, size = ram.buffer, ram.size
        # pc.ram minus the window i440FX decodes itself (the aliases below stand in)
        ram_placement.remove()
        memory.add(RamRegion("pc.ram", VGA_BASE, buf), 0)
        memory.add(RamRegion("pc.ram", size - LOWMEM_END, buf, buffer_offset=LOWMEM_END), LOWMEM_END)
        # RAM under PCI space, never disabled (see the module docstring): an alias
        # enabled above covers it whole
        vga = RamRegion("vga-ram", VGA_SIZE, buf, buffer_offset=VGA_BASE)
        memory.add(vga, VGA_BASE, RAM_UNDER_PCI)
        memory.add(RamRegion("pam-ram", LOWMEM_END - PC_ROM_BASE, buf, buffer_offset=PC_ROM_BASE),
                   PC_ROM_BASE, RAM_UNDER_PCI)
        #: SMRAM's RAM alias over the VGA window
        self.smram = memory.add(vga, VGA_BASE, ALIAS_PRIORITY, enabled=False)
        #: the PAM aliases shown, one per run of segments showing RAM alike
        #: (``pam_runs``): (start, end, read-only) -> its placement.  A machine that never
        #: runs firmware has none; SeaBIOS's settings make three, not thirteen (which the
        #: flatten would have to resolve against RAM and the ROMs one by one).  The
        #: aliases overlap nothing else of their priority, so replacing one changes only
        #: the addresses it covers.
        self.pam: dict[tuple[int, int, bool], Placement] = {}
        self.vapic: Placement | None = None
        self.vapic_at: tuple[int, int] | None = None     # (start, length) of the window
        self._applied: bytes | None = None               # the PAM/SMRAM bytes the map shows
        #: the CPU is in System Management Mode (uvirt/cpu/smm.py): with SMRAM's
        #: G_SMRAME set it sees RAM at 0xA0000-0xBFFFF (QEMU's SMM address space)
        self.smm = False
        self._config: bytes | bytearray | None = None
        #: pc.rom and, without a BIOS image, isa-bios: read-only zeros side by side in
        #: one host buffer (one mmap per board, not two)
        self._zeros = HostBuffer(PC_ROM_SIZE + ISA_BIOS_MAX, name="pc.rom")
        memory.add(RamRegion("pc.rom", PC_ROM_SIZE, self._zeros, readonly=True), PC_ROM_BASE,
                   ROM_PRIORITY)
        self.bios: RamRegion | None = None
        self._bios_placements: list[Placement] = []
        self.load_bios(None)

    def load_bios(self, image: bytes | None) -> None:
        """Map a BIOS image at the top of 4 GiB and its last 128 KiB below 1 MiB
        (``x86_bios_rom_init``); None: read-only zeros in the ISA window only."""
        for p in self._bios_placements:
            p.remove()
        self._bios_placements = []
        if image is None:
            self.bios = None
            isa = RamRegion("isa-bios", ISA_BIOS_MAX, self._zeros, buffer_offset=PC_ROM_SIZE,
                            readonly=True)
            self._bios_placements.append(self.memory.add(isa, LOWMEM_END - ISA_BIOS_MAX, ROM_PRIORITY))
        else:
            size = len(image)
            self.bios = bios = RamRegion("pc.bios", size, readonly=True)
            bios.buffer.view[:size] = image
            isa_size = min(size, ISA_BIOS_MAX)
            isa = RamRegion("isa-bios", isa_size, bios.buffer, buffer_offset=size - isa_size,
                            readonly=True)
            self._bios_placements += [self.memory.add(bios, (1 << 32) - size, ROM_PRIORITY),
                                      self.memory.add(isa, LOWMEM_END - isa_size, ROM_PRIORITY)]
        self.memory.commit()

    def update(self, config: bytes | bytearray) -> None:
        """i440fx_update_memory_mappings: follow PAM0-6 and SMRAM."""
        self._config = config
        self._applied = key = self._key(config)
        with self.memory.batch():
            smram = config[SMRAM_REG]
            ram = bool(smram & SMRAM_D_OPEN) or (self.smm and bool(smram & SMRAM_G_SMRAME))
            self.smram.set_enabled(ram)
            runs, shown = pam_runs(key[:7]), self.pam
            for run in [run for run in shown if run not in runs]:
                shown.pop(run).remove()
            for run in runs:
                if run not in shown:
                    start, end, readonly = run
                    alias = RamRegion("pam-rom" if readonly else "pam-ram", end - start,
                                      self.ram.buffer, buffer_offset=start, readonly=readonly)
                    shown[run] = self.memory.add(alias, start, ALIAS_PRIORITY)
            self.memory.commit()

    def _key(self, config: bytes | bytearray) -> bytes:
        return bytes(config[PAM_REG:PAM_REG + 7]) + bytes((config[SMRAM_REG], self.smm))

    def set_smm(self, on: bool) -> None:
        """The CPU entered (on) or left System Management Mode."""
        if on != self.smm:
            self.smm = on
            if self._config is not None:
                self.update(self._config)

    def vapic_window(self, on: bool = True, window: tuple[int, int] = VAPIC_WINDOW) -> None:
        """QEMU's kvmvapic writable ROM window (see the module docstring); a new
        window replaces the old one, as ``vapic_map_rom_writable`` does."""
        self._place_vapic(tuple(window) if on else None)

    def _place_vapic(self, at: tuple[int, int] | None) -> None:
        if self.vapic is not None:
            self.vapic.remove()
            self.vapic = None
        self.vapic_at = at
        if at is not None:
            start, length = at
            self.vapic = self.memory.add(RamRegion("kvmvapic-rom", length, self.ram.buffer,
                                                   buffer_offset=start), start, VAPIC_PRIORITY)
        self.memory.commit()

    def follow(self, config: bytes | bytearray) -> None:
        """After a snapshot restore: make the placements match the restored PAM/SMRAM
        bytes and kvmvapic window; nothing to do (and no commit) when they already do."""
        want = (self.vapic.addr, self.vapic.region.size) if self.vapic is not None else None
        if want != self.vapic_at:
            self._place_vapic(self.vapic_at)
        if self._applied != self._key(config):
            self.update(config)
