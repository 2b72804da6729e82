"""CPU registers and memory through Unicorn's C API, for the run loop's hot paths.

The binding's ``reg_read`` picks a register class for every call (``_select_reg_class``)
and marshals through three Python frames: about 1.9 us a register here, against 0.4 us
for ``uc_reg_read`` called directly.  Delivering one interrupt reads or writes about a
dozen registers and descriptor-table entries, so the binding cost most of an MSI round
trip (benchmarks/bench_interrupts.py; ``python -m benchmarks --profile interrupt``).

Only plain 32-bit registers go through here: EIP, ESP, EFLAGS, the general registers,
and the selectors of the segment registers (``selector``, read only: loading a segment
register goes through the binding, which makes Unicorn load the descriptor).  If the pinned binding's
internals ever move, every method falls back to the binding: same results, slower.
"""

from __future__ import annotations

import ctypes
import struct
import threading

from unicorn import UcError

from uvirt.cpu.uc_hooks import CAPI, engine

try:
    from unicorn.unicorn_py3.arch.intel import UcRegMMR as _MMR
except ImportError:
    _MMR = None

#: ``write_many``'s value slots: a ``uc_x86_mmr`` (u16 selector, u64 base, u32 limit,
#: u32 flags: 24 bytes) or a u64 register value
_SLOT = 24
_MMR_FMT = struct.Struct("<H6xQII")
_U64 = struct.Struct("<Q")
_BATCH = 32               # registers per uc_reg_*_batch call (longer lists take several)


class FastRegs:
    def __init__(self, uc) -> None:
        self.uc = uc
        uch = engine(uc)
        if uch is None or _MMR is None:
            self._h = None
            return
        self._h = ctypes.c_void_p(uch.value if hasattr(uch, "value") else uch)
        lib = CAPI.lib
        self._reg_read = lib.uc_reg_read
        self._reg_write = lib.uc_reg_write
        self._mem_read = lib.uc_mem_read
        self._mem_write = lib.uc_mem_write
        self._mmr_type = _MMR
        self._val = ctypes.c_uint64()
        self._val_p = ctypes.byref(self._val)
        self._mmr = _MMR()
        self._mmr_p = ctypes.byref(self._mmr)
        self._write_batch = lib.uc_reg_write_batch
        self._read_batch = lib.uc_reg_read_batch

    def read(self, reg: int) -> int:
        """A 32-bit register: Unicorn writes the low 4 bytes of the buffer, whose high 4
        are always 0 (``write`` stores 32-bit values only)."""
        if self._h is None:
            return self.uc.reg_read(reg)
        if self._reg_read(self._h, reg, self._val_p):
            return self.uc.reg_read(reg)      # raises the binding's error
        return self._val.value

    def selector(self, reg: int) -> int:
        """A segment register's 16-bit selector."""
        return self.read(reg) & 0xFFFF

    def write(self, reg: int, value: int) -> None:
        """A 32-bit general register, EIP, ESP, EFLAGS or a control register; a segment
        register gets the selector, and Unicorn loads its descriptor from guest memory
        as the binding's ``reg_write`` makes it do (the same C call)."""
        if self._h is None:
            self.uc.reg_write(reg, value)
            return
        self._val.value = value & 0xFFFFFFFF
        if self._reg_write(self._h, reg, self._val_p):
            self.uc.reg_write(reg, value)     # raises the binding's error

    def table(self, reg: int) -> tuple[int, int]:
        """(base, limit) of GDTR or IDTR."""
        if self._h is None:
            _sel, base, limit, _flags = self.uc.reg_read(reg)
            return base, limit
        status = self._reg_read(self._h, reg, self._mmr_p)
        if status:
            raise UcError(status)
        return self._mmr.base, self._mmr.limit

    def set_table(self, reg: int, base: int, limit: int) -> None:
        """Load GDTR or IDTR (``(0, base, limit, 0)`` through the binding)."""
        if self._h is None:
            self.uc.reg_write(reg, (0, base, limit, 0))
            return
        mmr = self._mmr
        mmr.selector, mmr.base, mmr.limit, mmr.flags = 0, base, limit, 0
        if self._reg_write(self._h, reg, self._mmr_p):
            self.uc.reg_write(reg, (0, base, limit, 0))     # raises the binding's error

    def write_many(self, writes) -> None:
        """``((reg, value), ...)`` written in order, ``value`` an int as ``write`` takes
        (32 bits) or ``(base, limit)`` for GDTR/IDTR as ``set_table`` takes, in one
        ``uc_reg_write_batch``: the same C writes, one after the other, as one
        ``uc_reg_write`` each (unicorn's uc.c), for one call instead of one per register
        (a boot's entry state is twenty).  A refused write raises and leaves the ones
        before it done, as a sequence of ``write`` calls would."""
        if self._h is None:
            for reg, value in writes:
                if type(value) is tuple:
                    self.set_table(reg, *value)
                else:
                    self.write(reg, value & 0xFFFFFFFF)
            return
        args = _batch_args()
        ids, slots = args.ids, args.slots
        for first in range(0, len(writes), _BATCH):
            chunk = writes[first:first + _BATCH]
            for i, (reg, value) in enumerate(chunk):
                ids[i] = reg
                if type(value) is tuple:       # uc_x86_mmr: selector, base, limit, flags
                    _MMR_FMT.pack_into(slots, _SLOT * i, 0, value[0], value[1], 0)
                else:
                    _U64.pack_into(slots, _SLOT * i, value & 0xFFFFFFFF)
            status = self._write_batch(self._h, ids, args.ptrs, len(chunk))
            if status:
                raise UcError(status)

    def read_many(self, regs) -> list[int]:
        """32-bit registers (as ``read``), in one ``uc_reg_read_batch``."""
        if self._h is None or len(regs) > _BATCH:
            return [self.read(reg) for reg in regs]
        args = _batch_args()
        ids, slots, n = args.ids, args.slots, len(regs)
        for i, reg in enumerate(regs):
            ids[i] = reg
        ctypes.memset(slots, 0, _SLOT * n)     # a narrower register leaves the rest 0
        status = self._read_batch(self._h, ids, args.ptrs, n)
        if status:
            raise UcError(status)
        return slots[0:_SLOT // 8 * n:_SLOT // 8]

    def mem_read(self, addr: int, size: int) -> bytes:
        if self._h is None:
            return bytes(self.uc.mem_read(addr, size))
        buf = ctypes.create_string_buffer(size)
        status = self._mem_read(self._h, addr, buf, size)
        if status:
            raise UcError(status)
        return buf.raw

    def mem_write(self, addr: int, data: bytes) -> None:
        if self._h is None:
            self.uc.mem_write(addr, data)
            return
        status = self._mem_write(self._h, addr, data, len(data))
        if status:
            raise UcError(status)


_THREAD = threading.local()


def _batch_args():
    """The register batches' C arguments (register ids; value slots, ``_SLOT`` bytes
    each; a pointer to each slot), one set per thread: made once (about 8 us: more than
    a boot's batches save if made per CPU), and a thread's batches never overlap (the
    C call runs no Python that makes another)."""
    args = getattr(_THREAD, "regs_batch", None)
    if args is None:
        args = _THREAD.regs_batch = _BatchArgs()
    return args


class _BatchArgs:
    __slots__ = ("ids", "slots", "ptrs")

    def __init__(self) -> None:
        self.ids = (ctypes.c_int * _BATCH)()
        self.slots = (ctypes.c_uint64 * (_BATCH * _SLOT // 8))()
        base = ctypes.addressof(self.slots)
        self.ptrs = (ctypes.c_void_p * _BATCH)(*range(base, base + _SLOT * _BATCH, _SLOT))
