"""MSI-X: capability, vector table and pending-bit array (QEMU ``hw/pci/msix.c``).

Capability (PCI 3.0 §6.8.2; docs/virtio-pci-facts.md §1.8)
    +0 id 0x11 | +1 next | +2 message control: bits 10:0 table size - 1 (RO),
    bit 14 function mask, bit 15 enable (both RW) | +4 table offset/BIR | +8 PBA offset/BIR

Table entry (16 bytes)
    +0 address low | +4 address high | +8 data | +12 vector control (bit 0 masked).
    Every entry starts masked with address and data 0 (QEMU ``msix_mask_all``).

Behaviour copied from QEMU
    * ``notify(v)`` does nothing while MSI-X is disabled; while the vector or the whole
      function is masked it sets the vector's PBA bit; otherwise it sends the message
      (a 32-bit write of ``data`` to ``address`` through the function's bus-master
      address space: dropped while bus mastering is off).
    * Unmasking a vector (or the function) with its PBA bit set clears the bit and sends
      the message at once.
    * Table accesses are 4 or 8 bytes (8 split into two 4-byte accesses, as QEMU's
      ``.impl.max_access_size = 4``); other sizes read 0 and are recorded as guest errors.
      PBA writes are ignored.
    * "Exclusive BAR" layout (``msix_init_exclusive_bar``): a 4 KiB memory BAR, table at 0,
      PBA at 0x800; the rest of the BAR reads 0.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Callable

from uvirt.board.memory.regions import MmioRegion
from uvirt.board.pci.bus import CapId, PciFunction

MSIX_CAP_SIZE = 12
ENTRY_SIZE = 16
EXCLUSIVE_BAR_SIZE = 0x1000
EXCLUSIVE_PBA_OFFSET = 0x800

CONTROL_ENABLE = 0x8000
CONTROL_MASKALL = 0x4000
VECTOR_MASKED = 0x1
_ENABLE_HI, _MASKALL_HI = CONTROL_ENABLE >> 8, CONTROL_MASKALL >> 8


class MsixReg(IntEnum):
    """Capability field offsets."""

    CONTROL = 2
    TABLE = 4
    PBA = 8


#: the control word's high byte (enable, function mask), from the capability
_CONTROL_HIGH = MsixReg.CONTROL.value + 1


class MsixEntry(IntEnum):
    """Table entry field offsets."""

    ADDR_LO = 0
    ADDR_HI = 4
    DATA = 8
    VECTOR_CTRL = 12


_VECTOR_CTRL = int(MsixEntry.VECTOR_CTRL)
#: an entry's address and data, read in one call (``notify``)
_MESSAGE = struct.Struct("<QI")


class Msix:
    """MSI-X for one PCI function.  ``fn.config_write`` must call ``config_written``."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("table", "pba", "_was_masked_all")

    def __init__(self, fn: PciFunction, nvectors: int, *, bar: int, cap_offset: int,
                 table_offset: int = 0, pba_offset: int = EXCLUSIVE_PBA_OFFSET) -> None:
        if not 0 < nvectors <= 2048:
            raise ValueError(f"{fn.name}: MSI-X vector count 0x{nvectors:x} outside 1..0x800")
        self.fn = fn
        self.nvectors = nvectors
        self.cap = cap_offset
        self.table = bytearray(nvectors * ENTRY_SIZE)
        self.pba = bytearray(((nvectors + 63) // 64) * 8)
        c = fn.config
        fn.add_capability(CapId.MSIX, cap_offset, MSIX_CAP_SIZE)
        c.set(cap_offset + MsixReg.CONTROL, 2, nvectors - 1)
        c.set(cap_offset + MsixReg.TABLE, 4, table_offset | bar)
        c.set(cap_offset + MsixReg.PBA, 4, pba_offset | bar)
        c.wmask[cap_offset + MsixReg.CONTROL + 1] |= (CONTROL_ENABLE | CONTROL_MASKALL) >> 8
        self.table_region = MmioRegion("msix-table", len(self.table), _Table(self),
                                       valid_sizes=(4, 8), impl_min=4, impl_max=4)
        self.pba_region = MmioRegion("msix-pba", len(self.pba), _Pba(self),
                                     valid_sizes=(4, 8), impl_min=4, impl_max=4)
        self.table_offset = table_offset
        self.pba_offset = pba_offset
        self._was_masked_all = self.function_masked
        #: the control word's high byte (enable, mask-all), for ``notify``
        self._control_hi = cap_offset + MsixReg.CONTROL + 1
        self.reset()

    def exclusive_bar_region(self, name: str = "msix") -> MmioRegion:
        """A 4 KiB BAR holding table and PBA at QEMU's offsets."""
        outer = MmioRegion(name, EXCLUSIVE_BAR_SIZE, _ExclusiveBar(self), valid_sizes=(1, 2, 4, 8))

        def forward(kind: str, detail: str) -> None:
            if outer.on_guest_error is not None:
                outer.on_guest_error(kind, detail)

        self.table_region.on_guest_error = self.pba_region.on_guest_error = forward
        return outer

    # -- state
    def reset(self) -> None:
        """QEMU ``msix_reset``: control bits cleared, every vector masked, nothing pending."""
        c = self.fn.config
        c.set(self.cap + MsixReg.CONTROL, 2, c.get(self.cap + MsixReg.CONTROL, 2)
              & ~(CONTROL_ENABLE | CONTROL_MASKALL))
        self.table[:] = bytes(len(self.table))
        for v in range(self.nvectors):
            self.table[v * ENTRY_SIZE + MsixEntry.VECTOR_CTRL] = VECTOR_MASKED
        self.pba[:] = bytes(len(self.pba))
        self._was_masked_all = self.function_masked

    @property
    def control(self) -> int:
        return self.fn.config.get(self.cap + MsixReg.CONTROL, 2)

    @property
    def enabled(self) -> bool:
        return bool(self.control & CONTROL_ENABLE)

    @property
    def function_masked(self) -> bool:
        """QEMU ``msix_function_masked``: masked-all, or not enabled."""
        ctl = self.control
        return not ctl & CONTROL_ENABLE or bool(ctl & CONTROL_MASKALL)

    def vector_masked(self, v: int) -> bool:
        return self.function_masked or bool(self.table[v * ENTRY_SIZE + MsixEntry.VECTOR_CTRL] & VECTOR_MASKED)

    def pending(self, v: int) -> bool:
        return bool(self.pba[v // 8] & (1 << (v % 8)))

    def _set_pending(self, v: int, on: bool) -> None:
        if on:
            self.pba[v // 8] |= 1 << (v % 8)
        else:
            self.pba[v // 8] &= ~(1 << (v % 8)) & 0xFF

    def message(self, v: int) -> tuple[int, int]:
        base = v * ENTRY_SIZE
        t = self.table
        addr = int.from_bytes(t[base:base + 8], "little")
        data = int.from_bytes(t[base + 8:base + 12], "little")
        return addr, data

    # -- events
    def notify(self, v: int, send: Callable[[int, int, int], None] | None = None) -> None:
        """QEMU ``msix_notify``.  ``send(v, address, data)``, if given, sends the message
        instead of the function's bus-master write (a device whose event arrives on
        another thread chooses there how it goes out).

        Every doorbell's path (issue 14), so written flat: the control byte and the entry
        are read once, with the same checks, in the same order, as ``enabled``,
        ``vector_masked`` and ``message`` make them."""
        ctl = self.fn.config.data[self._control_hi]
        if not ctl & _ENABLE_HI or v >= self.nvectors:
            return
        t = self.table
        base = v * ENTRY_SIZE
        if ctl & _MASKALL_HI or t[base + _VECTOR_CTRL] & VECTOR_MASKED:
            self.pba[v >> 3] |= 1 << (v & 7)
            return
        addr, data = _MESSAGE.unpack_from(t, base)
        if send is None:
            self.fn.msi_write(addr, data)
        else:
            send(v, addr, data)

    def _unmasked(self, v: int, was_masked: bool) -> None:
        """QEMU ``msix_handle_mask_update``: a vector that becomes unmasked with its
        pending bit set fires now."""
        if was_masked and not self.vector_masked(v) and self.pending(v):
            self._set_pending(v, False)
            addr, data = self.message(v)
            self.fn.msi_write(addr, data)

    def config_written(self, offset: int, size: int) -> None:
        """Call after every config write (QEMU ``msix_write_config``): only a write that
        covers the control word's high byte (enable, mask-all) counts."""
        enable_pos = self.cap + _CONTROL_HIGH      # an int: an IntEnum sum costs more
        if not offset <= enable_pos < offset + size:
            return
        was = self._was_masked_all
        now = self.function_masked
        self._was_masked_all = now
        if self.enabled:
            self.fn.set_intx(0)          # MSI-X on: INTx is not used
        if was != now:
            for v in range(self.nvectors):
                self._unmasked(v, was or self.table_vector_masked(v))

    def table_vector_masked(self, v: int) -> bool:
        return bool(self.table[v * ENTRY_SIZE + MsixEntry.VECTOR_CTRL] & VECTOR_MASKED)


class _Table:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, msix: Msix) -> None:
        self.msix = msix

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.msix.table[offset:offset + 4], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        m = self.msix
        v = offset // ENTRY_SIZE
        was_masked = m.vector_masked(v)
        m.table[offset:offset + 4] = value.to_bytes(4, "little")
        m._unmasked(v, was_masked)


class _Pba:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, msix: Msix) -> None:
        self.msix = msix

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.msix.pba[offset:offset + 4], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        pass                      # read-only (QEMU msix_pba_mmio_write)


class _ExclusiveBar:
    """Table at 0, PBA at 0x800; the rest of the 4 KiB reads 0 (unassigned in QEMU's container)."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, msix: Msix) -> None:
        self.msix = msix

    def _route(self, offset: int) -> tuple[MmioRegion | None, int]:
        m = self.msix
        if m.table_offset <= offset < m.table_offset + len(m.table):
            return m.table_region, offset - m.table_offset
        if m.pba_offset <= offset < m.pba_offset + len(m.pba):
            return m.pba_region, offset - m.pba_offset
        return None, 0

    def read(self, offset: int, size: int) -> int:
        region, off = self._route(offset)
        return 0 if region is None else region.read(off, size)

    def write(self, offset: int, size: int, value: int) -> None:
        region, off = self._route(offset)
        if region is not None:
            region.write(off, size, value)
