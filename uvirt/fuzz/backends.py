"""Two ways to run the same operations (uvirt/fuzz/ops.py) on a ``FuzzTarget``.

``GuestBackend`` (the default) compiles the primitives to 32-bit x86 machine code —
``mov``/``in``/``out`` with absolute operands, emitted as bytes (no assembler per input) —
writes it to guest RAM and lets the CPU run it: the device sees real guest instructions,
through Unicorn's MMIO callbacks and port hooks.  Each read's value is stored to a results
array in guest RAM.  A ``wait`` is a ``hlt`` (with IF=0 the run stops there; the harness
lets pending device work finish, as a guest waiting would, and resumes).  Each stretch of
code up to a ``hlt`` runs with an instruction budget (``Machine.run(max_insns=...)``,
Unicorn's count): the instructions compiled for it plus ``INSN_SLACK``.  The code is
straight-line, so only a guest whose code was changed under it (a device's DMA into the
code area) can exceed it: that is a hang, found without looking at a clock.

``BoardBackend`` calls the board directly (port space, memory map, ``GuestMemory``) with
no CPU: faster, and the reference the guest backend is checked against.

An 8-byte MMIO access is two 4-byte ones in both (Unicorn hands a ``movq`` to MMIO as two
callbacks, docs/unicorn-notes.md §7 item 6).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from uvirt.fuzz.ops import CODE_BASE, RESULTS_BASE, Op

_OUT = {1: b"\xEE", 2: b"\x66\xEF", 4: b"\xEF"}
_IN = {1: b"\xEC", 2: b"\x66\xED", 4: b"\xED"}
_STORE = {1: b"\xA2", 2: b"\x66\xA3", 4: b"\xA3"}         # mov [moffs32], al/ax/eax
_LOAD = {1: b"\xA0", 2: b"\x66\xA1", 4: b"\xA1"}          # mov al/ax/eax, [moffs32]
XOR_EAX = b"\x31\xC0"
CLI_HLT = b"\xFA\xF4"
MAX_RESULTS = 0x4000
#: instructions a stretch of compiled code may run beyond its own count before it is a
#: hang (the count is exact for straight-line code; the slack only makes a looping guest
#: cost a few microseconds more)
INSN_SLACK = 10_000
#: instructions each primitive compiles to
_INSNS = {"pio_w": 3, "pio_r": 4, "mem_w": 2, "mem_r": 3, "wait": 2}


@dataclass
class RunResult:
    reads: list[int] = field(default_factory=list)
    stop: object = None          # the machine's StopInfo (guest backend)
    hang: bool = False


def _i32(v: int) -> bytes:
    return struct.pack("<I", v & 0xFFFFFFFF)


@dataclass
class Compiled:
    code: bytes
    resumes: dict[int, int]     # code offset right after a wait's halt -> ns to step
    nread: int                  # reads, each stored to the results array
    insns: list[int]            # instructions of each stretch, up to and including its hlt

    def __iter__(self):         # code, resumes, nread = compile_ops(ops)
        return iter((self.code, self.resumes, self.nread))


def compile_ops(ops: list[Op]) -> Compiled:
    """Machine code for ``ops``; the offsets right after each ``wait`` halt; the number of
    reads; the instruction count of each stretch between halts.  The code ends in
    ``cli; hlt``."""
    code = bytearray()
    resumes: dict[int, int] = {}
    insns: list[int] = []
    nread = n = 0
    for op in ops:
        for p in op.prims:
            k = p[0]
            n += _INSNS.get(k, 0) or (len(p[2]) // 4 + len(p[2]) % 4)     # "ram": stores
            if k == "pio_w":
                code += b"\xBA" + _i32(p[1]) + b"\xB8" + _i32(p[3]) + _OUT[p[2]]
            elif k == "pio_r":
                code += XOR_EAX + b"\xBA" + _i32(p[1]) + _IN[p[2]]
                code += b"\xA3" + _i32(RESULTS_BASE + 4 * (nread % MAX_RESULTS))
                nread += 1
            elif k == "mem_w":
                code += b"\xB8" + _i32(p[3]) + _STORE[p[2]] + _i32(p[1])
            elif k == "mem_r":
                code += XOR_EAX + _LOAD[p[2]] + _i32(p[1])
                code += b"\xA3" + _i32(RESULTS_BASE + 4 * (nread % MAX_RESULTS))
                nread += 1
            elif k == "ram":
                addr, data = p[1], p[2]
                i = 0
                while i + 4 <= len(data):
                    code += b"\xC7\x05" + _i32(addr + i) + data[i:i + 4]
                    i += 4
                while i < len(data):
                    code += b"\xC6\x05" + _i32(addr + i) + data[i:i + 1]
                    i += 1
            elif k == "wait":
                code += CLI_HLT
                resumes[len(code)] = p[1]
                insns.append(n)
                n = 0
    code += CLI_HLT
    insns.append(n + 2)
    return Compiled(bytes(code), resumes, nread, insns)


class BoardBackend:
    name = "board"

    def __init__(self, target) -> None:
        self.target = target
        m = target.machine
        self._io, self._mem, self._guest, self._work = m.io, m.memory, m.memory.guest, m.work

    def run(self, ops: list[Op], on_op=None) -> RunResult:
        io, mem, guest, work = self._io, self._mem, self._guest, self._work
        step = self.target.step
        reads: list[int] = []
        for op in ops:
            for p in op.prims:
                k = p[0]
                if k == "pio_w":
                    io.write(p[1], p[2], p[3])
                elif k == "pio_r":
                    reads.append(io.read(p[1], p[2]) & ((1 << (8 * p[2])) - 1))
                elif k == "mem_w":
                    mem.write(p[1], p[2], p[3])
                elif k == "mem_r":
                    reads.append(mem.read(p[1], p[2]) & ((1 << (8 * p[2])) - 1))
                elif k == "ram":
                    guest.write(p[1], p[2])
                elif k == "wait":
                    work.drain()
                    step(p[1])
            if on_op is not None:
                on_op(op, reads)
        work.drain()
        return RunResult(reads)


class GuestBackend:
    name = "guest"

    def __init__(self, target, *, wall_limit: float | None = None) -> None:
        """``wall_limit``: seconds of wall clock for a whole input, the last resort for a
        guest that halts with interrupts enabled (it runs no instructions and uses no CPU);
        None: no limit (under libFuzzer its ``-timeout`` is that last resort)."""
        if target.machine.uc is None:
            raise ValueError("the guest backend needs a machine with a CPU")
        self.target = target
        self.wall_limit = wall_limit
        guest = target.machine.memory.guest
        self._write = type(guest).write.__get__(guest)      # not a device's DMA (oracles)

    def run(self, ops: list[Op], on_op=None) -> RunResult:
        m = self.target.machine
        c = compile_ops(ops)
        self._write(CODE_BASE, c.code)
        end = CODE_BASE + len(c.code)
        m.uc.reg_write(_EIP, CODE_BASE)
        stop = None
        stretch = 0
        while True:
            stop = m.run(timeout=self.wall_limit, max_insns=c.insns[stretch] + INSN_SLACK)
            m.resume_device_work()        # device work may run between runs (settle)
            if stop.reason.name != "HALTED":
                break
            eip = m.uc.reg_read(_EIP)
            if eip == end:
                break
            ns = c.resumes.get(eip - CODE_BASE)
            if ns is None:
                break
            stretch = min(stretch + 1, len(c.insns) - 1)
            m.work.drain()
            self.target.step(ns)
        m.work.drain()
        n = min(c.nread, MAX_RESULTS)
        raw = bytes(m.ram.buffer.view[RESULTS_BASE:RESULTS_BASE + 4 * n])
        reads = list(struct.unpack(f"<{n}I", raw))
        return RunResult(reads, stop, hang=stop.reason.name in ("INSN_BUDGET", "TIMEOUT"))


from unicorn import x86_const as _X  # noqa: E402  (only the guest backend needs Unicorn)

_EIP = _X.UC_X86_REG_EIP
