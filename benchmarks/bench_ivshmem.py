"""Issue 6 / 14 figures: ivshmem-doorbell, uvirt vs QEMU TCG in the same run.

* Doorbell round trip guest -> host peer -> guest (issue 14's target): the guest rings the
  host peer (id 0), a Python host thread (``IvshmemPeer``) rings it back, and the guest
  sees its MSI-X message land in RAM (benchmarks/guests/ivshmem_loop.S, MODE 0).  The same
  with the message aimed at the local APIC and the guest waiting for the interrupt in HLT
  (MODE 2), as an interrupt-driven driver waits, is reported beside it.
* Host <-> guest shared-memory throughput: per round the host writes CHUNK bytes and
  rings, the guest sums them and copies them to a second area, rings back, the host reads
  and checks the copy (MODE 1): 3 x CHUNK bytes cross the shared memory per round.

Both emulators run as a process with the same command line (``uvirt run`` / QEMU), against
the same server and the same host peer thread in this process, so the peer's cost is the
same on both sides.  The clock is the host peer's: it notes the time of every ring it
receives, so a round is the time between two of them, and boot, set-up and exit are not
in it.  The figure is the median round after the first tenth (``per_round``).  ``..._in_process`` runs uvirt as a ``Machine`` in this process instead
(the peer then shares the GIL with the emulator: what a test author hosting the peer
beside the machine gets); it is reported, not targeted.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable

from uvirt.ivshmem.peer import IvshmemPeer
from uvirt.ivshmem.server import IvshmemServer
from uvirt.testing.guest import run_uvirt
from uvirt.testing.qemu import BASE_ARGS, qemu_available, run_qemu

from .common import Result, build_guest

CHUNK = 0x40000
IN, OUT = 0x10000, 0x80000
MODE_POLLED, MODE_THROUGHPUT, MODE_INTERRUPT = 0, 1, 2
GUEST_PEER = 1                       # the host peer connects first and gets id 0


def _host_round_trip(peer: IvshmemPeer, stop: threading.Event, stamps: list[float]) -> None:
    while not stop.is_set():
        if peer.wait(vector=0, timeout=0.05) is not None:
            stamps.append(time.perf_counter())
            peer.ring(GUEST_PEER, 0)


def _host_throughput(peer: IvshmemPeer, stop: threading.Event, stamps: list[float]) -> None:
    mem = peer.memory
    data = [os.urandom(CHUNK), os.urandom(CHUNK)]
    last = None
    r = 0
    while not stop.is_set():
        if peer.wait(vector=0, timeout=0.05) is None:
            continue
        stamps.append(time.perf_counter())
        if last is not None and bytes(mem[OUT:OUT + CHUNK]) != last:
            raise AssertionError("guest copy differs from what the host wrote")
        last = data[r & 1]
        mem[IN:IN + CHUNK] = last
        r += 1
        peer.ring(GUEST_PEER, 0)


def per_round(stamps: list[float]) -> float:
    """Seconds per round from the host peer's ring times: the median round after the
    first tenth (warm-up: translation, first use of every path).  A median, not a mean:
    on a shared host a round now and then waits milliseconds for a CPU that another
    process holds, on either emulator, and a few of those would move a mean by more
    than the difference measured."""
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    gaps = gaps[len(gaps) // 10:]
    if len(gaps) < 10:
        raise ValueError(f"{len(stamps)} rounds are too few to measure")
    return statistics.median(gaps)


def run_uvirt_process(image: str, args: list[str], timeout: float = 60) -> int:
    """``uvirt run`` as a process with QEMU's command line (run_qemu's BASE_ARGS)."""
    with tempfile.TemporaryDirectory(prefix="uvirt-run-") as tmp:
        cmd = [sys.executable, "-m", "uvirt", "run", *BASE_ARGS, *args,
               "-debugcon", f"file:{os.path.join(tmp, 'con')}", "-kernel", image]
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout).returncode


def _uvirt_in_process(image: str, args: list[str]) -> int:
    return run_uvirt(image, args, timeout=60).exit_code


def _qemu(image: str, args: list[str]) -> int:
    return run_qemu(image, args, timeout=60).exit_code


def session(run: Callable[[str, list[str]], int], image: str, host) -> float:
    """One run of ``image`` against a fresh server and host peer: seconds per round."""
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "s")
        srv = IvshmemServer(sock, size=1 << 20, vectors=1).start()
        srv.start_thread()
        peer = IvshmemPeer.connect(sock, vectors=1, timeout=5)
        stop = threading.Event()
        stamps: list[float] = []
        t = threading.Thread(target=host, args=(peer, stop, stamps), daemon=True)
        t.start()
        args = ["-chardev", f"socket,path={sock},id=c", "-device", "ivshmem-doorbell,chardev=c,vectors=1"]
        try:
            code = run(image, args)
        finally:
            stop.set()
            t.join(5)
            peer.close()
            srv.close()
    if code != 1:
        raise RuntimeError(f"ivshmem benchmark guest exited {code} (expected 1)")
    return per_round(stamps)


def _compare(name: str, unit: str, mode: int, iters: int, host, reps: int, per_round_value,
             uvirt=run_uvirt_process, target: float | None = None) -> Result:
    if not qemu_available():
        return Result(name, "QEMU TCG", float("nan"), 0, 0, "report", False,
                      "SKIPPED: qemu-system-x86_64 not installed")
    with tempfile.TemporaryDirectory() as tmp:
        image = os.path.join(tmp, f"ivs{mode}.bin")
        with open(image, "wb") as f:
            f.write(build_guest("ivshmem_loop", ITERS=iters, MODE=mode, CHUNK=CHUNK))
        session(uvirt, image, host)                                # warm-up
        ratios, vu, vq = [], [], []
        for i in range(max(3, reps // 2)):
            if i % 2:
                q, u = session(_qemu, image, host), session(uvirt, image, host)
            else:
                u, q = session(uvirt, image, host), session(_qemu, image, host)
            ratios.append(q / u)
            vu.append(per_round_value(u))
            vq.append(per_round_value(q))
    med = statistics.median(ratios)
    goal, ok = ("report (no target set)", True) if target is None else (f">= {target:g}x", med >= target)
    return Result(name, "QEMU TCG (speed-up)", med, min(ratios), max(ratios), goal,
                  ok, f"(uvirt {statistics.median(vu):.1f} {unit}, QEMU {statistics.median(vq):.1f} {unit})")


def bench_ivshmem_round_trip(reps: int) -> Result:
    return _compare("ivshmem doorbell round trip guest->host->guest", "us", MODE_POLLED, 5000,
                    _host_round_trip, reps, lambda s: s * 1e6,
                    target=1)                      # issue 14: at most QEMU's time


def bench_ivshmem_round_trip_interrupt(reps: int) -> Result:
    return _compare("ivshmem round trip, MSI-X interrupt in HLT", "us", MODE_INTERRUPT, 5000,
                    _host_round_trip, reps, lambda s: s * 1e6)


def bench_ivshmem_round_trip_in_process(reps: int) -> Result:
    return _compare("ivshmem round trip, uvirt Machine + peer, 1 proc", "us", MODE_POLLED, 5000,
                    _host_round_trip, reps, lambda s: s * 1e6, uvirt=_uvirt_in_process)


def bench_ivshmem_throughput(reps: int) -> Result:
    return _compare("ivshmem host<->guest shared-memory throughput", "MB/s", MODE_THROUGHPUT, 300,
                    _host_throughput, reps, lambda s: 3 * CHUNK / s / 1e6)


BENCHMARKS = [bench_ivshmem_round_trip, bench_ivshmem_round_trip_interrupt,
              bench_ivshmem_round_trip_in_process, bench_ivshmem_throughput]
