"""Differential tests: the same image and command line on QEMU 7.2 and on uvirt.

The guest prints what it reads; the transcripts must be equal line for line, except the
``FW `` lines that show firmware-chosen values (SeaBIOS's BAR addresses, interrupt lines).
"""

import pytest

from uvirt.testing.guest import comparable, run_uvirt

pytestmark = pytest.mark.qemu


@pytest.mark.parametrize("program", ["pci_probe", "pci_enum", "entry_state", "lib_selftest"])
def test_transcript_equals_qemu(program, firmware, qemu):
    image = firmware(program)
    ref = qemu(image)
    got = run_uvirt(image)
    assert ref.exit_code == 1, ref.stderr
    assert got.exit_code == ref.exit_code
    assert comparable(got.debugcon) == comparable(ref.debugcon)


def test_probe_covers_what_the_issue_lists(firmware):
    """The probe prints every item the differential test is meant to compare."""
    text = run_uvirt(firmware("pci_probe")).debugcon
    for needle in ("ID 8086:1237", "SUBSYS", "PIN", "STATUS", "BAR0 on", "BAR0 off", "ROM off",
                   "CAPS none", "HB ", "0300", "e0000000"):
        assert needle.lower() in text.lower(), needle


def test_firmware_chosen_values_also_match_seabios(firmware, qemu):
    """Not required by the comparison, but uvirt's firmware step places the IDE BAR
    where SeaBIOS does and programs the same command bits."""
    image = firmware("pci_probe")
    fw = lambda t: [ln for ln in t.splitlines() if ln.startswith("FW ")]
    assert fw(run_uvirt(image).debugcon) == fw(qemu(image).debugcon)
