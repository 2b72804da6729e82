"""virtio-pci as QEMU 7.2 presents it: legacy, modern and transitional (hw/virtio/virtio-pci.c).

Identity
    legacy/transitional: device ID 0x1000 + QEMU's table, revision 0, subsystem ID =
    virtio type; modern-only (``disable-legacy=on``): 0x1040 + type, revision 1,
    subsystem 1af4:1100.  Interrupt pin A.

BARs
    BAR0  legacy register block (I/O), size = next power of two of 24 (MSI-X present)
          or 20, plus the device config length;
    BAR1  MSI-X exclusive BAR, 4 KiB (table at 0, PBA at 0x800), if ``vectors`` > 0;
    BAR4  modern registers, 64-bit prefetchable, 16 KiB: common @0x0000, ISR @0x1000,
          device config @0x2000, notify @0x3000 (multiplier 4), each 4 KiB.

Capabilities (modern and transitional), in list order from 0x34
    0x98 MSI-X -> 0x84 PCI-cfg access (type 5) -> 0x70 notify (type 2) -> 0x60 device
    config (type 4) -> 0x50 ISR (type 3) -> 0x40 common (type 1); legacy-only: MSI-X @0x40.

Legacy register block (virtio 0.9.5; virtio 1.2 §4.1.4.10)::

    0x00 HOST_FEATURES  u32 RO   | 0x04 GUEST_FEATURES u32 RW | 0x08 QUEUE_PFN u32 RW
    0x0C QUEUE_NUM      u16 RO   | 0x0E QUEUE_SEL      u16 RW | 0x10 QUEUE_NOTIFY u16 WO
    0x12 STATUS         u8  RW   | 0x13 ISR            u8  RO, read clears
    0x14 MSI_CONFIG_VECTOR u16 RW, 0x16 MSI_QUEUE_VECTOR u16 RW  (only while MSI-X is enabled)
    0x14 / 0x18 device config (MSI-X disabled / enabled)

    QEMU's quirks, copied: registers are matched by exact offset whatever the access
    size (a dword read at QUEUE_NUM returns just the queue size; a read at an offset
    inside a register returns all ones); unaligned accesses read 0; QUEUE_PFN = 0
    resets the device; writing STATUS = ACKNOWLEDGE|DRIVER sets bus master (old Linux);
    a GUEST_FEATURES value with bit 30 selects the "bad features" set; QUEUE_SEL and
    QUEUE_NOTIFY >= 1024 are ignored; vectors >= the MSI-X table size read back
    NO_VECTOR.

Common configuration (virtio 1.2 §4.1.4.3): see ``CommonCfg``.  QEMU reads every
    register by exact offset (other offsets read 0), shows the device features minus
    the legacy-only bits, stages queue size and addresses until queue_enable = 1 (any
    other value is a ``virtio_error``), and reads queue_notify_off as the queue index.

Memory regions (issue 5; the 2010 proposal and VIRTIO 1.2 shared memory)
    A device's shared regions (``VirtioDevice.shared_regions()``) and the regions of the
    ``memory-regions=`` property reach the guest in one of two ways:

    * legacy-only devices (``disable-modern=on``): the proposal's registers, exactly as
      the patch in the seed thread lays them out — MEM_SEL at 20 (write; a selection
      >= the number of regions is ignored), MEM_SIZE at 24 (size in bytes), MEM_PFN at 28
      (the guest-physical address the region's BAR is mapped at, as the patch's
      ``virtio_mem_get_addr`` returns it despite the register's name; 0 while unmapped),
      the MSI-X vectors at 32/34 and device config at 32 (MSI-X off) / 36 (MSI-X on).
      Region i is 32-bit memory BAR 2+i (at most four).  MEM_SEL reads all ones, like any
      offset the patch does not decode.  Without regions the layout is the standard one,
      so stock drivers never see it.
    * modern and transitional devices: one ``VIRTIO_PCI_CAP_SHARED_MEMORY_CFG`` (type 8,
      ``virtio_pci_cap64``) per region, id = shmid, into a 64-bit prefetchable BAR 2
      holding the regions at naturally aligned offsets (QEMU's virtio-gpu puts its host
      memory in a separate 64-bit BAR the same way).  At most three: that is what fits
      after the MSI-X capability in conventional config space.

Guest errors (recorded, never raised): writes to read-only registers, unknown offsets,
    invalid status transitions (stored anyway, as QEMU), feature writes after
    FEATURES_OK, kicks of queues that do not exist, malformed rings (the device is marked
    broken and, with VERSION_1, DEVICE_NEEDS_RESET is set).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

from uvirt.errors import UvirtError
from uvirt.board.memory.regions import Container, MmioRegion, RamRegion
from uvirt.backends.shared_memory import MIN_REGION_SIZE, SharedMemory
from uvirt.board.pci.bus import CapId, Command, PciFunction, PciReg, bdf_str
from uvirt.board.pci.msix import CONTROL_ENABLE, Msix, MsixReg
from uvirt.virtio.device import VIRTIO_NO_VECTOR, VIRTIO_QUEUE_MAX, Status, VirtioDevice
from uvirt.virtio.features import VirtioFeature as F
from uvirt.host_utils import pow2ceil

_MSIX_ENABLE_HI = CONTROL_ENABLE >> 8

VENDOR_ID = 0x1AF4
MODERN_DEVICE_ID_BASE = 0x1040
#: QEMU's transitional device IDs (include/hw/pci/pci.h PCI_DEVICE_ID_VIRTIO_*).
LEGACY_DEVICE_IDS = {1: 0x1000, 2: 0x1001, 5: 0x1002, 3: 0x1003, 8: 0x1004, 4: 0x1005,
                     9: 0x1009, 19: 0x1012,
                     63: 0x103F}       # uvirt's virtio-fb: the top of the transitional range
VIRTIO_PCI_QUEUE_ADDR_SHIFT = 12


class MemRegionReg(IntEnum):
    """The 2010 proposal's registers (legacy BAR0, only on devices with memory regions)."""

    MEM_SEL = 20
    MEM_SIZE = 24
    MEM_PFN = 28
    MSI_CONFIG_VECTOR = 32
    MSI_QUEUE_VECTOR = 34


PROPOSAL_CONFIG_NOMSI = 32
PROPOSAL_CONFIG_MSI = 36
PROPOSAL_MAX_REGIONS = 4
SHM_BAR = 2
SHM_CAP_LEN = 24
SHM_CAP_FIRST = 0xA4
SHM_MAX_CAPS = 3


class LegacyReg(IntEnum):
    HOST_FEATURES = 0x00
    GUEST_FEATURES = 0x04
    QUEUE_PFN = 0x08
    QUEUE_NUM = 0x0C
    QUEUE_SEL = 0x0E
    QUEUE_NOTIFY = 0x10
    STATUS = 0x12
    ISR = 0x13
    MSI_CONFIG_VECTOR = 0x14
    MSI_QUEUE_VECTOR = 0x16


LEGACY_CONFIG_NOMSI = 20
LEGACY_CONFIG_MSI = 24


class CommonCfg(IntEnum):
    """``struct virtio_pci_common_cfg`` (virtio 1.2 §4.1.4.3)::

        0x00 device_feature_select u32 RW | 0x04 device_feature u32 RO
        0x08 driver_feature_select u32 RW | 0x0C driver_feature u32 RW
        0x10 config_msix_vector    u16 RW | 0x12 num_queues     u16 RO
        0x14 device_status         u8  RW | 0x15 config_generation u8 RO
        0x16 queue_select          u16 RW | 0x18 queue_size     u16 RW
        0x1A queue_msix_vector     u16 RW | 0x1C queue_enable   u16 RW
        0x1E queue_notify_off      u16 RO | 0x20 queue_desc     u64 RW (two u32 halves)
        0x28 queue_driver          u64 RW | 0x30 queue_device   u64 RW
        0x3A queue_reset           u16 RW (VIRTIO_F_RING_RESET)
    """

    DFSELECT = 0x00
    DF = 0x04
    GFSELECT = 0x08
    GF = 0x0C
    MSIX = 0x10
    NUMQ = 0x12
    STATUS = 0x14
    CFGGENERATION = 0x15
    Q_SELECT = 0x16
    Q_SIZE = 0x18
    Q_MSIX = 0x1A
    Q_ENABLE = 0x1C
    Q_NOFF = 0x1E
    Q_DESCLO = 0x20
    Q_DESCHI = 0x24
    Q_AVAILLO = 0x28
    Q_AVAILHI = 0x2C
    Q_USEDLO = 0x30
    Q_USEDHI = 0x34
    Q_RESET = 0x3A


class CapType(IntEnum):
    COMMON_CFG = 1
    NOTIFY_CFG = 2
    ISR_CFG = 3
    DEVICE_CFG = 4
    PCI_CFG = 5
    SHARED_MEMORY_CFG = 8
    VENDOR_CFG = 9


# Modern BAR layout (QEMU virtio_pci_modern_regions_init)
MODERN_BAR = 4
MODERN_BAR_SIZE = 0x4000
REGION_SIZE = 0x1000
COMMON_OFFSET, ISR_OFFSET, DEVICE_OFFSET, NOTIFY_OFFSET = 0x0000, 0x1000, 0x2000, 0x3000
NOTIFY_OFF_MULTIPLIER = 4
MSIX_BAR = 1
LEGACY_BAR = 0

# Capability offsets QEMU's pci_find_space hands out, in the order caps are added.
CAP_COMMON, CAP_ISR, CAP_DEVICE, CAP_NOTIFY, CAP_PCI_CFG, CAP_MSIX_MODERN = 0x40, 0x50, 0x60, 0x70, 0x84, 0x98
CAP_MSIX_LEGACY = 0x40
VIRTIO_CAP_LEN = 16
NOTIFY_CAP_LEN = 20
PCI_CFG_CAP_LEN = 20
PCI_CFG_DATA = 16             # offset of pci_cfg_data inside the PCI-cfg cap


@dataclass
class _ProxyQueue:
    """Per-queue modern staging (QEMU ``VirtIOPCIQueue``)."""
    snapshot_state: ClassVar[tuple[str, ...]] = ("num", "enabled", "reset", "desc", "avail", "used")

    num: int = 0
    enabled: int = 0
    reset: int = 0
    desc: list[int] = field(default_factory=lambda: [0, 0])
    avail: list[int] = field(default_factory=lambda: [0, 0])
    used: list[int] = field(default_factory=lambda: [0, 0])


class VirtioPci(PciFunction):
    """A virtio device on the PCI transport."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = (
        "vdev", "msix", "dfselect", "gfselect", "guest_features_words", "_vqs", "queue_vectors",
        "mem_sel",
    )

    def __init__(self, device: VirtioDevice, *, class_code: int, disable_legacy: bool = False,
                 disable_modern: bool = False, vectors: int = 2,
                 memory_regions: Sequence[SharedMemory] = ()) -> None:
        if disable_legacy and disable_modern:
            raise ValueError("device would have neither legacy nor modern interface")
        self.vdev = device
        self.regions: list[tuple[int, SharedMemory]] = list(device.shared_regions())
        used = {shmid for shmid, _ in self.regions}
        free_ids = (i for i in range(256) if i not in used)
        self.regions += [(next(free_ids), shm) for shm in memory_regions]
        self.proposal = bool(self.regions) and disable_modern
        if self.proposal and len(self.regions) > PROPOSAL_MAX_REGIONS:
            raise UvirtError(f"{device.name}: {len(self.regions)} memory regions, but a legacy device "
                             f"has BARs 2..5 for at most {PROPOSAL_MAX_REGIONS}")
        if self.regions and not disable_modern and len(self.regions) > SHM_MAX_CAPS:
            raise UvirtError(f"{device.name}: {len(self.regions)} shared memory regions, but config space "
                             f"holds at most {SHM_MAX_CAPS} shared-memory capabilities")
        self.legacy = not disable_legacy
        self.modern = not disable_modern
        self.nvectors = vectors
        vid = device.device_id
        if self.legacy:
            device_id = LEGACY_DEVICE_IDS.get(vid, MODERN_DEVICE_ID_BASE + vid)
            super().__init__(vendor_id=VENDOR_ID, device_id=device_id, class_code=class_code,
                             revision=0, subsystem_vendor_id=VENDOR_ID, subsystem_id=vid,
                             interrupt_pin=1)
        else:
            super().__init__(vendor_id=VENDOR_ID, device_id=MODERN_DEVICE_ID_BASE + vid,
                             class_code=class_code, revision=1, interrupt_pin=1)
        self.name = device.name
        self.dfselect = 0
        self.gfselect = 0
        self.guest_features_words = [0, 0]
        self._vqs: dict[int, _ProxyQueue] = {}
        self.queue_vectors: dict[int, int] = {}
        # host features the transport adds (virtio_pci_device_plugged)
        if self.legacy:
            device.host_features |= F.BAD_FEATURE
        if self.modern:
            device.host_features |= F.VERSION_1
        self.msix: Msix | None = None
        self.pci_cfg_cap = 0
        if self.legacy:
            if self.proposal:
                regsize = (PROPOSAL_CONFIG_MSI if vectors else PROPOSAL_CONFIG_NOMSI) + device.config_len
            else:
                regsize = (LEGACY_CONFIG_MSI if vectors else LEGACY_CONFIG_NOMSI) + device.config_len
            self.register_bar(LEGACY_BAR, MmioRegion(f"{self.name}-legacy", pow2ceil(regsize),
                                                     _LegacyRegs(self), valid_sizes=(1, 2, 4)), io=True)
        if self.modern:
            self.modern_region = MmioRegion(f"{self.name}-modern", MODERN_BAR_SIZE, _ModernBar(self),
                                            valid_sizes=(1, 2, 4, 8))
            self._add_vendor_cap(CAP_COMMON, CapType.COMMON_CFG, COMMON_OFFSET)
            self._add_vendor_cap(CAP_ISR, CapType.ISR_CFG, ISR_OFFSET)
            self._add_vendor_cap(CAP_DEVICE, CapType.DEVICE_CFG, DEVICE_OFFSET)
            self._add_vendor_cap(CAP_NOTIFY, CapType.NOTIFY_CFG, NOTIFY_OFFSET, cap_len=NOTIFY_CAP_LEN)
            self.config.set(CAP_NOTIFY + 16, 4, NOTIFY_OFF_MULTIPLIER)
            self._add_vendor_cap(CAP_PCI_CFG, CapType.PCI_CFG, 0, length=0, bar=0, cap_len=PCI_CFG_CAP_LEN)
            self.pci_cfg_cap = CAP_PCI_CFG
            c = self.config
            c.wmask[CAP_PCI_CFG + 4] = 0xFF                           # cap.bar
            c.set_wmask(CAP_PCI_CFG + 8, 4, 0xFFFFFFFF)               # cap.offset
            c.set_wmask(CAP_PCI_CFG + 12, 4, 0xFFFFFFFF)              # cap.length
            c.set_wmask(CAP_PCI_CFG + PCI_CFG_DATA, 4, 0xFFFFFFFF)    # pci_cfg_data
        if vectors:
            self.msix = Msix(self, vectors, bar=MSIX_BAR,
                             cap_offset=CAP_MSIX_MODERN if self.modern else CAP_MSIX_LEGACY)
            self.register_bar(MSIX_BAR, self.msix.exclusive_bar_region(f"{self.name}-msix"))
        #: the config byte holding MSI-X Enable (the control word's high byte), None
        #: without MSI-X: every kick (the legacy config offset) and every interrupt asks
        #: it, so it is read here directly rather than through three properties
        self._msix_enable_at = None if self.msix is None else self.msix.cap + MsixReg.CONTROL + 1
        if self.modern:
            self.register_bar(MODERN_BAR, self.modern_region, mem64=True, prefetch=True)
        self.mem_sel = 0
        if self.proposal:
            for i, (_, shm) in enumerate(self.regions):
                bar = self.register_bar(SHM_BAR + i, shm.region)
                bar.listeners.append(self._map_listener(shm, 0))
        elif self.regions:
            self._add_shm_caps()
        self.freeze_reset_state()

    def _add_shm_caps(self) -> None:
        """VIRTIO 1.2 §4.1.4.7: one virtio_pci_cap64 per region into a 64-bit BAR 2."""
        offset = 0
        placed = []
        for shmid, shm in sorted(self.regions, key=lambda r: -r[1].size):
            offset = (offset + shm.size - 1) & ~(shm.size - 1)
            placed.append((shmid, shm, offset))
            offset += shm.size
        container = Container(f"{self.name}-shm", pow2ceil(max(offset, MIN_REGION_SIZE)))
        for i, (shmid, shm, off) in enumerate(sorted(placed, key=lambda p: p[0])):
            container.add_subregion(off, shm.region)
            cap = SHM_CAP_FIRST + i * SHM_CAP_LEN
            self._add_vendor_cap(cap, CapType.SHARED_MEMORY_CFG, off & 0xFFFFFFFF, length=shm.size & 0xFFFFFFFF,
                                 bar=SHM_BAR, cap_len=SHM_CAP_LEN)
            self.config.set(cap + 5, 1, shmid)
            self.config.set(cap + 16, 4, off >> 32)
            self.config.set(cap + 20, 4, shm.size >> 32)
        bar = self.register_bar(SHM_BAR, container, mem64=True, prefetch=True)
        for shmid, shm, off in placed:
            bar.listeners.append(self._map_listener(shm, off))

    def _map_listener(self, shm: SharedMemory, offset: int):
        def listener(addr: int | None) -> None:
            memory = getattr(self.bus, "memory", None)
            shm._mapped(None if addr is None else addr + offset,
                        None if memory is None else memory.invalidate_code)
        return listener

    def _add_vendor_cap(self, offset: int, cfg_type: int, bar_offset: int, *, length: int = REGION_SIZE,
                        bar: int = MODERN_BAR, cap_len: int = VIRTIO_CAP_LEN) -> None:
        self.add_capability(CapId.VENDOR, offset, cap_len)
        c = self.config
        c.set(offset + 2, 1, cap_len)
        c.set(offset + 3, 1, cfg_type)
        c.set(offset + 4, 1, bar)
        c.set(offset + 8, 4, bar_offset)
        c.set(offset + 12, 4, length)

    # ------------------------------------------------------------------ plumbing
    def realize(self, mem) -> None:
        self.vdev.realize(mem, self)
        work = getattr(mem, "work", None)
        if work is not None:
            # QEMU's mem_reentrancy_guard: one per device, over all its register regions
            from uvirt.board.dma import ReentrancyGuard
            self.reentrancy_guard = guard = ReentrancyGuard(self.name, work)
            guard.on_blocked = lambda detail: self.guest_error("reentrant_io", detail)
            for bar in self.bars:
                if bar is not None and isinstance(bar.region, MmioRegion):
                    bar.region.set_guard(guard)

    def guest_error(self, kind: str, detail: str) -> None:
        """Recorded by the board the function is plugged into (``PciBus.guest_error``);
        unplugged, nobody records it."""
        if self.bus is not None:
            self.bus.guest_error(kind, detail)

    @property
    def tracer(self):
        """The bus's ``uvirt.trace.Tracer`` (None while unplugged)."""
        return getattr(self.bus, "tracer", None)

    @property
    def tracing(self) -> bool:
        tracer = getattr(self.bus, "tracer", None)
        return tracer is not None and tracer.enabled

    def trace(self, name: str, **fields) -> None:
        """A device or virtqueue event, named with this function's address."""
        tracer = getattr(self.bus, "tracer", None)
        if tracer is not None and tracer.enabled:
            tracer.emit(name, device=self.name, bdf=bdf_str(self.devfn or 0), **fields)

    def notify_vector(self, vector: int) -> None:
        """QEMU ``virtio_pci_notify``: MSI-X when enabled, else INTx = ISR bit 0."""
        at = self._msix_enable_at                      # msix_enabled(), inlined
        if at is not None and self.config.data[at] & _MSIX_ENABLE_HI:
            if vector != VIRTIO_NO_VECTOR:
                self.msix.notify(vector)
        else:
            self.set_intx(self.vdev.isr & 1)

    def msix_enabled(self) -> bool:
        """QEMU ``msix_enabled``: the function has MSI-X and its Enable bit is set (what
        ``Msix.enabled`` answers)."""
        at = self._msix_enable_at
        return at is not None and bool(self.config.data[at] & _MSIX_ENABLE_HI)

    def _vq(self, n: int) -> _ProxyQueue:
        q = self._vqs.get(n)
        if q is None:
            q = self._vqs[n] = _ProxyQueue()
        return q

    def queue_enabled(self, n: int) -> bool:
        """Modern queue_enable of queue ``n`` as the driver last set it (legacy: False)."""
        q = self._vqs.get(n)
        return q is not None and bool(q.enabled)

    def queue_vector(self, n: int) -> int:
        return self.queue_vectors.get(n, VIRTIO_NO_VECTOR)

    def _set_queue_vector(self, n: int, vector: int) -> None:
        self.queue_vectors[n] = vector
        if n < len(self.vdev.vectors):
            self.vdev.vectors[n] = vector

    def _checked_vector(self, value: int) -> int:
        """Vectors beyond the table read back NO_VECTOR ("make it possible for guest to
        discover an error took place")."""
        return value if value < self.nvectors else VIRTIO_NO_VECTOR

    def reset(self):
        """PCI reset: config space, MSI-X, and the virtio device."""
        changes = super().reset()
        self.virtio_reset()
        return changes

    def virtio_reset(self) -> None:
        """QEMU ``virtio_pci_reset`` (and the proposal's MEM_SEL back to 0)."""
        self.vdev.reset()
        self.mem_sel = 0
        self.queue_vectors.clear()
        self._vqs.clear()
        self.set_intx(0)

    # ------------------------------------------------------------------ config space
    def config_write(self, offset: int, size: int, value: int):
        changes = super().config_write(offset, size, value)
        if self.msix is not None:
            self.msix.config_written(offset, size)
        if offset <= 0x04 < offset + size:          # PciReg.COMMAND (an int compares faster)
            # virtio_write_config: clearing bus master disables the device and drops DRIVER_OK.
            if not self.command & Command.MASTER:
                self.vdev.disabled = True
                self.vdev.set_status(self.vdev.status & ~Status.DRIVER_OK)
            else:
                self.vdev.disabled = False
        cap = self.pci_cfg_cap
        if cap and offset < cap + PCI_CFG_DATA + 4 and offset + size > cap + PCI_CFG_DATA:
            off, length = self.config.get(cap + 8, 4), self.config.get(cap + 12, 4)
            if length in (1, 2, 4):
                data = self.config.get(cap + PCI_CFG_DATA, length)
                self._modern_access(off, length, data)
        return changes

    def config_read(self, offset: int, size: int) -> int:
        cap = self.pci_cfg_cap
        if cap and offset < cap + PCI_CFG_DATA + 4 and offset + size > cap + PCI_CFG_DATA:
            off, length = self.config.get(cap + 8, 4), self.config.get(cap + 12, 4)
            if length in (1, 2, 4):
                value = self._modern_access(off, length)
                if value is not None:
                    self.config.set(cap + PCI_CFG_DATA, length, value)
        return super().config_read(offset, size)

    def _modern_access(self, off: int, length: int, value: int | None = None) -> int | None:
        """QEMU ``virtio_address_space_read/write``: the access lands on the modern region
        containing ``off`` (aligned down to the length), whatever ``cap.bar`` says."""
        off &= ~(length - 1)
        if not self.modern or not 0 <= off < MODERN_BAR_SIZE or off + length > MODERN_BAR_SIZE:
            return None
        if value is None:
            return self.modern_region.read(off, length)
        self.modern_region.write(off, length, value)
        return None

    # ------------------------------------------------------------------ legacy
    def legacy_config_offset(self) -> int:
        at = self._msix_enable_at                      # msix_enabled(), inlined
        msix = at is not None and self.config.data[at] & _MSIX_ENABLE_HI
        if self.proposal:
            return PROPOSAL_CONFIG_MSI if msix else PROPOSAL_CONFIG_NOMSI
        return LEGACY_CONFIG_MSI if msix else LEGACY_CONFIG_NOMSI

    def _proposal_offset(self, offset: int) -> int | None:
        """Map the proposal's offsets 20..35 onto what they mean; None = not a register."""
        if offset == MemRegionReg.MSI_CONFIG_VECTOR:
            return LegacyReg.MSI_CONFIG_VECTOR
        if offset == MemRegionReg.MSI_QUEUE_VECTOR:
            return LegacyReg.MSI_QUEUE_VECTOR
        return None

    def legacy_read(self, offset: int, size: int) -> int:
        cfg = self.legacy_config_offset()
        if offset >= cfg:
            return self.vdev.config_read(offset - cfg, size)
        if self.proposal and offset >= MemRegionReg.MEM_SEL:
            if offset == MemRegionReg.MEM_SIZE:
                return self.regions[self.mem_sel][1].size & 0xFFFFFFFF
            if offset == MemRegionReg.MEM_PFN:
                return (self.regions[self.mem_sel][1].mapped_at or 0) & 0xFFFFFFFF
            mapped = self._proposal_offset(offset)
            if mapped is None or not self.msix_enabled():
                return 0xFFFFFFFF
            offset = mapped
        d = self.vdev
        if offset == LegacyReg.HOST_FEATURES:
            return d.host_features & 0xFFFFFFFF
        if offset == LegacyReg.GUEST_FEATURES:
            return d.guest_features & 0xFFFFFFFF
        if offset == LegacyReg.QUEUE_PFN:
            q = d.queue(d.queue_sel)
            return (q.desc >> VIRTIO_PCI_QUEUE_ADDR_SHIFT) if q is not None else 0
        if offset == LegacyReg.QUEUE_NUM:
            return d.queue_num(d.queue_sel)
        if offset == LegacyReg.QUEUE_SEL:
            return d.queue_sel
        if offset == LegacyReg.STATUS:
            return d.status
        if offset == LegacyReg.ISR:
            return self.read_isr()
        if offset == LegacyReg.MSI_CONFIG_VECTOR:
            return d.config_vector
        if offset == LegacyReg.MSI_QUEUE_VECTOR:
            return self.queue_vector(d.queue_sel)
        return 0xFFFFFFFF

    def legacy_write(self, offset: int, size: int, value: int) -> None:
        at = self._msix_enable_at                      # legacy_config_offset(), inlined: every kick
        if at is not None and self.config.data[at] & _MSIX_ENABLE_HI:
            cfg = PROPOSAL_CONFIG_MSI if self.proposal else LEGACY_CONFIG_MSI
        else:
            cfg = PROPOSAL_CONFIG_NOMSI if self.proposal else LEGACY_CONFIG_NOMSI
        if offset >= cfg:
            self.vdev.config_store(offset - cfg, size, value)
            return
        if self.proposal and offset >= MemRegionReg.MEM_SEL:
            if offset == MemRegionReg.MEM_SEL:
                if value < len(self.regions):
                    self.mem_sel = value
                else:
                    self.guest_error("mem_sel_out_of_range", f"{self.name}: MEM_SEL {value} ignored "
                                     f"({len(self.regions)} memory regions)")
                return
            mapped = self._proposal_offset(offset)
            if mapped is None or not self.msix_enabled():
                self.guest_error("virtio_legacy_write", f"{self.name}: write 0x{value:x} to read-only or "
                                 f"unknown legacy register +0x{offset:x}")
                return
            offset = mapped
        d = self.vdev
        if offset == LegacyReg.GUEST_FEATURES:
            if value & F.BAD_FEATURE:
                value = self.bad_features()
            d.set_features(value)
        elif offset == LegacyReg.QUEUE_PFN:
            if value == 0:
                self.virtio_reset()
            else:
                q = d.queue(d.queue_sel)
                if q is not None:
                    broken = q.set_legacy_pfn(value)
                    if broken is not None:
                        d.error(broken.reason)
        elif offset == LegacyReg.QUEUE_SEL:
            if value < VIRTIO_QUEUE_MAX:
                d.queue_sel = value
        elif offset == LegacyReg.QUEUE_NOTIFY:
            if value < VIRTIO_QUEUE_MAX:
                d.queue_notify(value)
        elif offset == LegacyReg.STATUS:
            d.set_status(value & 0xFF)
            if d.status == 0:
                self.virtio_reset()
            if value == Status.ACKNOWLEDGE | Status.DRIVER:
                # Linux before 2.6.34 drives the device without enabling bus master.
                self.config.set(PciReg.COMMAND, 2, self.command | Command.MASTER)
        elif offset == LegacyReg.MSI_CONFIG_VECTOR and self.msix_enabled():
            d.config_vector = self._checked_vector(value)
        elif offset == LegacyReg.MSI_QUEUE_VECTOR and self.msix_enabled():
            self._set_queue_vector(d.queue_sel, self._checked_vector(value))
        else:
            self.guest_error("virtio_legacy_write", f"{self.name}: write 0x{value:x} to read-only or "
                             f"unknown legacy register +0x{offset:x}")

    def bad_features(self) -> int:
        """QEMU ``virtio_bus_get_vdev_bad_features``: the device's own "bad" set, 0 for
        every device but virtio-net."""
        return self.vdev.bad_features()

    def read_isr(self) -> int:
        """ISR read returns and clears it, and deasserts INTx."""
        value = self.vdev.isr
        self.vdev.isr = 0
        self.set_intx(0)
        return value

    # ------------------------------------------------------------------ modern
    def common_read(self, offset: int, size: int) -> int:
        d = self.vdev
        sel = d.queue_sel
        if offset == CommonCfg.DFSELECT:
            return self.dfselect
        if offset == CommonCfg.DF:
            if self.dfselect <= 1:
                return ((d.host_features & ~d.legacy_features) >> (32 * self.dfselect)) & 0xFFFFFFFF
            return 0
        if offset == CommonCfg.GFSELECT:
            return self.gfselect
        if offset == CommonCfg.GF:
            return self.guest_features_words[self.gfselect] if self.gfselect < 2 else 0
        if offset == CommonCfg.MSIX:
            return d.config_vector
        if offset == CommonCfg.NUMQ:
            return max((i + 1 for i, q in enumerate(d.queues) if q.size), default=0)
        if offset == CommonCfg.STATUS:
            return d.status
        if offset == CommonCfg.CFGGENERATION:
            return d.generation
        if offset == CommonCfg.Q_SELECT:
            return sel
        if offset == CommonCfg.Q_SIZE:
            return d.queue_num(sel)
        if offset == CommonCfg.Q_MSIX:
            return self.queue_vector(sel)
        if offset == CommonCfg.Q_ENABLE:
            return self._vq(sel).enabled
        if offset == CommonCfg.Q_NOFF:
            return sel
        vq = self._vq(sel)
        halves = {CommonCfg.Q_DESCLO: (vq.desc, 0), CommonCfg.Q_DESCHI: (vq.desc, 1),
                  CommonCfg.Q_AVAILLO: (vq.avail, 0), CommonCfg.Q_AVAILHI: (vq.avail, 1),
                  CommonCfg.Q_USEDLO: (vq.used, 0), CommonCfg.Q_USEDHI: (vq.used, 1)}
        if offset in halves:
            pair, i = halves[offset]
            return pair[i]
        if offset == CommonCfg.Q_RESET:
            return vq.reset
        return 0

    def common_write(self, offset: int, size: int, value: int) -> None:
        d = self.vdev
        sel = d.queue_sel
        if offset == CommonCfg.DFSELECT:
            self.dfselect = value
        elif offset == CommonCfg.GFSELECT:
            self.gfselect = value
        elif offset == CommonCfg.GF:
            if self.gfselect < 2:
                self.guest_features_words[self.gfselect] = value
                w = self.guest_features_words
                d.set_features((w[1] << 32) | w[0])
        elif offset == CommonCfg.MSIX:
            d.config_vector = self._checked_vector(value)
        elif offset == CommonCfg.STATUS:
            d.set_status(value & 0xFF)
            if d.status == 0:
                self.virtio_reset()
        elif offset == CommonCfg.Q_SELECT:
            if value < VIRTIO_QUEUE_MAX:
                d.queue_sel = value
        elif offset == CommonCfg.Q_SIZE:
            self._vq(sel).num = value
            q = d.queue(sel)
            if q is not None:
                q.set_size(value)
        elif offset == CommonCfg.Q_MSIX:
            self._set_queue_vector(sel, self._checked_vector(value))
        elif offset == CommonCfg.Q_ENABLE:
            if value == 1:
                vq = self._vq(sel)
                q = d.queue(sel)
                if q is not None:
                    q.set_size(vq.num)
                    if q.size:
                        broken = q.set_rings(vq.desc[0] | vq.desc[1] << 32, vq.avail[0] | vq.avail[1] << 32,
                                             vq.used[0] | vq.used[1] << 32)
                        if broken is not None:
                            d.error(broken.reason)
                vq.enabled = 1
                vq.reset = 0
            else:
                d.error(f"wrong value for queue_enable {value:x}")
        elif offset in (CommonCfg.Q_DESCLO, CommonCfg.Q_DESCHI, CommonCfg.Q_AVAILLO,
                        CommonCfg.Q_AVAILHI, CommonCfg.Q_USEDLO, CommonCfg.Q_USEDHI):
            vq = self._vq(sel)
            pair = {CommonCfg.Q_DESCLO: vq.desc, CommonCfg.Q_DESCHI: vq.desc,
                    CommonCfg.Q_AVAILLO: vq.avail, CommonCfg.Q_AVAILHI: vq.avail,
                    CommonCfg.Q_USEDLO: vq.used, CommonCfg.Q_USEDHI: vq.used}[CommonCfg(offset)]
            pair[(offset - CommonCfg.Q_DESCLO) // 4 % 2] = value
        elif offset == CommonCfg.Q_RESET:
            if value == 1:
                vq = self._vq(sel)
                q = d.queue(sel)
                if q is not None:
                    q.reset()
                vq.reset = 0
                vq.enabled = 0
        else:
            self.guest_error("virtio_common_write", f"{self.name}: write 0x{value:x} to read-only or "
                             f"unknown common config register +0x{offset:x}")

    def notify_write(self, offset: int, size: int, value: int) -> None:
        """QEMU ``virtio_pci_notify_write``: the queue is the offset / multiplier."""
        queue = offset // NOTIFY_OFF_MULTIPLIER
        if queue < VIRTIO_QUEUE_MAX:
            self.vdev.queue_notify(queue)


class _LegacyRegs:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, t: VirtioPci) -> None:
        self.read = t.legacy_read
        self.write = t.legacy_write


class _ModernBar:
    """Dispatch the 16 KiB modern BAR to its four 4 KiB register windows."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, t: VirtioPci) -> None:
        self.t = t

    def read(self, offset: int, size: int) -> int:
        t = self.t
        region, off = offset & ~(REGION_SIZE - 1), offset & (REGION_SIZE - 1)
        if region == COMMON_OFFSET:
            return t.common_read(off, size)
        if region == ISR_OFFSET:
            return t.read_isr()
        if region == DEVICE_OFFSET:
            return t.vdev.config_read(off, size)
        return 0                                       # notify reads 0

    def write(self, offset: int, size: int, value: int) -> None:
        t = self.t
        region, off = offset & ~(REGION_SIZE - 1), offset & (REGION_SIZE - 1)
        if region == COMMON_OFFSET:
            t.common_write(off, size, value)
        elif region == DEVICE_OFFSET:
            t.vdev.config_store(off, size, value)
        elif region == NOTIFY_OFFSET:
            t.notify_write(off, size, value)
        else:
            t.guest_error("virtio_isr_write", f"{t.name}: write 0x{value:x} to the ISR window ignored")


__all__ = ["CapType", "CommonCfg", "LegacyReg", "VirtioPci", "RamRegion"]
