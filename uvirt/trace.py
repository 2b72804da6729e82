"""Declared trace events (after QEMU's ``trace-events`` files).

Every guest-visible access is one event with a fixed format.  Formats carry no
timestamps and no host addresses, so traces diff cleanly against golden transcripts.
Emitting is guarded by ``Tracer.enabled`` at the call site, so a machine that does not
trace pays one attribute test per access.
"""

from __future__ import annotations

import json
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
    "smm": "smm {what} smbase={smbase:#010x} eip={eip:#010x}",
    "stop": "stop {reason} eip={eip:#010x}",
    # The board as tracing starts (uvirt.observe.decode names accesses from these):
    # PCI functions with their BARs, and the other named port and MMIO regions.
    "pci_device": "pci {bdf} {name} ({transport}) bars={bars}",
    "io_region": "io {base:#06x}+{size:#x} {name}",
    "mem_region": "mmio {base:#010x}+{size:#x} {name}",
    # Virtqueue and virtio device events (uvirt/virtio/queue.py, device.py), sent through
    # the queue's events sink and the transport, which adds ``device`` and ``bdf``.
    "vq_kick": "virtqueue {device} {bdf} q{queue} kick",
    "vq_kick_ignored": "virtqueue {device} {bdf} q{queue} kick ignored: {reason}",
    "vq_pop": "virtqueue {device} {bdf} q{queue} pop head={head} avail_idx={avail_idx} "
              "out={readable} in={writable}",
    "vq_fill": "virtqueue {device} {bdf} q{queue} used.ring[{slot}] = {{id {head}, len {len}}}",
    "vq_flush": "virtqueue {device} {bdf} q{queue} used.idx {old} -> {new}",
    "vq_irq": "virtqueue {device} {bdf} q{queue} interrupt {verdict}: {reason}",
    "config_irq": "virtio {device} {bdf} configuration change interrupt {verdict}: {reason}",
}

#: Fields the machine adds to every event emitted while the guest CPU runs (the
#: instruction that made the access); formats do not print them.
#: how a trace is written (-uvirt-trace-format, uvirt trace --trace-format; uvirt/observe/decode.py)
FORMATS = ("raw", "text", "json")

CONTEXT_FIELDS = ("eip", "insn")


@dataclass(frozen=True)
class TraceEvent:
    name: str
    fields: dict

    def __str__(self) -> str:
        return EVENTS[self.name].format(**self.fields)


    def to_json(self) -> str:
        """One JSON line: ``{"event": name, **fields}`` (``from_json`` gives it back)."""
        return json.dumps({"event": self.name, **self.fields}, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> "TraceEvent":
        """Parse a ``to_json`` line (extra keys a tool added, ``decoded``, are dropped)."""
        obj = json.loads(line)
        name = obj.pop("event")
        obj.pop("decoded", None)
        if name not in EVENTS:
            raise ValueError(f"undeclared trace event {name!r}")
        return cls(name, obj)


@dataclass
class Tracer:
    enabled: bool = False
    sinks: list[Callable[[TraceEvent], None]] = field(default_factory=list)
    #: ``() -> dict`` of ``CONTEXT_FIELDS`` merged into each event (the machine sets it
    #: to the guest instruction while the CPU runs), or None.
    context: Callable[[], dict] | None = None

    def emit(self, name: str, /, **fields) -> None:
        if name not in EVENTS:
            raise KeyError(f"undeclared trace event {name!r}")
        if self.context is not None:
            for k, v in self.context().items():
                fields.setdefault(k, v)
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
