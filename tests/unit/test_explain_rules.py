"""``uvirt explain``'s rules from hand-made traces: the ones no bundled device can provoke
from a guest (a device refusing FEATURES_OK), and the table's shape."""

from uvirt.observe.explain import RULES, explain_events
from uvirt.trace import TraceEvent

BASE = 0xFE000000
LAYOUT = [TraceEvent("pci_device", {"bdf": "00:04.0", "name": "virtio-x", "transport": "modern",
                                    "bars": [[4, "mem", BASE, 0x4000]]})]


def w(off, size, value, insn="mov byte ptr [eax], dl"):
    return TraceEvent("mmio_write", {"addr": BASE + off, "size": size, "value": value, "eip": 0x100100,
                                     "insn": insn})


def r(off, size, value):
    return TraceEvent("mmio_read", {"addr": BASE + off, "size": size, "value": value})


def test_rules_are_a_table_with_unique_ids_and_sections():
    ids = [rule.id for rule in RULES]
    assert len(ids) == len(set(ids)) >= 15
    assert all(rule.spec.startswith("§") for rule in RULES)


def test_features_ok_refused_by_the_device():
    events = LAYOUT + [w(0x14, 1, 1), w(0x14, 1, 3), w(0x08, 4, 1), w(0x0C, 4, 1),
                       w(0x14, 1, 0x0B),
                       TraceEvent("guest_error", {"kind": "features_rejected",
                                                  "detail": "virtio-x: feature set 0x100000000 refused at FEATURES_OK"}),
                       r(0x14, 1, 0x03)]
    rules = [f.rule for f in explain_events(events)]
    assert rules == ["features_ok_refused"]
    (f,) = explain_events(events)
    assert "refused at FEATURES_OK" in f.message and f.spec == "§3.1.1 step 6"


def test_device_error_is_reported_with_qemus_reason():
    events = LAYOUT + [w(0x14, 1, 1), TraceEvent("guest_error", {"kind": "virtio_error",
                                                                 "detail": "virtio-x: Looped descriptor"})]
    (f,) = explain_events(events)
    assert f.rule == "device_error" and f.message.startswith("virtio-x: Looped descriptor")


def test_an_untouched_device_says_nothing():
    assert explain_events(LAYOUT + [TraceEvent("stop", {"reason": "debug_exit", "eip": 0})]) == []


def test_feature_writes_the_device_ignored():
    events = LAYOUT + [w(0x14, 1, 1),
                       TraceEvent("guest_error", {"kind": "unoffered_features",
                                                  "detail": "virtio-x: driver accepted unoffered features 0x4"}),
                       TraceEvent("guest_error", {"kind": "features_after_features_ok",
                                                  "detail": "virtio-x: feature write 0x0 after FEATURES_OK ignored"})]
    found = {f.rule: f.message for f in explain_events(events)}
    assert found["unoffered_features"].startswith("virtio-x: driver accepted unoffered features 0x4")
    assert "after FEATURES_OK ignored" in found["features_after_features_ok"]
