"""The pytest plugin (uvirt.testing.pytest_plugin), driven through pytest's own ``pytester``."""

import re
import shutil
import xml.etree.ElementTree as ET

import pytest

from uvirt.testing.guest_tests import GuestSpecError, header_options, parse_manifest

pytest_plugins = ("pytester",)


pytestmark = pytest.mark.usefixtures("uvirt_plugin_installed")

PASSING = """\
# [uvirt]
# extra_params = -device edu
# groups = edu smoke
.include "uvirt.inc"
main:
    mov eax, 0x11e81234
    call pci_find
    REQUIRE_FOUND "FAIL: no edu device"
    REPORT_TRUE 1, "edu is on the bus"
    REPORT_EQ 4, 4, "four is four"
    call report_summary
    ret
"""

FAILING = """\
.include "uvirt.inc"
main:
    REPORT_TRUE 1, "first check"
    REPORT_EQ 2, 3, "two is three"
    call report_summary
    ret
"""

CRASHING = """\
.include "uvirt.inc"
main:
    PUTSN "about to jump nowhere"
    mov eax, 0xdead0000
    jmp eax
"""


def _outcomes(result, **want):
    """``RunResult.assert_outcomes`` for the keys given, subtest counts included
    (pytester's own summary parser reads "3 subtests passed" as "3 subtests")."""
    summary = [ln for ln in result.outlines if re.match(r"^=+ .* in [\d.]+s", ln)][-1]
    got = {}
    for n, sub, word in re.findall(r"(\d+) (subtests )?(\w+)", summary):
        word = {"error": "errors", "warning": "warnings"}.get(word, word)
        got[("subtests_" if sub else "") + word] = int(n)
    assert {k: got.get(k, 0) for k in want} == want, result.stdout.str()


def test_header_block():
    opts, line = header_options(PASSING)
    assert opts == {"extra_params": "-device edu", "groups": "edu smoke"} and line == 1
    assert header_options(FAILING) is None


def test_manifest_sections(tmp_path):
    (tmp_path / "edu.S").write_text(PASSING)
    (tmp_path / "unittests.cfg").write_text(
        "[edu-big]\nfile = edu.S\nextra_params = -device edu -m 256M\ntimeout = 5s\n"
        "groups = edu\nexit_status = 0\ndefines = X=3 Y\n")
    (spec,) = parse_manifest(tmp_path / "unittests.cfg")
    assert spec.name == "edu-big" and spec.extra_params == ("-device", "edu", "-m", "256M")
    assert spec.timeout == 5.0 and spec.defines == {"X": 3, "Y": 1} and spec.groups == ("edu",)
    (tmp_path / "unittests.cfg").write_text("[x]\nfile = edu.S\nsmp = 2\n")
    with pytest.raises(GuestSpecError, match="unknown key 'smp'"):
        parse_manifest(tmp_path / "unittests.cfg")


def test_reports_by_name(pytester):
    pytester.makefile(".S", test_edu=PASSING, test_bad=FAILING)
    result = pytester.runpytest("-v", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines([
        "*test_bad.S::test_bad SUBPASSED*first check*",
        "*test_bad.S::test_bad SUBFAILED*two is three (got 00000002, want 00000003)*",
        "*test_edu.S::test_edu SUBPASSED*edu is on the bus*",
        "*test_edu.S::test_edu SUBPASSED*four is four*",
        "*test_edu.S::test_edu PASSED*",
    ])
    result.stdout.fnmatch_lines([
        "*guest program*test_bad.S*",
        "*FAIL: two is three*",
        "*exit code 3, expected 1*",
        "*last * trace events:*",
        "*debugcon 'SUMMARY: 2 tests, 1 failures\\n'*",
    ])
    _outcomes(result, passed=1, failed=2, subtests_passed=3)


def test_crash_shows_faulting_instruction(pytester):
    pytester.makefile(".S", test_crash=CRASHING)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*guest stopped: guest fault: instruction fetch from unmapped*",
                                 "*insn:*", "*about to jump nowhere*"])
    _outcomes(result, failed=1)


def test_groups_select_with_k_and_manifest_entries(pytester):
    pytester.makefile(".S", test_edu=PASSING, helper_prog=FAILING)
    pytester.makefile(".cfg", unittests="[expected-to-fail]\nfile = helper_prog.S\n"
                                        "xfail = shows a FAIL on purpose\n"
                                        "[exits-with-3]\nfile = helper_prog.S\nexit_status = 1\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "smoke")
    _outcomes(result, passed=1, deselected=2)
    result = pytester.runpytest("-p", "no:cacheprovider", "unittests.cfg")
    # exit_status 1 matches, but the FAIL line still fails the test
    _outcomes(result, failed=2, xfailed=1)


def test_bundled_firmware_is_not_collected(pytester):
    from uvirt.firmware import FIRMWARE_DIR
    assert not list(FIRMWARE_DIR.glob("test_*.S"))
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", str(FIRMWARE_DIR))
    result.stdout.fnmatch_lines(["*no tests collected*"])


def test_fixtures(pytester):
    pytester.makepyfile(test_fix='''
        import pytest
        from uvirt.firmware import build, bundled

        def test_guest_inline(guest):
            run = guest("main:\\n    REPORT_TRUE 1, \\"inline works\\"\\n    ret\\n")
            assert [r.message for r in run.reports] == ["inline works"]
            run.check()

        @pytest.mark.uvirt("-device edu")
        def test_guest_marker(guest):
            run = guest("main:\\n    mov eax, 0x11e81234\\n    call pci_find\\n"
                        "    REQUIRE_FOUND \\"FAIL: none\\"\\n    ret\\n")
            run.check()

        @pytest.mark.uvirt("-device", "edu")
        def test_machine(machine):
            assert any(f.name == "edu" for f in machine.pci.functions.values())
            machine.load_kernel(build(bundled("pci_enum.S")))
            stop = machine.run(timeout=10)
            assert stop.exit_code == 1 and "1234:11e8" in machine.debugcon.text
    ''')
    _outcomes(pytester.runpytest("-p", "no:cacheprovider"), passed=3)


def test_xdist_and_junit(pytester):
    pytester.makefile(".S", test_edu=PASSING, test_bad=FAILING)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider",
                                           "--junitxml=out.xml")
    _outcomes(result, passed=1, failed=2)
    root = ET.parse(pytester.path / "out.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"test_edu", "test_bad"}
    props = [(p.get("name"), p.get("value")) for p in cases["test_edu"].iter("property")]
    assert ("guest PASS", "edu is on the bus") in props
    assert "two is three" in cases["test_bad"].find("failure").get("message")


@pytest.mark.qemu
def test_uvirt_qemu_compares(pytester):
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 not installed")
    pytester.makefile(".S", test_edu=PASSING)
    result = pytester.runpytest("-v", "-p", "no:cacheprovider", "--uvirt-qemu")
    result.stdout.fnmatch_lines(["*SUBPASSED*QEMU 7.2 transcript*"])
    _outcomes(result, passed=1, subtests_passed=3)


def test_bad_header_is_a_collection_error_and_plugin_can_be_disabled(pytester):
    pytester.makefile(".S", test_bad_header="# [uvirt]\n# memory = 256M\n.include \"uvirt.inc\"\nmain:\n    ret\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*test_bad_header.S:1: unknown key 'memory' (keys: file, extra_params*"])
    _outcomes(result, errors=1)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:uvirt")
    result.stdout.fnmatch_lines(["*no tests ran*"])


def test_guest_fixture_check_explains_a_failure(pytester):
    pytester.makepyfile(test_fail='''
        def test_guest_fails(guest):
            run = guest("main:\\n    REPORT_EQ 1, 2, \\"one is two\\"\\n    call report_summary\\n")
            assert [r.kind for r in run.reports] == ["FAIL"] and run.guest_status == 1
            run.check()
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*FAIL: one is two (got 00000001, want 00000002)*",
                                 "*exit code 3, expected 1*", "*last * trace events:*"])
    _outcomes(result, failed=1)
