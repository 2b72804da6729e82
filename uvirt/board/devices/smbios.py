"""QEMU 7.2's SMBIOS tables for the ``pc`` machine (hw/smbios/smbios.c
``smbios_get_tables``), offered over fw_cfg as ``etc/smbios/smbios-anchor`` (the 31-byte
SMBIOS 2.8 entry point, table address 0: the firmware places the tables) and
``etc/smbios/smbios-tables`` (the structures, each followed by its strings).

SeaBIOS (src/fw/biostables.c ``smbios_romfile_setup``) copies them in, adding its own
type 0; tables this small go to the F segment, so their size decides where everything
the firmware allocates there afterwards lands (the ACPI RSDP among them).

Structures, with QEMU's handles: type 1 (system: "QEMU", "Standard PC (i440FX + PIIX,
1996)", "pc-i440fx-7.2", the ``-uuid`` in SMBIOS byte order), type 3 (chassis), type 4
(one qemu64 CPU, "CPU 0"), type 16 (physical memory array: RAM in KiB), type 17 (one
"DIMM 0": QEMU's DIMMs are 16 GiB at most, uvirt's RAM is below 3.5 GiB), type 19 (one
memory array mapped address per e820 RAM range: below 4 GiB, above 4 GiB), type 32
(boot status), type 127 (end of table).
"""

from __future__ import annotations

import functools
import struct

ANCHOR_FILE, TABLES_FILE = "etc/smbios/smbios-anchor", "etc/smbios/smbios-tables"
MANUFACTURER = b"QEMU"
PRODUCT = b"Standard PC (i440FX + PIIX, 1996)"
MACHINE_VERSION = b"pc-i440fx-7.2"
KIB, MIB = 1 << 10, 1 << 20


def _strings(*strings: bytes) -> bytes:
    """The string set after a structure: each NUL-terminated, then one more NUL."""
    return b"".join(s + b"\0" for s in strings) + b"\0" if strings else b"\0\0"


def _header(kind: int, formatted: bytes, handle: int) -> bytes:
    return struct.pack("<BBH", kind, 4 + len(formatted), handle) + formatted


def smbios_uuid(uuid: bytes) -> bytes:
    """smbios_encode_uuid: time_low, time_mid, time_hi_and_version little-endian."""
    return uuid[3::-1] + uuid[5:3:-1] + uuid[7:5:-1] + uuid[8:]


def type1(uuid: bytes) -> bytes:
    body = struct.pack("<BBBB16sBBB", 1, 2, 3, 0, smbios_uuid(uuid), 6, 0, 0)   # wake-up: power switch
    return _header(1, body, 0x0100) + _strings(MANUFACTURER, PRODUCT, MACHINE_VERSION)


def type3() -> bytes:
    # manufacturer 1, type "other", version 2, no serial/asset, states "safe", security
    # "unknown", OEM 0, height 0, cords 0, no contained elements, no SKU string
    body = bytes([1, 0x01, 2, 0, 0, 3, 3, 3, 2]) + bytes(4) + bytes(5)
    return _header(3, body, 0x0300) + _strings(MANUFACTURER, MACHINE_VERSION)


def type4() -> bytes:
    """One qemu64 CPU (QEMU's default for pc): its CPUID signature and feature words,
    2000 MHz, populated and enabled, one core and thread."""
    # socket string 1, "central processor", family "other", manufacturer string 2, the
    # CPUID signature and EDX/ECX... words, version string 3, 2000 MHz, socket populated,
    # enabled, no caches, 1 core, 1 enabled, 1 thread, 64-bit capable, family 2 "other"
    body = bytes.fromhex("01030102" "b10f0600fdfb8b07" "03000000d007d0074101ffffffffffff"
                         "000000010101" "02000100")
    return _header(4, body, 0x0400) + _strings(b"CPU 0", MANUFACTURER, MACHINE_VERSION)


def type16(ram_size: int) -> bytes:
    # location "other", use "system memory", error correction "multi-bit ECC", capacity KiB
    body = struct.pack("<BBBIHHQ", 1, 3, 6, ram_size // KIB, 0xFFFE, 1, 0)
    return _header(16, body, 0x1000) + _strings()


def type17(ram_size: int) -> bytes:
    # array 0x1000, no error information, widths unknown, size in MiB, form factor DIMM,
    # locator string 1, type "RAM", detail "other", manufacturer string 2
    body = struct.pack("<HHHHHBBBBBHHBBBBBIHHHH", 0x1000, 0xFFFE, 0xFFFF, 0xFFFF,
                       ram_size // MIB, 0x09, 0, 1, 0, 0x07, 0x0002, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return _header(17, body, 0x1100) + _strings(b"DIMM 0", MANUFACTURER)


def type19(index: int, start: int, size: int) -> bytes:
    body = struct.pack("<IIHBQQ", start // KIB, (start + size) // KIB - 1, 0x1000, 1, 0, 0)
    return _header(19, body, 0x1300 + index) + _strings()


def build_smbios(below_4g: int, above_4g: int, uuid: bytes) -> tuple[bytes, bytes]:
    """(anchor, tables) as QEMU 7.2 builds them for pc with this RAM and ``-uuid``."""
    ram = below_4g + above_4g
    structs = [type1(uuid), type3(), type4(), type16(ram), type17(ram), type19(0, 0, below_4g)]
    if above_4g:
        structs.append(type19(1, 1 << 32, above_4g))
    structs += [_header(32, bytes(7), 0x2000) + _strings(), _header(127, b"", 0x7F00) + _strings()]
    tables = b"".join(structs)
    max_struct = max(len(s) for s in structs)
    anchor = (struct.pack("<4sBBBBHB5s", b"_SM_", 0, 0x1F, 2, 8, max_struct, 0, bytes(5))
              + struct.pack("<5sBHIHB", b"_DMI_", 0, len(tables), 0, len(structs), 0x28))
    return anchor, tables


ANCHOR_SIZE = 0x1F                      # SMBIOS 2.1 entry point (QEMU's default anchor)


@functools.lru_cache(maxsize=None)
def tables_size(below_4g: int, above_4g: int) -> int:
    """The structures' size (the UUID does not change it)."""
    return len(build_smbios(below_4g, above_4g, bytes(16))[1])


def install_smbios(machine, fw) -> None:
    """Offer the two files; built when first selected (the ``-uuid`` is applied after the
    board is built), with the sizes they will have."""
    from uvirt.board.devices import fw_cfg as F
    below, above = F.pc_ram_split(machine.ram_size)
    state: dict[str, bool] = {}

    def build() -> None:
        if state:
            return
        state["built"] = True
        anchor, tables = build_smbios(below, above, fw.items[F.UUID])
        fw.replace_file(ANCHOR_FILE, anchor)
        fw.replace_file(TABLES_FILE, tables)

    fw.add_files({ANCHOR_FILE: bytes(ANCHOR_SIZE), TABLES_FILE: bytes(tables_size(below, above))})
    fw.select_callbacks[ANCHOR_FILE] = fw.select_callbacks[TABLES_FILE] = build
