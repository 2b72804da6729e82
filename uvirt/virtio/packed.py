"""Packed virtqueues (virtio 1.2 §2.8, VIRTIO_F_RING_PACKED) as a QEMU 7.2 device sees them.

Areas (docs/virtio-pci-facts.md §5.4), N = queue size (need not be a power of two)::

    descriptor ring     16·N  {le64 addr, le32 len, le16 id, le16 flags}[N]
    driver area          4    driver event suppression: le16 off_wrap, le16 flags
    device area          4    device event suppression: le16 off_wrap, le16 flags

A descriptor is available when its AVAIL bit equals the device's wrap counter and its
USED bit does not; the device returns a buffer by writing one descriptor with
AVAIL = USED = its used wrap counter.  Both counters start at 1 and flip each time the
index passes N.  A chain occupies consecutive slots linked by NEXT; an indirect
descriptor points at a table whose entries are all used, NEXT or not.

Same surface and result shapes as ``SplitQueue`` (``pop`` -> ``Element`` | ``QueueBroken``
| ``None``; guest errors through ``events.guest_error``), with QEMU's packed differences:

* the buffer id is read from the chain's *first* descriptor (the spec puts it in the last;
  Linux writes it in every one);
* a failed pop does not consume anything: the next pop retries the same slot;
* there is no head-index or ``next`` to range-check; a direct chain longer than N is a
  loop;
* an indirect table of length 0 makes QEMU 7.2 hit an assertion
  (``address_space_cache_init`` with len 0); uvirt breaks the queue with QEMU's
  "Invalid size for indirect buffer table" instead;
* NOTIFY_ON_EMPTY plays no part in ``should_notify``.
"""

from __future__ import annotations

import struct

from uvirt.errors import GuestMemoryError, UvirtError
from uvirt.virtio.chain import (DESC_SIZE, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
                                ChainError, Element, PackedChain, PackedDescriptor, PopResult, QueueBroken,
                                indirect_table)
from uvirt.virtio.queue import VirtqueueBase, vring_need_event

#: Packed descriptor flag bits (virtio 1.2 §2.8.1; Linux ``VRING_PACKED_DESC_F_*``).
VRING_PACKED_DESC_F_AVAIL = 1 << 7
VRING_PACKED_DESC_F_USED = 1 << 15
#: Event suppression ``flags`` values (§2.8.10).
VRING_PACKED_EVENT_FLAG_ENABLE = 0x0
VRING_PACKED_EVENT_FLAG_DISABLE = 0x1
VRING_PACKED_EVENT_FLAG_DESC = 0x2
#: ``off_wrap``: bit 15 is the wrap counter, bits 0..14 the descriptor offset.
VRING_PACKED_EVENT_F_WRAP_CTR = 15

EVENT_OFF_WRAP = 0              # offsets inside an event suppression structure
EVENT_FLAGS = 2
EVENT_AREA_SIZE = 4
DESC_ADDR = 0                   # offsets inside a packed descriptor
DESC_LEN = 8
DESC_ID = 12
DESC_FLAGS = 14

_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_LE16 = struct.Struct("<H")
_PDESC = struct.Struct("<QIHH")         # addr, len, id, flags
_USED_LEN_ID = struct.Struct("<IH")     # a used descriptor's len and id
_EVENT = struct.Struct("<HH")           # an event suppression structure: off_wrap, flags


def is_desc_avail(flags: int, wrap_counter: bool) -> bool:
    """QEMU ``is_desc_avail``: AVAIL matches the wrap counter and USED does not."""
    avail = bool(flags & VRING_PACKED_DESC_F_AVAIL)
    used = bool(flags & VRING_PACKED_DESC_F_USED)
    return avail != used and avail == wrap_counter


def packed_need_event(size: int, wrap: bool, off_wrap: int, new: int, old: int) -> bool:
    """QEMU ``vring_packed_need_event``: an event offset recorded in the other lap is
    moved back by N before the ordinary ``vring_need_event`` test."""
    off = off_wrap & ~(1 << VRING_PACKED_EVENT_F_WRAP_CTR)
    if wrap != bool(off_wrap >> VRING_PACKED_EVENT_F_WRAP_CTR):
        off -= size
    return vring_need_event(off & _U16, new, old)


class PackedQueue(VirtqueueBase):
    """Device-side state of one packed virtqueue.

    Configure with ``set_size`` and ``set_rings(desc, driver_area, device_area)``
    (packed rings need VERSION_1, so there is no legacy PFN form); serve exactly as a
    ``SplitQueue``.
    """

    #: what a snapshot holds besides the base's (uvirt/cpu/snapshot.py)
    snapshot_state = ("last_avail_wrap_counter", "shadow_avail_wrap_counter", "used_wrap_counter",
                      "_used_elems")

    packed = True
    _written_areas = ("desc", "used")

    def reset(self) -> None:
        super().reset()
        self.last_avail_wrap_counter = True
        self.shadow_avail_wrap_counter = True
        self.used_wrap_counter = True
        self._used_elems: dict[int, tuple[int, int, int]] = {}

    def _used_area_size(self) -> int:
        return EVENT_AREA_SIZE

    def _avail_area_size(self) -> int:
        return EVENT_AREA_SIZE

    # -- ring fields

    def _desc_flags(self, slot: int) -> int:
        return self._ld16(self.desc + DESC_SIZE * slot + DESC_FLAGS)

    def driver_event(self) -> tuple[int, int]:
        """The driver's event suppression structure as ``(off_wrap, flags)``; QEMU reads
        flags first."""
        flags = self._ld16(self.avail + EVENT_FLAGS)
        return self._ld16(self.avail + EVENT_OFF_WRAP), flags

    # -- pop

    def is_empty(self) -> bool:
        """QEMU ``virtio_queue_packed_empty``: is the descriptor at last_avail_idx available?"""
        if self.disabled or not self.desc or not self._mapped:
            return True
        return not is_desc_avail(self._desc_flags(self.last_avail_idx),
                                 self.last_avail_wrap_counter)

    def pop(self) -> PopResult:
        """The next available element (``head`` = buffer id, ``ndescs`` = slots used),
        ``None``, or ``QueueBroken`` (QEMU ``virtqueue_packed_pop``).  Nothing is
        consumed unless an element is returned.

        The usual request (the descriptor ring and every buffer in the one RAM piece of
        the rings' window, a direct chain, nothing wrong with it) is served here in one
        frame: the same reads, checks and state changes as ``_pop`` with ``PackedChain``
        and ``map_chain``, written out for that case.  Nothing is changed before that is
        known, so anything else (no valid window, the ring or a buffer outside it, an
        INDIRECT flag, any guest error) goes to ``_pop`` from the same state and is
        reported exactly as before.  tests/unit/test_packed_fast_paths.py compares the two
        on random rings.
        """
        w = self._win
        if (w is None or self.disabled or not self._mapped or w.space._dirty
                or w.space.generation != w.gen):
            return self._pop()
        lo, hi, size, table, last = w.lo, w.hi, self.size, self.desc, self.last_avail_idx
        if not (table and lo <= table and table + DESC_SIZE * size <= hi and last < size
                and self._desc_len >= DESC_SIZE * size):
            return self._pop()
        view, delta = w.view, w.delta
        flags = _LE16.unpack_from(view, table + DESC_SIZE * last + DESC_FLAGS - delta)[0]
        avail = bool(flags & VRING_PACKED_DESC_F_AVAIL)
        if avail == bool(flags & VRING_PACKED_DESC_F_USED) or avail != self.last_avail_wrap_counter:
            return None                                     # is_empty()
        if self.inuse >= size:
            return self._pop()                              # size_exceeded
        # the chain, as PackedChain walks it and map_chain maps it (RAM: one piece each)
        readable: list = []
        writable: list = []
        i, count = last, 0
        addr, n, buffer_id, flags = _PDESC.unpack_from(view, table + DESC_SIZE * i - delta)
        while True:
            if flags & VRING_DESC_F_INDIRECT or not n or addr < lo or addr + n > hi:
                return self._pop()      # an indirect table, zero_len, not this RAM piece
            if flags & VRING_DESC_F_WRITE:
                writable.append((addr, n))
            elif writable:
                return self._pop()      # desc_order
            else:
                readable.append((addr, n))
            count += 1
            if not flags & VRING_DESC_F_NEXT:
                break
            if count >= size:
                return self._pop()      # loop (the next one would be one too many)
            i += 1
            if i == size:
                i = 0
            addr, n, _, flags = _PDESC.unpack_from(view, table + DESC_SIZE * i - delta)
        # a complete chain: what _collect and _pop do with it
        self.inuse += count
        if self.events.tracing:
            self.events.ring("vq_pop", queue=self.index, head=buffer_id,
                             avail_idx=self.shadow_avail_idx,
                             readable=[[a, k] for a, k in readable],
                             writable=[[a, k] for a, k in writable])
        last += count
        if last >= size:
            last -= size
            self.last_avail_wrap_counter = not self.last_avail_wrap_counter
        self.last_avail_idx = self.shadow_avail_idx = last
        self.shadow_avail_wrap_counter = self.last_avail_wrap_counter
        return Element(buffer_id, tuple(readable), tuple(writable), count, None)

    def _pop(self) -> PopResult:
        """``pop`` for every case (the reference the fast path is checked against)."""
        if self.is_empty():
            return None
        if self.inuse >= self.size:
            return self._break("size_exceeded", "Virtqueue size exceeded", inuse=self.inuse)
        if self._desc_len < self._desc_area_size():
            return self._break("desc_ring_unmappable", "Cannot map descriptor ring")
        chain = PackedChain(self.mem, self.desc, self.size, self.last_avail_idx,
                            strict=self.strict)
        elem = self._collect(chain, self.last_avail_idx)
        if elem.broken:
            return elem
        self.last_avail_idx += elem.ndescs
        if self.last_avail_idx >= self.size:
            self.last_avail_idx -= self.size
            self.last_avail_wrap_counter = not self.last_avail_wrap_counter
        self.shadow_avail_idx = self.last_avail_idx
        self.shadow_avail_wrap_counter = self.last_avail_wrap_counter
        return elem

    def avail_bytes(self, max_in: int = _U32, max_out: int = _U32) -> tuple[int, int] | QueueBroken:
        """``(writable, readable)`` bytes available without popping (QEMU
        ``virtqueue_packed_get_avail_bytes``); records where the next kick is wanted
        (shadow index and wrap counter) when it reaches the end of what is available,
        not when it stops early because both maxima are reached.

        Faithful to QEMU 7.2: each chain may have N descriptors (an indirect one, its
        table's entries), but the count of a direct chain starts from the descriptors of
        the direct chains before it, and an indirect chain counts 1.
        """
        if not self.desc or not self._mapped:
            return (0, 0)
        if self._desc_len < self._desc_area_size():
            return self._break("desc_ring_unmappable", "Cannot map descriptor ring")
        idx, wrap = self.last_avail_idx, self.last_avail_wrap_counter
        total_bufs = in_total = out_total = 0
        while True:
            num_bufs, i, table, limit = total_bufs, idx, self.desc, self.size
            try:
                desc = self._read_table(table, idx)
                if not is_desc_avail(desc.flags, wrap):
                    break
                indirect = bool(desc.flags & VRING_DESC_F_INDIRECT)
                if indirect:
                    table, limit = indirect_table(self.mem, desc, num_bufs, limit)
                    num_bufs = i = 0
                    desc = self._read_table(table, 0)
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
                    # virtqueue_packed_read_next_desc
                    if not indirect and not desc.flags & VRING_DESC_F_NEXT:
                        break
                    i += 1
                    if i == limit:
                        if indirect:
                            break
                        i = 0
                    desc = self._read_table(table, i)
            except ChainError as e:
                return self._break(e.kind, e.reason, **e.fields)
            if indirect:
                total_bufs += 1
                idx += 1
            else:
                idx += num_bufs - total_bufs
                total_bufs = num_bufs
            if idx >= self.size:
                idx -= self.size
                wrap = not wrap
        self.shadow_avail_idx = idx
        self.shadow_avail_wrap_counter = wrap
        return (in_total, out_total)

    def _read_table(self, table: int, i: int) -> PackedDescriptor:
        try:
            return PackedDescriptor.unpack(self.mem.read(table + DESC_SIZE * i, DESC_SIZE))
        except GuestMemoryError as e:
            raise ChainError("desc_ring_unmappable", "Cannot map descriptor ring",
                             addr=e.addr) from None

    # -- push

    def rewind(self, num: int) -> bool:
        """QEMU ``virtqueue_rewind`` for packed rings (``num`` counts descriptors)."""
        if num > self.inuse:
            return False
        self.inuse -= num
        if self.last_avail_idx < num:
            self.last_avail_idx = self.size + self.last_avail_idx - num
            self.last_avail_wrap_counter = not self.last_avail_wrap_counter
        else:
            self.last_avail_idx -= num
        return True

    def push(self, elem: Element | int, length: int) -> None:
        """Return one element with ``length`` bytes written (QEMU ``virtqueue_push``):
        ``fill`` then ``flush(1)``.  The usual case (an element without a bounce, nothing
        else staged, its used descriptor's slot in the rings' RAM window) is written out
        here in one frame: the same two stores (len and id, then flags), code
        invalidations, trace events and index bookkeeping."""
        w = self._win
        if (w is not None and type(elem) is Element and elem.bounce is None and not self.disabled
                and not self._used_elems and self._mapped and not w.space._dirty
                and w.space.generation == w.gen):
            ndescs, table, size, old = elem.ndescs, self.desc, self.size, self.used_idx
            slot, wrap = old, self.used_wrap_counter            # _write_used_desc(0, ...)
            if slot >= size:
                slot -= size
                wrap = not wrap
            base = table + DESC_SIZE * slot
            if ndescs <= self.inuse and table and w.lo <= base and base + DESC_SIZE <= w.hi:
                view, delta, space = w.view, w.delta, w.space
                head, length = elem.head, length & _U32
                _USED_LEN_ID.pack_into(view, base + DESC_LEN - delta, length, head & _U16)
                space.invalidate_code(base + DESC_LEN, 6)
                _LE16.pack_into(view, base + DESC_FLAGS - delta,
                                (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED) if wrap else 0)
                space.invalidate_code(base + DESC_FLAGS, 2)
                tracing = self.events.tracing
                if tracing:
                    self.events.ring("vq_fill", queue=self.index, slot=old % size, head=head, len=length)
                self.inuse -= ndescs                            # flush(1)'s bookkeeping
                new = old + ndescs
                if new >= size:
                    new -= size
                    self.used_wrap_counter = not self.used_wrap_counter
                    self.signalled_used_valid = False
                self.used_idx = new
                if tracing:
                    self.events.ring("vq_flush", queue=self.index, old=old, new=new)
                return
        self.fill(elem, length, 0)
        self.flush(1)

    def fill(self, elem: Element | int, length: int, idx: int = 0) -> None:
        """Stage the ``idx``-th used buffer of the next ``flush`` (QEMU
        ``virtqueue_packed_fill``).  An ``int`` means a buffer id of one descriptor."""
        if isinstance(elem, Element):
            elem.unmap(self.mem, length)
        if self.disabled:
            return
        if isinstance(elem, Element):
            self._used_elems[idx] = (elem.head, length & _U32, elem.ndescs)
        else:
            self._used_elems[idx] = (elem, length & _U32, 1)

    def flush(self, count: int) -> None:
        """Write ``count`` staged used descriptors, the first one's flags last so the
        driver sees the batch at once (QEMU ``virtqueue_packed_flush``).

        The i-th used descriptor goes after the slots of the previous buffers (used_idx +
        their ndescs), as Debian's QEMU 7.2 does (its stable fix to
        ``virtqueue_packed_flush``; 7.2.0 wrote it at used_idx + i, which agrees whenever
        each buffer is one descriptor or ``count`` is 1, as with ``push``).
        """
        staged = [self._used_elems.pop(i, None) for i in range(count)]
        if self.disabled:
            # QEMU virtqueue_flush on a broken device: nothing is written (fills were
            # dropped), and the count drops by the elements, not their descriptors
            self.inuse -= count
            return
        if any(s is None for s in staged):
            raise UvirtError(f"virtqueue {self.index}: flushing {count} elements, "
                             f"not all of them filled")
        ndescs = sum(s[2] for s in staged)  # type: ignore[index]
        if ndescs > self.inuse:
            raise UvirtError(f"virtqueue {self.index}: flushing {ndescs} descriptors with "
                             f"{self.inuse} in flight")
        if not self.desc:
            return
        offsets = []
        off = 0
        for s in staged:
            offsets.append(off)
            off += s[2]  # type: ignore[index]
        tracing = self.events.tracing
        for i in list(range(1, count)) + [0]:
            buffer_id, length, _ = staged[i]  # type: ignore[misc]
            self._write_used_desc(offsets[i], buffer_id, length)
            if tracing:     # (§2.8.6 "Used descriptors": the slot is the descriptor ring's)
                self.events.ring("vq_fill", queue=self.index, slot=(self.used_idx + offsets[i]) % self.size,
                                 head=buffer_id, len=length)
        old = self.used_idx
        self.inuse -= ndescs
        self.used_idx += ndescs
        if self.used_idx >= self.size:
            self.used_idx -= self.size
            self.used_wrap_counter = not self.used_wrap_counter
            self.signalled_used_valid = False
        if tracing:
            self.events.ring("vq_flush", queue=self.index, old=old, new=self.used_idx)

    def _write_used_desc(self, offset: int, buffer_id: int, length: int) -> None:
        """QEMU ``virtqueue_packed_fill_desc``: id and len, then AVAIL = USED = wrap."""
        slot = self.used_idx + offset
        wrap = self.used_wrap_counter
        if slot >= self.size:
            slot -= self.size
            wrap = not wrap
        flags = (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED) if wrap else 0
        base = self.desc + DESC_SIZE * slot
        self._st(base + DESC_LEN, struct.pack("<IH", length, buffer_id & _U16))
        self._st(base + DESC_FLAGS, flags.to_bytes(2, "little"))

    # -- notifications

    def should_notify(self) -> bool:
        """QEMU ``virtio_packed_should_notify``: the driver's event suppression flags
        decide (DISABLE never, ENABLE always); DESC mode uses the event offset, with
        the first notification unconditional."""
        if not self._mapped:
            return False
        w, area = self._win, self.avail
        if (w is not None and w.lo <= area and area + EVENT_AREA_SIZE <= w.hi and not w.space._dirty
                and w.space.generation == w.gen):
            off_wrap, flags = _EVENT.unpack_from(w.view, area - w.delta)    # driver_event()
        else:
            off_wrap, flags = self.driver_event()
        old = self.signalled_used
        new = self.signalled_used = self.used_idx
        valid = self.signalled_used_valid
        self.signalled_used_valid = True
        if flags == VRING_PACKED_EVENT_FLAG_DISABLE:
            return False
        if flags == VRING_PACKED_EVENT_FLAG_ENABLE:
            return True
        return not valid or packed_need_event(self.size, self.used_wrap_counter, off_wrap,
                                              new, old)

    def set_notification(self, enable: bool) -> None:
        """QEMU ``virtio_queue_packed_set_notification``: device event flags DISABLE,
        ENABLE, or (EVENT_IDX) DESC at the shadow index and wrap counter."""
        self.notification = bool(enable)
        if not self.desc or not self._mapped:
            return
        if not enable:
            flags = VRING_PACKED_EVENT_FLAG_DISABLE
        elif self.event_idx:
            off_wrap = self.shadow_avail_idx | (int(self.shadow_avail_wrap_counter)
                                                << VRING_PACKED_EVENT_F_WRAP_CTR)
            self._st(self.used + EVENT_OFF_WRAP, off_wrap.to_bytes(2, "little"))
            flags = VRING_PACKED_EVENT_FLAG_DESC
        else:
            flags = VRING_PACKED_EVENT_FLAG_ENABLE
        self._st(self.used + EVENT_FLAGS, flags.to_bytes(2, "little"))

    def __repr__(self) -> str:
        return (f"PackedQueue(index={self.index}, size={self.size}, desc=0x{self.desc:x}, "
                f"driver=0x{self.avail:x}, device=0x{self.used:x}, "
                f"last_avail={self.last_avail_idx}/{int(self.last_avail_wrap_counter)}, "
                f"used_idx={self.used_idx}/{int(self.used_wrap_counter)}, inuse={self.inuse})")
