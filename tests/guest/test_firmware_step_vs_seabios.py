"""What uvirt's in-process firmware step (uvirt/bios.py) leaves, against what Debian's
real SeaBIOS leaves when it runs on uvirt (``-bios bios.bin``), for every device set the
bundled programs use: firmware/pci_dump.S prints the config space of every function
after each, and the two dumps are diffed byte by byte.

The differences are measured, not assumed; the table below is the measurement, and a
change to either side that moves it fails this test.  Where they come from:

* 00:00.0 0x5F, 0x72 and 00:01.3 0x5B: the firmware step imitates QEMU's default
  firmware, bios-256k.bin, which sets up SMM (SMRAM 0x0A, PIIX4 DEVACTB APMC_EN) and
  leaves 0xE8000-0xEFFFF read/write (PAM6 0x33); Debian's bios.bin is built without SMM
  (USE_SMM=n) and its smaller ZoneLow leaves PAM6 0x31.  uvirt cannot run bios-256k.bin
  to the end: its SMM relocation needs an SMI handler (no SMM in uvirt).
* 00:01.3 0x41, 0x91: PM and SMBus bases 0xB000/0xB100 instead of 0x600/0x700, because
  uvirt offers no ``etc/table-loader`` (no ACPI tables).
* BAR addresses (and a virtio-blk's bus-master bit): the firmware step's placement is
  an approximation of SeaBIOS's pci_bios_map_devices; the rows say where it is off.
"""

import os
import tempfile
from pathlib import Path

import pytest

from uvirt import firmware as fw
from uvirt.testing import qemu as Q
from uvirt.testing.guest import run_uvirt

BIOS = "/usr/share/seabios/bios.bin"
pytestmark = pytest.mark.skipif(not os.path.exists(BIOS), reason=f"{BIOS} missing")

COMMON = ("00:00.0@5f:33->31 00:00.0@72:0a->02 00:01.3@41:06->b0 00:01.3@5b:02->00 "
          "00:01.3@91:07->b1")
MEASURED = {
    "pc_nodefaults_config_dump.txt": "",
    "irq_virtio.txt": "",
    "virtio_demo.txt": "00:02.0@15:b0->f0 00:02.0@21:c0->80",
    "virtio_rng_modern__disable-legacy.txt": "00:02.0@15:b0->f0 00:02.0@21:c0->80",
    "virtio_blk_legacy__transitional.txt": "00:02.0@04:03->07 00:02.0@15:b0->f0 00:02.0@21:c0->80",
    "virtio_blk_legacy__readonly.txt": "00:02.0@04:03->07 00:02.0@15:b0->f0 00:02.0@21:c0->80",
    "virtio_blk_modern__disable-legacy.txt": "00:02.0@04:03->07 00:02.0@15:b0->f0 00:02.0@21:c0->80",
    "virtio_console__transitional.txt": "00:02.0@15:b0->f0 00:02.0@21:c0->80",
    "virtio_console__disable-legacy.txt": "00:02.0@15:b0->f0 00:02.0@21:c0->80",
    "ivshmem_plain__file.txt": "00:02.0@12:af->bf 00:02.0@1a:b0->a0",
    "ivshmem_plain__memfd.txt": "00:05.0@12:bd->bf 00:05.0@1a:be->bc",
    "ivshmem_doorbell.txt": "00:02.0@12:af->bf 00:02.0@16:af->bf 00:02.0@1a:b0->a0",
    "lowmem_map.txt": "00:02.0@12:bd->bf 00:02.0@1a:be->bc",
}


def _device_sets() -> dict[tuple[str, ...], str]:
    sets: dict[tuple[str, ...], str] = {}
    for ref, (_prog, extra) in Q.REFERENCES.items():
        sets.setdefault(extra, ref)
    return sets


def _dump(text: str) -> dict[str, bytes]:
    out: dict[str, bytearray] = {}
    cur = None
    for ln in text.splitlines():
        if ln[:3] == "00:" and "." in ln[:8] and len(ln.split()) == 2:
            cur = ln.split()[0]
            out[cur] = bytearray()
        elif cur and len(ln) > 4 and ln[2] == ":":
            out[cur] += bytes.fromhex(ln[4:])
    return {k: bytes(v) for k, v in out.items()}


def _diff(a: dict[str, bytes], b: dict[str, bytes]) -> str:
    out = []
    for bdf in sorted(set(a) | set(b)):
        x, y = a.get(bdf, b""), b.get(bdf, b"")
        out += [f"{bdf}@{o:02x}:{x[o:o + 1].hex()}->{y[o:o + 1].hex()}"
                for o in range(max(len(x), len(y))) if x[o:o + 1] != y[o:o + 1]]
    return " ".join(out)


def test_every_device_set_is_measured():
    assert set(_device_sets().values()) == set(MEASURED)


@pytest.mark.parametrize("ref", list(MEASURED))
def test_firmware_step_against_seabios(ref):
    extra = Q.REFERENCES[ref][1]
    with tempfile.TemporaryDirectory() as tmp:
        image = fw.build_to(fw.bundled("pci_dump"), Path(tmp) / "pci_dump.bin")
        with Q.reference_args(extra, tmp) as args:
            step = _dump(run_uvirt(image, args).debugcon)
        with Q.reference_args(extra, tmp) as args:
            real = _dump(run_uvirt(image, (*args, "-bios", BIOS), timeout=60).debugcon)
    assert step and set(step) == set(real)
    assert _diff(step, real) == (COMMON + " " + MEASURED[ref]).strip()
