"""Run guest programs on the reference emulator, QEMU 7.2 (``qemu-system-x86_64``).

``run_qemu(image)`` boots a multiboot image with the base arguments from
docs/qemu-7.2-observed.md and returns the exit code and the debugcon (port 0xE9) text.

``python -m uvirt.testing.qemu regen`` rebuilds the reference transcripts in
``tests/data/qemu/`` from the bundled programs (see ``REFERENCES``); ``... run PROG``
prints one program's transcript.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"

BASE_ARGS: tuple[str, ...] = (
    "-machine", "pc",
    "-accel", "tcg",
    "-m", "128M",
    "-nodefaults",
    "-nographic",
    "-display", "none",
    "-no-reboot",
    "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
)

_REPO = Path(__file__).resolve().parent.parent.parent
DATA_DIR = _REPO / "tests" / "data" / "qemu"

# reference file name -> (bundled program, extra QEMU args)
REFERENCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "pc_nodefaults_config_dump.txt": ("pci_dump", ()),
    "pci_enum.txt": ("pci_enum", ()),
    "pci_probe.txt": ("pci_probe", ()),
    "entry_state.txt": ("entry_state", ()),
    "irq_exceptions.txt": ("irq_exceptions", ()),
    "irq_seabios.txt": ("irq_seabios", ()),
    "irq_msi.txt": ("irq_msi", ()),
    "irq_pit.txt": ("irq_pit", ()),
    "irq_timing.txt": ("irq_timing", ()),
    "irq_virtio.txt": ("irq_virtio", ("-device", "virtio-rng-pci,disable-modern=on")),
    "cpu_memory.txt": ("cpu_memory", ()),
}

# QEMU's edu device (firmware/edu*.S); edu_dma_abort ends in QEMU's hw_error (abort).
EDU_REFERENCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "edu.txt": ("edu", ("-device", "edu")),
    "edu_dma_abort.txt": ("edu_dma_abort", ("-device", "edu")),
}
REFERENCES.update(EDU_REFERENCES)

# virtio guest programs (firmware/virtio_*.S).  Their args may name two files by
# placeholder; ``virtio_args`` creates them in a temporary directory and substitutes
# absolute paths: VIRTIO_DISK, a 64 KiB raw image whose byte i of sector s is
# virtio_disk_byte(s, i), and VIRTIO_CHARDEV, a chardev output file.
VIRTIO_DISK = "disk.img"
VIRTIO_CHARDEV = "console.out"
VIRTIO_DISK_SECTORS = 128


def virtio_disk_byte(sector: int, i: int) -> int:
    return (sector * 3 + i + 1) & 0xFF


def virtio_disk_image(path: str | os.PathLike[str]) -> Path:
    data = bytes(virtio_disk_byte(s, i) for s in range(VIRTIO_DISK_SECTORS) for i in range(512))
    out = Path(path)
    out.write_bytes(data)
    return out


def virtio_args(extra: tuple[str, ...], tmpdir: str | os.PathLike[str]) -> tuple[str, ...]:
    """``extra`` with the VIRTIO_DISK / VIRTIO_CHARDEV placeholders made real in ``tmpdir``."""
    tmp = Path(tmpdir)
    out = []
    for arg in extra:
        if f"file={VIRTIO_DISK}" in arg:
            disk = virtio_disk_image(tmp / VIRTIO_DISK)
            arg = arg.replace(f"file={VIRTIO_DISK}", f"file={disk}")
        if f"path={VIRTIO_CHARDEV}" in arg:
            arg = arg.replace(f"path={VIRTIO_CHARDEV}", f"path={tmp / VIRTIO_CHARDEV}")
        out.append(arg)
    return tuple(out)


_BLK = ("-drive", f"file={VIRTIO_DISK},format=raw,if=none,id=d0",
        "-device", "virtio-blk-pci,drive=d0,serial=uvirt0")
_BLK_RO = ("-drive", f"file={VIRTIO_DISK},format=raw,if=none,id=d0,readonly=on",
           "-device", "virtio-blk-pci,drive=d0,serial=uvirt0")
_CON = ("-chardev", f"file,id=c0,path={VIRTIO_CHARDEV}", "-device", "virtconsole,chardev=c0")
VIRTIO_REFERENCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "virtio_demo.txt": ("virtio_demo", ("-device", "virtio-rng-pci")),
    "virtio_rng_legacy__disable-modern.txt":
        ("virtio_rng_legacy", ("-device", "virtio-rng-pci,disable-modern=on")),
    "virtio_rng_legacy__transitional.txt": ("virtio_rng_legacy", ("-device", "virtio-rng-pci")),
    "virtio_rng_modern__disable-legacy.txt":
        ("virtio_rng_modern", ("-device", "virtio-rng-pci,disable-legacy=on")),
    "virtio_rng_modern__transitional.txt": ("virtio_rng_modern", ("-device", "virtio-rng-pci")),
    "virtio_blk_legacy__transitional.txt": ("virtio_blk_legacy", _BLK),
    "virtio_blk_legacy__readonly.txt": ("virtio_blk_legacy", _BLK_RO),
    "virtio_blk_modern__transitional.txt": ("virtio_blk_modern", _BLK),
    "virtio_blk_modern__disable-legacy.txt":
        ("virtio_blk_modern", (*_BLK[:-1], _BLK[-1] + ",disable-legacy=on")),
    "virtio_blk_modern__readonly.txt": ("virtio_blk_modern", _BLK_RO),
    "virtio_console__transitional.txt":
        ("virtio_console", ("-device", "virtio-serial-pci", *_CON)),
    "virtio_console__disable-legacy.txt":
        ("virtio_console", ("-device", "virtio-serial-pci,disable-legacy=on", *_CON)),
    "virtio_bad_guest__disable-modern.txt":
        ("virtio_bad_guest", ("-device", "virtio-rng-pci,disable-modern=on")),
    "virtio_bad_guest__disable-legacy.txt":
        ("virtio_bad_guest", ("-device", "virtio-rng-pci,disable-legacy=on")),
    # device DMA outside RAM, rings in odd places (firmware/virtio_dma.S)
    "virtio_dma__rng-legacy.txt": ("virtio_dma", ("-device", "virtio-rng-pci,disable-modern=on")),
    "virtio_dma__rng-modern.txt": ("virtio_dma", ("-device", "virtio-rng-pci,disable-legacy=on")),
    "virtio_dma__blk-legacy.txt":
        ("virtio_dma", (*_BLK[:-1], _BLK[-1] + ",disable-modern=on")),
    "virtio_dma__blk-modern.txt":
        ("virtio_dma", (*_BLK[:-1], _BLK[-1] + ",disable-legacy=on")),
    # kicks handled inside the notify write: QEMU's re-entrancy guard drops the DMA read
    # of the device's own ISR register
    "virtio_dma__blk-modern-ioeventfd-off.txt":
        ("virtio_dma", (*_BLK[:-1], _BLK[-1] + ",disable-legacy=on,ioeventfd=off")),
    # packed virtqueues (firmware/virtio_packed.S): rings that wrap, chains across the end,
    # an indirect table, event suppression (ENABLE, DISABLE, DESC with EVENT_IDX)
    "virtio_packed__rng.txt": ("virtio_packed", ("-device", "virtio-rng-pci,packed=on")),
    "virtio_packed__rng-disable-legacy.txt":
        ("virtio_packed", ("-device", "virtio-rng-pci,packed=on,disable-legacy=on")),
    "virtio_packed__blk.txt": ("virtio_packed", (*_BLK[:-1], _BLK[-1] + ",packed=on")),
    "virtio_packed__blk-ioeventfd-off.txt":
        ("virtio_packed", (*_BLK[:-1], _BLK[-1] + ",packed=on,disable-legacy=on,ioeventfd=off")),
    # virtio-gpu 2D: registers, config, every command and the bad-command catalogue
    "gpu_commands__default.txt": ("gpu_commands", ("-device", "virtio-gpu-pci")),
    "gpu_commands__edid-off-2-heads.txt":
        ("gpu_commands", ("-device", "virtio-gpu-pci,edid=off,xres=1024,yres=768,max_outputs=2")),
    "gpu_commands__5120x2160-1M.txt":
        ("gpu_commands", ("-device", "virtio-gpu-pci,xres=5120,yres=2160,max_hostmem=1M")),
    "gpu_commands__333x77-no-msix.txt":
        ("gpu_commands", ("-device", "virtio-gpu-pci,xres=333,yres=77,disable-legacy=off,vectors=0")),
}
# a 0xffffffff-byte rng descriptor: QEMU allocates and fills 4 GiB (about 20 s and 4 GiB
# of memory per run), so these run only where slow tests are wanted
VIRTIO_HUGE_REFERENCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "virtio_dma_huge__rng-legacy.txt":
        ("virtio_dma_huge", ("-device", "virtio-rng-pci,disable-modern=on")),
    "virtio_dma_huge__rng-modern.txt":
        ("virtio_dma_huge", ("-device", "virtio-rng-pci,disable-legacy=on")),
}
REFERENCES.update(VIRTIO_REFERENCES)
REFERENCES.update(VIRTIO_HUGE_REFERENCES)
#: QEMU seconds per run where the default 30 is not enough (on a loaded machine)
REFERENCE_TIMEOUT = {"virtio_dma_huge": 300}

# ivshmem guest programs (firmware/ivshmem_*.S): IVSHMEM_FILE / IVSHMEM_SOCKET placeholders
# are made real, and the host side played, by uvirt.testing.ivshmem.ivshmem_env.
_IVS_FILE = ("-object", "memory-backend-file,id=m,size=1M,share=on,mem-path=IVSHMEM_FILE",
             "-device", "ivshmem-plain,memdev=m")
IVSHMEM_REFERENCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ivshmem_plain__file.txt": ("ivshmem_plain", _IVS_FILE),
    "ivshmem_plain__memfd.txt":
        ("ivshmem_plain", ("-object", "memory-backend-memfd,id=m,size=128K",
                           "-device", "ivshmem-plain,memdev=m,addr=5")),
    "ivshmem_doorbell.txt":
        ("ivshmem_doorbell", ("-chardev", "socket,path=IVSHMEM_SOCKET,id=c",
                              "-device", "ivshmem-doorbell,chardev=c,vectors=2")),
}
REFERENCES.update(IVSHMEM_REFERENCES)

# the low megabyte (firmware/lowmem_map.S): ivshmem's BARs moved into the VGA window
# and under the PAM segments
LOWMEM_REFERENCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "lowmem_map.txt": ("lowmem_map", ("-object", "memory-backend-ram,id=m,size=128K",
                                      "-device", "ivshmem-plain,memdev=m")),
}
REFERENCES.update(LOWMEM_REFERENCES)

# the chipset as firmware leaves it (firmware/chipset_probe.S), without and with a UART
CHIPSET_REFERENCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "chipset_probe.txt": ("chipset_probe", ()),
    "chipset_probe__serial.txt": ("chipset_probe", ("-chardev", f"file,id=s0,path={VIRTIO_CHARDEV}",
                                                    "-serial", "chardev:s0")),
}
REFERENCES.update(CHIPSET_REFERENCES)


@contextlib.contextmanager
def reference_args(extra: tuple[str, ...], tmpdir: str | os.PathLike[str]):
    """``virtio_args``, and for ivshmem placeholders the host side for the run's duration."""
    args = virtio_args(extra, tmpdir)
    from uvirt.testing.ivshmem import has_placeholders, ivshmem_env
    if not has_placeholders(args):
        yield args
        return
    with ivshmem_env(args, tmpdir) as env:
        yield env.args
# the same dump as pc_nodefaults_config_dump.txt, but at reset (qtest, no firmware)
RESET_DUMP = "pc_nodefaults_config_reset.txt"


@dataclass(frozen=True, slots=True)
class QemuResult:
    exit_code: int  # QEMU's exit status: (guest status << 1) | 1 after isa-debug-exit
    debugcon: str
    stderr: str = ""

    @property
    def guest_status(self) -> int | None:
        """The byte the guest wrote to isa-debug-exit, or None if it did not exit that way."""
        return self.exit_code >> 1 if self.exit_code & 1 else None


def qemu_binary() -> str | None:
    return shutil.which(QEMU)


def qemu_available() -> bool:
    return qemu_binary() is not None


def run_qemu(
    image_path: str | os.PathLike[str],
    extra_args: tuple[str, ...] | list[str] = (),
    timeout: float = 30,
) -> QemuResult:
    """Boot ``image_path`` with ``-kernel`` under QEMU and collect the debugcon output.

    Raises FileNotFoundError if QEMU is missing and subprocess.TimeoutExpired (after
    killing QEMU) if the guest does not exit within ``timeout`` seconds.
    """
    exe = qemu_binary()
    if exe is None:
        raise FileNotFoundError(f"{QEMU} not found on PATH")
    image = Path(image_path).resolve()
    with tempfile.TemporaryDirectory(prefix="uvirt-qemu-") as tmp:
        con = Path(tmp) / "debugcon.txt"
        cmd = [exe, *BASE_ARGS, *extra_args, "-debugcon", f"file:{con}", "-kernel", str(image)]
        proc = subprocess.run(
            cmd, cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
        )
        text = con.read_bytes().decode("latin-1") if con.exists() else ""
    return QemuResult(proc.returncode, text, proc.stderr.decode(errors="replace"))


def run_bundled(name: str, extra_args: tuple[str, ...] = (), *,
                defines: dict[str, int] | None = None, timeout: float = 30) -> QemuResult:
    """Build a program from ``firmware/`` and run it on QEMU."""
    from uvirt import firmware

    with tempfile.TemporaryDirectory(prefix="uvirt-img-") as tmp:
        img = firmware.build_to(firmware.bundled(name), Path(tmp) / f"{name}.bin", defines=defines)
        return run_qemu(img, extra_args, timeout)


def qtest_config_dump(extra_args: tuple[str, ...] = (), timeout: float = 30) -> str:
    """Config space of every function on bus 0 *at reset* (no firmware has run), read
    through QEMU's qtest protocol (``-qtest stdio``: ``outl``/``inl`` on 0xCF8/0xCFC).

    Same layout as pci_dump.S's output (lspci -xxx), without the BOOT/DONE lines.
    """
    exe = qemu_binary()
    if exe is None:
        raise FileNotFoundError(f"{QEMU} not found on PATH")
    # -S: the CPU never starts, so SeaBIOS has not touched the registers (without it
    # the dump races SeaBIOS's first steps: PAM read 30 33 33 ... mid-shadowing)
    cmd = [exe, "-machine", "pc", "-m", "128M", "-nodefaults", "-display", "none", "-S",
           "-qtest", "stdio", *extra_args]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdin is not None and proc.stdout is not None

    def cfg_read(devfn: int, off: int) -> int:
        proc.stdin.write(f"outl 0xcf8 0x{0x80000000 | devfn << 8 | off:x}\ninl 0xcfc\n")
        proc.stdin.flush()
        replies = [proc.stdout.readline().split() for _ in range(2)]
        if replies[0][:1] != ["OK"] or replies[1][:1] != ["OK"]:
            raise RuntimeError(f"qtest: unexpected reply {replies!r}")
        return int(replies[1][1], 16)

    out: list[str] = []
    try:
        devfn = 0
        while devfn < 256:
            ident = cfg_read(devfn, 0)
            if ident & 0xFFFF == 0xFFFF:
                devfn = devfn + 1 if devfn & 7 else devfn + 8
                continue
            out.append(f"00:{devfn >> 3:02x}.{devfn & 7} {ident & 0xFFFF:04x}:{ident >> 16:04x}")
            for line in range(16):
                vals = b"".join(cfg_read(devfn, line * 16 + k * 4).to_bytes(4, "little")
                                for k in range(4))
                out.append(f"{line * 16:02x}: " + " ".join(f"{b:02x}" for b in vals))
            multi = (cfg_read(devfn, 0x0C) >> 16) & 0x80
            devfn = devfn + 1 if (devfn & 7 or multi) else devfn + 8
    finally:
        proc.kill()
        proc.wait(timeout=timeout)
    return "\n".join(out) + "\n"


def _qemu_version() -> str:
    exe = qemu_binary()
    if exe is None:
        return "unknown"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def regen(names: list[str] | None = None, out_dir: Path = DATA_DIR) -> list[Path]:
    """Re-record the reference transcripts.  Each file starts with '#' provenance lines
    (program, QEMU version, command-line extras, exit code); the rest is debugcon output."""
    out_dir.mkdir(parents=True, exist_ok=True)
    version = _qemu_version()
    written = []
    for fname, (prog, extra) in REFERENCES.items():
        if names and prog not in names and fname not in names:
            continue
        with tempfile.TemporaryDirectory(prefix="uvirt-files-") as files:
            with reference_args(extra, files) as args:
                res = run_bundled(prog, args, timeout=REFERENCE_TIMEOUT.get(prog, 30))
        header = (
            f"# firmware/{prog}.S on {version}\n"
            f"# args: base args{(' ' + ' '.join(extra)) if extra else ''}; "
            f"exit code {res.exit_code}\n"
            "# generated by `python -m uvirt.testing.qemu regen`; do not edit by hand\n"
        )
        path = out_dir / fname
        path.write_text(header + res.debugcon)
        written.append(path)
    if not names or "reset" in names or RESET_DUMP in names:
        path = out_dir / RESET_DUMP
        path.write_text(
            f"# config space at reset (before SeaBIOS), read over qtest on {version}\n"
            "# args: -machine pc -m 128M -nodefaults -S -qtest stdio\n"
            "# generated by `python -m uvirt.testing.qemu regen`; do not edit by hand\n"
            + qtest_config_dump()
        )
        written.append(path)
    return written


def strip_header(text: str) -> str:
    """A reference file without its '#' provenance lines."""
    return "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("# "))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("regen", "run"):
        print("usage: python -m uvirt.testing.qemu regen [PROG...] | run PROG [QEMU-ARGS...]",
              file=sys.stderr)
        return 2
    if not qemu_available():
        print(f"uvirt: {QEMU} not found", file=sys.stderr)
        return 1
    if argv[0] == "regen":
        for p in regen(argv[1:] or None):
            print(p.relative_to(_REPO))
        return 0
    if len(argv) < 2:
        print("uvirt: run needs a program name", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="uvirt-files-") as files:
        with reference_args(tuple(argv[2:]), files) as args:
            res = run_bundled(argv[1], args)
        chardev = Path(files) / VIRTIO_CHARDEV
        if chardev.exists():
            print(f"[{VIRTIO_CHARDEV}: {chardev.read_bytes()!r}]", file=sys.stderr)
    sys.stdout.write(res.debugcon)
    print(f"[exit code {res.exit_code}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def qemu_screendumps(image_path: str | os.PathLike[str], extra_args: tuple[str, ...] = (), *,
                     ready: str = "SCREEN READY", formats: tuple[str, ...] = ("ppm", "png"),
                     timeout: float = 30, emulator: list[str] | None = None
                     ) -> tuple[QemuResult, dict[str, bytes]]:
    """Boot ``image_path`` on QEMU with a QMP server socket, wait until the guest prints
    ``ready`` on debugcon (it then halts), take a QMP ``screendump`` in each format, quit.
    Returns the run (QEMU exits 0 after ``quit``) and the files' bytes by format.
    ``emulator`` replaces QEMU's command (``[python, -m, uvirt, run]``: the same session
    against uvirt)."""
    import json
    import socket
    import time

    exe = [qemu_binary()] if emulator is None else emulator
    if exe[0] is None:
        raise FileNotFoundError(f"{QEMU} not found on PATH")
    image = Path(image_path).resolve()
    with tempfile.TemporaryDirectory(prefix="uvirt-qemu-") as tmp:
        con, sock_path = Path(tmp) / "debugcon.txt", Path(tmp) / "qmp.sock"
        cmd = [*exe, *BASE_ARGS, *extra_args, "-qmp", f"unix:{sock_path},server=on,wait=off",
               "-debugcon", f"file:{con}", "-kernel", str(image)]
        proc = subprocess.Popen(cmd, cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        dumps: dict[str, bytes] = {}
        try:
            deadline = time.monotonic() + timeout
            while not (con.exists() and ready in con.read_text("latin-1")):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"QEMU did not print {ready!r}: "
                                       + (con.read_text("latin-1") if con.exists() else ""))
                time.sleep(0.02)
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(sock_path))
            f = s.makefile("rw")
            f.readline()

            def qmp(command: str, **args) -> dict:
                f.write(json.dumps({"execute": command, **({"arguments": args} if args else {})}) + "\n")
                f.flush()
                while True:
                    reply = json.loads(f.readline())
                    if "event" not in reply:
                        return reply

            qmp("qmp_capabilities")
            for fmt in formats:
                out = Path(tmp) / f"screen.{fmt}"
                reply = qmp("screendump", filename=str(out), format=fmt)
                if "error" in reply:
                    raise RuntimeError(f"screendump: {reply}")
                dumps[fmt] = out.read_bytes()
            qmp("quit")
            s.close()
            _, err = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        text = con.read_bytes().decode("latin-1") if con.exists() else ""
    return QemuResult(proc.returncode, text, err.decode(errors="replace") if err else ""), dumps
