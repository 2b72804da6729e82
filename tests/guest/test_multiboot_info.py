"""The multiboot information block: mem_lower/mem_upper and the memory map, as QEMU 7.2's
loader gives them (firmware/multiboot_info.S).  mem_lower and mem_upper come from the
firmware's map (639 KiB; the RAM block at 1 MiB, which ends below SeaBIOS's reserved
top 128 KiB); the map has QEMU's TCG entries (the AMD HyperTransport hole at
0xfd00000000, no KVM identity-map pages)."""

import pytest

from uvirt.testing.guest import run_uvirt

SIZES = ["128M", "256M", "1G", "3G"]


@pytest.mark.parametrize("mem", SIZES)
def test_memory_fields(mem, firmware):
    ram = {"M": 1 << 20, "G": 1 << 30}[mem[-1]] * int(mem[:-1])
    out = run_uvirt(firmware("multiboot_info"), ("-m", mem)).debugcon.splitlines()
    assert out[1] == f"flags 0000024f lower 0000027f upper {(ram - (1 << 20) - 0x20000) // 1024:08x}"
    assert f"e820 0000000000100000 {ram - (1 << 20) - 0x20000:016x} 00000001" in out
    assert "e820 000000fd00000000 0000000300000000 00000002" in out


@pytest.mark.qemu
@pytest.mark.parametrize("mem", SIZES)
def test_equals_qemu(mem, firmware, qemu):
    image = firmware("multiboot_info")
    assert run_uvirt(image, ("-m", mem)).debugcon == qemu(image, ("-m", mem)).debugcon
