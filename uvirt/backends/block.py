"""Block back ends for ``-drive`` (QEMU's block layer, reduced to what a guest can see).

A ``-drive`` becomes a ``BlockBackend``: the bytes a disk device reads and writes, its
length, whether it may be written, and its write-cache setting.  Two drivers:

``raw`` over a host file (``file=PATH[,format=raw]``)
    Opened read-write unless ``readonly=on``; with ``auto-read-only=on`` a file that cannot
    be opened for writing is opened read-only instead (QEMU ``BDRV_O_AUTO_RDONLY``).
    Reads past the end of the file return zeros, as file-posix pads short reads.  The
    capacity is the length rounded up to whole 512-byte sectors (QEMU
    ``bdrv_refresh_total_sectors``).  Writes go straight to the file with ``pwrite`` (the
    host sees them at once, as with QEMU's default ``cache=writeback``).

``null-co`` (``file=null-co://`` or ``driver=null-co``)
    No data: ``size`` (default 1 GiB), writes are dropped, reads return zeros with
    ``read-zeroes=on`` (``file.read-zeroes=on`` after ``file=null-co://``) and otherwise
    leave the guest's buffer untouched (``read`` returns ``None``), as QEMU 7.2's
    ``null_co_preadv``.

Discards are accepted and ignored unless ``discard=unmap`` (then the range reads back as
zeros, like a punched hole).  Not modelled: ``format`` other than raw (each is refused by
name), the "probed raw" restriction on writes to sector 0 (only the warning is printed),
``cache=`` modes beyond the write-cache flag, I/O errors of the host file.

The back ends take typed values and raise ``OSError`` (a file that cannot be opened) or
``BlockError``; ``-drive`` text is read, and errors worded as QEMU words them, by the
builder (``uvirt.launch.backends.open_drives``).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from uvirt.errors import UvirtError

SECTOR = 512
NULL_DEFAULT_SIZE = 1 << 30
#: Formats QEMU 7.2 knows that uvirt cannot read (refused by name, not "unknown").
QEMU_FORMATS = {"qcow2", "qcow", "qed", "vmdk", "vdi", "vhdx", "vpc", "luks", "parallels",
                 "bochs", "cloop", "dmg", "vvfat", "ftp", "ftps", "http", "https", "nbd",
                 "ssh", "iscsi", "rbd", "gluster", "host_device", "host_cdrom", "throttle",
                 "blkdebug", "blkverify", "quorum", "compress", "copy-on-read", "preallocate",
                 "snapshot-access", "copy-before-write", "blklogwrites", "replication"}
#: the first bytes of the image formats uvirt recognises (to refuse them by name)
IMAGE_MAGICS = {b"QFI\xfb": "qcow2", b"KDMV": "vmdk", b"QED\x00": "qed",
                 b"conectix": "vpc", b"vhdxfile": "vhdx", b"LUKS\xba\xbe": "luks"}


def image_format(head: bytes) -> str | None:
    """The format whose magic ``head`` (an image's first bytes) starts with, or None."""
    return next((name for magic, name in IMAGE_MAGICS.items() if head.startswith(magic)), None)


class BlockError(UvirtError):
    """A request the back end refuses (QEMU -EPERM/-EIO): the device reports IOERR; from
    the host (QMP ``block_resize``), an error in QEMU's words."""


class BlockBackend:
    """What a disk device sees of a ``-drive``."""

    id: str = ""
    read_only: bool = False
    length: int = 0              # bytes
    write_cache: bool = True     # QEMU blk_enable_write_cache (cache=writeback)
    discard_unmap: bool = False

    @property
    def sectors(self) -> int:
        """Capacity in 512-byte sectors (QEMU ``blk_get_geometry``)."""
        return (self.length + SECTOR - 1) // SECTOR

    def read(self, offset: int, n: int) -> bytes | None:  # pragma: no cover - interface
        raise NotImplementedError

    def write(self, offset: int, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def write_zeroes(self, offset: int, n: int) -> None:
        if self.read_only:
            raise BlockError("read-only")
        self.write(offset, bytes(n))

    def discard(self, offset: int, n: int) -> None:
        """QEMU ``bdrv_co_pdiscard``: a no-op unless ``discard=unmap``; allowed read-only."""
        if self.discard_unmap and not self.read_only:
            self.write(offset, bytes(n))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def resize(self, size: int) -> None:
        """QMP ``block_resize``: the new length, then every attached device is told
        (virtio-blk sends a configuration-change notification)."""
        self._set_length(size)
        for listener in list(getattr(self, "resize_listeners", ())):
            listener()

    def _set_length(self, size: int) -> None:
        self.length = size

    def on_resize(self, listener) -> None:
        if "resize_listeners" not in self.__dict__:
            self.resize_listeners = []
        self.resize_listeners.append(listener)


class RawFile(BlockBackend):
    def __init__(self, path: str, *, read_only: bool = False, auto_read_only: bool = False) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY if read_only else os.O_RDWR)
        except OSError as e:
            if not read_only and auto_read_only and e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                self.fd = os.open(path, os.O_RDONLY)
                read_only = True
            else:
                raise
        self.read_only = read_only
        self.length = os.fstat(self.fd).st_size

    def read(self, offset: int, n: int) -> bytes:
        data = os.pread(self.fd, n, offset) if offset < self.length else b""
        return data + bytes(n - len(data))

    def write(self, offset: int, data: bytes) -> None:
        if self.read_only:
            raise BlockError("read-only")
        os.pwrite(self.fd, data, offset)

    def flush(self) -> None:
        pass                 # writes are already in the host file (cache=writeback)

    def _set_length(self, size: int) -> None:
        if self.read_only:
            raise BlockError("Cannot resize a read-only drive")
        os.ftruncate(self.fd, size)
        self.length = size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class NullBackend(BlockBackend):
    def __init__(self, size: int = NULL_DEFAULT_SIZE, *, read_zeroes: bool = False,
                 read_only: bool = False) -> None:
        self.length = size
        self.read_zeroes = read_zeroes
        self.read_only = read_only

    def read(self, offset: int, n: int) -> bytes | None:
        return bytes(n) if self.read_zeroes else None

    def write(self, offset: int, data: bytes) -> None:
        if self.read_only:
            raise BlockError("read-only")

    def write_zeroes(self, offset: int, n: int) -> None:
        if self.read_only:
            raise BlockError("read-only")


class EmptyDrive(BlockBackend):
    """``-drive if=none,id=x`` without a file: a drive with no medium."""

    def read(self, offset: int, n: int) -> None:
        return None

    def write(self, offset: int, data: bytes) -> None:
        raise BlockError("no medium")


@dataclass
class Drive:
    """A ``-drive`` by id, as a device property finds it."""

    id: str
    backend: BlockBackend
    raw: str
    used_by: str | None = None
