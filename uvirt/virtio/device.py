"""The transport-independent half of a virtio device (QEMU ``VirtIODevice``, hw/virtio/virtio.c).

State every device has: status, offered (host) and accepted (guest) features, queue
select, ISR, config vector and generation, the queues, and the broken flag.  A device
model subclasses ``VirtioDevice`` and fills in the hooks; a transport (virtio_pci.py)
drives the state from guest register accesses and is told, through ``VirtioTransport``,
when to raise an interrupt.  Nothing here knows PCI or Unicorn.

Status (virtio 1.2 §2.1; QEMU ``virtio_set_status``)
    QEMU stores whatever the driver writes.  uvirt does the same, and checks each write
    against ``STATUS_RULES`` (a table, spec §3.1.1): a write that breaks a rule is
    recorded as a guest error, and then stored anyway, as QEMU does.  The one refusal is
    FEATURES_OK when VERSION_1 was accepted and the device rejects the feature set
    (QEMU ``virtio_validate_features``): the write is dropped, so the driver's re-read
    shows FEATURES_OK clear.

Features (QEMU ``virtio_set_features``)
    Rejected once FEATURES_OK is set; bits the device did not offer are dropped (and
    recorded as a guest error).  Every QEMU device offers ``COMMON_FEATURES``; transports
    add BAD_FEATURE (legacy) and VERSION_1 (modern).  ``legacy_features`` are hidden
    from the modern feature window.

Trace (declared events, uvirt/trace.py)
    Kicks (``vq_kick``, or ``vq_kick_ignored`` with the reason), the queue's ring events
    and every used-buffer notification decision (``vq_irq``: raised, or suppressed and
    why; ``config_irq``) go to the transport's ``trace`` while its ``tracing`` is true.
    The device never sees the tracer or the machine.

Errors (QEMU ``virtio_error``)
    A device that finds the driver broke the protocol marks itself broken (kicks are
    ignored until reset), sets DEVICE_NEEDS_RESET if VERSION_1 was negotiated, and sends
    a configuration-change notification.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

from uvirt.board.dma import AFTER_ACCESS
from uvirt.virtio.features import VirtioFeature as F
from uvirt.virtio import convert_queue, make_queue
from uvirt.virtio.chain import Element
from uvirt.virtio.queue import VirtqueueBase

if TYPE_CHECKING:
    from uvirt.board.memory.guest import GuestMemory

VIRTIO_QUEUE_MAX = 1024
VIRTIO_NO_VECTOR = 0xFFFF


class Status(IntFlag):
    ACKNOWLEDGE = 0x01
    DRIVER = 0x02
    DRIVER_OK = 0x04
    FEATURES_OK = 0x08
    NEEDS_RESET = 0x40
    FAILED = 0x80


class Isr(IntFlag):
    QUEUE = 0x1
    CONFIG = 0x2


# Plain ints for hot paths (``int & IntFlag`` goes through IntFlag.__rand__, slowly).
_DRIVER_OK = int(Status.DRIVER_OK)
_FEATURES_OK = int(Status.FEATURES_OK)
_NEEDS_RESET = int(Status.NEEDS_RESET)
_ISR_QUEUE, _ISR_CONFIG = int(Isr.QUEUE), int(Isr.CONFIG)
_VERSION_1 = int(F.VERSION_1)
_RING_PACKED = int(F.RING_PACKED)

#: QEMU's DEFINE_VIRTIO_COMMON_FEATURES defaults in 7.2: indirect_desc, event_idx,
#: notify_on_empty, any_layout, queue_reset on; iommu_platform, packed off.
COMMON_FEATURES = (F.NOTIFY_ON_EMPTY | F.ANY_LAYOUT | F.RING_INDIRECT_DESC | F.RING_EVENT_IDX
                   | F.RING_RESET)
#: Bits that exist only in the legacy interface (QEMU ``vdc->legacy_features``).
LEGACY_ONLY_FEATURES = F.NOTIFY_ON_EMPTY | F.ANY_LAYOUT | F.BAD_FEATURE


@dataclass(frozen=True)
class StatusRule:
    """A driver status write that the spec forbids (§3.1.1, §2.1.1)."""

    name: str
    violated: Callable[[int, int], bool]     # (old, new) -> True if the write breaks the rule
    spec: str


STATUS_RULES: tuple[StatusRule, ...] = (
    StatusRule("clears_bits", lambda old, new: new != 0 and bool(old & ~new & ~Status.NEEDS_RESET),
               "§2.1.1: the driver MUST NOT clear a device status bit (only reset by writing 0)"),
    StatusRule("driver_before_acknowledge", lambda old, new: bool(new & Status.DRIVER) and not new & Status.ACKNOWLEDGE,
               "§3.1.1: ACKNOWLEDGE, then DRIVER"),
    StatusRule("driver_ok_before_driver", lambda old, new: bool(new & Status.DRIVER_OK) and not new & Status.DRIVER,
               "§3.1.1: DRIVER_OK only after DRIVER"),
    StatusRule("sets_needs_reset", lambda old, new: bool(new & ~old & Status.NEEDS_RESET),
               "§2.1.2: DEVICE_NEEDS_RESET is set by the device only"),
)


class VirtioTransport(Protocol):
    """What a device asks of its transport."""

    tracing: bool                                              # is anyone tracing?

    def notify_vector(self, vector: int) -> None: ...          # QEMU virtio_notify_vector
    def guest_error(self, kind: str, detail: str) -> None: ...
    def trace(self, name: str, **fields) -> None: ...          # a declared trace event


class _NullTransport:
    tracing = False

    def notify_vector(self, vector: int) -> None:
        pass

    def guest_error(self, kind: str, detail: str) -> None:
        pass

    def trace(self, name: str, **fields) -> None:
        pass


class _QueueEvents:
    __slots__ = ("dev", "_tracer")

    def __init__(self, dev: "VirtioDevice") -> None:
        self.dev = dev
        self._tracer = None

    def guest_error(self, kind: str, **fields) -> None:
        self.dev.transport.guest_error(f"virtqueue_{kind}", fields.get("reason", kind))

    @property
    def tracing(self) -> bool:
        # Asked on every pop/fill/flush: the transport's tracer (anything with
        # ``enabled``) is looked up once, then it is one attribute read.
        t = self._tracer
        if t is None:
            t = getattr(self.dev.transport, "tracer", None)
            if t is None:
                return getattr(self.dev.transport, "tracing", False)
            self._tracer = t
        return t.enabled

    def ring(self, name: str, **fields) -> None:
        self.dev.transport.trace(name, **fields)


class VirtioDevice:
    """Base class of device models.  Subclasses set the class attributes and override
    the hooks marked *hook*."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = (
        "queues", "vectors", "host_features", "status", "guest_features", "queue_sel", "isr",
        "config_vector", "generation", "broken", "disabled", "_kicks",
    )

    device_id: int = 0            # virtio device type (4 = entropy)
    name: str = "virtio-device"
    queue_sizes: tuple[int, ...] = ()
    config_len: int = 0
    #: device-specific feature bits offered (before ``get_features``)
    device_features: int = 0
    legacy_features: int = LEGACY_ONLY_FEATURES

    def __init__(self) -> None:
        self.transport: VirtioTransport = _NullTransport()
        self.mem: GuestMemory | None = None
        self.host_features = COMMON_FEATURES | self.device_features
        self.queues: list[VirtqueueBase] = []
        self.vectors: list[int] = []
        self._events = _QueueEvents(self)
        self.status = 0
        self.guest_features = 0
        self.queue_sel = 0
        self.isr = 0
        self.config_vector = VIRTIO_NO_VECTOR
        self.generation = 0
        self.broken = False
        self.disabled = False
        self._kicks: set[int] = set()

    # -- QEMU virtio_device_disabled: a broken or disabled device pops nothing, its
    # queues read as empty and fills are dropped (virtqueue_pop/fill/flush,
    # virtio_queue_empty); the queues carry the flag so the ring code needs no device
    @property
    def broken(self) -> bool:
        return self._broken

    @broken.setter
    def broken(self, value: bool) -> None:
        self._broken = value
        self._sync_disabled()

    @property
    def disabled(self) -> bool:
        return self._disabled

    @disabled.setter
    def disabled(self, value: bool) -> None:
        self._disabled = value
        self._sync_disabled()

    def _sync_disabled(self) -> None:
        off = getattr(self, "_broken", False) or getattr(self, "_disabled", False)
        for q in getattr(self, "queues", ()):
            q.disabled = off

    # -- wiring (host side)
    def realize(self, mem: "GuestMemory", transport: VirtioTransport) -> None:
        """Attach guest memory and the transport; the transport has added its feature
        bits to ``host_features`` before this (QEMU ``virtio_bus_device_plugged``)."""
        self.mem = mem
        self.transport = transport
        self.host_features = self.get_features(self.host_features)
        self.queues = [make_queue(mem, n, packed=self.negotiated(_RING_PACKED), index=i,
                                  events=self._events)
                       for i, n in enumerate(self.queue_sizes)]
        self._sync_disabled()
        self.vectors = [VIRTIO_NO_VECTOR] * len(self.queues)

    # -- hooks
    def get_features(self, features: int) -> int:
        """*hook* QEMU ``get_features``: adjust the offered set once the transport's bits are in."""
        return features

    def validate_features(self) -> bool:
        """*hook* Accept the driver's feature set at FEATURES_OK (True = accept)."""
        return True

    def set_features_hook(self, features: int) -> None:
        """*hook* The driver accepted ``features``."""

    def config_bytes(self) -> bytes:
        """*hook* The device configuration space as the driver reads it now (little-endian)."""
        return b""

    def config_write(self, offset: int, data: bytes) -> None:
        """*hook* The driver wrote device configuration space."""

    def handle_output(self, index: int) -> None:
        """*hook* The driver kicked queue ``index``."""

    def set_status_hook(self, status: int) -> None:
        """*hook* A status write is about to be stored."""

    def device_reset(self) -> None:
        """*hook* Device-specific reset."""

    def bad_features(self) -> int:
        """*hook* What a legacy driver that wrote bit 30 gets (QEMU ``bad_features``)."""
        return 0

    def shared_regions(self) -> list:
        """*hook* ``[(shmid, SharedMemory)]``: memory the device shares with the driver
        (virtio 1.2 §2.10).  The transport exposes them; the device uses them directly."""
        return []

    # -- driver-visible state changes (called by the transport)
    def negotiated(self, feature: int) -> bool:
        return bool(self.guest_features & feature)

    def set_features(self, value: int) -> bool:
        """QEMU ``virtio_set_features``; False if refused (after FEATURES_OK)."""
        if self.status & _FEATURES_OK:
            self.transport.guest_error("features_after_features_ok",
                                       f"{self.name}: feature write 0x{value:x} after FEATURES_OK ignored")
            return False
        dropped = value & ~self.host_features
        if dropped:
            self.transport.guest_error("unoffered_features",
                                       f"{self.name}: driver accepted unoffered features 0x{dropped:x}")
        value &= self.host_features
        self.set_features_hook(value)
        self.guest_features = value
        self._follow_ring_type()
        for q in self.queues:
            broken = q.set_features(value)
            if broken is not None:
                self.error(broken.reason)
        return True

    def set_status(self, value: int) -> None:
        """QEMU ``virtio_set_status``, with the spec's rules checked and recorded."""
        value &= 0xFF
        old = self.status
        for rule in STATUS_RULES if value != old else ():
            if rule.violated(old, value):
                self.transport.guest_error(f"status_{rule.name}",
                                           f"{self.name}: status 0x{old:02x} -> 0x{value:02x}: {rule.spec}")
        if (self.negotiated(_VERSION_1) and not old & _FEATURES_OK
                and value & _FEATURES_OK and not self.validate_features()):
            self.transport.guest_error("features_rejected",
                                       f"{self.name}: feature set 0x{self.guest_features:x} refused at FEATURES_OK")
            return
        self.set_status_hook(value)
        self.status = value

    def reset(self) -> None:
        """QEMU ``virtio_reset``.  Device work still queued is dropped (QEMU finishes
        in-flight requests first; uvirt's are unfinished only past a CPU slice)."""
        work = getattr(self.mem, "work", None)
        if work is not None:
            work.cancel(self)
        self._kicks.clear()
        self.device_reset()
        self.broken = False
        self.disabled = False
        self.guest_features = 0
        self._follow_ring_type()
        self.queue_sel = 0
        self.status = 0
        self.isr = 0
        self.config_vector = VIRTIO_NO_VECTOR
        self.transport.notify_vector(self.config_vector)
        for i, q in enumerate(self.queues):
            q.reset()
            self.vectors[i] = VIRTIO_NO_VECTOR

    def _follow_ring_type(self) -> None:
        """Packed rings exactly while the driver has accepted VIRTIO_F_RING_PACKED (virtio
        1.2 §2.8).  QEMU asks ``virtio_vdev_has_feature(vdev, VIRTIO_F_RING_PACKED)`` at every
        ring access of its one ``VirtQueue``; uvirt swaps the queue object when the bit
        changes (``convert_queue``: the queue's configuration and indices carry over), in
        place, so the list every holder of ``queues`` sees stays the same list."""
        packed = bool(self.guest_features & _RING_PACKED)
        queues = self.queues
        for i, q in enumerate(queues):
            if q.packed != packed:
                queues[i] = convert_queue(q, packed)

    # -- device side: popping (QEMU virtqueue_pop as the device handlers call it)
    def pop(self, index: int) -> Element | None:
        """The next element of queue ``index``, or None: none available, or the chain
        was bad, in which case ``virtio_error`` has been raised with QEMU's reason (the
        device is broken until reset, so further pops find nothing either)."""
        elem = self.queues[index].pop()
        if elem is not None and elem.broken:
            self.error(elem.reason)
            return None
        return elem

    def popped(self, index: int) -> Iterator[Element]:
        """QEMU's ``while ((elem = virtqueue_pop(vq)))`` loop: every element of queue
        ``index`` until none is left or a bad chain broke the device (``pop``, inlined:
        this loop serves every request of the devices that use it)."""
        queues = self.queues
        while True:
            elem = queues[index].pop()
            if elem is None:
                return
            if elem.broken:
                self.error(elem.reason)
                return
            yield elem

    def queue_notify(self, index: int) -> None:
        """QEMU ``virtio_queue_notify``: a kick.  Ignored for a queue with no rings or a
        broken device.  The handler runs as device work (uvirt/board/dma.py), as QEMU's
        ``ioeventfd=on`` runs it from the main loop (``virtio_queue_notify_vq``, which
        checks rings and broken again): after the register access that kicked, never
        inside it, and a kick while one is pending coalesces as an eventfd does."""
        tracing = self._events.tracing
        if index >= len(self.queues):
            self.transport.guest_error("notify_missing_queue", f"{self.name}: notify of queue {index}, "
                                       f"which does not exist")
            if tracing:
                self.transport.trace("vq_kick_ignored", queue=index,
                                     reason=f"the device has {len(self.queues)} queue(s)")
            return
        q = self.queues[index]
        if not q.desc or self._broken:          # the property's value, without its frame
            if tracing:
                why = ("the device is broken until reset (virtio_error)" if self.broken else
                       "the queue has no descriptor table (QUEUE_PFN / queue_desc+queue_enable "
                       "never set)")
                self.transport.trace("vq_kick_ignored", queue=index, reason=why)
            return
        if tracing:
            self.transport.trace("vq_kick", queue=index)
        self.kick(index)

    def kick(self, index: int) -> None:
        """Run ``handle_output(index)`` as device work (an eventfd being signalled), or,
        with ``ioeventfd=off``, inside the kicking access as QEMU does then: the device's
        re-entrancy guard is engaged, so its own DMA into its registers is dropped."""
        work = getattr(self.mem, "work", None)
        if work is None or not getattr(self, "ioeventfd", True):
            result = self.handle_output(index)
            if result is not None:
                for marker in result:
                    if marker is AFTER_ACCESS and work is not None:
                        work.schedule(lambda: result, owner=self)    # the rest: after it
                        break
                    if work is not None and work.should_stop():
                        break                   # the run is ending: leave the rest
            return
        if index in self._kicks:
            return
        self._kicks.add(index)

        def notify_vq():
            self._kicks.discard(index)
            q = self.queues[index]
            if not q.desc or self._broken:
                return None
            return self.handle_output(index)

        work.schedule(notify_vq, owner=self)

    def defer(self, fn) -> None:
        """Run ``fn()`` as device work (a QEMU bottom half); it may return a generator
        that yields after each bounded piece (uvirt/board/dma.py ``PIECE`` bytes)."""
        work = getattr(self.mem, "work", None)
        if work is None:
            result = fn()
            if result is not None:
                for _ in result:
                    pass
            return
        work.schedule(fn, owner=self)

    def queue(self, index: int) -> VirtqueueBase | None:
        return self.queues[index] if index < len(self.queues) else None

    def queue_num(self, index: int) -> int:
        q = self.queue(index)
        return q.size if q is not None else 0

    def ready(self, index: int) -> bool:
        """``virtio_queue_ready`` and DRIVER_OK: may the device use the queue now?"""
        queues = self.queues          # queue(index), inlined: asked twice per request
        return index < len(queues) and queues[index].ready and bool(self.status & _DRIVER_OK)

    # -- device side: interrupts and errors
    def notify(self, index: int) -> None:
        """QEMU ``virtio_notify``: used buffers are there; interrupt unless suppressed."""
        q = self.queues[index]
        if self._events.tracing:
            decide = getattr(q, "notify_decision", None)
            due, reason = decide() if decide is not None else (q.should_notify(), "packed ring "
                                                                "event suppression (§2.8.10)")
            self.transport.trace("vq_irq", queue=index, verdict="raised" if due else "suppressed",
                                 reason=reason, vector=self.vectors[index])
        else:
            due = q.should_notify()
        if not due:
            return
        self.isr |= _ISR_QUEUE
        self.transport.notify_vector(self.vectors[index])

    def notify_config(self) -> None:
        """QEMU ``virtio_notify_config``: only once the driver is up."""
        tracing = self._events.tracing
        if not self.status & _DRIVER_OK:
            if tracing:
                self.transport.trace("config_irq", verdict="suppressed",
                                     reason=f"status=0x{self.status:02x}: DRIVER_OK not set (§4.1.4.5)")
            return
        if tracing:
            self.transport.trace("config_irq", verdict="raised", reason="configuration changed (§4.1.4.5)")
        self.isr |= _ISR_QUEUE | _ISR_CONFIG
        self.generation = (self.generation + 1) & 0xFF
        self.transport.notify_vector(self.config_vector)

    def error(self, reason: str) -> None:
        """QEMU ``virtio_error``."""
        self.transport.guest_error("virtio_error", f"{self.name}: {reason}")
        self.broken = True
        if self.negotiated(_VERSION_1):
            self.status |= _NEEDS_RESET
            self.notify_config()

    # -- config space accessors (QEMU virtio_config_read*/write*)
    def config_read(self, offset: int, size: int) -> int:
        data = self.config_bytes()
        if offset + size > self.config_len or offset + size > len(data):
            return (1 << (8 * size)) - 1
        return int.from_bytes(data[offset:offset + size], "little")

    def config_store(self, offset: int, size: int, value: int) -> None:
        if offset + size > self.config_len:
            return
        self.config_write(offset, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
