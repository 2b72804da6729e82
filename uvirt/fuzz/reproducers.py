"""A finding, written three ways (plus the raw input):

``<name>.qtest``  the set-up and the operations as a qtest trace: ``uvirt run -accel qtest
                  -qtest stdio < FILE`` replays it, and so does QEMU 7.2 (a paused tcg
                  machine, ``-S -qtest stdio``), with the same -device/-drive options;
                  ``<name>.sh`` has both command lines, so a finding can be checked
                  against QEMU.
``<name>.S``      a standalone guest program in firmware/ style: it programs the BARs,
                  sets the device up and runs the operations as guest instructions,
                  then prints PASS.  A finding that kills the run (an exception, a hang)
                  never reaches PASS; strict findings are judged by the pytest test.
``test_<name>.py`` a pytest test that replays the input with the oracles and fails while
                  the finding reproduces.
``<name>.bin``    the input itself (``uvirt fuzz --reproduce FILE`` decodes it).

The set-up operations (BAR placement, command register, PIC masks, the virtio driver's
initialisation) come first in the qtest trace and the guest program: under qtest no
firmware places the BARs.
"""
from __future__ import annotations

import hashlib
import os
import shlex

from uvirt.fuzz.ops import Op


def _qtest_lines(prims) -> list[str]:
    out = []
    sfx = {1: "b", 2: "w", 4: "l", 8: "q"}
    for p in prims:
        k = p[0]
        if k == "pio_w":
            out.append(f"out{sfx[p[2]]} 0x{p[1]:x} 0x{p[3]:x}")
        elif k == "pio_r":
            out.append(f"in{sfx[p[2]]} 0x{p[1]:x}")
        elif k == "mem_w":
            out.append(f"write{sfx[p[2]]} 0x{p[1]:x} 0x{p[3]:x}")
        elif k == "mem_r":
            out.append(f"read{sfx[p[2]]} 0x{p[1]:x}")
        elif k == "ram":
            out.append(f"write 0x{p[1]:x} 0x{len(p[2]):x} 0x{p[2].hex()}")
        elif k == "wait":
            if p[1]:
                out.append(f"clock_step {p[1]}")
    return out


def qtest_trace(setup_prims, ops: list[Op]) -> str:
    """qtest commands only (a qtest server answers every line, comments included)."""
    lines = _qtest_lines(setup_prims)
    for op in ops:
        lines += _qtest_lines(op.prims)
    return "\n".join(lines) + "\n"


def replay_script(name: str, device_argv: list[str]) -> str:
    dev = shlex.join(device_argv)
    return f"""#!/bin/sh
# Replay {name}.qtest: on uvirt (default) or, with --qemu, on QEMU 7.2 (a paused tcg
# machine: Debian's QEMU has no qtest accelerator).
cd "$(dirname "$0")"
if [ "${{1:-}}" = --qemu ]; then
    exec qemu-system-x86_64 -machine pc -S -qtest stdio -display none -nodefaults {dev} < {name}.qtest
fi
exec uvirt run -machine pc -accel qtest -qtest stdio -display none -nodefaults {dev} < {name}.qtest
"""


def _asm(prims) -> list[str]:
    reg = {1: "al", 2: "ax", 4: "eax"}
    ptr = {1: "byte", 2: "word", 4: "dword"}
    out = []
    for p in prims:
        k = p[0]
        if k == "pio_w":
            out += [f"    mov dx, 0x{p[1]:x}", f"    mov eax, 0x{p[3]:x}", f"    out dx, {reg[p[2]]}"]
        elif k == "pio_r":
            out += [f"    mov dx, 0x{p[1]:x}", f"    in {reg[p[2]]}, dx"]
        elif k == "mem_w":
            out += [f"    mov eax, 0x{p[3]:x}", f"    mov {ptr[p[2]]} ptr [0x{p[1]:x}], {reg[p[2]]}"]
        elif k == "mem_r":
            out += [f"    mov {reg[p[2]]}, {ptr[p[2]]} ptr [0x{p[1]:x}]"]
        elif k == "ram":
            data = p[2]
            for i in range(0, len(data) - len(data) % 4, 4):
                out.append(f"    mov dword ptr [0x{p[1] + i:x}], 0x{int.from_bytes(data[i:i + 4], 'little'):x}")
            for i in range(len(data) - len(data) % 4, len(data)):
                out.append(f"    mov byte ptr [0x{p[1] + i:x}], 0x{data[i]:x}")
        elif k == "wait":
            out.append("    pause")
    return out


def guest_program(setup_prims, ops: list[Op], finding, device_argv: list[str]) -> str:
    lines = [f"# uvirt fuzz reproducer ({finding.kind}): {finding.detail}",
             f"# run: uvirt run -machine pc -nodefaults -display none {shlex.join(device_argv)} \\",
             "#        -device isa-debug-exit,iobase=0xf4,iosize=4 -debugcon stdio -kernel THIS.bin",
             '.include "uvirt.inc"', "", "main:", "    cli",
             "    # set-up: BARs, command register, PIC masks, driver initialisation"]
    lines += _asm(setup_prims)
    for op in ops:
        lines.append(f"    # {op.text}")
        lines += _asm(op.prims)
    lines += ['    PUTSN "PASS: the device survived the input"', "    EXIT 0", ""]
    return "\n".join(lines)


def pytest_file(name: str, data: bytes, finding, device_argv: list[str], backend: str,
                python: str | None = None) -> str:
    return f'''"""uvirt fuzz finding ({finding.kind}): {finding.detail}

Fails while the device still has the bug; passes once it is fixed."""

from uvirt.fuzz.reproducers import replay

DEVICE = {device_argv!r}
PYTHON = {python!r}
INPUT = bytes.fromhex("{data.hex()}")


def test_{name.replace("-", "_")}():
    finding = replay(DEVICE, INPUT, backend={backend!r}, python=PYTHON)
    assert finding is None, f"{{finding.kind}}: {{finding.detail}}"
'''


#: outside libFuzzer (whose -timeout is the fuzzing run's last resort), a replay gives up
#: on a guest that neither runs nor uses CPU after this many seconds of wall clock
REPLAY_WALL_LIMIT = 60.0


def replay(device_argv: list[str], data: bytes, *, backend: str = "guest", oracles=None,
           python: str | None = None):
    """Run one input on a fresh target with the oracles: the finding, or None."""
    from uvirt.fuzz.engine import Harness
    from uvirt.fuzz.oracles import KINDS
    from uvirt.fuzz.target import FuzzTarget
    t = FuzzTarget(list(device_argv), factory=python)
    try:
        return Harness(t, backend, oracles=oracles or KINDS, wall_limit=REPLAY_WALL_LIMIT).execute(data).finding
    finally:
        t.close()


def write_reproducers(harness, data: bytes, finding, out: str, device_argv: list[str],
                      python: str | None = None) -> list[str]:
    from uvirt.fuzz.ops import decode
    target = harness.target
    ops = decode(data, target.layout)
    digest = hashlib.sha1(data).hexdigest()[:10]
    name = f"{finding.kind}-{digest}"
    os.makedirs(out, exist_ok=True)
    paths = []

    def put(fname: str, content, mode="w") -> None:
        p = os.path.join(out, fname)
        with open(p, mode) as f:
            f.write(content)
        paths.append(p)

    put(f"{name}.bin", data, "wb")
    if python is None:         # a Python device exists only inside uvirt fuzz: no command line
        put(f"{name}.qtest", qtest_trace(target.setup_prims, ops))
        put(f"{name}.sh", replay_script(name, device_argv))
        os.chmod(paths[-1], 0o755)
        put(f"{name}.S", guest_program(target.setup_prims, ops, finding, device_argv))
    put(f"test_{name.replace('-', '_')}.py",
        pytest_file(name, data, finding, device_argv, harness.backend.name, python))
    return paths
