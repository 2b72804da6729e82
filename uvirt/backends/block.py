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

Errors are QEMU 7.2's wording, measured (``-drive`` location prefix added by the caller):

=====================================  ===================================================
missing file                           ``Could not open 'x': No such file or directory``
``format=bogus``                       ``Unknown driver 'bogus'``
``format=qcow2`` on a raw file         ``Image is not in qcow2 format``
``readonly=maybe``                     ``Parameter 'read-only' expects 'on' or 'off'``
unknown option                         ``Block format 'raw' does not support the option 'x'``
same ``id`` twice                      ``Duplicate ID 'd0' for drive``
=====================================  ===================================================
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass

from uvirt.errors import OptionError

SECTOR = 512
NULL_DEFAULT_SIZE = 1 << 30
#: Formats QEMU 7.2 knows that uvirt cannot read (refused by name, not "unknown").
_QEMU_FORMATS = {"qcow2", "qcow", "qed", "vmdk", "vdi", "vhdx", "vpc", "luks", "parallels",
                 "bochs", "cloop", "dmg", "vvfat", "ftp", "ftps", "http", "https", "nbd",
                 "ssh", "iscsi", "rbd", "gluster", "host_device", "host_cdrom", "throttle",
                 "blkdebug", "blkverify", "quorum", "compress", "copy-on-read", "preallocate",
                 "snapshot-access", "copy-before-write", "blklogwrites", "replication"}
#: -drive options uvirt accepts and what they mean here.
_DRIVE_KEYS = {"file", "format", "if", "id", "readonly", "read-only", "auto-read-only",
               "cache", "cache.writeback", "cache.direct", "cache.no-flush", "discard",
               "driver", "size", "read-zeroes", "file.read-zeroes", "file.size", "media",
               "aio", "detect-zeroes", "werror", "rerror", "snapshot", "index", "bus", "unit",
               "copy-on-read", "file.driver", "file.filename", "file.locking", "locking"}
_IMAGE_MAGICS = {b"QFI\xfb": "qcow2", b"KDMV": "vmdk", b"QED\x00": "qed",
                 b"conectix": "vpc", b"vhdxfile": "vhdx", b"LUKS\xba\xbe": "luks"}


class BlockError(Exception):
    """A request the back end refuses (QEMU -EPERM/-EIO): the device reports IOERR."""


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
            raise OptionError("Cannot resize a read-only drive")   # pragma: no cover - QMP checks first
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


def _bool(value: str, name: str) -> bool:
    if value in ("on", "yes", "true", "y"):
        return True
    if value in ("off", "no", "false", "n"):
        return False
    raise OptionError(f"Parameter '{name}' expects 'on' or 'off'")


def _size(value: str) -> int:
    from uvirt.options.values import qemu_strtosz
    try:
        return qemu_strtosz(value)
    except ValueError:
        raise OptionError("Parameter 'size' expects a non-negative number below 2^64") from None


def open_drive(props: dict[str, str], *, drive_id: str, warn=None) -> BlockBackend:
    """A back end from ``-drive`` properties (without the ``-drive ...:`` prefix in errors)."""
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    fmt = props.get("format")
    driver = props.get("driver")
    filename = props.get("file")
    ro = _bool(props.get("readonly", props.get("read-only", "off")), "read-only")
    auto_ro = _bool(props.get("auto-read-only", "off"), "auto-read-only")
    for key in props:
        if key not in _DRIVE_KEYS and not key.startswith(("file.", "throttling.")):
            raise OptionError(f"Block format '{fmt or driver or 'raw'}' does not support the option '{key}'")
    if fmt is not None and fmt != "raw":
        if fmt == "null-co":
            driver, fmt = "null-co", None
        elif fmt in _QEMU_FORMATS:
            if filename and not filename.startswith("null-co://") and os.path.exists(filename):
                with open(filename, "rb") as f:
                    head = f.read(8)
                if not any(head.startswith(m) and name == fmt for m, name in _IMAGE_MAGICS.items()):
                    raise OptionError(f"Image is not in {fmt} format")
            raise OptionError(f"format '{fmt}' is not supported by uvirt (raw only)")
        else:
            raise OptionError(f"Unknown driver '{fmt}'")
    null = driver == "null-co" or (filename or "").startswith("null-co://")
    if driver is not None and driver not in ("null-co", "raw", "file"):
        if driver in _QEMU_FORMATS:
            raise OptionError(f"driver '{driver}' is not supported by uvirt (raw, file, null-co)")
        raise OptionError(f"Unknown driver '{driver}'")
    backend: BlockBackend
    if null:
        size_s = props.get("file.size", props.get("size"))
        size = _size(size_s) if size_s is not None else NULL_DEFAULT_SIZE
        zeroes = _bool(props.get("file.read-zeroes", props.get("read-zeroes", "off")), "read-zeroes")
        backend = NullBackend(size, read_zeroes=zeroes, read_only=ro)
    elif filename is None:
        backend = EmptyDrive()
    else:
        if filename == "":
            raise OptionError("A block device must be specified for \"filename\"")
        try:
            backend = RawFile(filename, read_only=ro, auto_read_only=auto_ro)
        except OSError as e:
            raise OptionError(f"Could not open '{filename}': {os.strerror(e.errno or errno.EIO)}") from None
        if fmt is None and driver is None:
            head = backend.read(0, 8) or b""
            for magic, name in _IMAGE_MAGICS.items():
                if head.startswith(magic):
                    backend.close()
                    raise OptionError(f"image '{filename}' is in {name} format, which uvirt cannot read")
            warn(f"WARNING: Image format was not specified for '{filename}' and probing guessed raw.\n"
                 "         Automatically detecting the format is dangerous for raw images, "
                 "write operations on block 0 will be restricted.\n"
                 "         Specify the 'raw' format explicitly to remove the restrictions.")
    cache = props.get("cache", "writeback")
    if cache not in ("writeback", "writethrough", "none", "directsync", "unsafe"):
        backend.close()
        raise OptionError("invalid cache option")
    backend.write_cache = cache in ("writeback", "none", "unsafe")
    if "cache.writeback" in props:
        backend.write_cache = _bool(props["cache.writeback"], "cache.writeback")
    discard = props.get("discard", "ignore")
    if discard not in ("ignore", "off", "unmap", "on"):
        backend.close()
        raise OptionError("Invalid discard option")
    backend.discard_unmap = discard in ("unmap", "on")
    backend.id = drive_id
    return backend


def open_drives(drives, *, warn=None) -> dict[str, Drive]:
    """Every ``-drive`` of a ``RunConfig`` by id (QEMU's errors, ``-drive RAW:`` prefixed).
    On an error the back ends already opened are closed."""
    out: dict[str, Drive] = {}
    try:
        for n, d in enumerate(drives):
            drive_id = d.id if d.id is not None else f"__uvirt_drive{n}"
            if drive_id in out:
                raise OptionError(f"-drive {d.raw}: Duplicate ID '{drive_id}' for drive")
            props = {k: v for k, v in d.props.items() if k != "id"}
            try:
                backend = open_drive(props, drive_id=drive_id, warn=warn)
            except OptionError as e:
                raise OptionError(f"-drive {d.raw}: {e}") from None
            out[drive_id] = Drive(drive_id, backend, d.raw)
    except BaseException:
        for drv in out.values():
            drv.backend.close()
        raise
    return out
