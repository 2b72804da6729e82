"""Issue 3 figures: RAM loop vs bare Unicorn, port-I/O round trip vs the bare IN-hook
floor, create + boot + exit vs launching QEMU."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_MODE_32, Uc
from unicorn import x86_const as X

from uvirt.boot import firmware_step as bios
from uvirt.backends.chardev import NullChardev
from uvirt.cpu.machine import Machine
from uvirt.board.memory.regions import MmioRegion

from .common import Result, build_guest, paired, summarize

LOAD = 0x100000


class BenchRegister:
    """The Python device register the port-I/O benchmark reads."""

    def __init__(self) -> None:
        self.value = 0x12345678

    def reset(self) -> None:
        pass

    def read(self, offset: int, size: int) -> int:
        return self.value

    def write(self, offset: int, size: int, value: int) -> None:
        self.value = value


def uvirt_machine(image: bytes, *, register: bool = False, ram_size: int = 128 << 20) -> Machine:
    m = Machine(ram_size=ram_size)
    with m.batch():                     # one commit for the whole build, as `uvirt run` does
        m.add_debugcon(NullChardev())
        m.add_debug_exit(0xF4, 4)
        if register:
            m.add_isa(MmioRegion("bench-reg", 4, BenchRegister(), valid_sizes=(1, 2, 4)), 0x510)
        bios.firmware_step(m)
    m.load_kernel(image)
    return m


def run_uvirt(image: bytes, *, register: bool = False, ram_size: int = 128 << 20) -> None:
    """Create, firmware step, boot, run to the guest's EXIT 0, close: all in-process."""
    m = uvirt_machine(image, register=register, ram_size=ram_size)
    stop = m.run(timeout=None)
    assert stop.debug_exit_value == 0, stop.report()
    m.close()


def run_bare(image: bytes, *, in_hook: bool = False) -> None:
    """The same image on bare Unicorn: map 128 MiB, copy the image, an OUT hook that
    stops at the exit port (and an IN hook returning a constant)."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 128 << 20)
    uc.mem_write(LOAD, image)
    entry = int.from_bytes(image[28:32], "little")

    def on_out(uc, port, size, value, _):
        if port == 0xF4:
            uc.emu_stop()

    hooks = [uc.hook_add(UC_HOOK_INSN, on_out, None, 1, 0, X.UC_X86_INS_OUT)]
    if in_hook:
        hooks.append(uc.hook_add(UC_HOOK_INSN, lambda uc, port, size, _: 0x12345678,
                                 None, 1, 0, X.UC_X86_INS_IN))
    uc.emu_start(entry, 0xFFFFFFFF)
    for h in hooks:
        uc.hook_del(h)


def bench_ram_loop(reps: int) -> Result:
    image = build_guest("ram_loop", ITERS=10_000_000)
    med, lo, hi = summarize(paired(lambda: run_bare(image), lambda: run_uvirt(image), reps))
    return Result("guest RAM store+load loop (10 M iter)", "bare Unicorn, same loop", med, lo, hi,
                  "< 1.05x", med < 1.05)


def bench_pio_read(reps: int) -> Result:
    n = 200_000
    image = build_guest("pio_loop", ITERS=n)
    ratios = paired(lambda: run_bare(image, in_hook=True), lambda: run_uvirt(image, register=True), reps)
    med, lo, hi = summarize(ratios)
    import time
    t = time.perf_counter()
    run_uvirt(image, register=True)
    rate = n / (time.perf_counter() - t)
    return Result("guest IN of a Python device register", "bare Unicorn IN-hook floor", med, lo, hi,
                  "<= 1.5x", med <= 1.5, f"({rate / 1e6:.2f} M reads/s)")


def bench_boot(reps: int) -> Result:
    image = build_guest("empty")
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return Result("create + boot + exit", "QEMU process", float("nan"), 0, 0, ">= 40x", False,
                      "SKIPPED: qemu-system-x86_64 not installed")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "empty.bin")
        with open(path, "wb") as f:
            f.write(image)
        args = [qemu, "-machine", "pc", "-accel", "tcg", "-m", "128M", "-nodefaults", "-nographic",
                "-display", "none", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                "-debugcon", f"file:{tmp}/out.txt", "-kernel", path]
        inner = 20

        def qemu_runs():
            r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True)
            assert r.returncode == 1, r.stderr

        def uvirt_runs():
            for _ in range(inner):
                run_uvirt(image)

        ratios = paired(qemu_runs, uvirt_runs, reps)
    # speed-up = QEMU time per boot / uvirt time per boot
    speedups = [inner / r for r in ratios]
    med, lo, hi = summarize(speedups)
    return Result("create + boot + exit, pc bus + firmware step", "launching QEMU 7.2 (speed-up)",
                  med, lo, hi, ">= 40x", med >= 40)   # issue 14 (was 30x, issue 3)


BENCHMARKS = [bench_ram_loop, bench_pio_read, bench_boot]
