"""Driver-side virtqueue builders: put split and packed rings in a ``GuestMemory`` the way
a guest driver would, so device code can be driven without a CPU (rust-vmm ``mock.rs``,
Firecracker ``VirtioTestHelper``).

    mem = guest_ram(1 << 20)
    drv = MockSplitQueue(mem, 0x10000, 8, layout="legacy")
    q = SplitQueue(mem, 8); drv.configure(q)
    chain = drv.add_chain([(16, False), (64, True)], data=b"request.........")
    elem = q.pop(); assert elem.readable == chain.readable
    q.push(elem, 64); assert drv.used_entries() == [UsedEntry(chain.head, 64)]

Buffers are placed in a data area after the rings with small random gaps between them
(seeded, so runs repeat), so a device cannot get away with reading one contiguous
block.  Raw writers (``write_desc``, ``write_table``, ``set_avail_idx``...) build the
malformed rings tests and fuzzers need.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

from uvirt.virtio.packed import (DESC_FLAGS, DESC_ID, DESC_LEN, EVENT_FLAGS, EVENT_OFF_WRAP,
                             VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED,
                             PackedDescriptor)
from uvirt.virtio.queue import (AVAIL_FLAGS, AVAIL_IDX, AVAIL_RING, DESC_SIZE, USED_ELEM_SIZE,
                            USED_FLAGS, USED_IDX, USED_RING, VRING_DESC_F_INDIRECT,
                            VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, Descriptor, legacy_layout)

if TYPE_CHECKING:  # pragma: no cover
    from uvirt.board.memory.guest import GuestMemory
    from uvirt.virtio.queue import QueueBroken, VirtqueueBase

#: A buffer request: ``(length, device_writable)``, or just a length (device-readable).
BufferSpec = tuple[int, bool] | int

PAGE = 0x1000


def guest_ram(size: int = 1 << 20, base: int = 0) -> "GuestMemory":
    """A CPU-less guest memory with one RAM region (for unit tests and fuzzers)."""
    from uvirt.board.memory.regions import MemoryMap, RamRegion
    mm = MemoryMap()
    mm.add(RamRegion("ram", size), base)
    return mm.guest


def avail_bytes_model(offered: Iterable[Sequence[tuple[int, bool]]], max_in: int,
                      max_out: int) -> tuple[tuple[int, int], bool]:
    """What ``virtqueue_get_avail_bytes`` answers for well-formed chains offered in this
    order (each a list of ``(length, device_writable)``): ``((writable, readable), True)``
    as soon as both maxima are reached, else the totals of every chain and False."""
    tin = tout = 0
    for bufs in offered:
        for n, writable in bufs:
            if writable:
                tin += n
            else:
                tout += n
            if tin >= max_in and tout >= max_out:
                return (tin, tout), True
    return (tin, tout), False


def _align(v: int, a: int) -> int:
    return (v + a - 1) & ~(a - 1)


@dataclass(frozen=True, slots=True)
class MockBuffer:
    addr: int
    len: int
    writable: bool


@dataclass(frozen=True, slots=True)
class MockChain:
    """What the driver offered: ``head`` is the head descriptor index (split) or the
    buffer id (packed), i.e. what the device pushes back."""

    head: int
    buffers: tuple[MockBuffer, ...]
    descs: tuple[int, ...] = ()          # ring descriptor indices / slots used
    table: int | None = None             # indirect table address

    @property
    def readable(self) -> tuple[tuple[int, int], ...]:
        return tuple((b.addr, b.len) for b in self.buffers if not b.writable)

    @property
    def writable(self) -> tuple[tuple[int, int], ...]:
        return tuple((b.addr, b.len) for b in self.buffers if b.writable)


@dataclass(frozen=True, slots=True)
class UsedEntry:
    id: int
    len: int


def _spec(s: BufferSpec) -> tuple[int, bool]:
    if isinstance(s, int):
        return s, False
    return int(s[0]), bool(s[1])


class _BufferArea:
    """Bump allocator for driver buffers with random gaps (Firecracker's test helper
    leaves gaps "to make sure we don't blindly read contiguous memory")."""

    def __init__(self, mem: "GuestMemory", start: int, end: int, rng: random.Random,
                 max_gap: int) -> None:
        self.mem = mem
        self.start = start
        self.end = end
        self.next = start
        self.rng = rng
        self.max_gap = max_gap

    def alloc(self, size: int, align: int = 1) -> int:
        gap = self.rng.randrange(0, self.max_gap + 1) if self.max_gap else 0
        addr = _align(self.next + gap, align)
        if addr + size > self.end:
            raise ValueError(f"mock driver: buffer area 0x{self.start:x}..0x{self.end:x} "
                             f"cannot hold 0x{size:x} more bytes")
        self.next = addr + size
        return addr

    def reset(self) -> None:
        self.next = self.start


class _MockBase:
    def __init__(self, mem: "GuestMemory", size: int, *, seed: int, max_gap: int,
                 data_base: int, data_size: int) -> None:
        self.mem = mem
        self.size = size
        self.rng = random.Random(seed)
        self.data = _BufferArea(mem, data_base, data_base + data_size, self.rng, max_gap)

    def alloc(self, size: int, align: int = 1) -> int:
        """Driver memory for a buffer or table (in the data area, after a random gap)."""
        return self.data.alloc(size, align)

    def _buffers(self, specs: Sequence[BufferSpec], data: bytes | None) -> list[MockBuffer]:
        bufs = []
        for s in specs:
            n, w = _spec(s)
            bufs.append(MockBuffer(self.alloc(max(n, 1)), n, w))
        if data is not None:
            self._fill(bufs, data)
        return bufs

    def _fill(self, bufs: Iterable[MockBuffer], data: bytes) -> None:
        pos = 0
        for b in bufs:
            if b.writable or pos >= len(data):
                continue
            chunk = data[pos:pos + b.len]
            self.mem.write(b.addr, chunk)
            pos += len(chunk)

    def read_written(self, chain: MockChain, length: int) -> bytes:
        """The first ``length`` bytes the device wrote into ``chain``'s writable buffers."""
        out = bytearray()
        for b in chain.buffers:
            if b.writable and len(out) < length:
                out += self.mem.read(b.addr, min(b.len, length - len(out)))
        return bytes(out)


# --------------------------------------------------------------------------- split


class MockSplitQueue(_MockBase):
    """A split ring as a driver builds it.

    ``layout="legacy"``: one block at ``base`` (page aligned), QUEUE_PFN = base >> 12,
    used ring where QEMU computes it.  ``layout="modern"``: three separate areas with
    gaps between them, so a device that derives one from another is caught.
    """

    def __init__(self, mem: "GuestMemory", base: int, size: int, layout: str = "legacy", *,
                 seed: int = 0, max_gap: int = 64, data_size: int = 0x10000) -> None:
        if layout == "legacy":
            if base % PAGE:
                raise ValueError(f"legacy ring base 0x{base:x} is not page aligned")
            lay = legacy_layout(base >> 12, size)
            self.desc_addr, self.avail_addr, self.used_addr = lay.desc, lay.avail, lay.used
        elif layout == "modern":
            self.desc_addr = _align(base, 16)
            self.avail_addr = _align(self.desc_addr + DESC_SIZE * size + 0x22, 2)
            self.used_addr = _align(self.avail_addr + AVAIL_RING + 2 * size + 2 + 0x36, 4)
        else:
            raise ValueError(f"layout must be 'legacy' or 'modern', not {layout!r}")
        self.layout = layout
        ring_end = self.used_addr + USED_RING + USED_ELEM_SIZE * size + 2
        super().__init__(mem, size, seed=seed, max_gap=max_gap,
                         data_base=_align(ring_end, PAGE), data_size=data_size)
        mem.write(self.desc_addr, bytes(DESC_SIZE * size))
        mem.write(self.avail_addr, bytes(AVAIL_RING + 2 * size + 2))
        mem.write(self.used_addr, bytes(USED_RING + USED_ELEM_SIZE * size + 2))
        self.free = list(range(size))
        self.chains: dict[int, tuple[int, ...]] = {}
        self.avail_idx = 0
        self.last_used_idx = 0

    @property
    def pfn(self) -> int:
        return self.desc_addr >> 12

    def configure(self, queue: "VirtqueueBase") -> "QueueBroken | None":
        """Point a device queue at this ring as the transport would."""
        if self.layout == "legacy":
            return queue.set_legacy_pfn(self.pfn)  # type: ignore[attr-defined]
        queue.set_size(self.size)
        return queue.set_rings(self.desc_addr, self.avail_addr, self.used_addr)

    # -- well-formed chains

    def _take(self, n: int) -> list[int]:
        if n > len(self.free):
            raise ValueError(f"mock driver: {n} descriptors wanted, {len(self.free)} free")
        taken, self.free = self.free[:n], self.free[n:]
        return taken

    def add_chain(self, specs: Sequence[BufferSpec], *, data: bytes | None = None,
                  publish: bool = True) -> MockChain:
        """Buffers of ``(length, writable)`` chained with NEXT; ``data`` fills the
        readable ones.  Published (avail ring + avail.idx) unless ``publish=False``."""
        if not specs:
            raise ValueError("mock driver: a chain needs at least one buffer")
        bufs = self._buffers(specs, data)
        idxs = self._take(len(bufs))
        for k, (i, b) in enumerate(zip(idxs, bufs)):
            last = k == len(bufs) - 1
            flags = (VRING_DESC_F_WRITE if b.writable else 0) | (0 if last else VRING_DESC_F_NEXT)
            self.write_desc(i, b.addr, b.len, flags, 0 if last else idxs[k + 1])
        self.chains[idxs[0]] = tuple(idxs)
        if publish:
            self.publish(idxs[0])
        return MockChain(idxs[0], tuple(bufs), tuple(idxs))

    def add_indirect_chain(self, specs: Sequence[BufferSpec], *, data: bytes | None = None,
                           publish: bool = True, extra_flags: int = 0) -> MockChain:
        """One ring descriptor pointing at an indirect table holding the chain."""
        bufs = self._buffers(specs, data)
        table = self.alloc(DESC_SIZE * len(bufs), 16)
        self.write_table(table, [
            Descriptor(b.addr, b.len,
                       (VRING_DESC_F_WRITE if b.writable else 0)
                       | (VRING_DESC_F_NEXT if k < len(bufs) - 1 else 0),
                       k + 1 if k < len(bufs) - 1 else 0)
            for k, b in enumerate(bufs)])
        (head,) = self._take(1)
        self.write_desc(head, table, DESC_SIZE * len(bufs), VRING_DESC_F_INDIRECT | extra_flags, 0)
        self.chains[head] = (head,)
        if publish:
            self.publish(head)
        return MockChain(head, tuple(bufs), (head,), table)

    # -- raw access for malformed rings

    def write_desc(self, index: int, addr: int, length: int, flags: int = 0, next: int = 0) -> None:
        self.mem.write(self.desc_addr + DESC_SIZE * index, Descriptor(addr, length, flags, next).pack())

    def read_desc(self, index: int) -> Descriptor:
        return Descriptor.unpack(self.mem.read(self.desc_addr + DESC_SIZE * index, DESC_SIZE))

    def write_table(self, addr: int, descs: Iterable[Descriptor | tuple[int, int, int, int]]) -> None:
        """An indirect table at ``addr`` from ``Descriptor``s or (addr, len, flags, next)."""
        raw = b"".join((d if isinstance(d, Descriptor) else Descriptor(*d)).pack() for d in descs)
        self.mem.write(addr, raw)

    def publish(self, head: int) -> None:
        """avail.ring[avail_idx % N] = head, then avail.idx += 1."""
        self.set_avail_ring(self.avail_idx % self.size, head)
        self.set_avail_idx(self.avail_idx + 1)

    def set_avail_ring(self, slot: int, head: int) -> None:
        self.mem.write_u16(self.avail_addr + AVAIL_RING + 2 * slot, head)

    def set_avail_idx(self, value: int) -> None:
        self.avail_idx = value & 0xFFFF
        self.mem.write_u16(self.avail_addr + AVAIL_IDX, self.avail_idx)

    @property
    def avail_flags(self) -> int:
        return self.mem.read_u16(self.avail_addr + AVAIL_FLAGS)

    @avail_flags.setter
    def avail_flags(self, value: int) -> None:
        self.mem.write_u16(self.avail_addr + AVAIL_FLAGS, value)

    @property
    def used_event(self) -> int:
        return self.mem.read_u16(self.avail_addr + AVAIL_RING + 2 * self.size)

    @used_event.setter
    def used_event(self, value: int) -> None:
        self.mem.write_u16(self.avail_addr + AVAIL_RING + 2 * self.size, value)

    # -- what the device wrote

    @property
    def used_idx(self) -> int:
        return self.mem.read_u16(self.used_addr + USED_IDX)

    @property
    def used_flags(self) -> int:
        return self.mem.read_u16(self.used_addr + USED_FLAGS)

    @property
    def avail_event(self) -> int:
        return self.mem.read_u16(self.used_addr + USED_RING + USED_ELEM_SIZE * self.size)

    def used_entry(self, slot: int) -> UsedEntry:
        base = self.used_addr + USED_RING + USED_ELEM_SIZE * slot
        return UsedEntry(self.mem.read_u32(base), self.mem.read_u32(base + 4))

    def used_entries(self) -> list[UsedEntry]:
        """Entries published since the last call (as a driver's get_buf loop); their
        descriptors go back to the free list."""
        out = []
        end = self.used_idx
        while self.last_used_idx != end:
            e = self.used_entry(self.last_used_idx % self.size)
            out.append(e)
            self.free.extend(self.chains.pop(e.id, ()))
            self.last_used_idx = (self.last_used_idx + 1) & 0xFFFF
        return out


# --------------------------------------------------------------------------- packed


class MockPackedQueue(_MockBase):
    """A packed ring as a driver builds it: descriptor ring at ``base``, driver and
    device event suppression areas after it (with gaps), wrap counters starting at 1.
    Every descriptor of a chain carries the buffer id (as Linux does), and the head's
    flags are written last."""

    def __init__(self, mem: "GuestMemory", base: int, size: int, *, seed: int = 0,
                 max_gap: int = 64, data_size: int = 0x10000) -> None:
        self.desc_addr = _align(base, 16)
        self.driver_addr = _align(self.desc_addr + DESC_SIZE * size + 0x24, 4)
        self.device_addr = _align(self.driver_addr + 4 + 0x38, 4)
        super().__init__(mem, size, seed=seed, max_gap=max_gap,
                         data_base=_align(self.device_addr + 4, PAGE), data_size=data_size)
        mem.write(self.desc_addr, bytes(DESC_SIZE * size))
        mem.write(self.driver_addr, bytes(4))
        mem.write(self.device_addr, bytes(4))
        self.next_avail = 0
        self.avail_wrap = True
        self.next_used = 0
        self.used_wrap = True
        self.free_ids = list(range(size))
        self.ndescs: dict[int, int] = {}
        self.in_flight = 0

    def configure(self, queue: "VirtqueueBase") -> "QueueBroken | None":
        queue.set_size(self.size)
        return queue.set_rings(self.desc_addr, self.driver_addr, self.device_addr)

    def avail_bits(self, wrap: bool | None = None) -> int:
        """AVAIL/USED bits that make a descriptor available in lap ``wrap``."""
        wrap = self.avail_wrap if wrap is None else wrap
        return VRING_PACKED_DESC_F_AVAIL if wrap else VRING_PACKED_DESC_F_USED

    def _slots(self, n: int) -> list[tuple[int, bool]]:
        if n > self.size - self.in_flight:
            raise ValueError(f"mock driver: {n} descriptors wanted, "
                             f"{self.size - self.in_flight} free")
        out = []
        for _ in range(n):
            out.append((self.next_avail, self.avail_wrap))
            self.next_avail += 1
            if self.next_avail == self.size:
                self.next_avail = 0
                self.avail_wrap = not self.avail_wrap
        return out

    def _publish(self, descs: list[tuple[int, bool, PackedDescriptor]]) -> None:
        for slot, _, d in descs[1:]:
            self.write_desc(slot, d.addr, d.len, d.id, d.flags)
        slot, _, d = descs[0]
        self.write_desc(slot, d.addr, d.len, d.id, 0)
        self.mem.write_u16(self.desc_addr + DESC_SIZE * slot + DESC_FLAGS, d.flags)

    def _take_id(self, buffer_id: int | None) -> int:
        if buffer_id is None:
            return self.free_ids.pop(0)
        if buffer_id in self.free_ids:
            self.free_ids.remove(buffer_id)
        return buffer_id

    def add_chain(self, specs: Sequence[BufferSpec], *, data: bytes | None = None,
                  buffer_id: int | None = None) -> MockChain:
        """Buffers in consecutive slots linked by NEXT, made available at once."""
        if not specs:
            raise ValueError("mock driver: a chain needs at least one buffer")
        bufs = self._buffers(specs, data)
        slots = self._slots(len(bufs))
        bid = self._take_id(buffer_id)
        descs = []
        for k, ((slot, wrap), b) in enumerate(zip(slots, bufs)):
            flags = (self.avail_bits(wrap) | (VRING_DESC_F_WRITE if b.writable else 0)
                     | (VRING_DESC_F_NEXT if k < len(bufs) - 1 else 0))
            descs.append((slot, wrap, PackedDescriptor(b.addr, b.len, bid, flags)))
        self._publish(descs)
        self.ndescs[bid] = len(bufs)
        self.in_flight += len(bufs)
        return MockChain(bid, tuple(bufs), tuple(s for s, _ in slots))

    def add_indirect_chain(self, specs: Sequence[BufferSpec], *, data: bytes | None = None,
                           buffer_id: int | None = None, extra_flags: int = 0) -> MockChain:
        """One ring slot pointing at an indirect table (entries need no NEXT)."""
        bufs = self._buffers(specs, data)
        table = self.alloc(DESC_SIZE * len(bufs), 16)
        self.write_table(table, [PackedDescriptor(b.addr, b.len, 0,
                                                  VRING_DESC_F_WRITE if b.writable else 0)
                                 for b in bufs])
        (slot, wrap), = self._slots(1)
        bid = self._take_id(buffer_id)
        flags = self.avail_bits(wrap) | VRING_DESC_F_INDIRECT | extra_flags
        self._publish([(slot, wrap, PackedDescriptor(table, DESC_SIZE * len(bufs), bid, flags))])
        self.ndescs[bid] = 1
        self.in_flight += 1
        return MockChain(bid, tuple(bufs), (slot,), table)

    # -- raw access

    def write_desc(self, slot: int, addr: int, length: int, id: int = 0, flags: int = 0) -> None:
        self.mem.write(self.desc_addr + DESC_SIZE * slot, PackedDescriptor(addr, length, id, flags).pack())

    def read_desc(self, slot: int) -> PackedDescriptor:
        return PackedDescriptor.unpack(self.mem.read(self.desc_addr + DESC_SIZE * slot, DESC_SIZE))

    def write_table(self, addr: int, descs: Iterable[PackedDescriptor | tuple[int, int, int, int]]) -> None:
        """An indirect table from ``PackedDescriptor``s or (addr, len, id, flags)."""
        raw = b"".join((d if isinstance(d, PackedDescriptor) else PackedDescriptor(*d)).pack()
                       for d in descs)
        self.mem.write(addr, raw)

    def set_driver_event(self, flags: int, off_wrap: int = 0) -> None:
        self.mem.write_u16(self.driver_addr + EVENT_OFF_WRAP, off_wrap)
        self.mem.write_u16(self.driver_addr + EVENT_FLAGS, flags)

    def device_event(self) -> tuple[int, int]:
        """The device's event suppression structure as ``(off_wrap, flags)``."""
        return (self.mem.read_u16(self.device_addr + EVENT_OFF_WRAP),
                self.mem.read_u16(self.device_addr + EVENT_FLAGS))

    def used_entries(self) -> list[UsedEntry]:
        """Used descriptors written since the last call (Linux ``virtqueue_get_buf``:
        used means AVAIL == USED == the driver's used wrap counter); skips each buffer's
        descriptor count."""
        out = []
        while True:
            base = self.desc_addr + DESC_SIZE * self.next_used
            flags = self.mem.read_u16(base + DESC_FLAGS)
            avail = bool(flags & VRING_PACKED_DESC_F_AVAIL)
            used = bool(flags & VRING_PACKED_DESC_F_USED)
            if avail != used or used != self.used_wrap:
                return out
            e = UsedEntry(self.mem.read_u16(base + DESC_ID), self.mem.read_u32(base + DESC_LEN))
            out.append(e)
            n = self.ndescs.pop(e.id, 1)
            self.in_flight -= n
            if e.id not in self.free_ids:
                self.free_ids.append(e.id)
            self.next_used += n
            if self.next_used >= self.size:
                self.next_used -= self.size
                self.used_wrap = not self.used_wrap
