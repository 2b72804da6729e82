"""A recorded guest run as plain data: what ``uvirt trace``, ``uvirt explain`` and
``uvirt inspect`` read.

A ``Recording`` holds the declared trace events of a run from the board's layout on, the
stop, the guest's debugcon text, the final state of every virtio function
(``virtio_state``), which is what ``uvirt explain`` reasons about, and the ring
inspector's steps.  It is JSON-able (``Recording.to_json`` / ``from_json``), so a failing
test can save it and a tool can explain it later.  ``uvirt.launch.traced.traced_run``
makes one from a ``uvirt run`` command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from uvirt.trace import TraceEvent


@dataclass
class Recording:
    events: list[TraceEvent]
    exit_code: int = 0
    stop: str = ""
    debugcon: str = ""
    devices: list[dict] = field(default_factory=list)       # virtio_state() at the end
    snapshots: list[dict] = field(default_factory=list)     # inspector steps

    def to_json(self) -> str:
        return json.dumps({"events": [{"event": e.name, **e.fields} for e in self.events],
                           "exit_code": self.exit_code, "stop": self.stop, "debugcon": self.debugcon,
                           "devices": self.devices, "snapshots": self.snapshots})

    @classmethod
    def from_json(cls, text: str) -> "Recording":
        obj = json.loads(text)
        events = [TraceEvent.from_json(json.dumps(e)) for e in obj.pop("events")]
        return cls(events, **obj)


def debugcon_text(events: list[TraceEvent]) -> str:
    from uvirt.observe.decode import decode_records
    return "".join(json.loads(d.value.removesuffix(" (no newline)")) + "\n"
                   for d in decode_records(events, devices=("debugcon",)))
