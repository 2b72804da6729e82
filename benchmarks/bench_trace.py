"""Issue 16 figure: what tracing costs.  The same virtio-rng request loop (legacy I/O, one
kick, a pop, a used element and an interrupt decision per request) run untraced
(``uvirt run``'s path) and traced (``uvirt trace``'s: every access a declared event with
its instruction, ring events, the board's layout) in the same repetition; the ratio is
traced / untraced wall time of the whole run.  Report only: tracing is for looking at a
run, not for speed, but a ratio that grows says the untraced hot path started paying."""

from __future__ import annotations

import os
import tempfile

from uvirt.launch.traced import traced_run
from uvirt.testing.guest import run_uvirt
from uvirt.testing.qemu import BASE_ARGS

from .common import Result, build_guest, paired, summarize

ITERS = 2000
ARGS = ["-device", "virtio-rng-pci,disable-modern=on"]


def bench_trace_cost(reps: int) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        image = os.path.join(tmp, "rng.bin")
        with open(image, "wb") as f:
            f.write(build_guest("rng_loop", ITERS=ITERS))
        argv = [*BASE_ARGS, *ARGS, "-debugcon", "null", "-kernel", image]
        events = []

        def traced() -> None:
            rec = traced_run(argv)
            events.append(len(rec.events))

        ratios = paired(lambda: run_uvirt(image, ARGS), traced, max(3, reps // 2))
    med, lo, hi = summarize(ratios)
    return Result(f"traced run, {ITERS} rng requests", "the same run untraced", med, lo, hi,
                  "report (no target set)", True, f"({events[-1]} events per traced run)")


BENCHMARKS = [bench_trace_cost]
