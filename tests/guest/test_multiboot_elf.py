"""Multiboot ELF32 kernels (no a.out kludge): loaded from their program headers, as QEMU's
-kernel does; checked against QEMU with the same image."""

import struct

import pytest

from uvirt.errors import ImageError
from uvirt.boot.multiboot import parse
from uvirt.testing.guest import comparable, run_uvirt

LOAD = 0x100000


def to_elf(flat: bytes) -> bytes:
    """Wrap a bundled flat image as ELF32: clear the a.out-kludge flag, one PT_LOAD."""
    img = bytearray(flat)
    magic, flags = struct.unpack_from("<II", img, 0)
    entry = struct.unpack_from("<I", img, 28)[0]
    struct.pack_into("<II", img, 4, 0, (-magic) & 0xFFFFFFFF)        # flags 0, checksum
    ehdr = struct.pack("<4sBBBB8xHHIIIIIHHHHHH", b"\x7fELF", 1, 1, 1, 0, 2, 3, 1, entry, 52, 0, 0,
                       52, 32, 1, 40, 0, 0)
    phdr = struct.pack("<8I", 1, 0x1000, LOAD, LOAD, len(img), len(img) + 0x2000, 7, 0x1000)
    return (ehdr + phdr).ljust(0x1000, b"\0") + bytes(img)


@pytest.mark.qemu
def test_elf_kernel_runs_like_qemu(tmp_path, firmware, qemu):
    elf = tmp_path / "enum.elf"
    elf.write_bytes(to_elf(firmware("pci_enum").read_bytes()))
    ref = qemu(elf)
    got = run_uvirt(elf)
    assert ref.exit_code == got.exit_code == 1
    assert comparable(got.debugcon) == comparable(ref.debugcon)


def test_elf_segment_memsz_beyond_filesz_is_zero_filled(firmware):
    elf = to_elf(firmware("pci_enum").read_bytes())
    plan = parse(elf, 128 << 20)
    addr, data = plan.segments[0]
    assert addr == LOAD and data.endswith(bytes(0x2000))


def test_elf64_is_refused_like_qemu(firmware):
    elf = bytearray(to_elf(firmware("pci_enum").read_bytes()))
    elf[4] = 2
    struct.pack_into("<H", elf, 0x12, 62)
    with pytest.raises(ImageError, match="cannot load x86-64 image, give a 32bit one"):
        parse(bytes(elf), 128 << 20)
