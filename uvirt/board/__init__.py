"""The board, CPU-free: memory map, port space, PCI bus, interrupt controllers,
built-in devices and device work.  Usable from qtest, unit tests and the
fuzzer with no CPU (docs/architecture.md)."""
