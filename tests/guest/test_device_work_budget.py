"""Huge device requests run in bounded pieces, so every stop lands and memory stays small.

firmware/virtio_flood.S posts one request of gigabytes (an indirect table whose 1023
entries all name the same 4 MiB of RAM: 4 GiB less 4 MiB of entropy for virtio-rng, a
2 GiB read for virtio-blk, 4 GiB of output for virtconsole), then spins on the used ring.
Each run is a child process (its own peak RSS, ``ru_maxrss``), and must end within 0.5 s
of its stop: the wall-clock budget (``-uvirt-timeout 2``), Ctrl-C, or an instruction
budget.  QEMU 7.2 itself would allocate the whole request (4 GiB); uvirt never holds more
than a piece (uvirt/board/dma.py ``PIECE``) of it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uvirt.testing.qemu import BASE_ARGS

pytestmark = pytest.mark.slow

#: Guest RAM (128 MiB) is mapped but only the touched pages count; a run of the flood
#: program peaks around 45 MiB.  A device that buffered its request would need gigabytes.
PEAK_LIMIT_KB = 256 * 1024
LATE = 0.5

# ``run``: the seconds Machine.run took, from the guest's start to its stop (the budget
# counts from there); process start-up, the machine's build and its close are left out,
# which on a loaded host vary by more than the half second the stop is allowed.
CHILD = r"""
import json, resource, sys, time
from uvirt.cpu.machine import Machine
from uvirt.options import parse_argv
from uvirt.launch.runner import run_config
argv = json.loads(sys.argv[1])
runs = []
_run = Machine.run
def run(self, *a, **k):
    t = time.monotonic()
    try:
        return _run(self, *a, **k)
    finally:
        runs.append(time.monotonic() - t)
Machine.run = run
t0 = time.monotonic()
stop = run_config(parse_argv(argv))
elapsed = time.monotonic() - t0
print(json.dumps({"exit": stop.exit_code, "reason": stop.reason.name, "elapsed": elapsed,
                  "run": sum(runs),
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _devices(kind: str, tmp: Path) -> list[str]:
    if kind == "rng":
        return ["-device", "virtio-rng-pci,disable-modern=on"]
    if kind == "blk":
        disk = tmp / "big.img"
        if not disk.exists():
            with open(disk, "wb") as f:
                f.truncate(2 << 30)                 # sparse: reads return zeros
        return ["-drive", f"file={disk},format=raw,if=none,id=d0",
                "-device", "virtio-blk-pci,drive=d0,disable-modern=on"]
    return ["-device", "virtio-serial-pci,disable-modern=on", "-chardev", "null,id=c0",
            "-device", "virtconsole,chardev=c0"]


def _argv(image: Path, kind: str, tmp: Path, *extra: str) -> list[str]:
    return [*BASE_ARGS, *_devices(kind, tmp), "-debugcon", f"file:{tmp / 'con.txt'}",
            "-kernel", str(image), *extra]


def _child(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argv)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


KINDS = ["rng", "blk", "serial"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """How long a run that only spins takes to stop by each budget, on this machine now
    (process start-up, machine build and the stop itself): the huge request may add at
    most ``LATE`` to that."""
    from uvirt import firmware as fw
    tmp = tmp_path_factory.mktemp("spin")
    image = fw.build_to(fw.bundled("virtio_flood"), tmp / "spin.bin", defines={"SPIN": 1})
    return {
        "timeout": _child(_argv(image, "rng", tmp, "-uvirt-timeout", "2"))["run"],
        "insns": _child(_argv(image, "rng", tmp, "-uvirt-timeout", "60",
                              "-uvirt-max-insns", "3000000"))["run"],
    }


@pytest.mark.parametrize("kind", KINDS)
def test_wall_clock_budget_lands_during_a_huge_request(kind, firmware, tmp_path, baseline):
    image = firmware("virtio_flood")
    res = _child(_argv(image, kind, tmp_path, "-uvirt-timeout", "2"))
    assert (res["exit"], res["reason"]) == (124, "TIMEOUT")
    assert res["run"] < baseline["timeout"] + LATE, (res, baseline)
    assert res["maxrss_kb"] < PEAK_LIMIT_KB, res
    assert "kick" in (tmp_path / "con.txt").read_text()        # the request was under way


@pytest.mark.parametrize("kind", KINDS)
def test_instruction_budget_lands_during_a_huge_request(kind, firmware, tmp_path, baseline):
    """Under an instruction budget device work continues only where the CPU stops anyway
    (a register access of the device, an interrupt, a halt): no stop of its own restarts
    the count Unicorn keeps per emu_start."""
    image = firmware("virtio_flood")
    res = _child(_argv(image, kind, tmp_path, "-uvirt-timeout", "60", "-uvirt-max-insns", "3000000"))
    assert (res["exit"], res["reason"]) == (124, "INSN_BUDGET")
    assert res["run"] < baseline["insns"] + LATE, (res, baseline)
    assert res["maxrss_kb"] < PEAK_LIMIT_KB, res


def _ctrl_c(image: Path, kind: str, tmp: Path, marker: str = "kick") -> tuple[subprocess.Popen, str, float]:
    """Run ``image`` as ``uvirt run``, send SIGINT once its request is under way (the
    ``marker`` line) and well inside it: the process, its stderr and how long it took to end."""
    con = tmp / "con.txt"
    proc = subprocess.Popen([sys.executable, "-m", "uvirt", "run",
                             *_argv(image, kind, tmp, "-uvirt-timeout", "60")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while marker not in (con.read_text() if con.exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.5)                                        # well inside the request
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, err, took


@pytest.fixture(scope="module")
def ctrl_c_baseline(tmp_path_factory):
    """How long a spinning guest's process takes to end after Ctrl-C on this machine now
    (the stop, the message, interpreter exit): the huge request may add at most ``LATE``."""
    from uvirt import firmware as fw
    tmp = tmp_path_factory.mktemp("spin-ctrl-c")
    image = fw.build_to(fw.bundled("virtio_flood"), tmp / "spin.bin", defines={"SPIN": 1})
    proc, err, took = _ctrl_c(image, "rng", tmp, marker="spin")
    assert proc.returncode == 130, err
    return took


@pytest.mark.parametrize("kind", KINDS)
def test_ctrl_c_lands_during_a_huge_request(kind, firmware, tmp_path, ctrl_c_baseline):
    proc, err, took = _ctrl_c(firmware("virtio_flood"), kind, tmp_path)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert took < ctrl_c_baseline + LATE, (took, ctrl_c_baseline)


@pytest.mark.parametrize("kind", ["rng", "blk", "serial"])
def test_a_request_completes_across_cpu_slices(kind, firmware, tmp_path):
    """Four 4 MiB pieces: more than one slice of device work, interleaved with the guest,
    which sees the used entry only when the whole request is done (as on QEMU, whose
    vCPU runs while its main loop works)."""
    image = firmware("virtio_flood", {"ENTRIES": 16})
    res = _child(_argv(image, kind, tmp_path, "-uvirt-timeout", "60"))
    assert res["exit"] == 1, res                                  # EXIT 0 -> status 1
    want = {"rng": 16 * (4 << 20), "blk": 8 * (4 << 20) + 1, "serial": 0}[kind]
    assert f"done len {want}" in (tmp_path / "con.txt").read_text()
    assert res["maxrss_kb"] < PEAK_LIMIT_KB, res


@pytest.mark.qemu
@pytest.mark.parametrize("kind", ["rng", "blk", "serial"])
def test_small_flood_transcript_equals_qemu(kind, firmware, qemu, tmp_path):
    """The same program with 16 entries on QEMU 7.2: the same used length."""
    image = firmware("virtio_flood", {"ENTRIES": 16})
    argv = _argv(image, kind, tmp_path, "-uvirt-timeout", "60")
    res = _child(argv)
    ours = (tmp_path / "con.txt").read_text()
    devices = argv[len(BASE_ARGS):argv.index("-debugcon")]
    want = qemu(image, tuple(devices), 120)
    assert want.exit_code == res["exit"] == 1
    assert want.debugcon == ours
