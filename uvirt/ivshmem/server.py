"""``uvirt ivshmem-server``: an ivshmem server compatible with QEMU's contrib server.

Debian ships no ``ivshmem-server`` (docs/qemu-7.2-observed.md), so uvirt brings its own.
Options and behaviour follow ``contrib/ivshmem-server`` (main.c, ivshmem-server.c):

* ``-S path`` UNIX socket (default /tmp/ivshmem_socket); ``-M name`` POSIX shm object
  (default ``ivshmem``, via shm_open, left in place on exit as QEMU does) or ``-m dir``
  (unlinked temp file ``dir/ivshmem.XXXXXX``); uvirt adds ``--memfd`` (anonymous).
* ``-l size`` with K/M/G/T suffixes, default 4M, rounded up to a power of two; if
  ftruncate refuses (hugetlbfs) the size is doubled up to 1 GiB.
* ``-n vectors`` default 1, max 64; ``-F`` foreground (default: daemon); ``-p pidfile``
  (daemon mode only); ``-v`` verbose (foreground only, as QEMU).

Protocol (docs/virtio-pci-facts.md §7.3): ids from a 16-bit counter skipping ids in use;
a newcomer gets version, id, shm fd; then every existing peer gets the newcomer's
eventfds, the newcomer gets every existing peer's eventfds, then its own.  Any
readable event on a client socket (data or EOF) disconnects it and the others get
its id without fd.  Sends never raise SIGPIPE (MSG_NOSIGNAL; SIGPIPE ignored in main).

Differences from QEMU's server, none visible to a client: ``-l`` above 1 GiB is
tried as given instead of failing; SIGINT shuts down cleanly like SIGTERM; the pid
file is removed on clean exit; the socket path is only unlinked if it is still ours.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import logging
import os
import select
import signal
import socket
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass, field

from uvirt.errors import OptionError
from uvirt.host_utils import pow2ceil
from uvirt.options.values import StrtoxError, strtox
from uvirt.options.values import parse_size as parse_size_option
from uvirt.service_thread import start_service_thread
from uvirt.ivshmem.protocol import (
    MAX_PEER_ID,
    MAX_VECTORS,
    PROTOCOL_VERSION,
    SHM_MESSAGE,
    IvshmemError,
    close_fds,
    send_message,
)

log = logging.getLogger("uvirt.ivshmem.server")

DEFAULT_SOCKET_PATH = "/tmp/ivshmem_socket"
DEFAULT_SHM_NAME = "ivshmem"
DEFAULT_SIZE = 4 << 20
DEFAULT_VECTORS = 1
DEFAULT_PID_FILE = "/var/run/ivshmem-server.pid"
MAX_HUGEPAGE_SIZE = 1 << 30     # IVSHMEM_SERVER_MAX_HUGEPAGE_SIZE
LISTEN_BACKLOG = 10
# Private names the listening socket is bound under before it is linked to its path.
_STAGING_IDS = itertools.count()


class IvshmemServerError(IvshmemError):
    """The server cannot start (bad option, shm or socket failure)."""


def parse_size(text: str) -> int:
    """``-l``: QEMU's ``parse_option_size`` (``qemu_strtosz``: bytes, ``0x`` hex, a
    K/M/G/T/P/E suffix, a fraction with a suffix), with its words for ``shm_size``."""
    try:
        value = parse_size_option(text, option="", key="shm_size",
                                  expects="a non-negative number below 2^64")
    except OptionError as e:
        raise IvshmemServerError(str(e)) from None
    if value >= 1 << 63:
        raise IvshmemServerError(f"shm size {text!r} is too large")
    return value


def parse_vectors(text: str) -> int:
    """Parse ``-n`` like QEMU's parse_uint_full(base 0): decimal, 0x hex or 0 octal, no sign."""
    try:
        if "-" in text:
            raise StrtoxError("invalid")
        value = strtox(text, 0, signed=False, consume_all=True)[0]
    except StrtoxError:
        raise IvshmemServerError(f"cannot parse n_vectors {text!r}") from None
    if value > MAX_VECTORS:
        raise IvshmemServerError(f"too many requested vectors 0x{value:x} (max is {MAX_VECTORS})")
    return value


@dataclass
class _Peer:
    id: int
    sock: socket.socket
    eventfds: list[int] = field(default_factory=list)


class IvshmemServer:
    """An ivshmem server, usable in-process.

    ``start()`` creates the shared memory and binds the socket (the path exists when it
    returns); then either call ``step(timeout)`` from your own loop, ``serve_forever()``,
    or ``start_thread()``.  ``stop()`` may be called from any thread or a signal handler;
    ``close()`` stops, disconnects every peer, unlinks the socket and closes all fds.

    Backing: ``shm_name`` (shm_open), ``shm_dir`` (unlinked temp file) or, when both are
    None, an anonymous memfd.
    """

    def __init__(self, socket_path: str = DEFAULT_SOCKET_PATH, *, shm_name: str | None = None,
                 shm_dir: str | None = None, size: int = DEFAULT_SIZE,
                 vectors: int = DEFAULT_VECTORS) -> None:
        if shm_name is not None and shm_dir is not None:
            raise IvshmemServerError("give either a shm name (-M) or a directory (-m), not both")
        if not 0 <= vectors <= MAX_VECTORS:
            raise IvshmemServerError(f"too many requested vectors 0x{vectors:x} (max is {MAX_VECTORS})")
        if size < 0:
            raise IvshmemServerError(f"shm size {size:#x} is negative")
        self.socket_path = socket_path
        self.shm_name = shm_name
        self.shm_dir = shm_dir
        self.requested_size = size
        self.size = 0
        self.vectors = vectors
        self.shm_fd = -1
        self._listen: socket.socket | None = None
        self._sock_ino: tuple[int, int] | None = None
        self._peers: list[_Peer] = []            # connection order, as QEMU's QTAILQ
        self._cur_id = 0
        self._wake_r = -1
        self._wake_w = -1
        self._stop = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle

    def start(self) -> IvshmemServer:
        """Create the shared memory, bind and listen.  Raises IvshmemServerError."""
        try:
            self.shm_fd = self._open_shm()
            self.size = self._truncate(self.shm_fd, self.requested_size)
            self._listen = self._bind()
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise
        log.debug("listening on %s, shm %s bytes, %d vectors", self.socket_path, self.size, self.vectors)
        return self

    def serve_forever(self) -> None:
        """Handle connections until stop() (or close() from another thread)."""
        while not self._stop:
            self.step(None)

    def start_thread(self) -> threading.Thread:
        """Serve in a daemon thread; close() stops and joins it."""
        if self._listen is None:
            self.start()
        self._thread = start_service_thread(self.serve_forever, "ivshmem-server")
        return self._thread

    def stop(self) -> None:
        """Ask serve_forever() to return; safe from other threads and signal handlers."""
        self._stop = True
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def close(self) -> None:
        self.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
            self._thread = None
        with self._lock:
            while self._peers:
                self._free_peer(self._peers[0])
            if self._listen is not None:
                self._unlink_socket()
                self._listen.close()
                self._listen = None
            close_fds([self.shm_fd, self._wake_r, self._wake_w])
            self.shm_fd = self._wake_r = self._wake_w = -1

    def __enter__(self) -> IvshmemServer:
        if self._listen is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def peer_ids(self) -> list[int]:
        with self._lock:
            return [p.id for p in self._peers]

    # -- event loop

    def step(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds (None: until something happens) and handle it."""
        listen = self._listen
        if listen is None or self._stop:
            return
        with self._lock:
            socks = [p.sock for p in self._peers]
        poller = select.poll()
        poller.register(listen.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        for s in socks:
            poller.register(s.fileno(), select.POLLIN)
        ready = {fd for fd, _ in poller.poll(None if timeout is None else int(timeout * 1000))}
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 64)
            except OSError:
                pass
        if self._stop:
            return
        with self._lock:
            if self._listen is None:
                return
            if listen.fileno() in ready:
                self._handle_new_conn()
            # Any message from a peer socket, or EOF, results in a close (QEMU).
            for peer in list(self._peers):
                if peer.sock.fileno() in ready and peer in self._peers:
                    self._free_peer(peer)

    # -- protocol

    def _handle_new_conn(self) -> None:
        assert self._listen is not None
        try:
            conn, _ = self._listen.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.debug("cannot accept(): %s", e.strerror)
            return
        conn.setblocking(False)
        peer_id = self._allocate_id()
        if peer_id is None:
            log.debug("cannot allocate new client id")
            conn.close()
            return
        peer = _Peer(peer_id, conn)
        try:
            for _ in range(self.vectors):
                peer.eventfds.append(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
        except OSError as e:
            log.debug("cannot create eventfd: %s", e.strerror)
            close_fds(peer.eventfds)
            conn.close()
            return
        try:
            send_message(conn, PROTOCOL_VERSION)
            send_message(conn, peer.id)
            send_message(conn, SHM_MESSAGE, self.shm_fd)
        except OSError as e:
            log.debug("cannot send initial info to new peer: %s", e.strerror)
            close_fds(peer.eventfds)
            conn.close()
            return
        for other in self._peers:
            for fd in peer.eventfds:
                self._send(other, peer.id, fd)
        for other in self._peers:
            for fd in other.eventfds:
                self._send(peer, other.id, fd)
        for fd in peer.eventfds:
            self._send(peer, peer.id, fd)
        self._peers.append(peer)
        log.debug("new peer id = %d", peer.id)

    def _allocate_id(self) -> int | None:
        in_use = {p.id for p in self._peers}
        for _ in range(MAX_PEER_ID):
            if self._cur_id not in in_use:
                break
            self._cur_id = (self._cur_id + 1) & MAX_PEER_ID
        else:
            return None
        peer_id = self._cur_id
        self._cur_id = (self._cur_id + 1) & MAX_PEER_ID
        return peer_id

    def _free_peer(self, peer: _Peer) -> None:
        log.debug("free peer %d", peer.id)
        peer.sock.close()
        self._peers.remove(peer)
        for other in self._peers:
            self._send(other, peer.id)
        close_fds(peer.eventfds)
        peer.eventfds = []

    @staticmethod
    def _send(peer: _Peer, value: int, fd: int = -1) -> None:
        # QEMU ignores broadcast failures; a peer whose socket is gone is freed when
        # poll reports it (EOF/HUP), so nothing is lost that matters.
        try:
            send_message(peer.sock, value, fd)
        except OSError as e:
            log.debug("cannot send %d to peer %d: %s", value, peer.id, e.strerror or e)

    # -- set-up helpers

    def _open_shm(self) -> int:
        if self.shm_name is not None:
            log.debug("Using POSIX shared memory: %s", self.shm_name)
            try:
                return _shm_open(self.shm_name)
            except OSError as e:
                raise IvshmemServerError(f"cannot open shm file {self.shm_name}: {e.strerror}") from None
        if self.shm_dir is not None:
            log.debug("Using file-backed shared memory: %s", self.shm_dir)
            try:
                fd, name = tempfile.mkstemp(prefix="ivshmem.", dir=self.shm_dir)
            except OSError as e:
                raise IvshmemServerError(f"cannot open shm file {self.shm_dir}: {e.strerror}") from None
            os.unlink(name)
            return fd
        return os.memfd_create("ivshmem", os.MFD_CLOEXEC)

    def _truncate(self, fd: int, size: int) -> int:
        size = pow2ceil(size)
        if os.fstat(fd).st_size == size:
            return size
        first_error: OSError | None = None
        try_size = size
        while True:
            try:
                os.ftruncate(fd, try_size)
                return try_size
            except OSError as e:
                first_error = first_error or e
            try_size *= 2
            if try_size > MAX_HUGEPAGE_SIZE:
                break
        where = self.shm_name or self.shm_dir or "memfd"
        raise IvshmemServerError(
            f"ftruncate({where}) to 0x{size:x} failed: {first_error.strerror if first_error else '?'}")

    def _bind(self) -> socket.socket:
        """Bind and listen so that the path appears only once it accepts connections.

        A client that polls for the path (QEMU's ``-chardev socket``, a script) would
        otherwise meet ECONNREFUSED between bind() and listen().  The socket is bound
        under a private name beside the path, listens, and is then hard-linked to the
        path: link() fails with EEXIST like QEMU's bind() does on an existing path.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = os.path.join(os.path.dirname(self.socket_path), f".ivshmem-{os.getpid()}-{next(_STAGING_IDS)}.sock")
        try:
            try:
                sock.bind(staging)
            except OSError:
                staging = None   # a name too long or a dir not ours: bind the path itself
                sock.bind(self.socket_path)
            sock.listen(LISTEN_BACKLOG)
            if staging is not None:
                try:
                    os.link(staging, self.socket_path)
                except FileExistsError:
                    raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)) from None
                finally:
                    os.unlink(staging)
            st = os.stat(self.socket_path)
            self._sock_ino = (st.st_dev, st.st_ino)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise IvshmemServerError(
                f"cannot bind to {self.socket_path}: {e.strerror or e}") from None
        return sock

    def _unlink_socket(self) -> None:
        try:
            st = os.stat(self.socket_path)
        except OSError:
            return
        if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._sock_ino:
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass


def _shm_open(name: str) -> int:
    """shm_open(name, O_CREAT|O_RDWR, 0700) as QEMU's server does."""
    flags = os.O_CREAT | os.O_RDWR
    try:
        import _posixshmem
    except ImportError:
        path = "/dev/shm/" + name.lstrip("/")
        return os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, 0o700)
    return _posixshmem.shm_open("/" + name.lstrip("/"), flags, 0o700)


# --------------------------------------------------------------------------- command line

USAGE_TAIL = f"""\
options (as QEMU's ivshmem-server):
  -h                    show this help
  -v                    verbose mode (foreground only)
  -F                    foreground mode (default is to daemonize)
  -p <pid-file>         path to the PID file (used in daemon mode only)
                        default {DEFAULT_PID_FILE}
  -S <unix-socket-path> path to the unix socket to listen to
                        default {DEFAULT_SOCKET_PATH}
  -M <shm-name>         POSIX shared memory object to use
                        default {DEFAULT_SHM_NAME}
  -m <dir-name>         where to create shared memory (unlinked temp file)
  --memfd               use an anonymous memfd (uvirt extension)
  -l <size>             size of shared memory in bytes, rounded up to a power of two
                        suffixes K, M and G can be used, e.g. 1K means 1024
                        default {DEFAULT_SIZE}
  -n <nvectors>         number of vectors, default {DEFAULT_VECTORS}, max {MAX_VECTORS}
"""


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, add_help=False, usage="%(prog)s [OPTION]...",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="ivshmem server, protocol version 0 (QEMU >= 2.5)",
                                epilog=USAGE_TAIL)
    p.add_argument("-h", "--help", action="store_true", dest="help", help=argparse.SUPPRESS)
    p.add_argument("-v", action="store_true", dest="verbose", help=argparse.SUPPRESS)
    p.add_argument("-F", action="store_true", dest="foreground", help=argparse.SUPPRESS)
    p.add_argument("-p", dest="pid_file", default=DEFAULT_PID_FILE, help=argparse.SUPPRESS)
    p.add_argument("-S", dest="socket_path", default=DEFAULT_SOCKET_PATH, help=argparse.SUPPRESS)
    # -M, -m and --memfd: the last one given wins, as with QEMU's getopt loop.
    p.add_argument("-M", dest="shm", type=lambda v: ("name", v), help=argparse.SUPPRESS)
    p.add_argument("-m", dest="shm", type=lambda v: ("dir", v), help=argparse.SUPPRESS)
    p.add_argument("--memfd", dest="shm", action="store_const", const=("memfd", None), help=argparse.SUPPRESS)
    p.add_argument("-l", dest="size", default=str(DEFAULT_SIZE), help=argparse.SUPPRESS)
    p.add_argument("-n", dest="vectors", default=str(DEFAULT_VECTORS), help=argparse.SUPPRESS)
    return p


class _UsageError(Exception):
    pass


def main(argv: list[str] | None = None, prog: str = "uvirt ivshmem-server") -> int:
    """Run the server; returns the exit status (0 after a clean SIGTERM/SIGINT)."""
    parser = _parser(prog)
    parser.error = lambda message: (_ for _ in ()).throw(_UsageError(message))  # type: ignore[method-assign]
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except _UsageError as e:
        print(f"uvirt: ivshmem-server: {e}", file=sys.stderr)
        return 1
    if args.help:
        sys.stdout.write(parser.format_help())    # print_help would hide a write error
        return 0
    try:
        size = parse_size(args.size)
        vectors = parse_vectors(args.vectors)
        if args.verbose and not args.foreground:
            raise IvshmemServerError("cannot use verbose in daemon mode")
    except IvshmemServerError as e:
        print(f"uvirt: ivshmem-server: {e}", file=sys.stderr)
        return 1
    kind, value = args.shm or ("name", DEFAULT_SHM_NAME)
    handler: logging.Handler | None = None
    if args.verbose:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
    server = IvshmemServer(args.socket_path, shm_name=value if kind == "name" else None,
                           shm_dir=value if kind == "dir" else None, size=size, vectors=vectors)
    pid_file: str | None = None
    old_handlers: dict[int, object] = {}
    try:
        try:
            server.start()
        except IvshmemServerError as e:
            print(f"uvirt: ivshmem-server: {e}", file=sys.stderr)
            return 1
        if not args.foreground:
            _daemonize()
            try:
                with open(args.pid_file, "w") as f:
                    f.write(f"{os.getpid()}\n")
                pid_file = args.pid_file
            except OSError as e:
                print(f"uvirt: ivshmem-server: cannot write pid file {args.pid_file}: {e.strerror}",
                      file=sys.stderr)
                return 1
        if threading.current_thread() is threading.main_thread():
            old_handlers[signal.SIGPIPE] = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
            for sig in (signal.SIGTERM, signal.SIGINT):
                old_handlers[sig] = signal.signal(sig, lambda *_: server.stop())
        server.serve_forever()
        log.debug("server disconnected")
        return 0
    finally:
        server.close()
        if pid_file is not None:
            try:
                os.unlink(pid_file)
            except OSError:
                pass
        for sig, old in old_handlers.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        if handler is not None:
            log.removeHandler(handler)


def _daemonize() -> None:
    """daemon(nochdir=1, noclose=1), as QEMU's qemu_daemon(1, 1): the parent exits 0."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() != 0:
        os._exit(0)
    os.setsid()


if __name__ == "__main__":
    sys.exit(main())
