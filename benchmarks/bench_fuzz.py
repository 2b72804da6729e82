"""The fuzzer's speed (uvirt/fuzz/, uvirt/cpu/snapshot.py).

* Executions per second on virtio-rng and virtio-blk, snapshot reset before every input,
  guest backend (the operations run as x86 code; target >= 1,000/s per core) and board
  backend (direct calls; target >= 5,000/s).  Baseline in the same run: the same inputs,
  each on a fresh machine (built, booted to the harness, set up), as a fuzzer without
  snapshots would do.  The ratio is how many times faster snapshot reset is.
* Reset time against the pages an input dirtied: guest code writes one dword to each of
  N pages, then ``restore``; baseline: copying all 128 MiB of RAM back (what a restore
  without dirty tracking costs).

The inputs are 200 random operation streams (fixed seed), without atheris
instrumentation: what the machine and the device cost, not libFuzzer.
"""
from __future__ import annotations

import gc
import random
import statistics
import tempfile
import time
from pathlib import Path

from .common import Result, summarize

N_INPUTS = 200
N_FRESH = 4


def _inputs(seed: int = 1) -> list[bytes]:
    from uvirt.fuzz.engine import seeds
    from uvirt.fuzz.ops import SEPARATOR, OpKind, encode
    rnd = random.Random(seed)
    out = list(seeds())
    while len(out) < N_INPUTS:
        cmds = [encode(OpKind(rnd.randrange(len(OpKind))), rnd.randbytes(rnd.randrange(2, 16)))
                for _ in range(rnd.randrange(1, 8))]
        out.append(SEPARATOR.join(cmds))
    return out


def _device(name: str, tmp: Path) -> list[str]:
    if name == "rng":
        return ["-device", "virtio-rng-pci,seed=1"]
    disk = tmp / "disk.img"
    if not disk.exists():
        disk.write_bytes(bytes(1 << 20))
    return ["-drive", f"file={disk},format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0"]


def _rate(device: str, backend: str, reps: int) -> tuple[list[float], list[float]]:
    """(snapshot exec/s per repetition, speedup over a fresh machine per repetition)"""
    from uvirt.fuzz.engine import Harness
    from uvirt.fuzz.target import FuzzTarget
    inputs = _inputs()
    rates, speedups = [], []
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        argv = _device(device, Path(tmp))
        target = FuzzTarget(argv, cpu=backend == "guest")
        h = Harness(target, backend)
        for data in inputs[:20]:
            h.execute(data)                                   # warm-up: translation caches
        for _ in range(reps):
            # the fresh machines of the last repetition are cyclic garbage: collected
            # here, not inside the snapshot loop's window (they are the baseline's cost)
            gc.collect()
            t = time.perf_counter()
            for data in inputs:
                h.execute(data)
            per_snap = (time.perf_counter() - t) / len(inputs)
            gc.collect()
            t = time.perf_counter()
            for data in inputs[:N_FRESH]:
                fresh = FuzzTarget(argv, cpu=backend == "guest")
                Harness(fresh, backend).execute(data)
                fresh.close()
            per_fresh = (time.perf_counter() - t) / N_FRESH
            rates.append(1 / per_snap)
            speedups.append(per_fresh / per_snap)
        target.close()
    return rates, speedups


def _exec_bench(device: str, backend: str, target_rate: int):
    name = f"fuzz_{device}_{backend}_snapshot_execs"

    def bench(reps: int) -> Result:
        rates, speedups = _rate(device, backend, max(1, min(reps, 3)))
        med, lo, hi = summarize(speedups)
        rate = statistics.median(rates)
        return Result(name, "fresh machine per input", med, lo, hi,
                      f">= {target_rate}/s", rate >= target_rate,
                      f"({rate:.0f} exec/s per core with snapshot reset; ratio = speedup)")
    bench.__name__ = f"bench_{name}"
    return bench


def bench_fuzz_reset_vs_pages(reps: int) -> list[Result]:
    """Restore time for N dirtied pages, against copying all of RAM back."""
    from uvirt.fuzz.backends import compile_ops
    from uvirt.fuzz.ops import BUF_BASE, Op, OpKind
    from uvirt.fuzz.target import FuzzTarget, settle
    t = FuzzTarget(["-device", "virtio-rng-pci,seed=1"])
    m = t.machine
    ram = m.ram.buffer.view
    saved = bytes(ram[:m.ram.size])
    out = []
    for pages in (1, 16, 256, 1024):
        prims = tuple(("ram", BUF_BASE + 0x1000 * i if i < 256 else 0x02000000 + 0x1000 * i, b"\x01\x02\x03\x04")
                      for i in range(pages))
        ops = [Op(OpKind.RAM_WRITE, f"{pages} pages", prims)]
        from uvirt.fuzz.backends import GuestBackend
        g = GuestBackend(t)
        ratios = []
        for _ in range(max(3, reps)):
            t.reset()
            g.run(ops)
            t0 = time.perf_counter()
            t.reset()
            dt = time.perf_counter() - t0
            t1 = time.perf_counter()
            ram[:m.ram.size] = saved                     # the baseline: all of RAM
            full = time.perf_counter() - t1
            ratios.append(dt / full)
        assert t.snap.pages_restored >= 0
        med, lo, hi = summarize(ratios)
        out.append(Result(f"fuzz_reset_{pages}_dirty_pages", "copying all 128 MiB back", med, lo, hi,
                          "< 1", med < 1, f"({t.snap.pages_restored} pages restored)"))
    settle(m)
    t.close()
    return out


BENCHMARKS = [_exec_bench("rng", "guest", 1000), _exec_bench("blk", "guest", 1000),
              _exec_bench("rng", "board", 5000), _exec_bench("blk", "board", 5000),
              bench_fuzz_reset_vs_pages]
