"""``uvirt explain`` names the one mistake of each broken driver in firmware/explain/, and
finds nothing to say about the correct ones (and the bundled virtio_demo.S)."""

from pathlib import Path

import pytest

from uvirt.observe.explain import RULES, explain, format_findings
from uvirt.launch.traced import traced_run
from uvirt.testing.qemu import BASE_ARGS

EXPLAIN_DIR = Path(__file__).resolve().parents[2] / "firmware" / "explain"
RNG = ("-device", "virtio-rng-pci", "-device", "isa-debug-exit,iobase=0xf4,iosize=4")

#: program -> the rule that must name its mistake (and be the only finding)
MISTAKES = {
    "status_order": "status_order",
    "legacy_features_ok": "features_ok_on_legacy",
    "features_ok_unchecked": "features_ok_unchecked",
    "version_1_missing": "version_1_missing",
    "no_features_ok": "driver_ok_without_features_ok",
    "queue_not_enabled": "queue_not_enabled",
    "wrong_notify_offset": "wrong_notify_offset",
    "driver_ok_missing": "driver_ok_missing",
    "never_notified": "never_notified",
    "avail_idx_not_advanced": "avail_idx_not_advanced",
    "desc_not_writable": "descriptor_not_writable",
    "interrupts_suppressed": "interrupts_suppressed",
    "isr_never_read": "isr_never_read",
}


def run(image):
    return traced_run([*BASE_ARGS, *RNG, "-kernel", str(image), "-uvirt-timeout", "30"])


def test_every_broken_program_is_listed():
    on_disk = {p.stem for p in EXPLAIN_DIR.glob("*.S")} - {"correct_legacy", "correct_modern"}
    assert on_disk == set(MISTAKES)
    assert set(MISTAKES.values()) <= {r.id for r in RULES}


@pytest.mark.parametrize("program", sorted(MISTAKES))
def test_explain_names_the_mistake(firmware, program):
    rec = run(firmware(EXPLAIN_DIR / f"{program}.S"))
    findings = explain(rec)
    assert [f.rule for f in findings] == [MISTAKES[program]], format_findings(findings, rec)
    f = findings[0]
    assert f.device == "00:02.0 virtio-rng" and f.spec.startswith("§")
    # the sentence quotes evidence: a register value or ring field, and where it came from
    assert any(k in f.message for k in ("0x", "avail.", "queue ", "STATUS")), f.message


@pytest.mark.parametrize("program", ["correct_legacy", "correct_modern"])
def test_correct_drivers_produce_no_finding(firmware, program):
    rec = run(firmware(EXPLAIN_DIR / f"{program}.S"))
    assert rec.exit_code == 1, rec.debugcon            # status 0: every report passed
    assert explain(rec) == [], format_findings(explain(rec), rec)


def test_bundled_demo_is_a_correct_driver(firmware):
    rec = run(firmware("virtio_demo"))
    assert explain(rec) == []


def test_messages_quote_the_values_that_show_the_mistake(firmware):
    rec = run(firmware(EXPLAIN_DIR / "status_order.S"))
    (f,) = explain(rec)
    assert "STATUS 0x00 (reset) -> 0x02 (DRIVER)" in f.message and "out dx, al @0x" in f.message
    rec = run(firmware(EXPLAIN_DIR / "avail_idx_not_advanced.S"))
    (f,) = explain(rec)
    assert "avail.idx = 0" in f.message and "addr 0x300000, len 16" in f.message


def test_recording_survives_json_and_explains_the_same(firmware):
    from uvirt.observe.record import Recording
    rec = run(firmware(EXPLAIN_DIR / "desc_not_writable.S"))
    again = Recording.from_json(rec.to_json())
    assert again.events == rec.events
    assert explain(again) == explain(rec)


@pytest.mark.qemu
@pytest.mark.parametrize("program", sorted(MISTAKES) + ["correct_legacy", "correct_modern"])
def test_broken_drivers_behave_the_same_on_qemu(firmware, qemu, program):
    """The mistakes are QEMU 7.2's to judge, not uvirt's: each program prints the same and
    ends the same on both (the ones whose request never completes FAIL on both)."""
    from uvirt.testing.guest import comparable, run_uvirt
    image = firmware(EXPLAIN_DIR / f"{program}.S")
    want = qemu(image, RNG)
    got = run_uvirt(image, RNG)
    assert got.exit_code == want.exit_code, (want.debugcon, got.debugcon)
    assert comparable(got.debugcon) == comparable(want.debugcon)

