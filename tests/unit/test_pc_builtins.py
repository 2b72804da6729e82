"""The pc built-ins against QEMU 7.2's own config space, byte for byte.

Both reference files were produced on QEMU by ``python -m uvirt.testing.qemu regen``:
the reset image over qtest (no firmware), the booted image by a guest after SeaBIOS.
"""

from pathlib import Path

import pytest

from uvirt.boot import firmware_step as bios
from uvirt.cpu.machine import Machine

DATA = Path(__file__).resolve().parents[1] / "data" / "qemu"


def load_dump(name: str) -> dict[str, bytes]:
    out: dict[str, bytearray] = {}
    cur = None
    for line in (DATA / name).read_text().splitlines():
        parts = line.split()
        if not parts or line.startswith("#"):
            continue
        if len(parts) == 2 and len(parts[0]) == 7 and parts[0][2] == ":" and parts[0][5] == ".":
            cur = parts[0]
            out[cur] = bytearray()
        elif cur is not None and len(parts) == 17 and parts[0].endswith(":"):
            out[cur] += bytes(int(b, 16) for b in parts[1:])
    return {k: bytes(v) for k, v in out.items()}


def config_image(m: Machine, bdf: str) -> bytes:
    slot, fn = int(bdf[3:5], 16), int(bdf[6], 16)
    return bytes(m.pci.config_read(0, slot << 3 | fn, off, 1) for off in range(256))


def diff(a: bytes, b: bytes) -> dict[str, tuple[str, str]]:
    return {f"0x{i:02x}": (f"{a[i]:02x}", f"{b[i]:02x}") for i in range(256) if a[i] != b[i]}


@pytest.mark.parametrize("bdf", ["00:00.0", "00:01.0", "00:01.1", "00:01.3"])
def test_reset_config_space_equals_qemu_qtest_dump(bdf):
    expected = load_dump("pc_nodefaults_config_reset.txt")[bdf]
    m = Machine(cpu=False)
    assert diff(config_image(m, bdf), expected) == {}


@pytest.mark.parametrize("bdf", ["00:00.0", "00:01.0", "00:01.1", "00:01.3"])
def test_firmware_config_space_equals_qemu_after_seabios(bdf):
    expected = load_dump("pc_nodefaults_config_dump.txt")[bdf]
    m = Machine(cpu=False)
    bios.assign_resources(m.pci)
    assert diff(config_image(m, bdf), expected) == {}


def test_only_builtins_present_on_nodefaults_bus():
    m = Machine(cpu=False)
    present = sorted(f"00:{d >> 3:02x}.{d & 7:x}" for d in range(256)
                     if m.pci.config_read(0, d, 0, 2) != 0xFFFF)
    assert present == sorted(load_dump("pc_nodefaults_config_reset.txt"))
