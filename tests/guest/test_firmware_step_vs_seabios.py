"""What uvirt's in-process firmware step (uvirt/boot/firmware_step.py) leaves, against what Debian's
real SeaBIOS leaves when it runs on uvirt (``-bios bios.bin``), for every device set the
bundled programs use: firmware/pci_dump.S prints the config space of every function
after each, and the two dumps are diffed byte by byte.

The differences are measured, not assumed; the table below is the measurement, and a
change to either side that moves it fails this test.  Where they come from:

* Against bios.bin only, 00:00.0 0x5F, 0x72 and 00:01.3 0x5B (``COMMON``): the
  firmware step imitates QEMU's default firmware, bios-256k.bin, which sets up SMM
  (SMRAM 0x0A, PIIX4 DEVACTB APMC_EN) and leaves 0xE8000-0xEFFFF read/write (PAM6 0x33);
  Debian's bios.bin is built without SMM (USE_SMM=n) and its smaller ZoneLow leaves PAM6
  0x31.  Against bios-256k.bin, run with SMM (uvirt/cpu/smm.py) as QEMU runs it by
  default, those three bytes are equal.
* A virtio-blk's bus-master bit: SeaBIOS's virtio-blk driver sets it; the firmware
  step does not drive the disk.  (BAR placement matches everywhere since the step
  stacks the memory regions as ``pci_bios_init_root_regions_mem`` does; before, every
  virtio and ivshmem memory BAR was off.)
"""

import os
import tempfile
from pathlib import Path

import pytest

from uvirt import firmware as fw
from uvirt.testing import qemu as Q
from uvirt.testing.guest import run_uvirt

BIOS = "/usr/share/seabios/bios.bin"
BIOS_256K = "/usr/share/seabios/bios-256k.bin"
pytestmark = pytest.mark.skipif(not os.path.exists(BIOS), reason=f"{BIOS} missing")

COMMON = "00:00.0@5f:33->31 00:00.0@72:0a->02 00:01.3@5b:02->00"
MEASURED = {
    "pc_nodefaults_config_dump.txt": "",
    "irq_virtio.txt": "",
    "virtio_demo.txt": "",
    "virtio_rng_modern__disable-legacy.txt": "",
    "virtio_blk_legacy__transitional.txt": "00:02.0@04:03->07",
    "virtio_blk_legacy__readonly.txt": "00:02.0@04:03->07",
    "virtio_blk_modern__disable-legacy.txt": "00:02.0@04:03->07",
    "virtio_console__transitional.txt": "",
    "virtio_console__disable-legacy.txt": "",
    "ivshmem_plain__file.txt": "",
    "ivshmem_plain__memfd.txt": "",
    "ivshmem_doorbell.txt": "",
    "lowmem_map.txt": "",
    "chipset_probe__serial.txt": "",
    "edu.txt": "",
    "virtio_dma__blk-legacy.txt": "00:02.0@04:03->07",
    "virtio_dma__blk-modern-ioeventfd-off.txt": "00:02.0@04:03->07",
    "virtio_packed__rng.txt": "",
    "virtio_packed__rng-disable-legacy.txt": "",
    "virtio_packed__blk.txt": "00:02.0@04:03->07",
    "virtio_packed__blk-ioeventfd-off.txt": "00:02.0@04:03->07",
    "gpu_commands__default.txt": "",
    "gpu_commands__edid-off-2-heads.txt": "",
    "gpu_commands__5120x2160-1M.txt": "",
    "gpu_commands__333x77-no-msix.txt": "",
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


@pytest.mark.parametrize("bios", [BIOS, BIOS_256K], ids=["bios.bin", "bios-256k.bin"])
@pytest.mark.parametrize("ref", list(MEASURED))
def test_firmware_step_against_seabios(ref, bios):
    if not os.path.exists(bios):
        pytest.skip(f"{bios} missing")
    extra = Q.REFERENCES[ref][1]
    with tempfile.TemporaryDirectory() as tmp:
        image = fw.build_to(fw.bundled("pci_dump"), Path(tmp) / "pci_dump.bin")
        with Q.reference_args(extra, tmp) as args:
            step = _dump(run_uvirt(image, args).debugcon)
        with Q.reference_args(extra, tmp) as args:
            real = _dump(run_uvirt(image, (*args, "-bios", bios), timeout=60).debugcon)
    assert step and set(step) == set(real)
    common = COMMON if bios == BIOS else ""
    assert _diff(step, real) == (common + " " + MEASURED[ref]).strip()


#: FW lines where the firmware step leaves other values than QEMU's SeaBIOS
#: (bios-256k.bin, the stored transcripts): its virtio-blk driver ran on the disk.
BLK_DRIVEN = {"FW CMD 0107": "FW CMD 0103", "FW at entry: status 0f pfn 00007fdd":
              "FW at entry: status 00 pfn 00000000", "FW at entry: status 0f": "FW at entry: status 00"}


@pytest.mark.parametrize("ref", list(Q.REFERENCES))
def test_firmware_step_fw_lines_equal_the_stored_qemu_ones(ref):
    """The FW lines the differential tests leave out (firmware-chosen values) are
    QEMU's too, except what SeaBIOS's virtio-blk driver leaves behind."""
    prog, extra = Q.REFERENCES[ref]
    stored = [ln for ln in Q.strip_header((Q.DATA_DIR / ref).read_text()).splitlines()
              if ln.startswith("FW ")]
    with tempfile.TemporaryDirectory() as tmp:
        image = fw.build_to(fw.bundled(prog), Path(tmp) / f"{prog}.bin")
        with Q.reference_args(extra, tmp) as args:
            got = [ln for ln in run_uvirt(image, args).debugcon.splitlines() if ln.startswith("FW ")]
    blk = any(a.startswith("virtio-blk-pci") for a in extra)
    expected = [BLK_DRIVEN.get(ln, ln) if blk else ln for ln in stored]
    assert got == expected
