"""Issue 8 figure: QEMU 7.2's selected qtest suite (52 paths: qos-test virtio-rng/blk/
serial x transitional/legacy/modern + ivshmem-test -m slow), whole-suite wall time on
uvirt against the same suite on QEMU in the same run (``scripts/qtest-suite
--reference``, one process per path, run one after another).

The test binaries come from the suite's build cache; without it (or QEMU, or the build
dependencies) the first run builds them, which is not timed.  One repetition: a run is
minutes long, so ``--reps`` is not applied.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
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


def _build_suite() -> tuple[str | None, str]:
    """The suite's test binaries and QEMU's qtest accelerator module, built once and
    cached: (their folder, "") or (None, why not)."""
    if not qemu_available():
        return None, "qemu-system-x86_64 not installed"
    build = subprocess.run([sys.executable, str(SCRIPT), "--build-only"], capture_output=True, text=True)
    found = re.search(r"binaries in (\S+)", build.stdout + build.stderr)
    if build.returncode != 0 or not found:
        return None, (build.stderr.strip().splitlines() or ["build failed"])[0]
    return found.group(1), ""


def bench_qtest_suite(reps: int) -> Result:
    bindir, why = _build_suite()
    if bindir is None:
        return Result(NAME, "QEMU (same suite)", float("nan"), 0, 0, TARGET, False, "SKIPPED: " + why)
    u, q, passed = _suite_times()           # one pair whatever --reps says: minutes per run
    ratio = u / q
    return Result(NAME, "QEMU (same suite)", ratio, ratio, ratio, TARGET, ratio <= 10,
                  f"(uvirt {u:.1f} s, QEMU {q:.1f} s; passed QEMU / uvirt: {passed})")



# -- qtest request rate (issue 14 item 5) ------------------------------------------------
#
# libqtest's pattern: the test listens on a unix socket, the emulator is started with
# ``-accel qtest -qtest unix:PATH`` and connects to it, and every request waits for its
# reply line.  A session sends WARM requests (not timed: first-use costs on both sides),
# then N timed ones; the figure is one request's round trip.  Both emulators run as
# processes with the same command line and are ended as libqtest's qtest_quit() does, by
# SIGTERM (neither exits when the qtest socket closes).

QTEST_REQUESTS = [
    ("PCI config read (outl 0xcf8 + inl 0xcfc)", ["outl 0xcf8 0x80000000", "inl 0xcfc"]),
    ("RAM readl", ["readl 0x100000"]),
    ("RAM 4 KiB read", ["read 0x100000 0x1000"]),
    ("clock_step 1 ms", ["clock_step 1000000"]),
]


def _qtest_session(cmd: list[str], lines: list[str], warm: int, count: int, tmp: str,
                   env: dict[str, str] | None = None) -> float:
    """Seconds per round of LINES, over COUNT rounds after WARM untimed ones."""
    path = os.path.join(tmp, "qtest.sock")
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(30)
    proc = subprocess.Popen([*cmd, "-machine", "pc", "-accel", "qtest", "-qtest", f"unix:{path}",
                             "-display", "none", "-nodefaults", "-m", "128M"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    try:
        conn, _ = srv.accept()
        replies = conn.makefile("rb")       # buffered: a 4 KiB read's reply is 8 KiB of hex

        def rounds(n: int) -> None:
            for _ in range(n):
                for ln in lines:
                    conn.sendall(ln.encode() + b"\n")
                    reply = replies.readline()
                    if not reply.startswith(b"OK"):
                        raise RuntimeError(f"{cmd[0]}: {ln!r} gave {reply!r}")

        rounds(warm)
        t0 = time.perf_counter()
        rounds(count)
        dt = time.perf_counter() - t0
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        conn.close()
        return dt / count
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        srv.close()


def growth_qtest_rate(reps: int) -> list[Result]:
    """One line per request kind: QEMU's round trip over uvirt's (a speed-up)."""
    bindir, why = _build_suite()
    if bindir is None:
        return [Result("growth: qtest request rate", "QEMU", float("nan"), 0, 0, "report", False,
                       "SKIPPED: " + why)]
    # Debian's QEMU leaves the qtest accelerator out: the suite's build has it
    qemu = (["qemu-system-x86_64"], {**os.environ, "QEMU_MODULE_DIR": bindir})
    venv = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python"
    uvirt = ([str(venv if venv.exists() else sys.executable), "-m", "uvirt", "run"], None)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, lines in QTEST_REQUESTS:
            speedups, us_u, us_q = [], [], []
            for i in range(max(3, reps // 2)):
                def per_request(emu) -> float:
                    return _qtest_session(emu[0], lines, 300, 3000, tmp, env=emu[1])

                if i % 2:                       # each goes first in turn
                    q, u = per_request(qemu), per_request(uvirt)
                else:
                    u, q = per_request(uvirt), per_request(qemu)
                speedups.append(q / u)
                us_u.append(u * 1e6)
                us_q.append(q * 1e6)
            out.append(Result(f"growth: qtest {label}", "QEMU qtest (speed-up)", statistics.median(speedups),
                              min(speedups), max(speedups), "report", True,
                              f"(uvirt {statistics.median(us_u):.1f} us, QEMU {statistics.median(us_q):.1f} us"
                              f" per {'pair' if len(lines) > 1 else 'request'})"))
    return out


BENCHMARKS = [bench_qtest_suite, growth_qtest_rate]
