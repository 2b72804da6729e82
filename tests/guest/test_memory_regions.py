"""Issue 5: memory regions from guest code and from the host (more tests follow with the
guest programs).  Here: a host thread writing a shared region while the guest runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LEGACY = "virtio-rng-pci,disable-modern=on,memory-regions=64K:16K"
TRANSITIONAL = "virtio-rng-pci,memory-regions=64K:16K"


SPIN_GUEST = """
.include "uvirt.inc"
.include "virtio.inc"
main:
    mov eax, 4
    call vio_find
    mov edx, 0x1c
    call pci_read32
    and eax, 0xfffffff0
    mov esi, eax                            # region 1
    mov byte ptr [esi + 0x100], 0xb8        # mov eax, 1; ret  at +0x100
    mov dword ptr [esi + 0x101], 1
    mov byte ptr [esi + 0x105], 0xc3
    mov dword ptr [esi + 0x3ffc], 0x59444552
    mov ecx, 400000000
spin:
    lea eax, [esi + 0x100]
    call eax                                # the code the host rewrites
    cmp eax, 2
    je done
    mov ebx, [esi + 0x200]                  # the data the host hammers
    dec ecx
    jnz spin
    PUTSN "FAIL: still running the old code"
    ret
done:
    PUTSN "PASS: the host's new code ran"
    ret
"""

HOST_SIDE = """
import sys, threading, time
from uvirt.qemu_options import parse_argv
from uvirt.runner import build_machine
from uvirt.testing.qemu import BASE_ARGS
image, con = sys.argv[1], sys.argv[2]
m = build_machine(parse_argv([*BASE_ARGS, "-device", "{device}", "-debugcon", "file:" + con,
                              "-kernel", image])).machine
fn = [f for f in m.pci.functions.values() if getattr(f, "regions", None)][0]
shm = fn.regions[1][1]
def host():
    assert shm.wait_for(lambda v: v[0x3ffc:0x4000] == b"REDY", 20)
    end = time.monotonic() + 0.7
    n = 0
    while time.monotonic() < end:                 # data writes under the running guest
        shm.write(0x200, n.to_bytes(4, "little"))
        n += 1
    shm.write(0x101, (2).to_bytes(4, "little"))   # new code under the running guest
t = threading.Thread(target=host)
t.start()
stop = m.run(timeout=60)
t.join()
print(stop.summary())
m.close()
"""


@pytest.mark.parametrize("device", [LEGACY, TRANSITIONAL])
def test_host_writes_while_the_guest_runs(device, firmware, tmp_path):
    """SharedMemory.write from a host thread while the guest runs.  It drops translated
    code for the range it wrote; Unicorn's uc_ctl is not thread-safe, so calling it from
    the host thread under a running CPU crashed the process (SIGSEGV or "stack smashing
    detected", about one run in two).  The machine now posts the invalidation to the
    CPU thread.  In a subprocess, so a crash is a failure and not a lost worker."""
    src = tmp_path / "spin.S"
    src.write_text(SPIN_GUEST)
    image = firmware(src)
    if "disable-modern" not in device:
        # region 1 lives at BAR2 + 0x10000 on modern devices: same program, other BAR math
        src.write_text(SPIN_GUEST.replace("    mov edx, 0x1c\n    call pci_read32\n    and eax, 0xfffffff0\n",
                                          "    mov edx, 0x18\n    call pci_read32\n    and eax, 0xfffffff0\n"
                                          "    add eax, 0x10000\n"))
        image = firmware(src)
    con = tmp_path / "con.txt"
    script = HOST_SIDE.replace("{device}", device)
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", script, str(image), str(con)], capture_output=True,
                           text=True, timeout=120, cwd=Path(__file__).parents[2])
        assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
        assert "debug-exit" in r.stdout, r.stdout
        assert con.read_text().splitlines()[-1] == "PASS: the host's new code ran"
