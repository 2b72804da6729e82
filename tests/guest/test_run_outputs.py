"""What ``uvirt run`` writes: the trace file complete at every stop, and outputs that cannot
be written reported on one line (never a traceback)."""

from __future__ import annotations

import subprocess
import sys

import pytest

UVIRT = [sys.executable, "-m", "uvirt"]
BASE = ["run", "-machine", "pc", "-nodefaults", "-display", "none", "-no-reboot",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]


def uvirt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(UVIRT + list(args), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def one_line_error(r, pattern: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uvirt: ") and pattern in lines[0], r.stderr


def test_trace_file_holds_the_whole_run(tmp_path, firmware):
    trace = tmp_path / "trace.txt"
    r = uvirt(*BASE, "-device", "virtio-rng-pci", "-debugcon", f"file:{tmp_path / 'out.txt'}",
              "-uvirt-trace", str(trace), "-kernel", str(firmware("virtio_demo")))
    assert r.returncode == 1, r.stderr                    # isa-debug-exit 0: (0 << 1) | 1
    lines = trace.read_text().splitlines()
    assert lines[-1].startswith("stop debug_exit eip=")   # the very last event is there
    pfn = next(i for i, line in enumerate(lines) if "<- 0x200" in line and line.startswith("pio 0xc008"))
    after = lines[pfn + 1:]
    assert any(line.startswith("pio 0xc012 size=1 <- 0x7") for line in after)   # DRIVER_OK
    assert any(line.startswith("pio 0xc010 size=2 <- 0x0") for line in after)   # QUEUE_NOTIFY
    assert any(line.startswith("pio 0xc013 size=1 -> ") for line in after)      # ISR read


def test_trace_file_complete_after_a_guest_fault(tmp_path, firmware):
    src = tmp_path / "f.S"
    src.write_text('.include "uvirt.inc"\nmain:\n    PUTSN "before"\n    ud2\n')
    trace = tmp_path / "t.txt"
    r = uvirt(*BASE, "-uvirt-trace", str(trace), "-debugcon", "null", "-kernel", str(firmware(src)))
    assert r.returncode == 2
    assert trace.read_text().splitlines()[-1].startswith("stop triple_fault eip=")


@pytest.mark.parametrize("where, pattern", [
    ("/nonexistent/dir/t.txt", "-uvirt-trace /nonexistent/dir/t.txt: could not open: No such file or directory"),
    ("/dev/full", "-uvirt-trace /dev/full: No space left on device"),
])
def test_unwritable_trace_file(where, pattern, firmware):
    one_line_error(uvirt(*BASE, "-uvirt-trace", where, "-kernel", str(firmware("pci_enum"))), pattern)


def test_full_disk_under_debugcon(firmware):
    r = uvirt(*BASE, "-debugcon", "file:/dev/full", "-kernel", str(firmware("pci_enum")))
    one_line_error(r, "file:/dev/full: No space left on device")


def test_full_disk_on_stdio_chardev(firmware):
    with open("/dev/full", "w") as full:
        r = subprocess.run(UVIRT + BASE + ["-debugcon", "stdio", "-kernel", str(firmware("pci_enum"))],
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    one_line_error(r, "stdio: No space left on device")


def test_guest_output_into_a_closed_pipe_keeps_the_guests_status(firmware):
    import os
    rd, wr = os.pipe()
    os.close(rd)
    try:
        r = subprocess.run(UVIRT + BASE + ["-debugcon", "stdio", "-kernel", str(firmware("pci_enum"))],
                           stdout=wr, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(wr)
    assert (r.returncode, r.stderr) == (1, "")           # the guest's (0 << 1) | 1, as QEMU
