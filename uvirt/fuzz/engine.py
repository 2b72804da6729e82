"""Running inputs against a target with the oracles, minimising findings, and the
coverage-guided loop (atheris, i.e. libFuzzer for Python).

One execution: restore the snapshot (uvirt/cpu/snapshot.py), decode the input into operations
(uvirt/fuzz/ops.py), run them on the chosen backend (uvirt/fuzz/backends.py) under a budget,
then ask the oracles (uvirt/fuzz/oracles.py).

The hang oracle counts work, never wall-clock time, so a loaded machine gives no false
hangs: the guest has an instruction budget (Unicorn's count: the instructions compiled for
each stretch between two waits, plus ``INSN_SLACK``), and everything else an input does --
a device model's own Python loop, device work, the guest's instructions too -- is bounded
by the process's CPU time (``ITIMER_PROF``: ``budget`` seconds of CPU, user and system,
which do not pass while the process waits or sleeps).  libFuzzer's ``-timeout`` (wall
clock, long) is the last resort, for an input that neither runs instructions nor uses CPU
(a guest halted with interrupts enabled that nothing will wake).  Coverage is libFuzzer's, from
atheris' bytecode instrumentation of the device's Python code (the modules of the device
model, the virtio core and transport, the PCI and MSI-X code); on top of it, virtio-level
features of the run (the device status reached, how far the used index moved, which guest
errors the device reported) are fed to libFuzzer as extra edges, so an input that drives
the device into a new state is kept even when it runs no new line.
"""
from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from uvirt.fuzz.backends import BoardBackend, GuestBackend, RunResult
from uvirt.fuzz.oracles import KINDS, Finding, FindingError, Monitor, exception_finding
from uvirt.fuzz.ops import SEPARATOR, decode, split_commands
from uvirt.fuzz.reproducers import write_reproducers
from uvirt.fuzz.target import FuzzTarget


#: After an input's CPU budget is spent, how often (seconds of CPU) Hang is raised again.
RE_RAISE = 0.05


class Hang(FindingError):
    pass


@dataclass
class Execution:
    ops: list
    result: RunResult | None
    finding: Finding | None
    features: tuple = ()


@dataclass
class Stats:
    execs: int = 0
    started: float = field(default_factory=time.monotonic)
    findings: dict = field(default_factory=dict)        # signature -> (Finding, input)
    features: set = field(default_factory=set)


class Harness:
    """A target, a backend and the oracles: ``execute(data)``."""

    def __init__(self, target: FuzzTarget, backend: str = "guest", *, oracles=KINDS,
                 budget: float = 1.0, wall_limit: float | None = None) -> None:
        """``budget``: seconds of the process's CPU time an input may use before it is a
        hang; ``wall_limit``: a wall-clock last resort for the guest backend (None under
        libFuzzer, whose ``-timeout`` is that; replays outside it set one)."""
        self.target = target
        self.monitor = Monitor(target, tuple(oracles))
        self.oracles = frozenset(oracles)
        self.budget = budget
        self._running = False            # an input is running (SIGPROF may raise Hang)
        if backend == "guest":
            self.backend = GuestBackend(target, wall_limit=wall_limit)
        elif backend == "board":
            self.backend = BoardBackend(target)
            self.backend._guest = _DriverWrites(self.monitor)
        else:
            raise ValueError(f"backend {backend!r}: guest or board")

    def execute(self, data: bytes, on_op=None) -> Execution:
        t = self.target
        t.reset()
        self.monitor.begin()
        ops = decode(data, t.layout)
        m = t.machine
        errors_before = len(m.guest_errors)
        finding = None
        result = None
        old = signal.signal(signal.SIGPROF, self._out_of_cpu)
        try:
            # Once the budget is spent the timer fires again every RE_RAISE seconds of CPU:
            # a Hang the signal raised inside code that swallows exceptions (a finalizer
            # the collector runs at that moment: "Exception ignored in ...") is raised
            # again, instead of the input running, and allocating, for ever.
            self._running = True
            signal.setitimer(signal.ITIMER_PROF, self.budget, RE_RAISE)
            try:
                result = self.backend.run(ops, on_op)
            finally:
                # a SIGPROF right here raises Hang into the handler below: the input did
                # use up its budget
                self._running = False
                signal.setitimer(signal.ITIMER_PROF, 0)
        except FindingError as e:
            finding = e.finding
        except Exception as e:                # a device's exception, board backend
            finding = exception_finding(e)
        finally:
            signal.signal(signal.SIGPROF, old)
        if finding is None and result is not None and result.stop is not None:
            finding = self._from_stop(result)
        if finding is not None and finding.kind not in self.oracles:
            finding = None
        if finding is None:
            finding = self.monitor.after()
        feats = self._features(errors_before)
        return Execution(ops, result, finding, feats)

    def _from_stop(self, result: RunResult) -> Finding | None:
        stop, m = result.stop, self.target.machine
        name = stop.reason.name
        if name == "HOST_ERROR":
            e = getattr(m, "host_exception", None)
            m.host_exception = None
            if isinstance(e, FindingError):
                return e.finding
            return exception_finding(e) if e is not None else Finding("exception", stop.summary())
        if name == "INSN_BUDGET":
            return Finding("hang", f"the guest ran past its instruction budget | {stop.detail}")
        if name == "TIMEOUT":
            return Finding("hang", f"the guest did not finish in {self.backend.wall_limit:g} s of wall "
                                   f"clock (the last resort: it ran no instructions and used no CPU)")
        return None

    def _out_of_cpu(self, signum, frame):
        if not self._running:            # the input is over: a late repeat raises nothing
            return
        raise Hang(Finding("hang", f"input used more than {self.budget:g} s of CPU time | "
                                   f"running {_where(frame)}"))

    def _features(self, errors_before: int) -> tuple:
        vdev = self.monitor.vdev
        feats = []
        if vdev is not None:
            feats.append(("status", int(vdev.status) & 0xFF))
            for vq in vdev.queues[:8]:
                feats.append(("used", vq.index, min(vq.used_idx, 16)))
                feats.append(("inuse", vq.index, min(vq.inuse, 4)))
            feats.append(("broken", bool(vdev.broken)))
        for kind, _detail in self.target.machine.guest_errors[errors_before:]:
            feats.append(("guest_error", kind))
        return tuple(feats)


def _where(frame, depth: int = 8) -> str:
    """Where the CPU budget ran out: uvirt's functions on the stack outside the fuzzer,
    innermost first (a detail for people, not part of the signature: a loop's innermost
    frame varies from one run to the next)."""
    out = []
    while frame is not None and len(out) < depth:
        name = frame.f_code.co_filename
        if "/uvirt/" in name and not any(h in name for h in _HARNESS_FILES):
            out.append(f"{name.rsplit('/', 1)[-1]}:{frame.f_lineno} in {frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(out) or "the fuzzer"


_HARNESS_FILES = ("/uvirt/fuzz/backends.py", "/uvirt/fuzz/engine.py", "/uvirt/fuzz/oracles.py",
                  "/uvirt/fuzz/target.py", "/uvirt/fuzz/ops.py")


class _DriverWrites:
    """The board backend's ``ram`` operations are the driver's writes, not the device's:
    they bypass the DMA oracles."""

    def __init__(self, monitor: Monitor) -> None:
        self.write = monitor.driver_write


#: outside libFuzzer (whose -timeout is the fuzzing run's last resort), a replay gives up
#: on a guest that neither runs nor uses CPU after this many seconds of wall clock
REPLAY_WALL_LIMIT = 60.0


def replay(device_argv: list[str], data: bytes, *, backend: str = "guest", oracles=None,
           python: str | None = None):
    """Run one input on a fresh target with the oracles: the finding, or None (what a
    written pytest reproducer calls)."""
    t = FuzzTarget(list(device_argv), factory=python)
    try:
        return Harness(t, backend, oracles=oracles or KINDS,
                       wall_limit=REPLAY_WALL_LIMIT).execute(data).finding
    finally:
        t.close()


# ---------------------------------------------------------------------- minimising
def minimise(harness: Harness, data: bytes, finding: Finding, *, max_execs: int = 2000) -> bytes:
    """Delta debugging over commands, then over each command's bytes: the smallest input
    that still gives a finding of the same kind (and signature where it can)."""
    want = finding.signature

    def same(d: bytes) -> bool:
        f = harness.execute(d).finding
        return f is not None and f.kind == finding.kind and (f.signature == want or finding.kind == "hang")

    cmds = split_commands(data)
    execs = 0
    chunk = max(1, len(cmds) // 2)
    while chunk >= 1 and execs < max_execs:
        i, changed = 0, False
        while i < len(cmds) and execs < max_execs:
            trial = cmds[:i] + cmds[i + chunk:]
            execs += 1
            if trial and same(SEPARATOR.join(trial)):
                cmds, changed = trial, True
            else:
                i += chunk
        if not changed:
            chunk //= 2
    for i in range(len(cmds)):                # trailing operand bytes that do not matter
        while len(cmds[i]) > 1 and execs < max_execs:
            trial = cmds[:i] + [cmds[i][:-1]] + cmds[i + 1:]
            execs += 1
            if same(SEPARATOR.join(trial)):
                cmds = trial
            else:
                break
    return SEPARATOR.join(cmds)


# ---------------------------------------------------------------------- the fuzzing loop
def instrument_device_code(target: FuzzTarget) -> int:
    """atheris coverage for the device's Python code: its own module, the virtio core
    and transport, PCI, MSI-X, DMA, the block back end.  Returns the functions patched."""
    import atheris
    mods = {type(target.fn).__module__}
    vdev = getattr(target.fn, "vdev", None)
    if vdev is not None:
        mods.add(type(vdev).__module__)
    prefixes = ("uvirt.virtio", "uvirt.virtio.pci", "uvirt.board.pci.bus", "uvirt.board.pci.msix",
                "uvirt.board.pci.msi", "uvirt.board.dma", "uvirt.backends.block")
    n = 0
    seen = set()
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name in mods or name.startswith(prefixes)):
            continue
        for obj in list(vars(mod).values()):
            for fn in _functions(obj, name):
                if id(fn) not in seen:
                    seen.add(id(fn))
                    try:
                        atheris.instrument_func(fn)
                        n += 1
                    except Exception:
                        pass
    return n


def _functions(obj, modname: str):
    import types
    if isinstance(obj, types.FunctionType) and obj.__module__ == modname:
        yield obj
    elif isinstance(obj, type) and obj.__module__ == modname:
        for v in vars(obj).values():
            if isinstance(v, (staticmethod, classmethod)):
                v = v.__func__
            if isinstance(v, property):
                for f in (v.fget, v.fset):
                    if isinstance(f, types.FunctionType):
                        yield f
            elif isinstance(v, types.FunctionType):
                yield v


FEATURE_GROUP = 32


def _feature_sink_source(name: str, n: int) -> str:
    lines = [f"def {name}(k):"]
    for i in range(n):
        lines.append(f"    if k == {i}:\n        return {i}")
    lines.append("    return -1")
    return "\n".join(lines)


class FeatureFeedback:
    """Virtio-level features as libFuzzer edges: each new (feature) hashes to one of
    ``n`` branches of instrumented functions, so reaching it is new coverage.  The
    branches are spread over functions of ``FEATURE_GROUP`` each: atheris instruments
    one function of 1,024 branches in about 7 s of CPU, 32 of 32 in a fraction of it
    (measured here), and every -fork worker pays it at start."""

    def __init__(self, n: int = 1024) -> None:
        import atheris
        ns: dict = {}
        groups = (n + FEATURE_GROUP - 1) // FEATURE_GROUP
        src = "\n".join(_feature_sink_source(f"feature_edge_{g}", FEATURE_GROUP) for g in range(groups))
        exec(compile(src, "<uvirt-fuzz-features>", "exec"), ns)
        self.edges = [atheris.instrument_func(ns[f"feature_edge_{g}"]) for g in range(groups)]
        self.n = groups * FEATURE_GROUP
        self._slots: dict = {}             # feature -> (edge function, branch): hashed once

    def feed(self, feats: tuple) -> None:
        slots = self._slots
        for f in feats:
            slot = slots.get(f)
            if slot is None:
                k = int.from_bytes(hashlib.blake2s(repr(f).encode(), digest_size=4).digest(), "little") % self.n
                slot = slots[f] = (self.edges[k // FEATURE_GROUP], k % FEATURE_GROUP)
            slot[0](slot[1])


@dataclass
class FuzzConfig:
    device_argv: list
    backend: str = "guest"
    seconds: float | None = None
    runs: int | None = None
    jobs: int = 1
    corpus: str | None = None
    dict_path: str | None = None
    seed: int | None = None
    out: str = "uvirt-findings"
    oracles: tuple = KINDS
    budget: float = 1.0
    stop_on_first: bool = False
    python: str | None = None              # MODULE:CALLABLE of a user's device
    libfuzzer_args: list = field(default_factory=list)


def fuzz(cfg: FuzzConfig, *, log=sys.stderr, worker_argv: list[str] | None = None) -> int:
    """The atheris loop; exits the process (libFuzzer never returns): status 0 without
    findings, 1 with.  ``worker_argv``: run as a -fork worker (``worker``) with the
    argv libFuzzer's parent gave it."""
    import atheris
    # the board backend needs no CPU: without one a restore skips the CPU context and
    # the TLB (the reproducers are written from the operations, not from a guest run)
    target = FuzzTarget(cfg.device_argv, factory=cfg.python, cpu=cfg.backend == "guest")
    harness = Harness(target, cfg.backend, oracles=cfg.oracles, budget=cfg.budget)
    n_instr = instrument_device_code(target)
    feedback = FeatureFeedback()
    stats = Stats()
    os.makedirs(cfg.out, exist_ok=True)
    deadline = None if cfg.seconds is None else stats.started + cfg.seconds
    next_report = [stats.started + 2.0]
    print(f"uvirt fuzz: {target.name} at {_bdf(target.fn.devfn)}, backend {cfg.backend}, "
          f"{len(target.layout.bars)} BARs, {len(target.layout.queues)} queues, "
          f"{n_instr} functions instrumented, oracles: {', '.join(sorted(harness.oracles))}",
          file=log, flush=True)

    shared = _SharedFindings(cfg.out) if worker_argv is not None else None
    # a -fork parent's merge step runs inputs only for their coverage: no findings there
    merging = worker_argv is not None and any(a.startswith("-merge_inner") for a in worker_argv)

    def finish(code: int) -> None:
        _summary(stats, cfg, target, log)
        log.flush()
        sys.stdout.flush()
        os._exit(code)

    def one_input(data: bytes) -> None:
        ex = harness.execute(data)
        stats.execs += 1
        feedback.feed(ex.features)
        stats.features.update(ex.features)
        f = None if merging else ex.finding
        if f is not None and f.signature not in stats.findings and shared is not None:
            if not shared.claim(f.signature):     # another worker has this one already
                stats.findings[f.signature] = (f, data, [])
                f = None
        if f is not None and f.signature not in stats.findings:
            small = minimise(harness, data, f, max_execs=30 if f.kind == "hang" else 2000)
            ex2 = harness.execute(small)
            f2 = ex2.finding if ex2.finding is not None and ex2.finding.kind == f.kind else f
            paths = write_reproducers(harness, small, f2, cfg.out, cfg.device_argv, cfg.python)
            stats.findings[f.signature] = (f2, small, paths)
            print(f"\nuvirt fuzz: FINDING {f2.kind}: {f2.detail}\n  reproducers: "
                  + ", ".join(paths), file=log, flush=True)
            if cfg.stop_on_first:
                finish(1)
        now = time.monotonic()
        if now >= next_report[0]:
            next_report[0] = now + 2.0
            el = now - stats.started
            print(f"uvirt fuzz: {stats.execs} execs, {stats.execs / el:.0f}/s, "
                  f"{len(stats.features)} virtio features, {len(stats.findings)} findings, {el:.0f} s",
                  file=log, flush=True)
        if (deadline is not None and now >= deadline) or (cfg.runs is not None and stats.execs >= cfg.runs):
            finish(1 if stats.findings else 0)

    if worker_argv is not None:           # a libFuzzer -fork worker: its parent gave the flags
        argv = list(worker_argv)
    else:
        corpus = cfg.corpus or os.path.join(cfg.out, "corpus")
        os.makedirs(corpus, exist_ok=True)
        argv = [sys.argv[0], *libfuzzer_flags(cfg), corpus, write_all_seeds(cfg, target, log)]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
    return 0


def last_resort_timeout(budget: float) -> int:
    """libFuzzer's ``-timeout`` (wall clock, whole seconds): only for what neither budget
    sees (a guest halted with interrupts enabled), so long enough that no input within
    its budgets reaches it on a loaded machine -- a finding's minimisation runs inside
    one libFuzzer input, up to 30 hang trials of ``budget`` CPU seconds each."""
    return max(120, int(budget * 100))


def libfuzzer_flags(cfg: FuzzConfig) -> list[str]:
    """The libFuzzer flags of a run (a -fork parent hands them on to its workers)."""
    argv = ["-rss_limit_mb=4096", f"-timeout={last_resort_timeout(cfg.budget)}",
            "-max_len=4096", "-len_control=20"]
    if cfg.seed is not None:
        argv.append(f"-seed={cfg.seed}")
    if cfg.dict_path:
        argv.append(f"-dict={os.path.abspath(cfg.dict_path)}")
    return argv + [f"-artifact_prefix={os.path.join(os.path.abspath(cfg.out), '')}", *cfg.libfuzzer_args]


def write_all_seeds(cfg: FuzzConfig, target: FuzzTarget, log) -> str:
    """The built-in seeds and those of the bundled guest programs, in ``OUT/seeds``."""
    seed_dir = write_seeds(os.path.join(cfg.out, "seeds"))
    if cfg.python is None:
        from uvirt.fuzz.seeds import write_program_seeds
        n = write_program_seeds(target, cfg.device_argv, seed_dir, log=log)
        print(f"uvirt fuzz: {n} seeds from the bundled guest programs that drive {target.name}",
              file=log, flush=True)
    return seed_dir


# ---------------------------------------------------------------------- --jobs: libFuzzer's -fork
WORKER_SCRIPT = """#!{python}
# a libFuzzer -fork worker of `uvirt fuzz --jobs` (libFuzzer runs argv[0] with its flags)
import sys
from uvirt.fuzz.engine import worker
worker({config!r}, sys.argv)
"""


class _SharedFindings:
    """The -fork workers' common list of finding signatures (one file each in
    ``OUT/fork/found/``, created exclusively): the first worker to meet a bug minimises
    it and writes its reproducers, the others go on fuzzing."""

    def __init__(self, out: str) -> None:
        self.dir = os.path.join(out, "fork", "found")
        os.makedirs(self.dir, exist_ok=True)

    def claim(self, signature: str) -> bool:
        path = os.path.join(self.dir, hashlib.sha1(signature.encode()).hexdigest())
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(signature + "\n")
        return True


def worker(config_path: str, argv: list[str]) -> None:
    """Entry point of a -fork worker: the run's configuration from the parent's file,
    libFuzzer's flags and corpus directories from ``argv``."""
    import json
    with open(config_path) as f:
        cfg = FuzzConfig(**json.load(f))
    fuzz(cfg, worker_argv=argv)


def fork(cfg: FuzzConfig, *, log=sys.stderr) -> int:
    """``--jobs N`` is libFuzzer's ``-fork=N``: N worker processes at a time, each on a
    subset of the corpus for a while (libFuzzer's jobs grow from 1 s to 300 s), their new
    inputs merged into the corpus directory by the parent, the run's total bounded by
    ``-max_total_time``/``-runs``.  Findings are written by the workers into ``--out`` as
    in a single process; a worker that dies (a host crash) leaves libFuzzer's
    ``crash-*`` artifact there and the others go on (``-ignore_crashes=1``), unless
    ``--stop-on-first``.  libFuzzer runs ``argv[0]`` with its own flags only, so the
    worker is a small script in ``OUT/fork/`` that reads this run's configuration."""
    import dataclasses
    import json
    import re
    import subprocess
    out = os.path.abspath(cfg.out)
    os.makedirs(out, exist_ok=True)
    cfg = dataclasses.replace(cfg, out=out)
    target = FuzzTarget(cfg.device_argv, factory=cfg.python)
    name = target.name
    seed_dir = write_all_seeds(cfg, target, log)
    target.close()
    work = os.path.join(out, "fork")
    import shutil
    shutil.rmtree(os.path.join(work, "found"), ignore_errors=True)
    os.makedirs(work, exist_ok=True)
    config = os.path.join(work, "worker.json")
    with open(config, "w") as f:
        json.dump(dataclasses.asdict(dataclasses.replace(cfg, seconds=None, runs=None, jobs=1, corpus=None)), f)
    script = os.path.join(work, "uvirt-fuzz-worker")
    with open(script, "w") as f:
        f.write(WORKER_SCRIPT.format(python=sys.executable, config=config))
    os.chmod(script, 0o755)
    corpus = os.path.abspath(cfg.corpus or os.path.join(out, "corpus"))
    os.makedirs(corpus, exist_ok=True)
    argv = [script, f"-fork={cfg.jobs}", *libfuzzer_flags(cfg)]
    if not cfg.stop_on_first:
        argv.append("-ignore_crashes=1")
    if cfg.seconds is not None:
        argv.append(f"-max_total_time={max(1, round(cfg.seconds))}")
    if cfg.runs is not None:
        argv.append(f"-runs={cfg.runs}")
    argv += [corpus, seed_dir]
    before = set(os.listdir(out))
    print(f"uvirt fuzz: {name}, backend {cfg.backend}, --jobs {cfg.jobs}: libFuzzer -fork={cfg.jobs} "
          f"(workers' logs in /tmp/libFuzzerTemp.FuzzWithFork*), corpus {corpus}", file=log, flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            errors="replace")
    last = ""
    try:
        for line in proc.stderr:
            parent = re.match(r"#\d+: cov:", line)
            if parent or line.startswith("INFO: -fork") or "ERROR" in line or "FINDING" in line:
                print(line.rstrip("\n"), file=log, flush=True)
            if parent:
                last = line
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        code = proc.wait()
    el = max(time.monotonic() - started, 1e-9)
    m = re.match(r"#(\d+):", last)
    execs = int(m.group(1)) if m else 0
    new = sorted(set(os.listdir(out)) - before)
    found = [f for f in new if f.endswith(".bin") or f.startswith("crash-")]
    print(f"\nuvirt fuzz summary: {name}, backend {cfg.backend}, {cfg.jobs} workers (libFuzzer "
          f"-fork={cfg.jobs}): {execs} executions in {el:.1f} s ({execs / el:.0f}/s), corpus "
          f"{len(os.listdir(corpus))} inputs, {len(found)} findings", file=log)
    for f in found:
        print(f"  {os.path.join(out, f)}", file=log)
    log.flush()
    return 1 if found or code not in (0,) else 0


def seeds() -> list[bytes]:
    """What a driver does, as inputs to start from: a request, a request waited for and
    its used index read, a driver reload followed by a request, an ISR read."""
    from uvirt.fuzz.ops import OpKind, encode
    chain = encode(OpKind.CHAIN, bytes([0, 1, 0, 0, 0x49, 0, 0, 0]))
    used = encode(OpKind.USED_READ, b"\0")
    wait = encode(OpKind.WAIT, b"\x10\0")
    isr = encode(OpKind.IO_READ, bytes([0, 0, 0x13, 0, 0, 0]))
    reload = encode(OpKind.RESET, b"\x01")
    return [chain, SEPARATOR.join([chain, wait, used]), SEPARATOR.join([reload, chain, used]),
            SEPARATOR.join([chain, isr])]


def write_seeds(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    for data in seeds():
        with open(os.path.join(path, hashlib.sha1(data).hexdigest()), "wb") as f:
            f.write(data)
    return path


def _bdf(devfn: int) -> str:
    return f"00:{devfn >> 3:02x}.{devfn & 7}"


def _summary(stats: Stats, cfg: FuzzConfig, target: FuzzTarget, log) -> None:
    el = max(time.monotonic() - stats.started, 1e-9)
    print(f"\nuvirt fuzz summary: {target.name}, backend {cfg.backend}: {stats.execs} executions "
          f"in {el:.1f} s ({stats.execs / el:.0f}/s), {len(stats.features)} virtio features, "
          f"{len(stats.findings)} distinct findings", file=log)
    for sig, (f, data, paths) in stats.findings.items():
        print(f"  {f.kind}: {f.detail}", file=log)
        for p in paths:
            print(f"      {p}", file=log)
