"""``uvirt lspci``: the bus as the bundled enumerator (firmware/pci_enum.S) saw it from
inside the guest, printed in the shape of ``lspci -nn -v``.

The guest prints one line per function (``bb:dd.f vvvv:dddd rev rr class cccccc hdr hh
subsys ssss:ssss pin p``) followed by indented ``BARn``/``ROM``/``CAP`` lines; this module
only formats them: every value shown was read by guest code through 0xCF8/0xCFC.
"""

from __future__ import annotations

import re

CLASS_NAMES = {
    0x0100: "SCSI storage controller", 0x0101: "IDE interface", 0x0180: "Mass storage controller",
    0x0200: "Ethernet controller", 0x0300: "VGA compatible controller", 0x0500: "RAM memory",
    0x0600: "Host bridge", 0x0601: "ISA bridge", 0x0604: "PCI bridge", 0x0680: "Bridge",
    0x0780: "Communication controller", 0x00FF: "Unclassified device", 0xFF00: "Unassigned class",
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
SUBSYS_NAMES = {(0x1AF4, 0x1100): "Qemu virtual machine"}

_FN = re.compile(r"^(?P<bdf>[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) (?P<ven>[0-9a-f]{4}):(?P<dev>[0-9a-f]{4}) "
                 r"rev (?P<rev>[0-9a-f]{2}) class (?P<cls>[0-9a-f]{6}) hdr (?P<hdr>[0-9a-f]{2}) "
                 r"subsys (?P<sven>[0-9a-f]{4}):(?P<sdev>[0-9a-f]{4}) pin (?P<pin>\d)")
_BAR = re.compile(r"^\s+BAR(?P<n>\d) (?P<kind>io|mem32|mem64)(?P<pref> pref)? addr (?P<addr>[0-9a-f]+) "
                  r"size (?P<size>[0-9a-f]+)")


def _size(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def format_enum(transcript: str) -> str:
    out: list[str] = []
    for line in transcript.splitlines():
        m = _FN.match(line)
        if m:
            ven, dev, cls = int(m["ven"], 16), int(m["dev"], 16), int(m["cls"], 16)
            sven, sdev = int(m["sven"], 16), int(m["sdev"], 16)
            cname = CLASS_NAMES.get(cls >> 8, "Class")
            vname = VENDOR_NAMES.get(ven, "Device")
            dname = DEVICE_NAMES.get((ven, dev), "Device")
            rev = int(m["rev"], 16)
            rev_s = f" (rev {rev:02x})" if rev else ""
            prog = cls & 0xFF
            prog_s = f" (prog-if {prog:02x})" if prog else ""
            if out:
                out.append("")
            out.append(f"{m['bdf']} {cname} [{cls >> 8:04x}]: {vname} {dname} [{ven:04x}:{dev:04x}]"
                       f"{rev_s}{prog_s}")
            sname = SUBSYS_NAMES.get((sven, sdev), "Device")
            out.append(f"\tSubsystem: {VENDOR_NAMES.get(sven, 'Device')} {sname} [{sven:04x}:{sdev:04x}]")
            if m["hdr"] != "00" and int(m["hdr"], 16) & 0x80:
                out.append("\tFlags: multi-function")
            pin = int(m["pin"])
            if pin:
                out.append(f"\tInterrupt: pin {'ABCD'[pin - 1]}")
            continue
        b = _BAR.match(line)
        if b:
            addr, size = int(b["addr"], 16), int(b["size"], 16)
            if b["kind"] == "io":
                out.append(f"\tRegion {b['n']}: I/O ports at {addr:04x} [size={_size(size)}]")
            else:
                bits = "64-bit" if b["kind"] == "mem64" else "32-bit"
                pref = "prefetchable" if b["pref"] else "non-prefetchable"
                out.append(f"\tRegion {b['n']}: Memory at {addr:08x} ({bits}, {pref}) [size={_size(size)}]")
            continue
        stripped = line.strip()
        if stripped.startswith(("CAP ", "ROM ")):
            out.append("\t" + stripped)
    return "\n".join(out) + "\n"
