"""``uvirt``: the command line, and the one exit-status contract every subcommand keeps.

Contract (README "How a run ends"; tests/guest/test_cli_contract.py checks it for every
subcommand):

* Help asked for (``-h``/``--help``; ``-help`` and QEMU's help forms under ``uvirt run``)
  goes to standard output, status 0.  ``uvirt -V``/``--version`` likewise.
* A usage mistake (unknown command or flag, missing argument) and every other host
  mistake (bad option value, bad image, missing file, an output that cannot be written)
  is one line on standard error, ``uvirt: ...``, status 1, no traceback.  Bare ``uvirt``
  is such a mistake (no command): usage on standard error, status 1, as ``git`` does;
  the full help is one ``uvirt --help`` away.
* A reader that goes away (``uvirt demo | head -1``) ends the command quietly with
  status 141 (128 + SIGPIPE, what a shell reports for ``yes | head -1``), except under
  ``uvirt run``, whose guest output is a chardev: QEMU drops bytes a chardev cannot
  write and the guest's own status stands.
* Ctrl-C: status 130 and the stop reason ``interrupted (SIGINT)``, whether the guest had
  started or not.

``UVIRT_DEBUG=1`` re-raises instead, to see the traceback.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys

from uvirt.errors import UsageError, UvirtError

#: (name, arguments, what it does) - the top-level help is generated from this table
COMMANDS = (
    ("run", "[QEMU options] -kernel IMAGE", "run a multiboot image with QEMU 7.2's options "
     "('uvirt run -help' lists them)"),
    ("asm", "PROG -o IMAGE [-D NAME=VALUE]", "assemble a guest program into a multiboot image"),
    ("lspci", "[-v|-vv] [-x|-xxx] [device options]", "the bus as a guest enumerates it, "
     "printed as pciutils' lspci does"),
    ("demo", "", "bundled guest programs, shown step by step"),
    ("trace", "[--trace-format F] [--filter-device D] [--filter-register R] [QEMU options]",
     "run, and print every device access decoded with the spec's names"),
    ("explain", "[QEMU options]", "run, and say what the virtio driver did wrong or left out"),
    ("inspect", "[--html F] [--last N] [QEMU options]",
     "run, and show the virtqueues at each kick, interrupt and the stop"),
    ("ivshmem-server", "[options]", "QEMU-compatible ivshmem server"),
    ("qtest", "record [options]", "drive an emulator over qtest, write QEMU's -qtest-log trace"),
    ("fuzz", "[options] -device DEV [device options]", "fuzz a device from guest code; findings "
     "become a qtest trace, a guest program and a test"),
)

#: each command's main (``module:function``), imported only when that command runs
MAINS = {
    "run": "uvirt.launch.runner:run_main",
    "asm": "uvirt.firmware:asm_main",
    "lspci": "uvirt.cli.lspci:lspci_main",
    "demo": "uvirt.cli.demo:demo_main",
    "trace": "uvirt.launch.traced:trace_main",
    "explain": "uvirt.launch.traced:explain_main",
    "inspect": "uvirt.launch.traced:inspect_main",
    "ivshmem-server": "uvirt.ivshmem.server:main",
    "qtest": "uvirt.qtest.record:main",
    "fuzz": "uvirt.fuzz.cli:main",
}

EXIT_USAGE = 1          # host mistakes, usage included (README "How a run ends")
EXIT_PIPE = 141         # 128 + SIGPIPE: the reader of standard output went away
EXIT_INTERRUPTED = 130  # 128 + SIGINT


def usage() -> str:
    width = max(len(f"{n} {a}".strip()) for n, a, _ in COMMANDS)
    lines = ["usage: uvirt COMMAND [ARGS]", ""]
    lines += [f"  uvirt {f'{n} {a}'.strip():<{width}}  {d}" for n, a, d in COMMANDS]
    return "\n".join(lines)


def full_help() -> str:
    from uvirt import __version__
    return (f"uvirt {__version__}: a Python full-system emulator on Unicorn that follows "
            f"QEMU 7.2's pc machine\n\n{usage()}\n\n"
            "  uvirt COMMAND --help   help for one command\n"
            "  uvirt --version        uvirt's version\n\n"
            "A host mistake (a bad option, a bad image, a missing file) prints one line,\n"
            "'uvirt: ...', and exits 1; a guest ends a run with its own status (README,\n"
            "\"How a run ends\").  UVIRT_DEBUG=1 shows tracebacks.")


def version_line() -> str:
    from uvirt import __version__
    return f"uvirt {__version__} (QEMU 7.2 compatible)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status = _dispatch(argv)
        sys.stdout.flush()                     # a full disk or closed pipe shows up here
        return status
    except BrokenPipeError:
        _stdout_gone()
        return EXIT_PIPE
    except SystemExit as e:                    # argparse's --help (0), sys.exit in a command
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _stdout_gone()
            return EXIT_PIPE
        return code
    except UvirtError as e:
        if os.environ.get("UVIRT_DEBUG"):
            raise
        for line in str(e).splitlines() or [""]:   # several only for a build's errors
            _error(line)
        return EXIT_USAGE
    except OSError as e:                       # an output the host cannot write
        if os.environ.get("UVIRT_DEBUG"):
            raise
        if e.errno == errno.EPIPE:
            _stdout_gone()
            return EXIT_PIPE
        where = e.filename if e.filename is not None else "standard output"
        _stdout_gone()                         # nothing more can reach it either
        _error(f"{where}: {e.strerror or e}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        from uvirt.cpu.machine import StopReason        # the same words as a stop during the run
        _error(StopReason.INTERRUPTED.value)
        return EXIT_INTERRUPTED


def _dispatch(argv: list[str]) -> int:
    if not argv:
        _error("no command given")
        print(usage(), file=sys.stderr)
        print("Try 'uvirt --help' for more information.", file=sys.stderr)
        return EXIT_USAGE
    cmd, rest = argv[0], argv[1:]
    if cmd in ("-h", "--help", "help"):
        print(full_help())
        return 0
    if cmd in ("-V", "--version", "-version", "version"):
        print(version_line())
        return 0
    if cmd in MAINS:
        module, function = MAINS[cmd].split(":")
        return getattr(importlib.import_module(module), function)(rest)
    names = ", ".join(n for n, _, _ in COMMANDS)
    raise UsageError(f"unknown command '{cmd}' (commands: {names}; see 'uvirt --help')")


def _error(message: str) -> None:
    try:
        print(f"uvirt: {message}", file=sys.stderr)
        sys.stderr.flush()
    except OSError:
        pass


def _stdout_gone() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of what is still
    buffered cannot fail again (Python's documented recipe for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
