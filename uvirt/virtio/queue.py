"""Split virtqueues (virtio 1.2 §2.7) as a QEMU 7.2 device sees them.  Pure: no PCI, no CPU.

Ring layout (docs/virtio-pci-facts.md §2.3, §5.1), N = current queue size::

    descriptor table  16·N   {le64 addr, le32 len, le16 flags, le16 next}[N]
    available ring    6+2·N  le16 flags, le16 idx, le16 ring[N], le16 used_event
    used ring         6+8·N  le16 flags, le16 idx, {le32 id, le32 len}[N], le16 avail_event

Legacy transports give one page frame number; the three parts follow each other with the
used ring aligned to 4096 (``legacy_layout``).  Modern transports give three addresses.

What a split ring and a packed ring (uvirt/virtio/packed.py) share is here too:
``VirtqueueBase`` (configuration, ring-area checks, guest-error reporting, turning a walked
chain into an ``Element``).  Descriptors, chain walks, indirect tables and buffer mapping
are in uvirt/virtio/chain.py.

Configuring a queue follows QEMU's ``virtio_queue_set_num`` / ``virtio_queue_set_addr`` /
``virtio_queue_set_rings``: the ring areas are checked once, when they are set
(``virtio_init_region_cache``): an area may lie in any one memory region (RAM, a
device's registers, ROM, unassigned space, which reads 0), but not cross out of it; a
queue whose areas failed the check reads as empty.  Buffers are mapped as QEMU's
``virtqueue_map_desc`` maps them (``GuestMemory.map``: RAM directly, anything else
through the one bounce buffer, which a second non-RAM piece finds in use).

Guest errors (each one is an ``events.guest_error(kind, reason=..., fatal=...)`` call).
Fatal ones make ``pop``/``set_rings``/``avail_bytes`` return a ``QueueBroken`` whose
``reason`` is QEMU's ``virtio_error`` text; the transport then sets DEVICE_NEEDS_RESET
(docs/virtio-pci-facts.md §5.6).  Nothing here raises for a guest mistake.

    kind                   reason (QEMU text)                              where
    ring_unmappable        Cannot map desc / used / avail                   set_rings, set_addr
    avail_idx_jump         Guest moved used index from %u to %u            pop, avail_bytes
    size_exceeded          Virtqueue size exceeded                          pop
    head_oob               Guest says index %u is available                 pop, avail_bytes
    rings_unmapped         Region caches not initialized                    pop
    desc_ring_unmappable   Cannot map descriptor ring                       pop, avail_bytes
    indirect_bad_size      Invalid size for indirect buffer table           pop, avail_bytes
    indirect_unmappable    Cannot map indirect buffer                       pop, avail_bytes
    desc_order             Incorrect order for descriptors                  pop
    zero_len               virtio: zero sized buffers are not allowed       pop
    too_many_sg            virtio: too many write descriptors in indirect table   pop
    bogus_buffer           virtio: bogus descriptor or out of resources     pop
    loop                   Looped descriptor                                pop, avail_bytes
    next_oob               Desc next is %u                                  pop, avail_bytes

Not fatal under QEMU (the flag is ignored and the descriptor mapped as a plain buffer,
docs/virtio-pci-facts.md §5.5), fatal with ``strict=True`` (spec §2.7.5.3.1, Linux vhost):

    nested_indirect        INDIRECT inside an indirect table
    indirect_with_next     INDIRECT and NEXT on the same descriptor
    indirect_not_head      INDIRECT on a later descriptor of a direct chain (strict: followed)

Also not fatal: ``bad_queue_size`` (a size write QEMU ignores) and ``ring_access`` (a ring
area whose memory changed after it was checked; the access goes through the DMA path).

Ring events (declared trace events, uvirt/trace.py), sent to ``events.ring(name, ...)``
only while ``events.tracing`` is true, so an untraced queue pays one attribute test:
``vq_pop`` (a chain popped, §2.7.13 driver side / §2.7.5 descriptors), ``vq_fill`` (a used
element written, §2.7.8), ``vq_flush`` (used.idx published).  ``notify_decision`` says
whether a used-buffer notification is due and why (§2.7.7, §2.7.10 for EVENT_IDX).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from uvirt.errors import GuestMemoryError, UvirtError
from uvirt.virtio.chain import (DESC_SIZE, VIRTQUEUE_MAX_SIZE, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT,
                                VRING_DESC_F_WRITE, ChainError, Descriptor, DescriptorChain, Element,
                                PopResult, QueueBroken, indirect_table, map_chain)
from uvirt.virtio.features import VirtioFeature

if TYPE_CHECKING:  # pragma: no cover
    from uvirt.board.memory.guest import GuestMemory

# --------------------------------------------------------------------------- constants

#: avail.flags: the driver does not want used-buffer notifications (§2.7.7).
VRING_AVAIL_F_NO_INTERRUPT = 1
#: used.flags: the device does not want available-buffer notifications (§2.7.10).
VRING_USED_F_NO_NOTIFY = 1

AVAIL_FLAGS = 0                     # offsets inside the available ring
AVAIL_IDX = 2
AVAIL_RING = 4
USED_FLAGS = 0                      # offsets inside the used ring
USED_IDX = 2
USED_RING = 4
USED_ELEM_SIZE = 8                  # sizeof(struct vring_used_elem)

#: QEMU ``VIRTIO_PCI_VRING_ALIGN``: legacy used-ring alignment.
VIRTIO_PCI_VRING_ALIGN = 4096
#: Legacy QUEUE_PFN holds the ring address shifted right by this.
VIRTIO_PCI_QUEUE_ADDR_SHIFT = 12

_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_DESC = struct.Struct("<QIHH")
_LE16 = struct.Struct("<H")
_USED_ELEM = struct.Struct("<II")


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """Linux ``vring_need_event`` (virtio 1.2 §2.7.7.2): has the index moved past
    ``event_idx`` while going from ``old_idx`` to ``new_idx``?  All arithmetic mod 2^16."""
    return ((new_idx - event_idx - 1) & _U16) < ((new_idx - old_idx) & _U16)


def vring_align(addr: int, align: int) -> int:
    return (addr + align - 1) & ~(align - 1)


@dataclass(frozen=True, slots=True)
class RingLayout:
    """Guest-physical addresses of a split ring's three areas."""

    desc: int
    avail: int
    used: int


def legacy_layout(pfn: int, size: int, align: int = VIRTIO_PCI_VRING_ALIGN) -> RingLayout:
    """The legacy single-block layout for QUEUE_PFN ``pfn`` (docs/virtio-pci-facts.md §2.3).

    QEMU ``virtio_queue_update_rings`` aligns ``avail + 4 + 2·N`` (the end of
    ``avail.ring``, *without* the 2-byte ``used_event``), where the spec and Linux's
    ``vring_init`` align ``avail + 6 + 2·N``.  The two agree for every power-of-two N;
    they differ when 18·N + 4 is a multiple of ``align`` (N = 910), and QEMU's answer is
    what the guest sees, so that is what this returns.
    """
    desc = pfn << VIRTIO_PCI_QUEUE_ADDR_SHIFT
    avail = desc + DESC_SIZE * size
    used = vring_align(avail + AVAIL_RING + 2 * size, align)
    return RingLayout(desc, avail, used)


def desc_area_size(size: int) -> int:
    return DESC_SIZE * size


def avail_area_size(size: int, event_idx: bool) -> int:
    """QEMU ``virtio_queue_get_avail_size``: ``used_event`` only counts with EVENT_IDX."""
    return AVAIL_RING + 2 * size + (2 if event_idx else 0)


def used_area_size(size: int, event_idx: bool) -> int:
    """QEMU ``virtio_queue_get_used_size``: ``avail_event`` only counts with EVENT_IDX."""
    return USED_RING + USED_ELEM_SIZE * size + (2 if event_idx else 0)


# --------------------------------------------------------------------------- events


class QueueEvents(Protocol):
    """Where a queue reports guest misbehaviour (vm-superio ``RtcEvents`` style) and,
    while ``tracing``, what it does to the rings.

    ``fields`` always holds ``reason`` (str), ``fatal`` (bool) and ``queue`` (the
    queue's index), plus values naming what was wrong (``head=``, ``next=``, ``addr=``...).
    """

    tracing: bool

    def guest_error(self, kind: str, **fields: Any) -> None: ...

    def ring(self, name: str, **fields: Any) -> None: ...


class NoEvents:
    """The default: guest errors are only visible through return values."""

    tracing = False

    def guest_error(self, kind: str, **fields: Any) -> None:
        pass

    def ring(self, name: str, **fields: Any) -> None:
        pass


class RecordingEvents:
    """Keeps every event, for tests: ``events.kinds == ["loop"]``."""

    tracing = True

    def __init__(self) -> None:
        self.errors: list[tuple[str, dict[str, Any]]] = []
        self.rings: list[tuple[str, dict[str, Any]]] = []

    def guest_error(self, kind: str, **fields: Any) -> None:
        self.errors.append((kind, fields))

    def ring(self, name: str, **fields: Any) -> None:
        self.rings.append((name, fields))

    @property
    def kinds(self) -> list[str]:
        return [k for k, _ in self.errors]

    @property
    def fatal_kinds(self) -> list[str]:
        return [k for k, f in self.errors if f.get("fatal")]

    def clear(self) -> None:
        self.errors.clear()


# --------------------------------------------------------------------------- the queues


class VirtqueueBase:
    """What split and packed queues share: configuration, guest-error reporting, the
    buffer-mapping loop.  Devices use the common surface: ``pop``, ``push``,
    ``fill``/``flush``, ``should_notify``, ``set_notification``, ``is_empty``,
    ``avail_bytes``, ``reset``, ``broken``."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = (
        "size", "desc", "avail", "used", "last_avail_idx", "shadow_avail_idx", "used_idx",
        "signalled_used", "signalled_used_valid", "notification", "inuse", "broken", "event_idx",
        "notify_on_empty", "_mapped", "_desc_len", "disabled",
    )

    packed: ClassVar[bool] = False
    #: the areas the device writes, checked as writable (QEMU ``virtio_init_region_cache``:
    #: a packed ring's descriptors come back as used descriptors)
    _written_areas: ClassVar[tuple[str, ...]] = ("used",)

    def __init__(self, mem: "GuestMemory", max_size: int, *, index: int = 0,
                 events: QueueEvents | None = None, strict: bool = False,
                 align: int = VIRTIO_PCI_VRING_ALIGN) -> None:
        self.align = align
        if not 0 < max_size <= VIRTQUEUE_MAX_SIZE:
            raise UvirtError(f"virtqueue {index}: size 0x{max_size:x} outside "
                             f"1..0x{VIRTQUEUE_MAX_SIZE:x}")
        self.mem = mem
        self.max_size = max_size
        self.index = index
        self.events: QueueEvents = events if events is not None else NoEvents()
        self.strict = strict
        self.disabled = False
        self.reset()

    def reset(self) -> None:
        """QEMU ``__virtio_queue_reset``: addresses and indices 0, size back to the
        maximum, notifications on, nothing in flight, not broken, features cleared."""
        self.size = self.max_size
        self.desc = 0
        self.avail = 0
        self.used = 0
        self.last_avail_idx = 0
        self.shadow_avail_idx = 0
        self.used_idx = 0
        self.signalled_used = 0
        self.signalled_used_valid = False
        self.notification = True
        self.inuse = 0
        self.broken: QueueBroken | None = None
        self.event_idx = False
        self.notify_on_empty = False
        self._mapped = False
        self._desc_len = 0
        self._win = None

    # -- configuration

    @property
    def ready(self) -> bool:
        """QEMU ``virtio_queue_ready``: the driver area address is set."""
        return self.avail != 0

    def set_features(self, features: int) -> QueueBroken | None:
        """Take the negotiated ring features.  EVENT_IDX changes the split ring sizes,
        so the areas are checked again (QEMU ``virtio_set_features``)."""
        self.event_idx = bool(features & VirtioFeature.RING_EVENT_IDX)
        self.notify_on_empty = bool(features & VirtioFeature.NOTIFY_ON_EMPTY)
        if self.event_idx and self.size:
            return self._map_rings()
        return None

    def set_size(self, num: int) -> bool:
        """Guest-facing size write (QEMU ``virtio_queue_set_num``): ignored if it would
        flip the queue between existing and not, or exceeds ``VIRTQUEUE_MAX_SIZE``.
        QEMU checks neither power-of-two-ness nor the device's own maximum."""
        if bool(num) != bool(self.size) or num > VIRTQUEUE_MAX_SIZE or num < 0:
            self._report("bad_queue_size", f"queue size {num} ignored", fatal=False, size=num)
            return False
        self.size = num
        return True

    @property
    def legacy_pfn(self) -> int:
        """What a legacy QUEUE_PFN read returns."""
        return self.desc >> VIRTIO_PCI_QUEUE_ADDR_SHIFT

    def set_legacy_pfn(self, pfn: int) -> QueueBroken | None:
        """Legacy QUEUE_PFN write with ``pfn != 0`` (0 means device reset; that is the
        transport's business)."""
        return self.set_addr(pfn << VIRTIO_PCI_QUEUE_ADDR_SHIFT)

    def set_addr(self, desc: int) -> QueueBroken | None:
        """QEMU ``virtio_queue_set_addr`` + ``virtio_queue_update_rings``: one base
        address, the other areas derived as ``legacy_layout`` does."""
        if not self.size:
            return None
        self.desc = desc
        if not desc or not self.align:
            return None
        self.avail = desc + DESC_SIZE * self.size
        self.used = vring_align(self.avail + AVAIL_RING + 2 * self.size, self.align)
        return self._map_rings()

    def set_rings(self, desc: int, avail: int, used: int) -> QueueBroken | None:
        """QEMU ``virtio_queue_set_rings``: three independent areas (modern transport,
        when queue_enable is written).  ``avail`` is the driver area, ``used`` the
        device area."""
        if not self.size:
            return None
        self.desc, self.avail, self.used = desc, avail, used
        return self._map_rings()

    def _map_rings(self) -> QueueBroken | None:
        """QEMU ``virtio_init_region_cache``: each area must lie in one memory region (RAM,
        a device's registers, ROM; unassigned space always passes), checked in the order
        desc, used, avail.  A queue with desc == 0 is simply not set up."""
        self._mapped = False
        self._desc_len = 0
        self._win = None
        if not self.desc:
            return None
        areas = (("desc", self.desc, self._desc_area_size()),
                 ("used", self.used, self._used_area_size()),
                 ("avail", self.avail, self._avail_area_size()))
        for name, addr, size in areas:
            if self.mem.cache_len(addr, size, name in self._written_areas) < size:
                return self._break("ring_unmappable", f"Cannot map {name}", area=name,
                                   addr=addr, size=size)
        self._mapped = True
        self._desc_len = areas[0][2]
        # The common case: all three areas in one piece of RAM.  Ring fields are then
        # read and written through that RAM's bytes (a translation cache only: an access
        # outside it, or after the memory map changed, takes the GuestMemory path).
        lo = min(a for _, a, _ in areas)
        hi = max(a + n for _, a, n in areas)
        window = getattr(self.mem, "ram_window", None)
        self._win = window(lo, hi - lo) if window is not None else None
        return None

    def drop_ram_window(self) -> None:
        """Forget the rings' RAM window: every ring access takes the ``GuestMemory`` path
        (the same bytes) until the rings are mapped again, e.g. for a wrapper that must
        see each access (the fuzzer's DMA oracles)."""
        self._win = None

    def _desc_area_size(self) -> int:
        return desc_area_size(self.size)

    def _used_area_size(self) -> int:
        raise NotImplementedError

    def _avail_area_size(self) -> int:
        raise NotImplementedError

    # -- guest errors

    def _report(self, kind: str, reason: str, *, fatal: bool, **fields: Any) -> None:
        self.events.guest_error(kind, reason=reason, fatal=fatal, queue=self.index, **fields)

    def _break(self, kind: str, reason: str, **fields: Any) -> QueueBroken:
        result = QueueBroken(kind, reason, fields)
        if self.broken is None:
            self.broken = result
        self._report(kind, reason, fatal=True, **fields)
        return result

    # -- ring accessors: with no checked rings QEMU reads 0 and drops writes

    def _ld16(self, addr: int) -> int:
        if not self._mapped:
            return 0
        w = self._win
        if (w is not None and w.lo <= addr and addr + 2 <= w.hi and not w.space._dirty
                and w.space.generation == w.gen):
            return _LE16.unpack_from(w.view, addr - w.delta)[0]
        try:
            return self.mem.read_u16(addr)
        except GuestMemoryError as e:
            self._report("ring_access", str(e), fatal=False, addr=e.addr)
            return 0

    def _st(self, addr: int, data: bytes) -> None:
        if not self._mapped:
            return
        w = self._win
        n = len(data)
        if (w is not None and w.lo <= addr and addr + n <= w.hi and not w.space._dirty
                and w.space.generation == w.gen):
            o = addr - w.delta
            w.view[o:o + n] = data
            w.space.invalidate_code(addr, n)
            return
        try:
            self.mem.write(addr, data)
        except GuestMemoryError as e:
            self._report("ring_access", str(e), fatal=False, addr=e.addr)

    # -- the collect loop shared by both pops

    def _collect(self, chain: Any, head: int) -> Element | QueueBroken:
        """Walk and map ``chain`` (uvirt/virtio/chain.py ``map_chain``) into an element,
        or break the queue with the walk's or the mapping's guest error (``head`` names
        the chain in it).  Adds the element's descriptors to ``inuse``."""
        try:
            mapped = map_chain(self.mem, chain)
        except ChainError as e:
            self._warn(chain)
            return self._break(e.kind, e.reason, head=head, **e.fields)
        self._warn(chain)
        if chain.error is not None:
            kind, reason, fields = chain.error
            return self._break(kind, reason, head=head, **fields)
        if self.packed:
            head = chain.buffer_id
            ndescs = 1 if chain.indirect else mapped.count
        else:
            ndescs = 1
        self.inuse += ndescs
        readable, writable, bounce = mapped.readable, mapped.writable, mapped.bounce
        if self.events.tracing:
            self.events.ring("vq_pop", queue=self.index, head=head,
                             avail_idx=self.shadow_avail_idx,
                             readable=[[a, n] for a, n in readable],
                             writable=[[a, n] for a, n in writable])
        return Element(head, tuple(readable), tuple(writable), ndescs,
                       bounce[0] if bounce else None)

    def _warn(self, chain: Any) -> None:
        for kind, reason, fields in chain.warnings:
            self._report(kind, reason, fatal=False, **fields)

    def detach(self, elem: Element, length: int = 0) -> None:
        """QEMU ``virtqueue_detach_element``: forget an element without using it."""
        self.inuse -= elem.ndescs
        elem.unmap(self.mem, length)

    def push(self, elem: Element | int, length: int) -> None:
        """Return one element with ``length`` bytes written (QEMU ``virtqueue_push``)."""
        self.fill(elem, length, 0)
        self.flush(1)

    def fill(self, elem: Element | int, length: int, idx: int) -> None:
        raise NotImplementedError

    def flush(self, count: int) -> None:
        raise NotImplementedError


class SplitQueue(VirtqueueBase):
    """Device-side state of one split virtqueue (QEMU ``VirtQueue`` + ``VRing``).

    Host-side construction fails loudly (``UvirtError``); everything reachable from the
    guest reports through ``events`` and return values.

    Configure (transport)::

        q = SplitQueue(mem, max_size=8, index=0, events=ev)
        q.set_features(negotiated)                    # EVENT_IDX, NOTIFY_ON_EMPTY
        q.set_legacy_pfn(pfn)                         # legacy QUEUE_PFN (pfn != 0)
        q.set_size(n); q.set_rings(desc, avail, used) # modern, when queue_enable is written

    Serve (device)::

        while (item := q.pop()) is not None:
            if item.broken: transport.virtio_error(item.reason); break
            n = item.write(mem, data); q.push(item, n)
        if q.should_notify(): transport.notify(q.index)
    """

    def _used_area_size(self) -> int:
        return used_area_size(self.size, self.event_idx)

    def _avail_area_size(self) -> int:
        return avail_area_size(self.size, self.event_idx)

    # -- ring fields

    def _read_avail_idx(self) -> int:
        """QEMU ``vring_avail_idx``: the only place avail.idx is read; refreshes the shadow."""
        if self._mapped:
            self.shadow_avail_idx = self._ld16(self.avail + AVAIL_IDX)
            return self.shadow_avail_idx
        return 0

    def _avail_ring(self, slot: int) -> int:
        return self._ld16(self.avail + AVAIL_RING + 2 * slot)

    def avail_flags(self) -> int:
        return self._ld16(self.avail + AVAIL_FLAGS)

    def used_event(self) -> int:
        """``used_event`` (avail.ring[N]), meaningful with EVENT_IDX."""
        return self._avail_ring(self.size)

    def _set_avail_event(self, value: int) -> None:
        """QEMU ``vring_set_avail_event``: only while notifications are enabled."""
        if self.notification:
            self._st(self.used + USED_RING + USED_ELEM_SIZE * self.size,
                     (value & _U16).to_bytes(2, "little"))

    def _read_desc(self, table: int, i: int) -> Descriptor:
        addr = table + DESC_SIZE * i
        w = self._win
        if (w is not None and w.lo <= addr and addr + DESC_SIZE <= w.hi and not w.space._dirty
                and w.space.generation == w.gen):
            return Descriptor(*_DESC.unpack_from(w.view, addr - w.delta))
        try:
            return Descriptor.unpack(self.mem.read(table + DESC_SIZE * i, DESC_SIZE))
        except GuestMemoryError as e:
            raise ChainError("desc_ring_unmappable", "Cannot map descriptor ring",
                              addr=e.addr) from None

    # -- pop

    def is_empty(self) -> bool:
        """QEMU ``virtio_queue_split_empty``: avail.idx is only re-read once every
        entry seen so far has been popped, so a batch of pops reads it once."""
        if self.disabled or not self.avail:
            return True
        if self.shadow_avail_idx != self.last_avail_idx:
            return False
        w, at = self._win, self.avail + AVAIL_IDX
        if (w is not None and self._mapped and w.lo <= at and at + 2 <= w.hi and not w.space._dirty
                and w.space.generation == w.gen):
            # _read_avail_idx() through the rings' RAM window: every handler ends asking
            self.shadow_avail_idx = _LE16.unpack_from(w.view, at - w.delta)[0]
            return self.shadow_avail_idx == self.last_avail_idx
        return self._read_avail_idx() == self.last_avail_idx

    def pop(self) -> PopResult:
        """The next available element, ``None`` when there is none, or ``QueueBroken``.

        QEMU ``virtqueue_split_pop`` order: emptiness (re-reading avail.idx only when
        the shadow copy is used up), the avail-index sanity check of
        ``virtqueue_num_heads``, in-flight count, head (consumed before it is checked,
        so a bad chain is skipped, not retried), ``avail_event``, the descriptor chain.

        The usual request (rings and buffers in the one RAM piece of the rings' window, a
        direct chain, nothing wrong with it) is served here in one frame: the same reads,
        checks and state changes as ``_pop`` with ``DescriptorChain`` and ``map_chain``,
        written out for that case.  Anything else (no valid window, an area or buffer
        outside it, an INDIRECT flag, any guest error) goes to ``_pop``, which starts
        from the state the fast path found, so the general code reports it exactly as
        before.  tests/unit/test_virtqueue_fast_paths.py compares the two on random rings.
        """
        w = self._win
        if (w is None or self.disabled or not self._mapped or w.space._dirty
                or w.space.generation != w.gen):
            return self._pop()
        lo, hi, delta, size = w.lo, w.hi, w.delta, self.size
        avail, table = self.avail, self.desc
        if not (avail and lo <= avail and avail + AVAIL_RING + 2 * size <= hi and lo <= table
                and table + DESC_SIZE * size <= hi and self._desc_len >= DESC_SIZE * size):
            return self._pop()
        view = w.view
        last = self.last_avail_idx
        if self.shadow_avail_idx == last:                   # is_empty(): re-read avail.idx
            self.shadow_avail_idx = _LE16.unpack_from(view, avail + AVAIL_IDX - delta)[0]
            if self.shadow_avail_idx == last:
                return None
        if (self.shadow_avail_idx - last) & _U16 > size or self.inuse >= size:
            return self._pop()                              # avail_idx_jump, size_exceeded
        head = _LE16.unpack_from(view, avail + AVAIL_RING + 2 * (last % size) - delta)[0]
        if head >= size:
            return self._pop()                              # head_oob
        self.last_avail_idx = last = (last + 1) & _U16    # consumed, as _pop does
        # the chain, as DescriptorChain walks it and map_chain maps it (RAM: one piece each);
        # an avail_event store that changed the memory map leaves it to the general walk
        if self.event_idx:
            self._set_avail_event(last)
            if w.space._dirty or w.space.generation != w.gen:
                return self._collect(DescriptorChain(self.mem, table, size, head, strict=self.strict,
                                                     read_desc=self._read_desc), head)
        readable: list = []
        writable: list = []
        i, count = head, 0
        while True:
            addr, n, flags, nxt = _DESC.unpack_from(view, table + DESC_SIZE * i - delta)
            if flags & VRING_DESC_F_INDIRECT or not n or addr < lo or addr + n > hi:
                break                   # an indirect table, zero_len, not this RAM piece
            if flags & VRING_DESC_F_WRITE:
                writable.append((addr, n))
            elif writable:
                break                   # desc_order
            else:
                readable.append((addr, n))
            count += 1
            if not flags & VRING_DESC_F_NEXT:
                # a complete chain: what _collect does with it
                self.inuse += 1
                if self.events.tracing:
                    self.events.ring("vq_pop", queue=self.index, head=head,
                                     avail_idx=self.shadow_avail_idx,
                                     readable=[[a, k] for a, k in readable],
                                     writable=[[a, k] for a, k in writable])
                return Element(head, tuple(readable), tuple(writable), 1, None)
            if count >= size or nxt >= size:
                break                   # loop (the next one would be one too many), next_oob
            i = nxt
        # walked again by the general code, which maps, warns and reports
        return self._collect(DescriptorChain(self.mem, table, size, head, strict=self.strict,
                                             read_desc=self._read_desc), head)

    def _pop(self) -> PopResult:
        """``pop`` for every case (the reference the fast path is checked against)."""
        if self.is_empty():
            return None
        if (self.shadow_avail_idx - self.last_avail_idx) & _U16 > self.size:
            # QEMU makes this check in virtqueue_num_heads (virtqueue_get_avail_bytes,
            # which virtio-rng/net/serial call before popping); pop makes it too.
            return self._break("avail_idx_jump",
                               f"Guest moved used index from {self.last_avail_idx} to "
                               f"{self.shadow_avail_idx}",
                               last_avail_idx=self.last_avail_idx,
                               avail_idx=self.shadow_avail_idx)
        if self.inuse >= self.size:
            return self._break("size_exceeded", "Virtqueue size exceeded", inuse=self.inuse)
        slot = self.last_avail_idx % self.size
        self.last_avail_idx = (self.last_avail_idx + 1) & _U16
        head = self._avail_ring(slot)
        if head >= self.size:
            return self._break("head_oob", f"Guest says index {head} is available", head=head)
        if self.event_idx:
            self._set_avail_event(self.last_avail_idx)
        if not self._mapped:
            return self._break("rings_unmapped", "Region caches not initialized")
        if self._desc_len < DESC_SIZE * self.size:      # _desc_area_size(), inlined
            return self._break("desc_ring_unmappable", "Cannot map descriptor ring")
        return self._collect(DescriptorChain(self.mem, self.desc, self.size, head,
                                             strict=self.strict, read_desc=self._read_desc),
                             head)

    def avail_bytes(self, max_in: int = _U32, max_out: int = _U32) -> tuple[int, int] | QueueBroken:
        """``(writable, readable)`` bytes available, without popping (QEMU
        ``virtqueue_get_avail_bytes``); stops early once both maxima are reached.

        Faithful to QEMU 7.2 (Debian's 7.2.22, with the stable fixes), quirks included:
        avail.idx is re-read for every chain, and the descriptor count of a direct chain
        starts from those of the direct chains before it (an indirect chain counts 1),
        against a limit of N for each chain (its table's entries for an indirect one).
        """
        if not self.desc or not self._mapped:
            return (0, 0)
        if self._desc_len < DESC_SIZE * self.size:      # _desc_area_size(), inlined
            return self._break("desc_ring_unmappable", "Cannot map descriptor ring")
        idx = self.last_avail_idx
        total_bufs = in_total = out_total = 0
        while True:
            num_heads = (self._read_avail_idx() - idx) & _U16
            if num_heads > self.size:
                return self._break("avail_idx_jump",
                                   f"Guest moved used index from {idx} to {self.shadow_avail_idx}",
                                   last_avail_idx=idx, avail_idx=self.shadow_avail_idx)
            if not num_heads:
                return (in_total, out_total)
            num_bufs, limit = total_bufs, self.size
            head = self._avail_ring(idx % self.size)
            idx = (idx + 1) & _U16
            if head >= self.size:
                return self._break("head_oob", f"Guest says index {head} is available", head=head)
            table = self.desc
            try:
                desc = self._read_desc(table, head)
                indirect = bool(desc.flags & VRING_DESC_F_INDIRECT)
                if indirect:
                    table, limit = indirect_table(self.mem, desc, num_bufs, limit)
                    num_bufs = 0
                    desc = self._read_desc(table, 0)
                while True:
                    num_bufs += 1
                    if num_bufs > limit:
                        raise ChainError("loop", "Looped descriptor")
                    if desc.flags & VRING_DESC_F_WRITE:
                        in_total = (in_total + desc.len) & _U32
                    else:
                        out_total = (out_total + desc.len) & _U32
                    if in_total >= max_in and out_total >= max_out:
                        return (in_total, out_total)
                    if not desc.flags & VRING_DESC_F_NEXT:
                        break
                    if desc.next >= limit:
                        raise ChainError("next_oob", f"Desc next is {desc.next}", next=desc.next)
                    desc = self._read_desc(table, desc.next)
            except ChainError as e:
                return self._break(e.kind, e.reason, head=head, **e.fields)
            total_bufs = total_bufs + 1 if indirect else num_bufs

    # -- push

    def rewind(self, num: int) -> bool:
        """QEMU ``virtqueue_rewind``: pretend the last ``num`` elements were not popped."""
        if num > self.inuse:
            return False
        self.inuse -= num
        self.last_avail_idx = (self.last_avail_idx - num) & _U16
        return True

    def push(self, elem: Element | int, length: int) -> None:
        """Return one element with ``length`` bytes written (QEMU ``virtqueue_push``):
        ``fill`` then ``flush(1)``.  The usual case (an element without a bounce, the used
        ring in the rings' RAM window) is written out here in one frame: the same two
        stores, code invalidations, trace events and index bookkeeping."""
        w = self._win
        used = self.used
        if (w is not None and type(elem) is Element and elem.bounce is None and self.inuse
                and used and self._mapped and not self.disabled and not w.space._dirty
                and w.space.generation == w.gen):
            old = self.used_idx
            slot = old % self.size
            at = used + USED_RING + USED_ELEM_SIZE * slot
            if w.lo <= used and at + USED_ELEM_SIZE <= w.hi:
                view, delta, space = w.view, w.delta, w.space
                head, length = elem.head, length & _U32
                _USED_ELEM.pack_into(view, at - delta, head & _U32, length)
                space.invalidate_code(at, USED_ELEM_SIZE)
                tracing = self.events.tracing
                if tracing:
                    self.events.ring("vq_fill", queue=self.index, slot=slot, head=head, len=length)
                new = (old + 1) & _U16
                _LE16.pack_into(view, used + USED_IDX - delta, new)
                space.invalidate_code(used + USED_IDX, 2)
                self.used_idx = new
                self.inuse -= 1
                if tracing:
                    self.events.ring("vq_flush", queue=self.index, old=old, new=new)
                if _s16(new - self.signalled_used) < 1:         # flush's check, for a batch of 1
                    self.signalled_used_valid = False
                return
        self.fill(elem, length, 0)
        self.flush(1)

    def fill(self, elem: Element | int, length: int, idx: int = 0) -> None:
        """Write used.ring[used_idx + idx] = {head, length} (QEMU ``virtqueue_split_fill``);
        the driver sees nothing until ``flush``.  A bounced piece reaches memory first
        (QEMU ``virtqueue_fill`` unmaps before it fills)."""
        if isinstance(elem, Element):
            elem.unmap(self.mem, length)
        if self.disabled or not self.used:
            return
        head = elem.head if isinstance(elem, Element) else elem
        slot = (idx + self.used_idx) % self.size
        self._st(self.used + USED_RING + USED_ELEM_SIZE * slot,
                 struct.pack("<II", head & _U32, length & _U32))
        if self.events.tracing:
            self.events.ring("vq_fill", queue=self.index, slot=slot, head=head, len=length & _U32)

    def flush(self, count: int) -> None:
        """Publish ``count`` filled entries: used.idx += count (QEMU ``virtqueue_split_flush``)."""
        if count > self.inuse:
            raise UvirtError(f"virtqueue {self.index}: flushing {count} elements with "
                             f"{self.inuse} in flight")
        if self.disabled:
            self.inuse -= count
            return
        if not self.used:
            return
        old = self.used_idx
        new = (old + count) & _U16
        self._st(self.used + USED_IDX, new.to_bytes(2, "little"))
        self.used_idx = new
        self.inuse -= count
        if self.events.tracing:
            self.events.ring("vq_flush", queue=self.index, old=old, new=new)
        # The last signalled index fell behind by more than this batch: it can no
        # longer tell whether the driver's used_event was crossed.
        if _s16(new - self.signalled_used) < ((new - old) & _U16):
            self.signalled_used_valid = False

    # -- notifications

    def should_notify(self) -> bool:
        """Whether to interrupt the driver now (QEMU ``virtio_split_should_notify``).

        NOTIFY_ON_EMPTY (legacy) overrides suppression when nothing is in flight and
        the ring is empty; without EVENT_IDX the driver's NO_INTERRUPT flag decides;
        with EVENT_IDX the used index must have crossed ``used_event`` since the last
        notification (the first one is unconditional).  Without either feature, with
        avail.flags in the rings' RAM window, that one load is made here.
        """
        if not self.event_idx and not self.notify_on_empty:
            w, avail = self._win, self.avail
            if (w is not None and self._mapped and w.lo <= avail and avail + 2 <= w.hi
                    and not w.space._dirty and w.space.generation == w.gen):
                return not _LE16.unpack_from(w.view, avail + AVAIL_FLAGS - w.delta)[0] & VRING_AVAIL_F_NO_INTERRUPT
        return self._decide(False)[0]

    def notify_decision(self) -> tuple[bool, str]:
        """``should_notify`` with the reason, in the spec's words (for the trace)."""
        return self._decide(True)

    def _decide(self, explain: bool) -> tuple[bool, str]:
        """Both of the above; the reason is worded only when ``explain`` (every
        completed request asks, and the trace is usually off)."""
        if self.notify_on_empty and not self.inuse and self.is_empty():
            return True, "NOTIFY_ON_EMPTY negotiated and the ring is empty (§6.3 legacy)"
        if not self.event_idx:
            flags = self.avail_flags()
            if flags & VRING_AVAIL_F_NO_INTERRUPT:
                return False, (f"avail.flags=0x{flags:04x}: the driver set VIRTQ_AVAIL_F_NO_INTERRUPT "
                               f"(§2.7.7)" if explain else "")
            return True, (f"avail.flags=0x{flags:04x}: VIRTQ_AVAIL_F_NO_INTERRUPT clear (§2.7.7)"
                          if explain else "")
        valid = self.signalled_used_valid
        self.signalled_used_valid = True
        old = self.signalled_used
        new = self.signalled_used = self.used_idx
        if not valid:
            return True, (f"first notification with VIRTIO_F_EVENT_IDX, used.idx={new} (§2.7.7.2)"
                          if explain else "")
        event = self.used_event()
        if vring_need_event(event, new, old):
            return True, (f"used.idx {old} -> {new} crossed used_event={event} (§2.7.7.2)"
                          if explain else "")
        return False, (f"used.idx {old} -> {new} did not cross used_event={event} (§2.7.7.2)"
                       if explain else "")

    def set_notification(self, enable: bool) -> None:
        """Ask the driver for kicks, or not (QEMU ``virtio_queue_set_notification``):
        with EVENT_IDX by writing avail_event = current avail.idx, otherwise through
        used.flags NO_NOTIFY.  Re-check the ring after enabling: buffers added while
        kicks were off did not kick."""
        self.notification = bool(enable)
        if not self.desc:
            return
        if self.event_idx:
            self._set_avail_event(self._read_avail_idx())
        else:
            w, used = self._win, self.used
            if (w is not None and self._mapped and w.lo <= used and used + 2 <= w.hi
                    and not w.space._dirty and w.space.generation == w.gen):
                # _ld16 and _st below, through the window
                o = used + USED_FLAGS - w.delta
                flags = _LE16.unpack_from(w.view, o)[0]
                _LE16.pack_into(w.view, o, flags & ~VRING_USED_F_NO_NOTIFY if enable
                                else flags | VRING_USED_F_NO_NOTIFY)
                w.space.invalidate_code(used + USED_FLAGS, 2)
                return
            flags = self._ld16(self.used + USED_FLAGS)
            flags = flags & ~VRING_USED_F_NO_NOTIFY if enable else flags | VRING_USED_F_NO_NOTIFY
            self._st(self.used + USED_FLAGS, (flags & _U16).to_bytes(2, "little"))

    def __repr__(self) -> str:
        return (f"SplitQueue(index={self.index}, size={self.size}, desc=0x{self.desc:x}, "
                f"avail=0x{self.avail:x}, used=0x{self.used:x}, last_avail={self.last_avail_idx}, "
                f"used_idx={self.used_idx}, inuse={self.inuse})")


def _s16(v: int) -> int:
    v &= _U16
    return v - 0x10000 if v & 0x8000 else v
