"""virtio-rng, device type 4 (virtio 1.2 §5.4; QEMU hw/virtio/virtio-rng.c).

One queue (requestq, 8 entries), no feature bits, no config space.  The driver posts
device-writable buffers; the device fills them with entropy and reports the bytes
written as the used length.  As QEMU: nothing happens until the queue has rings and
DRIVER_OK is set; a status write or a kick asks for as many bytes as the available
writable buffers hold, fills chains in order, and notifies once per batch; a chain with
no writable bytes is left in the queue.  The entropy arrives as device work after the
kick (QEMU's ``rng-builtin`` bottom half), in bounded pieces.  After a pop that fails
(``virtio_error``) QEMU still notifies and, with buffers left, asks again: its rng never
checks ``broken`` (only kicks are ignored then), so a later good buffer is still served.

Entropy comes from the host (``os.urandom``) or, with ``seed=N`` (uvirt's own property;
QEMU uses ``-object rng-*`` back ends), from a seeded generator so a test is reproducible.
"""

from __future__ import annotations

import os
import random

from uvirt.board.dma import PIECE
from uvirt.virtio.device import VirtioDevice


class VirtioRng(VirtioDevice):
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("_random",)

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

    def handle_output(self, index: int):
        """A kick: already device work, so the entropy is delivered right here (QEMU's
        back end answers from a bottom half; nothing runs in between that could tell)."""
        size = self.request_size()
        return self.chr_read(size) if size else None

    def is_guest_ready(self) -> bool:
        """QEMU ``is_guest_ready``: queue 0 has rings and DRIVER_OK is set (broken or
        not: QEMU's rng never looks at ``broken``)."""
        return self.ready(0)

    def process(self) -> None:
        """QEMU ``virtio_rng_process``: ask the back end for as many bytes as the
        available writable buffers hold (``virtqueue_get_avail_bytes(vq, .., quota, 0)``);
        they arrive later, as device work (``rng-builtin``'s bottom half)."""
        size = self.request_size()
        if size:
            self.defer(lambda: self.chr_read(size))

    def request_size(self) -> int:
        """QEMU ``get_request_size`` when the guest is ready, else 0."""
        if not self.is_guest_ready():
            return 0
        avail = self.queues[0].avail_bytes(0xFFFF_FFFF, 0)
        if not isinstance(avail, tuple):
            self.error(avail.reason)          # QEMU: virtio_error, then a request of 0 bytes
            return 0
        return avail[0]

    def chr_read(self, size: int):
        """QEMU ``chr_read`` with ``size`` bytes of entropy arriving: fill buffers in
        order, push each with the bytes written, notify once (also after a pop that
        failed: the guest sees ISR 1), and ask again if buffers are left.  A generator:
        the entropy is drawn and written in pieces of ``PIECE`` bytes, never all at
        once, so a 4 GiB request costs neither 4 GiB of memory nor the budget."""
        if not self.is_guest_ready():
            return
        q = self.queues[0]
        offset = 0
        while offset < size and (elem := self.pop(0)) is not None:
            want = min(size - offset, elem.writable_len)
            written = 0
            while written < want:
                n = min(PIECE, want - written)
                written += elem.write_at(self.mem, written, self.entropy(n))
                if written < want:
                    yield
            offset += written
            q.push(elem, written)
        self.notify(0)
        if not q.is_empty():
            self.process()
