"""The README's commands as a user types them."""

import subprocess
import sys


def uvirt(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "uvirt", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_demo_runs_every_step_and_exits_zero():
    r = uvirt("demo")
    assert r.returncode == 0, r.stderr
    assert "[4/4]" in r.stdout and "Traceback" not in r.stderr
    assert "SUMMARY: 27 tests, 0 failures" in r.stdout
    assert "legacy QUEUE_NOTIFY <- 0x0000: kick queue 0" in r.stdout and "POP q0 chain head 0" in r.stdout


def test_lspci_lists_builtins_and_a_virtio_device():
    r = uvirt("lspci", "-vv", "-device", "virtio-rng-pci")
    assert r.returncode == 0, r.stderr
    assert "00:00.0 Host bridge [0600]" in r.stdout
    assert "Virtio RNG [1af4:1005]" in r.stdout and "Region 4: Memory at" in r.stdout


def test_asm_bundled_program(tmp_path):
    out = tmp_path / "g.bin"
    r = uvirt("asm", "pci_enum.S", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:4] == bytes.fromhex("02b0ad1b")


def test_unknown_command_is_a_one_line_error():
    r = uvirt("frobnicate")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "unknown command" in r.stderr
