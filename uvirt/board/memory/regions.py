"""Guest-physical and port address spaces, in the spirit of QEMU's MemoryRegion API.

Regions
    ``RamRegion``   a host buffer (``HostBuffer``) the guest reaches at native speed: the
                    memory map hands its pointer to ``uc.mem_map_ptr``.
    ``MmioRegion``  a device register window served by ``device.read(offset, size)`` /
                    ``device.write(offset, size, value)``; through ``uc.mmio_map`` for
                    memory, through the IN/OUT hooks for ports.

Placement
    ``AddressSpace.add(region, addr, priority)`` returns a ``Placement`` that can be
    moved, enabled and disabled (a BAR being reprogrammed, decode toggled).  Where
    placements overlap the highest priority wins; among equal priorities the one placed
    (or moved) last wins, as in QEMU's ``memory_region_add_subregion_overlap``.  No
    Unicorn call happens until ``commit()``.

Commit
    ``MemoryMap.commit()`` flattens the placements into visible pieces and diffs them
    against what Unicorn has mapped; it is the *only* caller of ``mem_map_ptr``,
    ``mmio_map`` and ``mem_unmap`` in uvirt (docs/unicorn-notes.md §7 items 1–3: Unicorn maps
    whole 4 KiB pages, refuses overlaps and keeps no reference to a pointer's buffer).
    Pages a region covers completely become one native mapping; a page shared by
    several regions, or only partly covered (ivshmem's 256-byte BAR0), becomes one
    ``mmio_map`` page whose callback dispatches by offset.  Unmapping happens before
    mapping, and every mapped ``HostBuffer`` stays pinned while mapped.

Access contract (QEMU ``memory_region_dispatch_read/write``, ``access_with_adjusted_size``)
    ``valid_sizes`` / ``unaligned`` say what the modelled device accepts: any other
    access reads 0 and drops the write (a recorded guest error).  ``impl_min``/``impl_max``
    say what the device code handles: larger accesses are split into little-endian
    pieces, smaller ones widened to ``impl_min`` at the same offset and masked, exactly as
    QEMU does, so devices never check sizes themselves.

Unassigned space (docs/qemu-7.2-observed.md): memory reads 0 and ignores writes; ports read
all ones and ignore writes.  A data access where nothing is mapped reaches the
machine's handler through Unicorn unmapped-access hooks that the commit keeps bounded
to the ranges between RAM mappings (``_GapHooks``): an unmapped hook that also covers a
RAM page keeps every store to that page on Unicorn's slow path (``notdirty_write`` never
marks a page dirty while any memory hook's range includes it).
"""

from __future__ import annotations

import bisect
import ctypes
from contextlib import contextmanager
import mmap
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple, Protocol

from uvirt.errors import GuestMemoryError, MemoryMapError

PAGE_SIZE = 0x1000
PAGE_MASK = ~(PAGE_SIZE - 1)
ADDR_SPACE_END = 1 << 32          # what a 32-bit guest can reach

#: QEMU ``unassigned_mem_read``: memory nobody claims reads as zero.
UNASSIGNED_MEM_VALUE = 0
#: QEMU ``unassigned_io_read``: ports nobody claims read as all ones.
UNASSIGNED_IO_VALUE = 0xFFFFFFFF

_SIZE_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}


class Device(Protocol):
    """What an ``MmioRegion`` serves: offsets only, never addresses, never Unicorn."""

    def read(self, offset: int, size: int) -> int: ...
    def write(self, offset: int, size: int, value: int) -> None: ...


# --------------------------------------------------------------------------- buffers


class HostBuffer:
    """Host memory a guest can see: an ``mmap`` (anonymous, or a shared file) that
    lives as long as its owner and is never copied.

    The ctypes view pins the mmap: while it exists ``mmap.close()`` raises
    ``BufferError`` instead of freeing memory Unicorn still points at
    (docs/unicorn-notes.md §7 item 2, the SIGSEGV pitfall).
    """

    def __init__(self, size: int, *, fd: int | None = None, offset: int = 0,
                 shared: bool = True, name: str = "anon") -> None:
        if size <= 0:
            raise MemoryMapError(f"host buffer {name}: size 0x{size:x} must be positive")
        self.name = name
        self.size = size
        if fd is None:
            self._mmap = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        else:
            flags = mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE
            self._mmap = mmap.mmap(fd, size, flags=flags, offset=offset)
        self._pin = ctypes.c_char.from_buffer(self._mmap)
        self.address = ctypes.addressof(self._pin)
        self.view = memoryview(self._mmap)
        self.mapped_count = 0

    @classmethod
    def from_file(cls, path: str, size: int, *, shared: bool = True) -> "HostBuffer":
        fd = os.open(path, os.O_RDWR)
        try:
            return cls(size, fd=fd, shared=shared, name=path)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self.mapped_count:
            raise MemoryMapError(f"host buffer {self.name} is still mapped into the guest")
        self.view.release()
        del self._pin
        self._mmap.close()


# --------------------------------------------------------------------------- regions


class Region:
    name: str
    size: int


class RamRegion(Region):
    """Guest RAM (or a shared-memory BAR) backed by a ``HostBuffer``."""

    def __init__(self, name: str, size: int, buffer: HostBuffer | None = None, *,
                 buffer_offset: int = 0, readonly: bool = False) -> None:
        if size <= 0:
            raise MemoryMapError(f"region {name}: size 0x{size:x} must be positive")
        self.name = name
        self.size = size
        self.buffer = buffer if buffer is not None else HostBuffer(size, name=name)
        if buffer_offset + size > self.buffer.size:
            raise MemoryMapError(f"region {name}: 0x{buffer_offset:x}+0x{size:x} exceeds its "
                                 f"buffer of 0x{self.buffer.size:x} bytes")
        self.buffer_offset = buffer_offset
        self.readonly = readonly

    # The CPU-less access path (qtest, DMA through the dispatcher) and sub-page pieces.
    def read(self, offset: int, size: int) -> int:
        o = self.buffer_offset + offset
        return int.from_bytes(self.buffer.view[o:o + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        if self.readonly:
            return
        o = self.buffer_offset + offset
        self.buffer.view[o:o + size] = (value & _SIZE_MASK[size]).to_bytes(size, "little")

    def __repr__(self) -> str:
        return f"RamRegion({self.name!r}, 0x{self.size:x})"


GuestErrorHook = Callable[[str, str], None]


class MmioRegion(Region):
    """A register window served by a device object."""

    def __init__(self, name: str, size: int, device: Device, *,
                 valid_sizes: Iterable[int] = (1, 2, 4, 8), unaligned: bool = False,
                 impl_min: int = 1, impl_max: int = 4) -> None:
        if size <= 0:
            raise MemoryMapError(f"region {name}: size 0x{size:x} must be positive")
        self.name = name
        self.size = size
        self.device = device
        self.valid_sizes = frozenset(valid_sizes)
        self.unaligned = unaligned
        self.impl_min = impl_min
        self.impl_max = impl_max
        # The common case needs no adjustment: dispatch straight to the device.
        self._direct = frozenset(s for s in self.valid_sizes if impl_min <= s <= impl_max)
        self.on_guest_error: GuestErrorHook | None = None
        #: The owning device's re-entrancy guard (uvirt/board/dma.py), shared by its regions.
        self.guard = None
        self.read, self.write = self._fast_paths()

    def set_guard(self, guard) -> None:
        """Every access engages ``guard`` (QEMU ``access_with_adjusted_size`` with the
        device's ``mem_reentrancy_guard``): one made while the device is inside another
        access of its own is dropped and reads 0."""
        self.guard = guard
        read, write = self._fast_paths()
        name, work = self.name, guard.work

        # guard.enter/leave inlined: this wraps every register access of the device
        def guarded_read(offset: int, size: int) -> int:
            if guard.engaged:
                guard.block(f"at +0x{offset:x} ({name}, read)")
                return UNASSIGNED_MEM_VALUE
            guard.engaged = True
            work.depth += 1
            try:
                return read(offset, size)
            finally:
                guard.engaged = False
                work.depth -= 1
                if not work.depth and work._queue and not work.running:
                    work.run()

        def guarded_write(offset: int, size: int, value: int) -> None:
            if guard.engaged:
                guard.block(f"at +0x{offset:x} ({name}, write)")
                return
            guard.engaged = True
            work.depth += 1
            try:
                write(offset, size, value)
            finally:
                guard.engaged = False
                work.depth -= 1
                if not work.depth and work._queue and not work.running:
                    work.run()

        self.read, self.write = guarded_read, guarded_write

    def _fast_paths(self):
        """Per-region closures: a valid, naturally sized access goes straight to the
        device (this is the port-I/O and MMIO hot path); anything else takes the
        general path.  Instance attributes shadow the methods below."""
        direct, dev_read, dev_write, masks = self._direct, self.device.read, self.device.write, _SIZE_MASK
        slow_read, slow_write = self._adjusted_read, self._adjusted_write
        if self.unaligned:
            def read(offset: int, size: int) -> int:
                if size in direct:
                    return dev_read(offset, size) & masks[size]
                return slow_read(offset, size)

            def write(offset: int, size: int, value: int) -> None:
                if size in direct:
                    dev_write(offset, size, value & masks[size])
                else:
                    slow_write(offset, size, value)
        else:
            def read(offset: int, size: int) -> int:
                if size in direct and not offset & (size - 1):
                    return dev_read(offset, size) & masks[size]
                return slow_read(offset, size)

            def write(offset: int, size: int, value: int) -> None:
                if size in direct and not offset & (size - 1):
                    dev_write(offset, size, value & masks[size])
                else:
                    slow_write(offset, size, value)
        return read, write

    def _valid(self, offset: int, size: int) -> bool:
        if size not in self.valid_sizes:
            return False
        return self.unaligned or not (offset & (size - 1))

    def _adjusted_read(self, offset: int, size: int) -> int:
        if not self._valid(offset, size):
            self._guest_error("read", offset, size)
            return UNASSIGNED_MEM_VALUE
        step = max(min(size, self.impl_max), self.impl_min)
        mask = _SIZE_MASK[step]
        value = 0
        for i in range(0, size, step):
            value |= (self.device.read(offset + i, step) & mask) << (8 * i)
        return value & _SIZE_MASK[size]

    def _adjusted_write(self, offset: int, size: int, value: int) -> None:
        if not self._valid(offset, size):
            self._guest_error("write", offset, size)
            return
        step = max(min(size, self.impl_max), self.impl_min)
        mask = _SIZE_MASK[step]
        for i in range(0, size, step):
            self.device.write(offset + i, step, (value >> (8 * i)) & mask)

    def _guest_error(self, kind: str, offset: int, size: int) -> None:
        if self.on_guest_error is not None:
            self.on_guest_error("invalid_access",
                                f"{self.name}: {size}-byte {kind} at +0x{offset:x} not accepted")

    def __repr__(self) -> str:
        return f"MmioRegion({self.name!r}, 0x{self.size:x})"


class Container(Region):
    """A region made of subregions (QEMU ``memory_region_init`` + ``add_subregion``).

    Children overlap by priority like placements; gaps are transparent (whatever lies
    below the container shows through), as for a QEMU container without its own ops.
    Adding or removing a child while the container is placed re-commits every address
    space that holds it: this is how ivshmem's BAR2 gets its RAM when the server's fd
    arrives, after the guest may already have programmed the BAR.
    """

    def __init__(self, name: str, size: int) -> None:
        if size <= 0:
            raise MemoryMapError(f"container {name}: size 0x{size:x} must be positive")
        self.name = name
        self.size = size
        self.children: list[tuple[int, Region, int, int]] = []     # (offset, region, priority, seq)
        self._seq = 0
        self._spaces: list["AddressSpace"] = []

    def add_subregion(self, offset: int, region: Region, priority: int = 0) -> None:
        if offset < 0 or offset + region.size > self.size:
            raise MemoryMapError(f"container {self.name}: subregion {region.name} at 0x{offset:x}+"
                                 f"0x{region.size:x} exceeds its 0x{self.size:x} bytes")
        self._seq += 1
        self.children.append((offset, region, priority, self._seq))
        for space in self._spaces:
            space._adopt(region)
        self._changed()

    def remove_subregion(self, region: Region) -> None:
        self.children = [c for c in self.children if c[1] is not region]
        self._changed()

    def _changed(self) -> None:
        for space in self._spaces:
            space._dirty = True
            space.commit()

    def read(self, offset: int, size: int) -> int:
        for off, child, _, _ in sorted(self.children, key=lambda c: (c[2], c[3]), reverse=True):
            if off <= offset < off + child.size:
                return child.read(offset - off, size)
        return UNASSIGNED_MEM_VALUE

    def write(self, offset: int, size: int, value: int) -> None:
        for off, child, _, _ in sorted(self.children, key=lambda c: (c[2], c[3]), reverse=True):
            if off <= offset < off + child.size:
                child.write(offset - off, size, value)
                return

    def __repr__(self) -> str:
        return f"Container({self.name!r}, 0x{self.size:x}, {len(self.children)} children)"


def _leaves(region: Region, addr: int, lo: int, hi: int, key: tuple, out: list) -> None:
    """Expand containers: (key, region, start, end, region offset at start), clipped to [lo, hi)."""
    if isinstance(region, Container):
        for off, child, prio, seq in region.children:
            _leaves(child, addr + off, max(lo, addr), min(hi, addr + region.size),
                    key + (prio, seq), out)
        return
    start, end = max(addr, lo), min(addr + region.size, hi)
    if start < end:
        out.append((key, region, start, end, start - addr))


class _ConstantDevice:
    """Unassigned space: reads a constant, ignores writes."""
    snapshot_state = ()          # constant (uvirt/cpu/snapshot.py)

    def __init__(self, value: int) -> None:
        self.value = value

    def read(self, offset: int, size: int) -> int:
        return self.value

    def write(self, offset: int, size: int, value: int) -> None:
        pass


# --------------------------------------------------------------------------- placements


@dataclass(eq=False)
class Placement:
    """One region at one address.  Mutate only through its address space."""

    space: "AddressSpace"
    region: Region
    addr: int
    priority: int
    enabled: bool = True
    seq: int = 0

    @property
    def end(self) -> int:
        return self.addr + self.region.size

    def move(self, addr: int) -> None:
        self.space.move(self, addr)

    def set_enabled(self, enabled: bool) -> None:
        self.space.set_enabled(self, enabled)

    def remove(self) -> None:
        self.space.remove(self)


class Piece(NamedTuple):
    """A visible interval of the flattened space: [start, end) shows region at offset.
    (A named tuple, not a frozen dataclass: every commit builds them all, and a frozen
    dataclass costs a ``object.__setattr__`` per field.)"""

    start: int
    end: int
    region: Region
    offset: int            # region offset at ``start``


class AddressSpace:
    """Placements, priorities and the flattened view; knows nothing of Unicorn."""

    def __init__(self, name: str, size: int, background: Region | None = None) -> None:
        self.name = name
        self.size = size
        self._placements: list[Placement] = []
        self._seq = 0
        self._background = background
        self._pieces: list[Piece] = []
        self._starts: list[int] = []
        self._dirty = True
        #: Bumped whenever the flattened view is rebuilt: with ``_dirty`` false and the
        #: same generation, every address still shows what it showed (``RamWindow``).
        self.generation = 0
        #: Where regions placed here report guest errors (the machine's recorder).
        self.on_guest_error: GuestErrorHook | None = None
        self._defer = 0
        self._pending = False

    def commit(self) -> None:
        """Publish the placements (subclasses say to whom)."""

    def _deferred(self) -> bool:
        if self._defer:
            self._pending = True
            return True
        return False

    @contextmanager
    def batch(self):
        """Group many placement changes into one commit (machine build, firmware step)."""
        self._defer += 1
        try:
            yield self
        finally:
            self._defer -= 1
            if not self._defer and self._pending:
                self._pending = False
                self.commit()

    def _forward_guest_error(self, kind: str, detail: str) -> None:
        if self.on_guest_error is not None:
            self.on_guest_error(kind, detail)

    # -- placement
    def add(self, region: Region, addr: int, priority: int = 0, *, enabled: bool = True) -> Placement:
        self._seq += 1
        self._adopt(region)
        p = Placement(self, region, addr, priority, enabled, self._seq)
        self._placements.append(p)
        self._dirty = True
        return p

    def _adopt(self, region: Region) -> None:
        if isinstance(region, MmioRegion) and region.on_guest_error is None:
            region.on_guest_error = self._forward_guest_error
        if isinstance(region, Container):
            if self not in region._spaces:
                region._spaces.append(self)
            for _, child, _, _ in region.children:
                self._adopt(child)

    def move(self, p: Placement, addr: int) -> None:
        if p.addr != addr:
            p.addr = addr
            self._seq += 1
            p.seq = self._seq            # re-added last, as QEMU's del + add_subregion
            self._dirty = True

    def set_enabled(self, p: Placement, enabled: bool) -> None:
        if p.enabled != enabled:
            p.enabled = enabled
            if enabled:
                self._seq += 1
                p.seq = self._seq
            self._dirty = True

    def remove(self, p: Placement) -> None:
        self._placements.remove(p)
        self._dirty = True

    @property
    def placements(self) -> tuple[Placement, ...]:
        return tuple(self._placements)

    # -- flattening
    def flatten(self) -> list[Piece]:
        """Visible pieces, sorted by address; the winner of every overlap only."""
        if not self._dirty:
            return self._pieces
        leaves: list = []
        for p in self._placements:
            if p.enabled and p.region.size > 0:
                _leaves(p.region, p.addr, 0, self.size, (p.priority, p.seq), leaves)
        leaves.sort(key=lambda leaf: leaf[0], reverse=True)
        covered: list[tuple[int, int]] = []          # sorted, disjoint
        pieces: list[Piece] = []
        for _key, region, start, end, offset in leaves:
            for s, e in _subtract(start, end, covered):
                pieces.append(Piece(s, e, region, offset + s - start))
            covered = _union(covered, start, end)
        if self._background is not None:
            for s, e in _subtract(0, self.size, covered):
                pieces.append(Piece(s, e, self._background, s))
        pieces.sort(key=lambda pc: pc.start)
        self._pieces = pieces
        self._starts = [pc.start for pc in pieces]
        self._dirty = False
        self.generation += 1
        return pieces

    def lookup(self, addr: int) -> Piece | None:
        self.flatten()
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            pc = self._pieces[i]
            if addr < pc.end:
                return pc
        return None

    # -- the CPU-less access path (qtest, unit tests): the first byte decides the region,
    # as for TCG's io_readx and the x86 port helpers.
    def read(self, addr: int, size: int) -> int:
        pc = self.lookup(addr)
        if pc is None:
            return self._unassigned_value(size)
        return pc.region.read(pc.offset + addr - pc.start, size)

    def write(self, addr: int, size: int, value: int) -> None:
        pc = self.lookup(addr)
        if pc is not None:
            pc.region.write(pc.offset + addr - pc.start, size, value)

    def _unassigned_value(self, size: int) -> int:
        return UNASSIGNED_MEM_VALUE


def _subtract(start: int, end: int, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    cur = start
    for s, e in covered:
        if e <= cur:
            continue
        if s >= end:
            break
        if s > cur:
            out.append((cur, s))
        cur = max(cur, e)
        if cur >= end:
            break
    if cur < end:
        out.append((cur, end))
    return out


def _union(covered: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    if start >= end:
        return covered
    out = []
    placed = False
    for s, e in covered:
        if e < start:
            out.append((s, e))
        elif s > end:
            if not placed:
                out.append((start, end))
                placed = True
            out.append((s, e))
        else:
            start, end = min(s, start), max(e, end)
    if not placed:
        out.append((start, end))
    out.sort()
    return out


# --------------------------------------------------------------------------- I/O space


class PortEntry(NamedTuple):
    region: Region
    base: int
    dev_read: Callable[[int, int], int]
    dev_write: Callable[[int, int, int], None]
    direct: frozenset
    align_mask: int


class IoSpace(AddressSpace):
    """The 64 KiB x86 port space, dispatched from the IN/OUT hooks.

    ``commit()`` builds a table of the claimed ports, so a port access costs one dict
    lookup (``table.get(port, unassigned)``); the region containing the first port takes
    the whole access (QEMU's ``address_space_ldl`` in the x86 ``helper_in*``/``helper_out*``).
    """

    def __init__(self) -> None:
        # QEMU's unassigned_io_ops declare no access rules: any size, but unaligned
        # accesses fail memory_region_access_valid and read 0.
        self.unassigned = MmioRegion("unassigned-io", 0x10000, _ConstantDevice(UNASSIGNED_IO_VALUE),
                                     valid_sizes=(1, 2, 4))
        super().__init__("io", 0x10000)
        self.unassigned_entry = self._entry(self.unassigned, 0)
        self.table: dict[int, PortEntry] = {}
        self._entries: dict[tuple, PortEntry] = {}
        self.commit()

    def commit(self) -> None:
        if self._deferred():
            return
        table: dict[int, PortEntry] = {}
        old, entries = self._entries, {}
        for pc in self.flatten():
            region = pc.region
            # an entry depends on its region, its base and what the region dispatches to
            # now (a device or its accessors can be swapped: a guard, a tracing proxy)
            key = (region, pc.start - pc.offset, getattr(region, "device", None),
                   getattr(region, "read", None), getattr(region, "write", None))
            entry = entries.get(key) or old.get(key)
            if entry is None:
                entry = self._entry(region, key[1])
            entries[key] = entry
            for port in range(pc.start, pc.end):
                table[port] = entry
        self.table = table
        self._entries = entries          # only what is placed now: moves do not pile up

    @staticmethod
    def _entry(region: Region, base: int) -> "PortEntry":
        """What the IN/OUT hooks need to reach a device without an extra Python frame:
        the device's own read/write for accesses of a size in ``direct``, aligned
        unless ``align_mask`` is 0; the region's general path for everything else."""
        if isinstance(region, MmioRegion) and region.guard is None:
            return PortEntry(region, base, region.device.read, region.device.write, region._direct,
                             0 if region.unaligned else -1)
        return PortEntry(region, base, region.read, region.write, frozenset((1, 2, 4)), 0)

    def read(self, addr: int, size: int) -> int:
        e = self.table.get(addr & 0xFFFF, self.unassigned_entry)
        return e.region.read(addr - e.base, size)

    def write(self, addr: int, size: int, value: int) -> None:
        e = self.table.get(addr & 0xFFFF, self.unassigned_entry)
        e.region.write(addr - e.base, size, value)

    def _unassigned_value(self, size: int) -> int:
        return UNASSIGNED_IO_VALUE & _SIZE_MASK[size]


# --------------------------------------------------------------------------- memory map


class _Span(NamedTuple):
    """One Unicorn mapping.  Equal spans are left alone by a commit.  (A named tuple
    for the same reason as ``Piece``.)"""

    start: int
    size: int
    kind: str                        # "ram" | "mmio" | "mixed"
    region: Region | None = None     # ram / mmio
    offset: int = 0                  # region offset at start
    pieces: tuple[Piece, ...] = ()   # mixed


class MemoryMap(AddressSpace):
    """The guest-physical address space and the one owner of Unicorn's memory API."""

    def __init__(self) -> None:
        super().__init__("memory", ADDR_SPACE_END)
        self._uc = None
        self._remove_cache = None
        self._gaps: _GapHooks | None = None
        #: ``fn(address, size) -> bool`` for a guest data access where nothing is
        #: mapped (the machine maps a reads-zero page and lets Unicorn retry).
        self.on_unmapped: Callable[[int, int], bool] | None = None
        self._mapped: dict[tuple, _Span] = {}
        self._callbacks: dict[tuple, tuple] = {}
        self._phantom: dict[int, Placement] = {}
        self._unassigned = MmioRegion("unassigned", PAGE_SIZE, _ConstantDevice(UNASSIGNED_MEM_VALUE),
                                      valid_sizes=(1, 2, 4, 8), unaligned=True)
        self._ram_cache: Piece | None = None
        self.guest = GuestMemory(self)
        self.replay = ReplayGuard()
        self.commits = 0
        #: Set by the machine while ``emu_start`` may run: the CPU thread's ident, and how
        #: another thread hands that thread work (``Machine.call_soon_threadsafe``).
        self.cpu_thread: int | None = None
        self.post_to_cpu: Callable[[Callable[[], None]], None] | None = None
        #: Set by the machine: ``(addr, size) -> bool``, False when no translated code
        #: can exist there (uvirt/cpu/tlb.py tracks the pages the CPU fetched from).
        self.may_hold_code: Callable[[int, int], bool] | None = None
        #: Set by the machine: a ``uvirt.trace.Tracer`` for ``mmio_read``/``mmio_write``.
        self.tracer = None
        #: ``(addr, size)`` for every host write to RAM (set while a snapshot is held)
        self.dirty_log: Callable[[int, int], None] | None = None

    # -- Unicorn side
    def attach(self, uc) -> None:
        """Give the map its CPU.  Until then it is a pure data structure (unit tests, qtest)."""
        self._uc = uc
        self._remove_cache = None
        self._gaps = _GapHooks(uc, lambda addr, size: bool(self.on_unmapped and self.on_unmapped(addr, size)))
        self.commit()

    def detach(self, *, cpu_closed: bool = False) -> None:
        """Unmap everything (buffers stay alive with their owners).  With ``cpu_closed``
        the Unicorn instance is already gone (``uc_close`` freed its mappings), so only
        the bookkeeping is undone: unmapping 128 MiB page by page costs over a millisecond."""
        uc, self._uc = self._uc, None
        gaps, self._gaps = self._gaps, None
        if gaps is not None and not cpu_closed:
            gaps.close()
        for span in list(self._mapped.values()):
            if uc is not None and not cpu_closed:
                self._unmap(uc, span)
            else:
                self._release(span)
        self._mapped.clear()
        self._callbacks.clear()

    def map_unassigned_page(self, addr: int) -> None:
        """Back an unclaimed page with the reads-zero region so the faulting data access
        can be retried (called from the machine's unmapped-access hook)."""
        page = addr & PAGE_MASK
        if page not in self._phantom:
            self._phantom[page] = self.add(self._unassigned, page, priority=-(1 << 30))
            self.commit()

    def commit(self) -> None:
        """Make Unicorn's mappings equal the flattened placements."""
        if self._deferred():
            return
        self.commits += 1
        pieces = self.flatten()
        self._ram_cache = None
        uc = self._uc
        if uc is None:
            return
        wanted = {(_span_key(s)): s for s in _spans(pieces)}
        for key in [k for k in self._mapped if k not in wanted]:
            self._unmap(uc, self._mapped.pop(key))
        for key, span in wanted.items():
            if key not in self._mapped:
                self._map(uc, span)
                self._mapped[key] = span
        if self._gaps is not None:
            # only RAM needs to stay outside them (MMIO stores are slow anyway): BAR moves
            # of register windows and reads-zero pages leave the hooks alone
            self._gaps.cover(_gaps((s.start, s.start + s.size) for s in self._mapped.values()
                                   if s.kind == "ram"))

    def _map(self, uc, span: _Span) -> None:
        from unicorn import UC_PROT_ALL, UC_PROT_READ, UC_PROT_EXEC
        if span.kind == "ram":
            region = span.region
            assert isinstance(region, RamRegion)
            perms = (UC_PROT_READ | UC_PROT_EXEC) if region.readonly else UC_PROT_ALL
            ptr = region.buffer.address + region.buffer_offset + span.offset
            uc.mem_map_ptr(span.start, span.size, perms, ptr)
            region.buffer.mapped_count += 1
            return
        if span.kind == "mmio":
            read_cb, write_cb = _region_callbacks(span.region, span.offset, self.replay,
                                                  span.start, self.tracer)
        else:
            read_cb, write_cb = _mixed_callbacks(span.pieces, span.start, self.replay,
                                                 self.tracer)
        self._callbacks[_span_key(span)] = (read_cb, write_cb)
        uc.mmio_map(span.start, span.size, read_cb, None, write_cb, None)
        for pc in span.pieces:
            if isinstance(pc.region, RamRegion):
                pc.region.buffer.mapped_count += 1

    def _unmap(self, uc, span: _Span) -> None:
        uc.mem_unmap(span.start, span.size)
        self._release(span)

    def _release(self, span: _Span) -> None:
        self._callbacks.pop(_span_key(span), None)
        if span.kind == "ram":
            span.region.buffer.mapped_count -= 1
        for pc in span.pieces:
            if isinstance(pc.region, RamRegion):
                pc.region.buffer.mapped_count -= 1

    def invalidate_code(self, addr: int, size: int) -> None:
        """Drop translated code for a range the host rewrote (docs/unicorn-notes.md §7 items 7–8).

        Every device DMA write lands here, so it calls ``uc_ctl`` directly: the binding's
        ``ctl_remove_cache`` spends about 4 µs in Python argument encoding."""
        if self.dirty_log is not None:
            self.dirty_log(addr, size)    # host writes for snapshots (uvirt/cpu/snapshot.py)
        if self._uc is None or size <= 0:
            return
        if self.may_hold_code is not None and not self.may_hold_code(addr, size):
            return      # data only (a shared region, a DMA buffer): no code to drop, no kick
        owner = self.cpu_thread
        if owner is not None and self.post_to_cpu is not None and owner != threading.get_ident():
            # uc_ctl is not thread-safe while emu_start runs on another thread: a host
            # thread writing a shared region under a running guest crashed the process.
            # The CPU thread drops the blocks at its next stop (the post kicks it).
            self.post_to_cpu(lambda: self.invalidate_code(addr, size))
            return
        remove = self._remove_cache
        if remove is None:
            remove = self._remove_cache = _tb_remover(self._uc)
        remove(addr, addr + size)

    # -- RAM lookup for GuestMemory
    def ram_piece(self, addr: int) -> Piece | None:
        pc = self._ram_cache
        if pc is not None and pc.start <= addr < pc.end:
            return pc
        pc = self.lookup(addr)
        if pc is not None and isinstance(pc.region, RamRegion):
            self._ram_cache = pc
            return pc
        return None

    @property
    def unmapped_hook_ranges(self) -> list[tuple[int, int]]:
        """The [start, end) ranges Unicorn's unmapped-access hooks cover, for tests."""
        return self._gaps.ranges if self._gaps is not None else []

    @property
    def mapped_spans(self) -> list[tuple[int, int, str]]:
        """What Unicorn has mapped, for tests and ``info mtree``-style output."""
        return sorted((s.start, s.size, s.kind) for s in self._mapped.values())


def _tb_remover(uc):
    """``(begin, end) -> None`` dropping translated blocks, through ``uc_ctl`` itself."""
    import ctypes
    try:
        from unicorn.unicorn_py3.unicorn import uclib
        from unicorn.unicorn_const import UC_CTL_IO_WRITE, UC_CTL_TB_REMOVE_CACHE
        uch = uc._uch
    except (ImportError, AttributeError):
        return uc.ctl_remove_cache
    # UC_CTL_WRITE(type, nargs) = type | nargs << 26 | UC_CTL_IO_WRITE << 30
    ctl = UC_CTL_TB_REMOVE_CACHE | (2 << 26) | (UC_CTL_IO_WRITE << 30)
    u64 = ctypes.c_uint64
    fn = uclib.uc_ctl

    def remove(begin: int, end: int) -> None:
        fn(uch, ctl, u64(begin), u64(end))

    return remove


def _gaps(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The unmapped [start, end) ranges of the 32-bit space between ``spans``."""
    out, pos = [], 0
    for start, end in sorted(spans):
        if start > pos:
            out.append((pos, start))
        pos = max(pos, end)
    if pos < ADDR_SPACE_END:
        out.append((pos, ADDR_SPACE_END))
    return out


class _GapHooks:
    """Unicorn unmapped-access hooks (data reads and writes), one per range between RAM
    mappings (they may cover MMIO mappings: Unicorn calls them only where nothing is mapped).

    One global hook would be simpler, but Unicorn 2.1.4 never lets a page's stores onto
    the fast path while any memory hook's range includes that page (``notdirty_write``:
    ``uc_mem_hook_installed``), so a global unmapped hook alone would cost every guest
    store ~15 ns (uvirt/cpu/tlb.py).  A commit re-covers only the gaps that changed;
    hooks go through the C API (about a microsecond each, against ten through the
    binding's ``hook_add``) with one shared callback.  Deleting a hook from inside a
    callback is safe: Unicorn frees it after ``emu_start`` returns.  Until then it stays
    on Unicorn's lists, so a region BAR moved thousands of times within one run (or
    with no run at all) makes each further move a little slower: 67 µs per move over
    300 moves, 89 µs over 3000 (benchmarks/bench_regions.py measures 300)."""

    def __init__(self, uc, handler: Callable[[int, int], bool]) -> None:
        from unicorn import UC_HOOK_MEM_READ_UNMAPPED, UC_HOOK_MEM_WRITE_UNMAPPED
        self._uc = uc
        self._hooks: dict[tuple[int, int], int] = {}
        self._type = UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED

        def callback(_uc, _access, address, size, _value, _ud) -> bool:
            return handler(address, size)

        try:
            from unicorn.unicorn_py3.unicorn import HOOK_MEM_INVALID_CFUNC, uc_hook_h, uclib  # noqa: F401
            self._fptr = HOOK_MEM_INVALID_CFUNC(callback)
            self._uch, self._lib, self._handle_t = uc._uch, uclib, uc_hook_h
        except (ImportError, AttributeError):        # the binding moved: its own path
            self._lib = None
            self._callback = lambda u, a, addr, size, v, d: handler(addr, size)

    def cover(self, gaps: list[tuple[int, int]]) -> None:
        wanted = set(gaps)
        for gap in [g for g in self._hooks if g not in wanted]:
            self._delete(self._hooks.pop(gap))
        for gap in wanted:
            if gap not in self._hooks:
                self._hooks[gap] = self._add(gap[0], gap[1] - 1)

    def _add(self, begin: int, end: int) -> int:
        if self._lib is None:
            return self._uc.hook_add(self._type, self._callback, None, begin, end)
        handle = self._handle_t()
        status = self._lib.uc_hook_add(self._uch, ctypes.byref(handle), self._type, self._fptr, None,
                                       ctypes.c_uint64(begin), ctypes.c_uint64(end))
        if status != 0:
            raise MemoryMapError(f"unicorn refused an unmapped-access hook at 0x{begin:x}: error {status}")
        return handle.value

    def _delete(self, handle: int) -> None:
        if self._lib is None:
            self._uc.hook_del(handle)
        else:
            self._lib.uc_hook_del(self._uch, self._handle_t(handle))

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return sorted(self._hooks)

    def close(self) -> None:
        for handle in self._hooks.values():
            self._delete(handle)
        self._hooks.clear()


def _span_key(span: _Span) -> tuple:
    if span.kind == "mixed":
        return (span.start, span.size, "mixed",
                tuple((p.start, p.end, id(p.region), p.offset) for p in span.pieces))
    return (span.start, span.size, span.kind, id(span.region), span.offset)


def _spans(pieces: list[Piece]) -> list[_Span]:
    """Turn visible pieces into page-granular Unicorn mappings."""
    spans: list[_Span] = []
    mixed: dict[int, list[Piece]] = {}
    for pc in pieces:
        first_full = (pc.start + PAGE_SIZE - 1) & PAGE_MASK
        last_full = pc.end & PAGE_MASK
        if first_full < last_full:
            kind = "ram" if isinstance(pc.region, RamRegion) else "mmio"
            spans.append(_Span(first_full, last_full - first_full, kind, pc.region,
                               pc.offset + first_full - pc.start))
            head = (pc.start, first_full)
            tail = (last_full, pc.end)
        else:
            head = (pc.start, pc.end)
            tail = (0, 0)
        for s, e in (head, tail):
            if s < e:
                mixed.setdefault(s & PAGE_MASK, []).append(
                    Piece(s, e, pc.region, pc.offset + s - pc.start))
    for page, ps in mixed.items():
        spans.append(_Span(page, PAGE_SIZE, "mixed", pieces=tuple(sorted(ps, key=lambda p: p.start))))
    return _merge_ram(spans)


def _merge_ram(spans: list[_Span]) -> list[_Span]:
    """One Unicorn mapping for adjacent RAM spans that continue each other in the same
    host buffer with the same protection (RAM split around the low megabyte's PAM
    segments and the VGA window is mostly contiguous again): ``mem_map_ptr`` costs
    about 20 µs per call, and a machine build would otherwise make twenty of them."""
    out: list[_Span] = []
    for sp in sorted(spans, key=lambda sp: sp.start):
        prev = out[-1] if out else None
        if (prev is not None and sp.kind == "ram" and prev.kind == "ram"
                and prev.start + prev.size == sp.start
                and prev.region.buffer is sp.region.buffer
                and prev.region.readonly == sp.region.readonly
                and prev.region.buffer_offset + prev.offset + prev.size
                == sp.region.buffer_offset + sp.offset):
            out[-1] = _Span(prev.start, prev.size + sp.size, "ram", prev.region, prev.offset)
        else:
            out.append(sp)
    return out


class ReplayGuard:
    """Keeps MMIO side effects exactly-once across Unicorn's instruction restarts.

    Measured on Unicorn 2.1.4 (tests/unit/test_mmio_replay.py): when ``emu_stop`` has been
    requested — from this thread or another — by the time an ``mmio_map`` callback
    returns, Unicorn abandons the instruction that made the access and executes it again
    on the next ``emu_start``: the device would see the read or write twice (a second
    ISR read returns 0, a doorbell rings twice).  Port IN/OUT hooks are not affected.

    So every stop request is noted here (``note_stop``; the machine calls it before each
    ``emu_stop``), and an MMIO access that completes while a stop is pending is
    journaled.  The next MMIO access, the restart of the same instruction, is matched
    against the journal and answered from it (a read returns the value the device gave,
    a write is dropped) instead of reaching the device again.  The machine completes the
    restarted instruction before delivering an interrupt (``pending``), so nothing else
    runs in between.

    Known gap: a stop requested from *another* thread just after a callback returned,
    before Unicorn looked for it, restarts an access the guard never saw
    (tests/unit/test_mmio_replay.py measures both cases).

    The machine arms the guard only while code hooks run (interrupt single-stepping, an
    instruction budget).  Otherwise it turns Unicorn's per-access stop checks off
    (uvirt/cpu/exits.py): stops land at block starts as in QEMU, nothing is restarted,
    the gap is closed and RAM read-modify-writes are not repeated either.
    """

    __slots__ = ("stop_pending", "journal", "absorbed", "armed")

    def __init__(self) -> None:
        self.stop_pending = False
        self.journal: tuple | None = None
        self.absorbed = 0
        #: False while the CPU's translated code has no per-access stop checks
        #: (uvirt/cpu/exits.py): then nothing is restarted and nothing is journaled.
        self.armed = True

    def note_stop(self) -> None:
        if self.armed:
            self.stop_pending = True

    def started(self) -> None:
        """``emu_start`` is about to run: no stop is pending any more."""
        self.stop_pending = False

    @property
    def pending(self) -> bool:
        return self.journal is not None

    def read(self, region: Region, offset: int, size: int) -> int:
        j = self.journal
        if j is not None:
            self.journal = None
            if j[0] == "r" and j[1] is region and j[2] == offset and j[3] == size:
                self.absorbed += 1
                return j[4]
        pending = self.stop_pending
        value = region.read(offset, size)
        if pending or self.stop_pending:
            self.journal = ("r", region, offset, size, value)
        return value

    def write(self, region: Region, offset: int, size: int, value: int) -> None:
        j = self.journal
        if j is not None:
            self.journal = None
            if j[0] == "w" and j[1] is region and j[2] == offset and j[3] == size and j[4] == value:
                self.absorbed += 1
                return
        pending = self.stop_pending
        region.write(offset, size, value)
        if pending or self.stop_pending:
            self.journal = ("w", region, offset, size, value)


def _region_callbacks(region: Region, base_offset: int, guard: ReplayGuard, start: int = 0,
                      tracer=None):
    """``start`` (the span's guest-physical address) and ``tracer`` name MMIO accesses as
    declared trace events; an access the guard answers from its journal (a restart) is
    not traced twice."""
    if tracer is None:
        def read_cb(uc, offset, size, _ud):
            return guard.read(region, base_offset + offset, size)

        def write_cb(uc, offset, size, value, _ud):
            guard.write(region, base_offset + offset, size, value)

        return read_cb, write_cb

    def read_cb(uc, offset, size, _ud):
        if not tracer.enabled:
            return guard.read(region, base_offset + offset, size)
        seen = guard.absorbed
        value = guard.read(region, base_offset + offset, size)
        if guard.absorbed == seen:
            tracer.emit("mmio_read", addr=start + offset, size=size, value=value)
        return value

    def write_cb(uc, offset, size, value, _ud):
        if not tracer.enabled:
            guard.write(region, base_offset + offset, size, value)
            return
        tracer.emit("mmio_write", addr=start + offset, size=size, value=value)
        guard.write(region, base_offset + offset, size, value)

    return read_cb, write_cb


def _mixed_callbacks(pieces: tuple[Piece, ...], page: int, guard: ReplayGuard, tracer=None):
    starts = [p.start - page for p in pieces]

    def find(offset: int) -> Piece | None:
        i = bisect.bisect_right(starts, offset) - 1
        if i >= 0 and offset < pieces[i].end - page:
            return pieces[i]
        return None

    def read_cb(uc, offset, size, _ud):
        pc = find(offset)
        if pc is None:
            return UNASSIGNED_MEM_VALUE
        seen = guard.absorbed
        value = guard.read(pc.region, pc.offset + offset - (pc.start - page), size)
        if tracer is not None and tracer.enabled and guard.absorbed == seen:
            tracer.emit("mmio_read", addr=page + offset, size=size, value=value)
        return value

    def write_cb(uc, offset, size, value, _ud):
        pc = find(offset)
        if pc is not None:
            if tracer is not None and tracer.enabled:
                tracer.emit("mmio_write", addr=page + offset, size=size, value=value)
            guard.write(pc.region, pc.offset + offset - (pc.start - page), size, value)

    return read_cb, write_cb


# --------------------------------------------------------------------------- guest memory


class GuestMemory:
    """Device DMA into the guest-physical address space, with QEMU 7.2's semantics
    (softmmu/physmem.c ``address_space_rw``, ``address_space_map``,
    ``address_space_cache_init``; the ``dma_memory_*`` wrappers devices call).

    ``read``/``write`` (``address_space_read/write``): RAM is copied directly (the fast
    path: one slice, no per-byte Python work); a device's registers are reached through
    its region's ``read``/``write`` in the pieces QEMU's ``memory_access_size`` makes
    (at most the region's largest valid size, 4 if it declares none, bounded by the
    address's alignment unless the region takes unaligned accesses); unassigned memory
    reads 0 and drops writes, and so does every address at or above 4 GiB (nothing is
    mapped there on ``pc`` with uvirt's at most 3.5 GiB of RAM); a write to ROM (a
    read-only RAM region) is dropped.  Nothing raises: a bad guest address is no host
    error.  Host writes drop translated code for the range, so a device writing guest
    code (a loader, a DMA into a code page) is seen by the CPU.

    ``map``/``unmap`` (``address_space_map``): RAM maps directly, as far as the same RAM
    region continues; anything else (MMIO, ROM for a write, unassigned) goes through
    the one bounce buffer, at most one page and at most to the end of that region, read
    at map time and written back at unmap; while it is in use a second non-RAM map fails.
    ``cache_len`` (``address_space_cache_init``): how much of an area a ring cache
    covers — RAM as far as it continues, any other region to its end, and unassigned
    space the whole area (QEMU's unassigned section spans the address space).

    ``work`` is the machine's queue of device work (uvirt/board/dma.py).
    """

    def __init__(self, space: MemoryMap) -> None:
        from uvirt.board.dma import DeviceWork
        self._space = space
        self.bounce: "Mapping | None" = None
        self.work = DeviceWork()

    # -- translation (QEMU flatview_translate): what is at addr, and up to where
    def _piece(self, addr: int) -> Piece | None:
        if addr >= ADDR_SPACE_END:
            return None
        pc = self._space.lookup(addr)
        if pc is None or pc.region is self._space._unassigned:
            return None                 # unclaimed (the CPU's reads-zero pages included)
        return pc

    def _next_start(self, addr: int) -> int:
        """Where the unassigned stretch at ``addr`` ends (the next claimed piece)."""
        if addr >= ADDR_SPACE_END:
            return 1 << 64
        space = self._space
        space.flatten()
        pieces, starts = space._pieces, space._starts
        i = bisect.bisect_right(starts, addr)
        while i < len(pieces):
            pc = pieces[i]
            if pc.region is not space._unassigned:
                return pc.start
            i += 1
        return ADDR_SPACE_END

    def _ram_end(self, pc: Piece) -> int:
        """QEMU ``flatview_extend_translation``: the same RAM region, contiguous, onwards."""
        end = pc.end
        while end < ADDR_SPACE_END:
            nxt = self._space.lookup(end)
            if (nxt is None or nxt.region is not pc.region
                    or nxt.offset != pc.offset + (end - pc.start)):
                break
            end = nxt.end
        return end

    @staticmethod
    def _mmio_size(region: "MmioRegion", offset: int, n: int) -> int:
        """QEMU ``memory_access_size``: one MMIO access of at most ``n`` bytes."""
        limit = max(region.valid_sizes) if region.valid_sizes else 4
        if not region.unaligned:
            align = offset & -offset
            if align and align < limit:
                limit = align
        n = min(n, limit)
        return 1 << (n.bit_length() - 1)

    # -- address_space_read / address_space_write
    def read(self, addr: int, size: int) -> bytes:
        pc = self._space.ram_piece(addr)
        if pc is not None and 0 <= size and addr + size <= pc.end:
            o = pc.region.buffer_offset + pc.offset + addr - pc.start
            return bytes(pc.region.buffer.view[o:o + size])
        return self._read_slow(addr, size)

    def _read_slow(self, addr: int, size: int) -> bytes:
        if size < 0:
            raise GuestMemoryError(addr, size, "negative size")
        out = bytearray(size)
        pos = 0
        addr &= _ADDR_MAX
        while pos < size:
            pc = self._piece(addr)
            if pc is None:                                  # unassigned: zeros
                n = min(size - pos, self._next_start(addr) - addr)
            else:
                region, off = pc.region, pc.offset + addr - pc.start
                n = min(size - pos, pc.end - addr)
                if isinstance(region, RamRegion):
                    o = region.buffer_offset + off
                    out[pos:pos + n] = region.buffer.view[o:o + n]
                elif isinstance(region, MmioRegion):
                    n = self._mmio_size(region, off, n)
                    out[pos:pos + n] = (region.read(off, n) & _SIZE_MASK[n]).to_bytes(n, "little")
                else:
                    out[pos:pos + n] = region.read(off, n).to_bytes(n, "little") if n in _SIZE_MASK else bytes(n)
            pos += n
            addr = (addr + n) & _ADDR_MAX
        return bytes(out)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        pc = self._space.ram_piece(addr)
        if pc is not None and addr + size <= pc.end and not pc.region.readonly:
            o = pc.region.buffer_offset + pc.offset + addr - pc.start
            pc.region.buffer.view[o:o + size] = data
            self._space.invalidate_code(addr, size)
            return
        self._write_slow(addr, memoryview(data).cast("B") if not isinstance(data, bytes) else data)

    def _write_slow(self, addr: int, data) -> None:
        size = len(data)
        pos = 0
        addr &= _ADDR_MAX
        while pos < size:
            pc = self._piece(addr)
            if pc is None:                                  # unassigned: dropped
                n = min(size - pos, self._next_start(addr) - addr)
            else:
                region, off = pc.region, pc.offset + addr - pc.start
                n = min(size - pos, pc.end - addr)
                if isinstance(region, RamRegion):
                    if not region.readonly:                 # ROM: dropped
                        o = region.buffer_offset + off
                        region.buffer.view[o:o + n] = data[pos:pos + n]
                        self._space.invalidate_code(addr, n)
                elif isinstance(region, MmioRegion):
                    n = self._mmio_size(region, off, n)
                    region.write(off, n, int.from_bytes(data[pos:pos + n], "little"))
                elif n in _SIZE_MASK:
                    region.write(off, n, int.from_bytes(data[pos:pos + n], "little"))
            pos += n
            addr = (addr + n) & _ADDR_MAX

    # -- address_space_map / unmap
    def map(self, addr: int, length: int, is_write: bool) -> "Mapping | None":
        """Map up to ``length`` bytes at ``addr``; None when nothing can be mapped (the
        bounce buffer is in use).  The mapping may be shorter than asked."""
        if length <= 0:
            return None
        pc = self._space.ram_piece(addr)            # the common case: all in one RAM piece
        if (pc is not None and addr + length <= pc.end
                and not (is_write and pc.region.readonly)):
            return Mapping(addr, length)
        addr &= _ADDR_MAX
        pc = self._piece(addr)
        if (pc is not None and isinstance(pc.region, RamRegion)
                and not (is_write and pc.region.readonly)):
            return Mapping(addr, min(length, self._ram_end(pc) - addr))
        if self.bounce is not None:
            return None
        end = self._next_start(addr) if pc is None else pc.end
        n = min(length, end - addr, PAGE_SIZE)
        m = Mapping(addr, n, bytearray(n), is_write)
        self.bounce = m
        if not is_write:
            m.buffer[:] = self.read(addr, n)
        return m

    def unmap(self, m: "Mapping", access_len: int) -> None:
        """QEMU ``address_space_unmap``: a bounce written by the device goes to memory
        (``access_len`` bytes of it) and the bounce is free again."""
        if m.buffer is None or m is not self.bounce:
            return
        self.bounce = None
        if m.is_write and access_len > 0:
            self.write(m.addr, bytes(m.buffer[:access_len]))

    def cache_len(self, addr: int, length: int, is_write: bool) -> int:
        """QEMU ``address_space_cache_init``: the bytes of [addr, addr+length) one ring
        cache covers (less than ``length``: "Cannot map ...")."""
        addr &= _ADDR_MAX
        pc = self._piece(addr)
        if pc is None:
            return length
        if isinstance(pc.region, RamRegion) and not (is_write and pc.region.readonly):
            return min(length, self._ram_end(pc) - addr)
        return min(length, pc.end - addr)

    # -- sized accessors
    def read_u8(self, addr: int) -> int:
        return self.read(addr, 1)[0]

    def read_u16(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 2), "little")

    def read_u32(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 4), "little")

    def read_u64(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 8), "little")

    def write_u8(self, addr: int, value: int) -> None:
        self.write(addr, (value & 0xFF).to_bytes(1, "little"))

    def write_u16(self, addr: int, value: int) -> None:
        self.write(addr, (value & 0xFFFF).to_bytes(2, "little"))

    def write_u32(self, addr: int, value: int) -> None:
        self.write(addr, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    def write_u64(self, addr: int, value: int) -> None:
        self.write(addr, (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))

    def ram_window(self, addr: int, size: int) -> "RamWindow | None":
        """[addr, addr+size) as one writable RAM piece's bytes, or None: what ``read``
        and ``write`` would touch there, valid while ``RamWindow.valid()`` (the ring areas
        of a virtqueue, read and written on every request)."""
        if size <= 0:
            return None
        self._space.flatten()
        pc = self._space.ram_piece(addr)
        if pc is None or addr + size > pc.end or pc.region.readonly:
            return None
        space = self._space
        return RamWindow(pc.region.buffer.view, pc.start, pc.end,
                         pc.start - pc.region.buffer_offset - pc.offset, space, space.generation)

    def is_ram(self, addr: int, size: int) -> bool:
        """All of [addr, addr+size) is RAM (loaders; devices use ``map``)."""
        if size < 0 or addr < 0 or addr + size > ADDR_SPACE_END:
            return False
        while size > 0:
            pc = self._space.ram_piece(addr)
            if pc is None:
                return False
            n = min(size, pc.end - addr)
            addr += n
            size -= n
        return True


_ADDR_MAX = (1 << 64) - 1


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

    @property
    def bounced(self) -> bool:
        return self.buffer is not None

    def __repr__(self) -> str:
        kind = "bounce" if self.buffer is not None else "ram"
        return f"Mapping(0x{self.addr:x}, 0x{self.length:x}, {kind})"
