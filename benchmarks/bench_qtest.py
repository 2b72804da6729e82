"""Issue 8 figure: QEMU 7.2's selected qtest suite (52 paths: qos-test virtio-rng/blk/
serial x transitional/legacy/modern + ivshmem-test -m slow), whole-suite wall time on
uvirt against the same suite on QEMU in the same run (``scripts/qtest-suite
--reference``, one process per path, run one after another).

The test binaries come from the suite's build cache; without it (or QEMU, or the build
dependencies) the first run builds them, which is not timed.  One repetition: a run is
minutes long, so ``--reps`` is not applied.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from uvirt.testing.qemu import qemu_available

from .common import Result

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "qtest-suite"
NAME = "QEMU qtest suite (52 paths), whole wall time"
TARGET = "<= 10x QEMU"


def _suite_times() -> tuple[float, float, str]:
    r = subprocess.run([sys.executable, str(SCRIPT), "--reference"], capture_output=True, text=True,
                       timeout=3600)
    walls = dict(re.findall(r"^(\S+): ([0-9.]+) s wall$", r.stdout, flags=re.M))
    passed = re.findall(r"^qtest: (\d+/\d+) passed$", r.stdout, flags=re.M)
    if "qemu" not in walls or "uvirt" not in walls:
        raise RuntimeError(f"qtest-suite gave no timings (exit {r.returncode}): {r.stderr.strip()[-400:]}")
    return float(walls["uvirt"]), float(walls["qemu"]), " / ".join(passed)


def bench_qtest_suite(reps: int) -> Result:
    if not qemu_available():
        return Result(NAME, "QEMU (same suite)", float("nan"), 0, 0, TARGET, False,
                      "SKIPPED: qemu-system-x86_64 not installed")
    build = subprocess.run([sys.executable, str(SCRIPT), "--build-only"], capture_output=True, text=True)
    if build.returncode != 0:
        return Result(NAME, "QEMU (same suite)", float("nan"), 0, 0, TARGET, False,
                      "SKIPPED: " + (build.stderr.strip().splitlines() or ["build failed"])[0])
    u, q, passed = _suite_times()           # one pair whatever --reps says: minutes per run
    ratio = u / q
    return Result(NAME, "QEMU (same suite)", ratio, ratio, ratio, TARGET, ratio <= 10,
                  f"(uvirt {u:.1f} s, QEMU {q:.1f} s; passed QEMU / uvirt: {passed})")


BENCHMARKS = [bench_qtest_suite]
