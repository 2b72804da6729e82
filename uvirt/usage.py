"""The argument parser every ``uvirt`` subcommand uses.  A leaf module beside
``errors.py``: the commands that live outside ``uvirt.cli`` (``uvirt asm`` in
firmware.py, ``uvirt qtest record``) import it without importing the CLI layer."""

from __future__ import annotations

import argparse
import sys

from uvirt.errors import UsageError


class UsageParser(argparse.ArgumentParser):
    """argparse with the contract: ``--help`` on stdout, status 0 (argparse's own); a
    usage mistake raises ``UsageError`` (one line, status 1) instead of argparse's
    usage dump and status 2."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog.removeprefix('uvirt ')}: {message}")

    def print_help(self, file=None) -> None:
        # argparse swallows write errors here; a closed pipe or a full disk must reach main
        (file or sys.stdout).write(self.format_help())
