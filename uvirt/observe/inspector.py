"""The ring inspector: a split virtqueue's three areas, step by step, in the terminal and as
one self-contained HTML page.

``RingInspector`` is a trace sink (uvirt/trace.py).  At each kick (``vq_kick`` and
``vq_kick_ignored``: the rings as the driver handed them over, before the device looks),
each used-buffer notification decision (``vq_irq``: what the device did, and whether it
interrupted) and the stop, it reads every configured queue of the device concerned through
``uvirt.virtio.ring_view`` (pure, no side effects) and keeps the snapshot as a step.

``render_terminal`` draws the steps with rich (descriptor table with flags and each
buffer's first bytes, the chains the available ring names, avail and used rings);
``render_html`` writes one page with no external resources: a timeline of notifications
(colour = what happened) linking to each step's ring state.
"""

from __future__ import annotations

import html
from typing import Any

from uvirt.observe.virtio_state import virtio_functions
from uvirt.trace import TraceEvent
from uvirt.virtio.ring_view import split_ring_view

#: Step kinds and their colours (timeline chips in HTML, styles in the terminal).
KIND_COLOURS = {"kick": "#1565c0", "kick ignored": "#c62828", "irq raised": "#2e7d32",
                "irq suppressed": "#ef6c00", "stop": "#546e7a"}
RICH_STYLES = {"kick": "bold blue", "kick ignored": "bold red", "irq raised": "bold green",
               "irq suppressed": "bold dark_orange", "stop": "bold grey50"}


class RingInspector:
    """Collects ring snapshots while a machine runs (append it to ``tracer.sinks``)."""

    def __init__(self, machine, events: list[TraceEvent] | None = None) -> None:
        self.machine = machine
        self.functions = virtio_functions(machine)
        self.steps: list[dict] = []
        #: the run's recorded events (``tracer.record()``), so a step can say which event
        #: it follows (``event_index``); without them, events counted since attaching
        self.events = events
        self._count = 0

    def __call__(self, ev: TraceEvent) -> None:
        self._count += 1
        n = ev.name
        if n == "vq_kick":
            self._snap(ev.fields["bdf"], "kick", f"kick q{ev.fields['queue']}: the rings as the "
                                                 f"driver handed them over", ev)
        elif n == "vq_kick_ignored":
            self._snap(ev.fields["bdf"], "kick ignored",
                       f"kick q{ev.fields['queue']} ignored: {ev.fields['reason']}", ev)
        elif n == "vq_irq":
            verdict = ev.fields["verdict"]
            self._snap(ev.fields["bdf"], f"irq {verdict}",
                       f"q{ev.fields['queue']} after the device: interrupt {verdict}: "
                       f"{ev.fields['reason']}", ev)

    def final(self, label: str) -> None:
        for bdf in self.functions:
            self._snap(bdf, "stop", label, None)

    def _snap(self, bdf: str, kind: str, label: str, ev: TraceEvent | None) -> None:
        fn = self.functions.get(bdf)
        if fn is None:
            return
        mem = self.machine.memory.guest
        queues = [split_ring_view(mem, q) for q in fn.vdev.queues if q.desc]
        index = len(self.events) if self.events is not None else self._count
        self.steps.append({"step": len(self.steps) + 1, "event_index": index, "kind": kind,
                           "label": label, "bdf": bdf, "device": fn.name,
                           "eip": ev.fields.get("eip") if ev else None,
                           "insn": ev.fields.get("insn") if ev else None,
                           "status": fn.vdev.status, "isr": fn.vdev.isr, "queues": queues})


# --------------------------------------------------------------------------- terminal


def _ring_text(avail: dict, size: int) -> str:
    """avail.ring as far as the driver filled it (the slots below avail.idx), not all N."""
    ring = avail["ring"]
    shown = min(avail["idx"] or 0, size)
    text = " ".join("-" if r is None else str(r) for r in ring[:shown])
    rest = size - shown
    return (text + (f" ... ({rest} slot{'s' if rest != 1 else ''} not yet used)" if rest else "")).strip()


def _indirect_text(chain: dict) -> str:
    """`` -> indirect [addr+len flags, ...]``: the table a chain's INDIRECT descriptor names."""
    table = chain.get("indirect")
    if not table:
        return ""
    items = ", ".join(f"{t['addr']:#x}+{t['len']} {t['flag_names']}" if "addr" in t else t["error"]
                      for t in table)
    return f" -> indirect [{items}]"



def _hex(v: Any, width: int = 0) -> str:
    return "-" if v is None else f"0x{v:0{width}x}"


def render_terminal(rec, last: int | None = None, console=None) -> None:
    """Draw the recording's steps (the last ``last`` of them) with rich."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    steps = rec.snapshots if last is None else rec.snapshots[-last:]
    if not steps:
        console.print("[yellow]no virtqueue was kicked and no configured queue at the stop[/]")
    for st in steps:
        title = Text(f"step {st['step']}  {st['bdf']} {st['device']}  ", style="bold")
        title.append(st["label"], style=RICH_STYLES.get(st["kind"], ""))
        if st.get("insn"):
            title.append(f"   ({st['insn']} @0x{st['eip']:x})", style="dim")
        parts = [Text(f"status 0x{st['status']:02x}, ISR 0x{st['isr']:02x}")]
        for q in st["queues"]:
            parts.extend(_terminal_queue(q, Table, Text))
        if not st["queues"]:
            parts.append(Text("no configured queue (reset, or never set up)", style="dim"))
        console.print(Panel.fit(_group(parts), title=title, border_style=RICH_STYLES.get(st["kind"], "")))
    console.print(f"[bold]{rec.stop}[/] (exit status {rec.exit_code})")


def _group(parts):
    from rich.console import Group
    return Group(*parts)


def _ring_table(Table, title: str, color: str, ring: dict, flag0: str):
    """A ring's field/value table, begun with its flags (bit 0 named flag0) and idx."""
    t = Table(title=title, title_style=f"bold {color}", header_style=color)
    t.add_column("field")
    t.add_column("value")
    t.add_row("flags", f"{_hex(ring['flags'], 4)}{' ' + flag0 if (ring['flags'] or 0) & 1 else ''}")
    t.add_row("idx", str(ring["idx"]))
    return t


def _terminal_queue(q: dict, Table, Text) -> list:
    head = Text(f"queue {q['queue']}: size {q['size']}, desc {_hex(q['desc_addr'])}, avail "
                f"{_hex(q['avail_addr'])}, used {_hex(q['used_addr'])}; device: last_avail_idx "
                f"{q['last_avail_idx']}, used_idx {q['device_used_idx']}, in flight {q['inuse']}",
                style="bold")
    if "descs" not in q:
        return [head, Text("  (not a configured split ring)")]
    used_heads = {e[0] for e in q["used"]["ring"][:max(0, min(q["used"]["idx"] or 0, q["size"]))] if e}
    pending_heads = {c["head"] for c in q["chains"] if c["pending"]}
    dt = Table(title="descriptor table (§2.7.5)", title_style="bold green", header_style="green")
    for col in ("#", "addr", "len", "flags", "next", "first bytes"):
        dt.add_column(col)
    for d in q["descs"]:
        if "error" in d:
            dt.add_row(str(d["i"]), d["error"], "", "", "", "")
            continue
        if not (d["addr"] or d["len"] or d["flags"]):
            continue
        style = "bold" if d["i"] in pending_heads else ("dim" if d["i"] in used_heads else "")
        dt.add_row(str(d["i"]), _hex(d["addr"]), str(d["len"]), d["flag_names"], str(d["next"]),
                   d["bytes"] or "", style=style)
    av = q["avail"]
    at = _ring_table(Table, "available ring (§2.7.6)", "dark_orange", av, "NO_INTERRUPT")
    at.add_row("ring", _ring_text(av, q["size"]))
    if q["event_idx"]:
        at.add_row("used_event", str(av["used_event"]))
    for c in q["chains"]:
        chain = " -> ".join(str(i) for i in c["descs"]) + (f"  ({c['error']})" if c.get("error") else "")
        chain += _indirect_text(c)
        at.add_row(f"chain @{c['avail_idx']}", f"{chain}{'  pending' if c['pending'] else '  consumed'}")
    us = q["used"]
    ut = _ring_table(Table, "used ring (§2.7.8)", "magenta", us, "NO_NOTIFY")
    for i, e in enumerate(us["ring"][:min(us["idx"] or 0, q["size"])]):
        ut.add_row(f"ring[{i}]", "-" if e is None else f"id {e[0]}, len {e[1]}")
    if q["event_idx"]:
        ut.add_row("avail_event", str(us["avail_event"]))
    from rich.columns import Columns
    return [head, dt, Columns([at, ut])]


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#fafafa;color:#212121}
header{background:#1a237e;color:#fff;padding:14px 20px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;font-size:13px;opacity:.85}
nav{display:flex;flex-wrap:wrap;gap:6px;padding:12px 20px;background:#e8eaf6;border-bottom:1px solid #c5cae9}
nav a{color:#fff;text-decoration:none;padding:6px 10px;border-radius:14px;font-size:12px;font-weight:600}
main{padding:8px 20px}
section.step{background:#fff;border:1px solid #ddd;border-left:8px solid #999;border-radius:4px;margin:14px 0;padding:10px 14px}
section.step h2{font-size:15px;margin:0 0 8px}
.insn{font:12px monospace;color:#616161}
.queue{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start;margin:8px 0}
.qhead{font:12px monospace;margin:6px 0}
table{border-collapse:collapse;font:12px monospace}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left}
table.desc th{background:#2e7d32;color:#fff} table.avail th{background:#ef6c00;color:#fff}
table.used th{background:#6a1b9a;color:#fff} caption{font-weight:700;text-align:left;padding:2px 0}
tr.pending td{background:#fff3e0;font-weight:700} tr.done td{color:#9e9e9e}
td.bytes{color:#37474f}
details{margin-top:8px} summary{cursor:pointer;font-size:12px;color:#455a64}
pre.trace{font:11px/1.35 monospace;background:#f5f5f5;padding:6px;overflow-x:auto}
"""


def render_html(rec, title: str = "") -> str:
    """One self-contained page: timeline of notifications, ring states step by step."""
    e = html.escape
    chips = "".join(f'<a href="#step{st["step"]}" style="background:{KIND_COLOURS.get(st["kind"], "#999")}" '
                    f'title="{e(st["label"])}">{st["step"]}. {e(st["kind"])} {e(st["device"])}</a>'
                    for st in rec.snapshots)
    slices = _trace_slices(rec)
    sections = "".join(_html_step(st, slices[i]) for i, st in enumerate(rec.snapshots)) \
        or "<p>no virtqueue activity</p>"
    guest = e(rec.debugcon[-4000:]) if rec.debugcon else ""
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>uvirt ring inspector</title>"
            f"<style>{_CSS}</style></head><body>"
            f"<header><h1>uvirt ring inspector</h1><p>{e(title)}</p><p>{e(rec.stop)} — exit status "
            f"{rec.exit_code}; {len(rec.snapshots)} steps</p></header>"
            f"<nav>{chips}</nav><main>{sections}"
            f"<section class=\"step\"><h2>guest output (debugcon)</h2><pre>{guest}</pre></section>"
            f"</main></body></html>")


def _trace_slices(rec, limit: int = 40) -> list[list[str]]:
    """For each step, the decoded trace lines since the previous step (the last ``limit``)."""
    from uvirt.observe.decode import Decoder
    dec = Decoder()
    out: list[list[str]] = []
    pos = 0
    for st in rec.snapshots:
        lines: list[str] = []
        end = min(st["event_index"], len(rec.events))
        for ev in rec.events[pos:end]:
            lines += [d.text for d in dec.feed(ev)]
        pos = max(pos, end)
        out.append(lines[-limit:])
    return out


def _html_step(st: dict, trace: list[str] = ()) -> str:
    e = html.escape
    colour = KIND_COLOURS.get(st["kind"], "#999")
    insn = (f' <span class="insn">{e(st["insn"])} @0x{st["eip"]:x}</span>' if st.get("insn") else "")
    body = "".join(_html_queue(q) for q in st["queues"]) or "<p>no configured queue</p>"
    if trace:
        body += (f'<details><summary>decoded trace before this step ({len(trace)} lines)</summary>'
                 f'<pre class="trace">{e(chr(10).join(trace))}</pre></details>')
    return (f'<section class="step" id="step{st["step"]}" style="border-left-color:{colour}">'
            f'<h2>{st["step"]}. {e(st["bdf"])} {e(st["device"])}: {e(st["label"])}{insn}</h2>'
            f'<div class="qhead">status 0x{st["status"]:02x}, ISR 0x{st["isr"]:02x}</div>{body}</section>')


def _html_queue(q: dict) -> str:
    e = html.escape
    head = (f'<div class="qhead">queue {q["queue"]}: size {q["size"]}, desc {_hex(q["desc_addr"])}, avail '
            f'{_hex(q["avail_addr"])}, used {_hex(q["used_addr"])}; device last_avail_idx '
            f'{q["last_avail_idx"]}, used_idx {q["device_used_idx"]}, in flight {q["inuse"]}</div>')
    if "descs" not in q:
        return head + "<p>not a configured split ring</p>"
    pending = {i for c in q["chains"] if c["pending"] for i in c["descs"]}
    used_idx = min(q["used"]["idx"] or 0, q["size"])
    done = {e_[0] for e_ in q["used"]["ring"][:used_idx] if e_}
    rows = []
    for d in q["descs"]:
        if "error" in d:
            rows.append(f'<tr><td>{d["i"]}</td><td colspan="5">{e(d["error"])}</td></tr>')
            continue
        if not (d["addr"] or d["len"] or d["flags"]):
            continue
        cls = "pending" if d["i"] in pending else ("done" if d["i"] in done else "")
        rows.append(f'<tr class="{cls}"><td>{d["i"]}</td><td>{_hex(d["addr"])}</td><td>{d["len"]}</td>'
                    f'<td>{e(d["flag_names"])}</td><td>{d["next"]}</td><td class="bytes">{e(d["bytes"] or "")}</td></tr>')
    desc = ('<table class="desc"><caption>descriptor table (§2.7.5)</caption><tr><th>#</th><th>addr</th>'
            '<th>len</th><th>flags</th><th>next</th><th>first bytes</th></tr>' + "".join(rows) + "</table>")
    av = q["avail"]
    arows = [f'<tr><td>flags</td><td>{_hex(av["flags"], 4)}{" NO_INTERRUPT" if (av["flags"] or 0) & 1 else ""}</td></tr>',
             f'<tr><td>idx</td><td>{av["idx"]}</td></tr>',
             f'<tr><td>ring</td><td>{e(_ring_text(av, q["size"]))}</td></tr>']
    if q["event_idx"]:
        arows.append(f'<tr><td>used_event</td><td>{av["used_event"]}</td></tr>')
    for c in q["chains"]:
        chain = " → ".join(str(i) for i in c["descs"]) + (f" ({e(c['error'])})" if c.get("error") else "")
        chain += e(_indirect_text(c))
        arows.append(f'<tr class="{"pending" if c["pending"] else "done"}"><td>chain @{c["avail_idx"]}</td>'
                     f'<td>{chain} {"pending" if c["pending"] else "consumed"}</td></tr>')
    avail = ('<table class="avail"><caption>available ring (§2.7.6)</caption><tr><th>field</th><th>value</th></tr>'
             + "".join(arows) + "</table>")
    us = q["used"]
    urows = [f'<tr><td>flags</td><td>{_hex(us["flags"], 4)}{" NO_NOTIFY" if (us["flags"] or 0) & 1 else ""}</td></tr>',
             f'<tr><td>idx</td><td>{us["idx"]}</td></tr>']
    for i, u in enumerate(us["ring"][:used_idx]):
        urows.append(f'<tr><td>ring[{i}]</td><td>{"-" if u is None else f"id {u[0]}, len {u[1]}"}</td></tr>')
    if q["event_idx"]:
        urows.append(f'<tr><td>avail_event</td><td>{us["avail_event"]}</td></tr>')
    used = ('<table class="used"><caption>used ring (§2.7.8)</caption><tr><th>field</th><th>value</th></tr>'
            + "".join(urows) + "</table>")
    return head + f'<div class="queue">{desc}{avail}{used}</div>'
