"""System Management Mode, as QEMU 7.2's TCG CPU (qemu-system-x86_64) enters and leaves it.

QEMU: target/i386/tcg/sysemu/smm_helper.c ``do_smm_enter`` / ``helper_rsm`` (the
TARGET_X86_64 state-save layout, revision 0x00020064), target/i386/tcg/sysemu/
seg_helper.c ``x86_cpu_exec_interrupt`` (an SMI is taken before any other interrupt,
whatever IF says, and never while in SMM), hw/isa/apm.c + hw/acpi/piix4.c
``apm_ctrl_changed`` (a write to port 0xB2 raises it while PIIX4 DEVACTB.APMC_EN is set),
hw/pci-host/i440fx.c (SMRAM G_SMRAME: the CPU in SMM sees RAM at 0xA0000-0xBFFFF).

Why uvirt needs it: QEMU's default firmware for ``pc``, SeaBIOS's bios-256k.bin, moves
SMBASE from 0x30000 to 0xA0000 with one SMI at start-up, and then runs its 16-bit to
32-bit calls (``call32_smm``) through SMIs: the handler swaps the saved state for a 32-bit
flat one and RSM lands there (81 SMIs before a virtio-blk boot sector's INT 13h reads
end, measured with QEMU's ``-d int``).

State-save area (SMBASE + 0x8000 + offset), written on entry, read back by RSM::

    0x7e00 + 16*i  segment i (ES CS SS DS FS GS): u16 selector, u16 attributes
                   ((flags >> 8) & 0xf0ff), u32 limit, u64 base
    0x7e64/0x7e68  GDTR limit (u32) / base (u64)
    0x7e70..0x7e78 LDTR selector, attributes, limit, base (same shape)
    0x7e84/0x7e88  IDTR limit / base
    0x7e90..0x7e98 TR selector, attributes, limit, base
    0x7ed0         EFER (u64)
    0x7efc         SMM revision ID (0x00020064: bit 17, SMBASE relocation, is set)
    0x7f00         SMBASE (u32; RSM loads a new one from here)
    0x7f48 CR4, 0x7f50 CR3 (u64), 0x7f58 CR0, 0x7f60 DR7, 0x7f68 DR6, 0x7f70 EFLAGS
    0x7f78         RIP (u64)
    0x7ff8 - 8*i   general register i (RAX RCX RDX RBX RSP RBP RSI RDI R8..R15), u64

Bytes of the area QEMU does not write are left as they were.

Unicorn has no SMM of its own (its RSM raises #UD, it never takes an SMI, and it cannot
load a segment's hidden part directly): the machine takes the SMI between two runs, does
what ``do_smm_enter`` does here, and treats the #UD of an RSM (0F AA) inside SMM as the
RSM.  Segment caches are loaded as Unicorn can: from a descriptor built from the cache,
through a one-entry table in scratch RAM (``load_segments``), which gives the same base,
limit and attributes (and so the same big-real-mode limits as QEMU's entry state).  What
entry saves for a segment is what the CPU holds as far as Unicorn shows it: in protected
mode the descriptor the selector names (read at the table's base as a physical address:
a paging guest whose GDT is not identity-mapped is not covered), in real mode selector
* 16 with a 64 KiB limit.  Not modelled: NMI blocking in SMM (uvirt has no NMI), I/O
instruction restart and auto-halt restart fields, a TSEG.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from unicorn import UcError
from unicorn import x86_const as X

SMM_REVISION_ID = 0x00020064
SMBASE_RESET = 0x30000
SMBASE_RELOCATION = 0x20000              # revision ID bit 17: RSM loads a new SMBASE
STATE_BASE = 0x8000                      # sm_state = SMBASE + 0x8000

SEG_OFFSET = 0x7E00                      # + 16 * i, QEMU's segment order
GDTR_LIMIT, GDTR_BASE = 0x7E64, 0x7E68
LDTR = 0x7E70                            # selector; attributes +2, limit +4, base +8
IDTR_LIMIT, IDTR_BASE = 0x7E84, 0x7E88
TR = 0x7E90
EFER = 0x7ED0
REVISION = 0x7EFC
SMBASE = 0x7F00
CR4, CR3, CR0, DR7, DR6, EFLAGS, RIP = 0x7F48, 0x7F50, 0x7F58, 0x7F60, 0x7F68, 0x7F70, 0x7F78
GPR_TOP = 0x7FF8                         # - 8 * i

#: QEMU's segment order (R_ES .. R_GS) and general-register order (R_EAX .. R_EDI)
SEGMENTS = (X.UC_X86_REG_ES, X.UC_X86_REG_CS, X.UC_X86_REG_SS, X.UC_X86_REG_DS,
            X.UC_X86_REG_FS, X.UC_X86_REG_GS)
GPRS = (X.UC_X86_REG_EAX, X.UC_X86_REG_ECX, X.UC_X86_REG_EDX, X.UC_X86_REG_EBX,
        X.UC_X86_REG_ESP, X.UC_X86_REG_EBP, X.UC_X86_REG_ESI, X.UC_X86_REG_EDI)
MSR_EFER = 0xC0000080

CR0_PE, CR0_EM, CR0_TS, CR0_PG = 1, 1 << 2, 1 << 3, 1 << 31
# descriptor flag bits, as QEMU keeps them (the descriptor's high dword)
DESC_A, DESC_W, DESC_S, DESC_P, DESC_G = 1 << 8, 1 << 9, 1 << 12, 1 << 15, 1 << 23
DESC_CS = 1 << 11
#: QEMU's entry state: every segment a present, writable, accessed, 4 GiB data segment
ENTRY_SEG_FLAGS = DESC_P | DESC_S | DESC_W | DESC_G | DESC_A
#: real mode as QEMU's load_seg_vm leaves a segment (CS also shows as code: 0x9b00)
REAL_DATA_FLAGS, REAL_CODE_FLAGS = 0x9300, 0x9B00


@dataclass
class Segment:
    selector: int
    base: int
    limit: int
    flags: int                           # QEMU's SegmentCache.flags

    def attributes(self) -> int:
        return (self.flags >> 8) & 0xF0FF


@dataclass
class CpuState:
    """What the state-save area holds (QEMU's ``CPUX86State`` fields it touches)."""
    gprs: list[int]                      # EAX ECX EDX EBX ESP EBP ESI EDI
    eip: int
    eflags: int
    cr0: int
    cr3: int
    cr4: int
    dr6: int
    dr7: int
    efer: int
    segments: list[Segment]              # ES CS SS DS FS GS
    gdt: tuple[int, int]                 # base, limit
    idt: tuple[int, int]
    ldt: Segment
    tr: Segment
    extra: dict[int, int] = field(default_factory=dict)    # R8..R15 (always 0 here)


def _seg_fields(offset: int, seg: Segment) -> list[tuple[int, bytes]]:
    return [(offset, struct.pack("<HHI", seg.selector, seg.attributes(), seg.limit & 0xFFFFFFFF)),
            (offset + 8, struct.pack("<Q", seg.base))]


def state_save_writes(state: CpuState, smbase: int) -> list[tuple[int, bytes]]:
    """``do_smm_enter``'s stores: (offset from SMBASE + 0x8000, bytes), nothing else."""
    w: list[tuple[int, bytes]] = []
    for i, seg in enumerate(state.segments):
        w += _seg_fields(SEG_OFFSET + 16 * i, seg)
    w.append((GDTR_BASE, struct.pack("<Q", state.gdt[0])))
    w.append((GDTR_LIMIT, struct.pack("<I", state.gdt[1])))
    ldt, tr = state.ldt, state.tr
    w += [(LDTR, struct.pack("<HH", ldt.selector, ldt.attributes())),
          (LDTR + 4, struct.pack("<I", ldt.limit)), (LDTR + 8, struct.pack("<Q", ldt.base))]
    w.append((IDTR_BASE, struct.pack("<Q", state.idt[0])))
    w.append((IDTR_LIMIT, struct.pack("<I", state.idt[1])))
    w += [(TR, struct.pack("<HH", tr.selector, tr.attributes())),
          (TR + 4, struct.pack("<I", tr.limit)), (TR + 8, struct.pack("<Q", tr.base))]
    w.append((EFER, struct.pack("<Q", state.efer)))
    for i, value in enumerate(state.gprs):
        w.append((GPR_TOP - 8 * i, struct.pack("<Q", value)))
    for i in range(8, 16):
        w.append((GPR_TOP - 8 * i, struct.pack("<Q", state.extra.get(i, 0))))
    w += [(RIP, struct.pack("<Q", state.eip)), (EFLAGS, struct.pack("<I", state.eflags)),
          (DR6, struct.pack("<I", state.dr6)), (DR7, struct.pack("<I", state.dr7)),
          (CR4, struct.pack("<I", state.cr4)), (CR3, struct.pack("<Q", state.cr3)),
          (CR0, struct.pack("<I", state.cr0)),
          (REVISION, struct.pack("<I", SMM_REVISION_ID)), (SMBASE, struct.pack("<I", smbase))]
    return w


def parse_state_save(area: bytes) -> tuple[CpuState, int | None]:
    """``helper_rsm``'s loads from the 0x200 bytes at SMBASE + 0xFE00: the state RSM
    returns to, and the new SMBASE (None unless the revision ID allows relocation)."""
    def u16(o): return struct.unpack_from("<H", area, o - SEG_OFFSET)[0]
    def u32(o): return struct.unpack_from("<I", area, o - SEG_OFFSET)[0]
    def u64(o): return struct.unpack_from("<Q", area, o - SEG_OFFSET)[0]

    def seg(o: int) -> Segment:
        return Segment(u16(o), u64(o + 8), u32(o + 4), (u16(o + 2) & 0xF0FF) << 8)
    state = CpuState(
        gprs=[u64(GPR_TOP - 8 * i) & 0xFFFFFFFF for i in range(8)],
        eip=u64(RIP) & 0xFFFFFFFF, eflags=u32(EFLAGS) | 2, cr0=u32(CR0), cr3=u64(CR3) & 0xFFFFFFFF,
        cr4=u32(CR4), dr6=u32(DR6), dr7=u32(DR7), efer=u64(EFER),
        segments=[seg(SEG_OFFSET + 16 * i) for i in range(6)],
        gdt=(u64(GDTR_BASE) & 0xFFFFFFFF, u32(GDTR_LIMIT)), idt=(u64(IDTR_BASE) & 0xFFFFFFFF, u32(IDTR_LIMIT)),
        ldt=seg(LDTR), tr=seg(TR),
        extra={i: u64(GPR_TOP - 8 * i) for i in range(8, 16)})
    new_base = u32(SMBASE) if u32(REVISION) & SMBASE_RELOCATION else None
    return state, new_base


def entry_segments(smbase: int) -> list[Segment]:
    """``do_smm_enter``'s segments: CS = SMBASE >> 4 based at SMBASE, the others 0, all
    4 GiB data segments."""
    flat = [Segment(0, 0, 0xFFFFFFFF, ENTRY_SEG_FLAGS) for _ in range(6)]
    flat[1] = Segment((smbase >> 4) & 0xFFFF, smbase, 0xFFFFFFFF, ENTRY_SEG_FLAGS)
    return flat


def descriptor(seg: Segment) -> bytes:
    """The 8-byte descriptor whose load gives this cache (granular limits when G is set)."""
    limit = seg.limit >> 12 if seg.flags & DESC_G else seg.limit & 0xFFFFF
    lo = (limit & 0xFFFF) | (seg.base & 0xFFFF) << 16
    hi = ((seg.base >> 16) & 0xFF) | (seg.flags & 0x00F0FF00) | (limit & 0xF0000) | (seg.base & 0xFF000000)
    return struct.pack("<II", lo, hi)


def _decode(desc: bytes, selector: int) -> Segment:
    lo, hi = struct.unpack("<II", desc)
    base = (lo >> 16) | (hi & 0xFF) << 16 | (hi & 0xFF000000)
    limit = (lo & 0xFFFF) | (hi & 0xF0000)
    if hi & DESC_G:
        limit = (limit << 12) | 0xFFF
    return Segment(selector, base, limit, hi)


# ------------------------------------------------------------------ the Unicorn side

def read_state(uc) -> CpuState:
    """The CPU's state as ``do_smm_enter`` saves it (segment caches as described above)."""
    cr0 = uc.reg_read(X.UC_X86_REG_CR0)
    gdt = uc.reg_read(X.UC_X86_REG_GDTR)
    ldt = uc.reg_read(X.UC_X86_REG_LDTR)
    segments = []
    for reg in SEGMENTS:
        sel = uc.reg_read(reg)
        if not cr0 & CR0_PE:
            flags = REAL_CODE_FLAGS if reg == X.UC_X86_REG_CS else REAL_DATA_FLAGS
            segments.append(Segment(sel, sel << 4, 0xFFFF, flags))
        elif sel & ~3 == 0:
            segments.append(Segment(sel, 0, 0, 0))
        else:
            table = ldt[1] if sel & 4 else gdt[1]
            try:
                segments.append(_decode(bytes(uc.mem_read(table + (sel & ~7), 8)), sel))
            except UcError:
                segments.append(Segment(sel, 0, 0, 0))
    try:
        efer = uc.reg_read(X.UC_X86_REG_MSR, MSR_EFER)
    except UcError:
        efer = 0
    tr = uc.reg_read(X.UC_X86_REG_TR)
    idt = uc.reg_read(X.UC_X86_REG_IDTR)
    return CpuState(
        gprs=[uc.reg_read(r) for r in GPRS], eip=uc.reg_read(X.UC_X86_REG_EIP),
        eflags=uc.reg_read(X.UC_X86_REG_EFLAGS), cr0=cr0, cr3=uc.reg_read(X.UC_X86_REG_CR3),
        cr4=uc.reg_read(X.UC_X86_REG_CR4), dr6=uc.reg_read(X.UC_X86_REG_DR6) & 0xFFFFFFFF,
        dr7=uc.reg_read(X.UC_X86_REG_DR7) & 0xFFFFFFFF, efer=efer, segments=segments,
        gdt=(gdt[1], gdt[2]), idt=(idt[1], idt[2]),
        ldt=Segment(ldt[0], ldt[1], ldt[2], ldt[3]), tr=Segment(tr[0], tr[1], tr[2], tr[3]))


#: 8 bytes of low RAM that hold one descriptor while a segment loads (put back after);
#: above 64 KiB, so a table base of SCRATCH - (selector & ~7) is never negative
SCRATCH = 0x10000


def load_segments(uc, segments: list[Segment], cr0: int, gdt: tuple[int, int], ldt: Segment) -> None:
    """Give the CPU these segment caches, then CR0, GDTR and LDTR: each segment is
    loaded in protected mode from a one-entry table at SCRATCH placed so that its
    selector names that entry; clearing CR0.PE afterwards keeps the caches, as on x86.
    A selector of index 0 names no descriptor: in real mode it is loaded as real mode
    loads it (selector * 16; the limit is then 64 KiB, which QEMU's TCG, like Unicorn,
    never checks), in protected mode it is a null segment (SS: left as it is)."""
    real = not cr0 & CR0_PE
    later = []
    saved = bytes(uc.mem_read(SCRATCH, 8))
    try:
        uc.reg_write(X.UC_X86_REG_CR0, (cr0 | CR0_PE) & ~CR0_PG)
        for reg, seg in zip(SEGMENTS, segments):
            if seg.selector & ~7 == 0 and (real or seg.flags & DESC_P or reg == X.UC_X86_REG_SS):
                later.append((reg, seg))
                continue
            uc.mem_write(SCRATCH, descriptor(seg))
            base = SCRATCH - (seg.selector & ~7)
            if seg.selector & 4:
                uc.reg_write(X.UC_X86_REG_LDTR, (0, base, 0xFFFF, 0x8200))
            else:
                uc.reg_write(X.UC_X86_REG_GDTR, (0, base, 0xFFFF, 0))
            uc.reg_write(reg, seg.selector)
    finally:
        uc.mem_write(SCRATCH, saved)
    uc.reg_write(X.UC_X86_REG_CR0, cr0)
    if real:
        for reg, seg in later:
            uc.reg_write(reg, seg.selector)
    uc.reg_write(X.UC_X86_REG_GDTR, (0, gdt[0], gdt[1], 0))
    uc.reg_write(X.UC_X86_REG_LDTR, (ldt.selector, ldt.base, ldt.limit, ldt.flags))


def enter(uc, smbase: int, write) -> None:
    """``do_smm_enter`` (the caller has switched the memory view to SMM's):
    ``write(address, bytes)`` stores into the state-save area."""
    state = read_state(uc)
    sm_state = smbase + STATE_BASE
    for off, data in state_save_writes(state, smbase):
        write(sm_state + off, data)
    uc.reg_write(X.UC_X86_REG_CR4, 0)
    load_segments(uc, entry_segments(smbase), state.cr0 & ~(CR0_PE | CR0_EM | CR0_TS | CR0_PG),
                  state.gdt, state.ldt)
    uc.reg_write(X.UC_X86_REG_EFLAGS, 2)
    uc.reg_write(X.UC_X86_REG_DR7, 0x400)
    uc.reg_write(X.UC_X86_REG_EIP, 0x8000)
    if state.efer:
        uc.reg_write(X.UC_X86_REG_MSR, (MSR_EFER, 0))


def leave(uc, smbase: int, area: bytes) -> int:
    """``helper_rsm`` from the 0x200 bytes at SMBASE + 0xFE00; returns the SMBASE that
    holds from now on."""
    state, new_base = parse_state_save(area)
    if state.efer:
        uc.reg_write(X.UC_X86_REG_MSR, (MSR_EFER, state.efer))
    for reg, value in zip(GPRS, state.gprs):
        uc.reg_write(reg, value)
    uc.reg_write(X.UC_X86_REG_DR6, state.dr6)
    uc.reg_write(X.UC_X86_REG_DR7, state.dr7)
    uc.reg_write(X.UC_X86_REG_CR4, state.cr4)
    uc.reg_write(X.UC_X86_REG_CR3, state.cr3)
    uc.reg_write(X.UC_X86_REG_IDTR, (0, state.idt[0], state.idt[1], 0))
    uc.reg_write(X.UC_X86_REG_TR, (state.tr.selector, state.tr.base, state.tr.limit, state.tr.flags))
    load_segments(uc, state.segments, state.cr0, state.gdt, state.ldt)
    uc.reg_write(X.UC_X86_REG_EFLAGS, state.eflags)
    uc.reg_write(X.UC_X86_REG_EIP, state.eip)
    return smbase if new_base is None else new_base
