"""MSI: the message signalled interrupt capability (QEMU ``hw/pci/msi.c``).

Capability (PCI Local Bus 3.0 §6.8.1; Linux ``pci_regs.h`` names)
    +0 id 0x05 | +1 next | +2 message control:
        bit 0 enable (RW), bits 3:1 multiple message capable (RO, log2 vectors),
        bits 6:4 multiple message enable (RW), bit 7 64-bit address capable (RO),
        bit 8 per-vector masking capable (RO)
    +4 message address low (RW, bits 1:0 read 0)
    32-bit: +8 message data (RW, 16 bits)            capability size 0x0a
    64-bit: +8 message address high, +12 data        capability size 0x0e
    with per-vector masking: + mask bits, + pending bits (4 more bytes each)

Behaviour copied from QEMU 7.2 (``msi_init``, ``msi_notify``, ``msi_prepare_message``)
    * ``msi_init`` writes the control word (QMCAP, 64BIT, MASKBIT) and opens exactly
      these write-mask bits: control QSIZE|ENABLE, address low 0xfffffffc, address
      high (64-bit) all, data 0xffff, mask bits 0..vectors-1.
    * ``notify(v)``: a masked vector sets its pending bit; otherwise the message is
      ``data`` with its low log2(enabled vectors) bits replaced by ``v``, written as a
      32-bit store to the 64-bit address through the bus-master address space (dropped
      while bus mastering is off; an address above 4 GiB decodes nothing on ``pc``).
    * ``msi_write_config`` runs after every config write (QEMU's
      ``pci_default_write_config`` calls it for every device): while MSI is enabled it
      lowers INTx, clamps QSIZE to QMCAP and delivers pending unmasked vectors.  The
      function's ``config_write`` calls ``config_written`` for it.
    * Reset: the function's config image goes back to its realized state, which is what
      ``msi_reset`` leaves (QSIZE, ENABLE, address, data, mask and pending cleared).
"""

from __future__ import annotations

from enum import IntEnum

from uvirt.board.pci.bus import CapId, PciFunction

FLAGS_ENABLE = 0x0001
FLAGS_QMASK = 0x000E
FLAGS_QSIZE = 0x0070
FLAGS_64BIT = 0x0080
FLAGS_MASKBIT = 0x0100
ADDRESS_LO_MASK = 0xFFFFFFFC
VECTORS_MAX = 32


class MsiReg(IntEnum):
    """Capability field offsets (``msi_*_off`` in QEMU)."""

    FLAGS = 2
    ADDRESS_LO = 4
    ADDRESS_HI = 8          # 64-bit only
    DATA_32 = 8
    DATA_64 = 12
    MASK_32 = 12
    MASK_64 = 16
    PENDING_32 = 16
    PENDING_64 = 20


def cap_size(flags: int) -> int:
    """QEMU ``msi_cap_sizeof``."""
    if flags & FLAGS_MASKBIT:
        return 0x18 if flags & FLAGS_64BIT else 0x14
    return 0x0E if flags & FLAGS_64BIT else 0x0A


class Msi:
    """MSI for one PCI function, placed at ``offset`` (QEMU's first free byte: 0x40 for a
    function with no other capability)."""

    def __init__(self, fn: PciFunction, *, offset: int = 0x40, vectors: int = 1,
                 msi64: bool = True, per_vector_mask: bool = False) -> None:
        if vectors < 1 or vectors > VECTORS_MAX or vectors & (vectors - 1):
            raise ValueError(f"MSI vectors {vectors} must be a power of two in 1..32")
        self.fn = fn
        flags = (vectors.bit_length() - 1) << 1
        if msi64:
            flags |= FLAGS_64BIT
        if per_vector_mask:
            flags |= FLAGS_MASKBIT
        self.cap = fn.add_capability(CapId.MSI, offset, cap_size(flags))
        c = fn.config
        c.set(self.cap + MsiReg.FLAGS, 2, flags)
        c.set_wmask(self.cap + MsiReg.FLAGS, 2, FLAGS_QSIZE | FLAGS_ENABLE)
        c.set_wmask(self.cap + MsiReg.ADDRESS_LO, 4, ADDRESS_LO_MASK)
        if msi64:
            c.set_wmask(self.cap + MsiReg.ADDRESS_HI, 4, 0xFFFFFFFF)
        c.set_wmask(self._data_off, 2, 0xFFFF)
        if per_vector_mask:
            c.set_wmask(self._mask_off, 4, 0xFFFFFFFF >> (VECTORS_MAX - vectors))

    # -- fields
    @property
    def flags(self) -> int:
        return self.fn.config.get(self.cap + MsiReg.FLAGS, 2)

    @property
    def msi64(self) -> bool:
        return bool(self.flags & FLAGS_64BIT)

    @property
    def _data_off(self) -> int:
        return self.cap + (MsiReg.DATA_64 if self.msi64 else MsiReg.DATA_32)

    @property
    def _mask_off(self) -> int:
        return self.cap + (MsiReg.MASK_64 if self.msi64 else MsiReg.MASK_32)

    @property
    def _pending_off(self) -> int:
        return self.cap + (MsiReg.PENDING_64 if self.msi64 else MsiReg.PENDING_32)

    @property
    def enabled(self) -> bool:
        """QEMU ``msi_enabled``."""
        return bool(self.flags & FLAGS_ENABLE)

    @property
    def nr_vectors(self) -> int:
        """Vectors the guest enabled (QSIZE), as ``msi_nr_vectors``."""
        return 1 << ((self.flags & FLAGS_QSIZE) >> 4)

    def masked(self, vector: int) -> bool:
        if not self.flags & FLAGS_MASKBIT:
            return False
        return bool(self.fn.config.get(self._mask_off, 4) >> vector & 1)

    def message(self, vector: int) -> tuple[int, int]:
        """(address, data) as ``msi_prepare_message``."""
        c = self.fn.config
        address = c.get(self.cap + MsiReg.ADDRESS_LO, 4)
        if self.msi64:
            address |= c.get(self.cap + MsiReg.ADDRESS_HI, 4) << 32
        data = c.get(self._data_off, 2)
        n = self.nr_vectors
        if n > 1:
            data = (data & ~(n - 1)) | vector
        return address, data

    def config_written(self, offset: int, size: int) -> None:
        """QEMU ``msi_write_config``, for devices whose config write calls it."""
        flags = self.flags
        if not (offset < self.cap + cap_size(flags) and self.cap < offset + size):
            return
        if not flags & FLAGS_ENABLE:
            return
        self.fn.set_intx(0)                       # pci_device_deassert_intx
        log_max = (flags & FLAGS_QMASK) >> 1
        if (flags & FLAGS_QSIZE) >> 4 > log_max:
            flags = (flags & ~FLAGS_QSIZE) | log_max << 4
            self.fn.config.set(self.cap + MsiReg.FLAGS, 2, flags)
        if not flags & FLAGS_MASKBIT:
            return
        c = self.fn.config
        pending = c.get(self._pending_off, 4) & (0xFFFFFFFF >> (VECTORS_MAX - self.nr_vectors))
        c.set(self._pending_off, 4, pending)
        for vector in range(self.nr_vectors):
            if pending >> vector & 1 and not self.masked(vector):
                c.set(self._pending_off, 4, c.get(self._pending_off, 4) & ~(1 << vector))
                self.notify(vector)

    # -- signalling
    def notify(self, vector: int = 0) -> None:
        """QEMU ``msi_notify``: the caller checked ``enabled`` (as QEMU's devices do)."""
        if self.masked(vector):
            c = self.fn.config
            c.set(self._pending_off, 4, c.get(self._pending_off, 4) | 1 << vector)
            return
        address, data = self.message(vector)
        if address >> 32:
            return          # nothing decodes above 4 GiB on pc: the write is lost
        self.fn.msi_write(address, data)
