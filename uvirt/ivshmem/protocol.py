"""The ivshmem server protocol, version 0 (QEMU >= 2.5), client side.

Wire format (qemu/qemu ``docs/specs/ivshmem-spec.rst``; docs/virtio-pci-facts.md §7.3): the
server talks, the client only listens.  Every message is one signed 64-bit
little-endian integer, optionally with exactly one file descriptor attached as
``SOL_SOCKET/SCM_RIGHTS``.  On connect the server sends, in this order::

    0                      no fd     protocol version
    own id (0..65535)      no fd     the client's peer id
    -1                     shm fd    shared memory, mmap MAP_SHARED, size = fstat
    peer id P  (xN)        eventfd   one group per connected peer; n-th fd = vector n-1
    own id     (xN)        eventfd   own vectors: readable when someone rings us

and afterwards, at any time: ``P`` with an eventfd (P connects, one message per
vector) or ``P`` without fd (P disconnected).

Validation follows QEMU's device (``hw/misc/ivshmem.c``: ``ivshmem_recv_setup``,
``process_msg*``): version then id must come without fd; a value < -1 or > 65535 is
invalid; a second -1 is invalid; a disconnect of one's own id is invalid; fds beyond
the configured vector count are closed.

Two layers:

* :class:`ClientState` is sans-I/O: ``feed(value, fd)`` consumes one decoded
  message, takes ownership of the fd and returns the resulting events.
* :class:`IvshmemClient` owns the socket.  ``connect()`` blocks -- with a deadline --
  through set-up (QEMU also waits for these messages before the guest runs; uvirt
  bounds the wait).  After that it is driven without threads: ``fileno()`` is one
  epoll fd that becomes readable when the server socket or one of the own eventfds
  is readable, and ``poll()`` services both and returns events, incoming rings
  included.

Errors in set-up raise :class:`IvshmemProtocolError` and close everything received
so far.  After set-up a bad message is discarded (its fd closed), logged, and
reported as a :class:`ProtocolViolation` event, which is what QEMU does
(``error_report_err`` in ``ivshmem_read``): the connection stays usable.
"""

from __future__ import annotations

import array
import enum
import errno
import logging
import mmap
import os
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Union

from uvirt.errors import UvirtError

log = logging.getLogger("uvirt.ivshmem")

PROTOCOL_VERSION = 0
SHM_MESSAGE = -1            # the value that carries the shared-memory fd
MAX_PEER_ID = 0xFFFF        # IVSHMEM_MAX_PEERS in QEMU
MAX_VECTORS = 64            # IVSHMEM_SERVER_MAX_VECTORS (contrib/ivshmem-server)
MESSAGE_SIZE = 8
# Room for a few fds per message so that a server attaching more than one is
# detected (and every fd closed) instead of the kernel silently dropping them.
_FDS_PER_RECV = 16
_FDS_DROPPED = -2           # placeholder for fds the kernel discarded (MSG_CTRUNC)
_MSG = struct.Struct("<q")
DEFAULT_TIMEOUT = 5.0
# When fewer own eventfds than configured vectors arrived and the socket is empty,
# how long set-up waits for a straggler before concluding the server has fewer
# vectors (the server writes the group back to back, so this only covers a read
# that fell between two of its sendmsg calls).
_OWN_VECTORS_GRACE = 0.02


class IvshmemError(UvirtError):
    """Base class of ivshmem host-side errors."""


class IvshmemProtocolError(IvshmemError):
    """The server sent something the protocol does not allow (or vanished during set-up)."""


class IvshmemConnectError(IvshmemError):
    """The server socket cannot be reached."""


class IvshmemTimeoutError(IvshmemProtocolError):
    """Set-up did not complete within the allowed time."""


# --------------------------------------------------------------------------- wire format


def encode(value: int) -> bytes:
    """The 8 payload bytes of a message carrying ``value``."""
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f"ivshmem message value {value:#x} does not fit in int64")
    return _MSG.pack(value)


def decode(data: bytes) -> int:
    """The value of an 8-byte message payload."""
    if len(data) != MESSAGE_SIZE:
        raise IvshmemProtocolError(
            f"ivshmem message must be 0x{MESSAGE_SIZE:x} bytes, got 0x{len(data):x}")
    return _MSG.unpack(data)[0]


def send_message(sock: socket.socket, value: int, fd: int = -1) -> None:
    """Send one message (server side and fake servers).  Raises OSError on failure."""
    data = encode(value)
    anc = []
    if fd >= 0:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]
    flags = getattr(socket, "MSG_NOSIGNAL", 0)
    sent = sock.sendmsg([data], anc, flags)
    if sent != MESSAGE_SIZE:
        # A stream socket only sends part of a message when it is non-blocking and
        # full; the peer would lose framing, so report it as a failed send.
        raise BlockingIOError(errno.EAGAIN, f"short send of ivshmem message ({sent} of 8 bytes)")


def close_fds(fds) -> None:
    for fd in fds:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def _fds_from_ancdata(ancdata) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(array.array("i", data[:usable]))
    return fds


class MessageReader:
    """Reassembles messages from a stream socket, with the fds that came with them.

    Works on blocking and non-blocking sockets; a message split over several reads
    is kept across calls (as QEMU's ``msg_buf``).  It owns fds it has received until
    it hands them out, and closes them in :meth:`discard`.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._fds: list[int] = []
        self.eof = False

    @property
    def partial(self) -> int:
        """Bytes of an incomplete message held back."""
        return len(self._buf)

    def read(self, sock: socket.socket, limit: int | None = None) -> list[tuple[int, list[int]]]:
        """Read what is available (at most ``limit`` messages) as ``(value, fds)`` pairs.

        Stops at EOF (then ``eof`` is set) or when the socket would block.  The caller
        owns the fds of returned messages.
        """
        out: list[tuple[int, list[int]]] = []
        flags = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
        while not self.eof and (limit is None or len(out) < limit):
            try:
                data, anc, mflags, _ = sock.recvmsg(
                    MESSAGE_SIZE - len(self._buf), socket.CMSG_SPACE(4 * _FDS_PER_RECV), flags)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                close_fds(self._fds)
                self._fds = []
                raise IvshmemProtocolError(f"reading from ivshmem server failed: {e.strerror}") from None
            self._fds.extend(_fds_from_ancdata(anc))
            if mflags & socket.MSG_CTRUNC:
                # The kernel dropped fds that did not fit: more than one, so invalid.
                self._fds.append(_FDS_DROPPED)
            if not data:
                self.eof = True
                break
            self._buf += data
            if len(self._buf) == MESSAGE_SIZE:
                out.append((decode(self._buf), self._fds))
                self._buf = b""
                self._fds = []
        return out

    def discard(self) -> None:
        close_fds(self._fds)
        self._fds = []
        self._buf = b""


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class SharedMemoryReceived:
    size: int


@dataclass(frozen=True, slots=True)
class PeerVectorConnected:
    """Peer ``peer_id`` can now be rung on ``vector`` (the first one means it joined)."""

    peer_id: int
    vector: int


@dataclass(frozen=True, slots=True)
class OwnVectorConnected:
    """Own eventfd for ``vector`` arrived: rings on it will be reported as Interrupt."""

    vector: int


@dataclass(frozen=True, slots=True)
class PeerDisconnected:
    peer_id: int


@dataclass(frozen=True, slots=True)
class VectorDropped:
    """An eventfd beyond the configured vector count arrived for ``peer_id`` and was closed."""

    peer_id: int


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Own ``vector`` was rung ``count`` times since the last report (eventfds add up)."""

    vector: int
    count: int


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """After set-up: a message was discarded (fd closed), QEMU's ``error_report`` case."""

    reason: str


@dataclass(frozen=True, slots=True)
class ServerGone:
    """The server closed the socket; existing peers keep working, no more join/leave."""


Event = Union[SharedMemoryReceived, PeerVectorConnected, OwnVectorConnected, PeerDisconnected,
              VectorDropped, Interrupt, ProtocolViolation, ServerGone]


# --------------------------------------------------------------------------- state machine


class Phase(enum.Enum):
    VERSION = "version"    # expecting the version message
    ID = "id"              # expecting our own id
    SHM = "shm"            # id known, waiting for the shared memory (peers may come first)
    READY = "ready"        # shared memory mapped; asynchronous join/leave
    CLOSED = "closed"


class Kind(enum.Enum):
    """What a message is, judged from its value and whether it carries an fd."""

    INVALID = "invalid"            # value < -1 or > 65535
    SHM = "shm"                    # -1 with fd
    SHM_NO_FD = "shm-no-fd"        # -1 without fd
    CONNECT = "connect"            # id with fd
    DISCONNECT = "disconnect"      # id without fd


def classify(value: int, fd: int) -> Kind:
    if value < SHM_MESSAGE or value > MAX_PEER_ID:
        return Kind.INVALID
    if value == SHM_MESSAGE:
        return Kind.SHM if fd >= 0 else Kind.SHM_NO_FD
    return Kind.CONNECT if fd >= 0 else Kind.DISCONNECT


# Which handler runs for a message, by phase and kind (ivshmem-spec.rst "The server
# protocol"; QEMU ivshmem_recv_setup + process_msg).  VERSION and ID accept exactly one
# shape of message and judge it themselves; anything missing from a row is an error.
_HANDLERS: dict[Phase, dict[Kind, str]] = {
    Phase.VERSION: {k: "_on_version" for k in Kind},
    Phase.ID: {k: "_on_id" for k in Kind},
    Phase.SHM: {Kind.SHM: "_on_shm", Kind.CONNECT: "_on_connect",
                Kind.DISCONNECT: "_on_disconnect"},
    Phase.READY: {Kind.SHM: "_on_second_shm", Kind.CONNECT: "_on_connect",
                  Kind.DISCONNECT: "_on_disconnect"},
}


class ClientState:
    """The client side of the protocol without I/O.

    ``vectors`` is the configured vector count (the device's ``vectors`` property): the
    n-th eventfd received for a peer is its vector n-1, and fds past ``vectors`` are
    closed.  ``feed`` takes ownership of the fd in every case, success or error.
    """

    def __init__(self, vectors: int = 1) -> None:
        if not 0 <= vectors <= MAX_VECTORS:
            raise ValueError(f"ivshmem vectors must be 0..{MAX_VECTORS}, not {vectors!r}")
        self.vectors = vectors
        self.phase = Phase.VERSION
        self.own_id: int | None = None
        self.shm_fd = -1
        self.shm_size = 0
        # Eventfds by peer id, own id included; index = vector.
        self.eventfds: dict[int, list[int]] = {}
        self.dropped_fds = 0

    # -- public

    def feed(self, value: int, fd: int = -1) -> list[Event]:
        """Consume one message; raises IvshmemProtocolError (fd closed) if it is invalid."""
        if self.phase is Phase.CLOSED:
            close_fds([fd])
            raise IvshmemProtocolError("ivshmem client is closed")
        kind = classify(value, fd)
        name = _HANDLERS[self.phase].get(kind)
        if name is None:
            close_fds([fd])
            raise IvshmemProtocolError(self._describe_invalid(kind, value))
        return getattr(self, name)(value, fd)

    def peer_vectors(self, peer_id: int) -> int:
        return len(self.eventfds.get(peer_id, ()))

    def own_vectors(self) -> int:
        return 0 if self.own_id is None else self.peer_vectors(self.own_id)

    def eventfd(self, peer_id: int, vector: int) -> int:
        """The eventfd to ring ``peer_id`` on ``vector``, or -1 when not connected."""
        fds = self.eventfds.get(peer_id)
        if fds is None or not 0 <= vector < len(fds):
            return -1
        return fds[vector]

    def close(self) -> None:
        for fds in self.eventfds.values():
            close_fds(fds)
        self.eventfds.clear()
        close_fds([self.shm_fd])
        self.shm_fd = -1
        self.phase = Phase.CLOSED

    # -- handlers

    def _on_version(self, value: int, fd: int) -> list[Event]:
        if value != PROTOCOL_VERSION:
            close_fds([fd])
            raise IvshmemProtocolError(
                f"ivshmem server sent version {_hex(value)}, expecting {PROTOCOL_VERSION:#x}")
        if fd >= 0:
            close_fds([fd])
            raise IvshmemProtocolError("ivshmem server sent invalid version message (fd attached)")
        self.phase = Phase.ID
        return []

    def _on_id(self, value: int, fd: int) -> list[Event]:
        close_fds([fd])
        if fd >= 0 or not 0 <= value <= MAX_PEER_ID:
            what = "fd attached" if fd >= 0 else f"id {_hex(value)} not in 0x0..0xffff"
            raise IvshmemProtocolError(f"ivshmem server sent invalid ID message ({what})")
        self.own_id = value
        self.phase = Phase.SHM
        return []

    def _on_shm(self, value: int, fd: int) -> list[Event]:
        try:
            size = os.fstat(fd).st_size
        except OSError as e:
            close_fds([fd])
            raise IvshmemProtocolError(
                f"can't determine size of shared memory fd {fd} sent by server: {e.strerror}") from None
        self.shm_fd = fd
        self.shm_size = size
        self.phase = Phase.READY
        return [SharedMemoryReceived(size)]

    def _on_second_shm(self, value: int, fd: int) -> list[Event]:
        close_fds([fd])
        raise IvshmemProtocolError("ivshmem server sent unexpected shared memory message (second -1)")

    def _on_connect(self, peer_id: int, fd: int) -> list[Event]:
        fds = self.eventfds.setdefault(peer_id, [])
        if len(fds) >= self.vectors:
            close_fds([fd])
            self.dropped_fds += 1
            if not fds:
                del self.eventfds[peer_id]
            log.debug("ivshmem: eventfd for peer 0x%x beyond %d vectors closed", peer_id, self.vectors)
            return [VectorDropped(peer_id)]
        fds.append(fd)
        vector = len(fds) - 1
        if peer_id == self.own_id:
            return [OwnVectorConnected(vector)]
        return [PeerVectorConnected(peer_id, vector)]

    def _on_disconnect(self, peer_id: int, fd: int) -> list[Event]:
        if peer_id == self.own_id:
            raise IvshmemProtocolError(f"ivshmem server sent disconnect of own id {_hex(peer_id)}")
        fds = self.eventfds.pop(peer_id, None)
        if fds is None:
            # QEMU grows its peer table to the id and closes nothing: not an error.
            log.debug("ivshmem: disconnect of unknown peer 0x%x ignored", peer_id)
            return []
        close_fds(fds)
        return [PeerDisconnected(peer_id)]

    def _describe_invalid(self, kind: Kind, value: int) -> str:
        if kind is Kind.INVALID:
            return f"ivshmem server sent invalid message {_hex(value)} (valid: -0x1..0xffff)"
        if kind is Kind.SHM_NO_FD:
            return "ivshmem server sent shared memory message (-1) without fd"
        return f"ivshmem server sent {kind.value} message {_hex(value)} in phase {self.phase.value}"


def _hex(value: int) -> str:
    return f"-{-value:#x}" if value < 0 else f"{value:#x}"


# --------------------------------------------------------------------------- socket client


def drain_eventfd(fd: int) -> int:
    """Read an own eventfd (non-blocking): the rings since the last read, 0 if none.

    One read takes the whole counter and resets it (an eventfd without EFD_SEMAPHORE, as
    QEMU's server makes them); a ring that lands after it is seen at the next poll."""
    try:
        return os.eventfd_read(fd)
    except OSError:              # empty (EAGAIN), or closed under us
        return 0


class IvshmemClient:
    """A connected ivshmem client: the state machine plus its socket and eventfds.

    For a device model (``ivshmem-doorbell``) and the host peer alike::

        c = IvshmemClient.connect(path, vectors=2, timeout=5.0)   # blocks, bounded
        c.id, c.shm_fd, c.shm_size          # map BAR2 from shm_fd (MAP_SHARED)
        c.ring(dest, vector)                # doorbell write; False if not connected
        run loop: when c.fileno() is readable (or every tick), events = c.poll()
            Interrupt(vector, count)        # own vector rung -> raise MSI-X vector
            PeerVectorConnected / PeerDisconnected / ServerGone / ProtocolViolation
        c.close()
    """

    def __init__(self, sock: socket.socket, vectors: int = 1, path: str = "") -> None:
        self.path = path
        try:
            self.state = ClientState(vectors)
        except BaseException:
            sock.close()
            raise
        self._sock: socket.socket | None = sock
        self._reader = MessageReader()
        self._epoll: select.epoll | None = None
        self._own_registered = 0
        self._fd_vector: dict[int, int] = {}     # own eventfd -> vector, for epoll results
        self._timeout = 0.0
        sock.setblocking(False)
        try:
            self._epoll = select.epoll()
            self._epoll.register(sock.fileno(), select.EPOLLIN)
        except BaseException:
            self.close()
            raise

    # -- construction

    @classmethod
    def connect(cls, path: str, *, vectors: int = 1, timeout: float = DEFAULT_TIMEOUT,
                wait_own_vectors: bool = True) -> IvshmemClient:
        """Connect to the server at ``path`` and complete set-up within ``timeout`` seconds.

        Set-up ends when the shared memory arrived (QEMU's condition) and, with
        ``wait_own_vectors``, when the own eventfds arrived too (``vectors`` of them, or
        fewer if the server sends fewer).  Raises IvshmemConnectError,
        IvshmemProtocolError or IvshmemTimeoutError; nothing stays open on failure.
        """
        deadline = time.monotonic() + timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(timeout, 0.0))
            sock.connect(path)
        except OSError as e:
            sock.close()
            reason = e.strerror or str(e)
            raise IvshmemConnectError(f"cannot connect to ivshmem server at {path!r}: {reason}") from None
        client = cls(sock, vectors, path)
        client._timeout = timeout
        client.setup(deadline=deadline, wait_own_vectors=wait_own_vectors)
        return client

    @classmethod
    def from_socket(cls, sock: socket.socket, *, vectors: int = 1, timeout: float = DEFAULT_TIMEOUT,
                    wait_own_vectors: bool = True) -> IvshmemClient:
        """Run set-up over an already connected socket (tests: a socketpair)."""
        client = cls(sock, vectors, "<socket>")
        client._timeout = timeout
        client.setup(deadline=time.monotonic() + timeout, wait_own_vectors=wait_own_vectors)
        return client

    def setup(self, *, deadline: float, wait_own_vectors: bool = True) -> list[Event]:
        """Block until set-up is complete or ``deadline`` (time.monotonic) passes."""
        if not self._timeout:
            self._timeout = max(deadline - time.monotonic(), 0.0)
        events: list[Event] = []
        grace_until: float | None = None
        try:
            while True:
                events += self._read_server(setup=True)
                st = self.state
                if st.phase is Phase.READY:
                    own = st.own_vectors()
                    if not wait_own_vectors or own >= st.vectors:
                        break
                    if own > 0 and self._reader.partial == 0:
                        now = time.monotonic()
                        if grace_until is None:
                            grace_until = min(now + _OWN_VECTORS_GRACE, deadline)
                        if now >= grace_until:
                            break
                if self._reader.eof:
                    raise IvshmemProtocolError(
                        f"ivshmem server {self.path!r} closed the connection during set-up "
                        f"({self._progress()})")
                now = time.monotonic()
                limit = deadline if grace_until is None else grace_until
                if now >= limit:
                    if grace_until is not None:
                        break
                    raise IvshmemTimeoutError(
                        f"ivshmem server {self.path!r} did not complete set-up within "
                        f"{self._timeout:g} s ({self._progress()})")
                assert self._epoll is not None
                self._epoll.poll(limit - now)
        except BaseException:
            self.close()
            raise
        self._register_own_vectors()
        return events

    # -- properties

    @property
    def id(self) -> int:
        assert self.state.own_id is not None
        return self.state.own_id

    @property
    def vectors(self) -> int:
        return self.state.vectors

    @property
    def shm_fd(self) -> int:
        """The shared-memory fd; owned by this client (closed by close())."""
        return self.state.shm_fd

    @property
    def shm_size(self) -> int:
        return self.state.shm_size

    @property
    def peers(self) -> dict[int, int]:
        """Connected peers other than ourselves: id -> number of vectors we can ring."""
        own = self.state.own_id
        return {pid: len(fds) for pid, fds in sorted(self.state.eventfds.items()) if pid != own}

    @property
    def own_vectors(self) -> int:
        return self.state.own_vectors()

    @property
    def server_connected(self) -> bool:
        return self._sock is not None

    @property
    def closed(self) -> bool:
        return self.state.phase is Phase.CLOSED

    def own_eventfd(self, vector: int) -> int:
        """Own eventfd for ``vector`` (-1 if absent), for callers that watch it themselves."""
        return self.state.eventfd(self.id, vector)

    def map_shm(self) -> mmap.mmap:
        """A new MAP_SHARED read/write mapping of the whole shared memory."""
        if self.shm_fd < 0:
            raise IvshmemError("ivshmem client has no shared memory")
        if self.shm_size == 0:
            raise IvshmemError(f"ivshmem shared memory from {self.path!r} has size 0x0")
        return mmap.mmap(self.shm_fd, self.shm_size, mmap.MAP_SHARED,
                         mmap.PROT_READ | mmap.PROT_WRITE)

    # -- run loop

    def fileno(self) -> int:
        """One fd for select/poll: readable when poll() has something to do."""
        if self._epoll is None:
            raise IvshmemError("ivshmem client is closed")
        return self._epoll.fileno()

    def own_eventfds(self) -> dict[int, int]:
        """``{eventfd: vector}`` of the own vectors ``poll`` watches, for a caller that
        waits on them itself (a device's service thread) and reads a ring with
        :func:`drain_eventfd`.  They only ever grow (``poll`` adds those the server sends
        later) and stay open until ``close()``."""
        return dict(self._fd_vector)

    def server_fileno(self) -> int:
        """The server socket's fd (readable: call ``poll``), -1 once the server is gone."""
        return self._sock.fileno() if self._sock is not None else -1

    def poll(self, timeout: float = 0.0) -> list[Event]:
        """Service the server socket and own eventfds; wait at most ``timeout`` seconds.

        Never blocks longer than ``timeout`` (0 = just look).  Returns the events in
        the order they happened; rings come last, one Interrupt per rung vector.
        This is every doorbell's path on both sides (the device's thread, a host peer's
        ``wait``), so the common case -- one own eventfd readable -- costs one
        ``epoll_wait`` and one ``read``.
        """
        ep = self._epoll
        if ep is None:
            return []
        ready = ep.poll(timeout if timeout > 0 else 0)
        if not ready:
            return []
        events: list[Event] = []
        rung: list[tuple[int, int]] = []
        sock = self._sock
        sock_fd = sock.fileno() if sock is not None else -1
        server_ready = False
        fd_vector = self._fd_vector
        for fd, _mask in ready:
            if fd == sock_fd:
                server_ready = True
            else:
                vector = fd_vector.get(fd)
                if vector is not None:
                    rung.append((vector, fd))
        if server_ready:
            events += self._read_server(setup=False)
            self._register_own_vectors()
        if rung:
            if len(rung) > 1:
                rung.sort()
            own = self.state.eventfds.get(self.state.own_id, ())
            for vector, fd in rung:
                # A vector whose fd went away while the server's messages were read (the
                # fd number may even be reused) is not read.
                if vector < len(own) and own[vector] == fd:
                    count = drain_eventfd(fd)
                    if count:
                        events.append(Interrupt(vector, count))
        return events

    def ring(self, peer_id: int, vector: int = 0) -> bool:
        """Ring ``peer_id`` on ``vector``.  False (nothing done) if that is not connected.

        QEMU's doorbell ignores a write to an absent peer or vector; so does this.
        """
        fds = self.state.eventfds.get(peer_id)
        if fds is None or not 0 <= vector < len(fds):
            return False
        try:
            os.eventfd_write(fds[vector], 1)
        except BlockingIOError:
            pass        # counter saturated: the target has an interrupt pending anyway
        return True

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._reader.discard()
        self.state.close()

    def __enter__(self) -> IvshmemClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals

    def _read_server(self, *, setup: bool) -> list[Event]:
        if self._sock is None:
            return []
        events: list[Event] = []
        try:
            msgs = self._reader.read(self._sock)
        except IvshmemProtocolError:
            if setup:
                raise
            msgs = []
            self._reader.eof = True
        for i, (value, fds) in enumerate(msgs):
            try:
                events += self._feed_one(value, fds)
            except IvshmemProtocolError as e:
                if setup:
                    for _v, rest in msgs[i + 1:]:
                        close_fds(rest)
                    raise
                log.warning("%s", e)
                events.append(ProtocolViolation(str(e)))
        if self._reader.eof and not setup:
            self._drop_server()
            events.append(ServerGone())
        return events

    def _feed_one(self, value: int, fds: list[int]) -> list[Event]:
        if len(fds) > 1:
            close_fds(fds)
            count = f"more than {_FDS_PER_RECV}" if _FDS_DROPPED in fds else str(len(fds))
            raise IvshmemProtocolError(
                f"ivshmem server sent message {_hex(value)} with {count} fds (at most 1 allowed)")
        return self.state.feed(value, fds[0] if fds else -1)

    def _drop_server(self) -> None:
        if self._sock is None:
            return
        if self._epoll is not None:
            try:
                self._epoll.unregister(self._sock.fileno())
            except OSError:
                pass
        self._reader.discard()
        self._sock.close()
        self._sock = None

    def _register_own_vectors(self) -> None:
        """Watch own eventfds that arrived since the last call (they only ever grow)."""
        if self._epoll is None or self.state.own_id is None:
            return
        fds = self.state.eventfds.get(self.state.own_id, [])
        while self._own_registered < len(fds):
            vector = self._own_registered
            os.set_blocking(fds[vector], False)
            self._epoll.register(fds[vector], select.EPOLLIN)
            self._fd_vector[fds[vector]] = vector
            self._own_registered += 1

    def _progress(self) -> str:
        st = self.state
        parts = [f"phase {st.phase.value}"]
        if st.own_id is not None:
            parts.append(f"id {st.own_id:#x}")
        if st.phase is Phase.READY:
            parts.append(f"{st.own_vectors()} of {st.vectors} own vectors")
        return ", ".join(parts)

