"""The ring inspector: snapshots at kicks, interrupt decisions and the stop; the rich view;
the HTML page, rendered by headless Chromium and checked from its screenshot."""

import os

import pytest

from uvirt.observe.inspector import KIND_COLOURS, render_html, render_terminal
from uvirt.launch.traced import traced_run
from uvirt.testing import browser
from uvirt.testing.qemu import BASE_ARGS

RNG = ["-device", "virtio-rng-pci", "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-debugcon", "null"]


def inspect(image):
    return traced_run([*BASE_ARGS, *RNG, "-kernel", str(image)], inspect=True)


def test_demo_steps_show_the_ring_before_and_after_the_device(firmware):
    rec = inspect(firmware("virtio_demo"))
    assert [s["kind"] for s in rec.snapshots] == ["kick", "irq raised", "stop"]
    before, after, stop = rec.snapshots
    (q,) = before["queues"]
    assert (q["desc_addr"], q["avail_addr"], q["used_addr"]) == (0x200000, 0x200080, 0x201000)
    assert q["descs"][0] | {"bytes": None} == {"i": 0, "addr": 0x300000, "len": 16, "flags": 2,
                                               "flag_names": "WRITE", "next": 1, "bytes": None}
    assert q["descs"][0]["bytes"] == " ".join(["00"] * 16)          # zeroed by the driver
    assert q["avail"]["idx"] == 1 and q["used"]["idx"] == 0
    assert q["chains"] == [{"avail_idx": 0, "slot": 0, "head": 0, "pending": True, "descs": [0], "error": None}]
    (q,) = after["queues"]
    assert q["used"]["idx"] == 1 and q["used"]["ring"][0] == [0, 16]
    assert q["chains"][0]["pending"] is False and q["last_avail_idx"] == 1
    assert q["descs"][0]["bytes"] != " ".join(["00"] * 16)          # entropy arrived
    assert before["insn"] == "out dx, ax" and after["status"] == 7
    assert stop["queues"] == []                                      # the demo resets at the end


def test_chains_are_followed(firmware):
    rec = inspect(firmware("virtio_rng_legacy"))
    chains = [c for s in rec.snapshots for q in s["queues"] for c in q["chains"]]
    assert any(len(c["descs"]) == 2 and c["error"] is None for c in chains)   # the 8 + 8 request


def test_terminal_view_draws_the_three_areas(firmware):
    from rich.console import Console
    rec = inspect(firmware("virtio_demo"))
    con = Console(record=True, width=140, color_system=None)
    render_terminal(rec, console=con)
    text = con.export_text()
    for want in ("descriptor table (§2.7.5)", "available ring (§2.7.6)", "used ring (§2.7.8)",
                 "chain @0", "0  pending", "0  consumed", "id 0, len 16", "interrupt raised",
                 "0x300000"):
        assert want in text, want


def _need_chromium():
    if browser.chromium_path() is not None:
        return
    reason = "chromium not installed (scripts/setup --test installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: the inspector page cannot be rendered: {reason}", pytrace=False)
    pytest.skip(reason)


def _rgb(hex_colour):
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def _count(img, colour, box=None, tol=8):
    region = img.crop(box) if box else img
    return sum(n for n, px in region.getcolors(1 << 20) if all(abs(a - b) <= tol for a, b in zip(px, colour)))


@pytest.mark.slow
def test_html_page_in_headless_chromium(firmware, tmp_path):
    _need_chromium()
    from PIL import Image
    rec = inspect(firmware("virtio_demo"))
    page = tmp_path / "inspect.html"
    page.write_text(render_html(rec, title="virtio_demo.S on virtio-rng-pci"))
    html = page.read_text()
    assert "<script" not in html and "http" not in html.replace("http-equiv", "")   # self-contained
    png = browser.screenshot(page, tmp_path / "inspect.png", width=1280, height=1000)
    img = Image.open(png).convert("RGB")
    assert img.size == (1280, 1000)
    assert len(img.getcolors(1 << 20)) > 50                         # not blank
    w = img.size[0]
    assert _count(img, _rgb("#1a237e"), (0, 0, w, 60)) > 20000      # the header bar
    # the timeline: one chip per step, coloured by what happened
    for kind in ("kick", "irq raised", "stop"):
        assert _count(img, _rgb(KIND_COLOURS[kind]), (0, 90, w, 160)) > 300, kind
    # the three ring areas' table headers of the first step
    for colour in ("#2e7d32", "#ef6c00", "#6a1b9a"):
        assert _count(img, _rgb(colour), (0, 160, w, 400)) > 300, colour


def test_each_html_step_carries_the_trace_that_led_to_it(firmware):
    from uvirt.observe.inspector import _trace_slices
    rec = inspect(firmware("virtio_demo"))
    kick, irq, stop = _trace_slices(rec)
    assert "legacy QUEUE_NOTIFY <- 0x0000: kick queue 0" in kick[-2] and "KICK q0" in kick[-1]
    assert any("POP q0 chain head 0" in ln for ln in irq) and "INTERRUPT q0 raised" in irq[-1]
    assert stop[-2].startswith("isa-debug-exit") and stop[-1].startswith("stop debug_exit")
    assert "decoded trace before this step" in render_html(rec)
