"""The generated-table files of fw_cfg (etc/acpi/tables, etc/acpi/rsdp, etc/table-loader,
etc/smbios/smbios-anchor, etc/smbios/smbios-tables) and the file directory, read over
qtest from QEMU 7.2 and from uvirt with the same command line, byte for byte.

No CPU runs: the session reads the file directory and each file by fw_cfg DMA into RAM
(``outl 0x518``), then reads that RAM.  QEMU builds the files when one is first selected
(hw/i386/acpi-build.c ``acpi_build_update``), so a session may program the machine
first, as firmware would: the PIIX4 PM base (the FACP's PM1a/PM timer blocks follow
it) and a 64-bit BAR above 4 GiB (PCI0._CRS's 64-bit window follows it).  The command
lines cover what the DSDT depends on in uvirt's machines: RAM below and above 4 GiB,
hot-pluggable and non-hot-pluggable devices in slots, serial ports.
"""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from uvirt.board.devices import acpi_tables as A
from uvirt.board.devices import smbios as S

pytestmark = pytest.mark.qemu

QEMU = ["qemu-system-x86_64", "-accel", "tcg"]
UVIRT = [sys.executable, "-m", "uvirt", "run"]
COMMON = ["-machine", "pc", "-nodefaults", "-display", "none", "-S", "-qtest", "stdio"]
DESC, BUF = 0x1000, 0x100000
GENERATED = (A.TABLES_FILE, A.RSDP_FILE, A.LOADER_FILE, S.ANCHOR_FILE, S.TABLES_FILE)


def _cfg_addr(devfn: int, reg: int) -> str:
    return f"0x{0x80000000 | devfn << 8 | reg:x}"


#: firmware-like set-up: PIIX4 PMBA 0x601 + PMREGMISC (as SeaBIOS after "Moving pm_base")
PM_BASE_600 = [f"outl 0xcf8 {_cfg_addr(0x0B, 0x40)}", "outl 0xcfc 0x601",
               f"outl 0xcf8 {_cfg_addr(0x0B, 0x80)}", "outb 0xcfc 0x1"]
#: a modern virtio-rng at 00:03.0: 64-bit BAR4 at 0x8_0000_0000, memory decode on
BAR64_HIGH = [f"outl 0xcf8 {_cfg_addr(0x18, 0x20)}", "outl 0xcfc 0xc",
              f"outl 0xcf8 {_cfg_addr(0x18, 0x24)}", "outl 0xcfc 0x8",
              f"outl 0xcf8 {_cfg_addr(0x18, 0x04)}", "outw 0xcfc 0x2"]

CASES = {
    "nodefaults": ([], []),
    "nodefaults-pm-base": ([], PM_BASE_600),
    "virtio-blk": (["-drive", "file={disk},format=raw,if=none,id=d0",
                    "-device", "virtio-blk-pci,drive=d0"], PM_BASE_600),
    "virtio-gpu-slot-4": (["-device", "virtio-gpu-pci,addr=4"], []),   # not hot-pluggable
    "edu-ivshmem": (["-device", "edu", "-object", "memory-backend-ram,id=m0,size=1M",
                     "-device", "ivshmem-plain,memdev=m0"], []),
    "two-serial": (["-serial", "file:{tmp}/s0", "-serial", "file:{tmp}/s1"], PM_BASE_600),
    "m-256M-uuid": (["-m", "256M", "-uuid", "12345678-1234-5678-9abc-def012345678"], []),
    "m-3G": (["-m", "3G"], []),
    "smm-off": (["-machine", "pc,smm=off"], PM_BASE_600),     # no SMI command in the FACP
    "m-3584M": (["-m", "3584M"], []),          # RAM split at 3 GiB: 512 MiB above 4 GiB
    "bar64-above-4g": (["-device", "virtio-rng-pci,addr=3,disable-legacy=on"], BAR64_HIGH),
}


def read_files(emulator: list[str], args: list[str], setup: list[str]) -> dict[str, bytes]:
    p = subprocess.Popen([*emulator, *COMMON, *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert p.stdin is not None and p.stdout is not None

    def cmd(line: str) -> str:
        p.stdin.write(line + "\n")
        p.stdin.flush()
        while True:
            reply = p.stdout.readline()
            assert reply, f"{emulator[0]} closed the session at {line!r}"
            if reply.startswith(("OK", "ERR", "FAIL")):
                assert reply.startswith("OK"), f"{line!r}: {reply!r}"
                return reply.strip()

    def dma_read(key: int, length: int) -> bytes:
        cmd(f"write 0x{DESC:x} 16 0x" + struct.pack(">IIQ", key << 16 | 0x0A, length, BUF).hex())
        cmd(f"outl 0x518 0x{int.from_bytes(DESC.to_bytes(4, 'big'), 'little'):x}")
        return bytes.fromhex(cmd(f"read 0x{BUF:x} 0x{length:x}").split()[1][2:]) if length else b""

    try:
        for line in setup:
            cmd(line)
        count = struct.unpack(">I", dma_read(0x19, 4))[0]
        directory = dma_read(0x19, 4 + 64 * count)[4:]
        files = {}
        for i in range(count):
            size, select, _, name = struct.unpack(">IHH56s", directory[64 * i:64 * (i + 1)])
            files[name.rstrip(b"\0").decode()] = (select, size)
        out = {name: dma_read(*files[name]) for name in GENERATED}
        out["directory"] = repr({n: v for n, v in files.items() if n != "genroms/kvmvapic.bin"})
        return out
    finally:
        p.kill()
        p.wait()


@pytest.mark.parametrize("case", list(CASES))
def test_generated_files_and_directory_equal_qemus(case, tmp_path):
    """(QEMU also offers genroms/kvmvapic.bin; uvirt does under -bios only, so the
    directory is compared without it.)"""
    args, setup = CASES[case]
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(65536))
    args = [a.format(disk=disk, tmp=tmp_path) for a in args]
    want = read_files(QEMU, args, setup)
    got = read_files(UVIRT, args, setup)
    for name in want:
        assert got[name] == want[name], f"{name} differs at byte 0x" + (
            f"{next(i for i, (a, b) in enumerate(zip(got[name], want[name])) if a != b):x}"
            if len(got[name]) == len(want[name]) else f"?: sizes {len(got[name])} {len(want[name])}")


def test_tables_follow_the_pm_base_the_firmware_programmed():
    """The FACP read after PMBA 0x601 names 0x600/0x604/0x608, before it 0/4/8 (QEMU builds
    the tables at the first select, from the PIIX4's io_base then)."""
    for setup, base in (([], 0), (PM_BASE_600, 0x600)):
        blob = read_files(UVIRT, [], setup)[A.TABLES_FILE]
        fadt = blob.index(b"FACP")
        pm1a_evt, _, pm1a_cnt, _, _, pm_tmr = struct.unpack_from("<6I", blob, fadt + 56)
        assert (pm1a_evt, pm1a_cnt, pm_tmr) == (base, base + 4, base + 8)
