"""The virtqueue engine: pure ring parsing and bookkeeping, no PCI, no CPU.

``chain``     descriptors, chain walks (``DescriptorChain``, ``PackedChain``), indirect
              tables, buffer mapping, and what a pop returns (``Element``, ``QueueBroken``).
``queue``     split rings (``SplitQueue``, ``legacy_layout``), the base both ring types
              share (``VirtqueueBase``) and the event types (``QueueEvents``).
``packed``    packed rings (``PackedQueue``).
``features``  device-independent feature bits and 32-bit page helpers.

The device picks the ring type when features are negotiated (``make_queue``: packed when
the driver accepted VIRTIO_F_RING_PACKED, uvirt/virtio/device.py); a device model only
uses what both types share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uvirt.virtio.features import VirtioFeature, mask_unoffered, page, set_page
from uvirt.virtio.chain import Descriptor, DescriptorChain, Element, PackedChain, QueueBroken
from uvirt.virtio.packed import PackedQueue
from uvirt.virtio.queue import (NoEvents, QueueEvents, RecordingEvents, RingLayout, SplitQueue, VirtqueueBase,
                                legacy_layout, vring_need_event)

if TYPE_CHECKING:  # pragma: no cover
    from uvirt.board.memory.guest import GuestMemory

__all__ = [
    "Descriptor", "DescriptorChain", "Element", "NoEvents", "PackedChain", "PackedQueue", "QueueBroken",
    "QueueEvents", "RecordingEvents", "RingLayout", "SplitQueue", "VirtioFeature",
    "VirtqueueBase", "convert_queue", "legacy_layout", "make_queue", "mask_unoffered", "page", "set_page",
    "vring_need_event",
]


def make_queue(mem: "GuestMemory", max_size: int, *, packed: bool = False, index: int = 0,
               events: QueueEvents | None = None, strict: bool = False) -> VirtqueueBase:
    """A split or packed queue (packed when VIRTIO_F_RING_PACKED was negotiated)."""
    cls = PackedQueue if packed else SplitQueue
    return cls(mem, max_size, index=index, events=events, strict=strict)


def convert_queue(q: VirtqueueBase, packed: bool) -> VirtqueueBase:
    """``q`` read as the other ring format, as QEMU reads its one ``VirtQueue`` once
    VIRTIO_F_RING_PACKED is accepted or dropped: size, ring addresses, the checked ring
    areas, indices, in-flight count and flags carry over; the packed ring's wrap counters
    start as after a reset (1), and so does a packed ring's staged used elements."""
    new = make_queue(q.mem, q.max_size, packed=packed, index=q.index, events=q.events,
                     strict=q.strict)
    new.align = q.align
    for name in VirtqueueBase.snapshot_state:
        setattr(new, name, getattr(q, name))
    new._win = q._win
    return new
