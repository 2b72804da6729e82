"""The decoded trace: declared trace events (uvirt/trace.py) as lines that read like the spec.

One guest-visible access a line, named with the spec's names and the enums the device
models use (``LegacyReg``, ``CommonCfg``, ``PciReg``, ``Status``, ``Isr``,
``VirtioFeature``: no second table of names here)::

    00:02.0 virtio-rng legacy   STATUS <- 0x03 ACKNOWLEDGE|DRIVER   §3.1.1 §4.1.4.10   out dx, al @0x1004a2

Columns: the function and its register window (legacy I/O BAR, modern common/ISR/device/
notify windows, MSI-X table, PCI config space), the register, the direction and value (flags
by name), the spec section (VIRTIO 1.2), and the guest instruction that made the access
(capstone, from EIP at the access).  Ring events from the device side (a chain popped, a used
element written, used.idx published, an interrupt raised or suppressed and why) are lines of
their own; debugcon bytes are folded into ``debugcon: "text"`` lines; config-mechanism
port accesses (0xCF8/0xCFC) are shown as the config-space accesses they make.

The decoder needs the board: the ``pci_device``, ``io_region`` and ``mem_region`` events a traced run
starts with (``Machine.trace_layout``) and the ``pci_bar_map`` events after them.  So a
trace file decodes on its own, long after the run (``decode(read_json(f))``).

API (the pytest plugin and ``uvirt explain`` use it)::

    decode(events, devices=(), registers=()) -> list[str]     # the text lines
    last_events(events, n) -> list[str]                       # the last n of them
    DecodedTail(n).attach(machine); ...; .lines()             # the same, bounded, live
    Decoder().feed(ev) -> list[Decoded]; .flush()             # streaming
    to_json_lines(events) / read_json(lines)                  # JSON lines, round-trip
    attach_file_sink(machine, file, "raw" | "text" | "json")   # -uvirt-trace-format

Filters: ``devices`` keeps lines whose function matches (bdf ``00:02.0``, device name
``virtio-rng``, window ``legacy``/``common``..., or ``debugcon``); ``registers`` keeps lines
whose register matches (case-insensitive, ``fnmatch`` globs: ``STATUS``, ``Q_*``; ring
events are ``KICK``, ``POP``, ``USED``, ``USED_IDX``, ``INTERRUPT``).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import IO, Iterable

from uvirt.board.pci.bus import PciReg
from uvirt.trace import FORMATS, TraceEvent
from uvirt.virtio.device import Isr, Status
from uvirt.virtio.features import VirtioFeature
from uvirt.virtio.pci import (CAP_COMMON, CAP_DEVICE, CAP_ISR, CAP_MSIX_LEGACY, CAP_MSIX_MODERN,
                         CAP_NOTIFY, CAP_PCI_CFG, COMMON_OFFSET, DEVICE_OFFSET, ISR_OFFSET,
                         LEGACY_CONFIG_MSI, LEGACY_CONFIG_NOMSI, MODERN_BAR, MSIX_BAR,
                         NOTIFY_OFF_MULTIPLIER, NOTIFY_OFFSET, REGION_SIZE, CapType, CommonCfg,
                         LegacyReg)
from uvirt.board.pci.msix import ENTRY_SIZE, EXCLUSIVE_PBA_OFFSET, MsixEntry, MsixReg


#: VIRTIO 1.2 sections of each register window and register (the spec's own structure).
SPEC_LEGACY = "§4.1.4.10"
SPEC_COMMON = "§4.1.4.3"
SPEC_NOTIFY = "§4.1.4.4"
SPEC_ISR = "§4.1.4.5"
SPEC_DEVCFG = "§4.1.4.6"
SPEC_PCI_CAPS = "§4.1.4"
SPEC_STATUS = "§2.1 §3.1.1"
SPEC_FEATURES = "§2.2 §6"
SPEC_QUEUE = "§2.6 §4.1.5.1.3"
SPEC_KICK = "§2.9"
SPEC_POP = "§2.7.6 §2.7.5"
SPEC_USED = "§2.7.8"
SPEC_MSIX = "§4.1.5.1.2 (PCI 3.0 §6.8.2)"

_REG_SPECS = {
    "STATUS": SPEC_STATUS, "HOST_FEATURES": SPEC_FEATURES, "GUEST_FEATURES": SPEC_FEATURES,
    "DF": SPEC_FEATURES, "GF": SPEC_FEATURES, "DFSELECT": SPEC_FEATURES, "GFSELECT": SPEC_FEATURES,
    "QUEUE_PFN": SPEC_QUEUE, "QUEUE_NUM": SPEC_QUEUE, "QUEUE_SEL": SPEC_QUEUE,
    "QUEUE_NOTIFY": SPEC_KICK, "ISR": SPEC_ISR,
}

#: Virtio vendor capabilities where QEMU puts them (uvirt.virtio.pci), named by ``CapType``.
_VIRTIO_CAPS = {CAP_COMMON: CapType.COMMON_CFG.name, CAP_ISR: CapType.ISR_CFG.name,
                CAP_DEVICE: CapType.DEVICE_CFG.name, CAP_NOTIFY: CapType.NOTIFY_CFG.name,
                CAP_PCI_CFG: CapType.PCI_CFG.name}
#: ``struct virtio_pci_cap`` (+ notify_off_multiplier) field offsets (§4.1.4); no enum holds them.
_CAP_FIELDS = {0: "cap_vndr", 1: "cap_next", 2: "cap_len", 3: "cfg_type", 4: "bar", 5: "id",
               8: "offset", 12: "length", 16: "notify_off_multiplier"}


def flag_names(flags: type[IntFlag], value: int) -> str:
    """``ACKNOWLEDGE|DRIVER`` (unnamed bits as ``bit N``, 0 as ``none``)."""
    names = []
    rest = value
    for member in flags:
        if member.value and member.value & (member.value - 1) == 0 and value & member.value:
            if member.name not in names:
                names.append(member.name)
            rest &= ~member.value
    names += [f"bit {i}" for i in range(rest.bit_length()) if rest >> i & 1]
    return "|".join(names) if names else "none"


def _enum_name(enum: type[IntEnum], offset: int) -> str | None:
    try:
        return enum(offset).name
    except ValueError:
        return None


@dataclass
class Decoded:
    """One decoded line: who (function + window), what register or ring event, the
    value as text, the spec section, and the instruction behind it."""

    event: TraceEvent
    who: str = ""
    register: str = ""
    arrow: str = ""
    value: str = ""
    spec: str = ""
    device: str = ""          # the device name alone (for filters)
    bdf: str = ""
    window: str = ""

    @property
    def text(self) -> str:
        head = f"{self.who} {self.register}".strip()
        body = f"{head} {self.arrow} {self.value}".rstrip() if self.arrow else f"{head} {self.value}".rstrip()
        if self.spec:
            body = f"{body:<64} {self.spec}"
        insn = self.event.fields.get("insn")
        eip = self.event.fields.get("eip")
        if insn is not None and eip is not None:
            body = f"{body:<80}   {insn} @{eip:#x}"
        return body

    def as_dict(self) -> dict:
        return {"device": self.device, "bdf": self.bdf, "window": self.window,
                "register": self.register, "value": self.value, "spec": self.spec, "text": self.text}


@dataclass
class _Function:
    bdf: str
    name: str
    transport: str
    bars: dict[int, list] = field(default_factory=dict)    # index -> [kind, addr, size]
    msix_enabled: bool = False
    dfselect: int = 0
    gfselect: int = 0
    queue_sel: int = 0

    @property
    def virtio(self) -> bool:
        return self.transport in ("legacy", "modern", "transitional")


class Decoder:
    """Streaming decoder: ``feed`` each event, ``flush`` at the end."""

    def __init__(self, devices: Iterable[str] = (), registers: Iterable[str] = ()) -> None:
        self.functions: dict[str, _Function] = {}
        self.io_regions: list[tuple[int, int, str]] = []
        self.mem_regions: list[tuple[int, int, str]] = []
        self.devices = [d.lower() for d in devices]
        self.registers = [r.upper() for r in registers]
        self._con = bytearray()
        self._con_event: TraceEvent | None = None

    # -- filters
    def _keep(self, d: Decoded) -> bool:
        if self.devices:
            keys = {d.device.lower(), d.bdf, d.window.lower(), f"{d.device} {d.window}".lower()}
            if not any(f in keys or fnmatch.fnmatch(d.device.lower(), f) for f in self.devices):
                return False
        if self.registers:
            full = d.register.upper()
            names = {full, full.split(" ")[0].split("[")[0]}
            if not any(fnmatch.fnmatch(n, r) for n in names for r in self.registers):
                return False
        return True

    # -- entry points
    def feed(self, ev: TraceEvent) -> list[Decoded]:
        out = [d for d in self._decode(ev) if d is not None and self._keep(d)]
        return out

    def flush(self) -> list[Decoded]:
        if not self._con:
            return []
        d = self._debugcon_line(partial=True)
        return [d] if self._keep(d) else []

    # -- layout
    def _where(self, space: str, addr: int) -> tuple[_Function | None, int, int, str] | None:
        """(function, BAR index, offset) for an address, or a plain named region."""
        for fn in self.functions.values():
            for index, (kind, base, size) in fn.bars.items():
                if kind == space and base is not None and base <= addr < base + size:
                    return fn, index, addr - base, ""
        for base, size, name in (self.io_regions if space == "io" else self.mem_regions):
            if base <= addr < base + size:
                return None, -1, addr - base, name
        return None

    # -- decoding
    def _decode(self, ev: TraceEvent) -> list[Decoded | None]:
        n, f = ev.name, ev.fields
        if n == "pci_device":
            fn = _Function(f["bdf"], f["name"], f["transport"])
            for index, kind, addr, size in f["bars"]:
                fn.bars[index] = [kind, addr, size]
            self.functions[fn.bdf] = fn
            bars = ", ".join(f"BAR{i} {k} {'unmapped' if a is None else hex(a)}+{s:#x}"
                             for i, (k, a, s) in sorted(fn.bars.items()))
            return [Decoded(ev, who=f"{fn.bdf} {fn.name}", value=f"({fn.transport}) {bars}".strip(),
                            device=fn.name, bdf=fn.bdf, window="config")]
        if n == "io_region":
            self.io_regions.append((f["base"], f["size"], f["name"]))
            return []
        if n == "mem_region":
            self.mem_regions.append((f["base"], f["size"], f["name"]))
            return []
        if n == "pci_bar_map":
            fn = self.functions.get(f["bdf"])
            new = None if f["new"] == "unmapped" else int(f["new"], 16)
            if fn is not None and f["index"] in fn.bars:
                fn.bars[f["index"]][1] = new
            name = fn.name if fn else ""
            return [Decoded(ev, who=f"{f['bdf']} {name}".strip(), register=f"BAR{f['index']}",
                            value=f"{f['old']} -> {f['new']}", spec="§4.1.2", device=name, bdf=f["bdf"],
                            window="config")]
        if n in ("pio_read", "pio_write", "mmio_read", "mmio_write"):
            return self._access(ev)
        if n in ("pci_cfg_read", "pci_cfg_write"):
            return [self._config(ev)]
        return self._other(ev)

    def _other(self, ev: TraceEvent) -> list[Decoded | None]:
        n, f = ev.name, ev.fields
        fn = self.functions.get(f.get("bdf", ""))
        dev = f.get("device", fn.name if fn else "")
        who = f"{f.get('bdf', '')} {dev}".strip()
        q = f.get("queue")
        if n == "vq_kick":
            return [Decoded(ev, who=who, register=f"KICK q{q}",
                            value="available buffer notification: the device looks at the avail ring",
                            spec=SPEC_KICK, device=dev, bdf=f["bdf"], window="ring")]
        if n == "vq_kick_ignored":
            return [Decoded(ev, who=who, register=f"KICK q{q}", value=f"ignored: {f['reason']}",
                            spec=SPEC_KICK, device=dev, bdf=f["bdf"], window="ring")]
        if n == "vq_pop":
            pieces = [f"out {a:#x}+{ln}" for a, ln in f["readable"]]
            pieces += [f"in {a:#x}+{ln} (device-writable)" for a, ln in f["writable"]]
            return [Decoded(ev, who=who, register=f"POP q{q}",
                            value=f"chain head {f['head']} (avail.idx {f['avail_idx']}): "
                                  f"{', '.join(pieces) or 'no buffers'}",
                            spec=SPEC_POP, device=dev, bdf=f["bdf"], window="ring")]
        if n == "vq_fill":
            return [Decoded(ev, who=who, register=f"USED q{q}",
                            value=f"used.ring[{f['slot']}] = {{id {f['head']}, len {f['len']}}}",
                            spec=SPEC_USED, device=dev, bdf=f["bdf"], window="ring")]
        if n == "vq_flush":
            return [Decoded(ev, who=who, register=f"USED_IDX q{q}", value=f"used.idx {f['old']} -> {f['new']}",
                            spec=SPEC_USED, device=dev, bdf=f["bdf"], window="ring")]
        if n == "vq_irq":
            vec = f.get("vector", 0xFFFF)
            via = "" if vec == 0xFFFF else f" (MSI-X vector {vec})"
            reason, _, spec = f["reason"].rpartition(" (")
            return [Decoded(ev, who=who, register=f"INTERRUPT q{q}",
                            value=f"{f['verdict']}{via}: {reason or f['reason']}",
                            spec=("§" + spec.strip("§)")) if spec else "", device=dev, bdf=f["bdf"],
                            window="ring")]
        if n == "config_irq":
            reason, _, spec = f["reason"].rpartition(" (")
            return [Decoded(ev, who=who, register="CONFIG_INTERRUPT", value=f"{f['verdict']}: {reason}",
                            spec=("§" + spec.strip("§)")) if spec else "", device=dev, bdf=f["bdf"],
                            window="ring")]
        if n == "guest_error":
            return [Decoded(ev, who="GUEST ERROR", register=f["kind"], value=f["detail"])]
        if n == "stop":
            pending = self.flush() if self._con else []
            return [*pending, Decoded(ev, who="stop", value=f"{f['reason']} at eip={f['eip']:#010x}")]
        if n == "interrupt":
            return [Decoded(ev, who="cpu", register="INTERRUPT",
                            value=f"vector {f['vector']:#04x} ({f['kind']}) at eip={f['eip']:#010x}: {f['result']}")]
        if n == "unassigned_page":
            return [Decoded(ev, who="memory", value=f"unassigned page {f['page']:#010x} reads 0")]
        return [Decoded(ev, value=str(ev))]

    # -- register windows
    def _access(self, ev: TraceEvent) -> list[Decoded | None]:
        f = ev.fields
        write = ev.name.endswith("write")
        space = "io" if ev.name.startswith("pio") else "mem"
        addr = f["port"] if space == "io" else f["addr"]
        size, value = f["size"], f["value"]
        where = self._where(space, addr)
        arrow = "<-" if write else "->"
        if where is None:
            return [Decoded(ev, who=f"{space} {addr:#x}", arrow=arrow, value=f"{value:#x} ({size} bytes)")]
        fn, index, off, region = where
        if fn is None:
            if region.startswith("pci-conf"):
                return []                      # shown as the pci_cfg event it makes
            if region == "isa-debugcon" and write:
                return self._debugcon(ev, value & 0xFF)
            if region == "isa-debug-exit" and write:
                return [Decoded(ev, who="isa-debug-exit", register=f"+{off:#x}", arrow="<-",
                                value=f"{value:#x}: exit status {(value << 1) | 1}", device="isa-debug-exit",
                                window="io")]
            return [Decoded(ev, who=region, register=f"+{off:#x}", arrow=arrow, value=f"{value:#0{2 + 2 * size}x}",
                            device=region, window=space)]
        d = Decoded(ev, arrow=arrow, device=fn.name, bdf=fn.bdf)
        if fn.virtio and index == 0 and space == "io":
            self._legacy(fn, d, off, size, value, write)
        elif fn.virtio and index == MODERN_BAR and space == "mem":
            self._modern(fn, d, off, size, value, write)
        elif fn.virtio and index == MSIX_BAR and space == "mem":
            d.window = "msix"
            if off < EXCLUSIVE_PBA_OFFSET:
                field_name = _enum_name(MsixEntry, off % ENTRY_SIZE) or f"+{off % ENTRY_SIZE}"
                d.register = f"table[{off // ENTRY_SIZE}].{field_name}"
            else:
                d.register = f"PBA+{off - EXCLUSIVE_PBA_OFFSET:#x}"
            d.value = f"{value:#x}"
            d.spec = SPEC_MSIX
        else:
            d.window = f"BAR{index}"
            d.register = f"+{off:#x}"
            d.value = f"{value:#0{2 + 2 * size}x}"
        d.who = f"{fn.bdf} {fn.name} {d.window}"
        return [d]

    def _legacy(self, fn: _Function, d: Decoded, off: int, size: int, value: int, write: bool) -> None:
        d.window = "legacy"
        cfg = LEGACY_CONFIG_MSI if fn.msix_enabled else LEGACY_CONFIG_NOMSI
        if off >= cfg:
            d.register = f"config+{off - cfg:#x}"
            d.value = f"{value:#0{2 + 2 * size}x}"
            d.spec = f"{SPEC_DEVCFG} {SPEC_LEGACY}"
            return
        name = _enum_name(LegacyReg, off)
        if name in ("MSI_CONFIG_VECTOR", "MSI_QUEUE_VECTOR") and not fn.msix_enabled:
            name = None
        d.register = name or f"+{off:#x}"
        d.spec = f"{_REG_SPECS.get(name, '')} {SPEC_LEGACY}".strip()
        d.value = self._value(fn, name, value, size, write)

    def _modern(self, fn: _Function, d: Decoded, off: int, size: int, value: int, write: bool) -> None:
        window, inner = off & ~(REGION_SIZE - 1), off & (REGION_SIZE - 1)
        if window == COMMON_OFFSET:
            d.window = "common"
            name = _enum_name(CommonCfg, inner)
            d.register = name or f"+{inner:#x}"
            spec = _REG_SPECS.get(name or "", "")
            d.spec = f"{spec} {SPEC_COMMON}".strip() if spec else SPEC_COMMON
            d.value = self._value(fn, name, value, size, write)
        elif window == ISR_OFFSET:
            d.window, d.register, d.spec = "isr", "ISR", SPEC_ISR
            d.value = self._value(fn, "ISR", value, size, write)
        elif window == DEVICE_OFFSET:
            d.window, d.register, d.spec = "device", f"config+{inner:#x}", SPEC_DEVCFG
            d.value = f"{value:#0{2 + 2 * size}x}"
        elif window == NOTIFY_OFFSET:
            d.window, d.register, d.spec = "notify", f"NOTIFY+{inner:#x}", SPEC_NOTIFY
            d.value = (f"{value:#x}: kick queue {inner // NOTIFY_OFF_MULTIPLIER} "
                       f"(queue_notify_off {inner // NOTIFY_OFF_MULTIPLIER} x multiplier "
                       f"{NOTIFY_OFF_MULTIPLIER})") if write else f"{value:#x}"
        else:
            d.window, d.register, d.value = "modern", f"+{off:#x}", f"{value:#x}"

    def _value(self, fn: _Function, name: str | None, value: int, size: int, write: bool) -> str:
        hexv = f"{value:#0{2 + 2 * size}x}"
        if name == "STATUS":
            return f"{hexv} {flag_names(Status, value)}" if value else f"{hexv} (reset)"
        if name == "ISR":
            return f"{hexv} {flag_names(Isr, value)}"
        if name in ("HOST_FEATURES", "GUEST_FEATURES"):
            return f"{hexv} {flag_names(VirtioFeature, value)}"
        if name in ("DF", "GF"):
            sel = fn.dfselect if name == "DF" else fn.gfselect
            return f"{hexv} (word {sel}) {flag_names(VirtioFeature, value << (32 * sel)) if sel < 2 else ''}".rstrip()
        if name == "DFSELECT" and write:
            fn.dfselect = value
        if name == "GFSELECT" and write:
            fn.gfselect = value
        if name in ("QUEUE_SEL", "Q_SELECT") and write:
            fn.queue_sel = value
            return f"{hexv} (queue {value})"
        if name == "QUEUE_PFN":
            return f"{hexv} (q{fn.queue_sel} ring at {value << 12:#x})" if value else f"{hexv} (q{fn.queue_sel}: reset)"
        if name in ("QUEUE_NUM", "Q_SIZE"):
            return f"{value} (q{fn.queue_sel} size)"
        if name == "QUEUE_NOTIFY" and write:
            return f"{hexv}: kick queue {value}"
        if name == "Q_ENABLE":
            return f"{hexv} (q{fn.queue_sel} {'enabled' if value == 1 else 'not enabled'})"
        if name is not None and name.startswith("Q_") and name[-2:] in ("LO", "HI"):
            return f"{hexv} (q{fn.queue_sel})"
        return hexv

    def _config(self, ev: TraceEvent) -> Decoded:
        f = ev.fields
        fn = self.functions.get(f["bdf"])
        off, size, value = f["offset"], f["size"], f["value"]
        write = ev.name.endswith("write")
        name = _enum_name(PciReg, off)
        spec = "§4.1.2 (PCI 3.0 §6.1)"
        if name is None and 0x10 <= off < 0x28:
            name = f"BASE_ADDRESS_{(off - 0x10) // 4}"
        if name is None and fn is not None and fn.virtio:
            for base, cap in _VIRTIO_CAPS.items():
                if base <= off < base + 20:
                    name = f"cap {cap}.{_CAP_FIELDS.get(off - base, f'+{off - base}')}"
                    spec = SPEC_PCI_CAPS
            for base in (CAP_MSIX_LEGACY, CAP_MSIX_MODERN):
                if base <= off < base + 12 and (base == CAP_MSIX_MODERN) == (fn.transport != "legacy"):
                    name = f"cap MSI-X.{_enum_name(MsixReg, off - base) or f'+{off - base}'}"
                    spec = SPEC_MSIX
                    if write and off <= base + 3 < off + size:   # Message Control, high byte
                        fn.msix_enabled = bool((value >> (8 * (base + 3 - off))) & 0x80)
        who = f"{f['bdf']} {fn.name if fn else ''} config".replace("  ", " ")
        return Decoded(ev, who=who, register=name or f"@{off:#04x}", arrow="<-" if write else "->",
                       value=f"{value:#0{2 + 2 * size}x}", spec=spec, device=fn.name if fn else "",
                       bdf=f["bdf"], window="config")

    # -- debugcon
    def _debugcon(self, ev: TraceEvent, byte: int) -> list[Decoded | None]:
        if self._con_event is None:
            self._con_event = ev
        if byte == 0x0A:
            return [self._debugcon_line()]
        self._con.append(byte)
        return []

    def _debugcon_line(self, partial: bool = False) -> Decoded:
        text = self._con.decode("latin-1")
        ev = self._con_event or TraceEvent("pio_write", {})
        self._con.clear()
        self._con_event = None
        # the instruction is the library's output routine, the same for every byte: drop it
        ev = TraceEvent(ev.name, {k: v for k, v in ev.fields.items() if k not in ("eip", "insn")})
        return Decoded(ev, who="debugcon:", value=json.dumps(text) + (" (no newline)" if partial else ""),
                       device="debugcon", window="io", register="")


def decode(events: Iterable[TraceEvent], devices: Iterable[str] = (),
           registers: Iterable[str] = ()) -> list[str]:
    """The decoded text lines of ``events`` (what ``uvirt trace`` prints)."""
    return [d.text for d in decode_records(events, devices, registers)]


def decode_records(events: Iterable[TraceEvent], devices: Iterable[str] = (),
                   registers: Iterable[str] = ()) -> list[Decoded]:
    dec = Decoder(devices, registers)
    out: list[Decoded] = []
    for ev in events:
        out += dec.feed(ev)
    out += dec.flush()
    return out


def last_events(events: list[TraceEvent], n: int = 20) -> list[str]:
    """The last ``n`` decoded lines of a run (the pytest plugin's failure report): the
    whole trace is decoded, so names reflect BAR moves made long before."""
    return decode(events)[-n:]


class DecodedTail:
    """The last ``limit`` decoded lines of a machine's trace, decoded as the run goes (so
    BAR moves and queue selects long before the tail still name it right), in bounded
    memory: what a failure report shows.

        tail = DecodedTail(20).attach(machine)    # before machine.run()
        ...
        tail.lines()                               # -> list[str]
    """

    def __init__(self, limit: int = 20, devices: Iterable[str] = (), registers: Iterable[str] = ()) -> None:
        from collections import deque
        self.decoder = Decoder(devices, registers)
        self.tail: "deque[Decoded]" = deque(maxlen=limit)

    def __call__(self, ev: TraceEvent) -> None:
        self.tail.extend(self.decoder.feed(ev))

    def attach(self, machine) -> "DecodedTail":
        machine.tracer.sinks.append(self)
        machine.tracer.enabled = True
        machine.trace_layout()
        return self

    def lines(self) -> list[str]:
        """The tail, with a debugcon line still being written shown as it stands."""
        pending = [d.text for d in self.decoder.flush()]
        out = [d.text for d in self.tail] + pending
        return out[-self.tail.maxlen:] if self.tail.maxlen else out


def to_json_lines(events: Iterable[TraceEvent], decoded: bool = True) -> list[str]:
    """One JSON object a line: ``{"event": ..., fields..., "decoded": {...}}``;
    ``read_json`` gives back the events (``decoded`` is for readers, dropped on parse)."""
    dec = Decoder()
    out = []
    for ev in events:
        obj = {"event": ev.name, **ev.fields}
        if decoded:
            ds = dec.feed(ev)
            if ds:
                obj["decoded"] = ds[-1].as_dict()
        out.append(json.dumps(obj, separators=(",", ":")))
    return out


def read_json(lines: Iterable[str]) -> list[TraceEvent]:
    return [TraceEvent.from_json(ln) for ln in lines if ln.strip()]


class TraceFile:
    """A trace written as the run goes, in one of ``FORMATS``; a chardev-like object the
    machine flushes when a run ends and closes with itself."""

    id = "uvirt-trace"

    def __init__(self, f: IO[str], fmt: str = "raw", devices: Iterable[str] = (),
                 registers: Iterable[str] = ()) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"trace format {fmt!r} is not one of {FORMATS}")
        self.f = f
        self.fmt = fmt
        self.decoder = Decoder(devices, registers)
        self.closed = False

    def __call__(self, ev: TraceEvent) -> None:
        if self.closed:
            return
        if self.fmt == "raw":
            self.f.write(f"{ev}\n")
            return
        ds = self.decoder.feed(ev)
        if self.fmt == "text":
            for d in ds:
                self.f.write(d.text + "\n")
        else:
            obj = {"event": ev.name, **ev.fields}
            if ds:
                obj["decoded"] = ds[-1].as_dict()
            self.f.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        if not self.closed:
            self.f.flush()

    def close(self) -> None:
        if self.closed:
            return
        if self.fmt == "text":
            for d in self.decoder.flush():
                self.f.write(d.text + "\n")
        self.closed = True
        self.f.close()


def attach_file_sink(machine, f: IO[str], fmt: str = "raw", devices: Iterable[str] = (),
                     registers: Iterable[str] = ()) -> TraceFile:
    """Trace ``machine`` into ``f`` from now on (``-uvirt-trace FILE -uvirt-trace-format F``):
    the board's layout first, then every event; flushed at each stop, closed with the machine."""
    sink = TraceFile(f, fmt, devices, registers)
    machine.tracer.sinks.append(sink)
    machine.tracer.enabled = True
    machine.chardevs.append(sink)
    machine.trace_layout()
    return sink
