"""``-kernel`` with ``-bios``: a multiboot image handed to the firmware the way QEMU 7.2
does it (hw/i386/multiboot.c ``load_multiboot``, hw/core/loader.c ``rom_add_option``).

The host builds QEMU's ``mb_buf`` (the kernel from its load address, page-aligned, then
the command line and the boot loader name) and the multiboot information block, and
puts them in fw_cfg:

    FW_CFG_KERNEL_ENTRY (0x10)  entry point          FW_CFG_KERNEL_ADDR (0x07)  load address
    FW_CFG_KERNEL_SIZE (0x08)   len(mb_buf)          FW_CFG_KERNEL_DATA (0x11)  mb_buf
    FW_CFG_INITRD_ADDR (0x0a)   ADDR_MBI (0x9500)    FW_CFG_INITRD_SIZE (0x0b)  88
    FW_CFG_INITRD_DATA (0x12)   the information block, memory fields and mmap length 0

plus ``genroms/multiboot_dma.bin``, QEMU's option ROM, with boot index 0 (so it heads
the ``bootorder`` file as ``/rom@genroms/multiboot_dma.bin``).  At boot the firmware runs
the ROM, which copies both into RAM, builds the memory map with INT 15h E820 and the
memory sizes from it, and enters the kernel in 32-bit protected mode.  An ELF kernel's
segments are also in RAM from reset, as QEMU's ``load_elf`` ROM blobs put them there.
"""

from __future__ import annotations

import struct

from uvirt.boot import multiboot
from uvirt.boot.option_roms import find_option_rom
from uvirt.board.devices.fw_cfg import FwCfg

KERNEL_ADDR, KERNEL_SIZE, INITRD_ADDR, INITRD_SIZE = 0x07, 0x08, 0x0A, 0x0B
KERNEL_ENTRY, KERNEL_DATA, INITRD_DATA = 0x10, 0x11, 0x12
ROM_NAME = "multiboot_dma.bin"
ROM_BOOT_PATH = f"/rom@genroms/{ROM_NAME}"


def multiboot_items(image: bytes, ram_size: int, *, filename: str, cmdline: str) -> tuple[dict[int, bytes], list]:
    """(fw_cfg items, ELF segments to preload) for a multiboot image."""
    plan = multiboot.parse(image, ram_size, filename=filename, cmdline=cmdline)
    load = plan.load_addr
    aux = {multiboot.ADDR_E820_MAP, multiboot.ADDR_MBI}
    kernel_segments = [(a, d) for a, d in plan.segments if a not in aux]
    end = max(a + len(d) for a, d in kernel_segments)
    buf = bytearray(end - load)
    for a, d in kernel_segments:
        buf[a - load:a - load + len(d)] = d
    mbi = bytearray(dict(plan.segments)[multiboot.ADDR_MBI])
    for off in (multiboot.MBI_MEM_LOWER, multiboot.MBI_MEM_UPPER, multiboot.MBI_MMAP_LENGTH):
        struct.pack_into("<I", mbi, off, 0)          # the option ROM fills these
    u32 = lambda v: struct.pack("<I", v)
    items = {KERNEL_ENTRY: u32(plan.entry), KERNEL_ADDR: u32(load), KERNEL_SIZE: u32(len(buf)),
             KERNEL_DATA: bytes(buf), INITRD_ADDR: u32(multiboot.ADDR_MBI),
             INITRD_SIZE: u32(len(mbi)), INITRD_DATA: bytes(mbi)}
    elf = image[:4] == b"\x7fELF"
    return items, (kernel_segments if elf else [])


def offer_multiboot(m, fw: FwCfg, path: str, cmdline: str, initrd: str | None) -> None:
    from uvirt.errors import ImageError
    if initrd is not None:
        raise ImageError("-initrd with -bios: multiboot modules are not supported by uvirt yet")
    try:
        with open(path, "rb") as f:
            image = f.read()
    except OSError as e:
        raise ImageError(f"could not load kernel '{path}': {e.strerror}") from None
    items, preload = multiboot_items(image, m.ram_size, filename=path, cmdline=cmdline)
    fw.items.update(items)
    with open(find_option_rom(ROM_NAME), "rb") as f:
        fw.add_file(f"genroms/{ROM_NAME}", f.read())
    for addr, data in preload:
        m.memory.guest.write(addr, data)
