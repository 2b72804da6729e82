"""Every pointer to a document resolves inside the repository.

Code, README, guest headers and tests cite the project's notes (``docs/unicorn-notes.md
§7 item 15``).  A reference to a file the repository does not have, to a section its
document does not have, or to the engineers' scratch notes a user never sees, fails."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC_REF = re.compile(r"(?<![\w/.:-])((?:\.\./|\./)?[\w./-]*[\w-]\.md)(#[\w-]+)?\b")
SECTION_REF = re.compile(r"(docs/[\w.-]+\.md)\s+(?:§|\[?section\s+)(\d+(?:\.\d+)?)")
NAMED_REF = re.compile(r"(docs/[\w.-]+\.md)\s+\"([^\"]+)\"")
#: documents that exist only on the engineers' machines, by the names the code used
SCRATCH = re.compile(r"style-anchors|fuzzing-facts|seabios-facts|/work/shared|\.\./shared|"
                     r"unicorn-perf/")


def tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    files = []
    for name in out.stdout.splitlines():
        path = ROOT / name
        if name.startswith("tests/data/") or not path.is_file() or path == Path(__file__).resolve():
            continue                                # (this file names bad references on purpose)
        try:
            path.read_text()
        except UnicodeDecodeError:
            continue
        files.append(path)
    return files


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(doc: Path) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^#+\s+(.*)$", doc.read_text(), re.M)]


def section_numbers(doc: Path) -> set[str]:
    numbers: set[str] = set()
    for h in headings(doc):
        m = re.match(r"(\d+)(?:-(\d+))?(\.\d+)?[.\s]", h + " ")
        if not m:
            continue
        if m.group(2):
            numbers.update(str(n) for n in range(int(m.group(1)), int(m.group(2)) + 1))
        else:
            numbers.add(m.group(1) + (m.group(3) or ""))
    return numbers


def resolve(ref: str, where: Path) -> Path | None:
    for base in (where.parent, ROOT):
        cand = (base / ref).resolve()
        if cand.is_file() and ROOT in cand.parents:
            return cand
    return None


FILES = tracked_text_files()


def test_the_notes_are_in_the_repository():
    for name in ("qemu-7.2-observed.md", "unicorn-notes.md", "virtio-pci-facts.md",
                 "qemu-qtest-suite.md", "README.md"):
        assert (ROOT / "docs" / name).is_file(), name


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_references_resolve(path):
    text = path.read_text()
    problems = []
    for line_no, line in enumerate(text.splitlines(), 1):
        where = f"{path.relative_to(ROOT)}:{line_no}"
        if "http://" in line or "https://" in line:
            line = re.sub(r"https?://\S+", "", line)      # other sites' pages are theirs
        m = SCRATCH.search(line)
        if m:
            problems.append(f"{where}: points at notes users do not have: {m.group(0)!r}")
        for ref, anchor in DOC_REF.findall(line):
            target = resolve(ref, path)
            if target is None:
                problems.append(f"{where}: {ref} is not a file in the repository")
            elif anchor and anchor[1:] not in {slug(h) for h in headings(target)}:
                problems.append(f"{where}: {ref} has no section {anchor}")
        for ref, number in SECTION_REF.findall(line):
            target = resolve(ref, path)
            if target is not None and number not in section_numbers(target):
                problems.append(f"{where}: {ref} has no section §{number}")
        for ref, name in NAMED_REF.findall(line):
            target = resolve(ref, path)
            if target is not None and not any(name.lower() in h.lower() for h in headings(target)):
                problems.append(f"{where}: {ref} has no section named {name!r}")
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_dangling_reference(tmp_path):
    """The patterns above find what they are meant to find."""
    line = 'see unicorn-notes.md §0 and docs/virtio-pci-facts.md §42 and style-anchors R5'
    assert DOC_REF.findall(line)[0][0] == "unicorn-notes.md"
    assert resolve("unicorn-notes.md", ROOT / "uvirt" / "machine.py") is None
    assert SECTION_REF.findall(line) == [("docs/virtio-pci-facts.md", "42")]
    assert "42" not in section_numbers(ROOT / "docs" / "virtio-pci-facts.md")
    assert "7.3" in section_numbers(ROOT / "docs" / "virtio-pci-facts.md")
    assert SCRATCH.search(line)
