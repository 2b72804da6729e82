"""uvirt ivshmem-server against QEMU 7.2's ivshmem-doorbell: proof that we speak its protocol.

QEMU is a plain client of the server (hw/misc/ivshmem.c): it refuses to start the
guest unless set-up succeeds, so a guest that runs at all means version, id and
shared memory were accepted.  A Python peer watches QEMU join with its vectors and
leave; a second guest rings that peer and writes the shared memory.

The guests are multiboot images written byte by byte below (a.out kludge: header at
load address 0x100000, entry right after it; isa-debug-exit on 0xF4 ends QEMU with
status (value << 1) | 1).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time

import pytest

from uvirt.ivshmem.peer import IvshmemPeer, PeerJoin
from uvirt.ivshmem.server import IvshmemServer

QEMU = "qemu-system-x86_64"
QEMU_TIMEOUT = 10.0         # bounded; a normal run takes about 0.1 s

MULTIBOOT_MAGIC = 0x1BADB002
MULTIBOOT_AOUT_KLUDGE = 1 << 16     # header carries load/entry addresses
LOAD_ADDR = 0x100000
HEADER_SIZE = 32

# mov al, 0 ; out 0xf4, al ; then cli ; hlt ; jmp $-1 should the exit device be missing
EXIT_AT_ONCE = bytes([0xB0, 0x00, 0xE6, 0xF4, 0xFA, 0xF4, 0xEB, 0xFD])

IVSHMEM_SLOT = 4
PCI_CONFIG_ADDRESS = 0x80000000 | (IVSHMEM_SLOT << 11)
BAR0, BAR2 = 0x10, 0x18
DOORBELL = 0x0C                   # BAR0 register: bits 31:16 peer id, 15:0 vector
SHM_MAGIC = 0x12345678


def _pci_bar(reg: int) -> bytes:
    """eax = BAR ``reg`` of 00:04.0 with the flag bits masked off."""
    return (b"\xB8" + struct.pack("<I", PCI_CONFIG_ADDRESS | reg)   # mov eax, CONFIG_ADDRESS
            + b"\x66\xBA\xF8\x0C" + b"\xEF"                        # mov dx, 0xcf8 ; out dx, eax
            + b"\x66\xBA\xFC\x0C" + b"\xED"                        # mov dx, 0xcfc ; in eax, dx
            + b"\x83\xE0\xF0")                                     # and eax, ~0xf


def ring_and_write(peer_id: int, vector: int) -> bytes:
    """Write SHM_MAGIC at BAR2+0, ring (peer_id, vector) through BAR0 DOORBELL, exit."""
    return (_pci_bar(BAR0) + b"\x89\xC6"                                   # mov esi, eax
            + _pci_bar(BAR2) + b"\xC7\x00" + struct.pack("<I", SHM_MAGIC)  # mov [eax], imm32
            + b"\xC7\x46" + bytes([DOORBELL])                              # mov [esi+0xc], imm32
            + struct.pack("<I", (peer_id << 16) | vector)
            + EXIT_AT_ONCE)


def multiboot_image(code: bytes) -> bytes:
    flags = MULTIBOOT_AOUT_KLUDGE
    header = struct.pack("<8I", MULTIBOOT_MAGIC, flags, -(MULTIBOOT_MAGIC + flags) & 0xFFFFFFFF,
                         LOAD_ADDR,                 # header_addr
                         LOAD_ADDR,                 # load_addr
                         0,                         # load_end_addr: whole file
                         0,                         # bss_end_addr: no bss
                         LOAD_ADDR + HEADER_SIZE)   # entry_addr
    return header + code.ljust(16, b"\x90")


@pytest.fixture
def qemu():
    if shutil.which(QEMU) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{QEMU} not found and CI=true: differential tests must run")
        pytest.skip(f"{QEMU} not installed (scripts/setup --test installs it)")
    return QEMU


def run_qemu(qemu: str, sock: str, image: str, device_extra: str = "") -> subprocess.CompletedProcess:
    cmd = [qemu, "-machine", "pc", "-accel", "tcg", "-m", "128M", "-nodefaults", "-nographic",
           "-display", "none", "-no-reboot",
           "-chardev", f"socket,path={sock},id=c0",
           "-device", f"ivshmem-doorbell,chardev=c0,vectors=2{device_extra}",
           "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
           "-kernel", image]
    return subprocess.run(cmd, capture_output=True, timeout=QEMU_TIMEOUT)


@pytest.fixture
def server(tmp_path):
    sock = str(tmp_path / "ivshmem.sock")
    srv = IvshmemServer(sock, size=1 << 20, vectors=2).start()
    srv.start_thread()
    yield srv
    srv.close()


def test_multiboot_image_is_48_bytes():
    img = multiboot_image(EXIT_AT_ONCE)
    assert len(img) == 48
    assert sum(struct.unpack("<3I", img[:12])) & 0xFFFFFFFF == 0


@pytest.mark.qemu
def test_qemu_joins_and_leaves(qemu, server, tmp_path):
    image = tmp_path / "exit.img"
    image.write_bytes(multiboot_image(EXIT_AT_ONCE))
    with IvshmemPeer.connect(server.socket_path, vectors=2, timeout=2.0) as peer:
        assert peer.id == 0
        result = run_qemu(qemu, server.socket_path, str(image))
        assert result.returncode == 1, result.stderr.decode()   # guest wrote 0 to 0xF4
        assert result.stderr == b""
        assert peer.wait_peer_joined(timeout=1.0) == PeerJoin(1, 2)
        assert peer.wait_peer_left(timeout=1.0) == 1
        assert peer.peers == {}
    assert server.peer_ids == [] or _settles(lambda: server.peer_ids == [])


@pytest.mark.qemu
def test_qemu_guest_rings_peer_and_writes_shared_memory(qemu, server, tmp_path):
    with IvshmemPeer.connect(server.socket_path, vectors=2, timeout=2.0) as peer:
        image = tmp_path / "ring.img"
        image.write_bytes(multiboot_image(ring_and_write(peer.id, 1)))
        result = run_qemu(qemu, server.socket_path, str(image), f",addr={IVSHMEM_SLOT:#x}")
        assert result.returncode == 1, result.stderr.decode()
        assert peer.wait(timeout=1.0) == 1
        assert peer.wait(timeout=0.05) is None
        assert struct.unpack_from("<I", peer.memory, 0)[0] == SHM_MAGIC
        assert peer.wait_peer_joined(timeout=1.0) == PeerJoin(1, 2)
        assert peer.wait_peer_left(timeout=1.0) == 1


@pytest.mark.qemu
def test_qemu_refuses_server_with_wrong_version(qemu, tmp_path):
    """Cross-check of a client rule: QEMU rejects version != 0 as our client does."""
    import socket

    from uvirt.ivshmem.protocol import send_message

    sock = str(tmp_path / "bad.sock")
    image = tmp_path / "exit.img"
    image.write_bytes(multiboot_image(EXIT_AT_ONCE))
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(sock)
        listener.listen(1)
        proc = subprocess.Popen(
            [qemu, "-machine", "pc", "-accel", "tcg", "-nodefaults", "-display", "none",
             "-chardev", f"socket,path={sock},id=c0", "-device", "ivshmem-doorbell,chardev=c0",
             "-kernel", str(image)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            listener.settimeout(QEMU_TIMEOUT)
            conn, _ = listener.accept()
            with conn:
                send_message(conn, 1)
                _, err = proc.communicate(timeout=QEMU_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 1
    assert b"server sent version 1, expecting 0" in err


def _settles(pred, timeout: float = 10.0) -> bool:      # generous: a loaded host is slow
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        time.sleep(0.01)
    return pred()
