"""Host back ends from the command line's text: ``-drive``, ``-chardev`` (and the
shorthands ``-debugcon file:out.txt``...) and ``-object memory-backend-*``.

The back ends (uvirt/backends/, and the ivshmem client socket in
uvirt/board/devices/ivshmem.py) take typed values and raise their own errors
(``OSError``, ``BlockError``, ``ChardevError``, ``UvirtError``).  This module is the
builder's side: it reads QEMU's properties with ``uvirt.options.values`` and turns every
refusal into one ``OptionError`` line in QEMU 7.2's words, prefixed with the option as
written (QEMU's ``loc_set_cmdline``).

``-drive`` errors, measured on QEMU 7.2 (``-drive ARG:`` in front):

=====================================  ===================================================
missing file                           ``Could not open 'x': No such file or directory``
``format=bogus``                       ``Unknown driver 'bogus'``
``format=qcow2`` on a raw file         ``Image is not in qcow2 format``
``readonly=maybe``                     ``Parameter 'read-only' expects 'on' or 'off'``
``size=x`` (null-co)                   ``Parameter 'size' expects a non-negative number below 2^64``
unknown option                         ``Block format 'raw' does not support the option 'x'``
same ``id`` twice                      ``Duplicate ID 'd0' for drive``
=====================================  ===================================================

``-chardev``: ``Could not open 'PATH': REASON`` (file), ``Failed to bind socket to PATH:
REASON`` (server), ``Failed to connect to 'PATH': REASON`` (client).
"""

from __future__ import annotations

import errno
import os
import sys

from uvirt.backends.block import (NULL_DEFAULT_SIZE, QEMU_FORMATS, BlockBackend, Drive,
                                  EmptyDrive, NullBackend, RawFile, image_format)
from uvirt.backends.chardev import (Chardev, ChardevError, FileChardev, MemoryChardev,
                                    NullChardev, ServerSocketChardev, StdioChardev, resolve_port)
from uvirt.backends.shared_memory import SharedMemory
from uvirt.errors import OptionError, UvirtError
from uvirt.options.config import ChardevOpts, DriveOpts, ObjectOpts
from uvirt.options.values import (StrtoxError, located, parse_bool, parse_number, parse_size,
                                  strtox)

# --------------------------------------------------------------------------- -drive

#: -drive options uvirt accepts and what they mean here.
DRIVE_KEYS = {"file", "format", "if", "id", "readonly", "read-only", "auto-read-only",
              "cache", "cache.writeback", "cache.direct", "cache.no-flush", "discard",
              "driver", "size", "read-zeroes", "file.read-zeroes", "file.size", "media",
              "aio", "detect-zeroes", "werror", "rerror", "snapshot", "index", "bus", "unit",
              "copy-on-read", "file.driver", "file.filename", "file.locking", "locking"}


#: -drive keys with a type QEMU checks (``blockdev_init``, ``drive_new``), and their words
DRIVE_BOOLS = frozenset(("readonly", "read-only", "auto-read-only", "cache.writeback", "cache.direct",
                         "cache.no-flush", "snapshot", "copy-on-read"))
# (read-zeroes, file.read-zeroes: null-co's, checked where a null-co drive is opened)
DRIVE_NUMBERS = frozenset(("index", "bus", "unit"))
DRIVE_CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "aio": (("threads", "native", "io_uring"), "invalid aio option"),
    "detect-zeroes": (("off", "on", "unmap"), "invalid parameter value: {v}"),
    "werror": (("ignore", "enospc", "stop", "report"), "'{v}' invalid write error action"),
    "rerror": (("ignore", "stop", "report"), "'{v}' invalid read error action"),
    "media": (("disk", "cdrom"), "'{v}' invalid media"),
}


def _check_drive_value(key: str, value: str) -> None:
    if key in DRIVE_BOOLS:
        parse_bool(value, option="", key=key)
    elif key in DRIVE_NUMBERS:
        parse_number(value, option="", key=key)
    elif key in DRIVE_CHOICES and value not in DRIVE_CHOICES[key][0]:
        raise OptionError(DRIVE_CHOICES[key][1].format(v=value))


def _bool(value: str, name: str) -> bool:
    return parse_bool(value, option="", key=name)


def open_drive(props: dict[str, str], *, drive_id: str, warn=None) -> BlockBackend:
    """A back end from ``-drive`` properties (errors without the ``-drive ...:`` prefix,
    which ``open_drives`` adds)."""
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    fmt = props.get("format")
    driver = props.get("driver")
    filename = props.get("file")
    ro = _bool(props.get("readonly", props.get("read-only", "off")), "read-only")
    auto_ro = _bool(props.get("auto-read-only", "off"), "auto-read-only")
    for key in props:
        if key not in DRIVE_KEYS and not key.startswith(("file.", "throttling.")):
            raise OptionError(f"Block format '{fmt or driver or 'raw'}' does not support the option '{key}'")
    for key, value in props.items():
        _check_drive_value(key, value)
    if fmt is not None and fmt != "raw":
        if fmt == "null-co":
            driver, fmt = "null-co", None
        elif fmt in QEMU_FORMATS:
            if filename and not filename.startswith("null-co://") and os.path.exists(filename):
                with open(filename, "rb") as f:
                    head = f.read(8)
                if image_format(head) != fmt:
                    raise OptionError(f"Image is not in {fmt} format")
            raise OptionError(f"format '{fmt}' is not supported by uvirt (raw only)")
        else:
            raise OptionError(f"Unknown driver '{fmt}'")
    null = driver == "null-co" or (filename or "").startswith("null-co://")
    if driver is not None and driver not in ("null-co", "raw", "file"):
        if driver in QEMU_FORMATS:
            raise OptionError(f"driver '{driver}' is not supported by uvirt (raw, file, null-co)")
        raise OptionError(f"Unknown driver '{driver}'")
    backend: BlockBackend
    if null:
        size_s = props.get("file.size", props.get("size"))
        size = (parse_size(size_s, option="", key="size",
                           expects="a non-negative number below 2^64")
                if size_s is not None else NULL_DEFAULT_SIZE)
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
            probed = image_format(backend.read(0, 8) or b"")
            if probed is not None:
                backend.close()
                raise OptionError(f"image '{filename}' is in {probed} format, which uvirt cannot read")
            warn(f"WARNING: Image format was not specified for '{filename}' and probing guessed raw.\n"
                 "         Automatically detecting the format is dangerous for raw images, "
                 "write operations on block 0 will be restricted.\n"
                 "         Specify the 'raw' format explicitly to remove the restrictions.")
    try:
        cache = props.get("cache", "writeback")
        if cache not in ("writeback", "writethrough", "none", "directsync", "unsafe"):
            raise OptionError("invalid cache option")
        backend.write_cache = cache in ("writeback", "none", "unsafe")
        if "cache.writeback" in props:
            backend.write_cache = _bool(props["cache.writeback"], "cache.writeback")
        discard = props.get("discard", "ignore")
        if discard not in ("ignore", "off", "unmap", "on"):
            raise OptionError("Invalid discard option")
    except OptionError:
        backend.close()
        raise
    backend.discard_unmap = discard in ("unmap", "on")
    backend.id = drive_id
    return backend


def open_drives(drives: "list[DriveOpts] | tuple[DriveOpts, ...]", *, warn=None) -> dict[str, Drive]:
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


# --------------------------------------------------------------------------- -chardev


def open_chardev(spec: ChardevOpts) -> Chardev:
    """A character back end from ``-chardev BACKEND,id=...`` (or a shorthand): file,
    stdio, null, memory, and sockets (a UNIX client for ivshmem-doorbell, or a server).
    The keys' types were checked by the option parser (``tables.CHARDEV_KEYS``)."""
    props, origin = spec.props, spec.origin

    def flag(key: str, default: str) -> bool:
        return parse_bool(props.get(key, default), option=origin, key=key)

    try:
        if spec.backend == "socket" and (flag("server", "off")):
            if "path" in props:
                address: str | tuple[str, int] = props["path"]
            elif "port" in props:
                host = props.get("host") or "0.0.0.0"
                address = (host, resolve_port(host, props["port"]))
            else:
                raise OptionError(f"{origin}: chardev: socket: 'path' or 'port' is required")
            dev: Chardev = ServerSocketChardev(address, wait=flag("wait", "on"), label=origin,
                                               chardev_id=spec.id)
        elif spec.backend == "socket":
            if "path" not in props:
                raise OptionError(f"{origin}: uvirt supports only UNIX socket chardevs (path=...)")
            from uvirt.board.devices.ivshmem import SocketChardev   # a client UNIX socket (ivshmem)
            dev = SocketChardev(props["path"], chardev_id=spec.id)
        elif spec.backend == "file":
            path = props.get("path")
            if not path:
                raise OptionError(f"{origin}: chardev: {spec.id or 'file'}: 'path' is missing")
            dev = FileChardev(path, append=flag("append", "off"))
        elif spec.backend == "stdio":
            dev = StdioChardev()
        elif spec.backend in ("null", "none"):
            dev = NullChardev()
        elif spec.backend == "memory":
            dev = MemoryChardev()
        else:
            raise OptionError(f"{origin}: chardev: backend '{spec.backend}' is not supported by uvirt "
                              f"(file, stdio, null, memory, socket)")
    except ChardevError as e:
        raise located(origin, str(e)) from None
    dev.id = spec.id
    return dev


# --------------------------------------------------------------------------- -object memory-backend-*

_COMMON_BACKEND = {"size": "size", "share": "bool", "prealloc": "bool", "merge": "bool",
                   "dump": "bool", "reserve": "bool", "x-use-canonical-path-for-ramblock-id": "bool",
                   "prealloc-threads": "uint32", "prealloc-context": "link", "policy": "HostMemPolicy",
                   "host-nodes": "str"}
#: the properties of QEMU 7.2's memory back ends and their types (``-object TYPE,help``);
#: uvirt checks every value as QEMU does, and only size, share and mem-path have an effect
#: (the others concern the host's memory: NUMA policy, preallocation, core dumps, KSM)
MEMORY_BACKEND_PROPS: dict[str, dict[str, str]] = {
    "memory-backend-ram": _COMMON_BACKEND,
    "memory-backend-file": {**_COMMON_BACKEND, "mem-path": "str", "readonly": "bool",
                            "discard-data": "bool", "align": "size", "pmem": "bool"},
    "memory-backend-memfd": {**_COMMON_BACKEND, "seal": "bool", "hugetlb": "bool",
                             "hugetlbsize": "size"},
}
_HOST_MEM_POLICIES = ("default", "preferred", "bind", "interleave")


def _object_prop(kind: str, key: str, value: str, origin: str) -> object:
    """One ``-object`` property, as QOM's string input visitor reads it (its words differ
    from QemuOpts': ``expects a uint64 value``, ``expects a size value``)."""
    if kind == "bool":
        return parse_bool(value, option=origin, key=key)
    if kind == "size":
        return parse_size(value, option=origin, key=key)
    if kind == "uint32":
        try:
            if "-" in value:
                raise StrtoxError("invalid")
            n = strtox(value, 0, signed=False, consume_all=True)[0]
        except StrtoxError:
            raise located(origin, f"Parameter '{key}' expects a uint64 value") from None
        if n > 0xFFFFFFFF:
            raise located(origin, f"Parameter '{key}' expects uint32_t")
        return n
    if kind == "HostMemPolicy" and value not in _HOST_MEM_POLICIES:
        raise located(origin, f"Parameter '{key}' does not accept value '{value}'")
    if kind == "link":             # a thread-context object: uvirt has none
        raise located(origin, f"Device '{value}' not found")
    return value


def memory_backend(obj: ObjectOpts) -> SharedMemory:
    """``-object memory-backend-{ram,file,memfd},id=..,size=..[,mem-path=..,share=..]``."""
    qom_type, origin = obj.qom_type, obj.origin
    props = {k: v for k, v in obj.props.items() if k != "id"}
    known = MEMORY_BACKEND_PROPS.get(qom_type)
    if known is None:
        raise OptionError(f"{origin}: invalid object type: {qom_type}")
    values = {}
    for key, value in props.items():
        if key not in known:
            raise OptionError(f"{origin}: Property '{qom_type}.{key}' not found")
        values[key] = _object_prop(known[key], key, value, origin)
    size = values.get("size", 0)
    if size == 0:
        raise OptionError(f"{origin}: can't create backend with size 0")
    share = values.get("share", qom_type == "memory-backend-memfd")
    name = f"{qom_type}:{obj.id}"
    try:
        if qom_type == "memory-backend-file":
            path = values.get("mem-path")
            if not path:
                raise OptionError(f"{origin}: mem-path property not set")
            return SharedMemory.file(name, path, size, shared=share)
        if qom_type == "memory-backend-memfd":
            return SharedMemory.memfd(name, size, check=False)
        return SharedMemory.ram(name, size)
    except OptionError:
        raise
    except UvirtError as e:
        raise OptionError(f"{origin}: {e}") from None
