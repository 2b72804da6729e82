"""Interrupt and exception delivery through the guest's IDT, as QEMU's TCG does it
(``target/i386/tcg/seg_helper.c`` ``do_interrupt_protected``, ``excp_helper.c``
``check_exception``), for 32-bit protected mode at ring 0.

Unicorn never uses the IDT (docs/unicorn-notes.md §7 item 15), so the machine calls
``deliver()`` between two ``emu_start`` calls and applies the result.  The function is
pure: it reads the IDT, the GDT and the CPU registers through a small ``CpuView`` and
returns either ``Delivered`` (new EIP/CS/ESP/EFLAGS and the stack bytes to write) or
``TripleFault`` (the chain of events), so it is unit-tested without a CPU.

What a guest sees (QEMU 7.2, measured in tests/guest/test_interrupts.py):

* Gate checks in QEMU's order: vector beyond the IDT limit, a gate type other than
  task/286/386 interrupt/trap -> #GP(vector*8+2); not present -> #NP(vector*8+2) (no EXT
  bit, even for hardware interrupts); a null target selector -> #GP(0); a selector past
  the GDT limit, not a code segment, or DPL > CPL -> #GP(selector); code segment not
  present -> #NP(selector).
* Frame: EFLAGS, CS, EIP, then the error code for #DF, #TS, #NP, #SS, #GP, #PF, #AC
  (exceptions only: never for ``int n`` or a hardware interrupt on those vectors).
  Faults push the faulting EIP, ``int n``/``int3``/``into`` the next one; a fault
  raised while delivering pushes the EIP of the instruction being executed.
* Interrupt gates clear IF; both kinds clear TF, VM, RF and NT.
* Double faults: a contributory exception (#DE, #TS, #NP, #SS, #GP) raised while
  delivering a contributory one, or after #PF, becomes #DF (error code 0); any exception
  while delivering #DF is a triple fault.

Not modelled: task gates, a privilege change (CPL > 0 or a non-conforming segment of
lower DPL: uvirt runs ring 0 only), LDT selectors, virtual-8086 mode.  Each is reported
as ``Unsupported`` so the machine stops with a reason instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

EXC_DE, EXC_DB, EXC_NMI, EXC_BP, EXC_OF, EXC_BR, EXC_UD, EXC_NM = range(8)
EXC_DF, EXC_TS, EXC_NP, EXC_SS, EXC_GP, EXC_PF, EXC_MF, EXC_AC = 8, 10, 11, 12, 13, 14, 16, 17
HAS_ERROR_CODE = frozenset((EXC_DF, EXC_TS, EXC_NP, EXC_SS, EXC_GP, EXC_PF, EXC_AC))

IF_MASK, TF_MASK, NT_MASK, RF_MASK, VM_MASK = 1 << 9, 1 << 8, 1 << 14, 1 << 16, 1 << 17
DESC_P, DESC_S, DESC_CS, DESC_C = 1 << 15, 1 << 12, 1 << 11, 1 << 10

NAMES = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM",
         8: "#DF", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF",
         17: "#AC", 18: "#MC", 19: "#XM"}


class Kind(Enum):
    EXCEPTION = "exception"      # raised by an instruction: EIP = the instruction
    SOFTWARE = "software"        # int n, int3, into: EIP = the next instruction
    HARDWARE = "hardware"        # PIC/APIC: EIP = where the CPU was interrupted


class CpuView(Protocol):
    eflags: int
    cs: int
    esp: int
    idt: tuple[int, int]         # base, limit
    gdt: tuple[int, int]

    def read(self, addr: int, size: int) -> bytes: ...


@dataclass(frozen=True)
class Event:
    vector: int
    error_code: int | None       # None: none pushed

    def __str__(self) -> str:
        name = NAMES.get(self.vector, f"vector 0x{self.vector:02x}")
        if self.vector not in NAMES:
            return name
        return name if self.error_code is None else f"{name}(0x{self.error_code:x})"


@dataclass(frozen=True)
class Delivered:
    vector: int
    eip: int
    cs: int
    esp: int
    eflags: int
    stack: bytes                 # written at ``esp`` (the new ESP)
    chain: tuple[Event, ...] = ()


@dataclass(frozen=True)
class TripleFault:
    chain: tuple[Event, ...]

    def __str__(self) -> str:
        return " -> ".join(str(e) for e in self.chain)


@dataclass(frozen=True)
class Unsupported:
    reason: str
    chain: tuple[Event, ...] = field(default=())


class _Fault(Exception):
    def __init__(self, vector: int, error: int) -> None:
        self.vector, self.error = vector, error


def check_exception(old: int, intno: int, error: int) -> tuple[int, int, int]:
    """QEMU's ``check_exception``: -> (vector, error code, new old_exception); vector -1
    is a triple fault."""
    if old == EXC_DF:
        return -1, 0, old
    first = old == EXC_DE or EXC_TS <= old <= EXC_GP
    second = intno == EXC_DE or EXC_TS <= intno <= EXC_GP
    if (first and second) or (old == EXC_PF and (second or intno == EXC_PF)):
        intno, error = EXC_DF, 0
    if second or intno in (EXC_PF, EXC_DF):
        old = intno
    return intno, error, old


def _u32(cpu: CpuView, addr: int) -> int:
    return int.from_bytes(cpu.read(addr & 0xFFFFFFFF, 4), "little")


def _protected(cpu: CpuView, intno: int, kind: Kind, error: int, eip: int, next_eip: int):
    is_int = kind is Kind.SOFTWARE
    idt_base, idt_limit = cpu.idt
    if intno * 8 + 7 > idt_limit:
        raise _Fault(EXC_GP, intno * 8 + 2)
    e1 = _u32(cpu, idt_base + intno * 8)
    e2 = _u32(cpu, idt_base + intno * 8 + 4)
    gate_type = (e2 >> 8) & 0x1F
    if gate_type not in (5, 6, 7, 14, 15):
        raise _Fault(EXC_GP, intno * 8 + 2)
    cpl = cpu.cs & 3
    if is_int and (e2 >> 13) & 3 < cpl:
        raise _Fault(EXC_GP, intno * 8 + 2)
    if gate_type == 5:
        return Unsupported(f"task gate at vector 0x{intno:02x}")
    if not e2 & DESC_P:
        raise _Fault(EXC_NP, intno * 8 + 2)
    selector = e1 >> 16
    offset = (e2 & 0xFFFF0000) | (e1 & 0xFFFF)
    if not selector & 0xFFFC:
        raise _Fault(EXC_GP, 0)
    gdt_base, gdt_limit = cpu.gdt
    index = selector & ~7
    if selector & 4 or index + 7 > gdt_limit:     # LDT: none is loaded (limit 0)
        raise _Fault(EXC_GP, selector & 0xFFFC)
    d2 = _u32(cpu, gdt_base + index + 4)
    if not d2 & DESC_S or not d2 & DESC_CS:
        raise _Fault(EXC_GP, selector & 0xFFFC)
    dpl = (d2 >> 13) & 3
    if dpl > cpl:
        raise _Fault(EXC_GP, selector & 0xFFFC)
    if not d2 & DESC_P:
        raise _Fault(EXC_NP, selector & 0xFFFC)
    if not d2 & DESC_C and dpl < cpl:
        return Unsupported("interrupt to an inner privilege level (uvirt runs ring 0 only)")
    if not d2 & DESC_C:
        pass
    else:
        dpl = cpl                             # conforming: stay at the current level
    if cpu.eflags & VM_MASK:
        raise _Fault(EXC_GP, selector & 0xFFFC)
    shift = gate_type >> 3                    # 1: 32-bit gate, 0: 286 gate
    has_error = kind is Kind.EXCEPTION and intno in HAS_ERROR_CODE
    old_eip = next_eip if is_int else eip
    words = [cpu.eflags, cpu.cs, old_eip] + ([error] if has_error else [])
    size = 4 if shift else 2
    mask = 0xFFFFFFFF if shift else 0xFFFF
    esp = (cpu.esp - size * len(words)) & 0xFFFFFFFF
    stack = b"".join((w & mask).to_bytes(size, "little") for w in reversed(words))
    eflags = cpu.eflags
    if not gate_type & 1:
        eflags &= ~IF_MASK
    eflags &= ~(TF_MASK | VM_MASK | RF_MASK | NT_MASK)
    new_eip = offset if shift else offset & 0xFFFF
    return Delivered(intno, new_eip, (selector & ~3) | dpl, esp, eflags, stack)


AC_MASK = 1 << 18


def deliver_real(cpu: CpuView, vector: int, kind: Kind, *, eip: int, next_eip: int | None = None,
                 ss: int = 0) -> Delivered | TripleFault:
    """Real mode (QEMU ``do_interrupt_real``): FLAGS, CS, IP pushed as words at SS:SP,
    CS:IP from the IVT entry at IDTR.base + 4 * vector, IF/TF/AC/RF cleared.  An entry
    beyond the IDTR limit is #GP, which in real mode cannot be delivered either: a
    triple fault.  ``Delivered.esp`` is the new SP; the stack bytes go at SS*16 + SP."""
    if next_eip is None:
        next_eip = eip
    base, limit = cpu.idt
    if vector * 4 + 3 > limit:
        return TripleFault((Event(vector, None), Event(EXC_GP, vector * 8 + 2)))
    entry = _u32(cpu, base + vector * 4)
    old_ip = (next_eip if kind is Kind.SOFTWARE else eip) & 0xFFFF
    words = [cpu.eflags, cpu.cs, old_ip]
    sp = (cpu.esp - 6) & 0xFFFF
    stack = b"".join((w & 0xFFFF).to_bytes(2, "little") for w in reversed(words))
    eflags = cpu.eflags & ~(IF_MASK | TF_MASK | AC_MASK | RF_MASK)
    return Delivered(vector, entry & 0xFFFF, entry >> 16, (cpu.esp & ~0xFFFF) | sp, eflags, stack,
                     (Event(vector, None),))


def deliver(cpu: CpuView, vector: int, kind: Kind, *, eip: int, next_eip: int | None = None,
            error_code: int = 0) -> Delivered | TripleFault | Unsupported:
    """Deliver ``vector`` through the IDT.  ``eip`` is the address of the instruction
    being executed (the faulting one, the ``int n``, or the interrupted one);
    ``next_eip`` the one after it (software interrupts)."""
    if next_eip is None:
        next_eip = eip
    old = -1
    error = error_code
    if kind is Kind.EXCEPTION:
        vector, error, old = check_exception(old, vector, error)
    chain: list[Event] = []
    while True:
        has_error = kind is Kind.EXCEPTION and vector in HAS_ERROR_CODE
        chain.append(Event(vector, error if has_error else None))
        try:
            result = _protected(cpu, vector, kind, error, eip, next_eip)
        except _Fault as f:
            vector, error, old = check_exception(old, f.vector, f.error)
            kind = Kind.EXCEPTION
            if vector < 0:
                chain.append(Event(f.vector, f.error))
                return TripleFault(tuple(chain))
            continue
        if isinstance(result, Unsupported):
            return Unsupported(result.reason, tuple(chain))
        return Delivered(result.vector, result.eip, result.cs, result.esp, result.eflags,
                         result.stack, tuple(chain))
