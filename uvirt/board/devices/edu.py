"""``-device edu``: QEMU's educational PCI device, as QEMU 7.2 implements it (hw/misc/edu.c;
the guest-visible contract is QEMU's docs/specs/edu.txt).

Identity (``edu_class_init``, ``pci_edu_realize``)
    1234:11e8 revision 0x10, class 0x00ff (``PCI_CLASS_OTHERS``), interrupt pin A,
    subsystem 1af4:1100 (QEMU's default for every PCI device), one capability: MSI at 0x40
    (``msi_init(pdev, 0, 1, true, false)``: one vector, 64-bit address, no masking;
    uvirt.board.pci.msi).  Every config write runs ``msi_write_config``: enabling MSI lowers
    INTx, and a QSIZE above one vector is clamped back to 0.

BAR0: 1 MiB 32-bit memory (``edu-mmio``), ``.valid`` and ``.impl`` 4..8 bytes, aligned
    0x00  RO  identification 0x010000ed (major 1, minor 0)
    0x04  RW  liveness check: reads back the bitwise NOT of the last value written
    0x08  RW  factorial: a write starts computing n! (32-bit, wrapping) unless one is
              running; reads return n until the result replaces it
    0x20  RW  status: bit 0 computing (RO), bit 7 raise an interrupt when the factorial
              is done (RW; only bit 7 of a write counts)
    0x24  RO  interrupt status: 0x001 factorial done, 0x100 DMA done, or anything
              written to 0x60
    0x60  WO  interrupt raise: ``irq_status |= value``, then an interrupt if it is nonzero
    0x64  WO  interrupt acknowledge: ``irq_status &= ~value``; INTx drops at zero
    0x80  RW  DMA source address          (64-bit fields: a 4-byte write replaces the
    0x88  RW  DMA destination address      whole field, zero-extended; a 4-byte read
    0x90  RW  DMA transfer count           returns the low half; 0x84, 0x8c... read ~0)
    0x98  RW  DMA command: bit 0 start (a write without it is ignored), bit 1 direction
              (0: RAM -> device buffer, 1: device buffer -> RAM), bit 2 interrupt when done
    Accesses below 0x80 must be 4 bytes (an 8-byte read gives all ones, an 8-byte write
    is ignored); from 0x80 on 4 or 8.  Accesses of 1 or 2 bytes, or unaligned ones, fail
    QEMU's ``.valid`` check: they read 0 and are dropped (MmioRegion).  Every other
    offset in the MiB reads all ones.

Interrupts (``edu_raise_irq``/``edu_lower_irq``)
    With MSI enabled every raise with a nonzero status sends the message (even a raise of
    0 while something is pending); otherwise INTx goes high.  Acknowledging drops INTx
    only when the status reaches zero and MSI is off.

DMA (``edu_dma_timer``, ``dma_rw``)
    Starting a transfer arms a 100 ms timer on the virtual clock (QEMU_CLOCK_VIRTUAL: host
    time while the guest runs under TCG; the qtest clock under ``-accel qtest``).  Writes
    to 0x80..0x98 are ignored while bit 0 of the command is set.  When the timer fires
    the device buffer range (``edu_check_range``) must lie inside [0x40000, 0x41000) with
    its *end* strictly below 0x41000 -- so a 4096-byte transfer, or one of 0 bytes, fails
    the check too -- and QEMU 7.2 calls ``hw_error``, which prints the range and the CPU
    state and aborts the whole emulator: the guest observes nothing more.  uvirt stops
    the run the same way (``Machine.hardware_error``: exit status 134, as a shell reports
    QEMU's SIGABRT) and records a guest error too (later QEMUs only log one and carry
    on; the reference here is 7.2).
    The RAM address is masked with ``dma_mask`` (property, default 28 bits) and QEMU
    prints "EDU: clamping DMA ..." when that changed it.  The copy goes through the
    bus-master address space: with bus mastering off reads give zeros and writes are
    lost (edu never checks).  Then bit 0 of the command clears and, with bit 2, the
    interrupt status gets 0x100.

Factorial timing
    QEMU computes in a thread woken by the write, one multiplication per step of n, so a
    polling guest sees bit 0 of the status set for about n steps of host time: measured
    on QEMU 7.2 over qtest, 1.7-3.2 ns a step (n = 0x1000000: 40 ms, 0x40000000: 3.4 s),
    and for small n less than the time between two accesses.  uvirt keeps that shape:
    the result is due ``n * FACT_NS_PER_STEP`` after the write.  With a CPU, a result due
    within a millisecond is finished at the CPU's next stop (``call_soon_threadsafe``:
    the end of the translation block that wrote, so reads in that block see
    "computing"), a later one by a host timer; without a CPU (qtest) the next register
    access after the deadline finishes it.  The number is n! mod 2**32 (0 for n >= 34).

Reset: edu has no reset handler; a device reset restores PCI config space (MSI off,
INTx low) and leaves every register, the buffer and a running DMA as they were.
"""

from __future__ import annotations

import sys
import threading
import time
from enum import IntEnum, IntFlag
from typing import TYPE_CHECKING, Any, Callable

from uvirt.board.memory.regions import MmioRegion
from uvirt.board.pci.bus import PciFunction
from uvirt.board.pci.msi import Msi

if TYPE_CHECKING:
    from uvirt.board.board import Board, Cpu

VENDOR_ID = 0x1234          # PCI_VENDOR_ID_QEMU
DEVICE_ID = 0x11E8
REVISION = 0x10
CLASS_OTHERS = 0x00FF
BAR_SIZE = 1 << 20
IDENTIFICATION = 0x010000ED
DMA_START = 0x40000
DMA_SIZE = 4096
DMA_DELAY_S = 0.100         # timer_mod(..., qemu_clock_get_ms(QEMU_CLOCK_VIRTUAL) + 100)
#: QEMU's factorial thread, one step of its loop (measured: see "Factorial timing")
FACT_NS_PER_STEP = 2.0
#: results due sooner than this are finished at the CPU's next stop
FACT_MIN_DELAY_S = 0.001
DEFAULT_DMA_MASK = (1 << 28) - 1
MSI_CAP = 0x40
ALL_ONES = 0xFFFFFFFFFFFFFFFF
#: What ``hw_error`` makes of QEMU: abort(), which a shell reports as 128 + SIGABRT.
EXIT_HW_ERROR = 134


class EduReg(IntEnum):
    """BAR0 register offsets (docs/specs/edu.txt)."""

    IDENT = 0x00
    LIVENESS = 0x04
    FACTORIAL = 0x08
    STATUS = 0x20
    IRQ_STATUS = 0x24
    IRQ_RAISE = 0x60
    IRQ_ACK = 0x64
    DMA_SRC = 0x80
    DMA_DST = 0x88
    DMA_COUNT = 0x90
    DMA_CMD = 0x98


class EduStatus(IntFlag):
    COMPUTING = 0x01
    IRQFACT = 0x80


class EduIrq(IntFlag):
    FACT = 0x001
    DMA = 0x100


class DmaCmd(IntFlag):
    RUN = 0x1
    TO_RAM = 0x2            # EDU_DMA_DIR = 1: EDU_DMA_TO_PCI (buffer -> RAM)
    IRQ = 0x4


_DMA_FIELDS = {EduReg.DMA_SRC: "src", EduReg.DMA_DST: "dst", EduReg.DMA_COUNT: "cnt",
               EduReg.DMA_CMD: "cmd"}


def factorial32(n: int) -> int:
    """``edu_fact_thread``: n! in uint32_t arithmetic (0! = 1)."""
    if n >= 34:                 # 34! holds 2**32
        return 0
    ret = 1
    for k in range(2, n + 1):
        ret = ret * k & 0xFFFFFFFF
    return ret


def check_range(addr: int, size: int, start: int = DMA_START, length: int = DMA_SIZE) -> str | None:
    """``edu_check_range``: None if the range passes, else QEMU's hw_error message."""
    end1 = (addr + size) & ALL_ONES
    end2 = start + length
    if start <= addr < end2 and end1 > addr and start <= end1 < end2:
        return None
    return (f"EDU: DMA range 0x{addr:016x}-0x{(end1 - 1) & ALL_ONES:016x} out of bounds "
            f"(0x{start:016x}-0x{end2 - 1:016x})!")


def _c_hex16(v: int) -> str:
    """printf("%#.16" PRIx64): the 0x prefix is dropped for zero."""
    return f"0x{v:016x}" if v else f"{0:016x}"


class Edu(PciFunction):
    """The device.  Its environment comes in as three callables, so it runs without a
    CPU (unit tests drive them by hand):

    * ``post(fn)``: run ``fn`` on the CPU thread soon -- a quick factorial finishing;
    * ``host_timer(seconds, fn)``: ``fn`` on the CPU thread after host time passed --
      a long factorial finishing (without ``post`` and ``host_timer`` the factorial
      finishes at the first register access after its deadline);
    * ``after(seconds, fn)``: a one-shot virtual-clock timer, returns an object with
      ``cancel()`` -- the DMA timer;
    * ``hw_error(message)``: QEMU's ``hw_error``, the end of the emulator.
    """
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = (
        "addr4", "cmd", "cnt", "dead", "dma_mask", "dst", "fact", "irq_status", "src", "status",
        "dma_buf", "_fact_deadline",
    )

    name = "edu"

    def __init__(self, *, dma_mask: int = DEFAULT_DMA_MASK,
                 post: Callable[[Callable[[], None]], None] | None = None,
                 host_timer: Callable[[float, Callable[[], None]], Any] | None = None,
                 after: Callable[[float, Callable[[], None]], Any] | None = None,
                 hw_error: Callable[[str], None] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        super().__init__(vendor_id=VENDOR_ID, device_id=DEVICE_ID, class_code=CLASS_OTHERS,
                         revision=REVISION, interrupt_pin=1)
        self.msi = Msi(self, offset=MSI_CAP, vectors=1, msi64=True, per_vector_mask=False)
        self.region = MmioRegion("edu-mmio", BAR_SIZE, _Registers(self), valid_sizes=(4, 8),
                                 impl_min=4, impl_max=8)
        self.register_bar(0, self.region)
        self.freeze_reset_state()
        self.dma_mask = dma_mask & ALL_ONES
        self.post = post
        self.host_timer = host_timer
        self.after = after
        self.hw_error = hw_error
        self.log = log or (lambda text: None)
        self.addr4 = 0
        self.fact = 0
        self.status = 0
        self.irq_status = 0
        self.src = self.dst = self.cnt = self.cmd = 0
        self.dma_buf = bytearray(DMA_SIZE)
        self._dma_timer: Any = None
        self._fact_timer: Any = None
        self._fact_deadline: float | None = None
        self.dead = False           # hw_error happened: QEMU is gone, nothing runs

    def config_write(self, offset: int, size: int, value: int):
        changes = super().config_write(offset, size, value)
        self.msi.config_written(offset, size)      # pci_default_write_config's last step
        return changes

    # ------------------------------------------------------------------ interrupts
    def raise_irq(self, value: int) -> None:
        self.irq_status = (self.irq_status | value) & 0xFFFFFFFF
        if self.irq_status:
            if self.msi.enabled:
                self.msi.notify(0)
            else:
                self.set_intx(1)

    def lower_irq(self, value: int) -> None:
        self.irq_status &= ~value & 0xFFFFFFFF
        if not self.irq_status and not self.msi.enabled:
            self.set_intx(0)

    # ------------------------------------------------------------------ factorial
    def start_factorial(self, value: int) -> None:
        if self.status & EduStatus.COMPUTING:
            return
        self.fact = value & 0xFFFFFFFF
        self.status |= EduStatus.COMPUTING
        delay = self.fact * FACT_NS_PER_STEP * 1e-9
        if self.host_timer is not None and delay >= FACT_MIN_DELAY_S:
            self._fact_timer = self.host_timer(delay, self._factorial_done)
        elif self.post is not None:
            self.post(self._factorial_done)
        else:
            self._fact_deadline = time.monotonic() + delay

    def catch_up(self) -> None:
        """Without a CPU thread: finish a factorial whose time has come."""
        if self._fact_deadline is not None and time.monotonic() >= self._fact_deadline:
            self._factorial_done()

    def _factorial_done(self) -> None:
        self._fact_timer = self._fact_deadline = None
        if self.dead or not self.status & EduStatus.COMPUTING:
            return
        self.fact = factorial32(self.fact)
        self.status &= ~int(EduStatus.COMPUTING)
        if self.status & EduStatus.IRQFACT:
            self.raise_irq(EduIrq.FACT)

    # ------------------------------------------------------------------ DMA
    def dma_register_write(self, reg: EduReg, value: int) -> None:
        """``dma_rw(write=true)``: nothing changes while a transfer runs."""
        if self.cmd & DmaCmd.RUN:
            return
        setattr(self, _DMA_FIELDS[reg], value & ALL_ONES)
        if reg == EduReg.DMA_CMD:
            if self._dma_timer is not None:
                self._dma_timer.cancel()
            self._dma_timer = self.after(DMA_DELAY_S, self.dma_timer) if self.after else None

    def _clamp(self, addr: int) -> int:
        res = addr & self.dma_mask
        if res != addr:
            self.log(f"EDU: clamping DMA {_c_hex16(addr)} to {_c_hex16(res)}!")
        return res

    def dma_timer(self) -> None:
        """``edu_dma_timer``."""
        self._dma_timer = None
        if self.dead or not self.cmd & DmaCmd.RUN:
            return
        if not self.cmd & DmaCmd.TO_RAM:
            error = check_range(self.dst, self.cnt)
            if error is None:
                off = self.dst - DMA_START
                self.dma_buf[off:off + self.cnt] = self.dma_read(self._clamp(self.src), self.cnt)
        else:
            error = check_range(self.src, self.cnt)
            if error is None:
                off = self.src - DMA_START
                self.dma_write(self._clamp(self.dst), bytes(self.dma_buf[off:off + self.cnt]))
        if error is not None:
            self.dead = True
            if self.hw_error is not None:
                self.hw_error(error)
            return
        self.cmd &= ALL_ONES ^ DmaCmd.RUN       # not ~RUN: an IntFlag complement keeps only its own bits
        if self.cmd & DmaCmd.IRQ:
            self.raise_irq(EduIrq.DMA)

    def dma_read(self, addr: int, size: int) -> bytes:
        """``pci_dma_read``: through the bus-master address space (zeros while bus
        mastering is off).  The one place DMA reads guest memory: issue 13's DMA layer
        replaces it when it lands."""
        if self.bus is None or not self.bus_master():
            return bytes(size)
        return _as_read(self.bus.memory, addr, size)

    def dma_write(self, addr: int, data: bytes) -> None:
        """``pci_dma_write`` (lost while bus mastering is off)."""
        if self.bus is None or not self.bus_master():
            return
        _as_write(self.bus.memory, addr, data)

    # ------------------------------------------------------------------ lifecycle
    def reset(self):
        """``pci_do_device_reset`` only: edu has no reset handler of its own."""
        return super().reset()

    def close(self) -> None:
        for timer in (self._dma_timer, self._fact_timer):
            if timer is not None:
                timer.cancel()
        self._dma_timer = self._fact_timer = None
        self.dead = True
        # The callbacks close over the board and the CPU: dropped, a closed machine is
        # freed by reference counts (a dead device runs nothing: no caller is left).
        self.post = self.host_timer = self.after = self.hw_error = self.log = None

    def flush(self) -> None:        # closed with the machine's chardevs
        pass


def _as_read(memory, addr: int, size: int) -> bytes:
    """Read guest-physical memory as a DMA master: RAM at once, anything else (MMIO,
    unassigned: zeros) a byte at a time; addresses past 4 GiB decode nothing."""
    out = bytearray()
    guest = memory.guest
    while size > 0:
        if addr > 0xFFFFFFFF:
            out += bytes(size)
            break
        pc = memory.ram_piece(addr)
        if pc is not None:
            n = min(size, pc.end - addr)
            out += guest.read(addr, n)
        else:
            n = 1
            out.append(memory.read(addr, 1) & 0xFF)
        addr += n
        size -= n
    return bytes(out)


def _as_write(memory, addr: int, data: bytes) -> None:
    guest = memory.guest
    pos = 0
    while pos < len(data) and addr <= 0xFFFFFFFF:
        pc = memory.ram_piece(addr)
        if pc is not None:
            n = min(len(data) - pos, pc.end - addr)
            guest.write(addr, data[pos:pos + n])
        else:
            n = 1
            memory.write(addr, 1, data[pos])
        addr += n
        pos += n


class _Registers:
    """BAR0 (``edu_mmio_read``/``edu_mmio_write``), 4- and 8-byte accesses only."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, dev: Edu) -> None:
        self.dev = dev

    def read(self, offset: int, size: int) -> int:
        d = self.dev
        d.catch_up()
        if offset < 0x80 and size != 4:
            return ALL_ONES
        if offset == EduReg.IDENT:
            return IDENTIFICATION
        if offset == EduReg.LIVENESS:
            return d.addr4
        if offset == EduReg.FACTORIAL:
            return d.fact
        if offset == EduReg.STATUS:
            return d.status
        if offset == EduReg.IRQ_STATUS:
            return d.irq_status
        field = _DMA_FIELDS.get(offset)
        if field is not None:
            return getattr(d, field)
        return ALL_ONES

    def write(self, offset: int, size: int, value: int) -> None:
        d = self.dev
        d.catch_up()
        if offset < 0x80 and size != 4:
            return
        if offset == EduReg.LIVENESS:
            d.addr4 = ~value & 0xFFFFFFFF
        elif offset == EduReg.FACTORIAL:
            d.start_factorial(value)
        elif offset == EduReg.STATUS:
            if value & EduStatus.IRQFACT:
                d.status |= EduStatus.IRQFACT
            else:
                d.status &= ~int(EduStatus.IRQFACT)
        elif offset == EduReg.IRQ_RAISE:
            d.raise_irq(value)
        elif offset == EduReg.IRQ_ACK:
            d.lower_irq(value)
        elif offset in (EduReg.DMA_SRC, EduReg.DMA_DST, EduReg.DMA_COUNT):
            d.dma_register_write(EduReg(offset), value)
        elif offset == EduReg.DMA_CMD and value & DmaCmd.RUN:
            d.dma_register_write(EduReg.DMA_CMD, value)


# ---------------------------------------------------------------------- -device edu


class _ThreadTimer:
    """A virtual-clock timer while a CPU runs (host time, as QEMU's virtual clock under
    TCG): a host timer thread that hands the callback to the CPU thread."""

    def __init__(self, cpu: "Cpu", seconds: float, fn: Callable[[], None]) -> None:
        self._timer = threading.Timer(seconds, lambda: cpu.call_soon_threadsafe(fn))
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()


def create_edu(board: "Board", v: dict[str, Any], ctx: Any) -> Edu:
    """The ``-device edu[,dma_mask=N]`` factory."""
    cpu = board.cpu
    if cpu is None:
        # -accel qtest: QEMU's virtual clock moves only with clock_step; the factorial
        # thread still finishes on its own, here at once.
        clock = board.services.clock

        def after(seconds: float, fn: Callable[[], None]):
            t = clock.timer(fn)
            t.mod(clock.now + int(seconds * 1e9))
            return _ClockTimer(t)
        post = host_timer = None
    else:
        def after(seconds: float, fn: Callable[[], None]):
            return _ThreadTimer(cpu, seconds, fn)
        post = cpu.call_soon_threadsafe
        host_timer = after          # QEMU's virtual clock is host time under TCG too

    def log(text: str) -> None:
        print(text, file=sys.stdout, flush=True)        # QEMU 7.2's printf, on stdout
        board.guest_error("edu", text)

    def hw_error(message: str) -> None:
        # QEMU 7.2 aborts here (later QEMUs log a guest error and carry on): the run
        # ends, and the guest error stays in the record and the trace.
        board.guest_error("edu", message)
        board.hardware_error(message)

    dev = Edu(dma_mask=DEFAULT_DMA_MASK if v["dma_mask"] is None else v["dma_mask"], post=post, host_timer=host_timer, after=after,
              hw_error=hw_error, log=log)
    slot, func = v["addr"] if v["addr"] is not None else (None, 0)
    board.add_pci(dev, slot, func)
    board.chardevs.append(dev)              # Board.close() stops its timer
    return dev


class _ClockTimer:
    def __init__(self, timer: Any) -> None:
        self.timer = timer

    def cancel(self) -> None:
        self.timer.delete()
