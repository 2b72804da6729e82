"""Character-device back ends (QEMU ``-chardev``): where a guest's byte stream goes.

``file`` truncates and writes the path (QEMU opens with O_TRUNC unless ``append=on``),
``stdio`` writes to standard output, ``null`` drops everything, ``memory`` (uvirt's
own, for tests) keeps the bytes in ``.data``, and ``socket,...,server=on`` listens
(``ServerSocketChardev``; the client form is the ivshmem one in board/devices/ivshmem.py).
The back ends take typed values; ``uvirt.launch.backends.open_chardev`` reads
``-chardev`` text and words errors.  Output is buffered and flushed at a
newline and when the machine stops, so a byte-per-OUT guest does not pay a syscall per
byte, while a person watching stdio sees whole lines at once.

A write that fails (a full disk, a reader that closed the pipe) never raises into the
guest: QEMU's chardev layer drops the bytes and the guest runs on.  The back end keeps
the first ``OSError`` in ``write_error`` and drops later output; the runner reports it
on one line when the run ends (``uvirt.launch.runner.output_errors``).
"""

from __future__ import annotations

import os
import sys

from uvirt.errors import UvirtError
from uvirt.service_thread import start_service_thread


class ChardevError(UvirtError):
    """A back end that cannot be opened, in QEMU's words without the option's location
    (``Could not open 'x': No such file or directory``); the builder adds it."""


def resolve_port(host: str, port: str) -> int:
    """A TCP port as QEMU's ``inet_parse`` + ``getaddrinfo`` take it: a decimal number or
    a service name (``http``); anything else is QEMU's ``address resolution failed``."""
    import socket
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        reason = e.strerror if isinstance(e, socket.gaierror) else str(e)
        raise ChardevError(f"address resolution failed for {host}:{port}: {reason}") from None
    return infos[0][4][1]


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
            raise ChardevError(f"Could not open '{path}': {e.strerror}") from None
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


class ServerSocketChardev(Chardev):
    """``-chardev socket,id=ID,path=P,server=on[,wait=off]`` or ``host=H,port=N`` (TCP),
    as QEMU 7.2's socket chardev in server mode, for output: one client at a time (a
    second connection waits in the backlog until the first leaves, then is served);
    ``wait=on`` (QEMU's default for a server) blocks start-up until a client connects,
    with QEMU's message; bytes written while no client is connected are dropped, as
    QEMU's ``tcp_chr_write`` refuses them.  Whatever a client sends is read and ignored
    (uvirt's chardevs carry no input).  Accepting and reading run on a daemon thread."""

    def __init__(self, address: "str | tuple[str, int]", *, wait: bool = True, label: str = "",
                 chardev_id: str = "") -> None:
        """``address``: a UNIX socket path, or (host, port) for TCP (port 0: any);
        ``label`` names the chardev in the waiting message (the option as written)."""
        import socket
        import threading
        self.id = chardev_id
        self.origin = label
        self.wait = wait
        if isinstance(address, str):
            family = socket.AF_UNIX
            self.desc = f"unix:{address}"
            try:
                os.unlink(address)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise ChardevError(f"Failed to bind socket to {address}: {e.strerror}") from None
        else:
            family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
            self.desc = f"tcp:{address[0]}:{address[1]}"
        self.path = address if family == socket.AF_UNIX else None
        ls = socket.socket(family, socket.SOCK_STREAM)
        if family != socket.AF_UNIX:
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            ls.bind(address)
            ls.listen(1)
        except OSError as e:
            ls.close()
            where = f" to {address}" if family == socket.AF_UNIX else ""
            raise ChardevError(f"Failed to bind socket{where}: {e.strerror}") from None
        if family != socket.AF_UNIX:
            self.desc = f"tcp:{address[0]}:{ls.getsockname()[1]}"
        self.listener = ls
        self.conn = None
        self._lock = threading.Lock()
        self._closed = False
        if self.wait:
            print(f"uvirt: {label}: info: QEMU waiting for connection on: "
                  f"disconnected:{self.desc},server=on", file=sys.stderr)
            conn, _ = ls.accept()
            self.conn = conn
        self._thread = start_service_thread(self._serve, f"chardev-{chardev_id}")

    def _serve(self) -> None:
        while not self._closed:
            conn = self.conn
            if conn is None:
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    return
                with self._lock:
                    if self._closed:
                        conn.close()
                        return
                    self.conn = conn
            try:
                while conn.recv(4096):
                    pass
            except OSError:
                pass
            self._drop(conn)

    def _drop(self, conn) -> None:
        with self._lock:
            if self.conn is conn:
                self.conn = None
            try:
                conn.close()
            except OSError:
                pass

    @property
    def connected(self) -> bool:
        return self.conn is not None

    def write(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            conn.sendall(data)
        except OSError:
            self._drop(conn)

    def close(self) -> None:
        import socket
        self._closed = True
        with self._lock:
            conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass
