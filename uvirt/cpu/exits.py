"""Stops at translation-block boundaries, as QEMU takes them.

Why this exists.  Unicorn 2.1.4 compiles a check for a pending stop after *every* guest
memory access (``check_exit_request`` in tcg-op.c's qemu_ld/st) and, when one is
pending, abandons the instruction: state is restored to its start and it runs again on
the next ``emu_start``.  Whatever the access already did stays done.  A stop requested
from another thread (a timer tick, a device thread's interrupt, the host kicking the CPU)
can land between an instruction's store and that check, so ``inc dword [mem]``,
``add [mem], r``, ``xchg`` and the like execute twice: measured 800 extra increments in
2 M ``inc`` under a 50 kHz stop storm (tests/guest/test_cpu_memory.py), and a guest's test
counter off by one in the suite.  The MMIO form of the same restart is what
``uc_memory.ReplayGuard`` absorbs.

QEMU never does this: a stop (``cpu_exit``) is noticed at the start of the next
translation block.  Unicorn has the switch for it, ``uc->no_exit_request`` (used for ARM
IT blocks): while it is set, translation emits no per-access checks, and only the
check at each block's start remains.  It is not in Unicorn's API, so this module finds
the field once per process in a forked child (a wrong guess must not crash the
machine): the bytes of ``target_page_size``/``target_page_align``/host page sizes a few
fields before it identify the spot, and a probe run confirms the effect (an MMIO
callback that stops the CPU: without the flag the instruction is abandoned, with it the
block runs to its end).  If anything does not match (another Unicorn build), uvirt keeps
Unicorn's behaviour and ReplayGuard.

The flag is read at translation time, so changing it flushes translated code.  Code
hooks need the per-instruction check to stop *before* an instruction (uvirt's interrupt
single-stepping, ``emu_start(count=)``), so the machine clears the flag while those run.
"""
from __future__ import annotations

import ctypes
import struct

from uvirt.child import run_in_child

# uc_struct (include/uc_priv.h, 2.1.4):
#   uint32_t target_page_size, target_page_align; uint64_t qemu_host_page_size,
#   qemu_real_host_page_size; int qemu_icache_linesize; uc_context_content context_content;
#   int cpu_context_size; uint64_t next_pc; bool hook_insert, first_tb, no_exit_request,
#   init_done;
_ANCHOR = struct.pack("<IIQQ", 0x1000, 0xFFF, 0x1000, 0x1000)
_FLAG_FROM_ANCHOR = 50
_SCAN = 0x2000            # the anchor sits ~5 KiB in; the struct is over 17 KiB long

_offset: int | None | bool = False      # False: not probed yet


def _engine_address(uc) -> int:
    """Where the ``uc_struct`` behind a binding ``Uc`` lives."""
    uch = uc._uch       # a c_void_p: ctypes.cast would leave a self-referencing temporary
    return uch.value if isinstance(uch, ctypes.c_void_p) else ctypes.cast(uch, ctypes.c_void_p).value


def flag_offset() -> int | None:
    """Offset of ``no_exit_request`` in this process's Unicorn, or None if not found."""
    global _offset
    if _offset is False:
        _offset = _probe_in_child()
    return _offset


class TbEndExits:
    """Turns Unicorn's per-access stop checks off (``on``) and on again for one CPU."""

    def __init__(self, uc, offset: int) -> None:
        self.uc = uc
        self._addr = _engine_address(uc) + offset
        self.on = False

    @classmethod
    def for_uc(cls, uc) -> "TbEndExits | None":
        offset = flag_offset()
        if offset is None:
            return None
        anchor = _engine_address(uc) + offset - _FLAG_FROM_ANCHOR
        if ctypes.string_at(anchor, len(_ANCHOR)) != _ANCHOR:
            return None
        return cls(uc, offset)

    def set(self, on: bool, *, translated: bool = True) -> None:
        """Takes effect for code translated from now on: flush translated code.
        ``translated=False``: the CPU has translated nothing yet (a new one), so there is
        nothing to flush (~12 us of every machine's creation)."""
        if on != self.on:
            ctypes.memmove(self._addr, b"\x01" if on else b"\x00", 1)
            self.on = on
            if translated:
                self.uc.ctl_flush_tb()


def _find(uc) -> int | None:
    data = ctypes.string_at(_engine_address(uc), _SCAN)
    pos = data.find(_ANCHOR)
    while pos >= 0:
        flags = data[pos + 48:pos + 52]           # hook_insert first_tb no_exit_request init_done
        if pos % 8 == 0 and flags[0] == 0 and flags[2] == 0 and flags[3] == 1:
            return pos + _FLAG_FROM_ANCHOR
        pos = data.find(_ANCHOR, pos + 1)
    return None


def _stop_effect(offset: int | None) -> int:
    """ebx after ``mov eax, [mmio]; mov ebx, 0x1234; hlt`` whose MMIO read stops the CPU:
    0 when Unicorn abandons the instruction, 0x1234 when the block runs on."""
    from unicorn import UC_ARCH_X86, UC_MODE_32, Uc
    from unicorn.x86_const import UC_X86_REG_EBX
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0x1000, 0x1000)
    if offset is not None:
        ctypes.memmove(_engine_address(uc) + offset, b"\x01", 1)

    def read(u, _off, _size, _ud):
        u.emu_stop()
        return 0

    uc.mmio_map(0x2000, 0x1000, read, None, None, None)
    code = bytes.fromhex("a100200000" "bb34120000" "f4")
    uc.mem_write(0x1000, code)
    uc.emu_start(0x1000, 0x1000 + len(code))
    return uc.reg_read(UC_X86_REG_EBX)


def _probe_here() -> int | None:
    from unicorn import UC_ARCH_X86, UC_MODE_32, Uc
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0x1000, 0x1000)                    # any call completes Unicorn's init
    offset = _find(uc)
    if offset is None or _stop_effect(None) != 0 or _stop_effect(offset) != 0x1234:
        return None
    return offset


def _probe_in_child() -> int | None:
    answer = run_in_child(lambda: str(_probe_here()))
    try:
        return int(answer)
    except ValueError:
        return None                               # not found ("None"), or the child crashed
