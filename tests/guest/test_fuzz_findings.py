"""Findings of uvirt fuzz's own runs over the built-in devices, each kept as a regression
test with its reproducer (the input bytes, as ``uvirt fuzz --reproduce`` reads them).
A finding that was the oracle's mistake is pinned the same way: the input must give no
finding now, on both backends."""

import pytest

from uvirt.fuzz.engine import Harness
from uvirt.fuzz.target import FuzzTarget

#: virtio-rng-pci (transitional, set up through the legacy registers): the modern
#: transport's queue_desc and queue_avail written, then QUEUE_ENABLE=1.  As in QEMU 7.2
#: (virtio_pci_common_write): the proxy's queue size was never written (0), so
#: virtio_queue_set_num leaves the size alone, and virtio_queue_set_rings moves the used
#: ring to the never-written queue_used, guest address 0.  A request is then served and
#: its used element written at address 0.  The dma-outside-buffer oracle skipped queues
#: whose used ring is at 0 and called the buffer write stray.
USED_RING_AT_ZERO = bytes.fromhex(
    "050102200000000000000146555a5a050102280000008000000146555a5a0501011c0000000146555a5a0a")


@pytest.mark.parametrize("backend", ["board", "guest"])
def test_used_ring_at_address_zero_is_a_used_ring(backend):
    t = FuzzTarget(["-device", "virtio-rng-pci"], cpu=backend == "guest")
    try:
        ex = Harness(t, backend).execute(USED_RING_AT_ZERO)
        assert ex.finding is None, ex.finding
        vq = t.fn.vdev.queues[0]
        assert (vq.desc, vq.avail, vq.used) == (0x1000000, 0x1000080, 0)
        assert any(kind == "virtqueue_bad_queue_size" for kind, _ in t.machine.guest_errors)
    finally:
        t.close()
