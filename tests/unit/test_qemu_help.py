"""uvirt run's help answers come from the tables that drive uvirt (CPU-free)."""

import re

import pytest

from uvirt.launch import help as qemu_help
from uvirt.launch import device_table as registry
from uvirt.launch.device_table import DEVICE_TYPES, DeviceType, Prop, device_props
from uvirt.errors import OptionError
from uvirt.options import IGNORED_OPTIONS, UNSUPPORTED_OPTIONS, HelpRequest
from uvirt.options.argv import ArgvParser

QEMU_PROPERTY_LINE = re.compile(r"^  [\w.-]+=<[^>]+(?:>[^>]*)?>(?: *- .*)?$")


def test_every_option_uvirt_handles_is_described():
    handled = {name[4:].replace("_", "-") for name in dir(ArgvParser) if name.startswith("opt_")}
    handled -= set(IGNORED_OPTIONS)             # listed with their reasons instead
    assert handled <= set(qemu_help.OPTION_HELP), handled - set(qemu_help.OPTION_HELP)


def test_options_help_lists_supported_ignored_and_refused():
    text = qemu_help.options_help()
    for name in qemu_help.OPTION_HELP:
        assert re.search(rf"^-{re.escape(name)}( |$)", text, re.M), name
    for name in list(IGNORED_OPTIONS) + list(UNSUPPORTED_OPTIONS):
        assert re.search(rf"^-{re.escape(name)}( |$)", text, re.M), name
    assert all(len(line) <= 80 for line in text.splitlines())


def test_device_help_is_generated_from_the_table(monkeypatch):
    fake = DeviceType("frob-pci", "pci", "a device added by a later issue",
                      (Prop("level", "uint8", 7), Prop("name", "str")), lambda m, v, c: None,
                      category="Network")
    monkeypatch.setitem(DEVICE_TYPES, "frob-pci", fake)
    listing = qemu_help.device_list()
    assert 'Network devices:\nname "frob-pci", bus PCI, desc "a device added by a later issue"' in listing
    props = qemu_help.answer(HelpRequest("-device", "frob-pci,help")).splitlines()
    assert props[0] == "frob-pci options:"
    assert "  level=<uint8>          -  (default: 7)" in props
    assert "  name=<str>" in props
    assert "  addr=<int32>           - Slot and optional function number, example: 06.0 or 06 (default: -1)" in props


@pytest.mark.parametrize("driver", sorted(DEVICE_TYPES))
def test_each_drivers_properties_are_its_table_rows(driver):
    lines = qemu_help.answer(HelpRequest("-device", f"{driver},help")).splitlines()
    assert lines[0] == f"{driver} options:"
    body = lines[1:]
    assert body == sorted(body)                     # QEMU sorts the rendered lines
    assert all(QEMU_PROPERTY_LINE.match(line) for line in body), body
    names = [line.split("=", 1)[0].strip() for line in body]
    assert sorted(names) == sorted(p.name for p in device_props(DEVICE_TYPES[driver])
                                   if p.name not in ("id", "bus"))     # -device options, not properties


def test_property_lines_in_qemus_layout():
    # object_property_help: "  name=<type>", padded to 24 when a description or default
    # follows, " - description", " (default: JSON)".
    assert qemu_help.property_help("iobase", "uint32", 0x501) == "  iobase=<uint32>        -  (default: 1281)"
    assert qemu_help.property_help("disable-legacy", "onoffauto", "auto") == \
        '  disable-legacy=<OnOffAuto> - on/off/auto (default: "auto")'
    assert qemu_help.property_help("ioeventfd", "bool", True) == "  ioeventfd=<bool>       - on/off (default: true)"
    assert qemu_help.property_help("romfile", "str", None) == "  romfile=<str>"
    assert qemu_help.property_help("vectors", "uint32", None) == "  vectors=<uint32>"


def test_unknown_device_help_is_an_error():
    with pytest.raises(OptionError, match="Device 'nosuch' not found"):
        qemu_help.answer(HelpRequest("-device", "nosuch,help"))


def test_device_help_groups_in_qemus_category_order():
    heads = [line for line in qemu_help.device_list().splitlines() if line.endswith(" devices:")]
    order = [h[:-len(" devices:")] for h in heads]
    assert order == [c for c in qemu_help.CATEGORIES if c in order]
    assert registry.DEVICE_TYPES["virtio-blk-pci"].category == "Storage"
