"""Boot paths: multiboot ``-kernel`` images, the firmware step, and ``-bios``."""
