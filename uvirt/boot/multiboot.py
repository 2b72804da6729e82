"""Multiboot v1 images, loaded exactly as QEMU 7.2's ``-kernel`` does (``hw/i386/multiboot.c``).

The loader is pure: ``parse(image, ram_size)`` returns a ``LoadPlan`` (what bytes go
where, the entry point and the multiboot information block); the machine copies it
into RAM.  Checks and their order follow QEMU, and each failure is a one-line
``ImageError`` naming the value in hex.

* The header is searched in the first 8 KiB at 4-byte alignment: magic 0x1BADB002 and
  ``magic + flags + checksum == 0``.
* flags bit 16 (a.out kludge): load ``[load_addr, load_end_addr)`` from file offset
  ``header_offset - (header_addr - load_addr)``; zero up to ``bss_end_addr``.
* otherwise the file must be an ELF32 i386 executable; PT_LOAD segments are loaded
  at their physical addresses.
* The information block sits at 0x9500 with the E820 map at 0x9000 (QEMU's
  ``ADDR_MBI``/``ADDR_E820_MAP``); the command line and boot loader name follow the
  kernel in the page-aligned ``mb_buf`` as QEMU lays it out.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

from uvirt.errors import ImageError

MULTIBOOT_MAGIC = 0x1BADB002
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002
HEADER_SEARCH = 8192
FLAG_VIDEO_MODE = 0x00000004
FLAG_AOUT_KLUDGE = 0x00010000

ADDR_E820_MAP = 0x9000
ADDR_MBI = ADDR_E820_MAP + 0x500
MBI_SIZE = 88

# struct multiboot_info field offsets (Multiboot 0.6.96 §3.3)
MBI_FLAGS = 0
MBI_MEM_LOWER = 4
MBI_MEM_UPPER = 8
MBI_BOOT_DEVICE = 12
MBI_CMDLINE = 16
MBI_MODS_COUNT = 20
MBI_MODS_ADDR = 24
MBI_MMAP_LENGTH = 44
MBI_MMAP_ADDR = 48
MBI_BOOTLOADER = 64

MBI_FLAG_MEMORY = 1 << 0
MBI_FLAG_BOOT_DEVICE = 1 << 1
MBI_FLAG_CMDLINE = 1 << 2
MBI_FLAG_MODULES = 1 << 3
MBI_FLAG_MMAP = 1 << 6
MBI_FLAG_BOOTLOADER = 1 << 9

BOOTLOADER_NAME = b"qemu"
PAGE = 0x1000

E820_RAM = 1
E820_RESERVED = 2


def _page_align(n: int) -> int:
    return (n + PAGE - 1) & ~(PAGE - 1)


@dataclass
class LoadPlan:
    entry: int
    load_addr: int
    segments: list[tuple[int, bytes]] = field(default_factory=list)   # (addr, data); zero-fill included
    mbi_addr: int = ADDR_MBI
    kernel_end: int = 0

    def highest(self) -> int:
        return max((a + len(d) for a, d in self.segments), default=0)


def e820_map(ram_size: int) -> list[tuple[int, int, int]]:
    """The map SeaBIOS reports for a ``pc`` machine with ``ram_size`` below 4 GiB."""
    return [
        (0x0, 0x9FC00, E820_RAM),
        (0x9FC00, 0x400, E820_RESERVED),
        (0xF0000, 0x10000, E820_RESERVED),
        (0x100000, ram_size - 0x100000 - 0x20000, E820_RAM),
        (ram_size - 0x20000, 0x20000, E820_RESERVED),
        (0xFFFC0000, 0x40000, E820_RESERVED),
        # QEMU 7.2 pc_memory_init: the default CPU (qemu64) is AMD with 40 physical
        # address bits, so the HyperTransport hole is advertised (AMD_HT_START/SIZE).
        # (No 0xFEFFC000 entry: that page pair is KVM's identity map and TSS, not TCG's.)
        (0xFD00000000, 0x300000000, E820_RESERVED),
    ]


def parse(image: bytes, ram_size: int, *, filename: str = "kernel", cmdline: str = "") -> LoadPlan:
    head = image[:HEADER_SEARCH]
    found = None
    for i in range(0, max(0, min(len(head), HEADER_SEARCH - 48) - 11), 4):
        magic, flags, checksum = struct.unpack_from("<III", head, i)
        if magic == MULTIBOOT_MAGIC and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            found = (i, flags)
            break
    if found is None:
        raise ImageError(f"{filename}: not a multiboot image (no header with magic "
                         f"0x{MULTIBOOT_MAGIC:08x} and a valid checksum in the first 8 KiB)")
    hoff, flags = found
    # flags & FLAG_VIDEO_MODE: QEMU only warns ("multiboot knows VBE. we don't.") and carries on.
    if flags & FLAG_AOUT_KLUDGE:
        plan, kernel_size = _parse_aout(image, hoff, filename)
    else:
        plan, kernel_size = _parse_elf(image, filename)
    end = plan.highest()
    if end > ram_size:
        raise ImageError(f"{filename}: kernel [0x{plan.load_addr:x}, 0x{end:x}) does not fit "
                         f"in RAM of 0x{ram_size:x} bytes")
    _add_boot_info(plan, kernel_size, ram_size, filename, cmdline)
    if plan.highest() > ram_size:
        raise ImageError(f"{filename}: kernel and boot information end at 0x{plan.highest():x}, "
                         f"past RAM of 0x{ram_size:x} bytes")
    return plan


def _parse_aout(image: bytes, hoff: int, filename: str) -> tuple[LoadPlan, int]:
    if len(image) < hoff + 32:
        raise ImageError(f"{filename}: multiboot header at 0x{hoff:x} is truncated")
    header_addr, load_addr, load_end, bss_end, entry = struct.unpack_from("<IIIII", image, hoff + 12)
    if header_addr < load_addr:
        raise ImageError(f"{filename}: invalid load_addr address 0x{load_addr:x} "
                         f"(above header_addr 0x{header_addr:x})")
    if header_addr - load_addr > hoff:
        raise ImageError(f"{filename}: invalid header_addr address 0x{header_addr:x}")
    text_offset = hoff - (header_addr - load_addr)
    if load_end:
        if load_end < load_addr:
            raise ImageError(f"{filename}: invalid load_end_addr address 0x{load_end:x}")
        load_size = load_end - load_addr
    else:
        load_size = len(image) - text_offset
    if load_size > 0xFFFFFFFF - load_addr:
        raise ImageError(f"{filename}: kernel does not fit in address space")
    if bss_end:
        if bss_end < load_addr + load_size:
            raise ImageError(f"{filename}: invalid bss_end_addr address 0x{bss_end:x}")
        kernel_size = bss_end - load_addr
    else:
        kernel_size = load_size
    data = image[text_offset:text_offset + load_size]
    if len(data) != load_size:
        raise ImageError(f"{filename}: truncated: 0x{load_size:x} bytes to load from offset "
                         f"0x{text_offset:x}, file has 0x{len(image):x}")
    blob = data + bytes(kernel_size - load_size)
    return LoadPlan(entry=entry, load_addr=load_addr, segments=[(load_addr, blob)]), kernel_size


def _parse_elf(image: bytes, filename: str) -> tuple[LoadPlan, int]:
    if image[:4] != b"\x7fELF":
        raise ImageError(f"{filename}: multiboot header without the a.out kludge (flags bit 16) "
                         f"requires an ELF image")
    if len(image) > 0x13 and image[4] == 2 and struct.unpack_from("<H", image, 0x12)[0] == 62:
        raise ImageError(f"{filename}: cannot load x86-64 image, give a 32bit one")
    from elftools.elf.elffile import ELFFile
    from elftools.common.exceptions import ELFError
    try:
        elf = ELFFile(io.BytesIO(image))
        if elf.elfclass != 32 or elf["e_machine"] != "EM_386":
            raise ImageError(f"{filename}: ELF is not a 32-bit i386 executable "
                             f"(class {elf.elfclass}, machine {elf['e_machine']})")
        segs = []
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                continue
            data = seg.data()
            if len(data) < seg["p_filesz"]:
                raise ImageError(f"{filename}: truncated ELF segment at 0x{seg['p_paddr']:x}")
            segs.append((seg["p_paddr"], data + bytes(seg["p_memsz"] - len(data))))
        entry = elf["e_entry"]
    except ELFError as e:
        raise ImageError(f"{filename}: error while loading elf kernel: {e}") from None
    except (struct.error, ValueError) as e:
        raise ImageError(f"{filename}: error while loading elf kernel: {e}") from None
    if not segs:
        raise ImageError(f"{filename}: ELF image has no loadable segment")
    low = min(a for a, _ in segs)
    high = max(a + len(d) for a, d in segs)
    return LoadPlan(entry=entry, load_addr=low, segments=segs), high - low


def _add_boot_info(plan: LoadPlan, kernel_size: int, ram_size: int, filename: str, cmdline: str) -> None:
    """Command line, boot loader name and the information block, where QEMU puts them."""
    buf_phys = plan.load_addr
    offset_mbinfo = _page_align(kernel_size)
    kcmdline = f"{filename} {cmdline}".encode() + b"\0"
    offset_cmdlines = offset_mbinfo            # no modules
    offset_bootloader = offset_cmdlines + len(kcmdline)
    tail = kcmdline + BOOTLOADER_NAME + b"\0"
    tail = tail.ljust(_page_align(offset_mbinfo + len(tail)) - offset_mbinfo, b"\0")
    plan.segments.append((buf_phys + offset_mbinfo, tail))
    plan.kernel_end = buf_phys + offset_mbinfo

    mbi = bytearray(MBI_SIZE)
    struct.pack_into("<I", mbi, MBI_FLAGS, MBI_FLAG_MEMORY | MBI_FLAG_BOOT_DEVICE | MBI_FLAG_CMDLINE
                     | MBI_FLAG_MODULES | MBI_FLAG_MMAP | MBI_FLAG_BOOTLOADER)
    # QEMU's multiboot option ROM takes both from the BIOS's memory map: conventional
    # memory below the EBDA (639 KiB) and the RAM block at 1 MiB up to SeaBIOS's
    # reserved top 128 KiB (observed: -m 128M gives mem_upper 0x1fb80).
    e820 = e820_map(ram_size)
    struct.pack_into("<I", mbi, MBI_MEM_LOWER, e820[0][1] // 1024)
    struct.pack_into("<I", mbi, MBI_MEM_UPPER,
                     next(n for a, n, t in e820 if a == 0x100000 and t == E820_RAM) // 1024)
    struct.pack_into("<I", mbi, MBI_BOOT_DEVICE, 0x8000FFFF)
    struct.pack_into("<I", mbi, MBI_CMDLINE, buf_phys + offset_cmdlines)
    struct.pack_into("<I", mbi, MBI_MODS_COUNT, 0)
    struct.pack_into("<I", mbi, MBI_MODS_ADDR, buf_phys + offset_mbinfo)
    struct.pack_into("<I", mbi, MBI_BOOTLOADER, buf_phys + offset_bootloader)
    mmap = b"".join([struct.pack("<IQQI", 20, a, n, t) for a, n, t in e820])
    struct.pack_into("<I", mbi, MBI_MMAP_LENGTH, len(mmap))
    struct.pack_into("<I", mbi, MBI_MMAP_ADDR, ADDR_E820_MAP)
    plan.segments.append((ADDR_E820_MAP, mmap))
    plan.segments.append((ADDR_MBI, bytes(mbi)))
