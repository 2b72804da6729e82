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
from typing import TYPE_CHECKING, Iterator

from uvirt.errors import GuestMemoryError, UvirtError
from uvirt.virtio.queue import (DESC_SIZE, ChainWalker, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
                    Element, PopResult,
                    QueueBroken, VirtqueueBase, _ChainError, indirect_table, vring_need_event)

if TYPE_CHECKING:  # pragma: no cover
    from uvirt.board.memory.guest import GuestMemory

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
_PDESC = struct.Struct("<QIHH")


class PackedDescriptor:
    """One packed-ring descriptor (``struct vring_packed_desc``)."""

    __slots__ = ("addr", "len", "id", "flags")

    def __init__(self, addr: int, len: int, id: int, flags: int) -> None:
        self.addr = addr
        self.len = len
        self.id = id
        self.flags = flags

    @classmethod
    def unpack(cls, data: bytes) -> "PackedDescriptor":
        return cls(*_PDESC.unpack(data))

    def pack(self) -> bytes:
        return _PDESC.pack(self.addr, self.len, self.id, self.flags)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PackedDescriptor)
                and (self.addr, self.len, self.id, self.flags)
                == (other.addr, other.len, other.id, other.flags))

    def __repr__(self) -> str:
        return (f"PackedDescriptor(addr=0x{self.addr:x}, len=0x{self.len:x}, id={self.id}, "
                f"flags=0x{self.flags:04x})")


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


class PackedChain(ChainWalker):
    """The descriptors of one packed chain starting at ring slot ``start``
    (QEMU ``virtqueue_packed_pop`` / ``virtqueue_packed_read_next_desc``).

    Same interface as ``DescriptorChain``: iterate, then look at ``error``,
    ``warnings``, ``indirect``, ``buffer_id``.  Direct chains follow NEXT through
    consecutive slots, wrapping at N, for at most N descriptors; an indirect table is
    walked entry by entry to its end.
    """

    desc_type = PackedDescriptor

    def __init__(self, mem: "GuestMemory", ring: int, size: int, start: int, *,
                 strict: bool = False) -> None:
        super().__init__(mem, strict=strict)
        self.ring = ring
        self.size = size
        self.start = start
        self.buffer_id = 0

    def _walk(self) -> Iterator[PackedDescriptor]:
        table, limit, i = self.ring, self.size, self.start
        desc = self._read(table, i)
        self.buffer_id = desc.id
        if desc.flags & VRING_DESC_F_INDIRECT:
            table, limit = self._enter_indirect(desc)
            i = 0
            desc = self._read(table, 0)
        count = 0
        while True:
            if desc.flags & VRING_DESC_F_INDIRECT:
                if self.indirect:
                    self._violation("nested_indirect", "Nested indirect descriptor",
                                    addr=desc.addr)
                else:
                    self._violation("indirect_not_head", "Indirect descriptor inside a chain",
                                    addr=desc.addr)
            yield desc
            count += 1
            if count > limit:
                raise _ChainError("loop", "Looped descriptor", count=count)
            if not self.indirect and not desc.flags & VRING_DESC_F_NEXT:
                return
            i += 1
            if i == limit:
                if self.indirect:
                    return
                i = 0
            desc = self._read(table, i)


class PackedQueue(VirtqueueBase):
    """Device-side state of one packed virtqueue.

    Configure with ``set_size`` and ``set_rings(desc, driver_area, device_area)``
    (packed rings need VERSION_1, so there is no legacy PFN form); serve exactly as a
    ``SplitQueue``.
    """

    packed = True

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
        consumed unless an element is returned."""
        if self.is_empty():
            return None
        if self.inuse >= self.size:
            return self._break("size_exceeded", "Virtqueue size exceeded", inuse=self.inuse)
        if self._desc_len < self._desc_area_size():
            return self._break("desc_ring_unmappable", "Cannot map descriptor ring")
        chain = PackedChain(self.mem, self.desc, self.size, self.last_avail_idx,
                            strict=self.strict)
        result = self._collect(chain, self.last_avail_idx)
        if isinstance(result, QueueBroken):
            return result
        elem = Element(chain.buffer_id, result.readable, result.writable, result.ndescs,
                       result.bounce)
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
        (shadow index and wrap counter) when it reaches the end of what is available."""
        if not self.desc or not self._mapped:
            return (0, 0)
        if self._desc_len < self._desc_area_size():
            return self._break("desc_ring_unmappable", "Cannot map descriptor ring")
        idx, wrap = self.last_avail_idx, self.last_avail_wrap_counter
        total_bufs = in_total = out_total = 0
        limit = self.size
        while True:
            num_bufs = total_bufs
            try:
                desc = self._read_ring(idx)
                if not is_desc_avail(desc.flags, wrap):
                    break
                table, i, indirect = self.desc, idx, bool(desc.flags & VRING_DESC_F_INDIRECT)
                if indirect:
                    (table, limit), i = indirect_table(self.mem, desc, num_bufs, limit), 0
                    num_bufs = 0
                    desc = self._read_table(table, 0)
                while True:
                    num_bufs += 1
                    if num_bufs > limit:
                        raise _ChainError("loop", "Looped descriptor")
                    if desc.flags & VRING_DESC_F_WRITE:
                        in_total = (in_total + desc.len) & _U32
                    else:
                        out_total = (out_total + desc.len) & _U32
                    if in_total >= max_in and out_total >= max_out:
                        return (in_total, out_total)
                    if not indirect and not desc.flags & VRING_DESC_F_NEXT:
                        break
                    i += 1
                    if i == limit:
                        if indirect:
                            break
                        i -= self.size
                    desc = self._read_table(table, i) if indirect else self._read_ring(i)
            except _ChainError as e:
                return self._break(e.kind, e.reason, **e.fields)
            if indirect:
                total_bufs += 1
                idx += 1
            else:
                idx += num_bufs - total_bufs
                total_bufs = num_bufs
            while idx >= self.size:
                idx -= self.size
                wrap = not wrap
        self.shadow_avail_idx = idx
        self.shadow_avail_wrap_counter = wrap
        return (in_total, out_total)

    def _read_ring(self, i: int) -> PackedDescriptor:
        if not 0 <= i < self.size:
            # Only reachable through QEMU's carried-over limit, where QEMU reads past
            # its descriptor cache.
            raise _ChainError("desc_ring_unmappable", "Cannot map descriptor ring", index=i)
        return self._read_table(self.desc, i)

    def _read_table(self, table: int, i: int) -> PackedDescriptor:
        try:
            return PackedDescriptor.unpack(self.mem.read(table + DESC_SIZE * i, DESC_SIZE))
        except GuestMemoryError as e:
            raise _ChainError("desc_ring_unmappable", "Cannot map descriptor ring",
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

        QEMU 7.2 writes the i-th used descriptor at slot used_idx + i; the driver
        expects it after the slots of the previous buffers (used_idx + their ndescs).
        The two agree whenever each buffer is one descriptor or ``count`` is 1 (``push``);
        uvirt uses the driver's arithmetic.
        """
        staged = [self._used_elems.pop(i, None) for i in range(count)]
        if any(s is None for s in staged):
            raise UvirtError(f"virtqueue {self.index}: flushing {count} elements, "
                             f"not all of them filled")
        ndescs = sum(s[2] for s in staged)  # type: ignore[index]
        if ndescs > self.inuse:
            raise UvirtError(f"virtqueue {self.index}: flushing {ndescs} descriptors with "
                             f"{self.inuse} in flight")
        if self.disabled:
            self.inuse -= ndescs
            return
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
