"""The machine: a 32-bit x86 Unicorn CPU attached to a board (uvirt/board/board.py:
the memory map, the port space and the PCI bus of QEMU's ``pc``, i440FX + PIIX3).

Only ``uvirt/cpu/`` imports Unicorn: this module, its helpers (``tlb``, ``exits``,
``uc_hooks``, ``uc_regs``) and ``uc_memory``, the memory map's backend and the one place
that maps and unmaps.  The board works without a CPU, so qtest and unit tests drive the
same objects a guest does; ``attach(uc)`` adds the CPU, either one the machine creates or
one the user made, next to the user's own hooks, and makes the machine the board's
``cpu`` (the device requests a run answers: reset, debug-exit, ``hw_error``, SMI).

Running (docs/unicorn-notes.md §4, §6, §7)
    ``run()`` loops on ``emu_start``.  Port I/O arrives through ``UC_HOOK_INSN`` IN/OUT
    hooks (about 0.45 µs each), MMIO through ``mmio_map`` callbacks set up by the
    memory map.  No code, block or memory hooks are installed (they slow every
    instruction).  A data access to a page nobody claims maps a reads-zero page and is
    retried (QEMU: unassigned memory reads 0); an instruction fetch there is a fault.
    A stop requested from a hook (debug-exit) takes effect at the end of the current
    translation block, so port hooks ignore everything after it: nothing the guest does
    after its exit write is visible.  Any stop lands at a block start, as QEMU's
    ``cpu_exit`` does: Unicorn's own per-access stop checks, which abandon and re-run an
    instruction whose store already happened, are compiled out (uvirt/cpu/exits.py)
    except while a code hook needs a stop before an exact instruction.  A process-wide
    watchdog thread enforces the wall-clock budget and turns SIGINT into a clean stop
    (``emu_start`` holds no GIL, but Python's signal handlers only run when the main
    thread runs Python, so the signal wakes the watchdog through ``signal.set_wakeup_fd``).

Stores (uvirt/cpu/tlb.py, docs/unicorn-notes.md §0)
    Unicorn 2.1.4 sends every store to an executable page down its slow path; ``TlbFill``
    fills the TLB itself while paging is off so that pages never executed from (data,
    stacks, shared-memory regions) get native-speed stores, and hands the TLB back to
    Unicorn's x86 MMU while the guest pages.

Interrupts (uvirt/board/interrupts/, uvirt/cpu/irq_line.py, docs/unicorn-notes.md §7-8)
    Hardware interrupts are taken inside ``emu_start`` by Unicorn's own copy of QEMU's x86
    code: the interrupt controllers' output (``InterruptController.on_level``) drives the
    CPU's interrupt line (``IrqLine``: QEMU's ``cpu_interrupt``/``cpu_reset_interrupt``),
    and at the next instruction boundary where QEMU would take it (IF=1, outside the
    STI/MOV SS shadow, after the POPF or IRET that sets IF) the CPU acknowledges the
    controllers (``_take_interrupt``, an MMIO read Unicorn makes) and delivers through the
    IDT itself.  No stop, no restart, no Python delivery per interrupt; a pending
    interrupt with IF=0 costs nothing until IF turns 1.  firmware/irq_timing.S pins where
    interrupts land against QEMU 7.2.  The PIT's next rising edge is a tick the watchdog
    thread turns into a stop; other threads post work with ``call_soon_threadsafe``; the
    run loop raises the line for what they did (``_service``).
    The line needs stops at block starts (uvirt/cpu/exits.py).  With an instruction
    budget (a code hook), on a CPU the user made, or if the probe does not recognise
    Unicorn, the run loop delivers instead: a device that raises a line makes the
    controller call ``_irq_changed``, which stops the CPU at the end of the translation
    block; at each stop ``_service`` acknowledges and ``interrupts.delivery`` (pure) pushes
    the frame and loads the gate.  With IF=0 (or in the one-instruction STI shadow) a
    pending interrupt then puts the CPU in *blocked* mode: a code hook single-steps until
    IF becomes 1, for at most ``STEP_BUDGET`` instructions after the guest's last access
    to an interrupt controller; past that budget the watchdog polls (1 ms doubling to
    64 ms).  ``hlt`` with IF=1 sleeps until an interrupt, a tick, a posted call, a budget
    or SIGINT.  CPU exceptions reported by Unicorn (``UC_HOOK_INTR``: #DE, #GP, int n,
    int3, into; ``UC_ERR_INSN_INVALID``: #UD) are delivered from the run loop by
    ``interrupts.delivery``, first (the line is lowered until they are); a triple fault
    ends the run.

Stops
    Every run ends with a ``StopInfo``: reason, exit code, EIP, registers, and the
    instruction at EIP disassembled by capstone.  Exit codes: isa-debug-exit gives
    ``(v << 1) | 1`` like QEMU; a halt with interrupts off or a guest reset under
    ``-no-reboot`` gives 0 (QEMU exits 0 on shutdown); a guest fault 2; a budget 124
    (as ``timeout(1)``); SIGINT 130.  A triple fault gives 2 with the chain of events
    (QEMU under ``-no-reboot`` exits 0, indistinguishable from a clean shutdown: uvirt
    reports the crash instead).
"""

from __future__ import annotations

import collections
import ctypes
import os
import select
import signal
import _signal
import stat
import threading
import time
from dataclasses import dataclass, field
from enum import Enum

from unicorn import (UC_ARCH_X86, UC_CTL_IO_READ, UC_CTL_UC_PAGE_SIZE, UC_ERR_EXCEPTION,
                     UC_ERR_FETCH_PROT, UC_ERR_FETCH_UNMAPPED, UC_ERR_INSN_INVALID,
                     UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_PROT, UC_ERR_WRITE_UNMAPPED,
                     UC_HOOK_CODE, UC_HOOK_INSN, UC_HOOK_INTR, UC_HOOK_MEM_WRITE_PROT,
                     UC_MODE_32, Uc, UcError)
from unicorn import x86_const as X

from uvirt.board.board import DEFAULT_RAM_SIZE, Board
from uvirt.board.devices import isa
from uvirt.board.devices.pc import pc_board
from uvirt.board.interrupts import delivery as _delivery
from uvirt.board.memory.regions import PAGE_MASK
from uvirt.boot import multiboot
from uvirt.cpu import smm
from uvirt.cpu.exits import TbEndExits
from uvirt.cpu.halt_wake import HaltWake
from uvirt.cpu.irq_line import IrqLine
from uvirt.cpu.tlb import TlbFill
from uvirt.cpu.uc_hooks import add_c_hook, add_c_hooks, ctl, ctl_code
from uvirt.cpu.uc_memory import UnicornMemory
from uvirt.cpu.uc_regs import FastRegs
from uvirt.errors import ImageError, UvirtError
from uvirt.service_thread import start_service_thread

#: QEMU's multiboot option ROM GDT (pc-bios/optionrom/multiboot.S), left where the ROM
#: leaves it (GDTR base 0xC02B8, limit 0x27: docs/qemu-7.2-observed.md "Interrupts").
GDT_ADDR = 0x000C02B8
GDT = bytes.fromhex(
    "0000000000000000"      # 0x00 null
    "ffff0000009acf00"      # 0x08 32-bit code, base 0, 4 GiB
    "ffff00000093cf00"      # 0x10 32-bit data, base 0, 4 GiB (accessed: the ROM loaded it)
    "ffff0000009e0000"      # 0x18 16-bit code (conforming), 64 KiB
    "ffff000000920000")     # 0x20 16-bit data, 64 KiB
CODE_SEL, DATA_SEL = 0x08, 0x10
#: Low RAM where the GDT is copied while the segment registers load (_install_gdt)
GDT_SCRATCH = 0x500
ENTRY_EFLAGS = 0x00000006      # observed at a QEMU multiboot entry: IF=0, PF=1
ENTRY_ESP = 0x00006F08         # the ROM's stack as QEMU leaves it; guests set their own
ENTRY_IDTR = (0, 0, 0x3FF, 0)  # the real-mode IVT, still loaded

#: ``_install_gdt``'s register writes, in order: the segments loaded from the copy, ...
_SEGMENT_LOADS = ((X.UC_X86_REG_GDTR, (GDT_SCRATCH, len(GDT) - 1)),
                  (X.UC_X86_REG_IDTR, (ENTRY_IDTR[1], ENTRY_IDTR[2])),
                  (X.UC_X86_REG_CS, CODE_SEL)) + tuple(
                 (r, DATA_SEL) for r in (X.UC_X86_REG_DS, X.UC_X86_REG_ES, X.UC_X86_REG_FS,
                                         X.UC_X86_REG_GS, X.UC_X86_REG_SS))
#: ... then GDTR at the ROM's table, and CR4 as QEMU's entry state has it (Unicorn starts
#: with 0x50200)
_ENTRY_TABLES = ((X.UC_X86_REG_GDTR, (GDT_ADDR, len(GDT) - 1)), (X.UC_X86_REG_CR4, 0))

IF_MASK = 0x200
#: CPU reset (Machine.cpu_reset): F000:FFF0, EDX = qemu64's family 6 model 6 stepping 3
RESET_CS, RESET_EIP, RESET_EDX = 0xF000, 0xFFF0, 0x663
#: Where read-only RAM can be (devices/pam.py): the low-memory window and the BIOS ROM.
ROM_WRITE_RANGES = ((0xA0000, 0xFFFFF), (0xFF000000, 0xFFFFFFFF))
#: Instructions single-stepped while a pending interrupt waits for IF=1 (see "Interrupts");
#: the count restarts whenever the guest touches the PIC, PIT or APIC.
STEP_BUDGET = 1000
POLL_FIRST, POLL_MAX = 0.001, 0.064
#: How long after a host thread's stop the watchdog checks that the run it was sent to
#: has ended (a stop lands at the end of a translation block, microseconds later)
RESTOP_AFTER = 0.002



class StopReason(Enum):
    DEBUG_EXIT = "debug-exit"
    HALTED = "halted with interrupts disabled"
    RESET = "guest reset (-no-reboot)"
    FAULT = "guest fault"
    TRIPLE_FAULT = "triple fault"
    TIMEOUT = "wall-clock budget exhausted"
    INSN_BUDGET = "instruction budget exhausted"
    INTERRUPTED = "interrupted (SIGINT)"
    HOST_ERROR = "internal error in a device model"
    QUIT = "quit (QMP)"
    HARDWARE_ERROR = "hardware error (QEMU aborts here)"


EXIT_CLEAN = 0
EXIT_FAULT = 2
EXIT_BUDGET = 124
EXIT_INTERRUPTED = 130
EXIT_HOST_ERROR = 1
EXIT_HARDWARE_ERROR = 134      # QEMU's hw_error() ends in abort(): 128 + SIGABRT

def _new_uc(tcg_buffer_size: int | None = None) -> Uc:
    """A Unicorn CPU for a machine of our own, set up (``uc_init_engine``) at once;
    ``tcg_buffer_size`` (bytes, from ``-accel tcg,tb-size=N``) sizes its translation
    buffer, else Unicorn's default (1 GiB).

    Unicorn maps that buffer with ``madvise(MADV_HUGEPAGE)`` (QEMU's
    ``alloc_code_gen_buffer``) and writes its prologue at the start during set-up, so
    every creation faulted in and zeroed a 2 MiB huge page, with the kernel's compaction
    on top when free huge pages are short: 35-60 us, more on a fragmented host, of a
    boot that costs about 1.5 ms (``bench_boot``).  Set-up runs with the process's
    transparent huge pages off (``_small_pages``), so the buffer's first 2 MiB are
    small pages, faulted in as translated code reaches them; the rest of the buffer
    keeps huge pages.  A buffer under 2 MiB would avoid the fault too, but a guest's
    stores into a ``mem_map_ptr`` region ran 2.4x slower with 1 MiB (3.9 against 1.6 ns
    per access, ``bench_region_vs_ram``) and code-heavy guests re-translate after every
    flush (10x slower)."""
    uc = _ENGINE(UC_ARCH_X86, UC_MODE_32)
    if tcg_buffer_size:
        uc.ctl_set_tcg_buffer_size(tcg_buffer_size)
    with _small_pages():
        # the first call that needs the engine sets it up (``uc_init_engine``)
        ctl(uc, _GET_PAGE_SIZE, ctypes.byref(ctypes.c_uint32()))
    return uc


_GET_PAGE_SIZE = ctl_code(UC_CTL_UC_PAGE_SIZE, UC_CTL_IO_READ, 1)


def _engine_class() -> type:
    """The binding's x86 engine class, made without ``Uc.__new__``'s work per instance
    (a version check through two library calls, an ``importlib`` lookup of the
    architecture's class and a table of ten closures: about 4 us, more cold, of every
    machine's creation, for answers that cannot change within a process): checked once
    here, and the class is the binding's own ``UcIntel`` under a ``__new__`` that only
    allocates.  ``Uc.__init__`` (``uc_open``, the callback tables, the finalizer that
    closes it) runs as ever.  If the binding's internals moved: ``Uc`` itself."""
    try:
        from unicorn.unicorn_py3.arch.intel import UcIntel
        if not Uc._Uc__is_compliant():
            return Uc
    except (ImportError, AttributeError):
        return Uc

    class UcX86(UcIntel):
        def __new__(cls, arch: int, mode: int, cpu: int | None = None):
            return object.__new__(cls)

    return UcX86


_ENGINE = _engine_class()


class _small_pages:
    """Transparent huge pages off for this process while the block runs
    (``prctl(PR_SET_THP_DISABLE)``, checked by the kernel at each page fault), unless
    they were off already; a no-op where there is no ``prctl`` (not Linux).  Another
    thread's fault meanwhile gets small pages too: slower by microseconds, no more."""

    PR_SET_THP_DISABLE, PR_GET_THP_DISABLE = 41, 42
    _prctl = getattr(ctypes.CDLL(None), "prctl", None) if os.name == "posix" else None

    def __enter__(self) -> None:
        prctl = self._prctl
        self._set = prctl is not None and prctl(self.PR_GET_THP_DISABLE, 0, 0, 0, 0) == 0 \
            and prctl(self.PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0

    def __exit__(self, *_exc) -> None:
        if self._set:
            self._prctl(self.PR_SET_THP_DISABLE, 0, 0, 0, 0)


_REGS = [("eax", X.UC_X86_REG_EAX), ("ebx", X.UC_X86_REG_EBX), ("ecx", X.UC_X86_REG_ECX),
         ("edx", X.UC_X86_REG_EDX), ("esi", X.UC_X86_REG_ESI), ("edi", X.UC_X86_REG_EDI),
         ("ebp", X.UC_X86_REG_EBP), ("esp", X.UC_X86_REG_ESP), ("eip", X.UC_X86_REG_EIP),
         ("eflags", X.UC_X86_REG_EFLAGS), ("cs", X.UC_X86_REG_CS), ("ds", X.UC_X86_REG_DS),
         ("ss", X.UC_X86_REG_SS), ("cr0", X.UC_X86_REG_CR0)]
_SELECTORS = frozenset(("cs", "ds", "ss"))    # 16-bit reads (FastRegs.selector)
_REG_IDS = tuple(reg for _, reg in _REGS)

_EXCEPTION_NAMES = {0: "#DE divide error", 1: "#DB debug", 3: "#BP breakpoint", 4: "#OF overflow",
                    5: "#BR bound range", 6: "#UD invalid opcode", 7: "#NM no math coprocessor",
                    8: "#DF double fault", 10: "#TS invalid TSS", 11: "#NP segment not present",
                    12: "#SS stack fault", 13: "#GP general protection", 14: "#PF page fault",
                    16: "#MF x87 error", 17: "#AC alignment check", 18: "#MC machine check",
                    19: "#XM SIMD exception"}


@dataclass
class StopInfo:
    reason: StopReason
    exit_code: int
    detail: str = ""
    eip: int = 0
    regs: dict[str, int] = field(default_factory=dict)
    insn: str = ""
    debug_exit_value: int | None = None

    @property
    def clean(self) -> bool:
        return self.reason in (StopReason.DEBUG_EXIT, StopReason.HALTED, StopReason.RESET, StopReason.QUIT)

    def summary(self) -> str:
        text = self.reason.value + (f": {self.detail}" if self.detail else "")
        return f"{text} at eip=0x{self.eip:08x}"

    def report(self) -> str:
        """Several lines for a person: reason, registers, the instruction at EIP."""
        lines = [f"guest stopped: {self.summary()}"]
        if self.regs:
            r = self.regs
            lines.append("  " + " ".join(f"{k}={r[k]:08x}" for k in
                                         ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp")))
            lines.append("  " + " ".join(f"{k}={r[k]:08x}" for k in ("eip", "eflags", "cr0"))
                         + " " + " ".join(f"{k}={r[k]:04x}" for k in ("cs", "ds", "ss")))
        if self.insn:
            lines.append(f"  insn: {self.insn}")
        return "\n".join(lines)


class _Stop(Exception):
    pass


class _FromBoard:
    """A ``Machine`` attribute that is its board's (read and written through)."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, machine, owner=None):
        if machine is None:
            return self
        return getattr(machine.board, self.name)

    def __set__(self, machine, value) -> None:
        setattr(machine.board, self.name, value)


class Machine:
    """A Unicorn x86 CPU attached to a ``Board`` (QEMU ``-machine pc`` as a guest sees it).

    ``Machine()`` builds its board (``pc_board``, or a bare ``Board`` with
    ``builtins=False``); ``Machine(board=b)`` attaches to one already built (``ram_size``,
    ``no_reboot`` and ``builtins`` are then the board's).  ``cpu=False``: no CPU is
    attached (the board answers device requests itself, uvirt/board/board.py).
    The board's parts are reachable from the machine as before (``m.memory``, ``m.pci``,
    ``m.add_isa(...)``...): the objects the run loop touches are the board's own objects
    kept as plain attributes (they never change), the rest read through to the board.
    """

    # The board's, read and written through (uvirt/board/board.py).
    cpu = _FromBoard()
    ram_size = _FromBoard()
    no_reboot = _FromBoard()
    guest_errors = _FromBoard()
    lowmem = _FromBoard()
    pci_host = _FromBoard()
    ram_placement = _FromBoard()
    resettables = _FromBoard()
    displays = _FromBoard()
    framebuffers = _FromBoard()
    serial_ports = _FromBoard()
    rtc = _FromBoard()
    i8042 = _FromBoard()
    port92 = _FromBoard()
    dma = _FromBoard()
    fw_cfg = _FromBoard()
    acpi_hotplug = _FromBoard()
    batch = _FromBoard()
    guest_error = _FromBoard()
    add_isa = _FromBoard()
    add_pci = _FromBoard()
    trace_layout = _FromBoard()
    write_ram = _FromBoard()

    def __init__(self, *, ram_size: int = DEFAULT_RAM_SIZE, no_reboot: bool = True,
                 cpu: bool = True, uc: Uc | None = None, builtins: bool = True,
                 board: Board | None = None, tcg_buffer_size: int | None = None) -> None:
        if board is None:
            board = (pc_board(ram_size=ram_size, no_reboot=no_reboot) if builtins
                     else Board(ram_size=ram_size, no_reboot=no_reboot))
        self.board = board
        # The board's objects the CPU side uses on its hot paths, as plain attributes.
        self.memory = board.memory
        self.io = board.io
        self.pci = board.pci
        self.ram = board.ram
        self.tracer = board.tracer
        self.work = board.work
        self.interrupts = board.interrupts
        self.chardevs = board.chardevs
        self.services = board.services
        self._uc: Uc | None = None
        #: the CPU's view (mappings, entry segment state) waits for the memory map's next
        #: commit: see ``attach`` and ``_cpu_view``
        self._view_pending = False
        #: the entry segment state (``_install_gdt``) waits for ``load_kernel``, which
        #: installs it anyway, or for whatever reaches the CPU first (``uc``)
        self._entry_pending = False
        #: the CPU's interrupt line maps its acknowledge window (``IrqLine.undefer``) at
        #: the same moment as the view, or when first raised after it
        self._line_pending = False
        #: held while another thread asks the engine to stop and while close() takes it
        #: away: a watchdog stop must not reach an engine close() has freed (RLock: a
        #: SIGINT handler may stop the run from inside close() on the main thread)
        self._uc_lock = threading.RLock()
        self._owns_uc = False
        self._fresh_uc = False
        #: the memory map's Unicorn backend (uvirt/cpu/uc_memory.py) while a CPU is attached
        self.uc_memory: UnicornMemory | None = None
        self.exits: TbEndExits | None = None
        #: the CPU's interrupt line inside Unicorn (uvirt/cpu/irq_line.py), when found
        self.irq_line: IrqLine | None = None
        self.tlb: TlbFill | None = None
        self.entry: int | None = None
        self._boot_regs: dict[int, int] = {}
        self._stop: StopInfo | None = None
        self._stopping = False
        self._hooks: list[int] = []
        self.insn_count = 0
        # interrupts: see the module docstring
        #: what a halted CPU sleeps on: kicks, and device fds (uvirt/cpu/halt_wake.py)
        self._wake = HaltWake()
        self._posted: collections.deque = collections.deque()
        self._in_cpu = False
        self._kicked = False
        #: host kicks so far (any thread) and CPU runs started: a kick that lands between
        #: the loop's service and ``emu_start`` is seen by the count; one whose emu_stop
        #: Unicorn drops (it lands in emu_start's prologue) is sent again by the watchdog
        #: while the same run goes on (``_restop``)
        self._kicks = 0
        self._runs = 0
        # System Management Mode (uvirt/cpu/smm.py): an SMI is taken between two runs
        self.smbase = smm.SMBASE_RESET
        self.in_smm = False
        self._smi_pending = False
        self._exc: tuple[int, int] | None = None
        self._blocked = False
        self._step_hook: int | None = None
        self._max_insns: int | None = None     # the current run's instruction budget
        self._step_budget = 0
        self._step_prev = -1
        #: EIP of the instruction in an STI shadow where a stop landed right after STI,
        #: or None: it holds while EIP stays there, never for a later instruction
        self._step_shadow: int | None = None
        self._step_touched = 0
        self._poll_interval = 0.0
        self._poll_at: float | None = None
        self._watch_token: int | None = None
        self._armed_tick: float | None = None
        # device work (uvirt/board/dma.py): stops land between its pieces; what a slice leaves
        # over runs between CPU slices
        self._work_due: float | None = None
        if cpu:
            self._owns_uc = self._fresh_uc = uc is None     # a Uc made here has run nothing
            self.attach(uc if uc is not None else _new_uc(tcg_buffer_size))

    def add_debugcon(self, chardev, iobase: int = 0xE9, *, readback: int = 0xE9) -> isa.IsaDebugcon:
        """isa-debugcon on the board (uvirt/board/devices/isa.py)."""
        return isa.add_debugcon(self.board, chardev, iobase, readback=readback)

    def add_debug_exit(self, iobase: int = 0x501, iosize: int = 2) -> isa.IsaDebugExit:
        """isa-debug-exit on the board: a write ends the run (``debug_exit``)."""
        return isa.add_debug_exit(self.board, iobase, iosize)

    # ------------------------------------------------------------------ CPU
    @property
    def uc(self) -> Uc | None:
        """The Unicorn CPU (None without one), its memory and entry state in place: every
        mapping, the register windows the machine's own CPU maps at the guest's first use
        (``UnicornMemory.defer_mmio``) included, so that a caller's own Unicorn calls
        (``mem_read`` of a device register) see the whole map."""
        uc = self._engine
        memory = self.uc_memory
        if memory is not None and memory.deferred:
            memory.map_deferred(for_good=True)
        return uc

    @property
    def _engine(self) -> Uc | None:
        """``uc`` for the machine's own use: the view and entry state in place, register
        windows still mapped at the guest's first use (nothing here reads them through
        Unicorn: a guest access reaches them through the unmapped-access hooks)."""
        if self._view_pending or self._entry_pending or self._line_pending:
            self._cpu_view()
        return self._uc

    def attach(self, uc: Uc) -> None:
        """Wire the board to a Unicorn CPU (ours or the user's)."""
        self._uc = uc
        # A CPU made here has seen nothing yet: its mappings and entry segment state wait
        # for the memory map's next commit, which a machine being built makes soon (its
        # devices, the firmware step): mapping the reset-time view first and then
        # remapping the low megabyte cost ~150 us of Unicorn calls per machine.  Anything
        # that reaches the CPU before (``uc``, ``run``, ``load_kernel``...) makes the view
        # first (``_cpu_view``), so nobody sees the difference.
        defer = self._fresh_uc
        self.regs = FastRegs(uc)
        self.board.cpu = self
        self.work.should_stop = lambda: self._stopping
        if self.interrupts is not None:
            self.interrupts.on_change = self._irq_changed
        self.uc_memory = UnicornMemory(self.memory, uc, on_unmapped=self._unmapped_access,
                                       publish=not defer, defer_mmio=self._owns_uc)
        self.memory.post_to_cpu = self.call_soon_threadsafe
        self.tlb = TlbFill(uc, self._host_exception, fresh=self._fresh_uc)
        self._fresh_uc = False
        self.uc_memory.may_hold_code = self.tlb.may_hold_code
        self.tlb.share_code_pages(self.memory)
        self.uc_memory.tlb = self.tlb
        # A user's CPU keeps Unicorn's stop semantics: their own code hooks may count on
        # a stop taking effect before the next instruction.
        self.exits = TbEndExits.for_uc(uc) if self._owns_uc else None
        self._exact_stops(False, translated=not defer)
        # Hardware interrupts taken inside emu_start by QEMU's own code, while stops land
        # at block boundaries (uvirt/cpu/irq_line.py); otherwise delivered between runs.
        if self.exits is not None and self.interrupts is not None:
            self.irq_line = IrqLine.for_uc(uc, self._take_interrupt)
            if self.irq_line is not None and defer:
                # its acknowledge window is part of the deferred view (irq_line.py)
                self.irq_line.deferred = self._line_pending = True
        self._route_irqs()
        self._hooks.append(_port_hook(uc, X.UC_X86_INS_IN, self._make_in_hook()))
        self._hooks.append(_port_hook(uc, X.UC_X86_INS_OUT, self._make_out_hook()))
        # Both registered through the C API (uvirt/cpu/uc_hooks.py): the binding's
        # hook_add builds its wrappers for 20-40 us a hook, on every machine's creation.
        self._hooks.append(add_c_hook(uc, UC_HOOK_INTR, "HOOK_INTR_CFUNC", self._hook_intr,
                                      lambda: uc.hook_add(UC_HOOK_INTR, self._hook_intr)))
        # Read-only RAM (PAM shadow, ROMs) drops guest writes: Unicorn reports them as
        # UC_ERR_WRITE_PROT, the run loop re-runs the instruction alone and puts the
        # bytes back (_drop_rom_write).  Bounded to where such regions live, so that no
        # other page's stores leave Unicorn's fast path (uvirt/cpu/tlb.py).
        self._rom_write: tuple[int, int] | None = None
        self._rom_write_allowed = False
        self.rom_writes_dropped = 0
        self._hooks += add_c_hooks(
            uc, UC_HOOK_MEM_WRITE_PROT, "HOOK_MEM_INVALID_CFUNC", self._hook_write_prot,
            lambda lo, hi: uc.hook_add(UC_HOOK_MEM_WRITE_PROT, self._hook_write_prot, None, lo, hi),
            ROM_WRITE_RANGES)
        if defer:
            self._view_pending = self._entry_pending = True
            self.uc_memory.on_published = self._view_published
        else:
            self._install_gdt()
        self.tracer.context = self._trace_context
        self._insn_cache: dict = {}       # eip -> instruction text; "cs" -> the capstone handle
        self._trace_hook: int | None = None

    def _trace_context(self) -> dict:
        """The guest instruction behind an event emitted from a CPU hook: EIP reads as
        the accessing instruction inside IN/OUT callbacks (docs/unicorn-notes.md §7 item 11) and,
        with the memory hook ``run`` adds while tracing, inside MMIO callbacks (measured:
        without it EIP is the last synced PC of the block), disassembled by capstone."""
        if not self._in_cpu or threading.get_ident() != self.memory.cpu_thread:
            return {}
        uc = self._engine
        eip = uc.reg_read(X.UC_X86_REG_EIP)
        text = self._insn_cache.get(eip)
        if text is None:
            # Disassembled once per address: tracing a polling loop costs one lookup per
            # access (code rewritten at the same address keeps its first text).
            try:
                code = bytes(uc.mem_read(eip, 15))
            except UcError:
                return {"eip": eip}
            cs = self._insn_cache.get("cs")
            if cs is None:
                from capstone import CS_ARCH_X86, CS_MODE_32, Cs
                cs = self._insn_cache["cs"] = Cs(CS_ARCH_X86, CS_MODE_32)
            text = next((f"{i.mnemonic} {i.op_str}".rstrip() for i in cs.disasm(code, eip, 1)),
                        "(undecodable)")
            self._insn_cache[eip] = text
        return {"eip": eip, "insn": text}

    def _make_in_hook(self):
        # The port-I/O hot path.  It repeats MmioRegion's fast path inline (valid size,
        # natural alignment -> the device's own read) because every Python frame here
        # costs about a tenth of an IN exit; other accesses take region.read, which
        # applies the full access contract.  No "stopped?" test: a stop empties io.table.
        io, tracer, unassigned = self.io, self.tracer, self.io.unassigned_entry
        masks = (0, 0xFF, 0xFFFF, 0, 0xFFFFFFFF)

        def hook_in(_handle, port, size, _ud):
            try:
                region, base, dev_read, _w, direct, amask = io.table.get(port, unassigned)
                off = port - base
                if size in direct and not off & (size - 1) & amask:
                    value = dev_read(off, size) & masks[size]
                else:
                    value = region.read(off, size)
                if tracer.enabled:
                    tracer.emit("pio_read", port=port, size=size, value=value)
                return value
            except BaseException as e:   # a device bug must not hand the guest garbage
                self._host_exception(e)
                return 0xFFFFFFFF

        return hook_in

    def _make_out_hook(self):
        io, tracer, unassigned = self.io, self.tracer, self.io.unassigned_entry
        masks = (0, 0xFF, 0xFFFF, 0, 0xFFFFFFFF)

        def hook_out(_handle, port, size, value, _ud):
            try:
                if tracer.enabled:
                    tracer.emit("pio_write", port=port, size=size, value=value)
                region, base, _r, dev_write, direct, amask = io.table.get(port, unassigned)
                off = port - base
                if size in direct and not off & (size - 1) & amask:
                    dev_write(off, size, value & masks[size])
                else:
                    region.write(off, size, value)
            except BaseException as e:
                self._host_exception(e)

        return hook_out

    def _unmapped_access(self, address: int, size: int) -> bool:
        try:
            self.memory.map_unassigned_page(address)
            end = address + size - 1
            if end & PAGE_MASK != address & PAGE_MASK and end < (1 << 32):
                self.memory.map_unassigned_page(end)
            if self.tracer.enabled:
                self.tracer.emit("unassigned_page", page=address & PAGE_MASK)
            return True
        except BaseException as e:
            self._host_exception(e)
            return False

    def _hook_intr(self, _uc, intno, _ud) -> None:
        # #DE, #GP, int n, int3, into...: Unicorn would carry on past it; stop here and
        # deliver through the IDT from the run loop.  (``_uc`` is the raw engine handle
        # when Unicorn calls this directly, uvirt/cpu/uc_hooks.py.)
        if self._stopping:
            return
        try:
            self._exc = (intno, self.regs.read(X.UC_X86_REG_EIP))
            self._line_down()            # the exception is delivered first, from the run loop
            self._cpu_stop()
        except BaseException as e:       # no binding wrapper catches it here
            self._host_exception(e)

    def _hook_write_prot(self, _uc, _access, address, size, _value, _ud) -> bool:
        if self._rom_write_allowed:
            return True
        self._rom_write = (address, size)
        return False                     # the run stops with EIP at the instruction

    def _drop_rom_write(self) -> None:
        """A guest store hit read-only memory (QEMU drops it): run the instruction
        alone with the store let through, then put the bytes back."""
        uc = self._engine
        addr, size = self._rom_write
        self._rom_write = None
        pages = sorted({addr & PAGE_MASK, (addr + size - 1) & PAGE_MASK})
        saved = [(p, bytes(uc.mem_read(p, 0x1000))) for p in pages]
        self._rom_write_allowed = True
        self._line_down()                # no interrupt before it (the loop raises it again)
        self._exact_stops(True)          # one instruction exactly, not the rest of its block
        try:
            uc.emu_start(uc.reg_read(X.UC_X86_REG_EIP), 0xFFFFFFFF, 0, 1)
        except UcError:
            pass                         # whatever else it does shows again on resume
        finally:
            self._rom_write_allowed = False
            self._exact_stops(bool(self._max_insns))
            for p, data in saved:
                uc.mem_write(p, data)    # ignores the protection, drops stale code
        self.rom_writes_dropped += 1
        if self.tracer.enabled:
            self.tracer.emit("rom_write_dropped", address=addr, size=size)

    def _cpu_view(self) -> None:
        """Make the CPU's deferred view now (``attach``): every mapping, then the entry
        segment state, whose descriptors Unicorn reads through those mappings, then the
        interrupt line's acknowledge window if the line is up (irq_line.py)."""
        if self._view_pending:
            self._view_pending = False
            self.uc_memory.on_published = None
            self.uc_memory.publish_pending()
        if self._entry_pending:
            self._entry_pending = False
            self._install_gdt()
        if self._line_pending:
            self._line_pending = False
            self.irq_line.undefer()

    def _view_published(self) -> None:
        """The memory map's first commit mapped everything (``attach``); the entry
        segment state still waits: ``load_kernel`` installs it after the image is in
        place (installing it here as well cost ~20 us of every boot)."""
        self._view_pending = False

    def _install_gdt(self, then: tuple[tuple[int, int], ...] = ()) -> None:
        """The entry segment state, then the registers ``then`` (in the same C call as
        the last of it: ``FastRegs.write_many``)."""
        # The option ROM's GDT lies in shadow RAM at 0xC02B8, which the firmware leaves
        # read-only (or, before the firmware step, hidden behind pc.rom), and Unicorn
        # loads a segment's descriptor from guest memory as the CPU sees it.  So the
        # segments are loaded from a copy in low RAM (put back afterwards), and only
        # then does GDTR point at the ROM's table: the descriptor caches are the same.
        self.write_ram(GDT_ADDR, GDT)
        scratch = bytes(self.ram.buffer.view[GDT_SCRATCH:GDT_SCRATCH + len(GDT)])
        self.write_ram(GDT_SCRATCH, GDT)
        regs = self.regs          # the C API: the binding's reg_write costs ~4 us a register
        try:
            regs.write_many(_SEGMENT_LOADS)
        finally:
            self.write_ram(GDT_SCRATCH, scratch)
        regs.write_many(_ENTRY_TABLES + then)

    # ------------------------------------------------------------------ boot
    def load_kernel(self, image: bytes, *, filename: str = "kernel", cmdline: str = "") -> None:
        """Load a multiboot image as QEMU's ``-kernel`` does and set the entry state."""
        plan = multiboot.parse(image, self.ram_size, filename=filename, cmdline=cmdline)
        guest = self.memory.guest
        for addr, data in plan.segments:
            if not guest.is_ram(addr, len(data)):
                raise ImageError(f"{filename}: segment [0x{addr:x}, 0x{addr + len(data):x}) "
                                 f"is not in RAM")
            guest.write(addr, data)
        self.entry = plan.entry
        self._boot_regs = {X.UC_X86_REG_EAX: multiboot.MULTIBOOT_BOOTLOADER_MAGIC,
                           X.UC_X86_REG_EBX: plan.mbi_addr, X.UC_X86_REG_ECX: 0,
                           X.UC_X86_REG_EDX: 0, X.UC_X86_REG_ESI: 0, X.UC_X86_REG_EDI: 0,
                           X.UC_X86_REG_EBP: 0, X.UC_X86_REG_ESP: ENTRY_ESP,
                           X.UC_X86_REG_EFLAGS: ENTRY_EFLAGS, X.UC_X86_REG_EIP: plan.entry}
        if self._uc is not None:
            self._entry_pending = False      # installed here, once the image is in place
            self._cpu_view()                 # the mappings, if no commit made them yet
            self._install_gdt(tuple(self._boot_regs.items()))

    def load_bios(self, image: bytes, *, filename: str = "bios") -> None:
        """``-bios``: map the image at the top of 4 GiB (its last 128 KiB also below
        1 MiB) and put the CPU in its reset state, so the firmware runs from F000:FFF0."""
        if not image or len(image) % 0x10000 or len(image) > 16 << 20:
            raise ImageError(f"could not load PC BIOS '{filename}': size 0x{len(image):x} is not "
                             f"a multiple of 64 KiB up to 16 MiB")
        if self.lowmem is None:
            raise UvirtError("-bios needs the pc machine's chipset")
        self.lowmem.load_bios(image)
        self.entry = RESET_EIP
        self._boot_regs = {}
        if self._engine is not None:
            self.cpu_reset()

    def load_bios_file(self, path: str) -> None:
        try:
            image = _read_interruptibly(path)
        except OSError as e:
            raise ImageError(f"could not load PC BIOS '{path}': {e.strerror}") from None
        self.load_bios(image, filename=path)

    def cpu_reset(self) -> None:
        """The x86 reset state QEMU's ``x86_cpu_reset`` gives (real mode, EDX = the CPUID
        family/model/stepping of qemu64, CR0 = 0x60000010).  CS is F000 with base 0xF0000
        rather than the architectural 0xFFFF0000: Unicorn loads real-mode bases as
        selector * 16, and until the BIOS's first far jump the bytes at 0xFFFF0 are the
        same (isa-bios is the last 128 KiB of the image)."""
        uc = self._engine
        uc.reg_write(X.UC_X86_REG_CR0, 0x60000010)
        uc.reg_write(X.UC_X86_REG_CR4, 0)
        uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2)
        for r in (X.UC_X86_REG_EAX, X.UC_X86_REG_EBX, X.UC_X86_REG_ECX, X.UC_X86_REG_ESI,
                  X.UC_X86_REG_EDI, X.UC_X86_REG_EBP, X.UC_X86_REG_ESP):
            uc.reg_write(r, 0)
        uc.reg_write(X.UC_X86_REG_EDX, RESET_EDX)
        uc.reg_write(X.UC_X86_REG_GDTR, (0, 0, 0xFFFF, 0))
        uc.reg_write(X.UC_X86_REG_IDTR, (0, 0, 0xFFFF, 0))
        for r in (X.UC_X86_REG_DS, X.UC_X86_REG_ES, X.UC_X86_REG_FS, X.UC_X86_REG_GS, X.UC_X86_REG_SS):
            uc.reg_write(r, 0)
        uc.reg_write(X.UC_X86_REG_CS, RESET_CS)
        uc.reg_write(X.UC_X86_REG_EIP, RESET_EIP)
        self.smbase, self.in_smm, self._smi_pending = smm.SMBASE_RESET, False, False
        if self.lowmem is not None:
            self.lowmem.set_smm(False)
        uc.ctl_flush_tb()

    def load_kernel_file(self, path: str, *, cmdline: str = "") -> None:
        try:
            image = _read_interruptibly(path)
        except OSError as e:
            raise ImageError(f"could not load kernel '{path}': {e.strerror}") from None
        self.load_kernel(image, filename=path, cmdline=cmdline)

    # ------------------------------------------------------------------ running
    def debug_exit(self, value: int) -> None:
        """isa-debug-exit: status ``(value << 1) | 1``, as QEMU exits."""
        code = (value << 1) | 1
        self._request_stop(StopReason.DEBUG_EXIT, code & 0xFF, f"value 0x{value:x}, status {code}",
                           debug_exit_value=value)

    def request_reset(self) -> None:
        """A guest asked for a system reset (PIIX3 RCR, keyboard controller...)."""
        # Without -no-reboot QEMU would reboot into the firmware; uvirt stops either way.
        detail = "" if self.no_reboot else "reboot is not supported: stopping"
        self._request_stop(StopReason.RESET, EXIT_CLEAN, detail)

    def hardware_error(self, message: str) -> None:
        """A device model reached QEMU's ``hw_error``: QEMU prints the message and aborts,
        so the guest observes nothing more.  The run stops at once with exit status 134
        and the message in its report."""
        self._request_stop(StopReason.HARDWARE_ERROR, EXIT_HARDWARE_ERROR, message)

    def _request_stop(self, reason: StopReason, exit_code: int, detail: str = "", **kw) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._stop = StopInfo(reason, exit_code, detail, **kw)
        self._line_down()                # nothing more is delivered in the block's tail
        self._route_irqs()
        # The rest of the translation block still runs (docs/unicorn-notes.md §7 item 10):
        # until run() returns every port reads as unassigned and ignores writes.
        self.io.table = {}
        if self._uc is not None:         # (any thread: never makes the CPU's view)
            self._cpu_stop()
        self._wake.set()

    def _host_exception(self, e: BaseException) -> None:
        if isinstance(e, KeyboardInterrupt):
            self._request_stop(StopReason.INTERRUPTED, EXIT_INTERRUPTED)
            return
        self._request_stop(StopReason.HOST_ERROR, EXIT_HOST_ERROR, f"{type(e).__name__}: {e}")
        self.host_exception = e

    def stop_unsupported(self, detail: str) -> None:
        """The guest asked for something uvirt cannot do: stop and say so."""
        self._request_stop(StopReason.FAULT, EXIT_FAULT, detail)

    def raise_smi(self) -> None:
        """CPU_INTERRUPT_SMI (a port hook on the CPU thread: APM 0xB2): taken at the end
        of the translation block, before any other interrupt and whatever IF says; an SMI
        raised in SMM waits for RSM (QEMU ``x86_cpu_pending_interrupt``)."""
        self._smi_pending = True
        if self._in_cpu and not self.in_smm:
            self._kicked = True
            self._cpu_stop()

    def _smm_enter(self) -> None:
        self._smi_pending = False
        self.in_smm = True
        if self.lowmem is not None:
            self.lowmem.set_smm(True)          # SMRAM: what the CPU sees from now on
        eip = self._engine.reg_read(X.UC_X86_REG_EIP)
        try:
            smm.enter(self._engine, self.smbase, self.memory.guest.write)
        except BaseException as e:             # a host mistake: stop with it, no traceback
            self._host_exception(e)
            return
        if self.tracer.enabled:
            self.tracer.emit("smm", what="enter", smbase=self.smbase, eip=eip)

    def _at_rsm(self) -> bool:
        try:
            return self.regs.mem_read(self._linear(self.regs.read(X.UC_X86_REG_EIP)), 2) == b"\x0f\xaa"
        except UcError:
            return False

    def _smm_leave(self) -> None:
        """RSM: back to the state the save area holds (the handler may have rewritten it)."""
        area = self.memory.guest.read(self.smbase + smm.STATE_BASE + smm.SEG_OFFSET, 0x200)
        try:
            self.smbase = smm.leave(self._engine, self.smbase, area)
        except BaseException as e:
            self._host_exception(e)
            return
        self.in_smm = False
        if self.lowmem is not None:
            self.lowmem.set_smm(False)
        if self.tracer.enabled:
            self.tracer.emit("smm", what="rsm", smbase=self.smbase,
                             eip=self._engine.reg_read(X.UC_X86_REG_EIP))

    def interrupt(self) -> None:
        """Stop the running guest from another thread or a signal handler."""
        self._request_stop(StopReason.INTERRUPTED, EXIT_INTERRUPTED)

    @property
    def stop_requested(self) -> bool:
        """A stop is on its way (the run is ending): for host code that waits on the CPU
        thread, e.g. a QMP ``stop`` holding the vCPU."""
        return self._stopping

    def request_quit(self) -> None:
        """QMP ``quit`` from a monitor thread: stop with status 0, as QEMU exits."""
        self._request_stop(StopReason.QUIT, EXIT_CLEAN)

    def resume_device_work(self) -> None:
        """Between two runs: device work, held back since the run's stop, may run again
        (``work.drain()``).  The port table the stop emptied comes back with the next
        ``run()``; host code that dispatches through ``io.table`` before that commits
        ``io`` itself."""
        self._stopping = False

    def run(self, *, timeout: float | None = 10.0, max_insns: int | None = None) -> StopInfo:
        """Run until the guest stops; ``timeout`` seconds of wall clock (None: no limit),
        ``max_insns`` instructions (costly in Unicorn: it adds a code hook)."""
        if self._engine is None:
            raise UvirtError("this machine has no CPU (created with cpu=False)")
        if self.entry is None:
            raise UvirtError("no kernel loaded (use load_kernel or -kernel)")
        uc = self._engine
        self._stopping = False
        self._stop = None
        self._wake.clear()
        self._route_irqs()
        self.io.commit()
        if self.tracer.enabled and self._trace_hook is None:
            # Inside an MMIO callback EIP is only as fresh as the translation block's last
            # sync; with a memory hook present Unicorn syncs it before every access, so
            # traced MMIO accesses name their instruction.  Bounded to the space above
            # RAM (the PCI hole), so RAM accesses never call back into Python.
            from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE
            self._trace_hook = uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, _no_op_mem_hook,
                                           begin=self.ram_size, end=0xFFFFFFFF)
            self._hooks.append(self._trace_hook)
        deadline = None if not timeout else time.monotonic() + timeout
        watch = _Watchdog.get()
        token = watch.register(self, deadline, timeout)
        self._watch_token, self._armed_tick = token, None
        old_handler = None
        if threading.current_thread() is threading.main_thread():
            # _signal: signal.signal wraps the handlers it returns in enum lookups (~7 us a
            # call, two a run); the C function takes back what it gave
            old_handler = _signal.signal(signal.SIGINT, lambda s, f: self.interrupt())
        self.memory.cpu_thread = threading.get_ident()
        self.uc_memory.settle()          # hooks left loose by commits between runs
        self._max_insns = max_insns
        if max_insns:
            self._exact_stops(True)      # Unicorn counts with a code hook: exact stops
        self.work.continue_later = self._work_later
        try:
            while not self._stopping:
                kicks = self._kicks
                self._service()
                if self._stopping:
                    break
                self._arm_tick(watch)
                self.tlb.sync()
                eip = self.regs.read(X.UC_X86_REG_EIP)
                self._kicked = False
                self._runs += 1
                self._in_cpu = True
                if self._posted or self._kicks != kicks:
                    # Kicked (a tick, posted work) after _service began, while _in_cpu was
                    # still False: the kick only set _wake, and emu_start clears pending
                    # stop requests, so it would be lost.  Serve it first.
                    self._in_cpu = False
                    continue
                self.memory.replay.started()
                try:
                    uc.emu_start(eip, 0xFFFFFFFF, 0, max_insns or 0)
                except UcError as e:
                    self._in_cpu = False
                    if self._stopping:
                        break
                    if e.errno == UC_ERR_EXCEPTION and self.tlb.take_switch():
                        continue           # guest turned paging on: its MMU from now on
                    if e.errno == UC_ERR_WRITE_PROT and self._rom_write is not None:
                        self._drop_rom_write()
                        if self._exc is not None:      # the instruction raised one
                            intno, at = self._exc
                            self._exc = None
                            self._raise_exception(intno, at)
                        continue
                    if e.errno == UC_ERR_INSN_INVALID:
                        if self.in_smm and self._at_rsm():
                            self._smm_leave()        # Unicorn's own RSM is #UD outside its SMM
                        else:
                            self._raise_exception(_delivery.EXC_UD, uc.reg_read(X.UC_X86_REG_EIP))
                        continue
                    self._fault_from(e)
                    break
                finally:
                    self._in_cpu = False
                if self._stopping:
                    break
                self._finish_restarted_access()
                if self._exc is not None:
                    intno, at = self._exc
                    self._exc = None
                    self._raise_exception(intno, at)
                    continue
                if self._kicked and not self._kicked_at_hlt():
                    continue
                if self._halted():
                    self._halt_wait()
                elif max_insns:
                    self._request_stop(StopReason.INSN_BUDGET, EXIT_BUDGET,
                                       f"{max_insns} instructions")
        except KeyboardInterrupt:
            self.interrupt()
        finally:
            self.work.continue_later = None
            self._work_due = None
            self.memory.cpu_thread = None
            self._leave_blocked()
            if self._max_insns:
                self._max_insns = None
                self._exact_stops(False)
            self._exc = None
            watch.unregister(token)
            self._watch_token = None
            if old_handler is not None:
                _signal.signal(signal.SIGINT, old_handler)
            for ch in self.chardevs:
                ch.flush()
        stop = self._stop
        assert stop is not None
        self._fill_cpu_state(stop)
        if self.tracer.enabled:
            self.tracer.emit("stop", reason=stop.reason.name.lower(), eip=stop.eip)
        return stop

    def _exact_stops(self, on: bool, *, translated: bool = True) -> None:
        """on: stops may land before any instruction (code hooks: single-stepping, an
        instruction count), with Unicorn's per-access checks and ReplayGuard; off: stops
        land at translation-block starts only, as in QEMU (uvirt/cpu/exits.py).
        ``translated=False``: the CPU has run nothing yet, so no code to flush."""
        if self.exits is None:
            return
        self.exits.set(not on, translated=translated)
        self.memory.replay.armed = on
        self._route_irqs()

    # ------------------------------------------------------------------ interrupts
    def _cpu_stop(self) -> None:
        """Every stop request goes through here, so the memory map can keep MMIO side
        effects exactly-once when Unicorn restarts the access (uc_memory.ReplayGuard).
        From another thread the stop can land in ``emu_start``'s prologue, before
        Unicorn's run has begun, where Unicorn ignores it: the watchdog then sends it
        again if the same run is still going a moment later."""
        with self._uc_lock:
            uc = self._uc
            if uc is None:                # closed meanwhile (a watchdog stop arriving late)
                return
            self.memory.replay.note_stop()
            uc.emu_stop()
        if self._in_cpu and threading.get_ident() != self.memory.cpu_thread:
            _Watchdog.get().recheck(self._watch_token, self._runs)

    def _restop(self, run: int) -> None:
        """Watchdog thread: a stop was sent to CPU run ``run``; if that run is still
        going, Unicorn dropped it: send it again."""
        if self._in_cpu and self._runs == run:
            self._cpu_stop()

    def _finish_restarted_access(self) -> None:
        """Unicorn abandoned an instruction in the middle of an MMIO access: run it again,
        alone, before anything else (an interrupt frame) happens; the guard answers its
        access from the journal."""
        replay = self.memory.replay
        if replay.journal is None or self._stopping:
            return
        self._line_down()
        replay.started()
        try:
            self._engine.emu_start(self._engine.reg_read(X.UC_X86_REG_EIP), 0xFFFFFFFF, 0, 1)
        except UcError:
            pass                       # the fault shows again when the run resumes
        replay.journal = None

    def call_soon_threadsafe(self, fn) -> None:
        """Run ``fn()`` on the CPU thread at the next stop (now if the guest is halted):
        how device threads (eventfds, backends) touch device state and raise interrupts."""
        self._posted.append(fn)
        self._kick_async()

    def watch_while_halted(self, source) -> None:
        """While the guest is in ``hlt``, the CPU thread also wakes on ``source``'s fd and
        services it itself (uvirt/cpu/halt_wake.py): a device event that interrupts a
        halted guest then costs one thread wake-up instead of two."""
        self._wake.watch(source)

    def _kick_async(self) -> None:
        """From any thread: stop the CPU soon (end of the current block) and wake a HLT."""
        self._kicks += 1
        if self._in_cpu and self._uc is not None:
            self._kicked = True
            self._cpu_stop()
        self._wake.set()

    def _timer_fired(self) -> None:
        """Watchdog thread: a PIT edge, a poll of a blocked interrupt or device work is due.
        The watchdog has dropped the tick: forget it, so the next ``_arm_tick`` arms one
        again even for the same time (the CPU thread may have looked before it was due)."""
        self._armed_tick = None
        self._kick_async()

    def _engine_irqs(self) -> bool:
        """Is the CPU taking hardware interrupts itself (uvirt/cpu/irq_line.py)?  Only
        while stops land at block boundaries (no code hook, no instruction budget)."""
        return self.irq_line is not None and self.exits is not None and self.exits.on

    def _route_irqs(self) -> None:
        """Who hears the interrupt controllers' output (on the CPU thread): the CPU's
        line while it takes interrupts itself; otherwise ``_irq_changed``, which stops the
        CPU for the run loop to deliver.  While a stop is on its way nothing raises the
        line (the rest of the block must not take an interrupt).  Called whenever one of
        those conditions changes, so the hooks' hot path tests none of them."""
        ic = self.interrupts
        if ic is None:
            return
        if self._engine_irqs():
            ic.on_level = self._line_falls if self._stopping else self.irq_line.set
            ic.on_change = None           # the line is all the CPU needs
        else:
            ic.on_level = self._line_falls
            ic.on_change = self._irq_changed

    def _line_falls(self, level: bool) -> None:
        if not level:
            self._line_down()

    def _line_down(self) -> None:
        if self.irq_line is not None and self.irq_line.raised:
            self.irq_line.lower_line()

    def _take_interrupt(self, _handle=None, _offset=0, _size=4, _ud=None) -> int:
        """Inside emu_start, at a block boundary with IF=1 outside any interrupt shadow:
        the CPU takes the interrupt (QEMU's ``cpu_get_pic_interrupt``).  -> the vector,
        which Unicorn's own ``do_interrupt_all`` delivers through the IDT.  (Called by
        Unicorn as the acknowledge page's MMIO read, hence the arguments.)"""
        try:
            ic = self.interrupts
            vector = ic.acknowledge()
            if vector is None:           # cannot happen while the line follows cpu_pending
                vector = ic.apic.spurious_vec & 0xFF
            if self.tracer.enabled:
                self.tracer.emit("interrupt", vector=vector, kind=_delivery.Kind.HARDWARE.value,
                                 eip=self.regs.read(X.UC_X86_REG_EIP), result="Delivered")
            if self.irq_line.raised:
                # Still pending after this one (a trap gate, auto-EOI): Unicorn clears the
                # line after delivering, so the run loop raises it again at once.
                self._kicked = True
                self._cpu_stop()
            return vector
        except BaseException as e:
            self._host_exception(e)
            return 0

    def _irq_changed(self) -> None:
        """CPU thread (a port/MMIO hook or the run loop): an interrupt may be pending
        (only while the CPU does not take interrupts itself, ``_route_irqs``)."""
        # While single-stepping a blocked interrupt the step hook stops exactly when IF
        # turns 1; otherwise (running free, or polling) stop now.  Even if this run was
        # kicked already: a host thread's kick may have been dropped (see _cpu_stop).
        if self._in_cpu and self._step_hook is None and not self._stopping:
            if self.interrupts.cpu_pending():
                self._kicked = True
                self._cpu_stop()

    def _run_posted(self) -> None:
        while self._posted:
            fn = self._posted.popleft()
            try:
                fn()
            except BaseException as e:
                self._host_exception(e)

    def _work_later(self) -> None:
        """Device work is left after a slice: give the CPU a slice of the same length,
        then continue (a tick stops the CPU).  Under an instruction budget no tick: the
        work continues at the CPU's next stop, so the count Unicorn keeps per
        ``emu_start`` is not restarted by device work."""
        if self._max_insns:
            self._work_due = 0.0
            return
        from uvirt.board.dma import SLICE_SECONDS
        due = time.monotonic() + SLICE_SECONDS
        self._work_due = due
        if self._in_cpu and self._watch_token is not None:
            tick = due if self._armed_tick is None else min(due, self._armed_tick)
            self._armed_tick = tick
            _Watchdog.get().set_tick(self._watch_token, tick)

    def _run_work(self) -> None:
        if self.work.pending and not self._stopping:
            due = self._work_due
            if due is None or time.monotonic() >= due:
                self._work_due = None
                try:
                    self.work.run()
                except BaseException as e:
                    self._host_exception(e)

    def _service(self) -> None:
        """Between two emu_start calls: posted work, device work that a slice left over,
        timers, and delivery of a pending interrupt when the CPU accepts one (IF=1,
        outside the STI shadow)."""
        self._run_posted()
        self._run_work()
        if self._smi_pending and not self.in_smm and not self._stopping:
            self._smm_enter()
        ic = self.interrupts
        if ic is None or self._stopping:
            return
        ic.sync()
        if self._engine_irqs():
            self._leave_blocked()
            self.irq_line.set(ic.cpu_pending())
            return
        self._line_down()
        if not ic.cpu_pending():
            self._leave_blocked()
            return
        regs = self.regs
        while regs.read(X.UC_X86_REG_EFLAGS) & IF_MASK and not self._in_shadow():
            self._leave_blocked()
            vector = ic.acknowledge()
            if vector is not None:
                eip = regs.read(X.UC_X86_REG_EIP)
                self._deliver(vector, _delivery.Kind.HARDWARE, eip, eip, 0)
            # Another one still pending (the PIC's vector went first): at once through a
            # trap gate, after IRET through an interrupt gate (blocked), as QEMU does.
            if self._stopping or not ic.cpu_pending():
                return
        self._enter_blocked()

    def _in_shadow(self) -> bool:
        """The instruction before EIP was STI (the one-instruction interrupt shadow).
        Reached only when the CPU stopped right after STI (STI ends a block).  A shadow
        recorded at a stop holds only while EIP is still there: once the CPU has run on
        (polling, not stepping), it is over."""
        eip = self.regs.read(X.UC_X86_REG_EIP)
        if self._step_shadow is not None:
            if self._step_shadow == eip:
                return True
            self._step_shadow = None
        try:
            return self.regs.mem_read(self._linear(eip) - 1, 1) == b"\xfb"
        except UcError:
            return False

    def _enter_blocked(self) -> None:
        """A pending interrupt waits for IF=1: single-step until it is (bounded)."""
        uc = self._engine
        shadow = self._in_shadow()
        touched = self.interrupts.touched
        if not self._blocked or touched != self._step_touched:
            # newly blocked, or the guest worked on its interrupts since: step again
            # (a guest that never touched the PIC, PIT or APIC runs with SeaBIOS's
            # IRQ 0 pending and IF=0 throughout: polling is enough for it)
            self._blocked = True
            self._step_budget = STEP_BUDGET if touched else 0
            self._step_touched = touched
            self._poll_interval = POLL_FIRST
        self._step_shadow = self.regs.read(X.UC_X86_REG_EIP) if shadow else None
        self._step_prev = -1
        if self._step_budget > 0:
            if self._step_hook is None:
                self._exact_stops(True)
                self._step_hook = uc.hook_add(UC_HOOK_CODE, self._step_cb)
                uc.ctl_flush_tb()        # code hooks reach only newly translated blocks
            self._poll_at = None
        else:
            if self._step_hook is not None:
                uc.hook_del(self._step_hook)
                self._step_hook = None
                uc.ctl_flush_tb()
                self._exact_stops(bool(self._max_insns))
            self._poll_at = time.monotonic() + self._poll_interval
            self._poll_interval = min(self._poll_interval * 2, POLL_MAX)

    def _leave_blocked(self) -> None:
        if self._step_hook is not None and self._engine is not None:
            self._engine.hook_del(self._step_hook)
            self._step_hook = None
            self._engine.ctl_flush_tb()
            self._exact_stops(bool(self._max_insns))
        self._blocked = False
        self._step_shadow = None
        self._poll_at = None

    def _step_cb(self, uc, address, size, _ud) -> None:
        try:
            if uc.reg_read(X.UC_X86_REG_EFLAGS) & IF_MASK:
                if self._step_shadow is not None:
                    self._step_shadow = None         # this is the shadowed instruction
                elif self._step_prev >= 0 and uc.mem_read(self._step_prev, 1) == b"\xfb":
                    pass                             # it follows STI: let it run
                else:
                    self._kicked = True
                    self._cpu_stop()                 # stops before this instruction
                    return
            self._step_prev = address
            self._step_budget -= 1
            touched = self.interrupts.touched
            if touched != self._step_touched:
                self._step_touched = touched
                self._step_budget = STEP_BUDGET
            if self._step_budget <= 0:
                self._kicked = True
                self._cpu_stop()
        except BaseException as e:
            self._host_exception(e)

    def _arm_tick(self, watch: "_Watchdog") -> None:
        tick = None
        ic = self.interrupts
        if ic is not None:
            if self._poll_at is not None:
                tick = self._poll_at
            elif not self._blocked:
                ns = ic.next_deadline(time.monotonic_ns())
                if ns is not None:
                    tick = ns / 1e9
        if self.work.pending and self._work_due and not self._max_insns:
            tick = self._work_due if tick is None else min(tick, self._work_due)
        if tick != self._armed_tick:
            self._armed_tick = tick
            watch.set_tick(self._watch_token, tick)

    def _halt_wait(self) -> None:
        """``hlt``: with IF=0 the run is over (QEMU waits for an NMI that never comes);
        with IF=1 sleep until something can interrupt (the budget still applies)."""
        uc = self._engine
        if not uc.reg_read(X.UC_X86_REG_EFLAGS) & IF_MASK:
            self._request_stop(StopReason.HALTED, EXIT_CLEAN)
            return
        ic = self.interrupts
        while not self._stopping:
            self._run_posted()
            if self.work.pending:             # a halted CPU leaves the host to device work
                self._work_due = None
                self._run_work()
                if ic is not None:
                    ic.sync()
                    if ic.cpu_pending():
                        return
                continue
            if ic is None:
                self._wake.wait()
            else:
                ic.sync()
                if ic.cpu_pending():
                    return
                now = time.monotonic_ns()
                nxt = ic.next_deadline(now)
                self._wake.wait(None if nxt is None else max(0.0, (nxt - now) / 1e9))
            self._wake.clear()

    def _raise_exception(self, intno: int, eip: int) -> None:
        """An exception or software interrupt Unicorn reported at ``eip``."""
        uc = self._engine
        kind, insn, nxt, error = _delivery.Kind.EXCEPTION, eip, eip, 0
        try:
            before = bytes(uc.mem_read(self._linear(eip) - 2, 2))
        except UcError:
            before = b""
        if len(before) == 2 and ((intno == 3 and before[1] == 0xCC) or (intno == 4 and before[1] == 0xCE)
                                 or (intno == 1 and before[1] == 0xF1)):
            kind, insn = _delivery.Kind.SOFTWARE, eip - 1
        elif before == bytes((0xCD, intno)):
            kind, insn = _delivery.Kind.SOFTWARE, eip - 2
        elif intno in (_delivery.EXC_TS, _delivery.EXC_NP, _delivery.EXC_SS, _delivery.EXC_GP):
            # Unicorn's own error code when the line found it (a hardware interrupt through
            # a bad gate raises #NP/#GP(vector*8+2) inside emu_start); else a guess
            error = (self.irq_line.exception_error_code() if self.irq_line is not None
                     else _guess_error_code(uc, eip))
        if kind is _delivery.Kind.EXCEPTION and intno in (0, 8, 10, 11, 12, 13, 14):
            _reset_old_exception(uc)     # Unicorn never delivered it: forget it (see there)
        self._deliver(intno, kind, insn, nxt, error)

    def cpu_linear_pc(self) -> int:
        """Linear address of the instruction a port hook is running for."""
        return self._linear(self._engine.reg_read(X.UC_X86_REG_EIP))

    def _real_mode(self) -> bool:
        # FastRegs: asked twice per delivered interrupt (the binding's reg_read ~2 us)
        return not self.regs.read(X.UC_X86_REG_CR0) & 1

    def _linear(self, eip: int) -> int:
        """The linear address of CS:EIP (real mode: CS * 16; protected mode: flat, as
        uvirt's guests and SeaBIOS's 32-bit code run)."""
        if self._real_mode():
            return (self._engine.reg_read(X.UC_X86_REG_CS) << 4) + (eip & 0xFFFF)
        return eip

    def _deliver(self, vector: int, kind, eip: int, next_eip: int, error: int) -> None:
        regs = self.regs
        if self._real_mode():
            self._deliver_real(vector, kind, eip, next_eip)
            return
        result = _delivery.deliver(_UcView(regs), vector, kind, eip=eip, next_eip=next_eip,
                                   error_code=error)
        if self.tracer.enabled:
            self.tracer.emit("interrupt", vector=vector, kind=kind.value, eip=eip,
                             result=type(result).__name__)
        if isinstance(result, _delivery.Delivered):
            regs.mem_write(result.esp, result.stack)
            regs.write(X.UC_X86_REG_ESP, result.esp)
            regs.write(X.UC_X86_REG_EFLAGS, result.eflags)
            if result.cs != regs.selector(X.UC_X86_REG_CS):
                self._load_cs(result.cs)
            regs.write(X.UC_X86_REG_EIP, result.eip)
            return
        first = result.chain[0] if result.chain else None
        what = _EXCEPTION_NAMES.get(first.vector, f"vector 0x{first.vector:02x}") if first else ""
        if kind is _delivery.Kind.HARDWARE and first is not None:
            what = f"interrupt vector 0x{first.vector:02x}"
        elif kind is _delivery.Kind.SOFTWARE and first is not None:
            what = f"int 0x{first.vector:02x}"
        if isinstance(result, _delivery.TripleFault):
            self._request_stop(StopReason.TRIPLE_FAULT, EXIT_FAULT,
                               f"{what}, delivery through the IDT failed: {result}")
        else:
            self._request_stop(StopReason.FAULT, EXIT_FAULT, f"{what}: {result.reason}")

    def _deliver_real(self, vector: int, kind, eip: int, next_eip: int) -> None:
        uc = self._engine
        ss = uc.reg_read(X.UC_X86_REG_SS)
        result = _delivery.deliver_real(_UcView(self.regs), vector, kind, eip=eip, next_eip=next_eip)
        if self.tracer.enabled:
            self.tracer.emit("interrupt", vector=vector, kind=kind.value, eip=eip,
                             result=type(result).__name__)
        if isinstance(result, _delivery.Delivered):
            uc.mem_write((ss << 4) + (result.esp & 0xFFFF), result.stack)
            uc.reg_write(X.UC_X86_REG_ESP, result.esp)
            uc.reg_write(X.UC_X86_REG_EFLAGS, result.eflags)
            uc.reg_write(X.UC_X86_REG_CS, result.cs)
            uc.reg_write(X.UC_X86_REG_EIP, result.eip)
            return
        self._request_stop(StopReason.TRIPLE_FAULT, EXIT_FAULT,
                           f"real-mode vector 0x{vector:02x}, beyond the IVT limit: {result}")

    def _load_cs(self, selector: int) -> None:
        # Loading CS through reg_write marks the descriptor accessed; QEMU's delivery
        # does not: put the access byte back.
        uc = self._engine
        _sel, base, limit, _f = uc.reg_read(X.UC_X86_REG_GDTR)
        off = base + (selector & ~7) + 5
        try:
            access = bytes(uc.mem_read(off, 1))
        except UcError:
            access = None
        uc.reg_write(X.UC_X86_REG_CS, selector)
        if access is not None:
            uc.mem_write(off, access)

    def _halted(self) -> bool:
        regs = self.regs
        eip = regs.read(X.UC_X86_REG_EIP)
        try:
            return regs.mem_read(self._linear(eip) - 1, 1) == b"\xf4"
        except UcError:
            return False

    def _kicked_at_hlt(self) -> bool:
        """A kick (timer, posted work) landed in the run that ended at a ``hlt`` with IF=1:
        the HLT ran and must still wait, or the guest goes on after it as if an interrupt
        had come (irq_pit under SeaBIOS printed "woke" before its handler did: a PIT tick
        armed for the firmware's timer fired as the guest halted).  A kick's stop can also
        land after a block-ending instruction whose last byte is 0xF4 (a not-taken
        ``jcc``/``loop`` rel8 of -12, ``int 0xf4``), so those stay "not halted"; with IF=0 a
        kicked stop is never taken for a halt (that would end the run)."""
        if not self.regs.read(X.UC_X86_REG_EFLAGS) & IF_MASK:
            return False
        try:
            before = self.regs.mem_read(self._linear(self.regs.read(X.UC_X86_REG_EIP)) - 2, 2)
        except UcError:
            return False
        return before[1] == 0xF4 and not (0x70 <= before[0] <= 0x7F or 0xE0 <= before[0] <= 0xE3
                                          or before[0] == 0xCD)

    def _fault_from(self, e: UcError) -> None:
        if e.errno == UC_ERR_FETCH_UNMAPPED or e.errno == UC_ERR_FETCH_PROT:
            detail = "instruction fetch from unmapped memory"
        elif e.errno == UC_ERR_INSN_INVALID:
            detail = "CPU exception #UD invalid opcode"
        elif e.errno in (UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_UNMAPPED):
            detail = "data access outside the address space"
        elif e.errno == UC_ERR_EXCEPTION:
            detail = "unhandled CPU exception"
        else:
            detail = f"unicorn: {e}"
        self._request_stop(StopReason.FAULT, EXIT_FAULT, detail)

    def _fill_cpu_state(self, stop: StopInfo) -> None:
        # the C API, one call (the binding: ~3 us a register, 14 a stop)
        values = self.regs.read_many(_REG_IDS)
        stop.regs = {name: v & 0xFFFF if name in _SELECTORS else v
                     for (name, _), v in zip(_REGS, values)}
        stop.eip = stop.regs["eip"]
        if not stop.clean:
            stop.insn = self.disassemble(stop.eip)

    def disassemble(self, addr: int) -> str:
        from capstone import CS_ARCH_X86, CS_MODE_32, Cs
        try:
            code = bytes(self._engine.mem_read(addr, 15))
        except UcError:
            return "<no memory at eip>"
        for insn in Cs(CS_ARCH_X86, CS_MODE_32).disasm(code, addr, 1):
            return f"{insn.address:08x}: {insn.bytes.hex(' ')}  {insn.mnemonic} {insn.op_str}".rstrip()
        return f"{addr:08x}: {code[:4].hex(' ')} ...  (undecodable)"

    # ------------------------------------------------------------------ snapshots
    #: the CPU side's run state a snapshot holds (the board and the devices declare
    #: their own: uvirt/cpu/snapshot.py)
    snapshot_state = ("_exc", "rom_writes_dropped", "insn_count")

    def snapshot(self):
        """Save everything the guest can observe, to come back to with ``restore``
        (uvirt/cpu/snapshot.py: CPU, RAM written since, shared regions, every device)."""
        from uvirt.cpu.snapshot import take
        return take(self)

    def restore(self, snap) -> None:
        """Back to ``snap`` (this machine's latest snapshot); it can be restored again."""
        from uvirt.cpu.snapshot import restore
        restore(self, snap)

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """System reset: the board (devices, PCI functions, the host bridge; RAM is kept,
        as QEMU), then the CPU's boot state."""
        self.board.reset()
        if self._engine is not None and self.lowmem is not None and self.lowmem.bios is not None:
            self.cpu_reset()
        elif self._engine is not None and self._boot_regs:
            self._install_gdt(tuple(self._boot_regs.items()))

    def close(self) -> None:
        """Close the board (chardevs, drives) and release the CPU: hooks, mappings
        (buffers stay with their regions)."""
        with self._uc_lock:
            uc, self._uc = self._uc, None
        self._view_pending = self._entry_pending = self._line_pending = False
        self.board.close()
        self._wake.close()
        if uc is not None:
            board = self.board
            board.cpu = None
            if self.interrupts is not None:
                self.interrupts.on_change = None
                self.interrupts.on_level = _no_level
            # Our own CPU is closed outright: uc_close frees its hooks, mappings and
            # modes at once, so giving it back as Unicorn made it (a page unmapped, two
            # translation flushes, a TLB mode, every hook deleted: about 100 us) is for a
            # user's CPU, which lives on, and everything we mapped into it is unmapped.
            finalizer = getattr(uc, "_Uc__finalizer", None) if self._owns_uc else None
            if self.irq_line is not None:
                if finalizer is None:
                    self.irq_line.close()
                else:
                    self.irq_line.lower_line()     # the line's own state: down
                self.irq_line = None
            if finalizer is None:
                if self.exits is not None:
                    self.exits.set(False)
                self.tlb.close()
                for h in self._hooks:
                    uc.hook_del(h)
            self._hooks.clear()
            if finalizer is not None:
                finalizer()
                # The binding keeps every hook's Python callback (bound to this machine,
                # its board, its regions) in tables on the Uc: emptied, a closed machine
                # leaves no cycle and is freed by reference counts alone (no collector
                # pass over the whole board: tests/guest/test_machine_gc.py).
                uc._callbacks.clear()
                uc._mmio_callbacks.clear()
                self.uc_memory.detach(cpu_closed=True)
            else:
                self.uc_memory.detach()
            self.uc_memory = None
            self.tlb = None               # it holds our error callback
            self.exits = None

    def __enter__(self) -> "Machine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_interruptibly(path: str) -> bytes:
    """The whole file.  A FIFO or a device is read with waits of at most 0.1 s: Python runs
    a signal's handler only between bytecodes, so a Ctrl-C that lands just before a
    blocking read() would wait for the writer (``-kernel`` from a FIFO nobody writes to)."""
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return f.read()
        chunks = []
        while True:
            if select.select([fd], [], [], 0.1)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)


class _UcView:
    """``interrupts.delivery.CpuView`` over a Unicorn CPU."""

    def __init__(self, regs: FastRegs) -> None:
        self.regs = regs
        self.eflags = regs.read(X.UC_X86_REG_EFLAGS)
        self.cs = regs.selector(X.UC_X86_REG_CS)
        self.esp = regs.read(X.UC_X86_REG_ESP)
        self.idt = regs.table(X.UC_X86_REG_IDTR)
        self.gdt = regs.table(X.UC_X86_REG_GDTR)

    def read(self, addr: int, size: int) -> bytes:
        try:
            return self.regs.mem_read(addr, size)
        except UcError:
            return bytes(size)           # unassigned memory reads 0


def _no_level(_level: bool) -> None:
    """``InterruptController.on_level`` without a CPU."""


def _no_op_mem_hook(_uc, _access, _address, _size, _value, _ud) -> None:
    """See ``Machine.run``: its presence keeps EIP exact in MMIO callbacks."""


def _guess_error_code(uc: Uc, eip: int) -> int:
    """Unicorn does not report the error code of the #GP/#NP/#SS/#TS it raises.  For a
    segment register load (the common case at ring 0) it is the selector, as QEMU's
    ``load_segment`` failures give; anything else gets 0."""
    try:
        from capstone import CS_ARCH_X86, CS_MODE_32, Cs
        from capstone import x86_const as CX
        md = Cs(CS_ARCH_X86, CS_MODE_32)
        md.detail = True
        insn = next(md.disasm(bytes(uc.mem_read(eip, 15)), eip, 1), None)
        if insn is None:
            return 0
        sregs = {CX.X86_REG_DS, CX.X86_REG_ES, CX.X86_REG_FS, CX.X86_REG_GS, CX.X86_REG_SS}
        ops = insn.operands
        if insn.mnemonic == "mov" and len(ops) == 2 and ops[0].type == CX.X86_OP_REG and ops[0].reg in sregs:
            if ops[1].type == CX.X86_OP_REG:
                name = insn.reg_name(ops[1].reg).upper()
                reg = getattr(X, f"UC_X86_REG_{name}", None)
                return (uc.reg_read(reg) & 0xFFFC) if reg is not None else 0
        if insn.mnemonic == "pop" and ops and ops[0].type == CX.X86_OP_REG and ops[0].reg in sregs:
            esp = uc.reg_read(X.UC_X86_REG_ESP)
            return int.from_bytes(uc.mem_read(esp, 2), "little") & 0xFFFC
    except Exception:
        return 0
    return 0


_OLD_EXCEPTION_OFFSET: int | None | bool = False     # False: not calibrated yet


def _old_exception_offset() -> int | None:
    """Where ``env->old_exception`` sits in Unicorn's saved CPU context.

    QEMU's ``check_exception`` turns a second contributory exception into #DF while
    ``old_exception`` says one is "in flight"; only a completed delivery resets it, and
    Unicorn never delivers.  So after a #DE, the next #DE would be reported as #DF and the
    one after as a triple fault (measured).  The field is found once per process by
    raising #DE and #GP in a scratch CPU and comparing saved contexts (-1 -> 0 / 13)."""
    global _OLD_EXCEPTION_OFFSET
    if _OLD_EXCEPTION_OFFSET is not False:
        return _OLD_EXCEPTION_OFFSET

    def trial(code: bytes) -> tuple[bytes, bytes]:
        u = Uc(UC_ARCH_X86, UC_MODE_32)
        u.mem_map(0, 0x2000)
        u.mem_write(0x1000, code)
        u.hook_add(UC_HOOK_INTR, lambda uc, i, d: uc.emu_stop())
        before = bytes(u.context_save())
        u.emu_start(0x1000, 0x1000 + len(code))
        return before, bytes(u.context_save())

    try:
        a, b = trial(bytes.fromhex("31c9f7f1"))                 # xor ecx,ecx; div ecx
        _, c = trial(bytes.fromhex("66b833008ed8"))             # mov ax,0x33; mov ds,ax
        found = [o for o in range(0, min(len(a), len(b), len(c)) - 3, 4)
                 if a[o:o + 4] == b"\xff\xff\xff\xff" and b[o:o + 4] == bytes(4)
                 and c[o:o + 4] == (13).to_bytes(4, "little")]
        _OLD_EXCEPTION_OFFSET = found[0] if len(found) == 1 else None
    except Exception:
        _OLD_EXCEPTION_OFFSET = None
    return _OLD_EXCEPTION_OFFSET


def _reset_old_exception(uc: Uc) -> None:
    offset = _old_exception_offset()
    if offset is None:
        return
    ctx = uc.context_save()
    ptr = ctypes.cast(ctx.context, ctypes.c_void_p).value
    ctypes.memmove(ptr + offset, (-1).to_bytes(4, "little", signed=True), 4)
    uc.context_restore(ctx)


def _port_hook(uc: Uc, insn: int, fn) -> int:
    """An IN or OUT hook whose Python function Unicorn calls directly (uvirt/cpu/uc_hooks.py)."""
    name = "HOOK_INSN_IN_CFUNC" if insn == X.UC_X86_INS_IN else "HOOK_INSN_OUT_CFUNC"
    return add_c_hook(uc, UC_HOOK_INSN, name, fn,
                      lambda: uc.hook_add(UC_HOOK_INSN, lambda u, *a: fn(None, *a), None, 1, 0, insn),
                      1, 0, ctypes.c_int(insn))


class _Watchdog:
    """One daemon thread per process: stops machines at their deadline and on SIGINT."""

    _instance: "_Watchdog | None" = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> "_Watchdog":
        inst = cls._instance
        if inst is not None:              # made once per process: no lock to read it
            return inst
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self) -> None:
        self._active: dict[int, tuple[Machine, float | None, float | None]] = {}
        self._ticks: dict[int, float] = {}     # token -> monotonic time of the machine's next tick
        #: token -> (when, CPU run number): check then that a stop sent to that run landed
        self._rechecks: dict[int, tuple[float, int]] = {}
        self._mutex = threading.Lock()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._next = 0
        #: when the loop's select times out (inf: no deadline): a new deadline or tick
        #: that is not earlier needs no wake-up, the loop recomputes when it wakes
        self._sleep_until = float("inf")
        self._wakeup_installed = False
        start_service_thread(self._loop, "uvirt-watchdog")

    def register(self, machine: Machine, deadline: float | None, seconds: float | None = None) -> int:
        with self._mutex:
            self._next += 1
            token = self._next
            self._active[token] = (machine, deadline, seconds)
            wake = deadline is not None and deadline < self._sleep_until
        if not self._wakeup_installed and threading.current_thread() is threading.main_thread():
            try:
                signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
                self._wakeup_installed = True
            except ValueError:
                pass
        if wake:
            self._poke()
        return token

    def unregister(self, token: int) -> None:
        with self._mutex:
            self._active.pop(token, None)
            self._ticks.pop(token, None)
            self._rechecks.pop(token, None)

    def recheck(self, token: int | None, run: int) -> None:
        """Call the machine's ``_restop(run)`` in ``RESTOP_AFTER`` seconds."""
        if token is None:
            return
        when = time.monotonic() + RESTOP_AFTER
        with self._mutex:
            if token not in self._active:
                return
            self._rechecks[token] = (when, run)
            wake = when < self._sleep_until
        if wake:
            self._poke()

    def set_tick(self, token: int | None, when: float | None) -> None:
        """Call the machine's ``_timer_fired`` at ``when`` (monotonic seconds), once."""
        if token is None:
            return
        with self._mutex:
            if when is None:
                self._ticks.pop(token, None)
                return
            self._ticks[token] = when
            wake = when < self._sleep_until
        if wake:
            self._poke()

    def _poke(self) -> None:
        try:
            os.write(self._wfd, b"\0")
        except BlockingIOError:
            pass

    def _loop(self) -> None:
        while True:
            with self._mutex:
                deadlines = [d for _, d, _ in self._active.values() if d is not None]
                deadlines += self._ticks.values()
                deadlines += [when for when, _ in self._rechecks.values()]
                self._sleep_until = min(deadlines, default=float("inf"))
            wait = None if not deadlines else max(0.0, self._sleep_until - time.monotonic())
            ready, _, _ = select.select([self._rfd], [], [], wait)
            got_signal = False
            if ready:
                try:
                    data = os.read(self._rfd, 512)
                except BlockingIOError:
                    data = b""
                got_signal = any(b == signal.SIGINT for b in data)
            now = time.monotonic()
            with self._mutex:
                active = list(self._active.values())
                due = [t for t, when in self._ticks.items() if when <= now]
                fired = [self._active[t][0] for t in due if t in self._active]
                for t in due:
                    del self._ticks[t]
                rechecks = [(self._active[t][0], run) for t, (when, run) in self._rechecks.items()
                            if when <= now and t in self._active]
                self._rechecks = {t: r for t, r in self._rechecks.items() if r[0] > now}
            for machine in fired:
                machine._timer_fired()
            for machine, run in rechecks:
                machine._restop(run)
            for machine, deadline, seconds in active:
                if got_signal:
                    machine.interrupt()
                elif deadline is not None and now >= deadline:
                    machine._request_stop(StopReason.TIMEOUT, EXIT_BUDGET, f"{seconds:g} s of wall clock")
            # Nothing of a machine stays referenced while the loop sleeps: a machine
            # closed and dropped meanwhile is freed at once (tests/guest/test_machine_gc.py).
            active = fired = rechecks = machine = None
