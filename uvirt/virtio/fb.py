"""virtio-fb: the framebuffer from the 2010 thread (Alexander Graf's virtio-fb, which
Cam Macdonell moved onto his memory-region patch), as a uvirt device.

Its device type, 63, lies outside the range the virtio spec assigns: this is uvirt's own
device (PCI IDs: transitional 1af4:103f, modern 1af4:107f; class 0x0380 display).  The
2009 patch's wire format was never published in a form we could read, so the layout
below is uvirt's (docs/virtio-pci-facts.md §8.5).

Device configuration (all little-endian, read-only)::

    0x00 le32 width    pixels              0x04 le32 height   pixels
    0x08 le32 stride   bytes per line      0x0C le32 format   1 = XRGB8888 (bytes B, G, R, X)
    0x10 le32 shmid    the framebuffer's shared memory region id (0)
    0x14 le32 flushes  flush requests served so far

The framebuffer is shared memory region 0 (``stride * height`` bytes rounded up to a
power of two): on a modern/transitional device a VIRTIO_PCI_CAP_SHARED_MEMORY_CFG
capability in BAR 2, on a legacy-only device the proposal's MEM_SEL/MEM_SIZE/MEM_PFN
registers and BAR 2.  The guest draws with plain stores at RAM speed.

Queue 0 (flushq, 16 entries): the driver posts a readable ``{le32 x, y, w, h}`` rectangle
(empty or all-zero = the whole screen) and optionally one writable status byte; the
device presents the rectangle (counts it, remembers the last frame) and writes status 0,
or 1 for a rectangle outside the screen.  Used length: 1 with a status byte, else 0.
"""

from __future__ import annotations

import struct

from uvirt.errors import UvirtError
from uvirt.backends.shared_memory import SharedMemory
from uvirt.virtio.device import VirtioDevice

FORMAT_XRGB8888 = 1
FB_STATUS_OK, FB_STATUS_BAD_RECT = 0, 1
VIRTIO_ID_FB = 63


class VirtioFb(VirtioDevice):
    device_id = VIRTIO_ID_FB
    name = "virtio-fb"
    queue_sizes = (16,)
    config_len = 24
    #: what a snapshot holds beyond the virtio core (uvirt/cpu/snapshot.py): the flush
    #: count (config space) and the last rectangle; the pixels are the shared region's
    snapshot_state = ("flushes", "last_rect")

    def __init__(self, *, width: int = 320, height: int = 240) -> None:
        if not (1 <= width <= 4096 and 1 <= height <= 4096):
            raise UvirtError(f"virtio-fb: mode 0x{width:x} x 0x{height:x} outside 1..0x1000")
        super().__init__()
        self.width, self.height = width, height
        self.stride = width * 4
        size = max(0x1000, 1 << (self.stride * height - 1).bit_length())
        self.fb = SharedMemory.anonymous("virtio-fb.framebuffer", size)
        self.flushes = 0
        self.last_rect: tuple[int, int, int, int] | None = None

    def shared_regions(self) -> list:
        return [(0, self.fb)]

    def config_bytes(self) -> bytes:
        return struct.pack("<6I", self.width, self.height, self.stride, FORMAT_XRGB8888, 0, self.flushes)

    def device_reset(self) -> None:
        self.flushes = 0
        self.last_rect = None

    def handle_output(self, index: int) -> None:
        if not self.ready(0):
            return
        q = self.queues[0]
        while (elem := q.pop()) is not None:
            if elem.broken:
                self.error(elem.reason)
                return
            raw = elem.read(self.mem, 16)
            x, y, w, h = struct.unpack("<4I", raw) if len(raw) == 16 else (0, 0, 0, 0)
            if (w, h) == (0, 0):
                x, y, w, h = 0, 0, self.width, self.height
            ok = x + w <= self.width and y + h <= self.height
            if ok:
                self.flushes += 1
                self.last_rect = (x, y, w, h)
            else:
                self.transport.guest_error("fb_bad_rect", f"virtio-fb: flush of {w}x{h}+{x}+{y} outside "
                                           f"{self.width}x{self.height}")
            n = elem.write(self.mem, bytes((FB_STATUS_OK if ok else FB_STATUS_BAD_RECT,)))
            q.push(elem, n)
        self.notify(0)

    # -- host side
    heads = 1

    def surface(self, head: int = 0):
        """The display surface (a view into the framebuffer region, XRGB8888 = B, G, R, X
        bytes), as QMP ``screendump`` and ``-uvirt-screenshot`` save it."""
        from uvirt.display.surface import Surface
        return Surface(self.width, self.height, self.stride, "BGRX", self.fb.view, 0)

    def pixels(self) -> bytes:
        """The visible framebuffer, XRGB8888 rows without padding."""
        rows = self.fb.read(0, self.stride * self.height)
        return rows

    def image(self):
        from PIL import Image
        return Image.frombuffer("RGBX", (self.width, self.height), self._rgbx(), "raw", "RGBX", 0, 1).convert("RGB")

    def _rgbx(self) -> bytes:
        # XRGB8888 little-endian is B, G, R, X in memory: swap to R, G, B, X.
        data = bytearray(self.pixels())
        data[0::4], data[2::4] = data[2::4], data[0::4]
        return bytes(data)

    def screenshot(self, path: str) -> None:
        """Save what the guest drew as PNG (``-screenshot FILE``)."""
        self.image().save(path, format="PNG")
