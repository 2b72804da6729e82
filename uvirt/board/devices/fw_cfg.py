"""QEMU 7.2's fw_cfg on the ``pc`` machine (``fw_cfg_io``, hw/nvram/fw_cfg.c).

Ports (values as read from QEMU 7.2 over qtest, ``-machine pc -nodefaults``):

    0x510-0x511  "fwcfg": a 16-bit write selects an item (``outw 0x510 KEY``); a byte
                 read of either port returns the next byte of the selected item (0 past
                 its end or for an unknown key).  Byte writes are ignored (write support
                 left QEMU in 2.4); other sizes and unaligned accesses are invalid: reads
                 give 0, writes do nothing.
    0x514-0x51b  "fwcfg.dma": big-endian; reads give the signature "QEMU CFG" (any size
                 up to 4, aligned), a 32-bit write at 0x514 sets the high half of the
                 ``FWCfgDmaAccess`` address, one at 0x518 the low half and starts the
                 transfer (READ / SKIP / SELECT; WRITE fails: no item is writable).

Items: signature "QEMU", ID 3 (traditional + DMA interface), UUID (zero), RAM size,
NOGRAPHIC, NB_CPUS/MAX_CPUS 1, NUMA (no nodes), BOOT_MENU, the arch-local IRQ0 override,
the empty e820 reserve table and ACPI table list, the HPET block (one timer block at
0xfed00000), and the file directory (key 0x19): big-endian count, then 64-byte entries
(size, select, reserved, name) sorted by name, select keys from 0x20 in that order, as
QEMU assigns them.  libqos reads the RAM size (``outw 0x510 0x3`` + 8 x ``inb 0x511``,
little-endian) and finds files through the directory.

Files: ``bios-geometry`` and ``bootorder`` (empty: no boot devices), ``etc/boot-fail-wait``
(-1: ``-boot reboot-timeout`` unset), ``etc/e820`` (RAM below 4 GiB, RAM above 4 GiB when
there is some, and the AMD HyperTransport hole QEMU reserves for its default AMD
``qemu64`` CPU), ``etc/system-states`` and ``etc/tpm/log`` (empty); ``etc/acpi/rsdp``, ``etc/acpi/tables``
and ``etc/table-loader`` (devices/acpi_tables.py) and ``etc/smbios/smbios-anchor`` and
``etc/smbios/smbios-tables`` (devices/smbios.py), built when first selected, as QEMU's
select callbacks do.  ``genroms/kvmvapic.bin`` is added under ``-bios`` (boot/bios.py);
without it the file directory is QEMU's: names, sizes, select keys and contents.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import TYPE_CHECKING, Callable

from uvirt.board.memory import physmem
from uvirt.board.memory.regions import MmioRegion

if TYPE_CHECKING:
    from uvirt.board.board import Board

IO_BASE = 0x510
DMA_BASE = 0x514

SIGNATURE, ID, UUID, RAM_SIZE, NOGRAPHIC, NB_CPUS = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
NUMA, BOOT_MENU, MAX_CPUS, FILE_DIR, FILE_FIRST = 0x0D, 0x0E, 0x0F, 0x19, 0x20
ARCH_LOCAL = 0x8000
ACPI_TABLES, IRQ0_OVERRIDE, E820_TABLE, HPET = ARCH_LOCAL + 0, ARCH_LOCAL + 2, ARCH_LOCAL + 3, ARCH_LOCAL + 4
ENTRY_MASK = 0x3FFF
FILE_SLOTS = 0x20                      # pc-i440fx-7.2: x-file-slots default
MAX_ENTRY = FILE_FIRST + FILE_SLOTS
INVALID = 0xFFFF

VERSION, VERSION_DMA = 1, 2
DMA_SIGNATURE = b"QEMU CFG"
DMA_CTL_ERROR, DMA_CTL_READ, DMA_CTL_SKIP, DMA_CTL_SELECT, DMA_CTL_WRITE = 1, 2, 4, 8, 0x10

E820_RAM, E820_RESERVED = 1, 2
E820_NR_ENTRIES = 16
AMD_HT_START, AMD_HT_SIZE = 0xFD00000000, 0x300000000
#: i440FX: RAM from this size on is split at 3 GiB (gigabyte_align), below it all is low.
LOWMEM_LIMIT = 0xE0000000


def e820_entry(address: int, length: int, kind: int) -> bytes:
    return struct.pack("<QQI", address, length, kind)


def pc_ram_split(ram_size: int) -> tuple[int, int]:
    """(below 4 GiB, above 4 GiB) as pc_init1 splits the RAM on i440FX."""
    if ram_size >= LOWMEM_LIMIT:
        return 0xC0000000, ram_size - 0xC0000000
    return ram_size, 0


def pc_items(ram_size: int, *, nographic: bool = False, boot_menu: bool = False,
             reboot_timeout: int = -1, uuid: bytes = bytes(16)) -> tuple[dict[int, bytes], dict[str, bytes]]:
    """QEMU 7.2 pc's numbered items and files for a machine with ``ram_size`` bytes."""
    items, files = _pc_items(ram_size, nographic, boot_menu, reboot_timeout, bytes(uuid))
    return dict(items), dict(files)


@lru_cache(maxsize=16)
def _pc_items(ram_size: int, nographic: bool, boot_menu: bool, reboot_timeout: int,
              uuid: bytes) -> tuple[tuple[tuple[int, bytes], ...], tuple[tuple[str, bytes], ...]]:
    """``pc_items`` as pairs of immutable values: a pure function of the machine's
    options, so every machine of one configuration shares them (the struct packing
    is most of a board's fw_cfg set-up otherwise)."""
    below, above = pc_ram_split(ram_size)
    e820 = e820_entry(AMD_HT_START, AMD_HT_SIZE, E820_RESERVED) + e820_entry(0, below, E820_RAM)
    if above:
        e820 += e820_entry(1 << 32, above, E820_RAM)
    hpet = struct.pack("<BIQHB", 1, 0x8086A201, 0xFED00000, 0, 0) + bytes(7 * 15)
    apic_id_limit, nb_numa_nodes = 1, 0
    items = {
        SIGNATURE: b"QEMU",
        ID: struct.pack("<I", VERSION | VERSION_DMA),
        UUID: bytes(uuid),
        RAM_SIZE: struct.pack("<Q", ram_size),
        NOGRAPHIC: struct.pack("<H", int(nographic)),
        NB_CPUS: struct.pack("<H", 1),
        NUMA: bytes(8 * (1 + apic_id_limit + nb_numa_nodes)),
        BOOT_MENU: struct.pack("<H", int(boot_menu)),
        MAX_CPUS: struct.pack("<H", apic_id_limit),
        ACPI_TABLES: b"",
        IRQ0_OVERRIDE: struct.pack("<I", 1),
        E820_TABLE: bytes(4 + E820_NR_ENTRIES * 20),
        HPET: hpet,
    }
    files = {
        "bios-geometry": b"",
        "bootorder": b"",
        "etc/boot-fail-wait": struct.pack("<i", reboot_timeout),
        "etc/e820": e820,
        "etc/system-states": bytes([0x80, 0x00, 0x00, 0x81, 0x82, 0x80]),
        "etc/tpm/log": b"",
    }
    return tuple(items.items()), tuple(files.items())


class FwCfg:
    """The item store, the selector/data port logic and the DMA engine."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("cur_entry", "cur_offset", "dma_addr")

    def __init__(self, items: dict[int, bytes], files: dict[str, bytes] | None = None,
                 memory=None) -> None:
        self._items: dict[int, bytes] = dict(items)
        self._files: list[tuple[str, int]] = []
        #: files added since the keys and directory were last built: a board adds its
        #: files in several groups while it is made, and the keys and directory (which
        #: follow the sorted names of all of them) are built once, when first looked at
        self._added: dict[str, bytes] = {}
        self._names: set[str] = set()
        self.memory = memory               # AddressSpace for DMA (None: DMA fails)
        #: file name -> QEMU's select_cb: called when the guest selects the file
        #: (fw_cfg_select), so its contents can be built from the machine's state then
        self.select_callbacks: dict[str, Callable[[], None]] = {}
        #: called by reset() (QEMU's reset handlers of the files' owners)
        self.reset_hooks: list[Callable[[], None]] = []
        self.add_files(files or {})
        self.cur_entry = 0
        self.cur_offset = 0
        self.dma_addr = 0

    # -- items
    def add_file(self, name: str, data: bytes) -> int:
        """Add (or replace) a file; select keys follow the sorted names, as QEMU's."""
        self.add_files({name: data})
        return dict(self.files)[name]

    def add_files(self, files: dict[str, bytes]) -> None:
        """Add (or replace) several files; the keys and directory follow on first look."""
        for name in files:
            if len(name.encode()) >= 56:
                raise ValueError(f"fw_cfg file name too long: {name!r}")
        names = self._names.union(files)
        if len(names) > FILE_SLOTS:
            raise ValueError("fw_cfg: no free file slot")
        self._names = names
        added = self._added
        for n, d in files.items():
            added[n] = d if type(d) is bytes else bytes(d)     # (a copy of anything else)

    @property
    def items(self) -> dict[int, bytes]:
        """Select key -> contents, the file directory included."""
        if self._added:
            self._build_directory()
        return self._items

    @property
    def files(self) -> list[tuple[str, int]]:
        """(name, select key) of every file, by name."""
        if self._added:
            self._build_directory()
        return self._files

    def _build_directory(self) -> None:
        """Keys in the order of the sorted names and the FILE_DIR item, as QEMU's
        fw_cfg_add_file_callback leaves them after the last file is added."""
        contents = {n: self._items[k] for n, k in self._files}
        contents.update(self._added)
        self._added = {}
        for _, key in self._files:
            self._items.pop(key, None)
        self._files = [(n, FILE_FIRST + i) for i, n in enumerate(sorted(contents))]
        directory = [struct.pack(">I", len(self._files))]
        for n, key in self._files:
            self._items[key] = contents[n]
            directory.append(struct.pack(">IHH56s", len(contents[n]), key, 0, n.encode()))
        self._items[FILE_DIR] = b"".join(directory)

    def replace_file(self, name: str, data: bytes) -> None:
        """New contents of the same size for a file (fw_cfg_modify_file)."""
        key = dict(self.files)[name]
        if len(data) != len(self.items[key]):
            raise ValueError(f"fw_cfg: {name} changes size")
        self.items[key] = bytes(data)

    def file(self, name: str) -> bytes | None:
        key = dict(self.files).get(name)
        return None if key is None else self.items[key]

    def _entry(self) -> bytes | None:
        if self.cur_entry == INVALID:
            return None
        return self.items.get(self.cur_entry & (ARCH_LOCAL | ENTRY_MASK))

    def reset(self) -> None:
        for hook in self.reset_hooks:
            hook()
        self.select(0)
        self.dma_addr = 0

    def select(self, key: int) -> bool:
        """fw_cfg_select: keys past the last slot select nothing (reads give 0); the
        0x4000 "write channel" bit is ignored as in QEMU."""
        self.cur_offset = 0
        if key & ENTRY_MASK >= MAX_ENTRY:
            self.cur_entry = INVALID
            return False
        self.cur_entry = key & (ARCH_LOCAL | ENTRY_MASK)
        if self.select_callbacks:
            name = next((n for n, k in self.files if k == self.cur_entry), None)
            callback = self.select_callbacks.get(name) if name is not None else None
            if callback is not None:
                callback()
        return True

    def read_data(self, size: int) -> int:
        """fw_cfg_data_read: the next ``size`` bytes as a big-endian number, zero-padded."""
        data = self._entry()
        value = 0
        if data and self.cur_offset < len(data):
            chunk = data[self.cur_offset:self.cur_offset + size]
            self.cur_offset += len(chunk)
            value = int.from_bytes(chunk, "big") << (8 * (size - len(chunk)))
        return value

    # -- DMA
    def dma_transfer(self) -> None:
        addr, self.dma_addr = self.dma_addr, 0
        if self.memory is None:
            return
        control, length, address = struct.unpack(">IIQ", physmem.read(self.memory, addr, 16))
        if control & DMA_CTL_SELECT:
            self.select(control >> 16)
        data = self._entry()
        read = write = False
        if control & DMA_CTL_READ:
            read = True
        elif control & DMA_CTL_WRITE:
            write = True
        elif not control & DMA_CTL_SKIP:
            length = 0
        status = 0
        while length > 0 and not status & DMA_CTL_ERROR:
            if not data or self.cur_offset >= len(data):
                n = length
                if read:
                    physmem.write(self.memory, address, bytes(n))
                if write:
                    status |= DMA_CTL_ERROR
            else:
                n = min(length, len(data) - self.cur_offset)
                if read:
                    physmem.write(self.memory, address, data[self.cur_offset:self.cur_offset + n])
                if write:                  # no writable items on pc (QEMU: allow_write)
                    status |= DMA_CTL_ERROR
                self.cur_offset += n
            address += n
            length -= n
        physmem.write(self.memory, addr, struct.pack(">I", status))


class _CombPorts:
    """0x510-0x511: QEMU ``fw_cfg_comb_mem_ops``."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, fw: FwCfg) -> None:
        self.fw = fw

    def read(self, offset: int, size: int) -> int:
        if size != 1:                      # .valid.accepts: reads of one byte only (an
            return 0                       # inl covers both ports in one invalid access)
        return self.fw.read_data(1)

    def write(self, offset: int, size: int, value: int) -> None:
        if size == 2:
            self.fw.select(value & 0xFFFF)
        # size 4: invalid (.valid.accepts), ignored
        # size 1: fw_cfg_write, a no-op since QEMU 2.4

    def reset(self) -> None:
        self.fw.reset()


class _DmaPorts:
    """0x514-0x51b: QEMU ``fw_cfg_dma_mem_ops`` (DEVICE_BIG_ENDIAN)."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, fw: FwCfg) -> None:
        self.fw = fw

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(DMA_SIGNATURE[offset:offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        be = int.from_bytes(value.to_bytes(size, "little"), "big")
        if size == 4 and offset == 0:
            self.fw.dma_addr = be << 32
        elif size == 4 and offset == 4:
            self.fw.dma_addr |= be
            self.fw.dma_transfer()
        elif size == 8 and offset == 0:
            self.fw.dma_addr = be
            self.fw.dma_transfer()


def install_fw_cfg(board: "Board", **options) -> FwCfg:
    """fw_cfg_io at 0x510 (+ DMA at 0x514) with pc's items for the machine's RAM size."""
    items, files = pc_items(board.ram_size, **options)
    fw = FwCfg(items, files, memory=board.memory)
    comb = _CombPorts(fw)
    board.add_isa(MmioRegion("fwcfg", 2, comb, valid_sizes=(1, 2, 4)), IO_BASE, comb)
    board.add_isa(MmioRegion("fwcfg.dma", 8, _DmaPorts(fw), valid_sizes=(1, 2, 4, 8), impl_max=8),
                    DMA_BASE)
    board.fw_cfg = fw
    return fw
