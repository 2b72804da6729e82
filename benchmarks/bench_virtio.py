"""Issue 4 figures: virtio-rng request round trips, uvirt vs QEMU TCG in the same run.

Each side boots the same image twice, with N1 and N2 requests; the difference of the two
wall times divided by N2 - N1 is the time per request with boot and set-up cancelled out.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from uvirt.testing.guest import run_uvirt
from uvirt.testing.qemu import qemu_available, run_qemu

from .common import Result, build_guest

N1, N2 = 200, 5000
ARGS = ["-device", "virtio-rng-pci,disable-modern=on"]


def _per_request(run, paths) -> float:
    times = []
    for p in paths:
        t = time.perf_counter()
        r = run(p, ARGS)
        times.append(time.perf_counter() - t)
        assert r.exit_code == 1, r
    return (times[1] - times[0]) / (N2 - N1)


def bench_rng_requests(reps: int) -> Result:
    if not qemu_available():
        return Result("virtio-rng 16-byte request round trip", "QEMU TCG", float("nan"), 0, 0,
                      ">= 2x QEMU's rate", False, "SKIPPED: qemu-system-x86_64 not installed")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for n in (N1, N2):
            p = os.path.join(tmp, f"rng{n}.bin")
            with open(p, "wb") as f:
                f.write(build_guest("rng_loop", ITERS=n))
            paths.append(p)
        run_uvirt(paths[0], ARGS)                          # warm-up
        speedups, us_u, us_q = [], [], []
        for _ in range(max(3, reps // 2)):
            u = _per_request(run_uvirt, paths)
            q = _per_request(run_qemu, paths)
            speedups.append(q / u)
            us_u.append(u * 1e6)
            us_q.append(q * 1e6)
    med = statistics.median(speedups)
    return Result("virtio-rng 16-byte request round trip (legacy)", "QEMU TCG (speed-up)", med,
                  min(speedups), max(speedups), ">= 2x", med >= 2,
                  f"(uvirt {statistics.median(us_u):.1f} us, QEMU {statistics.median(us_q):.1f} us per request)")



DISK_SECTORS = 2048                    # a 1 MiB raw image


def blk_read_images(tmp: str, counts) -> tuple[list[str], list[str]]:
    """In ``tmp``: a random 1 MiB raw disk, and benchmarks/guests/blk_read_loop.S built for
    each request count; (the command-line arguments for the disk on a legacy virtio-blk,
    the images' paths)."""
    disk = os.path.join(tmp, "disk.img")
    with open(disk, "wb") as f:
        f.write(os.urandom(DISK_SECTORS * 512))
    args = ["-drive", f"file={disk},format=raw,if=none,id=d0",
            "-device", "virtio-blk-pci,drive=d0,disable-modern=on"]
    paths = []
    for n in counts:
        p = os.path.join(tmp, f"blk{n}.bin")
        with open(p, "wb") as f:
            f.write(build_guest("blk_read_loop", ITERS=n, DISK_SECTORS=DISK_SECTORS))
        paths.append(p)
    return args, paths


def bench_blk_reads(reps: int) -> Result:
    if not qemu_available():
        return Result("virtio-blk 4 KiB sequential reads", "QEMU TCG", float("nan"), 0, 0,
                      "report", False, "SKIPPED: qemu-system-x86_64 not installed")
    with tempfile.TemporaryDirectory() as tmp:
        n1, n2 = 100, 2000
        args, paths = blk_read_images(tmp, (n1, n2))

        def per_request(run) -> float:
            times = []
            for p in paths:
                t = time.perf_counter()
                r = run(p, args)
                times.append(time.perf_counter() - t)
                assert r.exit_code == 1, r
            return (times[1] - times[0]) / (n2 - n1)

        run_uvirt(paths[0], args)
        ratios, mb_u, mb_q = [], [], []
        for _ in range(max(3, reps // 2)):
            u, q = per_request(run_uvirt), per_request(run_qemu)
            ratios.append(q / u)
            mb_u.append(4096 / u / 1e6)
            mb_q.append(4096 / q / 1e6)
    med = statistics.median(ratios)
    return Result("virtio-blk 4 KiB sequential reads (legacy)", "QEMU TCG (throughput ratio)", med,
                  min(ratios), max(ratios), ">= 2x", med >= 2,     # issue 14
                  f"(uvirt {statistics.median(mb_u):.0f} MB/s, QEMU {statistics.median(mb_q):.0f} MB/s)")


BENCHMARKS = [bench_rng_requests, bench_blk_reads]
