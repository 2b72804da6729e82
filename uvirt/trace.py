"""Declared trace events (after QEMU's ``trace-events`` files).

Every guest-visible access is one event with a fixed format.  Formats carry no
timestamps and no host addresses, so traces diff cleanly against golden transcripts.
Emitting is guarded by ``Tracer.enabled`` at the call site, so a machine that does not
trace pays one attribute test per access.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, TextIO

#: name -> format.  Adding an event means adding a line here, nowhere else.
EVENTS: dict[str, str] = {
    "pio_read": "pio {port:#06x} size={size} -> {value:#x}",
    "pio_write": "pio {port:#06x} size={size} <- {value:#x}",
    "mmio_read": "mmio {addr:#010x} size={size} -> {value:#x}",
    "mmio_write": "mmio {addr:#010x} size={size} <- {value:#x}",
    "pci_cfg_read": "pci {bdf} @{offset:#04x} size={size} -> {value:#x}",
    "pci_cfg_write": "pci {bdf} @{offset:#04x} size={size} <- {value:#x}",
    "pci_bar_map": "pci {bdf} BAR{index} {old} -> {new}",
    "unassigned_page": "unassigned page {page:#010x} backed by zeros",
    "guest_error": "guest error {kind}: {detail}",
    "interrupt": "interrupt vector={vector:#04x} {kind} eip={eip:#010x} -> {result}",
    "rom_write_dropped": "write to read-only memory {address:#010x} size={size} dropped",
    "stop": "stop {reason} eip={eip:#010x}",
}


@dataclass(frozen=True)
class TraceEvent:
    name: str
    fields: dict

    def __str__(self) -> str:
        return EVENTS[self.name].format(**self.fields)


@dataclass
class Tracer:
    enabled: bool = False
    sinks: list[Callable[[TraceEvent], None]] = field(default_factory=list)

    def emit(self, name: str, **fields) -> None:
        if name not in EVENTS:
            raise KeyError(f"undeclared trace event {name!r}")
        ev = TraceEvent(name, fields)
        for sink in self.sinks:
            sink(ev)

    def record(self) -> list[TraceEvent]:
        """Start recording into a list (tests, teaching tools)."""
        out: list[TraceEvent] = []
        self.sinks.append(out.append)
        self.enabled = True
        return out

    def to_file(self, f: TextIO) -> None:
        self.sinks.append(lambda ev: f.write(f"{ev}\n"))
        self.enabled = True
