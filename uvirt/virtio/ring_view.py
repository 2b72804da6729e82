"""A split virtqueue as the driver left it in guest memory, read without side effects.

``split_ring_view(mem, q)`` reads the three areas of a configured split queue (virtio 1.2
§2.7.5 descriptor table, §2.7.6 available ring, §2.7.8 used ring) and follows the chains
the available ring names, into a plain JSON-able dict: the ring inspector draws it and
``uvirt explain`` reads it.  Pure: guest memory and the queue's own fields, no CPU; it
never changes the queue (unlike ``pop``, it does not refresh the shadow avail index).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uvirt.errors import GuestMemoryError
from uvirt.virtio.queue import (AVAIL_FLAGS, AVAIL_IDX, AVAIL_RING, DESC_SIZE, USED_ELEM_SIZE, USED_FLAGS,
                    USED_IDX, USED_RING, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT,
                    VRING_DESC_F_WRITE, Descriptor)

if TYPE_CHECKING:  # pragma: no cover
    from uvirt.board.memory.guest import GuestMemory

#: Bytes of each buffer shown (the inspector's "first bytes").
PEEK = 16
#: Descriptors shown at most (a 1024-entry table is not useful on one screen).
MAX_DESCS = 64

DESC_FLAG_NAMES = ((VRING_DESC_F_NEXT, "NEXT"), (VRING_DESC_F_WRITE, "WRITE"),
                   (VRING_DESC_F_INDIRECT, "INDIRECT"))


def desc_flag_names(flags: int) -> str:
    names = [n for bit, n in DESC_FLAG_NAMES if flags & bit]
    rest = flags & ~sum(b for b, _ in DESC_FLAG_NAMES)
    if rest:
        names.append(f"0x{rest:x}")
    return "|".join(names) or "0"


def _u16(mem: "GuestMemory", addr: int) -> int | None:
    try:
        return mem.read_u16(addr)
    except GuestMemoryError:
        return None


def _peek(mem: "GuestMemory", addr: int, length: int) -> str | None:
    try:
        return mem.read(addr, min(length, PEEK)).hex(" ")
    except GuestMemoryError:
        return None


def split_ring_view(mem: "GuestMemory", q: Any) -> dict:
    """The state of split queue ``q`` (a ``SplitQueue``) as guest memory holds it."""
    n = q.size
    view: dict[str, Any] = {
        "queue": q.index, "size": n, "desc_addr": q.desc, "avail_addr": q.avail, "used_addr": q.used,
        "last_avail_idx": q.last_avail_idx, "device_used_idx": q.used_idx, "inuse": q.inuse,
        "event_idx": bool(q.event_idx), "configured": bool(q.desc and n),
    }
    if not view["configured"] or getattr(q, "packed", False):
        return view
    view["descs"] = [_desc_entry(mem, q.desc, i) for i in range(min(n, MAX_DESCS))]
    aflags, aidx = _u16(mem, q.avail + AVAIL_FLAGS), _u16(mem, q.avail + AVAIL_IDX)
    ring = [_u16(mem, q.avail + AVAIL_RING + 2 * i) for i in range(n)]
    view["avail"] = {"flags": aflags, "idx": aidx, "ring": ring,
                     "used_event": _u16(mem, q.avail + AVAIL_RING + 2 * n)}
    uflags, uidx = _u16(mem, q.used + USED_FLAGS), _u16(mem, q.used + USED_IDX)
    used = []
    for i in range(n):
        try:
            raw = mem.read(q.used + USED_RING + USED_ELEM_SIZE * i, USED_ELEM_SIZE)
            used.append([int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:], "little")])
        except GuestMemoryError:
            used.append(None)
    view["used"] = {"flags": uflags, "idx": uidx, "ring": used,
                    "avail_event": _u16(mem, q.used + USED_RING + USED_ELEM_SIZE * n)}
    chains = []
    if aidx is not None:
        # the entries the driver published: the last ``size`` of them at most
        start = (aidx - min((aidx - 0) & 0xFFFF, n)) & 0xFFFF
        k = start
        while k != aidx:
            head = ring[k % n]
            pending = ((k - q.last_avail_idx) & 0xFFFF) < ((aidx - q.last_avail_idx) & 0xFFFF)
            chains.append({"avail_idx": k, "slot": k % n, "head": head, "pending": pending,
                           **_follow(mem, q.desc, n, head)})
            k = (k + 1) & 0xFFFF
    view["chains"] = chains
    return view


def _follow(mem: "GuestMemory", table: int, n: int, head: int | None) -> dict:
    """The descriptor indices of one chain, stopping at a loop or a bad index."""
    if head is None or head >= n:
        return {"descs": [], "error": f"head {head} out of range (queue size {n})"}
    seen: list[int] = []
    i = head
    while True:
        if i in seen:
            return {"descs": seen, "error": f"loop back to descriptor {i}"}
        seen.append(i)
        try:
            d = Descriptor.unpack(mem.read(table + DESC_SIZE * i, DESC_SIZE))
        except GuestMemoryError:
            return {"descs": seen, "error": "descriptor table not RAM"}
        if d.flags & VRING_DESC_F_INDIRECT:
            return {"descs": seen, "error": None, "indirect": _indirect(mem, d)}
        if not d.flags & VRING_DESC_F_NEXT:
            return {"descs": seen, "error": None}
        if d.next >= n:
            return {"descs": seen, "error": f"next {d.next} out of range"}
        i = d.next


def _desc_entry(mem: "GuestMemory", table: int, i: int) -> dict:
    """Descriptor ``i`` of the table at ``table`` as the view shows it, with a peek at its
    buffer; ``{"i": i, "error": "not RAM"}`` where the table is not RAM."""
    try:
        d = Descriptor.unpack(mem.read(table + DESC_SIZE * i, DESC_SIZE))
    except GuestMemoryError:
        return {"i": i, "error": "not RAM"}
    return {"i": i, "addr": d.addr, "len": d.len, "flags": d.flags,
            "flag_names": desc_flag_names(d.flags), "next": d.next,
            "bytes": _peek(mem, d.addr, d.len) if d.len else ""}


def _indirect(mem: "GuestMemory", d: Descriptor) -> list[dict]:
    """The entries of an indirect table (§2.7.5.3), in table order, at most MAX_DESCS,
    up to the first that is not RAM."""
    out = []
    for i in range(min(d.len // DESC_SIZE, MAX_DESCS)):
        out.append(_desc_entry(mem, d.addr, i))
        if "error" in out[-1]:
            break
    return out
