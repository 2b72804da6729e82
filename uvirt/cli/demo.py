"""``uvirt demo``: uvirt's main job, shown on the bundled guest programs.

Each step builds a guest program from ``firmware/``, boots it on a fresh ``pc`` machine
(the same path as ``uvirt run``), and shows what the guest did: its own output, and a
decoded trace of the device accesses that produced it.  It grows as devices land.
"""

from __future__ import annotations

import sys
import time

from uvirt.backends.chardev import MemoryChardev
from uvirt.cli.lspci import add_sizes, format_functions, parse_dump


def _boot(program: str, *, trace: bool = False, devices: tuple[str, ...] = ()):
    from uvirt.boot import firmware_step as bios
    from uvirt.firmware import build, bundled
    from uvirt.cpu.machine import Machine

    image = build(bundled(program))
    t = time.perf_counter()
    m = Machine()
    con = MemoryChardev()
    m.add_debugcon(con)
    m.add_debug_exit(0xF4, 4)
    from uvirt.launch.device_table import BuildContext, create_device
    ctx = BuildContext()
    for spec in devices:
        driver, _, rest = spec.partition(",")
        create_device(m, ctx, driver, dict(kv.split("=", 1) for kv in rest.split(",") if kv))
    bios.firmware_step(m)
    m.load_kernel(image, filename=program)
    events = m.tracer.record() if trace else []
    m.trace_layout()
    stop = m.run(timeout=10)
    elapsed = time.perf_counter() - t
    m.close()
    return con.text, stop, events, elapsed


def _step(n: int, total: int, title: str, out) -> None:
    print(f"\n[{n}/{total}] {title}", file=out)


def demo_main(argv: list[str], out=None) -> int:
    from uvirt.usage import UsageParser
    UsageParser(prog="uvirt demo", description="Boots the bundled guest programs on a fresh "
                "pc machine each and shows what they did: their output and a decoded trace "
                "of the device accesses behind it.  Takes no options.").parse_args(argv)
    out = out or sys.stdout
    print("uvirt demo: bundled guest programs on a QEMU 7.2-compatible pc machine "
          "(i440FX + PIIX3, -nodefaults)", file=out)
    steps = 4
    status = 0

    _step(1, steps, "firmware/pci_enum.S and pci_dump.S: the guest walks bus 0 through ports "
          "0xCF8/0xCFC (as `uvirt lspci -v` prints it)", out)
    text, stop, _, dt = _boot("pci_enum.S")
    dump, dump_stop, _, _ = _boot("pci_dump.S")
    functions = parse_dump(dump)
    add_sizes(functions, text)
    for line in format_functions(functions, verbose=1).splitlines():
        print(("  " + line).rstrip(), file=out)
    print(f"  -> {stop.summary()}; booted, enumerated and exited in {dt * 1e3:.1f} ms", file=out)
    status |= stop.exit_code != 1 or dump_stop.exit_code != 1

    _step(2, steps, "firmware/lib_selftest.S: the guest library checks itself (kvm-unit-tests style)", out)
    text, stop, _, dt = _boot("lib_selftest.S")
    lines = text.splitlines()
    fails = [ln for ln in lines if ln.startswith("FAIL")]
    summary = next((ln for ln in lines if ln.startswith("SUMMARY")), "no SUMMARY line")
    for ln in lines[:3] + ["..."] + fails:
        print("  " + ln, file=out)
    print("  " + summary, file=out)
    print(f"  -> exit status {stop.exit_code} ((v << 1) | 1 of the guest's debug-exit write)", file=out)
    status |= stop.exit_code != 1

    _step(3, steps, "what the device side saw: the first config-space accesses of pci_enum.S, decoded", out)
    _, stop, events, _ = _boot("pci_enum.S", trace=True)
    cfg = [ev for ev in events if ev.name.startswith("pci_cfg")]
    for ev in cfg[:8]:
        print(f"  {ev}", file=out)
    print(f"  ... {len(cfg)} config accesses, {sum(ev.name.startswith('pio') for ev in events)} port "
          f"accesses in all", file=out)

    _step(4, steps, "firmware/virtio_demo.S: one virtio-rng request end to end (legacy transport)", out)
    text, stop, events, _ = _boot("virtio_demo.S", trace=True, devices=("virtio-rng-pci,disable-modern=on",))
    for ln in text.splitlines()[1:]:
        print("  guest: " + ln, file=out)
    print("  what the transport saw: its legacy I/O BAR0 registers and the device's ring events "
          "(uvirt trace --filter-device legacy --filter-device ring):", file=out)
    for line in _decode_virtio(events):
        print("    " + line, file=out)
    status |= stop.exit_code != 1
    return status


def _decode_virtio(events) -> list[str]:
    """The virtio function's legacy registers and ring events, decoded as ``uvirt trace``
    does (uvirt.observe.decode), without the instruction column."""
    from uvirt.observe.decode import decode_records

    out = []
    for d in decode_records(events, devices=("legacy", "ring")):
        d.event = type(d.event)(d.event.name, {k: v for k, v in d.event.fields.items()
                                               if k not in ("eip", "insn")})
        out.append(d.text.rstrip())
    return out
