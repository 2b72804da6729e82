"""Issue 6 figures: ivshmem-doorbell, uvirt vs QEMU TCG in the same run.

* Doorbell round trip guest -> host peer -> guest: the guest rings the host peer (id 0),
  a Python host thread (``IvshmemPeer``) rings it back, the guest sees its MSI-X message
  land in RAM (benchmarks/guests/ivshmem_loop.S, MODE 0).
* Host <-> guest shared-memory throughput: per round the host writes CHUNK bytes and
  rings, the guest sums them and copies them to a second area, rings back, the host reads
  and checks the copy (MODE 1): 3 x CHUNK bytes cross the shared memory per round.

Each side boots the same image with N1 and N2 iterations against a fresh server; the
difference of the two wall times over N2 - N1 cancels boot and set-up.  The host peer is
the same Python code for both (for uvirt it shares the process, and the GIL, with the
emulator: that is the cost uvirt users pay).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time

from uvirt.ivshmem.peer import IvshmemPeer
from uvirt.ivshmem.server import IvshmemServer
from uvirt.testing.guest import run_uvirt
from uvirt.testing.qemu import qemu_available, run_qemu

from .common import Result, build_guest

CHUNK = 0x40000
IN, OUT = 0x10000, 0x80000


def _host_round_trip(peer: IvshmemPeer, stop: threading.Event) -> None:
    while not stop.is_set():
        if peer.wait(vector=0, timeout=0.05) is not None:
            peer.ring(1, 0)


def _host_throughput(peer: IvshmemPeer, stop: threading.Event) -> None:
    mem = peer.memory
    data = [os.urandom(CHUNK), os.urandom(CHUNK)]
    last = None
    r = 0
    while not stop.is_set():
        if peer.wait(vector=0, timeout=0.05) is None:
            continue
        if last is not None and bytes(mem[OUT:OUT + CHUNK]) != last:
            raise AssertionError("guest copy differs from what the host wrote")
        last = data[r & 1]
        mem[IN:IN + CHUNK] = last
        r += 1
        peer.ring(1, 0)


def _session(run, image: str, host) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "s")
        srv = IvshmemServer(sock, size=1 << 20, vectors=1).start()
        srv.start_thread()
        peer = IvshmemPeer.connect(sock, vectors=1, timeout=5)
        stop = threading.Event()
        t = threading.Thread(target=host, args=(peer, stop), daemon=True)
        t.start()
        args = ["-chardev", f"socket,path={sock},id=c", "-device", "ivshmem-doorbell,chardev=c,vectors=1"]
        try:
            t0 = time.perf_counter()
            res = run(image, args)
            elapsed = time.perf_counter() - t0
        finally:
            stop.set()
            t.join(5)
            peer.close()
            srv.close()
    assert res.exit_code == 1, res
    return elapsed


def _compare(name: str, unit: str, mode: int, n1: int, n2: int, host, reps: int, per_iter_value,
             target: float | None = None):
    if not qemu_available():
        return Result(name, "QEMU TCG", float("nan"), 0, 0, "report", False,
                      "SKIPPED: qemu-system-x86_64 not installed")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for n in (n1, n2):
            p = os.path.join(tmp, f"ivs{mode}_{n}.bin")
            with open(p, "wb") as f:
                f.write(build_guest("ivshmem_loop", ITERS=n, MODE=mode, CHUNK=CHUNK))
            paths.append(p)

        def per_iter(run) -> float:
            a, b = (_session(run, p, host) for p in paths)
            return (b - a) / (n2 - n1)

        per_iter(run_uvirt)                                # warm-up
        ratios, vu, vq = [], [], []
        for _ in range(max(3, reps // 2)):
            u, q = per_iter(run_uvirt), per_iter(run_qemu)
            ratios.append(q / u)
            vu.append(per_iter_value(u))
            vq.append(per_iter_value(q))
    med = statistics.median(ratios)
    goal, ok = ("report (no target set)", True) if target is None else (f">= {target:g}x", med >= target)
    return Result(name, "QEMU TCG (speed-up)", med, min(ratios), max(ratios), goal,
                  ok, f"(uvirt {statistics.median(vu):.1f} {unit}, QEMU {statistics.median(vq):.1f} {unit})")


def bench_ivshmem_round_trip(reps: int) -> Result:
    return _compare("ivshmem doorbell round trip guest->host->guest", "us", 0, 100, 2000,
                    _host_round_trip, reps, lambda s: s * 1e6,
                    target=1)                      # issue 14: at most QEMU's time


def bench_ivshmem_throughput(reps: int) -> Result:
    return _compare("ivshmem host<->guest shared-memory throughput", "MB/s", 1, 5, 60,
                    _host_throughput, reps, lambda s: 3 * CHUNK / s / 1e6)


BENCHMARKS = [bench_ivshmem_round_trip, bench_ivshmem_throughput]
