"""``uvirt qtest record``: drive an emulator over ``-qtest stdio`` and write the session
in QEMU's ``-qtest-log`` format, so a trace recorded on one emulator replays on the
other.

    uvirt qtest record [-i SCRIPT] [-o TRACE] [--emulator CMD] [--compare] [--timeout S]
                       [--] [EMULATOR OPTIONS...]

SCRIPT (default: standard input) is either raw requests, one per line (a QEMU fuzz
reproducer, what ``-qtest stdio`` reads), or a ``-qtest-log`` trace, whose ``[R +t]``
lines are the requests.  EMULATOR defaults to uvirt itself (``uvirt run``); give
``--emulator qemu-system-x86_64`` to record on QEMU.  ``-qtest stdio -qtest-log none``
is added to the options.  Each request is sent after the previous reply arrived;
``IRQ raise/lower N`` lines are recorded where they came.  The trace::

    [I 0.000000] OPENED
    [R +0.000101] outl 0xcf8 0x80000000
    [S +0.000140] OK
    [I +0.004202] CLOSED

``--compare`` (with a trace as SCRIPT) checks every reply against the trace's and
prints the differences; exit status 1 if any.  The emulator is ended with SIGTERM, as
QEMU does not exit at the end of its input; if it dies first (QEMU aborts on malformed
requests) recording stops there and its status is reported.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

_LOG_LINE = re.compile(r"^\[(?P<kind>[RSI]) \+?(?P<t>[0-9.]+)\](?: (?P<text>.*))?$")


@dataclass
class Exchange:
    request: str
    irqs: list[str] = field(default_factory=list)
    reply: str | None = None


def parse_script(text: str) -> tuple[list[Exchange], bool]:
    """Requests (and, for a trace, the recorded replies); whether it was a trace."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    is_trace = any(_LOG_LINE.match(line) for line in lines[:5])
    if not is_trace:
        return [Exchange(line) for line in lines], False
    out: list[Exchange] = []
    for line in lines:
        m = _LOG_LINE.match(line)
        if m is None:
            if line.startswith("ERR ") and out:          # QEMU logs ERR without [S]
                out[-1].reply = line
            continue
        kind, text_ = m["kind"], m["text"] or ""
        if kind == "R":
            out.append(Exchange(text_))
        elif kind == "S" and out:
            if text_.startswith("IRQ "):
                out[-1].irqs.append(text_)
            elif out[-1].reply is None:
                out[-1].reply = text_
    return out, True


class _Reader:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False

    def line(self, deadline: float) -> str | None:
        while b"\n" not in self.buf:
            if self.eof:
                return None
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([self.fd], [], [], wait)[0]:
                return None
            data = os.read(self.fd, 65536)
            if not data:
                self.eof = True
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode("latin-1")


def record(requests: list[Exchange], emulator: list[str], options: list[str], *,
           timeout: float = 10.0) -> tuple[list[Exchange], list[str], int | None]:
    """Run the session: (exchanges with replies, trace lines, emulator status)."""
    argv = emulator + options + ["-qtest", "stdio", "-qtest-log", "none"]
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdin is not None and p.stdout is not None
    t0 = time.monotonic()
    stamp = lambda: f"+{time.monotonic() - t0:.6f}"  # noqa: E731
    trace = [f"[I {0.0:.6f}] OPENED"]
    done: list[Exchange] = []
    rd = _Reader(p.stdout.fileno())
    try:
        for ex in requests:
            got = Exchange(ex.request)
            trace.append(f"[R {stamp()}]" + "".join(" " + w for w in ex.request.split(" ")) if ex.request
                         else f"[R {stamp()}]")
            try:
                p.stdin.write((ex.request + "\n").encode("latin-1"))
                p.stdin.flush()
            except BrokenPipeError:
                break
            deadline = time.monotonic() + timeout
            while True:
                line = rd.line(deadline)
                if line is None:
                    break
                if line.startswith("IRQ "):
                    got.irqs.append(line)
                    trace.append(f"[S {stamp()}] {line}")
                    continue
                got.reply = line
                trace.append(line if line.startswith("ERR ") else f"[S {stamp()}] {line}")
                break
            done.append(got)
            if got.reply is None:
                break
    finally:
        status = p.poll()
        if status is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            status = None
        trace.append(f"[I {stamp()}] CLOSED")
        for f in (p.stdin, p.stdout, p.stderr):
            try:
                f.close()
            except OSError:
                pass
    return done, trace, status


def compare(expected: list[Exchange], got: list[Exchange]) -> list[str]:
    diffs = []
    for i, (e, g) in enumerate(zip(expected, got), 1):
        if e.reply != g.reply or e.irqs != g.irqs:
            diffs.append(f"request {i} '{e.request}': expected {e.irqs + [e.reply]} got {g.irqs + [g.reply]}")
    if len(got) < len(expected):
        diffs.append(f"the emulator answered {len(got)} of {len(expected)} requests")
    return diffs


def record_main(argv: list[str]) -> int:
    from uvirt.usage import UsageParser
    ap = UsageParser(prog="uvirt qtest record", description=__doc__.split("\n\n")[0])
    ap.add_argument("-i", "--input", help="requests or a -qtest-log trace (default: stdin)")
    ap.add_argument("-o", "--output", help="trace file (default: stdout)")
    ap.add_argument("--emulator", help="emulator command (default: uvirt run)")
    ap.add_argument("--compare", action="store_true", help="compare replies with the input trace")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each reply")
    ap.add_argument("options", nargs=argparse.REMAINDER, help="emulator options")
    a = ap.parse_args(argv)
    options = a.options[1:] if a.options[:1] == ["--"] else a.options
    if a.input:
        with open(a.input, encoding="latin-1") as f:
            text = f.read()
    else:
        text = sys.stdin.buffer.read().decode("latin-1")
    requests, is_trace = parse_script(text)
    if a.compare and not is_trace:
        print("uvirt: qtest record --compare needs a -qtest-log trace as input", file=sys.stderr)
        return 1
    emulator = shlex.split(a.emulator) if a.emulator else [sys.executable, "-m", "uvirt", "run"]
    got, trace, status = record(requests, emulator, options, timeout=a.timeout)
    out = "\n".join(trace) + "\n"
    if a.output:
        with open(a.output, "w") as f:
            f.write(out)
    else:
        sys.stdout.write(out)
    rc = 0
    if status is not None:
        print(f"uvirt: the emulator ended by itself (status {status}) after {len(got)} requests",
              file=sys.stderr)
        rc = 1 if len(got) < len(requests) or any(g.reply is None for g in got) else 0
    if a.compare:
        diffs = compare(requests, got)
        for d in diffs:
            print(d, file=sys.stderr)
        same = sum(1 for e, g in zip(requests, got) if e.reply == g.reply and e.irqs == g.irqs)
        print(f"uvirt: {same}/{len(requests)} replies identical", file=sys.stderr)
        rc = rc or (1 if diffs else 0)
    return rc


def main(argv: list[str]) -> int:
    from uvirt.errors import UsageError
    usage = ("usage: uvirt qtest record [-i SCRIPT] [-o TRACE] [--emulator CMD] [--compare] "
             "[--] [EMULATOR OPTIONS...]")
    if argv and argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    if not argv:
        raise UsageError("qtest: no subcommand given (record); see 'uvirt qtest --help'")
    if argv[0] == "record":
        return record_main(argv[1:])
    raise UsageError(f"qtest: unknown subcommand '{argv[0]}' (record)")
