"""Helpers for uvirt's own tests: the QEMU reference runner (``uvirt.testing.qemu``)."""
