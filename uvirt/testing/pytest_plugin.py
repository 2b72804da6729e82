"""pytest plugin: guest test programs as pytest tests (entry point ``pytest11: uvirt``).

Installed with uvirt, active in every pytest run (``-p no:uvirt`` turns it off).

Collection
    * ``test_*.S`` files: one test each, options from the source's ``[uvirt]`` header
      block (uvirt.testing.guest_tests documents the keys);
    * ``unittests.cfg`` manifests (kvm-unit-tests' format): one test per section.
    Programs inside uvirt's own ``firmware/`` folder are never collected from a
    ``test_*.S`` name (the bundled programs are run by the project's own tests); a manifest
    may still list them explicitly.

One test per program, one sub-result per report (the design choice)
    A guest's ``PASS:``/``FAIL:`` lines are known only after it ran.  Collecting one pytest
    item per line would mean running every program during collection -- in every xdist
    worker, and again for ``--collect-only`` -- and trusting that run's result later.
    Instead each program is one item that runs it once, at test time, and reports every
    ``PASS:``/``FAIL:`` line as a sub-result through pytest's own subtests reporting
    (``SubtestReport``, pytest >= 9): ``pytest -v`` lists each report by name
    (``test_edu.S::test_edu SUBPASSED[liveness returns the inverse]``), a failing report
    is always shown by name, xdist carries the sub-results from its workers, and the JUnit
    XML has the failures in the program's testcase and every report as a property.  The
    item itself fails when any report failed, the exit status is not the expected one,
    or the guest stopped abnormally; its failure text lists every FAIL line, the end of
    the guest's output, the stop report with the faulting instruction (capstone) and
    the last trace events (``--uvirt-trace-tail``; ``format_trace_events`` in
    uvirt.testing.guest_tests is where the decoded trace slots in).
    Under pytest 8 (no subtests) only the item's own result appears.

``--uvirt-qemu``
    Runs each program on QEMU 7.2 as well, with the same command line, and compares the
    transcripts (``FW `` lines excluded, as the project's differential tests do) and exit
    codes: one more sub-result, ``[QEMU 7.2 transcript]``, whose failure is a diff.  A
    program with ``qemu = no`` or with ``-uvirt-*`` options is not compared.  Without
    ``qemu-system-x86_64`` the comparison is skipped, except under ``CI=true``.

Fixtures for tests written in Python
    ``guest(program, *extra_params, defines=None, timeout=10)`` builds (``.S`` path or
    inline source text) and runs a program, returns a ``GuestRun`` (``output``,
    ``reports``, ``failures``, ``exit_code``, ``stop``, ``trace_tail``, ``qemu``: the QEMU
    run under ``--uvirt-qemu``) -- ``run.check()`` fails the test like an item would;
    ``machine``: a ``Machine`` built from the base command line plus the
    ``@pytest.mark.uvirt("-device", "edu")`` arguments, CPU attached, closed afterwards;
    its debugcon text is ``machine.debugcon.text``.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path

import pytest

from uvirt.errors import UvirtError
from uvirt.testing.guest_tests import (MANIFEST_NAME, GuestRun, GuestSpec, GuestSpecError,
                                  build_program, parse_manifest, run_guest, run_guest_qemu,
                                  spec_from_source, uvirt_only, DEFAULT_TRACE_TAIL)

try:                                   # pytest >= 9: subtests are part of pytest
    from pytest import SubtestReport
    from _pytest.subtests import SubtestContext     # not exported; the report needs one
except ImportError:                    # pragma: no cover - pytest 8
    SubtestContext = SubtestReport = None

OUTPUT_TAIL = 20


def _firmware_dir() -> Path:
    from uvirt.firmware import FIRMWARE_DIR
    return FIRMWARE_DIR.resolve()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("uvirt", "uvirt guest test programs")
    group.addoption("--uvirt-qemu", action="store_true", default=False,
                    help="also run every guest program on QEMU 7.2 and compare transcripts")
    group.addoption("--uvirt-trace-tail", type=int, default=DEFAULT_TRACE_TAIL, metavar="N",
                    help=f"trace events shown when a guest program fails (default "
                         f"{DEFAULT_TRACE_TAIL}; 0: run without tracing)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "uvirt(*extra_params): QEMU options for the machine "
                                       "fixture and the guest fixture's runs")
    config.addinivalue_line("markers", "uvirt_guest: a guest test program (test_*.S or a "
                                       "unittests.cfg entry)")


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    name = file_path.name
    if name == MANIFEST_NAME:
        return GuestManifest.from_parent(parent, path=file_path)
    if name.startswith("test_") and file_path.suffix == ".S":
        if _firmware_dir() in file_path.resolve().parents:
            return None
        return GuestSource.from_parent(parent, path=file_path)
    return None


# ---------------------------------------------------------------------- collection


class GuestSource(pytest.File):
    def collect(self):
        try:
            spec = spec_from_source(self.path)
        except GuestSpecError as e:
            raise self.CollectError(str(e)) from None
        yield GuestItem.from_parent(self, name=spec.name, spec=spec)


class GuestManifest(pytest.File):
    def collect(self):
        try:
            specs = parse_manifest(self.path)
        except GuestSpecError as e:
            raise self.CollectError(str(e)) from None
        for spec in specs:
            yield GuestItem.from_parent(self, name=spec.name, spec=spec)


class GuestFailure(Exception):
    """A guest program did not pass; ``text`` is the whole explanation."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class GuestItem(pytest.Item):
    def __init__(self, *, spec: GuestSpec, **kw) -> None:
        super().__init__(**kw)
        self.spec = spec
        self.add_marker("uvirt_guest")
        self.extra_keyword_matches.update(spec.groups)
        self.run_result: GuestRun | None = None

    def runtest(self) -> None:
        spec = self.spec
        with tempfile.TemporaryDirectory(prefix="uvirt-guest-") as tmp:
            image = build_program(spec, Path(tmp))
            run = run_guest(image, spec.extra_params, timeout=spec.timeout,
                            trace_tail=self.config.getoption("uvirt_trace_tail"))
            qemu_result = None
            if self.config.getoption("uvirt_qemu"):
                qemu_result = self._compare_with_qemu(image, run)
        self.run_result = run
        problems = run.problems(spec)
        seen: dict[str, int] = {}
        for rep in run.reports:
            if rep.kind not in ("PASS", "FAIL"):
                continue
            label = rep.message or f"line {rep.line}"
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                label = f"{label} #{seen[label]}"
            self.user_properties.append((f"guest {rep.kind}", label))   # JUnit <properties>
            failure = None
            if rep.kind == "FAIL":
                failure = GuestFailure(f"FAIL: {rep.message}   (guest output line {rep.line})\n"
                                       + _context(run.output, rep.line))
            _sub_result(self, label, failure, xfail=spec.xfail)
        compared = ""
        if qemu_result is not None:                   # reported after the guest's own
            compared, failure, skip = qemu_result
            _sub_result(self, "QEMU 7.2 transcript", failure, skip=skip)
        if compared:
            problems.append("transcript differs from QEMU 7.2's")
        if spec.xfail:                     # strict: the program must not pass
            if problems:
                pytest.xfail(f"{spec.xfail}: {problems[0]}")
            raise GuestFailure(f"[XPASS(strict)] {spec.xfail}: the program passed")
        if problems:
            raise GuestFailure(_explain(self.spec, run, problems, compared))

    def _compare_with_qemu(self, image: Path, run: GuestRun):
        """None (not compared) or (diff, failure, skip reason) for the sub-result."""
        spec = self.spec
        if not spec.qemu or uvirt_only(spec.extra_params):
            return None
        from uvirt.testing.qemu import QEMU, qemu_available
        if not qemu_available():
            reason = f"{QEMU} not installed: no comparison with QEMU 7.2"
            if os.environ.get("CI", "").lower() == "true":
                return reason, GuestFailure(f"CI=true: {reason}"), None
            return "", None, reason
        q = run_guest_qemu(image, spec.extra_params, timeout=spec.timeout)
        diff = compare_transcripts(q, run)
        return diff, (GuestFailure(diff) if diff else None), None

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, GuestFailure):
            return excinfo.value.text
        if isinstance(excinfo.value, UvirtError):       # a build error, a bad option: one line
            return f"{self.spec.program}: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, self.name


def compare_transcripts(qemu: GuestRun, uvirt: GuestRun) -> str:
    """'' if uvirt printed what QEMU printed (``FW `` lines aside) with its exit code,
    else a unified diff and the codes."""
    from uvirt.testing.guest import comparable

    want, got = comparable(qemu.output), comparable(uvirt.output)
    out = []
    if want != got:
        out.extend(difflib.unified_diff(want, got, "QEMU 7.2", "uvirt", lineterm="", n=2))
    if qemu.exit_code != uvirt.exit_code:
        out.append(f"exit code: QEMU {qemu.exit_code}, uvirt {uvirt.exit_code}")
    return "\n".join(out)


def _sub_result(item: pytest.Item, label: str, failure: GuestFailure | None,
                skip: str | None = None, xfail: str | None = None) -> None:
    """Report one guest report as a sub-result of ``item`` (pytest's subtests reporting)."""
    if SubtestReport is None:
        return

    def call() -> None:
        if failure is not None:
            if xfail:
                pytest.xfail(f"{xfail}: {label}")
            raise failure
        if skip is not None:
            pytest.skip(skip)

    info = pytest.CallInfo.from_call(call, "call")
    report = item.ihook.pytest_runtest_makereport(item=item, call=info)
    sub = SubtestReport._new(report, SubtestContext(msg=label, kwargs={}), None, None)
    capman = item.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            item.ihook.pytest_runtest_logreport(report=sub)
    else:
        item.ihook.pytest_runtest_logreport(report=sub)


def _context(output: str, line: int, around: int = 3) -> str:
    lines = output.splitlines()
    lo, hi = max(0, line - 1 - around), min(len(lines), line + around)
    return "\n".join(f"  {'>' if i + 1 == line else ' '} {i + 1:4}  {lines[i]}" for i in range(lo, hi))


def _explain(spec: GuestSpec | None, run: GuestRun, problems: list[str], diff: str = "") -> str:
    head = f"guest program {spec.program}" if spec is not None else "guest program"
    if spec is not None and spec.extra_params:
        head += f"  ({' '.join(spec.extra_params)})"
    parts = [head, *(f"  {p}" for p in problems)]
    lines = run.output.splitlines()
    shown = lines[-OUTPUT_TAIL:]
    parts.append(f"guest output ({len(lines)} lines{', last ' + str(len(shown)) if len(lines) > len(shown) else ''}):")
    parts.extend(f"  | {ln}" for ln in shown)
    stop = run.stop
    if stop is not None and not stop.clean:
        parts.append(stop.report())
    elif stop is not None:
        parts.append(f"stop: {stop.summary()}")
    if run.trace_tail:
        parts.append(f"last {len(run.trace_tail)} trace events:")
        parts.extend(f"  {ln}" for ln in run.trace_tail)
    if diff:
        parts.append("transcript against QEMU 7.2 (FW lines excluded):")
        parts.append(diff)
    return "\n".join(parts)


# ---------------------------------------------------------------------- fixtures


class GuestRunner:
    """The ``guest`` fixture: ``guest(program, *extra_params, defines=None, timeout=10)``."""

    def __init__(self, config: pytest.Config, tmp_path: Path, marker_args: tuple[str, ...]) -> None:
        self.config = config
        self.tmp_path = tmp_path
        self.marker_args = marker_args
        self._n = 0

    def __call__(self, program: str | os.PathLike[str], *extra_params: str,
                 defines: dict[str, int] | None = None, timeout: float = 10.0) -> GuestRun:
        self._n += 1
        text = str(program)
        if "\n" in text:                          # inline source
            src = self.tmp_path / f"inline{self._n}.S"
            src.write_text(text if ".include" in text else '.include "uvirt.inc"\n' + text)
            path = src
        else:
            path = Path(program)
            if not path.suffix:
                from uvirt.firmware import bundled
                path = bundled(text)
        out = self.tmp_path / f"build{self._n}"
        out.mkdir()
        image = build_program(path, out, defines)
        params = (*self.marker_args, *extra_params)
        run = run_guest(image, params, timeout=timeout,
                        trace_tail=self.config.getoption("uvirt_trace_tail"))
        run = CheckedRun(**vars(run))
        if self.config.getoption("uvirt_qemu") and not uvirt_only(params):
            from uvirt.testing.qemu import qemu_available
            if qemu_available():
                run.qemu = run_guest_qemu(image, params, timeout=timeout)
        return run


class CheckedRun(GuestRun):
    """What the ``guest`` fixture returns: a ``GuestRun`` that can fail the test."""

    def check(self) -> None:
        """Fail the test as a guest item would: FAIL lines, exit status, an abnormal
        stop, or (under ``--uvirt-qemu``) a transcript that differs from QEMU's."""
        __tracebackhide__ = True
        problems = self.problems()
        diff = compare_transcripts(self.qemu, self) if self.qemu is not None else ""
        if diff:
            problems.append("transcript differs from QEMU 7.2's")
        if problems:
            pytest.fail(_explain(None, self, problems, diff), pytrace=False)


def _marker_args(request: pytest.FixtureRequest) -> tuple[str, ...]:
    marker = request.node.get_closest_marker("uvirt")
    if marker is None:
        return ()
    args: list[str] = []
    for a in marker.args:
        args.extend(a.split() if isinstance(a, str) and " " in a else [a])
    return tuple(args)


@pytest.fixture
def guest(request: pytest.FixtureRequest, tmp_path: Path) -> GuestRunner:
    """Build and run guest programs: ``run = guest("test_x.S", "-device", "edu")``."""
    return GuestRunner(request.config, tmp_path, _marker_args(request))


@pytest.fixture
def machine(request: pytest.FixtureRequest):
    """A ``Machine`` from the base command line plus ``@pytest.mark.uvirt(...)`` options,
    with a CPU and no kernel yet (``machine.load_kernel(image)``, ``machine.run()``);
    ``machine.debugcon`` collects port 0xE9."""
    from uvirt.backends.chardev import MemoryChardev
    from uvirt.options.argv import parse_argv
    from uvirt.launch.runner import build_machine
    from uvirt.testing.qemu import BASE_ARGS

    m = build_machine(parse_argv([*BASE_ARGS, *_marker_args(request)]), kernel=False).machine
    m.debugcon = MemoryChardev()
    m.add_debugcon(m.debugcon)
    try:
        yield m
    finally:
        m.close()
