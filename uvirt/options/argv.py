"""QEMU 7.2's command line, parsed the way QEMU parses it, into a plain typed configuration.

``parse_argv(argv) -> RunConfig`` is the single entry point.  The value syntax is in
``uvirt.options.values``, the key=value syntaxes in ``uvirt.options.keyval``, the
option tables in ``uvirt.options.tables`` and the result's types in
``uvirt.options.config``.  It follows ``softmmu/vl.c``
(two passes: every option is looked up first, so an unknown option or a missing argument
is reported before any value is looked at), ``util/qemu-option.c`` (QemuOpts),
``util/keyval.c`` (``-machine``, ``-display``), ``chardev/char.c``
(``qemu_chr_parse_compat``) and ``util/cutils.c`` (``qemu_strtosz``).  Every behaviour
below was checked against the installed ``qemu-system-x86_64`` 7.2.

Errors
------
Every refusal raises ``uvirt.errors.OptionError`` whose message is one line in QEMU's own
wording, prefixed, as QEMU prefixes it, by the option as written on the command line
(QEMU's ``loc_set_cmdline``): ``-m 12Q: Parameter 'size' expects a non-negative number
below 2^64``.  The CLI adds ``uvirt: `` in front, as QEMU adds ``qemu-system-x86_64: ``.
Where QEMU prints no location (machine properties, ``-smp``) uvirt still gives one.
QEMU's multi-line hints are dropped.  Deprecation warnings QEMU prints (short-form
booleans, hex sizes with a suffix) are collected in ``RunConfig.warnings``.

Syntaxes (which option uses which is QEMU 7.2's choice, not ours)
------------------------------------------------------------------
* QemuOpts: ``-device -chardev -mon -accel -m -drive -netdev -object -global -smp
  -boot -rtc -name``.  ``key=value`` pairs separated by ``,``; ``,,`` is a literal comma
  in a value; a first element without ``=`` is the value of the implied key (``driver``,
  ``backend``, ``chardev``, ``accel``, ``size``, ``type`` for -netdev, ``qom-type``,
  ``cpus``, ``order``, ``guest``); a later element without ``=`` is a deprecated
  short-form boolean (``x`` = ``x=on``, ``nox`` = ``x=off``).  ``id=`` is taken out
  (the first one wins) and must be an identifier; a repeated key keeps every
  occurrence and the last one wins.
* keyval: ``-machine -display``.  Same escaping, except that the implied value ends at
  the first ``,`` (no ``,,``), every later element needs ``=``, keys are QAPI names
  with ``.``-separated fragments.  Repeated ``-machine`` options merge, last key wins.

uvirt's own options
-------------------
QEMU has no option starting with ``-uvirt-``, so uvirt's own options use that prefix
(``-uvirt-NAME ARG`` or ``--uvirt-NAME ARG``, one argument each, like a QEMU option).
QEMU rejects them (``-uvirt-timeout: invalid option``), so a command line that carries
them is visibly uvirt-only, and removing them gives the QEMU command line back:

===================  ==========================================================
``-uvirt-timeout S``  wall-clock limit in seconds (``2.5``; 0 = no limit; default 10)
``-uvirt-max-insns N``  stop after N guest instructions (decimal or ``0x`` hex)
``-uvirt-trace FILE``  write uvirt's device trace to FILE
``-uvirt-trace-format F``  ``raw`` (default: one declared event a line), ``text`` (decoded
                       with the spec's names, uvirt.observe.decode) or ``json`` (JSON lines)
``-uvirt-screenshot FILE``  save the first display (virtio-gpu scanout 0 or virtio-fb) when
                       the run ends: PPM for ``*.ppm`` (QEMU's screendump bytes), else PNG
                       (also spelled ``-screenshot FILE``, as issue 5 names it; QEMU
                       has no such option, its monitor has ``screendump``)
===================  ==========================================================

Accepted and ignored (recorded in ``RunConfig.ignored`` with the reason) and options
that are errors: see ``IGNORED_OPTIONS`` and ``UNSUPPORTED_OPTIONS`` below and
``uvirt.launch.help``, which renders both lists for ``uvirt run -help``.

Decisions
---------
* Rule: an option whose effect a guest could notice and that uvirt cannot honour is an
  error naming the value (``-smp 2``, ``-machine q35``, ``-vga std``, ``-cpu max``,
  ``-drive`` other than ``if=none``/``if=pflash``); an option that only concerns the host
  (display, logging, names, config files) is accepted and listed in ``ignored``.
* Accelerators: ``tcg`` and ``qtest`` are honoured.  ``kvm`` (``-enable-kvm``,
  ``-accel kvm``, ``accel=kvm:tcg``) is skipped when a later candidate follows, which
  is what QEMU does on a host without KVM; alone it is an error (KVM's CPUID and
  paravirtual features are guest-visible).  An unknown name in ``-machine accel=a:b``
  is skipped as QEMU skips it; in ``-accel`` it is an error, as in QEMU.
* ``-machine``: ``pc`` = ``pc-i440fx-7.2`` (the default) and ``none`` (used by the qtest
  suite's probe).  Every other QEMU machine type, older ``pc-i440fx-X.Y`` included
  (their compat properties differ), is refused.
* ``-debugcon none`` is an error, as in QEMU: ``none`` is special only for
  ``-serial``, ``-parallel`` and ``-monitor`` (QEMU tests ``-monitor`` with a 4-byte
  prefix compare, so ``-monitor nonesense`` is "none" too).  ``-debugcon chardev:ID``
  is accepted (QEMU 7.2 has a bug that rejects it).
* ``-serial`` back ends and HMP monitors are recorded; whether a UART or HMP exists is
  for the machine builder to decide.  ``-parallel`` other than ``none`` is refused.
* JSON forms (``-device {...}``, ``-object {...}``) are refused explicitly.
* ``-S`` is ``start_paused``.  Without ``-nodefaults`` QEMU's pc adds a VGA card and
  an e1000; uvirt records the flag and never creates them.
* Help options (``-h``, ``-version``, ``-machine help``, ``-device X,help``,
  ``-accel`` without a name...) end parsing with ``RunConfig.help_request``.
"""


from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from uvirt.errors import OptionError
from uvirt.options.config import (
    DEFAULT_RAM_SIZE, RAM_ALIGN, AccelOpts, BootOpts, ChardevOpts, ChardevRef, CharSpec, DeviceOpts,
    DriveOpts, GlobalOpt, HelpRequest, IgnoredOption, MachineOpts, MonitorOpts, NetdevOpts,
    ObjectOpts, RunConfig, UvirtOpts)
from uvirt.options.keyval import (
    BOOL, NUMBER, is_help, last_value, opts_id, opts_props, parse_keyval, parse_qemu_opts,
    validate_opts)
from uvirt.options.tables import (
    ACCELS_HONOURED, ACCELS_KNOWN, BOOT_KEYS, CHARDEV_ALIASES, CHARDEV_BACKENDS, CHARDEV_KEYS,
    DISPLAY_TYPES, DISPLAY_WHY, DRIVE_IFS, GENERIC_UNSUPPORTED, GLOBAL_KEYS, IGNORED_OPTIONS,
    MACHINE_PROPS_IGNORED, MACHINES, MEMORY_KEYS, MON_KEYS, NAME_KEYS, NOT_FOR_TARGET,
    PC_MACHINE_PROPS, QEMU_MACHINES, QEMU_OPTIONS, RTC_KEYS, SMP_KEYS, TCG_PROPS,
    UNSUPPORTED_OPTIONS, UVIRT_OPTIONS, VGA_TYPES)
from uvirt.options.values import (
    U64, StrtoxError, located, parse_bool, parse_int, qemu_strtosz, strtox)

__all__ = ["ArgvParser", "parse_argv", "parse_chr_compat"]


def parse_chr_compat(spec: str, *, label: str, location: str, fail_message: str,
                     permit_mux_mon: bool = True) -> CharSpec:
    """``qemu_chr_parse_compat`` (plus the ``chardev:ID`` form its callers handle):
    ``null``, ``stdio``, ``pty``, ``file:PATH``, ``pipe:PATH``, ``unix:PATH[,opts]``,
    ``tcp:[HOST]:PORT[,opts]``, ``udp:...``, ``vc``, ``/dev/...``, ``mon:`` prefix.
    ``none`` is not a back end here (the callers that allow it check first).
    ``fail_message`` is what the caller reports when a known form is malformed."""
    if spec.startswith("chardev:"):
        return ChardevRef(spec[len("chardev:"):], location)
    props: dict[str, str] = {}
    filename = spec
    if filename.startswith("mon:"):
        if not permit_mux_mon:
            raise located(location, "mon: isn't supported in this context")
        filename = filename[4:]
        props["mux"] = "on"
        if filename == "stdio":
            props["signal"] = "off"

    def make(backend: str, **kw: str) -> ChardevOpts:
        return ChardevOpts(label, backend, {**props, **kw}, location)

    def fail() -> OptionError:
        return located(location, fail_message)

    def extra(rest: str, implied: str | None) -> dict[str, str]:
        # qemu_opts_do_parse: short-form booleans allowed without a warning here
        pairs = parse_qemu_opts(rest, implied_key=implied, location=location)
        validate_opts(pairs, CHARDEV_KEYS, location)
        return opts_props(pairs, ())

    if filename in ("null", "pty", "msmouse", "wctablet", "braille", "testdev", "stdio"):
        return make(filename)
    if filename.startswith("vc"):
        rest = filename[2:]
        if rest.startswith(":"):
            if m := re.fullmatch(r"(\d{1,7})x(\d{1,7}).*", rest[1:], re.S):
                return make("vc", width=m.group(1), height=m.group(2))
            if m := re.fullmatch(r"(\d{1,7})Cx(\d{1,7})C.*", rest[1:], re.S):
                return make("vc", cols=m.group(1), rows=m.group(2))
            raise fail()
        return make("vc")
    if filename == "con:":
        return make("console")
    if filename.startswith("COM"):
        return make("serial", path=filename)
    for prefix, backend in (("file:", "file"), ("pipe:", "pipe")):
        if filename.startswith(prefix):
            return make(backend, path=filename[len(prefix):])
    for prefix in ("tcp:", "telnet:", "tn3270:", "websocket:"):
        if filename.startswith(prefix):
            p = filename[len(prefix):]
            m = re.match(r"([^:]{1,64}):([^,]{1,32})", p) or re.match(r"()?:([^,]{1,32})", p)
            if m is None:
                raise fail()
            opts = {"host": m.group(1) or "", "port": m.group(2)}
            if p[m.end():m.end() + 1] == ",":
                opts.update(extra(p[m.end() + 1:], None))
            if prefix != "tcp:":
                opts[prefix[:-1]] = "on"
            return make("socket", **opts)
    if filename.startswith("udp:"):
        p = filename[4:]
        m = re.match(r"([^:]{1,64}):([^@,]{1,32})", p) or re.match(r"()?:([^@,]{1,32})", p)
        if m is None:
            raise fail()
        opts = {"host": m.group(1) or "", "port": m.group(2)}
        if p[m.end():m.end() + 1] == "@":
            q = p[m.end() + 1:]
            m2 = re.match(r"([^:]{1,64}):([^,]{1,32})", q) or re.match(r"()?:([^,]{1,32})", q)
            if m2 is None:
                raise fail()
            opts.update(localaddr=m2.group(1) or "", localport=m2.group(2))
        return make("udp", **opts)
    if filename.startswith("unix:"):
        return make("socket", **extra(filename[5:], "path"))
    if filename.startswith(("/dev/parport", "/dev/ppi")):
        return make("parallel", path=filename)
    if filename.startswith("/dev/"):
        return make("serial", path=filename)
    raise located(location, f"'{filename}' is not a valid char driver")



# --------------------------------------------------------------------------- the parser

class ArgvParser:
    def __init__(self) -> None:
        self.machine_dict: dict[str, str] = {}
        self.machine_origin: dict[str, str] = {}
        self.accel: list[AccelOpts] = []
        self.machine_accel: tuple[str, str] | None = None       # (value, origin)
        self.memory: list[tuple[str, str, str]] = []            # (key, value, origin)
        self.smp: list[tuple[str, str, str]] = []
        self.flags = {"nodefaults": False, "no_reboot": False, "start_paused": False,
                      "nographic": False}
        self.kernel: str | None = None
        self.firmware: str | None = None        # -bios FILE = -machine firmware=FILE
        self.boot: dict[str, str] = {}          # -boot, merged
        self.smm = "auto"                       # -machine smm=
        self.pflash: list[DriveOpts] = []
        self.uuid: bytes | None = None
        self.append: str | None = None
        self.initrd: str | None = None
        self.devices: list[DeviceOpts] = []
        self.objects: list[ObjectOpts] = []
        self.chardevs: list[ChardevOpts] = []
        self.drives: list[DriveOpts] = []
        self.netdevs: list[NetdevOpts] = []
        self.globals: list[GlobalOpt] = []
        self.debugcon: CharSpec | None = None
        self.serial: list[CharSpec] = []
        self.monitors: list[MonitorOpts] = []
        self.monitor_index = 0
        self.qtest: CharSpec | None = None
        self.qtest_log: str | None = None
        self.display: str | None = None
        self.ignored: list[IgnoredOption] = []
        self.warnings: list[str] = []
        self.help: HelpRequest | None = None
        self.uvirt: dict[str, Any] = {}
        self.ids: dict[str, set[str]] = {"device": set(), "chardev": set(), "object": set(),
                                         "netdev": set(), "drive": set(), "mon": set()}

    # -- helpers
    def ignore(self, opt: str, arg: str | None, why: str) -> None:
        self.ignored.append(IgnoredOption(opt, arg, why))

    def new_id(self, kind: str, ident: str | None, origin: str) -> None:
        if ident is None:
            return
        if ident in self.ids[kind]:
            raise located(origin, f"Duplicate ID '{ident}' for {kind}")
        self.ids[kind].add(ident)

    def opts(self, arg: str, origin: str, implied: str | None,
             desc: dict[str, str | None] | None = None, kind: str | None = None,
             merge: bool = False) -> tuple[list[tuple[str, str]], str | None]:
        """One QemuOpts parse: id, then the pairs, then validation against ``desc``."""
        if merge:
            ident = None
            pairs = parse_qemu_opts(arg, implied_key=implied, location=origin, warnings=self.warnings)
            if any(k == "id" for k, _ in pairs):
                raise located(origin, "Invalid parameter 'id'")
        else:
            ident = opts_id(arg, origin)
            if kind is not None:
                self.new_id(kind, ident, origin)
            pairs = [(k, v) for k, v in parse_qemu_opts(
                arg, implied_key=implied, location=origin, warnings=self.warnings) if k != "id"]
        if desc is not None:
            validate_opts(pairs, desc, origin)
        return pairs, ident

    def help_in(self, pairs: list[tuple[str, str]], implied: str | None) -> bool:
        return any(is_help(k) and v == "on" or (k == implied and is_help(v)) for k, v in pairs)

    # -- option handlers (name -> method), called in command-line order
    def opt_machine(self, opt: str, arg: str, origin: str) -> None:
        before = dict(self.machine_dict)
        _, help_wanted = parse_keyval(arg, implied_key="type", location=origin, into=self.machine_dict)
        if help_wanted or is_help(self.machine_dict.get("type", "")):
            self.help = HelpRequest(opt, arg)
            return
        for k, v in self.machine_dict.items():
            if before.get(k) != v or k not in before:
                self.machine_origin[k] = origin

    opt_M = opt_machine

    def opt_accel(self, opt: str, arg: str, origin: str) -> None:
        pairs, _ = self.opts(arg, origin, "accel")
        if self.help_in(pairs, "accel"):
            self.help = HelpRequest(opt, arg)
            return
        name = last_value(pairs, "accel")
        if name is None:                        # QEMU lists the accelerators and exits
            self.help = HelpRequest(opt, arg)
            return
        if name not in ACCELS_KNOWN:
            raise located(origin, f"invalid accelerator {name}")
        props = opts_props(pairs, ("accel",))
        self.check_accel_props(name, props, origin)
        self.accel.append(AccelOpts(name, props, origin))

    def check_accel_props(self, name: str, props: dict[str, str], origin: str) -> None:
        for k, v in props.items():
            if name == "tcg" and k in TCG_PROPS:
                if k == "thread" and v not in ("single", "multi"):
                    raise located(origin, f"Invalid 'thread' setting {v}")
                if TCG_PROPS[k] == BOOL:
                    parse_bool(v, option=origin, key=k)
                elif TCG_PROPS[k] == NUMBER:
                    parse_int(v, option=origin, key=k, bits=32)
                if k != "tb-size":          # tb-size sizes Unicorn's TCG buffer as QEMU's
                    self.ignore(origin.split(" ", 1)[0], f"{k}={v}",
                                "TCG translation setting; uvirt's CPU is Unicorn")
            elif name in ACCELS_HONOURED:
                raise located(origin, f"Property '{name}-accel.{k}' not found")

    def opt_enable_kvm(self, opt: str, arg: None, origin: str) -> None:
        self.accel.append(AccelOpts("kvm", {}, origin))

    def opt_m(self, opt: str, arg: str, origin: str) -> None:
        pairs, _ = self.opts(arg, origin, "size", MEMORY_KEYS, merge=True)
        for k, v in pairs:
            if k in ("slots", "maxmem"):
                raise located(origin, f"memory hotplug ('{k}={v}') is not supported by uvirt")
            self.memory.append((k, v, origin))

    def opt_smp(self, opt: str, arg: str, origin: str) -> None:
        pairs, _ = self.opts(arg, origin, "cpus", merge=True)
        for k, v in pairs:
            if k not in SMP_KEYS:
                raise located(origin, f"Parameter 'smp.{k}' is unexpected")
            try:
                n = strtox(v, 0, signed=True, consume_all=True)[0]
            except StrtoxError:
                raise located(origin, f"Parameter 'smp.{k}' expects integer") from None
            if n not in (0, 1):
                raise located(origin, f"uvirt emulates exactly one CPU ({k}={v})")
            self.smp.append((k, v, origin))
        self.ignore(opt, arg, IGNORED_OPTIONS["smp"])

    def opt_cpu(self, opt: str, arg: str, origin: str) -> None:
        model, _, rest = arg.partition(",")
        if is_help(model):
            self.help = HelpRequest(opt, arg)
            return
        if model != "qemu64":
            raise located(origin, f"CPU model '{model}' is not supported by uvirt (it models qemu64)")
        for k, v in parse_qemu_opts(rest, location=origin):
            if (k, v) != ("apic-id", "0"):
                raise located(origin, f"CPU property '{k}={v}' is not supported by uvirt")
        self.ignore(opt, arg, IGNORED_OPTIONS["cpu"])

    def opt_device(self, opt: str, arg: str, origin: str) -> None:
        if arg.startswith("{"):
            raise located(origin, "JSON syntax for -device is not supported by uvirt")
        pairs, ident = self.opts(arg, origin, "driver", kind="device")
        if self.help_in(pairs, "driver"):
            self.help = HelpRequest(opt, arg)
            return
        driver = last_value(pairs, "driver")
        if driver is None:
            raise located(origin, "Parameter 'driver' is missing")
        self.devices.append(DeviceOpts(driver, ident, opts_props(pairs, ("driver",)), arg, origin))

    def opt_object(self, opt: str, arg: str, origin: str) -> None:
        if arg.startswith("{"):
            raise located(origin, "JSON syntax for -object is not supported by uvirt")
        pairs, ident = self.opts(arg, origin, "qom-type", kind="object")
        if self.help_in(pairs, "qom-type"):
            self.help = HelpRequest(opt, arg)
            return
        qom_type = last_value(pairs, "qom-type")
        if qom_type is None:
            raise located(origin, "Parameter 'qom-type' is missing")
        if ident is None:
            raise located(origin, "Parameter 'id' is missing")
        self.objects.append(ObjectOpts(qom_type, ident, opts_props(pairs, ("qom-type",)), arg, origin))

    def opt_chardev(self, opt: str, arg: str, origin: str) -> None:
        pairs, ident = self.opts(arg, origin, "backend", CHARDEV_KEYS, kind="chardev")
        if self.help_in(pairs, "backend"):
            self.help = HelpRequest(opt, arg)
            return
        backend = last_value(pairs, "backend")
        if backend is None:
            raise located(origin, f"chardev: \"{ident}\" missing backend")
        if ident is None:
            raise located(origin, "chardev: no id specified")
        backend = CHARDEV_ALIASES.get(backend, backend)
        if backend not in CHARDEV_BACKENDS:
            raise located(origin, f"'{backend}' is not a valid char driver name")
        self.chardevs.append(ChardevOpts(ident, backend, opts_props(pairs, ("backend",)), origin))

    def opt_mon(self, opt: str, arg: str, origin: str) -> None:
        pairs, ident = self.opts(arg, origin, "chardev", MON_KEYS, kind="mon")
        mode = last_value(pairs, "mode") or "readline"
        if mode not in ("readline", "control"):
            raise located(origin, f"Parameter 'mode' does not accept value '{mode}'")
        chardev = last_value(pairs, "chardev")
        if chardev is None:
            raise located(origin, "Parameter 'chardev' is missing")
        pretty = parse_bool(last_value(pairs, "pretty") or "off", option=origin, key="pretty")
        if pretty and mode != "control":
            raise located(origin, "'pretty' is not compatible with HMP monitors")
        self.monitors.append(MonitorOpts(chardev, mode, pretty, origin))

    def monitor_compat(self, arg: str, origin: str, mode: str, pretty: bool) -> None:
        """vl.c monitor_parse: a shorthand back end labelled compat_monitorN."""
        if arg.startswith("chardev:"):
            label = arg[len("chardev:"):]
        else:
            label = f"compat_monitor{self.monitor_index}"
            spec = parse_chr_compat(arg, label=label, location=origin,
                                    fail_message=f"parse error: {arg}")
            assert isinstance(spec, ChardevOpts)
            self.new_id("chardev", label, origin)
            self.chardevs.append(spec)
        self.new_id("mon", label, origin)
        self.monitors.append(MonitorOpts(label, mode, pretty, origin))
        self.monitor_index += 1

    def opt_monitor(self, opt: str, arg: str, origin: str) -> None:
        if arg.startswith("none"):              # vl.c: strncmp(optarg, "none", 4)
            self.ignore(opt, arg, "no monitor")
            return
        self.monitor_compat(arg, origin, "readline", False)

    def opt_qmp(self, opt: str, arg: str, origin: str) -> None:
        self.monitor_compat(arg, origin, "control", False)

    def opt_qmp_pretty(self, opt: str, arg: str, origin: str) -> None:
        self.monitor_compat(arg, origin, "control", True)

    def opt_debugcon(self, opt: str, arg: str, origin: str) -> None:
        if self.debugcon is not None:
            raise located(origin, "already have a debugcon device")
        self.debugcon = parse_chr_compat(arg, label="debugcon", location=origin,
                                         fail_message=f"invalid character backend '{arg}'")

    def opt_serial(self, opt: str, arg: str, origin: str) -> None:
        if arg == "none":
            self.ignore(opt, arg, "no serial port")
            return
        self.serial.append(parse_chr_compat(
            arg, label=f"serial{len(self.serial)}", location=origin,
            fail_message=f"could not connect serial device to character backend '{arg}'"))

    def opt_parallel(self, opt: str, arg: str, origin: str) -> None:
        if arg == "none":
            self.ignore(opt, arg, "no parallel port")
            return
        parse_chr_compat(arg, label="parallel0", location=origin,
                         fail_message=f"could not connect parallel device to character backend '{arg}'")
        raise located(origin, "uvirt has no parallel port (only -parallel none)")

    def opt_qtest(self, opt: str, arg: str, origin: str) -> None:
        self.qtest = parse_chr_compat(
            arg, label="qtest", location=origin, permit_mux_mon=False,
            fail_message=f"Failed to initialize device for qtest: \"{arg}\"")

    def opt_qtest_log(self, opt: str, arg: str, origin: str) -> None:
        self.qtest_log = arg

    def opt_drive(self, opt: str, arg: str, origin: str) -> None:
        pairs, ident = self.opts(arg, origin, None, kind="drive")
        iface = last_value(pairs, "if") or "ide"
        if iface == "pflash":                   # the pc's system flash (firmware image)
            self.pflash.append(DriveOpts(ident, opts_props(pairs, ()), arg, origin))
            return
        if iface != "none":
            if iface not in DRIVE_IFS:
                raise located(origin, f"unsupported bus type '{iface}'")
            raise located(origin, f"interface 'if={iface}' is not supported by uvirt "
                               "(use if=none with a -device)")
        self.drives.append(DriveOpts(ident, opts_props(pairs, ()), arg, origin))

    def opt_netdev(self, opt: str, arg: str, origin: str) -> None:
        if arg.startswith("{"):
            raise located(origin, "JSON syntax for -netdev is not supported by uvirt")
        pairs, ident = self.opts(arg, origin, "type", kind="netdev")
        if ident is None:
            raise located(origin, "Parameter 'id' is missing")
        ntype = last_value(pairs, "type")
        if ntype is None:
            raise located(origin, "Parameter 'type' is missing")
        self.netdevs.append(NetdevOpts(ntype, ident, opts_props(pairs, ("type",)), arg, origin))

    def opt_global(self, opt: str, arg: str, origin: str) -> None:
        # qemu_global_option: "%63[^.=].%63[^=]" then '=' -> raw value, no unescaping
        m = re.match(r"([^.=]{1,63})\.([^=]{1,63})=", arg, re.S)
        if m:
            self.globals.append(GlobalOpt(m.group(1), m.group(2), arg[m.end():], origin))
            return
        pairs, _ = self.opts(arg, origin, None, GLOBAL_KEYS)
        driver, prop, value = (last_value(pairs, k) for k in ("driver", "property", "value"))
        if driver is None or prop is None or value is None:
            raise located(origin, "options 'driver', 'property', and 'value' are required")
        self.globals.append(GlobalOpt(driver, prop, value, origin))

    # vl.c puts -kernel/-append/-initrd into the machine options: the last one wins,
    # whether written as -kernel X or -machine kernel=X.
    def boot_file(self, key: str, arg: str, origin: str) -> None:
        self.machine_dict.pop(key, None)
        self.machine_dict[key] = arg
        self.machine_origin[key] = origin

    def opt_kernel(self, opt: str, arg: str, origin: str) -> None:
        self.boot_file("kernel", arg, origin)

    def opt_bios(self, opt: str, arg: str, origin: str) -> None:
        self.boot_file("firmware", arg, origin)

    def opt_append(self, opt: str, arg: str, origin: str) -> None:
        self.boot_file("append", arg, origin)

    def opt_initrd(self, opt: str, arg: str, origin: str) -> None:
        self.boot_file("initrd", arg, origin)

    def opt_nodefaults(self, opt: str, arg: None, origin: str) -> None:
        self.flags["nodefaults"] = True

    def opt_no_reboot(self, opt: str, arg: None, origin: str) -> None:
        self.flags["no_reboot"] = True

    def opt_S(self, opt: str, arg: None, origin: str) -> None:
        self.flags["start_paused"] = True

    def opt_nographic(self, opt: str, arg: None, origin: str) -> None:
        self.flags["nographic"] = True
        self.ignore(opt, None, IGNORED_OPTIONS["nographic"])

    def opt_display(self, opt: str, arg: str, origin: str) -> None:
        if arg.startswith("vnc"):               # parse_display's legacy -display vnc=...
            self.display = "vnc"
            self.ignore(opt, arg, DISPLAY_WHY)
            return
        d, help_wanted = parse_keyval(arg, implied_key="type", location=origin)
        if help_wanted or is_help(d.get("type", "")):
            self.help = HelpRequest(opt, arg)
            return
        dtype = d.get("type")
        if dtype is None:
            raise located(origin, "Parameter 'type' is missing")
        if dtype not in DISPLAY_TYPES:
            raise located(origin, f"Parameter 'type' does not accept value '{dtype}'")
        if dtype == "none":
            for k in d:
                if k != "type":
                    raise located(origin, f"Parameter '{k}' is unexpected")
        self.display = dtype
        self.ignore(opt, arg, DISPLAY_WHY)

    def opt_vga(self, opt: str, arg: str, origin: str) -> None:
        if is_help(arg):
            self.help = HelpRequest(opt, arg)
        elif arg == "none":
            self.ignore(opt, arg, "no VGA card")
        elif arg in VGA_TYPES:
            raise located(origin, f"VGA card '{arg}' is not supported by uvirt (only -vga none)")
        else:
            raise located(origin, f"unknown vga type: {arg}")

    def opt_boot(self, opt: str, arg: str, origin: str) -> None:
        pairs, _ = self.opts(arg, origin, "order", merge=True)
        for k, v in pairs:
            if k not in BOOT_KEYS:
                raise located(origin, f"Parameter 'boot.{k}' is unexpected")
            self.boot[k] = v
        self.ignore(opt, arg, IGNORED_OPTIONS["boot"])

    def boot_opts(self) -> BootOpts:
        """``-boot``'s text as typed values (opt_boot checked it against BOOT_KEYS)."""
        b = self.boot

        def number(key: str) -> int | None:
            return strtox(b[key], 0, signed=False, consume_all=True)[0] if key in b else None

        def flag(key: str) -> bool | None:
            return parse_bool(b[key], option="-boot", key=key) if key in b else None
        return BootOpts(order=b.get("order"), once=b.get("once"), menu=flag("menu"),
                        splash=b.get("splash"), splash_time=number("splash-time"),
                        reboot_timeout=number("reboot-timeout"), strict=flag("strict"))

    def opt_uuid(self, opt: str, arg: str, origin: str) -> None:
        if not re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", arg):
            raise located(origin, "Fail to parse UUID string. Wrong format.")
        self.uuid = bytes.fromhex(arg.replace("-", ""))

    def opt_rtc(self, opt: str, arg: str, origin: str) -> None:
        self.opts(arg, origin, None, RTC_KEYS, merge=True)
        self.ignore(opt, arg, IGNORED_OPTIONS["rtc"])

    def opt_name(self, opt: str, arg: str, origin: str) -> None:
        self.opts(arg, origin, "guest", NAME_KEYS, merge=True)
        self.ignore(opt, arg, IGNORED_OPTIONS["name"])

    def opt_uvirt_timeout(self, opt: str, arg: str, origin: str) -> None:
        try:
            t = float(arg)
        except ValueError:
            t = float("nan")
        if not t >= 0 or t == float("inf"):
            raise located(origin, "expects a number of seconds (0: no limit)")
        self.uvirt["timeout"] = t

    def opt_uvirt_max_insns(self, opt: str, arg: str, origin: str) -> None:
        n = parse_int(arg, option=origin, key="max-insns")
        if n == 0:
            raise located(origin, "expects a positive number of instructions")
        self.uvirt["max_insns"] = n

    def opt_uvirt_trace(self, opt: str, arg: str, origin: str) -> None:
        self.uvirt["trace"] = arg

    def opt_uvirt_trace_format(self, opt: str, arg: str, origin: str) -> None:
        from uvirt.trace import FORMATS
        if arg not in FORMATS:
            raise located(origin, f"trace format '{arg}' is not one of {', '.join(FORMATS)}")
        self.uvirt["trace_format"] = arg

    def opt_uvirt_screenshot(self, opt: str, arg: str, origin: str) -> None:
        self.uvirt["screenshot"] = arg

    opt_screenshot = opt_uvirt_screenshot

    # -- final assembly
    def machine(self) -> MachineOpts:
        d = self.machine_dict
        requested = d.get("type", "pc")
        tloc = self.machine_origin.get("type", "-machine")
        if requested not in MACHINES:
            if requested in QEMU_MACHINES:
                raise located(tloc, f"machine type '{requested}' is not supported by uvirt "
                                 "(only pc = pc-i440fx-7.2, and none)")
            raise located(tloc, "unsupported machine type")
        mtype = MACHINES[requested]
        props: dict[str, str] = {}
        for k, v in d.items():
            loc = self.machine_origin.get(k, "-machine")
            if k == "type":
                continue
            if k == "accel":
                self.machine_accel = (v, loc)
                continue
            top = k.split(".", 1)[0]
            if top not in PC_MACHINE_PROPS:
                cls = "none-machine" if mtype == "none" else f"{mtype}-machine"
                raise located(loc, f"Property '{cls}.{top}' not found")
            if top in MACHINE_PROPS_IGNORED:
                parse_bool(v, option=loc, key=k)
                self.ignore(loc.split(" ", 1)[0], f"{k}={v}", MACHINE_PROPS_IGNORED[top])
            elif top == "usb" and not parse_bool(v, option=loc, key=k):
                self.ignore(loc.split(" ", 1)[0], f"{k}={v}", "pc has no USB by default")
            elif top in ("kernel", "initrd", "append", "firmware"):
                setattr(self, top, v)
                continue
            elif top == "smm":
                if v not in ("on", "off", "auto"):
                    raise located(loc, f"Parameter 'smm' does not accept value '{v}'")
                self.smm = v
                continue
            else:
                raise located(loc, f"machine property '{k}' is not supported by uvirt")
            props[k] = v
        return MachineOpts(mtype, requested, props)

    def accelerator(self) -> str:
        if self.machine_accel is not None:
            value, loc = self.machine_accel
            if self.accel:
                raise OptionError("The -accel and \"-machine accel=\" options are incompatible")
            for name in value.split(":"):
                if name in ACCELS_KNOWN:
                    self.accel.append(AccelOpts(name, {}, loc))
                else:
                    self.ignore(loc.split(" ", 1)[0], name,
                                f"invalid accelerator {name} (QEMU skips it too)")
            if not self.accel:
                raise located(loc, f"invalid accelerator {value}")
        if not self.accel:
            return "tcg"
        for i, a in enumerate(self.accel):
            if a.name in ACCELS_HONOURED:
                return a.name
            if i + 1 == len(self.accel):
                raise located(a.origin, f"accelerator '{a.name}' is not supported by uvirt "
                                     "(only tcg and qtest)")
            self.ignore(a.origin.split(" ", 1)[0], a.name,
                        f"accelerator {a.name} is not available in uvirt; "
                        "QEMU falls back the same way on a host without it")
        raise AssertionError("unreachable")

    def tb_size(self, accelerator: str) -> int | None:
        """``-accel tcg,tb-size=N``: the translation buffer in MiB (QEMU's
        ``tcg_set_tb_size``; 0, as in QEMU, means the default)."""
        if accelerator != "tcg":
            return None
        for a in self.accel:
            if a.name == "tcg" and "tb-size" in a.props:
                n = parse_int(a.props["tb-size"], option=a.origin, key="tb-size", bits=32)
                return n or None
        return None

    def ram_size(self) -> int:
        size_raw = origin = None
        for k, v, o in self.memory:
            if k == "size":
                size_raw, origin = v, o
        if size_raw is None:
            return DEFAULT_RAM_SIZE
        assert origin is not None
        if size_raw == "":
            raise located(origin, "missing 'size' option value")
        if size_raw[-1].isdigit():              # legacy suffix-less: MiB
            size_raw += "M"
        try:
            size = qemu_strtosz(size_raw, warnings=self.warnings)
        except ValueError:
            raise located(origin, "Parameter 'size' expects a non-negative number below 2^64") from None
        if size == 0:
            return DEFAULT_RAM_SIZE
        size = -(-size // RAM_ALIGN) * RAM_ALIGN
        if size > U64:
            raise located(origin, "ram size too large")
        return size

    def check_refs(self) -> None:
        ids = {c.id for c in self.chardevs}
        for spec, what in ((self.debugcon, "invalid character backend"),
                           (self.qtest, "Failed to initialize device for qtest:")):
            if isinstance(spec, ChardevRef) and spec.id not in ids:
                arg = spec.origin.split(" ", 1)[1]
                msg = (f"{what} '{arg}'" if what.startswith("invalid")
                       else f"{what} \"{arg}\"")
                raise located(spec.origin, msg)
        for spec in self.serial:
            if isinstance(spec, ChardevRef) and spec.id not in ids:
                arg = spec.origin.split(" ", 1)[1]
                raise located(spec.origin, "could not connect serial device to character "
                                        f"backend '{arg}'")
        for mon in self.monitors:
            if mon.chardev not in ids:
                raise located(mon.origin, f"chardev \"{mon.chardev}\" not found")
        if self.kernel is None:
            if self.append is not None:
                raise OptionError("-append only allowed with -kernel option")
            if self.initrd is not None:
                raise OptionError("-initrd only allowed with -kernel option")

    def finish(self) -> RunConfig:
        if self.help is None:
            machine = self.machine()
            accelerator = self.accelerator()
            ram_size = self.ram_size()
            self.check_refs()
        else:                                   # QEMU exits at the help option
            machine, accelerator, ram_size = MachineOpts(), "tcg", DEFAULT_RAM_SIZE
        u = self.uvirt
        return RunConfig(
            machine=machine, accel=tuple(self.accel), accelerator=accelerator,
            tb_size=self.tb_size(accelerator),
            ram_size=ram_size, nodefaults=self.flags["nodefaults"],
            no_reboot=self.flags["no_reboot"], start_paused=self.flags["start_paused"],
            kernel=self.kernel, append=self.append, initrd=self.initrd, bios=self.firmware,
            boot=self.boot_opts(), uuid=self.uuid, pflash=tuple(self.pflash), smm=self.smm,
            devices=tuple(self.devices), objects=tuple(self.objects),
            chardevs=tuple(self.chardevs), drives=tuple(self.drives),
            netdevs=tuple(self.netdevs), globals=tuple(self.globals), debugcon=self.debugcon,
            serial=tuple(self.serial), monitors=tuple(self.monitors), qtest=self.qtest,
            qtest_log=self.qtest_log, display=self.display, nographic=self.flags["nographic"],
            ignored=tuple(self.ignored), warnings=tuple(self.warnings),
            help_request=self.help,
            uvirt=UvirtOpts(timeout=u.get("timeout"), max_insns=u.get("max_insns"),
                            trace=u.get("trace"), screenshot=u.get("screenshot"),
                            trace_format=u.get("trace_format", "raw")))


def _lookup(argv: Sequence[str], i: int) -> tuple[str, str, str | None, int]:
    """vl.c lookup_opt: (as written, name, argument, next index)."""
    written = argv[i]
    name = written[2:] if written.startswith("--") else written[1:]
    takes = QEMU_OPTIONS.get(name, UVIRT_OPTIONS.get(name))
    if takes is None:
        raise located(written, "invalid option")
    if takes:
        if i + 1 >= len(argv):
            raise located(written, "requires an argument")
        return written, name, argv[i + 1], i + 2
    return written, name, None, i + 1


def parse_argv(argv: Sequence[str]) -> RunConfig:
    """Parse the arguments after the program name (``uvirt run ARGS``) as QEMU 7.2 does."""
    # Pass 1 (vl.c): every option must exist and have its argument.
    i = 0
    while i < len(argv):
        if not argv[i].startswith("-"):
            i += 1
            continue
        i = _lookup(argv, i)[3]
    # Pass 2: in order.
    p = ArgvParser()
    i = 0
    while i < len(argv):
        if not argv[i].startswith("-"):
            raise located(argv[i], "disk images given as plain arguments (-hda) are not "
                                "supported by uvirt")
        written, name, arg, i = _lookup(argv, i)
        origin = written if arg is None else f"{written} {arg}"
        if name in NOT_FOR_TARGET:
            raise located(origin, "Option not supported for this target")
        if name in ("h", "help", "version", "audio-help"):
            p.help = HelpRequest(written, None)
        else:
            handler: Callable[[str, str | None, str], None] | None = getattr(
                p, "opt_" + name.replace("-", "_"), None)
            if handler is not None:
                handler(written, arg, origin)
            elif name in IGNORED_OPTIONS:
                p.ignore(written, arg, IGNORED_OPTIONS[name])
            else:
                raise located(origin, UNSUPPORTED_OPTIONS.get(name, GENERIC_UNSUPPORTED))
        if p.help is not None:
            break
    return p.finish()
