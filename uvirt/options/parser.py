"""QEMU 7.2's command line, parsed the way QEMU parses it, into a plain typed configuration.

``parse_argv(argv) -> RunConfig`` is the single entry point.  It follows ``softmmu/vl.c``
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
``uvirt.options.help``, which renders both lists for ``uvirt run -help``.

Decisions
---------
* Rule: an option whose effect a guest could notice and that uvirt cannot honour is an
  error naming the value (``-smp 2``, ``-machine q35``, ``-vga std``, ``-cpu max``,
  ``-machine smm=on``, ``-drive`` other than ``if=none``/``if=pflash``); an option that only concerns the host
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
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from dataclasses import dataclass, field

from uvirt.errors import OptionError

__all__ = [
    "AccelOpts", "ChardevOpts", "ChardevRef", "DeviceOpts", "DriveOpts", "GlobalOpt",
    "HelpRequest", "IgnoredOption", "MachineOpts", "MonitorOpts", "NetdevOpts", "ObjectOpts",
    "RunConfig", "UvirtOpts", "DEFAULT_RAM_SIZE", "IGNORED_OPTIONS", "UNSUPPORTED_OPTIONS",
    "format_opts", "parse_argv", "parse_bool", "parse_chr_compat",
    "parse_int", "parse_keyval", "parse_qemu_opts", "parse_size", "qemu_strtosz",
]

MiB = 1 << 20
DEFAULT_RAM_SIZE = 128 * MiB          # pc's default_ram_size (fw_cfg reports 128 MiB)
RAM_ALIGN = 8192                      # machine_set_mem: QEMU_ALIGN_UP(size, 8192)
_U64 = (1 << 64) - 1


# --------------------------------------------------------------------------- dataclasses

@dataclass(frozen=True)
class MachineOpts:
    """``-machine``/``-M``.  ``type`` is the canonical name (``pc-i440fx-7.2`` or ``none``),
    ``requested`` what the command line said (``pc``); ``props`` the remaining keyval
    properties (not ``type``/``accel``), values as strings, in order."""
    type: str = "pc-i440fx-7.2"
    requested: str = "pc"
    props: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AccelOpts:
    """One accelerator candidate (``-accel``, ``-enable-kvm`` or an entry of
    ``-machine accel=a:b``), tried in order as QEMU does."""
    name: str
    props: dict[str, str]
    origin: str


@dataclass(frozen=True)
class DeviceOpts:
    """``-device``: ``driver``, ``id`` (None if not given), the other properties in command
    line order (last value wins), ``raw`` the option argument, ``origin`` the location
    (``-device ARG``) to prefix the device model's own errors with."""
    driver: str
    id: str | None
    props: dict[str, str]
    raw: str
    origin: str


@dataclass(frozen=True)
class ObjectOpts:
    """``-object``: QOM type, id and the other properties as strings."""
    qom_type: str
    id: str
    props: dict[str, str]
    raw: str
    origin: str


@dataclass(frozen=True)
class ChardevOpts:
    """A character back end: ``-chardev`` or one made from a shorthand (``file:out.txt``).
    ``id`` is the label (for shorthands QEMU's: ``debugcon``, ``serial0``,
    ``compat_monitor0``, ``qtest``); ``props`` excludes ``id`` and ``backend``."""
    id: str
    backend: str
    props: dict[str, str]
    origin: str


@dataclass(frozen=True)
class ChardevRef:
    """The shorthand ``chardev:ID``: use the ``-chardev`` with that id."""
    id: str
    origin: str


CharSpec = ChardevOpts | ChardevRef


@dataclass(frozen=True)
class MonitorOpts:
    """``-mon``/``-monitor``/``-qmp``/``-qmp-pretty``: ``mode`` is ``readline`` (HMP) or
    ``control`` (QMP); ``chardev`` the id of the character back end it talks over."""
    chardev: str
    mode: str
    pretty: bool
    origin: str


@dataclass(frozen=True)
class DriveOpts:
    """``-drive`` (uvirt accepts only ``if=none``; a ``-device`` attaches it)."""
    id: str | None
    props: dict[str, str]
    raw: str
    origin: str


@dataclass(frozen=True)
class NetdevOpts:
    type: str
    id: str
    props: dict[str, str]
    raw: str
    origin: str


@dataclass(frozen=True)
class GlobalOpt:
    """``-global driver.prop=value``: a default for property ``prop`` of every ``driver``."""
    driver: str
    prop: str
    value: str
    origin: str


@dataclass(frozen=True)
class IgnoredOption:
    """An option uvirt accepts without effect: ``option`` as written, ``value`` its
    argument (None for flags), ``why`` the reason."""
    option: str
    value: str | None
    why: str


@dataclass(frozen=True)
class HelpRequest:
    """``-h``, ``-version``, ``-machine help``, ``-device help``...: QEMU prints and exits
    at this point; ``parse_argv`` stops here and the CLI prints uvirt's answer."""
    option: str
    value: str | None


@dataclass(frozen=True)
class UvirtOpts:
    timeout: float | None = None
    max_insns: int | None = None
    trace: str | None = None
    screenshot: str | None = None
    trace_format: str = "raw"


@dataclass(frozen=True)
class RunConfig:
    machine: MachineOpts = field(default_factory=MachineOpts)
    accel: tuple[AccelOpts, ...] = ()       # candidates as requested, in order
    accelerator: str = "tcg"                # the one uvirt uses: "tcg" or "qtest"
    ram_size: int = DEFAULT_RAM_SIZE        # bytes, after QEMU's defaults and alignment
    nodefaults: bool = False
    no_reboot: bool = False
    start_paused: bool = False              # -S
    kernel: str | None = None
    append: str | None = None
    initrd: str | None = None
    bios: str | None = None                 # -bios FILE: real firmware from the reset vector
    boot: dict[str, str] = field(default_factory=dict)     # -boot order=,menu=,splash-time=,...
    uuid: bytes | None = None               # -uuid: fw_cfg FW_CFG_UUID
    pflash: tuple[DriveOpts, ...] = ()      # -drive if=pflash: the system flash
    smm: str = "auto"                       # -machine smm=on|off|auto (uvirt has no SMM)
    devices: tuple[DeviceOpts, ...] = ()
    objects: tuple[ObjectOpts, ...] = ()
    chardevs: tuple[ChardevOpts, ...] = ()  # -chardev and the ones -monitor/-qmp create
    drives: tuple[DriveOpts, ...] = ()
    netdevs: tuple[NetdevOpts, ...] = ()
    globals: tuple[GlobalOpt, ...] = ()
    debugcon: CharSpec | None = None
    serial: tuple[CharSpec, ...] = ()
    monitors: tuple[MonitorOpts, ...] = ()
    qtest: CharSpec | None = None
    qtest_log: str | None = None
    display: str | None = None              # -display TYPE (no effect in uvirt)
    nographic: bool = False
    ignored: tuple[IgnoredOption, ...] = ()
    warnings: tuple[str, ...] = ()
    help_request: HelpRequest | None = None
    uvirt: UvirtOpts = field(default_factory=UvirtOpts)


# --------------------------------------------------------------------------- numbers

class _StrtoxError(Exception):
    def __init__(self, kind: str) -> None:   # "invalid" or "range"
        super().__init__(kind)
        self.kind = kind


_SPACE = " \t\n\v\f\r"
_DIGITS = {8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}


def _strtox(text: str, base: int, *, signed: bool, consume_all: bool) -> tuple[int, int]:
    """C's strtoull/strtoll through QEMU's ``check_strtox_error``: returns (value, end).
    Raises _StrtoxError("invalid") for no digits, or for trailing text when
    ``consume_all``; _StrtoxError("range") on overflow (trailing text wins, as in QEMU)."""
    i, n = 0, len(text)
    while i < n and text[i] in _SPACE:
        i += 1
    neg = False
    if i < n and text[i] in "+-":
        neg = text[i] == "-"
        i += 1
    if base in (0, 16) and text[i:i + 2] in ("0x", "0X") and i + 2 < n and text[i + 2] in _DIGITS[16]:
        i += 2
        base = 16
    elif base == 0:
        base = 8 if text[i:i + 1] == "0" else 10
    start = i
    while i < n and text[i] in _DIGITS[base]:
        i += 1
    if i == start:
        raise _StrtoxError("invalid")          # no conversion: endptr = nptr
    if consume_all and i != n:
        raise _StrtoxError("invalid")
    mag = int(text[start:i], base)
    if signed:
        val = -mag if neg else mag
        if not -(1 << 63) <= val < (1 << 63):
            raise _StrtoxError("range")
        return val, i
    if mag > _U64:
        raise _StrtoxError("range")
    return ((-mag) & _U64 if neg else mag), i


_SUFFIX_POWER = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}


def qemu_strtosz(text: str, *, default_suffix: str = "B", unit: int = 1024,
                 warnings: list[str] | None = None) -> int:
    """QEMU 7.2's ``qemu_strtosz``: decimal (with an optional fraction when a suffix
    scales it: ``1.5G``) or ``0x`` hex, optional suffix B/K/M/G/T/P/E in either case,
    result below 2^64.  Raises ValueError("invalid"|"range")."""
    try:
        val, end = _strtox(text, 10, signed=False, consume_all=False)
        if "-" in text[:end]:
            raise _StrtoxError("invalid")
        valf = 0
        hexa = False
        if val == 0 and text[end:end + 1] in ("x", "X"):
            val, end = _strtox(text, 16, signed=False, consume_all=False)
            if text[end:end + 1] == ".":
                raise _StrtoxError("invalid")
            hexa = True
        elif text[end:end + 1] == ".":
            m = re.compile(r"\.(\d+)([eE][+-]?\d+)?").match(text, end)
            if m is None:                      # "1." or "1.k": strtod fails, skip the dot
                end += 1
            elif m.group(2):
                raise _StrtoxError("invalid")  # exponents are refused
            else:
                valf = min(int(float("0." + m.group(1)) * 2.0 ** 64), _U64)
                end = m.end()
        c = text[end:end + 1].upper()
        if c and c in _SUFFIX_POWER:
            if hexa and warnings is not None:
                warnings.append(f"Using a multiplier suffix on hex numbers is deprecated: {text}")
            mul = unit ** _SUFFIX_POWER[c]
            end += 1
        else:
            mul = unit ** _SUFFIX_POWER[default_suffix.upper()]
        if end != len(text):
            raise _StrtoxError("invalid")
        if mul == 1:
            if valf:
                raise _StrtoxError("invalid")  # a fraction needs a scale
            return val
        prod = val * mul + ((valf * mul) >> 64) + (((valf * mul) & _U64) >> 63)  # round .5 up
        if prod > _U64:
            raise _StrtoxError("range")
        return prod
    except _StrtoxError as e:
        raise ValueError(e.kind) from None


def _loc(option: str, message: str) -> OptionError:
    return OptionError(f"{option}: {message}" if option else message)


def parse_bool(value: str, *, option: str, key: str) -> bool:
    """QEMU's ``qapi_bool_parse``: on/yes/true/y and off/no/false/n, case-sensitive.
    ``option`` is the location to name (e.g. ``DeviceOpts.origin``)."""
    if value in ("on", "yes", "true", "y"):
        return True
    if value in ("off", "no", "false", "n"):
        return False
    raise _loc(option, f"Parameter '{key}' expects 'on' or 'off'")


_INT_TYPE_WORD = {(8, False): "uint8_t", (16, False): "uint16_t", (32, False): "uint32_t",
                  (8, True): "int8_t", (16, True): "int16_t", (32, True): "int32_t"}


def parse_int(value: str, *, option: str, key: str, bits: int = 64, signed: bool = False) -> int:
    """An integer device property as QEMU 7.2 reads one from the command line
    (``strtoull``/``strtoll`` base 0: decimal, ``0x`` hex, and — as in C — a leading 0
    means octal; ``-1`` for an unsigned property wraps to 2^64-1 and then fails the
    range check).  Messages: ``Parameter 'iobase' expects integer`` (not a number or
    beyond 64 bits), ``Parameter 'iobase' expects uint32_t`` (out of the type's range)."""
    try:
        val, _ = _strtox(value, 0, signed=signed, consume_all=True)
    except _StrtoxError:
        raise _loc(option, f"Parameter '{key}' expects integer") from None
    if bits < 64:
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if not lo <= val <= hi:
            raise _loc(option, f"Parameter '{key}' expects {_INT_TYPE_WORD[(bits, signed)]}")
    return val


def parse_size(value: str, *, option: str, key: str, expects: str = "a size value") -> int:
    """A size property (``size=1M``), bytes, with QEMU's suffixes (case-insensitive
    K/M/G/T/P/E, powers of 1024; ``B`` or none = bytes).  The default wording is the
    one ``-object`` gives (``Parameter 'size' expects a size value``); QemuOpts lists
    say ``expects a non-negative number below 2^64`` (pass it as ``expects``)."""
    try:
        return qemu_strtosz(value)
    except ValueError as e:
        if str(e) == "range" and expects.startswith("a non-negative"):
            raise _loc(option, f"Value '{value}' is out of range for parameter '{key}'") from None
        raise _loc(option, f"Parameter '{key}' expects {expects}") from None


def _parse_number(value: str, *, option: str, key: str) -> int:
    """QemuOpts QEMU_OPT_NUMBER (``parse_option_number``)."""
    try:
        return _strtox(value, 0, signed=False, consume_all=True)[0]
    except _StrtoxError as e:
        if e.kind == "range":
            raise _loc(option, f"Value '{value}' is too large for parameter '{key}'") from None
        raise _loc(option, f"Parameter '{key}' expects a number") from None


# --------------------------------------------------------------------------- QemuOpts syntax

_NAME_RE = re.compile(r"[^=,]*")


def _get_value(text: str, p: int) -> tuple[str, int]:
    """get_opt_value: read up to a single ',' (",," is a literal comma); returns the
    value and the index of the terminating ',' or the end."""
    out = []
    n = len(text)
    while True:
        q = text.find(",", p)
        if q < 0:
            out.append(text[p:])
            return "".join(out), n
        if q + 1 < n and text[q + 1] == ",":
            out.append(text[p:q + 1])
            p = q + 2
            continue
        out.append(text[p:q])
        return "".join(out), q


def _is_help(s: str) -> bool:
    return s in ("help", "?")


def parse_qemu_opts(text: str, *, implied_key: str | None = None, location: str = "",
                    warnings: list[str] | None = None) -> list[tuple[str, str]]:
    """Split a QemuOpts string (``util/qemu-option.c``, ``get_opt_name_value``) into
    (key, value) pairs in order, duplicates kept.  A first element without ``=`` is
    the implied key's value (``,,`` escaping applies); any other element without ``=``
    is a short-form boolean (``x`` → ``x=on``, ``nox`` → ``x=off``) and adds QEMU's
    deprecation warning to ``warnings``."""
    pairs: list[tuple[str, str]] = []
    p, n = 0, len(text)
    first = implied_key
    while p < n:
        ln = _NAME_RE.match(text, p).end() - p  # type: ignore[union-attr]
        if p + ln < n and text[p + ln] == "=":
            name = text[p:p + ln]
            value, p = _get_value(text, p + ln + 1)
        elif first is not None:
            name = first
            value, p = _get_value(text, p)
        else:
            name = text[p:p + ln]
            p += ln
            prefix = ""
            if name.startswith("no"):
                name, value, prefix = name[2:], "off", "no"
            else:
                value = "on"
            if not (value == "on" and _is_help(name)) and warnings is not None:
                fix = (f"nodelay={'on' if prefix else 'off'}" if name == "delay"
                       else f"{name}={value}")
                warnings.append(f"{location}: warning: short-form boolean option "
                                f"'{prefix}{name}' deprecated; please use {fix} instead")
        first = None
        pairs.append((name, value))
        if p < n:                      # text[p] == ','
            p += 1
    return pairs


def format_opts(pairs: Iterable[tuple[str, str]], *, implied_key: str | None = None) -> str:
    """The inverse of ``parse_qemu_opts``: ``,`` in values doubled; the implied key is
    left out when its value allows (first pair, no ``=`` in it, not empty)."""
    parts = []
    for i, (k, v) in enumerate(pairs):
        if not k or "," in k or "=" in k:
            raise ValueError(f"key {k!r} cannot be written in QEMU's option syntax")
        esc = v.replace(",", ",,")
        if i == 0 and k == implied_key and v and "=" not in v.split(",", 1)[0]:
            parts.append(esc)
        else:
            parts.append(f"{k}={esc}")
    return ",".join(parts)


_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]*\Z")


def _opts_id(text: str, location: str) -> str | None:
    """opts_parse_id: the first ``id=`` (looked for with no implied key, as QEMU does)."""
    for k, v in parse_qemu_opts(text):
        if k == "id":
            if not _ID_RE.match(v):
                raise _loc(location, "Parameter 'id' expects an identifier")
            return v
    return None


# Types of the keys of QemuOpts lists that declare them (None = any string).
_BOOL, _NUM, _SIZE = "bool", "number", "size"
_CHARDEV_KEYS: dict[str, str | None] = {
    k: None for k in ("backend path host port fd localaddr localport tls-creds tls-authz "
                      "name chardev logfile").split()}
_CHARDEV_KEYS.update({k: _NUM for k in ("to reconnect width height cols rows debug").split()})
_CHARDEV_KEYS.update({k: _BOOL for k in ("ipv4 ipv6 wait server delay nodelay telnet tn3270 "
                                         "websocket mux signal append logappend mouse "
                                         "clipboard tight abstract").split()})
_CHARDEV_KEYS["size"] = _SIZE
_MEMORY_KEYS = {"size": _SIZE, "slots": _NUM, "maxmem": _SIZE}
_GLOBAL_KEYS: dict[str, str | None] = {"driver": None, "property": None, "value": None}
_MON_KEYS = {"mode": None, "chardev": None, "pretty": _BOOL}
_BOOT_KEYS = {"order": None, "once": None, "menu": _BOOL, "splash": None,
              "splash-time": _NUM, "reboot-timeout": _NUM, "strict": _BOOL}
_RTC_KEYS: dict[str, str | None] = {"base": None, "clock": None, "driftfix": None}
_NAME_KEYS = {"guest": None, "process": None, "debug-threads": _BOOL}
_SMP_KEYS = ("cpus", "sockets", "dies", "clusters", "cores", "threads", "maxcpus")


def _validate(pairs: list[tuple[str, str]], desc: dict[str, str | None], location: str) -> None:
    """opt_validate for a list with a description: unknown keys and typed values."""
    for k, v in pairs:
        if k == "id":
            continue
        if k not in desc:
            raise _loc(location, f"Invalid parameter '{k}'")
        kind = desc[k]
        if kind == _BOOL:
            parse_bool(v, option=location, key=k)
        elif kind == _NUM:
            _parse_number(v, option=location, key=k)
        elif kind == _SIZE:
            parse_size(v, option=location, key=k, expects="a non-negative number below 2^64")


def _props(pairs: list[tuple[str, str]], drop: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in pairs:
        if k not in drop:
            out[k] = v
    return out


def _last(pairs: list[tuple[str, str]], key: str) -> str | None:
    val = None
    for k, v in pairs:
        if k == key:
            val = v
    return val


# --------------------------------------------------------------------------- keyval syntax

def _qapi_name_len(s: str, p: int) -> int:
    """parse_qapi_name(complete=false): length of the QAPI name at s[p:], or 0."""
    q = p
    if s[q:q + 1] == "_":                       # downstream extension prefix __RFQDN_
        if s[q + 1:q + 2] != "_":
            return 0
        q += 2
        while q < len(s) and (s[q].isascii() and s[q].isalnum() or s[q] in "-."):
            q += 1
        if s[q:q + 1] != "_":
            return 0
        q += 1
    if not (q < len(s) and s[q].isascii() and s[q].isalpha()):
        return 0
    while q < len(s) and (s[q].isascii() and s[q].isalnum() or s[q] in "-_"):
        q += 1
    return q - p


def parse_keyval(text: str, *, implied_key: str | None, location: str = "",
                 into: dict[str, str] | None = None) -> tuple[dict[str, str], bool]:
    """``util/keyval.c`` as QEMU 7.2 uses it for ``-machine`` and ``-display``: returns
    (flat dict with dotted keys, help_requested).  ``into`` merges into an existing
    dict, later keys replacing earlier ones (how repeated ``-machine`` options merge)."""
    d: dict[str, str] = {} if into is None else into
    help_wanted = False
    s, n = 0, len(text)
    implied = implied_key
    while s < n:
        ln = _NAME_RE.match(text, s).end() - s  # type: ignore[union-attr]
        key_start, key_text = s, None
        val_end = None
        if ln and (s + ln >= n or text[s + ln] != "="):
            word = text[s:s + ln]
            if _is_help(word):
                help_wanted = True
                s += ln + (1 if s + ln < n else 0)
                implied = None
                continue
            if implied is not None:
                key_text = implied
                val_end = s + ln
        if key_text is None:
            key_text = text[s:s + ln]
        # check the key, fragment by fragment
        frags = []
        q = 0
        while True:
            if q != 0 and key_text[q:q + 1].isdigit():
                m = re.compile(r"\d+").match(key_text, q)
                fl = m.end() - q
            else:
                fl = _qapi_name_len(key_text, q)
            if not fl or (q + fl < len(key_text) and key_text[q + fl] != "."):
                raise _loc(location, f"Invalid parameter '{key_text}'")
            if fl >= 128:
                whole = q == 0 and q + fl == len(key_text)
                raise _loc(location, f"Parameter{'' if whole else ' fragment'} "
                                     f"'{key_text[q:q + fl]}' is too long")
            frags.append(key_text[q:q + fl])
            q += fl
            if q >= len(key_text):
                break
            q += 1                                   # the '.'
        key = ".".join(frags)
        if val_end is not None:
            value = text[s:val_end]
            s = val_end + (1 if val_end < n else 0)
        else:
            s = key_start + ln
            if s >= n or text[s] != "=":
                raise _loc(location, f"Expected '=' after parameter '{key_text}'")
            value, s = _get_value(text, s + 1)
            if s < n:
                s += 1
        # keyval_parse_put: a key is either a value or a prefix of others, never both
        for i in range(1, len(frags)):
            prefix = ".".join(frags[:i])
            if prefix in d:
                raise _loc(location, f"Parameters '{prefix}.*' used inconsistently")
        if any(k.startswith(key + ".") for k in d):
            raise _loc(location, f"Parameters '{key}.*' used inconsistently")
        d.pop(key, None)
        d[key] = value
        implied = None
    return d, help_wanted


# --------------------------------------------------------------------------- chardev shorthand

_CHARDEV_BACKENDS = frozenset(("stdio ringbuf mux pipe qemu-vdagent null msmouse socket vc "
                               "parallel udp memory file serial wctablet pty testdev").split())
_CHARDEV_ALIASES = {"tty": "serial", "parport": "parallel"}


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
            raise _loc(location, "mon: isn't supported in this context")
        filename = filename[4:]
        props["mux"] = "on"
        if filename == "stdio":
            props["signal"] = "off"

    def make(backend: str, **kw: str) -> ChardevOpts:
        return ChardevOpts(label, backend, {**props, **kw}, location)

    def fail() -> OptionError:
        return _loc(location, fail_message)

    def extra(rest: str, implied: str | None) -> dict[str, str]:
        # qemu_opts_do_parse: short-form booleans allowed without a warning here
        pairs = parse_qemu_opts(rest, implied_key=implied, location=location)
        _validate(pairs, _CHARDEV_KEYS, location)
        return _props(pairs, ())

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
    raise _loc(location, f"'{filename}' is not a valid char driver")


# --------------------------------------------------------------------------- option tables

# Every QEMU 7.2 x86_64 option: name -> takes an argument.  (From qemu-options.hx,
# checked one by one against the installed binary with `-OPT -nosuch`.)
_QEMU_OPTIONS: dict[str, bool] = {
    **{k: False for k in (
        "h help version mem-prealloc audio-help snapshot usb nographic portrait full-screen "
        "win2k-hack no-fd-bootchk no-acpi no-hpet singlestep preconfig S s enable-kvm "
        "xen-attach xen-domid-restrict no-reboot no-shutdown daemonize only-migratable "
        "nodefaults semihosting old-param no-user-config async-teardown "
        "enable-sync-profile").split()},
    **{k: True for k in (
        "machine M cpu accel smp numa add-fd set global boot m mem-path k audio audiodev "
        "device name uuid fda fdb hda hdb hdc hdd cdrom blockdev drive mtdblock sd pflash "
        "fsdev virtfs iscsi usbdevice display spice rotate vga g vnc acpitable smbios netdev "
        "nic net chardev tpmdev bios kernel append initrd dtb compat fw_cfg serial parallel "
        "monitor qmp qmp-pretty mon debugcon pidfile overcommit gdb d D dfilter seed L "
        "xen-domid action loadvm option-rom rtc icount watchdog-action echr incoming chroot "
        "runas prom-env semihosting-config readconfig trace plugin msg dump-vmstate object "
        "qtest qtest-log").split()},
}
# QEMU knows these but refuses them on x86_64 ("Option not supported for this target").
_NOT_FOR_TARGET = frozenset("g prom-env semihosting semihosting-config old-param xen-domid "
                            "xen-attach xen-domid-restrict".split())

_UVIRT_OPTIONS = {"uvirt-timeout": True, "uvirt-max-insns": True, "uvirt-trace": True,
                  "uvirt-trace-format": True,
                  "uvirt-screenshot": True,
                  # QEMU has no -screenshot (its monitor has screendump); issue 5 names it so.
                  "screenshot": True}

_DISPLAY = "uvirt has no graphical console; only the guest's port output is shown"
_LOG = "QEMU's own debug log; uvirt traces with -uvirt-trace"

#: Options accepted with no effect in uvirt, and why (some only for certain values,
#: checked in their handlers: see UNSUPPORTED_OPTIONS for the rest of their values).
IGNORED_OPTIONS: dict[str, str] = {
    "display": _DISPLAY,
    "nographic": _DISPLAY + " (no default serial/monitor is created either)",
    "vga": "only '-vga none' (no VGA card, as uvirt never has one)",
    "vnc": _DISPLAY, "spice": _DISPLAY, "full-screen": _DISPLAY, "portrait": _DISPLAY,
    "rotate": _DISPLAY, "k": "keyboard layout of a graphical console; uvirt has none",
    "no-user-config": "uvirt reads no configuration files",
    "name": "guest/process name for window titles and QMP; not visible to the guest",
    "serial": "only '-serial none' is ignored; other values are 16550 UARTs at COM1.. (RunConfig.serial)",
    "monitor": "only '-monitor none' is ignored; other values are recorded as monitors",
    "parallel": "only '-parallel none' (uvirt has no parallel port)",
    "boot": "only firmware reads it: menu, splash-time and reboot-timeout go to fw_cfg and the "
            "order to CMOS, as on QEMU; without -bios uvirt boots -kernel directly",
    "rtc": "uvirt does not model the RTC's time base, clock source or drift fix",
    "smp": "only one CPU ('-smp 1' or an equivalent topology): uvirt emulates exactly one",
    "cpu": "only 'qemu64' (QEMU's default, the model uvirt's CPU follows), optionally 'apic-id=0'",
    "accel": "tcg and qtest are honoured; kvm etc. are skipped when another candidate follows",
    "D": _LOG, "d": _LOG, "dfilter": _LOG, "trace": _LOG, "msg": "format of QEMU's messages",
    "L": "firmware search path; uvirt loads no firmware files",
    "audiodev": "host audio back end; uvirt has no sound device for it to feed",
    "no-shutdown": "uvirt exits when the guest powers off; there is nothing to keep paused",
    "only-migratable": "uvirt does not migrate",
    "enable-sync-profile": "QEMU lock profiling", "async-teardown": "QEMU teardown process",
    "echr": "escape character of a muxed monitor console",
    "watchdog-action": "uvirt has no watchdog device",
}

#: QEMU options uvirt refuses: the guest would see a difference, or uvirt cannot do
#: what the host asked for.  Options not listed here or above (and not handled) are
#: refused with the generic reason.
UNSUPPORTED_OPTIONS: dict[str, str] = {
    "pflash": "uvirt runs no firmware and has no flash device",
    "option-rom": "uvirt runs no firmware",
    **{k: "uvirt has no IDE/floppy/SD/MTD disk; use -drive if=none with -device virtio-blk-pci"
       for k in "hda hdb hdc hdd fda fdb cdrom sd mtdblock".split()},
    "blockdev": "-blockdev is not supported by uvirt; use -drive if=none",
    "snapshot": "uvirt does not implement disk snapshots",
    "numa": "uvirt has one CPU and no NUMA topology",
    "smbios": "uvirt provides no SMBIOS tables", "acpitable": "uvirt provides no ACPI tables",
    "no-acpi": "uvirt's pc has no ACPI switch", "no-hpet": "uvirt's pc has no HPET switch",
    "fw_cfg": "uvirt's fw_cfg has no user files",
    "usb": "uvirt has no USB controller", "usbdevice": "uvirt has no USB controller",
    "net": "uvirt has no network card", "nic": "uvirt has no network card",
    "audio": "uvirt has no sound card",
    "icount": "uvirt's timing is not instruction-counted",
    "overcommit": "uvirt cannot lock memory or pass CPU power management through",
    "mem-path": "use -object memory-backend-file with a device instead",
    "mem-prealloc": "uvirt's RAM is always allocated up front",
    "gdb": "uvirt has no gdb stub", "s": "uvirt has no gdb stub",
    "incoming": "uvirt does not migrate", "loadvm": "uvirt has no snapshots",
    "daemonize": "uvirt does not daemonize", "pidfile": "uvirt writes no pidfile",
    "readconfig": "uvirt reads no configuration files",
    "set": "-set is not supported by uvirt", "add-fd": "fd sets are not supported by uvirt",
    "preconfig": "uvirt has no preconfig state",
    "singlestep": "uvirt's translation block size cannot be set",
    "seed": "uvirt has no guest-visible random seed",
    "sandbox": "uvirt cannot install a seccomp sandbox",
    "chroot": "uvirt does not change root", "runas": "uvirt does not change user",
    "plugin": "TCG plugins are QEMU's", "dump-vmstate": "uvirt has no migration state",
    "action": "use -no-reboot", "compat": "-compat is not supported by uvirt",
    "dtb": "x86 pc has no device tree", "tpmdev": "uvirt has no TPM",
    "fsdev": "uvirt has no 9p device", "virtfs": "uvirt has no 9p device",
    "iscsi": "uvirt has no iSCSI block driver",
    "win2k-hack": "uvirt has no IDE controller", "no-fd-bootchk": "uvirt runs no firmware",
}
_GENERIC_UNSUPPORTED = "option not supported by uvirt"

# Machine types QEMU 7.2 (x86_64) knows; uvirt models pc-i440fx-7.2 (alias pc) and none.
_MACHINES = {"pc": "pc-i440fx-7.2", "pc-i440fx-7.2": "pc-i440fx-7.2", "none": "none"}
_QEMU_MACHINES = frozenset(
    ["microvm", "q35", "isapc", "x-remote"]
    + [f"pc-i440fx-{v}" for v in ("7.1 7.0 6.2 6.1 6.0 5.2 5.1 5.0 4.2 4.1 4.0 3.1 3.0 2.9 2.8 "
                                  "2.7 2.6 2.5 2.4 2.3 2.2 2.12 2.11 2.10 2.1 2.0 1.7 1.6 1.5 "
                                  "1.4").split()]
    + [f"pc-q35-{v}" for v in ("7.2 7.1 7.0 6.2 6.1 6.0 5.2 5.1 5.0 4.2 4.1 4.0.1 4.0 3.1 3.0 "
                               "2.9 2.8 2.7 2.6 2.5 2.4 2.12 2.11 2.10").split()])
# Properties of pc-i440fx-7.2-machine (`-machine pc,help`).
_PC_MACHINE_PROPS = frozenset((
    "acpi append boot bus-lock-ratelimit confidential-guest-support default-bus-bypass-iommu "
    "dt-compatible dtb dump-guest-core dumpdtb firmware graphics hpet i8042 initrd kernel "
    "max-fw-size max-ram-below-4g mem-merge memory memory-backend memory-encryption "
    "phandle-start pic pit sata sgx-epc smbios-entry-point-type smbus smm smp suppress-vmdesc "
    "usb vmport x-oem-id x-oem-table-id").split())
_MACHINE_PROPS_IGNORED = {
    "graphics": _DISPLAY, "dump-guest-core": "host core dump contents",
    "mem-merge": "host KSM hint", "suppress-vmdesc": "migration stream detail",
}
_ACCELS_HONOURED = ("tcg", "qtest")
_ACCELS_KNOWN = frozenset(("tcg qtest kvm xen hax hvf whpx nvmm").split())
_TCG_PROPS = {"thread": None, "tb-size": _NUM, "split-wx": _BOOL}
_DISPLAY_TYPES = frozenset("none gtk sdl egl-headless curses spice-app dbus cocoa vnc".split())
_VGA_TYPES = frozenset("std cirrus vmware qxl xenfb tcx cg3 virtio".split())
_DRIVE_IFS = frozenset("ide scsi floppy pflash mtd sd virtio xen".split())


# --------------------------------------------------------------------------- the parser

class _Parser:
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
            raise _loc(origin, f"Duplicate ID '{ident}' for {kind}")
        self.ids[kind].add(ident)

    def opts(self, arg: str, origin: str, implied: str | None,
             desc: dict[str, str | None] | None = None, kind: str | None = None,
             merge: bool = False) -> tuple[list[tuple[str, str]], str | None]:
        """One QemuOpts parse: id, then the pairs, then validation against ``desc``."""
        if merge:
            ident = None
            pairs = parse_qemu_opts(arg, implied_key=implied, location=origin, warnings=self.warnings)
            if any(k == "id" for k, _ in pairs):
                raise _loc(origin, "Invalid parameter 'id'")
        else:
            ident = _opts_id(arg, origin)
            if kind is not None:
                self.new_id(kind, ident, origin)
            pairs = [(k, v) for k, v in parse_qemu_opts(
                arg, implied_key=implied, location=origin, warnings=self.warnings) if k != "id"]
        if desc is not None:
            _validate(pairs, desc, origin)
        return pairs, ident

    def help_in(self, pairs: list[tuple[str, str]], implied: str | None) -> bool:
        return any(_is_help(k) and v == "on" or (k == implied and _is_help(v)) for k, v in pairs)

    # -- option handlers (name -> method), called in command-line order
    def opt_machine(self, opt: str, arg: str, origin: str) -> None:
        before = dict(self.machine_dict)
        _, help_wanted = parse_keyval(arg, implied_key="type", location=origin, into=self.machine_dict)
        if help_wanted or _is_help(self.machine_dict.get("type", "")):
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
        name = _last(pairs, "accel")
        if name is None:                        # QEMU lists the accelerators and exits
            self.help = HelpRequest(opt, arg)
            return
        if name not in _ACCELS_KNOWN:
            raise _loc(origin, f"invalid accelerator {name}")
        props = _props(pairs, ("accel",))
        self.check_accel_props(name, props, origin)
        self.accel.append(AccelOpts(name, props, origin))

    def check_accel_props(self, name: str, props: dict[str, str], origin: str) -> None:
        for k, v in props.items():
            if name == "tcg" and k in _TCG_PROPS:
                if k == "thread" and v not in ("single", "multi"):
                    raise _loc(origin, f"Invalid 'thread' setting {v}")
                if _TCG_PROPS[k] == _BOOL:
                    parse_bool(v, option=origin, key=k)
                elif _TCG_PROPS[k] == _NUM:
                    parse_int(v, option=origin, key=k, bits=32)
                self.ignore(origin.split(" ", 1)[0], f"{k}={v}",
                            "TCG translation setting; uvirt's CPU is Unicorn")
            elif name in _ACCELS_HONOURED:
                raise _loc(origin, f"Property '{name}-accel.{k}' not found")

    def opt_enable_kvm(self, opt: str, arg: None, origin: str) -> None:
        self.accel.append(AccelOpts("kvm", {}, origin))

    def opt_m(self, opt: str, arg: str, origin: str) -> None:
        pairs, _ = self.opts(arg, origin, "size", _MEMORY_KEYS, merge=True)
        for k, v in pairs:
            if k in ("slots", "maxmem"):
                raise _loc(origin, f"memory hotplug ('{k}={v}') is not supported by uvirt")
            self.memory.append((k, v, origin))

    def opt_smp(self, opt: str, arg: str, origin: str) -> None:
        pairs, _ = self.opts(arg, origin, "cpus", merge=True)
        for k, v in pairs:
            if k not in _SMP_KEYS:
                raise _loc(origin, f"Parameter 'smp.{k}' is unexpected")
            try:
                n = _strtox(v, 0, signed=True, consume_all=True)[0]
            except _StrtoxError:
                raise _loc(origin, f"Parameter 'smp.{k}' expects integer") from None
            if n not in (0, 1):
                raise _loc(origin, f"uvirt emulates exactly one CPU ({k}={v})")
            self.smp.append((k, v, origin))
        self.ignore(opt, arg, IGNORED_OPTIONS["smp"])

    def opt_cpu(self, opt: str, arg: str, origin: str) -> None:
        model, _, rest = arg.partition(",")
        if _is_help(model):
            self.help = HelpRequest(opt, arg)
            return
        if model != "qemu64":
            raise _loc(origin, f"CPU model '{model}' is not supported by uvirt (it models qemu64)")
        for k, v in parse_qemu_opts(rest, location=origin):
            if (k, v) != ("apic-id", "0"):
                raise _loc(origin, f"CPU property '{k}={v}' is not supported by uvirt")
        self.ignore(opt, arg, IGNORED_OPTIONS["cpu"])

    def opt_device(self, opt: str, arg: str, origin: str) -> None:
        if arg.startswith("{"):
            raise _loc(origin, "JSON syntax for -device is not supported by uvirt")
        pairs, ident = self.opts(arg, origin, "driver", kind="device")
        if self.help_in(pairs, "driver"):
            self.help = HelpRequest(opt, arg)
            return
        driver = _last(pairs, "driver")
        if driver is None:
            raise _loc(origin, "Parameter 'driver' is missing")
        self.devices.append(DeviceOpts(driver, ident, _props(pairs, ("driver",)), arg, origin))

    def opt_object(self, opt: str, arg: str, origin: str) -> None:
        if arg.startswith("{"):
            raise _loc(origin, "JSON syntax for -object is not supported by uvirt")
        pairs, ident = self.opts(arg, origin, "qom-type", kind="object")
        if self.help_in(pairs, "qom-type"):
            self.help = HelpRequest(opt, arg)
            return
        qom_type = _last(pairs, "qom-type")
        if qom_type is None:
            raise _loc(origin, "Parameter 'qom-type' is missing")
        if ident is None:
            raise _loc(origin, "Parameter 'id' is missing")
        self.objects.append(ObjectOpts(qom_type, ident, _props(pairs, ("qom-type",)), arg, origin))

    def opt_chardev(self, opt: str, arg: str, origin: str) -> None:
        pairs, ident = self.opts(arg, origin, "backend", _CHARDEV_KEYS, kind="chardev")
        if self.help_in(pairs, "backend"):
            self.help = HelpRequest(opt, arg)
            return
        backend = _last(pairs, "backend")
        if backend is None:
            raise _loc(origin, f"chardev: \"{ident}\" missing backend")
        if ident is None:
            raise _loc(origin, "chardev: no id specified")
        backend = _CHARDEV_ALIASES.get(backend, backend)
        if backend not in _CHARDEV_BACKENDS:
            raise _loc(origin, f"'{backend}' is not a valid char driver name")
        self.chardevs.append(ChardevOpts(ident, backend, _props(pairs, ("backend",)), origin))

    def opt_mon(self, opt: str, arg: str, origin: str) -> None:
        pairs, ident = self.opts(arg, origin, "chardev", _MON_KEYS, kind="mon")
        mode = _last(pairs, "mode") or "readline"
        if mode not in ("readline", "control"):
            raise _loc(origin, f"Parameter 'mode' does not accept value '{mode}'")
        chardev = _last(pairs, "chardev")
        if chardev is None:
            raise _loc(origin, "Parameter 'chardev' is missing")
        pretty = parse_bool(_last(pairs, "pretty") or "off", option=origin, key="pretty")
        if pretty and mode != "control":
            raise _loc(origin, "'pretty' is not compatible with HMP monitors")
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
            raise _loc(origin, "already have a debugcon device")
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
        raise _loc(origin, "uvirt has no parallel port (only -parallel none)")

    def opt_qtest(self, opt: str, arg: str, origin: str) -> None:
        self.qtest = parse_chr_compat(
            arg, label="qtest", location=origin, permit_mux_mon=False,
            fail_message=f"Failed to initialize device for qtest: \"{arg}\"")

    def opt_qtest_log(self, opt: str, arg: str, origin: str) -> None:
        self.qtest_log = arg

    def opt_drive(self, opt: str, arg: str, origin: str) -> None:
        pairs, ident = self.opts(arg, origin, None, kind="drive")
        iface = _last(pairs, "if") or "ide"
        if iface == "pflash":                   # the pc's system flash (firmware image)
            self.pflash.append(DriveOpts(ident, _props(pairs, ()), arg, origin))
            return
        if iface != "none":
            if iface not in _DRIVE_IFS:
                raise _loc(origin, f"unsupported bus type '{iface}'")
            raise _loc(origin, f"interface 'if={iface}' is not supported by uvirt "
                               "(use if=none with a -device)")
        self.drives.append(DriveOpts(ident, _props(pairs, ()), arg, origin))

    def opt_netdev(self, opt: str, arg: str, origin: str) -> None:
        if arg.startswith("{"):
            raise _loc(origin, "JSON syntax for -netdev is not supported by uvirt")
        pairs, ident = self.opts(arg, origin, "type", kind="netdev")
        if ident is None:
            raise _loc(origin, "Parameter 'id' is missing")
        ntype = _last(pairs, "type")
        if ntype is None:
            raise _loc(origin, "Parameter 'type' is missing")
        self.netdevs.append(NetdevOpts(ntype, ident, _props(pairs, ("type",)), arg, origin))

    def opt_global(self, opt: str, arg: str, origin: str) -> None:
        # qemu_global_option: "%63[^.=].%63[^=]" then '=' -> raw value, no unescaping
        m = re.match(r"([^.=]{1,63})\.([^=]{1,63})=", arg, re.S)
        if m:
            self.globals.append(GlobalOpt(m.group(1), m.group(2), arg[m.end():], origin))
            return
        pairs, _ = self.opts(arg, origin, None, _GLOBAL_KEYS)
        driver, prop, value = (_last(pairs, k) for k in ("driver", "property", "value"))
        if driver is None or prop is None or value is None:
            raise _loc(origin, "options 'driver', 'property', and 'value' are required")
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
            self.ignore(opt, arg, _DISPLAY)
            return
        d, help_wanted = parse_keyval(arg, implied_key="type", location=origin)
        if help_wanted or _is_help(d.get("type", "")):
            self.help = HelpRequest(opt, arg)
            return
        dtype = d.get("type")
        if dtype is None:
            raise _loc(origin, "Parameter 'type' is missing")
        if dtype not in _DISPLAY_TYPES:
            raise _loc(origin, f"Parameter 'type' does not accept value '{dtype}'")
        if dtype == "none":
            for k in d:
                if k != "type":
                    raise _loc(origin, f"Parameter '{k}' is unexpected")
        self.display = dtype
        self.ignore(opt, arg, _DISPLAY)

    def opt_vga(self, opt: str, arg: str, origin: str) -> None:
        if _is_help(arg):
            self.help = HelpRequest(opt, arg)
        elif arg == "none":
            self.ignore(opt, arg, "no VGA card")
        elif arg in _VGA_TYPES:
            raise _loc(origin, f"VGA card '{arg}' is not supported by uvirt (only -vga none)")
        else:
            raise _loc(origin, f"unknown vga type: {arg}")

    def opt_boot(self, opt: str, arg: str, origin: str) -> None:
        pairs, _ = self.opts(arg, origin, "order", merge=True)
        for k, v in pairs:
            if k not in _BOOT_KEYS:
                raise _loc(origin, f"Parameter 'boot.{k}' is unexpected")
            self.boot[k] = v
        self.ignore(opt, arg, IGNORED_OPTIONS["boot"])

    def opt_uuid(self, opt: str, arg: str, origin: str) -> None:
        if not re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", arg):
            raise _loc(origin, "Fail to parse UUID string. Wrong format.")
        self.uuid = bytes.fromhex(arg.replace("-", ""))

    def opt_rtc(self, opt: str, arg: str, origin: str) -> None:
        self.opts(arg, origin, None, _RTC_KEYS, merge=True)
        self.ignore(opt, arg, IGNORED_OPTIONS["rtc"])

    def opt_name(self, opt: str, arg: str, origin: str) -> None:
        self.opts(arg, origin, "guest", _NAME_KEYS, merge=True)
        self.ignore(opt, arg, IGNORED_OPTIONS["name"])

    def opt_uvirt_timeout(self, opt: str, arg: str, origin: str) -> None:
        try:
            t = float(arg)
        except ValueError:
            t = float("nan")
        if not t >= 0 or t == float("inf"):
            raise _loc(origin, "expects a number of seconds (0: no limit)")
        self.uvirt["timeout"] = t

    def opt_uvirt_max_insns(self, opt: str, arg: str, origin: str) -> None:
        n = parse_int(arg, option=origin, key="max-insns")
        if n == 0:
            raise _loc(origin, "expects a positive number of instructions")
        self.uvirt["max_insns"] = n

    def opt_uvirt_trace(self, opt: str, arg: str, origin: str) -> None:
        self.uvirt["trace"] = arg

    def opt_uvirt_trace_format(self, opt: str, arg: str, origin: str) -> None:
        from uvirt.observe.decode import FORMATS
        if arg not in FORMATS:
            raise _loc(origin, f"trace format '{arg}' is not one of {', '.join(FORMATS)}")
        self.uvirt["trace_format"] = arg

    def opt_uvirt_screenshot(self, opt: str, arg: str, origin: str) -> None:
        self.uvirt["screenshot"] = arg

    opt_screenshot = opt_uvirt_screenshot

    # -- final assembly
    def machine(self) -> MachineOpts:
        d = self.machine_dict
        requested = d.get("type", "pc")
        tloc = self.machine_origin.get("type", "-machine")
        if requested not in _MACHINES:
            if requested in _QEMU_MACHINES:
                raise _loc(tloc, f"machine type '{requested}' is not supported by uvirt "
                                 "(only pc = pc-i440fx-7.2, and none)")
            raise _loc(tloc, "unsupported machine type")
        mtype = _MACHINES[requested]
        props: dict[str, str] = {}
        for k, v in d.items():
            loc = self.machine_origin.get(k, "-machine")
            if k == "type":
                continue
            if k == "accel":
                self.machine_accel = (v, loc)
                continue
            top = k.split(".", 1)[0]
            if top not in _PC_MACHINE_PROPS:
                cls = "none-machine" if mtype == "none" else f"{mtype}-machine"
                raise _loc(loc, f"Property '{cls}.{top}' not found")
            if top in _MACHINE_PROPS_IGNORED:
                parse_bool(v, option=loc, key=k)
                self.ignore(loc.split(" ", 1)[0], f"{k}={v}", _MACHINE_PROPS_IGNORED[top])
            elif top == "usb" and not parse_bool(v, option=loc, key=k):
                self.ignore(loc.split(" ", 1)[0], f"{k}={v}", "pc has no USB by default")
            elif top in ("kernel", "initrd", "append", "firmware"):
                setattr(self, top, v)
                continue
            elif top == "smm":
                if v not in ("on", "off", "auto"):
                    raise _loc(loc, f"Parameter 'smm' does not accept value '{v}'")
                self.smm = v
                continue
            else:
                raise _loc(loc, f"machine property '{k}' is not supported by uvirt")
            props[k] = v
        return MachineOpts(mtype, requested, props)

    def accelerator(self) -> str:
        if self.machine_accel is not None:
            value, loc = self.machine_accel
            if self.accel:
                raise OptionError("The -accel and \"-machine accel=\" options are incompatible")
            for name in value.split(":"):
                if name in _ACCELS_KNOWN:
                    self.accel.append(AccelOpts(name, {}, loc))
                else:
                    self.ignore(loc.split(" ", 1)[0], name,
                                f"invalid accelerator {name} (QEMU skips it too)")
            if not self.accel:
                raise _loc(loc, f"invalid accelerator {value}")
        if not self.accel:
            return "tcg"
        for i, a in enumerate(self.accel):
            if a.name in _ACCELS_HONOURED:
                return a.name
            if i + 1 == len(self.accel):
                raise _loc(a.origin, f"accelerator '{a.name}' is not supported by uvirt "
                                     "(only tcg and qtest)")
            self.ignore(a.origin.split(" ", 1)[0], a.name,
                        f"accelerator {a.name} is not available in uvirt; "
                        "QEMU falls back the same way on a host without it")
        raise AssertionError("unreachable")

    def ram_size(self) -> int:
        size_raw = origin = None
        for k, v, o in self.memory:
            if k == "size":
                size_raw, origin = v, o
        if size_raw is None:
            return DEFAULT_RAM_SIZE
        assert origin is not None
        if size_raw == "":
            raise _loc(origin, "missing 'size' option value")
        if size_raw[-1].isdigit():              # legacy suffix-less: MiB
            size_raw += "M"
        try:
            size = qemu_strtosz(size_raw, warnings=self.warnings)
        except ValueError:
            raise _loc(origin, "Parameter 'size' expects a non-negative number below 2^64") from None
        if size == 0:
            return DEFAULT_RAM_SIZE
        size = -(-size // RAM_ALIGN) * RAM_ALIGN
        if size > _U64:
            raise _loc(origin, "ram size too large")
        return size

    def check_refs(self) -> None:
        ids = {c.id for c in self.chardevs}
        for spec, what in ((self.debugcon, "invalid character backend"),
                           (self.qtest, "Failed to initialize device for qtest:")):
            if isinstance(spec, ChardevRef) and spec.id not in ids:
                arg = spec.origin.split(" ", 1)[1]
                msg = (f"{what} '{arg}'" if what.startswith("invalid")
                       else f"{what} \"{arg}\"")
                raise _loc(spec.origin, msg)
        for spec in self.serial:
            if isinstance(spec, ChardevRef) and spec.id not in ids:
                arg = spec.origin.split(" ", 1)[1]
                raise _loc(spec.origin, "could not connect serial device to character "
                                        f"backend '{arg}'")
        for mon in self.monitors:
            if mon.chardev not in ids:
                raise _loc(mon.origin, f"chardev \"{mon.chardev}\" not found")
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
            ram_size=ram_size, nodefaults=self.flags["nodefaults"],
            no_reboot=self.flags["no_reboot"], start_paused=self.flags["start_paused"],
            kernel=self.kernel, append=self.append, initrd=self.initrd, bios=self.firmware,
            boot=dict(self.boot), uuid=self.uuid, pflash=tuple(self.pflash), smm=self.smm,
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
    takes = _QEMU_OPTIONS.get(name, _UVIRT_OPTIONS.get(name))
    if takes is None:
        raise _loc(written, "invalid option")
    if takes:
        if i + 1 >= len(argv):
            raise _loc(written, "requires an argument")
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
    p = _Parser()
    i = 0
    while i < len(argv):
        if not argv[i].startswith("-"):
            raise _loc(argv[i], "disk images given as plain arguments (-hda) are not "
                                "supported by uvirt")
        written, name, arg, i = _lookup(argv, i)
        origin = written if arg is None else f"{written} {arg}"
        if name in _NOT_FOR_TARGET:
            raise _loc(origin, "Option not supported for this target")
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
                raise _loc(origin, UNSUPPORTED_OPTIONS.get(name, _GENERIC_UNSUPPORTED))
        if p.help is not None:
            break
    return p.finish()
