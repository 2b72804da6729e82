"""Display surfaces and QEMU's screendump formats (ui/console.c ``ppm_save``, ``png_save``).

A ``Surface`` is a view, not a copy: ``buffer`` is the device's own memory (a virtio-gpu
resource image, virtio-fb's shared region) read at ``offset`` with ``stride`` bytes per
line, each pixel 4 bytes in the byte order ``rawmode`` names (Pillow's raw modes:
``BGRX`` for XRGB8888 little-endian, ``RGBX``, ``XRGB``, ``XBGR``).  Like QEMU's
DisplaySurface over a pixman image, it shows whatever the device holds at the moment
it is read.

Screendump, as QEMU 7.2 writes it
    PPM: ``P6\\n<w> <h>\\n255\\n``, then each line converted to r8g8b8 in a pixman line
    buffer whose stride is rounded up to 4 bytes, and written *with* that padding (zero
    bytes; QEMU writes ``pixman_image_get_stride(linebuf)`` bytes per line, so a width that
    is not a multiple of 4 gives lines of ``3w`` rounded up).  PNG: 8-bit RGB, no
    interlace (libpng there, Pillow here: the pixels are the same, the compressed bytes
    need not be).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from uvirt.display.placeholder_font import GLYPHS, FONT_HEIGHT, FONT_WIDTH


@dataclass
class Surface:
    width: int
    height: int
    stride: int
    rawmode: str
    buffer: object                     # bytearray, memoryview or anything with a buffer
    offset: int = 0
    #: a snapshot (uvirt/cpu/snapshot.py) keeps the surface itself: nobody changes one
    #: once made (a device makes a new one), and its buffer is the device's own
    snapshot_state: ClassVar[tuple[str, ...]] = ()

    def rgb(self) -> bytes:
        """The pixels as packed R, G, B bytes, line after line."""
        from PIL import Image
        if self.width == 0 or self.height == 0:
            return b""
        view = memoryview(self.buffer)
        line = self.width * 4
        if self.stride == line:
            raw = view[self.offset:self.offset + line * self.height]
        else:
            raw = b"".join(view[self.offset + y * self.stride:self.offset + y * self.stride + line]
                           for y in range(self.height))
        img = Image.frombuffer("RGB", (self.width, self.height), bytes(raw), "raw", self.rawmode, 0, 1)
        return img.tobytes()

    def image(self):
        """The surface as a Pillow RGB image."""
        from PIL import Image
        return Image.frombytes("RGB", (self.width, self.height), self.rgb())

    def ppm(self) -> bytes:
        """QEMU's ``ppm_save`` output, byte for byte."""
        line = self.width * 3
        padded = ((self.width * 24 + 31) >> 5) * 4
        rgb = self.rgb()
        head = f"P6\n{self.width} {self.height}\n255\n".encode()
        if padded == line:
            return head + rgb
        pad = bytes(padded - line)
        return head + b"".join(rgb[y * line:(y + 1) * line] + pad for y in range(self.height))

    def png(self) -> bytes:
        import io
        out = io.BytesIO()
        self.image().save(out, format="PNG")
        return out.getvalue()

    def save(self, path: str, fmt: str = "ppm") -> None:
        data = self.png() if fmt == "png" else self.ppm()
        with open(path, "wb") as f:
            f.write(data)


def placeholder(width: int, height: int, msg: str) -> Surface:
    """``qemu_create_placeholder_surface``: black x8r8g8b8, the message in light grey
    (0xaaaaaa) 8x16 VGA glyphs, centred by character cells."""
    buf = bytearray(width * height * 4)
    cols = _cdiv(width // FONT_WIDTH - len(msg), 2)       # C division: towards zero
    row = _cdiv(height // FONT_HEIGHT - 1, 2)
    for i, ch in enumerate(msg):
        glyph = GLYPHS.get(ch)
        if glyph is None:
            continue
        x0, y0 = (cols + i) * FONT_WIDTH, row * FONT_HEIGHT
        for gy, bits in enumerate(glyph):
            y = y0 + gy
            if not 0 <= y < height:
                continue
            for gx in range(FONT_WIDTH):
                x = x0 + gx
                if bits & (0x80 >> gx) and 0 <= x < width:
                    o = (y * width + x) * 4
                    buf[o:o + 3] = b"\xaa\xaa\xaa"
    return Surface(width, height, width * 4, "BGRX", buf, 0)


def _cdiv(a: int, b: int) -> int:
    q = abs(a) // b
    return q if a >= 0 else -q
