"""QMP without QEMU: greeting, negotiation, error classes, JSON garbage, events, the
device/block hooks (uvirt.qtest.qmp, jsonlex).  Expected texts are QEMU 7.2's replies
(recorded from qemu-system-x86_64 7.2.22; tests/guest/test_qtest_vs_qemu.py compares
live)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from uvirt.cpu.machine import Machine
from uvirt.launch.device_table import BuildContext, DeviceCatalog
from uvirt.board.services import Peripheral
from uvirt.qtest.jsonlex import Streamer
from uvirt.qtest.qmp import QmpContext, QmpMonitor


class Mon:
    def __init__(self, paused: bool = True) -> None:
        self.m = Machine(cpu=False)
        self.h = self.m.services
        self.quit = False
        self.resets = 0
        self.ctx = QmpContext(self.h, start_paused=paused, reset=self._reset, quit=self._quit,
                              devices=DeviceCatalog(self.m.board, BuildContext()))
        self.sent: list[bytes] = []
        self.mon = QmpMonitor(self.ctx, self.sent.append)
        self.mon.opened()

    def _reset(self):
        self.resets += 1

    def _quit(self):
        self.quit = True

    def __call__(self, text: str | bytes) -> list[dict]:
        self.sent.clear()
        self.mon.feed(text.encode() if isinstance(text, str) else text)
        return [json.loads(b) for b in self.sent]

    def negotiate(self) -> "Mon":
        assert self('{"execute":"qmp_capabilities"}') == [{"return": {}}]
        return self


@pytest.fixture
def qmp():
    q = Mon()
    yield q
    q.m.close()


def err(cls: str, desc: str, **kw) -> dict:
    out = dict(kw)
    out["error"] = {"class": cls, "desc": desc}
    return out


def test_greeting_is_qemu_7_2s_shape(qmp):
    qmp.sent.clear()
    qmp.mon.opened()
    g = json.loads(qmp.sent[0])
    assert list(g) == ["QMP"] and list(g["QMP"]) == ["version", "capabilities"]
    assert g["QMP"]["version"]["qemu"] == {"micro": 22, "minor": 2, "major": 7}
    assert g["QMP"]["capabilities"] == ["oob"]
    assert qmp.sent[0].endswith(b"}\n") and b"\n" not in qmp.sent[0][:-1]


def test_commands_before_negotiation_are_command_not_found(qmp):
    assert qmp('{"execute":"query-status"}') == [
        err("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'")]
    assert qmp('{"execute":"nosuch","id":1}') == [
        err("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'", id=1)]
    assert qmp('{"execute":"qmp_capabilities","id":"c"}') == [{"return": {}, "id": "c"}]
    assert qmp('{"execute":"qmp_capabilities"}') == [
        err("CommandNotFound", "Capabilities negotiation is already complete, command ignored")]


def test_error_replies_put_id_first_and_returns_last(qmp):
    qmp.negotiate()
    qmp.sent.clear()
    qmp.mon.feed(b'{"execute":"nosuch","id":1}{"execute":"query-status","id":{"a":[1]}}')
    assert qmp.sent == [
        b'{"id": 1, "error": {"class": "CommandNotFound", "desc": "The command nosuch has not been found"}}\n',
        b'{"return": {"status": "prelaunch", "singlestep": false, "running": false}, "id": {"a": [1]}}\n']


@pytest.mark.parametrize("text,desc", [
    ("garbage\n", "JSON parse error, invalid keyword 'garbage'"),
    ("tru\n", "JSON parse error, invalid keyword 'tru'"),
    ("}\n", "JSON parse error, expecting value"),
    ("]\n", "JSON parse error, expecting value"),
    ('{"execute":"query-status" "x"}', "JSON parse error, expected separator in dict"),
    ('{"execute":"query-status",}', "JSON parse error, expecting value"),
    ("@\n", "JSON parse error, stray '@'"),
    ("\x01\n", "JSON parse error, stray '\x01'"),
    ("1\n", "QMP input must be a JSON object"),
    ('"str"\n', "QMP input must be a JSON object"),
    ("null\n", "QMP input must be a JSON object"),
    ("[]", "QMP input must be a JSON object"),
    ('{"foo":1}', "QMP input member 'foo' is unexpected"),
    ('{"exec-oob":"query-status"}', "QMP input member 'exec-oob' is unexpected"),
    ('{"execute":1}', "QMP input member 'execute' must be a string"),
    ('{"execute":"query-status","arguments":[]}', "QMP input member 'arguments' must be an object"),
    ('{"execute":"query-status","arguments":null}', "QMP input member 'arguments' must be an object"),
    ('{"arguments":{}}', "QMP input lacks member 'execute'"),
    ('{"execute":"query-status","arguments":{"x":1}}', "Parameter 'x' is unexpected"),
    ('{"execute":"device_add"}', "Parameter 'driver' is missing"),
    ('{"execute":"device_del","arguments":{"id":5}}', "Invalid parameter type for 'id', expected: string"),
    ('{"execute":"block_resize","arguments":{"device":"drive0"}}', "Parameter 'size' is missing"),
    ('{"execute":"block_resize","arguments":{"size":"1"}}', "Invalid parameter type for 'size', expected: integer"),
    ('{"execute":"block_resize","arguments":{"size":1}}', "Cannot find device='' nor node-name=''"),
    ('{"execute":"block_resize","arguments":{"device":"drive0","size":1}}', "Cannot find device='drive0' nor node-name=''"),
    ('{"execute":"device_add","arguments":{"driver":"nosuch"}}', "'nosuch' is not a valid device model name"),
    ('{"execute":"device_add","arguments":{"driver":"isa-debug-exit","id":"x"}}', "Bus 'isa.0' does not support hotplugging"),
    ('{"execute":"quit","arguments":{"a":1}}', "Parameter 'a' is unexpected"),
])
def test_generic_errors_match_qemu(qmp, text, desc):
    qmp.negotiate()
    assert qmp(text) == [err("GenericError", desc)]
    assert not qmp.quit


def test_garbage_then_a_good_command_on_the_same_stream(qmp):
    qmp.negotiate()
    assert qmp('{"execute":"query-status"}}\n') == [
        {"return": {"status": "prelaunch", "singlestep": False, "running": False}},
        err("GenericError", "JSON parse error, expecting value")]
    assert qmp("{'execute':'query-status'}")[0]["return"]["status"] == "prelaunch"


def test_message_split_across_reads(qmp):
    qmp.negotiate()
    assert qmp('{"execute":"query-') == []
    assert qmp('status"}') == [{"return": {"status": "prelaunch", "singlestep": False, "running": False}}]


def test_unknown_command_and_device_not_found(qmp):
    qmp.negotiate()
    assert qmp('{"execute":"nosuch"}') == [err("CommandNotFound", "The command nosuch has not been found")]
    assert qmp('{"execute":"device_del","arguments":{"id":"nope"}}') == [
        err("DeviceNotFound", "Device 'nope' not found")]


def test_events_have_timestamps_and_come_before_the_return(qmp):
    qmp.negotiate()
    r = qmp('{"execute":"system_reset"}')
    assert [list(x) for x in r] == [["timestamp", "event", "data"], ["return"]]
    assert r[0]["event"] == "RESET" and r[0]["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
    assert set(r[0]["timestamp"]) == {"seconds", "microseconds"}
    assert qmp.resets == 1


def test_no_events_before_negotiation(qmp):
    qmp.h.emit_event("RESET", {"guest": False, "reason": "host-qmp-system-reset"})
    assert qmp.sent[1:] == []


def test_stop_cont_status(qmp):
    qmp.negotiate()
    assert qmp('{"execute":"stop"}') == [{"return": {}}]                 # prelaunch: no STOP
    r = qmp('{"execute":"cont"}')
    assert r[0]["event"] == "RESUME" and r[1] == {"return": {}}
    assert qmp('{"execute":"query-status"}') == [{"return": {"status": "running", "singlestep": False, "running": True}}]
    r = qmp('{"execute":"stop"}')
    assert r[0]["event"] == "STOP"
    assert qmp('{"execute":"query-status"}')[0]["return"]["status"] == "paused"


def test_quit_sends_shutdown_then_return(qmp):
    qmp.negotiate()
    r = qmp('{"execute":"quit"}')
    assert r[0]["event"] == "SHUTDOWN" and r[0]["data"] == {"guest": False, "reason": "host-qmp-quit"}
    assert r[1] == {"return": {}} and qmp.quit


def test_query_machines_has_pc_alias_default_and_qapi_mandatory_fields(qmp):
    qmp.negotiate()
    machines = qmp('{"execute":"query-machines"}')[0]["return"]
    pc = next(m for m in machines if m.get("alias") == "pc")
    assert pc["name"] == "pc-i440fx-7.2" and pc["is-default"] is True
    for m in machines:
        assert {"name", "cpu-max", "hotpluggable-cpus", "numa-mem-supported", "deprecated"} <= set(m)
    assert not any("q35" in m["name"] for m in machines)


def test_qom_list_types_lists_what_uvirt_creates_with_qemu_parents(qmp):
    qmp.negotiate()
    types = qmp('{"execute":"qom-list-types","arguments":{"abstract":true,"implements":"device"}}')[0]["return"]
    by_name = {t["name"]: t for t in types}
    assert by_name["i440FX-pcihost"] == {"name": "i440FX-pcihost", "parent": "pci-host-bridge"}
    assert by_name["device"] == {"abstract": True, "name": "device", "parent": "object"}
    assert by_name["isa-debug-exit"]["parent"] == "isa-device"
    concrete = qmp('{"execute":"qom-list-types","arguments":{"implements":"pci-device"}}')[0]["return"]
    assert all("abstract" not in t for t in concrete)
    assert "PIIX3" in {t["name"] for t in concrete} and "isa-debug-exit" not in {t["name"] for t in concrete}
    assert qmp('{"execute":"qom-list-types","arguments":{"abstract":true,"implements":"nosuch"}}') == [{"return": []}]


class FakeHotplug:
    def __init__(self, h):
        self.h = h
        self.plugged: list[Peripheral] = []
        self.unplug: list[Peripheral] = []

    def plug(self, entry):
        self.plugged.append(entry)

    def unplug_request(self, entry):
        self.unplug.append(entry)


def test_device_add_del_through_a_hotplug_handler(qmp):
    qmp.negotiate()
    hp = FakeHotplug(qmp.h)
    qmp.h.hotplug["isa.0"] = hp
    assert qmp('{"execute":"device_add","arguments":{"driver":"isa-debug-exit","id":"x","iobase":"0xf4"}}') == [{"return": {}}]
    assert hp.plugged[0].id == "x" and qmp.h.peripherals["x"].device is not None
    assert qmp('{"execute":"device_add","arguments":{"driver":"isa-debug-exit","id":"x"}}') == [
        err("GenericError", "Duplicate device ID 'x'")]
    assert qmp('{"execute":"device_add","arguments":{"driver":"isa-debug-exit","id":"y","bogus":1}}') == [
        err("GenericError", "Property 'isa-debug-exit.bogus' not found")]
    assert qmp('{"execute":"device_del","arguments":{"id":"x"}}') == [{"return": {}}]
    assert hp.unplug[0].id == "x"
    # the controller reports the guest's eject: DEVICE_DELETED, child first (virtio style)
    qmp.sent.clear()
    qmp.h.device_deleted(hp.unplug[0], child="virtio-backend")
    evs = [json.loads(b) for b in qmp.sent]
    assert [e["data"] for e in evs] == [{"path": "/machine/peripheral/x/virtio-backend"},
                                        {"device": "x", "path": "/machine/peripheral/x"}]
    assert "x" not in qmp.h.peripherals


def test_block_resize_calls_the_backend(qmp):
    qmp.negotiate()

    class Backend:
        size = 0

        def resize(self, n):
            self.size = n
    b = qmp.h.block_backends["drive0"] = Backend()
    assert qmp('{"execute":"block_resize","arguments":{"device":"drive0","size":33554432}}') == [{"return": {}}]
    assert b.size == 33554432


def test_streamer_nesting_limit():
    got = []
    s = Streamer(lambda v, e: got.append(e))
    s.feed(b"[" * 1100)
    assert got == ["JSON nesting depth limit exceeded"]


# ------------------------------------------------------------------ over a socket


def test_qmp_server_mode_accepts_clients_in_turn_and_quit_exits_0(tmp_path):
    path = str(tmp_path / "qmp.sock")
    p = subprocess.Popen([sys.executable, "-m", "uvirt", "run", "-accel", "qtest", "-display", "none",
                          "-qmp", f"unix:{path},server=on,wait=off"], stderr=subprocess.PIPE)
    try:
        import time
        for _ in range(200):
            try:
                c = socket.socket(socket.AF_UNIX)
                c.connect(path)
                break
            except OSError:
                c.close()
                time.sleep(0.05)
        f = c.makefile("rwb")
        c.settimeout(10)
        assert b'"QMP"' in f.readline()
        c.close()                                  # first client leaves; uvirt keeps listening
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        c.settimeout(10)
        f = c.makefile("rwb")
        assert b'"QMP"' in f.readline()
        f.write(b'{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n')
        f.flush()
        assert json.loads(f.readline()) == {"return": {}}
        assert json.loads(f.readline())["event"] == "SHUTDOWN"
        assert json.loads(f.readline()) == {"return": {}}
        assert p.wait(10) == 0
        assert b"Traceback" not in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()


def test_device_add_into_a_taken_pci_slot_says_what_qemu_says(qmp):
    """QMP errors from device placement are QEMU's words, without the -device prefix, and
    an id can be used again once its device is gone."""
    qmp.negotiate()
    hp = FakeHotplug(qmp.h)
    qmp.h.hotplug["pci.0"] = hp
    assert qmp('{"execute":"device_add","arguments":{"driver":"virtio-rng-pci","id":"r","addr":"0"}}') == [
        err("GenericError", "PCI: slot 0 function 0 not available for virtio-rng-pci, "
                            "in use by i440FX,id=(null)")]
    assert qmp('{"execute":"device_add","arguments":{"driver":"virtio-rng-pci","id":"r","addr":"6"}}') == [
        {"return": {}}]
    assert qmp('{"execute":"device_add","arguments":{"driver":"virtio-rng-pci","id":"s","addr":"6"}}') == [
        err("GenericError", "PCI: slot 6 function 0 not available for virtio-rng-pci, "
                            "in use by virtio-rng-pci,id=r")]
    assert qmp('{"execute":"device_add","arguments":{"driver":"virtio-rng-pci","id":"t","addr":"0x20"}}') == [
        err("GenericError", "Property 'virtio-rng-pci.addr' doesn't take value '0x20'")]


def test_device_add_takes_globals_and_skips_the_ones_it_cannot_apply(qmp):
    """QEMU 7.2 applies ``-global`` defaults to a device_add'ed device too, and skips (no
    error) a global it cannot apply to a hot-plugged device (object_apply_global_props with
    errp NULL); checked on qemu-system-x86_64 7.2 with -global virtio-rng-pci.period=x."""
    from uvirt.launch.device_table import BuildContext
    qmp.negotiate()
    qmp.ctx.devices.ctx = BuildContext(globals={"virtio-rng-pci": {"period": "x", "event_idx": "off"}})
    assert qmp('{"execute":"device_add","arguments":{"driver":"virtio-rng-pci","id":"r"}}') == [{"return": {}}]
    fn = qmp.h.peripherals["r"].device
    from uvirt.virtio.features import VirtioFeature as F
    assert not fn.vdev.host_features & F.RING_EVENT_IDX
