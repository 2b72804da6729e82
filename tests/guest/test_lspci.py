"""``uvirt lspci`` against pciutils' own lspci.

``uvirt lspci -xxx`` prints configuration space in the layout ``lspci -F FILE`` reads; the
same bytes decoded by pciutils (``lspci -F dump -vv``) and by uvirt (``uvirt lspci -vv``)
must agree line for line.  pciutils cannot know BAR sizes from a dump, so uvirt's
``[size=...]`` (measured by the guest) is compared separately, against QEMU 7.2's BAR sizes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from uvirt.cli.lspci import Function, format_functions

LSPCI = shutil.which("lspci")


def uvirt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uvirt", *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def _require_pciutils() -> str:
    if LSPCI is None:
        reason = "pciutils' lspci not installed (scripts/setup --test installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: lspci comparison cannot run: {reason}", pytrace=False)
        pytest.skip(reason)
    return LSPCI


def pciutils(dump: str, tmp_path, *flags: str) -> str:
    path = tmp_path / "dump.txt"
    path.write_text(dump)
    r = subprocess.run([_require_pciutils(), "-F", str(path), *flags], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def no_sizes(text: str) -> str:
    return re.sub(r" \[size=\d+[KMGT]?\]", "", text)


DEVICE_SETS = {
    "builtins": [],
    "virtio-transitional": ["-device", "virtio-rng-pci", "-device", "virtio-serial-pci,vectors=0"],
    "virtio-modern+ivshmem": [
        "-drive", "if=none,id=d0,file=null-co://,format=raw",
        "-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
        "-object", "memory-backend-ram,id=m0,size=1M", "-device", "ivshmem-plain,memdev=m0"],
    "legacy+shared-memory": ["-device", "virtio-rng-pci,disable-modern=on",
                             "-device", "virtio-fb-pci,memory-regions=4M:1M"],
}


@pytest.mark.parametrize("devices", DEVICE_SETS.values(), ids=DEVICE_SETS.keys())
def test_decoding_matches_pciutils(devices, tmp_path):
    _require_pciutils()
    dump = uvirt("lspci", "-xxx", *devices)
    assert dump.returncode == 0, dump.stderr
    for flags in (["-n"], ["-nn"], ["-v", "-n"], ["-vv", "-n"], ["-vv", "-nn"], ["-x", "-n"], ["-xxx", "-nn"]):
        ours = uvirt("lspci", *flags, *devices)
        assert ours.returncode == 0, ours.stderr
        theirs = pciutils(dump.stdout, tmp_path, *flags)
        assert no_sizes(ours.stdout) == theirs, f"lspci {' '.join(flags)} differs"


def test_vv_names_virtio_capabilities_and_sizes():
    r = uvirt("lspci", "-vv", "-device", "virtio-rng-pci")
    assert r.returncode == 0, r.stderr
    dev = r.stdout.split("00:02.0 ", 1)[1]
    # QEMU 7.2's transitional virtio-rng-pci: legacy I/O BAR0 of 32 bytes, MSI-X in BAR1
    # (4 KiB), the modern structures in a 16 KiB 64-bit prefetchable BAR4.
    assert re.search(r"\tRegion 0: I/O ports at [0-9a-f]{4} \[size=32\]\n", dev)
    assert re.search(r"\tRegion 1: Memory at [0-9a-f]{8} \(32-bit, non-prefetchable\) \[size=4K\]\n", dev)
    assert re.search(r"\tRegion 4: Memory at [0-9a-f]{8} \(64-bit, prefetchable\) \[size=16K\]\n", dev)
    assert "\tInterrupt: pin A routed to IRQ 10\n" in dev
    assert ("\tCapabilities: [98] MSI-X: Enable- Count=2 Masked-\n"
            "\t\tVector table: BAR=1 offset=00000000\n"
            "\t\tPBA: BAR=1 offset=00000800\n") in dev
    assert ("\tCapabilities: [70] Vendor Specific Information: VirtIO: Notify\n"
            "\t\tBAR=4 offset=00003000 size=00001000 multiplier=00000004\n") in dev
    assert ("\tCapabilities: [40] Vendor Specific Information: VirtIO: CommonCfg\n"
            "\t\tBAR=4 offset=00000000 size=00001000\n") in dev


def test_hex_dump_is_the_guests_view():
    r = uvirt("lspci", "-x", "-n")
    assert r.returncode == 0, r.stderr
    first = r.stdout.split("\n\n")[0].splitlines()
    assert first[0] == "00:00.0 0600: 8086:1237 (rev 02)"
    assert first[1] == "00: 86 80 37 12 03 01 00 00 02 00 00 06 00 00 00 00"
    assert len(first) == 1 + 4                         # -x: the first 64 bytes
    r = uvirt("lspci", "-xxx", "-n")
    assert len(r.stdout.split("\n\n")[0].splitlines()) == 1 + 16


# Synthetic configuration spaces: capabilities uvirt's devices do not have today (power
# management, 32/64-bit and maskable MSI, unknown IDs, a looped and a broken chain), each
# decoded by pciutils and by uvirt.cli.lspci with no guest at all.

def _config(caps: list[tuple[int, bytes]], *, status=0x10, command=0x0507, bars=()) -> bytes:
    c = bytearray(256)
    c[0:4] = bytes.fromhex("f41a0510")            # 1af4:1005 (a virtio id: vendor caps decode)
    c[4:6] = command.to_bytes(2, "little")
    c[6:8] = status.to_bytes(2, "little")
    c[0x0A:0x0C] = (0x00FF).to_bytes(2, "little")
    c[0x0C], c[0x0D] = 0x10, 0x40                 # cache line 64 bytes, latency 64
    for i, bar in enumerate(bars):
        c[0x10 + 4 * i:0x14 + 4 * i] = bar.to_bytes(4, "little")
    c[0x3C], c[0x3D], c[0x3E], c[0x3F] = 11, 1, 2, 3
    if caps:
        c[0x34] = caps[0][0]
    for i, (at, body) in enumerate(caps):
        c[at:at + len(body)] = body
        if body[1:2] == b"\0" and i + 1 < len(caps):
            c[at + 1] = caps[i + 1][0]
    return bytes(c)


SYNTHETIC = {
    "pm+msi64-maskable": [(0x40, bytes.fromhex("0100 03c8 0b80 0000")),
                          (0x50, bytes.fromhex("0500 8101 00f0 e0fe 0100 0000 4150 0000 feff ffff 0100 0000"))],
    "msi32+unknown-id": [(0x60, bytes.fromhex("0500 0000 00c0 e0fe 2040")),
                         (0x70, bytes.fromhex("3000 1234"))],
    "vendor-short+msix": [(0x48, bytes.fromhex("0900 0801 0000 0000")),
                          (0x58, bytes.fromhex("1100 07c0 0120 0000 0230 0000"))],
    "looped": [(0x40, bytes.fromhex("0144 0300")), (0x44, bytes.fromhex("0540 0000"))],
    "broken": [(0x40, bytes.fromhex("0150 0300")), (0x50, bytes.fromhex("ff00 0000"))],
    "no-cap-bit": [(0x40, bytes.fromhex("0100 0300"))],
}


@pytest.mark.parametrize("caps", SYNTHETIC.values(), ids=SYNTHETIC.keys())
def test_capability_decoders_match_pciutils(caps, tmp_path):
    status = 0 if caps is SYNTHETIC["no-cap-bit"] else 0x10
    fn = Function(0, 3, 0, _config(caps, status=status,
                                   bars=(0xC001, 0xFEBF1000, 0xFE00000C, 0, 0xFFFFFFFF)),
                  sizes={0: 64, 1: 4096, 2: 1 << 20})
    dump = format_functions([fn], hex_level=3, numeric=1)
    for flags, verbose in ((["-v", "-n"], 1), (["-vv", "-n"], 2)):
        ours = format_functions([fn], verbose=verbose, numeric=1)
        assert no_sizes(ours) == pciutils(dump, tmp_path, *flags)
