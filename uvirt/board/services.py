"""The services a board gives its device models, and through which qtest and QMP see
them: ``board.services`` (one ``BoardServices`` per board, made with it).

Device models reach these without knowing who listens (qtest, a QMP monitor, nobody):

``services.gpio(path).add_in(count, handler)`` -> ``GpioList``
    A device's unnamed gpio-in lines (QEMU ``qdev_init_gpio_in``), e.g. the IOAPIC's
    24 inputs at ``/machine/i440fx/ioapic``.  Whoever drives a line calls
    ``lines.set(n, level)``; the list calls ``handler(n, level)``.  qtest's
    ``irq_intercept_in PATH`` and ``set_irq_in PATH NAME N LEVEL`` act on these, and an
    intercepted line also reports ``IRQ raise/lower N`` to the qtest client before the
    handler runs (QEMU ``qemu_irq_intercept_in`` + ``qtest_irq_handler``).
``services.gpio(path).add_out(count)`` -> ``GpioList``
    Output lines (``qdev_init_gpio_out``): ``connect(n, fn)`` wires line n to a sink,
    the device calls ``set(n, level)``; ``irq_intercept_out`` reports them.
``services.clock``
    The virtual clock (``uvirt.board.clock.VirtualClock``): ``clock.timer(cb).mod(ns)``;
    qtest's ``clock_step``/``clock_set`` move it.
``services.emit_event(name, data)``
    A QMP event to every monitor (``DEVICE_DELETED``, ``RESET``...), with QEMU's
    ``timestamp``.
``services.block_backends[drive_id] = backend``
    A ``-drive``'s backend; QMP ``block_resize`` calls ``backend.resize(size)`` (the
    device raises its config-change notification itself).
``services.hotplug[bus] = handler``
    A hotplug controller for ``"pci.0"`` (PIIX4 ACPI PCI hotplug, 0xae00-0xae13):
    ``handler.plug(entry)`` after QMP ``device_add`` created the device;
    ``handler.unplug_request(entry)`` for ``device_del``; the controller calls
    ``services.device_deleted(entry)`` once the guest ejected the slot, which unplugs
    the entry and emits ``DEVICE_DELETED``.  Without a handler QMP answers QEMU's
    ``Bus 'pci.0' does not support hotplugging``.
``services.peripherals``
    ``-device``/``device_add`` instances with an ``id`` (QOM ``/machine/peripheral/ID``).
``services.add_reader(fd, callback)`` / ``remove_reader(fd)``
    File descriptors the main loop services while the qtest socket is idle (ivshmem
    doorbell eventfds, a server socket); the callback runs on the loop thread, like
    everything else in uvirt, so devices need no locks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from uvirt.board.clock import VirtualClock

IrqHandler = Callable[[int, int], None]


class GpioList:
    """One list of gpio lines of a device (unnamed unless ``name`` is set)."""

    def __init__(self, device: "GpioDevice", name: str | None, count: int, direction: str,
                 handler: IrqHandler | None = None) -> None:
        self.device = device
        self.name = name
        self.count = count
        self.direction = direction              # "in" | "out"
        self.handler = handler
        self.sinks: list[IrqHandler | None] = [None] * count
        self.intercept: IrqHandler | None = None
        self.levels = [0] * count

    def set(self, n: int, level: int) -> None:
        """Drive line ``n`` (QEMU ``qemu_set_irq``)."""
        if not 0 <= n < self.count:
            raise IndexError(f"{self.device.path}: gpio-{self.direction} line {n} of {self.count}")
        self.levels[n] = level
        if self.intercept is not None:
            self.intercept(n, level)
        if self.direction == "in":
            if self.handler is not None:
                self.handler(n, level)
        else:
            sink = self.sinks[n]
            if sink is not None:
                sink(n, level)

    def connect(self, n: int, sink: IrqHandler) -> None:
        self.sinks[n] = sink


class GpioDevice:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lists: list[GpioList] = []

    def add_in(self, count: int, handler: IrqHandler, name: str | None = None) -> GpioList:
        gl = GpioList(self, name, count, "in", handler)
        self.lists.append(gl)
        return gl

    def add_out(self, count: int, name: str | None = None) -> GpioList:
        gl = GpioList(self, name, count, "out")
        self.lists.append(gl)
        return gl

    def find(self, name: str | None, direction: str) -> GpioList | None:
        for gl in self.lists:
            if gl.name == name and gl.direction == direction:
                return gl
        return None


@dataclass
class Peripheral:
    """A device with an id: ``/machine/peripheral/ID``."""
    id: str
    driver: str
    bus: str                      # QEMU bus name: "pci.0", "isa.0", "vser0.0"...
    device: Any
    props: dict[str, str] = field(default_factory=dict)
    unplug_pending: bool = False

    @property
    def path(self) -> str:
        return f"/machine/peripheral/{self.id}"


class HotplugHandler(Protocol):
    def plug(self, entry: Peripheral) -> None: ...
    def unplug_request(self, entry: Peripheral) -> None: ...


class BoardServices:
    def __init__(self, board: Any) -> None:
        #: the ``uvirt.board.board.Board`` these services belong to
        self.board = board
        self.clock = VirtualClock()
        self.gpio_devices: dict[str, GpioDevice] = {}
        self.peripherals: dict[str, Peripheral] = {}
        self.block_backends: dict[str, Any] = {}
        self.hotplug: dict[str, HotplugHandler] = {}
        #: Event sinks: callables (name, data, timestamp) — the QMP monitors.
        self.event_sinks: list[Callable[[str, dict | None, dict], None]] = []
        #: Set by the main loop: (fd, callback) registration.
        self.loop: Any = None
        self._pending_readers: dict[int, Callable[[], None]] = {}
        #: Extra QOM paths that exist (for qtest's partial path resolution).
        self.qom_paths: set[str] = {"/machine", "/machine/unattached", "/machine/peripheral",
                                    "/machine/peripheral-anon"}

    def gpio(self, path: str) -> GpioDevice:
        dev = self.gpio_devices.get(path)
        if dev is None:
            dev = self.gpio_devices[path] = GpioDevice(path)
        return dev

    # -- QMP events
    def emit_event(self, name: str, data: dict | None = None) -> None:
        now = time.time()
        ts = {"seconds": int(now), "microseconds": int((now % 1) * 1_000_000)}
        for sink in list(self.event_sinks):
            sink(name, data, ts)

    def device_deleted(self, entry: Peripheral, *, child: str | None = None) -> None:
        """The guest (or the controller) finished unplugging ``entry``.  ``child``
        names a QOM child deleted first (virtio devices: ``virtio-backend``), whose
        ``DEVICE_DELETED`` carries only a path, as in QEMU."""
        if child is not None:
            self.emit_event("DEVICE_DELETED", {"path": f"{entry.path}/{child}"})
        self.peripherals.pop(entry.id, None)
        self.emit_event("DEVICE_DELETED", {"device": entry.id, "path": entry.path})

    # -- main loop
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        if self.loop is not None:
            self.loop.add_reader(fd, callback)
        else:
            self._pending_readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        self._pending_readers.pop(fd, None)
        if self.loop is not None:
            self.loop.remove_reader(fd)

    def attach_loop(self, loop: Any) -> None:
        self.loop = loop
        for fd, cb in self._pending_readers.items():
            loop.add_reader(fd, cb)
        self._pending_readers.clear()

    # -- QOM paths
    def all_paths(self) -> set[str]:
        paths = set(self.qom_paths) | set(self.gpio_devices)
        paths |= {p.path for p in self.peripherals.values()}
        return paths

    def resolve(self, path: str) -> str | None:
        """QOM ``object_resolve_path``: an absolute path, or a partial one that names
        exactly one object by its trailing components."""
        paths = self.all_paths()
        if path.startswith("/"):
            return path if path.rstrip("/") in paths or path == "/" else None
        hits = [p for p in paths if p == path or p.endswith("/" + path)]
        return hits[0] if len(hits) == 1 else None

