"""QEMU 7.2's command line, parsed into a typed configuration; help output.

The parts, each usable alone:

* ``values``: QEMU's value syntax (integers, sizes, booleans), one parser each;
* ``keyval``: QemuOpts and keyval ``key=value`` lists;
* ``tables``: which options exist, which uvirt ignores or refuses and why;
* ``argv``: ``parse_argv``, the command line as QEMU's ``softmmu/vl.c`` reads it;
* ``config``: ``RunConfig``, the typed result;
* ``help``: what the help options print.

The public names are re-exported here (``from uvirt.options import parse_argv``).
"""

from uvirt.options.argv import parse_argv, parse_chr_compat
from uvirt.options.config import (
    DEFAULT_RAM_SIZE, AccelOpts, BootOpts, ChardevOpts, ChardevRef, CharSpec, DeviceOpts, DriveOpts,
    GlobalOpt, HelpRequest, IgnoredOption, MachineOpts, MonitorOpts, NetdevOpts, ObjectOpts,
    RunConfig, UvirtOpts)
from uvirt.options.keyval import format_opts, opts_id, parse_keyval, parse_qemu_opts
from uvirt.options.tables import IGNORED_OPTIONS, UNSUPPORTED_OPTIONS
from uvirt.options.values import parse_bool, parse_int, parse_size, qemu_strtosz

__all__ = [
    "AccelOpts", "BootOpts", "ChardevOpts", "ChardevRef", "CharSpec", "DeviceOpts", "DriveOpts", "GlobalOpt",
    "HelpRequest", "IgnoredOption", "MachineOpts", "MonitorOpts", "NetdevOpts", "ObjectOpts",
    "RunConfig", "UvirtOpts", "DEFAULT_RAM_SIZE", "IGNORED_OPTIONS", "UNSUPPORTED_OPTIONS",
    "format_opts", "opts_id", "parse_argv", "parse_bool", "parse_chr_compat", "parse_int",
    "parse_keyval", "parse_qemu_opts", "parse_size", "qemu_strtosz",
]
