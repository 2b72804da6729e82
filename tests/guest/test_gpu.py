"""virtio-gpu-pci (2D): what the host sees, against QEMU 7.2 and against the picture.

The register/config transcript and every command's answer (the bad-command catalogue
included) are compared line by line with QEMU in test_virtio_differential.py
(firmware/gpu_commands.S, four device configurations).  Here: the screendump of the
finished picture byte for byte (PPM; PNG by its pixels: libpng and Pillow compress
differently), QEMU's "not active" placeholder, the picture pixel by pixel, and what QEMU
gets wrong that uvirt must not copy (a transfer past the backing aborts QEMU 7.2).
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from uvirt.testing.guest import comparable, run_uvirt
from uvirt.testing.picture import expected_rgb, first_difference, sprite_path
from uvirt.testing.qemu import DATA_DIR, VIRTIO_REFERENCES, strip_header

GPU = ("-device", "virtio-gpu-pci")


def _ppm_pixels(data: bytes) -> tuple[int, int, bytes]:
    magic, dims, maxval, rest = data.split(b"\n", 3)
    assert magic == b"P6" and maxval == b"255"
    w, h = map(int, dims.split())
    return w, h, rest


def _uvirt_shot(image, tmp_path, fmt: str, extra=GPU):
    out = tmp_path / f"uvirt.{fmt}"
    res = run_uvirt(image, (*extra, "-uvirt-screenshot", str(out)))
    return res, out.read_bytes()


def test_picture_pixel_by_pixel(firmware, tmp_path):
    """The resource holds the picture and the sprite that was transferred; the sprite
    drawn only in the guest-RAM shadow (never transferred) is not on the screen."""
    image = firmware("gpu_commands", defines={"SCREENDUMP": 1})
    res, ppm = _uvirt_shot(image, tmp_path, "ppm")
    assert "SCREEN READY" in res.debugcon and "FAIL" not in res.debugcon, res.debugcon
    w, h, rgb = _ppm_pixels(ppm)
    assert (w, h) == (320, 200)
    assert first_difference(rgb, expected_rgb(w, h, ((40, 40),)), w) is None


@pytest.mark.qemu
@pytest.mark.parametrize("mode", [1, 2], ids=["picture", "inactive-placeholder"])
def test_screendump_equals_qemu(mode, firmware, tmp_path):
    from uvirt.testing.qemu import qemu_screendumps
    image = firmware("gpu_commands", defines={"SCREENDUMP": mode})
    qres, dumps = qemu_screendumps(image, GPU)
    ures, uppm = _uvirt_shot(image, tmp_path, "ppm")
    assert comparable(ures.debugcon) == comparable(qres.debugcon)
    assert uppm == dumps["ppm"]
    _, upng = _uvirt_shot(image, tmp_path, "png")
    got, want = Image.open(io.BytesIO(upng)), Image.open(io.BytesIO(dumps["png"]))
    assert (got.mode, got.size) == (want.mode, want.size) == ("RGB", got.size)
    assert got.tobytes() == want.tobytes()


DESIGNS = {1: ("-device", "virtio-fb-pci,width=320,height=240"), 2: GPU}


@pytest.mark.parametrize("pattern", [1, 2], ids=["full-frames", "sprite"])
def test_both_designs_show_the_same_picture(pattern, firmware, tmp_path):
    """display_frames.S through virtio-fb (stores into the shared region + flush
    requests) and through virtio-gpu (a RAM shadow + TRANSFER_TO_HOST_2D and
    RESOURCE_FLUSH): the screens are identical and pixel for pixel the picture (with the
    sprite where the guest says it left it)."""
    shots = {}
    for design, dev in DESIGNS.items():
        image = firmware("display_frames", defines={"DESIGN": design, "PATTERN": pattern, "FRAMES": 45})
        out = tmp_path / f"d{design}.ppm"
        res = run_uvirt(image, (*dev, "-uvirt-screenshot", str(out)))
        assert res.guest_status == 0 and "<" + "." * 45 + ">" in res.debugcon, res.debugcon
        sprites = ()
        if pattern == 2:
            line = next(ln for ln in res.debugcon.splitlines() if ln.startswith("SPRITE "))
            x, y = map(int, line.split()[1:])
            assert (x, y) == sprite_path(45, 320, 240)
            sprites = ((x, y),)
        w, h, rgb = _ppm_pixels(out.read_bytes())
        assert (w, h) == (320, 240)
        assert first_difference(rgb, expected_rgb(w, h, sprites), w) is None
        shots[design] = out.read_bytes()
    assert shots[1] == shots[2]


@pytest.mark.qemu
def test_sprite_frames_screendump_equals_qemu(firmware):
    """45 sprite frames of partial TRANSFER_TO_HOST_2D (row by row from an offset) and
    RESOURCE_FLUSH: the same screen on QEMU 7.2 and uvirt, both taken over QMP."""
    import sys

    from uvirt.testing.qemu import qemu_screendumps
    image = firmware("display_frames", defines={"DESIGN": 2, "PATTERN": 2, "FRAMES": 45, "HOLD": 1})
    qres, qdumps = qemu_screendumps(image, GPU, formats=("ppm",))
    ures, udumps = qemu_screendumps(image, GPU, formats=("ppm",), emulator=[sys.executable, "-m", "uvirt", "run"])
    assert comparable(ures.debugcon) == comparable(qres.debugcon)
    assert udumps["ppm"] == qdumps["ppm"]
    w, h, rgb = _ppm_pixels(udumps["ppm"])
    assert first_difference(rgb, expected_rgb(w, h, (sprite_path(45, w, h),)), w) is None


@pytest.mark.parametrize("ref", sorted(r for r in VIRTIO_REFERENCES if r.startswith("gpu_")))
def test_transcript_equals_stored_qemu_reference(ref, firmware):
    """Without QEMU: uvirt's gpu_commands transcript equals the stored QEMU 7.2 one."""
    prog, extra = VIRTIO_REFERENCES[ref]
    got = run_uvirt(firmware(prog), extra)
    assert got.exit_code == 1
    assert comparable(got.debugcon) == comparable(strip_header((DATA_DIR / ref).read_text()))


@pytest.mark.parametrize("prop,message", [
    ("blob=on", "cannot enable blob resources without udmabuf"),
    ("max_outputs=17", "invalid max_outputs > 16"),
    ("max_hostmem=xyz", "Parameter 'max_hostmem' expects size"),
    ("edid=maybe", "Parameter 'edid' expects 'on' or 'off'"),
    ("xres=-1", "Parameter 'xres' expects uint32_t"),
])
def test_property_errors_are_qemus(prop, message, firmware):
    """QEMU 7.2's words for a bad virtio-gpu-pci property (checked against it by hand:
    ``qemu-system-x86_64 -device virtio-gpu-pci,PROP``)."""
    from uvirt.errors import OptionError
    with pytest.raises(OptionError) as e:
        run_uvirt(firmware("pci_enum"), ("-device", f"virtio-gpu-pci,{prop}"))
    assert str(e.value) == f"-device virtio-gpu-pci,{prop}: {message}"


def test_measurement_counts(tmp_path):
    """The deterministic half of `python -m benchmarks gpu_vs_fb` (no timing asserted):
    per frame one kick for either design, no port I/O, and virtio-gpu copies exactly the
    presented rectangles (virtio-fb nothing)."""
    from benchmarks.bench_gpu_vs_fb import _image, counts
    frames = 40
    for design in (1, 2):
        c = counts(design, 2, _image(design, 2, frames, 320, 240, tmp_path), frames, 320, 240)
        assert (c.kicks, c.pio) == (frames, 0)
        if design == 1:
            assert c.copied == 0
        else:
            # 8-pixel steps along a row: 40x32 rectangles, and a 320x64 one at each wrap;
            # a full-width rectangle at 0,0 is QEMU's fast path: the whole resource
            x = y = 0
            want = 0
            for _ in range(frames):
                ox, oy = x, y
                x += 8
                if x > 320 - 32:
                    x, y = 0, y + 32
                rx, ry, rw = min(ox, x), min(oy, y), max(ox, x) + 32 - min(ox, x)
                rh = max(oy, y) + 32 - ry
                want += 320 * 240 * 4 if (rx, ry, rw) == (0, 0, 320) else rw * rh * 4
            assert c.copied == want
