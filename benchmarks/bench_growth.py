"""How costs grow (issue 14 item 5): one line per point, uvirt beside QEMU 7.2 TCG.

Every point runs the same guest image on both emulators with N1 and N2 iterations; the
difference of the wall times over N2 - N1 is the cost of one iteration with boot and
set-up cancelled out (as bench_virtio does).  The guests are benchmarks/guests/*.S.  The ratio on each line is QEMU's time over
uvirt's (a speed-up: above 1 uvirt is faster); the detail column has both times.

* virtio-rng, one device-writable descriptor of 16 B .. 64 KiB per request (legacy);
* virtio-blk, a 4 KiB read whose data buffer is split over 1, 4 or 16 descriptors
  (plus header and status: chains of 3, 6 and 18) — QEMU's rng queue has 8 entries,
  so chain length is measured on blk, whose queue has 256;
* MSI round trips rotating over 1, 4 or 16 vectors;
* create + firmware step + boot + exit in-process against guest RAM size (128 MiB ..
  2 GiB), beside launching QEMU with the same -m (as bench_boot).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time

from uvirt.testing.guest import run_uvirt
from uvirt.testing.qemu import qemu_available, run_qemu

from .bench_interrupts import round_trips
from .bench_machine import run_uvirt as run_machine
from .common import Result, build_guest, paired, timed





def _images(tmp: str, guest: str, n1: int, n2: int, **defines: int) -> tuple[str, str]:
    """benchmarks/guests/GUEST.S built with ITERS = n1 and n2 (and the other defines)."""
    tag = "_".join([guest, *(f"{k}{v}" for k, v in defines.items())])
    paths = []
    for n in (n1, n2):
        p = os.path.join(tmp, f"{tag}_{n}.bin")
        with open(p, "wb") as f:
            f.write(build_guest(guest, ITERS=n, **defines))
        paths.append(p)
    return paths[0], paths[1]


def _per_iteration(run, paths: tuple[str, str], args: list[str], n1: int, n2: int) -> float:
    times = []
    for p in paths:
        t = time.perf_counter()
        r = run(p, args)
        times.append(time.perf_counter() - t)
        assert r.exit_code == 1, (p, r)          # the guest's EXIT 0
    return (times[1] - times[0]) / (n2 - n1)


def _point(name: str, tmp: str, guest: str, args: list[str], n1: int, n2: int,
           reps: int, **defines: int) -> Result:
    paths = _images(tmp, guest, n1, n2, **defines)
    run_uvirt(paths[0], args), run_qemu(paths[0], args)         # warm-up
    speedups, us_u, us_q = [], [], []
    for _ in range(max(3, reps // 2)):
        u = _per_iteration(run_uvirt, paths, args, n1, n2)
        q = _per_iteration(run_qemu, paths, args, n1, n2)
        if u <= 0 or q <= 0:
            continue
        speedups.append(q / u)
        us_u.append(u * 1e6)
        us_q.append(q * 1e6)
    med = statistics.median(speedups)
    return Result(name, "QEMU TCG (speed-up)", med, min(speedups), max(speedups), "report", True,
                  f"(uvirt {statistics.median(us_u):.1f} us, QEMU {statistics.median(us_q):.1f} us)")


def _skipped(name: str) -> list[Result]:
    return [Result(name, "QEMU TCG", float("nan"), 0, 0, "report", False,
                   "SKIPPED: qemu-system-x86_64 not installed")]


def growth_rng_size(reps: int) -> list[Result]:
    if not qemu_available():
        return _skipped("growth: virtio-rng request size")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (16, 256, 4096, 65536):
            n1, n2 = (100, 2000) if size <= 4096 else (50, 500)
            out.append(_point(f"growth: virtio-rng request, {size} B", tmp, "rng_loop",
                              ["-device", "virtio-rng-pci,disable-modern=on"], n1, n2, reps,
                              SIZE=size))
    return out


def growth_blk_chain(reps: int) -> list[Result]:
    if not qemu_available():
        return _skipped("growth: virtio-blk chain length")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        disk = os.path.join(tmp, "disk.img")
        with open(disk, "wb") as f:
            f.write(os.urandom(64 * 1024))
        args = ["-drive", f"file={disk},format=raw,if=none,id=d0",
                "-device", "virtio-blk-pci,drive=d0,disable-modern=on"]
        for chain in (1, 4, 16):
            out.append(_point(f"growth: virtio-blk 4 KiB read, {chain + 2} descriptors", tmp,
                              "blk_read_loop", args, 100, 1500, reps, CHAIN=chain,
                              DISK_SECTORS=128))
    return out


def growth_irq_vectors(reps: int) -> list[Result]:
    """bench_interrupts' measurement (in-process uvirt, 100,000 round trips: QEMU's
    start-up noise made 2,800 swing between 2.4 and 6.5 us), per number of vectors."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return _skipped("growth: MSI vectors")
    out = []
    for vectors in (1, 4, 16):
        us, qs = round_trips(qemu, max(3, reps // 2), vectors)
        speedups = [q / u for u, q in zip(us, qs)]
        out.append(Result(f"growth: MSI round trip over {vectors} vectors", "QEMU TCG (speed-up)",
                          statistics.median(speedups), min(speedups), max(speedups), "report", True,
                          f"(uvirt {statistics.median(us) * 1e6:.1f} us, "
                          f"QEMU {statistics.median(qs) * 1e6:.1f} us)"))
    return out


def growth_boot_ram(reps: int) -> list[Result]:
    """In-process create + firmware step + boot + exit (as bench_boot) against RAM size,
    beside launching QEMU with the same -m."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return _skipped("growth: boot against RAM size")
    out = []
    image = build_guest("empty")
    inner = 10
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "empty.bin")
        with open(path, "wb") as f:
            f.write(image)
        for ram, size in (("128M", 128 << 20), ("512M", 512 << 20), ("2G", 2 << 30)):
            args = [qemu, "-machine", "pc", "-accel", "tcg", "-m", ram, "-nodefaults", "-nographic",
                    "-display", "none", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                    "-debugcon", f"file:{tmp}/out.txt", "-kernel", path]

            def qemu_run():
                r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True)
                assert r.returncode == 1, r.stderr

            def uvirt_runs():
                for _ in range(inner):
                    run_machine(image, ram_size=size)

            ratios = paired(qemu_run, uvirt_runs, reps)
            speedups = [inner / r for r in ratios]
            q_ms = timed(qemu_run) * 1e3
            u_ms = timed(uvirt_runs) * 1e3 / inner
            out.append(Result(f"growth: create + boot + exit, -m {ram}", "launching QEMU (speed-up)",
                              statistics.median(speedups), min(speedups), max(speedups), "report",
                              True, f"(uvirt {u_ms:.2f} ms in-process, QEMU {q_ms:.0f} ms)"))
    return out


BENCHMARKS = [growth_rng_size, growth_blk_chain, growth_irq_vectors, growth_boot_ram]
