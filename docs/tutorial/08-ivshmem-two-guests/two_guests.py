"""Lesson 8: start two guests on the same shared memory and show what each printed.

    .venv/bin/python docs/tutorial/08-ivshmem-two-guests/two_guests.py [--qemu]

Both guests run ``pingpong.S`` (guest A with ROLE=1, guest B with ROLE=2) as separate
``uvirt run`` processes with an ivshmem-plain device on the same memory-backend-file.
With ``--qemu`` guest B runs on QEMU 7.2 instead: the two emulators share the memory.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from uvirt.firmware import build_to
from uvirt.testing.qemu import BASE_ARGS, QEMU

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    use_qemu = "--qemu" in argv
    with tempfile.TemporaryDirectory(prefix="uvirt-lesson8-") as tmp:
        shared = Path(tmp) / "shared.mem"
        shared.write_bytes(bytes(1 << 20))              # a fresh, zeroed mailbox
        device = ["-object", f"memory-backend-file,id=shm,size=1M,share=on,mem-path={shared}",
                  "-device", "ivshmem-plain,memdev=shm"]
        images = {name: build_to(HERE / "pingpong.S", Path(tmp) / f"guest{name}.bin",
                                 defines={"ROLE": role})
                  for role, name in ((1, "A"), (2, "B"))}
        guests = []
        # B first: it waits for A, so A's start-up time is covered by B's patience
        for name in ("B", "A"):
            console = Path(tmp) / f"guest{name}.txt"
            on_qemu = use_qemu and name == "B"
            emulator = [QEMU] if on_qemu else [sys.executable, "-m", "uvirt", "run"]
            cmd = [*emulator, *BASE_ARGS, *device, "-debugcon", f"file:{console}",
                   "-kernel", str(images[name])]
            guests.append((name, "QEMU 7.2" if on_qemu else "uvirt", console,
                           subprocess.Popen(cmd, stdin=subprocess.DEVNULL)))
        status = 0
        for name, emulator, console, proc in sorted(guests):
            code = proc.wait(timeout=60)
            status |= code != 1
            print(f"--- guest {name} ({emulator}), exit code {code}")
            print(console.read_text(), end="")
        data = shared.read_bytes()
        print("--- the shared file afterwards")
        print(f"+0x100: {data[0x100:0x200].split(bytes(1))[0].decode()}")
        print(f"+0x200: {data[0x200:0x300].split(bytes(1))[0].decode()}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
