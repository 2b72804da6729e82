"""``uvirt lspci``: the bus as bundled guest programs saw it from inside the guest, printed
as pciutils' ``lspci`` prints it.

Two guest programs read the bus through 0xCF8/0xCFC: ``firmware/pci_dump.S`` prints every
function's 256-byte configuration space in ``lspci -xxx`` layout, ``firmware/pci_enum.S``
sizes each BAR and the ROM as Linux does.  ``lspci_main`` boots them with the user's
device options; the rest of this module only formats what they printed:

* ``format_functions(fns, verbose=0|1|2, hex_level=0|1|3, numeric=1|2)`` follows pciutils
  3.9's ``lspci.c`` (``show_terse``, ``show_verbose``, ``show_bases``, ``show_rom``,
  ``show_hex_dump``) and ``ls-caps.c``/``ls-caps-vendor.c`` (capabilities by name: power
  management, MSI, MSI-X with its table and PBA, virtio's vendor capabilities with
  cfg_type, BAR, offset, length and the notify multiplier).  ``-n``/``-nn`` as lspci.
  Sizes (``[size=4K]``) come from the guest's BAR sizing, as a live lspci reads them from
  the kernel; ``lspci -F`` on a dump cannot know them and prints none.

Names: pciutils looks them up in pci.ids; uvirt carries the few its machine can show
(``VENDOR_NAMES``, ``DEVICE_NAMES``, ``CLASS_NAMES``) and falls back to lspci's own
``Device``/``Class`` wording for the rest.  ``tests/guest/test_lspci.py`` feeds
``uvirt lspci -xxx`` to pciutils' ``lspci -F`` and compares the decoding line by line.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from uvirt.errors import UsageError

CLASS_NAMES = {
    0x0100: "SCSI storage controller", 0x0101: "IDE interface", 0x0180: "Mass storage controller",
    0x0200: "Ethernet controller", 0x0300: "VGA compatible controller", 0x0500: "RAM memory",
    0x0600: "Host bridge", 0x0601: "ISA bridge", 0x0604: "PCI bridge", 0x0680: "Bridge",
    0x0780: "Communication controller", 0x00FF: "Unclassified device", 0xFF00: "Unassigned class",
}
#: pci.ids base classes: lspci's name when the subclass has none
BASE_CLASS_NAMES = {
    0x00: "Unclassified device", 0x01: "Mass storage controller", 0x02: "Network controller",
    0x03: "Display controller", 0x04: "Multimedia controller", 0x05: "Memory controller",
    0x06: "Bridge", 0x07: "Communication controller", 0x08: "Generic system peripheral",
    0x09: "Input device controller", 0x0C: "Serial bus controller", 0xFF: "Unassigned class",
}
VENDOR_NAMES = {0x8086: "Intel Corporation", 0x1AF4: "Red Hat, Inc.", 0x1B36: "Red Hat, Inc.",
                0x1234: "Device"}
DEVICE_NAMES = {
    (0x8086, 0x1237): "440FX - 82441FX PMC [Natoma]",
    (0x8086, 0x7000): "82371SB PIIX3 ISA [Natoma/Triton II]",
    (0x8086, 0x7010): "82371SB PIIX3 IDE [Natoma/Triton II]",
    (0x8086, 0x7113): "82371AB/EB/MB PIIX4 ACPI",
    (0x1AF4, 0x1000): "Virtio network device", (0x1AF4, 0x1001): "Virtio block device",
    (0x1AF4, 0x1003): "Virtio console", (0x1AF4, 0x1005): "Virtio RNG",
    (0x1AF4, 0x1041): "Virtio 1.0 network device", (0x1AF4, 0x1042): "Virtio 1.0 block device",
    (0x1AF4, 0x1043): "Virtio 1.0 console", (0x1AF4, 0x1044): "Virtio 1.0 RNG",
    (0x1AF4, 0x1110): "Inter-VM shared memory",
}
#: pci.ids subsystem entries, (vendor, device, subvendor, subdevice) -> name; lspci falls
#: back to the device's own name when the subsystem vendor is the device's vendor
SUBSYSTEM_ENTRIES = {
    **{(0x8086, d, 0x1AF4, 0x1100): "Qemu virtual machine" for d in (0x1237, 0x7000, 0x7010, 0x7113)},
    (0x1AF4, 0x1110, 0x1AF4, 0x1100): "QEMU Virtual Machine",
}
#: (class << 8 | prog-if) -> pci.ids' programming-interface name (shown with -v)
PROG_IF_NAMES = {0x010180: "ISA Compatibility mode-only controller, supports bus mastering"}

_FN = re.compile(r"^(?P<bdf>[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) (?P<ven>[0-9a-f]{4}):(?P<dev>[0-9a-f]{4}) "
                 r"rev (?P<rev>[0-9a-f]{2}) class (?P<cls>[0-9a-f]{6}) hdr (?P<hdr>[0-9a-f]{2}) "
                 r"subsys (?P<sven>[0-9a-f]{4}):(?P<sdev>[0-9a-f]{4}) pin (?P<pin>\d)")
_BAR = re.compile(r"^\s+BAR(?P<n>\d) (?P<kind>io|mem32|mem64)(?P<pref> pref)? addr (?P<addr>[0-9a-f]+) "
                  r"size (?P<size>[0-9a-f]+)")


# --------------------------------------------------------------------------- lspci proper


@dataclass
class Function:
    """One PCI function as the guest read it: ``config`` is its 256-byte configuration
    space, ``sizes`` the BAR sizes by index and ``rom_size`` (0 when unknown)."""

    bus: int
    dev: int
    fn: int
    config: bytes
    sizes: dict[int, int] = field(default_factory=dict)
    rom_size: int = 0

    @property
    def slot(self) -> str:
        return f"{self.bus:02x}:{self.dev:02x}.{self.fn}"

    def b(self, off: int) -> int:
        return self.config[off]

    def w(self, off: int) -> int:
        return int.from_bytes(self.config[off:off + 2], "little")

    def l(self, off: int) -> int:
        return int.from_bytes(self.config[off:off + 4], "little")


_SLOT = re.compile(r"^([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])\b")
_HEX = re.compile(r"^([0-9a-f]{2}):((?: [0-9a-f]{2}){16})$")


def parse_dump(text: str) -> list[Function]:
    """Functions from ``lspci -xxx``-style text (pci_dump.S's output, or lspci's own)."""
    fns: list[Function] = []
    cur: bytearray | None = None
    for line in text.splitlines():
        m = _SLOT.match(line)
        if m:
            cur = bytearray(256)
            fns.append(Function(int(m[1], 16), int(m[2], 16), int(m[3]), cur))
            continue
        h = _HEX.match(line)
        if h and cur is not None:
            off = int(h[1], 16)
            cur[off:off + 16] = bytes.fromhex(h[2])
    for f in fns:
        f.config = bytes(f.config)
    return fns


def add_sizes(fns: list[Function], enum_transcript: str) -> None:
    """BAR and ROM sizes from pci_enum.S's transcript (``BARn ... size s``, ``ROM ...``)."""
    by_slot = {f.slot: f for f in fns}
    cur = None
    for line in enum_transcript.splitlines():
        m = _FN.match(line)
        if m:
            cur = by_slot.get(m["bdf"])
            continue
        if cur is None:
            continue
        b = _BAR.match(line)
        if b:
            cur.sizes[int(b["n"])] = int(b["size"], 16)
            continue
        r = re.match(r"^\s+ROM addr [0-9a-f]+ size ([0-9a-f]+)", line)
        if r:
            cur.rom_size = int(r[1], 16)


def _flag(value: int, bit: int) -> str:
    return "+" if value & bit else "-"


def _show_size(n: int) -> str:
    """lspci's show_size: divide by 1024 while it can (truncating), K/M/G/T."""
    if not n:
        return ""
    i = 0
    while i < 4 and n >= 1024:
        n //= 1024
        i += 1
    return f" [size={n}{['', 'K', 'M', 'G', 'T'][i]}]"


def _devsel(status: int) -> str:
    return ("fast", "medium", "slow", "??")[(status >> 9) & 3]


def _names(f: Function, numeric: int) -> tuple[str, str, str]:
    """(class, vendor+device, subsystem) as lspci -n (numeric=1) or -nn (numeric=2)."""
    ven, dev, cls = f.w(0), f.w(2), f.w(0x0A)
    sven, sdev = f.w(0x2C), f.w(0x2E)
    if numeric == 1:
        return f"{cls:04x}", f"{ven:04x}:{dev:04x}", f"{sven:04x}:{sdev:04x}"
    cname = CLASS_NAMES.get(cls) or BASE_CLASS_NAMES.get(cls >> 8, "Class")

    def named(vendor: int, name: str | None) -> str:
        vname = VENDOR_NAMES.get(vendor) if vendor != 0x1234 else None   # not in pci.ids' sense
        return f"{vname} {name or 'Device'}" if vname else "Device"

    sname = SUBSYSTEM_ENTRIES.get((ven, dev, sven, sdev)) or (
        DEVICE_NAMES.get((ven, dev)) if sven == ven else None)
    return (f"{cname} [{cls:04x}]", f"{named(ven, DEVICE_NAMES.get((ven, dev)))} [{ven:04x}:{dev:04x}]",
            f"{named(sven, sname)} [{sven:04x}:{sdev:04x}]")


def _terse(f: Function, verbose: int, numeric: int) -> list[str]:
    cname, dname, sname = _names(f, numeric)
    line = f"{f.slot} {cname}: {dname}"
    if f.b(0x08):
        line += f" (rev {f.b(0x08):02x})"
    if verbose:
        prog = f.b(0x09)
        pname = PROG_IF_NAMES.get(f.w(0x0A) << 8 | prog)     # lspci names it even with -n
        if prog or pname:
            line += f" (prog-if {prog:02x}" + (f" [{pname}]" if pname else "") + ")"
    out = [line]
    if verbose and f.b(0x0E) & 0x7F == 0:
        sven = f.w(0x2C)
        if sven and sven != 0xFFFF:
            out.append(f"\tSubsystem: {sname}")
    return out


def _bases(f: Function, verbose: int, count: int) -> list[str]:
    out = []
    cmd = f.w(0x04)
    i = 0
    while i < count:
        flg = f.l(0x10 + 4 * i)
        if flg == 0xFFFFFFFF:
            flg = 0
        size = f.sizes.get(i, 0)
        index = i
        if not flg and not size:
            i += 1
            continue
        text = f"\tRegion {i}: " if verbose > 1 else "\t"
        if flg & 1:
            a = flg & ~3
            text += "I/O ports at "
            if a or cmd & 1:
                text += f"{a:04x}"
            else:
                text += "<ignored>" if flg & ~3 else "<unassigned>"
            if not cmd & 1:
                text += " [disabled]"
        else:
            t = flg & 6
            a = flg & ~0xF
            z = 0
            done = False
            text += "Memory at "
            if t == 4:
                if i >= count - 1:
                    text += "<invalid-64bit-slot>"
                    done = True
                else:
                    i += 1
                    z = f.l(0x10 + 4 * i)
                    a |= z << 32
            if not done:
                if a:
                    text += f"{a:08x}"
                else:
                    text += "<ignored>" if (flg & ~0xF) or z else "<unassigned>"
            kind = {0: "32-bit", 4: "64-bit", 2: "low-1M"}.get(t, "type 3")
            text += f" ({kind}, {'' if flg & 8 else 'non-'}prefetchable)"
            if not cmd & 2:
                text += " [disabled]"
        out.append(text + _show_size(f.sizes.get(index, 0)))
        i += 1
    return out


def _rom(f: Function, reg: int) -> list[str]:
    flg = f.l(reg)
    if not flg and not f.rom_size:
        return []
    text = "\tExpansion ROM at "
    if flg & ~0x7FF:
        text += f"{flg & ~0x7FF:08x}"
    else:
        text += "<unassigned>"
    if not flg & 1:
        text += " [disabled]"
    elif not f.w(0x04) & 2:
        text += " [disabled by cmd]"
    return [text + _show_size(f.rom_size)]


# Capability decoders (ls-caps.c): (function, offset, the word after the ID/next bytes,
# verbosity) -> the rest of the "Capabilities: [oo] " line, then "\t\t" lines.
def _cap_pm(f: Function, where: int, cap: int, verbose: int) -> list[str]:
    out = [f"Power Management version {cap & 7}"]
    if verbose < 2:
        return out
    aux = (0, 55, 100, 160, 220, 270, 320, 375)[(cap >> 6) & 7]
    out.append(f"\t\tFlags: PMEClk{_flag(cap, 8)} DSI{_flag(cap, 0x20)} D1{_flag(cap, 0x200)} "
               f"D2{_flag(cap, 0x400)} AuxCurrent={aux}mA PME(D0{_flag(cap, 0x800)},"
               f"D1{_flag(cap, 0x1000)},D2{_flag(cap, 0x2000)},D3hot{_flag(cap, 0x4000)},"
               f"D3cold{_flag(cap, 0x8000)})")
    t = f.w(where + 4)
    out.append(f"\t\tStatus: D{t & 3} NoSoftRst{_flag(t, 8)} PME-Enable{_flag(t, 0x100)} "
               f"DSel={(t >> 9) & 0xF} DScale={(t >> 13) & 3} PME{_flag(t, 0x8000)}")
    if f.b(where + 6):
        out.append(f"\t\tBridge: PM{_flag(t, 0x80)} B3{_flag(~t, 0x40)}")
    return out


def _cap_msi(f: Function, where: int, cap: int, verbose: int) -> list[str]:
    is64 = cap & 0x80
    out = [f"MSI: Enable{_flag(cap, 1)} Count={1 << ((cap >> 4) & 7)}/{1 << ((cap >> 1) & 7)} "
           f"Maskable{_flag(cap, 0x100)} 64bit{_flag(cap, 0x80)}"]
    if verbose < 2:
        return out
    lo = f.l(where + 4)
    if is64:
        addr, data_at = f"{f.l(where + 8):08x}{lo:08x}", where + 12
    else:
        addr, data_at = f"{lo:08x}", where + 8
    out.append(f"\t\tAddress: {addr}  Data: {f.w(data_at):04x}")
    if cap & 0x100:
        out.append(f"\t\tMasking: {f.l(data_at + 4):08x}  Pending: {f.l(data_at + 8):08x}")
    return out


def _cap_msix(f: Function, where: int, cap: int, verbose: int) -> list[str]:
    out = [f"MSI-X: Enable{_flag(cap, 0x8000)} Count={(cap & 0x7FF) + 1} Masked{_flag(cap, 0x4000)}"]
    if verbose < 2:
        return out
    table, pba = f.l(where + 4), f.l(where + 8)
    out.append(f"\t\tVector table: BAR={table & 7} offset={table & ~7:08x}")
    out.append(f"\t\tPBA: BAR={pba & 7} offset={pba & ~7:08x}")
    return out


#: struct virtio_pci_cap cfg_type -> the name ls-caps-vendor.c prints (pciutils 3.9 knows
#: no name for 5, VIRTIO_PCI_CAP_PCI_CFG, nor 8, shared memory: "<unknown>")
VIRTIO_CAP_NAMES = {1: "CommonCfg", 2: "Notify", 3: "ISR", 4: "DeviceCfg"}


def _cap_vendor(f: Function, where: int, cap: int, verbose: int) -> list[str]:
    length, cfg_type = cap & 0xFF, cap >> 8
    if f.w(0) == 0x1AF4 and 0x1000 <= f.w(2) <= 0x107F and length >= 16:
        out = [f"Vendor Specific Information: VirtIO: {VIRTIO_CAP_NAMES.get(cfg_type, '<unknown>')}"]
        if verbose >= 2:
            line = (f"\t\tBAR={f.b(where + 4)} offset={f.l(where + 8):08x} "
                    f"size={f.l(where + 12):08x}")
            if cfg_type == 2 and length >= 20:
                line += f" multiplier={f.l(where + 16):08x}"
            out.append(line)
        return out
    return [f"Vendor Specific Information: Len={length:02x} <?>"]


_CAPS = {0x01: _cap_pm, 0x05: _cap_msi, 0x09: _cap_vendor, 0x11: _cap_msix}


def _caps(f: Function, verbose: int) -> list[str]:
    if not f.w(0x06) & 0x10:
        return []
    out = []
    seen: set[int] = set()
    where = f.b(0x34) & ~3
    while where:
        cap_id, nxt, cap = f.b(where), f.b(where + 1) & ~3, f.w(where + 2)
        head = f"\tCapabilities: [{where:02x}] "
        if where in seen:
            out.append(head + "<chain looped>")
            break
        seen.add(where)
        if cap_id == 0xFF:
            out.append(head + "<chain broken>")
            break
        decode = _CAPS.get(cap_id)
        if decode is None:
            lines = ["Null"] if cap_id == 0 else [f"Capability ID {cap_id:#x} [{cap:04x}]"]
        else:
            lines = decode(f, where, cap, verbose)
        out.append(head + lines[0])
        out.extend(lines[1:])
        where = nxt
    return out


def _verbose(f: Function, verbose: int, numeric: int) -> list[str]:
    out = _terse(f, verbose, numeric)
    status, cmd = f.w(0x06), f.w(0x04)
    htype = f.b(0x0E) & 0x7F
    cls = f.w(0x0A)
    irq, pin = f.b(0x3C), f.b(0x3D)
    if htype == 0:
        if cls == 0x0604:
            out.append(f"\t!!! Invalid class {cls:04x} for header type {htype:02x}")
        max_lat, min_gnt = f.b(0x3F), f.b(0x3E)
    elif htype in (1, 2):
        if cls >> 8 != 0x06:
            out.append(f"\t!!! Invalid class {cls:04x} for header type {htype:02x}")
        max_lat = min_gnt = 0
    else:
        out.append(f"\t!!! Unknown header type {htype:02x}")
        return out
    if verbose > 1:
        out.append("\tControl: " + " ".join(
            f"{n}{_flag(cmd, 1 << i)}" for i, n in enumerate(
                ("I/O", "Mem", "BusMaster", "SpecCycle", "MemWINV", "VGASnoop", "ParErr",
                 "Stepping", "SERR", "FastB2B", "DisINTx"))))
        out.append(f"\tStatus: Cap{_flag(status, 0x10)} 66MHz{_flag(status, 0x20)} "
                   f"UDF{_flag(status, 0x40)} FastB2B{_flag(status, 0x80)} "
                   f"ParErr{_flag(status, 0x100)} DEVSEL={_devsel(status)} "
                   f">TAbort{_flag(status, 0x800)} <TAbort{_flag(status, 0x1000)} "
                   f"<MAbort{_flag(status, 0x2000)} >SERR{_flag(status, 0x4000)} "
                   f"<PERR{_flag(status, 0x8000)} INTx{_flag(status, 0x08)}")
        if cmd & 4:
            line = f"\tLatency: {f.b(0x0D)}"
            if min_gnt or max_lat:
                parts = ([f"{min_gnt * 250}ns min"] if min_gnt else []) + \
                        ([f"{max_lat * 250}ns max"] if max_lat else [])
                line += " (" + ", ".join(parts) + ")"
            if f.b(0x0C):
                line += f", Cache Line Size: {f.b(0x0C) * 4} bytes"
            out.append(line)
        if pin or irq:
            out.append(f"\tInterrupt: pin {chr(ord('A') + pin - 1) if pin else '?'} "
                       f"routed to IRQ {irq}")
    else:
        flags = [text for bit, word, text in (
            (4, cmd, "bus master"), (0x20, cmd, "VGA palette snoop"), (0x80, cmd, "stepping"),
            (0x200, cmd, "fast Back2Back"), (0x20, status, "66MHz"),
            (0x40, status, "user-definable features")) if word & bit]
        line = "\tFlags: " + "".join(x + ", " for x in flags) + f"{_devsel(status)} devsel"
        if cmd & 4:
            line += f", latency {f.b(0x0D)}"
        if irq:
            line += f", IRQ {irq}"
        out.append(line)
    bist = f.b(0x0F)
    if bist & 0x80:
        out.append("\tBIST is running" if bist & 0x40 else f"\tBIST result: {bist & 0x0F:02x}")
    if htype == 0:
        out += _bases(f, verbose, 6) + _rom(f, 0x30) + _caps(f, verbose)
    elif htype == 1:                     # uvirt has no bridge: BARs, ROM and capabilities only
        out += _bases(f, verbose, 2) + _rom(f, 0x38) + _caps(f, verbose)
    return out


def _hex(f: Function, hex_level: int) -> list[str]:
    count = 256 if hex_level >= 3 else (128 if f.b(0x0E) & 0x7F == 2 else 64)
    return [f"{off:02x}:" + "".join(f" {x:02x}" for x in f.config[off:off + 16])
            for off in range(0, count, 16)]


def format_functions(fns: list[Function], *, verbose: int = 0, hex_level: int = 0,
                     numeric: int = 2) -> str:
    """The functions as ``lspci [-n|-nn] [-v|-vv] [-x|-xxx]`` prints them (lspci.c
    show_device: the device, its hex dump, a blank line when verbose or dumping)."""
    out: list[str] = []
    for f in sorted(fns, key=lambda f: (f.bus, f.dev, f.fn)):
        out += _verbose(f, verbose, numeric) if verbose else _terse(f, 0, numeric)
        if hex_level:
            out += _hex(f, hex_level)
        if verbose or hex_level:
            out.append("")
    return "".join(line + "\n" for line in out)


LSPCI_USAGE = """\
usage: uvirt lspci [-v|-vv] [-x|-xxx] [-n|-nn] [QEMU device options...]

Boots bundled guest programs (firmware/pci_dump.S, firmware/pci_enum.S) on the pc machine
with the given QEMU options (-device, -object, -drive, -global ...) and prints bus 0 as
pciutils' lspci prints it, from what the guest read through ports 0xCF8/0xCFC.

  -v, -vv     verbose: capabilities by name (-vv: every field, Control/Status)
  -x, -xxx    hex dump of the first 64 bytes / all 256 bytes of configuration space
              (-xxx output is what `lspci -F FILE` reads back)
  -n, -nn     numbers only / names and numbers (the default)
  -h, --help  this help"""


def _lspci_flags(argv: list[str]) -> tuple[dict[str, int], list[str]]:
    """lspci's own flags (-v -vv -x -xxx -n -nn, combinable as -vvxxx) from the front
    and anywhere among the QEMU options; the rest are QEMU options."""
    flags = {"verbose": 0, "hex_level": 0, "numeric": 2}
    rest: list[str] = []
    numeric_seen = 0
    for arg in argv:
        if re.fullmatch(r"-[vxn]+", arg):          # no QEMU option is spelt this way
            flags["verbose"] += arg.count("v")
            flags["hex_level"] += arg.count("x")
            numeric_seen += arg.count("n")
        else:
            rest.append(arg)
    if numeric_seen:
        flags["numeric"] = min(numeric_seen, 2)
    return flags, rest


def lspci_main(argv: list[str]) -> int:
    """Boot the bundled dump and enumerator with the given device options; print lspci's way."""
    import os
    import tempfile

    from uvirt.backends.chardev import MemoryChardev
    from uvirt.firmware import build, bundled
    from uvirt.launch.runner import DEFAULT_TIMEOUT, build_machine
    from uvirt.options.argv import parse_argv

    if any(a in ("-h", "--help", "-help") for a in argv):
        print(LSPCI_USAGE)
        return 0
    flags, options = _lspci_flags(argv)
    if "-kernel" in options:
        raise UsageError("lspci: -kernel: uvirt lspci boots its own guest programs; "
                         "give only device options")
    transcripts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for prog in ("pci_dump", "pci_enum"):
            image = os.path.join(tmp, f"{prog}.bin")
            with open(image, "wb") as f:
                f.write(build(bundled(f"{prog}.S")))
            base = ["-machine", "pc", "-nodefaults", "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
            cfg = parse_argv(base + list(options) + ["-kernel", image])
            built = build_machine(cfg)
            con = MemoryChardev()
            built.machine.add_debugcon(con)
            try:
                stop = built.machine.run(timeout=DEFAULT_TIMEOUT)
            finally:
                built.machine.close()
            if stop.debug_exit_value != 0:
                print("uvirt: " + stop.report(), file=sys.stderr)
                return 1
            transcripts[prog] = con.text
    fns = parse_dump(transcripts["pci_dump"])
    add_sizes(fns, transcripts["pci_enum"])
    sys.stdout.write(format_functions(fns, verbose=min(flags["verbose"], 2),
                                      hex_level=min(flags["hex_level"], 3), numeric=flags["numeric"]))
    return 0
