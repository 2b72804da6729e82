"""A fuzz input as a stream of operations on one device.

Format (QEMU's generic-fuzz idea, tests/qtest/fuzz/generic_fuzz.c): the input is cut into
commands at the 4-byte separator ``FUZZ``; a command's first byte (modulo the number of
kinds) picks the operation, the following bytes are its operands (little-endian, missing
bytes read as 0).  Inserting or deleting bytes inside one command leaves the others
meaningful, and libFuzzer's dictionary keeps the separator handy.

Operations are decoded against a ``Layout`` (the device's BARs and, for a virtio device,
its queues as the set-up driver placed them), and each expands into *primitives* that
both backends execute the same way (uvirt/fuzz/backends.py):

    ("pio_r", port, size)          ("pio_w", port, size, value)
    ("mem_r", addr, size)          ("mem_w", addr, size, value)
    ("ram", addr, bytes)           ("wait", ns)    device work runs, the clock moves ns

PCI configuration accesses become port I/O on 0xCF8/0xCFC, as a guest makes them.  The
virtio operations write guest RAM shaped as the split ring (virtio 1.2 §2.7): descriptor
table entries, the available ring and its index, indirect tables, request headers.  A
``chain`` is valid by construction (buffers inside the DMA area, ``next`` links in range,
the available index bumped by one) so inputs get deep quickly; the other operations (and
mutation) corrupt flags, ``next``, lengths, addresses and the index.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

SEPARATOR = b"FUZZ"
CONFIG_ADDRESS, CONFIG_DATA = 0xCF8, 0xCFC

# the guest-RAM layout the fuzzer owns (below: the harness; above: nothing)
CODE_BASE = 0x00800000        # compiled operations (guest backend)
RESULTS_BASE = 0x00900000     # each read's value, 4 bytes per read
DMA_BASE = 0x01000000         # rings: queue q at DMA_BASE + q * QUEUE_STRIDE
QUEUE_STRIDE = 0x10000
BUF_BASE = 0x01100000         # data buffers: 256 slots of BUF_SLOT bytes
BUF_SLOT = 0x1000
BUF_SLOTS = 256
DMA_END = BUF_BASE + BUF_SLOT * BUF_SLOTS
MAX_RAM_WRITE = 256

VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT = 1, 2, 4


class OpKind(IntEnum):
    CFG_READ = 0
    CFG_WRITE = 1
    IO_READ = 2
    IO_WRITE = 3
    MMIO_READ = 4
    MMIO_WRITE = 5
    RAM_WRITE = 6
    DESC = 7
    AVAIL = 8
    NOTIFY = 9
    CHAIN = 10
    INDIRECT = 11
    RESET = 12
    WAIT = 13
    USED_READ = 14


#: operand bytes each kind reads after its kind byte
OPERAND_BYTES = {
    OpKind.CFG_READ: 2, OpKind.CFG_WRITE: 6, OpKind.IO_READ: 4, OpKind.IO_WRITE: 12,
    OpKind.MMIO_READ: 6, OpKind.MMIO_WRITE: 14, OpKind.RAM_WRITE: 4, OpKind.DESC: 12,
    OpKind.AVAIL: 4, OpKind.NOTIFY: 1, OpKind.CHAIN: 8, OpKind.INDIRECT: 8, OpKind.RESET: 1,
    OpKind.WAIT: 2, OpKind.USED_READ: 1,
}
SIZES = (1, 2, 4, 8)


@dataclass(frozen=True)
class BarInfo:
    index: int
    io: bool
    addr: int
    size: int


@dataclass
class QueueInfo:
    index: int
    size: int
    desc: int
    avail: int
    used: int
    #: this queue's own notify register (kind "pio"/"mem", address, size): the modern
    #: transport gives each queue an address (queue_notify_off x the multiplier); None:
    #: ``Layout.notify`` with the queue index as the value (legacy QUEUE_NOTIFY)
    notify: tuple | None = None


@dataclass
class Layout:
    """What operations are decoded against: the device's PCI address, BARs, queues, and
    how to notify a queue and reset the device (virtio-pci legacy registers, or the
    modern transport's common configuration and notify region)."""
    devfn: int
    bars: list[BarInfo]
    queues: list[QueueInfo] = field(default_factory=list)
    notify: tuple | None = None        # (kind "pio"/"mem", address, size) of QUEUE_NOTIFY
    status: tuple | None = None        # (kind, address, size) of the device status register
    isr: tuple | None = None           # (kind, address, size) of the ISR register
    header: bytes = b""                # a well-formed request header for this device
    init: tuple = ()                   # the driver's initialisation after a reset (primitives)
    init_ok: tuple = ()                # ... and its final DRIVER_OK write
    #: decode()'s cache of decoded commands (an Op is immutable, so sharing it is safe)
    decoded: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Op:
    """One decoded operation: what it means (for people) and what it does (primitives)."""
    kind: OpKind
    text: str
    prims: tuple


def split_commands(data: bytes) -> list[bytes]:
    return [c for c in data.split(SEPARATOR) if c]


def _u(b: bytes, off: int, n: int) -> int:
    return int.from_bytes(b[off:off + n].ljust(n, b"\0"), "little")


class _Decoder:
    def __init__(self, layout: Layout) -> None:
        self.L = layout
        self.avail_idx = [0] * len(layout.queues)   # the driver's own view, per queue

    def _bar(self, sel: int, io: bool | None) -> BarInfo | None:
        bars = [b for b in self.L.bars if io is None or b.io == io]
        return bars[sel % len(bars)] if bars else None

    def _cfg_addr(self, off: int) -> int:
        return 0x80000000 | (self.L.devfn << 8) | (off & 0xFC)

    def decode(self, cmd: bytes) -> Op | None:
        kind = OpKind(cmd[0] % len(OpKind))
        a = cmd[1:]
        L = self.L
        if kind in (OpKind.CFG_READ, OpKind.CFG_WRITE):
            size = SIZES[a[0:1][0] % 3] if a else 1
            off = _u(a, 1, 1) & ~(size - 1)
            port = CONFIG_DATA + (off & 3)
            sel = ("pio_w", CONFIG_ADDRESS, 4, self._cfg_addr(off))
            if kind == OpKind.CFG_READ:
                return Op(kind, f"config read{size * 8} [0x{off:02x}]", (sel, ("pio_r", port, size)))
            value = _u(a, 2, 4) & ((1 << (8 * size)) - 1)
            return Op(kind, f"config write{size * 8} [0x{off:02x}] = 0x{value:x}",
                      (sel, ("pio_w", port, size, value)))
        if kind in (OpKind.IO_READ, OpKind.IO_WRITE, OpKind.MMIO_READ, OpKind.MMIO_WRITE):
            io = kind in (OpKind.IO_READ, OpKind.IO_WRITE)
            bar = self._bar(_u(a, 0, 1), io)
            if bar is None:
                return None
            size = SIZES[_u(a, 1, 1) % (3 if io else 4)]
            off = (_u(a, 2, 4) % bar.size) & ~(size - 1)
            addr = bar.addr + off
            where = f"BAR{bar.index}+0x{off:x}"
            if kind in (OpKind.IO_READ, OpKind.MMIO_READ):
                if size == 8:
                    return Op(kind, f"read64 {where}", (("mem_r", addr, 4), ("mem_r", addr + 4, 4)))
                return Op(kind, f"read{size * 8} {where}", (("pio_r" if io else "mem_r", addr, size),))
            value = _u(a, 6, 8) & ((1 << (8 * size)) - 1)
            if size == 8:      # Unicorn hands an 8-byte access to MMIO as two 4-byte ones
                return Op(kind, f"write64 {where} = 0x{value:x}",
                          (("mem_w", addr, 4, value & 0xFFFFFFFF), ("mem_w", addr + 4, 4, value >> 32)))
            return Op(kind, f"write{size * 8} {where} = 0x{value:x}",
                      (("pio_w" if io else "mem_w", addr, size, value),))
        if kind == OpKind.RAM_WRITE:
            off = _u(a, 0, 3) % (DMA_END - DMA_BASE)
            data = bytes(a[3:3 + MAX_RAM_WRITE])
            addr = DMA_BASE + off
            data = data[:DMA_END - addr]
            if not data:
                return None
            return Op(kind, f"ram write 0x{addr:x} <- {data.hex()}", (("ram", addr, data),))
        if kind == OpKind.RESET:
            if L.status is None:
                return None
            sk, saddr, ssize = L.status
            self.avail_idx = [0] * len(L.queues)
            how = _u(a, 0, 1) % 3
            reset = ((f"{sk}_w", saddr, ssize, 0),)
            if how == 0:
                return Op(kind, "device reset (status = 0)", reset)
            if how == 1:
                return Op(kind, "device reset and the driver's set-up again, up to DRIVER_OK",
                          reset + L.init + L.init_ok)
            return Op(kind, "device reset and the driver's set-up again, without DRIVER_OK",
                      reset + L.init)
        if kind == OpKind.WAIT:
            ns = _u(a, 0, 2) * 1000
            return Op(kind, f"wait {ns // 1000} us (device work runs)", (("wait", ns),))
        if not L.queues:
            return None
        q = L.queues[_u(a, 0, 1) % len(L.queues)]
        if kind == OpKind.NOTIFY:
            prim = self._notify(q)
            if prim is None:
                return None
            return Op(kind, f"notify queue {q.index}", (prim,))
        if kind == OpKind.USED_READ:
            return Op(kind, f"read used.idx of queue {q.index}", (("mem_r", q.used + 2, 2),))
        if kind == OpKind.DESC:
            i = _u(a, 1, 2) % q.size
            raw = _u(a, 3, 1)
            addr = self._addr(raw, _u(a, 4, 4))
            length, flags, nxt = _u(a, 8, 2), _u(a, 10, 1) & 7, _u(a, 11, 1)
            return Op(kind, f"queue {q.index} desc[{i}] = addr 0x{addr:x} len {length} flags {flags} next {nxt}",
                      (("ram", q.desc + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt)),))
        if kind == OpKind.AVAIL:
            head = _u(a, 1, 2) % q.size if not _u(a, 3, 1) & 0x80 else _u(a, 1, 2)
            bump = _u(a, 3, 1) & 0x7F
            slot = self.avail_idx[q.index] % q.size
            self.avail_idx[q.index] = (self.avail_idx[q.index] + (bump % 4 if bump < 0x70 else bump)) & 0xFFFF
            return Op(kind, f"queue {q.index} avail[{slot}] = {head}, avail.idx = {self.avail_idx[q.index]}",
                      (("ram", q.avail + 4 + 2 * slot, struct.pack("<H", head & 0xFFFF)),
                       ("ram", q.avail + 2, struct.pack("<H", self.avail_idx[q.index]))))
        if kind in (OpKind.CHAIN, OpKind.INDIRECT):
            return self._chain(kind, q, a)
        return None

    def _addr(self, raw: int, value: int) -> int:
        """Buffer addresses: mostly a slot of the DMA area (top bits 00/10), sometimes one
        of the device's own memory BARs (01: DMA into its registers), sometimes anything."""
        top = raw >> 6
        if top == 3:
            return value | ((raw & 0x1F) << 32 if raw & 0x20 else 0)
        if top == 1:
            mem = [b for b in self.L.bars if not b.io]
            if mem:
                bar = mem[raw % len(mem)]
                return bar.addr + (value % bar.size)
        return BUF_BASE + (value % BUF_SLOTS) * BUF_SLOT + (raw & 0x3F) * 0x10 * (top >> 1)

    def _chain(self, kind: OpKind, q: QueueInfo, a: bytes) -> Op:
        """A well-formed request: header (device-readable), data, status (device-writable),
        published in the available ring and notified.  Operand bits bend it."""
        n = 1 + _u(a, 1, 1) % 4                       # descriptors in the chain
        head = _u(a, 2, 1) % q.size
        slot0 = _u(a, 3, 1)
        lens = _u(a, 4, 2)
        twist = _u(a, 6, 1)                            # corruption selector
        write_from = 1 + _u(a, 7, 1) % n if n > 1 else 0
        descs = []
        for k in range(n):
            buf = BUF_BASE + ((slot0 + k) % BUF_SLOTS) * BUF_SLOT
            length = len(self.L.header) if k == 0 and self.L.header else 1 + (lens >> (k * 3) & 7) * 64
            flags = (VRING_DESC_F_NEXT if k < n - 1 else 0) | (VRING_DESC_F_WRITE if k >= write_from else 0)
            descs.append([buf, length, flags, k + 1])
        prims: list = []
        if self.L.header:
            prims.append(("ram", descs[0][0], self.L.header))      # before any twist
        if twist & 0x7 == 1 and n > 1:
            descs[-1][2] |= VRING_DESC_F_NEXT; descs[-1][3] = 0            # loop back to the first
        elif twist & 0x7 == 2:
            descs[0][1] = 0xFFFFFFFF                                      # huge length
        elif twist & 0x7 == 3:
            descs[(twist >> 3) % n][0] = 0xFFFFF000 + (lens & 0xFFF)     # outside RAM
        elif twist & 0x7 == 4:
            descs[-1][1] = 0                                              # empty buffer
        elif twist & 0x7 == 5:
            descs[-1][0] = self._addr(0x40 | (twist >> 3), lens)          # into a BAR
        text_extra = ("", " (loop)", " (huge length)", " (address outside RAM)", " (empty buffer)",
                      " (buffer in a BAR)", "", "")[twist & 7]
        if kind == OpKind.INDIRECT:
            table = BUF_BASE + ((slot0 + 8) % BUF_SLOTS) * BUF_SLOT
            tbl = b"".join(struct.pack("<QIHH", d[0], d[1], d[2], d[3] if d[2] & 1 else 0) for d in descs)
            prims.append(("ram", table, tbl))
            flags = VRING_DESC_F_INDIRECT | (VRING_DESC_F_NEXT if twist & 0x8 else 0)
            prims.append(("ram", q.desc + 16 * head, struct.pack("<QIHH", table, len(tbl), flags, 0)))
            what = f"indirect chain of {n} at desc[{head}]"
        else:
            idx = [(head + k) % q.size for k in range(n)]
            for k, d in enumerate(descs):
                nxt = idx[d[3]] if d[3] < n else 0
                prims.append(("ram", q.desc + 16 * idx[k], struct.pack("<QIHH", d[0], d[1], d[2], nxt)))
            what = f"chain of {n} from desc[{head}]"
        slot = self.avail_idx[q.index] % q.size
        self.avail_idx[q.index] = (self.avail_idx[q.index] + 1) & 0xFFFF
        prims.append(("ram", q.avail + 4 + 2 * slot, struct.pack("<H", head)))
        prims.append(("ram", q.avail + 2, struct.pack("<H", self.avail_idx[q.index])))
        notify = self._notify(q)
        if notify is not None:
            prims.append(notify)
        return Op(kind, f"queue {q.index} {what}{text_extra}, notify", tuple(prims))

    def _notify(self, q: QueueInfo) -> tuple | None:
        """The driver's notify of queue ``q``: the value is the queue index either way
        (the modern register ignores it without VIRTIO_F_NOTIFICATION_DATA)."""
        where = q.notify or self.L.notify
        if where is None:
            return None
        nk, naddr, nsize = where
        return (f"{nk}_w", naddr, nsize, q.index)


#: kinds whose meaning depends on the driver's available indexes so far (and RESET,
#: which zeroes them): the others decode from their bytes alone
_STATEFUL = frozenset((OpKind.AVAIL, OpKind.CHAIN, OpKind.INDIRECT, OpKind.RESET))
_NKINDS = len(OpKind)
#: decoded commands kept per layout (cleared when full): libFuzzer's mutants share most
#: of their commands with the input they came from
DECODE_CACHE_SIZE = 1 << 16


def decode(data: bytes, layout: Layout) -> list[Op]:
    """The operations of one input (commands that mean nothing for this device drop out).

    A command decodes to the same ``Op`` every time it meets the same decoder state (its
    bytes; for the ring operations also the available indexes so far), so decoded
    commands are kept in ``layout.decoded``: decoding was 40% of an execution on the
    board backend with inputs of libFuzzer's usual length (1-4 KB, ~150 commands)."""
    d = _Decoder(layout)
    cache = layout.decoded
    if len(cache) > DECODE_CACHE_SIZE:
        cache.clear()
    out = []
    for cmd in data.split(SEPARATOR):
        if not cmd:
            continue
        if cmd[0] % _NKINDS not in _STATEFUL:
            op = cache.get(cmd, _MISSING)
            if op is _MISSING:
                op = cache[cmd] = d.decode(cmd)
        else:
            key = (cmd, tuple(d.avail_idx))
            hit = cache.get(key)
            if hit is None:
                op = d.decode(cmd)
                cache[key] = (op, tuple(d.avail_idx))
            else:
                op, after = hit
                d.avail_idx = list(after)
        if op is not None:
            out.append(op)
    return out


_MISSING = object()


def encode(kind: OpKind, operands: bytes = b"") -> bytes:
    """One command, for seeds, dictionaries and tests (decode(encode(...)) round-trips)."""
    return bytes((int(kind),)) + operands
