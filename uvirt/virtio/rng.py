"""virtio-rng, device type 4 (virtio 1.2 §5.4; QEMU hw/virtio/virtio-rng.c).

One queue (requestq, 8 entries), no feature bits, no config space.  The driver posts
device-writable buffers; the device fills them with entropy and reports the bytes
written as the used length.  As QEMU: nothing happens until the queue has rings and
DRIVER_OK is set; a status write or a kick asks for as many bytes as the available
writable buffers hold, fills chains in order, and notifies once per batch; a chain with
no writable bytes is left in the queue.

Entropy comes from the host (``os.urandom``) or, with ``seed=N`` (uvirt's own property;
QEMU uses ``-object rng-*`` back ends), from a seeded generator so a test is reproducible.
"""

from __future__ import annotations

import os
import random

from .device import Status, VirtioDevice


class VirtioRng(VirtioDevice):
    device_id = 4
    name = "virtio-rng"
    queue_sizes = (8,)
    config_len = 0

    def __init__(self, *, seed: int | None = None) -> None:
        super().__init__()
        self.seed = seed
        self._random = random.Random(seed) if seed is not None else None

    def entropy(self, n: int) -> bytes:
        if self._random is not None:
            return self._random.randbytes(n)
        return os.urandom(n)

    def device_reset(self) -> None:
        if self.seed is not None:
            self._random = random.Random(self.seed)

    def set_status_hook(self, status: int) -> None:
        self.status = status          # QEMU stores first, then processes
        self.process()

    def handle_output(self, index: int) -> None:
        self.process()

    def process(self) -> None:
        """QEMU ``virtio_rng_process`` + ``chr_read`` (the back end answers at once)."""
        if not self.ready(0) or self.broken:
            return
        q = self.queues[0]
        avail = q.avail_bytes()
        if not isinstance(avail, tuple):
            self.error(avail.reason)
            return
        size = avail[0]
        if not size:
            return
        data = self.entropy(size)
        offset = 0
        while offset < size:
            elem = q.pop()
            if elem is None:
                break
            if elem.broken:
                self.error(elem.reason)
                return
            n = elem.write(self.mem, data[offset:])
            offset += n
            q.push(elem, n)
        self.notify(0)
