"""The layers of docs/architecture.md hold: import-linter checks the contracts written in
pyproject.toml ([tool.importlinter]), so a change that breaks one fails the suite, and
so CI (.ci/run runs the suite)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# import-linter's command, run so that `uvirt` is the package found in the working
# directory (python -c puts it first on sys.path, before the editable install's finder)
LINT = ("import sys; from importlinter.cli import lint_imports_command; "
        "sys.argv = ['lint-imports', '--no-cache', sys.argv[1]]; lint_imports_command()")


def lint(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", LINT, str(ROOT / "pyproject.toml")], cwd=where,
                          capture_output=True, text=True, timeout=120)


def test_every_layering_contract_holds():
    r = lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 broken" in r.stdout


def test_an_import_across_a_layer_fails_the_check(tmp_path):
    """The same check on a copy of the package in which the virtio core imports the CPU."""
    shutil.copytree(ROOT / "uvirt", tmp_path / "uvirt", ignore=shutil.ignore_patterns("__pycache__"))
    rng = tmp_path / "uvirt" / "virtio" / "rng.py"
    rng.write_text(rng.read_text() + "\nimport uvirt.cpu.machine  # crosses a layer\n")
    r = lint(tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the virtio core never imports" in r.stdout and "BROKEN" in r.stdout
    assert "uvirt.virtio.rng -> uvirt.cpu.machine" in r.stdout
