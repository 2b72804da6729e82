"""The machine a fuzzer drives: built from QEMU-style options, the device under test set
up as a driver would leave it, and snapshot so every input starts from the same state.

Set-up (before the snapshot): the bundled harness guest boots and halts (the CPU is in
flat 32-bit protected mode, as after any multiboot entry), every interrupt line is
masked at the PICs (the fuzzing guest runs with IF=0 and never takes an interrupt, so
the CPU never single-steps towards one: interrupt state stays visible in the
controllers and the device's ISR), the device gets bus mastering, and a virtio device
is driven to DRIVER_OK with every queue placed in the fuzzer's DMA area
(uvirt/fuzz/ops.py) and the indirect-descriptor feature accepted: through the legacy
registers when the device has them (legacy and transitional), else through the modern
transport (modern-only devices: virtio-gpu, ``disable-legacy=on``), whose capabilities
are found by walking the capability list as a driver does; the queue operations then
notify through each queue's own notify address.
"""
from __future__ import annotations

import hashlib
import struct
import tempfile
from pathlib import Path

from uvirt.errors import UvirtError
from uvirt.board.pci.bus import Command, PciReg
from uvirt.fuzz.ops import (BUF_BASE, CONFIG_ADDRESS, CONFIG_DATA, DMA_BASE, DMA_END, QUEUE_STRIDE, BarInfo,
                  Layout, QueueInfo)

HARNESS_SOURCE = '.include "uvirt.inc"\nmain:\n    cli\n    hlt\n    jmp main\n'
MAX_QUEUES = 8
VIRTIO_F_INDIRECT = 1 << 28
CAP_ID_VENDOR = 0x09                   # virtio-pci capabilities (virtio 1.2 §4.1.4)
CAP_COMMON_CFG, CAP_NOTIFY_CFG, CAP_ISR_CFG = 1, 2, 3
_HARNESS: dict[str, bytes] = {}

#: request headers a chain starts with, by virtio device ID (virtio 1.2 §5)
HEADERS = {
    2: struct.pack("<IIQ", 0, 0, 0),        # virtio-blk: VIRTIO_BLK_T_IN, sector 0
    3: struct.pack("<IHH", 0, 0, 0),        # virtio-console control message
}


def harness_image() -> bytes:
    if "image" not in _HARNESS:
        from uvirt import firmware
        with tempfile.TemporaryDirectory(prefix="uvirt-fuzz-") as tmp:
            src = Path(tmp) / "harness.S"
            src.write_text(HARNESS_SOURCE)
            out = firmware.build_to(src, Path(tmp) / "harness.bin")
            _HARNESS["image"] = out.read_bytes()
    return _HARNESS["image"]


class FuzzTarget:
    """A built machine, the device under test, its ``Layout``, and the snapshot."""

    def __init__(self, argv: list[str], *, cpu: bool = True, factory=None) -> None:
        from uvirt.options.argv import parse_argv
        from uvirt.launch.runner import build_machine
        base = ["-machine", "pc", "-m", "128M", "-nodefaults", "-display", "none", "-no-reboot"]
        cfg = parse_argv(base + list(argv))
        self.built = build_machine(cfg, cpu=cpu, kernel=False)
        m = self.machine = self.built.machine
        if factory is not None:
            self.fn, self.name = _from_factory(m, factory)
        else:
            if not self.built.devices:
                raise UvirtError("uvirt fuzz: no -device to fuzz (give one, e.g. -device virtio-rng-pci)")
            self.fn = self.built.devices[-1][1]
            self.name = self.built.devices[-1][0].driver
        if getattr(self.fn, "devfn", None) is None or self.fn.devfn not in m.pci.functions:
            raise UvirtError(f"uvirt fuzz: {self.name} is not a PCI device")
        self._install_clock()
        if cpu:
            m.load_kernel(harness_image(), filename="uvirt-fuzz-harness")
            stop = m.run(timeout=10)
            if stop.reason.name != "HALTED":
                raise UvirtError(f"uvirt fuzz: the harness did not start ({stop.summary()})")
        settle(m)
        self.layout = self._set_up()
        self.snap = m.snapshot()
        self._clock_at_snapshot = self.now

    # -- a virtual clock: inputs replay the same timer events on every run
    def _install_clock(self) -> None:
        """The PIT, the RTC and the PM timer read the host's clock; under the fuzzer they
        read ``now``, which only a ``wait`` operation advances (QEMU's qtest clock_step)."""
        from uvirt.board.devices.chipset import AcpiPm
        self.now = 1_000_000_000
        clock = lambda: self.now
        m = self.machine
        m.interrupts.pit.clock = clock
        m.rtc.clock = clock
        for p in m.io.placements:
            dev = getattr(p.region, "device", None)
            if isinstance(dev, AcpiPm):
                dev.clock = clock
        m.interrupts.pit.reset()

    def step(self, ns: int) -> None:
        """Advance the virtual clock; timer edges since the last step reach the PICs."""
        self.now += ns
        self.machine.interrupts.pit.sync()

    # -- set-up: what firmware and a driver leave behind, recorded as primitives (the
    #    reproducers replay them first: under qtest no firmware places the BARs)
    def _do(self, prim) -> int:
        m = self.machine
        self.setup_prims.append(prim)
        k = prim[0]
        if k == "pio_w":
            m.io.write(prim[1], prim[2], prim[3])
        elif k == "pio_r":
            return m.io.read(prim[1], prim[2])
        elif k == "mem_w":
            m.memory.write(prim[1], prim[2], prim[3])
        elif k == "mem_r":
            return m.memory.read(prim[1], prim[2])
        return 0

    def _cfg_read(self, off: int, size: int) -> int:
        self._do(("pio_w", CONFIG_ADDRESS, 4, 0x80000000 | (self.fn.devfn << 8) | (off & 0xFC)))
        return self._do(("pio_r", CONFIG_DATA + (off & 3), size))

    def _cfg_write(self, off: int, size: int, value: int) -> None:
        self._do(("pio_w", CONFIG_ADDRESS, 4, 0x80000000 | (self.fn.devfn << 8) | (off & 0xFC)))
        self._do(("pio_w", CONFIG_DATA + (off & 3), size, value))

    def _set_up(self) -> Layout:
        fn = self.fn
        self.setup_prims: list = []
        for port in (0x21, 0xA1):              # mask every line at both PICs
            self._do(("pio_w", port, 1, 0xFF))
        bars = []
        for i, bar in enumerate(fn.bars[:6]):
            addr = fn.bar_address(i) if bar is not None else None
            if bar is None:
                continue
            if addr is None:
                raise UvirtError(f"uvirt fuzz: BAR{i} of {self.name} has no address")
            self._cfg_write(PciReg.BASE_ADDRESS_0 + 4 * i, 4, addr & 0xFFFFFFFF)
            if bar.mem64:
                self._cfg_write(PciReg.BASE_ADDRESS_0 + 4 * i + 4, 4, addr >> 32)
            bars.append(BarInfo(i, bar.io, addr, bar.size))
        self._cfg_write(PciReg.COMMAND, 2, fn.command | Command.IO | Command.MEMORY | Command.MASTER)
        layout = Layout(devfn=fn.devfn, bars=bars)
        vdev = getattr(fn, "vdev", None)
        if vdev is None:
            return layout
        if not getattr(fn, "legacy", False):
            return self._set_up_modern(layout, vdev)
        from uvirt.virtio.pci import LegacyReg as R
        base = next(b for b in bars if b.io and b.index == 0).addr
        do = self._do
        first = len(self.setup_prims) + 1         # the driver's part, after status = 0
        for status in (0, 1, 3):
            do(("pio_w", base + R.STATUS, 1, status))
        host = do(("pio_r", base + R.HOST_FEATURES, 4))
        do(("pio_w", base + R.GUEST_FEATURES, 4, host & VIRTIO_F_INDIRECT))
        for q in range(min(len(vdev.queues), MAX_QUEUES)):
            do(("pio_w", base + R.QUEUE_SEL, 2, q))
            size = do(("pio_r", base + R.QUEUE_NUM, 2))
            if not size:
                continue
            desc, avail, used = _ring_addresses(q, size)
            do(("pio_w", base + R.QUEUE_PFN, 4, desc >> 12))
            layout.queues.append(QueueInfo(q, size, desc, avail, used))
        do(("pio_w", base + R.QUEUE_SEL, 2, 0))
        layout.init = tuple(p for p in self.setup_prims[first:] if p[0] != "pio_r")
        do(("pio_w", base + R.STATUS, 1, 7))
        layout.init_ok = (self.setup_prims[-1],)
        layout.notify = ("pio", base + R.QUEUE_NOTIFY, 2)
        layout.status = ("pio", base + R.STATUS, 1)
        layout.isr = ("pio", base + R.ISR, 1)
        layout.header = HEADERS.get(vdev.device_id, b"")
        return layout

    def _virtio_caps(self) -> dict[int, tuple[int, int, int]]:
        """The vendor capabilities a modern driver looks for (virtio 1.2 §4.1.4), found
        as a driver finds them, by walking the capability list: cfg_type -> (address in
        its BAR, length, notify_off_multiplier or 0)."""
        caps: dict[int, tuple[int, int, int]] = {}
        if not self._cfg_read(PciReg.STATUS, 2) & 0x10:
            return caps
        at, seen = self._cfg_read(PciReg.CAPABILITY_LIST, 1) & 0xFC, set()
        while at and at not in seen:
            seen.add(at)
            if self._cfg_read(at, 1) == CAP_ID_VENDOR:
                cfg_type, bar = self._cfg_read(at + 3, 1), self._cfg_read(at + 4, 1)
                offset, length = self._cfg_read(at + 8, 4), self._cfg_read(at + 12, 4)
                mult = self._cfg_read(at + 16, 4) if cfg_type == CAP_NOTIFY_CFG else 0
                base = self.fn.bar_address(bar) if bar < 6 and self.fn.bars[bar] is not None else None
                if base is not None and cfg_type not in caps:
                    caps[cfg_type] = (base + offset, length, mult)
            at = self._cfg_read(at + 1, 1) & 0xFC
        return caps

    def _set_up_modern(self, layout: Layout, vdev) -> Layout:
        """A virtio 1.x driver's set-up through the common configuration (virtio 1.2
        §3.1.1, §4.1.4.3): reset, ACKNOWLEDGE|DRIVER, VERSION_1 and indirect descriptors
        accepted, FEATURES_OK, each queue's size read and its rings placed in the DMA area
        (the split layout a legacy driver would use, so both transports share the
        operations), queue_enable, DRIVER_OK."""
        from uvirt.virtio.pci import CommonCfg as C
        caps = self._virtio_caps()
        if CAP_COMMON_CFG not in caps or CAP_NOTIFY_CFG not in caps:
            return layout
        common = caps[CAP_COMMON_CFG][0]
        notify_base, _, mult = caps[CAP_NOTIFY_CFG]
        do = self._do

        def w(reg, size, value):
            do(("mem_w", common + reg, size, value))
        first = len(self.setup_prims) + 1         # the driver's part, after status = 0
        for status in (0, 1, 3):
            w(C.STATUS, 1, status)
        offered = []
        for sel in (0, 1):
            w(C.DFSELECT, 4, sel)
            offered.append(do(("mem_r", common + C.DF, 4)))
        w(C.GFSELECT, 4, 0)
        w(C.GF, 4, offered[0] & VIRTIO_F_INDIRECT)
        w(C.GFSELECT, 4, 1)
        w(C.GF, 4, offered[1] & 1)                # VERSION_1
        w(C.STATUS, 1, 0xB)                       # ... | FEATURES_OK
        for q in range(min(len(vdev.queues), MAX_QUEUES)):
            w(C.Q_SELECT, 2, q)
            size = do(("mem_r", common + C.Q_SIZE, 2))
            if not size:
                continue
            desc, avail, used = _ring_addresses(q, size)
            w(C.Q_SIZE, 2, size)                  # as Linux does: the size is staged too
            for reg, value in ((C.Q_DESCLO, desc), (C.Q_AVAILLO, avail), (C.Q_USEDLO, used)):
                w(reg, 4, value)
                w(reg + 4, 4, 0)
            noff = do(("mem_r", common + C.Q_NOFF, 2))
            w(C.Q_ENABLE, 2, 1)
            layout.queues.append(QueueInfo(q, size, desc, avail, used,
                                           notify=("mem", notify_base + noff * mult, 2)))
        w(C.Q_SELECT, 2, 0)
        layout.init = tuple(p for p in self.setup_prims[first:] if p[0] not in ("pio_r", "mem_r"))
        w(C.STATUS, 1, 0xF)
        layout.init_ok = (self.setup_prims[-1],)
        layout.status = ("mem", common + C.STATUS, 1)
        if CAP_ISR_CFG in caps:
            layout.isr = ("mem", caps[CAP_ISR_CFG][0], 1)
        layout.header = HEADERS.get(vdev.device_id, b"")
        return layout

    def reset(self) -> None:
        self.machine.restore(self.snap)
        self.now = self._clock_at_snapshot

    def close(self) -> None:
        self.machine.close()


def _ring_addresses(q: int, size: int) -> tuple[int, int, int]:
    """Where queue ``q``'s split ring goes in the DMA area (the legacy layout: the used
    ring page-aligned after the available ring)."""
    desc = DMA_BASE + q * QUEUE_STRIDE
    avail = desc + 16 * size
    used = (avail + 6 + 2 * size + 4095) & ~4095
    if used + 6 + 8 * size > desc + QUEUE_STRIDE or desc + QUEUE_STRIDE > BUF_BASE:
        raise UvirtError(f"uvirt fuzz: queue {q} of {size} entries does not fit the DMA area")
    return desc, avail, used


def load_factory(spec: str):
    """``package.module:callable`` -> the callable (``--python``)."""
    import importlib
    mod, _, attr = spec.partition(":")
    if not mod or not attr:
        raise UvirtError(f"--python {spec}: expected MODULE:CALLABLE")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise UvirtError(f"--python {spec}: {e}") from None


def _from_factory(machine, factory):
    """A user's device: ``factory(machine)`` returns a ``PciFunction`` it plugged, a
    ``PciFunction`` to plug, or a ``VirtioDevice`` to put on virtio-pci; BARs are then
    placed as firmware would."""
    from uvirt.boot import firmware_step as bios
    from uvirt.board.pci.bus import PciFunction
    from uvirt.virtio.device import VirtioDevice
    if isinstance(factory, str):
        factory = load_factory(factory)
    with machine.batch():
        obj = factory(machine)
        if isinstance(obj, VirtioDevice):
            from uvirt.virtio.pci import VirtioPci
            fn = VirtioPci(obj, class_code=0x00FF, vectors=2)
            fn.realize(machine.memory.guest)
            machine.add_pci(fn)
        elif isinstance(obj, PciFunction):
            fn = obj
            if fn.devfn is None or fn.devfn not in machine.pci.functions:
                machine.add_pci(fn)
        else:
            raise UvirtError(f"--python: {factory!r} returned {type(obj).__name__}, not a PCI "
                             f"function or a virtio device")
        bios.assign_resources(machine.pci)
    return fn, getattr(fn, "name", None) or getattr(factory, "__name__", type(fn).__name__)


def settle(machine) -> None:
    """After a CPU run: the board serves host accesses again (a stop empties the port
    table and holds device work back until the next run)."""
    machine.resume_device_work()
    if not machine.io.table:
        machine.io.commit()
    machine.work.drain()


def observe(machine, with_cpu: bool = False) -> tuple:
    """What the guest could observe of the board after an input: every device's declared
    state (host clock readings left out), every PCI function's config space, the DMA
    area's bytes, the memory map."""
    from uvirt.cpu.snapshot import capture_objects, device_roots
    state = []
    roots = (machine, getattr(machine, "board", machine))      # run state, not device state
    for st in capture_objects(device_roots(machine)):
        plain = sorted((k, repr(v)) for k, v in st.plain.items()
                       if not hasattr(v, "snapshot_state") and k not in CLOCK_FIELDS)
        if st.obj in roots or not (plain or st.buffers or st.shallow or st.deep):
            continue
        state.append((type(st.obj).__qualname__, tuple(plain), tuple(bytes(b) for _, b, _ in st.buffers),
                      tuple(repr(v) for _, _, v in st.shallow), tuple(_stable(v) for _, v in st.deep)))
    state.sort()
    cfg = tuple((dfn, bytes(fn.config_read(o, 1) for o in range(256)))
                for dfn, fn in sorted(machine.pci.functions.items()))
    view = machine.ram.buffer.view
    dma = hashlib.sha256(view[DMA_BASE:DMA_END]).hexdigest()
    unassigned = machine.memory._unassigned
    spans = tuple((p.start, p.end, p.region.name) for p in machine.memory.flatten()
                  if p.region is not unassigned)
    return tuple(state), cfg, dma, spans


def _stable(v) -> str:
    import random
    return repr(v.getstate()) if isinstance(v, random.Random) else repr(v)


#: wall-clock timestamps in device state (the PIT and RTC run on the host's clock)
CLOCK_FIELDS = frozenset({"_synced", "count_load_time", "last_update", "next_periodic_time",
                          "next_alarm_time", "expire", "_fact_deadline", "base_rtc"})
