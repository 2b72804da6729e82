"""The decoded trace (uvirt.observe.decode) from hand-made events, and the virtqueue's ring
events through its events sink (no CPU)."""

import json

import pytest

from uvirt.board.memory.regions import MemoryMap, RamRegion
from uvirt.trace import EVENTS, TraceEvent, Tracer
from uvirt.observe.decode import TraceFile, decode, decode_records, read_json, to_json_lines
from uvirt.virtio.features import VirtioFeature
from uvirt.virtio.queue import RecordingEvents, SplitQueue

LAYOUT = [
    TraceEvent("pci_device", {"bdf": "00:03.0", "name": "virtio-rng", "transport": "transitional",
                              "bars": [[0, "io", 0xC000, 32], [1, "mem", 0xFEBF0000, 0x1000],
                                       [4, "mem", 0xFE000000, 0x4000]]}),
    TraceEvent("io_region", {"base": 0xE9, "size": 1, "name": "isa-debugcon"}),
    TraceEvent("io_region", {"base": 0xCF8, "size": 4, "name": "pci-conf-idx"}),
]


def ev(name, **fields):
    return TraceEvent(name, fields)


def test_legacy_status_write_reads_as_flags_with_section_and_instruction():
    lines = decode(LAYOUT + [ev("pio_write", port=0xC012, size=1, value=7, eip=0x100A3F,
                                insn="out dx, al")])
    last = lines[-1]
    assert last.startswith("00:03.0 virtio-rng legacy STATUS <- 0x07 ACKNOWLEDGE|DRIVER|DRIVER_OK")
    assert "§4.1.4.10" in last and "§3.1.1" in last
    assert last.endswith("out dx, al @0x100a3f")


def test_legacy_registers_by_the_transport_enum_and_queue_select_is_remembered():
    recs = decode_records(LAYOUT + [
        ev("pio_write", port=0xC00E, size=2, value=0),
        ev("pio_read", port=0xC00C, size=2, value=8),
        ev("pio_write", port=0xC008, size=4, value=0x200),
        ev("pio_read", port=0xC000, size=4, value=(VirtioFeature.RING_EVENT_IDX | VirtioFeature.ANY_LAYOUT)),
        ev("pio_read", port=0xC013, size=1, value=1),
        ev("pio_write", port=0xC010, size=2, value=0),
    ])
    regs = [(r.register, r.value) for r in recs if r.window == "legacy"]
    assert regs == [("QUEUE_SEL", "0x0000 (queue 0)"), ("QUEUE_NUM", "8 (q0 size)"),
                    ("QUEUE_PFN", "0x00000200 (q0 ring at 0x200000)"),
                    ("HOST_FEATURES", "0x28000000 ANY_LAYOUT|RING_EVENT_IDX"),
                    ("ISR", "0x01 QUEUE"), ("QUEUE_NOTIFY", "0x0000: kick queue 0")]


def test_modern_windows_common_isr_notify_and_feature_words():
    base = 0xFE000000
    recs = decode_records(LAYOUT + [
        ev("mmio_write", addr=base + 0x08, size=4, value=1),            # driver_feature_select
        ev("mmio_write", addr=base + 0x0C, size=4, value=1),            # driver_feature
        ev("mmio_write", addr=base + 0x14, size=1, value=0x0B),
        ev("mmio_write", addr=base + 0x1C, size=2, value=1),
        ev("mmio_read", addr=base + 0x1000, size=1, value=1),
        ev("mmio_write", addr=base + 0x3004, size=2, value=0),
    ])
    got = [(r.window, r.register, r.value, r.spec) for r in recs if r.window not in ("config", "io")]
    assert got[0][:2] == ("common", "GFSELECT")
    assert got[1][:3] == ("common", "GF", "0x00000001 (word 1) VERSION_1")
    assert got[2][1:3] == ("STATUS", "0x0b ACKNOWLEDGE|DRIVER|FEATURES_OK")
    assert got[2][3].endswith("§4.1.4.3")
    assert got[3][1:3] == ("Q_ENABLE", "0x0001 (q0 enabled)")
    assert got[4][:3] == ("isr", "ISR", "0x01 QUEUE")
    assert got[5][0] == "notify" and "kick queue 1" in got[5][2] and got[5][3] == "§4.1.4.4"


def test_bar_move_renames_accesses_at_the_new_address():
    lines = decode(LAYOUT + [
        ev("pci_bar_map", bdf="00:03.0", index=0, old="0xc000", new="0xd000"),
        ev("pio_write", port=0xD012, size=1, value=1),
        ev("pio_write", port=0xC012, size=1, value=1),
    ])
    assert "legacy STATUS <- 0x01 ACKNOWLEDGE" in lines[-2]
    assert lines[-1].startswith("io 0xc012 <- 0x1")


def test_debugcon_bytes_fold_into_lines_and_config_mechanism_ports_are_hidden():
    text = "PASS: x\nhalf"
    events = LAYOUT + [ev("pio_write", port=0xE9, size=1, value=b, eip=0x100010, insn="out 0xe9, al")
                       for b in text.encode()]
    events += [ev("pio_write", port=0xCF8, size=4, value=0x80001800),
               ev("pci_cfg_read", bdf="00:03.0", offset=0, size=4, value=0x10051AF4)]
    lines = decode(events)
    assert 'debugcon: "PASS: x"' in lines
    assert not any("0xcf8" in ln for ln in lines)
    assert any(ln.startswith("00:03.0 virtio-rng config VENDOR_ID -> 0x10051af4") for ln in lines)
    assert lines[-1] == 'debugcon: "half" (no newline)'


def test_filters_by_device_and_register():
    events = LAYOUT + [ev("pio_write", port=0xC012, size=1, value=1),
                       ev("pio_write", port=0xC00E, size=2, value=0),
                       ev("pio_write", port=0xE9, size=1, value=0x0A),
                       ev("vq_kick", device="virtio-rng", bdf="00:03.0", queue=0)]
    assert [ln.split()[3] for ln in decode(events, registers=["status"])] == ["STATUS"]
    assert len(decode(events, registers=["QUEUE_*", "KICK"])) == 2
    assert decode(events, devices=["debugcon"]) == ['debugcon: ""']
    assert all("00:03.0" in ln for ln in decode(events, devices=["00:03.0"]))
    assert decode(events, devices=["virtio-net"]) == []


def test_ring_events_name_the_spec_sections():
    lines = decode(LAYOUT + [
        ev("vq_pop", device="virtio-rng", bdf="00:03.0", queue=0, head=2, avail_idx=3,
           readable=[[0x1000, 4]], writable=[[0x2000, 16]]),
        ev("vq_fill", device="virtio-rng", bdf="00:03.0", queue=0, slot=2, head=2, len=16),
        ev("vq_flush", device="virtio-rng", bdf="00:03.0", queue=0, old=2, new=3),
        ev("vq_irq", device="virtio-rng", bdf="00:03.0", queue=0, verdict="suppressed", vector=0xFFFF,
           reason="avail.flags=0x0001: the driver set VIRTQ_AVAIL_F_NO_INTERRUPT (§2.7.7)"),
    ])
    assert "POP q0 chain head 2 (avail.idx 3): out 0x1000+4, in 0x2000+16 (device-writable)" in lines[-4]
    assert "§2.7.6" in lines[-4]
    assert "USED q0 used.ring[2] = {id 2, len 16}" in lines[-3] and "§2.7.8" in lines[-3]
    assert "used.idx 2 -> 3" in lines[-2]
    assert "INTERRUPT q0 suppressed: avail.flags=0x0001" in lines[-1] and lines[-1].rstrip().endswith("§2.7.7")


def test_every_event_kind_is_declared_and_json_round_trips():
    events = LAYOUT + [ev("pio_write", port=0xC012, size=1, value=1, eip=5, insn="out dx, al"),
                       ev("vq_pop", device="d", bdf="00:03.0", queue=0, head=0, avail_idx=1,
                          readable=[], writable=[[1, 2]]),
                       ev("stop", reason="debug_exit", eip=0x10)]
    assert all(e.name in EVENTS for e in events)
    lines = to_json_lines(events)
    assert json.loads(lines[3])["decoded"]["register"] == "STATUS"
    assert read_json(lines) == events


def test_trace_file_formats_write_as_the_run_goes(tmp_path):
    events = LAYOUT + [ev("pio_write", port=0xC012, size=1, value=3), ev("pio_write", port=0xE9, size=1, value=0x41)]
    out = {}
    for fmt in ("raw", "text", "json"):
        p = tmp_path / f"t.{fmt}"
        sink = TraceFile(open(p, "w"), fmt)
        for e in events:
            sink(e)
        sink.close()
        out[fmt] = p.read_text().splitlines()
    assert out["raw"][-1] == "pio 0x00e9 size=1 <- 0x41"
    assert out["text"][-2].startswith("00:03.0 virtio-rng legacy STATUS <- 0x03 ACKNOWLEDGE|DRIVER")
    assert out["text"][-1] == 'debugcon: "A" (no newline)'
    assert read_json(out["json"]) == events


def test_tracer_refuses_undeclared_events_and_merges_context():
    t = Tracer()
    seen = t.record()
    t.context = lambda: {"eip": 7, "insn": "nop"}
    t.emit("stop", reason="x", eip=1)
    assert seen[0].fields == {"reason": "x", "eip": 1, "insn": "nop"}   # the event's own eip wins
    with pytest.raises(KeyError):
        t.emit("no_such_event")


def _queue(events):
    space = MemoryMap()
    space.add(RamRegion("ram", 1 << 20), 0)
    mem = space.guest
    q = SplitQueue(mem, 8, events=events)
    q.set_addr(0x10000)
    return q, mem


def test_split_queue_reports_pop_fill_flush_and_why_it_notifies():
    events = RecordingEvents()
    q, mem = _queue(events)
    mem.write(0x10000, (0x20000).to_bytes(8, "little") + (16).to_bytes(4, "little")
              + (2).to_bytes(2, "little") + (0).to_bytes(2, "little"))
    mem.write_u16(q.avail + 4, 0)
    mem.write_u16(q.avail + 2, 1)
    elem = q.pop()
    q.push(elem, 16)
    assert [n for n, _ in events.rings] == ["vq_pop", "vq_fill", "vq_flush"]
    assert events.rings[0][1]["writable"] == [[0x20000, 16]]
    assert events.rings[1][1] == {"queue": 0, "slot": 0, "head": 0, "len": 16}
    assert q.notify_decision() == (True, "avail.flags=0x0000: VIRTQ_AVAIL_F_NO_INTERRUPT clear (§2.7.7)")
    mem.write_u16(q.avail, 1)
    due, why = q.notify_decision()
    assert not due and "NO_INTERRUPT" in why
    q.set_features(VirtioFeature.RING_EVENT_IDX)
    assert q.notify_decision()[1].startswith("first notification with VIRTIO_F_EVENT_IDX")
    mem.write_u16(q.avail + 4 + 2 * 8, 5)                      # used_event = 5
    assert q.notify_decision() == (False, "used.idx 1 -> 1 did not cross used_event=5 (§2.7.7.2)")


def test_untraced_queue_sends_no_ring_events():
    class Quiet(RecordingEvents):
        tracing = False
    events = Quiet()
    q, mem = _queue(events)
    mem.write(0x10000, (0x20000).to_bytes(8, "little") + (16).to_bytes(4, "little") + bytes(4))
    mem.write_u16(q.avail + 2, 1)
    q.push(q.pop(), 0)
    assert events.rings == []


def test_ring_view_follows_chains_into_indirect_tables():
    from uvirt.observe.inspector import _indirect_text
    from uvirt.virtio.ring_view import split_ring_view
    q, mem = _queue(RecordingEvents())
    desc = lambda addr, n, flags, nxt=0: (addr.to_bytes(8, "little") + n.to_bytes(4, "little")
                                         + flags.to_bytes(2, "little") + nxt.to_bytes(2, "little"))
    mem.write(0x10000, desc(0x20000, 4, 1, 1) + desc(0x30000, 32, 4))      # 0 -> 1 (INDIRECT)
    mem.write(0x30000, desc(0x40000, 8, 1, 1) + desc(0x50000, 16, 2))     # the table: out, in
    mem.write(0x40000, b"\x01\x02")
    mem.write_u16(q.avail + 2, 1)
    view = split_ring_view(mem, q)
    (chain,) = view["chains"]
    assert chain["descs"] == [0, 1] and chain["pending"]
    assert [(t["addr"], t["flag_names"]) for t in chain["indirect"]] == [(0x40000, "NEXT"), (0x50000, "WRITE")]
    assert chain["indirect"][0]["bytes"].startswith("01 02 00")
    assert _indirect_text(chain) == " -> indirect [0x40000+8 NEXT, 0x50000+16 WRITE]"
    assert view["descs"][1]["flag_names"] == "INDIRECT" and view["avail"]["idx"] == 1


def test_qtest_register_accesses_are_traced_and_decode(tmp_path):
    """Without a CPU (qtest), the sized accesses of the qtest client are the same declared
    events a guest's are, so a qtest session's trace decodes too."""
    import io
    from uvirt.launch.device_table import BuildContext, create_device
    from uvirt.cpu.machine import Machine
    from uvirt.qtest.server import QtestServer
    m = Machine(cpu=False)
    try:
        with m.batch():
            create_device(m, BuildContext(), "virtio-rng-pci", {"disable-modern": "on"})
        out = []
        srv = QtestServer(m.memory, m.io, m.services, out.append, log=io.StringIO(), timer=lambda: 0.0)
        srv.opened()
        events = m.tracer.record()
        m.trace_layout()
        # BAR0 at 0xc000 with I/O decode on, then STATUS = ACKNOWLEDGE, read back; a RAM write
        srv.feed(b"outl 0xcf8 0x80001010\noutl 0xcfc 0xc001\noutl 0xcf8 0x80001004\noutw 0xcfc 0x1\n"
                 b"outb 0xc012 0x1\ninb 0xc012\nwritel 0x1000 0x5\n")
        lines = decode(events)
        assert any(ln.startswith("00:02.0 virtio-rng legacy STATUS <- 0x01 ACKNOWLEDGE") for ln in lines)
        assert any(ln.startswith("00:02.0 virtio-rng legacy STATUS -> 0x01 ACKNOWLEDGE") for ln in lines)
        assert any("BAR0 unmapped -> 0xc000" in ln for ln in lines)
        assert not any(e.name == "mmio_write" for e in events)          # RAM is not a register
    finally:
        m.close()
