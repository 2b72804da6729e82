"""What ``uvirt run`` prints for QEMU's help options, in QEMU 7.2's shapes, for what uvirt
supports.

Every answer is generated from the tables that drive uvirt itself, so it cannot drift
from what uvirt accepts:

* ``-h``/``-help``/``--help``: ``OPTION_HELP`` below (the options uvirt honours; a test
  checks that every option handler in ``uvirt.options.argv`` has an entry), then
  ``IGNORED_OPTIONS`` and ``UNSUPPORTED_OPTIONS`` with their reasons.  Layout of
  ``qemu-options.hx``: the synopsis, and the text on the same line from column 16 when
  the synopsis is short, else on the next line indented 16.
* ``-device help``: ``DEVICE_TYPES`` (uvirt/launch/device_table.py) grouped by category as
  ``qdev_print_devinfos`` groups them: ``name "virtio-rng-pci", bus PCI, desc "..."``.
* ``-device NAME,help``: that driver's ``Prop`` rows, sorted, each as QEMU's
  ``object_property_help`` prints it: ``  name=<type>``, padded to 24 columns, then
  `` - description`` and `` (default: JSON)`` when there are any.
* ``-machine help``, ``-accel help``, ``-cpu help``, ``-chardev help``, ``-object help``,
  ``-display help``, ``-vga help``: uvirt's lists in QEMU's layout.
* ``-version``: QEMU's two lines, with uvirt's version where Debian puts its package's.

QEMU prints its help on stdout with status 0; so does uvirt.  One difference: QEMU
answers ``-device nosuch,help`` with an error line and status 0; uvirt exits 1 there, as
for every other host mistake.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from uvirt.errors import OptionError
from uvirt.options.config import HelpRequest
from uvirt.options.keyval import parse_qemu_opts
from uvirt.options.tables import IGNORED_OPTIONS, UNSUPPORTED_OPTIONS

#: option -> (synopsis after the option name, what uvirt does with it).  Options uvirt
#: honours (``uvirt.options.argv`` has a handler for each); QEMU's own wording where the
#: behaviour is QEMU's.
OPTION_HELP: dict[str, tuple[str, str]] = {
    "h": ("", "display this help and exit (also -help, --help)"),
    "version": ("", "display version information and exit"),
    "machine": ("[type=]name[,prop[=value][,...]]",
                "selects emulated machine ('-machine help' for list): pc (= pc-i440fx-7.2), "
                "or none under qtest; accel=tcg|qtest"),
    "M": ("[type=]name[,...]", "same as -machine"),
    "accel": ("[accel=]accelerator[,prop[=value][,...]]",
              "select accelerator: tcg or qtest ('-accel help' for list); kvm is skipped "
              "when another candidate follows, as QEMU does on a host without KVM"),
    "enable-kvm": ("", "a kvm candidate (skipped when -accel tcg follows; alone an error)"),
    "cpu": ("cpu", "select CPU: qemu64 only ('-cpu help' for list)"),
    "smp": ("[cpus=]1", "one CPU only (uvirt emulates exactly one)"),
    "m": ("[size=]megs[,slots=n,maxmem=size]",
          "configure guest RAM (default 128M; no memory hotplug)"),
    "device": ("driver[,prop[=value][,...]]",
               "add device driver; prop=value sets its properties ('-device help' for the "
               "drivers, '-device driver,help' for one driver's properties)"),
    "global": ("driver.property=value", "set a default for driver's property"),
    "object": ("TYPENAME[,PROP1=VALUE1,...]",
               "create a new object: memory-backend-ram, memory-backend-file, "
               "memory-backend-memfd ('-object help')"),
    "drive": ("if=none,id=ID,file=FILE[,format=raw][,readonly=on|off][,...]",
              "a block back end for -device virtio-blk-pci,drive=ID (raw files, null-co://)"),
    "netdev": ("type,id=ID[,...]", "parsed and recorded; uvirt has no network card to use it"),
    "chardev": ("backend,id=id[,prop=value...]",
                "character device: file (path=, append=), stdio, null, socket (path= or "
                "host=,port=; a client, or server=on[,wait=off]); '-chardev help'"),
    "mon": ("[chardev=]name[,mode=readline|control][,pretty[=on|off]]",
            "a monitor on chardev name (QMP with mode=control)"),
    "monitor": ("dev", "a HMP monitor on dev ('none' for none)"),
    "qmp": ("dev", "a QMP monitor on dev"),
    "qmp-pretty": ("dev", "a QMP monitor on dev, pretty-printed JSON"),
    "debugcon": ("dev", "redirect the debug console (port 0xE9) to char device 'dev'"),
    "serial": ("dev", "redirect the serial port to char device 'dev' (16550 UARTs at COM1..COM4)"),
    "parallel": ("none", "no parallel port (the only value uvirt accepts)"),
    "qtest": ("dev", "serve QEMU's qtest protocol on dev (no CPU; with -accel qtest)"),
    "qtest-log": ("file", "write the qtest session to file, as QEMU's -qtest-log"),
    "kernel": ("image", "boot image: multiboot v1 (a.out kludge or ELF32)"),
    "append": ("cmdline", "the multiboot command line"),
    "initrd": ("file", "parsed with -kernel but not loaded: uvirt passes no multiboot modules "
                       "(QEMU lists the files as modules in the multiboot information)"),
    "nodefaults": ("", "don't create default devices (uvirt never creates QEMU's VGA and NIC)"),
    "no-reboot": ("", "exit instead of rebooting (uvirt always does)"),
    "S": ("", "freeze CPU at startup (with -qtest: the qtest server runs, no CPU)"),
    "nographic": ("", "no graphical output (uvirt has none)"),
    "display": ("type", "accepted: uvirt has no graphical console ('-display help')"),
    "vga": ("none", "no VGA card (the only value uvirt accepts; '-vga help')"),
    "boot": ("[order=drives][,once=drives][,menu=on|off]...",
             "firmware boot settings, to fw_cfg and CMOS as QEMU puts them (read by -bios "
             "firmware; the fast default boots -kernel directly)"),
    "bios": ("file", "set the filename for the BIOS: real firmware from the reset vector "
                     "(without it uvirt's in-process firmware step runs, the fast default)"),
    "uuid": ("%08x-%04x-%04x-%04x-%012x", "specify machine UUID (fw_cfg, for firmware)"),
    "rtc": ("[base=utc|localtime|datetime][,clock=...][,driftfix=...]", "accepted, no effect"),
    "name": ("string1[,process=string2][,debug-threads=on|off]", "accepted, no effect"),
    # uvirt's own (QEMU rejects them: a command line carrying them is visibly uvirt-only)
    "uvirt-timeout": ("seconds", "wall-clock budget (default 10; 0 = none); exit 124 when spent"),
    "uvirt-max-insns": ("n", "stop after n guest instructions (costly: Unicorn counts with a "
                             "code hook); exit 124"),
    "uvirt-trace": ("file", "write every guest-visible device access to file, one declared "
                            "trace event a line"),
    "uvirt-trace-format": ("raw|text|json", "the -uvirt-trace file's format: declared events "
                                            "(default), decoded with the spec's names, or JSON lines"),
    "uvirt-screenshot": ("file", "save the first display (virtio-gpu scanout 0 or virtio-fb) "
                                 "when the run ends: PPM for *.ppm, else PNG (also -screenshot)"),
    "screenshot": ("file", "same as -uvirt-screenshot"),
}

_SECTIONS = (
    ("Standard options:", ("h", "version", "machine", "M", "accel", "enable-kvm", "cpu", "smp",
                           "m", "device", "global", "name", "uuid")),
    ("Block device options:", ("drive",)),
    ("Display options:", ("display", "nographic", "vga")),
    ("Network options:", ("netdev",)),
    ("Character device options:", ("chardev",)),
    ("Boot Image or Kernel specific:", ("kernel", "append", "initrd")),
    ("Debug/Expert options:", ("nodefaults", "no-reboot", "S", "mon", "monitor", "qmp",
                               "qmp-pretty", "debugcon", "serial", "parallel", "boot", "rtc",
                               "bios", "qtest", "qtest-log")),
    ("Generic object creation:", ("object",)),
    ("uvirt's own options (QEMU has none of these):",
     ("uvirt-timeout", "uvirt-max-insns", "uvirt-trace", "uvirt-trace-format", "uvirt-screenshot",
      "screenshot")),
)

#: QEMU's device categories (qdev_print_devinfos), in its order
CATEGORIES = ("Controller/Bridge/Hub", "USB", "Storage", "Network", "Input", "Display", "Sound",
              "Misc", "CPU", "Watchdog", "Uncategorized")

#: registry bus names -> the bus type QEMU prints
_BUS_NAMES = {"pci": "PCI", "isa": "ISA", "virtio-serial": "virtio-serial-bus"}

#: registry property kinds -> (QEMU's type name, description QEMU's property type carries)
_PROP_TYPES = {
    "uint8": ("uint8", ""), "uint16": ("uint16", ""), "uint32": ("uint32", ""),
    "uint64": ("uint64", ""), "int32": ("int32", ""), "bool": ("bool", "on/off"), "str": ("str", None),
    "BlockdevOnError": ("BlockdevOnError", "Error handling policy, report/ignore/enospc/stop/auto"),
    "size32": ("size", ""), "blocksize": ("size", "A power of two between 512 B and 2 MiB"),
    "onoffauto": ("OnOffAuto", "on/off/auto"), "chardev": ("str", "ID of a chardev to use as a backend"),
    "pci-addr": ("int32", "Slot and optional function number, example: 06.0 or 06"),
}

#: -device options every driver takes that QEMU does not list as properties
_DEVICE_OPTIONS = frozenset(("id", "bus"))

_MACHINES = (("pc", "Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)"),
             ("pc-i440fx-7.2", "Standard PC (i440FX + PIIX, 1996) (default)"),
             ("none", "empty machine (qtest only: -accel qtest)"))


def version_text() -> str:
    from uvirt import __version__
    return (f"QEMU emulator version 7.2.0 (uvirt {__version__})\n"
            "uvirt follows QEMU 7.2's command line and what its pc machine shows a guest; "
            "it is not QEMU")


def _option_line(name: str, synopsis: str, text: str) -> str:
    head = f"-{name} {synopsis}".rstrip()
    body = ("\n" + " " * 16).join(textwrap.wrap(text, width=80 - 16))
    if len(head) < 16:
        return f"{head:<16}{body}"
    return f"{head}\n{'':16}{body}"


def options_help() -> str:
    from uvirt import __version__
    out = [f"uvirt {__version__}: QEMU 7.2's options for the pc machine, as uvirt runs them",
           "usage: uvirt run [options] -kernel IMAGE", ""]
    listed: set[str] = set()
    for title, names in _SECTIONS:
        out.append(title)
        for name in names:
            synopsis, text = OPTION_HELP[name]
            out.append(_option_line(name, synopsis, text))
            listed.add(name)
        out.append("")
    rest = [n for n in OPTION_HELP if n not in listed]
    if rest:
        out.append("Other options:")
        out += [_option_line(n, *OPTION_HELP[n]) for n in rest]
        out.append("")
    out.append("QEMU options uvirt accepts without effect:")
    out += [_option_line(k, "", v) for k, v in IGNORED_OPTIONS.items() if k not in OPTION_HELP]
    out.append("")
    out.append("QEMU options uvirt refuses (a one-line error, exit status 1):")
    out += [_option_line(k, "", v) for k, v in UNSUPPORTED_OPTIONS.items()]
    out.append("")
    out += textwrap.wrap("Exit status: the guest's (isa-debug-exit: (value << 1) | 1), 0 on a "
                         "halt or a reset, 2 on a guest fault, 124 when a budget is spent, 130 "
                         "on Ctrl-C, 1 for a host mistake.", width=80)
    return "\n".join(out)


def device_list() -> str:
    from uvirt.launch.device_table import DEVICE_TYPES
    out: list[str] = []
    for cat in CATEGORIES:
        rows = sorted((d for d in DEVICE_TYPES.values() if _category(d) == cat),
                      key=lambda d: d.name.lower())
        if not rows:
            continue
        out.append(("\n" if out else "") + f"{cat} devices:")
        for d in rows:
            line = f'name "{d.name}"'
            bus = _BUS_NAMES.get(d.bus, d.bus)
            if bus:
                line += f", bus {bus}"
            if d.description:
                line += f', desc "{d.description}"'
            out.append(line)
    return "\n".join(out)


def _category(dev: Any) -> str:
    cat = getattr(dev, "category", None) or "Uncategorized"
    return cat if cat in CATEGORIES else "Uncategorized"


def property_help(name: str, kind: str, default: Any) -> str:
    """One line of ``-device X,help`` (QEMU's object_property_help)."""
    type_name, description = _PROP_TYPES.get(kind, (kind, None))
    text = f"  {name}=<{type_name}>"
    shown_default = _json_default(kind, default)
    if description == "" and shown_default is None:   # a computed default: nothing to say
        description = None
    if description is not None or shown_default is not None:
        text = f"{text:<24} - {description or ''}"
    if shown_default is not None:
        text += f" (default: {shown_default})"
    return text


def _json_default(kind: str, default: Any) -> str | None:
    if kind == "pci-addr":
        return "-1" if default is None else str(default[0] << 3 | default[1])
    if default is None:
        return None
    if kind == "onoffauto" or isinstance(default, str):
        return json.dumps(default)
    if isinstance(default, bool):
        return "true" if default else "false"
    return str(default)


def device_properties(driver: str) -> str:
    from uvirt.launch.device_table import DEVICE_TYPES, device_props
    dev = DEVICE_TYPES.get(driver)
    if dev is None:
        raise OptionError(f"-device {driver},help: Device '{driver}' not found")
    props = [p for p in device_props(dev) if p.name not in _DEVICE_OPTIONS]
    if not props:
        return f"There are no options for {driver}."
    lines = sorted(property_help(p.name, p.kind, p.default) for p in props)
    return f"{driver} options:\n" + "\n".join(lines)


def answer(req: HelpRequest) -> str:
    """The text QEMU would print for this help request, for uvirt's machine."""
    opt = req.option.lstrip("-")
    value = req.value or ""
    if opt in ("h", "help"):
        return options_help()
    if opt == "version":
        return version_text()
    if opt in ("machine", "M"):
        first = value.split(",", 1)[0]
        mtype = first.partition("=")[2] if first.startswith("type=") else first
        if mtype and mtype not in ("help", "?"):
            raise OptionError(f"{req.option} {value}: uvirt does not list machine properties; "
                              f"'-machine help' lists the machines")
        width = 20
        return "Supported machines are:\n" + "\n".join(f"{n:<{width}} {d}" for n, d in _MACHINES)
    if opt == "device":
        pairs = parse_qemu_opts(value, implied_key="driver")
        driver = next((v for k, v in pairs if k == "driver"), None)
        if driver is None or driver in ("help", "?"):
            return device_list()
        return device_properties(driver)
    if opt == "accel":
        return "Accelerators supported in uvirt:\ntcg\nqtest"
    if opt == "cpu":
        return "Available CPUs:\nx86 qemu64                QEMU Virtual CPU version 2.5+"
    if opt == "chardev":
        return "Available chardev backend types: \n" + "\n".join(
            f"  {b}" for b in ("file", "null", "socket", "stdio"))
    if opt == "object":
        return "List of user creatable objects:\n" + "\n".join(
            f"  {t}" for t in ("memory-backend-file", "memory-backend-memfd", "memory-backend-ram"))
    if opt == "display":
        return "Available display backend types:\nnone"
    if opt == "audio-help":
        return "uvirt has no sound device: there are no audio drivers to list"
    if opt == "vga":
        return f"{'none':<20} no graphic card"
    raise OptionError(f"{req.option}{' ' + value if value else ''}: uvirt has no help for this option")
