"""The main loop of a qtest/QMP session and its character-device endpoints.

One thread, one ``selectors`` loop, as QEMU's main loop under its big lock: the qtest
socket, every QMP monitor, listening sockets, the signal pipe and whatever devices
register (``board.services.add_reader``: ivshmem doorbells) are serviced in turn, and every
device callback runs on this thread.  Nothing blocks except a write to a client that
is not reading (QEMU's ``qemu_chr_fe_write_all`` blocks likewise) and the start-up
``wait=on`` accept that QEMU also does.

Endpoints (QEMU's ``-chardev socket``/``stdio`` as a qtest or monitor back end):

* ``unix:PATH`` / ``socket,path=PATH`` — uvirt connects (libqtest listens);
* ``...,server=on[,wait=off]`` — uvirt listens and serves one client at a time;
* ``tcp:HOST:PORT`` likewise; ``stdio`` — reads fd 0, writes fd 1.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import sys
from typing import Callable

from uvirt.errors import OptionError


class MainLoop:
    def __init__(self) -> None:
        # poll, not epoll: ``-qtest stdio < repro.txt`` hands us a regular file, which
        # epoll refuses (EPERM) and poll reports as always readable.
        self.sel = selectors.PollSelector() if hasattr(selectors, "PollSelector") else selectors.SelectSelector()
        self.running = False
        self.exit_code = 0
        self.stop_reason = ""
        self.endpoints: list["Endpoint"] = []
        self._sig_r = self._sig_w = -1
        self._old: dict[int, object] = {}

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        try:
            self.sel.modify(fd, selectors.EVENT_READ, callback)
        except KeyError:
            self.sel.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        try:
            self.sel.unregister(fd)
        except (KeyError, ValueError):
            pass

    def stop(self, reason: str = "", code: int = 0) -> None:
        if self.running:
            self.running = False
            self.stop_reason = reason
            self.exit_code = code

    # -- signals: QEMU ends with status 0 on SIGTERM, SIGINT and SIGHUP
    def install_signals(self) -> None:
        self._sig_r, self._sig_w = os.pipe()
        os.set_blocking(self._sig_r, False)
        os.set_blocking(self._sig_w, False)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._old[s] = signal.signal(s, lambda *_: None)
        signal.set_wakeup_fd(self._sig_w, warn_on_full_buffer=False)
        self.add_reader(self._sig_r, self._on_signal)

    def _on_signal(self) -> None:
        try:
            data = os.read(self._sig_r, 64)
        except BlockingIOError:
            return
        for b in data:
            if b in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                print(f"uvirt: terminating on signal {b}", file=sys.stderr)
                self.stop(f"signal {b}", 0)
                return

    def restore_signals(self) -> None:
        if self._sig_w >= 0:
            signal.set_wakeup_fd(-1)
            for s, h in self._old.items():
                signal.signal(s, h)
            self.remove_reader(self._sig_r)
            os.close(self._sig_r)
            os.close(self._sig_w)
            self._sig_r = self._sig_w = -1

    def alive(self) -> bool:
        """Whether anything can still talk to us: an open endpoint or a listener."""
        return any(ep.alive() for ep in self.endpoints)

    def run(self, timeout: float | None = None) -> None:
        import time
        deadline = None if timeout is None else time.monotonic() + timeout
        self.running = True
        while self.running:
            if not self.alive():
                self.stop("every client disconnected", 0)
                break
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if deadline is not None and wait == 0:
                self.stop("wall-clock budget (-uvirt-timeout)", 124)
                break
            for key, _ in self.sel.select(wait):
                key.data()
                if not self.running:
                    break

    def close(self) -> None:
        for ep in self.endpoints:
            ep.close()
        self.restore_signals()
        self.sel.close()


class Endpoint:
    """A byte stream to one client.  ``on_open()``, ``on_data(bytes)``, ``on_close()``
    are set by the protocol (qtest server or QMP monitor)."""

    on_open: Callable[[], None] = staticmethod(lambda: None)
    on_data: Callable[[bytes], None] = staticmethod(lambda data: None)
    on_close: Callable[[], None] = staticmethod(lambda: None)

    def __init__(self, loop: MainLoop, label: str) -> None:
        self.loop = loop
        self.label = label
        self.connected = False
        #: Client-mode and stdio endpoints end for good when the peer goes; a server
        #: keeps listening.
        self.persistent = False
        loop.endpoints.append(self)

    def alive(self) -> bool:
        return self.connected or self.persistent

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SocketEndpoint(Endpoint):
    def __init__(self, loop: MainLoop, label: str, props: dict[str, str], origin: str) -> None:
        super().__init__(loop, label)
        from uvirt.backends.chardev import ChardevError, resolve_port
        from uvirt.options.values import parse_bool
        self.origin = origin
        self.sock: socket.socket | None = None
        self.listener: socket.socket | None = None
        self.server = parse_bool(props.get("server", "off"), option=origin, key="server")
        self.wait = parse_bool(props.get("wait", "on"), option=origin, key="wait")
        if "path" in props:
            self.family, self.address = socket.AF_UNIX, props["path"]
            self.desc = f"unix:{props['path']}"
        elif "port" in props:
            self.family = socket.AF_INET
            host = props.get("host") or "localhost"
            try:
                self.address = (host, resolve_port(host, props["port"]))
            except ChardevError as e:
                raise OptionError(f"{origin}: {e}") from None
            self.desc = f"tcp:{self.address[0]}:{self.address[1]}"
        else:
            raise OptionError(f"{origin}: chardev: socket: 'path' or 'port' is required")
        self.persistent = self.server

    def start(self) -> None:
        if not self.server:
            s = socket.socket(self.family, socket.SOCK_STREAM)
            try:
                s.connect(self.address)
            except OSError as e:
                s.close()
                where = self.address if isinstance(self.address, str) else f"{self.address[0]}:{self.address[1]}"
                raise OptionError(f"Failed to connect to '{where}': {e.strerror}") from None
            self._attach(s)
            return
        ls = socket.socket(self.family, socket.SOCK_STREAM)
        if self.family == socket.AF_UNIX:
            try:
                os.unlink(self.address)
            except FileNotFoundError:
                pass
        else:
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            ls.bind(self.address)
            ls.listen(1)
        except OSError as e:
            ls.close()
            raise OptionError(f"{self.origin}: Failed to bind socket: {e.strerror}") from None
        self.listener = ls
        if self.wait:
            print(f"uvirt: {self.origin}: info: QEMU waiting for connection on: "
                  f"disconnected:{self.desc},server=on", file=sys.stderr)
            conn, _ = ls.accept()
            self._attach(conn)
        else:
            self.loop.add_reader(ls.fileno(), self._accept)

    def _accept(self) -> None:
        assert self.listener is not None
        conn, _ = self.listener.accept()
        if self.connected:          # one client at a time, as QEMU's socket chardev
            conn.close()
            return
        self.loop.remove_reader(self.listener.fileno())
        self._attach(conn)

    def _attach(self, s: socket.socket) -> None:
        self.sock = s
        self.connected = True
        self.loop.add_reader(s.fileno(), self._readable)
        self.on_open()

    def _readable(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, OSError):
            data = b""
        if not data:
            self._disconnect()
            return
        self.on_data(data)

    def _disconnect(self) -> None:
        if not self.connected:
            return
        self.connected = False
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        self.on_close()
        if self.listener is not None:
            self.loop.add_reader(self.listener.fileno(), self._accept)

    def write(self, data: bytes) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendall(data)
        except OSError as e:
            if e.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF):
                self._disconnect()
            else:
                raise

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self.connected = False
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            if self.family == socket.AF_UNIX:
                try:
                    os.unlink(self.address)
                except OSError:
                    pass
        self.persistent = False


class StdioEndpoint(Endpoint):
    def __init__(self, loop: MainLoop, label: str, infd: int = 0, outfd: int = 1) -> None:
        super().__init__(loop, label)
        self.infd, self.outfd = infd, outfd

    def start(self) -> None:
        self.connected = True
        self.loop.add_reader(self.infd, self._readable)
        self.on_open()

    def _readable(self) -> None:
        try:
            data = os.read(self.infd, 65536)
        except OSError:
            data = b""
        if not data:
            self.connected = False
            self.loop.remove_reader(self.infd)
            self.on_close()
            return
        self.on_data(data)

    def write(self, data: bytes) -> None:
        if self.outfd < 0:
            return
        try:
            view = memoryview(data)
            while view:
                n = os.write(self.outfd, view)
                view = view[n:]
        except OSError as e:
            if e.errno in (errno.EPIPE, errno.EBADF):
                self.outfd = -1
            else:
                raise


def open_endpoint(loop: MainLoop, backend: str, props: dict[str, str], label: str, origin: str) -> Endpoint:
    if backend == "socket":
        return SocketEndpoint(loop, label, props, origin)
    if backend == "stdio":
        return StdioEndpoint(loop, label)
    raise OptionError(f"{origin}: chardev backend '{backend}' cannot carry qtest or QMP in uvirt "
                      f"(socket, stdio)")
