"""Guest test programs as pytest sees them: their options, one run, its reports.

A guest test is a program (``.S`` source, assembled by uvirt.firmware, or a multiboot
image) plus the QEMU options it needs.  The options come from a header block in the
source or from a manifest modelled on kvm-unit-tests' ``unittests.cfg``; both use the
same keys:

    file         the program, relative to the manifest (manifest only)
    extra_params QEMU options added to the base command line (devices, memory: ``-m 256M``)
    timeout      wall-clock seconds (``10``, ``2.5``, ``90s``); default 10
    groups       space-separated names; ``pytest -k NAME`` selects a group
    exit_status  the status the guest passes to isa-debug-exit (default 0; ``none`` = the
                 guest halts instead); QEMU's exit code is ``(status << 1) | 1``
    defines      build parameters ``NAME=VALUE ...`` (``.ifndef NAME`` in the program)
    qemu         ``no``: never compare with QEMU (uvirt-only options or devices)
    xfail        a reason: the test is expected to fail (strict: an unexpected pass fails)

Header block (the first comment block that opens with ``[uvirt]``)::

    # [uvirt]
    # extra_params = -device edu
    # timeout = 5
    # groups = edu dma

Manifest (``unittests.cfg``; one section per test, the section name is the test name)::

    [edu-dma]
    file = edu_dma.S
    extra_params = -device edu
    groups = edu

Every run starts from ``uvirt.testing.qemu.BASE_ARGS`` (``-machine pc -m 128M -nodefaults
... -device isa-debug-exit,iobase=0xf4,iosize=4``), the same line QEMU gets under
``--uvirt-qemu``.  Output is the debugcon (port 0xE9) text; a line starting ``PASS:`` or
``FAIL:`` is one report, as kvm-unit-tests' ``report()`` prints them (firmware/include/
uvirt.inc).
"""

from __future__ import annotations

import collections
import configparser
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from uvirt.errors import UvirtError
from uvirt.testing.qemu import BASE_ARGS

HEADER_SECTION = "uvirt"
MANIFEST_NAME = "unittests.cfg"
DEFAULT_TIMEOUT = 10.0
DEFAULT_TRACE_TAIL = 12
KEYS = ("file", "extra_params", "timeout", "groups", "exit_status", "defines", "qemu", "xfail")
_REPORT_RE = re.compile(r"^(PASS|FAIL|SKIP|XFAIL|XPASS): ?(.*)$")
IMAGE_SUFFIXES = (".bin", ".elf", ".img")


class GuestSpecError(UvirtError):
    """A header block or manifest entry uvirt cannot use (names the file and the key)."""


@dataclass(frozen=True)
class GuestSpec:
    name: str
    program: Path
    extra_params: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    groups: tuple[str, ...] = ()
    exit_status: int | None = 0
    defines: dict[str, int] = field(default_factory=dict)
    qemu: bool = True
    xfail: str | None = None
    origin: str = ""

    @property
    def expected_exit_code(self) -> int:
        """The process exit code QEMU (and ``uvirt run``) give for ``exit_status``."""
        return 0 if self.exit_status is None else (self.exit_status << 1) | 1


def _timeout(value: str, where: str) -> float:
    text = value.strip().removesuffix("s")
    try:
        t = float(text)
    except ValueError:
        raise GuestSpecError(f"{where}: timeout '{value}' is not a number of seconds") from None
    if t <= 0:
        raise GuestSpecError(f"{where}: timeout '{value}' must be positive")
    return t


def _defines(value: str, where: str) -> dict[str, int]:
    out = {}
    for part in value.split():
        name, eq, num = part.partition("=")
        try:
            out[name] = int(num, 0) if eq else 1
        except ValueError:
            raise GuestSpecError(f"{where}: define '{part}' needs NAME=NUMBER") from None
    return out


def spec_from_options(name: str, program: Path, opts: dict[str, str], where: str) -> GuestSpec:
    unknown = sorted(set(opts) - set(KEYS))
    if unknown:
        raise GuestSpecError(f"{where}: unknown key '{unknown[0]}' (keys: {', '.join(KEYS)})")
    status_text = opts.get("exit_status", "0").strip().lower()
    try:
        status = None if status_text == "none" else int(status_text, 0)
    except ValueError:
        raise GuestSpecError(f"{where}: exit_status '{status_text}' is not a number") from None
    if status is not None and not 0 <= status <= 0x7F:
        raise GuestSpecError(f"{where}: exit_status 0x{status:x} is outside 0..0x7f")
    qemu = opts.get("qemu", "yes").strip().lower()
    if qemu not in ("yes", "no", "on", "off", "true", "false"):
        raise GuestSpecError(f"{where}: qemu '{qemu}' must be yes or no")
    try:
        params = tuple(shlex.split(opts.get("extra_params", ""), comments=False))
    except ValueError as e:
        raise GuestSpecError(f"{where}: extra_params: {e}") from None
    return GuestSpec(name=name, program=program, extra_params=params,
                     timeout=_timeout(opts["timeout"], where) if "timeout" in opts else DEFAULT_TIMEOUT,
                     groups=tuple(opts.get("groups", "").split()), exit_status=status,
                     defines=_defines(opts.get("defines", ""), where),
                     qemu=qemu in ("yes", "on", "true"), xfail=opts.get("xfail") or None,
                     origin=where)


def header_options(text: str) -> tuple[dict[str, str], int] | None:
    """The ``[uvirt]`` header block of a source: (options, line number) or None."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith(("#", "//", ";")):
            return None                      # code before any header: there is none
        body = stripped.lstrip("#/;").strip()
        if body != f"[{HEADER_SECTION}]":
            continue
        block = [body]
        for follow in lines[i + 1:]:
            s = follow.strip()
            if not s.startswith(("#", "//", ";")):
                break
            inner = s.lstrip("#/;").strip()
            if not inner:
                break
            block.append(inner)
        parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
        parser.read_string("\n".join(block))
        return dict(parser[HEADER_SECTION]), i + 1
    return None


def spec_from_source(path: Path) -> GuestSpec:
    found = header_options(path.read_text(errors="replace"))
    opts, line = found if found else ({}, 1)
    if "file" in opts:
        raise GuestSpecError(f"{path}:{line}: 'file' belongs in a manifest, not a header")
    return spec_from_options(path.stem, path, opts, f"{path}:{line}")


def parse_manifest(path: Path) -> list[GuestSpec]:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    try:
        parser.read_string(path.read_text(), source=str(path))
    except configparser.Error as e:
        raise GuestSpecError(f"{path}: {e}") from None
    specs = []
    for section in parser.sections():
        opts = dict(parser[section])
        where = f"{path} [{section}]"
        if "file" not in opts:
            raise GuestSpecError(f"{where}: no 'file' key")
        program = (path.parent / opts["file"]).resolve()
        if not program.exists():
            raise GuestSpecError(f"{where}: file '{opts['file']}' not found")
        header = header_options(program.read_text(errors="replace")) \
            if program.suffix == ".S" else None
        merged = dict(header[0]) if header else {}          # the manifest's keys win
        merged.update({k: v for k, v in opts.items() if k != "file"})
        specs.append(spec_from_options(section, program, merged, where))
    return specs


# ---------------------------------------------------------------------- one run


@dataclass(frozen=True)
class Report:
    kind: str            # PASS FAIL SKIP XFAIL XPASS
    message: str
    line: int            # 1-based line of the output


def parse_reports(output: str) -> list[Report]:
    out = []
    for i, line in enumerate(output.splitlines(), 1):
        m = _REPORT_RE.match(line)
        if m:
            out.append(Report(m.group(1), m.group(2).strip(), i))
    return out


@dataclass
class GuestRun:
    """What one run of a guest program left: exit code, output, stop, the trace tail."""

    exit_code: int
    output: str
    stop: object = None                  # uvirt.cpu.machine.StopInfo
    trace_tail: list[str] = field(default_factory=list)
    emulator: str = "uvirt"
    stderr: str = ""
    qemu: "GuestRun | None" = None       # the same program on QEMU 7.2 (--uvirt-qemu)

    @property
    def reports(self) -> list[Report]:
        return parse_reports(self.output)

    @property
    def failures(self) -> list[Report]:
        return [r for r in self.reports if r.kind == "FAIL"]

    @property
    def guest_status(self) -> int | None:
        return self.exit_code >> 1 if self.exit_code & 1 else None

    def problems(self, spec: GuestSpec | None = None) -> list[str]:
        """Why this run is not a pass (empty: it is)."""
        out = [f"FAIL: {r.message}" for r in self.failures]
        stop = self.stop
        if stop is not None and not getattr(stop, "clean", True):
            out.append(f"guest stopped: {stop.summary()}")
        want = spec.expected_exit_code if spec is not None else 1
        if self.exit_code != want:
            out.append(f"exit code {self.exit_code}, expected {want}"
                       + (f" (exit_status {spec.exit_status})" if spec is not None else ""))
        return out


def format_trace_events(events, limit: int = DEFAULT_TRACE_TAIL) -> list[str]:
    """The last ``limit`` trace events as lines, for failure reports.

    The one place that turns events into text: today ``str(event)`` of uvirt.trace's
    declared formats (what ``-uvirt-trace`` writes), with runs of debugcon bytes folded
    into one ``debugcon "text"`` line; the decoded trace of issue 16 (register names,
    values as flags, the instruction) replaces this function's body."""
    lines: list[str] = []
    text = ""
    for ev in events:
        f = getattr(ev, "fields", {})
        if getattr(ev, "name", "") == "pio_write" and f.get("port") == 0xE9 and f.get("size") == 1:
            text += chr(f["value"] & 0xFF)
            if text.endswith("\n"):
                lines.append(f"debugcon {text!r}")
                text = ""
            continue
        if text:
            lines.append(f"debugcon {text!r}")
            text = ""
        lines.append(str(ev))
    if text:
        lines.append(f"debugcon {text!r}")
    return lines[-limit:] if limit else lines


def build_program(spec_or_path, out_dir: Path, defines: dict[str, int] | None = None) -> Path:
    """A multiboot image for a ``.S`` source (assembled) or an image path (as is)."""
    from uvirt import firmware

    program = spec_or_path.program if isinstance(spec_or_path, GuestSpec) else Path(spec_or_path)
    if isinstance(spec_or_path, GuestSpec):
        defines = {**spec_or_path.defines, **(defines or {})}
    if program.suffix.lower() in IMAGE_SUFFIXES:
        return program
    return firmware.build_to(program, out_dir / f"{program.stem}.bin", defines=defines or None)


def run_guest(image: Path, extra_params: tuple[str, ...] | list[str] = (), *,
              timeout: float = DEFAULT_TIMEOUT, trace_tail: int = DEFAULT_TRACE_TAIL) -> GuestRun:
    """Run ``image`` on uvirt in-process with the base arguments and ``extra_params``,
    keeping the last ``trace_tail`` trace events (0: no tracing)."""
    from uvirt.options.argv import parse_argv
    from uvirt.launch.runner import build_machine

    with tempfile.TemporaryDirectory(prefix="uvirt-guest-") as tmp:
        con = Path(tmp) / "debugcon.txt"
        argv = [*BASE_ARGS, *extra_params, "-debugcon", f"file:{con}", "-kernel", str(image)]
        m = build_machine(parse_argv(argv)).machine
        # debugcon bytes fold into lines: keep enough raw events for ``trace_tail`` lines
        tail: collections.deque = collections.deque(maxlen=max(1, trace_tail) * 64)
        if trace_tail:
            m.tracer.sinks.append(tail.append)
            m.tracer.enabled = True
        try:
            stop = m.run(timeout=timeout)
        finally:
            m.close()
        text = con.read_bytes().decode("latin-1") if con.exists() else ""
    return GuestRun(stop.exit_code, text, stop, format_trace_events(tail, trace_tail) if trace_tail else [])


def run_guest_qemu(image: Path, extra_params: tuple[str, ...] | list[str] = (), *,
                   timeout: float = DEFAULT_TIMEOUT) -> GuestRun:
    """The same run on QEMU 7.2 (``uvirt.testing.qemu.run_qemu``)."""
    from uvirt.testing.qemu import run_qemu

    res = run_qemu(image, tuple(extra_params), timeout=timeout + 20)
    return GuestRun(res.exit_code, res.debugcon, None, [], "qemu", res.stderr)


def uvirt_only(params: tuple[str, ...]) -> bool:
    return any(p.startswith("-uvirt-") for p in params)


def main(argv: list[str] | None = None) -> int:
    """``python -m uvirt.testing.guest_tests PROG.S [--qemu] [QEMU options...]``: build and
    run one program with its header's options (plus any given), print what it wrote,
    exit with the emulator's exit code."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m uvirt.testing.guest_tests PROG.S [--qemu] [QEMU options...]",
              file=sys.stderr)
        return 2
    path, rest = Path(argv[0]), argv[1:]
    on_qemu = "--qemu" in rest
    rest = [a for a in rest if a != "--qemu"]
    try:
        if not path.exists():
            raise GuestSpecError(f"{path}: no such file")
        spec = spec_from_source(path) if path.suffix == ".S" else \
            GuestSpec(path.stem, path)
        with tempfile.TemporaryDirectory(prefix="uvirt-guest-") as tmp:
            image = build_program(spec, Path(tmp))
            params = (*spec.extra_params, *rest)
            if on_qemu:
                run = run_guest_qemu(image, params, timeout=spec.timeout)
            else:
                run = run_guest(image, params, timeout=spec.timeout, trace_tail=0)
    except UvirtError as e:
        print(f"uvirt: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(run.output)
    if run.stop is not None and not run.stop.clean:
        print("uvirt: " + run.stop.report(), file=sys.stderr)
    if run.stderr:
        sys.stderr.write(run.stderr)
    return run.exit_code & 0xFF


if __name__ == "__main__":
    raise SystemExit(main())
