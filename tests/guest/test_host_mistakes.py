"""Issue 12 item 5: every host mistake reachable from ``-device``, ``-object`` and
``-chardev`` is one line, exit status 1, no traceback, in QEMU 7.2's words where QEMU has
words.

Generated from the tables, not hand-listed: every property of every device in the
``-device`` table (uvirt/launch/device_table.py) with several bad values of its kind,
every typed property of the memory back ends (uvirt/launch/backends.py) and every typed
key of ``-chardev`` (uvirt/options/tables.py); then PCI placement mistakes (a taken slot,
a slot past the bus, a function past 7, single- and multi-function clashes, a bus that
does not exist) and the checks QEMU's realize functions make.  uvirt runs in-process
(``uvirt.cli.main``); QEMU 7.2 runs with the same arguments and its first line of error
is the expected one where QEMU has the device and the property.  Without QEMU the
comparisons skip (and fail under ``CI=true``, as every differential test); the one-line
checks always run."""

from __future__ import annotations

import contextlib
import io
import subprocess

import pytest

from uvirt.cli import main as cli
from uvirt.launch.backends import DRIVE_BOOLS, DRIVE_CHOICES, DRIVE_NUMBERS, MEMORY_BACKEND_PROPS
from uvirt.launch.device_table import DEVICE_TYPES, device_props
from uvirt.options.keyval import BOOL, NUMBER, SIZE
from uvirt.options.tables import CHARDEV_KEYS
from uvirt.testing.qemu import qemu_binary

BASE = ["-machine", "pc", "-nodefaults", "-display", "none"]
NOT_A_KERNEL = "no -kernel given"         # uvirt's refusal once everything else was accepted

#: values QEMU refuses, by property kind: not a number, out of the type's range, bad syntax
BAD_BY_KIND = {
    "uint8": ("x", "0x100", "-1"), "uint16": ("x", "0x10000", "1k"),
    "uint32": ("x", "0x100000000", "-1", ""), "uint64": ("x", "18446744073709551616", ""),
    "int32": ("x", "2147483648", "-2147483649"),
    "size32": ("1x", "0x100000000", "-1"), "blocksize": ("1x", "0x100000000", "256", "1000"),
    "size": ("1x", "-1", "1.5"), "bool": ("maybe", "", "ON"), "onoffauto": ("maybe", "ON"),
    "BlockdevOnError": ("x", ""), "chardev": ("nosuch",),
    # a slot past the bus, a function past 7, bus:slot syntax, nothing after the dot
    "pci-addr": ("0x20", "20", "3.8", "1f.f", "00:03.0", "3.", "x", "-1"),
}
#: string properties that name something (or have a syntax), and values that are wrong
BAD_STR = {"drive": ("nosuch",), "memdev": ("nosuch",), "rng": ("nosuch",),
           "romfile": ("/nonexistent.rom",), "bus": ("nosuch",), "id": ("1bad", "a!"),
           "memory-regions": ("3M", "x")}
#: string properties any text is good for (a serial number, a port name)
FREE_FORM = {"serial", "name"}
#: what a device needs before it can be created at all
CONTEXT = {"virtconsole": ["-device", "virtio-serial-pci"],
           "virtserialport": ["-device", "virtio-serial-pci"],
           "virtio-blk-pci": ["-drive", "if=none,id=d0,file=null-co://,format=raw"],
           "ivshmem-plain": ["-object", "memory-backend-ram,id=m0,size=1M"],
           "isa-debugcon": ["-chardev", "null,id=n0"]}
REQUIRED = {"virtio-blk-pci": "drive=d0", "ivshmem-plain": "memdev=m0", "isa-debugcon": "chardev=n0"}
#: (driver, property) where uvirt's words differ from QEMU's, and why
OWN_WORDS = {
    **{(d, "memory-regions"): "uvirt's own property" for d in DEVICE_TYPES},
    ("virtio-rng-pci", "seed"): "uvirt's own property",
}
#: devices QEMU 7.2 does not have
UVIRT_ONLY = {"virtio-fb-pci"}


def bad_values(kind: str, name: str) -> tuple[str, ...]:
    return BAD_STR.get(name, ()) if kind == "str" else BAD_BY_KIND[kind]


CASES = [(d, p.name, v) for d in sorted(DEVICE_TYPES) for p in device_props(DEVICE_TYPES[d])
         if p.name not in FREE_FORM for v in bad_values(p.kind, p.name)]


def device_args(driver: str, prop: str, value: str) -> list[str]:
    need = REQUIRED.get(driver)
    spec = ",".join([driver] + ([need] if need and not need.startswith(prop + "=") else [])
                    + [f"{prop}={value}"])
    return CONTEXT.get(driver, []) + ["-device", spec]


def uvirt_run(args: list[str]) -> tuple[int, str, str]:
    """``uvirt run BASE ARGS`` in-process: (status, stdout, stderr)."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = cli.main(["run", *BASE, *args])
    return status, out.getvalue(), err.getvalue()


def uvirt_error(args: list[str]) -> str:
    """The one line of error (without ``uvirt: ``): status 1, no traceback, nothing else."""
    status, out, text = uvirt_run(args)
    assert status == 1, text
    assert "Traceback" not in text and out == ""
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("uvirt: "), text
    return lines[0][len("uvirt: "):]


def qemu_error(request: pytest.FixtureRequest, args: list[str]) -> str:
    """QEMU 7.2's first line of error for the same arguments (``-S``: it stops before any
    guest code).  Skips without QEMU, fails under CI=true (the ``qemu`` fixture's rule)."""
    request.getfixturevalue("qemu")
    exe = qemu_binary()
    r = subprocess.run([exe, "-S", *BASE, *args], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stderr
    return r.stderr.splitlines()[0].removeprefix(f"{exe}: ").removeprefix("qemu-system-x86_64: ")


def qemu_accepts(request: pytest.FixtureRequest, args: list[str]) -> bool:
    """Whether QEMU 7.2 creates the machine (asked to quit over QMP once it has)."""
    request.getfixturevalue("qemu")
    r = subprocess.run([qemu_binary(), "-S", *BASE, "-qmp", "stdio", *args], capture_output=True,
                       text=True, timeout=30,
                       input='{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n')
    return r.returncode == 0


def test_every_property_is_covered():
    for d in DEVICE_TYPES:
        for p in device_props(DEVICE_TYPES[d]):
            assert p.name in FREE_FORM or bad_values(p.kind, p.name), (d, p.name, p.kind)


@pytest.mark.parametrize("driver, prop, value", CASES, ids=[f"{d}.{p}={v}" for d, p, v in CASES])
def test_bad_property_value_is_one_line(request, driver, prop, value):
    args = device_args(driver, prop, value)
    ours = uvirt_error(args)
    assert ours.startswith(f"-device {args[-1]}: "), ours
    assert NOT_A_KERNEL not in ours                      # refused for the property itself
    if driver in UVIRT_ONLY or (driver, prop) in OWN_WORDS:
        return                                           # QEMU has no words for these
    assert ours == qemu_error(request, args)


PLACEMENT = {
    "taken-slot": ["-device", "virtio-rng-pci,addr=0x3", "-device", "virtio-rng-pci,addr=0x3"],
    "taken-slot-with-id": ["-device", "virtio-rng-pci,addr=3,id=r0", "-device", "virtio-rng-pci,addr=3"],
    "taken-slot-other-device": ["-device", "virtio-serial-pci,addr=4,id=s", "-device", "edu,addr=4"],
    "host-bridge-slot": ["-device", "virtio-rng-pci,addr=0"],
    "piix3-functions": ["-device", "virtio-blk-pci,drive=d0,addr=1.1",
                        "-drive", "if=none,id=d0,file=null-co://,format=raw"],
    "acpi-function": ["-device", "ivshmem-plain,memdev=m0,addr=1.3",
                      "-object", "memory-backend-ram,id=m0,size=1M"],
    "slot-past-the-bus": ["-device", "virtio-rng-pci,addr=0x20"],
    "slot-past-the-bus-decimal-looking": ["-device", "virtio-rng-pci,addr=32"],
    "function-past-7": ["-device", "virtio-rng-pci,addr=3.8"],
    "function-past-7-hex": ["-device", "edu,addr=1f.a"],
    "bus-address-syntax": ["-device", "virtio-rng-pci,addr=00:03.0"],
    "function-0-single": ["-device", "virtio-rng-pci,addr=3.0", "-device", "virtio-rng-pci,addr=3.1"],
    "function-0-after-others": ["-device", "virtio-rng-pci,addr=3.1,multifunction=on",
                                "-device", "virtio-rng-pci,addr=3.0"],
    "taken-function": ["-device", "virtio-rng-pci,addr=3.0,multifunction=on",
                       "-device", "virtio-rng-pci,addr=3.1", "-device", "virtio-serial-pci,addr=3.1"],
    "no-such-bus": ["-device", "virtio-rng-pci,bus=pci.1"],
    "bus-number-past-the-bus": ["-device", "edu,bus=pci.255"],
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

#: what QEMU's realize functions refuse (the value has the right type, the device refuses it)
_BLK = ["-drive", "if=none,id=d0,file=null-co://,format=raw"]
REALIZE = {
    **{f"blk-{v}": _BLK + ["-device", f"virtio-blk-pci,drive=d0,{v}"]
       for v in ("num-queues=0", "queue-size=0", "queue-size=2", "queue-size=100", "queue-size=2048",
                 "cyls=1", "heads=1,secs=1", "cyls=70000,heads=1,secs=1", "logical_block_size=4096",
                 "min_io_size=1", "opt_io_size=100", "max-discard-sectors=0",
                 "max-write-zeroes-sectors=4194304", "scsi=on", "drive=")},
    "blk-no-drive": ["-device", "virtio-blk-pci"],
    "blk-empty-drive": ["-drive", "if=none,id=e0", "-device", "virtio-blk-pci,drive=e0"],
    "blk-drive-twice": _BLK + ["-device", "virtio-blk-pci,drive=d0", "-device", "virtio-blk-pci,drive=d0"],
    "rng-period-0": ["-device", "virtio-rng-pci,period=0"],
    **{f"rng-max-bytes-{v}": ["-device", f"virtio-rng-pci,max-bytes={v}"]
       for v in ("-1", "9223372036854775808")},
    **{f"iommu-platform-{d}": ["-device", f"{d},iommu_platform=on"]
       for d in ("virtio-rng-pci", "virtio-serial-pci")},
    "neither-legacy-nor-modern": ["-device", "virtio-rng-pci,disable-legacy=on,disable-modern=on"],
    "serial-max-ports-0": ["-device", "virtio-serial-pci,max_ports=0"],
    "serial-max-ports-512": ["-device", "virtio-serial-pci,max_ports=512"],
    "port-0-not-a-console": ["-device", "virtio-serial-pci", "-device", "virtserialport,nr=0"],
    "port-past-max": ["-device", "virtio-serial-pci,max_ports=2", "-device", "virtserialport,nr=2"],
    "port-taken": ["-device", "virtio-serial-pci", "-device", "virtserialport,nr=1",
                   "-device", "virtserialport,nr=1"],
    "port-without-bus": ["-device", "virtconsole"],
    "debugcon-without-chardev": ["-device", "isa-debugcon"],
    "debugcon-empty-chardev": ["-device", "isa-debugcon,chardev="],
    "chardev-in-use": ["-chardev", "null,id=n", "-device", "isa-debugcon,chardev=n",
                       "-device", "isa-debugcon,chardev=n,iobase=0x402"],
    "ivshmem-plain-without-memdev": ["-device", "ivshmem-plain"],
    "ivshmem-plain-memdev-twice": ["-object", "memory-backend-ram,id=m,size=1M",
                                   "-device", "ivshmem-plain,memdev=m", "-device", "ivshmem-plain,memdev=m"],
    "ivshmem-doorbell-without-chardev": ["-device", "ivshmem-doorbell"],
    "gpu-max-outputs": ["-device", "virtio-gpu-pci,max_outputs=17"],
    "unknown-device": ["-device", "nosuch"],
    "unknown-property": ["-device", "edu,nosuch=1"],
}

#: ``-global`` defaults are applied first, read as QOM reads them (``can't apply global``,
#: even where the -device sets the property itself)
GLOBALS = {
    f"global-{g}": ["-global", g, "-device", d]
    for g, d in (("virtio-rng-pci.period=x", "virtio-rng-pci"),
                 ("virtio-rng-pci.period=0x100000000", "virtio-rng-pci,period=5"),
                 ("virtio-rng-pci.event_idx=maybe", "virtio-rng-pci"),
                 ("virtio-rng-pci.disable-legacy=maybe", "virtio-rng-pci"),
                 ("virtio-rng-pci.nosuch=1", "virtio-rng-pci"),
                 ("edu.dma_mask=x", "edu"),
                 ("virtio-blk-pci.bootindex=x", "virtio-blk-pci,drive=d0"),
                 ("virtio-blk-pci.min_io_size=x", "virtio-blk-pci,drive=d0"),
                 ("virtio-blk-pci.werror=x", "virtio-blk-pci,drive=d0"),
                 ("virtio-blk-pci.logical_block_size=100", "virtio-blk-pci,drive=d0"))
}
for _name, _args in GLOBALS.items():
    if "virtio-blk" in _name:
        _args[:0] = _BLK
REALIZE.update(GLOBALS)


@pytest.mark.parametrize("args", [*PLACEMENT.values(), *REALIZE.values()],
                         ids=[*PLACEMENT, *REALIZE])
def test_placement_and_realize_mistakes_in_qemus_words(request, args):
    assert uvirt_error(args) == qemu_error(request, args)


#: values QEMU takes although they look odd: uvirt must take them too
ACCEPTED = {
    "addr-0x-prefix": ["-device", "edu,addr=0x5"], "addr-function": ["-device", "edu,addr=5.0"],
    "blk-block-size-0": _BLK + ["-device", "virtio-blk-pci,drive=d0,logical_block_size=0,"
                                           "physical_block_size=0"],
    "blk-queue-size-4": _BLK + ["-device", "virtio-blk-pci,drive=d0,queue-size=4"],
    "console-empty-chardev": ["-device", "virtio-serial-pci", "-device", "virtconsole,chardev="],
    "rng-empty-link": ["-device", "virtio-rng-pci,rng="],
    "rng-max-bytes-max": ["-device", "virtio-rng-pci,max-bytes=9223372036854775807"],
    "iommu-platform-modern": ["-device", "virtio-rng-pci,iommu_platform=on,disable-legacy=on"],
    "uint-octal": ["-device", "virtio-serial-pci,max_ports=010"],
    "bool-spellings": ["-device", "virtio-rng-pci,event_idx=yes,indirect_desc=n,any_layout=true"],
}


@pytest.mark.parametrize("args", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_values_qemu_accepts_are_accepted(request, args):
    assert NOT_A_KERNEL in uvirt_error(args)            # everything before the kernel passed
    assert qemu_accepts(request, args)


# --------------------------------------------------------------------------- -object, -chardev

_BAD_TYPED = {"bool": ("maybe", ""), "size": ("1x", "-1"), "uint32": ("x", "-1", "0x100000000"),
              "HostMemPolicy": ("x",)}
OBJECT_CASES = [(t, k, v) for t, props in sorted(MEMORY_BACKEND_PROPS.items())
                for k, kind in sorted(props.items()) for v in _BAD_TYPED.get(kind, ())]


@pytest.mark.parametrize("qom_type, key, value", OBJECT_CASES,
                         ids=[f"{t}.{k}={v}" for t, k, v in OBJECT_CASES])
def test_bad_memory_backend_property_is_one_line(request, qom_type, key, value, tmp_path):
    spec = f"{qom_type},id=m0," + ("" if key == "size" else "size=1M,")
    if qom_type == "memory-backend-file":
        spec += f"mem-path={tmp_path / 'mem'},"
    args = ["-object", spec + f"{key}={value}"]
    ours = uvirt_error(args)
    assert ours.startswith(f"-object {args[1]}: ") and NOT_A_KERNEL not in ours, ours
    assert ours == qemu_error(request, args)


DRIVE_CASES = sorted([(k, "maybe") for k in DRIVE_BOOLS]
                     + [(k, "x") for k in DRIVE_NUMBERS] + [(k, "x") for k in DRIVE_CHOICES]
                     + [("size", "1x"), ("readonly", "")])


@pytest.mark.parametrize("key, value", DRIVE_CASES, ids=[f"{k}={v}" for k, v in DRIVE_CASES])
def test_bad_drive_value_is_one_line(request, key, value):
    args = ["-drive", f"if=none,id=d0,file=null-co://,format=raw,{key}={value}"]
    ours = uvirt_error(args)
    assert ours.startswith(f"-drive {args[1]}: ") and NOT_A_KERNEL not in ours, ours
    assert ours == qemu_error(request, args)


_BAD_KEY = {BOOL: ("maybe",), NUMBER: ("x", "18446744073709551616"), SIZE: ("1x",)}
CHARDEV_CASES = [(k, v) for k, kind in sorted(CHARDEV_KEYS.items(), key=lambda kv: kv[0])
                 for v in _BAD_KEY.get(kind, ())]


@pytest.mark.parametrize("key, value", CHARDEV_CASES, ids=[f"{k}={v}" for k, v in CHARDEV_CASES])
def test_bad_chardev_key_is_one_line(request, key, value):
    args = ["-chardev", f"null,id=c0,{key}={value}"]
    ours = uvirt_error(args)
    assert ours.startswith(f"-chardev {args[1]}: "), ours
    assert ours == qemu_error(request, args)


# --------------------------------------------------------------------------- guest-visible


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
