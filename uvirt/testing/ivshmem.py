"""The host side of the ivshmem guest programs (firmware/ivshmem_*.S), for QEMU and uvirt alike.

Command lines name their host objects by placeholder; ``ivshmem_env(args, tmpdir)``
makes them real for one run and plays the host:

``IVSHMEM_FILE``    a memory-backend-file path, created and filled with the host pattern
                    (byte i = (i*13+7) & 0xff) at the size the ``size=`` option gives.
``IVSHMEM_SOCKET``  an ivshmem server socket: a fresh ``IvshmemServer`` (vectors 2, the
                    size from the ``-device``/``-object`` is irrelevant: 1 MiB) and a host
                    peer that joins first (id 0, so the guest is peer 1), fills the memory
                    with the host pattern and answers the guest's handshake: on a ring of
                    its vector 0 it checks ``cafe0001`` at 0x10, writes ``beef0002`` at 0x14
                    and rings the guest's vector 1.

``env.host_log`` lists what the host saw (join, ring, marker, leave): the same for QEMU
and uvirt.  ``env.memory()`` is the memory after the run (file or server memory) and
``expected_memory(size)`` what it must be byte for byte once the guest ran.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from uvirt.child import run_in_child
from uvirt.ivshmem.peer import IvshmemPeer
from uvirt.ivshmem.server import IvshmemServer

FILE = "IVSHMEM_FILE"
SOCKET = "IVSHMEM_SOCKET"
SHM_SIZE = 1 << 20
VECTORS = 2
GUEST_AREA = 0x10000
HANDSHAKE_MARKER = 0xCAFE0001
HANDSHAKE_REPLY = 0xBEEF0002
HOST_TIMEOUT = 20.0
#: How long the host thread still waits for the guest's leave once the emulator exited.
LEAVE_GRACE = 5.0


def open_fds() -> int:
    """How many file descriptors this process holds (the ivshmem tests' leak checks)."""
    return len(os.listdir("/proc/self/fd"))


def as_nobody(fn) -> str:
    """``fn()`` in a forked child with uid/gid 65534 (run as root) -> its string result:
    how the permission tests see a socket or directory as an unprivileged user would."""
    def child() -> str:
        os.setgid(65534)
        os.setuid(65534)
        return fn()
    return run_in_child(child)


def host_pattern(size: int) -> bytes:
    block = bytes(((i * 13 + 7) & 0xFF) for i in range(256))
    return (block * (size // 256 + 1))[:size]


def expected_memory(size: int, *, handshake: bool = False) -> bytes:
    """The memory after ivs_mem_guest (and the doorbell handshake) on the host pattern."""
    mem = bytearray(host_pattern(size))
    for k in range(1024):
        mem[GUEST_AREA + 4 * k:GUEST_AREA + 4 * k + 4] = (0xC0DE0000 + k).to_bytes(4, "little")
    mem[size - 1] = 0xA5
    if handshake:
        mem[0x10:0x14] = HANDSHAKE_MARKER.to_bytes(4, "little")
        mem[0x14:0x18] = HANDSHAKE_REPLY.to_bytes(4, "little")
    return bytes(mem)


def _size_of(arg: str) -> int:
    from uvirt.options.values import parse_size
    for part in arg.split(","):
        if part.startswith("size="):
            return parse_size(part[5:], option="-object", key="size")
    return SHM_SIZE


@dataclass
class IvshmemEnv:
    args: tuple[str, ...]
    file: Path | None = None
    server: IvshmemServer | None = None
    peer: IvshmemPeer | None = None
    host_log: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None
    final_memory: bytes | None = None

    def memory(self) -> bytes:
        if self.final_memory is not None:
            return self.final_memory
        if self.file is not None:
            return self.file.read_bytes()
        assert self.peer is not None and self.peer.memory is not None
        return bytes(self.peer.memory)


def _until(stop: threading.Event, wait, grace: float = 0.0):
    """``wait(timeout)`` in short slices until it answers, ``stop`` is set or time is up.

    ``grace``: how long to go on waiting once ``stop`` is set.  ``stop`` comes when the
    emulator has exited, and what its exit causes (the server seeing the guest leave)
    is still on its way then: under load the host thread would otherwise miss it.
    """
    deadline = time.monotonic() + HOST_TIMEOUT
    stopped_at = None
    while time.monotonic() < deadline:
        if stop.is_set():
            if stopped_at is None:
                stopped_at = time.monotonic()
            elif time.monotonic() - stopped_at >= grace:
                break
        got = wait(0.02)
        if got is not None:
            return got
    return None


def _host(env: IvshmemEnv, stop: threading.Event) -> None:
    peer = env.peer
    assert peer is not None
    log = env.host_log
    # Slices must not cut a join short while its eventfds are still arriving (under load
    # the first slice can end between a peer's two vectors); a partial one only at the end.
    join = _until(stop, lambda t: peer.wait_peer_joined(timeout=t, partial=False))
    if join is None:
        join = peer.wait_peer_joined(timeout=0.0)
    if join is None:
        log.append("HOST no guest joined")
        return
    log.append(f"HOST join {join.peer_id:x} vectors {join.vectors}")
    rung = _until(stop, lambda t: peer.wait(vector=0, timeout=t))
    if rung is None:
        log.append("HOST not rung")
        return
    assert peer.memory is not None
    marker = int.from_bytes(peer.memory[0x10:0x14], "little")
    log.append(f"HOST rung {rung} marker {marker:08x}")
    peer.memory[0x14:0x18] = HANDSHAKE_REPLY.to_bytes(4, "little")
    log.append(f"HOST ring {join.peer_id:x} 1 {peer.ring(join.peer_id, 1)}")
    left = _until(stop, lambda t: peer.wait_peer_left(join.peer_id, timeout=t), grace=LEAVE_GRACE)
    if left is not None:
        log.append(f"HOST left {left:x}")
    extra = peer.wait(timeout=0.0)
    log.append(f"HOST further rings {'none' if extra is None else extra}")


@contextmanager
def ivshmem_env(args, tmpdir):
    """``args`` with the ivshmem placeholders made real in ``tmpdir`` (see the module doc)."""
    tmp = Path(tmpdir)
    env = IvshmemEnv(tuple(args))
    out = []
    stop = threading.Event()
    try:
        for arg in args:
            if f"mem-path={FILE}" in arg:
                env.file = tmp / "ivshmem.mem"
                env.file.write_bytes(host_pattern(_size_of(arg)))
                arg = arg.replace(f"mem-path={FILE}", f"mem-path={env.file}")
            if f"path={SOCKET}" in arg:
                sock = str(tmp / "ivshmem.sock")
                env.server = IvshmemServer(sock, size=SHM_SIZE, vectors=VECTORS).start()
                env.server.start_thread()
                env.peer = IvshmemPeer.connect(sock, vectors=VECTORS, timeout=5.0)
                assert env.peer.memory is not None
                env.peer.memory[:] = host_pattern(env.peer.size)
                env.thread = threading.Thread(target=_host, args=(env, stop), daemon=True)
                env.thread.start()
                arg = arg.replace(f"path={SOCKET}", f"path={sock}")
            out.append(arg)
        env.args = tuple(out)
        yield env
    finally:
        stop.set()
        if env.thread is not None:
            env.thread.join(timeout=HOST_TIMEOUT)
        if env.peer is not None:
            if env.peer.memory is not None:
                env.final_memory = bytes(env.peer.memory)
            env.peer.close()
        if env.server is not None:
            env.server.close()


def has_placeholders(args) -> bool:
    return any(FILE in a or SOCKET in a for a in args)


__all__ = ["IvshmemEnv", "expected_memory", "has_placeholders", "host_pattern", "ivshmem_env"]
