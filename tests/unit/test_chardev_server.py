"""``-chardev socket,...,server=on``: output to one client at a time, dropped without one."""

from __future__ import annotations

import socket
import time

import pytest

from uvirt.backends.chardev import ServerSocketChardev
from uvirt.errors import OptionError
from uvirt.launch.backends import open_chardev
from uvirt.options import ChardevOpts


def _recv_until(s: socket.socket, want: bytes, timeout: float = 5.0) -> bytes:
    s.settimeout(timeout)
    data = b""
    while not data.endswith(want):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _wait_connected(ch: ServerSocketChardev, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not ch.connected:
        assert time.monotonic() < deadline, "the chardev never took the client"
        time.sleep(0.005)


def test_unix_server_without_wait_drops_then_delivers_and_reaccepts(tmp_path):
    path = tmp_path / "c.sock"
    ch = ServerSocketChardev(str(path), wait=False, label="-chardev x", chardev_id="c")
    try:
        ch.write(b"lost: nobody listens\n")
        a = socket.socket(socket.AF_UNIX)
        a.connect(str(path))
        _wait_connected(ch)
        ch.write(b"one\n")
        assert _recv_until(a, b"one\n") == b"one\n"
        a.close()
        deadline = time.monotonic() + 5
        while ch.connected and time.monotonic() < deadline:
            time.sleep(0.005)
        b = socket.socket(socket.AF_UNIX)
        b.connect(str(path))
        _wait_connected(ch)
        ch.write(b"two\n")
        assert _recv_until(b, b"two\n") == b"two\n"
        b.close()
    finally:
        ch.close()
    assert not path.exists()


def test_tcp_server_port_0_and_bad_port():
    ch = open_chardev(ChardevOpts("y", "socket", {"host": "127.0.0.1", "port": "0", "server": "on",
                                             "wait": "off"}, "-chardev y"))
    try:
        port = int(ch.desc.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port))
        _wait_connected(ch)
        ch.write(b"hello\n")
        assert _recv_until(s, b"hello\n") == b"hello\n"
        s.close()
    finally:
        ch.close()
    with pytest.raises(OptionError, match="^-chardev z: address resolution failed for 127.0.0.1:x: "):
        open_chardev(ChardevOpts("z", "socket", {"host": "127.0.0.1", "port": "x", "server": "on",
                                                 "wait": "off"}, "-chardev z"))
