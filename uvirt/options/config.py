"""The typed result of parsing QEMU 7.2's command line: ``RunConfig`` and its parts.

Plain frozen dataclasses, no parsing: ``uvirt.options.argv.parse_argv`` fills them,
``uvirt.launch`` builds a machine from them.  Property values that QEMU types per device
(``-device``, ``-object``, ``-drive``) stay strings here; the builder converts them with
``uvirt.options.values`` and words the errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MiB = 1 << 20
DEFAULT_RAM_SIZE = 128 * MiB          # pc's default_ram_size (fw_cfg reports 128 MiB)
RAM_ALIGN = 8192                      # machine_set_mem: QEMU_ALIGN_UP(size, 8192)


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
class BootOpts:
    """``-boot`` (merged over repeated options, last key wins), typed; None = not given.
    The ranges QEMU checks when it builds the machine (``fw_cfg_reboot``,
    ``fw_cfg_bootsplash``, ``set_boot_dev``) are checked by the builder."""
    order: str | None = None
    once: str | None = None
    menu: bool | None = None
    splash: str | None = None
    splash_time: int | None = None       # ms
    reboot_timeout: int | None = None    # ms, 2^64-1 (-1) = no reboot
    strict: bool | None = None


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
    tb_size: int | None = None              # -accel tcg,tb-size=N (MiB): the TCG buffer; None: uvirt's
    ram_size: int = DEFAULT_RAM_SIZE        # bytes, after QEMU's defaults and alignment
    nodefaults: bool = False
    no_reboot: bool = False
    start_paused: bool = False              # -S
    kernel: str | None = None
    append: str | None = None
    initrd: str | None = None
    bios: str | None = None                 # -bios FILE: real firmware from the reset vector
    boot: BootOpts = field(default_factory=BootOpts)          # -boot order=,menu=,splash-time=,...
    uuid: bytes | None = None               # -uuid: fw_cfg FW_CFG_UUID
    pflash: tuple[DriveOpts, ...] = ()      # -drive if=pflash: the system flash
    smm: str = "auto"                       # -machine smm=on|off|auto (auto: on, as under TCG)
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

