"""The fuzzer end to end: oracles (each a named finding kind) on the planted-bug device
family, the minimiser, the reproducers (qtest trace replayed on uvirt, guest program,
pytest test), ``--reproduce``, and ``uvirt fuzz`` finding every planted bug with a fixed
seed inside a time limit (seconds each)."""

import os
import subprocess
import sys

import pytest

from uvirt.fuzz import planted
from uvirt.fuzz.engine import Harness, minimise, replay
from uvirt.fuzz.oracles import KINDS
from uvirt.fuzz.ops import SEPARATOR, OpKind, encode
from uvirt.fuzz.reproducers import write_reproducers
from uvirt.fuzz.target import FuzzTarget

CHAIN = encode(OpKind.CHAIN, bytes([0, 1, 0, 0, 0x01, 0, 0, 0]))       # 65-byte header, 1 writable byte
#: one input per planted bug that reaches it
TRIGGERS = {
    "loop": encode(OpKind.CHAIN, bytes([0, 1, 0, 0, 1, 0, 1, 0])),               # twist 1: loop
    "off_by_one": CHAIN,
    "unchecked_addr": encode(OpKind.CHAIN, bytes([0, 1, 0, 0, 1, 0, 3, 0])),     # header outside RAM
    "reset_state": SEPARATOR.join([encode(OpKind.RESET, b"\x02"), CHAIN]),
    "reentrancy": encode(OpKind.CHAIN, bytes([0, 1, 0, 0, 1, 0, 5, 0])),         # status into a BAR
}


def _uvirt(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "uvirt", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module", params=sorted(TRIGGERS) + ["clean"])
def planted_target(request):
    t = FuzzTarget([], factory=f"uvirt.fuzz.planted:{request.param}")
    yield request.param, t
    t.close()


@pytest.mark.parametrize("backend", ["board", "guest"])
def test_each_planted_bug_is_its_named_finding(planted_target, backend):
    bug, t = planted_target
    h = Harness(t, backend, budget=1.0, oracles=[k for k in KINDS if k != "dma-into-own-registers"])
    if bug == "clean":
        for data in TRIGGERS.values():
            assert h.execute(data).finding is None
        # a buffer inside its own BAR: the request is served as device work (a bottom
        # half), whose DMA then writes the device's registers
        f = Harness(t, backend).execute(TRIGGERS["reentrancy"]).finding
        assert f is not None and f.kind == "dma-into-own-registers"
        return
    finding = h.execute(TRIGGERS[bug]).finding
    assert finding is not None and finding.kind == planted.EXPECTED[bug], finding
    # the snapshot makes the next input independent of this one
    assert h.execute(encode(OpKind.WAIT)).finding is None


def test_minimiser_keeps_only_what_the_finding_needs():
    t = FuzzTarget([], factory="uvirt.fuzz.planted:off_by_one")
    h = Harness(t, "board")
    noise = [encode(OpKind.IO_READ, bytes([0, 0, 0x13, 0, 0, 0])), encode(OpKind.WAIT, b"\x01\x00"),
             encode(OpKind.CFG_READ, b"\x02\x00")]
    data = SEPARATOR.join(noise + [CHAIN] + noise)
    finding = h.execute(data).finding
    small = minimise(h, data, finding)
    assert len(small) < len(data) and h.execute(small).finding.kind == "dma-outside-buffer"
    assert SEPARATOR not in small            # one command is enough
    t.close()


@pytest.mark.parametrize("device", ["blk", "gpu"])
def test_reproducers_of_a_builtin_device(tmp_path, device):
    """virtio-blk and virtio-gpu serve a request notified before DRIVER_OK, as QEMU does
    (the strict oracle reports it): the qtest trace replays on uvirt, the guest program
    runs to PASS, the pytest test fails while the behaviour is there.  virtio-gpu is
    modern-only: its set-up and notify go through the modern transport."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(64 << 10))
    dev = (["-drive", f"file={disk},format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0"]
           if device == "blk" else ["-device", "virtio-gpu-pci"])
    t = FuzzTarget(dev)
    h = Harness(t, "guest")
    data = SEPARATOR.join([encode(OpKind.RESET, b"\x02"), CHAIN])
    finding = h.execute(data).finding
    assert finding is not None and finding.kind == "dma-before-driver-ok"
    paths = write_reproducers(h, data, finding, str(tmp_path / "out"), dev)
    t.close()
    by_ext = {os.path.splitext(p)[1]: p for p in paths}
    assert set(by_ext) == {".bin", ".qtest", ".sh", ".S", ".py"}
    trace = open(by_ext[".qtest"]).read()
    commands = trace.splitlines()
    r = subprocess.run([sys.executable, "-m", "uvirt", "run", "-machine", "pc", "-accel", "qtest",
                        "-qtest", "stdio", "-display", "none", "-nodefaults", *dev],
                       input=trace, capture_output=True, text=True, timeout=60)
    replies = [ln for ln in r.stdout.splitlines() if ln.startswith(("OK", "FAIL", "ERR"))]
    assert len(replies) == len(commands) and all(ln.startswith("OK") for ln in replies), r.stdout + r.stderr
    image = tmp_path / "repro.bin"
    assert _uvirt("asm", by_ext[".S"], "-o", str(image)).returncode == 0
    run = _uvirt("run", "-machine", "pc", "-nodefaults", "-display", "none", *dev,
                 "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-debugcon", "stdio",
                 "-kernel", str(image))
    assert "PASS" in run.stdout and run.returncode == 1, run.stdout + run.stderr
    test = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", by_ext[".py"]],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert test.returncode == 1 and "dma-before-driver-ok" in test.stdout


def test_replay_says_none_without_the_bug():
    assert replay([], TRIGGERS["loop"], python="uvirt.fuzz.planted:clean", backend="board") is None


def test_reproduce_prints_operations_and_reactions(tmp_path):
    f = tmp_path / "in.bin"
    f.write_bytes(SEPARATOR.join([CHAIN, encode(OpKind.IO_READ, bytes([0, 0, 0x13, 0, 0, 0]))]))
    r = _uvirt("fuzz", "--python", "uvirt.fuzz.planted:clean", "--reproduce", str(f))
    assert r.returncode == 0, r.stderr
    assert "queue 0 chain of 2 from desc[0], notify" in r.stdout
    assert "device: q0.used 0->1" in r.stdout and "read8 BAR0+0x13  => 0x1" in r.stdout
    assert "board backend: no finding" in r.stdout and "guest backend: no finding" in r.stdout


@pytest.mark.parametrize("bug", sorted(TRIGGERS))
def test_uvirt_fuzz_finds_the_planted_bug(tmp_path, bug):
    """A fixed seed and a time limit (CI): the guest backend finds each planted bug."""
    r = _uvirt("fuzz", "--python", f"uvirt.fuzz.planted:{bug}", "--seconds", "60", "--seed", "1",
               "--oracles", f"exception,hang,{planted.EXPECTED[bug]}",
               "--budget", "0.2", "--stop-on-first", "--out", str(tmp_path / "out"), timeout=180)
    assert r.returncode == 1, r.stderr[-2000:]
    assert f"FINDING {planted.EXPECTED[bug]}:" in r.stderr
    assert "uvirt fuzz summary" in r.stderr


def test_jobs_is_libfuzzers_fork(tmp_path):
    """--jobs 2 runs libFuzzer's -fork=2: workers on the corpus, new inputs merged into
    --corpus, the finding written to --out by the worker that met it; --stop-on-first
    makes that worker's exit end the run."""
    out, corpus = tmp_path / "out", tmp_path / "corpus"
    r = _uvirt("fuzz", "--python", "uvirt.fuzz.planted:off_by_one", "--jobs", "2", "--seconds", "60",
               "--seed", "1", "--oracles", "exception,dma-outside-buffer",
               "--stop-on-first", "--corpus", str(corpus), "--out", str(out), timeout=240)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "INFO: -fork=2: fuzzing in separate process(s)" in r.stderr
    assert "2 workers (libFuzzer -fork=2)" in r.stderr
    assert list(out.glob("dma-outside-buffer-*.bin")) and list(out.glob("test_dma_outside_buffer_*.py"))
    assert list(corpus.iterdir())             # the seeds that add coverage, merged into the corpus


def test_fuzz_usage_errors_are_one_line():
    r = _uvirt("fuzz", "--backend", "nope", "-device", "virtio-rng-pci")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    r = _uvirt("fuzz", "--seconds", "1")
    assert r.returncode == 1 and "no -device" in r.stderr
    r = _uvirt("fuzz", "--oracles", "bogus", "-device", "virtio-rng-pci")
    assert r.returncode == 1 and "unknown oracle" in r.stderr


def test_clusterfuzzlite_target_finds_the_canary(tmp_path):
    """.clusterfuzzlite/fuzz_device.py as build.sh makes it, run by libFuzzer directly."""
    from pathlib import Path
    src = Path(__file__).resolve().parents[2] / ".clusterfuzzlite" / "fuzz_device.py"
    target = tmp_path / "fuzz_planted.py"
    target.write_text(src.read_text().replace("@DEVICE@", "planted-off-by-one"))
    r = subprocess.run([sys.executable, str(target), "-runs=20000", "-seed=1"], capture_output=True,
                       text=True, timeout=180, cwd=tmp_path)
    assert r.returncode != 0 and "UvirtFinding: dma-outside-buffer" in r.stdout + r.stderr, r.stdout[-2000:]
    assert list(tmp_path.glob("crash-*"))


def test_used_length_oracle_on_its_own():
    """off_by_one also reports one byte more than it was given: with only that oracle on,
    that is what the input is."""
    t = FuzzTarget([], factory="uvirt.fuzz.planted:off_by_one")
    f = Harness(t, "board", oracles=["used-len-overflow"]).execute(CHAIN).finding
    assert f is not None and f.kind == "used-len-overflow" and "2 > 1" in f.detail
    t.close()
