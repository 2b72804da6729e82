"""The board: a PC without its CPU.

A ``Board`` holds everything a guest can observe: the memory map with its RAM and the
port space (uvirt/board/memory/), the PCI bus with its host bridge at 0xCF8/0xCFC
(uvirt/board/pci/), the devices plugged in, the interrupt controllers
(uvirt/board/interrupts/), device work (uvirt/board/dma.py), the guest-error record and
the trace.  ``pc_board()`` (uvirt/board/devices/pc.py) is QEMU's ``-machine pc``: a
board with pc's built-in devices (i440FX, PIIX3/PIIX4 functions, DMA, RTC, i8042, port
92, APM, fw_cfg, ACPI PCI hotplug) and interrupt controllers.  A board works with no
CPU: qtest, the unit tests and the fuzzer's board backend drive it directly, through the
same regions a guest reaches.  It knows no device model by name: the models import the
board (for its types), never the other way round.

Services (``board.services``, uvirt/board/services.py)
    What device models need besides their registers: IRQ lines by QOM path, the virtual
    clock, QMP events, hotplug handlers, block back ends, peripherals by id and file
    descriptors for the main loop.  qtest and QMP read the same object.

The CPU side (uvirt/cpu/machine.py) attaches to a board: ``board.cpu`` is then the
``Machine`` that runs it, and the requests a device makes of whoever runs the board
(``request_reset``, ``debug_exit``, ``hardware_error``, ``stop_unsupported``) go
there; a device thread reaches the CPU thread through ``board.cpu.call_soon_threadsafe``.  Without a CPU such a request stops the board as a
CPU stop would: it is recorded in ``stopped``, the port space answers as unassigned and
device work is held back, until ``end_stop()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

from uvirt.board.memory.regions import (PAGE_MASK, Container, IoSpace, MemoryMap, MmioRegion,
                                        RamRegion)
from uvirt.board.pci.bus import PciBus, PciFunction, PciHostConf1, PciReg, bdf_str, devfn
from uvirt.board.services import BoardServices
from uvirt.errors import UvirtError
from uvirt.trace import Tracer

if TYPE_CHECKING:
    from uvirt.board.interrupts import InterruptController

DEFAULT_RAM_SIZE = 128 << 20


class Closeable(Protocol):
    """What the board closes with itself: chardevs, drives, device threads."""

    def close(self) -> None: ...


class Cpu(Protocol):
    """What a board asks of the CPU side that runs it (``uvirt.cpu.machine.Machine``)."""

    def request_reset(self) -> None:
        """A guest asked for a system reset (PIIX3 RCR, port 92, the keyboard controller)."""

    def debug_exit(self, value: int) -> None:
        """isa-debug-exit: the guest ends the run with status ``(value << 1) | 1``."""

    def hardware_error(self, message: str) -> None:
        """A device model reached QEMU's ``hw_error`` (QEMU aborts)."""

    def stop_unsupported(self, detail: str) -> None:
        """The guest asked for something uvirt cannot do."""

    def raise_smi(self) -> None:
        """A System Management Interrupt (APM port 0xB2 with PIIX4 APMC_EN set)."""

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the CPU thread at its next stop."""


class Board:
    """A PC board as a guest sees it, without a CPU: RAM at 0, the PCI host bridge, the
    port space; ``pc_board()`` adds QEMU pc's built-in devices."""

    #: the board's own run state a snapshot holds (devices declare theirs: uvirt/cpu/snapshot.py)
    snapshot_state = ("guest_errors",)

    def __init__(self, *, ram_size: int = DEFAULT_RAM_SIZE, no_reboot: bool = True) -> None:
        if ram_size < 2 << 20 or ram_size & ~PAGE_MASK:
            raise UvirtError(f"RAM size 0x{ram_size:x} must be a multiple of 4 KiB and at least 2 MiB")
        if ram_size > 0xE0000000:
            raise UvirtError(f"RAM size 0x{ram_size:x} above 3.5 GiB is not supported "
                             f"(a 32-bit guest cannot reach memory above 4 GiB)")
        self.ram_size = ram_size
        self.no_reboot = no_reboot
        #: -machine smm (uvirt.boot.bios.apply_smm): the ACPI FACP's SMI command follows it
        self.smm_enabled = True
        self.tracer = Tracer()
        self.guest_errors: list[tuple[str, str]] = []
        self.memory = MemoryMap()
        self.io = IoSpace()
        self.memory.on_guest_error = self.io.on_guest_error = self.guest_error
        self.ram = RamRegion("pc.ram", ram_size)
        self.ram_placement = self.memory.add(self.ram, 0, priority=0)
        #: 0xA0000-0xFFFFF as the i440FX decodes it (devices/pam.py), with the builtins
        self.lowmem: Any = None      # a devices.pam.LowMemory (pc_board)
        self.pci = PciBus(self.memory, self.io)
        self.pci.on_change = self._trace_bar
        self.pci.on_guest_error = self.guest_error
        self.pci.tracer = self.tracer
        self.memory.tracer = self.tracer
        self.pci_host = PciHostConf1(self.pci)
        idx, data = self.pci_host.regions()
        self.io.add(idx, PciHostConf1.CONFIG_ADDRESS)
        self.io.add(data, PciHostConf1.CONFIG_DATA)
        self.resettables: list = [self.pci_host]
        #: closed with the board: chardevs, drives, device threads (anything with close())
        self.chardevs: list[Closeable] = []
        self.services = BoardServices(self)
        #: the 8259s, local APIC and PIT (uvirt/board/interrupts/), set by ``pc_board``
        self.interrupts: InterruptController | None = None
        #: device work (uvirt/board/dma.py): QEMU's main-loop bottom halves
        self.work = self.memory.guest.work
        self.work.should_stop = self.stop_pending
        #: the CPU side running this board (uvirt/cpu/machine.py), None without a CPU
        self.cpu: Cpu | None = None
        #: without a CPU: why the board stopped (a guest reset, a debug exit...), or None
        self.stopped: str | None = None
        # filled by -device factories (uvirt/launch/device_table.py) and the runner
        self.displays: list[tuple[str | None, Any]] = []
        self.framebuffers: list = []
        self.serial_ports: list[tuple[int, Any]] = []

    def batch(self) -> "_BoardBatch":
        """Many device or BAR changes, one commit of each address space at the end
        (the port space's first, then memory's)."""
        return _BoardBatch(self)

    # ------------------------------------------------------------------ building
    def guest_error(self, kind: str, detail: str) -> None:
        """A guest did something a device rejects: recorded and traced, never raised."""
        self.guest_errors.append((kind, detail))
        if self.tracer.enabled:
            self.tracer.emit("guest_error", kind=kind, detail=detail)

    def add_isa(self, region: MmioRegion, port: int, device=None, priority: int = 0) -> None:
        self.io.add(region, port, priority)
        self.io.commit()
        if device is not None and hasattr(device, "reset"):
            self.resettables.append(device)

    def add_pci(self, fn: PciFunction, slot: int | None = None, function: int = 0) -> int:
        if slot is None:
            slot = self.pci.free_slot()
        dfn = devfn(slot, function)
        self.pci.plug(fn, dfn)
        return dfn

    def write_ram(self, addr: int, data: bytes) -> None:
        """A host write into RAM itself, whatever the low-memory window shows there."""
        self.ram.buffer.view[addr:addr + len(data)] = data
        self.memory.invalidate_code(addr, len(data))

    # ------------------------------------------------------------------ tracing
    def _trace_bar(self, fn: PciFunction, ch) -> None:
        if self.tracer.enabled:
            fmt = lambda a: "unmapped" if a is None else f"0x{a:x}"
            self.tracer.emit("pci_bar_map", bdf=bdf_str(fn.devfn or 0), index=ch.index,
                             old=fmt(ch.old), new=fmt(ch.new))

    def trace_layout(self) -> None:
        """Emit the board as it stands (``pci_device``, ``io_region``, ``mem_region``), so a trace
        started now can be decoded on its own: BAR moves after this are ``pci_bar_map``."""
        if not self.tracer.enabled:
            return
        bar_regions = set()
        for dfn, fn in sorted(self.pci.functions.items()):
            bars = []
            for bar in fn.bars:
                if bar is None:
                    continue
                bar_regions.add(id(bar.region))
                bars.append([bar.index, "io" if bar.io else "mem", fn.bar_addr[bar.index], bar.size])
            if getattr(fn, "vdev", None) is not None:
                transport = {(True, True): "transitional", (True, False): "legacy",
                             (False, True): "modern"}[(fn.legacy, fn.modern)]
            else:
                transport = "pci"
            self.tracer.emit("pci_device", bdf=bdf_str(dfn), name=fn.name, transport=transport,
                             bars=bars)
        for p in self.io.placements:
            if id(p.region) not in bar_regions and p.enabled:
                self.tracer.emit("io_region", base=p.addr, size=p.region.size, name=p.region.name)
        for p in self.memory.placements:
            if (isinstance(p.region, MmioRegion) and id(p.region) not in bar_regions and p.enabled
                    and p.region.name != "unassigned"):
                self.tracer.emit("mem_region", base=p.addr, size=p.region.size, name=p.region.name)

    # ------------------------------------------------------------------ requests of the CPU side
    def request_reset(self) -> None:
        """A guest asked for a system reset (PIIX3 RCR, keyboard controller, port 92)."""
        if self.cpu is not None:
            self.cpu.request_reset()
        else:
            self._stop("guest reset")

    def debug_exit(self, value: int) -> None:
        """isa-debug-exit was written (devices/isa.py)."""
        if self.cpu is not None:
            self.cpu.debug_exit(value)
        else:
            self._stop(f"debug-exit 0x{value:x}")

    def hardware_error(self, message: str) -> None:
        """A device model reached QEMU's ``hw_error``: QEMU prints the message and aborts."""
        if self.cpu is not None:
            self.cpu.hardware_error(message)
        else:
            self._stop(f"hardware error: {message}")

    def raise_smi(self) -> None:
        """An SMI for the CPU (uvirt/cpu/smm.py); without a CPU nothing takes it (QEMU's
        qtest accelerator runs no CPU either)."""
        if self.cpu is not None:
            self.cpu.raise_smi()

    def stop_unsupported(self, detail: str) -> None:
        """The guest asked for something uvirt cannot do."""
        if self.cpu is not None:
            self.cpu.stop_unsupported(detail)
        else:
            self._stop(detail)

    def stop_pending(self) -> bool:
        """Without a CPU: the board stopped (device work yields at its next piece)."""
        return self.stopped is not None

    def _stop(self, why: str) -> None:
        """No CPU: the board stops as a stopped machine does (first reason kept)."""
        if self.stopped is None:
            self.stopped = why
            self.io.table = {}

    def end_stop(self) -> None:
        """The stop is over (no CPU, or between two CPU runs): host accesses reach the
        ports again and device work may run."""
        self.stopped = None
        if not self.io.table:
            self.io.commit()

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """System reset of the devices, PCI functions and the host bridge; RAM is kept
        (as QEMU).  The CPU side resets the CPU (``Machine.reset``)."""
        for dev in self.resettables:
            dev.reset()
        self.pci.reset()
        self.guest_errors.clear()

    def close(self) -> None:
        """Close what the board holds open (chardevs, drives, device threads), and cut the
        wiring's back-links so that a closed board is freed by reference counts alone."""
        for ch in self.chardevs:
            ch.close()
        _unwire(self)


def _unwire(board: Board) -> None:
    """Cut the links by which the board's parts reach back to it (callbacks bound to the
    board or the interrupt controllers, children's links to their parents).  Without this
    the closed board is one cyclic graph of some 600 objects that only the cyclic garbage
    collector frees: about 170 us of its time per machine (tests/guest/test_machine_gc.py).
    Only wiring is cut: every device keeps its state, readable after close; a closed
    board is not run again."""
    board.services.board = None
    board.services.hotplug.clear()      # handlers hold the machine (device_add/del)
    board.work.should_stop = _false
    for space in (board.memory, board.io):
        space.on_guest_error = None
        for p in space._placements:
            p.space = None
            if isinstance(p.region, Container):
                _forget_spaces(p.region)
    board.memory.post_to_cpu = None
    board.memory.guest.detach()
    board.tracer.context = None
    for fn in board.pci.functions.values():
        fn.bus = None
    pci = board.pci
    pci.on_change = pci.on_guest_error = pci.intx_sink = None
    host = board.pci_host
    host.address_device.host = host.data_device.host = None
    for dev in board.resettables:
        # the links are instance attributes (the board gave them): looked up in the
        # instance's dict, as getattr's misses cost an exception each (a few hundred
        # of them per board)
        attrs = getattr(dev, "__dict__", None)
        if attrs is None:                # a device with __slots__
            for name in _BACK_LINKS:
                if getattr(dev, name, None) is not None:
                    setattr(dev, name, None)
            continue
        for name in _BACK_LINKS:
            if attrs.get(name) is not None:
                attrs[name] = None
    rtc = getattr(board, "rtc", None)
    if rtc is not None:
        rtc.update_timer.callback = rtc.periodic_timer.callback = None
    ic = board.interrupts
    if ic is not None:
        ic.on_change = None
        ic.pic.before_access = _nothing
        ic.apic.on_change = _nothing
        ic.pic.on_output = ic.pic.master.on_output = ic.pic.slave.on_output = _nothing
        ic.pit.irq = _nothing
        router = getattr(ic, "router", None)
        if router is not None and router.piix3 is not None:     # (closed once already)
            vars(router.piix3).pop("config_write", None)     # watch_config's wrapper
            router.set_isa_irq = router.piix3 = None
    fw = getattr(board, "fw_cfg", None)
    if fw is not None:
        fw.select_callbacks.clear()
    hotplug = getattr(board, "acpi_hotplug", None)
    if hotplug is not None:
        hotplug.gpe.on_sci = None


#: devices' links back to the board or its parts (callbacks the board gave them)
_BACK_LINKS = ("board", "bus", "_request_reset", "on_exit", "_on_smi", "on_sci",
               "set_irq", "_set_irq")


def _forget_spaces(container: Container) -> None:
    """A container placed in a space lists the space (to tell it of child changes)."""
    container._spaces.clear()
    for _, child, _, _ in container.children:
        if isinstance(child, Container):
            _forget_spaces(child)


def _false() -> bool:
    return False


def _nothing(*args: Any) -> None:
    pass


def place_pci(board: Any, fn: Any, v: dict[str, Any]) -> None:
    """Plug a created PCI function where ``addr=`` says (the first free slot if absent),
    with the header's multifunction bit when ``multifunction=on`` (QEMU
    ``pci_init_multifunction``).  ``v`` holds the device's typed properties."""
    if v.get("multifunction"):
        fn.config.set(PciReg.HEADER_TYPE, 1, fn.config.get(PciReg.HEADER_TYPE, 1) | 0x80)
    slot, func = v["addr"] if v["addr"] is not None else (None, 0)
    board.add_pci(fn, slot, func)


class _BoardBatch:
    """``Board.batch()`` (a class, not a ``contextmanager`` generator: cheaper, and a
    build opens several): ``with board.memory.batch(), board.io.batch():``."""

    __slots__ = ("board", "_memory", "_io")

    def __init__(self, board: Board) -> None:
        self.board = board

    def __enter__(self) -> Board:
        self._memory = self.board.memory.batch()
        self._memory.__enter__()
        self._io = self.board.io.batch()
        self._io.__enter__()
        return self.board

    def __exit__(self, *exc) -> None:
        try:
            self._io.__exit__(*exc)
        finally:
            self._memory.__exit__(*exc)
