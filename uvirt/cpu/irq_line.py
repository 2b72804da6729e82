"""The CPU's interrupt line inside Unicorn: hardware interrupts taken at translation-block
boundaries by QEMU's own x86 code, without leaving ``emu_start``.

Why this exists.  Unicorn has no API to interrupt the CPU (docs/unicorn-notes.md §7 item
15), so uvirt used to stop the CPU whenever a device raised a line, deliver through the
IDT from Python and start it again: a stop and a restart (two TLB fills through
uvirt/cpu/tlb.py's hook each time) plus the Python delivery, about 41 us of CPU time per
MSI round trip against QEMU's 1-1.3 us (benchmarks/irq_breakdown.py, README "Speed").  Writing EIP from the MMIO or port hook
where the device raises the line does not work either (§7 item 11: the rest of the
translation block overwrites it).

What QEMU itself does is set a bit in ``CPUState.interrupt_request`` and make the next
translation block exit to the CPU loop (``cpu_interrupt``: ``icount_decr.u16.high = -1``);
the loop's ``cpu_handle_interrupt`` then asks ``x86_cpu_exec_interrupt``, which checks
EFLAGS.IF and the STI/MOV SS shadow, acknowledges the interrupt controller and delivers
through the IDT (``do_interrupt_all``: real mode, protected mode, gate checks, the #GP/#NP
a bad gate raises).  Unicorn 2.1.4 compiles all of that in, but its
``CPU_INTERRUPT_HARD`` case has the acknowledge commented out (vector 0 is delivered).
Its ``CPU_INTERRUPT_VIRQ`` case (SVM's virtual interrupt) is complete and applies the same
IF/shadow test; it reads the vector with a physical load from ``env->vm_vmcb +
offsetof(struct vmcb, control.int_vector)``.  So this module

* points ``vm_vmcb`` at a CPU-private MMIO window outside the guest's physical space (1 <<
  44: above any address a 32-bit or PAE guest can form), whose read callback is the
  acknowledge cycle (``InterruptController.acknowledge``: IRR -> ISR at the moment the CPU
  takes the interrupt, as QEMU's ``cpu_get_pic_interrupt``);
* raises the line as ``cpu_interrupt`` does (the VIRQ bit and ``icount_decr.u16.high``),
  lowers it as ``cpu_reset_interrupt`` does.

Everything guest-visible then happens where QEMU does it (firmware/irq_timing.S, against
QEMU 7.2's transcript): right after the MMIO store that raised it with IF=1, after the one
instruction of an STI shadow, at once after a POPF that sets IF, after the IRET of a
handler entered through an interrupt gate, at once inside a trap-gate handler, after an
exception raised in the STI shadow, and on the next ``emu_start`` after a HLT.  Where
acknowledging leaves another interrupt pending (a PIC vector taken before an APIC one),
Unicorn clears the line after this delivery, so the machine stops at the next block start
and raises it again (QEMU's ``cpu_get_pic_interrupt`` re-raises it in place).  The guest's
state is untouched: ``vm_vmcb`` is read only by SVM instructions (which re-load it) and by
delivery while in an SVM guest, which uvirt never enters.

The fields are not in Unicorn's API, so their places are found once per process in a
forked child (uvirt/child.py: a wrong guess must not crash the machine), as
uvirt/cpu/exits.py finds ``no_exit_request``: ``uc_struct.cpu`` and ``CPUState.env_ptr``
by the register values they lead to, ``env->old_exception`` by a #DE (``vm_vmcb`` is the
next 8-byte field, cpu.h), ``interrupt_request`` from CPUState's fixed leading fields; a
run of a small guest whose handler must be entered with the right frame confirms all of
it.  If anything does not match, ``for_uc`` returns None and the machine keeps delivering
from Python between runs.

The line is only used while stops land at block boundaries (``TbEndExits`` on): with
Unicorn's per-access stop checks the block would be left in the middle of the raising
instruction, which would then run twice.
"""
from __future__ import annotations

import bisect
import ctypes
import struct
from typing import Callable

from unicorn import UcError

from uvirt.child import run_in_child
from uvirt.cpu.uc_hooks import CAPI

#: QEMU's CPU_INTERRUPT_VIRQ (CPU_INTERRUPT_TGT_INT_0, include/exec/cpu-all.h)
CPU_INTERRUPT_VIRQ = 0x0100
#: offsetof(struct vmcb, control.int_vector) (target/i386/svm.h; AMD APM vol. 2, VMCB 0x64)
VMCB_INT_VECTOR = 0x64
#: where the acknowledge page lives: not reachable by the guest (32-bit, PAE, 40-bit MAXPHYADDR)
ACK_PAGE = 1 << 44
#: the size of the MMIO window mapped there.  Only ACK_PAGE is ever read, but QEMU's
#: memory core rebuilds its dispatch radix tree (9 bits a level above the 4 KiB page) at
#: every mem_map/mem_unmap: a lone page at 1 << 44 needs three more 512-entry nodes in
#: every rebuild (~2 us of each BAR move, benchmarks/bench_regions.py), while a window
#: that is one whole, aligned entry of the level over 1 << 39 is a leaf in a node the
#: guest's low memory has anyway.  [1 << 44, 1 << 44 + 1 << 39) stays above the 40-bit
#: physical addresses Unicorn's CPU can form (the PTE bits above are reserved).
ACK_WINDOW = 1 << 39
_VMCB = ACK_PAGE - VMCB_INT_VECTOR               # vm_vmcb: the vector is read at ACK_PAGE
#: CPUState: nr_cores, nr_threads (int); thread (ptr); seven bools; cflags_next_tb (u32);
#: interrupt_request (u32) (include/hw/core/cpu.h, 2.1.4, LP64)
_INTERRUPT_REQUEST = 28

_offsets: tuple[int, int, int, int] | None | bool = False     # False: not probed yet


def offsets() -> tuple[int, int, int, int] | None:
    """(uc_struct.cpu, CPUState.env_ptr, env - cpu, env.old_exception) or None if not found."""
    global _offsets
    if _offsets is False:
        answer = run_in_child(lambda: repr(_probe_here()))
        try:
            found = tuple(int(x) for x in answer.strip("()").split(","))
            _offsets = found if len(found) == 4 else None
        except ValueError:
            _offsets = None
    return _offsets


class IrqLine:
    """The CPU's maskable-interrupt input for one Unicorn CPU (see the module docstring).

    ``acknowledge(handle, offset, size, user_data)`` is the acknowledge page's MMIO read
    callback, called by Unicorn inside ``emu_start`` when the CPU takes the interrupt; it
    returns the vector to deliver and must not raise."""

    def __init__(self, uc, acknowledge: Callable[[], int], offs: tuple[int, int, int, int]) -> None:
        cpu_off, env_ptr_off, env_delta, old_exception = offs
        self.uc = uc
        self.acknowledge = acknowledge
        uch = _engine_address(uc)
        cpu = ctypes.c_uint64.from_address(uch + cpu_off).value
        env = ctypes.c_uint64.from_address(cpu + env_ptr_off).value
        icount = ctypes.c_uint64.from_address(cpu + env_ptr_off + 8).value
        if env - cpu != env_delta:
            raise ValueError("Unicorn's CPU is not laid out as probed")
        self._request = ctypes.c_uint32.from_address(cpu + _INTERRUPT_REQUEST)
        self._icount_high = ctypes.c_uint16.from_address(icount + 2)
        self._vmcb = ctypes.c_uint64.from_address(env + _vm_vmcb(old_exception))
        self._error_code = ctypes.c_int32.from_address(env + _error_code(old_exception))
        if CAPI.lib is None:
            raise ValueError("the binding's internals moved")
        #: the acknowledge window is mapped when the line is first raised (``_map_ack_page``),
        #: or, while the machine defers the CPU's view (``deferred``), when it stops doing so
        self._mapped = False
        self.deferred = False
        self.raised = False

    @classmethod
    def for_uc(cls, uc, acknowledge: Callable[[], int]) -> "IrqLine | None":
        offs = offsets()
        if offs is None:
            return None
        try:
            return cls(uc, acknowledge, offs)
        except (ValueError, OSError):
            return None

    def _map_ack_page(self) -> None:
        """Map the acknowledge window, before the CPU can first see the line raised: only
        then does it read ``vm_vmcb``.  Not at creation: a machine whose line is never
        raised while its guest runs (a boot that prints and exits) would pay for the
        mapping twice, once here and once in ``uc_close``, which re-renders the memory
        map for every mapping it drops (about 15 us of such a boot).  While the machine
        is being built (``deferred``: its interrupt controllers' firmware set-up raises
        and lowers the line) the bits are set without it; ``undefer`` maps it if the line
        is up when the CPU is first reached.  Unicorn allows mapping from inside a hook,
        where the line is raised (the unassigned-page hooks map there too)."""
        self._read_cb = CAPI.mmio_read(self.acknowledge)
        status = CAPI.lib.uc_mmio_map(self.uc._uch, ACK_PAGE, ACK_WINDOW, self._read_cb, None, None, None)
        if status:
            raise UcError(status)
        self._mapped = True

    def raise_line(self) -> None:
        """QEMU's ``cpu_interrupt(cs, CPU_INTERRUPT_HARD)``: taken at the next block
        boundary where the CPU accepts interrupts."""
        if not self._mapped and not self.deferred:
            self._map_ack_page()
        self._vmcb.value = _VMCB                          # a restored context may hold 0
        self._request.value |= CPU_INTERRUPT_VIRQ
        self._icount_high.value = 0xFFFF
        self.raised = True

    def undefer(self) -> None:
        """The CPU is reached (it may run from now on): map the window if the line is up."""
        self.deferred = False
        if self.raised and not self._mapped:
            self._map_ack_page()

    def lower_line(self) -> None:
        """QEMU's ``cpu_reset_interrupt``."""
        self._request.value &= ~CPU_INTERRUPT_VIRQ
        self.raised = False

    def exception_error_code(self) -> int:
        """The error code of the exception Unicorn last reported (``env->error_code``,
        what QEMU pushes: a failed gate's vector*8+2, a bad selector...)."""
        return self._error_code.value & 0xFFFFFFFF

    def set(self, level: bool) -> None:
        """``raise_line`` or ``lower_line`` (inline, constants folded: the controllers
        call this on every change of their output, twice per interrupt)."""
        if level:
            if not self._mapped and not self.deferred:
                self._map_ack_page()
            self._vmcb.value = _VMCB
            self._request.value |= 0x0100           # CPU_INTERRUPT_VIRQ
            self._icount_high.value = 0xFFFF
        else:
            self._request.value &= ~0x0100
        self.raised = level

    def close(self) -> None:
        """Give the CPU back without the line or the page (a user's CPU lives on)."""
        self.lower_line()
        if self._mapped:
            # Slow (Unicorn flushes the TLB page by page: seconds for the 512 GiB
            # window), so Machine.close skips it for a CPU it closes outright.
            self.uc.mem_unmap(ACK_PAGE, ACK_WINDOW)
            self._mapped = False


def _vm_vmcb(old_exception: int) -> int:
    """``vm_vmcb`` is the uint64_t after ``int old_exception`` (target/i386/cpu.h)."""
    return (old_exception + 4 + 7) & ~7


def _error_code(old_exception: int) -> int:
    """``int error_code; int exception_is_int; target_ulong exception_next_eip;
    target_ulong dr[8]; void *bp_or_wp[4]; int old_exception`` (target/i386/cpu.h)."""
    return old_exception - 4 - 4 - 8 - 8 * 8 - 8 * 4


def _engine_address(uc) -> int:
    uch = uc._uch       # a c_void_p: ctypes.cast would leave a self-referencing temporary
    return uch.value if isinstance(uch, ctypes.c_void_p) else ctypes.cast(uch, ctypes.c_void_p).value


# ---------------------------------------------------------------- the probe (in a child)

def _readable() -> tuple[list[int], list[int]]:
    """This process's readable mappings, sorted: (starts, ends)."""
    spans = []
    with open("/proc/self/maps") as f:
        for line in f:
            addr, perms = line.split()[:2]
            if perms[0] == "r":
                lo, hi = (int(x, 16) for x in addr.split("-"))
                spans.append((lo, hi))
    spans.sort()
    return [lo for lo, _ in spans], [hi for _, hi in spans]


def _is_readable(spans, addr: int, size: int) -> bool:
    starts, ends = spans
    i = bisect.bisect_right(starts, addr) - 1
    return i >= 0 and addr + size <= ends[i]


def _probe_here() -> tuple[int, int, int, int] | None:
    from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, Uc
    from unicorn import x86_const as X
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x20000)
    uc.mem_write(0x1000, b"\x90")
    uc.emu_start(0x1000, 0x1001)                  # Unicorn's CPU exists from now on
    gprs = (X.UC_X86_REG_EAX, X.UC_X86_REG_ECX, X.UC_X86_REG_EDX, X.UC_X86_REG_EBX,
            X.UC_X86_REG_ESP, X.UC_X86_REG_EBP, X.UC_X86_REG_ESI, X.UC_X86_REG_EDI)
    magic = [0x0B1E0000 + 0x1111 * i for i in range(8)]
    for reg, value in zip(gprs, magic):
        uc.reg_write(reg, value)
    pattern = struct.pack("<8Q", *magic)          # env->regs[] (target_ulong: 64-bit build)
    spans = _readable()
    uch = _engine_address(uc)
    data = ctypes.string_at(uch, 0x4000)
    found = None
    for off in range(0, len(data) - 8, 8):
        cpu = struct.unpack_from("<Q", data, off)[0]
        if not _is_readable(spans, cpu, 0x400):
            continue
        block = ctypes.string_at(cpu, 0x400)
        for k in range(64, 0x400 - 16, 8):
            env, icount = struct.unpack_from("<QQ", block, k)
            if (0 < env - icount <= 64 and _is_readable(spans, env, 0x4000)
                    and ctypes.string_at(env, 64) == pattern):
                found = (off, k, env - cpu, cpu, env)
                break
        if found:
            break
    if found is None:
        return None
    cpu_off, env_ptr_off, env_delta, cpu, env = found
    # env->old_exception: -1, then 0 after a #DE Unicorn reports (and never delivers)
    before = ctypes.string_at(env, 0x3000)
    hook = uc.hook_add(UC_HOOK_INTR, lambda u, i, d: u.emu_stop())
    uc.mem_write(0x1000, bytes.fromhex("31c9f7f1"))              # xor ecx, ecx; div ecx
    uc.emu_start(0x1000, 0x1004)
    uc.hook_del(hook)
    after = ctypes.string_at(env, 0x3000)
    candidates = [o for o in range(0, len(before) - 4, 4)
                  if before[o:o + 4] == b"\xff\xff\xff\xff" and after[o:o + 4] == bytes(4)]

    def gives_error_code(cand: int) -> bool:
        """env->error_code is 0x30 after the #GP of loading selector 0x33 into DS, at the
        place ``cand`` as old_exception gives (every candidate put back to -1 first, or
        the #GP after the undelivered #DE would become a #DF)."""
        for o in candidates:
            ctypes.memmove(env + o, b"\xff\xff\xff\xff", 4)
        ctypes.memmove(env + _error_code(cand), bytes(4), 4)
        hook = uc.hook_add(UC_HOOK_INTR, lambda u, i, d: u.emu_stop())
        uc.mem_write(0x1000, bytes.fromhex("66b833008ed8"))      # mov ax, 0x33; mov ds, ax
        uc.emu_start(0x1000, 0x1006)
        uc.hook_del(hook)
        return struct.unpack_from("<i", ctypes.string_at(env + _error_code(cand), 4))[0] == 0x30

    old = _the_one(candidates, gives_error_code)
    if old is None:
        return None
    offs = (cpu_off, env_ptr_off, env_delta, old)
    return offs if _delivers(offs) else None


def _the_one(candidates: list[int], confirm: Callable[[int], bool]) -> int | None:
    """The one field among ``candidates`` (env offsets that went from -1 to 0 across a #DE)
    that ``confirm`` accepts as ``old_exception``, or None.  Taking a lone flipped field on
    trust failed depending on this process's earlier allocations (the probe said None in
    one order of the test files and not in another, the same Unicorn): the scanned 0x3000
    bytes may hold more than one field that flips, so each is confirmed by the error code
    it places."""
    confirmed = [c for c in candidates[:8] if _error_code(c) >= 0 and confirm(c)]
    return confirmed[0] if len(confirmed) == 1 else None


def _delivers(offs) -> bool:
    """A guest with an IDT: with the line raised and IF=0 nothing happens until STI and
    the one instruction of its shadow; then vector 0x41 (the acknowledge page's answer) is
    delivered through its interrupt gate with EIP, CS, EFLAGS pushed and IF cleared."""
    from unicorn import UC_ARCH_X86, UC_MODE_32, Uc
    from unicorn import x86_const as X
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x20000)
    gdt, idt, handler, main = 0x2000, 0x3000, 0x5000, 0x4000
    uc.mem_write(gdt, bytes.fromhex("0000000000000000ffff0000009acf00ffff00000093cf00"))
    gate = struct.pack("<HHBBH", handler & 0xFFFF, 0x08, 0, 0x8E, handler >> 16)
    uc.mem_write(idt + 0x41 * 8, gate)
    # main: mov eax,1; sti; mov ebx,2; mov ecx,3; hlt   handler: mov [0x6000],ebx; mov [0x6004],ecx; hlt
    uc.mem_write(main, bytes.fromhex("b801000000" "fb" "bb02000000" "b903000000" "f4"))
    uc.mem_write(handler, bytes.fromhex("891d00600000" "890d04600000" "f4"))
    uc.mem_write(0x6000, struct.pack("<II", 0xFFFF, 0xFFFF))
    uc.reg_write(X.UC_X86_REG_GDTR, (0, gdt, 23, 0))
    uc.reg_write(X.UC_X86_REG_IDTR, (0, idt, 0x7FF, 0))
    uc.reg_write(X.UC_X86_REG_CS, 0x08)
    uc.reg_write(X.UC_X86_REG_SS, 0x10)
    uc.reg_write(X.UC_X86_REG_DS, 0x10)
    uc.reg_write(X.UC_X86_REG_ESP, 0x9000)
    uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2)
    uc.reg_write(X.UC_X86_REG_ECX, 0xFFFF)
    acks = []
    line = IrqLine(uc, lambda *_: acks.append(1) or 0x41, offs)
    line.raise_line()
    uc.emu_start(main, 0xFFFFFFFF, 0, 0)
    ebx, ecx = struct.unpack("<II", bytes(uc.mem_read(0x6000, 8)))
    frame = struct.unpack("<III", bytes(uc.mem_read(0x9000 - 12, 12)))
    return (acks == [1] and ebx == 2 and ecx == 0xFFFF and frame[0] == main + 11
            and frame[1] == 0x08 and frame[2] & 0x200
            and not uc.reg_read(X.UC_X86_REG_EFLAGS) & 0x200)
