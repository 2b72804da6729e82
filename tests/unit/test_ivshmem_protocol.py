"""ivshmem server protocol, client side: wire format, ClientState, IvshmemClient.

A fake server on the other end of a socketpair sends exactly the sequences the tests
want, well-formed or not.  Every test runs under ``no_fd_leak``: /proc/self/fd is
counted before and after.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvirt.errors import UvirtError
from uvirt.ivshmem.protocol import (
    ClientState,
    Interrupt,
    IvshmemClient,
    IvshmemConnectError,
    IvshmemProtocolError,
    IvshmemTimeoutError,
    Kind,
    MessageReader,
    OwnVectorConnected,
    PeerDisconnected,
    PeerVectorConnected,
    Phase,
    ProtocolViolation,
    ServerGone,
    SharedMemoryReceived,
    VectorDropped,
    classify,
    decode,
    encode,
    send_message,
)
from uvirt.testing.ivshmem import open_fds

SHM_SIZE = 0x10000


pytestmark = pytest.mark.usefixtures("no_fd_leak")


class FakeServer:
    """The server end of a socketpair; keeps the fds it sends so it can ring them."""

    def __init__(self) -> None:
        self.sock, self.client_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.fds: list[int] = []

    def eventfd(self) -> int:
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.fds.append(fd)
        return fd

    def memfd(self, size: int = SHM_SIZE) -> int:
        fd = os.memfd_create("fake-ivshmem", os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        self.fds.append(fd)
        return fd

    def send(self, value: int, fd: int = -1) -> None:
        send_message(self.sock, value, fd)

    def send_raw(self, data: bytes, fds: list[int] = ()) -> None:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
        self.sock.sendmsg([data], anc)

    def setup(self, own_id: int = 3, vectors: int = 2, peers: dict[int, int] | None = None) -> dict:
        """A well-formed set-up; returns {peer_id: [eventfds]} including own id."""
        self.send(0)
        self.send(own_id)
        self.send(-1, self.memfd())
        sent: dict[int, list[int]] = {}
        for pid, n in (peers or {}).items():
            for _ in range(n):
                fd = self.eventfd()
                sent.setdefault(pid, []).append(fd)
                self.send(pid, fd)
        for _ in range(vectors):
            fd = self.eventfd()
            sent.setdefault(own_id, []).append(fd)
            self.send(own_id, fd)
        return sent

    def client(self, vectors: int = 2, timeout: float = 1.0) -> IvshmemClient:
        sock, self.client_sock = self.client_sock, None
        return IvshmemClient.from_socket(sock, vectors=vectors, timeout=timeout)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.sock.close()
        if self.client_sock is not None:
            self.client_sock.close()


@pytest.fixture
def fake():
    f = FakeServer()
    yield f
    f.close()


# --------------------------------------------------------------------------- wire format


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
def test_encode_decode_roundtrip(value):
    data = encode(value)
    assert len(data) == 8
    assert decode(data) == value


def test_encode_is_little_endian():
    assert encode(1) == b"\x01" + b"\x00" * 7
    assert encode(-1) == b"\xff" * 8
    assert encode(0x1234) == b"\x34\x12" + b"\x00" * 6


def test_encode_wrong_range():
    with pytest.raises(ValueError, match="0x8000000000000000"):
        encode(1 << 63)


def test_decode_wrong_length():
    with pytest.raises(IvshmemProtocolError, match="0x8 bytes, got 0x3"):
        decode(b"abc")


def test_errors_are_uvirt_errors():
    assert issubclass(IvshmemProtocolError, UvirtError)
    assert issubclass(IvshmemTimeoutError, IvshmemProtocolError)
    assert issubclass(IvshmemConnectError, UvirtError)


@pytest.mark.parametrize("value, fd, kind", [
    (-2, -1, Kind.INVALID), (0x10000, 5, Kind.INVALID), (-1, 5, Kind.SHM),
    (-1, -1, Kind.SHM_NO_FD), (0, 5, Kind.CONNECT), (0xFFFF, -1, Kind.DISCONNECT),
])
def test_classify(value, fd, kind):
    assert classify(value, fd) is kind


def test_reader_reassembles_split_message_with_fd(fake):
    fd = fake.eventfd()
    fake.send_raw(encode(7)[:3], [fd])
    fake.send_raw(encode(7)[3:])
    reader = MessageReader()
    fake.client_sock.setblocking(False)
    msgs = reader.read(fake.client_sock)
    assert [(v, len(fds)) for v, fds in msgs] == [(7, 1)]
    os.close(msgs[0][1][0])


def test_reader_keeps_partial_message_across_reads(fake):
    fake.client_sock.setblocking(False)
    reader = MessageReader()
    fake.send_raw(encode(5)[:5])
    assert reader.read(fake.client_sock) == []
    assert reader.partial == 5
    fake.send_raw(encode(5)[5:] + encode(6))
    assert [v for v, _ in reader.read(fake.client_sock)] == [5, 6]


# --------------------------------------------------------------------------- ClientState


def memfd(size: int = SHM_SIZE) -> int:
    fd = os.memfd_create("t", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


def evfd() -> int:
    return os.eventfd(0, os.EFD_CLOEXEC)


def test_state_good_sequence():
    s = ClientState(vectors=2)
    assert s.feed(0) == [] and s.phase is Phase.ID
    assert s.feed(4) == [] and s.phase is Phase.SHM
    # QEMU accepts peer eventfds before the shared memory message.
    assert s.feed(1, evfd()) == [PeerVectorConnected(1, 0)]
    assert s.feed(-1, memfd()) == [SharedMemoryReceived(SHM_SIZE)]
    assert s.phase is Phase.READY
    assert s.feed(1, evfd()) == [PeerVectorConnected(1, 1)]
    assert s.feed(4, evfd()) == [OwnVectorConnected(0)]
    assert s.feed(4, evfd()) == [OwnVectorConnected(1)]
    assert s.feed(2, evfd()) == [PeerVectorConnected(2, 0)]
    assert s.feed(2) == [PeerDisconnected(2)]
    assert (s.own_id, s.own_vectors(), s.peer_vectors(1), s.peer_vectors(2)) == (4, 2, 2, 0)
    s.close()
    assert s.phase is Phase.CLOSED


def test_state_extra_vectors_closed():
    s = ClientState(vectors=1)
    s.feed(0)
    s.feed(0)
    s.feed(-1, memfd())
    assert s.feed(5, evfd()) == [PeerVectorConnected(5, 0)]
    assert s.feed(5, evfd()) == [VectorDropped(5)]
    assert s.feed(0, evfd()) == [OwnVectorConnected(0)]
    assert s.feed(0, evfd()) == [VectorDropped(0)]
    assert s.dropped_fds == 2 and s.peer_vectors(5) == 1
    s.close()


def test_state_zero_vectors_keeps_no_eventfds():
    s = ClientState(vectors=0)
    for value, fd in [(0, -1), (1, -1), (-1, memfd()), (0, evfd()), (1, evfd())]:
        s.feed(value, fd)
    assert s.eventfds == {} and s.dropped_fds == 2
    s.close()


@pytest.mark.parametrize("prefix, value, with_fd, match", [
    ([], 1, False, r"sent version 0x1, expecting 0x0"),
    ([], -1, False, r"sent version -0x1, expecting 0x0"),
    ([], 0, True, r"invalid version message \(fd attached\)"),
    ([0], 3, True, r"invalid ID message \(fd attached\)"),
    ([0], 0x10000, False, r"invalid ID message \(id 0x10000 not in 0x0..0xffff\)"),
    ([0], -1, False, r"invalid ID message \(id -0x1"),
    ([0, 3], -2, True, r"invalid message -0x2 \(valid: -0x1..0xffff\)"),
    ([0, 3], 0x10000, True, r"invalid message 0x10000"),
    ([0, 3], -1, False, r"shared memory message \(-1\) without fd"),
    ([0, 3], 3, False, r"disconnect of own id 0x3"),
])
def test_state_wrong_message(prefix, value, with_fd, match):
    s = ClientState(vectors=1)
    for v in prefix:
        s.feed(v)
    with pytest.raises(IvshmemProtocolError, match=match):
        s.feed(value, evfd() if with_fd else -1)
    s.close()


def test_state_wrong_second_shm():
    s = ClientState()
    s.feed(0)
    s.feed(0)
    s.feed(-1, memfd())
    with pytest.raises(IvshmemProtocolError, match=r"unexpected shared memory message \(second -1\)"):
        s.feed(-1, memfd())
    s.close()


def test_state_disconnect_of_unknown_peer_ignored():
    s = ClientState()
    s.feed(0)
    s.feed(0)
    s.feed(-1, memfd())
    assert s.feed(77) == []
    s.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([-3, -2, -1, 0, 1, 2, 0xFFFF, 0x10000]), st.booleans()),
                max_size=12))
def test_state_random_sequences_never_leak(msgs):
    before = open_fds()
    s = ClientState(vectors=2)
    for value, with_fd in [(0, False), (1, False)] + msgs:
        try:
            s.feed(value, evfd() if with_fd and value != -1 else (memfd() if with_fd else -1))
        except IvshmemProtocolError:
            pass
    s.close()
    assert open_fds() == before


# --------------------------------------------------------------------------- IvshmemClient over a socketpair


def test_client_good_sequence(fake):
    fake.setup(own_id=3, vectors=2, peers={1: 2, 7: 2})
    with fake.client(vectors=2) as c:
        assert c.id == 3
        assert c.peers == {1: 2, 7: 2}
        assert c.own_vectors == 2
        assert c.shm_size == SHM_SIZE
        with c.map_shm() as m:
            m[0:4] = b"abcd"
            assert os.pread(c.shm_fd, 4, 0) == b"abcd"


def test_client_receives_join_leave_after_setup(fake):
    fake.setup(own_id=0, vectors=1)
    with fake.client(vectors=1) as c:
        assert c.poll() == []
        fake.send(5, fake.eventfd())
        fake.send(5)
        assert select.select([c], [], [], 1.0)[0] == [c]
        assert c.poll(0.5) == [PeerVectorConnected(5, 0), PeerDisconnected(5)]
        assert c.peers == {}


def test_client_incoming_ring_without_threads(fake):
    sent = fake.setup(own_id=2, vectors=2)
    with fake.client(vectors=2) as c:
        assert select.select([c], [], [], 0)[0] == []
        os.eventfd_write(sent[2][1], 1)
        os.eventfd_write(sent[2][1], 1)
        assert select.select([c], [], [], 1.0)[0] == [c]
        assert c.poll() == [Interrupt(1, 2)]
        assert c.poll() == []


def test_client_ring_peer(fake):
    sent = fake.setup(own_id=2, vectors=2, peers={0: 2})
    with fake.client(vectors=2) as c:
        assert c.ring(0, 1) is True
        assert os.eventfd_read(sent[0][1]) == 1
        assert c.ring(0, 2) is False        # vector not connected: ignored, as QEMU
        assert c.ring(9, 0) is False        # no such peer
        assert c.ring(2, 0) is True         # ringing oneself is allowed
        assert c.poll(0.5) == [Interrupt(0, 1)]


def test_client_peer_leaving_while_being_rung(fake):
    sent = fake.setup(own_id=2, vectors=1, peers={0: 1})
    with fake.client(vectors=1) as c:
        # The peer is gone (server closed its copy) but the leave is not read yet:
        # the ring still lands in the eventfd, harmlessly.
        os.close(sent[0][0])
        fake.fds.remove(sent[0][0])
        assert c.ring(0, 0) is True
        fake.send(0)
        assert c.ring(0, 0) is True
        assert c.poll(0.5) == [PeerDisconnected(0)]
        assert c.ring(0, 0) is False
        assert c.peers == {}


def test_client_garbage_bytes(fake):
    fake.send_raw(b"garbage!")
    with pytest.raises(IvshmemProtocolError, match=r"sent version 0x2165676162726167, expecting 0x0"):
        fake.client()


def test_client_garbage_after_setup_is_reported_not_raised(fake):
    fake.setup(own_id=1, vectors=1)
    with fake.client(vectors=1) as c:
        fake.send_raw(b"\x00\x00\x00\x00\x00\x00\x00\x80")
        assert c.poll(0.5) == [ProtocolViolation(
            "ivshmem server sent invalid message -0x8000000000000000 (valid: -0x1..0xffff)")]
        fake.send(4, fake.eventfd())
        assert c.poll(0.5) == [PeerVectorConnected(4, 0)]


def test_client_wrong_version(fake):
    fake.send(1)
    with pytest.raises(IvshmemProtocolError, match="sent version 0x1, expecting 0x0"):
        fake.client()


def test_client_wrong_too_few_fds(fake):
    fake.send(0)
    fake.send(0)
    fake.send(-1)
    with pytest.raises(IvshmemProtocolError, match=r"\(-1\) without fd"):
        fake.client()


def test_client_wrong_too_many_fds(fake):
    fake.send(0)
    fake.send(0)
    fake.send_raw(encode(-1), [fake.memfd(), fake.eventfd()])
    with pytest.raises(IvshmemProtocolError, match=r"message -0x1 with 2 fds \(at most 1 allowed\)"):
        fake.client()


def test_client_wrong_fds_on_id_message(fake):
    fake.send(0)
    fake.send(0, fake.eventfd())
    fake.setup()     # plenty more queued, all of it must be closed too
    with pytest.raises(IvshmemProtocolError, match=r"invalid ID message \(fd attached\)"):
        fake.client()


def test_client_extra_vectors_closed(fake):
    fake.setup(own_id=0, vectors=3, peers={1: 3})
    with fake.client(vectors=2) as c:
        assert c.peers == {1: 2} and c.own_vectors == 2
        assert c.state.dropped_fds == 2


def test_client_server_closes_early(fake):
    fake.send(0)
    fake.sock.close()
    fake.sock = socket.socket()     # closed again by the fixture
    with pytest.raises(IvshmemProtocolError, match=r"closed the connection during set-up \(phase id\)"):
        fake.client()


def test_client_server_closes_mid_message(fake):
    fake.send(0)
    fake.send(5)
    fake.send_raw(b"\xff\xff\xff", [fake.memfd()])
    fake.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(IvshmemProtocolError, match=r"during set-up \(phase shm, id 0x5\)"):
        fake.client()


def test_client_server_silent_times_out(fake):
    fake.send(0)
    t0 = time.monotonic()
    with pytest.raises(IvshmemTimeoutError, match=r"did not complete set-up within 0.2 s \(phase id\)"):
        fake.client(timeout=0.2)
    assert time.monotonic() - t0 < 5.0          # the timeout ended it, not a hang


def test_client_waits_for_own_vectors(fake):
    fake.send(0)
    fake.send(0)
    fake.send(-1, fake.memfd())
    t0 = time.monotonic()
    with pytest.raises(IvshmemTimeoutError, match=r"\(phase ready, id 0x0, 0 of 1 own vectors\)"):
        fake.client(vectors=1, timeout=0.2)
    assert time.monotonic() - t0 < 5.0


def test_client_fewer_own_vectors_than_configured(fake):
    fake.setup(own_id=0, vectors=1)
    t0 = time.monotonic()
    with fake.client(vectors=4, timeout=10.0) as c:
        assert c.own_vectors == 1
    assert time.monotonic() - t0 < 5.0          # set-up ended without waiting the timeout out


def test_client_disconnect_of_own_id_in_setup(fake):
    fake.send(0)
    fake.send(6)
    fake.send(6)
    with pytest.raises(IvshmemProtocolError, match="disconnect of own id 0x6"):
        fake.client()


def test_client_disconnect_of_own_id_after_setup(fake):
    fake.setup(own_id=6, vectors=1)
    with fake.client(vectors=1) as c:
        fake.send(6)
        assert c.poll(0.5) == [ProtocolViolation("ivshmem server sent disconnect of own id 0x6")]
        assert c.own_vectors == 1


def test_client_server_gone_after_setup(fake):
    sent = fake.setup(own_id=1, vectors=1, peers={0: 1})
    with fake.client(vectors=1) as c:
        fake.sock.close()
        fake.sock = socket.socket()
        assert c.poll(0.5) == [ServerGone()]
        assert not c.server_connected
        # Existing peers keep working (spec: no more notifications, no reconnect).
        assert c.ring(0, 0) is True
        assert os.eventfd_read(sent[0][0]) == 1
        os.eventfd_write(sent[1][0], 1)
        assert c.poll(0.5) == [Interrupt(0, 1)]


def test_client_connect_no_server(tmp_path):
    with pytest.raises(IvshmemConnectError, match=r"cannot connect to ivshmem server at '.*nosock': "
                                                  r"No such file or directory"):
        IvshmemClient.connect(str(tmp_path / "nosock"), timeout=0.5)


def test_client_connect_server_never_talks(tmp_path):
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)
        with pytest.raises(IvshmemTimeoutError, match=r"within 0.2 s \(phase version\)"):
            IvshmemClient.connect(path, timeout=0.2)


def test_client_close_is_idempotent(fake):
    fake.setup(own_id=0, vectors=1)
    c = fake.client(vectors=1)
    c.close()
    c.close()
    assert c.poll() == [] and c.ring(0, 0) is False


def test_client_wrong_far_too_many_fds(fake):
    fake.send(0)
    fake.send(0)
    fake.send_raw(encode(-1), [fake.eventfd() for _ in range(20)])
    with pytest.raises(IvshmemProtocolError, match=r"message -0x1 with more than 16 fds"):
        fake.client()


def test_client_wrong_vector_count_closes_socket(fake):
    with pytest.raises(ValueError, match="vectors must be 0..64, not 65"):
        fake.client(vectors=65)
