"""Where one ivshmem doorbell round trip spends its time (issue 14), leg by leg.

    python -m benchmarks.ivshmem_breakdown [MODE [N]]

Runs benchmarks/guests/ivshmem_loop.S (MODE 2: the guest takes the MSI-X interrupt in
HLT; MODE 0: it spins on the RAM the message writes) for N rounds against the same server
and host peer thread as bench_ivshmem, on uvirt (a ``uvirt run`` process with timestamps
taken at the path's points: this module, run as ``--child``, wraps them) and on QEMU
(only the host peer's own timestamps: when it woke, when it had rung back).  Clocks are
``time.perf_counter`` (CLOCK_MONOTONIC, one clock for every process).  Each leg is the
median over the rounds after the first tenth, and its 90th percentile:

    peer      the host peer: its wait returned .. its ring back was written
    ring      its ring .. the device has the event (uvirt: the halted CPU's own wait, or
              the service thread while the guest runs); MODE 0 splits it: until the
              ring is taken (``_rung``: the service thread's wake-up, or the CPU thread's
              look after its doorbell finding it), then ``read``: it reads the eventfd,
              until ``_vector_notify`` (QEMU's ``ivshmem_vector_notify``)
    deliver   .. the halted CPU's wait returns, the message sent (MODE 2)
    irq       .. the guest's handler writes the APIC EOI (emu_start, the interrupt, MODE 2)
    guest     .. the guest's next doorbell write reaches the device
    doorbell  .. the eventfd write to the peer returned (MODE 0: the CPU thread then looks
              for the answer, ``Ivshmem._poll_answer``: the ring leg follows)
    wake      .. the peer's wait returned (its wake-up)
    (to-hlt)  meanwhile: the eventfd written .. the run loop's halt wait begins (the guest
              ran on to HLT, MODE 2)

The timestamp wrappers cost about 1 us each, so uvirt's legs add up to a little more
than an unwrapped round.  uvirt's first line says how many rings the CPU thread's look
after its doorbell took and on which CPUs the doorbell, the taker and the host peer ran
(with 2 CPUs that placement decides much of a round).  MODE 2's chain assumes the halted
CPU's wait takes the ring; when the look takes it (the usual case now: the interrupt is
then posted and taken before the guest halts) its legs are out of order and the round's
figure is what counts.
"""
from __future__ import annotations

import atexit
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_right
from collections import Counter

CHILD_ENV = "UVIRT_IVSHMEM_STAMPS"
_getcpu = ctypes.CDLL(None).sched_getcpu     # where a thread ran: the 2-CPU placement matters


def _child(argv: list[str]) -> int:
    """``uvirt run`` with timestamps at the doorbell path's points, written at exit."""
    from collections import defaultdict

    from uvirt.board.devices import ivshmem as iv
    from uvirt.board.interrupts import lapic
    from uvirt.cpu import machine

    stamps: dict[str, list[float]] = defaultdict(list)
    clock = time.perf_counter

    def wrap(cls, name: str, key: str, after: bool = False) -> None:
        orig = getattr(cls, name)

        def stamped(*a, **k):
            if not after:
                stamps[key].append(clock())
            r = orig(*a, **k)
            if after:
                stamps[key].append(clock())
            return r
        setattr(cls, name, stamped)

    from uvirt.ivshmem import protocol
    wrap(iv.Ivshmem, "doorbell", "doorbell")
    wrap(protocol.IvshmemClient, "ring", "doorbell_end", after=True)
    wrap(iv.Ivshmem, "_rung", "service")
    wrap(iv.Ivshmem, "_vector_notify", "event")
    wrap(machine.Machine, "_halt_wait", "halt")
    wrap(machine.Machine, "_halt_wait", "halt_end", after=True)
    apic_write = lapic.LocalApic.write

    def write(self, offset, size, value):
        if offset == 0xB0:
            stamps["eoi"].append(clock())
        return apic_write(self, offset, size, value)
    lapic.LocalApic.write = write

    for name, key in (("doorbell", "cpu:doorbell"), ("_rung", "cpu:ring taken")):
        def on_cpu(orig=getattr(iv.Ivshmem, name), key=key):
            def f(*a, **k):
                stamps[key].append(_getcpu())
                return orig(*a, **k)
            return f
        setattr(iv.Ivshmem, name, on_cpu())

    def dump() -> None:
        devices = [d for d in gc.get_objects() if isinstance(d, iv.Ivshmem)]
        stamps["polled"] = [sum(d.interrupts_polled for d in devices)]
        stamps["rings"] = [sum(d.interrupts for d in devices)]
        with open(os.environ[CHILD_ENV], "w") as f:
            json.dump(stamps, f)
    atexit.register(dump)
    from uvirt.cli.main import main
    return main(argv)


def _legs(chain: list[tuple[str, str]], series: dict[str, list[float]], starts: list[float]):
    """Follow each round from a start time through the chain's series (each the first
    stamp after the previous one); -> {leg: [seconds per round]}."""
    series = {k: sorted(v) for k, v in series.items()}
    out: dict[str, list[float]] = {name: [] for name, _ in chain}
    for t in starts[len(starts) // 10:-2]:
        row = [t]
        for _name, key in chain:
            seq = series.get(key, [])
            i = bisect_right(seq, row[-1])
            if i >= len(seq):
                break
            row.append(seq[i])
        else:
            for (name, _key), a, b in zip(chain, row, row[1:]):
                out[name].append(b - a)
    return out


def _print(title: str, legs: dict[str, list[float]], per_round: float, rounds: list[float]) -> None:
    gaps = sorted(b - a for a, b in zip(rounds, rounds[1:]))
    print(f"{title}: {per_round * 1e6:.1f} us per round (bench_ivshmem's figure); rounds: "
          f"median {statistics.median(gaps) * 1e6:.1f} us, p90 {gaps[int(len(gaps) * 0.9)] * 1e6:.1f}, "
          f"p99 {gaps[int(len(gaps) * 0.99)] * 1e6:.1f}, max {gaps[-1] * 1e6:.0f}, "
          f"{sum(g > 1e-3 for g in gaps)} over 1 ms")
    total = 0.0
    for name, xs in legs.items():
        if not xs:
            continue
        xs = sorted(xs)
        med = statistics.median(xs)
        total += 0 if name.startswith("(") else med
        print(f"  {name:<9} {med * 1e6:7.1f} us   p90 {xs[int(len(xs) * 0.9)] * 1e6:7.1f}")
    print(f"  {'sum':<9} {total * 1e6:7.1f} us (medians; a leg in brackets runs beside the others)")


def main(argv: list[str]) -> None:
    from uvirt.testing.qemu import BASE_ARGS, qemu_available

    from . import bench_ivshmem as B
    from .common import build_guest

    mode = int(argv[0]) if argv else B.MODE_INTERRUPT
    n = int(argv[1]) if len(argv) > 1 else 3000
    peer_stamps: dict[str, list[float]] = {"woke": [], "rang": [], "cpu:peer": []}

    def host(peer, stop, stamps):
        while not stop.is_set():
            if peer.wait(vector=0, timeout=0.05) is not None:
                t = time.perf_counter()
                stamps.append(t)
                peer_stamps["woke"].append(t)
                peer_stamps["cpu:peer"].append(_getcpu())
                peer.ring(B.GUEST_PEER, 0)
                peer_stamps["rang"].append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        image = os.path.join(tmp, "guest.bin")
        with open(image, "wb") as f:
            f.write(build_guest("ivshmem_loop", ITERS=n, MODE=mode, CHUNK=B.CHUNK))
        out = os.path.join(tmp, "stamps.json")

        def uvirt(image: str, args: list[str]) -> int:
            cmd = [sys.executable, "-m", "benchmarks.ivshmem_breakdown", "--child", "run", *BASE_ARGS,
                   *args, "-debugcon", f"file:{os.path.join(tmp, 'con')}", "-kernel", image]
            env = dict(os.environ, **{CHILD_ENV: out})
            return subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=120).returncode

        per_round = B.session(uvirt, image, host)
        with open(out) as f:
            u = json.load(f)
        series = {**u, **peer_stamps}
        cpus = {k[4:]: dict(sorted(Counter(series.pop(k)).items())) for k in list(series) if k.startswith("cpu:")}
        print(f"uvirt: {u['polled'][0]} of {u['rings'][0]} rings taken by the CPU thread's look after "
              f"its doorbell; CPUs (rounds on each): {cpus}")
        if mode == B.MODE_INTERRUPT:
            chain = [("ring", "event"), ("deliver", "halt_end"), ("irq", "eoi"), ("guest", "doorbell"),
                     ("doorbell", "doorbell_end"), ("wake", "woke"), ("peer", "rang")]
        else:
            chain = [("ring", "service"), ("read", "event"), ("guest", "doorbell"), ("doorbell", "doorbell_end"),
                     ("wake", "woke"), ("peer", "rang")]
        legs = _legs(chain, series, peer_stamps["rang"])
        if mode == B.MODE_INTERRUPT:          # beside the peer's wake, not after it
            legs["(to-hlt)"] = _legs([("(to-hlt)", "halt")], series, u["doorbell_end"])["(to-hlt)"]
        _print("uvirt", legs, per_round, peer_stamps["woke"])
        if qemu_available():
            for k in peer_stamps:
                peer_stamps[k].clear()
            per_round = B.session(B._qemu, image, host)
            _print("QEMU", _legs([("emulator", "woke"), ("peer", "rang")], peer_stamps, peer_stamps["rang"]),
                   per_round, peer_stamps["woke"])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(_child(sys.argv[2:]))
    main(sys.argv[1:])
