"""The memory map's ``code_pages`` shortcut decides every host write exactly as the TLB's
``may_hold_code`` does (uvirt/cpu/tlb.py ``share_code_pages``).

A host write (device DMA, a ring field) asks whether translated code can exist where it
wrote; the memory map answers a one-page write from the TLB's set of executed pages
without calling back.  Random sequences of TLB fills (fetch, read, write), CR0.PG changes,
refused fills, syncs and a close are run against a real Unicorn CPU; after each step,
for writes anywhere (one page, across pages, the page edges), the backend must be asked
to drop code exactly when ``may_hold_code`` says it may be there.
"""

from __future__ import annotations

import ctypes
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unicorn import UC_ARCH_X86, UC_MEM_FETCH, UC_MEM_READ, UC_MEM_WRITE, UC_MODE_32, Uc
from unicorn import x86_const as X
from unicorn.unicorn_py3.unicorn import uc_tlb_entry

from uvirt.board.memory.regions import MemoryMap, RamRegion
from uvirt.cpu.tlb import CR0_PG, TlbFill

_EXAMPLES = int(os.environ.get("UVIRT_HYPOTHESIS_EXAMPLES", "0"))
SETTINGS = settings(max_examples=_EXAMPLES or 60, deadline=None, derandomize=not _EXAMPLES,
                    suppress_health_check=[HealthCheck.too_slow])
PAGES = 8                                   # RAM pages 0..7, the executed ones among them


class Backend:
    def __init__(self) -> None:
        self.invalidated: list[tuple[int, int]] = []

    def invalidate_code(self, addr: int, size: int) -> None:
        self.invalidated.append((addr, size))


def machine_like():
    """The wiring ``Machine`` makes: the memory map's backend, its ``may_hold_code``, and
    the TLB sharing its set."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    errors = []
    tlb = TlbFill(uc, errors.append, fresh=True)
    mm = MemoryMap()
    mm.add(RamRegion("ram", PAGES << 12), 0)
    mm.commit()
    mm.backend = Backend()
    mm.may_hold_code = tlb.may_hold_code
    tlb.share_code_pages(mm)
    return uc, tlb, mm, errors


step = st.one_of(
    st.tuples(st.just("fill"), st.sampled_from([UC_MEM_FETCH, UC_MEM_READ, UC_MEM_WRITE]),
              st.integers(0, PAGES - 1)),
    st.tuples(st.just("cr0"), st.booleans()),
    st.tuples(st.just("sync")),
    st.tuples(st.just("take_switch")),
)
write = st.tuples(st.integers(0, (PAGES << 12) - 1), st.one_of(st.integers(1, 8), st.integers(1, 0x3000),
                                                              st.just(0x1000)))


def _decided(mm, addr, size) -> bool:
    backend = mm.backend
    backend.invalidated.clear()
    mm.invalidate_code(addr, size)
    return backend.invalidated == [(addr, size)]


@SETTINGS
@given(steps=st.lists(step, max_size=30), writes=st.lists(write, min_size=1, max_size=6), data=st.data())
def test_host_writes_ask_for_code_exactly_where_the_tlb_says_it_may_be(steps, writes, data):
    uc, tlb, mm, errors = machine_like()
    entry = uc_tlb_entry()
    for kind, *args in steps + [("close",)] * data.draw(st.integers(0, 1)):
        if kind == "fill":
            tlb._fill(None, args[1] << 12, args[0], ctypes.pointer(entry), None)
        elif kind == "cr0":
            uc.reg_write(X.UC_X86_REG_CR0, 0x11 | (CR0_PG if args[0] else 0))
        elif kind == "sync":
            tlb.sync()
        elif kind == "take_switch":
            tlb.take_switch()
        elif kind == "close":
            tlb.close()
            mm.may_hold_code = None              # as UnicornMemory.detach leaves it
            assert mm.code_pages is None
        for addr, size in writes + [(p << 12, 1) for p in range(PAGES)] + [((p << 12) - 1, 2) for p in range(1, PAGES)]:
            check = mm.may_hold_code
            expected = check is None or check(addr, size)
            assert _decided(mm, addr, size) == expected, (kind, args, hex(addr), size)
    assert errors == []


def test_a_one_page_write_outside_the_executed_pages_makes_no_call(monkeypatch):
    """The shortcut is taken (a change that lost it would still pass the comparison)."""
    uc, tlb, mm, _ = machine_like()
    tlb._fill(None, 0x3000, UC_MEM_FETCH, ctypes.pointer(uc_tlb_entry()), None)

    def called(*_a):
        raise AssertionError("may_hold_code was called")

    monkeypatch.setattr(mm, "may_hold_code", called)
    assert not _decided(mm, 0x1000, 16)
    assert not _decided(mm, 0x2FFF, 1)
    monkeypatch.undo()
    uc.reg_write(X.UC_X86_REG_CR0, 0x11 | CR0_PG)      # paging on, then off again
    assert not tlb._fill(None, 0x1000, UC_MEM_READ, ctypes.pointer(uc_tlb_entry()), None)
    assert mm.code_pages is None
    tlb.sync()
    uc.reg_write(X.UC_X86_REG_CR0, 0x11)
    tlb.sync()
    assert mm.code_pages is tlb.exec_pages
    monkeypatch.setattr(mm, "may_hold_code", called)
    assert not _decided(mm, 0x1000, 16)
