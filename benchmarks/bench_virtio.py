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


BENCHMARKS = [bench_rng_requests]
