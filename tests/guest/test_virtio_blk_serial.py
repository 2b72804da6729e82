"""virtio-blk-pci and virtio-serial-pci (virtconsole, virtserialport) against QEMU 7.2.

The helper's guest programs (test_virtio_differential.py) cover one driver per transport.
These tests reach further without a guest CPU: a driver written in Python speaks QEMU's
qtest protocol (``-qtest stdio``: port I/O, memory reads and writes) to QEMU 7.2 and to
``uvirt run -accel qtest`` with the same command line, runs the same scenario on both and
compares transcripts of everything it read: IDs, feature words, config space at every
width and offset, geometry for several image sizes and partition tables, used lengths,
status bytes, the data, ISR, device status after errors, control messages and the
chardev output.  QEMU completes block requests in its thread pool, so the driver polls
the used index (bounded) after each kick; uvirt completes inside the kick.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uvirt.testing import qemu as _qemu

pytestmark = pytest.mark.qemu

UVIRT = [sys.executable, "-m", "uvirt"]
DEVFN = 2 << 3                   # first free slot with -nodefaults: 00:02.0
IO_BASE, MSIX_BASE, MODERN_BASE = 0xC000, 0xFEBF0000, 0xFE000000
RING_BASE, BUF_BASE = 0x100000, 0x400000


# --------------------------------------------------------------------------- qtest


class Qtest:
    """A qtest client for QEMU or uvirt (the same protocol, the same command line)."""

    def __init__(self, which: str, args: list[str], cwd: Path) -> None:
        # Debian's QEMU has no qtest accelerator: -qtest with -S (TCG, CPU never started,
        # no firmware) is the same board; uvirt accepts the same line.
        common = ["-machine", "pc", "-m", "128M", "-nodefaults", "-display", "none", "-S",
                  "-qtest", "stdio", *args]
        if which == "qemu":
            cmd = [_qemu.QEMU, *common, "-qtest-log", "/dev/null"]
        else:
            cmd = [*UVIRT, "run", *common]
        self.which = which
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=cwd)

    def cmd(self, line: str) -> str:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        while True:
            reply = self.p.stdout.readline()
            if not reply:
                raise RuntimeError(f"{self.which} died: {self.close()}")
            if not reply.startswith("IRQ"):
                break
        parts = reply.split()
        if parts[:1] != ["OK"]:
            raise RuntimeError(f"{self.which}: {line!r} -> {reply!r}")
        return parts[1] if len(parts) > 1 else ""

    # ports, memory, config space
    def outp(self, port: int, size: int, v: int) -> None:
        self.cmd(f"out{'bwl'[size // 2]} 0x{port:x} 0x{v:x}")

    def inp(self, port: int, size: int) -> int:
        return int(self.cmd(f"in{'bwl'[size // 2]} 0x{port:x}"), 16)

    def rd(self, addr: int, size: int) -> int:
        return int(self.cmd(f"read{ {1: 'b', 2: 'w', 4: 'l', 8: 'q'}[size]} 0x{addr:x}"), 16)

    def wr(self, addr: int, size: int, v: int) -> None:
        self.cmd(f"write{ {1: 'b', 2: 'w', 4: 'l', 8: 'q'}[size]} 0x{addr:x} 0x{v:x}")

    def mem_read(self, addr: int, n: int) -> bytes:
        return bytes.fromhex(self.cmd(f"read 0x{addr:x} 0x{n:x}")[2:])

    def mem_write(self, addr: int, data: bytes) -> None:
        self.cmd(f"write 0x{addr:x} 0x{len(data):x} 0x{data.hex()}")

    def cfg_rd(self, off: int, size: int = 4) -> int:
        self.outp(0xCF8, 4, 0x80000000 | DEVFN << 8 | (off & ~3))
        return self.inp(0xCFC + (off & 3), size)

    def cfg_wr(self, off: int, size: int, v: int) -> None:
        self.outp(0xCF8, 4, 0x80000000 | DEVFN << 8 | (off & ~3))
        self.outp(0xCFC + (off & 3), size, v)

    def close(self) -> str:
        self.p.kill()
        self.p.wait()
        return self.p.stderr.read() if self.p.stderr else ""


class InProcess(Qtest):
    """uvirt without a process: the same command line built in-process (no CPU, no
    firmware, as under qtest), the same accesses made on its address spaces.  uvirt's
    qtest server answers the same protocol, but at a few ms per line."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        from uvirt.options import parse_argv
        from uvirt.launch.runner import build_machine

        self.which = "uvirt"
        self.cwd = cwd
        self.errors: list[str] = []
        old = os.getcwd()
        os.chdir(cwd)
        try:
            cfg = parse_argv(["-machine", "pc", "-m", "128M", "-nodefaults", "-display", "none",
                              "-S", "-qtest", "stdio", *args])
            self.built = build_machine(cfg, cpu=False)
        finally:
            os.chdir(old)
        self.m = self.built.machine

    def outp(self, port: int, size: int, v: int) -> None:
        self.m.io.write(port, size, v)

    def inp(self, port: int, size: int) -> int:
        return self.m.io.read(port, size) & ((1 << (8 * size)) - 1)

    def rd(self, addr: int, size: int) -> int:
        return self.m.memory.read(addr, size)

    def wr(self, addr: int, size: int, v: int) -> None:
        self.m.memory.write(addr, size, v)

    def mem_read(self, addr: int, n: int) -> bytes:
        return bytes(self.m.memory.guest.read(addr, n))

    def mem_write(self, addr: int, data: bytes) -> None:
        self.m.memory.guest.write(addr, data)

    def close(self) -> str:
        self.m.close()
        return "\n".join(f"{k}: {d}" for k, d in self.m.guest_errors)


# --------------------------------------------------------------------------- a driver


class Driver:
    """A virtio-pci driver over qtest; every value it reads goes into ``log``."""

    def __init__(self, qt: Qtest, modern: bool) -> None:
        self.qt = qt
        self.modern = modern
        self.log: list[str] = []
        self.rings: dict[int, dict] = {}
        self.alloc = BUF_BASE
        qt.cfg_wr(0x10, 4, IO_BASE)
        qt.cfg_wr(0x14, 4, MSIX_BASE)
        qt.cfg_wr(0x20, 4, MODERN_BASE)
        qt.cfg_wr(0x24, 4, 0)
        qt.cfg_wr(0x04, 2, 0x7)

    def note(self, what: str, value) -> None:
        self.log.append(f"{what} {value:#x}" if isinstance(value, int) else f"{what} {value}")

    # registers
    def status(self) -> int:
        return self.qt.rd(MODERN_BASE + 0x14, 1) if self.modern else self.qt.inp(IO_BASE + 0x12, 1)

    def set_status(self, v: int) -> None:
        if self.modern:
            self.qt.wr(MODERN_BASE + 0x14, 1, v)
        else:
            self.qt.outp(IO_BASE + 0x12, 1, v)

    def isr(self) -> int:
        return self.qt.rd(MODERN_BASE + 0x1000, 1) if self.modern else self.qt.inp(IO_BASE + 0x13, 1)

    def cfg(self, off: int, size: int) -> int:
        if self.modern:
            return self.qt.rd(MODERN_BASE + 0x2000 + off, size)
        return self.qt.inp(IO_BASE + 20 + off, size)

    def cfg_write(self, off: int, size: int, v: int) -> None:
        if self.modern:
            self.qt.wr(MODERN_BASE + 0x2000 + off, size, v)
        else:
            self.qt.outp(IO_BASE + 20 + off, size, v)

    def features(self) -> int:
        if not self.modern:
            return self.qt.inp(IO_BASE, 4)
        words = []
        for sel in (0, 1):
            self.qt.wr(MODERN_BASE, 4, sel)
            words.append(self.qt.rd(MODERN_BASE + 4, 4))
        return words[0] | words[1] << 32

    def init(self, accept: int, queues: list[int]) -> None:
        """Reset, ACK, DRIVER, features, (FEATURES_OK), queues, DRIVER_OK."""
        self.set_status(0)
        self.set_status(1)
        self.set_status(3)
        self.note("features", self.features())
        if self.modern:
            for sel in (0, 1):
                self.qt.wr(MODERN_BASE + 8, 4, sel)
                self.qt.wr(MODERN_BASE + 12, 4, (accept >> (32 * sel)) & 0xFFFFFFFF)
            self.set_status(0xB)
            self.note("status after FEATURES_OK", self.status())
        else:
            self.qt.outp(IO_BASE + 4, 4, accept & 0xFFFFFFFF)
        self.event_idx = bool(accept & (1 << 29))
        for q in queues:
            self.setup_queue(q)
        self.set_status(0xF if self.modern else 0x7)

    def setup_queue(self, q: int) -> None:
        base = RING_BASE + q * 0x10000
        if self.modern:
            self.qt.wr(MODERN_BASE + 0x16, 2, q)
            size = self.qt.rd(MODERN_BASE + 0x18, 2)
        else:
            self.qt.outp(IO_BASE + 0x0E, 2, q)
            size = self.qt.inp(IO_BASE + 0x0C, 2)
        avail = base + 16 * size
        used = (avail + 6 + 2 * size + 4095) & ~4095
        self.qt.mem_write(base, bytes(used + 6 + 8 * size - base))
        if self.modern:
            for off, addr in ((0x20, base), (0x28, avail), (0x30, used)):
                self.qt.wr(MODERN_BASE + off, 4, addr)
                self.qt.wr(MODERN_BASE + off + 4, 4, 0)
            self.qt.wr(MODERN_BASE + 0x1C, 2, 1)
        else:
            self.qt.outp(IO_BASE + 0x08, 4, base >> 12)
        self.rings[q] = {"desc": base, "avail": avail, "used": used, "size": size, "next": 0,
                         "avail_idx": 0, "used_idx": 0}
        self.note(f"queue {q} size", size)

    def buffer(self, data: bytes | int) -> int:
        n = data if isinstance(data, int) else len(data)
        addr = self.alloc
        self.alloc = (self.alloc + n + 0x3F) & ~0x3F
        self.qt.mem_write(addr, bytes([0xA5]) * n if isinstance(data, int) else data)
        return addr

    def submit(self, q: int, segs: list[tuple[bytes | int, bool]], *, kick: bool = True) -> list[tuple[int, int]]:
        """Descriptors for ``segs`` ((data or length, device-writable)), published and
        kicked; returns the (addr, len) of each."""
        r = self.rings[q]
        out, idxs = [], []
        for data, w in segs:
            addr = self.buffer(data)
            n = data if isinstance(data, int) else len(data)
            out.append((addr, n))
            idxs.append(r["next"] % r["size"])
            r["next"] += 1
        for k, (i, (addr, n), (_, w)) in enumerate(zip(idxs, out, segs)):
            last = k == len(idxs) - 1
            flags = (2 if w else 0) | (0 if last else 1)
            self.qt.mem_write(r["desc"] + 16 * i, struct.pack("<QIHH", addr, n, flags, 0 if last else idxs[k + 1]))
        self.qt.mem_write(r["avail"] + 4 + 2 * (r["avail_idx"] % r["size"]), struct.pack("<H", idxs[0]))
        r["avail_idx"] = (r["avail_idx"] + 1) & 0xFFFF
        self.qt.wr(r["avail"] + 2, 2, r["avail_idx"])
        if kick:
            self.kick(q)
        return out

    def kick(self, q: int) -> None:
        if self.modern:
            self.qt.wr(MODERN_BASE + 0x3000 + 4 * q, 2, q)
        else:
            self.qt.outp(IO_BASE + 0x10, 2, q)

    def wait_used(self, q: int, expect: bool = True) -> tuple[int, int] | None:
        """The next used entry (QEMU completes asynchronously: poll, bounded)."""
        r = self.rings[q]
        deadline = time.monotonic() + (3.0 if expect else 0.3)
        while time.monotonic() < deadline:
            idx = self.qt.rd(r["used"] + 2, 2)
            if idx != r["used_idx"]:
                slot = r["used"] + 4 + 8 * (r["used_idx"] % r["size"])
                r["used_idx"] = (r["used_idx"] + 1) & 0xFFFF
                return self.qt.rd(slot, 4), self.qt.rd(slot + 4, 4)
        return None


def _run(which: str, args: list[str], cwd: Path, scenario) -> tuple[list[str], str]:
    qt = Qtest(which, args, cwd) if which == "qemu" else InProcess(args, cwd)
    try:
        log = scenario(qt)
    finally:
        err = qt.close()
    return log, err


def differential(tmp_path: Path, args: list[str], scenario, setup=None) -> list[str]:
    """Run ``scenario(qtest) -> log`` on QEMU and on uvirt, each in its own directory
    (``setup(dir)`` creates files there); the logs must be equal.  Returns QEMU's."""
    logs = {}
    for which in ("qemu", "uvirt"):
        d = tmp_path / which
        d.mkdir()
        if setup is not None:
            setup(d)
        logs[which], err = _run(which, args, d, scenario)
        assert "Traceback" not in err, err
    assert logs["uvirt"] == logs["qemu"]
    return logs["qemu"]


# --------------------------------------------------------------------------- images


def pattern_image(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.write(bytes((i * 7 + (i >> 9)) & 0xFF for i in range(min(size, 1 << 16))))
        if size > 1 << 16:
            f.truncate(size)


def mbr_image(path: Path, size: int, end_head: int, end_sector: int, nr_sects: int = 1000) -> None:
    pattern_image(path, size)
    sector0 = bytearray(512)
    part = bytearray(16)
    part[5], part[6] = end_head, end_sector
    part[12:16] = nr_sects.to_bytes(4, "little")
    sector0[0x1BE:0x1CE] = part
    sector0[510:512] = b"\x55\xaa"
    with open(path, "r+b") as f:
        f.write(sector0)


def _blk_args(extra_drive: str = "", extra_dev: str = "", file: str = "disk.img") -> list[str]:
    return ["-drive", f"file={file},format=raw,if=none,id=d0{extra_drive}",
            "-device", f"virtio-blk-pci,drive=d0{extra_dev}"]


# --------------------------------------------------------------------------- blk: identity


def _identity(qt: Qtest, cfg_len: int = 64) -> list[str]:
    d = Driver(qt, modern=False)
    log = [f"id {qt.cfg_rd(0):08x} class {qt.cfg_rd(8):08x} sub {qt.cfg_rd(0x2c):08x}"]
    if qt.cfg_rd(0x10) & 1:
        d.modern = False
        log.append(f"legacy features {d.features():#x}")
        for size in (1, 2, 4):
            log.append(f"legacy cfg/{size} " + " ".join(f"{d.cfg(o, size):x}" for o in range(0, cfg_len, size)))
        counts = []
        for q in range(3):
            qt.outp(IO_BASE + 0x0E, 2, q)
            counts.append(qt.inp(IO_BASE + 0x0C, 2))
        log.append(f"legacy queue sizes {counts}")
    if qt.cfg_rd(0x20) & ~0xF:
        d.modern = True
        log.append(f"modern features {d.features():#x} numq {qt.rd(MODERN_BASE + 0x12, 2)}")
        for size in (1, 2, 4):
            log.append(f"modern cfg/{size} " + " ".join(f"{d.cfg(o, size):x}" for o in range(0, cfg_len, size)))
    return log


@pytest.mark.parametrize("transport", ["", ",disable-modern=on", ",disable-legacy=on"])
@pytest.mark.parametrize("drive", ["", ",readonly=on", ",cache=writethrough"])
def test_blk_identity_features_config(tmp_path, transport, drive):
    log = differential(tmp_path, _blk_args(drive, transport), _identity,
                       lambda d: pattern_image(d / "disk.img", 64 << 10))
    assert any("features" in ln for ln in log)


@pytest.mark.parametrize("dev", [",discard=off", ",write-zeroes=off", ",discard=off,write-zeroes=off",
                                 ",config-wce=off", ",queue-size=128", ",serial=abc",
                                 ",cyls=100,heads=4,secs=32", ",any_layout=off,disable-modern=on"])
def test_blk_properties(tmp_path, dev):
    differential(tmp_path, _blk_args("", dev), _identity, lambda d: pattern_image(d / "disk.img", 64 << 10))


@pytest.mark.parametrize("size", [0, 1000, 512, 64 << 10, 1 << 20, 10 << 20, (1 << 30) + 512,
                                  (16 << 30), (9 << 40)])
def test_blk_geometry_and_capacity(tmp_path, size):
    """QEMU's geometry guess and capacity for several image sizes (sparse files)."""
    def scenario(qt):
        d = Driver(qt, modern=False)
        return [f"capacity {d.cfg(0, 4):x} {d.cfg(4, 4):x} geometry {d.cfg(16, 2)} {d.cfg(18, 1)} {d.cfg(19, 1)}"]
    differential(tmp_path, _blk_args(), scenario, lambda d: pattern_image(d / "disk.img", size))


@pytest.mark.parametrize("head,sector", [(15, 63), (3, 32), (63, 32), (254, 63), (7, 0)])
def test_blk_geometry_from_partition_table(tmp_path, head, sector):
    def scenario(qt):
        d = Driver(qt, modern=False)
        return [f"geometry {d.cfg(16, 2)} {d.cfg(18, 1)} {d.cfg(19, 1)}"]
    differential(tmp_path, _blk_args(), scenario,
                 lambda d: mbr_image(d / "disk.img", 8 << 20, head, sector))


def test_blk_null_co(tmp_path):
    args = ["-drive", "file=null-co://,format=raw,if=none,id=d0,file.read-zeroes=on",
            "-device", "virtio-blk-pci,drive=d0"]

    def scenario(qt):
        log = _identity(qt)
        d = Driver(qt, modern=False)
        d.init(0, [0])
        _request(d, 0, [(_hdr(0, 5), False), (512, True), (1, True)])
        _request(d, 0, [(_hdr(1, 5), False), (b"x" * 512, False), (1, True)])
        return log + d.log
    differential(tmp_path, args, scenario)


# --------------------------------------------------------------------------- blk: requests


def _hdr(rtype: int, sector: int = 0) -> bytes:
    return struct.pack("<IIQ", rtype, 0, sector)


def _request(d: Driver, q: int, segs, expect: bool = True) -> None:
    bufs = d.submit(q, segs)
    used = d.wait_used(q, expect)
    d.note("used", "none" if used is None else f"len {used[1]:#x}")
    for (addr, n), (_, w) in zip(bufs, segs):
        if w:
            data = d.qt.mem_read(addr, n)
            d.note("  wrote", data[:24].hex() + (f" ..{sum(data):x}" if n > 24 else ""))
    d.note("  isr", d.isr())
    d.note("  isr again", d.isr())


def _blk_requests(d: Driver) -> None:
    q = 0
    _request(d, q, [(_hdr(0, 0), False), (512, True), (1, True)])              # read 1
    _request(d, q, [(_hdr(0, 3), False), (1024, True), (1, True)])             # read 2
    _request(d, q, [(_hdr(0, 1), False), (100, True), (412, True), (1, True)])  # read split
    _request(d, q, [(_hdr(0, 2), False), (513, True)])                         # data + status together
    _request(d, q, [(_hdr(0, 2) + b"", False), (200, True), (1, True)])        # not a sector multiple
    _request(d, q, [(_hdr(1, 4), False), (bytes(range(256)) * 2, False), (1, True)])  # write
    _request(d, q, [(_hdr(0, 4), False), (512, True), (1, True)])              # read it back
    _request(d, q, [(_hdr(1, 5) + b"\x11" * 512, False), (1, True)])           # header + data together
    _request(d, q, [(_hdr(0, 5)[:8], False), (_hdr(0, 5)[8:], False), (512, True), (1, True)])  # split header
    _request(d, q, [(_hdr(4), False), (1, True)])                              # flush
    _request(d, q, [(_hdr(4), False), (8, True), (1, True)])                   # flush with data
    _request(d, q, [(_hdr(8), False), (20, True), (1, True)])                  # GET_ID
    _request(d, q, [(_hdr(8), False), (4, True), (1, True)])                   # GET_ID, short buffer
    _request(d, q, [(_hdr(0x55), False), (16, True), (1, True)])               # unsupported
    _request(d, q, [(_hdr(2), False), (1, True)])                              # SCSI_CMD
    _request(d, q, [(_hdr(2), False), (b"c" * 16, False), (96, True), (16, True), (1, True)])
    _request(d, q, [(_hdr(10), False), (20, True), (1, True)])                 # GET_LIFETIME
    _request(d, q, [(_hdr(0x80000000, 1), False), (512, True), (1, True)])     # IN | BARRIER
    cap = 128
    _request(d, q, [(_hdr(0, cap), False), (512, True), (1, True)])            # at capacity: IOERR
    _request(d, q, [(_hdr(0, cap - 1), False), (1024, True), (1, True)])       # straddles the end
    _request(d, q, [(_hdr(1, cap), False), (b"w" * 512, False), (1, True)])    # write past the end
    _request(d, q, [(_hdr(0, 1 << 60), False), (512, True), (1, True)])
    _request(d, q, [(_hdr(0, cap), False), (1, True)])                         # zero length at capacity
    # discard / write zeroes: one 16-byte segment {le64 sector, le32 num, le32 flags}
    for rtype in (11, 13):
        _request(d, q, [(_hdr(rtype) + struct.pack("<QII", 6, 2, 0), False), (1, True)])
        _request(d, q, [(_hdr(rtype) + struct.pack("<QII", 6, 2, 1), False), (1, True)])   # UNMAP
        _request(d, q, [(_hdr(rtype) + struct.pack("<QII", 6, 2, 2), False), (1, True)])   # unknown flag
        _request(d, q, [(_hdr(rtype) + struct.pack("<QII", 127, 2, 0), False), (1, True)])  # range
        _request(d, q, [(_hdr(rtype) + struct.pack("<QII", 0, 0x400000, 0), False), (1, True)])  # limit
        _request(d, q, [(_hdr(rtype) + struct.pack("<QII", 6, 1, 0) * 2, False), (1, True)])  # two segments
        _request(d, q, [(_hdr(rtype - 1) + struct.pack("<QII", 6, 1, 0), False), (1, True)])  # OUT bit clear
    _request(d, q, [(_hdr(0, 6), False), (1024, True), (1, True)])             # after discard + write zeroes


@pytest.mark.parametrize("modern", [False, True], ids=["legacy", "modern"])
@pytest.mark.parametrize("drive", ["", ",readonly=on"])
def test_blk_requests(tmp_path, modern, drive):
    def scenario(qt):
        d = Driver(qt, modern)
        accept = (1 << 32 | 1 << 28 | 1 << 9 | 1 << 11 | 1 << 13 | 1 << 14) if modern else (1 << 9 | 1 << 28)
        d.init(accept, [0])
        d.note("wce", d.cfg(32, 1))
        _blk_requests(d)
        d.note("status", d.status())
        return d.log
    log = differential(tmp_path, _blk_args(drive, ",serial=uvirt-serial-0123456789"), scenario,
                       lambda d: pattern_image(d / "disk.img", 64 << 10))
    assert sum(1 for ln in log if ln.startswith("used len")) > 30
    img_q = (tmp_path / "qemu" / "disk.img").read_bytes()
    img_u = (tmp_path / "uvirt" / "disk.img").read_bytes()
    assert img_q == img_u


@pytest.mark.parametrize("serial", [None, "", "a", "12345678901234567890", "123456789012345678901234"])
def test_blk_get_id(tmp_path, serial):
    dev = "" if serial is None else f",serial={serial}"

    def scenario(qt):
        d = Driver(qt, False)
        d.init(0, [0])
        for n in (1, 5, 20, 21, 64):
            _request(d, 0, [(_hdr(8), False), (n, True), (1, True)])
        return d.log
    differential(tmp_path, _blk_args("", dev), scenario, lambda d: pattern_image(d / "disk.img", 64 << 10))


@pytest.mark.parametrize("modern", [False, True], ids=["legacy", "modern"])
@pytest.mark.parametrize("bad", ["no-status", "no-header", "short-header", "dwz-short"])
def test_blk_malformed_request(tmp_path, modern, bad):
    """QEMU's virtio_error: the element is dropped, the device goes silent; with VERSION_1
    DEVICE_NEEDS_RESET and a config interrupt (ISR 3).  A reset brings it back."""
    segs = {"no-status": [(_hdr(0), False), (b"d" * 512, False)],
            "no-header": [(512, True), (1, True)],
            "short-header": [(_hdr(0)[:12], False), (512, True), (1, True)],
            "dwz-short": [(_hdr(13) + b"\0" * 8, False), (1, True)]}[bad]

    def scenario(qt):
        d = Driver(qt, modern)
        accept = (1 << 32) if modern else 0
        d.init(accept, [0])
        _request(d, 0, segs, expect=False)
        d.note("status", d.status())
        _request(d, 0, [(_hdr(0), False), (512, True), (1, True)], expect=False)  # ignored now
        d.init(accept, [0])
        _request(d, 0, [(_hdr(0), False), (512, True), (1, True)])
        d.note("status", d.status())
        return d.log
    differential(tmp_path, _blk_args(), scenario, lambda d: pattern_image(d / "disk.img", 64 << 10))


@pytest.mark.parametrize("accept", [0, 1 << 9, 1 << 11, 1 << 9 | 1 << 11])
@pytest.mark.parametrize("drive", ["", ",cache=writethrough"])
def test_blk_write_cache(tmp_path, accept, drive):
    """wce: what DRIVER_OK does without CONFIG_WCE, config writes, reset."""
    def scenario(qt):
        d = Driver(qt, False)
        d.note("wce before", d.cfg(32, 1))
        d.init(accept, [0])
        d.note("wce after DRIVER_OK", d.cfg(32, 1))
        d.cfg_write(32, 1, 0)
        d.note("wce after write 0", d.cfg(32, 1))
        d.cfg_write(32, 1, 5)
        d.note("wce after write 5", d.cfg(32, 1))
        d.cfg_write(0, 4, 0x12345678)                 # capacity is not writable
        d.note("capacity after write", d.cfg(0, 4))
        d.cfg_write(32, 4, 0x00070100)                # a write covering wce and num_queues
        d.note("wce after covering write", d.cfg(32, 1))
        d.set_status(0)
        d.note("wce after reset", d.cfg(32, 1))
        return d.log
    differential(tmp_path, _blk_args(drive), scenario, lambda d: pattern_image(d / "disk.img", 64 << 10))


@pytest.mark.parametrize("modern", [False, True], ids=["legacy", "modern"])
@pytest.mark.parametrize("ioeventfd", ["", ",ioeventfd=off"])
def test_blk_pending_request_at_driver_ok(tmp_path, modern, ioeventfd):
    """A request published but not kicked before DRIVER_OK: QEMU's ioeventfd start kicks."""
    def scenario(qt):
        d = Driver(qt, modern)
        d.set_status(0)
        d.set_status(1)
        d.set_status(3)
        if modern:
            qt.wr(MODERN_BASE + 8, 4, 1)
            qt.wr(MODERN_BASE + 12, 4, 1)
            d.set_status(0xB)
        d.setup_queue(0)
        d.submit(0, [(_hdr(0, 2), False), (512, True), (1, True)], kick=False)
        d.set_status(0xF if modern else 7)
        d.note("after DRIVER_OK", str(d.wait_used(0, expect=not ioeventfd)))
        d.note("isr", d.isr())
        return d.log
    differential(tmp_path, _blk_args("", ioeventfd), scenario, lambda d: pattern_image(d / "disk.img", 64 << 10))


def test_blk_kick_before_driver_ok_and_event_idx(tmp_path):
    def scenario(qt):
        d = Driver(qt, False)
        d.set_status(0)
        d.set_status(1)
        d.set_status(3)
        d.qt.outp(IO_BASE + 4, 4, 1 << 29)           # EVENT_IDX
        d.event_idx = True
        d.setup_queue(0)
        _request(d, 0, [(_hdr(0), False), (512, True), (1, True)])
        r = d.rings[0]
        d.note("used.flags", qt.rd(r["used"], 2))
        d.note("avail_event", qt.rd(r["used"] + 4 + 8 * r["size"], 2))
        d.submit(0, [(_hdr(0, 2), False), (512, True), (1, True)], kick=False)
        d.set_status(7)                               # DRIVER_OK kicks the queue (ioeventfd start)
        d.note("after DRIVER_OK", str(d.wait_used(0)))
        d.note("isr", d.isr())
        _request(d, 0, [(_hdr(0, 1), False), (512, True), (1, True)])
        d.note("avail_event", qt.rd(r["used"] + 4 + 8 * r["size"], 2))
        return d.log
    differential(tmp_path, _blk_args(), scenario, lambda d: pattern_image(d / "disk.img", 64 << 10))


# --------------------------------------------------------------------------- blk: bad command lines


def _errors(tmp_path: Path, args: list[str]) -> tuple[str, str]:
    """The first error line of QEMU and of uvirt (built in-process) for a command line,
    without the program name; "" when it is accepted."""
    from uvirt.errors import UvirtError

    out = {}
    for which in ("qemu", "uvirt"):
        d = tmp_path / which
        d.mkdir(exist_ok=True)
        pattern_image(d / "disk.img", 64 << 10)
        if which == "qemu":
            cmd = [_qemu.QEMU, "-machine", "pc", "-nodefaults", "-display", "none", "-S",
                   "-qtest", "stdio", "-qtest-log", "/dev/null", *args]
            p = subprocess.run(cmd, cwd=d, input="\n", capture_output=True, text=True, timeout=30)
            lines = [ln for ln in p.stderr.splitlines() if ln.startswith("qemu-system-x86_64: ")]
            out[which] = lines[0].split(": ", 1)[1] if lines else ""
            continue
        try:
            InProcess(args, d).close()
            out[which] = ""
        except UvirtError as e:
            out[which] = str(e)
    return out["qemu"], out["uvirt"]


@pytest.mark.parametrize("args", [
    ["-device", "virtio-blk-pci,drive=x"],
    ["-device", "virtio-blk-pci"],
    ["-drive", "file=nosuch.img,format=raw,if=none,id=d0"],
    ["-drive", "file=disk.img,format=bogus,if=none,id=d0"],
    ["-drive", "file=disk.img,format=qcow2,if=none,id=d0"],
    ["-drive", "file=disk.img,format=raw,if=none,id=d0,readonly=maybe"],
    ["-drive", "file=disk.img,format=raw,if=none,id=d0,bogus=1"],
    ["-drive", "file=disk.img,format=raw,if=none,id=d0", "-drive", "file=disk.img,format=raw,if=none,id=d0"],
    ["-drive", "if=none,id=d0", "-device", "virtio-blk-pci,drive=d0"],
    ["-drive", "file=disk.img,format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0",
     "-device", "virtio-blk-pci,drive=d0"],
    ["-device", "virtconsole"],
    ["-device", "virtio-serial-pci", "-device", "virtserialport,nr=0"],
    ["-device", "virtio-serial-pci", "-device", "virtconsole,nr=31"],
    ["-device", "virtio-serial-pci", "-device", "virtconsole,bus=nosuch"],
    ["-device", "virtio-serial-pci,max_ports=0"],
    ["-device", "virtio-serial-pci,max_ports=512"],
    ["-device", "virtio-serial-pci", "-device", "virtconsole", "-device", "virtconsole,nr=0"],
    ["-device", "virtio-serial-pci", "-device", "virtconsole,name=a", "-device", "virtserialport,name=a"],
    ["-device", "virtio-serial-pci,max_ports=1", "-device", "virtconsole", "-device", "virtconsole"],
], ids=lambda a: " ".join(a))
def test_bad_command_lines(tmp_path, args):
    want, got = _errors(tmp_path, args)
    assert want, "QEMU accepted it"
    assert got == want


@pytest.mark.parametrize("args", [
    ["-device", "virtio-serial-pci", "-device", "virtconsole,bus=virtio-serial-bus.0"],
    ["-device", "virtio-serial-pci,id=vser0", "-device", "virtconsole,bus=vser0.0"],
    ["-device", "virtio-serial-pci,id=vser0", "-device", "virtio-serial-pci",
     "-device", "virtserialport,bus=virtio-serial-bus.0,nr=3"],
], ids=lambda a: " ".join(a))
def test_accepted_command_lines(tmp_path, args):
    assert _errors(tmp_path, args) == ("", "")


# --------------------------------------------------------------------------- serial


def _serial_identity(qt: Qtest) -> list[str]:
    return _identity(qt, cfg_len=16) + [f"msix ctrl {qt.cfg_rd(0x40 if not qt.cfg_rd(0x20) & ~0xF else 0x98) >> 16:#x}"]


@pytest.mark.parametrize("dev", ["", ",disable-modern=on", ",disable-legacy=on", ",max_ports=1",
                                 ",max_ports=2,vectors=0", ",emergency-write=off", ",max_ports=40"])
def test_serial_identity(tmp_path, dev):
    def scenario(qt):
        log = _serial_identity(qt)
        d = Driver(qt, modern=not qt.cfg_rd(0x10) & 1)
        counts = []
        for q in range(90):
            if d.modern:
                qt.wr(MODERN_BASE + 0x16, 2, q)
                counts.append(qt.rd(MODERN_BASE + 0x18, 2))
            else:
                qt.outp(IO_BASE + 0x0E, 2, q)
                counts.append(qt.inp(IO_BASE + 0x0C, 2))
        return log + [f"queue sizes {counts}"]
    differential(tmp_path, ["-device", f"virtio-serial-pci{dev}"], scenario)


def _ctrl(port: int, event: int, value: int) -> bytes:
    return struct.pack("<IHH", port, event, value)


def _read_control(d: Driver, bufs, n: int) -> None:
    for _ in range(n):
        used = d.wait_used(2, expect=True)
        if used is None:
            d.note("control", "none")
            return
        head, length = used
        d.note("control", f"len {length} " + d.qt.mem_read(bufs[head][0], 32).hex())


SERIAL_ARGS = ["-device", "virtio-serial-pci,id=vser0",
               "-chardev", "file,id=c0,path=con0.out", "-device", "virtconsole,chardev=c0",
               "-chardev", "file,id=c1,path=port1.out", "-device", "virtserialport,chardev=c1,name=org.uvirt.p1",
               "-chardev", "file,id=c2,path=con2.out", "-device", "virtconsole,chardev=c2,nr=5,bus=vser0.0",
               "-device", "virtserialport,nr=7"]


@pytest.mark.parametrize("modern", [False, True], ids=["legacy", "modern"])
def test_serial_multiport_protocol(tmp_path, modern):
    def scenario(qt):
        d = Driver(qt, modern)
        accept = (1 << 1 | 1 << 2 | (1 << 32 if modern else 0))
        d.init(accept, [0, 1, 2, 3, 4, 5, 12, 13])
        d.note("isr", d.isr())
        # control rx buffers: 6 of 32 bytes, 1 of 4 bytes (a short one)
        bufs = {}
        for _ in range(6):
            (b,) = d.submit(2, [(32, True)], kick=False)
            bufs[(d.rings[2]["next"] - 1) % d.rings[2]["size"]] = b
        d.kick(2)
        d.submit(3, [(_ctrl(0, 0, 1), False)])                      # DEVICE_READY
        d.wait_used(3)
        _read_control(d, bufs, 4)                                   # PORT_ADD for 4 ports
        for port in (0, 1, 5, 7, 9):                                # 9 does not exist
            d.submit(3, [(_ctrl(port, 3, 1), False)])               # PORT_READY
            d.note("ctrl tx used", str(d.wait_used(3)))
        d.submit(3, [(b"\0\0", False)])                             # too short: ignored
        d.note("ctrl tx used", str(d.wait_used(3)))
        d.submit(3, [(_ctrl(1, 6, 1), False)])                      # PORT_OPEN
        d.note("ctrl tx used", str(d.wait_used(3)))
        _read_control(d, bufs, 2)                                   # what is left of 6 buffers
        for port_tx, text in ((1, b"port0 says hi\n"), (5, b"port1 data"), (13, b"port5 console\n")):
            d.submit(port_tx, [(text[:5], False), (text[5:], False)])
            d.note(f"tx {port_tx} used", str(d.wait_used(port_tx)))
        d.submit(1, [(b"mixed", False), (8, True)])
        d.note("tx mixed used", str(d.wait_used(1)))
        d.cfg_write(8, 4, ord("!"))                                 # emergency write
        d.cfg_write(8, 1, ord("\n"))
        d.note("emerg_wr", d.cfg(8, 4))
        d.cfg_write(0, 2, 80)
        d.note("cols", d.cfg(0, 2))
        d.note("isr", d.isr())
        d.note("status", d.status())
        return d.log

    differential(tmp_path, SERIAL_ARGS, scenario)
    for name in ("con0.out", "port1.out", "con2.out"):
        assert (tmp_path / "uvirt" / name).read_bytes() == (tmp_path / "qemu" / name).read_bytes(), name
    assert (tmp_path / "qemu" / "con0.out").read_bytes() == b"port0 says hi\nmixed!\n"


def test_serial_single_port_without_multiport(tmp_path):
    args = ["-device", "virtio-serial-pci", "-chardev", "file,id=c0,path=out.txt", "-device", "virtconsole,chardev=c0"]

    def scenario(qt):
        d = Driver(qt, False)
        d.init(0, [0, 1])
        d.submit(1, [(b"hello ", False), (b"world\n", False)])
        d.note("used", str(d.wait_used(1)))
        d.submit(0, [(64, True)])
        d.note("rx used", str(d.wait_used(0, expect=False)))
        d.note("isr", d.isr())
        return d.log
    differential(tmp_path, args, scenario)
    assert (tmp_path / "uvirt" / "out.txt").read_bytes() == b"hello world\n" == (tmp_path / "qemu" / "out.txt").read_bytes()


def test_serial_no_port_and_lost_control_messages(tmp_path):
    """A transmit queue without a port is drained (used length 0); control messages
    sent with no receive buffer are lost; a short receive buffer still gets used length 8."""
    def scenario(qt):
        d = Driver(qt, False)
        d.init(1 << 1, [0, 1, 2, 3, 4, 5])
        d.submit(5, [(b"nobody", False)])
        d.note("port1 tx used", str(d.wait_used(5)))
        d.submit(3, [(_ctrl(0, 0, 1), False)])                      # DEVICE_READY, no rx buffer
        d.wait_used(3)
        (b,) = d.submit(2, [(4, True)])
        d.note("late buffer", str(d.wait_used(2, expect=False)))
        d.submit(3, [(_ctrl(0, 3, 1), False)])                      # PORT_READY port 0
        d.wait_used(3)
        d.note("short buffer", str(d.wait_used(2)))
        d.note("short buffer bytes", qt.mem_read(b[0], 8).hex())
        return d.log
    args = ["-device", "virtio-serial-pci", "-chardev", "file,id=c0,path=out.txt", "-device", "virtconsole,chardev=c0"]
    differential(tmp_path, args, scenario)
