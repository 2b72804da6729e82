"""QEMU's ISA test helpers: ``isa-debugcon`` and ``isa-debug-exit``.

isa-debugcon (``hw/char/debugcon.c``)
    One byte port (default 0xE9).  A byte written goes to the chardev; a read returns
    ``readback`` (default 0xE9, which is how a guest detects the port).  QEMU declares
    valid access size 1 only, so ``outw``/``outl`` to it are dropped.

isa-debug-exit (``hw/misc/debugexit.c``)
    ``iosize`` bytes at ``iobase`` (QEMU defaults 0x501 and 2; the issue's command line
    uses 0xF4/4).  A write of ``v`` ends QEMU with exit status ``(v << 1) | 1``; reads
    return 0.  Valid sizes 1..4.
"""

from __future__ import annotations

from typing import Callable

from uvirt.backends.chardev import Chardev, NullChardev


class IsaDebugcon:
    name = "isa-debugcon"

    snapshot_state = ()    # configuration only; output is the outside world's

    def __init__(self, chardev: Chardev | None = None, *, iobase: int = 0xE9,
                 readback: int = 0xE9) -> None:
        self.chardev = chardev or NullChardev()
        self.iobase = iobase
        self.readback = readback

    def reset(self) -> None:
        pass

    def read(self, offset: int, size: int) -> int:
        return self.readback & 0xFF         # a uint32 property, read through a 1-byte port

    def write(self, offset: int, size: int, value: int) -> None:
        self.chardev.write(bytes((value & 0xFF,)))


class IsaDebugExit:
    name = "isa-debug-exit"

    snapshot_state = ()    # configuration only; output is the outside world's

    def __init__(self, on_exit: Callable[[int], None], *, iobase: int = 0x501, iosize: int = 2) -> None:
        self.on_exit = on_exit
        self.iobase = iobase
        self.iosize = iosize

    def reset(self) -> None:
        pass

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.on_exit(value)
