"""What counts as a finding while fuzzing: each oracle is a named finding kind.

=====================  ==============================================================
kind                   when
=====================  ==============================================================
exception              a Python exception escapes a device model into the host
hang                   an input runs past its time budget (a device loops, or the
                       guest never reaches its final halt)
dma-before-driver-ok   a virtio device reads or writes guest memory while its status
                       lacks DRIVER_OK (after a reset, or before the driver is done)
dma-outside-buffer     a virtio device writes guest memory that is neither a used ring
                       nor a device-writable descriptor buffer of one of its queues
used-len-overflow      a used element reports more bytes than its chain's
                       device-writable buffers hold
bad-chain-accepted     a used element names a chain that loops, runs past the queue
                       size, or has a head outside the table
isr-without-interrupt  after an input the virtio ISR is set but no interrupt is raised
                       (INTx low, MSI-X off), and the device's last notification was
                       not an MSI-X one (QEMU 7.2 sets ISR on an MSI-X notify too, and
                       disabling MSI-X afterwards does not raise INTx)
reentrancy             the device's registers are reached while the device is inside
                       one of its own register accesses (MMIO -> DMA -> MMIO)
dma-into-own-registers a virtio device's DMA, outside any register access of its own,
                       lands in its own memory BARs that hold registers (a bottom half
                       -> DMA -> MMIO, the CVE-2024-3446 class; QEMU 8 guards it, QEMU
                       7.2 did not); a BAR of plain RAM (a framebuffer, shared memory)
                       is memory
=====================  ==============================================================

The strict checks (all but ``exception`` and ``hang``) follow the virtio 1.2 spec's
"device MUST" rules; QEMU-faithful behaviour can trip some of them on purpose (QEMU serves
a queue notified before DRIVER_OK), which is why they can be chosen (``--oracles``).
They watch the device from outside: a wrapper on the machine's ``GuestMemory`` sees every
DMA access, a proxy in front of each of the device's register regions sees every
register access, and the rings are read from guest memory.
"""
from __future__ import annotations

import struct
import traceback
from dataclasses import dataclass

STRICT = ("dma-before-driver-ok", "dma-outside-buffer", "used-len-overflow",
          "bad-chain-accepted", "isr-without-interrupt", "reentrancy", "dma-into-own-registers")
KINDS = ("exception", "hang", *STRICT)
DRIVER_OK = 4
F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4


@dataclass(frozen=True)
class Finding:
    kind: str
    detail: str

    @property
    def signature(self) -> str:
        """What makes two findings the same bug (kind + where)."""
        return f"{self.kind}: {self.detail.split(' | ')[0]}"


class FindingError(Exception):
    """Raised from inside the board to end an input at once (the guest backend's hooks
    turn it into a host-error stop that carries it)."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(f"{finding.kind}: {finding.detail}")
        self.finding = finding


def exception_finding(e: BaseException) -> Finding:
    """Where a device's exception came from: the innermost frame outside the fuzzer."""
    tb = traceback.extract_tb(e.__traceback__)
    harness = ("/uvirt/fuzz/backends.py", "/uvirt/fuzz/engine.py", "/uvirt/fuzz/oracles.py",
               "/uvirt/fuzz/target.py", "/uvirt/fuzz/ops.py", "/unicorn/")
    frames = [f for f in tb if not any(h in f.filename for h in harness)]
    where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
    return Finding("exception", f"{type(e).__name__} at {where} | {e}")


def _has_registers(region) -> bool:
    """A BAR with register callbacks somewhere in it.  A BAR of plain RAM (virtio-fb's
    framebuffer, ivshmem's shared memory) is memory: DMA into it re-enters nothing."""
    from uvirt.board.memory.regions import Container, MmioRegion
    if isinstance(region, MmioRegion):
        return True
    if isinstance(region, Container):
        return any(_has_registers(child) for _off, child, *_ in region.children)
    return False


def _no_window(addr: int, size: int) -> None:
    return None


class _RegionProxy:
    """Stands in front of one of the device's register objects: counts how deep the
    device is in its own accesses."""

    snapshot_state = ("inner",)

    def __init__(self, inner, monitor: "Monitor") -> None:
        self.inner = inner
        self._m = monitor

    def read(self, offset: int, size: int) -> int:
        m = self._m
        m.enter(offset)
        try:
            return self.inner.read(offset, size)
        finally:
            m.depth -= 1

    def write(self, offset: int, size: int, value: int) -> None:
        m = self._m
        m.enter(offset)
        try:
            self.inner.write(offset, size, value)
        finally:
            m.depth -= 1

    def __getattr__(self, name):
        return getattr(self.inner, name)


class Monitor:
    """The strict oracles for one ``FuzzTarget``."""

    def __init__(self, target, enabled: tuple[str, ...] = KINDS) -> None:
        self.target = target
        self.enabled = frozenset(enabled)
        self.depth = 0
        fn = target.fn
        self.vdev = getattr(fn, "vdev", None)
        guest = target.machine.memory.guest
        cls = type(guest)
        self._read = cls.read.__get__(guest)
        self._write = cls.write.__get__(guest)
        self.driver_write = self._write          # the board backend's own RAM writes
        if self.vdev is not None and self.enabled & {"dma-before-driver-ok", "dma-outside-buffer",
                                                     "used-len-overflow", "bad-chain-accepted",
                                                     "dma-into-own-registers"}:
            guest.read = self._dma_read
            guest.write = self._dma_write
            # A virtqueue reads and writes its rings through a RAM window (a translation
            # cache, uvirt/virtio/queue.py) while the memory map is unchanged, bypassing
            # GuestMemory: the oracles would see ring accesses only after something moved
            # a BAR, so a finding depended on the inputs before it.  No windows: every
            # ring access goes through the wrapper (the same bytes, more slowly).
            guest.ram_window = _no_window
            for vq in self.vdev.queues:
                vq.drop_ram_window()
        if "reentrancy" in self.enabled:
            self._wrap_regions()
        self._msix_notify = False     # this input's last notification went by MSI-X
        self._bars_key: bytes | None = None
        self._bars: list = []
        if self.vdev is not None and "isr-without-interrupt" in self.enabled and hasattr(fn, "notify_vector"):
            notify = fn.notify_vector

            def notify_vector(vector: int) -> None:
                self._msix_notify = fn.msix_enabled()
                notify(vector)
            fn.notify_vector = notify_vector

    def begin(self) -> None:
        """Before an input."""
        self._msix_notify = False

    # -- register accesses
    def _wrap_regions(self) -> None:
        from uvirt.board.memory.regions import MmioRegion
        m = self.target.machine
        for bar in self.target.fn.bars:
            if bar is None or not isinstance(bar.region, MmioRegion):
                continue
            r = bar.region
            r.device = _RegionProxy(r.device, self)
            r.read, r.write = r._fast_paths()
            if r.guard is not None:
                r.set_guard(r.guard)
        with m.batch():
            m.io.commit()
            m.memory.commit()

    def enter(self, offset: int) -> None:
        self.depth += 1
        if self.depth > 1:
            self.depth -= 1
            raise FindingError(Finding("reentrancy", f"{self.target.name}: a register reached from inside "
                                                     f"its own access | offset 0x{offset:x}"))

    # -- DMA
    def _status_check(self, what: str, addr: int, size: int) -> None:
        if "dma-before-driver-ok" in self.enabled and not self.vdev.status & DRIVER_OK:
            raise FindingError(Finding("dma-before-driver-ok",
                                       f"{self.target.name}: {what} without DRIVER_OK | status "
                                       f"0x{int(self.vdev.status):x}, 0x{addr:x}+{size}"))

    def _own_registers(self, what: str, addr: int, size: int) -> None:
        """DMA that lands in the device's own memory BARs (a bottom half -> DMA -> MMIO, the
        CVE-2024-3446 class; QEMU 8 guards it, 7.2 did not)."""
        if "dma-into-own-registers" not in self.enabled or self.depth:
            return                     # inside an access: the reentrancy oracle's business
        for i, base, bar_size in self._memory_bars():
            if addr < base + bar_size and base < addr + size:
                raise FindingError(Finding("dma-into-own-registers",
                                           f"{self.target.name}: {what} into its own registers | "
                                           f"BAR{i}+0x{addr - base:x}"))

    def _memory_bars(self) -> list[tuple[int, int, int]]:
        """(index, address, size) of the memory BARs that decode now.  Every DMA access
        asks (ring accesses included), so the answer is kept while the config bytes it
        follows from (command, the BAR registers; QEMU ``pci_bar_address``) are the same."""
        fn = self.target.fn
        data = getattr(getattr(fn, "config", None), "data", None)
        key = bytes(data[0x04:0x06]) + bytes(data[0x10:0x34]) if data is not None else None
        if key is None or key != self._bars_key:
            self._bars_key = key
            self._bars = [(i, base, bar.size) for i, bar in enumerate(fn.bars[:6])
                          if bar is not None and not bar.io and _has_registers(bar.region)
                          and (base := fn.bar_address(i)) is not None]
        return self._bars

    def _dma_read(self, addr: int, size: int) -> bytes:
        self._status_check("DMA read", addr, size)
        self._own_registers("DMA read", addr, size)
        return self._read(addr, size)

    def _dma_write(self, addr: int, data) -> None:
        size = len(data)
        self._status_check("DMA write", addr, size)
        self._own_registers("DMA write", addr, size)
        if self.enabled & {"dma-outside-buffer", "used-len-overflow", "bad-chain-accepted"}:
            self._check_write(addr, bytes(data))
        self._write(addr, data)

    def _queues(self):
        """The queues a device may serve: a descriptor table and a size (QEMU's
        ``virtio_queue_notify_vq`` tests ``vring.desc``).  A used ring at guest address 0
        is a used ring: a modern QUEUE_ENABLE after a legacy set-up places it there, as
        QEMU 7.2's ``virtio_queue_set_rings`` does with the never-written queue_used."""
        for vq in self.vdev.queues:
            if vq.desc and vq.size:
                yield vq

    def _descs(self, table: int, n: int) -> list[tuple[int, int, int, int]]:
        raw = self._read(table, 16 * n)
        return list(struct.iter_unpack("<QIHH", raw))

    def _check_write(self, addr: int, data: bytes) -> None:
        end = addr + len(data)
        for vq in self._queues():
            ring_end = vq.used + 6 + 8 * vq.size
            if vq.used <= addr and end <= ring_end:
                self._check_used(vq, addr, data)
                return
        if "dma-outside-buffer" not in self.enabled:
            return
        for vq in self._queues():
            descs = self._descs(vq.desc, vq.size)
            for a, ln, flags, _nxt in descs:
                if flags & F_WRITE and a <= addr and end <= a + ln:
                    return
                if flags & F_INDIRECT and ln % 16 == 0 and 0 < ln <= 16 * 1024:
                    for ia, iln, ifl, _ in self._descs(a, ln // 16):
                        if ifl & F_WRITE and ia <= addr and end <= ia + iln:
                            return
        raise FindingError(Finding("dma-outside-buffer",
                                   f"{self.target.name}: wrote guest memory outside every writable "
                                   f"buffer | 0x{addr:x}+{len(data)}"))

    def _check_used(self, vq, addr: int, data: bytes) -> None:
        """A used element being written: is the chain it names sound, its length honest?
        A head with the INDIRECT flag is read both ways (QEMU's devices follow the table
        whether or not the feature was negotiated; a device without indirect support reads
        the head as a plain buffer): only what is wrong both ways is a finding."""
        off = addr - (vq.used + 4)
        if off < 0 or off % 8 or len(data) < 8:
            return
        elem_id, length = struct.unpack_from("<II", data)
        if elem_id >= vq.size:
            self._bad_chain("used id outside the queue", f"id {elem_id} >= size {vq.size}")
            return
        descs = self._descs(vq.desc, vq.size)
        ways = [self._walk(descs, elem_id, vq.size, elem_id)]
        a, ln, flags, _ = descs[elem_id]
        if flags & F_INDIRECT and ln and not ln % 16 and ln <= 16 * 1024:
            ways.append(self._walk(self._descs(a, ln // 16), 0, ln // 16, elem_id))
        good = [w for w in ways if isinstance(w, int)]
        if not good:
            self._bad_chain(*ways[0])
            return
        total = max(good)
        if "used-len-overflow" in self.enabled and length > total:
            raise FindingError(Finding("used-len-overflow",
                                       f"{self.target.name}: used length larger than the writable "
                                       f"buffers | {length} > {total}, chain {elem_id}"))

    @staticmethod
    def _walk(descs, i: int, n: int, head: int):
        """Writable bytes of the chain from ``i``, or (what, why) if it loops or runs out."""
        total = count = 0
        while True:
            _a, ln, flags, nxt = descs[i]
            count += 1
            if count > n:
                return ("a looping chain used", f"chain from {head}: more than {n} descriptors")
            if flags & F_WRITE:
                total += ln
            if not flags & F_NEXT:
                return total
            if nxt >= n:
                return ("a chain with next out of range used", f"chain from {head}: next {nxt} "
                        f"outside {n} entries")
            i = nxt

    def _bad_chain(self, what: str, why: str) -> None:
        if "bad-chain-accepted" in self.enabled:
            raise FindingError(Finding("bad-chain-accepted", f"{self.target.name}: {what} | {why}"))

    # -- after an input
    def after(self) -> Finding | None:
        if self.vdev is None or "isr-without-interrupt" not in self.enabled:
            return None
        fn = self.target.fn
        msix = getattr(fn, "msix", None)
        if (self.vdev.isr & 1 and not fn.intx_level and not (msix is not None and msix.enabled)
                and not self._msix_notify):
            return Finding("isr-without-interrupt", f"{self.target.name}: ISR set with INTx low | "
                                                    f"ISR 0x{self.vdev.isr:x}")
        return None
