"""Every event the code emits is declared (an undeclared one raised KeyError under
-uvirt-trace the first time a guest took an exception)."""

import re
from pathlib import Path

from uvirt.trace import EVENTS

ROOT = Path(__file__).resolve().parents[2] / "uvirt"


def test_every_emitted_event_is_declared():
    emitted = set()
    for path in ROOT.rglob("*.py"):
        emitted |= set(re.findall(r"\.emit\(\s*\"(\w+)\"", path.read_text()))
    assert emitted, "no emit() calls found"
    assert emitted <= set(EVENTS), emitted - set(EVENTS)
