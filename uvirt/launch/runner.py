"""From a QEMU command line to a running machine: ``uvirt run`` (and the machines
``uvirt lspci``, uvirt/cli/lspci.py, boots).

``build_machine(cfg)`` turns a parsed ``RunConfig`` (uvirt.options.config) into a
``Machine``: character devices, ``-debugcon``, ``-global`` defaults, ``-device`` drivers
(uvirt.launch.device_table), the firmware step (skipped under ``-accel qtest``, as QEMU runs
no firmware there) and ``-kernel``.  Every refusal is an ``OptionError``/``ImageError``:
one line, value named.

qtest (``-accel qtest``, ``-machine ...,accel=qtest``, or ``-qtest`` with ``-accel tcg -S``):
no CPU, no firmware step, no kernel (QEMU's loader runs from an option ROM at boot, which
never comes), ``-machine none`` allowed; ``run_main`` hands ``uvirt.qtest.session`` what
builds the board, and the session serves the qtest chardev and the QMP monitors on it.

Wall-clock budget: QEMU runs a spinning guest forever; uvirt stops it after
``DEFAULT_TIMEOUT`` seconds unless ``-uvirt-timeout`` says otherwise, and reports why.
"""

from __future__ import annotations

import errno
import sys
import time
from dataclasses import dataclass, field

from uvirt.boot import firmware_step as bios
from uvirt.backends.chardev import Chardev
from uvirt.launch.backends import memory_backend, open_chardev, open_drives
from uvirt.launch.device_table import BuildContext, DeviceCatalog, create_device
from uvirt.errors import OptionError, UvirtError
from uvirt.board.board import Board
from uvirt.board.devices.pc import pc_board
from uvirt.cpu.machine import Machine, StopInfo
from uvirt.options.argv import parse_argv
from uvirt.options.config import ChardevOpts, ChardevRef, RunConfig

DEFAULT_TIMEOUT = 10.0


@dataclass
class Built:
    """A built board (``board``), with its CPU side (``machine``; without a CPU under
    qtest it only holds the board), the ``-device`` catalog bound to it (QMP
    ``device_add``), the chardevs opened and the devices created."""

    machine: Machine
    ctx: BuildContext
    chardevs: list[Chardev] = field(default_factory=list)
    devices: list = field(default_factory=list)      # (DeviceOpts, the created device)

    @property
    def board(self) -> Board:
        return self.machine.board

    @property
    def catalog(self) -> DeviceCatalog:
        return DeviceCatalog(self.machine.board, self.ctx)

    def close(self) -> None:
        self.machine.close()


def _open(spec, ctx: BuildContext, built: Built) -> Chardev:
    if isinstance(spec, ChardevRef):
        dev = ctx.chardevs.get(spec.id)
        if dev is None:
            raise OptionError(f"{spec.origin}: chardev '{spec.id}' not found")
        return dev
    assert isinstance(spec, ChardevOpts)
    dev = open_chardev(spec)
    built.chardevs.append(dev)
    return dev


def qtest_mode(cfg: RunConfig) -> bool:
    return cfg.accelerator == "qtest" or cfg.qtest is not None


def served_chardevs(cfg: RunConfig) -> set[str]:
    """Ids of ``-chardev``s a qtest session serves itself (QMP monitors, ``-qtest chardev:ID``)."""
    ids = {mon.chardev for mon in cfg.monitors if mon.mode == "control"}
    if isinstance(cfg.qtest, ChardevRef):
        ids.add(cfg.qtest.id)
    return ids


def strip_to_none(board: Board) -> None:
    """``-machine none``: no RAM, no PCI host, nothing in either address space."""
    for space in (board.memory, board.io):
        for p in list(space.placements):
            space.remove(p)
        space.commit()


def build_machine(cfg: RunConfig, *, cpu: bool = True, kernel: bool = True) -> Built:
    """``kernel=False``: no ``-kernel`` needed (the pytest ``machine`` fixture loads one later)."""
    serving = qtest_mode(cfg)
    if cfg.machine.type not in ("pc-i440fx-7.2",) and not (serving and cfg.machine.type == "none"):
        raise OptionError(f"-machine {cfg.machine.requested}: uvirt models only the pc machine")
    if cfg.accelerator not in ("tcg", "qtest"):
        raise OptionError(f"-accel {cfg.accelerator}: not supported by uvirt yet")
    served: set[str] = set()
    if serving:
        if cfg.accelerator == "tcg" and not cfg.start_paused:
            raise OptionError("-qtest with -accel tcg: uvirt runs no guest CPU beside a qtest "
                              "server; add -S (as a paused QEMU) or use -accel qtest")
        served = served_chardevs(cfg)
        cpu = False
    else:
        # QMP monitors beside a running guest are served by uvirt.qtest.guest_monitors
        served = {mon.chardev for mon in cfg.monitors if mon.mode == "control"}
    none = cfg.machine.type == "none"
    board = (Board(ram_size=cfg.ram_size, no_reboot=cfg.no_reboot) if none
             else pc_board(ram_size=cfg.ram_size, no_reboot=cfg.no_reboot))
    m = Machine(board=board, cpu=cpu,
                tcg_buffer_size=cfg.tb_size << 20 if cfg.tb_size else None)
    if none:
        strip_to_none(board)
    elif serving and any(i.option == "-rtc" and "clock=vm" in (i.value or "") for i in cfg.ignored):
        # -rtc clock=vm under qtest: the RTC runs on the clock qtest's clock_step moves
        clock = board.services.clock
        board.rtc.use_clock(lambda: clock.now, clock.timer)
    ctx = BuildContext()
    built = Built(m, ctx)
    try:
        if not none:
            from uvirt.boot.bios import apply_boot_options, apply_smm
            apply_boot_options(m, cfg)
            apply_smm(m, cfg.smm)
        for c in cfg.chardevs:
            if c.id in ctx.chardevs:
                raise OptionError(f"{c.origin}: attempt to add duplicate property 'id' to object "
                                  f"(type 'chardev')")
            if c.id in served:                  # the qtest session opens these itself
                ctx.chardevs[c.id] = c
                ctx.used_chardevs.add(c.id)
                continue
            ctx.chardevs[c.id] = _open(c, ctx, built)
        m.chardevs.extend(built.chardevs)
        if cfg.drives:                          # -drive: back ends by id, closed with the machine
            ctx.drives = open_drives(cfg.drives)
            m.chardevs.extend(d.backend for d in ctx.drives.values())
        _memory_backends(cfg, ctx, m)
        for g in cfg.globals:
            ctx.globals.setdefault(g.driver, {})[g.prop] = g.value
        with m.batch():
            if cfg.debugcon is not None:
                m.add_debugcon(_open(cfg.debugcon, ctx, built))
            if cfg.serial and not none:
                _serial_ports(m, cfg, ctx, built)
            ids: set[str] = set()
            for d in cfg.devices:
                if d.id is not None and d.id in ids:     # QEMU: device ids are unique
                    raise OptionError(f"{d.origin}: Duplicate ID '{d.id}' for device")
                ids.add(d.id)
                built.devices.append((d, create_device(board, ctx, d.driver, d.props, d.raw)))
            if not serving and cfg.bios is None and not cfg.pflash:
                bios.firmware_step(m, nographic=cfg.nographic)
        firmware = cfg.bios
        if cfg.pflash and not none:
            from uvirt.boot.bios import load_pflash
            firmware = load_pflash(m, cfg.pflash)     # takes precedence over -bios, as on QEMU
        if serving:
            if cfg.bios is not None and not none and not cfg.pflash:   # mapped though no CPU runs
                m.load_bios_file(cfg.bios)
        elif firmware is not None:          # real firmware from the reset vector
            from uvirt.boot.bios import boot_firmware
            boot_firmware(m, cfg, ctx)
        elif kernel or cfg.kernel is not None:
            if cfg.kernel is None:
                raise OptionError("no -kernel given: uvirt boots multiboot images (-kernel FILE)")
            m.load_kernel_file(cfg.kernel, cmdline=cfg.append or "")
        if cfg.uvirt.trace:
            from uvirt.observe.decode import attach_file_sink
            trace = TraceFile(cfg.uvirt.trace)
            m.chardevs.append(trace)            # its write errors are reported as a chardev's
            # -uvirt-trace-format: the sink writes through it, flushed at each stop and
            # closed with the machine
            attach_file_sink(m, trace, cfg.uvirt.trace_format)
    except BaseException:
        m.close()
        raise
    return built


class TraceFile(Chardev):
    """``-uvirt-trace FILE``: the tracer's text sink, closed (so flushed) with the machine
    at every stop; a failed write is kept like a chardev's (``write_error``)."""

    def __init__(self, path: str) -> None:
        self.label = f"-uvirt-trace {path}"
        try:
            self._f = open(path, "w")
        except OSError as e:
            raise OptionError(f"-uvirt-trace {path}: could not open: {e.strerror}") from None

    def write(self, text: str) -> None:
        if self.write_error is None:
            try:
                self._f.write(text)
            except OSError as e:
                self.write_error = e

    def flush(self) -> None:
        if self.write_error is None and not self._f.closed:
            try:
                self._f.flush()
            except OSError as e:
                self.write_error = e

    def close(self) -> None:
        self.flush()
        try:
            self._f.close()
        except OSError as e:            # the buffer could not be written: already reported
            self.write_error = self.write_error or e


def output_errors(chardevs) -> list[str]:
    """One line per output that lost bytes (a full disk, an unwritable device); a closed
    pipe is not an error (the reader chose to stop reading, as with ``| head``)."""
    errors = [(ch, getattr(ch, "write_error", None)) for ch in chardevs]
    return [f"{getattr(ch, 'label', '') or ch.id}: {e.strerror or e}"
            for ch, e in errors if e is not None and e.errno != errno.EPIPE]


def _serial_ports(m: Machine, cfg: RunConfig, ctx: BuildContext, built: Built) -> None:
    """One 16550 per ``-serial`` (QEMU's serial_hds -> isa-serial), at COM1..COM4."""
    from uvirt.board.devices.serial import COM_PORTS, Uart16550
    from uvirt.board.memory.regions import MmioRegion
    if len(cfg.serial) > len(COM_PORTS):
        raise OptionError(f"{cfg.serial[len(COM_PORTS)].origin}: isa-serial: Max. supported number "
                          f"of ISA serial ports is {len(COM_PORTS)}.")
    for spec, (base, irq) in zip(cfg.serial, COM_PORTS):
        dev = _open(spec, ctx, built)
        if dev not in m.chardevs:
            m.chardevs.append(dev)

        def set_irq(level: int, irq: int = irq) -> None:
            if m.interrupts is not None:
                m.interrupts.pic.set_irq(irq, level)

        uart = Uart16550(dev.write, set_irq)
        m.add_isa(MmioRegion("serial", 8, uart, valid_sizes=(1, 2, 4), unaligned=True, impl_max=1),
                  base, uart)
        m.serial_ports = [*getattr(m, "serial_ports", []), (base, uart)]


def _memory_backends(cfg: RunConfig, ctx: BuildContext, m: Machine) -> None:
    """``-object memory-backend-{ram,file,memfd}`` into ``ctx.memdevs`` (other object
    types are left to their own issues).  Buffers no device takes are released when the
    machine closes; a device that takes one releases it itself."""
    from uvirt.board.devices.ivshmem import BackendCloser

    if not any(o.qom_type.startswith("memory-backend-") for o in cfg.objects):
        return
    m.chardevs.append(BackendCloser(ctx.memdevs, ctx.used_memdevs))
    for o in cfg.objects:
        if not o.qom_type.startswith("memory-backend-"):
            continue
        if o.id in ctx.memdevs:
            raise OptionError(f"{o.origin}: Duplicate ID '{o.id}' for object")
        ctx.memdevs[o.id] = memory_backend(o)


def run_config(cfg: RunConfig) -> StopInfo:
    """Build, run to the stop, close.  Raises ``OutputLost`` (after the machine closed)
    when an output file lost bytes: the run's result is incomplete."""
    built = build_machine(cfg)
    m = built.machine
    for w in built.ctx.warnings:
        print(f"uvirt: {w}", file=sys.stderr)
    monitors = None
    try:
        if any(mon.mode == "control" for mon in cfg.monitors):
            from uvirt.qtest.guest_monitors import GuestMonitors
            monitors = GuestMonitors(built, cfg)
        displays = getattr(m, "displays", [])
        if cfg.uvirt.screenshot and not displays:
            raise OptionError(f"-screenshot {cfg.uvirt.screenshot}: no display "
                              f"(add -device virtio-gpu-pci or virtio-fb-pci)")
        timeout = cfg.uvirt.timeout if cfg.uvirt.timeout is not None else DEFAULT_TIMEOUT
        deadline = time.monotonic() + timeout if timeout else None
        if monitors is not None:
            monitors.start()
        stop = m.run(timeout=timeout or None, max_insns=cfg.uvirt.max_insns)
        if monitors is not None:
            from uvirt.cpu.machine import StopReason
            if monitors.guest_stopped(stop.reason is StopReason.HALTED, deadline):
                print(f"uvirt: wall-clock budget (-uvirt-timeout {timeout:g} s) exhausted with the "
                      f"guest halted and its QMP monitors still open", file=sys.stderr)
                stop.exit_code = 124
        if cfg.uvirt.screenshot:
            # the first display's head 0 (QEMU's console 0), as QMP screendump would save
            # it: PPM for a .ppm name (QEMU's bytes), PNG otherwise
            path = cfg.uvirt.screenshot
            try:
                displays[0][1].surface(0).save(path, "ppm" if path.lower().endswith(".ppm") else "png")
            except OSError as e:
                raise OptionError(f"-screenshot {cfg.uvirt.screenshot}: {e.strerror}") from None
    finally:
        if monitors is not None:
            monitors.close()
        m.close()
    lost = output_errors(dict.fromkeys(built.chardevs + list(m.chardevs)))
    if lost:
        raise OutputLost(lost[0], stop)
    return stop


class OutputLost(UvirtError):
    """An output file lost bytes during the run (the guest ran to its stop regardless)."""

    def __init__(self, message: str, stop: StopInfo) -> None:
        super().__init__(message)
        self.stop = stop


def run_main(argv: list[str]) -> int:
    cfg = parse_argv(argv)
    if cfg.help_request is not None:            # QEMU prints and exits at a help option
        from uvirt.launch.help import answer
        print(answer(cfg.help_request))
        return 0
    for w in cfg.warnings:
        print(f"uvirt: warning: {w}", file=sys.stderr)
    if qtest_mode(cfg):
        from uvirt.qtest.session import main_serve
        return main_serve(cfg, lambda: build_machine(cfg, cpu=False))
    stop = run_config(cfg)
    if not stop.clean:
        print("uvirt: " + stop.report(), file=sys.stderr)
    return stop.exit_code
