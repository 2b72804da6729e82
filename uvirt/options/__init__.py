"""QEMU 7.2's command line, parsed into a typed configuration; help output."""
