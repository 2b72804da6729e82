"""The chipset pieces firmware programs (firmware/chipset_probe.S): CMOS bytes, the RTC
frozen and read in each format, the PM timer, port 0x92, APM, the i8042 protocol, the
8237 registers and COM1, as the firmware leaves them.  uvirt's transcript equals the
stored QEMU 7.2 one (``python -m uvirt.testing.qemu regen chipset_probe``) with the fast
firmware step, which must leave what SeaBIOS leaves (uvirt/boot/firmware_step.py ``_chipset_state``).
"""

import tempfile

import pytest

from uvirt.testing.guest import run_uvirt
from uvirt.testing.qemu import CHIPSET_REFERENCES, DATA_DIR, reference_args, strip_header


@pytest.mark.parametrize("ref", list(CHIPSET_REFERENCES))
def test_chipset_probe_equals_the_stored_qemu_transcript(ref, firmware):
    extra = CHIPSET_REFERENCES[ref][1]
    with tempfile.TemporaryDirectory() as tmp:
        with reference_args(extra, tmp) as args:
            got = run_uvirt(firmware("chipset_probe"), args)
    assert got.exit_code == 1
    assert got.debugcon == strip_header((DATA_DIR / ref).read_text())


def test_the_transcript_pins_what_seabios_leaves():
    text = strip_header((DATA_DIR / "chipset_probe__serial.txt").read_text())
    assert "P92 02 APM 5a 00" in text
    assert "KBC status 1c cmdbyte 0061 selftest 0055" in text
    assert "DMA mask ff fe" in text
    assert "COM1 00 00 c1 03 08 60 b0 00 thri c2 c1 scr a5" in text
    assert "CMOS 37 20" in text and "PMBA 0600 moves 01 24bit 00" in text
