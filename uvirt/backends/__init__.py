"""Host back ends a device model is handed: block images, character devices,
shared host memory (QEMU's block/, chardev/ and hostmem backends)."""
