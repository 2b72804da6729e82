"""Descriptor chains, as split and packed rings share them (virtio 1.2 §2.7.5, §2.8.1; QEMU
hw/virtio/virtio.c ``virtqueue_split_pop`` / ``virtqueue_packed_pop`` collect loops).  Pure:
no ring indices, no PCI, no CPU; a chain is read from ``GuestMemory`` and nothing else.

Descriptor layouts (16 bytes each; a ring format's table and an indirect table alike)::

    split   struct vring_desc         le64 addr, le32 len, le16 flags, le16 next
    packed  struct vring_packed_desc  le64 addr, le32 len, le16 id,    le16 flags

    flags   NEXT 0x1 (chain continues)  WRITE 0x2 (device-writable)  INDIRECT 0x4 (addr/len
            name a table of descriptors); packed rings add AVAIL 0x80 and USED 0x8000

What is here:

``DescriptorChain``, ``PackedChain``
    Walk one chain, yielding each descriptor as it is reached, following an indirect table
    when the first descriptor names one (``indirect_table``: QEMU's checks, in its order).
    A walk always ends: more descriptors than the table has entries is a loop.  A walk ends
    with ``error`` set to ``(kind, reason, fields)`` (QEMU's ``virtio_error`` text) or None;
    ``warnings`` lists spec violations QEMU tolerates (fatal with ``strict=True``).
``map_chain``
    Map every descriptor of a walk into scatter-gather pieces (QEMU ``virtqueue_map_desc``:
    readable pieces before writable ones, RAM directly, anything else through the one
    bounce buffer) -> ``MappedChain``.
``Element``, ``QueueBroken``
    What a queue's ``pop`` returns: a buffer to serve, or the guest error that broke the
    queue.

Guest mistakes end a walk or a mapping with ``ChainError`` (kind, QEMU's reason, fields);
a queue turns it into a ``QueueBroken``.  Nothing here raises into the host.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Iterator

from uvirt.errors import GuestMemoryError

if TYPE_CHECKING:  # pragma: no cover
    from uvirt.board.memory.guest import GuestMemory

#: Descriptor flags (virtio 1.2 §2.7.5; Linux ``VRING_DESC_F_*``); the same bits in packed
#: descriptors (§2.8.1).
VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4

DESC_SIZE = 16                      # sizeof(struct vring_desc) == sizeof(struct vring_packed_desc)
#: QEMU ``VIRTQUEUE_MAX_SIZE``: the largest queue size and the most scatter-gather
#: pieces one element may have.
VIRTQUEUE_MAX_SIZE = 1024

_DESC = struct.Struct("<QIHH")
_PDESC = struct.Struct("<QIHH")

# --------------------------------------------------------------------------- wire structures


@dataclass(frozen=True, slots=True)
class Descriptor:
    """One split-ring descriptor (``struct vring_desc``)."""

    addr: int
    len: int
    flags: int
    next: int

    @classmethod
    def unpack(cls, data: bytes) -> "Descriptor":
        return cls(*_DESC.unpack(data))

    def pack(self) -> bytes:
        return _DESC.pack(self.addr, self.len, self.flags, self.next)

    @property
    def has_next(self) -> bool:
        return bool(self.flags & VRING_DESC_F_NEXT)

    @property
    def is_write_only(self) -> bool:
        return bool(self.flags & VRING_DESC_F_WRITE)

    @property
    def is_indirect(self) -> bool:
        return bool(self.flags & VRING_DESC_F_INDIRECT)


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


# --------------------------------------------------------------------------- pop results


@dataclass(frozen=True, slots=True)
class Element:
    """One popped buffer (QEMU ``VirtQueueElement``).

    ``head`` is what goes back in the used ring: the head descriptor index (split) or
    the buffer id (packed).  ``readable`` are the device-readable ``(addr, len)`` pieces
    (QEMU ``out_sg``), ``writable`` the device-writable ones (``in_sg``), in chain order,
    as mapped: a descriptor that runs from RAM into something else is two pieces.
    ``ndescs`` is how many ring slots the element used (packed; 1 for split).
    ``bounce`` is the piece that is not RAM, if any (at most one: QEMU's single bounce
    buffer): ``(kind, index, Mapping)`` with kind "r" or "w".  Reads of it see what was
    read at pop; writes to it reach guest memory when the element is pushed.
    """

    head: int
    readable: tuple[tuple[int, int], ...]
    writable: tuple[tuple[int, int], ...]
    ndescs: int = 1
    bounce: Any = field(default=None, compare=False)
    broken: ClassVar[bool] = False

    @property
    def readable_len(self) -> int:
        return sum(n for _, n in self.readable)

    @property
    def writable_len(self) -> int:
        return sum(n for _, n in self.writable)

    def read(self, mem: "GuestMemory", limit: int | None = None) -> bytes:
        """Gather the readable buffers (at most ``limit`` bytes), like ``iov_to_buf``."""
        total = self.readable_len if limit is None else min(limit, self.readable_len)
        return self.read_at(mem, 0, total)

    def read_at(self, mem: "GuestMemory", offset: int, size: int) -> bytes:
        """``size`` readable bytes from ``offset`` (fewer at the end of the buffers)."""
        out = bytearray()
        bounce = self.bounce if self.bounce is not None and self.bounce[0] == "r" else None
        pos = 0
        for i, (addr, n) in enumerate(self.readable):
            if len(out) >= size:
                break
            if offset < pos + n:
                start = max(offset - pos, 0)
                k = min(n - start, size - len(out))
                if bounce is not None and bounce[1] == i:
                    out += bounce[2].buffer[start:start + k]
                else:
                    out += mem.read(addr + start, k)
            pos += n
        return bytes(out)

    def write(self, mem: "GuestMemory", data: bytes) -> int:
        """Scatter ``data`` into the writable buffers, like ``iov_from_buf``; returns the
        bytes written (less than ``len(data)`` when the buffers are smaller).  That count
        is what a device normally pushes as the used length."""
        return self.write_at(mem, 0, data)

    def write_at(self, mem: "GuestMemory", offset: int, data: bytes) -> int:
        """``iov_from_buf`` at ``offset`` into the writable buffers -> bytes written."""
        bounce = self.bounce if self.bounce is not None and self.bounce[0] == "w" else None
        done = 0
        pos = 0
        view = memoryview(data)
        for i, (addr, n) in enumerate(self.writable):
            if done >= len(data):
                break
            if offset + done < pos + n:
                start = offset + done - pos
                k = min(n - start, len(data) - done)
                chunk = view[done:done + k]
                if bounce is not None and bounce[1] == i:
                    bounce[2].buffer[start:start + k] = chunk
                else:
                    mem.write(addr + start, chunk)
                done += k
            pos += n
        return done

    def unmap(self, mem: "GuestMemory", length: int) -> None:
        """QEMU ``virtqueue_unmap_sg``: a bounced writable piece goes to memory, as far as
        the used ``length`` covers it; the bounce buffer is free again."""
        if self.bounce is None:
            return
        kind, index, m = self.bounce
        access = 0
        if kind == "w":
            before = sum(n for _, n in self.writable[:index])
            access = max(0, min(length - before, m.length)) if length > before else 0
        mem.unmap(m, access)


@dataclass(frozen=True, slots=True)
class QueueBroken:
    """A fatal guest error: the device must treat the queue as broken (QEMU
    ``virtio_error``: log, DEVICE_NEEDS_RESET with VERSION_1, ignore further kicks)."""

    kind: str
    reason: str
    fields: dict[str, Any] = field(default_factory=dict, compare=False)
    broken: ClassVar[bool] = True


PopResult = Element | QueueBroken | None


class ChainError(Exception):
    """Internal: ends a chain walk with a guest-error kind and QEMU's message."""

    def __init__(self, kind: str, reason: str, **fields: Any) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.fields = fields


# --------------------------------------------------------------------------- chains


def indirect_table(mem: "GuestMemory", desc, num_bufs: int | None = None,
                   limit: int = 0) -> tuple[int, int]:
    """QEMU's checks on entering an indirect table, in its order -> (address, entries):
    a length that is a positive multiple of a descriptor; for ``avail_bytes`` only, a
    descriptor budget not yet spent (``num_bufs < limit``, else a loop); a table in one
    memory region (``address_space_cache_init``)."""
    if not desc.len or desc.len % DESC_SIZE:
        raise ChainError("indirect_bad_size", "Invalid size for indirect buffer table",
                          len=desc.len)
    if num_bufs is not None and num_bufs >= limit:
        raise ChainError("loop", "Looped descriptor")
    if mem.cache_len(desc.addr, desc.len, False) < desc.len:
        raise ChainError("indirect_unmappable", "Cannot map indirect buffer",
                          addr=desc.addr, len=desc.len)
    return desc.addr, desc.len // DESC_SIZE


class ChainWalker:
    """What split and packed chain walks share: the error/warnings result, the guarded
    descriptor read, strict-mode violations and entering an indirect table."""

    desc_type: ClassVar[type] = Descriptor

    def __init__(self, mem: "GuestMemory", *, strict: bool = False) -> None:
        self.mem = mem
        self.strict = strict
        self.indirect = False
        self.error: tuple[str, str, dict[str, Any]] | None = None
        self.warnings: list[tuple[str, str, dict[str, Any]]] = []

    @property
    def end_reason(self) -> str | None:
        """The guest-error kind that ended the walk (``"loop"``, ``"next_oob"``...), or None."""
        return self.error[0] if self.error else None

    def __iter__(self):
        try:
            yield from self._walk()
        except ChainError as e:
            self.error = (e.kind, e.reason, e.fields)

    def _walk(self):  # pragma: no cover - interface
        raise NotImplementedError

    def _read(self, table: int, i: int):
        try:
            return self.desc_type.unpack(self.mem.read(table + DESC_SIZE * i, DESC_SIZE))
        except GuestMemoryError as e:
            raise ChainError("desc_ring_unmappable", "Cannot map descriptor ring",
                              addr=e.addr) from None

    def _enter_indirect(self, desc) -> tuple[int, int]:
        if desc.flags & VRING_DESC_F_NEXT:
            self._violation("indirect_with_next",
                            "Indirect descriptor with NEXT set", addr=desc.addr)
        table = indirect_table(self.mem, desc)
        self.indirect = True
        return table

    def _violation(self, kind: str, reason: str, **fields: Any) -> None:
        if self.strict:
            raise ChainError(kind, reason, **fields)
        self.warnings.append((kind, reason, fields))


class DescriptorChain(ChainWalker):
    """Iterates the descriptors of one split-ring chain (rust-vmm ``chain.rs`` shape,
    QEMU ``virtqueue_split_pop`` checks), yielding each ``Descriptor`` as it is reached.

    After iteration ``error`` is ``None`` when the chain ended normally, or a
    ``(kind, reason, fields)`` tuple; ``warnings`` lists the non-fatal spec violations
    seen (same shape).  Every walk ends: at most ``ttl`` descriptors per table.

    Checks, QEMU order: the head descriptor may point at an indirect table (length
    non-zero and a multiple of 16, in one memory region); after each descriptor, more than
    ``max`` descriptors is a loop; ``next >= max`` is out of range.  ``max`` is the queue
    size, or the number of entries of the indirect table.
    """

    def __init__(self, mem: "GuestMemory", table: int, size: int, head: int, *,
                 strict: bool = False, read_desc=None) -> None:
        super().__init__(mem, strict=strict)
        self.table = table
        self.size = size
        self.head = head
        if read_desc is not None:          # the queue's reader (its ring-area window)
            self._read = read_desc

    def _walk(self) -> Iterator[Descriptor]:
        table, ttl = self.table, self.size
        desc = self._read(table, self.head)
        if desc.flags & VRING_DESC_F_INDIRECT:
            table, ttl = self._enter_indirect(desc)
            desc = self._read(table, 0)
        count = 0
        while True:
            if desc.flags & VRING_DESC_F_INDIRECT:
                if self.indirect:
                    # spec §2.7.5.3.1 / vhost; QEMU maps it as a plain buffer.
                    self._violation("nested_indirect", "Nested indirect descriptor",
                                    addr=desc.addr)
                elif self.strict:
                    # Spec: "zero or more normal descriptors followed by one indirect".
                    table, ttl = self._enter_indirect(desc)
                    count = 0
                    desc = self._read(table, 0)
                    continue
                else:
                    self.warnings.append(("indirect_not_head",
                                          "Indirect descriptor after the head", {"addr": desc.addr}))
            yield desc
            count += 1
            if count > ttl:
                raise ChainError("loop", "Looped descriptor", count=count)
            if not desc.flags & VRING_DESC_F_NEXT:
                return
            nxt = desc.next
            if nxt >= ttl:
                raise ChainError("next_oob", f"Desc next is {nxt}", next=nxt)
            desc = self._read(table, nxt)


class PackedChain(ChainWalker):
    """The descriptors of one packed chain starting at ring slot ``start``
    (QEMU ``virtqueue_packed_pop`` / ``virtqueue_packed_read_next_desc``).

    Same interface as ``DescriptorChain``, plus ``buffer_id``: the id of the chain's
    *first* descriptor, which is what QEMU returns (the spec puts it in the last; Linux
    writes it in every one).  Direct chains follow NEXT through consecutive slots,
    wrapping at N, for at most N descriptors; an indirect table is walked entry by entry
    to its end, NEXT or not.
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
                raise ChainError("loop", "Looped descriptor", count=count)
            if not self.indirect and not desc.flags & VRING_DESC_F_NEXT:
                return
            i += 1
            if i == limit:
                if self.indirect:
                    return
                i = 0
            desc = self._read(table, i)


def map_buffer(mem: "GuestMemory", sg: list, max_sg: int, addr: int, size: int,
               is_write: bool, bounce: list) -> None:
    """QEMU ``virtqueue_map_desc``: map one descriptor as one or more pieces (RAM as far
    as it continues, anything else through the one bounce buffer); appends to ``sg``."""
    if not size:
        raise ChainError("zero_len", "virtio: zero sized buffers are not allowed", addr=addr)
    while size:
        if len(sg) >= max_sg:
            raise ChainError("too_many_sg", "virtio: too many write descriptors in indirect table")
        m = mem.map(addr, size, is_write)
        if m is None:
            raise ChainError("bogus_buffer", "virtio: bogus descriptor or out of resources",
                             addr=addr, len=size)
        if m.bounced:
            bounce.append(("w" if is_write else "r", len(sg), m))
        sg.append((addr, m.length))
        size -= m.length
        addr = (addr + m.length) & 0xFFFF_FFFF_FFFF_FFFF


@dataclass(slots=True)
class MappedChain:
    """A walked and mapped chain: the pieces of an ``Element`` before it has a head.
    ``count`` is how many descriptors the walk yielded."""

    readable: list[tuple[int, int]]
    writable: list[tuple[int, int]]
    bounce: list
    count: int


def map_chain(mem: "GuestMemory", chain: Iterable) -> MappedChain:
    """QEMU's collect loop (``virtqueue_split_pop`` / ``virtqueue_packed_pop``): walk
    ``chain`` and map each descriptor, device-readable ones first (a readable one after a
    writable one is "Incorrect order for descriptors"), at most ``VIRTQUEUE_MAX_SIZE``
    pieces in all.  A mapping error raises ``ChainError`` after undoing what was mapped
    (QEMU ``virtqueue_undo_map_desc``: nothing is written back); a walk error is left in
    ``chain.error`` for the caller, with what was mapped undone too."""
    readable: list[tuple[int, int]] = []
    writable: list[tuple[int, int]] = []
    bounce: list = []
    count = 0
    try:
        for desc in chain:
            count += 1
            if desc.flags & VRING_DESC_F_WRITE:
                map_buffer(mem, writable, VIRTQUEUE_MAX_SIZE - len(readable),
                           desc.addr, desc.len, True, bounce)
            else:
                if writable:
                    raise ChainError("desc_order", "Incorrect order for descriptors",
                                     addr=desc.addr)
                map_buffer(mem, readable, VIRTQUEUE_MAX_SIZE, desc.addr, desc.len,
                           False, bounce)
    except ChainError:
        undo_map(mem, bounce)
        raise
    if getattr(chain, "error", None) is not None:
        undo_map(mem, bounce)
    return MappedChain(readable, writable, bounce, count)


def undo_map(mem: "GuestMemory", bounce: list) -> None:
    """QEMU ``virtqueue_undo_map_desc``: release the bounce buffer; nothing is written back."""
    for _kind, _index, m in bounce:
        mem.unmap(m, 0)
