"""Real firmware: reset to boot sector with Debian's SeaBIOS (``-bios bios.bin``, and
``bios-256k.bin``, QEMU's default, which runs its SMM set-up and SMM call32 trampolines
under QEMU's default smm=auto), a virtio-blk disk whose boot sector exits at once, on
uvirt and on QEMU 7.2 TCG.

QEMU spends about 0.04 s in SeaBIOS here (measured: 5.7 M guest instructions, 84 % of
them one byte-wise memset loop), most of it in 32-bit flat code that a TCG
translation runs natively; uvirt runs the same instructions through Unicorn and serves
about 1 500 port and MMIO accesses from Python.  The second figure is what the fast
default saves: the same boot sector is not reachable without firmware, so it compares
uvirt's ``-bios`` boot with uvirt's firmware-step boot of the empty multiboot guest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from .common import Result, build_guest, paired, summarize

BIOS = "/usr/share/seabios/bios.bin"
BIOS_256K = "/usr/share/seabios/bios-256k.bin"


def _mbr_disk(path: str) -> None:
    from keystone import KS_ARCH_X86, KS_MODE_16, Ks
    code, _ = Ks(KS_ARCH_X86, KS_MODE_16).asm("mov al, 0\nout 0xf4, al\nhlt", 0x7C00)
    sector = bytes(code).ljust(510, b"\0") + b"\x55\xaa"
    with open(path, "wb") as f:
        f.write(sector + bytes(1024 * 1024 - 512))


def _args(tmp: str, bios: str = BIOS) -> list[str]:
    disk = os.path.join(tmp, "mbr.img")
    _mbr_disk(disk)
    return ["-machine", "pc", "-accel", "tcg", "-m", "128M", "-nodefaults", "-nographic",
            "-display", "none", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-bios", bios, "-drive", f"file={disk},format=raw,if=none,id=d0",
            "-device", "virtio-blk-pci,drive=d0,addr=0x3,bootindex=1"]


def _uvirt(args: list[str]) -> None:
    from uvirt.options import parse_argv
    from uvirt.launch.runner import run_config
    stop = run_config(parse_argv(args + ["-uvirt-timeout", "60"]))
    assert stop.exit_code == 1, stop.report()


def bench_seabios_boot(reps: int, bios: str = BIOS) -> Result:
    qemu = shutil.which("qemu-system-x86_64")
    name = os.path.basename(bios)
    label = "SeaBIOS reset to boot sector" + ("" if bios == BIOS else f" ({name}, SMM)")
    if qemu is None or not os.path.exists(bios):
        return Result(label, "QEMU 7.2 TCG", float("nan"), 0, 0,
                      "measured", False, f"SKIPPED: qemu-system-x86_64 or {name} missing")
    with tempfile.TemporaryDirectory() as tmp:
        args = _args(tmp, bios)

        def qemu_run():
            r = subprocess.run([qemu, *args, "-serial", "none"], stdin=subprocess.DEVNULL,
                               capture_output=True)
            assert r.returncode == 1, r.stderr

        ratios = paired(qemu_run, lambda: _uvirt(args), reps)
    med, lo, hi = summarize(ratios)
    return Result(label + " (slowdown)", "QEMU 7.2 TCG process", med, lo, hi, "measured", True)


def bench_seabios_256k_boot(reps: int) -> Result:
    return bench_seabios_boot(reps, BIOS_256K)


def bench_firmware_step_vs_seabios(reps: int) -> Result:
    if not os.path.exists(BIOS):
        return Result("firmware step vs SeaBIOS", "-bios boot", float("nan"), 0, 0, ">= 5x",
                      False, "SKIPPED: bios.bin missing")
    from uvirt.testing.guest import run_uvirt
    image = build_guest("empty")
    with tempfile.TemporaryDirectory() as tmp:
        args = _args(tmp)
        path = os.path.join(tmp, "empty.bin")
        with open(path, "wb") as f:
            f.write(image)
        ratios = paired(lambda: run_uvirt(path), lambda: _uvirt(args), reps)
    med, lo, hi = summarize(ratios)
    return Result("uvirt -bios boot / firmware-step boot", "firmware step + empty guest", med, lo, hi,
                  ">= 5x", med >= 5)


BENCHMARKS = [bench_seabios_boot, bench_seabios_256k_boot, bench_firmware_step_vs_seabios]
