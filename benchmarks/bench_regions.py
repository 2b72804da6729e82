"""Issue 5 figures: memory regions at native speed.

* a guest loop over a memory region vs the same loop over RAM (the region is mapped with
  ``mem_map_ptr`` exactly like RAM: target >= 0.95x RAM's speed);
* the same region served through MMIO callbacks instead (an ``MmioRegion`` placed over
  the BAR that reads and writes the same bytes, through ``uc.mmio_map``): the path the
  project exists to avoid, target: regions >= 100x faster.  Loads and store+load pairs
  are reported separately: Unicorn 2.1.4 alone sends every guest store down its softmmu
  slow path (~16-40 ns, docs/unicorn-notes.md §0); uvirt's TLB fill (uvirt/cpu/tlb.py) keeps
  pages that never held code on the fast path, regions included;
* a BAR move (a PCI config write that moves a 1 MiB region: bus, memory-map commit,
  Unicorn unmap + map, listeners) vs a bare ``mem_unmap`` + ``mem_map_ptr`` of the same
  buffer on a bare Unicorn.  The issue names no target; uvirt's part is Python
  bookkeeping of a few tens of microseconds whatever the size (Unicorn's own unmap costs
  about 20 us per MiB), so the target here, <= 4x at 1 MiB, bounds that overhead.

Every figure is a ratio between runs made back to back in the same repetition; the
machines are built outside the timed part, only ``Machine.run`` (or the moves) is timed.
"""

from __future__ import annotations

import mmap
import time

from unicorn import UC_ARCH_X86, UC_MODE_32, UC_PROT_ALL, Uc

from uvirt.boot import firmware_step as bios
from uvirt.backends.chardev import NullChardev
from uvirt.launch.device_table import BuildContext, create_device
from uvirt.cpu.machine import Machine
from uvirt.board.memory.regions import MmioRegion

from .common import Result, build_guest, summarize

LEGACY_RNG = {"disable-modern": "on"}


class _SameBytes:
    """An MMIO device serving a RamRegion's bytes (what the region would be without
    mem_map_ptr)."""

    def __init__(self, region) -> None:
        self.read = region.read
        self.write = region.write


def _machine(image: bytes, *, size: str = "64K", mmio: bool = False) -> Machine:
    m = Machine()
    m.add_debugcon(NullChardev())
    m.add_debug_exit(0xF4, 4)
    fn = create_device(m, BuildContext(), "virtio-rng-pci", {**LEGACY_RNG, "memory-regions": size})
    bios.firmware_step(m)
    if mmio:
        shm = fn.regions[0][1]
        region = MmioRegion("bench-region-mmio", shm.size, _SameBytes(shm.region), valid_sizes=(1, 2, 4, 8))
        m.memory.add(region, shm.mapped_at, priority=1)
        m.memory.commit()
    m.load_kernel(image)
    m._bench_fn = fn
    return m


def _timed_run(m: Machine) -> float:
    t = time.perf_counter()
    stop = m.run(timeout=None)
    dt = time.perf_counter() - t
    assert stop.debug_exit_value == 0, stop.report()
    m.close()
    return dt


def _pairs(make_a, make_b, reps: int) -> list[tuple[float, float]]:
    """(time a, time b) per repetition, order alternating; one warm-up pair."""
    _timed_run(make_a()), _timed_run(make_b())
    out = []
    for i in range(reps):
        a, b = make_a(), make_b()
        if i % 2:
            tb, ta = _timed_run(b), _timed_run(a)
        else:
            ta, tb = _timed_run(a), _timed_run(b)
        out.append((ta, tb))
    return out


def bench_region_vs_ram(reps: int) -> Result:
    n = 10_000_000
    ram = build_guest("region_loop", ITERS=n, TARGET=0, MODE=0)
    reg = build_guest("region_loop", ITERS=n, TARGET=1, MODE=0)
    pairs = _pairs(lambda: _machine(ram), lambda: _machine(reg), reps)
    speed = [t_ram / t_reg for t_ram, t_reg in pairs]          # region speed relative to RAM
    med, lo, hi = summarize(speed)
    ns = min(t for _, t in pairs) / (2 * n) * 1e9
    return Result("guest store+load loop over a region", "the same loop over RAM (speed)", med, lo, hi,
                  ">= 0.95x", med >= 0.95, f"({ns:.1f} ns/access in the region)")


def bench_region_loads_vs_ram(reps: int) -> Result:
    n = 30_000_000
    ram = build_guest("region_loop", ITERS=n, TARGET=0, MODE=1)
    reg = build_guest("region_loop", ITERS=n, TARGET=1, MODE=1)
    pairs = _pairs(lambda: _machine(ram), lambda: _machine(reg), reps)
    speed = [t_ram / t_reg for t_ram, t_reg in pairs]
    med, lo, hi = summarize(speed)
    ns = min(t for _, t in pairs) / (8 * n) * 1e9
    return Result("guest load loop over a region", "the same loop over RAM (speed)", med, lo, hi,
                  ">= 0.95x", med >= 0.95, f"({ns:.2f} ns/load in the region)")


def _mmio_speedup(reps: int, mode: int, n_ptr: int, n_mmio: int, per_iter: int, name: str) -> Result:
    ptr = build_guest("region_loop", ITERS=n_ptr, TARGET=1, MODE=mode)
    cb = build_guest("region_loop", ITERS=n_mmio, TARGET=1, MODE=mode)
    pairs = _pairs(lambda: _machine(cb, mmio=True), lambda: _machine(ptr), reps)
    # per-access times; the loops differ in length, so compare time per iteration
    speed = [(t_cb / n_mmio) / (t_ptr / n_ptr) for t_cb, t_ptr in pairs]
    med, lo, hi = summarize(speed)
    us = min(t for t, _ in pairs) / (per_iter * n_mmio) * 1e6
    return Result(name, "the region through mmio_map callbacks (speed-up)", med, lo, hi,
                  ">= 100x", med >= 100, f"({us:.2f} us/access through callbacks)")


def bench_region_vs_mmio_loads(reps: int) -> Result:
    return _mmio_speedup(reps, 1, 30_000_000, 40_000, 8, "region loads, mem_map_ptr")


def bench_region_vs_mmio_pairs(reps: int) -> Result:
    return _mmio_speedup(reps, 0, 10_000_000, 150_000, 2, "region store+load pairs, mem_map_ptr")


def bench_bar_move(reps: int) -> Result:
    """N config writes alternating BAR 2 of a 1 MiB region between two addresses, vs N
    unmap + map_ptr pairs of a 1 MiB buffer on a bare Unicorn."""
    n = 300
    size = 1 << 20
    image = build_guest("region_loop", ITERS=1, TARGET=0, MODE=0)
    addrs = (0xE0000000, 0xE0100000)

    def uvirt_moves() -> float:
        m = _machine(image, size="1M")
        fn, bus = m._bench_fn, m.pci
        shm = fn.regions[0][1]
        t = time.perf_counter()
        for i in range(n):
            bus.config_write(0, fn.devfn, 0x18, 4, addrs[i & 1])
        dt = time.perf_counter() - t
        assert shm.mapped_at == addrs[(n - 1) & 1]
        m.close()
        return dt

    # What the same two calls cost in a Unicorn holding the board's other mappings (RAM
    # around the low megabyte's segments, the LAPIC window, the MSI-X page, the interrupt
    # line's acknowledge page): QEMU's memory core rebuilds its whole dispatch map at
    # every mem_map/mem_unmap, so they cost more there; reported beside the figure.
    m = _machine(image, size="1M")
    bar_at = m._bench_fn.regions[0][1].mapped_at
    board_map = [(b, e + 1 - b) for b, e, _ in m.uc.mem_regions() if b != bar_at]
    m.close()

    def bare_moves(layout=()) -> float:
        uc = Uc(UC_ARCH_X86, UC_MODE_32)
        import ctypes
        # the guest-physical ones backed by one buffer; the CPU-private acknowledge window
        # above 4 GiB (512 GiB, uvirt/cpu/irq_line.py) is MMIO there too
        ram = [(base, length) for base, length in layout if base < 1 << 32]
        others = mmap.mmap(-1, max([length for _, length in ram], default=0x1000))
        other_pin = ctypes.c_char.from_buffer(others)
        for base, length in layout:
            if base < 1 << 32:
                uc.mem_map_ptr(base, length, UC_PROT_ALL, ctypes.addressof(other_pin))
            else:
                uc.mmio_map(base, length, lambda *_: 0, None, None, None)
        buf = mmap.mmap(-1, size)
        pin = ctypes.c_char.from_buffer(buf)
        ptr = ctypes.addressof(pin)
        uc.mem_map_ptr(addrs[1], size, UC_PROT_ALL, ptr)
        cur = addrs[1]
        t = time.perf_counter()
        for i in range(n):
            uc.mem_unmap(cur, size)
            cur = addrs[i & 1]
            uc.mem_map_ptr(cur, size, UC_PROT_ALL, ptr)
        dt = time.perf_counter() - t
        uc.mem_unmap(cur, size)
        for base, length in layout:
            # not the 512 GiB MMIO window: Unicorn's unmap flushes its TLB page by page
            # (8 s); it holds no buffer, and the engine's close frees it
            if base < 1 << 32:
                uc.mem_unmap(base, length)
        del pin, other_pin
        buf.close()
        others.close()
        return dt

    uvirt_moves(), bare_moves()
    ratios, us_u, us_b, us_l = [], [], [], []
    for i in range(reps):
        if i % 2:
            b, u = bare_moves(), uvirt_moves()
        else:
            u, b = uvirt_moves(), bare_moves()
        ratios.append(u / b)
        us_u.append(u / n * 1e6)
        us_b.append(b / n * 1e6)
        us_l.append(bare_moves(board_map) / n * 1e6)
    med, lo, hi = summarize(ratios)
    return Result("BAR move (config write, 1 MiB region)", "bare mem_unmap + mem_map_ptr", med, lo, hi,
                  "<= 2x", med <= 2,   # issue 14 (was 4x, issue 5)
                  f"(uvirt {min(us_u):.1f} us, bare {min(us_b):.1f} us per move; the bare pair among "
                  f"the board's {len(board_map)} other mappings {min(us_l):.1f} us)")


BENCHMARKS = [bench_region_vs_ram, bench_region_loads_vs_ram, bench_region_vs_mmio_loads,
              bench_region_vs_mmio_pairs, bench_bar_move]
