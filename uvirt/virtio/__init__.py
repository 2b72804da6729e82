"""The virtqueue engine: pure ring parsing and bookkeeping, no PCI, no CPU.

``queue``     split rings (``SplitQueue``, ``DescriptorChain``, ``legacy_layout``) and the
              shared result/event types (``Element``, ``QueueBroken``, ``QueueEvents``).
``packed``    packed rings (``PackedQueue``).
``features``  device-independent feature bits and 32-bit page helpers.

A transport picks the ring type once features are negotiated (``make_queue``); a device
only uses what both types share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uvirt.virtio.features import VirtioFeature, mask_unoffered, page, set_page
from uvirt.virtio.packed import PackedQueue
from uvirt.virtio.queue import (Descriptor, DescriptorChain, Element, NoEvents, QueueBroken, QueueEvents,
                    RecordingEvents, RingLayout, SplitQueue, VirtqueueBase, legacy_layout,
                    vring_need_event)

if TYPE_CHECKING:  # pragma: no cover
    from uvirt.board.memory.guest import GuestMemory

__all__ = [
    "Descriptor", "DescriptorChain", "Element", "NoEvents", "PackedQueue", "QueueBroken",
    "QueueEvents", "RecordingEvents", "RingLayout", "SplitQueue", "VirtioFeature",
    "VirtqueueBase", "legacy_layout", "make_queue", "mask_unoffered", "page", "set_page",
    "vring_need_event",
]


def make_queue(mem: "GuestMemory", max_size: int, *, packed: bool = False, index: int = 0,
               events: QueueEvents | None = None, strict: bool = False) -> VirtqueueBase:
    """A split or packed queue (packed when VIRTIO_F_RING_PACKED was negotiated)."""
    cls = PackedQueue if packed else SplitQueue
    return cls(mem, max_size, index=index, events=events, strict=strict)
