"""A test device family with known bugs, for checking that ``uvirt fuzz`` finds them.

``uvirt fuzz --python uvirt.fuzz.planted:BUG`` fuzzes a virtio device (type 42, one queue of
16) whose driver-facing part is the project's correct virtio-pci transport, but whose
request processing walks the ring by hand, with one planted bug:

==============  ======================================================  ===================
factory         the bug                                                 finding
==============  ======================================================  ===================
loop            no loop guard when following ``next``                   hang
off_by_one      a length check ``>`` written as ``> len + 1``: the      dma-outside-buffer
                response runs one byte past the writable buffer
unchecked_addr  the request header is read straight from a view of      exception
                guest RAM at the descriptor's address, unchecked
reset_state     "started" survives a device reset, so a notify after    dma-before-driver-ok
                reset is served although the driver is not ready
reentrancy      the register regions have no re-entrancy guard and the  reentrancy
                status byte is written while the notify is still being
                handled (a descriptor may point at the device's BAR)
clean           none of the above (the control)                         (none)
==============  ======================================================  ===================

A request: a device-readable header (``u32 type, u32 pad``), then device-writable
buffers; the device fills them with ``0xA5`` and writes a status byte into the last one.
"""
from __future__ import annotations

import struct

from uvirt.virtio.device import VirtioDevice

F_NEXT, F_WRITE = 1, 2
DEVICE_ID = 42


class PlantedDevice(VirtioDevice):
    snapshot_state = ("last_avail", "started")

    device_id = DEVICE_ID
    name = "uvirt-planted"
    queue_sizes = (16,)
    config_len = 0

    def __init__(self, bug: str) -> None:
        super().__init__()
        self.bug = bug
        self.last_avail = 0
        self.started = False
        self.ram = None
        # requests are served inside the notify access (QEMU's ioeventfd=off) for the
        # re-entrancy bug, as device work after it otherwise
        self.ioeventfd = bug != "reentrancy"

    def get_features(self, features: int) -> int:
        from uvirt.virtio.features import VirtioFeature as F
        return features & ~F.RING_INDIRECT_DESC & ~F.RING_EVENT_IDX     # it walks plain chains

    def device_reset(self) -> None:
        self.last_avail = 0
        if self.bug != "reset_state":
            self.started = False

    def set_status_hook(self, status: int) -> None:
        self.status = status
        if status & 4:
            self.started = True

    def handle_output(self, index: int) -> None:
        q = self.queues[0]
        ok = self.started if self.bug == "reset_state" else (self.status & 4 and self.started)
        if not ok or not q.desc or not q.avail or not q.used:
            return
        mem = self.mem
        avail_idx = int.from_bytes(mem.read(q.avail + 2, 2), "little")
        served = 0
        while self.last_avail != avail_idx and served < q.size:
            head = int.from_bytes(mem.read(q.avail + 4 + 2 * (self.last_avail % q.size), 2), "little") % q.size
            self.last_avail = (self.last_avail + 1) & 0xFFFF
            served += 1
            written = self._serve(q, head)
            if written is None:
                return
            slot = int.from_bytes(mem.read(q.used + 2, 2), "little")
            mem.write(q.used + 4 + 8 * (slot % q.size), struct.pack("<II", head, written))
            mem.write(q.used + 2, struct.pack("<H", (slot + 1) & 0xFFFF))
        if served:
            self.isr |= 1
            self.transport.notify_vector(self.vectors[0])

    def _serve(self, q, head: int) -> int | None:
        mem = self.mem
        descs = []
        i, count = head, 0
        while True:
            addr, length, flags, nxt = struct.unpack("<QIHH", mem.read(q.desc + 16 * i, 16))
            descs.append((addr, length, flags))
            count += 1
            if self.bug != "loop" and count > q.size:
                self.error("looped descriptor chain")
                return None
            if not flags & F_NEXT:
                break
            i = nxt % q.size
        readable = [d for d in descs if not d[2] & F_WRITE]
        writable = [d for d in descs if d[2] & F_WRITE]
        if not readable:
            return 0
        h_addr, h_len, _ = readable[0]
        if self.bug == "unchecked_addr":
            if self.ram is None:
                pc = mem._space.ram_piece(0)
                self.ram = pc.region.buffer.view
            (kind,) = struct.unpack_from("<I", self.ram, h_addr)      # no bounds check
        else:
            kind = int.from_bytes(mem.read(h_addr, 4), "little") if h_len >= 4 else 0
        written = 0
        for k, (addr, length, _f) in enumerate(writable):
            n = min(length, 64)
            if not n:
                continue
            if self.bug == "off_by_one" and n == length:
                n = length + 1                  # "if n > len + 1: n = len + 1"
            data = bytes([0xA5]) * (n - 1) + bytes([kind & 0xFF]) if k == len(writable) - 1 else bytes([0xA5]) * n
            mem.write(addr, data)
            written += n
        return written


def _make(bug: str):
    def factory(machine):
        from uvirt.virtio.pci import VirtioPci
        dev = PlantedDevice(bug)
        fn = VirtioPci(dev, class_code=0x00FF, vectors=2)
        fn.realize(machine.memory.guest)
        if bug == "reentrancy":
            for bar in fn.bars:
                region = getattr(bar, "region", None)
                if region is not None and getattr(region, "guard", None) is not None:
                    region.guard = None
                    region.read, region.write = region._fast_paths()
        machine.add_pci(fn)
        return fn
    factory.__name__ = bug
    return factory


loop = _make("loop")
off_by_one = _make("off_by_one")
unchecked_addr = _make("unchecked_addr")
reset_state = _make("reset_state")
reentrancy = _make("reentrancy")
clean = _make("clean")

#: each planted bug and the finding kind that reveals it
EXPECTED = {"loop": "hang", "off_by_one": "dma-outside-buffer", "unchecked_addr": "exception",
            "reset_state": "dma-before-driver-ok", "reentrancy": "reentrancy"}
