"""QMP monitors and chardevs in server mode beside a running guest, as QEMU users write
them: ``-qmp unix:SOCK,server=on,wait=off``, ``-qmp tcp:127.0.0.1:PORT,server=on,wait=off``,
``-chardev socket,id=c,path=SOCK,server=on[,wait=off]`` (also host=/port=).  Each case
runs the same command line on QEMU 7.2 (where it is installed) and on ``uvirt run``."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time

import pytest

from uvirt.testing.qemu import BASE_ARGS, qemu_available, qemu_binary, qemu_screendumps

UVIRT = [sys.executable, "-m", "uvirt", "run"]
GPU = ("-device", "virtio-gpu-pci")


def _emulators():
    out = [pytest.param(UVIRT, id="uvirt")]
    if qemu_available():
        out.append(pytest.param([qemu_binary()], id="qemu"))
    return out


def _connect(family, address, timeout: float = 20.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.connect(address)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _running(argv):
    """The emulator as a child process (stdout, stderr piped), killed if it still runs
    when the block ends."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _qmp_exiting(f, emulator, command: str) -> None:
    """A command after which the emulator exits: uvirt answers it; QEMU's answer can be
    lost (it exits right after; over TCP to a reset)."""
    try:
        assert _qmp(f, command) == {"return": {}}
    except (ConnectionResetError, json.JSONDecodeError):
        assert emulator != UVIRT


def _qmp(f, command: str, **args) -> dict:
    f.write(json.dumps({"execute": command, **({"arguments": args} if args else {})}) + "\n")
    f.flush()
    while True:
        reply = json.loads(f.readline())
        if "event" not in reply:
            return reply


def test_uvirt_qmp_screendump_equals_qemus(firmware):
    """The same QMP session (unix server socket, wait=off) against both emulators while
    the guest sits halted: the screendumps are byte for byte the same."""
    image = firmware("gpu_commands", defines={"SCREENDUMP": 1})
    ures, udumps = qemu_screendumps(image, GPU, emulator=UVIRT, formats=("ppm",))
    assert ures.exit_code == 0 and "SCREEN READY" in ures.debugcon, ures.stderr
    if not qemu_available():
        pytest.skip("qemu-system-x86_64 not installed: uvirt side checked only")
    qres, qdumps = qemu_screendumps(image, GPU, formats=("ppm",))
    assert udumps["ppm"] == qdumps["ppm"]


@pytest.mark.parametrize("emulator", _emulators())
def test_qmp_tcp_server(emulator, firmware, tmp_path):
    image = firmware("gpu_commands", defines={"SCREENDUMP": 1})
    port = _free_port()
    con = tmp_path / "con.txt"
    with _running([*emulator, *BASE_ARGS, *GPU, "-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off",
                   "-debugcon", f"file:{con}", "-kernel", str(image)]) as proc:
        s = _connect(socket.AF_INET, ("127.0.0.1", port))
        f = s.makefile("rw")
        greeting = json.loads(f.readline())
        assert greeting["QMP"]["version"]["qemu"] == {"micro": greeting["QMP"]["version"]["qemu"]["micro"],
                                                      "minor": 2, "major": 7}
        assert _qmp(f, "qmp_capabilities") == {"return": {}}
        assert _qmp(f, "query-status")["return"]["status"] == "running"
        bad = _qmp(f, "screendump", filename=str(tmp_path / "x.ppm"), device="nosuch")
        assert bad["error"] == {"class": "DeviceNotFound", "desc": "Device 'nosuch' not found"}
        _qmp_exiting(f, emulator, "quit")
        s.close()
        proc.communicate(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize("emulator", _emulators())
@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_chardev_server_wait_on(kind, emulator, firmware, tmp_path):
    """``-chardev socket,...,server=on`` (wait=on): the emulator waits for a client before
    the guest starts, then the client receives everything the guest writes."""
    image = firmware("pci_enum")
    if kind == "unix":
        path = tmp_path / "con.sock"
        spec, family, address = f"socket,id=c,path={path},server=on", socket.AF_UNIX, str(path)
    else:
        port = _free_port()
        spec, family, address = (f"socket,id=c,host=127.0.0.1,port={port},server=on", socket.AF_INET,
                                 ("127.0.0.1", port))
    with _running([*emulator, *BASE_ARGS, "-chardev", spec, "-device", "isa-debugcon,iobase=0xe9,chardev=c",
                   "-kernel", str(image)]) as proc:
        s = _connect(family, address)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        _, err = proc.communicate(timeout=30)
    assert b"waiting for connection on: disconnected:" in err
    assert proc.returncode == 1
    assert data.startswith(b"BOOT eax=2badb002\n") and b"00:00.0" in data


@pytest.mark.parametrize("emulator", _emulators())
def test_chardev_server_wait_off_without_client(emulator, firmware, tmp_path):
    """wait=off and nobody connects: the guest runs and ends; its output is dropped."""
    image = firmware("pci_enum")
    path = tmp_path / "con.sock"
    proc = subprocess.run([*emulator, *BASE_ARGS, "-chardev", f"socket,id=c,path={path},server=on,wait=off",
                           "-device", "isa-debugcon,iobase=0xe9,chardev=c", "-kernel", str(image)],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert proc.returncode == 1, proc.stderr


@pytest.mark.parametrize("emulator", _emulators())
def test_qmp_system_reset_ends_a_no_reboot_run(emulator, firmware, tmp_path):
    image = firmware("gpu_commands", defines={"SCREENDUMP": 1})
    path = tmp_path / "qmp.sock"
    with _running([*emulator, *BASE_ARGS, *GPU, "-qmp", f"unix:{path},server=on,wait=off",
                   "-kernel", str(image)]) as proc:
        s = _connect(socket.AF_UNIX, str(path))
        f = s.makefile("rw")
        f.readline()
        _qmp(f, "qmp_capabilities")
        _qmp_exiting(f, emulator, "system_reset")
        s.close()
        proc.communicate(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize("emulator", _emulators())
def test_qmp_stop_holds_the_guest_until_cont(emulator, firmware, tmp_path):
    """A guest printing dots: after QMP ``stop`` no more arrive, after ``cont`` they do."""
    src = tmp_path / "dots.S"
    src.write_text('.include "uvirt.inc"\nmain:\n    PUTC \'.\'\n    PUTC 10\n    mov ecx, 20000\n'
                   'spin:\n    dec ecx\n    jnz spin\n    jmp main\n')
    image = firmware(src)
    path, con = tmp_path / "qmp.sock", tmp_path / "con.txt"
    argv = [*emulator, *BASE_ARGS, "-qmp", f"unix:{path},server=on,wait=off",
            "-debugcon", f"file:{con}", "-kernel", str(image),
            *(["-uvirt-timeout", "60"] if emulator == UVIRT else [])]

    def size() -> int:
        return con.stat().st_size if con.exists() else 0

    def grows(timeout: float = 10.0) -> bool:
        start, deadline = size(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            if size() > start + 10:
                return True
            time.sleep(0.02)
        return False

    with _running(argv) as proc:
        s = _connect(socket.AF_UNIX, str(path))
        f = s.makefile("rw")
        f.readline()
        _qmp(f, "qmp_capabilities")
        assert grows()
        assert _qmp(f, "stop") == {"return": {}}
        assert _qmp(f, "query-status")["return"]["status"] == "paused"
        time.sleep(0.3)
        held = size()
        time.sleep(0.5)
        assert size() == held
        assert _qmp(f, "cont") == {"return": {}}
        assert _qmp(f, "query-status")["return"]["running"] is True
        assert grows()
        try:
            _qmp(f, "quit")
        except (ConnectionResetError, json.JSONDecodeError):
            pass
        s.close()
        proc.communicate(timeout=30)
    assert proc.returncode == 0
