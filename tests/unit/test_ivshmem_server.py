"""uvirt ivshmem-server: protocol behaviour (contrib/ivshmem-server), options, shutdown.

In-process servers run in a thread; the command line runs in a subprocess.  Every
test counts /proc/self/fd before and after.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from uvirt.ivshmem.peer import IvshmemPeer, PeerJoin
from uvirt.ivshmem.protocol import (
    IvshmemClient,
    IvshmemConnectError,
    MessageReader,
    PeerDisconnected,
    PeerVectorConnected,
    ServerGone,
    close_fds,
)
from uvirt.host_utils import pow2ceil
from uvirt.ivshmem.server import (
    IvshmemServer,
    IvshmemServerError,
    main,
    parse_size,
    parse_vectors,
)
from uvirt.testing.ivshmem import as_nobody

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("no_fd_leak")


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "ivshmem.sock")


@pytest.fixture
def server(sock_path):
    srv = IvshmemServer(sock_path, size=0x10000, vectors=2).start()
    srv.start_thread()
    yield srv
    srv.close()


def raw_messages(sock: socket.socket, count: int, timeout: float = 1.0) -> list[tuple[int, bool]]:
    """Read ``count`` raw messages as (value, had_fd), closing the fds."""
    reader = MessageReader()
    sock.setblocking(False)
    out: list[tuple[int, bool]] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        for value, fds in reader.read(sock, limit=count - len(out)):
            out.append((value, len(fds) == 1))
            close_fds(fds)
        if reader.eof:
            break
        if len(out) < count:
            time.sleep(0.005)
    reader.discard()
    return out


def raw_connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    s.connect(path)
    return s


def wait_until(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


# --------------------------------------------------------------------------- protocol


def test_message_order_newcomer_and_existing(server, sock_path):
    a = raw_connect(sock_path)
    # version, id, shm fd, then own eventfds (no other peers yet)
    assert raw_messages(a, 5) == [(0, False), (0, False), (-1, True), (0, True), (0, True)]
    b = raw_connect(sock_path)
    assert raw_messages(b, 7) == [(0, False), (1, False), (-1, True),
                                  (0, True), (0, True),      # existing peer's eventfds
                                  (1, True), (1, True)]      # then its own
    assert raw_messages(a, 2) == [(1, True), (1, True)]      # existing peer learns of b
    b.close()
    assert raw_messages(a, 1) == [(1, False)]                # disconnect: id without fd
    a.close()


def test_any_readable_event_disconnects(server, sock_path):
    a = raw_connect(sock_path)
    b = raw_connect(sock_path)
    raw_messages(a, 7)
    raw_messages(b, 7)
    b.sendall(b"x")         # clients never talk: any data means goodbye
    assert raw_messages(a, 1) == [(1, False)]
    assert wait_until(lambda: server.peer_ids == [0])
    a.close()
    b.close()


def test_id_allocation_counts_up_and_skips_ids_in_use(server, sock_path):
    a = raw_connect(sock_path)
    b = raw_connect(sock_path)
    assert raw_messages(a, 2)[1] == (0, False)
    assert raw_messages(b, 2)[1] == (1, False)
    a.close()
    assert wait_until(lambda: server.peer_ids == [1])
    c = raw_connect(sock_path)
    assert raw_messages(c, 2)[1] == (2, False)     # the counter moves on, 0 is not reused yet
    server._cur_id = 0xFFFF                         # 16-bit counter: wraps, skips 1 and 2
    d = raw_connect(sock_path)
    e = raw_connect(sock_path)
    f = raw_connect(sock_path)
    assert [raw_messages(s, 2)[1][0] for s in (d, e, f)] == [0xFFFF, 0, 3]
    for s in (b, c, d, e, f):
        s.close()


def test_two_peers_share_memory_and_ring_each_other(server, sock_path):
    with IvshmemPeer.connect(sock_path, vectors=2, timeout=10) as a, \
         IvshmemPeer.connect(sock_path, vectors=2, timeout=10) as b:
        assert (a.id, b.id) == (0, 1)
        assert a.size == b.size == 0x10000
        assert b.peers == {0: 2}
        assert a.wait_peer_joined(timeout=10) == PeerJoin(1, 2)
        assert a.peers == {1: 2}
        a.memory[0x100:0x105] = b"hello"
        assert b.memory[0x100:0x105] == b"hello"
        b.memory[-4:] = b"bye!"
        assert a.memory[-4:] == b"bye!"
        assert a.ring(1, 1) is True
        assert b.wait(timeout=10) == 1
        assert b.wait(timeout=0.05) is None        # consumed
        assert b.ring(0, 0) is True
        assert a.wait(vector=1, timeout=0.05) is None
        assert a.wait(vector=0, timeout=10) == 0
        assert a.ring(1, 2) is False                # no vector 2
    assert wait_until(lambda: server.peer_ids == [])


def test_peer_join_and_leave_are_remembered(server, sock_path):
    with IvshmemPeer.connect(sock_path, vectors=2, timeout=10) as a:
        with IvshmemPeer.connect(sock_path, vectors=2, timeout=10) as b:
            b.ring(a.id, 0)
        # join, ring and leave all happened before a looked: each is still reported
        assert a.wait_peer_joined(timeout=10) == PeerJoin(1, 2)
        assert a.wait(timeout=10) == 0
        assert a.wait_peer_left(timeout=10) == 1
        assert a.wait_peer_left(timeout=0.05) is None
        assert a.peers == {}


def test_a_join_still_arriving_is_not_cut_short_by_a_slice(server, sock_path):
    # A host loop that waits in short slices (uvirt.testing.ivshmem) must not take a join
    # whose second eventfd has not arrived yet as a one-vector join: under load a slice can
    # end between the two messages.  The messages are fed in by hand (sans-IO) for that.
    with IvshmemPeer.connect(sock_path, vectors=2, timeout=10) as a:
        a._record([PeerVectorConnected(5, 0)])
        assert a.wait_peer_joined(timeout=0.01, partial=False) is None
        a._record([PeerVectorConnected(5, 1)])
        assert a.wait_peer_joined(timeout=0.01, partial=False) == PeerJoin(5, 2)
        a._record([PeerVectorConnected(6, 0)])
        assert a.wait_peer_joined(timeout=0.01) == PeerJoin(6, 1)   # the default: the deadline ends it


def test_peer_with_fewer_vectors_than_server(server, sock_path):
    # The server has 2 vectors per peer; a peer with 1 keeps one eventfd of each peer
    # (itself included) and closes the other.  Connect returns once a peer has its own
    # first eventfd, so each count is read only after that peer has read every message
    # sent to it so far (reading pumps the socket), not at a moment the scheduler picks.
    with IvshmemPeer.connect(sock_path, vectors=1, timeout=10) as a:
        assert wait_until(lambda: a.peers == {} and a.client.state.dropped_fds == 1)
        with IvshmemPeer.connect(sock_path, vectors=1, timeout=10) as b:
            assert a.wait_peer_joined(timeout=10) == PeerJoin(1, 1)
            assert wait_until(lambda: b.peers == {0: 1} and b.client.state.dropped_fds == 2)
            assert wait_until(lambda: a.peers == {1: 1} and a.client.state.dropped_fds == 2)


def test_sigpipe_safe_when_a_peer_stopped_reading(server, sock_path):
    deaf = raw_connect(sock_path)
    raw_messages(deaf, 5)
    deaf.shutdown(socket.SHUT_RD)        # sends to it now fail with EPIPE
    with IvshmemPeer.connect(sock_path, vectors=2, timeout=10) as p:
        assert p.id == 1 and p.peers == {0: 2}
    raw = raw_connect(sock_path)
    raw.close()                          # gone before the server even replies
    # the server notices the close on its own schedule: wait until it has, so the next
    # peer's view is deterministic
    assert wait_until(lambda: server.peer_ids == [0])
    with IvshmemPeer.connect(sock_path, vectors=2, timeout=10) as p:
        assert p.peers == {0: 2}
    deaf.close()


# --------------------------------------------------------------------------- backing and set-up


def test_size_rounded_up_to_power_of_two(sock_path):
    with IvshmemServer(sock_path, size=3000, vectors=0) as srv:
        assert srv.size == 0x1000
        assert os.fstat(srv.shm_fd).st_size == 0x1000


def test_shm_dir_backing_is_unlinked(sock_path, tmp_path):
    d = tmp_path / "shmdir"
    d.mkdir()
    with IvshmemServer(sock_path, shm_dir=str(d), size=0x2000, vectors=1) as srv:
        srv.start_thread()
        assert list(d.iterdir()) == []
        with IvshmemPeer.connect(sock_path, timeout=10) as p:
            assert p.size == 0x2000


def test_shm_name_backing_uses_dev_shm(sock_path):
    name = f"uvirt-test-{os.getpid()}"
    try:
        with IvshmemServer(sock_path, shm_name=name, size=0x1000, vectors=1) as srv:
            srv.start_thread()
            assert os.stat(f"/dev/shm/{name}").st_size == 0x1000
            with IvshmemPeer.connect(sock_path, timeout=10) as p:
                p.memory[0:3] = b"abc"
            with open(f"/dev/shm/{name}", "rb") as f:
                assert f.read(3) == b"abc"
    finally:
        os.unlink(f"/dev/shm/{name}")


def test_bind_wrong_path_in_use(sock_path):
    with IvshmemServer(sock_path, size=0x1000):
        with pytest.raises(IvshmemServerError, match=r"cannot bind to .*: Address already in use"):
            IvshmemServer(sock_path, size=0x1000).start()
        assert os.path.exists(sock_path)      # the failed server did not unlink ours


def test_socket_path_appears_only_once_listening(sock_path, monkeypatch):
    """A client polling for the path must never meet ECONNREFUSED (bind-before-listen)."""
    seen_at_listen = []
    real_listen = socket.socket.listen

    def listen(sock, *a):
        seen_at_listen.append(os.path.exists(sock_path))
        return real_listen(sock, *a)

    monkeypatch.setattr(socket.socket, "listen", listen)
    with IvshmemServer(sock_path, size=0x1000):
        assert seen_at_listen == [False]
        socket.socket(socket.AF_UNIX).connect(sock_path)
        assert os.listdir(os.path.dirname(sock_path)) == [os.path.basename(sock_path)]
    assert not os.path.exists(sock_path)


def test_constructor_wrong_options(sock_path):
    with pytest.raises(IvshmemServerError, match=r"too many requested vectors 0x41 \(max is 64\)"):
        IvshmemServer(sock_path, vectors=65)
    with pytest.raises(IvshmemServerError, match="either a shm name"):
        IvshmemServer(sock_path, shm_name="x", shm_dir="/tmp")


def _try_connect(path: str) -> str:
    try:
        IvshmemClient.connect(path, timeout=0.5).close()
        return "connected"
    except IvshmemConnectError as e:
        return str(e)


def _try_bind(path: str) -> str:
    try:
        IvshmemServer(path, size=0x1000).start().close()
        return "bound"
    except IvshmemServerError as e:
        return str(e)


def test_no_permission_on_socket_path(server, sock_path, tmp_path):
    os.chmod(tmp_path, 0o755)
    os.chmod(sock_path, 0o600)
    if os.geteuid() == 0:
        msg = as_nobody(lambda: _try_connect(sock_path))
    else:
        os.chmod(sock_path, 0)
        msg = _try_connect(sock_path)
    assert msg == f"cannot connect to ivshmem server at {sock_path!r}: Permission denied"


def test_no_permission_to_create_socket(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    os.chmod(tmp_path, 0o755)
    path = str(ro / "s")
    msg = as_nobody(lambda: _try_bind(path)) if os.geteuid() == 0 else _try_bind(path)
    assert msg == f"cannot bind to {path}: Permission denied"


# --------------------------------------------------------------------------- shutdown


def test_close_disconnects_peers_and_cleans_up(sock_path):
    srv = IvshmemServer(sock_path, size=0x1000, vectors=1).start()
    srv.start_thread()
    with IvshmemPeer.connect(sock_path, timeout=10) as a, IvshmemPeer.connect(sock_path, timeout=10) as b:
        assert a.wait_peer_joined(timeout=10) == PeerJoin(b.id, 1)
        srv.close()
        assert not os.path.exists(sock_path)
        # QEMU's server frees its peers in order and tells the remaining ones.
        assert a.client.poll(0.5) + a.client.poll(0.1) == [ServerGone()]
        assert b.client.poll(0.5) + b.client.poll(0.1) == [PeerDisconnected(a.id), ServerGone()]
        # Peers keep their fds and memory after the server is gone.
        assert a.ring(b.id, 0) is True
        assert b.wait(timeout=10) == 0
    srv.close()     # idempotent


def test_close_tells_remaining_peers(sock_path):
    srv = IvshmemServer(sock_path, size=0x1000, vectors=1).start()
    a = raw_connect(sock_path)
    srv.step(0.5)
    b = raw_connect(sock_path)
    srv.step(0.5)
    raw_messages(a, 5)
    srv.close()
    # QEMU frees peers in order; each remaining one hears of the ones freed before it.
    assert raw_messages(b, 7)[-1] == (0, False)
    a.close()
    b.close()


# --------------------------------------------------------------------------- command line


def test_parse_size():
    assert parse_size("4M") == 4 << 20
    assert parse_size("1k") == 1024
    assert parse_size("1.5K") == 1536
    assert parse_size("65536") == 0x10000
    assert parse_size("2G") == 2 << 30
    assert parse_size("0x10") == 16                      # qemu_strtosz takes hex, as QEMU's -l
    for bad in ("", "x", "1Q", "-1", "1.5", "4M "):
        with pytest.raises(IvshmemServerError,
                           match=r"^Parameter 'shm_size' expects a non-negative number below 2\^64$"):
            parse_size(bad)
    with pytest.raises(IvshmemServerError, match="^Value '99999E' is out of range for parameter 'shm_size'$"):
        parse_size("99999E")


def test_parse_vectors():
    assert [parse_vectors(t) for t in ("0", "2", "0x10", "010", "64")] == [0, 2, 16, 8, 64]
    for bad in ("-1", "1_0", "", "0x"):
        with pytest.raises(IvshmemServerError, match="cannot parse n_vectors"):
            parse_vectors(bad)
    with pytest.raises(IvshmemServerError, match=r"too many requested vectors 0x41 \(max is 64\)"):
        parse_vectors("65")
    with pytest.raises(IvshmemServerError, match="cannot parse n_vectors 'two'"):
        parse_vectors("two")


def test_pow2ceil():
    assert [pow2ceil(n) for n in (0, 1, 2, 3, 4096, 4097)] == [1, 1, 2, 4, 4096, 8192]


@pytest.mark.parametrize("argv, message", [
    (["-n", "65", "-F"], "too many requested vectors 0x41 (max is 64)"),
    (["-v"], "cannot use verbose in daemon mode"),
    (["-l", "4X", "-F"], "Parameter 'shm_size' expects a non-negative number below 2^64"),
    (["-Z"], "unrecognized arguments: -Z"),
    (["-S"], "argument -S: expected one argument"),
])
def test_main_wrong_options(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1          # one line (the CLI's contract)


def test_main_help(capsys):
    assert main(["-h"]) == 0
    out = capsys.readouterr().out
    for opt in ("-S <unix-socket-path>", "-M <shm-name>", "-m <dir-name>", "-l <size>", "-n <nvectors>",
                "-F", "-p <pid-file>", "--memfd", "/tmp/ivshmem_socket"):
        assert opt in out


def _spawn(args: list[str], **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "uvirt.ivshmem.server", *args], env=env, **kw)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_foreground_shutdown_on_signal(sock_path, sig):
    proc = _spawn(["-F", "-v", "-S", sock_path, "--memfd", "-l", "64K", "-n", "2"])
    try:
        assert wait_until(lambda: os.path.exists(sock_path), timeout=10)
        with IvshmemPeer.connect(sock_path, vectors=2, timeout=10) as p:
            assert p.size == 0x10000 and p.id == 0
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=10)
            assert ServerGone() in p.client.poll(0.2)
        assert proc.returncode == 0, err
        assert not os.path.exists(sock_path)
        assert b"new peer id = 0" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_daemon_mode_writes_pidfile(sock_path, tmp_path):
    pidfile = tmp_path / "ivshmem.pid"
    shm_dir = tmp_path / "shm"
    shm_dir.mkdir()
    pid = None
    try:
        with open(tmp_path / "stderr", "w+b") as err:
            # The daemon keeps stdout/stderr (noclose, as QEMU): no pipes, or reading would hang.
            proc = _spawn(["-S", sock_path, "-p", str(pidfile), "-m", str(shm_dir), "-l", "8K"],
                          stdout=subprocess.DEVNULL, stderr=err)
            assert proc.wait(timeout=10) == 0      # the parent returns once the socket is bound
            assert err.read() == b""
        assert os.path.exists(sock_path)
        assert wait_until(pidfile.exists)
        assert wait_until(lambda: pidfile.read_text().endswith("\n"))
        pid = int(pidfile.read_text())
        with IvshmemPeer.connect(sock_path, timeout=10) as p:
            assert p.size == 0x2000
        os.kill(pid, signal.SIGTERM)
        assert wait_until(lambda: not os.path.exists(sock_path), timeout=10)
        assert wait_until(lambda: not pidfile.exists())
    finally:
        # A daemon that outlives a failed assertion would run forever: kill it, found by
        # its pidfile if the test never got that far.
        if pid is None and pidfile.exists() and pidfile.read_text().strip().isdigit():
            pid = int(pidfile.read_text())
        try:
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_the_host_loop_still_hears_a_leave_that_follows_the_emulators_exit():
    # ``stop`` is set once the emulator has exited; the server may not have told the host
    # peer of the guest's leave yet.  The leave's wait goes on for its grace period, the
    # others stop at once.
    from uvirt.testing.ivshmem import _until
    stop = threading.Event()
    stop.set()
    answers = iter([None, None, 7])
    assert _until(stop, lambda t: next(answers), grace=5.0) == 7
    calls = []
    assert _until(stop, lambda t: calls.append(t)) is None
    assert len(calls) == 1
