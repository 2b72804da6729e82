"""Guest memory as device models see it: the ``GuestMemory`` protocol (rust-vmm's
``GuestMemory`` idea, QEMU's ``dma_memory_*`` / ``address_space_*`` calls).

The virtio core and the other device models depend on this protocol only, never on the
memory map: they read and write guest-physical addresses, map a buffer
(``address_space_map``: RAM directly, anything else through a bounce buffer), ask how
much of an area one ring cache covers, and schedule work outside a register access.
A bad guest address is never a host error: what QEMU would read as zeros or drop is read
as zeros or dropped.

Implementations: ``uvirt.board.memory.regions.SystemMemory`` (the board's
guest-physical address space, ``board.memory.guest``), and any object with these
methods (a test's RAM-only memory: ``uvirt.testing.mock_driver.guest_ram``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from uvirt.board.dma import DeviceWork


class GuestMemory(Protocol):
    """Device access to guest-physical memory (``address_space_memory``)."""

    #: the board's queue of device work (uvirt/board/dma.py)
    work: "DeviceWork"

    def read(self, addr: int, size: int) -> bytes:
        """``address_space_read``: unassigned memory reads 0."""

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """``address_space_write``: writes to unassigned memory or ROM are dropped."""

    def map(self, addr: int, length: int, is_write: bool) -> "Mapping | None":
        """``address_space_map``: up to ``length`` bytes; None while the bounce is busy."""

    def unmap(self, m: "Mapping", access_len: int) -> None:
        """``address_space_unmap``: a written bounce goes to memory."""

    def cache_len(self, addr: int, length: int, is_write: bool) -> int:
        """``address_space_cache_init``: how much of [addr, addr+length) one cache covers."""

    def read_u8(self, addr: int) -> int: ...
    def read_u16(self, addr: int) -> int: ...
    def read_u32(self, addr: int) -> int: ...
    def read_u64(self, addr: int) -> int: ...
    def write_u8(self, addr: int, value: int) -> None: ...
    def write_u16(self, addr: int, value: int) -> None: ...
    def write_u32(self, addr: int, value: int) -> None: ...
    def write_u64(self, addr: int, value: int) -> None: ...

    def ram_window(self, addr: int, size: int) -> "RamWindow | None":
        """[addr, addr+size) as one writable RAM piece's bytes, or None (see ``RamWindow``)."""


class RamWindow:
    """Guest addresses [lo, hi) are ``view[addr - delta]`` (one RAM piece), for as long
    as the address space is not changed: ``space._dirty`` false and ``space.generation``
    still ``gen``.  Users test that inline (it is on every ring access) and fall back to
    ``GuestMemory.read``/``write``, which stay the reference; writes through a window
    must still call ``space.invalidate_code``."""

    __slots__ = ("view", "lo", "hi", "delta", "space", "gen")

    def __init__(self, view, lo: int, hi: int, delta: int, space, gen: int) -> None:
        self.view, self.lo, self.hi, self.delta, self.space, self.gen = view, lo, hi, delta, space, gen

    def valid(self) -> bool:
        return not self.space._dirty and self.space.generation == self.gen


class Mapping:
    """One ``map`` result: ``length`` bytes at ``addr``, direct RAM (``buffer`` None)
    or the bounce buffer."""

    __slots__ = ("addr", "length", "buffer", "is_write")

    def __init__(self, addr: int, length: int, buffer: bytearray | None = None,
                 is_write: bool = False) -> None:
        self.addr = addr
        self.length = length
        self.buffer = buffer
        self.is_write = is_write

    def __deepcopy__(self, memo) -> "Mapping":
        # a handle on the address space's mapping (QEMU's host pointer), not state of its
        # holder: a snapshot of a device that holds one keeps the same handle, so that
        # unmapping it after a restore frees the one bounce buffer
        return self

    @property
    def bounced(self) -> bool:
        return self.buffer is not None

    def __repr__(self) -> str:
        kind = "bounce" if self.buffer is not None else "ram"
        return f"Mapping(0x{self.addr:x}, 0x{self.length:x}, {kind})"
