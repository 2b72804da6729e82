"""Issue 7 figures: interrupt delivery, uvirt against QEMU TCG in the same run.

The guest (guests/msi_loop.S) raises an MSI (a 32-bit store of vector 0x41 to
0xFEE00000, exactly what a device's MSI write does on both emulators), waits with IF=1
until the handler has run (it counts and writes the APIC EOI), N times.  Each emulator runs the image with N and
with 0 iterations; (T(N) - T(0)) / N is the cost of one interrupt round trip: device
raises -> handler runs -> EOI -> back in the main loop (the latency), and its inverse
the interrupts per second.  The ratio is uvirt's time per interrupt over QEMU's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from .bench_machine import run_uvirt
from .common import Result, build_guest, summarize

def _image(tmp: str, iters: int) -> str:
    path = os.path.join(tmp, f"msi_loop_{iters}.bin")
    with open(path, "wb") as f:
        f.write(build_guest("msi_loop", ITERS=iters))
    return path


def _uvirt(path: str) -> float:
    with open(path, "rb") as f:
        image = f.read()
    t = time.perf_counter()
    run_uvirt(image)
    return time.perf_counter() - t


def _qemu(qemu: str, path: str, tmp: str) -> float:
    args = [qemu, "-machine", "pc", "-accel", "tcg", "-m", "128M", "-nodefaults", "-nographic",
            "-display", "none", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-debugcon", f"file:{tmp}/out.txt", "-kernel", path]
    t = time.perf_counter()
    r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True)
    assert r.returncode == 1, r.stderr
    return time.perf_counter() - t


def bench_interrupt_round_trip(reps: int) -> Result:
    n = 5000
    qemu = shutil.which("qemu-system-x86_64")
    name = f"MSI -> handler -> EOI round trip ({n})"
    if qemu is None:
        return Result(name, "QEMU 7.2 TCG", float("nan"), 0, 0, "report", True,
                      "SKIPPED: qemu-system-x86_64 not installed")
    with tempfile.TemporaryDirectory() as tmp:
        full, empty = _image(tmp, n), _image(tmp, 0)
        _uvirt(full), _qemu(qemu, full, tmp)           # warm-up
        ratios, u_rates, q_rates = [], [], []
        for _ in range(reps):
            u = (_uvirt(full) - _uvirt(empty)) / n
            q = (_qemu(qemu, full, tmp) - _qemu(qemu, empty, tmp)) / n
            if u <= 0 or q <= 0:
                continue
            ratios.append(u / q)
            u_rates.append(1 / u)
            q_rates.append(1 / q)
    med, lo, hi = summarize(ratios)
    u_rate, q_rate = summarize(u_rates)[0], summarize(q_rates)[0]
    return Result(name, "QEMU 7.2 TCG, same guest", med, lo, hi, "<= 3x", med <= 3,   # issue 14
                  f"(uvirt {1e6 / u_rate:.1f} us = {u_rate / 1e3:.1f} k irq/s; "
                  f"QEMU {1e6 / q_rate:.1f} us = {q_rate / 1e3:.1f} k irq/s)")


BENCHMARKS = [bench_interrupt_round_trip]
