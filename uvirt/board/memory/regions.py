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
    ``MemoryMap.commit()`` flattens the placements into visible pieces and hands them,
    with the ranges that changed since the last commit, to its backend, the one place
    that maps and unmaps.  Flattening is incremental: a placement change marks its old
    and new extent, and only those ranges are recomputed and spliced into the previous
    view (``AddressSpace.flatten``).  Without a backend a commit leaves the flatten to
    whoever looks next (a lookup, the CPU's first publish).  With a CPU attached the
    backend is ``uvirt.cpu.uc_memory.UnicornMemory``, the *only* caller of ``mem_map_ptr``,
    ``mmio_map`` and ``mem_unmap`` in uvirt.  This module never imports Unicorn: the
    region tree, flatten, the port space and ``SystemMemory`` (device DMA, the
    ``GuestMemory`` protocol of uvirt/board/memory/guest.py) work without a CPU.

Access contract (QEMU ``memory_region_dispatch_read/write``, ``access_with_adjusted_size``)
    ``valid_sizes`` / ``unaligned`` say what the modelled device accepts: any other
    access reads 0 and drops the write (a recorded guest error).  ``impl_min``/``impl_max``
    say what the device code handles: larger accesses are split into little-endian
    pieces, smaller ones widened to ``impl_min`` at the same offset and masked, exactly as
    QEMU does, so devices never check sizes themselves.

Unassigned space (docs/qemu-7.2-observed.md): memory reads 0 and ignores writes; ports read
all ones and ignore writes.  A CPU data access where nothing is mapped makes the machine
place the reads-zero region there (``MemoryMap.map_unassigned_page``) and retry.
"""

from __future__ import annotations

import bisect
import ctypes
import operator
import mmap
import os
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple, Protocol

from uvirt.board.dma import DeviceWork
from uvirt.board.memory.guest import Mapping, RamWindow
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

#: (valid sizes, impl_min, impl_max) -> (valid sizes, sizes dispatched directly): shared
#: by every region declaring the same access rule
_ACCESS_RULES: dict[tuple, tuple[frozenset, frozenset]] = {}


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
        self.unaligned = unaligned
        self.impl_min = impl_min
        self.impl_max = impl_max
        rule = (valid_sizes if isinstance(valid_sizes, tuple) else tuple(valid_sizes), impl_min, impl_max)
        sizes = _ACCESS_RULES.get(rule)
        if sizes is None:        # a board declares a handful of rules, each many times
            valid = frozenset(rule[0])
            # The common case needs no adjustment: dispatch straight to the device.
            sizes = _ACCESS_RULES[rule] = (valid, frozenset(s for s in valid if impl_min <= s <= impl_max))
        self.valid_sizes, self._direct = sizes
        self.on_guest_error: GuestErrorHook | None = None
        #: The owning device's re-entrancy guard (uvirt/board/dma.py), shared by its regions.
        self.guard = None
        # ``read``/``write`` (the closures of ``_fast_paths``) are made on first use, in
        # ``__getattr__``: a board declares some thirty register windows, most of which a
        # guest never touches, and each pair is a dozen objects for the cyclic collector
        # to trace and free (a third of a boot's garbage).  The port hooks reach an
        # unguarded device without them (``IoSpace._entry``).

    def __getattr__(self, name: str):
        # Only reached when normal lookup fails: once made, the closures are instance
        # attributes and cost nothing more.
        if name == "read" or name == "write":
            self.read, self.write = self._fast_paths()
            return getattr(self, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def set_guard(self, guard) -> None:
        """Every access engages ``guard`` (QEMU ``access_with_adjusted_size`` with the
        device's ``mem_reentrancy_guard``): one made while the device is inside another
        access of its own is dropped and reads 0."""
        self.guard = guard
        read, write = self._fast_paths()
        name, work = self.name, guard.work
        queue = work.queue

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
                if not work.depth and queue and not work.running:
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
                if not work.depth and queue and not work.running:
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
            space._mark_all()
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


def _groups(hits: list, lo: int, hi: int) -> list[list] | None:
    """``hits`` clipped to [lo, hi) as (start, end, placement), by address, in groups
    that overlap nothing outside the group (sorted, disjoint); None if one is a
    container (whose children may leave holes: the general path then)."""
    spans = []
    for p in hits:
        if isinstance(p.region, Container):
            return None
        spans.append((max(lo, p.addr), min(hi, p.addr + p.region.size), p))
    spans.sort(key=_span_start)
    groups: list[list] = []
    end = lo
    for span in spans:
        if span[0] < end:
            groups[-1].append(span)
            end = max(end, span[1])
        else:
            groups.append([span])
            end = span[1]
    return groups


def _disjoint_leaves(p: "Placement", lo: int, hi: int) -> list | None:
    """``p``'s leaves in [lo, hi) (``_leaves``), by address, if none overlaps another;
    None otherwise (then priorities decide: ``_resolve``)."""
    leaves: list = []
    _leaves(p.region, p.addr, lo, hi, (p.priority, p.seq), leaves)
    if len(leaves) > 1:
        leaves.sort(key=_leaf_start)
        for a, b in zip(leaves, leaves[1:]):
            if a[3] > b[2]:
                return None
    return leaves


_leaf_start = operator.itemgetter(2)


def _resolve(hits: list, lo: int, hi: int, pieces: list) -> list[tuple[int, int]]:
    """Append to ``pieces`` what ``hits`` show in [lo, hi), the highest (priority, seq)
    winning every overlap, containers expanded; returns what they cover (sorted,
    disjoint)."""
    leaves: list = []
    for p in hits:
        _leaves(p.region, p.addr, lo, hi, (p.priority, p.seq), leaves)
    return _winners(leaves, pieces)


def _winners(leaves: list, pieces: list) -> list[tuple[int, int]]:
    """Append to ``pieces`` what ``leaves`` (``_leaves``'s tuples) show, the highest key
    winning every overlap; returns what they cover (sorted, disjoint)."""
    leaves.sort(key=_leaf_key, reverse=True)
    covered: list[tuple[int, int]] = []
    for _key, region, start, end, offset in leaves:
        free = subtract_ranges(start, end, covered)
        if free:                     # (none: hidden whole, and covered already holds it)
            for s, e in free:
                pieces.append(_new(Piece, (s, e, region, offset + s - start)))
            covered = _union(covered, start, end)
    return covered


_leaf_key = operator.itemgetter(0)


_span_start = operator.itemgetter(0)


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


@dataclass(eq=False, slots=True)
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


#: ``_new(Piece, (start, end, region, offset))``: a named tuple without its generated
#: ``__new__`` (a Python frame and an argument tuple: half the cost of making one, and a
#: BAR move makes several)
_new = tuple.__new__


#: Placements at least this large are kept apart from the address index (see
#: ``AddressSpace._by_addr``); on a pc board those are the RAM and little else.
_WIDE = 1 << 24


class AddressSpace:
    """Placements, priorities and the flattened view; knows nothing of Unicorn."""

    #: placements at least this large are kept apart from the address index (see
    #: ``_by_addr``)
    _wide_at = _WIDE

    def __init__(self, name: str, size: int, background: Region | None = None) -> None:
        self.name = name
        self.size = size
        self._placements: list[Placement] = []
        #: The placements by address, for ``_reaching``'s "what reaches into [lo, hi)":
        #: those smaller than ``_wide_at`` as sorted (addr, id, placement) entries, so
        #: only the ones starting in [lo - _wide_at, hi) need a look; the few wide ones
        #: (RAM, windows) in a list of their own.  A BAR move then looks at a handful of
        #: placements, not at the board's fifty.
        self._by_addr: list[tuple[int, int, Placement]] = []
        self._wide: list[Placement] = []
        self._seq = 0
        self._background = background
        self._pieces: list[Piece] = []
        self._starts: list[int] | None = []      # the pieces' starts, made when looked up
        self._dirty = True
        #: What changed since the last flatten: [start, end) ranges whose pieces must be
        #: recomputed, or None for everything (the first flatten, a container's children).
        self._changed: list[tuple[int, int]] | None = None
        #: What the flattens since the last ``take_changes()`` recomputed (None: all).
        self._delta: list[tuple[int, int]] | None = None
        #: Bumped whenever the flattened view is rebuilt: with ``_dirty`` false and the
        #: same generation, every address still shows what it showed (``RamWindow``).
        self.generation = 0
        #: Where regions placed here report guest errors (the machine's recorder).
        self.on_guest_error: GuestErrorHook | None = None
        # One callable for every region placed here, holding the space weakly: a region
        # must not keep its space alive (no cycle: a closed machine is freed by
        # reference counts, tests/guest/test_machine_gc.py).  Guest errors are rare.
        ref = weakref.ref(self)

        def forward(kind: str, detail: str) -> None:
            space = ref()
            if space is not None:
                space._forward_guest_error(kind, detail)
        self._forward = forward
        self._defer = 0
        self._pending = False

    def commit(self) -> None:
        """Publish the placements (subclasses say to whom)."""

    def _deferred(self) -> bool:
        if self._defer:
            self._pending = True
            return True
        return False

    def batch(self) -> "_Batch":
        """Group many placement changes into one commit (machine build, firmware step)."""
        return _Batch(self)

    def _forward_guest_error(self, kind: str, detail: str) -> None:
        if self.on_guest_error is not None:
            self.on_guest_error(kind, detail)

    # -- placement
    def add(self, region: Region, addr: int, priority: int = 0, *, enabled: bool = True) -> Placement:
        # (a board's build adds some fifty: _adopt and _mark inline for plain regions)
        self._seq += 1
        if isinstance(region, MmioRegion):
            if region.on_guest_error is None:
                region.on_guest_error = self._forward
        elif isinstance(region, Container):
            self._adopt(region)
        p = Placement(self, region, addr, priority, enabled, self._seq)
        self._placements.append(p)
        size = region.size
        if size >= self._wide_at:
            self._wide.append(p)
        else:
            bisect.insort(self._by_addr, (addr, id(p), p))
        self._dirty = True
        changed = self._changed
        if enabled and changed is not None:
            start, end = addr if addr > 0 else 0, addr + size
            if end > self.size:
                end = self.size
            if start < end:
                changed.append((start, end))
        return p

    def _adopt(self, region: Region) -> None:
        if isinstance(region, MmioRegion) and region.on_guest_error is None:
            region.on_guest_error = self._forward
        if isinstance(region, Container):
            if self not in region._spaces:
                region._spaces.append(self)
            for _, child, _, _ in region.children:
                self._adopt(child)

    def move(self, p: Placement, addr: int) -> None:
        old = p.addr
        if old != addr:
            size = p.region.size
            changed, end = self._changed, self.size
            if p.enabled and changed is not None:     # _mark both extents, inline,
                if old < end and old + size > 0:      # clipped to the space, as _mark
                    changed.append((old if old > 0 else 0, old + size if old + size < end else end))
                if addr < end and addr + size > 0:
                    changed.append((addr if addr > 0 else 0, addr + size if addr + size < end else end))
            if size < self._wide_at:
                entries = self._by_addr           # _unindex, inline (every BAR move)
                key = id(p)
                del entries[bisect.bisect_left(entries, (old, key))]
                bisect.insort(entries, (addr, key, p))
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
            self._mark(p.addr, p.addr + p.region.size)

    def remove(self, p: Placement) -> None:
        self._placements.remove(p)
        if p.region.size >= self._wide_at:
            self._wide.remove(p)
        else:
            self._unindex(p)
        self._dirty = True
        if p.enabled:
            self._mark(p.addr, p.addr + p.region.size)

    def _unindex(self, p: Placement) -> None:
        """Drop ``p``'s entry from ``_by_addr`` (at its current address)."""
        entries = self._by_addr
        i = bisect.bisect_left(entries, (p.addr, id(p)))
        assert entries[i][2] is p
        del entries[i]

    def _mark(self, start: int, end: int) -> None:
        """[start, end) may show something else now (flatten recomputes only there)."""
        changed = self._changed
        if changed is not None:
            start, end = max(start, 0), min(end, self.size)
            if start < end:
                changed.append((start, end))

    def _mark_all(self) -> None:
        self._dirty = True
        self._changed = None

    def take_changes(self) -> list[tuple[int, int]] | None:
        """The ranges the view changed in since the last call (sorted, disjoint), or None
        when it was rebuilt whole: what a backend must look at again."""
        if self._dirty and self._changed is None:
            # the view is to be rebuilt whole: that is the answer already, and the
            # rebuild waits for whoever looks (its flatten reports None again)
            self._delta = []
            return None
        self.flatten()
        delta, self._delta = self._delta, []
        return delta

    @property
    def placements(self) -> tuple[Placement, ...]:
        return tuple(self._placements)

    # -- flattening
    def flatten(self) -> list[Piece]:
        """Visible pieces, sorted by address; the winner of every overlap only.

        Incremental: a placement change marks the ranges it can affect (its old and new
        extent), and only those are recomputed and spliced into the previous view; the
        result equals a rebuild from scratch (``_canonical`` merges a piece cut at a
        range boundary back together), which tests/unit/test_flatten_incremental.py
        checks against random placement changes."""
        if not self._dirty:
            return self._pieces
        changed = self._changed
        if changed is None:
            pieces = _canonical(self._rebuild(((0, self.size),)))
            self._delta = None
        else:
            ranges = merge_ranges(changed)
            # many ranges (a batch of adds): one pass over their hull, not a look for
            # the placements reaching into each (each look scans back _wide_at)
            span = ranges if len(ranges) <= 4 else [(ranges[0][0], ranges[-1][1])]
            pieces = _splice(self._pieces, span, self._rebuild(span))
            delta = self._delta
            if delta is not None:
                self._delta = merge_ranges(delta + ranges) if delta else ranges
        self._pieces = pieces
        self._starts = None              # made by the next lookup: a BAR move needs none
        self._changed = []
        self._dirty = False
        self.generation += 1
        return pieces

    def _rebuild(self, ranges) -> list[Piece]:
        """The visible pieces inside ``ranges`` (sorted, disjoint), computed from every
        placement that reaches into them."""
        pieces: list[Piece] = []
        background = self._background
        for lo, hi in ranges:
            hits = self._reaching(lo, hi)
            if len(hits) == 1 and not isinstance(hits[0].region, Container):
                p = hits[0]                  # the common case (a BAR moved): one region
                s, e = max(lo, p.addr), min(hi, p.addr + p.region.size)
                pieces.append(_new(Piece, (s, e, p.region, s - p.addr)))
                covered = [(s, e)]
            elif len(hits) == 1 and (leaves := _disjoint_leaves(hits[0], lo, hi)) is not None:
                # a container alone there (a BAR of shared-memory regions moved) whose
                # children overlap nowhere: each child is seen whole (clipped)
                covered = []
                for _key, region, s, e, offset in leaves:
                    pieces.append(_new(Piece, (s, e, region, offset)))
                    covered.append((s, e))
            elif (groups := _groups(hits, lo, hi)) is not None:
                # the usual case (the port space, a build's batch): few overlaps, no
                # containers; a placement overlapping no other is seen whole (clipped),
                # only overlapping ones are resolved by priority
                covered = []
                for group in groups:
                    if len(group) == 1:
                        s, e, p = group[0]
                        pieces.append(_new(Piece, (s, e, p.region, s - p.addr)))
                        covered.append((s, e))
                    else:            # (no containers here: each placement one leaf)
                        covered += _winners([((p.priority, p.seq), p.region, s, e, s - p.addr)
                                             for s, e, p in group], pieces)
            else:
                covered = _resolve(hits, lo, hi, pieces)
            if background is not None:
                for s, e in subtract_ranges(lo, hi, covered):
                    pieces.append(Piece(s, e, background, s))
        if len(pieces) > 1:
            pieces.sort(key=_piece_start)
        return pieces

    def _reaching(self, lo: int, hi: int) -> list[Placement]:
        """The enabled placements reaching into [lo, hi): narrow ones start after
        lo - _wide_at."""
        entries = self._by_addr
        i = bisect.bisect_left(entries, (lo - self._wide_at + 1,))
        hits = []
        for a, _, p in entries[i:bisect.bisect_left(entries, (hi,), i)]:
            if p.enabled and a + p.region.size > lo:
                hits.append(p)
        for p in self._wide:
            if p.addr < hi and p.enabled and p.addr + p.region.size > lo:
                hits.append(p)
        return hits

    def lookup(self, addr: int) -> Piece | None:
        self.flatten()
        starts = self._starts
        if starts is None:
            starts = self._piece_starts()
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0:
            pc = self._pieces[i]
            if addr < pc.end:
                return pc
        return None

    def _piece_starts(self) -> list[int]:
        """The flattened view's piece starts, for bisection."""
        self.flatten()
        starts = self._starts
        if starts is None:
            starts = self._starts = [pc.start for pc in self._pieces]
        return starts

    # -- the CPU-less access path (qtest, unit tests): the first byte decides the region,
    # as for TCG's io_readx and the x86 port helpers.
    def read(self, addr: int, size: int) -> int:
        pc = self.lookup(addr)
        if pc is None:
            return UNASSIGNED_MEM_VALUE
        return pc.region.read(pc.offset + addr - pc.start, size)

    def write(self, addr: int, size: int, value: int) -> None:
        pc = self.lookup(addr)
        if pc is not None:
            pc.region.write(pc.offset + addr - pc.start, size, value)


class _Batch:
    """``AddressSpace.batch()``: the outermost exit commits once, whatever ends the
    block.  (A class, not a ``contextmanager`` generator: a machine's build and firmware
    step open some twenty of these.)"""

    __slots__ = ("space",)

    def __init__(self, space: AddressSpace) -> None:
        self.space = space

    def __enter__(self) -> AddressSpace:
        self.space._defer += 1
        return self.space

    def __exit__(self, *exc) -> None:
        space = self.space
        space._defer -= 1
        if not space._defer and space._pending:
            space._pending = False
            space.commit()


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint [start, end) ranges covering ``ranges`` (touching ones joined)."""
    if len(ranges) == 2:                 # a move: its old and new extent
        (a, b), (c, d) = ranges
        if (c, d) < (a, b):
            a, b, c, d = c, d, a, b
        return [(a, b), (c, d)] if b < c else [(a, max(b, d))]
    out: list[tuple[int, int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def _canonical(pieces: list[Piece]) -> list[Piece]:
    """Adjacent pieces that continue each other (same region, offsets contiguous) as one:
    the form a rebuild and a splice both end in."""
    out: list[Piece] = []
    for pc in pieces:
        if out:
            prev = out[-1]
            if (prev.end == pc.start and prev.region is pc.region
                    and prev.offset + (prev.end - prev.start) == pc.offset):
                out[-1] = Piece(prev.start, pc.end, pc.region, prev.offset)
                continue
        out.append(pc)
    return out


def _splice(old: list[Piece], ranges: list[tuple[int, int]], new: list[Piece]) -> list[Piece]:
    """``old`` (sorted, disjoint, canonical) outside ``ranges`` (sorted, disjoint),
    ``new`` (sorted) inside them; canonical again: only the seams, where a stretch of
    ``old``, a cut piece or a new piece meets what came before, can join.  They are
    joined at the end, last first, so a run of joins collapses into one."""
    out: list[Piece] = []
    seams: list[int] = []
    old = list(old)                  # the piece cut at a range's end may reach the next
    i, n, k, m = 0, len(old), 0, len(new)
    for lo, hi in ranges:
        # the first piece ending after lo: the last starting before lo if it reaches past
        # lo, else the next ((lo,) sorts after every piece starting before lo and before
        # the one starting at lo: a bisection by start without a key call per probe; the
        # pieces are disjoint and sorted, so their ends are too)
        j = bisect.bisect_left(old, (lo,), i, n)
        if j > i and old[j - 1][1] > lo:
            j -= 1
        if j > i:
            seams.append(len(out))
            out += old[i:j]
        if j < n and old[j].start < lo:                            # cut at lo
            pc = old[j]
            seams.append(len(out))
            out.append(_new(Piece, (pc.start, lo, pc.region, pc.offset)))
        while k < m and new[k].start < hi:
            seams.append(len(out))
            out.append(new[k])
            k += 1
        i = bisect.bisect_left(old, (hi,), j, n)                   # first piece ending after hi
        if i > j and old[i - 1][1] > hi:
            i -= 1
        if i < n and old[i].start < hi:                            # cut at hi: the rest
            pc = old[i]
            old[i] = _new(Piece, (hi, pc.end, pc.region, pc.offset + hi - pc.start))
    if i < n:
        seams.append(len(out))
        out += old[i:]
    for x in reversed(seams):
        if x:
            a_start, a_end, a_region, a_offset = out[x - 1]   # unpacked: a named tuple's
            b_start, b_end, b_region, b_offset = out[x]       # fields are properties
            if a_end == b_start and a_region is b_region and a_offset + (a_end - a_start) == b_offset:
                out[x - 1] = _new(Piece, (a_start, b_end, a_region, a_offset))
                del out[x]
    return out


_paint_order = operator.attrgetter("priority", "seq")
_piece_start = operator.itemgetter(0)        # Piece.start: a key at C speed


def subtract_ranges(start: int, end: int, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [start, end) outside ``covered`` (sorted, disjoint): only the
    intervals that can overlap are looked at (bisection)."""
    out = []
    cur = start
    i = bisect.bisect_right(covered, (start, ADDR_SPACE_END << 1)) - 1   # last starting <= start
    if i < 0:
        i = 0
    for s, e in covered[i:]:
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
    """``covered`` (sorted, disjoint) with [start, end) added, joined with the intervals
    it overlaps or touches; a new list, the intervals before and after copied as they are."""
    if start >= end:
        return covered
    i = bisect.bisect_left(covered, (start,))          # first starting at or after start
    if i and covered[i - 1][1] >= start:
        i -= 1                                          # the one before reaches start
    j = i
    n = len(covered)
    while j < n and covered[j][0] <= end:
        j += 1
    if i < j:
        start, end = min(start, covered[i][0]), max(end, covered[j - 1][1])
    return covered[:i] + [(start, end)] + covered[j:]


# --------------------------------------------------------------------------- I/O space


class PortEntry(NamedTuple):
    region: Region
    base: int
    dev_read: Callable[[int, int], int]
    dev_write: Callable[[int, int, int], None]
    direct: frozenset
    align_mask: int


_new_tuple = tuple.__new__
_ANY_PORT_SIZE = frozenset((1, 2, 4))


class IoSpace(AddressSpace):
    """The 64 KiB x86 port space, dispatched from the IN/OUT hooks.

    ``commit()`` builds a table of the claimed ports, so a port access costs one dict
    lookup (``table.get(port, unassigned)``); the region containing the first port takes
    the whole access (QEMU's ``address_space_ldl`` in the x86 ``helper_in*``/``helper_out*``).
    """

    #: no address index here: the port space's few dozen placements are looked through
    #: in a line (``_reaching``), as keeping them sorted costs a board's build more
    #: (some thirty insertions) than it saves the firmware step's few look-ups
    _wide_at = 0

    def __init__(self) -> None:
        # QEMU's unassigned_io_ops declare no access rules: any size, but unaligned
        # accesses fail memory_region_access_valid and read 0.
        self.unassigned = MmioRegion("unassigned-io", 0x10000, _ConstantDevice(UNASSIGNED_IO_VALUE),
                                     valid_sizes=(1, 2, 4))
        super().__init__("io", 0x10000)
        self.unassigned_entry = self._entry(self.unassigned, 0)
        self.table: dict[int, PortEntry] = {}
        self._entries: dict[tuple, PortEntry] = {}
        #: the table ``_paint`` built, while the flattened view (``_pieces``) still has
        #: to be read off it (``flatten``): None once it has been
        self._painted: dict[int, PortEntry] | None = None
        self.commit()

    def commit(self) -> None:
        """Bring the port table up to date: repaint the ports of the ranges the
        placements changed in (``_repaint``), or the whole table (``_paint``) the first
        time, after a stop, or when a placed region now dispatches elsewhere."""
        if self._deferred():
            return
        if (self.table and len(self._entries) <= 2 * len(self._placements) + 8
                and self._dispatch_unchanged()):
            ranges = self._unpainted()
            if ranges == []:
                return      # every run starts here: nothing moved, nothing swapped
            if ranges is not None and self._repaint(ranges):
                return
        if self._paint():
            return
        # a container among the placements: its children may leave holes, so the
        # table from the flattened view (no port space of pc has one)
        self._mark_all()
        table: dict[int, PortEntry] = {}
        entries: dict[tuple, PortEntry] = {}
        for pc in self.flatten():
            region = pc.region
            key = self._key(region, pc.start - pc.offset)
            entry = entries.get(key) or self._entries.get(key)
            if entry is None:
                entry = self._entry(region, key[1])
            entries[key] = entry
            for port in range(pc.start, pc.end):
                table[port] = entry
        self.table, self._entries, self._delta = table, entries, []

    @staticmethod
    def _key(region: Region, base: int) -> tuple:
        """What a table entry depends on: its region, its base and what the region
        dispatches to now (a device or its accessors can be swapped: a guard, a tracing
        proxy).  An unguarded MmioRegion's entry holds its device's accessors, not the
        region's (whose closures are made on first use, which reading them here would
        do)."""
        if isinstance(region, MmioRegion) and region.guard is None:
            return (region, base, region.device, None, None)
        return (region, base, getattr(region, "device", None),
                getattr(region, "read", None), getattr(region, "write", None))

    def _unpainted(self) -> list[tuple[int, int]] | None:
        """The ranges (sorted, disjoint) where the placements may show something else
        than the table since it was last painted; None: anywhere.  A flatten since then
        (a lookup) moved its ranges from ``_changed`` to ``_delta``."""
        delta = self._delta
        if delta is None:
            return None
        changed = self._changed if self._dirty else []
        if changed is None:
            return None
        return merge_ranges(delta + changed) if delta else merge_ranges(changed)

    def _repaint(self, ranges: list[tuple[int, int]]) -> bool:
        """Paint the ports of ``ranges`` again from the enabled placements reaching into
        them, lowest (priority, seq) first, as ``_paint`` does for the whole table: a
        firmware step or a BAR move touches a few ports of the board's hundred and
        fifty.  False (nothing done) when a container is among them, or when the ranges
        are wider than the table (then a whole paint is no dearer)."""
        table = self.table
        width = 0
        for lo, hi in ranges:
            width += hi - lo
        if width > len(table):
            return False
        # one pass over the placements (the port space keeps no index): [a, e) reaches
        # into a range if the last range starting before e ends after a (the ranges
        # are sorted and disjoint)
        los = [lo for lo, _ in ranges]
        hits = []
        for p in self._placements:
            if p.enabled:
                a = p.addr
                i = bisect.bisect_left(los, a + p.region.size) - 1
                if i >= 0 and ranges[i][1] > a:
                    if isinstance(p.region, Container):
                        return False
                    hits.append(p)
        hits.sort(key=_paint_order)
        pop = table.pop
        for lo, hi in ranges:
            for port in range(lo, hi):
                pop(port, None)
        entries = self._entries
        for p in hits:
            region, base = p.region, p.addr
            key = self._key(region, base)
            entry = entries.get(key)
            if entry is None:
                entry = entries[key] = self._entry(region, base)
            stop = base + region.size
            for lo, hi in ranges:
                if lo < stop and base < hi:
                    for port in range(base if base > lo else lo, stop if stop < hi else hi):
                        table[port] = entry
        self._painted = table
        self._changed, self._dirty, self._delta = [], False, []
        self._starts = None
        self.generation += 1
        return True

    def _paint(self) -> bool:
        """A new table from the enabled placements, painted lowest (priority, seq) first
        so that every port ends up with the winner of its overlaps, as ``flatten``
        resolves them; the flattened view is read off this table when next asked for
        (``flatten``).  False (nothing done) when a placement is a container, whose
        children may leave holes: the flatten path then."""
        placements = [p for p in self._placements if p.enabled]
        placements.sort(key=_paint_order)
        table: dict[int, PortEntry] = {}
        old, entries, end = self._entries, {}, self.size
        for p in placements:
            region, base = p.region, p.addr
            if isinstance(region, MmioRegion) and region.guard is None:
                # ``_key`` and ``_entry`` inline: a board's build paints some thirty
                device = region.device
                key = (region, base, device, None, None)
                entry = entries.get(key) or old.get(key)
                if entry is None:
                    entry = _new_tuple(PortEntry, (region, base, device.read, device.write,
                                                   region._direct, 0 if region.unaligned else -1))
            elif isinstance(region, Container):
                return False
            else:
                key = self._key(region, base)
                entry = entries.get(key) or old.get(key) or self._entry(region, base)
            entries[key] = entry
            stop = base + region.size
            for port in range(base if base > 0 else 0, stop if stop < end else end):
                table[port] = entry
        self.table = self._painted = table
        self._entries = entries
        # the view is this table's now: nothing left for flatten or take_changes
        self._changed, self._dirty, self._delta = [], False, []
        self._starts = None
        self.generation += 1
        return True

    def flatten(self) -> list[Piece]:
        painted = self._painted
        if painted is not None:
            # the pieces of the last painted table: runs of ports with one entry (one
            # region at one base), so already in ``_canonical`` form
            self._painted = None
            runs: list[list] = []
            for port in sorted(painted):
                e = painted[port]
                if runs and runs[-1][1] == port and runs[-1][2] is e:
                    runs[-1][1] = port + 1
                else:
                    runs.append([port, port + 1, e])
            self._pieces = [Piece(s, t, e.region, s - e.base) for s, t, e in runs]
            self._starts = None
        return super().flatten()

    def _dispatch_unchanged(self) -> bool:
        """Every placed region still dispatches where its table entry does (the key
        ``commit`` made it under): no guard set, no device or accessor swapped since."""
        for region, _base, device, read, write in self._entries:
            if read is None:
                if (not isinstance(region, MmioRegion) or region.guard is not None
                        or region.device is not device):
                    return False
            elif (getattr(region, "device", None) is not device
                    or getattr(region, "read", None) is not read
                    or getattr(region, "write", None) is not write):
                return False
        return True

    @staticmethod
    def _entry(region: Region, base: int) -> "PortEntry":
        """What the IN/OUT hooks need to reach a device without an extra Python frame:
        the device's own read/write for accesses of a size in ``direct``, aligned
        unless ``align_mask`` is 0; the region's general path for everything else."""
        # tuple.__new__ straight: the named tuple's own __new__ is one more Python frame
        if isinstance(region, MmioRegion) and region.guard is None:
            device = region.device
            return _new_tuple(PortEntry, (region, base, device.read, device.write, region._direct,
                                          0 if region.unaligned else -1))
        return _new_tuple(PortEntry, (region, base, region.read, region.write, _ANY_PORT_SIZE, 0))

    def read(self, addr: int, size: int) -> int:
        e = self.table.get(addr & 0xFFFF, self.unassigned_entry)
        return e.region.read(addr - e.base, size)

    def write(self, addr: int, size: int, value: int) -> None:
        e = self.table.get(addr & 0xFFFF, self.unassigned_entry)
        e.region.write(addr - e.base, size, value)


class MemoryBackend(Protocol):
    """Where a ``MemoryMap`` publishes its commits: the CPU's view of memory
    (``uvirt.cpu.uc_memory.UnicornMemory`` maps the pieces into Unicorn).  Without one the
    map is a pure data structure (unit tests, qtest, the fuzzer's board backend)."""

    def publish(self, pieces: list[Piece], changed: list[tuple[int, int]] | None = None) -> None:
        """Make what the CPU sees equal ``pieces`` (the flattened view, sorted); it can
        differ from what the CPU saw only in the ``changed`` ranges (None: anywhere)."""

    def invalidate_code(self, addr: int, size: int) -> None:
        """The host rewrote [addr, addr+size): drop code translated from it."""


class MemoryMap(AddressSpace):
    """The guest-physical address space.  ``commit()`` flattens the placements and hands
    the view to its ``backend``, the one place that maps and unmaps
    (``uvirt.cpu.uc_memory``); nothing here knows Unicorn."""

    def __init__(self) -> None:
        super().__init__("memory", ADDR_SPACE_END)
        #: The CPU's memory, set while a CPU is attached (``uvirt.cpu.uc_memory``).
        self.backend: MemoryBackend | None = None
        self._phantom: dict[int, Placement] = {}
        self._unassigned = MmioRegion("unassigned", PAGE_SIZE, _ConstantDevice(UNASSIGNED_MEM_VALUE),
                                      valid_sizes=(1, 2, 4, 8), unaligned=True)
        self._ram_cache: Piece | None = None
        self.guest = SystemMemory(self)
        self.commits = 0
        #: Set by the machine while ``emu_start`` may run: the CPU thread's ident, and how
        #: another thread hands that thread work (``Machine.call_soon_threadsafe``).
        self.cpu_thread: int | None = None
        self.post_to_cpu: Callable[[Callable[[], None]], None] | None = None
        #: Set by the CPU's backend: its ``ReplayGuard`` (uvirt/cpu/uc_memory.py), None
        #: without a CPU.
        self.replay = None
        #: Set by the machine: a ``uvirt.trace.Tracer`` for ``mmio_read``/``mmio_write``.
        self.tracer = None
        #: ``(addr, size)`` for every host write to RAM (set while a snapshot is held)
        self.dirty_log: Callable[[int, int], None] | None = None
        #: Set with a backend: ``(addr, size) -> bool``, False when no translated code
        #: can exist there (then a host write needs no ``backend.invalidate_code``).
        self.may_hold_code: Callable[[int, int], bool] | None = None
        #: Kept by the CPU's TLB while its ``may_hold_code`` answers from a set of page
        #: numbers (uvirt/cpu/tlb.py ``exec_pages``, paging off): that set, else None.
        #: ``invalidate_code`` answers a write within one page from it without a call.
        self.code_pages: set[int] | None = None

    def map_unassigned_page(self, addr: int) -> None:
        """Back an unclaimed page with the reads-zero region so the faulting data access
        can be retried (called from the machine's unmapped-access hook)."""
        page = addr & PAGE_MASK
        if page not in self._phantom:
            self._phantom[page] = self.add(self._unassigned, page, priority=-(1 << 30))
            self.commit()

    def commit(self) -> None:
        """Publish the flattened placements to the backend (the CPU's mappings)."""
        if self._defer:                  # _deferred(), inline (every BAR move)
            self._pending = True
            return
        self.commits += 1
        self._ram_cache = None
        backend = self.backend
        if backend is None:
            # nobody to publish to: the flatten waits for whoever looks (a lookup, a
            # CPU's first publish), so a board built before its CPU attaches (pc_board)
            # flattens once, at the firmware step's commit, not also here
            self._delta = []             # (nobody takes these changes)
            return
        pieces = self.flatten()
        changed, self._delta = self._delta, []        # take_changes(), inline
        if changed != []:
            backend.publish(pieces, changed)

    def invalidate_code(self, addr: int, size: int) -> None:
        """The host rewrote a range of guest memory (device DMA, a loader): log it for a
        held snapshot and let the CPU drop code translated from it.  Every device write
        to RAM comes here, so the backend's ``may_hold_code`` answers first: ring and
        data pages never held code, and then there is nothing more to do."""
        if self.dirty_log is not None:
            self.dirty_log(addr, size)    # host writes for snapshots (uvirt/cpu/snapshot.py)
        backend = self.backend
        if backend is not None and size > 0:
            pages = self.code_pages          # what may_hold_code answers for one page
            if pages is not None and addr >> 12 == (addr + size - 1) >> 12 and addr >> 12 not in pages:
                return
            check = self.may_hold_code       # None: the backend cannot tell, so always ask it
            if check is None or check(addr, size):
                backend.invalidate_code(addr, size)

    # -- RAM lookup for SystemMemory
    def ram_piece(self, addr: int) -> Piece | None:
        pc = self._ram_cache
        if pc is not None and pc.start <= addr < pc.end:
            return pc
        pc = self.lookup(addr)
        if pc is not None and isinstance(pc.region, RamRegion):
            self._ram_cache = pc
            return pc
        return None


# --------------------------------------------------------------------------- guest memory


class _ClosedSpace:
    """What a closed board's ``SystemMemory`` looks at instead of its memory map."""

    def __getattr__(self, name: str):
        raise MemoryMapError("the machine is closed: its guest memory went with it "
                             "(read it before close(), or a RAM region's buffer)")


_CLOSED_SPACE = _ClosedSpace()


class SystemMemory:
    """QEMU's ``address_space_memory`` as devices see it: the ``GuestMemory`` protocol
    (uvirt/board/memory/guest.py) over a ``MemoryMap``.

    Device DMA into the guest-physical address space, with QEMU 7.2's semantics
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

    #: Which mapping holds the bounce buffer is guest-visible state (a second non-RAM
    #: map fails while it is held), so a snapshot keeps it: a restore to before a
    #: device mapped it frees it again (uvirt/cpu/snapshot.py; ``Mapping`` copies as
    #: itself, so an element restored with its mapping still owns the bounce).
    snapshot_state = ("bounce",)

    def __init__(self, space: MemoryMap) -> None:
        self._space = space
        self.bounce: Mapping | None = None
        self.work = DeviceWork()

    def detach(self) -> None:
        """The board closed: let go of its memory map (the map holds this object, so the
        link back would keep the closed board a cycle for the garbage collector); any
        use from now on is a one-line host error, with no cost on the open board's
        paths."""
        self._space = _CLOSED_SPACE

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
        starts = space._piece_starts()
        pieces = space._pieces
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
        pc = self._space._ram_cache                 # ram_piece(addr), its cache inlined
        if pc is None or not pc.start <= addr < pc.end:
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
        pc = self._space._ram_cache                 # ram_piece(addr), its cache inlined
        if pc is None or not pc.start <= addr < pc.end:
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
    def map(self, addr: int, length: int, is_write: bool) -> Mapping | None:
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

    def unmap(self, m: Mapping, access_len: int) -> None:
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

    def ram_window(self, addr: int, size: int) -> RamWindow | None:
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
