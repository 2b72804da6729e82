"""``-bios`` with ``-kernel``: every bundled guest program booted by Debian's SeaBIOS
through QEMU's multiboot_dma.bin option ROM (fw_cfg FW_CFG_KERNEL_*/INITRD_*,
genroms/), on uvirt and on QEMU 7.2 with the same command line.  The transcripts are
compared whole, ``FW`` lines included.

Known differences remain, all because uvirt offers no ACPI tables (QEMU's
``etc/table-loader`` and ``etc/acpi/*``): without ``etc/table-loader`` SeaBIOS keeps
its PM base at 0xB000 (QEMU's: "Moving pm_base to 0x600": PIIX4 config and the PM
timer's port), and the high memory zone it
allocates from is larger, so a legacy virtqueue lands at another PFN.  Those lines are
asserted as the difference they are, not skipped.
"""

import os
import tempfile
from pathlib import Path

import pytest

from uvirt import firmware as fw
from uvirt.testing import qemu as Q
from uvirt.testing.guest import run_uvirt

BIOS = "/usr/share/seabios/bios.bin"
#: Debian's two SeaBIOS builds: bios.bin (no SMM) and bios-256k.bin (QEMU's default for
#: pc, which sets up SMM: uvirt has none, so both emulators run it with smm=off)
FIRMWARE = {"bios.bin": ("-bios", BIOS),
            "bios-256k.bin": ("-bios", "/usr/share/seabios/bios-256k.bin", "-machine", "pc,smm=off")}
pytestmark = [pytest.mark.qemu,
              pytest.mark.skipif(not os.path.exists(BIOS), reason=f"{BIOS} missing")]

#: reference -> {QEMU's line: uvirt's line} of the known differences (module docstring)
KNOWN = {
    "pc_nodefaults_config_dump.txt": {
        "40: 01 06 00 00 00 00 00 00 00 00 00 00 00 00 00 00":
            "40: 01 b0 00 00 00 00 00 00 00 00 00 00 00 00 00 00",
        "90: 01 07 00 00 00 00 00 00 00 00 00 00 00 00 00 00":
            "90: 01 b1 00 00 00 00 00 00 00 00 00 00 00 00 00 00"},
    "chipset_probe.txt": {"PMBA 0600 moves 01 24bit 00": "PMBA b000 moves 01 24bit 00"},
    "chipset_probe__serial.txt": {"PMBA 0600 moves 01 24bit 00": "PMBA b000 moves 01 24bit 00"},
    "virtio_blk_legacy__transitional.txt": {
        "FW at entry: status 0f pfn 00007fdd": "FW at entry: status 0f pfn 00007ffb"},
    "virtio_blk_legacy__readonly.txt": {
        "FW at entry: status 0f pfn 00007fdd": "FW at entry: status 0f pfn 00007ffb"},
}


#: Left out: the device-DMA programs.  They aim buffers and rings at physical addresses
#: picked for the fast default's layout (the PCI hole below the BARs, 0xFFFFF000), which
#: under real firmware hold other things (the BIOS image, BARs SeaBIOS placed elsewhere):
#: with bios.bin's bytes at 0xFFFFF000 QEMU notifies where uvirt does not (legacy rings),
#: and the two-reads-into-the-hole case gave either outcome on uvirt across runs (device
#: work interleaved with the firmware's timer ticks).  They run under the fast default
#: in test_virtio_differential.py; under -bios they are open work (issue 17).
LEFT_OUT = {ref for ref, (prog, _) in Q.REFERENCES.items() if prog.startswith("virtio_dma")}
#: QEMU's exit status -> uvirt's where QEMU dies (hw_error aborts: SIGABRT, uvirt 134)
EXIT = {-6: 134}


def _cases():
    for ref in Q.REFERENCES:
        if ref in LEFT_OUT:
            continue
        for firmware in FIRMWARE:
            yield pytest.param(ref, firmware, id=f"{ref}-{firmware}")


@pytest.mark.parametrize("ref, firmware", list(_cases()))
def test_bundled_program_under_seabios_equals_qemu(ref, firmware):
    ARGS = FIRMWARE[firmware]
    prog, extra = Q.REFERENCES[ref]
    with tempfile.TemporaryDirectory() as tmp:
        image = fw.build_to(fw.bundled(prog), Path(tmp) / f"{prog}.bin")
        with Q.reference_args(extra, tmp) as args:
            want = Q.run_qemu(image, (*args, *ARGS), timeout=60)
        with Q.reference_args(extra, tmp) as args:
            got = run_uvirt(image, (*args, *ARGS), timeout=60)
    assert want.exit_code in (1, *EXIT), want.stderr
    assert got.exit_code == EXIT.get(want.exit_code, want.exit_code), got.debugcon
    expected = [KNOWN.get(ref, {}).get(line, line) for line in want.debugcon.splitlines()]
    assert got.debugcon.splitlines() == expected
