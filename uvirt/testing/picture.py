"""The host's copy of firmware/include/picture.inc: the test picture and the 32x32 sprite,
pixel by pixel, so a test can check what a guest drew through either display design."""

from __future__ import annotations

BARS = (0xC0C0C0, 0xC0C000, 0x00C0C0, 0x00C000, 0xC000C0, 0xC00000, 0x0000C0, 0x000000)
SPRITE = 32


def picture_pixel(x: int, y: int, w: int, h: int) -> int:
    """0xRRGGBB of the picture at x, y (``__pic_pixel``)."""
    if x < 2 or y < 2 or x >= w - 2 or y >= h - 2:
        return 0xFFFFFF
    if y * 3 < 2 * h:
        return BARS[x * 8 // w]
    return (x * 256 // w) * 0x010101


def sprite_pixel(sx: int, sy: int) -> int:
    """0xRRGGBB of the sprite at offset sx, sy: yellow with a blue frame (``pic_sprite``)."""
    edge = sx in (0, SPRITE - 1) or sy in (0, SPRITE - 1)
    return 0x0000FF if edge else 0xFFFF00


def expected_rgb(w: int, h: int, sprites: tuple[tuple[int, int], ...] = ()) -> bytes:
    """The picture with sprites at the given top-left corners, as packed R, G, B bytes."""
    px = [[picture_pixel(x, y, w, h) for x in range(w)] for y in range(h)]
    for sx, sy in sprites:
        for dy in range(SPRITE):
            for dx in range(SPRITE):
                if 0 <= sy + dy < h and 0 <= sx + dx < w:
                    px[sy + dy][sx + dx] = sprite_pixel(dx, dy)
    return b"".join(v.to_bytes(3, "big") for row in px for v in row)


def first_difference(got: bytes, want: bytes, w: int) -> str | None:
    """"x,y: got RRGGBB want RRGGBB" for the first differing pixel, or None."""
    for i in range(0, min(len(got), len(want)), 3):
        if got[i:i + 3] != want[i:i + 3]:
            p = i // 3
            return f"{p % w},{p // w}: got {got[i:i + 3].hex()} want {want[i:i + 3].hex()}"
    return None if len(got) == len(want) else f"sizes differ: {len(got)} vs {len(want)}"


def sprite_path(frames: int, w: int, h: int, step: int = 8) -> tuple[int, int]:
    """Where display_frames.S leaves the sprite after ``frames`` moves (it starts at 0,0,
    moves ``step`` pixels right, wraps to the next row of 32 and back to the top)."""
    x = y = 0
    for _ in range(frames):
        x += step
        if x > w - SPRITE:
            x = 0
            y += SPRITE
            if y > h - SPRITE:
                y = 0
    return x, y
