"""uvirt: a Python full-system emulator on Unicorn, QEMU 7.2-compatible where a guest can see it."""

__version__ = "0.1.0"
