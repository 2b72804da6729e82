"""Run every benchmark: ``.venv/bin/python -m benchmarks [--reps N] [NAME...]``.

Each line is a ratio measured against a baseline in the same run, with the median and
[min-max] over the repetitions, the target, and ok/MISS.  Exit status 1 if a target is
missed (so a script can gate on it); never part of the test suite.  The growth
benchmarks (bench_growth) print one line per point.

``--list`` names the benchmarks; ``--profile NAME`` runs the one benchmark whose name
contains NAME under cProfile and prints its top functions (by own time, and by
cumulative time), so work on a slow path starts from data rather than from a guess.
Only the calling thread is profiled: that is the CPU thread, where device callbacks run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys

from . import (bench_fuzz, bench_gpu_vs_fb, bench_growth, bench_interrupts, bench_ivshmem, bench_machine,
               bench_qtest, bench_regions, bench_seabios, bench_trace, bench_virtio)

SUITES = [bench_machine, bench_virtio, bench_regions, bench_qtest, bench_interrupts, bench_ivshmem,
          bench_growth, bench_gpu_vs_fb, bench_seabios, bench_trace, bench_fuzz]


def all_benchmarks() -> list:
    return [bench for suite in SUITES for bench in suite.BENCHMARKS]


def as_list(results) -> list:
    """A benchmark returns one Result, or a list of them (a growth table's points)."""
    return results if isinstance(results, list) else [results]


def profile(bench, reps: int, top: int) -> str:
    """The benchmark's result line and its top functions, as text."""
    prof = cProfile.Profile()
    results = as_list(prof.runcall(bench, reps))
    out = io.StringIO()
    out.writelines(r.line() + "\n" for r in results)
    for key in ("tottime", "cumulative"):
        out.write(f"\n-- top {top} by {key} --\n")
        pstats.Stats(prof, stream=out).strip_dirs().sort_stats(key).print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--list", action="store_true", help="name every benchmark and exit")
    ap.add_argument("--profile", metavar="NAME",
                    help="run the benchmark whose name contains NAME under cProfile")
    ap.add_argument("--top", type=int, default=25, help="functions shown by --profile")
    ap.add_argument("names", nargs="*", help="substrings of benchmark names to run")
    args = ap.parse_args(argv)
    benches = all_benchmarks()
    if args.list:
        print("\n".join(b.__name__ for b in benches))
        return 0
    if args.profile:
        found = [b for b in benches if args.profile in b.__name__]
        if len(found) != 1:
            names = ", ".join(b.__name__ for b in found) or "none"
            print(f"python -m benchmarks: --profile {args.profile!r} matches {names}; "
                  "name exactly one (--list)", file=sys.stderr)
            return 1
        print(profile(found[0], min(args.reps, 3), args.top), end="")
        return 0
    missed = 0
    for bench in benches:
        if args.names and not any(n in bench.__name__ for n in args.names):
            continue
        for r in as_list(bench(args.reps)):
            print(r.line(), flush=True)
            missed += not r.ok
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
