"""Seed inputs from the bundled guest programs (firmware/*.S): what a real driver does to
the device, as fuzz commands.

A program that drives the device under test (``PROGRAMS``) runs on a machine built with
the fuzz target's own options; a recorder in front of the device's BAR regions and its
config space keeps every register access the guest's instructions make (port I/O and
MMIO at a BAR: BAR, offset, size, value; config space: offset, size, value).  Each access
becomes one command (uvirt/fuzz/ops.py) decoded against the target's ``Layout``:

* config reads and writes -> ``CFG_READ``/``CFG_WRITE`` (writes to the BAR registers are
  left out: the target's BARs stay where the operations expect them);
* port I/O and MMIO -> ``IO_*``/``MMIO_*`` at the same BAR and offset;
* the virtio driver's steps are kept with the target's memory layout: a queue's ring
  addresses (legacy QUEUE_PFN, modern queue_desc/driver/device and queue_size) become the
  ones the target placed in the DMA area, a status write of 0 becomes ``RESET`` (so
  the decoder's ring indexes restart as the device's do), and a notify becomes a
  well-formed ``CHAIN`` on that queue followed by a ``WAIT`` (the program's own ring
  contents are RAM writes the recorder does not see; a chain valid by construction stands
  in for them).

A read repeated with the same answer (a polling loop) is kept once.  A program's
commands are cut into seeds of at most ``MAX_SEED`` bytes (libFuzzer's ``-max_len``),
each starting at a command boundary, and at most ``MAX_SEEDS`` of them are kept.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from uvirt.fuzz.ops import SEPARATOR, SIZES, Layout, OpKind, encode

#: bundled guest programs (firmware/NAME.S) that drive each device, by ``-device`` name
PROGRAMS: dict[str, tuple[str, ...]] = {
    "virtio-rng-pci": ("virtio_rng_legacy", "virtio_rng_modern", "virtio_demo", "irq_virtio",
                       "virtio_bad_guest", "virtio_dma"),
    "virtio-blk-pci": ("virtio_blk_legacy", "virtio_blk_modern"),
    "virtio-serial-pci": ("virtio_console",),
    "virtio-gpu-pci": ("gpu_commands",),
    "virtio-fb-pci": ("fb_draw",),
    "ivshmem-plain": ("ivshmem_plain",),
    "edu": ("edu", "edu_dma_abort"),
}
MAX_SEED = 4000                       # under -max_len=4096
MAX_SEEDS = 16                        # per program
RUN_TIMEOUT = 3.0                     # seconds per program (a program still running gives what it did)
BAR_REGS = range(0x10, 0x28)          # BAR0..BAR5
ROM_BAR = range(0x30, 0x34)
LEGACY_PFN, LEGACY_SEL, LEGACY_NOTIFY, LEGACY_STATUS = 0x08, 0x0E, 0x10, 0x12


@dataclass(frozen=True)
class Access:
    """One recorded register access of the device under test."""
    space: str            # "cfg", or "bar"
    bar: int              # BAR index (-1 for config space)
    offset: int
    size: int
    value: int
    write: bool


class _Recorder:
    """Stands in front of one BAR's register object and records what reaches it."""

    def __init__(self, inner, bar: int, log: list[Access]) -> None:
        self.inner, self.bar, self.log = inner, bar, log

    def read(self, offset: int, size: int) -> int:
        value = self.inner.read(offset, size)
        self.log.append(Access("bar", self.bar, offset, size, value, False))
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        self.log.append(Access("bar", self.bar, offset, size, value, True))
        self.inner.write(offset, size, value)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def record(program: str, device_argv: list[str], *, timeout: float = RUN_TIMEOUT,
           python: str | None = None) -> list[Access]:
    """Run ``firmware/PROGRAM.S`` on a machine with ``device_argv`` and return the device
    under test's register accesses (the last ``-device``, as ``uvirt fuzz`` picks it).
    What the program writes to a disk image is undone afterwards (a snapshot's journal):
    the user's image is the fuzzer's too."""
    from uvirt import firmware
    from uvirt.board.memory.regions import MmioRegion
    from uvirt.launch.runner import build_machine
    from uvirt.options.argv import parse_argv
    image = firmware.build(firmware.bundled(program))
    with tempfile.TemporaryDirectory(prefix="uvirt-fuzz-seed-") as tmp:
        kernel = Path(tmp) / f"{program}.bin"
        kernel.write_bytes(image)
        base = ["-machine", "pc", "-m", "128M", "-nodefaults", "-display", "none", "-no-reboot",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
        built = build_machine(parse_argv(base + list(device_argv) + ["-kernel", str(kernel)]))
        m = built.machine
        try:
            fn = built.devices[-1][1]
            log: list[Access] = []
            for i, bar in enumerate(fn.bars[:6]):
                if bar is not None and isinstance(bar.region, MmioRegion):
                    r = bar.region
                    r.device = _Recorder(r.device, i, log)
                    r.read, r.write = r._fast_paths()
            cls = type(fn)
            cfg_read, cfg_write = cls.config_read.__get__(fn), cls.config_write.__get__(fn)

            def config_read(offset: int, size: int) -> int:
                value = cfg_read(offset, size)
                log.append(Access("cfg", -1, offset, size, value, False))
                return value

            def config_write(offset: int, size: int, value: int):
                log.append(Access("cfg", -1, offset, size, value, True))
                return cfg_write(offset, size, value)
            fn.config_read, fn.config_write = config_read, config_write
            with m.batch():
                m.io.commit()
                m.memory.commit()
            snap = m.snapshot()           # its disk journal undoes the program's writes
            try:
                m.run(timeout=timeout)
            finally:
                m.restore(snap)
            return log
        finally:
            m.close()


def _virtio_caps(fn) -> dict[int, tuple[int, int, int]]:
    """cfg_type -> (BAR, offset, notify_off_multiplier) from the capability list."""
    caps: dict[int, tuple[int, int, int]] = {}
    at, seen = fn.config_read(0x34, 1) & 0xFC, set()
    while at and at not in seen:
        seen.add(at)
        if fn.config_read(at, 1) == 0x09:
            cfg_type = fn.config_read(at + 3, 1)
            mult = fn.config_read(at + 16, 4) if cfg_type == 2 else 0
            caps.setdefault(cfg_type, (fn.config_read(at + 4, 1), fn.config_read(at + 8, 4), mult))
        at = fn.config_read(at + 1, 1) & 0xFC
    return caps


class _Translator:
    """Recorded accesses -> commands, against the target's layout."""

    def __init__(self, target) -> None:
        self.L: Layout = target.layout
        self.fn = target.fn
        self.virtio = getattr(target.fn, "vdev", None) is not None
        self.caps = _virtio_caps(target.fn) if self.virtio else {}
        io = [b.index for b in self.L.bars if b.io]
        mem = [b.index for b in self.L.bars if not b.io]
        self.sel = {i: (True, io.index(i)) for i in io} | {i: (False, mem.index(i)) for i in mem}
        self.queue_sel = 0

    def _queue(self, index: int):
        return next((q for q in self.L.queues if q.index == index), None)

    def _chain(self, index: int) -> list[bytes]:
        pos = [q.index for q in self.L.queues].index(index)
        return [encode(OpKind.CHAIN, bytes([pos, 2, 0, 0, 0x49, 0, 0, 0])), encode(OpKind.WAIT, b"\x10\x00")]

    def command(self, a: Access) -> list[bytes]:
        if a.space == "cfg":
            if a.write and (a.offset in BAR_REGS or a.offset in ROM_BAR):
                return []
            size = SIZES.index(a.size) if a.size in (1, 2, 4) else 2
            kind = OpKind.CFG_WRITE if a.write else OpKind.CFG_READ
            ops = bytes((size, a.offset & 0xFF))
            return [encode(kind, ops + (a.value.to_bytes(4, "little") if a.write else b""))]
        if a.bar not in self.sel:
            return []
        value = self._virtio(a) if a.write and self.virtio else a.value
        if isinstance(value, list):
            return value
        io, pos = self.sel[a.bar]
        size = SIZES.index(a.size) if a.size in SIZES else 2
        if io:
            kind = OpKind.IO_WRITE if a.write else OpKind.IO_READ
        else:
            kind = OpKind.MMIO_WRITE if a.write else OpKind.MMIO_READ
        ops = bytes((pos, size)) + a.offset.to_bytes(4, "little")
        if a.write:
            ops += (value & ((1 << 64) - 1)).to_bytes(8, "little")
        return [encode(kind, ops)]

    def _virtio(self, a: Access):
        """A virtio driver's write, kept with the target's ring layout (see the module
        docstring): a new value, or the commands that replace the write."""
        reset = [encode(OpKind.RESET, b"\x00")]
        if a.bar == 0 and getattr(self.fn, "legacy", False):
            if a.offset == LEGACY_SEL:
                self.queue_sel = a.value
            elif a.offset == LEGACY_PFN and a.value:
                q = self._queue(self.queue_sel)
                return q.desc >> 12 if q is not None else a.value
            elif a.offset == LEGACY_NOTIFY:
                return self._chain(a.value) if self._queue(a.value) is not None else a.value
            elif a.offset == LEGACY_STATUS and a.value == 0 and self.L.status is not None:
                return reset
            return a.value
        common, notify = self.caps.get(1), self.caps.get(2)
        if common is not None and a.bar == common[0] and 0 <= a.offset - common[1] < 0x40:
            from uvirt.virtio.pci import CommonCfg as C
            reg = a.offset - common[1]
            q = self._queue(self.queue_sel)
            if reg == C.Q_SELECT:
                self.queue_sel = a.value
            elif reg == C.STATUS and a.value == 0 and self.L.status is not None:
                return reset
            elif q is not None and reg == C.Q_SIZE:
                return q.size
            elif q is not None and reg in (C.Q_DESCLO, C.Q_AVAILLO, C.Q_USEDLO):
                return {C.Q_DESCLO: q.desc, C.Q_AVAILLO: q.avail, C.Q_USEDLO: q.used}[reg]
            elif q is not None and reg in (C.Q_DESCHI, C.Q_AVAILHI, C.Q_USEDHI):
                return 0
        if notify is not None and a.bar == notify[0] and a.offset >= notify[1] and notify[2]:
            index = (a.offset - notify[1]) // notify[2]
            if self._queue(index) is not None:
                return self._chain(index)
        return a.value


def translate(accesses: list[Access], target) -> list[bytes]:
    """The commands of one recorded run, cut into seeds of at most ``MAX_SEED`` bytes."""
    t = _Translator(target)
    seeds: list[bytes] = []
    cur: list[bytes] = []
    size = 0
    prev = None
    for a in accesses:
        if not a.write and a == prev:
            continue                      # a polling loop: one read of it is enough
        prev = a
        for cmd in t.command(a):
            if cur and size + len(SEPARATOR) + len(cmd) > MAX_SEED:
                seeds.append(SEPARATOR.join(cur))
                cur, size = [], 0
            size += len(cmd) + (len(SEPARATOR) if cur else 0)
            cur.append(cmd)
    if cur:
        seeds.append(SEPARATOR.join(cur))
    return seeds[:MAX_SEEDS]


def program_seeds(target, device_argv: list[str], *, timeout: float = RUN_TIMEOUT,
                  log=None) -> dict[str, list[bytes]]:
    """The seeds of every bundled program that drives the target's device: program name
    -> its seeds (a program that fails to run on these options gives none, with a line
    on ``log``)."""
    out: dict[str, list[bytes]] = {}
    for program in PROGRAMS.get(target.name, ()):
        try:
            accesses = record(program, device_argv, timeout=timeout)
        except Exception as e:               # a program that does not fit these options
            if log is not None:
                print(f"uvirt fuzz: no seeds from {program}.S: {e}", file=log)
            continue
        out[program] = translate(accesses, target)
    return out


def write_program_seeds(target, device_argv: list[str], path: str, log=None) -> int:
    """Write the programs' seeds into ``path`` (named by content); returns how many."""
    os.makedirs(path, exist_ok=True)
    n = 0
    for seeds in program_seeds(target, device_argv, log=log).values():
        for data in seeds:
            with open(os.path.join(path, hashlib.sha1(data).hexdigest()), "wb") as f:
                f.write(data)
            n += 1
    return n
