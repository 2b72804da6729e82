"""docs/tutorial/: every lesson prints exactly what its page shows, passes its own checks,
and (under QEMU) agrees with QEMU 7.2.

``python tests/guest/test_tutorial.py --update`` rewrites the expected-output blocks from
uvirt's runs (then read the diff: the pages explain those lines)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from uvirt.testing.guest_tests import build_program, run_guest, spec_from_source

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial"
LESSONS = sorted(p for p in TUTORIAL.iterdir() if p.is_dir())
BLOCK = re.compile(r"(<!-- expected output -->\n```text\n)(.*?)(```)", re.S)
TWO_GUESTS = TUTORIAL / "08-ivshmem-two-guests" / "two_guests.py"

pytest_plugins = ("pytester",)


pytestmark = pytest.mark.usefixtures("uvirt_plugin_installed")


def expected(lesson: Path) -> str:
    m = BLOCK.search((lesson / "README.md").read_text())
    assert m, f"lesson {lesson.name}: its README.md has no expected-output block"
    return m.group(2)


def actual(lesson: Path, *extra: str) -> str:
    if lesson.name.startswith("08"):
        proc = subprocess.run([sys.executable, str(TWO_GUESTS), *extra], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout
    (program,) = lesson.glob("test_*.S")
    spec = spec_from_source(program)
    image = build_program(spec, _tmp())
    return run_guest(image, spec.extra_params, timeout=spec.timeout, trace_tail=0).output


def _tmp() -> Path:
    import tempfile
    return Path(tempfile.mkdtemp(prefix="uvirt-tutorial-"))


def test_eight_lessons_with_pages():
    assert [p.name[:2] for p in LESSONS] == [f"{i:02}" for i in range(1, 9)]
    for lesson in LESSONS:
        assert (lesson / "README.md").exists()
        assert re.search(r"§|docs/specs/", (lesson / "README.md").read_text()), lesson.name


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.name for p in LESSONS])
def test_lesson_prints_what_its_page_shows(lesson):
    out = actual(lesson)
    assert "FAIL" not in out
    assert out == expected(lesson)


def test_lessons_pass_under_the_plugin(pytester):
    result = pytester.runpytest("-v", "-p", "no:cacheprovider", str(TUTORIAL))
    outcome = [ln for ln in result.outlines if re.match(r"^=+ .* in [\d.]+s", ln)][-1]
    assert re.search(r" 8 passed,", outcome) and "failed" not in outcome, result.stdout.str()


@pytest.mark.qemu
def test_lessons_agree_with_qemu(pytester):
    result = pytester.runpytest("-v", "-p", "no:cacheprovider", "--uvirt-qemu", str(TUTORIAL))
    compared = [ln for ln in result.outlines if "SUBPASSED[QEMU 7.2 transcript]" in ln]
    assert len(compared) == 6, result.stdout.str()          # lesson 7 is uvirt-only
    assert "failed" not in result.outlines[-1], result.stdout.str()


@pytest.mark.qemu
def test_two_guests_uvirt_and_qemu():
    want = expected(TUTORIAL / "08-ivshmem-two-guests").replace("guest B (uvirt)", "guest B (QEMU 7.2)")
    assert actual(TUTORIAL / "08-ivshmem-two-guests", "--qemu") == want


def update() -> None:
    for lesson in LESSONS:
        page = lesson / "README.md"
        text = page.read_text()
        out = actual(lesson)
        page.write_text(BLOCK.sub(lambda m: m.group(1) + out + m.group(3), text, count=1))
        print(f"{page.relative_to(TUTORIAL.parent.parent)}: {len(out.splitlines())} lines")


if __name__ == "__main__" and "--update" in sys.argv:
    update()
