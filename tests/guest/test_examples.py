"""examples/guest-tests/: guest programs written from the README alone, run by pytest
through the plugin, and (``--uvirt-qemu``) compared with QEMU 7.2."""

import re
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "guest-tests"

pytest_plugins = ("pytester",)


pytestmark = pytest.mark.usefixtures("uvirt_plugin_installed")


def _summary(result) -> str:
    return [ln for ln in result.outlines if re.match(r"^=+ .* in [\d.]+s", ln)][-1]


def test_examples_pass_by_name(pytester):
    result = pytester.runpytest("-v", "-p", "no:cacheprovider", str(EXAMPLES))
    result.stdout.fnmatch_lines(["*test_edu_basics.S::test_edu_basics SUBPASSED*6! is 720*",
                                 "*unittests.cfg::ram-1G SUBPASSED*mem_upper equals the e820*"])
    assert re.search(r" 5 passed, 19 subtests passed ", _summary(result)), result.stdout.str()


@pytest.mark.qemu
def test_examples_agree_with_qemu(pytester):
    result = pytester.runpytest("-v", "-p", "no:cacheprovider", "--uvirt-qemu", str(EXAMPLES))
    assert len([ln for ln in result.outlines if "SUBPASSED[QEMU 7.2 transcript]" in ln]) == 5
    assert "failed" not in _summary(result), result.stdout.str()
