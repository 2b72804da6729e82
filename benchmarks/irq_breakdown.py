"""Where one MSI -> handler -> EOI round trip spends its time (issue 14), from timers
wrapped around the run loop's parts while benchmarks/guests/msi_loop.S runs.

    python -m benchmarks.irq_breakdown [N [REPS]]

The last table replaces parts by trivial stand-ins instead (no timer in the path): the
APIC and the controller, then also the memory map's dispatch of the APIC window; the
differences are what those parts cost.

Each figure is microseconds per round trip: time inside each part divided by the number
of interrupts, from a run of N round trips minus a run of 0 (boot and exit cost cancel
out), the minimum over REPS runs.  The timers themselves cost about 0.1-0.2 us per
wrapped call, so the parts add up to more than an unwrapped run.  First come the
unwrapped figures: wall time, and CPU time beside QEMU 7.2's CPU time for the same guest
(its process's user + system time, N round trips minus 0): on a shared machine CPU time
is what the other processes disturb least.
"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
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


RUN = "run() in all"
EMU = "  inside emu_start (guest code, Unicorn, every callback)"
OUTSIDE = "  outside emu_start (the run loop: stops, restarts, Python delivery)"
PARTS = [
    ("  _service: posted work, timers, line sync or delivery", "Machine", "_service"),
    ("    Python IDT delivery (_deliver, run-loop path only)", "Machine", "_deliver"),
    ("  APIC register access, device side (MSI, EOI; incl. notify)", "LocalApic", "write"),
    ("  acknowledge (IRR -> ISR; in-engine: inside emu_start)", "InterruptController", "acknowledge"),
    ("  TLB fill hook (uvirt/cpu/tlb.py)", "TlbFill", "_fill"),
]


def _patch():
    owners = {"Machine": _machine.Machine, "_Touching": _ic._Touching,
              "InterruptController": _ic.InterruptController, "TlbFill": _tlb.TlbFill,
              "LocalApic": _lapic.LocalApic}
    undo = []
    for name, owner, attr in PARTS + [(RUN, "Machine", "run")]:
        cls = owners[owner]
        if not hasattr(cls, attr):
            continue
        old = getattr(cls, attr)
        undo.append((cls, attr, old))
        setattr(cls, attr, _timed(name, old))
    return undo


def _cpu_run(image: bytes) -> float:
    m = uvirt_machine(image)
    t = time.process_time()
    stop = m.run(timeout=None)
    dt = time.process_time() - t
    assert stop.debug_exit_value == 0, stop.report()
    m.close()
    return dt


def _qemu_cpu(qemu: str, image: bytes) -> float:
    """User + system time of a QEMU 7.2 TCG process running ``image`` (its own boot
    included: the caller subtracts an empty run)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "g.bin")
        with open(path, "wb") as f:
            f.write(image)
        args = [qemu, "-machine", "pc", "-accel", "tcg", "-m", "128M", "-nodefaults",
                "-nographic", "-display", "none", "-no-reboot",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                "-debugcon", f"file:{tmp}/out.txt", "-kernel", path]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _run(image: bytes, wrap_emu: bool) -> float:
    m = uvirt_machine(image)
    if wrap_emu:
        m.uc.emu_start = _timed(EMU, m.uc.emu_start)
    t = time.perf_counter()
    stop = m.run(timeout=None)
    dt = time.perf_counter() - t
    assert stop.debug_exit_value == 0, stop.report()
    m.close()
    return dt


def main(n: int = 5000, reps: int = 3) -> None:
    """Each figure is the minimum over ``reps`` runs (a shared machine only adds time)."""
    full, empty = build_guest("msi_loop", ITERS=n), build_guest("msi_loop", ITERS=0)
    _run(full, False)
    plain = min(_run(full, False) - _run(empty, False) for _ in range(reps)) / n
    print(f"round trip, no timers: {plain * 1e6:.2f} us wall (min of {reps})")
    cpu = min(_cpu_run(full) - _cpu_run(empty) for _ in range(reps)) / n
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        print(f"CPU time per round trip: uvirt {cpu * 1e6:.2f} us (QEMU not installed)")
    else:
        big, none = build_guest("msi_loop", ITERS=10 * n), empty
        q = min(_qemu_cpu(qemu, big) - _qemu_cpu(qemu, none) for _ in range(reps)) / (10 * n)
        print(f"CPU time per round trip: uvirt {cpu * 1e6:.2f} us, QEMU {q * 1e6:.2f} us "
              f"({10 * n} round trips), ratio {cpu / q:.2f}")
    undo = _patch()
    per: dict[str, float] = {}
    calls: dict[str, float] = {}
    try:
        for _ in range(reps):
            ACC.clear(), CNT.clear()
            _run(empty, True)
            base_t, base_c = dict(ACC), dict(CNT)
            ACC.clear(), CNT.clear()
            _run(full, True)
            got = {k: (ACC[k] - base_t.get(k, 0.0)) / n * 1e6 for k in ACC}
            got[OUTSIDE] = got[RUN] - got[EMU]
            for k, v in got.items():
                per[k] = min(per.get(k, v), v)
            calls = {k: (CNT[k] - base_c.get(k, 0)) / n for k in CNT}
            calls[OUTSIDE] = calls.get(EMU, 0)
    finally:
        for owner, attr, old in undo:
            setattr(owner, attr, old)
    print("per round trip, with timers (us, min of each; calls per round trip):")
    for name in [RUN, EMU, OUTSIDE] + [p[0] for p in PARTS]:
        if name in per:
            print(f"  {name:66s} {per[name]:7.2f}  ({calls.get(name, 0):.2f})")
    substitution(full, empty, n, max(reps, 5))


# ------------------------------------------------ by substitution (no timers in the path)

def _stand_ins(level: str):
    """Replace parts of the path by trivial stand-ins that still drive the CPU's line:
    "device" (the LocalApic's write and the acknowledge: raise on the MSI, lower and
    answer 0x41 at the acknowledge), "dispatch" (that, and the APIC window's MMIO
    callback registered bare, without the memory map's layers)."""
    line: list = [None]
    undo = []

    def swap(owner, attr, new):
        undo.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, new)

    def take(self, *_args):
        self.irq_line.set(False)
        return 0x41

    def apic_write(_self, offset, _size, _value):
        if offset == 0:
            line[0].set(True)

    swap(_machine.Machine, "_take_interrupt", take)
    swap(_lapic.LocalApic, "write", apic_write)
    if level == "dispatch":
        from uvirt.cpu import uc_hooks, uc_memory
        orig = uc_hooks.map_mmio

        def map_mmio(uc, address, size, read_cb, write_cb, **kw):
            if address != _lapic.APIC_BASE:
                return orig(uc, address, size, read_cb, write_cb, **kw)

            def write(_h, offset, _size, _value, _ud):
                if offset == 0:
                    line[0].set(True)
            return orig(uc, address, size, lambda *_a: 0, write, raw=True)
        swap(uc_memory, "map_mmio", map_mmio)
    return line, undo


def _cpu_per_round_trip(full: bytes, empty: bytes, n: int, reps: int,
                        line=None) -> tuple[float, float]:
    """(CPU seconds per round trip, TLB hook fills per round trip), min over ``reps``."""
    def run(image):
        m = uvirt_machine(image)
        if line is not None:
            line[0] = m.irq_line
        fills = m.tlb.fills
        t = time.process_time()
        stop = m.run(timeout=None)
        dt = time.process_time() - t
        assert stop.debug_exit_value == 0, stop.report()
        fills = m.tlb.fills - fills
        m.close()
        return dt, fills
    run(full)
    e = min(run(empty)[0] for _ in range(reps))
    f = min(run(full)[0] for _ in range(reps))
    return (f - e) / n, (run(full)[1] - run(empty)[1]) / n


def substitution(full: bytes, empty: bytes, n: int, reps: int) -> None:
    """Where the time goes without timers in the path: the round trip as it is, with the
    APIC and the controller replaced by stand-ins, and with the memory map's dispatch
    replaced too; the differences are the parts (CPU time, min of ``reps``)."""
    whole, fills = _cpu_per_round_trip(full, empty, n, reps)
    parts = {}
    for level in ("device", "dispatch"):
        line, undo = _stand_ins(level)
        try:
            parts[level] = _cpu_per_round_trip(full, empty, n, reps, line)[0]
        finally:
            for owner, attr, old in reversed(undo):
                setattr(owner, attr, old)
    print(f"per round trip, by substitution (CPU us, min of {reps}):")
    rows = [("round trip", whole),
            ("  LAPIC + controller (MSI decode, IRR/ISR, EOI, acknowledge)",
             whole - parts["device"]),
            ("  memory map dispatch of the 2 APIC accesses", parts["device"] - parts["dispatch"]),
            ("  the rest: Unicorn, guest code, 3 ctypes callbacks, the line's writes",
             parts["dispatch"])]
    for name, v in rows:
        print(f"  {name:66s} {v * 1e6:7.2f}")
    print(f"  TLB fill hook calls per round trip: {fills:.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
