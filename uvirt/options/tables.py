"""QEMU 7.2's option tables, and what uvirt does with each option.

Which options exist and take an argument (``QEMU_OPTIONS``, read off qemu-options.hx and
the installed binary), uvirt's own (``UVIRT_OPTIONS``), the options uvirt accepts without
effect (``IGNORED_OPTIONS``) or refuses (``UNSUPPORTED_OPTIONS``), each with its reason,
the machine types, accelerators and display types QEMU knows, and the typed keys of the
QemuOpts lists QEMU declares (``CHARDEV_KEYS``...).  ``uvirt.options.argv`` and
``uvirt.launch.help`` read them; nothing here parses.
"""

from __future__ import annotations

from uvirt.options.keyval import BOOL, NUMBER, SIZE

# --------------------------------------------------------------------------- QemuOpts key types

CHARDEV_KEYS: dict[str, str | None] = {
    k: None for k in ("backend path host port fd localaddr localport tls-creds tls-authz "
                      "name chardev logfile").split()}
CHARDEV_KEYS.update({k: NUMBER for k in ("to reconnect width height cols rows debug").split()})
CHARDEV_KEYS.update({k: BOOL for k in ("ipv4 ipv6 wait server delay nodelay telnet tn3270 "
                                         "websocket mux signal append logappend mouse "
                                         "clipboard tight abstract").split()})
CHARDEV_KEYS["size"] = SIZE
MEMORY_KEYS = {"size": SIZE, "slots": NUMBER, "maxmem": SIZE}
GLOBAL_KEYS: dict[str, str | None] = {"driver": None, "property": None, "value": None}
MON_KEYS = {"mode": None, "chardev": None, "pretty": BOOL}
BOOT_KEYS = {"order": None, "once": None, "menu": BOOL, "splash": None,
              "splash-time": NUMBER, "reboot-timeout": NUMBER, "strict": BOOL}
RTC_KEYS: dict[str, str | None] = {"base": None, "clock": None, "driftfix": None}
NAME_KEYS = {"guest": None, "process": None, "debug-threads": BOOL}
SMP_KEYS = ("cpus", "sockets", "dies", "clusters", "cores", "threads", "maxcpus")

CHARDEV_BACKENDS = frozenset(("stdio ringbuf mux pipe qemu-vdagent null msmouse socket vc "
                               "parallel udp memory file serial wctablet pty testdev").split())
CHARDEV_ALIASES = {"tty": "serial", "parport": "parallel"}


# --------------------------------------------------------------------------- option tables

# Every QEMU 7.2 x86_64 option: name -> takes an argument.  (From qemu-options.hx,
# checked one by one against the installed binary with `-OPT -nosuch`.)
QEMU_OPTIONS: dict[str, bool] = {
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
NOT_FOR_TARGET = frozenset("g prom-env semihosting semihosting-config old-param xen-domid "
                            "xen-attach xen-domid-restrict".split())

UVIRT_OPTIONS = {"uvirt-timeout": True, "uvirt-max-insns": True, "uvirt-trace": True,
                  "uvirt-trace-format": True,
                  "uvirt-screenshot": True,
                  # QEMU has no -screenshot (its monitor has screendump); issue 5 names it so.
                  "screenshot": True}

DISPLAY_WHY = "uvirt has no graphical console; only the guest's port output is shown"
LOG_WHY = "QEMU's own debug log; uvirt traces with -uvirt-trace"

#: Options accepted with no effect in uvirt, and why (some only for certain values,
#: checked in their handlers: see UNSUPPORTED_OPTIONS for the rest of their values).
IGNORED_OPTIONS: dict[str, str] = {
    "display": DISPLAY_WHY,
    "nographic": DISPLAY_WHY + " (no default serial/monitor is created either)",
    "vga": "only '-vga none' (no VGA card, as uvirt never has one)",
    "vnc": DISPLAY_WHY, "spice": DISPLAY_WHY, "full-screen": DISPLAY_WHY, "portrait": DISPLAY_WHY,
    "rotate": DISPLAY_WHY, "k": "keyboard layout of a graphical console; uvirt has none",
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
    "D": LOG_WHY, "d": LOG_WHY, "dfilter": LOG_WHY, "trace": LOG_WHY, "msg": "format of QEMU's messages",
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
GENERIC_UNSUPPORTED = "option not supported by uvirt"

# Machine types QEMU 7.2 (x86_64) knows; uvirt models pc-i440fx-7.2 (alias pc) and none.
MACHINES = {"pc": "pc-i440fx-7.2", "pc-i440fx-7.2": "pc-i440fx-7.2", "none": "none"}
QEMU_MACHINES = frozenset(
    ["microvm", "q35", "isapc", "x-remote"]
    + [f"pc-i440fx-{v}" for v in ("7.1 7.0 6.2 6.1 6.0 5.2 5.1 5.0 4.2 4.1 4.0 3.1 3.0 2.9 2.8 "
                                  "2.7 2.6 2.5 2.4 2.3 2.2 2.12 2.11 2.10 2.1 2.0 1.7 1.6 1.5 "
                                  "1.4").split()]
    + [f"pc-q35-{v}" for v in ("7.2 7.1 7.0 6.2 6.1 6.0 5.2 5.1 5.0 4.2 4.1 4.0.1 4.0 3.1 3.0 "
                               "2.9 2.8 2.7 2.6 2.5 2.4 2.12 2.11 2.10").split()])
# Properties of pc-i440fx-7.2-machine (`-machine pc,help`).
PC_MACHINE_PROPS = frozenset((
    "acpi append boot bus-lock-ratelimit confidential-guest-support default-bus-bypass-iommu "
    "dt-compatible dtb dump-guest-core dumpdtb firmware graphics hpet i8042 initrd kernel "
    "max-fw-size max-ram-below-4g mem-merge memory memory-backend memory-encryption "
    "phandle-start pic pit sata sgx-epc smbios-entry-point-type smbus smm smp suppress-vmdesc "
    "usb vmport x-oem-id x-oem-table-id").split())
MACHINE_PROPS_IGNORED = {
    "graphics": DISPLAY_WHY, "dump-guest-core": "host core dump contents",
    "mem-merge": "host KSM hint", "suppress-vmdesc": "migration stream detail",
}
ACCELS_HONOURED = ("tcg", "qtest")
ACCELS_KNOWN = frozenset(("tcg qtest kvm xen hax hvf whpx nvmm").split())
TCG_PROPS = {"thread": None, "tb-size": NUMBER, "split-wx": BOOL}
DISPLAY_TYPES = frozenset("none gtk sdl egl-headless curses spice-app dbus cocoa vnc".split())
VGA_TYPES = frozenset("std cirrus vmware qxl xenfb tcx cg3 virtio".split())
DRIVE_IFS = frozenset("ide scsi floppy pflash mtd sd virtio xen".split())

