"""``uvirt explain``: "why did my request not complete?", answered from a run's trace and
the devices' final state.

``explain(recording)`` turns a ``uvirt.observe.record.Recording`` (the declared trace events of a
run, decoded by uvirt.observe.decode, and ``virtio_state`` at the end) into ``DeviceFacts``
per virtio function (every STATUS write with the instruction that made it, feature words,
queue set-up, notifications, kicks, pops, interrupt decisions, ISR reads), then runs
``RULES`` over them: a table of (id, spec section, check).  A check returns the sentences
that explain one mistake, each quoting the register values that show it; the rule set is
the list below, nothing else decides.

    rule id                       what the driver did wrong or left out              spec
    status_order                  a status write the spec forbids (DRIVER before     §3.1.1, §2.1.1
                                  ACKNOWLEDGE, DRIVER_OK before DRIVER, clearing bits)
    features_ok_on_legacy         FEATURES_OK on the legacy interface (it has none)  §3.1.2
    features_ok_refused           FEATURES_OK written, the device cleared it         §3.1.1 step 6
    features_ok_unchecked         FEATURES_OK written, STATUS never re-read           §3.1.1 step 6
    version_1_missing             modern interface without VERSION_1                 §6.1
    driver_ok_without_features_ok modern DRIVER_OK with no FEATURES_OK step          §3.1.1
    queue_not_enabled             queue addresses set, queue_enable never 1          §4.1.5.1.3
    queue_not_set_up              kick of a queue that has no rings                   §4.1.5.1.3, §2.7.2
    wrong_notify_offset           notify write at another queue's notify address     §4.1.4.4
    driver_ok_missing             kick before DRIVER_OK                              §3.1.1
    never_notified                buffers published, the device never notified       §2.7.13.4
    avail_idx_not_advanced        kicked, but avail.idx never moved                  §2.7.13.3
    descriptor_not_writable       a chain with no device-writable buffer left        §2.7.5
                                  in the ring
    interrupts_suppressed         the device's interrupt suppressed by the driver    §2.7.7
    isr_never_read                INTx raised, ISR never read (line left asserted)   §4.1.4.5
    features_after_features_ok    feature writes after FEATURES_OK (ignored)          §3.1.1
    unoffered_features            accepted bits the device did not offer              §2.2.1
    device_error                  the device marked itself broken (virtio_error)     §2.1.2

``explain_events(events)`` is the entry point for a trace alone (a pytest failure hook,
a JSON-lines file): it works from the events and, without final state, skips the rules
that need guest memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from uvirt.trace import TraceEvent
from uvirt.observe.decode import Decoded, decode_records, flag_names
from uvirt.virtio.device import STATUS_RULES, Status
from uvirt.virtio.features import VirtioFeature
from uvirt.virtio.pci import NOTIFY_OFF_MULTIPLIER

_ACK, _DRIVER, _DRIVER_OK = int(Status.ACKNOWLEDGE), int(Status.DRIVER), int(Status.DRIVER_OK)
_FEATURES_OK = int(Status.FEATURES_OK)
_VERSION_1 = int(VirtioFeature.VERSION_1)
NO_VECTOR = 0xFFFF

#: Why a device needs device-writable buffers (quoted by ``descriptor_not_writable``).
WRITES_TO_BUFFERS = {
    "virtio-rng": "virtio-rng only fills device-writable buffers (§5.4.6)",
    "virtio-blk": "virtio-blk writes the status byte into the last, device-writable buffer (§5.2.6)",
}


@dataclass
class Finding:
    rule: str
    device: str          # "00:02.0 virtio-rng"
    spec: str
    message: str

    def as_dict(self) -> dict:
        return {"rule": self.rule, "device": self.device, "spec": self.spec, "message": self.message}

    def __str__(self) -> str:
        return f"{self.device}: [{self.rule}] {self.message} ({self.spec})"


@dataclass
class Access:
    """One register access of the driver, in trace order."""

    seq: int
    register: str
    write: bool
    value: int
    where: str            # "out dx, al @0x100a3f"
    window: str
    offset: int = 0       # notify window: offset inside it


@dataclass
class DeviceFacts:
    bdf: str
    name: str
    transport: str = ""
    state: dict | None = None
    accesses: list[Access] = field(default_factory=list)
    ring: list[tuple[int, TraceEvent]] = field(default_factory=list)   # (seq, vq_* event)
    errors: list[tuple[str, str]] = field(default_factory=list)       # guest errors
    #: did the run fail (guest FAIL, fault, timeout)?  None: not known (a trace alone)
    failed: bool | None = None

    @property
    def label(self) -> str:
        return f"{self.bdf} {self.name}"

    @property
    def modern_used(self) -> bool:
        return any(a.window in ("common", "notify", "isr", "device") for a in self.accesses)

    @property
    def legacy_used(self) -> bool:
        return any(a.window == "legacy" for a in self.accesses)

    def regs(self, name: str, write: bool | None = None) -> list[Access]:
        return [a for a in self.accesses if a.register == name and (write is None or a.write == write)]

    def status_writes(self) -> list[Access]:
        """STATUS writes, as the device stores them (the low byte of a wider access)."""
        return [Access(a.seq, a.register, True, a.value & 0xFF, a.where, a.window)
                for a in self.regs("STATUS", write=True)]

    def status_at(self, seq: int) -> int:
        """The status the driver had written last before ``seq`` (0 after a reset)."""
        value = 0
        for a in self.status_writes():
            if a.seq > seq:
                break
            value = a.value
        return value

    def events(self, *names: str, queue: int | None = None) -> list[tuple[int, TraceEvent]]:
        return [(s, e) for s, e in self.ring if e.name in names
                and (queue is None or e.fields.get("queue") == queue)]

    def queue_state(self, index: int) -> dict | None:
        if self.state is None:
            return None
        for q in self.state["queues"]:
            if q["queue"] == index:
                return q
        return None


def _where(ev: TraceEvent) -> str:
    insn, eip = ev.fields.get("insn"), ev.fields.get("eip")
    return f"{insn} @{eip:#x}" if insn is not None and eip is not None else "(no instruction recorded)"


def gather(events: list[TraceEvent], devices: list[dict] | None = None,
           failed: bool | None = None) -> list[DeviceFacts]:
    """Facts per virtio function, from the decoded trace and (optionally) final state."""
    facts: dict[str, DeviceFacts] = {}
    for st in devices or ():
        facts[st["bdf"]] = DeviceFacts(st["bdf"], st["name"], st["transport"], st)
    records: list[Decoded] = decode_records(events)
    names = {}
    for seq, d in enumerate(records):
        ev = d.event
        if ev.name == "pci_device" and ev.fields["transport"] != "pci":
            f = facts.setdefault(ev.fields["bdf"], DeviceFacts(ev.fields["bdf"], ev.fields["name"]))
            f.transport = ev.fields["transport"]
            names.setdefault(ev.fields["name"], f)
            continue
        if ev.name == "guest_error":
            detail = ev.fields["detail"]
            dev = detail.split(":", 1)[0]
            target = names.get(dev)
            if target is not None:
                target.errors.append((ev.fields["kind"], detail))
            continue
        f = facts.get(d.bdf)
        if f is None:
            continue
        if ev.name.startswith(("vq_", "config_irq")):
            f.ring.append((seq, ev))
        elif ev.name in ("pio_read", "pio_write", "mmio_read", "mmio_write") and d.register:
            reg = d.register
            offset = 0
            if reg.startswith("NOTIFY+"):
                offset = int(reg[len("NOTIFY+"):], 16)
                reg = "NOTIFY"
            f.accesses.append(Access(seq, reg, ev.name.endswith("write"), ev.fields["value"], _where(ev),
                                     d.window, offset))
    for f in facts.values():
        f.failed = failed
    return list(facts.values())


# --------------------------------------------------------------------------- the rules


def _status_order(f: DeviceFacts) -> list[str]:
    out = []
    old = 0
    for a in f.status_writes():
        new = a.value
        if new == 0:
            old = 0
            continue
        for rule in STATUS_RULES:
            if new != old and rule.violated(old, new):
                was = flag_names(Status, old) if old else "reset"
                out.append(f"STATUS 0x{old:02x} ({was}) -> 0x{new:02x} "
                           f"({flag_names(Status, new)}) at {a.where}: {rule.spec}")
        old = new
    return out


def _features_ok_on_legacy(f: DeviceFacts) -> list[str]:
    if f.modern_used or not f.legacy_used:
        return []
    hits = [a for a in f.status_writes() if a.value & _FEATURES_OK]
    if not hits:
        return []
    a = hits[0]
    return [f"STATUS <- 0x{a.value:02x} ({flag_names(Status, a.value)}) at {a.where} on the legacy "
            f"interface: legacy devices have no FEATURES_OK step, the features are final once written "
            f"to GUEST_FEATURES; QEMU stores the bit (it reads back) but it negotiates nothing, and a "
            f"legacy device cannot refuse features this way (§3.1.2)"]


def _features_ok_refused(f: DeviceFacts) -> list[str]:
    out = []
    for kind, detail in f.errors:
        if kind == "features_rejected":
            out.append(f"the device refused FEATURES_OK: {detail}; re-reading STATUS shows the bit clear, "
                       f"so the driver must not go on to DRIVER_OK")
    if not out and f.modern_used:
        writes = [a for a in f.status_writes() if a.value & _FEATURES_OK]
        reads = [a for a in f.regs("STATUS", write=False) if writes and a.seq > writes[0].seq]
        if writes and reads and not any(r.value & _FEATURES_OK for r in reads) and f.status_at(reads[0].seq) & _FEATURES_OK:
            r = reads[0]
            out.append(f"STATUS read 0x{r.value:02x} at {r.where} after FEATURES_OK was written: the "
                       f"device did not accept the feature set")
    return out


def _features_ok_unchecked(f: DeviceFacts) -> list[str]:
    if not f.modern_used:
        return []
    writes = f.status_writes()
    for i, a in enumerate(writes):
        if a.value & _FEATURES_OK and not f.status_at(a.seq - 1) & _FEATURES_OK:
            nxt = writes[i + 1].seq if i + 1 < len(writes) else 1 << 62
            if not any(a.seq < r.seq < nxt for r in f.regs("STATUS", write=False)):
                after = (f"the next STATUS write was 0x{writes[i + 1].value:02x} at {writes[i + 1].where}"
                         if i + 1 < len(writes) else "STATUS was never read again")
                return [f"FEATURES_OK written at {a.where} (STATUS <- 0x{a.value:02x}) and STATUS not re-read "
                        f"before going on ({after}): the driver must re-read it to see whether the device "
                        f"accepted the features"]
    return []


def _guest_features(f: DeviceFacts) -> dict[int, tuple[int, Access]]:
    """Driver feature words written through the modern window: word -> (value, access)."""
    words: dict[int, tuple[int, Access]] = {}
    select = 0
    for a in f.accesses:
        if a.register == "GFSELECT" and a.write:
            select = a.value
        elif a.register == "GF" and a.write:
            words[select] = (a.value, a)
    return words


def _version_1_missing(f: DeviceFacts) -> list[str]:
    if not f.modern_used:
        return []
    words = _guest_features(f)
    ok = [a for a in f.status_writes() if a.value & (_FEATURES_OK | _DRIVER_OK)]
    if not ok:
        return []
    word1 = words.get(1)
    if word1 is not None and word1[0] & 1:
        return []
    if f.state is not None and f.state["guest_features"] & _VERSION_1:
        return []
    shown = (f"driver_feature word 1 = 0x{word1[0]:08x} (written at {word1[1].where})" if word1 else
             "driver_feature word 1 was never written (driver_feature_select = 1)")
    offered = ""
    if f.state is not None and f.state["host_features"] & _VERSION_1:
        offered = ", though the device offers it (device_feature word 1 bit 0)"
    return [f"{shown}: VERSION_1 (feature bit 32) not accepted{offered}; a driver of the modern "
            f"interface must accept VERSION_1, without it the device may treat it as a legacy driver"]


def _driver_ok_without_features_ok(f: DeviceFacts) -> list[str]:
    if not f.modern_used:
        return []
    for a in f.status_writes():
        if a.value & _DRIVER_OK and not a.value & _FEATURES_OK:
            return [f"STATUS <- 0x{a.value:02x} ({flag_names(Status, a.value)}) at {a.where}: DRIVER_OK "
                    f"without FEATURES_OK; a modern driver sets FEATURES_OK after writing its features and "
                    f"checks it stayed set before DRIVER_OK"]
    return []


def _queue_not_enabled(f: DeviceFacts) -> list[str]:
    if not f.modern_used:
        return []
    out = []
    sel = 0
    configured: dict[int, Access] = {}
    enabled: set[int] = set()
    for a in f.accesses:
        if a.register == "Q_SELECT" and a.write:
            sel = a.value
        elif a.register in ("Q_DESCLO", "Q_AVAILLO", "Q_USEDLO") and a.write and a.value:
            configured.setdefault(sel, a)
        elif a.register == "Q_ENABLE" and a.write and a.value == 1:
            enabled.add(sel)
    for q, a in sorted(configured.items()):
        if q not in enabled:
            kicked = f.events("vq_kick_ignored", queue=q)
            tail = " and the kick of it was ignored" if kicked else ""
            out.append(f"queue {q}: ring addresses written (first at {a.where}) but queue_enable was never "
                       f"set to 1, so the device never took them (queue_desc reads as set, the queue has "
                       f"no rings){tail}")
    return out


def _queue_not_set_up(f: DeviceFacts) -> list[str]:
    out = []
    for _, ev in f.events("vq_kick_ignored"):
        q = ev.fields["queue"]
        if "descriptor table" not in ev.fields["reason"]:
            continue
        if f.modern_used and _queue_not_enabled(f):
            continue        # said better by queue_not_enabled
        how = ("QUEUE_PFN was never written for it" if not f.modern_used
               else "queue_desc/queue_driver/queue_device and queue_enable were never written for it")
        out.append(f"kick of queue {q} at {_where(ev)} ignored: {how}")
        break
    return out


def _wrong_notify_offset(f: DeviceFacts) -> list[str]:
    out = []
    nqueues = len(f.state["queues"]) if f.state is not None else None
    sel = 0
    set_up: set[int] = set()
    for a in f.accesses:
        if a.register == "Q_SELECT" and a.write:
            sel = a.value
        elif (a.register == "Q_ENABLE" and a.write and a.value == 1
              or a.register in ("Q_DESCLO", "Q_AVAILLO", "Q_USEDLO") and a.write and a.value):
            set_up.add(sel)         # (a queue set up but not enabled is queue_not_enabled's)
        elif a.register == "NOTIFY" and a.write:
            q = a.offset // NOTIFY_OFF_MULTIPLIER
            if q in set_up and not a.offset % NOTIFY_OFF_MULTIPLIER:
                continue
            exists = nqueues is None or q < nqueues
            fix = ", ".join(f"queue {s}: NOTIFY+{s * NOTIFY_OFF_MULTIPLIER:#x}" for s in sorted(set_up))
            out.append(f"notify write at NOTIFY+{a.offset:#x} ({a.where}) kicks queue {q} "
                       f"(offset / notify_off_multiplier {NOTIFY_OFF_MULTIPLIER})"
                       f"{'' if exists else ', which does not exist'}; the queues the driver set up are "
                       f"notified at queue_notify_off x multiplier ({fix or 'none enabled'})")
    bad = [a for a in f.regs("QUEUE_NOTIFY", write=True) if nqueues is not None and a.value >= nqueues]
    if bad:
        values = ", ".join(str(a.value) for a in bad[:8]) + (", ..." if len(bad) > 8 else "")
        out.append(f"QUEUE_NOTIFY <- {values} (first at {bad[0].where}): the value written is the queue "
                   f"index, and the device has {nqueues} queue(s); those kicks reach no queue")
    return out


def _driver_ok_missing(f: DeviceFacts) -> list[str]:
    for seq, ev in f.events("vq_kick"):
        status = f.status_at(seq)
        q = ev.fields["queue"]
        if not status & _DRIVER_OK and not f.events("vq_pop", queue=q):
            return [f"queue {q} kicked at {_where(ev)} while STATUS = 0x{status:02x} "
                    f"({flag_names(Status, status)}): DRIVER_OK was not set, and the device does not use "
                    f"buffers before it (the driver must not notify before DRIVER_OK)"]
    return []


def _never_notified(f: DeviceFacts) -> list[str]:
    if f.state is None:
        return []
    out = []
    for q in f.state["queues"]:
        avail = q.get("avail")
        if not avail or avail["idx"] in (None, 0):
            continue
        kicks = f.events("vq_kick", "vq_kick_ignored", queue=q["queue"])
        notified = f.regs("NOTIFY", write=True) or f.regs("QUEUE_NOTIFY", write=True)
        if not kicks and not notified and q["last_avail_idx"] != avail["idx"]:
            nf = (q.get("used") or {}).get("flags") or 0
            out.append(f"queue {q['queue']}: avail.idx = {avail['idx']} but the device never received a "
                       f"notification (no write to its notify register; used.flags = 0x{nf:04x}, "
                       f"{'NO_NOTIFY set' if nf & 1 else 'NO_NOTIFY clear: the device asked to be notified'})")
    return out


def _avail_idx_not_advanced(f: DeviceFacts) -> list[str]:
    if f.state is None:
        return []
    out = []
    for q in f.state["queues"]:
        idx = q["queue"]
        kicks = f.events("vq_kick", queue=idx)
        if not kicks or f.events("vq_pop", queue=idx) or "avail" not in q:
            continue
        avail = q["avail"]
        if avail["idx"] != q["last_avail_idx"]:
            continue
        filled = [d for d in q["descs"] if d.get("len")]
        if not filled:
            continue
        d = filled[0]
        out.append(f"queue {idx} kicked {len(kicks)} time(s) (first at {_where(kicks[0][1])}) with avail.idx = "
                   f"{avail['idx']}, the device's last_avail_idx = {q['last_avail_idx']}: descriptor {d['i']} "
                   f"(addr {d['addr']:#x}, len {d['len']}) and avail.ring[{avail['idx'] % q['size']}] = "
                   f"{avail['ring'][avail['idx'] % q['size']]} were written, but avail.idx was never advanced, "
                   f"so the device sees no new buffer")
    return out


def _descriptor_not_writable(f: DeviceFacts) -> list[str]:
    if f.state is None:
        return []
    out = []
    for q in f.state["queues"]:
        for chain in q.get("chains", ()):
            if not chain["pending"] or not chain["descs"]:
                continue
            descs = [q["descs"][i] for i in chain["descs"] if i < len(q["descs"])]
            if any(d.get("flags", 0) & 2 for d in descs):
                continue
            shown = ", ".join(f"descriptor {d['i']}: addr {d['addr']:#x} len {d['len']} flags "
                              f"{d['flag_names']}" for d in descs)
            why = WRITES_TO_BUFFERS.get(f.name, "the device has nowhere to write its answer")
            out.append(f"queue {q['queue']}: the chain at avail.ring[{chain['slot']}] ({shown}) has no "
                       f"device-writable buffer (VIRTQ_DESC_F_WRITE = 2 not set); {why}, so it is still in "
                       f"the ring (last_avail_idx {q['last_avail_idx']}, avail.idx {q['avail']['idx']})")
    return out


def _interrupts_suppressed(f: DeviceFacts) -> list[str]:
    # Suppression is the driver's right (polling drivers use it): it is named as the
    # cause only when the run failed, or when nobody knows how it ended.
    if f.failed is False:
        return []
    out = []
    done: set[int] = set()
    for seq, ev in f.events("vq_irq"):
        q = ev.fields["queue"]
        if ev.fields["verdict"] != "suppressed" or q in done:
            continue
        later = [e for s, e in f.events("vq_irq", queue=q) if s > seq and e.fields["verdict"] == "raised"]
        if later:
            continue
        done.add(q)
        out.append(f"queue {q}: the device returned buffers but did not interrupt ({_where(ev)}): "
                   f"{ev.fields['reason']}; a driver that waits for the interrupt waits forever")
    return out


def _isr_never_read(f: DeviceFacts) -> list[str]:
    raised = [(s, e) for s, e in f.events("vq_irq", "config_irq") if e.fields["verdict"] == "raised"
              and e.fields.get("vector", NO_VECTOR) == NO_VECTOR]
    if not raised:
        return []
    if f.state is not None and f.state.get("msix_enabled"):
        return []
    seq, ev = raised[-1]
    if any(a.seq > seq for a in f.regs("ISR", write=False)):
        return []
    level = ""
    if f.state is not None:
        level = (f"; at the end ISR = 0x{f.state['isr']:02x} and INTx is "
                 f"{'still asserted' if f.state['intx_level'] else 'low'}")
    what = f"queue {ev.fields['queue']}" if "queue" in ev.fields else "a configuration change"
    return [f"the device raised INTx for {what} at {_where(ev)} and the driver "
            f"never read ISR afterwards; reading ISR is what acknowledges the interrupt and lowers the "
            f"line{level}"]


def _features_after_features_ok(f: DeviceFacts) -> list[str]:
    bad = [detail for kind, detail in f.errors if kind == "features_after_features_ok"]
    if not bad:
        return []
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return [f"{bad[0]}{more}: the feature set is fixed once FEATURES_OK is set; a driver that wants "
            f"other features resets the device and negotiates again"]


def _unoffered_features(f: DeviceFacts) -> list[str]:
    return [f"{detail}: the driver may accept only bits the device offered (device_feature / "
            f"HOST_FEATURES); QEMU drops the others" for kind, detail in f.errors
            if kind == "unoffered_features"][:1]


def _device_error(f: DeviceFacts) -> list[str]:
    return [f"{detail}: the device stops using its queues until reset (DEVICE_NEEDS_RESET with VERSION_1)"
            for kind, detail in f.errors if kind == "virtio_error"]


@dataclass(frozen=True)
class Rule:
    id: str
    spec: str
    check: Callable[[DeviceFacts], list[str]]
    needs_state: bool = False


RULES: tuple[Rule, ...] = (
    Rule("status_order", "§3.1.1, §2.1.1", _status_order),
    Rule("features_ok_on_legacy", "§3.1.2", _features_ok_on_legacy),
    Rule("features_ok_refused", "§3.1.1 step 6", _features_ok_refused),
    Rule("features_ok_unchecked", "§3.1.1 step 6", _features_ok_unchecked),
    Rule("version_1_missing", "§6.1", _version_1_missing),
    Rule("driver_ok_without_features_ok", "§3.1.1", _driver_ok_without_features_ok),
    Rule("queue_not_enabled", "§4.1.5.1.3, §4.1.4.3", _queue_not_enabled),
    Rule("queue_not_set_up", "§4.1.5.1.3, §2.7.2", _queue_not_set_up),
    Rule("wrong_notify_offset", "§4.1.4.4", _wrong_notify_offset),
    Rule("driver_ok_missing", "§3.1.1", _driver_ok_missing),
    Rule("never_notified", "§2.7.13.4", _never_notified, needs_state=True),
    Rule("avail_idx_not_advanced", "§2.7.13.3", _avail_idx_not_advanced, needs_state=True),
    Rule("descriptor_not_writable", "§2.7.5", _descriptor_not_writable, needs_state=True),
    Rule("interrupts_suppressed", "§2.7.7", _interrupts_suppressed),
    Rule("isr_never_read", "§4.1.4.5", _isr_never_read),
    Rule("features_after_features_ok", "§3.1.1 step 5", _features_after_features_ok),
    Rule("unoffered_features", "§2.2.1", _unoffered_features),
    Rule("device_error", "§2.1.2", _device_error),
)


def explain_facts(facts: list[DeviceFacts]) -> list[Finding]:
    out = []
    for f in facts:
        if not f.accesses and not f.ring:
            continue                       # a device the driver never touched
        for rule in RULES:
            if rule.needs_state and f.state is None:
                continue
            out += [Finding(rule.id, f.label, rule.spec, msg) for msg in rule.check(f)]
    return out


def explain(rec) -> list[Finding]:
    """Findings for a ``uvirt.observe.record.Recording`` (events and final device state)."""
    return explain_facts(gather(rec.events, rec.devices, failed=run_failed(rec.exit_code)))


def run_failed(exit_code: int) -> bool:
    """uvirt's exit status: 1 is a guest's debug-exit with status 0 (the PASS convention of
    the bundled programs, ``(0 << 1) | 1``); anything else is a failure."""
    return exit_code != 1


def explain_events(events: list[TraceEvent], devices: list[dict] | None = None,
                   failed: bool | None = True) -> list[Finding]:
    """Findings from a trace alone (plus final state when there is one): the pytest
    plugin's failure hook calls this with the events it recorded (``failed`` defaults to
    True: it asks because something failed)."""
    return explain_facts(gather(events, devices, failed))


def format_findings(findings: list[Finding], rec=None) -> str:
    if not findings:
        head = "uvirt explain: no driver mistake found"
        if rec is not None:
            head += f" ({rec.stop})"
        return head
    lines = [f"uvirt explain: {len(findings)} finding(s)" + (f" ({rec.stop})" if rec is not None else "")]
    for f in findings:
        lines.append(f"\n{f.device}: {f.rule} ({f.spec})\n  {f.message}")
    return "\n".join(lines)
