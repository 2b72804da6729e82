"""virtio-blk, device type 2 (virtio 1.2 §5.2; QEMU 7.2 hw/block/virtio-blk.c).

What the guest sees, each item measured on QEMU 7.2 (tests/guest/test_virtio_blk_serial.py):

Features (``get_features``)
    SEG_MAX, GEOMETRY, BLK_SIZE, TOPOLOGY always; FLUSH when the drive caches writes or
    CONFIG_WCE is offered; CONFIG_WCE, DISCARD, WRITE_ZEROES by property (default on); RO
    for a read-only drive.  Only when VERSION_1 is not offered (``disable-modern=on``) is
    SCSI (bit 7) added and ANY_LAYOUT removed, so a transitional device keeps ANY_LAYOUT.
    Legacy HOST_FEATURES: transitional 0x79006e54, legacy-only 0x71006ed4; modern
    device_feature [0] 0x30006e54, [1] 0x101; RO adds 0x20.

Config space (``struct virtio_blk_config``, 57 bytes with WRITE_ZEROES, 48 with only
    DISCARD, 36 without either; reads past the end return all ones)::

        @0  le64 capacity (512-byte sectors)   @8  le32 size_max (0)  @12 le32 seg_max
        @16 le16 cylinders, u8 heads, u8 sectors  @20 le32 blk_size (512)
        @24 topology: 0, 0, le16 min_io_size, le32 opt_io_size   @32 u8 wce  @33 0
        @34 le16 num_queues (1, although MQ is not offered)
        @36 le32 max_discard_sectors @40 le32 max_discard_seg (1) @44 le32 discard_sector_alignment
        @48 le32 max_write_zeroes_sectors @52 le32 max_write_zeroes_seg (1) @56 u8 may_unmap (1)

    seg_max = queue size - 2 (``seg-max-adjust``).  Geometry is QEMU's guess
    (``hd_geometry_guess``): an MBR partition ending on a cylinder boundary gives its
    heads/sectors, else 16 heads, 63 sectors, cylinders = sectors / 1008 clamped to
    2..16383; ``cyls``/``heads``/``secs`` properties override.  A config write stores the
    bytes, then only ``wce`` takes effect (QEMU ``virtio_blk_set_config``); every read
    rebuilds the rest.  At DRIVER_OK a driver that did not accept CONFIG_WCE gets
    wce = (FLUSH accepted); reset restores the drive's original setting.

Requests (one queue of ``queue-size`` = 256 entries)
    Framing is free, whatever ANY_LAYOUT says (QEMU never checks it): the 16-byte header
    is the first 16 device-readable bytes, the status the last device-writable byte, data
    everything between.  Types (BARRIER bit 31 and the OUT bit masked as QEMU does): IN,
    OUT, FLUSH, GET_ID (min(strlen(serial)+1, data length, 20) bytes at the start of the
    data), SCSI_CMD (IOERR for fewer than 2 readable / 3 writable pieces, else UNSUPP;
    scsi=off), DISCARD / WRITE_ZEROES (16-byte segment: more than one → UNSUPP, too short →
    ``virtio_error``; num_sectors above the limit or out of range → IOERR; unknown flags,
    or UNMAP on a discard → UNSUPP), anything else UNSUPP.  A read or write beyond the
    capacity, or whose length is not a multiple of 512, completes IOERR without touching
    the data; a write to a read-only drive IOERR.  The used length is always the whole
    device-writable length, status byte included.
    Malformed: no readable or no writable piece → ``virtio_error("virtio-blk missing
    headers")``; fewer than 16 readable bytes → ``"virtio-blk request outhdr too short"``;
    the element is dropped (not used) and the device is broken until reset.

A kick runs every available request to completion as device work (uvirt/board/dma.py: after
the kicking access, before the guest's next instruction unless the data runs past a CPU
slice), with notifications off while it does (QEMU ``virtio_blk_handle_vq``), and
notifies per request; data moves in pieces of ``PIECE`` bytes.  After a request that
ends in ``virtio_error`` QEMU keeps popping while the queue is not empty.
DRIVER_OK kicks the queue too (QEMU's ioeventfd start, ``driver_ok_kick``), unless a
kick came first: QEMU 7.2 runs virtio-blk through its dataplane code whenever ioeventfd
is on, and the first kick already started it (measured: a request published before
DRIVER_OK is processed by DRIVER_OK only if nothing was kicked before).
QEMU completes through its AIO thread pool, so a guest must poll either way.  Requests
are taken whatever the status, DRIVER_OK or not, as QEMU does (old drivers kick early).
"""

from __future__ import annotations

import struct

from uvirt.backends.block import SECTOR, BlockBackend, BlockError
from uvirt.board.dma import AFTER_ACCESS, PIECE
from uvirt.virtio.device import Status, VirtioDevice
from uvirt.virtio.features import VirtioFeature as F

# feature bits (virtio 1.2 §5.2.3)
BLK_F_SIZE_MAX = 1 << 1
BLK_F_SEG_MAX = 1 << 2
BLK_F_GEOMETRY = 1 << 4
BLK_F_RO = 1 << 5
BLK_F_BLK_SIZE = 1 << 6
BLK_F_SCSI = 1 << 7
BLK_F_FLUSH = 1 << 9            # legacy name WCE
BLK_F_TOPOLOGY = 1 << 10
BLK_F_CONFIG_WCE = 1 << 11
BLK_F_MQ = 1 << 12
BLK_F_DISCARD = 1 << 13
BLK_F_WRITE_ZEROES = 1 << 14

# request types and status
T_IN, T_OUT, T_SCSI_CMD, T_FLUSH, T_GET_ID = 0, 1, 2, 4, 8
T_GET_LIFETIME, T_DISCARD, T_WRITE_ZEROES = 10, 11, 13
T_BARRIER = 0x80000000
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
WRITE_ZEROES_FLAG_UNMAP = 1

OUTHDR_LEN = 16
ID_BYTES = 20
BDRV_REQUEST_MAX_SECTORS = 0x3FFFFF       # QEMU: INT_MAX >> 9, rounded to the 4 KiB request alignment
CONFIG_WCE_OFFSET = 32


def geometry_guess(backend: BlockBackend) -> tuple[int, int, int]:
    """QEMU ``hd_geometry_guess`` for a disk without a probed geometry: an MBR partition
    ending on a cylinder boundary (``guess_disk_lchs``) with at most 16 heads gives the
    geometry, otherwise ``guess_chs_for_size`` (16 heads, 63 sectors)."""
    nb = backend.sectors
    lchs = _guess_disk_lchs(backend, nb)
    if lchs is not None and lchs[1] <= 16:
        return lchs
    cyls = nb // (16 * 63)
    cyls = 16383 if cyls > 16383 else max(cyls, 2)
    return cyls, 16, 63


def _guess_disk_lchs(backend: BlockBackend, nb: int) -> tuple[int, int, int] | None:
    if nb == 0:
        return None
    buf = backend.read(0, SECTOR)
    if not buf or buf[510] != 0x55 or buf[511] != 0xAA:
        return None
    for i in range(4):
        p = 0x1BE + 16 * i
        nr_sects = int.from_bytes(buf[p + 12:p + 16], "little")
        end_head, end_sector = buf[p + 5], buf[p + 6]
        if nr_sects and end_head:
            heads = end_head + 1
            sectors = end_sector & 63
            if sectors == 0:
                continue
            cyls = nb // (heads * sectors)
            if cyls < 1 or cyls > 16383:
                continue
            return cyls, heads, sectors
    return None


def driver_ok_kick(dev: VirtioDevice, status: int) -> None:
    """What QEMU's transport does around a status write when ``ioeventfd=on`` (the
    default, under TCG too): the first status with DRIVER_OK starts the ioeventfds and
    "kicks right away" every queue that has rings; a status without DRIVER_OK stops them.
    The status is stored first, as QEMU stores it before starting them."""
    if not getattr(dev, "ioeventfd", True):
        return
    if not status & Status.DRIVER_OK:
        dev.ioeventfd_started = False
        return
    if dev.ioeventfd_started:
        return
    dev.ioeventfd_started = True
    dev.status = status
    for i, q in enumerate(dev.queues):
        if q.desc:
            dev.queue_notify(i)


_STATUS_BYTE = {S_OK: b"\x00", S_IOERR: b"\x01", S_UNSUPP: b"\x02"}


def _runs(pieces):
    """``(addr, len)`` pieces with the ones that continue each other in guest memory
    joined (a buffer split over many descriptors is usually one run of pages): the
    same bytes at the same addresses, one write each."""
    if len(pieces) <= 2:
        return pieces
    out = []
    run_addr, run_len = pieces[0]
    for addr, n in pieces[1:]:
        if addr == run_addr + run_len:
            run_len += n
        else:
            out.append((run_addr, run_len))
            run_addr, run_len = addr, n
    out.append((run_addr, run_len))
    return out


def _total(pieces) -> int:
    """The bytes of an element's ``(addr, len)`` pieces."""
    total = 0
    for _, n in pieces:
        total += n
    return total


class VirtioBlk(VirtioDevice):
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("wce", "_config", "ioeventfd_started")

    device_id = 2
    name = "virtio-blk"
    queue_sizes = (256,)
    config_len = 57
    ioeventfd = True                # the ``ioeventfd`` property: DRIVER_OK kicks every queue
    ioeventfd_started = False

    def __init__(self, backend: BlockBackend, *, serial: str | None = None, queue_size: int = 256,
                 cyls: int = 0, heads: int = 0, secs: int = 0, config_wce: bool = True,
                 discard: bool = True, write_zeroes: bool = True,
                 max_discard_sectors: int = BDRV_REQUEST_MAX_SECTORS,
                 max_write_zeroes_sectors: int = BDRV_REQUEST_MAX_SECTORS,
                 seg_max_adjust: bool = True, min_io_size: int = 0, opt_io_size: int = 0) -> None:
        self.device_features = ((BLK_F_CONFIG_WCE if config_wce else 0) | (BLK_F_DISCARD if discard else 0)
                                | (BLK_F_WRITE_ZEROES if write_zeroes else 0))
        super().__init__()
        self.backend = backend
        self.serial = serial
        self.queue_sizes = (queue_size,)
        self.config_len = 57 if write_zeroes else 48 if discard else 36
        if not (cyls or heads or secs):
            cyls, heads, secs = geometry_guess(backend)
        self.cyls, self.heads, self.secs = cyls, heads, secs
        self.max_discard_sectors = max_discard_sectors
        self.max_write_zeroes_sectors = max_write_zeroes_sectors
        self.seg_max = queue_size - 2 if seg_max_adjust else 128 - 2
        self.min_io_size, self.opt_io_size = min_io_size, opt_io_size
        self.original_wce = backend.write_cache
        self.wce = backend.write_cache
        self._config = bytearray(self.config_len)     # QEMU vdev->config: the last snapshot
        backend.on_resize(self.notify_config)          # QEMU virtio_blk_resize (block_resize)

    # ------------------------------------------------------------------ hooks
    def get_features(self, features: int) -> int:
        """QEMU ``virtio_blk_get_features``."""
        features |= BLK_F_SEG_MAX | BLK_F_GEOMETRY | BLK_F_TOPOLOGY | BLK_F_BLK_SIZE
        if not features & F.VERSION_1:
            features = (features & ~F.ANY_LAYOUT) | BLK_F_SCSI
        if self.backend.write_cache or features & BLK_F_CONFIG_WCE:
            features |= BLK_F_FLUSH
        if self.backend.read_only:
            features |= BLK_F_RO
        return features

    def config_bytes(self) -> bytes:
        """QEMU ``virtio_blk_update_config``; the snapshot is what a later write edits."""
        cfg = bytearray(60)
        struct.pack_into("<QII", cfg, 0, self.backend.sectors, 0, self.seg_max)
        secs = self.secs
        struct.pack_into("<HBBI", cfg, 16, self.cyls, self.heads, secs, SECTOR)
        struct.pack_into("<BBHI", cfg, 24, 0, 0, self.min_io_size // SECTOR, self.opt_io_size // SECTOR)
        cfg[CONFIG_WCE_OFFSET] = 1 if self.wce else 0
        struct.pack_into("<H", cfg, 34, 1)
        if self.host_features & BLK_F_DISCARD:
            struct.pack_into("<III", cfg, 36, self.max_discard_sectors, 1, 1)
        if self.host_features & BLK_F_WRITE_ZEROES:
            struct.pack_into("<IIB", cfg, 48, self.max_write_zeroes_sectors, 1, 1)
        self._config = cfg[:self.config_len]
        return bytes(self._config)

    def config_write(self, offset: int, data: bytes) -> None:
        """QEMU ``virtio_blk_set_config``: only the wce byte of the stored snapshot counts."""
        self._config[offset:offset + len(data)] = data
        self.wce = self._config[CONFIG_WCE_OFFSET] != 0

    def set_status_hook(self, status: int) -> None:
        """QEMU ``virtio_blk_set_status``: a driver without CONFIG_WCE gets write-back
        exactly when it accepted FLUSH.  Then the DRIVER_OK kick."""
        if status & Status.DRIVER_OK and not self.negotiated(BLK_F_CONFIG_WCE):
            self.wce = self.negotiated(BLK_F_FLUSH)
        driver_ok_kick(self, status)

    def device_reset(self) -> None:
        self.wce = self.original_wce
        self.ioeventfd_started = False

    def handle_output(self, index: int):
        """QEMU ``virtio_blk_handle_vq``: every available request, notifications off.
        Runs as device work, in pieces (a generator)."""
        if index != 0 or self._disabled:        # the property's value, without its frame
            return None
        # QEMU 7.2 runs virtio-blk through its dataplane whenever ioeventfd is on: the
        # first kick starts it, so a later DRIVER_OK does not kick again.
        self.ioeventfd_started = self.ioeventfd_started or self.ioeventfd
        return self._handle_vq()

    def _handle_vq(self):
        """Pop every available request first, then complete the ones QEMU completes
        asynchronously (reads, writes, flushes, discards: AIO completion bottom halves),
        in order.  Until then such a request keeps its mapping, so a second request that
        needs the one bounce buffer fails to pop, as on QEMU."""
        q = self.queues[0]
        pending = []
        while True:
            progress = False
            q.set_notification(False)
            for elem in self.popped(0):
                progress = True
                result = self._submit(elem)
                if result is False:
                    q.detach(elem)
                    break
                if result is not None:
                    pending.append(result)
            q.set_notification(True)
            # QEMU loops while the queue is not empty; a round that popped nothing ends
            # it too (a packed ring's failed pop consumes nothing), so it always ends
            if q.is_empty() or not progress:
                break
        if not self.ioeventfd:
            # the kick's access ends here (kick() runs the rest as device work); with
            # ioeventfd=on this already is device work, and the completions follow the
            # pops in the same piece, as QEMU's follow its handler
            yield AFTER_ACCESS
        for completion in pending:
            yield from completion

    # ------------------------------------------------------------------ requests
    def _submit(self, elem):
        """QEMU ``virtio_blk_handle_request``: False after a ``virtio_error``; None when
        the request completed at once (QEMU ``virtio_blk_req_complete`` inside the
        handler: GET_ID, SCSI, unsupported types, out-of-range I/O, bad discard
        segments); else a generator that does the I/O and completes it.  Every byte goes
        through the element's mapping (RAM, or the bounce buffer written back at push),
        data in pieces of ``PIECE`` bytes."""
        mem = self.mem
        readable, writable = elem.readable, elem.writable
        if not readable or not writable:
            self.error("virtio-blk missing headers")
            return False
        readable_len = readable[0][1] if len(readable) == 1 else _total(readable)
        if readable_len < OUTHDR_LEN:
            self.error("virtio-blk request outhdr too short")
            return False
        if writable[-1][1] < 1:
            self.error("virtio-blk request inhdr too short")
            return False
        if elem.bounce is None and readable[0][1] >= OUTHDR_LEN:
            hdr = mem.read(readable[0][0], OUTHDR_LEN)       # the usual layout: one piece
        else:
            hdr = elem.read_at(mem, 0, OUTHDR_LEN)
        # _total(writable) - 1, without the call in the usual layout (data, status)
        data_in_len = (writable[0][1] + writable[1][1] if len(writable) == 2 else _total(writable)) - 1
        data_out_len = readable_len - OUTHDR_LEN
        rtype, _ioprio, sector = struct.unpack_from("<IIQ", hdr)
        kind = rtype & ~(T_OUT | T_BARRIER)
        if kind == T_IN:
            is_write = rtype & T_OUT
            if not self._range_ok(sector, data_out_len if is_write else data_in_len):
                return self._complete(elem, S_IOERR)
            return self._rw(elem, is_write, sector, data_in_len, data_out_len)
        if kind == T_FLUSH:
            return self._later(elem, self._flush)
        if kind == T_GET_ID:
            serial = (self.serial or "").encode("latin-1", "replace")
            n = min(len(serial) + 1, data_in_len, ID_BYTES)
            elem.write_at(mem, 0, (serial + b"\0")[:n])
            return self._complete(elem, S_OK)
        if kind == T_SCSI_CMD:
            status = S_IOERR if len(elem.readable) < 2 or len(elem.writable) < 3 else S_UNSUPP
            if len(elem.writable) >= 3 and elem.writable[-2][1] >= 4:
                # virtio_scsi_inhdr.errors = 255, in the second-to-last writable piece
                at = sum(n for _, n in elem.writable[:-2])
                elem.write_at(mem, at, (255).to_bytes(4, "little"))
            return self._complete(elem, status)
        if kind in (T_DISCARD & ~T_OUT, T_WRITE_ZEROES & ~T_OUT):
            if not rtype & T_OUT or data_out_len > 16:
                return self._complete(elem, S_UNSUPP)
            if data_out_len < 16:
                self.error("virtio-blk discard/write_zeroes header too short")
                return False
            write_zeroes = rtype & ~T_BARRIER == T_WRITE_ZEROES
            seg = elem.read_at(mem, OUTHDR_LEN, 16)
            status = self._check_discard(write_zeroes, seg)
            if status is not None:
                return self._complete(elem, status)
            return self._later(elem, lambda: self._discard_write_zeroes(write_zeroes, seg))
        return self._complete(elem, S_UNSUPP)

    def _complete(self, elem, status: int, in_len: int | None = None) -> None:
        """QEMU ``virtio_blk_req_complete``: the status byte, push (the whole writable
        length, ``in_len`` when the caller knows it), notify."""
        if in_len is None:
            in_len = elem.writable_len
        bounce = elem.bounce
        if bounce is None or bounce[0] != "w" or bounce[1] != len(elem.writable) - 1:
            addr, n = elem.writable[-1]          # the status byte ends the last piece
            self.mem.write(addr + n - 1, _STATUS_BYTE[status])
        else:
            elem.write_at(self.mem, in_len - 1, _STATUS_BYTE[status])
        self.queues[0].push(elem, in_len)
        self.notify(0)
        return None

    def _later(self, elem, operation):
        """A request completed after the handler (one piece of work)."""
        self._complete(elem, operation())
        return
        yield                           # a generator: completes when iterated

    def _flush(self) -> int:
        try:
            self.backend.flush()
        except (BlockError, OSError):
            return S_IOERR
        return S_OK

    def _range_ok(self, sector: int, size: int) -> bool:
        """QEMU ``virtio_blk_sect_range_ok``."""
        nb = size >> 9
        total = self.backend.sectors
        return (nb <= BDRV_REQUEST_MAX_SECTORS and size % SECTOR == 0
                and sector <= total and nb <= total - sector)

    def _rw(self, elem, is_write: int, sector: int, data_in_len: int, data_out_len: int):
        """A read or write in pieces of at most ``PIECE`` bytes, then its completion."""
        size = data_out_len if is_write else data_in_len
        mem, pos = self.mem, 0
        status = S_OK
        if not is_write and size <= PIECE and elem.bounce is None:
            # a read in one piece straight into RAM (what write_at does, without its
            # general bookkeeping): the request path of every sequential read
            try:
                data = self.backend.read(sector * SECTOR, size)
            except (BlockError, OSError):
                data, status = None, S_IOERR
            if data is not None:
                end = len(data)
                writable = elem.writable
                for addr, n in writable if len(writable) <= 2 else _runs(writable):
                    if n >= end - pos:
                        mem.write(addr, data if not pos and n >= end else memoryview(data)[pos:end])
                        break
                    mem.write(addr, memoryview(data)[pos:pos + n])
                    pos += n
            self._complete(elem, status, size + 1)
            return
        try:
            while pos < size:
                n = min(PIECE, size - pos)
                if is_write:
                    self.backend.write(sector * SECTOR + pos, elem.read_at(mem, OUTHDR_LEN + pos, n))
                else:
                    data = self.backend.read(sector * SECTOR + pos, n)
                    if data is not None:
                        elem.write_at(mem, pos, data)
                pos += n
                if pos < size:
                    yield
        except (BlockError, OSError):
            status = S_IOERR
        self._complete(elem, status)

    def _check_discard(self, write_zeroes: bool, seg: bytes) -> int | None:
        """QEMU ``virtio_blk_handle_discard_write_zeroes`` checks (one segment): a status
        to complete with at once, or None to go ahead."""
        sector, num, flags = struct.unpack("<QII", seg)
        limit = self.max_write_zeroes_sectors if write_zeroes else self.max_discard_sectors
        if num > limit or not self._range_ok(sector, num << 9):
            return S_IOERR
        if flags & ~WRITE_ZEROES_FLAG_UNMAP:
            return S_UNSUPP
        if not write_zeroes and flags & WRITE_ZEROES_FLAG_UNMAP:
            return S_UNSUPP
        return None

    def _discard_write_zeroes(self, write_zeroes: bool, seg: bytes) -> int:
        sector, num, _flags = struct.unpack("<QII", seg)
        try:
            if write_zeroes:
                self.backend.write_zeroes(sector * SECTOR, num * SECTOR)
            else:
                self.backend.discard(sector * SECTOR, num * SECTOR)
        except (BlockError, OSError):
            return S_IOERR
        return S_OK
