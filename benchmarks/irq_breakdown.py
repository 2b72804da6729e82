"""Where one MSI -> handler -> EOI round trip spends its time (issue 14), from timers
wrapped around the run loop's parts while benchmarks/guests/msi_loop.S runs.

    python -m benchmarks.irq_breakdown [N]

Each figure is microseconds per round trip: wall time inside each part divided by the
number of interrupts, from a run of N round trips minus a run of 0 (boot and exit cost
cancel out).  The timers themselves cost about 0.1-0.2 us per wrapped call, so the parts
add up to a little more than an unwrapped run; the unwrapped figure is printed first.
"""
from __future__ import annotations

import sys
import time
from collections import defaultdict

from uvirt.board import interrupts as _ic
from uvirt.board.interrupts import lapic as _lapic
from uvirt.cpu import machine as _machine
from uvirt.cpu import tlb as _tlb

from .bench_machine import uvirt_machine
from .common import build_guest

ACC: dict[str, float] = defaultdict(float)
CNT: dict[str, int] = defaultdict(int)


def _timed(name, fn):
    def wrapper(*a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            ACC[name] += time.perf_counter() - t
            CNT[name] += 1
    return wrapper


def _patch():
    undo = []

    def patch(owner, attr, name):
        old = getattr(owner, attr)
        undo.append((owner, attr, old))
        setattr(owner, attr, _timed(name, old))

    patch(_machine.Machine, "_service", "run loop: _service (posted work, timers, line sync / delivery)")
    if hasattr(_machine.Machine, "_deliver"):
        patch(_machine.Machine, "_deliver", "  of which Python IDT delivery (_deliver)")
    patch(_ic.InterruptController, "acknowledge", "  acknowledge (IRR->ISR, PIC/LAPIC)")
    patch(_ic._Touching, "write", "guest MMIO/port write to the APIC (MSI, EOI), device side")
    patch(_lapic.LocalApic, "write", "  of which LAPIC register write + notify")
    patch(_tlb.TlbFill, "_fill", "TLB fill hook")
    return undo


def _run(image: bytes, wrap_emu: bool) -> float:
    m = uvirt_machine(image)
    if wrap_emu:
        m.uc.emu_start = _timed("emu_start (whole call: guest code + every hook inside)", m.uc.emu_start)
    t = time.perf_counter()
    stop = m.run(timeout=None)
    dt = time.perf_counter() - t
    assert stop.debug_exit_value == 0, stop.report()
    m.close()
    return dt


def main(n: int = 5000) -> None:
    full, empty = build_guest("msi_loop", ITERS=n), build_guest("msi_loop", ITERS=0)
    _run(full, False)
    plain = min(_run(full, False) - _run(empty, False) for _ in range(3)) / n
    print(f"round trip, no timers: {plain * 1e6:.2f} us")
    undo = _patch()
    try:
        ACC.clear(), CNT.clear()
        _run(empty, True)
        base = dict(ACC), dict(CNT)
        ACC.clear(), CNT.clear()
        total = _run(full, True)
        ACC_full, CNT_full = dict(ACC), dict(CNT)
        ACC.clear(), CNT.clear()
        total -= _run(empty, True)
    finally:
        for owner, attr, old in undo:
            setattr(owner, attr, old)
    print(f"round trip with timers: {total / n * 1e6:.2f} us")
    for name in ACC_full:
        t = ACC_full[name] - base[0].get(name, 0.0)
        c = CNT_full[name] - base[1].get(name, 0)
        print(f"  {name:70s} {t / n * 1e6:7.2f} us  ({c / n:.2f} calls)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
