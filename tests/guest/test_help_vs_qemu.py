"""uvirt run's help options beside QEMU 7.2's: the same shapes, and where both describe the
same thing (a machine, a device's category and bus, a property's type and default) the
same facts."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from uvirt.launch.device_table import DEVICE_TYPES
from uvirt.testing.qemu import qemu_binary

pytestmark = pytest.mark.qemu

DEVINFO = re.compile(r'^name "(?P<name>[^"]+)"(?:, bus (?P<bus>[^,]+))?(?:, alias "[^"]+")?'
                     r'(?:, desc "[^"]*")?(?:, no-user)?$')
PROPERTY = re.compile(r"^  (?P<name>[\w.-]+)=<(?P<type>.+?)>(?: +- (?P<desc>.*?))?"
                      r"(?: \(default: (?P<default>.*)\))?$")


def run(prog: list[str], *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run(prog + list(args), capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    return r


def uvirt(*args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "uvirt", "run"], *args)


def qemu(*args: str) -> subprocess.CompletedProcess:
    return run([qemu_binary() or "qemu-system-x86_64"], *args)


def both(*args: str) -> tuple[str, str]:
    u, q = uvirt(*args), qemu(*args)
    assert (u.returncode, q.returncode) == (0, 0), (u.stderr, q.stderr)
    assert u.stderr == ""
    return u.stdout, q.stdout


@pytest.mark.parametrize("flag", ["-version", "--version"])
def test_version(flag):
    u, q = both(flag)
    shape = re.compile(r"^QEMU emulator version (\d+)\.(\d+)\.\d+ \((.+)\)$")
    mu, mq = shape.match(u.splitlines()[0]), shape.match(q.splitlines()[0])
    assert mu and mq
    assert mu.group(1, 2) == mq.group(1, 2) == ("7", "2")
    assert mu.group(3).startswith("uvirt ")
    assert len(u.splitlines()) == len(q.splitlines()) == 2


def test_machine_help():
    u, q = both("-machine", "help")
    assert u.splitlines()[0] == q.splitlines()[0] == "Supported machines are:"
    qlines = set(q.splitlines())
    for line in u.splitlines()[1:]:
        if line.startswith("none "):            # uvirt offers none only under qtest
            assert any(ql.startswith("none ") for ql in qlines)
            continue
        assert line in qlines, line


def _devinfos(text: str) -> dict[str, tuple[str, str | None]]:
    out, cat = {}, None
    for line in text.splitlines():
        if line.endswith(" devices:"):
            cat = line[:-len(" devices:")]
        elif line:
            m = DEVINFO.match(line)
            assert m, line
            out[m["name"]] = (cat, m["bus"])
    return out


def test_device_help_same_categories_and_buses():
    u, q = both("-device", "help")
    ours, theirs = _devinfos(u), _devinfos(q)
    assert set(ours) == set(DEVICE_TYPES)
    for name, (cat, bus) in ours.items():
        if name == "virtio-fb-pci":             # uvirt's own device: QEMU has none
            continue
        assert theirs[name] == (cat, bus), name
    heads = [line for line in u.splitlines() if line.endswith(" devices:")]
    qheads = [line for line in q.splitlines() if line.endswith(" devices:")]
    assert heads == [h for h in qheads if h in heads]          # QEMU's order


def _props(text: str) -> dict[str, re.Match]:
    lines = text.splitlines()
    assert re.fullmatch(r"\S+ options:", lines[0]), lines[0]
    out = {}
    for line in lines[1:]:
        m = PROPERTY.match(line)
        assert m, line
        out[m["name"]] = m
    return out


#: where uvirt's table deliberately differs from QEMU's (type or default), and why
KNOWN_DIFFERENCES: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("driver", sorted(d for d in DEVICE_TYPES if d != "virtio-fb-pci"))
def test_device_properties_agree_with_qemu(driver):
    u, q = both("-device", f"{driver},help")
    ours, theirs = _props(u), _props(q)
    for name, m in ours.items():
        if name == "memory-regions" or name == "seed" or (driver, name) in KNOWN_DIFFERENCES:
            continue                            # uvirt's own properties
        assert name in theirs, f"{driver}.{name} is not a QEMU property"
        t = theirs[name]
        if m["type"] != t["type"]:
            continue                            # uvirt types links and chardevs as str
        if m["default"] is not None:
            assert m["default"] == t["default"], f"{driver}.{name}"


def test_help_lists_qemu_options_in_qemus_layout():
    u, q = both("-help")
    assert u.splitlines()[1] == "usage: uvirt run [options] -kernel IMAGE"
    qemu_options = set(re.findall(r"^-([\w-]+)", q, re.M))
    sections = [line for line in u.splitlines() if line.endswith(":") and not line.startswith(" ")]
    qsections = {line for line in q.splitlines() if line.endswith(":")}
    uvirt_own = [s for s in sections if s.startswith("uvirt's own")]
    assert uvirt_own and all(s in qsections for s in sections[:sections.index(uvirt_own[0])])
    for name in re.findall(r"^-([\w-]+)", u, re.M):
        if name in qemu_options or name.startswith("uvirt-") or name == "screenshot":
            continue
        # QEMU knows options its -help does not list (-M, -qmp-pretty): not "invalid option"
        assert f"-{name}: invalid option" not in qemu(f"-{name}", "x", "-nosuch").stderr, name
    for line in u.splitlines():                  # an option, or its text from column 16
        assert not line.startswith(" ") or line.startswith(" " * 16) or line == "", line


@pytest.mark.parametrize("option", ["-chardev", "-object", "-display", "-cpu", "-vga"])
def test_lists_have_qemus_heading_and_a_subset_of_its_entries(option):
    u, q = both(option, "help")
    ulines, qlines = u.splitlines(), q.splitlines()
    if option != "-vga":
        assert ulines[0] == qlines[0]
    for line in ulines[1 if option != "-vga" else 0:]:
        key = line.split()[:2] if option == "-cpu" else line.split()[:1]
        assert any(ql.split()[:len(key)] == key for ql in qlines), line
