"""Issue 12 item 5: every host mistake reachable from ``-device`` is one line, exit status 1,
no traceback, in QEMU 7.2's words where QEMU has words.

Parametrised over every property of every device in the table (uvirt/launch/device_table.py)
with a bad value, and over PCI placement mistakes (a taken slot, a slot past the bus, a
function past 7, single- and multi-function clashes, a bus that does not exist).  Where
QEMU has the device and the property, its first line of error is the expected one."""

from __future__ import annotations

import contextlib
import io
import subprocess

import pytest

from uvirt.cli import main as cli
from uvirt.launch.device_table import DEVICE_TYPES, device_props
from uvirt.testing.qemu import qemu_binary

BASE = ["-machine", "pc", "-nodefaults", "-display", "none"]

#: a value QEMU refuses, by property kind
BAD_BY_KIND = {"uint8": "0x100", "uint16": "0x10000", "uint32": "0x100000000", "uint64": "x",
               "int32": "x", "size32": "0x100000000", "blocksize": "0x100000000", "bool": "maybe",
               "onoffauto": "maybe", "BlockdevOnError": "x", "pci-addr": "0x20", "chardev": "nosuch",
               "size": "1x"}
#: string properties that name something (or have a syntax), and a value that is wrong
BAD_STR = {"drive": "nosuch", "memdev": "nosuch", "rng": "nosuch", "romfile": "/nonexistent.rom",
           "bus": "nosuch", "id": "1bad", "memory-regions": "3M"}
#: string properties any text is good for (a serial number, a port name)
FREE_FORM = {"serial", "name"}
#: what a device needs before it can be created at all
CONTEXT = {"virtconsole": ["-device", "virtio-serial-pci"],
           "virtserialport": ["-device", "virtio-serial-pci"],
           "virtio-blk-pci": ["-drive", "if=none,id=d0,file=null-co://,format=raw"],
           "ivshmem-plain": ["-object", "memory-backend-ram,id=m0,size=1M"]}
REQUIRED = {"virtio-blk-pci": "drive=d0", "ivshmem-plain": "memdev=m0"}
#: (driver, property) where uvirt's words differ from QEMU's, and why
OWN_WORDS = {
    **{(d, "memory-regions"): "uvirt's own property" for d in DEVICE_TYPES},
    ("virtio-rng-pci", "seed"): "uvirt's own property",
}


def bad_value(kind: str, name: str) -> str | None:
    return BAD_STR.get(name) if kind == "str" else BAD_BY_KIND[kind]


CASES = [(d, p.name, bad_value(p.kind, p.name)) for d in sorted(DEVICE_TYPES)
         for p in device_props(DEVICE_TYPES[d]) if p.name not in FREE_FORM]


def device_args(driver: str, prop: str, value: str) -> list[str]:
    need = REQUIRED.get(driver)
    spec = ",".join([driver] + ([need] if need and not need.startswith(prop + "=") else [])
                    + [f"{prop}={value}"])
    return CONTEXT.get(driver, []) + ["-device", spec]


def uvirt_error(args: list[str]) -> str:
    """``uvirt run ARGS`` in-process: must be one line on stderr, status 1, no traceback."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = cli.main(["run", *BASE, *args])
    text = err.getvalue()
    assert status == 1, text
    assert "Traceback" not in text and out.getvalue() == ""
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("uvirt: "), text
    return lines[0][len("uvirt: "):]


def qemu_error(args: list[str]) -> str | None:
    exe = qemu_binary()
    if exe is None:
        return None
    r = subprocess.run([exe, "-S", *BASE, *args], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stderr
    return r.stderr.splitlines()[0].removeprefix(f"{exe}: ").removeprefix("qemu-system-x86_64: ")


def test_every_property_is_covered():
    for d in DEVICE_TYPES:
        for p in device_props(DEVICE_TYPES[d]):
            assert p.name in FREE_FORM or bad_value(p.kind, p.name) is not None, (d, p.name, p.kind)


@pytest.mark.parametrize("driver, prop, value", CASES, ids=[f"{d}.{p}" for d, p, _ in CASES])
def test_bad_property_value_is_one_line(driver, prop, value):
    args = device_args(driver, prop, value)
    ours = uvirt_error(args)
    assert ours.startswith(f"-device {args[-1]}: "), ours
    assert "no -kernel given" not in ours                 # refused for the property itself
    if driver == "virtio-fb-pci" or (driver, prop) in OWN_WORDS:
        return                                           # QEMU has no words for these
    theirs = qemu_error(args)
    if theirs is None:
        pytest.skip("qemu-system-x86_64 not installed: words not compared")
    assert ours == theirs


PLACEMENT = {
    "taken-slot": ["-device", "virtio-rng-pci,addr=0x3", "-device", "virtio-rng-pci,addr=0x3"],
    "taken-slot-with-id": ["-device", "virtio-rng-pci,addr=3,id=r0", "-device", "virtio-rng-pci,addr=3"],
    "host-bridge-slot": ["-device", "virtio-rng-pci,addr=0"],
    "piix3-functions": ["-device", "virtio-blk-pci,drive=d0,addr=1.1",
                        "-drive", "if=none,id=d0,file=null-co://,format=raw"],
    "acpi-function": ["-device", "ivshmem-plain,memdev=m0,addr=1.3",
                      "-object", "memory-backend-ram,id=m0,size=1M"],
    "slot-past-the-bus": ["-device", "virtio-rng-pci,addr=0x20"],
    "function-past-7": ["-device", "virtio-rng-pci,addr=3.8"],
    "bus-address-syntax": ["-device", "virtio-rng-pci,addr=00:03.0"],
    "function-0-single": ["-device", "virtio-rng-pci,addr=3.0", "-device", "virtio-rng-pci,addr=3.1"],
    "function-0-after-others": ["-device", "virtio-rng-pci,addr=3.1,multifunction=on",
                                "-device", "virtio-rng-pci,addr=3.0"],
    "taken-function": ["-device", "virtio-rng-pci,addr=3.0,multifunction=on",
                       "-device", "virtio-rng-pci,addr=3.1", "-device", "virtio-serial-pci,addr=3.1"],
    "no-such-bus": ["-device", "virtio-rng-pci,bus=pci.1"],
    "pci-device-on-isa": ["-device", "virtio-rng-pci,bus=isa.0"],
    "isa-device-on-pci": ["-device", "isa-debug-exit,bus=pci.0"],
    "bus-full": [a for _ in range(31) for a in ("-device", "virtio-rng-pci")],   # slots 2..31 + 1
    "duplicate-id": ["-device", "virtio-rng-pci,id=a", "-device", "virtio-serial-pci,id=a"],
    # QEMU's size types: syntax, range, power of two
    **{f"blk-{v}": ["-drive", "if=none,id=d0,file=null-co://,format=raw",
                    "-device", f"virtio-blk-pci,drive=d0,{v}"]
       for v in ("logical_block_size=x", "logical_block_size=256", "logical_block_size=1000",
                 "physical_block_size=4M", "min_io_size=x", "opt_io_size=0x100000000")},
}


@pytest.mark.parametrize("args", PLACEMENT.values(), ids=PLACEMENT.keys())
def test_placement_mistakes_in_qemus_words(args):
    ours = uvirt_error(args)
    theirs = qemu_error(args)
    if theirs is None:
        pytest.skip("qemu-system-x86_64 not installed: words not compared")
    assert ours == theirs


def test_a_good_bus_and_multifunction_are_accepted(firmware):
    """bus=pci.0 / isa.0 are the buses uvirt's pc has; multifunction=on shows the guest
    header type bit 7, as on QEMU (firmware/pci_dump.S)."""
    from uvirt.testing.guest import run_uvirt
    res = run_uvirt(firmware("pci_dump"), ("-device", "virtio-rng-pci,bus=pci.0,addr=3.0,multifunction=on",
                                           "-device", "virtio-rng-pci,addr=3.1,disable-legacy=on",
                                           "-device", "isa-debugcon,bus=isa.0,iobase=0x402,chardev=n",
                                           "-chardev", "null,id=n"))
    assert res.exit_code == 1, res
    lines = res.debugcon.splitlines()
    f0 = lines[lines.index("00:03.0 1af4:1005") + 1]
    f1 = lines[lines.index("00:03.1 1af4:1044") + 1]
    assert f0.split()[15] == "80" and f1.split()[15] == "00"          # header type byte 0x0e


def test_too_many_msix_vectors_is_qemus_warning_and_no_msix(firmware, qemu, tmp_path):
    """QEMU 7.2 warns and creates the device without MSI-X (no capability, no BAR1); the
    guest sees the same configuration space on both."""
    import sys
    from uvirt.testing.guest import run_uvirt
    extra = ("-device", "virtio-rng-pci,vectors=100000")
    ours, theirs = run_uvirt(firmware("pci_dump"), extra), qemu(firmware("pci_dump"), extra)
    assert ours.exit_code == theirs.exit_code == 1
    assert ours.debugcon == theirs.debugcon
    r = subprocess.run([sys.executable, "-m", "uvirt", "run", *BASE, *extra, "-device",
                        "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", str(firmware("pci_dump"))],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.stderr == ("uvirt: -device virtio-rng-pci,vectors=100000: warning: unable to init "
                        "msix vectors to 100000\n")
