"""``uvirt trace``, ``-uvirt-trace-format`` and ``uvirt explain`` as a user types them, on
the bundled virtio_demo.S: the decoded trace reads in the spec's order and words."""

import json
import subprocess
import sys

from uvirt.testing.qemu import BASE_ARGS
from uvirt.trace import TraceEvent
from uvirt.observe.decode import decode, read_json

RNG = ["-device", "virtio-rng-pci", "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]


def uvirt(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "uvirt", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _in_order(lines, wanted):
    """Each wanted fragment in a later line than the previous one; returns what is missing."""
    i = 0
    for w in wanted:
        while i < len(lines) and w not in lines[i]:
            i += 1
        if i == len(lines):
            return w
        i += 1
    return None


#: virtio_demo.S as the spec tells the story: §3.1.1 initialisation, §4.1.5.1.3 queue set-up,
#: §2.7.13 supplying a buffer, §2.9 notifying, the device's side (§2.7.6, §2.7.8, §2.7.7),
#: §4.1.4.5 the ISR read that acknowledges the interrupt.
DEMO_STORY = [
    "legacy STATUS <- 0x00 (reset)",
    "legacy STATUS <- 0x01 ACKNOWLEDGE ",
    "legacy STATUS <- 0x03 ACKNOWLEDGE|DRIVER ",
    "legacy HOST_FEATURES -> 0x79000000 NOTIFY_ON_EMPTY|ANY_LAYOUT|RING_INDIRECT_DESC|RING_EVENT_IDX|BAD_FEATURE",
    "legacy GUEST_FEATURES <- 0x00000000 none",
    "legacy QUEUE_SEL <- 0x0000 (queue 0)",
    "legacy QUEUE_NUM -> 8 (q0 size)",
    "legacy QUEUE_PFN <- 0x00000200 (q0 ring at 0x200000)",
    "legacy STATUS <- 0x07 ACKNOWLEDGE|DRIVER|DRIVER_OK",
    'debugcon: "kick queue 0"',
    "legacy QUEUE_NOTIFY <- 0x0000: kick queue 0",
    "KICK q0 available buffer notification",
    "POP q0 chain head 0 (avail.idx 1): in 0x300000+16 (device-writable)",
    "USED q0 used.ring[0] = {id 0, len 16}",
    "USED_IDX q0 used.idx 0 -> 1",
    "INTERRUPT q0 raised: avail.flags=0x0000: VIRTQ_AVAIL_F_NO_INTERRUPT clear",
    'debugcon: "used.idx 1 id 0 length 16"',
    "legacy ISR -> 0x01 QUEUE",
    "legacy ISR -> 0x00 none",
    "isa-debug-exit +0x0 <- 0x0: exit status 1",
    "stop debug_exit",
]


def test_uvirt_trace_of_the_demo_reads_as_the_spec(firmware):
    image = firmware("virtio_demo")
    r = uvirt("trace", *BASE_ARGS, *RNG, "-debugcon", "null", "-kernel", str(image))
    assert r.returncode == 1, r.stderr          # the guest's debug-exit status 0
    lines = r.stdout.splitlines()
    assert _in_order(lines, DEMO_STORY) is None, f"missing {_in_order(lines, DEMO_STORY)!r}:\n{r.stdout}"
    status = next(ln for ln in lines if "STATUS <- 0x07" in ln)
    assert "§3.1.1" in status and "§4.1.4.10" in status and "out dx, al @0x" in status
    pop = next(ln for ln in lines if "POP q0" in ln)
    assert "§2.7.6" in pop and "out dx, ax @0x" in pop      # the QUEUE_NOTIFY that caused it


def test_filters_and_json_round_trip_through_the_command(firmware, tmp_path):
    image = firmware("virtio_demo")
    r = uvirt("trace", "--filter-register", "STATUS", "--filter-device", "virtio-rng",
              *BASE_ARGS, *RNG, "-kernel", str(image))
    lines = r.stdout.splitlines()
    assert lines and all(" STATUS " in ln and "virtio-rng" in ln for ln in lines)
    out = tmp_path / "t.jsonl"
    r = uvirt("trace", "--trace-format", "json", "--output", str(out), *BASE_ARGS, *RNG,
              "-debugcon", "null", "-kernel", str(image))
    assert r.returncode == 1, r.stderr
    jl = out.read_text().splitlines()
    events = read_json(jl)
    assert [TraceEvent.from_json(json.dumps({"event": e.name, **e.fields})) for e in events] == events
    assert [json.loads(x)["event"] for x in jl] == [e.name for e in events]
    assert _in_order(decode(events), DEMO_STORY) is None     # decodes on its own, after the run


def test_run_writes_the_decoded_trace_with_a_format_option(firmware, tmp_path):
    image = firmware("virtio_demo")
    text, raw = tmp_path / "t.txt", tmp_path / "t.raw"
    r = uvirt("run", *BASE_ARGS, *RNG, "-debugcon", "null", "-kernel", str(image),
              "-uvirt-trace", str(text), "-uvirt-trace-format", "text")
    assert r.returncode == 1, r.stderr
    assert _in_order(text.read_text().splitlines(), DEMO_STORY) is None
    r = uvirt("run", *BASE_ARGS, *RNG, "-debugcon", "null", "-kernel", str(image), "-uvirt-trace", str(raw))
    assert "pio 0x00e9 size=1 <- 0x42" in raw.read_text()                 # raw stays the default
    r = uvirt("run", *BASE_ARGS, "-kernel", str(image), "-uvirt-trace", str(raw), "-uvirt-trace-format", "xml")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "'xml'" in r.stderr


def test_explain_command_prints_the_diagnosis_and_exits_1(firmware):
    from pathlib import Path
    src = Path(__file__).resolve().parents[2] / "firmware" / "explain" / "isr_never_read.S"
    r = uvirt("explain", *BASE_ARGS, *RNG, "-kernel", str(firmware(src)))
    assert r.returncode == 1, r.stderr
    assert "isr_never_read (§4.1.4.5)" in r.stdout and "INTx is still asserted" in r.stdout
    r = uvirt("explain", "--json", *BASE_ARGS, *RNG, "-kernel", str(firmware("virtio_demo")))
    assert r.returncode == 0 and json.loads(r.stdout) == []


def test_decoded_tail_for_failure_reports(firmware):
    """What the pytest plugin shows when a guest fails: the last decoded lines, kept in
    bounded memory while the run goes, and the explanation from the same events."""
    from uvirt.observe.explain import explain_events
    from uvirt.observe.virtio_state import virtio_state
    from uvirt.options import parse_argv
    from uvirt.launch.runner import build_machine
    from uvirt.observe.decode import DecodedTail, last_events

    src = __import__("pathlib").Path(__file__).resolve().parents[2] / "firmware" / "explain" / "desc_not_writable.S"
    m = build_machine(parse_argv([*BASE_ARGS, *RNG, "-debugcon", "null", "-kernel", str(firmware(src))])).machine
    events = m.tracer.record()
    tail = DecodedTail(5).attach(m)
    try:
        m.run(timeout=30)
        state = virtio_state(m)
    finally:
        m.close()
    lines = tail.lines()
    assert len(lines) == 5 and lines == last_events(events, 5)
    assert lines[-1].startswith("stop debug_exit") and "exit status 3" in lines[-2]
    assert [f.rule for f in explain_events(events, state)] == ["descriptor_not_writable"]


def test_help_and_host_mistakes_are_one_line():
    r = uvirt("inspect", "-h")
    assert r.returncode == 0 and "uvirt inspect [--html FILE]" in r.stdout
    r = uvirt("trace", "-machine", "pc")
    assert r.returncode == 1 and r.stderr.startswith("uvirt: no -kernel given") and "Traceback" not in r.stderr
    r = uvirt("trace", "--trace-format", "yaml", "-kernel", "x")
    assert r.returncode == 1 and "--trace-format yaml" in r.stderr
