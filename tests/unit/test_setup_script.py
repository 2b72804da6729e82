"""scripts/setup says what it does: a line per step with the time it took."""

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _setup_copy(tmp_path, venv_python: str):
    """scripts/setup in an empty project whose .venv/bin/python (standing in for pip) is
    the given shell script -> a function that runs it."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup", tmp_path / "scripts" / "setup")
    (tmp_path / "pyproject.toml").write_text("")
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(venv_python)
    (venv_bin / "python").chmod(0o755)
    return lambda: subprocess.run(["bash", str(tmp_path / "scripts" / "setup")], capture_output=True,
                                  text=True, timeout=60)


def test_setup_prints_each_step_and_its_time(tmp_path):
    setup = _setup_copy(tmp_path, "#!/bin/sh\nexit 0\n")
    r = setup()
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert re.fullmatch(r"setup: upgrading pip \.\.\. done \(\d+\.\d s\)", lines[0]), lines
    assert re.fullmatch(r"setup: installing uvirt \(editable\) \.\.\. done \(\d+\.\d s\)", lines[1])
    assert re.fullmatch(r"setup: ready in \d+\.\d s .*", lines[-1])
    again = setup()
    assert again.stderr.splitlines()[0] == "setup: .venv is up to date with pyproject.toml"


def test_a_failing_step_shows_its_output(tmp_path):
    r = _setup_copy(tmp_path, "#!/bin/sh\necho 'pip: no network' >&2\nexit 3\n")()
    assert r.returncode == 1
    assert "setup: upgrading pip ... failed:\npip: no network" in r.stderr
