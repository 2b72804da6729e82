"""The first megabyte of QEMU 7.2's ``pc`` without a VGA device (issue 13 item 5).

firmware/lowmem_map.S moves ivshmem-plain's BARs into the legacy VGA window and under the
PAM segments, flips SMRAM D_OPEN and each segment's write-protection, and prints what it
reads.  Its QEMU transcript is stored in tests/data/qemu/lowmem_map.txt (regenerated
with ``python -m uvirt.testing.qemu regen lowmem_map``); uvirt's must equal it line
for line, and the live QEMU run too where QEMU is installed.
"""

import pytest

from uvirt.testing.guest import comparable, run_uvirt
from uvirt.testing.qemu import DATA_DIR, LOWMEM_REFERENCES, strip_header

ARGS = LOWMEM_REFERENCES["lowmem_map.txt"][1]


def stored() -> str:
    return strip_header((DATA_DIR / "lowmem_map.txt").read_text())


def test_uvirt_equals_the_stored_qemu_transcript(firmware):
    got = run_uvirt(firmware("lowmem_map"), ARGS)
    assert got.exit_code == 1
    assert comparable(got.debugcon) == comparable(stored())


def test_the_transcript_shows_each_case(firmware):
    """What the stored transcript pins, spelled out (QEMU 7.2 measured)."""
    lines = stored().splitlines()
    assert "VGA BAR2 a0000 11223344 bfffc 55667788" in lines       # a BAR in the window is seen
    assert "VGA D_OPEN a0000 cafebabe" in lines                    # D_OPEN: the RAM beneath
    assert "VGA empty a0100 99999999" in lines                     # nothing placed: RAM shows
    assert "PCIHOLE 0e0000 pam 00 visible" in lines                # PAM 0: PCI space, BAR over BIOS
    assert "PCIHOLE 0e0000 pam 11 hidden" in lines                 # PAM 1: read-only RAM
    assert "SEG 0c0000 rw" in lines                                # kvmvapic's writable window
    assert "SEG 0c4000 ro" in lines and "SEG 0e8000 rw" in lines


@pytest.mark.qemu
def test_uvirt_equals_qemu_live(firmware, qemu, tmp_path):
    image = firmware("lowmem_map")
    ref = qemu(image, ARGS)
    assert ref.exit_code == 1, ref.stderr
    assert comparable(run_uvirt(image, ARGS).debugcon) == comparable(ref.debugcon)
