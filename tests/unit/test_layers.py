"""The layers of docs/architecture.md hold: import-linter checks the contracts written in
pyproject.toml ([tool.importlinter]), so a change that breaks one fails the suite, and
so CI (.ci/run runs the suite); and no module of uvirt/ imports itself through others
(an import circle, at module level or inside a function, as grimp reads them)."""
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


# The import circles in the `uvirt` package found in the working directory: one line per
# set of modules that import each other (a strongly connected component of grimp's import
# graph), as a cycle from its first module.
CIRCLES = """
import grimp
g = grimp.build_graph("uvirt", cache_dir=None)
done = set()
for a in sorted(g.modules):
    if a in done:
        continue
    circle = {a} | {b for b in g.find_upstream_modules(a) if g.chain_exists(importer=b, imported=a)}
    done |= circle
    if len(circle) > 1:
        back = min(b for b in g.find_modules_directly_imported_by(a) if b in circle)
        print(" -> ".join((a,) + tuple(g.find_shortest_chain(importer=back, imported=a))))
"""


def circles(where: Path) -> list[str]:
    r = subprocess.run([sys.executable, "-c", CIRCLES], cwd=where, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


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


def test_no_import_circle_in_uvirt():
    assert circles(ROOT) == []


def test_an_import_circle_fails_the_check(tmp_path):
    """The same check on a copy in which the virtio features module imports a device."""
    shutil.copytree(ROOT / "uvirt", tmp_path / "uvirt", ignore=shutil.ignore_patterns("__pycache__"))
    features = tmp_path / "uvirt" / "virtio" / "features.py"
    features.write_text(features.read_text() + "\n\ndef _late():\n    import uvirt.virtio.rng  # a circle\n")
    found = circles(tmp_path)
    assert len(found) == 1, found
    cycle = found[0].split(" -> ")
    assert cycle[0] == cycle[-1] and {"uvirt.virtio.features", "uvirt.virtio.rng"} <= set(cycle), found
