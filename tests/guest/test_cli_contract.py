"""The exit-status contract (README "How a run ends", uvirt/cli/main.py) over every subcommand:
help asked for goes to stdout with status 0; a usage mistake is one line on stderr with
status 1; a reader that goes away or a full disk never shows a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from uvirt.cli.main import COMMANDS, MAINS

UVIRT = [sys.executable, "-m", "uvirt"]
SUBCOMMANDS = [name for name, _, _ in COMMANDS]

#: how each subcommand is asked for help, and a flag it does not know
HELP = {"run": ["-help", "--help", "-h"], "asm": ["--help", "-h"], "lspci": ["--help", "-h"],
        "demo": ["--help", "-h"], "ivshmem-server": ["--help", "-h"], "qtest": ["--help", "-h"],
        "trace": ["--help", "-h"], "explain": ["--help", "-h"], "inspect": ["--help", "-h"],
        "fuzz": ["--help", "-h"]}
BOGUS = {"run": ["-bogus"], "asm": ["pci_enum.S", "-o", "/nonexistent/g.bin", "--bogus"], "lspci": ["--bogus"], "demo": ["--bogus"],
         "ivshmem-server": ["--bogus"], "qtest": ["--bogus"], "trace": ["--bogus"],
         "explain": ["--bogus"], "inspect": ["--bogus"], "fuzz": ["--bogus"]}


def uvirt(*args: str, stdout=subprocess.PIPE, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run(UVIRT + list(args), stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uvirt: "), r.stderr
    return lines[0]


def test_every_subcommand_is_covered():
    assert set(HELP) == set(BOGUS) == set(SUBCOMMANDS) == set(MAINS)


@pytest.mark.parametrize("cmd, flag", [(c, f) for c in SUBCOMMANDS for f in HELP[c]])
def test_help_on_stdout_status_0(cmd, flag):
    r = uvirt(cmd, flag)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert "usage" in r.stdout.lower()


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_unknown_flag_is_one_line_status_1(cmd):
    r = uvirt(cmd, *BOGUS[cmd])
    line = one_line_error(r)
    assert "bogus" in line
    assert r.stdout == ""


@pytest.mark.parametrize("args", [["asm"], ["qtest"], ["qtest", "nosuch"], ["run"]])
def test_missing_arguments_are_one_line_status_1(args):
    one_line_error(uvirt(*args))


def test_unknown_command():
    line = one_line_error(uvirt("frobnicate"))
    assert "unknown command 'frobnicate'" in line


def test_bare_uvirt_is_a_usage_error_with_the_usage_on_stderr():
    r = uvirt()
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("uvirt: no command given\nusage: uvirt COMMAND")
    for name in SUBCOMMANDS:
        assert f"uvirt {name}" in r.stderr


@pytest.mark.parametrize("flag", ["-h", "--help", "help"])
def test_top_level_help(flag):
    r = uvirt(flag)
    assert r.returncode == 0 and r.stderr == ""
    assert "``" not in r.stdout and "usage: uvirt COMMAND" in r.stdout   # no docstring markup
    for name in SUBCOMMANDS:
        assert f"uvirt {name}" in r.stdout


@pytest.mark.parametrize("flag", ["-V", "--version", "version"])
def test_version(flag):
    from uvirt import __version__
    r = uvirt(flag)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"uvirt {__version__} (QEMU 7.2 compatible)\n", "")


def _closed_pipe(*args: str) -> subprocess.CompletedProcess:
    """Run with stdout a pipe whose reader is already gone (as `| head -1` once head has
    exited): every write fails with EPIPE."""
    rd, wr = os.pipe()
    os.close(rd)
    try:
        return subprocess.run(UVIRT + list(args), stdout=wr, stderr=subprocess.PIPE, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
    finally:
        os.close(wr)


@pytest.mark.parametrize("args", [["--help"], ["run", "-help"], ["run", "-device", "help"],
                                  ["lspci", "-vv"], ["demo"], ["asm", "--help"],
                                  ["qtest", "record", "--help"], ["ivshmem-server", "-h"]])
def test_closed_pipe_is_quiet(args):
    r = _closed_pipe(*args)
    assert r.stderr == "", r.stderr
    assert r.returncode == 141


@pytest.mark.parametrize("args", [["--help"], ["run", "-help"], ["lspci"], ["demo"]])
def test_full_disk_on_stdout_is_one_line(args):
    with open("/dev/full", "w") as full:
        r = uvirt(*args, stdout=full)
    line = one_line_error(r)
    assert "No space left on device" in line


def test_head_dash_1_through_a_shell():
    r = subprocess.run(" ".join(UVIRT) + " demo | head -1", shell=True, capture_output=True,
                       text=True, timeout=60)
    assert r.stdout.startswith("uvirt demo:") and r.stderr == ""
