"""The memory map's Unicorn backend: where ``MemoryMap.commit()`` becomes Unicorn
mappings (uvirt/board/memory/regions.py is the pure region tree; this is the one place
that maps and unmaps), the unmapped-access hooks, translated-code invalidation, and the
``ReplayGuard`` that keeps MMIO side effects exactly-once across Unicorn's restarts.
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import operator
import threading
from typing import Callable, Iterable, NamedTuple

from unicorn import (UC_CTL_IO_WRITE, UC_CTL_TB_REMOVE_CACHE, UC_HOOK_MEM_READ_UNMAPPED,
                     UC_HOOK_MEM_WRITE_UNMAPPED, UcError)

from uvirt.board.memory.regions import (PAGE_MASK, PAGE_SIZE, ADDR_SPACE_END, UNASSIGNED_MEM_VALUE,
                                        MemoryMap, MmioRegion, Piece, RamRegion, Region,
                                        merge_ranges, subtract_ranges)
from uvirt.cpu.uc_hooks import CAPI, ctl_code, engine, hook_failure, map_mmio
from uvirt.errors import MemoryMapError


_PROT_ALL, _PROT_RX = 7, 5      # UC_PROT_ALL, UC_PROT_READ | UC_PROT_EXEC (unicorn.h)
_SIZE_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}
#: ``_new(_Span, (all six fields))``: without the named tuple's generated ``__new__``
_new = tuple.__new__


class _Span(NamedTuple):
    """One Unicorn mapping.  Equal spans are left alone by a commit; a span is its own
    key (regions compare and hash by identity).  (A named tuple for the same reason as
    ``Piece``.)"""

    start: int
    size: int
    kind: str                        # "ram" | "mmio" | "mixed"
    region: Region | None = None     # ram / mmio
    offset: int = 0                  # region offset at start
    pieces: tuple[Piece, ...] = ()   # mixed



class UnicornMemory:
    """The memory map's backend while a Unicorn CPU is attached: the one caller of
    ``mem_map_ptr``, ``mmio_map`` and ``mem_unmap`` in uvirt (docs/unicorn-notes.md §7
    items 1-3: Unicorn maps whole 4 KiB pages, refuses overlaps and keeps no reference to
    a pointer's buffer).

    Every ``MemoryMap.commit()`` hands over the flattened view and the ranges that
    changed (``publish``); the mappings near those ranges are re-derived and diffed
    against what Unicorn has mapped there (``respan``), so a BAR move touches only its
    old and new place.  Pages a region covers completely become one
    native mapping; a page shared by several regions, or only partly covered (ivshmem's
    256-byte BAR0), becomes one ``mmio_map`` page whose callback dispatches by offset.
    Unmapping happens before mapping, and every mapped ``HostBuffer`` stays pinned while
    mapped.

    A data access where nothing is mapped reaches ``on_unmapped(address, size) -> bool``
    through Unicorn unmapped-access hooks that each publish keeps bounded to the ranges
    between RAM mappings (``_GapHooks``): an unmapped hook that also covers a RAM page
    keeps every store to that page on Unicorn's slow path (``notdirty_write`` never marks
    a page dirty while any memory hook's range includes it).

    ``defer_mmio``: register windows (``mmio`` and ``mixed`` spans) below 4 GiB are not
    mapped when published but at the guest's first data access to any unmapped page.
    They lie in the gaps between RAM, which the unmapped-access hooks cover (Unicorn
    checks and reports the physical address, paging or not: cputlb.c ``load_helper``),
    so that first access reaches ``_unmapped``, which maps every deferred window before
    Unicorn looks the page up again: from then on Unicorn's mappings are what they would
    have been, and later windows are mapped at once.  Every mapping costs twice (Unicorn
    re-renders its whole memory map when it maps, and again for each mapping
    ``uc_close`` drops), about 15 us for the local APIC's window, which a guest that
    never touches unmapped memory (a boot that prints and exits) no longer pays.  An
    instruction fetch there faults either way (Unicorn cannot run code from MMIO).
    """

    def __init__(self, memory: MemoryMap, uc, *,
                 on_unmapped: Callable[[int, int], bool] | None = None,
                 publish: bool = True, defer_mmio: bool = False) -> None:
        self.memory = memory
        self._uc = uc
        self._mem_map_ptr, self._mem_unmap = _mapping_calls(uc)
        self._remove_cache = None
        #: ``fn(address, size) -> bool`` for a guest data access where nothing is
        #: mapped (the machine maps a reads-zero page and lets Unicorn retry).
        self.on_unmapped = on_unmapped
        self._gaps: _GapHooks | None = _GapHooks(uc, self._unmapped)
        #: register windows published but not mapped yet (``defer_mmio``), in order
        self.deferred: list[_Span] = []
        self._defer_mmio = defer_mmio
        self._mapped: dict[tuple, _Span] = {}
        #: the same spans sorted by start (``respan`` looks near the changed ranges by bisection)
        self._order: list[_Span] = []
        self._callbacks: dict[tuple, tuple] = {}
        self.replay = ReplayGuard()
        self._may_hold_code: Callable[[int, int], bool] | None = None
        #: Set by the machine: the CPU's ``TlbFill`` (uvirt/cpu/tlb.py), told while
        #: ``mem_unmap`` runs (its ``unmapping``) that the fetch fill it sees then is
        #: Unicorn's own lookup
        self.tlb = None
        memory.replay = self.replay
        memory.take_changes()            # what was committed before: all of it, below
        memory.backend = self
        memory.may_hold_code = _anywhere
        memory.code_pages = None          # until this CPU's TLB shares its set
        #: ``publish=False``: nothing is mapped until the map's next commit (or
        #: ``publish_pending``), which then maps all of it; a machine being built commits
        #: again soon (its devices, the firmware step), and mapping the reset-time low
        #: megabyte only to remap it then cost about 150 us of Unicorn calls per machine
        self._unpublished = not publish
        #: called once, right after a deferred first publish
        self.on_published: Callable[[], None] | None = None
        if publish:
            self.publish(memory.flatten(), None)

    def _unmapped(self, address: int, size: int) -> bool:
        """The unmapped-access hooks' callback.  The first one maps every deferred
        register window, and every one at once from then on (a reads-zero page
        ``on_unmapped`` adds must be mapped before the hook returns: Unicorn looks the
        page up once more, then faults); if the access is to one of them, Unicorn
        finds it mapped now.  Else ``on_unmapped``."""
        if self._defer_mmio:
            windows = self.deferred
            try:
                self.map_deferred(for_good=True)
            except BaseException as e:    # never into Unicorn: a host error, as on_unmapped's
                hook_failure(self._uc)(e)
                return False
            if any(w.start <= address < w.start + w.size for w in windows):
                return True
        return bool(self.on_unmapped and self.on_unmapped(address, size))

    def map_deferred(self, *, for_good: bool = False) -> None:
        """Map every deferred register window now; ``for_good``: and every window at
        once from now on."""
        if for_good:
            self._defer_mmio = False
        deferred, self.deferred = self.deferred, []
        uc = self._uc
        for span in deferred:
            read_cb, write_cb = self._callbacks[span]
            map_mmio(uc, span.start, span.size, read_cb, write_cb, raw=True)

    def publish_pending(self) -> None:
        """Map the whole view now if it was never published (``publish=False``)."""
        if self._unpublished:
            self.publish(self.memory.flatten(), None)

    def detach(self, *, cpu_closed: bool = False) -> None:
        """Unmap everything (buffers stay alive with their owners) and leave the memory
        map CPU-free.  With ``cpu_closed`` the Unicorn instance is already gone
        (``uc_close`` freed its mappings), so only the bookkeeping is undone: unmapping
        128 MiB page by page costs over a millisecond."""
        if self.memory.backend is self:
            self.memory.backend = None
            self.memory.replay = None
            self.memory.may_hold_code = None
            self.memory.code_pages = None
        uc, self._uc = self._uc, None
        gaps, self._gaps = self._gaps, None
        if gaps is not None and not cpu_closed:
            gaps.close()
        deferred, self.deferred = self.deferred, []
        for span in list(self._mapped.values()):
            if uc is not None and not cpu_closed and span not in deferred:
                self._unmap(uc, span)
            else:
                self._release(span)
        self._mapped.clear()
        self._order.clear()
        self._callbacks.clear()
        self._may_hold_code = None
        self.tlb = None

    @property
    def may_hold_code(self) -> Callable[[int, int], bool] | None:
        """Set by the machine: ``(addr, size) -> bool``, False when no translated code
        can exist there (uvirt/cpu/tlb.py tracks the pages the CPU fetched from); the
        memory map asks it before every ``invalidate_code``."""
        return self._may_hold_code

    @may_hold_code.setter
    def may_hold_code(self, check: Callable[[int, int], bool] | None) -> None:
        self._may_hold_code = check
        if self.memory.backend is self:
            self.memory.may_hold_code = check or _anywhere
            self.memory.code_pages = None     # a new answer: its TLB shares its set again

    def publish(self, pieces: list[Piece], changed: list[tuple[int, int]] | None = None) -> None:
        """Make Unicorn's mappings equal the flattened placements; ``changed`` (the
        ranges the view changed in, None: anywhere) bounds where they can differ."""
        uc = self._uc
        if uc is None:
            return
        first = self._unpublished
        if first:
            self._unpublished, changed = False, None       # everything, the first time
        order, mapped = self._order, self._mapped
        removed, added = respan(order, pieces, changed)
        freed = []                       # what stopped being RAM
        ram_added = False
        for span in removed:
            self._unmap(uc, mapped.pop(span))
            order.remove(span)
            if span.kind == "ram":
                freed.append((span.start, span.start + span.size))
        for span in added:
            self._map(uc, span)
            mapped[span] = span
            bisect.insort(order, span, key=_start)
            if span.kind == "ram":
                ram_added = True
        gaps = self._gaps
        if gaps is not None and (freed or ram_added):
            # only RAM needs to stay outside them (MMIO stores are slow anyway): BAR moves
            # of register windows and reads-zero pages leave the hooks alone
            if self.memory.cpu_thread is not None or changed is None:
                gaps.cover(_gaps(self._ram_ranges()))
            else:
                # between runs: cover only what stopped being RAM; ``settle()`` before
                # the next run makes the hooks exact (_GapHooks.loosen)
                gaps.loosen(freed, self._ram_ranges, ram_added)
        if first and self.on_published is not None:
            done, self.on_published = self.on_published, None
            done()

    def _ram_ranges(self) -> list[tuple[int, int]]:
        return [(s.start, s.start + s.size) for s in self._mapped.values() if s.kind == "ram"]

    def settle(self) -> None:
        """Before guest code runs: the unmapped-access hooks exactly cover the gaps
        between RAM mappings again (a commit between runs may have left a hook over RAM
        that moved into a gap, which would keep that RAM's stores on the slow path)."""
        self.publish_pending()
        gaps = self._gaps
        if gaps is not None and gaps.stale:
            gaps.cover(_gaps(self._ram_ranges()))

    def _map(self, uc, span: _Span) -> None:
        if span.kind == "ram":
            region = span.region
            perms = _PROT_RX if region.readonly else _PROT_ALL
            ptr = region.buffer.address + region.buffer_offset + span.offset
            status = self._mem_map_ptr(span.start, span.size, perms, ptr)
            if status:
                raise UcError(status)
            region.buffer.mapped_count += 1
            return
        if span.kind == "mmio":
            read_cb, write_cb = _region_callbacks(span.region, span.offset, self.replay,
                                                  span.start, self.memory.tracer, hook_failure(uc))
        else:
            read_cb, write_cb = _mixed_callbacks(span.pieces, span.start, self.replay,
                                                 self.memory.tracer, hook_failure(uc))
        self._callbacks[span] = (read_cb, write_cb)
        if (self._defer_mmio and self._gaps is not None
                and span.start + span.size <= ADDR_SPACE_END):
            self.deferred.append(span)    # in a gap the unmapped-access hooks cover
        else:
            map_mmio(uc, span.start, span.size, read_cb, write_cb, raw=True)
        for pc in span.pieces:
            if isinstance(pc.region, RamRegion):
                pc.region.buffer.mapped_count += 1

    def _unmap(self, uc, span: _Span) -> None:
        if self.deferred and span in self.deferred:
            self.deferred.remove(span)    # never mapped: only the bookkeeping
            self._release(span, uc)
            return
        tlb = self.tlb
        if tlb is None:
            status = self._mem_unmap(span.start, span.size)
        else:
            tlb.unmapping = True
            try:
                status = self._mem_unmap(span.start, span.size)
            finally:
                tlb.unmapping = False
        if status:
            raise UcError(status)
        if span.kind == "ram":           # _release's RAM case, inline (every BAR move)
            span.region.buffer.mapped_count -= 1
        else:
            self._release(span, uc)

    def _release(self, span: _Span, uc=None) -> None:
        if span.kind == "ram":           # no callbacks, no pieces
            span.region.buffer.mapped_count -= 1
            return
        if self._callbacks.pop(span, None) is not None and uc is not None:
            # what the binding's own mem_unmap drops (uc_hooks.map_mmio keeps them there)
            getattr(uc, "_mmio_callbacks", {}).pop((span.start, span.start + span.size), None)
        for pc in span.pieces:
            if isinstance(pc.region, RamRegion):
                pc.region.buffer.mapped_count -= 1

    def invalidate_code(self, addr: int, size: int) -> None:
        """Drop translated code for a range the host rewrote (docs/unicorn-notes.md §7 items
        7–8); reached through ``MemoryMap.invalidate_code``.

        Every device DMA write lands here, so it calls ``uc_ctl`` directly: the binding's
        ``ctl_remove_cache`` spends about 4 µs in Python argument encoding."""
        if self._uc is None:
            return
        if self._may_hold_code is not None and not self._may_hold_code(addr, size):
            return      # data only (a shared region, a DMA buffer): no code to drop, no kick
        owner = self.memory.cpu_thread
        if owner is not None and self.memory.post_to_cpu is not None and owner != threading.get_ident():
            # uc_ctl is not thread-safe while emu_start runs on another thread: a host
            # thread writing a shared region under a running guest crashed the process.
            # The CPU thread drops the blocks at its next stop (the post kicks it).
            self.memory.post_to_cpu(lambda: self.invalidate_code(addr, size))
            return
        remove = self._remove_cache
        if remove is None:
            remove = self._remove_cache = _tb_remover(self._uc)
        remove(addr, addr + size)

    @property
    def unmapped_hook_ranges(self) -> list[tuple[int, int]]:
        """The [start, end) ranges Unicorn's unmapped-access hooks cover, for tests."""
        return self._gaps.ranges if self._gaps is not None else []

    @property
    def mapped_spans(self) -> list[tuple[int, int, str]]:
        """What Unicorn has mapped, for tests and ``info mtree``-style output."""
        return sorted((s.start, s.size, s.kind) for s in self._mapped.values())


def _anywhere(addr: int, size: int) -> bool:
    """``may_hold_code`` without a TLB that knows better: code may be anywhere."""
    return True


def _mapping_calls(uc):
    """``(mem_map_ptr, mem_unmap)`` straight into the C API, returning Unicorn's status:
    the binding's methods add a Python frame, an assert and a dictionary probe to every
    BAR move.  (Without the binding's internals: its methods, which raise themselves.)"""
    uch = engine(uc)
    if uch is not None:
        lib = CAPI.lib
        return functools.partial(lib.uc_mem_map_ptr, uch), functools.partial(lib.uc_mem_unmap, uch)
    else:
        def map_ptr(address: int, size: int, perms: int, ptr: int) -> int:
            uc.mem_map_ptr(address, size, perms, ptr)
            return 0

        def unmap(address: int, size: int) -> int:
            uc.mem_unmap(address, size)
            return 0

        return map_ptr, unmap


def _tb_remover(uc):
    """``(begin, end) -> None`` dropping translated blocks, through ``uc_ctl`` itself."""
    uch = engine(uc)
    if uch is None:
        return uc.ctl_remove_cache
    ctl = ctl_code(UC_CTL_TB_REMOVE_CACHE, UC_CTL_IO_WRITE, 2)
    u64 = ctypes.c_uint64
    fn = CAPI.lib.uc_ctl

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
    store ~15 ns (uvirt/cpu/tlb.py).  Hooks go through the C API (about a microsecond
    each, against ten through the binding's ``hook_add``) with one shared callback.
    Deleting a hook from inside a callback is safe: Unicorn frees it after ``emu_start``
    returns.  Until then it stays on Unicorn's lists and every later add or delete
    walks them: two deletes and two adds per move of a RAM BAR cost 11-12 µs over 300
    moves without a run.  So while the guest runs, a commit re-covers exactly the gaps
    that changed (``cover``); between runs it only adds hooks where RAM left
    (``loosen``), and ``UnicornMemory.settle()`` makes them exact when the next run
    starts."""

    def __init__(self, uc, handler: Callable[[int, int], bool]) -> None:
        self._uc = uc
        self._hooks: dict[tuple[int, int], int] = {}
        self._sorted: list[tuple[int, int]] | None = []      # the keys of _hooks, sorted
        #: True while some hook covers more than a gap (``cover(exact=False)``)
        self.stale = False
        self._type = UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED

        def callback(_uc, _access, address, size, _value, _ud) -> bool:
            return handler(address, size)

        self._uch = engine(uc)
        if self._uch is not None:
            self._fptr = CAPI.ftypes["HOOK_MEM_INVALID_CFUNC"](callback)
            self._lib, self._handle_t = CAPI.lib, CAPI.hook_h
        else:                                         # the binding moved: its own path
            self._lib = None
            self._callback = lambda u, a, addr, size, v, d: handler(addr, size)

    def cover(self, gaps: list[tuple[int, int]]) -> None:
        """Hook exactly ``gaps``."""
        wanted = set(gaps)
        for gap in [g for g in self._hooks if g not in wanted]:
            self._delete(self._hooks.pop(gap))
        for gap in wanted:
            if gap not in self._hooks:
                self._hooks[gap] = self._add(gap[0], gap[1] - 1)
        self._sorted = None
        self.stale = False

    def loosen(self, freed: list[tuple[int, int]], ram: Callable[[], list[tuple[int, int]]],
               ram_added: bool) -> None:
        """Between runs: hook the parts of ``freed`` (ranges that stopped being RAM) that
        neither a hook nor RAM covers, and delete nothing.  A hook may then cover RAM
        (``stale``; its stores stay on the slow path until the next exact ``cover``).
        Deleted hooks stay on Unicorn's lists until ``emu_start`` returns and every
        further add or delete walks them: a BAR moved back and forth between runs (or
        by qtest, which never runs) would pay more per move the longer it goes on; this
        way it pays nothing once both places are hooked."""
        self.stale = self.stale or ram_added
        taken = None
        ranges = self._sorted
        if ranges is None:
            ranges = self._sorted = sorted(self._hooks)
        for lo, hi in freed:
            # the hooks never overlap (``cover`` hooks gaps, ``loosen`` only what no hook
            # covers): only the last one starting at or before lo can cover [lo, hi)
            i = bisect.bisect_right(ranges, (lo, ADDR_SPACE_END + 1)) - 1
            if i >= 0 and hi <= ranges[i][1]:
                continue
            if taken is None:             # hooks may overlap RAM (stale): joined
                taken = merge_ranges(list(self._hooks) + ram())
            for s, e in subtract_ranges(lo, hi, taken):
                self._hooks[(s, e)] = self._add(s, e - 1)
                self._sorted = None
                self.stale = True

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
        self._sorted = []


def respan(mapped: list[_Span], pieces: list[Piece],
           changed: list[tuple[int, int]] | None) -> tuple[list[_Span], list[_Span]]:
    """(spans to unmap, spans to map) so that ``mapped`` (sorted by start) becomes
    ``_spans(pieces)``, looking only near ``changed`` (sorted [start, end) ranges; None:
    everywhere).  One or two ranges (a BAR moved, a region enabled) are redone where they
    are; more (a batch's commit) cost less as a full diff.

    A span depends on the pieces in its pages and, through ``_merge_ram``, on the spans
    it touches; so the window of pages to redo grows from the changed pages until no old
    span, piece or new span crosses or touches its edges.  Outside it nothing can differ.
    The spans and pieces near the window are found by bisection (both lists are sorted
    and disjoint, so their ends are sorted too): a BAR move looks at a handful of them,
    not at the whole map.  Pure (tests/unit/test_flatten_incremental.py checks it against
    ``_spans``)."""
    if changed is None or len(changed) > 2:      # everywhere, or a whole batch: all of it
        wanted = _spans(pieces)
        keep, have = set(wanted), set(mapped)
        return [s for s in mapped if s not in keep], [s for s in wanted if s not in have]
    if len(changed) == 1:                         # one place (or a move's two, touching)
        lo, hi = changed[0]
        if lo >= hi:
            return [], []
        win = [(lo & PAGE_MASK, (hi + PAGE_SIZE - 1) & PAGE_MASK)]
    else:
        win = _page_ranges(changed)
        if not win:
            return [], []
    while True:
        if len(win) == 1:                        # one range (a BAR move's two, touching)
            lo, hi = win[0]
            old, old_out = _near_one(mapped, lo, hi, True)
            near, near_out = _near_one(pieces, lo, hi, False)
        else:
            old, old_out = _near(mapped, win, True)
            near, near_out = _near(pieces, win, False)
        if not (old_out or near_out):
            break
        win = _page_ranges(win + [(s.start, s.start + s.size) for s in old] + [(pc.start, pc.end) for pc in near])
    # the new spans lie in the pages of ``near``: inside the window too
    new = _spans(near)
    if old == new:                               # the common "nothing to do here"
        return [], []
    if len(old) == 1 and len(new) == 1:          # a BAR's span left, or arrived
        return old, new
    if len(old) + len(new) > 8:
        new_keys, old_keys = set(new), set(old)
        return [s for s in old if s not in new_keys], [s for s in new if s not in old_keys]
    return [s for s in old if s not in new], [s for s in new if s not in old]     # a few each


def _near(items: list, win: list[tuple[int, int]], spans: bool) -> tuple[list, bool]:
    """(the items that overlap or touch one of ``win``, each once and in order; does one
    of them reach past the pages of the window range it was found at?).  ``items`` are
    spans (``spans``: their end is start + size) or pieces (start, end), sorted by start
    and disjoint; ``win`` is sorted, page-aligned, disjoint and not touching."""
    out: list = []
    past = False
    i, n = 0, len(items)
    for lo, hi in win:
        # the first item ending at or after lo: the one before the first starting at or
        # after lo, if it reaches lo (they are disjoint)
        # (a tuple compared with an item: (lo,) sorts before every item starting at lo,
        # so this is bisect_left by start, without a key call per probe)
        k = bisect.bisect_left(items, (lo,), i, n)
        if k > i:
            it = items[k - 1]
            if (it[0] + it[1] if spans else it[1]) >= lo:
                k -= 1
        j = k
        while j < n and items[j][0] <= hi:
            j += 1
        if j > k:
            out += items[k:j]
            # lo and hi are page-aligned: an item's pages leave [lo, hi) iff the item does
            last = items[j - 1]
            past = past or items[k][0] < lo or (last[0] + last[1] if spans else last[1]) > hi
        i = j
    return out, past


def _near_one(items: list, lo: int, hi: int, spans: bool) -> tuple[list, bool]:
    """``_near(items, [(lo, hi)], spans)`` for one window range, with two bisections
    and no loop."""
    k = bisect.bisect_left(items, (lo,))         # the first starting at or after lo
    if k:
        it = items[k - 1]
        if (it[0] + it[1] if spans else it[1]) >= lo:
            k -= 1                               # the one before reaches lo
    j = bisect.bisect_left(items, (hi + 1,), k)  # the first starting after hi
    if j == k:
        return [], False
    last = items[j - 1]
    return items[k:j], items[k][0] < lo or (last[0] + last[1] if spans else last[1]) > hi


_start = operator.itemgetter(0)                  # _Span.start, Piece.start


def _page_ranges(ranges) -> list[tuple[int, int]]:
    """``ranges`` widened to whole pages, sorted, touching ones joined."""
    return merge_ranges([(s & PAGE_MASK, (e + PAGE_SIZE - 1) & PAGE_MASK) for s, e in ranges if s < e])


def _spans(pieces: list[Piece]) -> list[_Span]:
    """Turn visible pieces (sorted) into page-granular Unicorn mappings."""
    if len(pieces) == 1:                         # a BAR's new place: one region, whole pages
        start, end, region, offset = pieces[0]
        if not (start | end) & ~PAGE_MASK:
            return [_new(_Span, (start, end - start, "ram" if isinstance(region, RamRegion) else "mmio",
                                 region, offset, ()))]
    spans: list[_Span] = []
    mixed: dict[int, list[Piece]] | None = None
    for pc in pieces:
        start, end, region = pc.start, pc.end, pc.region
        if not (start | end) & ~PAGE_MASK:           # whole pages: the common case
            spans.append(_new(_Span, (start, end - start, "ram" if isinstance(region, RamRegion) else "mmio",
                                      region, pc.offset, ())))
            continue
        first_full = (start + PAGE_SIZE - 1) & PAGE_MASK
        last_full = end & PAGE_MASK
        if first_full < last_full:
            spans.append(_Span(first_full, last_full - first_full,
                               "ram" if isinstance(region, RamRegion) else "mmio",
                               region, pc.offset + first_full - start))
            parts = ((start, first_full), (last_full, end))
        else:
            parts = ((start, end),)
        if mixed is None:
            mixed = {}
        for s, e in parts:
            if s < e:
                mixed.setdefault(s & PAGE_MASK, []).append(Piece(s, e, region, pc.offset + s - start))
    if mixed:
        for page, ps in mixed.items():
            spans.append(_Span(page, PAGE_SIZE, "mixed", pieces=tuple(sorted(ps, key=_piece_start))))
        spans.sort(key=_span_start)
    return _merge_ram(spans)


def _piece_start(pc: Piece) -> int:
    return pc.start


def _span_start(sp: _Span) -> int:
    return sp.start


def _merge_ram(spans: list[_Span]) -> list[_Span]:
    """One Unicorn mapping for adjacent RAM spans (sorted) that continue each other in
    the same host buffer with the same protection (RAM split around the low megabyte's
    PAM segments and the VGA window is mostly contiguous again): ``mem_map_ptr`` costs
    about 20 µs per call, and a machine build would otherwise make twenty of them."""
    out: list[_Span] = []
    prev = None
    for sp in spans:
        if (prev is not None and sp.kind == "ram" and prev.kind == "ram"
                and prev.start + prev.size == sp.start):
            a, b = prev.region, sp.region
            if (a.buffer is b.buffer and a.readonly == b.readonly
                    and a.buffer_offset + prev.offset + prev.size == b.buffer_offset + sp.offset):
                prev = out[-1] = _Span(prev.start, prev.size + sp.size, "ram", a, prev.offset)
                continue
        out.append(sp)
        prev = sp
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


class _Untraced:
    enabled = False


_UNTRACED = _Untraced()


def _region_callbacks(region: Region, base_offset: int, guard: ReplayGuard, start: int = 0,
                      tracer=None, failed: Callable[[BaseException], None] | None = None):
    """``start`` (the span's guest-physical address) and ``tracer`` name MMIO accesses as
    declared trace events; an access the guard answers from its journal (a restart) is
    not traced twice.  The callbacks have the engine's signature (``map_mmio(raw=True)``:
    no frame between Unicorn and them) and hand an exception to ``failed``."""
    if tracer is None:
        tracer = _UNTRACED
    # An unguarded MmioRegion's own accessors (``MmioRegion._fast_paths``) hand an access
    # of a size in ``_direct``, aligned unless the region takes unaligned ones, straight
    # to its device: done here instead, with no frame for the region's closure in
    # between (the port hooks do the same, ``IoSpace._entry``).  The device and the guard
    # are read at each access: the fuzzer swaps them on mapped regions.
    if isinstance(region, MmioRegion):
        direct, align, masks = region._direct, 0 if region.unaligned else -1, _SIZE_MASK
    else:
        direct, align, masks = frozenset(), 0, _SIZE_MASK

    def read_cb(_h, offset, size, _ud):
        try:
            if not tracer.enabled:
                # Untraced, with the guard unarmed and nothing journaled (stops at block
                # starts, uvirt/cpu/exits.py), the guard would only pass the access on.
                if guard.armed or guard.journal is not None:
                    return guard.read(region, base_offset + offset, size)
                offset += base_offset
                if size in direct and not offset & (size - 1) & align and region.guard is None:
                    return region.device.read(offset, size) & masks[size]
                return region.read(offset, size)
            seen = guard.absorbed
            value = guard.read(region, base_offset + offset, size)
            if guard.absorbed == seen:
                tracer.emit("mmio_read", addr=start + offset, size=size, value=value)
            return value
        except BaseException as e:
            failed(e)
            return 0

    def write_cb(_h, offset, size, value, _ud):
        try:
            if not tracer.enabled:
                if guard.armed or guard.journal is not None:
                    guard.write(region, base_offset + offset, size, value)
                    return
                offset += base_offset
                if size in direct and not offset & (size - 1) & align and region.guard is None:
                    region.device.write(offset, size, value & masks[size])
                else:
                    region.write(offset, size, value)
                return
            tracer.emit("mmio_write", addr=start + offset, size=size, value=value)
            guard.write(region, base_offset + offset, size, value)
        except BaseException as e:
            failed(e)

    return read_cb, write_cb


def _mixed_callbacks(pieces: tuple[Piece, ...], page: int, guard: ReplayGuard, tracer=None,
                     failed: Callable[[BaseException], None] | None = None):
    """A page shared by several regions, or only partly covered (ivshmem's 256-byte
    BAR0, whose doorbell every ivshmem round trip writes): dispatch by offset, reads of
    a hole answer ``UNASSIGNED_MEM_VALUE`` and writes there are dropped.  The same
    contract as ``_region_callbacks`` (the engine's signature, no frame in between,
    the guard skipped when it could only pass the access on), so one region's part of a
    page costs what a whole page of it does."""
    if tracer is None:
        tracer = _UNTRACED
    starts = [p.start - page for p in pieces]
    ends = [p.end - page for p in pieces]
    # region offset = page offset + delta
    targets = [(p.region, p.offset - (p.start - page)) for p in pieces]
    lone = targets[0] if len(pieces) == 1 else None
    lo, hi = (starts[0], ends[0]) if lone is not None else (0, 0)
    bisect_right = bisect.bisect_right

    def read_cb(_h, offset, size, _ud):
        try:
            if lone is not None:
                if not lo <= offset < hi:
                    return UNASSIGNED_MEM_VALUE
                region, delta = lone
            else:
                i = bisect_right(starts, offset) - 1
                if i < 0 or offset >= ends[i]:
                    return UNASSIGNED_MEM_VALUE
                region, delta = targets[i]
            if not tracer.enabled:
                if guard.armed or guard.journal is not None:
                    return guard.read(region, offset + delta, size)
                return region.read(offset + delta, size)
            seen = guard.absorbed
            value = guard.read(region, offset + delta, size)
            if guard.absorbed == seen:
                tracer.emit("mmio_read", addr=page + offset, size=size, value=value)
            return value
        except BaseException as e:
            failed(e)
            return 0

    def write_cb(_h, offset, size, value, _ud):
        try:
            if lone is not None:
                if not lo <= offset < hi:
                    return
                region, delta = lone
            else:
                i = bisect_right(starts, offset) - 1
                if i < 0 or offset >= ends[i]:
                    return
                region, delta = targets[i]
            if not tracer.enabled:
                if guard.armed or guard.journal is not None:
                    guard.write(region, offset + delta, size, value)
                else:
                    region.write(offset + delta, size, value)
                return
            tracer.emit("mmio_write", addr=page + offset, size=size, value=value)
            guard.write(region, offset + delta, size, value)
        except BaseException as e:
            failed(e)

    return read_cb, write_cb
