"""Issue 18: the 2010 thread's argument, measured — a framebuffer the guest writes directly
(virtio-fb: a shared memory region behind a BAR, plus a flush request) against a shadow
in guest RAM copied by the device on request (virtio-gpu 2D: TRANSFER_TO_HOST_2D +
RESOURCE_FLUSH).

``python -m benchmarks gpu_vs_fb`` (or ``python -m benchmarks.bench_gpu_vs_fb [--reps N]
[--size WxH]``) prints one table: for each design and update pattern (full frames; a
moving 32x32 sprite) of firmware/display_frames.S —

* guest-visible time per frame: wall-clock time between the guest's '<' and '>' markers
  divided by the frames (what a guest reading a real-time clock sees), median over the
  repetitions, and its ratio to drawing the same frames with no device at all (DESIGN 0,
  measured in the same repetition: the machine is shared and noisy, ratios hold);
* bytes the host copies per frame (virtio-gpu: backing -> resource; virtio-fb: none, the
  region is the framebuffer);
* device exits per frame: port I/O (debugcon markers excluded), MMIO accesses to the
  device's registers, and of those the queue notifications (kicks);
* latency from the guest's last store of a frame to the host's display being told: the
  guest writes a marker byte right after its last store; the host time-stamps it and the
  device's handling of the flush (virtio-fb: the flush request; virtio-gpu: the
  RESOURCE_FLUSH that follows the transfer).  With virtio-fb the pixel is in host memory
  at the store itself (the same page): a host that polls instead of waiting for flushes
  sees it at its polling interval.

Counts come from one extra run per row with counters attached (they are deterministic);
times from runs without them.  The headline Result is the sprite row's ratio
virtio-gpu / virtio-fb time per frame (no target: the issue asks for the figure).

``--qemu`` adds the same frames on QEMU 7.2 itself (TCG), which has no virtio-fb: there
the shared-memory design is a framebuffer in ivshmem-plain's BAR 2 with no flush at all
(DESIGN 3), against virtio-gpu and drawing alone.  The markers travel over a socket
chardev in server mode, time-stamped by the reading host thread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from uvirt.backends.chardev import Chardev

from .common import Result

DESIGNS = {0: "drawing only", 1: "virtio-fb", 2: "virtio-gpu"}
PATTERNS = {1: "full frames", 2: "32x32 sprite", 3: "present only"}
FRAMES = {1: 30, 2: 400, 3: 400}


class _Marks(Chardev):
    """The debugcon: time-stamps the guest's markers, and runs ``at`` callbacks on them."""

    def __init__(self) -> None:
        self.text = bytearray()
        self.times: dict[str, list[float]] = {"<": [], ".": [], ">": []}
        self.at: dict[str, list] = {}
        self.inside = False

    def write(self, data: bytes) -> None:
        t = time.perf_counter()
        self.text += data
        for ch in data.decode("latin-1"):
            if ch == "<":
                self.inside = True
            if ch in self.times and (self.inside or ch == "<"):
                self.times[ch].append(t)
                for cb in self.at.get(ch, ()):
                    cb()
            if ch == ">":
                self.inside = False


@dataclass
class _Counts:
    pio: int = 0
    mmio: int = 0
    kicks: int = 0
    copied: int = 0
    snap: dict = field(default_factory=dict)


def _image(design: int, pattern: int, frames: int, w: int, h: int, tmp: Path) -> Path:
    from uvirt import firmware
    return firmware.build_to(firmware.bundled("display_frames"), tmp / f"d{design}p{pattern}.bin",
                             defines={"DESIGN": design, "PATTERN": pattern, "FRAMES": frames,
                                      "W": w, "H": h})


def _machine(design: int, image: Path, w: int, h: int):
    from uvirt.options import parse_argv
    from uvirt.launch.runner import build_machine
    args = ["-machine", "pc", "-accel", "tcg", "-m", "128M", "-nodefaults", "-no-reboot",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
    if design == 1:
        args += ["-device", f"virtio-fb-pci,width={w},height={h}"]
    elif design == 2:
        args += ["-device", "virtio-gpu-pci"]
    built = build_machine(parse_argv(args + ["-kernel", str(image)]))
    m = built.machine
    marks = _Marks()
    m.add_debugcon(marks)
    fn = built.devices[-1][1] if design else None
    return m, marks, fn


def _run(m, marks) -> None:
    try:
        stop = m.run(timeout=300)
    finally:
        m.close()
    if stop.exit_code != 1 or "FAIL" in marks.text.decode("latin-1"):
        raise RuntimeError(f"display_frames did not finish cleanly: {stop.report()}\n{marks.text.decode()}")


def time_per_frame(design: int, pattern: int, image: Path, frames: int, w: int, h: int) -> float:
    m, marks, _ = _machine(design, image, w, h)
    _run(m, marks)
    return (marks.times[">"][0] - marks.times["<"][0]) / frames


def latency(design: int, pattern: int, image: Path, w: int, h: int) -> list[float]:
    """Per frame: display told (flush handled) minus the guest's marker after its last store."""
    m, marks, fn = _machine(design, image, w, h)
    told: list[float] = []
    dev = fn.vdev
    if design == 2:
        dev.on_update.append(lambda head, rect: told.append(time.perf_counter()))
    else:
        handle = dev.handle_output

        def handled(index: int) -> None:
            handle(index)
            told.append(time.perf_counter())
        dev.handle_output = handled
    _run(m, marks)
    begin = marks.times["<"][0]
    stores = marks.times["."]
    after = [t for t in told if t > begin]
    return [t_told - t_store for t_store, t_told in zip(stores, after)]


def counts(design: int, pattern: int, image: Path, frames: int, w: int, h: int) -> _Counts:
    """Exits and bytes copied between the markers (counters on the transport's registers)."""
    m, marks, fn = _machine(design, image, w, h)
    c = _Counts()
    on = {"v": False}

    def pio(ev) -> None:
        if on["v"] and ev.name in ("pio_read", "pio_write") and ev.fields["port"] != 0xE9:
            c.pio += 1
            c.snap.setdefault("ports", {}).setdefault(ev.fields["port"], 0)
            c.snap["ports"][ev.fields["port"]] += 1
    m.tracer.sinks.append(pio)
    m.tracer.enabled = True
    if fn is not None:
        def counted(f, kick=False):
            def wrapper(*a):
                if on["v"]:
                    c.mmio += 1
                    c.kicks += kick
                return f(*a)
            return wrapper
        for name in ("common_read", "common_write", "read_isr"):
            setattr(fn, name, counted(getattr(fn, name)))
        fn.notify_write = counted(fn.notify_write, kick=True)
        fn.vdev.config_read = counted(fn.vdev.config_read)
        fn.vdev.config_store = counted(fn.vdev.config_store)

    def begin() -> None:
        on["v"] = True
        c.snap["copied"] = fn.vdev.stats.bytes_copied if design == 2 else 0

    def end() -> None:
        on["v"] = False
        if design == 2:
            c.copied = fn.vdev.stats.bytes_copied - c.snap["copied"]
    marks.at = {"<": [begin], ">": [end]}
    _run(m, marks)
    return c


QEMU_DESIGNS = {0: "drawing only", 3: "ivshmem framebuffer", 2: "virtio-gpu"}


def qemu_time_per_frame(design: int, image: Path, frames: int, w: int, h: int, tmp: Path) -> float:
    """One run on QEMU 7.2: the guest's markers time-stamped as they arrive on a socket."""
    import socket
    import subprocess

    from uvirt.testing.qemu import BASE_ARGS, qemu_binary
    sock = tmp / "marks.sock"
    devices = {0: [], 2: ["-device", "virtio-gpu-pci"],
               3: ["-object", f"memory-backend-ram,id=fb,size={max(1 << 20, 1 << (w * h * 4 - 1).bit_length())}",
                   "-device", "ivshmem-plain,memdev=fb"]}[design]
    proc = subprocess.Popen([qemu_binary(), *BASE_ARGS, *devices, "-chardev", f"socket,id=m,path={sock},server=on",
                             "-device", "isa-debugcon,iobase=0xe9,chardev=m", "-kernel", str(image)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(str(sock))
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("QEMU did not open its marker socket")
                time.sleep(0.01)
        begin = end = None
        text = b""
        while chunk := s.recv(65536):
            t = time.perf_counter()
            if begin is None and b"<" in chunk:
                begin = t
            if b">" in chunk:
                end = t
            text += chunk
        s.close()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if begin is None or end is None or b"FAIL" in text:
        raise RuntimeError(f"display_frames on QEMU: {text.decode('latin-1')}")
    return (end - begin) / frames


def measure_qemu(reps: int, w: int, h: int) -> dict:
    rows = {}
    with tempfile.TemporaryDirectory(prefix="uvirt-gpu-fb-qemu-") as tmp:
        for pattern, frames in FRAMES.items():
            frames *= 4                            # QEMU runs the frames faster
            images = {d: _image(d, pattern, frames, w, h, Path(tmp)) for d in QEMU_DESIGNS}
            per = {d: [] for d in QEMU_DESIGNS}
            for _ in range(reps):
                for d in QEMU_DESIGNS:
                    per[d].append(qemu_time_per_frame(d, images[d], frames, w, h, Path(tmp)))
            for d in QEMU_DESIGNS:
                ratios = [per[d][i] / per[0][i] for i in range(reps)]
                rows[(d, pattern)] = {"t": statistics.median(per[d]), "tlo": min(per[d]), "thi": max(per[d]),
                                      "ratio": statistics.median(ratios), "per": per[d]}
    return rows


def qemu_table(rows: dict, w: int, h: int, reps: int) -> str:
    lines = [f"QEMU 7.2 (TCG), {w}x{h}: a framebuffer in ivshmem-plain's BAR (no flush) vs "
             f"virtio-gpu; medians of {reps} repetitions [min-max]", "",
             "| design | pattern | guest time / frame | vs drawing only |", "| --- | --- | --- | --- |"]
    for pattern in PATTERNS:
        for d in QEMU_DESIGNS:
            if d == 0 and pattern == 3:
                continue
            r = rows[(d, pattern)]
            vs = f"{r['ratio']:.2f}x" if pattern != 3 else "-"
            lines.append(f"| {QEMU_DESIGNS[d]} | {PATTERNS[pattern]} | {r['t'] * 1e6:,.1f} us "
                         f"[{r['tlo'] * 1e6:,.1f}-{r['thi'] * 1e6:,.1f}] | {vs} |")
    lines.append("")
    for pattern in PATTERNS:
        pr = [g / f for g, f in zip(rows[(2, pattern)]["per"], rows[(3, pattern)]["per"])]
        lines.append(f"{PATTERNS[pattern]}: virtio-gpu / ivshmem framebuffer time per frame "
                     f"{statistics.median(pr):.2f}x [{min(pr):.2f}-{max(pr):.2f}]")
    return "\n".join(lines)


def measure(reps: int, w: int, h: int, out=sys.stdout) -> dict:
    rows = {}
    with tempfile.TemporaryDirectory(prefix="uvirt-gpu-fb-") as tmp:
        for pattern, frames in FRAMES.items():
            images = {d: _image(d, pattern, frames, w, h, Path(tmp)) for d in DESIGNS}
            per = {d: [] for d in DESIGNS}
            for _ in range(reps):
                for d in DESIGNS:
                    per[d].append(time_per_frame(d, pattern, images[d], frames, w, h))
            for d in DESIGNS:
                ratios = [per[d][i] / per[0][i] for i in range(reps)]
                row = {"t": statistics.median(per[d]), "tlo": min(per[d]), "thi": max(per[d]),
                       "ratio": statistics.median(ratios), "per": per[d]}
                if d:
                    c = counts(d, pattern, images[d], frames, w, h)
                    lat = latency(d, pattern, images[d], w, h)
                    row.update(copied=c.copied / frames, pio=c.pio / frames, mmio=c.mmio / frames,
                               kicks=c.kicks / frames, lat=statistics.median(lat), latlo=min(lat),
                               lathi=max(lat))
                rows[(d, pattern)] = row
    return rows


def table(rows: dict, w: int, h: int, reps: int) -> str:
    lines = [f"virtio-fb vs virtio-gpu: {w}x{h} XRGB8888, frames per run: full {FRAMES[1]}, "
             f"sprite {FRAMES[2]}, present only {FRAMES[3]}; medians of {reps} repetitions [min-max]",
             "",
             "| design | pattern | guest time / frame | vs drawing only | host bytes copied / frame "
             "| exits / frame: pio, mmio (kicks) | last store -> display told |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for pattern in PATTERNS:
        for d in DESIGNS:
            r = rows[(d, pattern)]
            t = f"{r['t'] * 1e6:,.0f} us [{r['tlo'] * 1e6:,.0f}-{r['thi'] * 1e6:,.0f}]"
            if d == 0:
                if pattern != 3:          # nothing is drawn in "present only": no baseline row
                    lines.append(f"| {DESIGNS[d]} | {PATTERNS[pattern]} | {t} | 1.00x | - | - | - |")
                continue
            lat = f"{r['lat'] * 1e6:,.1f} us [{r['latlo'] * 1e6:,.1f}-{r['lathi'] * 1e6:,.1f}]"
            vs = f"{r['ratio']:.2f}x" if pattern != 3 else "-"
            lines.append(f"| {DESIGNS[d]} | {PATTERNS[pattern]} | {t} | {vs} | "
                         f"{r['copied']:,.0f} | {r['pio']:g}, {r['mmio']:g} ({r['kicks']:g}) | {lat} |")
    lines.append("")
    for pattern in PATTERNS:
        fb, gpu = rows[(1, pattern)], rows[(2, pattern)]
        pr = [g / f for g, f in zip(gpu["per"], fb["per"])]
        draw = rows[(0, pattern)]
        if pattern == 3:
            extra = ""
        elif fb["t"] > draw["t"] and gpu["t"] > draw["t"]:
            over = (gpu["t"] - draw["t"]) / (fb["t"] - draw["t"])
            extra = f"; presenting cost (time above drawing only) gpu / fb {over:.2f}x (medians)"
        else:
            extra = "; presenting cost: below the noise of drawing (a median under drawing only's)"
        lines.append(f"{PATTERNS[pattern]}: virtio-gpu / virtio-fb time per frame "
                     f"{statistics.median(pr):.2f}x [{min(pr):.2f}-{max(pr):.2f}]{extra}")
    return "\n".join(lines)


def bench_gpu_vs_fb(reps: int, size: tuple[int, int] = (320, 240)) -> Result:
    w, h = size
    rows = measure(max(3, reps), w, h)
    print(table(rows, w, h, max(3, reps)), flush=True)
    pr = [g / f for g, f in zip(rows[(2, 2)]["per"], rows[(1, 2)]["per"])]
    med = statistics.median(pr)
    return Result("gpu_vs_fb: sprite, virtio-gpu / virtio-fb", "virtio-fb per frame", med, min(pr), max(pr),
                  "none (the figure is the point)", True, "see docs/gpu-vs-fb.md")


BENCHMARKS = [bench_gpu_vs_fb]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_gpu_vs_fb")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--size", default="320x240", help="WxH of the picture (default 320x240)")
    ap.add_argument("--qemu", action="store_true", help="also measure on QEMU 7.2 (ivshmem framebuffer "
                    "vs virtio-gpu)")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    print(bench_gpu_vs_fb(args.reps, (w, h)).line())
    if args.qemu:
        reps = max(3, args.reps)
        print()
        print(qemu_table(measure_qemu(reps, w, h), w, h, reps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
