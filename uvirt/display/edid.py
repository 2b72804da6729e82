"""QEMU's EDID generator, byte for byte (hw/display/edid-generate.c, ``qemu_edid_generate``).

A guest reads these bytes (virtio-gpu's GET_EDID), so they must be QEMU's, quirks
included: the timings "pulled out of thin air" (front porch 25 %, sync 3 %, blanking
35 % of the width; 0.5 %, 0.5 %, 3.5 % of the height), the pixel clock in 10 kHz units
from a refresh rate in mHz (default 75 Hz), 100 dpi when no physical size is known, the
sRGB chromaticities rounded through single-precision floats, a CEA-861 extension block
(``dta``) when the buffer holds 256 bytes, and a DisplayID block for screens of 4096
pixels or more, or a pixel clock that does not fit 16 bits.

Layout of the 128-byte base block (VESA E-EDID 1.4)::

    0..7    header 00 ff ff ff ff ff ff 00     8..9   vendor "RHT" (big-endian 5-bit letters)
    10..11  product 0x1234                     12..15 serial (atoi of the serial string)
    16..17  week 42, year 2014                 18..19 EDID 1.4
    20      0xa5 digital, 8 bpc, DisplayPort   21..22 size in cm
    23      gamma 2.2                          24     features: sRGB, preferred timing
    25..34  chromaticity                       35..37 established timings
    38..53  standard timings                   54..125 four 18-byte descriptors
    126     extension count                    127    checksum

C arithmetic is kept where it matters: 32-bit unsigned products (``xres * 25 / 100``),
the 64-bit clock, the 16-bit truncations of ``stw_le_p``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_U32 = 0xFFFFFFFF

# (xres, yres, established byte, xtra3 byte, bit, dta VIC), in QEMU's table order.
_MODES: tuple[tuple[int, int, int, int, int, int], ...] = (
    # dea/dta extension timings (all @ 50 Hz)
    (5120, 2160, 0, 0, 0, 125),
    (4096, 2160, 0, 0, 0, 101),
    (3840, 2160, 0, 0, 0, 96),
    (2560, 1080, 0, 0, 0, 89),
    (2048, 1152, 0, 0, 0, 0),
    (1920, 1080, 0, 0, 0, 31),
    # dea/dta extension timings (all @ 60 Hz)
    (3840, 2160, 0, 0, 0, 97),
    # additional standard timings 3 (all @ 60 Hz)
    (1920, 1200, 0, 10, 0, 0),
    (1600, 1200, 0, 9, 2, 0),
    (1680, 1050, 0, 9, 5, 0),
    (1440, 900, 0, 8, 5, 0),
    (1280, 1024, 0, 7, 1, 0),
    (1280, 960, 0, 7, 3, 0),
    (1280, 768, 0, 7, 6, 0),
    (1920, 1440, 0, 11, 5, 0),
    (1856, 1392, 0, 10, 3, 0),
    (1792, 1344, 0, 10, 5, 0),
    (1440, 1050, 0, 8, 1, 0),
    (1360, 768, 0, 8, 7, 0),
    # established timings (all @ 60 Hz)
    (1024, 768, 36, 0, 3, 0),
    (800, 600, 35, 0, 0, 0),
    (640, 480, 35, 0, 5, 0),
)


@dataclass
class EdidInfo:
    """``qemu_edid_info``: zero means "use QEMU's default"."""

    vendor: str | None = None
    name: str | None = None
    serial: str | None = None
    width_mm: int = 0
    height_mm: int = 0
    prefx: int = 0
    prefy: int = 0
    maxx: int = 0
    maxy: int = 0
    refresh_rate: int = 0          # mHz


@dataclass(frozen=True)
class _Timings:
    xfront: int
    xsync: int
    xblank: int
    yfront: int
    ysync: int
    yblank: int
    clock: int


def _timings(refresh_rate: int, xres: int, yres: int) -> _Timings:
    xfront = (xres * 25 & _U32) // 100
    xsync = (xres * 3 & _U32) // 100
    xblank = (xres * 35 & _U32) // 100
    yfront = (yres * 5 & _U32) // 1000
    ysync = (yres * 5 & _U32) // 1000
    yblank = (yres * 35 & _U32) // 1000
    clock = ((refresh_rate * ((xres + xblank) & _U32) & 0xFFFFFFFFFFFFFFFF)
             * ((yres + yblank) & _U32) & 0xFFFFFFFFFFFFFFFF) // 10000000
    return _Timings(xfront, xsync, xblank, yfront, ysync, yblank, clock)


def _f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def _to_10bit(value: float) -> int:
    # (uint32_t)(value * 1024 + 0.5) with value a C float
    return int(_f32(_f32(value) * 1024) + 0.5) & _U32


def _std_mode(edid: bytearray, at: int, xres: int, yres: int) -> bool:
    """``edid_std_mode``: False where QEMU returns -1 (aspect not representable)."""
    if xres == 0 or yres == 0:
        edid[at], edid[at + 1] = 0x01, 0x01
        return True
    if xres * 10 & _U32 == yres * 16 & _U32:
        aspect = 0
    elif xres * 3 & _U32 == yres * 4 & _U32:
        aspect = 1
    elif xres * 4 & _U32 == yres * 5 & _U32:
        aspect = 2
    elif xres * 9 & _U32 == yres * 16 & _U32:
        aspect = 3
    else:
        return False
    if ((xres // 8) - 31) & _U32 > 255:
        return False
    edid[at] = ((xres // 8) - 31) & 0xFF
    edid[at + 1] = (aspect << 6) & 0xFF
    return True


def _checksum(buf: bytearray, start: int, length: int) -> None:
    total = sum(buf[start:start + length]) & 0xFF
    if total:
        buf[start + length] = 0x100 - total


class _Desc:
    """The walk of ``edid_desc_next`` over the base block's descriptors, then the
    extension's (positions are absolute offsets into the buffer; dta at 128)."""

    def __init__(self, edid: bytearray, dta: int | None) -> None:
        self.edid, self.dta = edid, dta

    def next(self, desc: int | None) -> int | None:
        if desc is None:
            return None
        if desc + 18 + 18 < 127:
            return desc + 18
        if self.dta is not None:
            if desc < 127:
                return self.dta + self.edid[self.dta + 2]
            if desc + 18 + 18 < self.dta + 127:
                return desc + 18
        return None


def _desc_type(edid: bytearray, at: int, kind: int) -> None:
    edid[at:at + 5] = bytes((0, 0, 0, kind, 0))


def _desc_text(edid: bytearray, at: int, kind: int, text: str) -> None:
    _desc_type(edid, at, kind)
    edid[at + 5:at + 18] = b" " * 13
    raw = text.encode("latin-1", "replace")[:12]
    edid[at + 5:at + 5 + len(raw)] = raw
    edid[at + 5 + len(raw)] = 0x0A


def _desc_ranges(edid: bytearray, at: int) -> None:
    _desc_type(edid, at, 0xFD)
    edid[at + 5:at + 12] = bytes((50, 125, 30, 160, 2550 // 10, 0x01, 0x0A))
    edid[at + 12:at + 18] = b" " * 6


def _desc_timing(edid: bytearray, at: int, t: _Timings, xres: int, yres: int, xmm: int, ymm: int) -> None:
    struct.pack_into("<H", edid, at, t.clock & 0xFFFF)
    edid[at + 2] = xres & 0xFF
    edid[at + 3] = t.xblank & 0xFF
    edid[at + 4] = (((xres & 0xF00) >> 4) | ((t.xblank & 0xF00) >> 8)) & 0xFF
    edid[at + 5] = yres & 0xFF
    edid[at + 6] = t.yblank & 0xFF
    edid[at + 7] = (((yres & 0xF00) >> 4) | ((t.yblank & 0xF00) >> 8)) & 0xFF
    edid[at + 8] = t.xfront & 0xFF
    edid[at + 9] = t.xsync & 0xFF
    edid[at + 10] = (((t.yfront & 0x00F) << 4) | (t.ysync & 0x00F)) & 0xFF
    edid[at + 11] = (((t.xfront & 0x300) >> 2) | ((t.xsync & 0x300) >> 4)
                     | ((t.yfront & 0x030) >> 2) | ((t.ysync & 0x030) >> 4)) & 0xFF
    edid[at + 12] = xmm & 0xFF
    edid[at + 13] = ymm & 0xFF
    edid[at + 14] = (((xmm & 0xF00) >> 4) | ((ymm & 0xF00) >> 8)) & 0xFF
    edid[at + 17] = 0x18


def _colorspace(edid: bytearray) -> None:
    rx, ry, gx, gy, bx, by, wx, wy = (_to_10bit(v) for v in
                                      (0.6400, 0.3300, 0.3000, 0.6000, 0.1500, 0.0600, 0.3127, 0.3290))
    edid[25] = (((rx & 3) << 6) | ((ry & 3) << 4) | ((gx & 3) << 2) | (gy & 3)) & 0xFF
    edid[26] = (((bx & 3) << 6) | ((by & 3) << 4) | ((wx & 3) << 2) | (wy & 3)) & 0xFF
    for i, v in enumerate((rx, ry, gx, gy, bx, by, wx, wy)):
        edid[27 + i] = (v >> 2) & 0xFF


def _displayid(edid: bytearray, did: int, t: _Timings, xres: int, yres: int) -> None:
    edid[did:did + 4] = bytes((0x70, 0x13, 23, 0x03))
    edid[did + 5:did + 8] = bytes((0x03, 0x00, 0x14))
    edid[did + 8] = t.clock & 0xFF
    edid[did + 9] = (t.clock & 0xFF00) >> 8
    edid[did + 10] = (t.clock & 0xFF0000) >> 16
    edid[did + 11] = 0x88
    for off, v in ((12, xres), (14, t.xblank), (16, t.xfront), (18, t.xsync),
                   (20, yres), (22, t.yblank), (24, t.yfront), (26, t.ysync)):
        struct.pack_into("<H", edid, did + off, (v - 1) & 0xFFFF)
    _checksum(edid, did + 1, edid[did + 2] + 4)


def dpi_to_mm(dpi: int, res: int) -> int:
    """``qemu_edid_dpi_to_mm``."""
    return (res * 254 & _U32) // 10 // dpi


def generate(size: int, info: EdidInfo | None = None) -> bytes:
    """``qemu_edid_generate`` into a zeroed buffer of ``size`` bytes (virtio-gpu: 1024)."""
    info = info or EdidInfo()
    edid = bytearray(size)
    vendor = info.vendor if info.vendor and len(info.vendor) == 3 else "RHT"
    name = info.name if info.name is not None else "QEMU Monitor"
    prefx = info.prefx or 1280
    prefy = info.prefy or 800
    refresh = info.refresh_rate or 75000
    if info.width_mm and info.height_mm:
        width_mm, height_mm = info.width_mm, info.height_mm
    else:
        width_mm, height_mm = dpi_to_mm(100, prefx), dpi_to_mm(100, prefy)
    t = _timings(refresh, prefx, prefy)
    large = prefx >= 4096 or prefy >= 4096 or t.clock >= 65536

    dta = did = None
    if size >= 256:
        dta = 128
        edid[126] += 1
        edid[dta:dta + 5] = bytes((0x02, 0x03, 0x05, 0x00, 0x40))
    if size >= 384 and large:
        did = 256
        edid[126] += 1
        edid[did:did + 4] = bytes((0x70, 0x13, 4, 0x03))
        _checksum(edid, did + 1, edid[did + 2] + 4)

    edid[0:8] = b"\x00\xff\xff\xff\xff\xff\xff\x00"
    letters = [((ord(c) - ord("@")) & 0x1F) for c in vendor]
    struct.pack_into(">H", edid, 8, (letters[0] << 10) | (letters[1] << 5) | letters[2])
    struct.pack_into("<H", edid, 10, 0x1234)
    struct.pack_into("<I", edid, 12, _atoi(info.serial) & _U32 if info.serial else 0)
    edid[16], edid[17] = 42, 2014 - 1990
    edid[18], edid[19] = 1, 4
    edid[20] = 0xA5
    edid[21] = (width_mm // 10) & 0xFF
    edid[22] = (height_mm // 10) & 0xFF
    edid[23] = 220 - 100
    edid[24] = 0x06
    _colorspace(edid)

    walk = _Desc(edid, dta)
    desc: int | None = 54
    if not large:
        _desc_timing(edid, desc, t, prefx, prefy, width_mm, height_mm)
        desc = walk.next(desc)
    xtra3 = desc
    if xtra3 is not None:
        _desc_type(edid, xtra3, 0xF7)
        edid[xtra3 + 5] = 10
    desc = walk.next(desc)
    _fill_modes(edid, xtra3, dta, info.maxx, info.maxy)
    if desc is not None:
        _desc_ranges(edid, desc)
    desc = walk.next(desc)
    if desc is not None:
        _desc_text(edid, desc, 0xFC, name)
        desc = walk.next(desc)
    if desc is not None and info.serial:
        _desc_text(edid, desc, 0xFF, info.serial)
        desc = walk.next(desc)
    while desc is not None:
        _desc_type(edid, desc, 0x10)
        desc = walk.next(desc)
    if did is not None:
        _displayid(edid, did, t, prefx, prefy)

    _checksum(edid, 0, 127)
    if dta is not None:
        _checksum(edid, dta, 127)
    if did is not None:
        _checksum(edid, did, 127)
    return bytes(edid)


def _fill_modes(edid: bytearray, xtra3: int | None, dta: int | None, maxx: int, maxy: int) -> None:
    std = 38
    for xres, yres, byte, x3, bit, vic in _MODES:
        if (maxx and xres > maxx) or (maxy and yres > maxy):
            continue
        if byte:
            edid[byte] |= 1 << bit
        elif std < 54:
            if _std_mode(edid, std, xres, yres):
                std += 2
        elif x3 and xtra3 is not None:
            edid[xtra3 + x3] |= 1 << bit
        if dta is not None and vic:
            edid[dta + edid[dta + 2]] = vic
            edid[dta + 2] += 1
            edid[dta + 4] += 1
    while std < 54:
        _std_mode(edid, std, 0, 0)
        std += 2


def _atoi(text: str) -> int:
    """C ``atoi``: leading blanks, a sign, digits; 0 if none."""
    s = text.lstrip(" \t\n\r\f\v")
    sign = -1 if s[:1] == "-" else 1
    s = s[1:] if s[:1] in "+-" else s
    digits = ""
    for ch in s:
        if not ch.isdigit():
            break
        digits += ch
    return sign * int(digits) if digits else 0
