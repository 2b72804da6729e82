"""Character-device back ends (QEMU ``-chardev``): where a guest's byte stream goes.

``file`` truncates and writes the path (QEMU opens with O_TRUNC unless ``append=on``),
``stdio`` writes to standard output, ``null`` drops everything, and ``memory`` (uvirt's
own, for tests) keeps the bytes in ``.data``.  Output is buffered and flushed at a
newline and when the machine stops, so a byte-per-OUT guest does not pay a syscall per
byte, while a person watching stdio sees whole lines at once.

A write that fails (a full disk, a reader that closed the pipe) never raises into the
guest: QEMU's chardev layer drops the bytes and the guest runs on.  The back end keeps
the first ``OSError`` in ``write_error`` and drops later output; the runner reports it
on one line when the run ends (``uvirt.runner.output_errors``).
"""

from __future__ import annotations

import os
import sys

from .errors import OptionError


class Chardev:
    id: str = ""
    #: the first failed write (then output is dropped, as QEMU drops it); None if none failed
    write_error: OSError | None = None
    #: what the user called this back end, for error messages (``file:out.txt``)
    label: str = ""

    def write(self, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.flush()


class NullChardev(Chardev):
    def write(self, data: bytes) -> None:
        pass


class MemoryChardev(Chardev):
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    @property
    def text(self) -> str:
        return self.data.decode("latin-1")


class _BufferedChardev(Chardev):
    """Collects bytes and hands them to ``_emit`` at a newline, at 4 KiB, and on flush."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self._buf += data
        if b"\n" in data or len(self._buf) >= 4096:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            if self.write_error is None:
                try:
                    self._emit(data)
                except OSError as e:
                    self.write_error = e

    def _emit(self, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class FileChardev(_BufferedChardev):
    def __init__(self, path: str, *, append: bool = False) -> None:
        super().__init__()
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        try:
            self._fd = os.open(path, flags, 0o666)
        except OSError as e:
            raise OptionError(f"-chardev file: could not open '{path}': {e.strerror}") from None
        self.path = path
        self.label = f"file:{path}"

    def _emit(self, data: bytes) -> None:
        os.write(self._fd, data)

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class StdioChardev(_BufferedChardev):
    def __init__(self, stream=None) -> None:
        super().__init__()
        self._stream = stream
        self.label = "stdio"

    def _emit(self, data: bytes) -> None:
        out = self._stream or sys.stdout.buffer
        out.write(data)
        out.flush()


def open_chardev(backend: str, props: dict[str, str], *, chardev_id: str = "") -> Chardev:
    """Create a back end from ``-chardev BACKEND,id=...,key=value`` properties."""
    if backend == "file":
        path = props.get("path")
        if not path:
            raise OptionError(f"chardev: {chardev_id or 'file'}: 'path' is missing")
        dev: Chardev = FileChardev(path, append=props.get("append", "off") in ("on", "yes", "true"))
    elif backend == "stdio":
        dev = StdioChardev()
    elif backend in ("null", "none"):
        dev = NullChardev()
    elif backend == "memory":
        dev = MemoryChardev()
    else:
        raise OptionError(f"chardev: backend '{backend}' is not supported by uvirt "
                          f"(file, stdio, null, memory)")
    dev.id = chardev_id
    return dev
