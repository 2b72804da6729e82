"""Run a guest and keep what it did: ``uvirt trace``, ``uvirt explain``, ``uvirt inspect``.

``traced_run(argv)`` builds the machine exactly as ``uvirt run`` does (the same QEMU
options, ``runner.build_machine``), records every declared trace event from the board's
layout on, optionally takes ring snapshots at each kick, interrupt decision and stop
(uvirt.observe.inspector), and returns a ``uvirt.observe.record.Recording``.

Command lines (these commands' own options, anywhere among QEMU's)::

    uvirt trace   [--trace-format text|raw|json] [--filter-device D]... [--filter-register R]...
                  [--output FILE] [QEMU options]
    uvirt explain [--json] [QEMU options]
    uvirt inspect [--html FILE] [--last N] [QEMU options]
"""

from __future__ import annotations

import json
import sys

from uvirt.launch.runner import build_machine
from uvirt.observe.inspector import RingInspector, render_html, render_terminal
from uvirt.observe.record import Recording, debugcon_text
from uvirt.observe.virtio_state import virtio_state
from uvirt.options.argv import parse_argv


#: The wall-clock budget of a traced run without -uvirt-timeout: six times ``uvirt run``'s
#: (uvirt.launch.runner.DEFAULT_TIMEOUT), because every traced access costs a few microseconds
#: (a port-I/O-bound guest ran 2-5x slower traced, on a loaded host).
TRACED_TIMEOUT = 60.0


def traced_run(argv: list[str], *, inspect: bool = False, timeout: float | None = None) -> Recording:
    """Run a guest from a ``uvirt run`` command line, recording everything."""
    cfg = parse_argv(list(argv))
    built = build_machine(cfg)
    m = built.machine
    try:
        events = m.tracer.record()
        m.trace_layout()
        inspector = None
        if inspect:
            inspector = RingInspector(m, events)
            m.tracer.sinks.append(inspector)
        if timeout is None:
            timeout = cfg.uvirt.timeout if cfg.uvirt.timeout is not None else TRACED_TIMEOUT
        stop = m.run(timeout=timeout or None, max_insns=cfg.uvirt.max_insns)
        if inspector is not None:
            inspector.final("stop: " + stop.summary())
        rec = Recording(list(events), stop.exit_code, stop.summary(),
                        debugcon_text(events),
                        virtio_state(m), inspector.steps if inspector else [])
    finally:
        m.close()
    return rec


# --------------------------------------------------------------------------- command lines


def _take(argv: list[str], flags: dict[str, bool]) -> tuple[dict[str, list[str]], list[str]]:
    """Split our own options (``flags``: name -> takes an argument) from QEMU's.  They may
    stand anywhere: QEMU has no option of these names (all ``--`` and multi-word)."""
    from uvirt.errors import OptionError
    opts: dict[str, list[str]] = {}
    rest: list[str] = []
    args = list(argv)
    while args:
        name = args.pop(0)
        if name not in flags:
            rest.append(name)
        elif flags[name]:
            if not args:
                raise OptionError(f"{name}: needs an argument")
            opts.setdefault(name, []).append(args.pop(0))
        else:
            opts.setdefault(name, []).append("")
    return opts, rest


def _usage(argv: list[str]) -> bool:
    """``-h``/``--help``: print the command lines (this module's docstring) and stop."""
    if any(a in ("-h", "-help", "--help") for a in argv):
        print("usage:\n" + __doc__.split("::", 1)[1].rstrip().strip("\n") + "\n")
        print("QEMU options as for `uvirt run` (uvirt run -help lists them).")
        return True
    return False


def trace_main(argv: list[str]) -> int:
    from uvirt.errors import OptionError
    if _usage(argv):
        return 0
    from uvirt.observe.decode import FORMATS, Decoder, to_json_lines
    opts, rest = _take(argv, {"--trace-format": True, "--filter-device": True,
                              "--filter-register": True, "--output": True})
    fmt = (opts.get("--trace-format") or ["text"])[-1]
    if fmt not in FORMATS:
        raise OptionError(f"--trace-format {fmt}: not one of {', '.join(FORMATS)}")
    rec = traced_run(rest)
    if fmt == "json":
        lines = to_json_lines(rec.events)
    elif fmt == "raw":
        lines = [str(e) for e in rec.events]
    else:
        dec = Decoder(opts.get("--filter-device", ()), opts.get("--filter-register", ()))
        lines = [d.text for e in rec.events for d in dec.feed(e)] + [d.text for d in dec.flush()]
    out = (opts.get("--output") or [None])[-1]
    if out:
        try:
            with open(out, "w") as f:
                f.write("\n".join(lines) + "\n")
        except OSError as e:
            raise OptionError(f"--output {out}: {e.strerror}") from None
    else:
        sys.stdout.write("\n".join(lines) + "\n")
    return rec.exit_code


def explain_main(argv: list[str]) -> int:
    from uvirt.observe.explain import explain, format_findings
    if _usage(argv):
        return 0
    opts, rest = _take(argv, {"--json": False})
    rec = traced_run(rest)
    findings = explain(rec)
    if "--json" in opts:
        print(json.dumps([f.as_dict() for f in findings], indent=1))
    else:
        print(format_findings(findings, rec))
    return 1 if findings else 0


def inspect_main(argv: list[str]) -> int:
    from uvirt.errors import OptionError
    if _usage(argv):
        return 0
    opts, rest = _take(argv, {"--html": True, "--last": True})
    rec = traced_run(rest, inspect=True)
    last = (opts.get("--last") or [None])[-1]
    try:
        n = int(last) if last is not None else None
    except ValueError:
        raise OptionError(f"--last {last}: expects a number of steps") from None
    render_terminal(rec, last=n)
    html = (opts.get("--html") or [None])[-1]
    if html:
        try:
            with open(html, "w") as f:
                f.write(render_html(rec, title=" ".join(rest)))
        except OSError as e:
            raise OptionError(f"--html {html}: {e.strerror}") from None
        print(f"uvirt: ring inspector page written to {html}", file=sys.stderr)
    return rec.exit_code
