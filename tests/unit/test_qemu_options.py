"""uvirt.options (values, keyval, argv): QEMU 7.2's command line.  Every pinned message was read off
qemu-system-x86_64 7.2 given the same arguments (with "uvirt: " in place of
"qemu-system-x86_64: ", which the CLI adds)."""

from __future__ import annotations

import re
import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvirt.errors import OptionError
from uvirt.options import (
    DEFAULT_RAM_SIZE,
    ChardevOpts,
    ChardevRef,
    GlobalOpt,
    HelpRequest,
    format_opts,
    parse_argv,
    parse_bool,
    parse_chr_compat,
    parse_int,
    parse_keyval,
    parse_qemu_opts,
    parse_size,
    qemu_strtosz,
)

MiB = 1 << 20

ISSUE_LINE = ("-machine pc -accel tcg -m 128M -nodefaults -nographic -display none -no-reboot "
              "-device isa-debug-exit,iobase=0xf4,iosize=4 -debugcon file:out.txt -kernel guest.bin")

# libqtest's fixed prefix + "-accel qtest" suffix (docs/qemu-qtest-suite.md (a)).
QTEST_PREFIX = ("-qtest unix:/tmp/qtest-1.sock -qtest-log /dev/null "
                "-chardev socket,path=/tmp/qtest-1.qmp,id=char0 -mon chardev=char0,mode=control "
                "-display none")


def parse(line: str):
    return parse_argv(shlex.split(line))


def err(line: str) -> str:
    with pytest.raises(OptionError) as e:
        parse(line)
    return str(e.value)


# --------------------------------------------------------------------------- whole lines

def test_issue_command_line_parses_to_expected_config():
    c = parse(ISSUE_LINE)
    assert c.machine.type == "pc-i440fx-7.2" and c.machine.requested == "pc"
    assert c.accelerator == "tcg"
    assert c.ram_size == 128 * MiB
    assert c.nodefaults and c.no_reboot and c.nographic
    assert c.display == "none"
    assert c.kernel == "guest.bin"
    (dev,) = c.devices
    assert dev.driver == "isa-debug-exit"
    assert dev.props == {"iobase": "0xf4", "iosize": "4"}
    assert dev.raw == "isa-debug-exit,iobase=0xf4,iosize=4"
    assert dev.origin == "-device isa-debug-exit,iobase=0xf4,iosize=4"
    assert c.debugcon == ChardevOpts("debugcon", "file", {"path": "out.txt"}, "-debugcon file:out.txt")


def test_issue_command_line_ignores_only_display_options():
    c = parse(ISSUE_LINE)
    assert [(i.option, i.value) for i in c.ignored] == [("-nographic", None), ("-display", "none")]
    assert c.warnings == ()


def test_no_options_gives_qemu_defaults():
    c = parse_argv([])
    assert (c.machine.type, c.accelerator, c.ram_size) == ("pc-i440fx-7.2", "tcg", DEFAULT_RAM_SIZE)
    assert not c.nodefaults and c.kernel is None and c.devices == ()


def test_qtest_libqtest_prefix_connects_qtest_and_qmp():
    c = parse(QTEST_PREFIX + " -M pc -device virtio-rng-pci,addr=04.0 -accel qtest")
    assert c.accelerator == "qtest"
    assert c.qtest == ChardevOpts("qtest", "socket", {"path": "/tmp/qtest-1.sock"},
                                  "-qtest unix:/tmp/qtest-1.sock")
    assert c.qtest_log == "/dev/null"
    assert c.chardevs[0].id == "char0" and c.chardevs[0].props == {"path": "/tmp/qtest-1.qmp"}
    (mon,) = c.monitors
    assert (mon.chardev, mon.mode, mon.pretty) == ("char0", "control", False)
    assert c.devices[0].props == {"addr": "04.0"}


def test_qtest_blk_line_keeps_drive_options_as_strings():
    c = parse(QTEST_PREFIX + " -M pc -device virtio-blk-pci,id=drv0,drive=drive0,addr=4.0"
              " -drive if=none,id=drive0,file=/tmp/img,format=raw,auto-read-only=off"
              " -drive if=none,id=drive1,file=null-co://,file.read-zeroes=on,format=raw -accel qtest")
    assert c.devices[0].id == "drv0" and c.devices[0].props == {"drive": "drive0", "addr": "4.0"}
    assert [d.id for d in c.drives] == ["drive0", "drive1"]
    assert c.drives[1].props == {"if": "none", "file": "null-co://",
                                 "file.read-zeroes": "on", "format": "raw"}


def test_qtest_ivshmem_lines_parse():
    c = parse(QTEST_PREFIX + " -object memory-backend-file,id=mb1,size=1M,share=on,"
              "mem-path=/dev/shm/qtest-1-0 -device ivshmem-plain,memdev=mb1"
              " -chardev socket,id=chr0,path=/tmp/d/server"
              " -device ivshmem-doorbell,chardev=chr0,vectors=2 -accel qtest")
    (obj,) = c.objects
    assert (obj.qom_type, obj.id) == ("memory-backend-file", "mb1")
    assert obj.props == {"size": "1M", "share": "on", "mem-path": "/dev/shm/qtest-1-0"}
    assert [d.driver for d in c.devices] == ["ivshmem-plain", "ivshmem-doorbell"]
    assert c.devices[1].props == {"chardev": "chr0", "vectors": "2"}


def test_qtest_global_disable_modern_is_recorded():
    c = parse("-global virtio-rng-pci.disable-modern=on -accel qtest")
    assert c.globals == (GlobalOpt("virtio-rng-pci", "disable-modern", "on",
                                   "-global virtio-rng-pci.disable-modern=on"),)


def test_fuzz_reproducer_line_parses():
    c = parse("-nodefaults -m 512M -display none -monitor none -serial none "
              "-machine accel=qtest -qtest stdio")
    assert c.accelerator == "qtest" and c.ram_size == 512 * MiB
    assert c.qtest == ChardevOpts("qtest", "stdio", {}, "-qtest stdio")
    assert c.monitors == () and c.serial == ()


def test_machine_none_is_accepted():
    assert parse("-machine none -accel qtest").machine.type == "none"


# --------------------------------------------------------------------------- option lookup

def test_double_dash_option_is_the_same_option():
    assert parse("--nodefaults --m 64").ram_size == 64 * MiB


def test_unknown_option_is_an_error_naming_it():
    assert err("-foo") == "-foo: invalid option"


def test_unknown_option_with_double_dash_is_named_as_written():
    assert err("--foo") == "--foo: invalid option"


def test_unknown_option_is_reported_before_bad_values():
    assert err("-m 12Q -nosuch") == "-nosuch: invalid option"


def test_missing_argument_is_an_error():
    assert err("-kernel") == "-kernel: requires an argument"


def test_option_argument_may_start_with_dash():
    assert parse("-kernel k -append -x").append == "-x"


def test_plain_argument_as_disk_image_is_refused():
    assert err("foo.img") == "foo.img: disk images given as plain arguments (-hda) are not supported by uvirt"


def test_option_of_another_target_is_refused_as_qemu_does():
    assert err("-semihosting") == "-semihosting: Option not supported for this target"


def test_help_option_stops_parsing_with_a_help_request():
    assert parse("-h -m 12Q").help_request == HelpRequest("-h", None)


def test_accel_without_name_is_a_help_request_as_in_qemu():
    assert parse("-accel thread=single").help_request == HelpRequest("-accel", "thread=single")


def test_machine_help_is_a_help_request():
    assert parse("-machine help").help_request == HelpRequest("-machine", "help")


def test_device_help_is_a_help_request():
    assert parse("-device virtio-rng-pci,help").help_request == HelpRequest("-device", "virtio-rng-pci,help")


# --------------------------------------------------------------------------- -m

@pytest.mark.parametrize("arg, size", [
    ("128M", 128 * MiB), ("1G", 1 << 30), ("128", 128 * MiB), ("128m", 128 * MiB),
    ("size=64M", 64 * MiB), ("1.5G", 3 << 29), ("0x10", 16 * MiB), ("1k", 8192),
    ("128k", 128 << 10), ("1.", 8192), ("0", DEFAULT_RAM_SIZE), ("", DEFAULT_RAM_SIZE),
])
def test_m_size_as_qemu_computes_it(arg, size):
    assert parse_argv(["-m", arg]).ram_size == size


def test_m_last_size_wins():
    assert parse("-m 128M,size=64M").ram_size == 64 * MiB
    assert parse("-m 32 -m 48").ram_size == 48 * MiB


def test_m_hex_without_suffix_warns_like_qemu():
    assert parse("-m 0x10").warnings == ("Using a multiplier suffix on hex numbers is deprecated: 0x10M",)


@pytest.mark.parametrize("arg", ["12Q", "-1", "1.5", "size=", "size=12Q"])
def test_m_bad_size_is_an_error(arg):
    with pytest.raises(OptionError, match=re.escape(
            f"-m {arg}: Parameter 'size' expects a non-negative number below 2^64")):
        parse_argv(["-m", arg])


def test_m_unknown_key_is_an_error():
    assert err("-m foo=1") == "-m foo=1: Invalid parameter 'foo'"


def test_m_maxmem_is_refused():
    assert err("-m 128M,maxmem=1G") == "-m 128M,maxmem=1G: memory hotplug ('maxmem=1G') is not supported by uvirt"


# --------------------------------------------------------------------------- -machine / -accel / -smp / -cpu

@pytest.mark.parametrize("arg", ["pc", "pc-i440fx-7.2", "type=pc", "pc,accel=tcg"])
def test_machine_pc_spellings_are_pc_i440fx_7_2(arg):
    assert parse_argv(["-machine", arg]).machine.type == "pc-i440fx-7.2"


def test_machine_options_merge_and_last_type_wins():
    c = parse("-machine nosuch -machine pc,usb=off")
    assert (c.machine.type, c.machine.props) == ("pc-i440fx-7.2", {"usb": "off"})


def test_machine_unknown_type_is_an_error():
    assert err("-machine nosuch") == "-machine nosuch: unsupported machine type"


def test_machine_q35_is_refused_naming_it():
    assert err("-machine q35") == ("-machine q35: machine type 'q35' is not supported by uvirt "
                                   "(only pc = pc-i440fx-7.2, and none)")


def test_machine_older_pc_version_is_refused():
    assert "machine type 'pc-i440fx-7.1' is not supported" in err("-M pc-i440fx-7.1")


def test_machine_unknown_property_is_an_error():
    assert err("-machine pc,foo=bar") == "-machine pc,foo=bar: Property 'pc-i440fx-7.2-machine.foo' not found"


def test_machine_guest_visible_property_is_refused():
    assert err("-machine pc,hpet=off") == "-machine pc,hpet=off: machine property 'hpet' is not supported by uvirt"


def test_machine_smm_is_recorded():
    assert parse_argv(["-machine", "pc,smm=off"]).smm == "off"
    assert parse_argv([]).smm == "auto"
    assert err("-machine pc,smm=maybe") == "-machine pc,smm=maybe: Parameter 'smm' does not accept value 'maybe'"


def test_machine_flag_without_value_is_an_error():
    assert err("-machine pc,usb") == "-machine pc,usb: Expected '=' after parameter 'usb'"


def test_machine_implied_type_does_not_unescape_commas():
    assert err("-machine pc,,x") == "-machine pc,,x: Invalid parameter ''"


def test_machine_kernel_property_is_the_kernel_option():
    assert parse("-machine kernel=a -kernel b").kernel == "b"
    assert parse("-kernel b -machine kernel=a").kernel == "a"


def test_machine_accel_qtest_selects_qtest():
    assert parse("-machine pc,accel=qtest").accelerator == "qtest"


def test_machine_accel_list_skips_invalid_entries_like_qemu():
    c = parse("-machine accel=nosuch:tcg")
    assert c.accelerator == "tcg"
    assert c.ignored[0].why == "invalid accelerator nosuch (QEMU skips it too)"


def test_machine_accel_and_accel_option_are_incompatible():
    assert err("-machine accel=tcg -accel tcg") == 'The -accel and "-machine accel=" options are incompatible'


def test_accel_unknown_is_an_error():
    assert err("-accel nosuch") == "-accel nosuch: invalid accelerator nosuch"


def test_accel_unknown_property_is_an_error():
    assert err("-accel tcg,foo=1") == "-accel tcg,foo=1: Property 'tcg-accel.foo' not found"


def test_accel_tcg_thread_setting_is_checked():
    assert err("-accel tcg,thread=bogus") == "-accel tcg,thread=bogus: Invalid 'thread' setting bogus"


def test_accel_kvm_alone_is_refused():
    assert err("-accel kvm") == "-accel kvm: accelerator 'kvm' is not supported by uvirt (only tcg and qtest)"


def test_enable_kvm_alone_is_refused():
    assert err("-enable-kvm") == "-enable-kvm: accelerator 'kvm' is not supported by uvirt (only tcg and qtest)"


def test_accel_kvm_then_tcg_falls_back_to_tcg():
    c = parse("-accel kvm -accel tcg")
    assert c.accelerator == "tcg" and [a.name for a in c.accel] == ["kvm", "tcg"]
    assert c.ignored[0].option == "-accel" and c.ignored[0].value == "kvm"


@pytest.mark.parametrize("arg", ["1", "cpus=1,sockets=1,cores=1,threads=1,maxcpus=1"])
def test_smp_one_cpu_is_ignored(arg):
    c = parse_argv(["-smp", arg])
    assert c.ignored[-1].option == "-smp"


def test_smp_two_is_an_error_naming_the_value():
    assert err("-smp 2") == "-smp 2: uvirt emulates exactly one CPU (cpus=2)"


def test_smp_cores_two_is_an_error():
    assert err("-smp 1,cores=2") == "-smp 1,cores=2: uvirt emulates exactly one CPU (cores=2)"


def test_smp_not_a_number_is_an_error():
    assert err("-smp foo") == "-smp foo: Parameter 'smp.cpus' expects integer"


def test_smp_unknown_key_is_an_error():
    assert err("-smp cpus=1,foo=2") == "-smp cpus=1,foo=2: Parameter 'smp.foo' is unexpected"


def test_cpu_qemu64_is_ignored():
    assert parse("-cpu qemu64,apic-id=0").ignored[0].option == "-cpu"


def test_cpu_other_model_is_refused():
    assert err("-cpu max") == "-cpu max: CPU model 'max' is not supported by uvirt (it models qemu64)"


# --------------------------------------------------------------------------- -device / -object / -drive / -netdev / -global

def test_device_escaped_comma_stays_in_driver_name():
    assert parse("-device virtio-rng-pci,,x=1").devices[0].driver == "virtio-rng-pci,x=1"


def test_device_repeated_property_last_wins_in_first_position():
    assert parse("-device d,a=1,b=2,a=3").devices[0].props == {"a": "3", "b": "2"}


def test_device_first_id_wins():
    assert parse("-device d,id=a,id=b").devices[0].id == "a"


def test_device_short_form_boolean_warns_like_qemu():
    c = parse("-device virtio-rng-pci,nodisable-modern")
    assert c.devices[0].props == {"disable-modern": "off"}
    assert c.warnings == ("-device virtio-rng-pci,nodisable-modern: warning: short-form boolean "
                          "option 'nodisable-modern' deprecated; please use disable-modern=off instead",)


def test_device_bad_id_is_an_error():
    assert err("-device d,id=9c") == "-device d,id=9c: Parameter 'id' expects an identifier"


def test_device_duplicate_id_is_an_error():
    assert err("-device d,id=a -device e,id=a") == "-device e,id=a: Duplicate ID 'a' for device"


def test_device_json_is_refused():
    assert "JSON syntax for -device is not supported" in err("""-device '{"driver":"x"}'""")


def test_object_without_id_is_an_error():
    assert err("-object memory-backend-ram,size=1M") == "-object memory-backend-ram,size=1M: Parameter 'id' is missing"


def test_object_without_type_is_an_error():
    assert err("-object ''") == "-object : Parameter 'qom-type' is missing"


def test_object_duplicate_id_is_an_error():
    assert err("-object a,id=x -object b,id=x") == "-object b,id=x: Duplicate ID 'x' for object"


def test_drive_default_interface_is_refused():
    assert err("-drive file=x") == ("-drive file=x: interface 'if=ide' is not supported by uvirt "
                                    "(use if=none with a -device)")


def test_drive_unknown_interface_is_an_error():
    assert err("-drive if=bogus") == "-drive if=bogus: unsupported bus type 'bogus'"


def test_netdev_implied_key_is_type():
    n = parse("-netdev user,id=n0").netdevs[0]
    assert (n.type, n.id, n.props) == ("user", "n0", {})


def test_netdev_without_id_is_an_error():
    assert err("-netdev user") == "-netdev user: Parameter 'id' is missing"


def test_global_short_form_keeps_commas_in_value():
    assert parse("-global a.b=c,d").globals[0].value == "c,d"


def test_global_long_form():
    g = parse("-global driver=virtio-rng-pci,property=disable-modern,value=on").globals[0]
    assert (g.driver, g.prop, g.value) == ("virtio-rng-pci", "disable-modern", "on")


def test_global_without_value_is_an_error():
    assert err("-global foo") == "-global foo: Invalid parameter 'foo'"


def test_global_long_form_missing_key_is_an_error():
    assert err("-global driver=a,property=b") == "-global driver=a,property=b: options 'driver', 'property', and 'value' are required"


# --------------------------------------------------------------------------- character devices

def test_chardev_socket_options_are_recorded():
    c = parse("-chardev socket,id=c,path=/tmp/s,server=on,wait=off")
    assert c.chardevs == (ChardevOpts("c", "socket", {"path": "/tmp/s", "server": "on", "wait": "off"},
                                      "-chardev socket,id=c,path=/tmp/s,server=on,wait=off"),)


def test_chardev_without_id_is_an_error():
    assert err("-chardev null") == "-chardev null: chardev: no id specified"


def test_chardev_without_backend_is_an_error():
    assert err("-chardev id=c") == '-chardev id=c: chardev: "c" missing backend'


def test_chardev_unknown_backend_is_an_error():
    assert err("-chardev nosuch,id=c") == "-chardev nosuch,id=c: 'nosuch' is not a valid char driver name"


def test_chardev_unknown_key_is_an_error():
    assert err("-chardev socket,id=c,path=/x,modemctl=on") == \
        "-chardev socket,id=c,path=/x,modemctl=on: Invalid parameter 'modemctl'"


def test_chardev_bad_boolean_is_an_error():
    assert err("-chardev socket,id=c,server=maybe") == \
        "-chardev socket,id=c,server=maybe: Parameter 'server' expects 'on' or 'off'"


def test_chardev_duplicate_id_is_an_error():
    assert err("-chardev null,id=c -chardev null,id=c") == "-chardev null,id=c: Duplicate ID 'c' for chardev"


@pytest.mark.parametrize("spec, backend, props", [
    ("file:out.txt", "file", {"path": "out.txt"}),
    ("stdio", "stdio", {}),
    ("null", "null", {}),
    ("pipe:/tmp/p", "pipe", {"path": "/tmp/p"}),
    ("unix:/tmp/s", "socket", {"path": "/tmp/s"}),
    ("unix:/tmp/s,server=on,wait=off", "socket", {"path": "/tmp/s", "server": "on", "wait": "off"}),
    ("unix:/tmp/s,server,nowait", "socket", {"path": "/tmp/s", "server": "on", "wait": "off"}),
    ("tcp::4444,server=on", "socket", {"host": "", "port": "4444", "server": "on"}),
    ("telnet:localhost:23", "socket", {"host": "localhost", "port": "23", "telnet": "on"}),
    ("udp:1.2.3.4:5@:6", "udp", {"host": "1.2.3.4", "port": "5", "localaddr": "", "localport": "6"}),
    ("mon:stdio", "stdio", {"mux": "on", "signal": "off"}),
    ("/dev/ttyS0", "serial", {"path": "/dev/ttyS0"}),
    ("vc:80Cx24C", "vc", {"cols": "80", "rows": "24"}),
])
def test_chr_compat_shorthands(spec, backend, props):
    assert parse_chr_compat(spec, label="l", location="-x", fail_message="f") == \
        ChardevOpts("l", backend, props, "-x")


def test_chr_compat_chardev_reference():
    assert parse_chr_compat("chardev:c0", label="l", location="-x", fail_message="f") == ChardevRef("c0", "-x")


def test_chr_compat_malformed_tcp_gives_callers_message():
    with pytest.raises(OptionError, match=r"^-x tcp:nope: could not connect$"):
        parse_chr_compat("tcp:nope", label="l", location="-x tcp:nope", fail_message="could not connect")


def test_debugcon_none_is_an_error_as_in_qemu():
    assert err("-debugcon none") == "-debugcon none: 'none' is not a valid char driver"


def test_debugcon_unknown_backend_is_an_error():
    assert err("-debugcon nosuch") == "-debugcon nosuch: 'nosuch' is not a valid char driver"


def test_debugcon_missing_chardev_reference_is_an_error():
    assert err("-debugcon chardev:nosuch") == "-debugcon chardev:nosuch: invalid character backend 'chardev:nosuch'"


def test_debugcon_chardev_reference_to_a_later_chardev_is_accepted():
    assert parse("-debugcon chardev:c -chardev null,id=c").debugcon == ChardevRef("c", "-debugcon chardev:c")


def test_debugcon_twice_is_an_error():
    assert err("-debugcon null -debugcon stdio") == "-debugcon stdio: already have a debugcon device"


def test_serial_none_is_ignored_and_stdio_recorded():
    c = parse("-serial none -serial stdio")
    assert c.serial == (ChardevOpts("serial0", "stdio", {}, "-serial stdio"),)
    assert ("-serial", "none") in [(i.option, i.value) for i in c.ignored]


def test_serial_unknown_backend_is_an_error():
    assert err("-serial nosuch") == "-serial nosuch: 'nosuch' is not a valid char driver"


def test_monitor_none_is_ignored():
    assert parse("-monitor none").monitors == ()


def test_monitor_shorthand_creates_compat_chardev():
    c = parse("-monitor stdio -qmp unix:/tmp/q,server=on,wait=off")
    assert [m.chardev for m in c.monitors] == ["compat_monitor0", "compat_monitor1"]
    assert [m.mode for m in c.monitors] == ["readline", "control"]
    assert [ch.backend for ch in c.chardevs] == ["stdio", "socket"]


def test_qmp_unknown_backend_is_an_error():
    assert err("-qmp nosuch") == "-qmp nosuch: 'nosuch' is not a valid char driver"


def test_mon_missing_chardev_is_an_error():
    assert err("-mon chardev=nosuch") == '-mon chardev=nosuch: chardev "nosuch" not found'


def test_mon_bad_mode_is_an_error():
    assert err("-chardev null,id=c -mon chardev=c,mode=bogus") == \
        "-mon chardev=c,mode=bogus: Parameter 'mode' does not accept value 'bogus'"


def test_mon_pretty_needs_control_mode():
    assert err("-mon chardev=c,pretty=on -chardev null,id=c") == \
        "-mon chardev=c,pretty=on: 'pretty' is not compatible with HMP monitors"


def test_debugcon_malformed_shorthand_is_an_error():
    assert err("-debugcon tcp:nope") == "-debugcon tcp:nope: invalid character backend 'tcp:nope'"


def test_qtest_mux_monitor_is_refused():
    assert err("-qtest mon:stdio") == "-qtest mon:stdio: mon: isn't supported in this context"


def test_parallel_none_is_ignored_other_is_refused():
    assert parse("-parallel none").ignored[0].why == "no parallel port"
    assert err("-parallel stdio") == "-parallel stdio: uvirt has no parallel port (only -parallel none)"


# --------------------------------------------------------------------------- display & host-only options

@pytest.mark.parametrize("line", [
    "-display none", "-display gtk", "-nographic", "-vga none", "-no-user-config", "-name guest1",
    "-boot c", "-rtc base=utc,clock=vm", "-D log.txt", "-d int", "-L /usr/share/qemu",
    "-trace events=x", "-audiodev none,id=a", "-no-shutdown",
])
def test_host_only_option_is_ignored_with_reason(line):
    c = parse(line)
    assert c.ignored and c.ignored[-1].option == line.split()[0] and c.ignored[-1].why


def test_display_unknown_type_is_an_error():
    assert err("-display nosuch") == "-display nosuch: Parameter 'type' does not accept value 'nosuch'"


def test_display_none_with_option_is_an_error():
    assert err("-display none,x=1") == "-display none,x=1: Parameter 'x' is unexpected"


def test_vga_card_is_refused():
    assert err("-vga std") == "-vga std: VGA card 'std' is not supported by uvirt (only -vga none)"


def test_vga_unknown_type_is_an_error():
    assert err("-vga nosuch") == "-vga nosuch: unknown vga type: nosuch"


def test_rtc_unknown_key_is_an_error():
    assert err("-rtc foo=1") == "-rtc foo=1: Invalid parameter 'foo'"


@pytest.mark.parametrize("line, why", [
    ("-hda x", "uvirt has no IDE"), ("-uuid 1", "Fail to parse UUID string"),
    ("-usb", "USB"), ("-gdb tcp::1234", "gdb"), ("-icount 1", "instruction-counted"),
])
def test_guest_visible_or_unhonourable_option_is_refused(line, why):
    assert err(line).startswith(line + ": ") and why in err(line)


def test_append_without_kernel_is_an_error():
    assert err("-append x") == "-append only allowed with -kernel option"


def test_initrd_without_kernel_is_an_error():
    assert err("-initrd x") == "-initrd only allowed with -kernel option"


def test_start_paused_flag():
    assert parse("-S").start_paused


# --------------------------------------------------------------------------- uvirt's own options

def test_uvirt_options_are_recorded():
    c = parse("-uvirt-timeout 2.5 --uvirt-max-insns 0x100 -uvirt-trace t.txt")
    assert (c.uvirt.timeout, c.uvirt.max_insns, c.uvirt.trace) == (2.5, 256, "t.txt")


def test_uvirt_timeout_must_not_be_negative():
    assert err("-uvirt-timeout -1") == "-uvirt-timeout -1: expects a number of seconds (0: no limit)"


def test_uvirt_timeout_zero_means_no_limit():
    assert parse("-uvirt-timeout 0").uvirt.timeout == 0


def test_uvirt_unknown_option_is_invalid():
    assert err("-uvirt-foo 1") == "-uvirt-foo: invalid option"


# --------------------------------------------------------------------------- value helpers

@pytest.mark.parametrize("value, expected", [
    ("on", True), ("yes", True), ("true", True), ("y", True),
    ("off", False), ("no", False), ("false", False), ("n", False),
])
def test_parse_bool_accepts_qemu_spellings(value, expected):
    assert parse_bool(value, option="-device d", key="k") is expected


def test_parse_bool_is_case_sensitive_like_qemu():
    with pytest.raises(OptionError, match=r"^-device v,disable-modern=ON: Parameter 'disable-modern' expects 'on' or 'off'$"):
        parse_bool("ON", option="-device v,disable-modern=ON", key="disable-modern")


@pytest.mark.parametrize("value, expected", [("0xf4", 0xF4), ("244", 244), ("010", 8), (" 7", 7), ("+3", 3)])
def test_parse_int_reads_c_base_0(value, expected):
    assert parse_int(value, option="-device d", key="iobase", bits=32) == expected


@pytest.mark.parametrize("value", ["zz", "", "0x", "1 ", "99999999999999999999999"])
def test_parse_int_garbage_expects_integer(value):
    with pytest.raises(OptionError, match=r"^-device d: Parameter 'iobase' expects integer$"):
        parse_int(value, option="-device d", key="iobase", bits=32)


@pytest.mark.parametrize("value", ["-1", "0x1ffffffff"])
def test_parse_int_out_of_range_names_the_type(value):
    with pytest.raises(OptionError, match=r"^-device d: Parameter 'iobase' expects uint32_t$"):
        parse_int(value, option="-device d", key="iobase", bits=32)


def test_parse_int_signed_range():
    assert parse_int("-128", option="o", key="k", bits=8, signed=True) == -128
    with pytest.raises(OptionError, match=r"expects int8_t$"):
        parse_int("128", option="o", key="k", bits=8, signed=True)


@pytest.mark.parametrize("value, expected", [
    ("1M", MiB), ("1m", MiB), ("4k", 4096), ("4K", 4096), ("1G", 1 << 30), ("1T", 1 << 40),
    ("512", 512), ("512B", 512), ("1.5k", 1536), ("0x1000", 4096), (" 1M", MiB),
    ("16E", None),
])
def test_parse_size_suffixes(value, expected):
    if expected is None:
        with pytest.raises(OptionError):
            parse_size(value, option="-object o", key="size")
    else:
        assert parse_size(value, option="-object o", key="size") == expected


@pytest.mark.parametrize("value", ["12Q", "-1", "1.5", "", "1.5e3M", "0x1.8M"])
def test_parse_size_garbage_is_an_error(value):
    with pytest.raises(OptionError, match=r"^-object o: Parameter 'size' expects a size value$"):
        parse_size(value, option="-object o", key="size")


def test_strtosz_rounds_half_up():
    assert qemu_strtosz("0.5k") == 512 and qemu_strtosz("1.0005k") == 1025


def test_strtosz_largest_value():
    assert qemu_strtosz("18446744073709551615") == (1 << 64) - 1
    with pytest.raises(ValueError, match="range"):
        qemu_strtosz("18446744073709551616")


# --------------------------------------------------------------------------- syntaxes

def test_qemu_opts_implied_key_and_flags():
    warnings: list[str] = []
    assert parse_qemu_opts("drv,a=1,,2,b,nooc", implied_key="driver", location="-device", warnings=warnings) == [
        ("driver", "drv"), ("a", "1,2"), ("b", "on"), ("oc", "off")]
    assert len(warnings) == 2


def test_qemu_opts_trailing_comma_is_ignored():
    assert parse_qemu_opts("a=1,") == [("a", "1")]


def test_qemu_opts_explicit_implied_key():
    assert parse_qemu_opts("driver=x=y", implied_key="driver") == [("driver", "x=y")]


def test_keyval_merges_and_replaces():
    d, _ = parse_keyval("pc,a=1", implied_key="type")
    parse_keyval("a=2,b.c=3", implied_key="type", into=d)
    assert d == {"type": "pc", "a": "2", "b.c": "3"}


def test_keyval_inconsistent_use_is_an_error():
    with pytest.raises(OptionError, match=r"^-machine a=1,a\.b=2: Parameters 'a\.\*' used inconsistently$"):
        parse_keyval("a=1,a.b=2", implied_key=None, location="-machine a=1,a.b=2")


def test_keyval_bad_key_is_an_error():
    with pytest.raises(OptionError, match=r"^-machine pc,9x=1: Invalid parameter '9x'$"):
        parse_keyval("pc,9x=1", implied_key="type", location="-machine pc,9x=1")


_keys = st.from_regex(r"[a-z][a-z0-9.-]{0,10}", fullmatch=True)
_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_keys, _values), max_size=6), st.one_of(st.none(), st.just("driver")))
def test_format_then_parse_round_trips(pairs, implied):
    if implied is not None and pairs:
        pairs = [(implied, pairs[0][1])] + pairs[1:]
    text = format_opts(pairs, implied_key=implied)
    assert parse_qemu_opts(text, implied_key=implied) == pairs


@settings(max_examples=100, deadline=None)
@given(_values, _values)
def test_escaped_device_value_round_trips_through_argv(v1, v2):
    arg = format_opts([("driver", "d"), ("a", v1), ("b", v2)], implied_key="driver")
    dev = parse_argv(["-device", arg]).devices[0]
    assert dev.props == {"a": v1, "b": v2} and dev.raw == arg


def test_bios_is_the_machine_firmware_property():
    """QEMU's -bios FILE is -machine firmware=FILE; the last one wins."""
    assert parse_argv(["-bios", "a.bin"]).bios == "a.bin"
    assert parse_argv(["-machine", "pc,firmware=b.bin"]).bios == "b.bin"
    assert parse_argv(["-bios", "a.bin", "-bios", "c.bin"]).bios == "c.bin"


def test_uuid_and_boot_options_reach_fw_cfg_and_cmos():
    from uvirt.board.devices import fw_cfg as F
    from uvirt.launch.runner import build_machine
    cfg = parse_argv(["-machine", "pc", "-accel", "qtest", "-uuid", "4600cb32-38ec-4b2f-8acb-81c6ea54f2d8",
                      "-boot", "order=dc,menu=on,splash-time=12,reboot-timeout=15"])
    m = build_machine(cfg).machine
    try:
        fw = m.fw_cfg
        assert fw.items[F.UUID] == bytes.fromhex("4600cb3238ec4b2f8acb81c6ea54f2d8")
        assert fw.items[F.BOOT_MENU] == b"\x01\x00"
        assert fw.file("etc/boot-fail-wait") == (15).to_bytes(4, "little")
        assert fw.file("etc/boot-menu-wait") == (12).to_bytes(2, "little")
        assert (m.rtc.cmos[0x3D], m.rtc.cmos[0x38] & 0xF0) == (0x23, 0x00)
    finally:
        m.close()


def test_boot_options_are_typed_as_qemu_reads_them():
    """-boot merges, last key wins; numbers are QEMU's (base 0: 010 is octal 8, -1 wraps as
    in strtoull), booleans qapi_bool_parse's (once crashed on Python's int('010', 0))."""
    from uvirt.options import BootOpts
    cfg = parse_argv(["-boot", "order=c,menu=yes,reboot-timeout=010", "-boot", "splash-time=0x10,strict=off"])
    assert cfg.boot == BootOpts(order="c", menu=True, reboot_timeout=8, splash_time=16, strict=False)
    assert parse_argv(["-boot", "reboot-timeout=-1"]).boot.reboot_timeout == (1 << 64) - 1
    assert parse_argv([]).boot == BootOpts()


def test_bad_boot_values_are_qemus_errors():
    from uvirt.launch.runner import build_machine
    for arg, msg in (("reboot-timeout=70000", "reboot timeout is invalid"),
                     ("splash-time=70000", "splash-time is invalid"),
                     ("order=cx", "Invalid boot device for PC: 'x'"), ("order=cdna", "Too many boot devices")):
        with pytest.raises(OptionError, match=msg):
            build_machine(parse_argv(["-accel", "qtest", "-boot", arg]))
