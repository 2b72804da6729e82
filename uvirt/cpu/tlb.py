"""The CPU's TLB fill: guest stores at native speed to pages that hold no code.

Why this exists.  Unicorn 2.1.4 sends every guest store to a page whose TLB entry is
executable through the softmmu slow path: its ``cpu_physical_memory_is_clean`` always
says "clean", so ``TLB_NOTDIRTY`` is set on every writable entry, and ``notdirty_write``
clears it again only when the entry has no code mapping (docs/unicorn-notes.md §0,
unicorn#1970).  With paging off, Unicorn's x86 MMU makes every entry executable, so a
store costs 16-40 ns against 2 ns for a load, in RAM and in a memory region alike: the
region of this project's title ran store-heavy loops only 52x faster than the same
bytes served by MMIO callbacks.  Upstream fixed it after 2.1.4 (PR #2337: mark only
executable pages not-dirty).

What we do instead, with 2.1.4 itself: ``UC_TLB_VIRTUAL`` hands TLB fills to a hook, and
the hook gives a page read+write until the CPU first fetches an instruction from it,
read+write+execute from then on (the page joins ``exec_pages`` for good).  A store
through an entry without execute clears ``TLB_NOTDIRTY`` on its first slow-path visit;
every later store to that page takes the fast path.  Pages that ever held translated
code keep the slow path, which is where QEMU's self-modifying-code detection lives, so
code written and then run (loaders, JITs, a program moving its own BAR) behaves as
before.  When a page first gets executed, the whole TLB is dropped: an entry filled
earlier without execute (in another MMU index, say ring 3) must not keep writing to it
behind the translator's back.

Only while paging is off.  With CR0.PG=1 the guest's page tables decide, which the
virtual TLB would ignore, so the hook refuses the fill: Unicorn abandons the
instruction exactly as for a page fault (EIP at its start, nothing done) and ends the
run with ``UC_ERR_EXCEPTION``; the machine then calls ``sync()``, which hands the TLB back
to Unicorn's x86 MMU (``UC_TLB_CPU``), and resumes.  When the guest turns paging off
again, the next ``sync()`` (every stop) switches back.  The guest sees no difference
either way; only the speed of its stores changes.
"""
from __future__ import annotations

import ctypes
from typing import Callable

from unicorn import (UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_CTL_TLB_TYPE, UC_HOOK_TLB_FILL,
                     UC_MEM_FETCH, UC_MEM_WRITE, UC_PROT_ALL, UC_PROT_READ, UC_PROT_WRITE,
                     UC_TLB_CPU, UC_TLB_VIRTUAL, Uc)
from unicorn import x86_const as X

from uvirt.board.interrupts.lapic import APIC_BASE, APIC_SPACE_SIZE
from uvirt.cpu.uc_hooks import CAPI, add_c_hooks, ctl, ctl_code, engine

PAGE_SHIFT = 12
CR0_PG = 1 << 31
_RW = UC_PROT_READ | UC_PROT_WRITE
#: Where the hook fills (inclusive ranges): everywhere but the local APIC's window, which
#: Unicorn fills itself (guest-physical = linear, the access's own permission).  That
#: window is MMIO at a fixed place over everything else (QEMU's priority 0x1000), so no
#: RAM, no code and no dirty tracking there.  And 2.1.4's victim TLB never gives back an
#: MMIO entry (``victim_tlb_hit`` compares ``addr_write`` with its TLB_MMIO flag to the
#: bare page): when a guest's hot page shares the APIC page's TLB index (index = page mod
#: 256; msi_loop's interrupt tables at 0x100510 and 0x100910 do), the EOI after every
#: interrupt refilled the entry through this hook, about 1.7 us of CPU each time (the MSI
#: round trip went from 6.3 to 4.8 us with this alone; benchmarks/irq_breakdown.py).
#: With paging on the hook refuses every fill; the first fill after CR0.PG is set is a
#: code fetch (QEMU ends the block at the CR0 write and flushes the TLB), never in an
#: MMIO window, so the switch happens as before (firmware/cpu_memory.S maps RAM at
#: 0xFEE00000 while paging is on).
HOOKED = ((0, APIC_BASE - 1), (APIC_BASE + APIC_SPACE_SIZE, (1 << 64) - 1))
_TLB_FLUSH = ctl_code(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE, 0)
_TLB_TYPE = ctl_code(UC_CTL_TLB_TYPE, UC_CTL_IO_WRITE, 1)


class TlbFill:
    """Owns Unicorn's TLB mode and fill hook for one CPU (see the module docstring)."""

    def __init__(self, uc: Uc, on_error: Callable[[BaseException], None], *, fresh: bool = False) -> None:
        self.uc = uc
        self.exec_pages: set[int] = set()   # page numbers ever fetched from (sticky)
        self.fills = 0                      # hook calls, for tests and benchmarks
        self.paging = False                 # True: Unicorn's x86 MMU fills the TLB
        self.switches = 0                   # MMU hand-overs, either way
        self._switch = False                # the hook saw CR0.PG=1: sync() must switch
        #: True while the memory map's backend calls ``mem_unmap`` (uvirt/cpu/uc_memory.py):
        #: Unicorn then looks the region's first page up as an instruction fetch
        #: (``uc_invalidate_tb`` -> ``get_page_addr_code``) to find the translated code to
        #: drop.  That fill is no fetch by the guest: it is answered physical = linear
        #: (the address is guest-physical, whatever CR0.PG says) without making the page a
        #: code page (which would keep the page's stores on the slow path and every host
        #: write to it asking Unicorn to drop code, for good), and the same unmap flushes
        #: the entry right after.
        self.unmapping = False
        #: page numbers the CPU may have written since ``track_writes()`` (None: not
        #: tracking).  While tracking, a page not in it gets an entry without write
        #: permission, so the CPU's first store to it comes back here as a write fill.
        self.dirty: set[int] | None = None
        self._track_switches = 0
        #: the memory map whose ``code_pages`` this TLB keeps (``share_code_pages``)
        self._memory = None
        self._on_error = on_error
        self._cr0 = _reg_reader(uc, X.UC_X86_REG_CR0)
        self._flush = _flusher(uc)
        _set_tlb_mode(uc, UC_TLB_VIRTUAL)
        if not fresh:
            # A user's CPU may hold TLB entries Unicorn's own MMU filled, and code, from
            # before (the code flush: 50-70 us).  A CPU that never ran, nor loaded a
            # segment, holds neither: its TLB is as Unicorn's reset left it, empty.
            self._flush()
            uc.ctl_flush_tb()
        fill = self._fill
        def binding_fill(_uc, vaddr, access, entry, ud):
            return fill(None, vaddr, access, ctypes.pointer(entry), ud)

        self.hooks = add_c_hooks(
            uc, UC_HOOK_TLB_FILL, "HOOK_TLB_FILL_CFUNC", fill,
            lambda lo, hi: uc.hook_add(UC_HOOK_TLB_FILL, binding_fill, None, lo, hi), HOOKED)

    def _fill(self, _handle, vaddr: int, access: int, entry_ptr, _ud) -> bool:
        try:
            entry = entry_ptr[0]
            self.fills += 1
            if self.unmapping:            # mem_unmap's lookup of a guest-physical page
                entry.paddr = vaddr
                entry.perms = UC_PROT_ALL
                return True
            if self._cr0() & CR0_PG:
                self._switch = True
                self._share()             # code may now be anywhere
                return False              # instruction abandoned; sync() switches MMU
            page = vaddr >> PAGE_SHIFT
            entry.paddr = vaddr           # paging off: physical = linear
            if page in self.exec_pages:
                perms = UC_PROT_ALL
            elif access == UC_MEM_FETCH:
                self.exec_pages.add(page)
                self._flush()             # no write-only entry may outlive this
                perms = UC_PROT_ALL
            else:
                perms = _RW
            dirty = self.dirty
            if dirty is not None and page not in dirty:
                if access == UC_MEM_WRITE:
                    dirty.add(page)       # the store follows this fill
                else:
                    perms &= ~UC_PROT_WRITE
            entry.perms = perms
            return True
        except BaseException as e:        # never let the CPU see a Python error
            self._on_error(e)
            return False

    def take_switch(self) -> bool:
        """After a run ended in UC_ERR_EXCEPTION: was it our refused fill?  Then switch
        to Unicorn's x86 MMU; the caller resumes at EIP."""
        if not self._switch:
            return False
        self.sync()
        return True

    def sync(self) -> None:
        """Between runs: follow CR0.PG (virtual fills while paging is off)."""
        if self._switch or self.paging:
            paging = bool(self._cr0() & CR0_PG)
            self._switch = False
            if paging != self.paging:
                self.paging = paging
                self.switches += 1
                _set_tlb_mode(self.uc, UC_TLB_CPU if paging else UC_TLB_VIRTUAL)
                self._flush()             # entries of one filler must not serve the other
                if not paging:
                    # code translated while paging is not in exec_pages: drop it, or a
                    # fast store could rewrite it behind the translator's back
                    self.uc.ctl_flush_tb()
            self._share()

    def track_writes(self) -> None:
        """Start (or restart) recording the pages the CPU writes (uvirt/cpu/snapshot.py):
        every entry is dropped, so each page's first store comes back as a write fill."""
        self.dirty = set()
        self._track_switches = self.switches
        self._flush()

    def tracking_exact(self) -> bool:
        """Does ``dirty`` hold every page the CPU wrote?  Not while Unicorn's own MMU
        fills the TLB (guest paging on): those stores never reach our hook."""
        return (self.dirty is not None and not self.paging and not self._switch
                and self.switches == self._track_switches)

    def share_code_pages(self, memory) -> None:
        """Keep ``memory.code_pages`` (uvirt/board/memory/regions.py) equal to what
        ``may_hold_code`` consults: ``exec_pages`` itself (it only grows, in place) while
        paging is off and no switch is pending, None otherwise.  The memory map then
        answers a one-page host write from the set, without calling back."""
        self._memory = memory
        self._share()

    def _share(self) -> None:
        if self._memory is not None:
            self._memory.code_pages = None if self.paging or self._switch else self.exec_pages

    def may_hold_code(self, addr: int, size: int) -> bool:
        """Can translated code exist for guest-physical [addr, addr+size)?  Any thread.
        While paging is off only pages the CPU fetched from can; while it is on, any."""
        if self.paging or self._switch:
            return True
        pages = self.exec_pages
        first, last = addr >> PAGE_SHIFT, (addr + max(size, 1) - 1) >> PAGE_SHIFT
        if first == last:                 # every ring field and small DMA write
            return first in pages
        return any(p in pages for p in range(first, last + 1))

    def close(self) -> None:
        """Give the CPU back as Unicorn made it (a user's CPU lives on)."""
        for hook in self.hooks:
            self.uc.hook_del(hook)
        _set_tlb_mode(self.uc, UC_TLB_CPU)
        self._flush()
        if self._memory is not None:
            self._memory.code_pages = None
            self._memory = None


def _set_tlb_mode(uc: Uc, mode: int) -> None:
    ctl(uc, _TLB_TYPE, ctypes.c_int(mode))


def _flusher(uc: Uc) -> Callable[[], None]:
    """``uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)`` straight through the C API: the
    hook flushes at every first fetch from a page."""
    uch = engine(uc)
    if uch is None:
        return lambda: uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
    fn = CAPI.lib.uc_ctl
    return lambda: fn(uch, _TLB_FLUSH)


def _reg_reader(uc: Uc, reg: int) -> Callable[[], int]:
    """A register read straight through the C API (the binding's ``reg_read`` costs a
    few µs of argument handling; the fill hook reads CR0 on every call)."""
    uch = engine(uc)
    if uch is None:
        return lambda: uc.reg_read(reg)
    value = ctypes.c_uint64()
    ref = ctypes.byref(value)
    fn = CAPI.lib.uc_reg_read

    def read() -> int:
        fn(uch, reg, ref)
        return value.value

    return read
