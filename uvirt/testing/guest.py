"""Run a guest image on uvirt with the same command line ``uvirt.testing.qemu`` gives QEMU,
and compare transcripts the way the differential tests do.

``run_uvirt`` goes through exactly what ``uvirt run`` does (``qemu_options.parse_argv`` ->
``runner.run_config``) but in-process: a guest test costs milliseconds, not a process.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from uvirt.testing.qemu import BASE_ARGS


@dataclass(frozen=True, slots=True)
class UvirtResult:
    exit_code: int
    debugcon: str
    stop: object = None          # the machine's StopInfo

    @property
    def guest_status(self) -> int | None:
        return self.exit_code >> 1 if self.exit_code & 1 else None


def run_uvirt(image_path: str | os.PathLike[str], extra_args: tuple[str, ...] | list[str] = (),
              timeout: float = 30) -> UvirtResult:
    from uvirt.options.argv import parse_argv
    from uvirt.launch.runner import run_config

    with tempfile.TemporaryDirectory(prefix="uvirt-run-") as tmp:
        con = Path(tmp) / "debugcon.txt"
        argv = [*BASE_ARGS, *extra_args, "-debugcon", f"file:{con}", "-kernel", str(image_path),
                "-uvirt-timeout", str(timeout)]
        stop = run_config(parse_argv(argv))
        text = con.read_bytes().decode("latin-1") if con.exists() else ""
    return UvirtResult(stop.exit_code, text, stop)


def comparable(transcript: str) -> list[str]:
    """The lines a differential test compares: everything but firmware-chosen values
    (``FW `` lines: BAR addresses, interrupt lines, command bits SeaBIOS set)."""
    return [ln for ln in transcript.splitlines() if not ln.startswith("FW ")]
