"""QEMU's option ROMs as Debian installs them (package qemu-system-data): where the
firmware step (boot/bios.py: ``kvmvapic.bin``) and the multiboot loader
(boot/multiboot_fw_cfg.py: ``multiboot_dma.bin``) find the ROMs they put in fw_cfg's
``genroms/``, as QEMU's ``rom_add_option`` finds them on its data path."""

from __future__ import annotations

import os

from uvirt.errors import ImageError

#: Where Debian keeps QEMU's option ROMs (package qemu-system-data).
OPTION_ROM_DIRS = ("/usr/share/qemu", "/usr/share/qemu/firmware", "/usr/lib/ipxe/qemu")


def find_option_rom(name: str) -> str:
    for d in OPTION_ROM_DIRS:
        path = os.path.join(d, name)
        if os.path.isfile(path):
            return path
    raise ImageError(f"option ROM {name} not found (looked in {', '.join(OPTION_ROM_DIRS)}; "
                     f"Debian: apt-get install qemu-system-data)")
