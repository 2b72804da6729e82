"""Run every benchmark: ``.venv/bin/python -m benchmarks [--reps N] [NAME...]``.

Each line is a ratio measured against a baseline in the same run, with the median and
[min-max] over the repetitions, the target, and ok/MISS.  Exit status 1 if a target is
missed (so a script can gate on it); never part of the test suite.
"""

from __future__ import annotations

import argparse
import sys

from . import (bench_interrupts, bench_ivshmem, bench_machine, bench_qtest, bench_regions, bench_trace,
               bench_virtio)

SUITES = [bench_machine, bench_virtio, bench_regions, bench_qtest, bench_interrupts, bench_ivshmem,
          bench_trace]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("names", nargs="*", help="substrings of benchmark names to run")
    args = ap.parse_args(argv)
    missed = 0
    for suite in SUITES:
        for bench in suite.BENCHMARKS:
            if args.names and not any(n in bench.__name__ for n in args.names):
                continue
            r = bench(args.reps)
            print(r.line(), flush=True)
            missed += not r.ok
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
