"""QEMU 7.2's ACPI tables for the ``pc`` machine, offered to firmware over fw_cfg.

QEMU builds them in hw/i386/acpi-build.c ``acpi_build`` and hands them to the firmware as
three fw_cfg files (hw/acpi/bios-linker-loader.c), which SeaBIOS's
src/fw/romfile_loader.c executes:

    etc/acpi/tables   FACS, DSDT, FACP, APIC, HPET, WAET, RSDT, in that order, padded
                      with zeros to 128 KiB (ACPI_BUILD_TABLE_SIZE): pointers between
                      tables are offsets into this blob, checksums are 0
    etc/acpi/rsdp     the 20-byte ACPI 1.0 RSDP ("RSD PTR ", OEM "BOCHS ", revision 0)
    etc/table-loader  128-byte commands: ALLOCATE the RSDP in the F segment (align 16)
                      and the tables in high memory (align 64), ADD_POINTER (add the
                      allocation's address to an offset) and ADD_CHECKSUM, in the order
                      QEMU issues them

Guest-visible consequences on SeaBIOS (src/fw/paravirt.c ``qemu_cfg_init``): the mere
presence of ``etc/table-loader`` moves the PM base from 0xB000 to 0x600 ("Moving pm_base
to 0x600"), and the tables take QEMU's 128 KiB from the firmware's high memory zone (so
whatever SeaBIOS allocates after them, e.g. a virtqueue, lands where it lands on QEMU).
SeaBIOS then uses QEMU's tables instead of building its own, and bios-256k.bin (built
with ACPI_PARSE) parses the DSDT for the keyboard (PNP0303).

QEMU builds the files when the firmware first selects one of them (``acpi_build_update``
as the fw_cfg select callback), not at machine creation: the FACP's PM1a/PM timer
blocks are the PIIX4 PM base the firmware has programmed by then, and the 64-bit PCI
window follows the 64-bit BARs placed above 4 GiB.  ``install_acpi_tables`` does the same.

Which bytes are built here and which are QEMU's fixed AML (acpi_aml_pc.py): every table
but the DSDT is built field by field (``build_fadt`` rev 1 for pc, ``acpi_build_madt``,
``build_hpet``, ``build_waet``, ``build_rsdt``, ``build_rsdp``); the DSDT is built from
QEMU's fixed AML for this machine plus the parts that follow the command line:
PCI0._CRS (RAM size, 64-bit window), one ``Sxx_`` device per slot (``_SUN``/``_EJ0``
for hot-pluggable slots, with the DVNT notify entries) and one ``COMn`` per ``-serial``.
What uvirt does not offer (SMBIOS tables, a TPM, NUMA, more CPUs, memory hotplug) has no
part here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from uvirt.board.devices import acpi_aml_pc as AML

TABLES_FILE, RSDP_FILE, LOADER_FILE = "etc/acpi/tables", "etc/acpi/rsdp", "etc/table-loader"
ACPI_BUILD_TABLE_SIZE = 0x20000
OEM_ID, OEM_TABLE_ID, CREATOR_ID = b"BOCHS ", b"BXPC    ", b"BXPC"

#: bios-linker-loader commands and allocation zones (hw/acpi/bios-linker-loader.c)
CMD_ALLOCATE, CMD_ADD_POINTER, CMD_ADD_CHECKSUM = 1, 2, 3
ZONE_HIGH, ZONE_FSEG = 1, 2
LOADER_ENTRY = 128
LOADER_SIZE = 0x1000           # the command blob is padded to ACPI_BUILD_ALIGN_SIZE
RSDP_SIZE = 20                 # ACPI 1.0 RSDP
LOADER_FILESZ = 56

#: PIIX4 PM (hw/acpi/piix4.c, hw/i386/acpi-build.c acpi_get_pm_info)
SCI_INT, SMI_CMD, ACPI_ENABLE, ACPI_DISABLE = 9, 0xB2, 0xF1, 0xF0
GPE0_BLK, GPE0_BLK_LEN = 0xAFE0, 4
FADT_FLAGS = 0x80A5            # WBINVD, PROC_C1, SLP_BUTTON, RTC_S4, USE_PLATFORM_CLOCK
RTC_CENTURY = 0x32
#: i440FX PCI hole: up to the IOAPIC (i440fx_init), 64-bit hole 2 GiB (pci-hole64-size)
PCI_HOLE_END = 0xFEBFFFFF
PCI_HOLE64_SIZE = 1 << 31
GIB = 1 << 30
#: QEMU types whose DeviceClass is not hot-pluggable (no _SUN/_EJ0 for their slot): the
#: built-in functions and virtio-gpu (hw/display/virtio-gpu-pci.c: hotpluggable = false)
NOT_HOTPLUGGABLE = frozenset({"i440FX", "PIIX3", "piix3-ide", "PIIX4_PM", "virtio-gpu-pci"})
PIIX3_DEVFN = 0x08


# -- AML encoding (hw/acpi/aml-build.c)
def pkg_length(body: bytes) -> bytes:
    """build_prepend_package_length: the length counts its own bytes."""
    n = len(body)
    if n + 1 < 1 << 6:
        return bytes([n + 1])
    size = 2 if n + 2 < 1 << 12 else 3 if n + 3 < 1 << 20 else 4
    n += size
    return bytes([(size - 1) << 6 | n & 0x0F]) + (n >> 4).to_bytes(size - 1, "little")


def aml_int(value: int) -> bytes:
    if value == 0:
        return b"\x00"
    if value == 1:
        return b"\x01"
    for prefix, size in ((0x0A, 1), (0x0B, 2), (0x0C, 4), (0x0E, 8)):
        if value < 1 << (8 * size):
            return bytes([prefix]) + value.to_bytes(size, "little")
    raise ValueError(value)


def aml_name(name: str, obj: bytes) -> bytes:
    return b"\x08" + name.encode() + obj


def aml_scope(name: bytes, body: bytes) -> bytes:
    return b"\x10" + pkg_length(name + body) + name + body


def aml_device(name: str, body: bytes) -> bytes:
    return b"\x5b\x82" + pkg_length(name.encode() + body) + name.encode() + body


def aml_method(name: str, args: int, body: bytes) -> bytes:
    head = name.encode() + bytes([args])              # not serialized, sync level 0
    return b"\x14" + pkg_length(head + body) + head + body


def aml_buffer(data: bytes) -> bytes:
    inner = aml_int(len(data)) + data
    return b"\x11" + pkg_length(inner) + inner


def eisaid(text: str) -> bytes:
    """aml_eisaid: three letters and four hex digits as a big-endian dword."""
    v = (ord(text[0]) - 0x40) << 26 | (ord(text[1]) - 0x40) << 21 | (ord(text[2]) - 0x40) << 16
    v |= int(text[3:], 16)
    return aml_int(int.from_bytes(v.to_bytes(4, "big"), "little"))


def resource_template(*items: bytes) -> bytes:
    return aml_buffer(b"".join(items) + b"\x79\x00")


def word_range(kind: int, flags: int, type_flags: int, lo: int, hi: int) -> bytes:
    return (struct.pack("<BHBBB", 0x88, 0x0D, kind, flags, type_flags)
            + struct.pack("<HHHHH", 0, lo, hi, 0, hi - lo + 1))


def dword_memory(type_flags: int, lo: int, hi: int) -> bytes:
    return struct.pack("<BHBBB", 0x87, 0x17, 0, 0x0C, type_flags) + struct.pack(
        "<IIIII", 0, lo, hi, 0, hi - lo + 1)


def qword_memory(lo: int, hi: int) -> bytes:
    return struct.pack("<BHBBB", 0x8A, 0x2B, 0, 0x0C, 0x03) + struct.pack(
        "<QQQQQ", 0, lo, hi, 0, hi - lo + 1)


# -- what the tables depend on
@dataclass
class PcAcpiConfig:
    """What QEMU's tables for ``pc`` depend on in the machines uvirt builds."""
    below_4g: int                       # RAM below 4 GiB (the 32-bit PCI hole starts there)
    above_4g: int = 0
    pm_base: int = 0                    # PIIX4 PMBA & 0xffc0 when the tables are built
    #: devfn -> hot-pluggable, for the functions on bus 0
    slots: dict[int, bool] = field(default_factory=dict)
    serial_ports: list[tuple[int, int]] = field(default_factory=list)   # (iobase, irq)
    w64: tuple[int, int] | None = None  # 64-bit BARs above 4 GiB: (lowest, highest byte)
    smm: bool = True                    # -machine smm (the FACP's SMI command needs it)


def pci_hole64(cfg: PcAcpiConfig) -> tuple[int, int]:
    """i440fx_pcihost_get_pci_hole64_start/end with pci-hole64-fix (7.2's default)."""
    start = ((1 << 32) + cfg.above_4g + GIB - 1) // GIB * GIB
    if cfg.w64 is not None:
        start = cfg.w64[0]
    end = (start + PCI_HOLE64_SIZE + GIB - 1) // GIB * GIB
    if cfg.w64 is not None and cfg.w64[1] + 1 > end:
        end = cfg.w64[1] + 1
    return start, end - 1


def pci0_crs(cfg: PcAcpiConfig) -> bytes:
    """build_dsdt's PCI0._CRS for one root bus and no excluded ranges."""
    lo64, hi64 = pci_hole64(cfg)
    return resource_template(
        word_range(2, 0x0C, 0, 0, 0xFF),                        # bus numbers 0..ff
        bytes([0x47, 0x01, 0xF8, 0x0C, 0xF8, 0x0C, 0x01, 0x08]),  # IO 0xcf8, 8 ports
        word_range(1, 0x0C, 3, 0, 0x0CF7),
        word_range(1, 0x0C, 3, 0x0D00, 0xFFFF),
        dword_memory(0x03, 0xA0000, 0xBFFFF),                   # VGA window, cacheable
        dword_memory(0x01, cfg.below_4g, PCI_HOLE_END),
        qword_memory(lo64, hi64))


def serial_aml(index: int, iobase: int, irq: int) -> bytes:
    """hw/char/serial-isa.c ``serial_isa_build_aml``."""
    crs = resource_template(struct.pack("<BBHHBB", 0x47, 0x01, iobase, iobase, 0, 8),
                            struct.pack("<BH", 0x22, 1 << irq))
    return aml_device(f"COM{index + 1}", aml_name("_HID", eisaid("PNP0501"))
                      + aml_name("_UID", aml_int(index + 1)) + aml_name("_STA", aml_int(0xF))
                      + aml_name("_CRS", crs))


_DSM = bytes.fromhex("141d5f44534d0c70120a024253454c4153554e60a45044534d68696a6b60")
_EJ0 = aml_method("_EJ0", 1, b"PCEJBSEL_SUN")


def slot_devices(cfg: PcAcpiConfig) -> bytes:
    """build_append_pci_bus_devices for bus 0 (BSEL 0): function 0 of every slot, empty
    slots hot-pluggable, then DVNT and PCNT."""
    out, notify = [aml_name("BSEL", aml_int(0))], b""
    for slot in range(32):
        dfn = slot << 3
        present = dfn in cfg.slots
        hotplug = cfg.slots.get(dfn, True)
        name = f"S{dfn:02X}_"
        body = aml_name("_ADR", aml_int(slot << 16)) + aml_name("ASUN", aml_int(slot)) + _DSM
        if present and dfn == PIIX3_DEVFN:
            isa = b"".join(serial_aml(i, base, irq)
                           for i, (base, irq) in reversed(list(enumerate(cfg.serial_ports))))
            body += AML.ISA_BRIDGE_FIXED + isa + AML.ISA_RTC
        if hotplug:
            body += aml_name("_SUN", aml_int(slot)) + _EJ0
            cond = b"\x7b\x68" + aml_int(1 << slot) + b"\x00"           # And(Arg0, bit)
            notify += b"\xa0" + pkg_length(cond + b"\x86" + name.encode() + b"\x69") \
                + cond + b"\x86" + name.encode() + b"\x69"               # Notify(Sxx_, Arg1)
        out.append(aml_device(name, body))
    out.append(aml_method("DVNT", 2, notify))
    out.append(AML.PCNT)
    return b"".join(out)


def table(sig: bytes, body: bytes, rev: int = 1) -> bytes:
    """acpi_table_begin/end: the header with a zero checksum (the loader computes it)."""
    return struct.pack("<4sIBB6s8sI4sI", sig, 36 + len(body), rev, 0, OEM_ID, OEM_TABLE_ID, 1,
                       CREATOR_ID, 1) + body


def build_dsdt(cfg: PcAcpiConfig) -> bytes:
    crs = aml_scope(b"\\._SB_PCI0", aml_name("_CRS", pci0_crs(cfg)) + AML.PCI0_RESOURCE_DEVICES)
    slots = aml_scope(b"\\_SB_", aml_scope(b"PCI0", slot_devices(cfg)))
    return table(b"DSDT", AML.DSDT_HEAD + crs + AML.SLEEP_STATES_AND_FWCF + slots + AML.GPE_E01)


def build_fadt(cfg: PcAcpiConfig, facs: int, dsdt: int) -> bytes:
    """build_fadt, revision 1 (pc's ACPI 1.0 FADT, 116 bytes); without SMM no SMI command
    and no ACPI enable/disable values (acpi_get_pm_info)."""
    pm = cfg.pm_base
    smi_cmd, enable, disable = (SMI_CMD, ACPI_ENABLE, ACPI_DISABLE) if cfg.smm else (0, 0, 0)
    body = struct.pack("<IIBBHIBBBBIIIIIIIIBBBBBBBBHHHHBBBBBHBI",
                       facs, dsdt, 1, 0, SCI_INT, smi_cmd, enable, disable, 0, 0,
                       pm, 0, pm + 4, 0, 0, pm + 8, GPE0_BLK, 0,
                       4, 2, 0, 4, GPE0_BLK_LEN, 0, 0, 0, 0x0FFF, 0x0FFF, 0, 0, 0, 0, 0, 0,
                       RTC_CENTURY, 0, 0, FADT_FLAGS)
    return table(b"FACP", body)


def build_madt() -> bytes:
    """acpi_build_madt for one CPU: local APIC 0, IOAPIC 0 at 0xfec00000, the IRQ0 -> GSI2
    override and level/high overrides for the PCI interrupts 5, 9, 10, 11, LINT1 NMI."""
    body = struct.pack("<II", 0xFEE00000, 1)
    body += struct.pack("<BBBBI", 0, 8, 0, 0, 1)                       # processor local APIC
    body += struct.pack("<BBBBII", 1, 12, 0, 0, 0xFEC00000, 0)          # IOAPIC
    body += struct.pack("<BBBBIH", 2, 10, 0, 0, 2, 0)                   # IRQ0 -> GSI 2
    for irq in (5, 9, 10, 11):
        body += struct.pack("<BBBBIH", 2, 10, 0, irq, irq, 0x0D)        # level, active high
    body += struct.pack("<BBBHB", 4, 6, 0xFF, 0, 1)                     # LAPIC NMI on LINT1
    return table(b"APIC", body)


def build_hpet() -> bytes:
    """build_hpet: event timer block ID 0x8086a201, base 0xfed00000, minimum tick 0."""
    return table(b"HPET", struct.pack("<IBBBBQBH", 0x8086A201, 0, 0, 0, 0, 0xFED00000, 0, 0)
                 + b"\x00")


def build_waet() -> bytes:
    """build_waet: "RTC good" (no need to read register C twice)."""
    return table(b"WAET", struct.pack("<I", 2))


@dataclass
class AcpiFiles:
    tables: bytes
    rsdp: bytes
    loader: bytes


class Linker:
    """hw/acpi/bios-linker-loader.c: the commands, as 128-byte entries."""

    def __init__(self) -> None:
        self.entries: list[bytes] = []

    @staticmethod
    def _name(name: str) -> bytes:
        return name.encode().ljust(LOADER_FILESZ, b"\0")

    def allocate(self, name: str, align: int, zone: int) -> None:
        self._add(struct.pack("<I", CMD_ALLOCATE) + self._name(name) + struct.pack("<IB", align, zone))

    def pointer(self, dest: str, src: str, offset: int, size: int) -> None:
        self._add(struct.pack("<I", CMD_ADD_POINTER) + self._name(dest) + self._name(src)
                  + struct.pack("<IB", offset, size))

    def checksum(self, name: str, start: int, length: int, offset: int) -> None:
        self._add(struct.pack("<I", CMD_ADD_CHECKSUM) + self._name(name)
                  + struct.pack("<III", start + offset, start, length))

    def _add(self, entry: bytes) -> None:
        self.entries.append(entry.ljust(LOADER_ENTRY, b"\0"))

    def blob(self) -> bytes:
        return b"".join(self.entries)


def build_acpi(cfg: PcAcpiConfig) -> AcpiFiles:
    """acpi_build for pc: the blob, the RSDP and the loader script."""
    linker = Linker()
    linker.allocate(RSDP_FILE, 16, ZONE_FSEG)
    linker.allocate(TABLES_FILE, 64, ZONE_HIGH)
    blob = bytearray(b"FACS" + struct.pack("<I", 64) + bytes(56))
    offsets = []

    def add(data: bytes) -> int:
        at = len(blob)
        blob.extend(data)
        linker.checksum(TABLES_FILE, at, len(data), 9)
        return at

    facs = 0
    dsdt = add(build_dsdt(cfg))
    fadt = len(blob)
    offsets.append(fadt)
    blob.extend(build_fadt(cfg, facs, dsdt))
    linker.pointer(TABLES_FILE, TABLES_FILE, fadt + 36, 4)
    linker.pointer(TABLES_FILE, TABLES_FILE, fadt + 40, 4)
    linker.checksum(TABLES_FILE, fadt, len(blob) - fadt, 9)
    for build in (build_madt, build_hpet, build_waet):
        offsets.append(add(build()))
    rsdt_at = len(blob)
    rsdt = table(b"RSDT", b"".join(struct.pack("<I", o) for o in offsets))
    blob.extend(rsdt)
    for i in range(len(offsets)):
        linker.pointer(TABLES_FILE, TABLES_FILE, rsdt_at + 36 + 4 * i, 4)
    linker.checksum(TABLES_FILE, rsdt_at, len(rsdt), 9)
    rsdp = struct.pack("<8sB6sBI", b"RSD PTR ", 0, OEM_ID, 0, rsdt_at)
    linker.pointer(RSDP_FILE, TABLES_FILE, 16, 4)
    linker.checksum(RSDP_FILE, 0, len(rsdp), 8)
    blob.extend(bytes(ACPI_BUILD_TABLE_SIZE - len(blob) % ACPI_BUILD_TABLE_SIZE))
    loader = linker.blob()
    return AcpiFiles(bytes(blob), rsdp, loader.ljust(-(-len(loader) // LOADER_SIZE) * LOADER_SIZE, b"\0"))


# -- on a machine
def machine_config(machine) -> PcAcpiConfig:
    """What the tables depend on, read from the machine as QEMU's acpi_build reads it."""
    from uvirt.board.devices.fw_cfg import pc_ram_split
    from uvirt.board.devices.serial import COM_PORTS
    from uvirt.board.pci.bus import devfn
    below, above = pc_ram_split(machine.ram_size)
    pm = machine.pci.find(0, devfn(1, 3))
    pm_base = pm.config.get(0x40, 4) & 0xFFC0 if pm is not None else 0   # piix4 io_base
    slots, w64 = {}, None
    for dfn, fn in machine.pci.functions.items():
        if not dfn & 7:
            slots[dfn] = fn.qom_type not in NOT_HOTPLUGGABLE
        for i, bar in enumerate(fn.bars):              # pci_bus_get_w64_range
            if bar is None or bar.io or not bar.mem64:
                continue
            lo = fn.bar_address(i)
            if lo is None:
                continue
            hi, lo = lo + bar.size - 1, max(lo, 1 << 32)
            if hi >= lo:
                w64 = (lo, hi) if w64 is None else (min(w64[0], lo), max(w64[1], hi))
    ports = [(base, dict(COM_PORTS)[base]) for base, _ in getattr(machine, "serial_ports", [])]
    return PcAcpiConfig(below, above, pm_base, slots, ports, w64,
                        smm=machine.smm_enabled)


#: the files' contents until first selected: only their sizes are seen (one shared
#: immutable buffer, so creating a machine costs no 128 KiB of zeros)
_PLACEHOLDERS = {TABLES_FILE: bytes(ACPI_BUILD_TABLE_SIZE), RSDP_FILE: bytes(RSDP_SIZE),
                 LOADER_FILE: bytes(LOADER_SIZE)}


def install_acpi_tables(machine, fw) -> None:
    """Offer etc/acpi/rsdp, etc/acpi/tables and etc/table-loader as QEMU's ``acpi_setup``
    does: the files have their sizes from the start and are (re)built from the machine's
    state when the firmware first selects one of them after a reset (``acpi_build_update``,
    ``acpi_build_reset``).  Nothing is built unless a guest looks."""
    state = {"patched": False}

    def update() -> None:
        if state["patched"]:
            return
        state["patched"] = True
        files = build_acpi(machine_config(machine))
        fw.replace_file(TABLES_FILE, files.tables)
        fw.replace_file(RSDP_FILE, files.rsdp)
        fw.replace_file(LOADER_FILE, files.loader)

    def reset() -> None:
        state["patched"] = False

    fw.add_files(_PLACEHOLDERS)
    for name in _PLACEHOLDERS:
        fw.select_callbacks[name] = update
    fw.reset_hooks.append(reset)
