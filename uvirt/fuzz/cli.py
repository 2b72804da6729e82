"""``uvirt fuzz``: the command line of the device fuzzer (uvirt/fuzz/)."""
from __future__ import annotations

import argparse
import os

from uvirt.errors import UsageError, UvirtError
from uvirt.fuzz.oracles import KINDS

DESCRIPTION = """\
Fuzz one device (the last -device given) from guest code: inputs become operations
(PCI config, port and MMIO accesses at the device's BARs, virtio rings written in guest
RAM, notifies, resets, waits) that the guest CPU executes (--backend guest, the default)
or that call the board directly (--backend board); the machine is restored from a
snapshot before every input.  Findings (exceptions escaping the device, hangs, strict
virtio checks) are minimised and written to --out as a qtest trace, a guest program and
a pytest test.  Device options are QEMU's (-device, -drive, -object, -global, -m)."""

EPILOG = """\
examples:
  uvirt fuzz -device virtio-rng-pci --seconds 60
  uvirt fuzz -drive file=disk.img,format=raw,if=none,id=d0 -device virtio-blk-pci,drive=d0 \\
             --backend board --jobs 2 --corpus corpus/ --dict auto
  uvirt fuzz -device virtio-rng-pci --reproduce uvirt-findings/hang-0123456789.bin
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"fuzz: {message}")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="uvirt fuzz", description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("guest", "board"), default="guest",
                   help="guest: operations run as x86 code (default); board: direct calls, no CPU")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.add_argument("--runs", type=int, help="stop after this many executions")
    p.add_argument("--jobs", type=int, default=1,
                   help="parallel workers: libFuzzer's -fork=N (corpus merged into --corpus, "
                        "findings and crashes collected in --out)")
    p.add_argument("--corpus", help="corpus directory (kept inputs; seeds are read from it)")
    p.add_argument("--dict", dest="dict_path",
                   help="libFuzzer dictionary, or 'auto' for one made from the register enums")
    p.add_argument("--seed", type=int, help="libFuzzer's random seed (reproducible runs)")
    p.add_argument("--out", default="uvirt-findings", help="where findings go (default %(default)s)")
    p.add_argument("--oracles", default=",".join(KINDS),
                   help="finding kinds to report, comma-separated (default: all: %(default)s)")
    p.add_argument("--budget", type=float, default=1.0,
                   help="seconds of CPU time per input before it is a hang (the guest's own budget is "
                        "an instruction count: the instructions compiled for the input, plus 10,000)")
    p.add_argument("--stop-on-first", action="store_true", help="end at the first finding")
    p.add_argument("--python", metavar="MODULE:CALLABLE",
                   help="fuzz your own device: CALLABLE(machine) returns a PciFunction or a VirtioDevice")
    p.add_argument("--reproduce", metavar="FILE",
                   help="decode one input, print each operation with the device's reaction")
    return p


def split_device_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """QEMU-style device options (single dash, with a value) apart from ours (--x)."""
    ours, dev = [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") or a in ("-h",):
            ours.append(a)
            if "=" not in a and i + 1 < len(argv) and not argv[i + 1].startswith("-") and a not in (
                    "--stop-on-first", "--help", "-h"):
                ours.append(argv[i + 1])
                i += 1
        elif a.startswith("-"):
            dev.append(a)
            if i + 1 < len(argv):
                dev.append(argv[i + 1])
                i += 1
        else:
            raise UsageError(f"fuzz: unexpected argument '{a}'")
        i += 1
    return ours, dev


def main(argv: list[str]) -> int:
    ours, dev = split_device_args(argv)
    args = parser().parse_args(ours)
    oracles = tuple(o for o in args.oracles.split(",") if o)
    bad = [o for o in oracles if o not in KINDS]
    if bad:
        raise UsageError(f"fuzz: unknown oracle '{bad[0]}' (known: {', '.join(KINDS)})")
    if not args.python and not any(a == "-device" for a in dev):
        raise UsageError("fuzz: no -device to fuzz (e.g. -device virtio-rng-pci, or --python MODULE:CALLABLE)")
    if args.python:
        from uvirt.fuzz.target import load_factory
        load_factory(args.python)             # a bad spec is a one-line error now
    if args.reproduce:
        return reproduce(dev, args.reproduce, args.backend, oracles, args.python)
    if args.jobs < 1:
        raise UsageError(f"fuzz: --jobs {args.jobs}: at least 1")
    try:
        import atheris  # noqa: F401
    except ImportError:
        raise UvirtError("uvirt fuzz needs atheris: pip install 'uvirt[fuzz]'") from None
    from uvirt.fuzz.engine import FuzzConfig, fork, fuzz
    dict_path = args.dict_path
    if dict_path == "auto":
        dict_path = write_auto_dict(dev, args.out)
    cfg = FuzzConfig(device_argv=dev, backend=args.backend, seconds=args.seconds, runs=args.runs,
                     jobs=args.jobs, corpus=args.corpus, dict_path=dict_path, seed=args.seed,
                     out=args.out, oracles=oracles, budget=args.budget,
                     stop_on_first=args.stop_on_first, python=args.python)
    return fork(cfg) if args.jobs > 1 else fuzz(cfg)


def write_auto_dict(dev: list[str], out: str) -> str:
    """A libFuzzer dictionary from the register enums: whole commands that reach each
    named register of the virtio-pci transports (legacy and modern), and the PCI config
    registers."""
    from uvirt.board.pci.bus import PciReg
    from uvirt.virtio.pci import (COMMON_OFFSET, ISR_OFFSET, NOTIFY_OFF_MULTIPLIER, NOTIFY_OFFSET,
                                  CommonCfg as C, LegacyReg)
    from uvirt.fuzz.ops import SEPARATOR, OpKind, encode
    entries = [SEPARATOR]
    for r in PciReg:
        for k in (OpKind.CFG_READ, OpKind.CFG_WRITE):
            entries.append(encode(k, bytes((2, int(r) & 0xFF))))
    for r in LegacyReg:
        for k in (OpKind.IO_READ, OpKind.IO_WRITE):
            size = 0 if r in (LegacyReg.STATUS, LegacyReg.ISR) else 1 if r in (
                LegacyReg.QUEUE_NUM, LegacyReg.QUEUE_SEL, LegacyReg.QUEUE_NOTIFY) else 2
            entries.append(encode(k, bytes((0, size)) + int(r).to_bytes(4, "little")))
    # the modern transport's registers (virtio 1.2 §4.1.4.3), at their offsets in the
    # modern BAR; the first operand picks among the device's memory BARs
    common = {C.STATUS: 0, C.CFGGENERATION: 0, C.MSIX: 1, C.NUMQ: 1, C.Q_SELECT: 1, C.Q_SIZE: 1,
              C.Q_MSIX: 1, C.Q_ENABLE: 1, C.Q_NOFF: 1, C.Q_RESET: 1}
    modern = [(COMMON_OFFSET + int(r), common.get(r, 2)) for r in C]
    modern += [(ISR_OFFSET, 0), (NOTIFY_OFFSET, 1), (NOTIFY_OFFSET + NOTIFY_OFF_MULTIPLIER, 1)]
    for off, size in modern:
        for bar in range(3):
            for k in (OpKind.MMIO_READ, OpKind.MMIO_WRITE):
                entries.append(encode(k, bytes((bar, size)) + off.to_bytes(4, "little")))
    for k in OpKind:
        for operand in range(3):
            entries.append(encode(k, bytes((operand,))))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "auto.dict")
    with open(path, "w") as f:
        for i, e in enumerate(entries):
            f.write(f'e{i}="' + "".join(f"\\x{b:02x}" for b in e) + '"\n')
    return path


def reproduce(dev: list[str], path: str, backend: str, oracles, python: str | None = None) -> int:
    """Print each operation with the device's reaction (board backend, step by step),
    then the verdict of the chosen backend."""
    from uvirt.fuzz.engine import Harness
    from uvirt.fuzz.engine import REPLAY_WALL_LIMIT
    from uvirt.fuzz.target import FuzzTarget
    try:
        data = open(path, "rb").read()
    except OSError as e:
        raise UvirtError(f"fuzz: cannot read {path}: {e.strerror}") from None
    target = FuzzTarget(dev, factory=python)
    h = Harness(target, "board", oracles=oracles)
    vdev = h.monitor.vdev
    m = target.machine
    state = {"reads": 0, "errors": len(m.guest_errors)}

    def snap_dev():
        if vdev is None:
            return {}
        out = {"status": int(vdev.status), "isr": vdev.isr, "intx": target.fn.intx_level}
        for vq in vdev.queues[:4]:              # the used index as the driver reads it
            if vq.used:
                out[f"q{vq.index}.used"] = int.from_bytes(h.monitor._read(vq.used + 2, 2), "little")
        return out

    prev = [None]

    def on_op(op, reads):
        new_reads = reads[state["reads"]:]
        state["reads"] = len(reads)
        now = snap_dev()
        changes = [f"{k} {prev[0][k]}->{v}" for k, v in now.items() if prev[0] is not None and prev[0].get(k) != v]
        prev[0] = now
        errs = m.guest_errors[state["errors"]:]
        state["errors"] = len(m.guest_errors)
        line = f"  {op.text}"
        if new_reads:
            line += "  => " + ", ".join(f"0x{v:x}" for v in new_reads)
        print(line)
        for c in changes:
            print(f"      device: {c}")
        for kind, detail in errs:
            print(f"      guest error: {kind}: {detail}")

    def start():
        prev[0] = snap_dev()
    target.reset()
    start()
    print(f"{target.name}: {len(data)} bytes")
    printed = [0]
    inner = on_op

    def on_op(op, reads):
        printed[0] += 1
        inner(op, reads)
    ex = h.execute(data, on_op=on_op)
    if ex.finding is not None and printed[0] < len(ex.ops):
        print(f"  {ex.ops[printed[0]].text}  <= the finding, inside this operation")
    print(f"board backend: {'no finding' if ex.finding is None else ex.finding.kind + ': ' + ex.finding.detail}")
    if backend == "guest":
        g = Harness(target, "guest", oracles=oracles, wall_limit=REPLAY_WALL_LIMIT)
        ex = g.execute(data)
        print(f"guest backend: {'no finding' if ex.finding is None else ex.finding.kind + ': ' + ex.finding.detail}")
    target.close()
    return 1 if ex.finding is not None else 0
