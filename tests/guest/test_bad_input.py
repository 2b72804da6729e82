"""Bad input through the real command line: each a one-line error or a clean stop with a
reason and a non-zero exit code, never a Python traceback."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

UVIRT = [sys.executable, "-m", "uvirt"]
BASE = ["run", "-machine", "pc", "-accel", "tcg", "-m", "128M", "-nodefaults", "-nographic",
        "-display", "none", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]


def uvirt(*args, timeout=30):
    return subprocess.run(UVIRT + list(args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def one_line_error(r, pattern):
    assert r.returncode == 1, r
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("uvirt: ")
    assert pattern in lines[0], lines[0]


def guest(tmp_path, firmware, body: str, name="g") -> Path:
    src = tmp_path / f"{name}.S"
    src.write_text(f'.include "uvirt.inc"\nmain:\n{body}\n    ret\n')
    return firmware(src)


def test_file_that_is_no_multiboot_image(tmp_path):
    p = tmp_path / "junk.bin"
    p.write_bytes(b"\x7fELF" + os.urandom(200))
    one_line_error(uvirt(*BASE, "-kernel", str(p)), "not a multiboot image (no header with magic 0x1badb002")


def test_truncated_image(tmp_path, firmware):
    p = tmp_path / "t.bin"
    p.write_bytes(firmware("pci_enum").read_bytes()[:64])
    one_line_error(uvirt(*BASE, "-kernel", str(p)), "truncated: 0x")


def test_image_that_does_not_fit_ram(tmp_path, firmware):
    img = bytearray(firmware("pci_enum").read_bytes())
    img[24:28] = (0x08000000).to_bytes(4, "little")       # bss_end_addr = 128 MiB
    p = tmp_path / "big.bin"
    p.write_bytes(img)
    one_line_error(uvirt(*BASE, "-m", "64M", "-kernel", str(p)), "does not fit in RAM of 0x4000000 bytes")


def test_missing_kernel_file():
    one_line_error(uvirt(*BASE, "-kernel", "/nonexistent/k.bin"),
                   "could not load kernel '/nonexistent/k.bin': No such file or directory")


def test_unknown_device(firmware):
    one_line_error(uvirt(*BASE, "-device", "virtio-frobnicator", "-kernel", str(firmware("pci_enum"))),
                   "-device virtio-frobnicator: 'virtio-frobnicator' is not a valid device model name")


@pytest.mark.parametrize("dev,msg", [
    ("isa-debug-exit,iobase=xyz", "Parameter 'iobase' expects integer"),
    ("isa-debug-exit,iosize=0x100000000", "Parameter 'iosize' expects uint32_t"),
    ("isa-debug-exit,frob=1", "Property 'isa-debug-exit.frob' not found"),
])
def test_bad_property_value(firmware, dev, msg):
    one_line_error(uvirt(*BASE, "-device", dev, "-kernel", str(firmware("pci_enum"))), msg)


def test_unknown_option(firmware):
    one_line_error(uvirt(*BASE, "-frobnicate", "-kernel", str(firmware("pci_enum"))),
                   "-frobnicate: invalid option")


def stopped(r, code, reason):
    assert r.returncode == code, r
    assert "Traceback" not in r.stderr
    assert reason in r.stderr
    assert "eip=" in r.stderr and "insn:" in r.stderr


def test_guest_jumping_into_unmapped_memory(tmp_path, firmware):
    img = guest(tmp_path, firmware, "    mov eax, 0xdead0000\n    jmp eax")
    r = uvirt(*BASE, "-kernel", str(img))
    stopped(r, 2, "guest fault: instruction fetch from unmapped memory at eip=0xdead0000")


def test_guest_that_spins_forever_hits_the_wall_clock_budget(tmp_path, firmware):
    img = guest(tmp_path, firmware, "spin:\n    jmp spin")
    t = time.monotonic()
    r = uvirt(*BASE, "-uvirt-timeout", "1", "-kernel", str(img))
    assert time.monotonic() - t < 10
    stopped(r, 124, "wall-clock budget exhausted")
    assert "jmp 0x" in r.stderr


def test_guest_that_spins_forever_hits_the_instruction_budget(tmp_path, firmware):
    img = guest(tmp_path, firmware, "spin:\n    jmp spin")
    r = uvirt(*BASE, "-uvirt-max-insns", "100000", "-kernel", str(img))
    stopped(r, 124, "instruction budget exhausted")


def test_invalid_opcode_is_a_fault_with_disassembly(tmp_path, firmware):
    img = guest(tmp_path, firmware, "    ud2")
    r = uvirt(*BASE, "-kernel", str(img))
    stopped(r, 2, "#UD invalid opcode")
    assert "ud2" in r.stderr


def test_ctrl_c_stops_a_running_guest_cleanly(tmp_path, firmware):
    img = guest(tmp_path, firmware, '    PUTSN "spinning"\nspin:\n    jmp spin')
    p = subprocess.Popen(UVIRT + BASE + ["-debugcon", "stdio", "-uvirt-timeout", "60", "-kernel", str(img)],
                         stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().startswith("BOOT ")
    assert p.stdout.readline() == "spinning\n"          # the guest runs: now interrupt it
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 130
    assert err.startswith("uvirt: guest stopped: interrupted (SIGINT) at eip=")
    assert "Traceback" not in err


def test_ctrl_c_during_start_up_says_the_same(tmp_path):
    """Interrupted while loading the kernel (a FIFO nobody writes to): the same stop
    reason, the same status, before any guest ran."""
    fifo = tmp_path / "kernel.fifo"
    os.mkfifo(fifo)
    p = subprocess.Popen(UVIRT + BASE + ["-kernel", str(fifo)], stderr=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while True:                                          # wait until uvirt has it open
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.poll() else ""
            time.sleep(0.01)                             # polling a condition, not a fixed wait
    try:
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
    finally:
        os.close(writer)
    assert p.returncode == 130
    assert err == "uvirt: interrupted (SIGINT)\n"
