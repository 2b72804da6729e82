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

from typing import TYPE_CHECKING, Callable, Protocol

from uvirt.board.memory.regions import MmioRegion

if TYPE_CHECKING:
    from uvirt.board.board import Board


class Output(Protocol):
    """Where debugcon bytes go: a chardev (uvirt/backends/chardev.py) or anything that writes."""

    def write(self, data: bytes) -> None: ...


class _Discard:
    def write(self, data: bytes) -> None:
        pass


class IsaDebugcon:
    name = "isa-debugcon"

    snapshot_state = ()    # configuration only; output is the outside world's

    def __init__(self, chardev: Output | None = None, *, iobase: int = 0xE9,
                 readback: int = 0xE9) -> None:
        self.chardev = chardev if chardev is not None else _Discard()
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


def add_debugcon(board: "Board", chardev: Output, iobase: int = 0xE9, *,
                 readback: int = 0xE9) -> IsaDebugcon:
    """``-device isa-debugcon`` (and ``-debugcon``): one byte port; ``chardev`` is closed
    with the board."""
    dev = IsaDebugcon(chardev, iobase=iobase, readback=readback)
    board.add_isa(MmioRegion("isa-debugcon", 1, dev, valid_sizes=(1,)), iobase, dev)
    board.chardevs.append(chardev)
    return dev


def add_debug_exit(board: "Board", iobase: int = 0x501, iosize: int = 2) -> IsaDebugExit:
    """``-device isa-debug-exit``: a write ends the run through ``board.debug_exit``."""
    dev = IsaDebugExit(board.debug_exit, iobase=iobase, iosize=iosize)
    board.add_isa(MmioRegion("isa-debug-exit", iosize, dev, valid_sizes=(1, 2, 4)), iobase, dev)
    return dev
