"""The README's examples and its exit-status table hold: files its examples write are
ignored by git, and the table's statuses are the ones the CLI uses."""

import re
import subprocess
from pathlib import Path

from uvirt.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def written_by_examples() -> set[str]:
    """Output files named in the README: ``-o F``, ``file:F``, ``-screenshot F``, ``> F``."""
    names = set()
    for pattern in (r"(?<![\w-])-o\s+([\w./-]+)", r"\bfile:([\w./-]+)", r"-screenshot\s+([\w./-]+)",
                    r"(?<![0-9&])>\s*([\w./-]+)"):
        names.update(re.findall(pattern, README))
    return {n for n in names if n.isupper() is False and not n.startswith(("/dev/", "IMAGE"))
            and "." in n and n not in ("F",)}


def test_files_the_examples_write_are_ignored():
    names = written_by_examples()
    assert {"guest.bin", "out.txt", "out.png"} <= names, names
    r = subprocess.run(["git", "check-ignore", "--no-index", *sorted(names)], cwd=ROOT,
                       capture_output=True, text=True)
    assert set(r.stdout.split()) == names, names - set(r.stdout.split())


def _status(row_start: str) -> str:
    """The second cell of the table row that starts with ``row_start`` (``\\|`` is a pipe
    inside a cell)."""
    line = next((ln for ln in README.splitlines() if ln.startswith(f"| {row_start}")), None)
    assert line, row_start
    return re.split(r"(?<!\\)\|", line)[2].strip()


def test_exit_status_table_matches_the_cli():
    assert _status("host mistake") == str(cli.EXIT_USAGE)
    assert _status("a usage mistake") == str(cli.EXIT_USAGE)
    assert _status("bare `uvirt`") == str(cli.EXIT_USAGE)
    assert _status("the reader of standard output went away").startswith(f"{cli.EXIT_PIPE} ")
    assert _status("Ctrl-C before the guest started") == str(cli.EXIT_INTERRUPTED)
    assert _status("Ctrl-C (SIGINT)") == str(cli.EXIT_INTERRUPTED)
    assert _status("help asked for") == "0"


def test_the_contract_table_names_every_subcommand():
    section = README.split("### How a run ends", 1)[1].split("\n## ", 1)[0]
    for name, _, _ in cli.COMMANDS:
        assert f"`{name}`" in section, name
