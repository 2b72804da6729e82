"""The qtest line protocol without QEMU: every command, every reply format, every
error path, on a CPU-less pc board (uvirt.qtest.server, physmem, clock, hooks)."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from uvirt.cpu.machine import Machine
from uvirt.board.memory.regions import MmioRegion
from uvirt.board.memory import physmem
from uvirt.board.clock import VirtualClock
from uvirt.qtest.server import QtestAbort, QtestServer, glib_base64_decode, qemu_strtou64


class Session:
    def __init__(self, clock_enabled: bool = True) -> None:
        self.m = Machine(cpu=False)
        self.h = self.m.services
        self.h.gpio("/machine/i440fx/ioapic").add_in(24, self._ioapic)
        self.h.qom_paths |= {"/machine/i440fx", "/machine/i440fx/pci.0"}
        self.out: list[str] = []
        self.log = io.StringIO()
        self.seen: list[tuple[int, int]] = []
        self.srv = QtestServer(self.m.memory, self.m.io, self.h, self.out.append, log=self.log,
                               clock_enabled=clock_enabled, timer=lambda: 0.0)
        self.srv.opened()

    def _ioapic(self, n: int, level: int) -> None:
        self.seen.append((n, level))

    def __call__(self, *lines: str) -> list[str]:
        self.out.clear()
        self.srv.feed("".join(line + "\n" for line in lines).encode())
        return "".join(self.out).splitlines()


@pytest.fixture
def qt():
    s = Session()
    yield s
    s.m.close()


# ------------------------------------------------------------------ ports


def test_inb_unclaimed_port_reads_all_ones(qt):
    assert qt("inb 0x80", "inw 0x80", "inl 0x80") == ["OK 0x00ff", "OK 0xffff", "OK 0xffffffff"]


def test_inl_unaligned_unclaimed_port_is_split_and_reads_all_ones(qt):
    # address_space_read splits 0x81 into 1+2+1 aligned accesses; a CPU "in eax" would read 0.
    assert qt("inl 0x81") == ["OK 0xffffffff"]


def test_conf1_config_space_reads(qt):
    assert qt("outl 0xcf8 0x80000000", "inl 0xcfc", "inw 0xcfc", "inw 0xcfe", "inb 0xcfd") == \
        ["OK", "OK 0x12378086", "OK 0x8086", "OK 0x1237", "OK 0x0080"]


def test_outl_0xcf8_reaches_the_latch_although_0xcf9_is_another_region(qt):
    # QEMU clamps only RAM at section ends: the latch sees the full 4-byte access.
    assert qt("outl 0xcf8 0x80000800", "inl 0xcfc") == ["OK", "OK 0x70008086"]


def test_outb_value_is_truncated_to_the_access_size(qt):
    assert qt("outl 0xcf8 0x80000000", "outb 0xcf8 0x1ff", "inl 0xcf8") == ["OK", "OK", "OK 0x80000000"]


def test_port_above_0xffff_aborts(qt):
    with pytest.raises(QtestAbort, match=r"addr <= 0xffff"):
        qt("inb 0x10000")


# ------------------------------------------------------------------ memory


def test_write_read_sizes_and_formats(qt):
    assert qt("writeb 0x1000 0x1ff", "readb 0x1000") == ["OK", "OK 0x00000000000000ff"]
    assert qt("writew 0x1000 0x1234", "readw 0x1000") == ["OK", "OK 0x0000000000001234"]
    assert qt("writel 0x1000 0x12345678", "readl 0x1000") == ["OK", "OK 0x0000000012345678"]
    assert qt("writeq 0x1000 0x0123456789abcdef", "readq 0x1000") == ["OK", "OK 0x0123456789abcdef"]
    assert qt("read 0x1000 8") == ["OK 0xefcdab8967452301"]
    assert qt("b64read 0x1000 8") == ["OK 782riWdFIwE="]


def test_write_data_shorter_than_size_is_zero_filled(qt):
    assert qt("memset 0x2000 8 0xaa", "write 0x2000 4 0x1122", "read 0x2000 8") == \
        ["OK", "OK", "OK 0x11220000aaaaaaaa"]


def test_write_odd_digit_and_bad_digit_like_qemu(qt):
    # hex2nib(-1): a bad low digit makes 0xff, a bad high digit 0xf0|low
    assert qt("write 0x2000 3 0x1gz2x5", "read 0x2000 3") == ["OK", "OK 0xfff2f5"]   # QEMU 7.2 too
    assert qt("write 0x2000 2 0x12345", "read 0x2000 2") == ["OK", "OK 0x1234"]


def test_write_short_data_is_err_without_log_prefix(qt):
    assert qt("write 0x2000 4 0x") == ["ERR invalid argument size"]
    assert qt("b64write 0x2000 4 ab") == ["ERR invalid argument size"]
    assert "\nERR invalid argument size\n" in qt.log.getvalue()


def test_b64write_length_mismatch_writes_the_rest_of_the_text_as_qemu(qt):
    # QEMU decodes in place and writes SIZE bytes: 00 01 02 03 then "Aw==".
    assert qt("b64write 0x1000 8 AAECAw==", "read 0x1000 8") == ["OK", "OK 0x0001020341773d3d"]
    assert "b64write: data length mismatch (told 8, found 4)" in qt.log.getvalue()


def test_b64_round_trip_and_b64read_of_zero_bytes(qt):
    assert qt("b64write 0x3000 3 AAEC", "b64read 0x3000 3", "b64read 0x3000 0") == \
        ["OK", "OK AAEC", "OK "]


def test_memset_zero_size_is_ok_and_uses_the_low_byte(qt):
    assert qt("memset 0x1000 0 5", "memset 0x1000 2 0x1ff", "read 0x1000 2") == ["OK", "OK", "OK 0xffff"]


def test_unassigned_mmio_and_above_4g_read_zero_and_ignore_writes(qt):
    assert qt("writel 0xfebff000 0x1", "readl 0xfebff000", "readq 0x100000000",
              "read 0xe0000000 4") == ["OK", "OK 0x0000000000000000", "OK 0x0000000000000000", "OK 0x00000000"]


def test_read_across_end_of_ram_into_unassigned(qt):
    end = qt.m.ram_size
    assert qt(f"writel {end - 2:#x} 0xffffffff", f"read {end - 2:#x} 4") == ["OK", "OK 0xffff0000"]


def test_negative_address_wraps_as_strtoull(qt):
    assert qt("readb -1") == ["OK 0x0000000000000000"]


def test_read_zero_length_aborts(qt):
    with pytest.raises(QtestAbort, match=r"\(len\)"):
        qt("read 0x1000 0")


def test_huge_read_aborts_as_failed_allocation(qt):
    with pytest.raises(QtestAbort, match="failed to allocate") as e:
        qt("read 0x1000 0x100000000000")
    assert e.value.signal == signal.SIGTRAP


# ------------------------------------------------------------------ address_space_rw splitting


class Recorder:
    def __init__(self) -> None:
        self.accesses: list[tuple[str, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        self.accesses.append(("r", offset, size))
        return 0x11111111 * (offset + 1) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        self.accesses.append(("w", offset, size))


def test_readq_of_a_4_byte_region_is_two_accesses(qt):
    rec = Recorder()
    qt.m.memory.add(MmioRegion("rec", 0x100, rec, valid_sizes=(1, 2, 4)), 0xD0000000, -1)
    assert qt("readq 0xd0000000") == ["OK 0x5555555511111111"]
    assert rec.accesses == [("r", 0, 4), ("r", 4, 4)]


def test_unaligned_write_is_split_by_alignment(qt):
    rec = Recorder()
    qt.m.memory.add(MmioRegion("rec", 0x100, rec, valid_sizes=(1, 2, 4, 8)), 0xD0000000, -1)
    qt("write 0xd0000001 7 0x00112233445566")
    assert rec.accesses == [("w", 1, 1), ("w", 2, 2), ("w", 4, 4)]


def test_unaligned_region_takes_whole_accesses(qt):
    rec = Recorder()
    qt.m.memory.add(MmioRegion("rec", 0x100, rec, valid_sizes=(1, 2, 4, 8), unaligned=True, impl_max=8),
                    0xD0000000, -1)
    qt("read 0xd0000001 8")
    assert rec.accesses == [("r", 1, 8)]


def test_memory_access_size_rules():
    r = MmioRegion("x", 0x100, Recorder(), valid_sizes=(1, 2, 4))
    assert physmem.memory_access_size(r, 8, 0) == 4
    assert physmem.memory_access_size(r, 3, 0) == 2
    assert physmem.memory_access_size(r, 4, 2) == 2
    assert physmem.memory_access_size(r, 4, 0x21) == 1


# ------------------------------------------------------------------ clock


def test_clock_step_and_set(qt):
    assert qt("clock_step", "clock_step 100", "clock_set 50", "clock_set 1000", "clock_step -5") == \
        ["OK 0", "OK 100", "OK 100", "OK 1000", "OK 1000"]


def test_clock_step_without_argument_goes_to_the_next_timer(qt):
    fired = []
    t = qt.h.clock.timer(lambda: fired.append(qt.h.clock.now))
    t.mod(250)
    assert qt("clock_step") == ["OK 250"]
    assert fired == [250]
    assert qt("clock_step") == ["OK 250"]


def test_clock_warp_runs_periodic_timers_at_their_deadlines():
    c = VirtualClock()
    ticks = []

    def tick():
        ticks.append(c.now)
        t.mod(c.now + 30)
    t = c.timer(tick)
    t.mod(30)
    assert c.step(100) == 100
    assert ticks == [30, 60, 90]
    t.delete()
    assert c.deadline_ns() == -1


def test_clock_commands_are_unknown_without_accel_qtest():
    s = Session(clock_enabled=False)
    assert s("clock_step", "clock_set 5") == ["FAIL Unknown command 'clock_step'",
                                              "FAIL Unknown command 'clock_set'"]
    s.m.close()


def test_clock_step_bad_number_aborts(qt):
    with pytest.raises(QtestAbort, match=r"ret == 0"):
        qt("clock_step 0x")


# ------------------------------------------------------------------ IRQ


def test_irq_intercept_in_and_async_irq_lines(qt):
    assert qt("irq_intercept_in ioapic") == ["OK"]
    lines = qt.m.services.gpio_devices["/machine/i440fx/ioapic"].lists[0]
    qt.out.clear()
    lines.set(8, 1)
    lines.set(8, 1)
    lines.set(8, 0)
    assert "".join(qt.out) == "IRQ raise 8\nIRQ lower 8\n"
    assert qt.seen == [(8, 1), (8, 1), (8, 0)]        # the device still gets every call


def test_set_irq_in_reports_before_ok_when_intercepted(qt):
    assert qt("set_irq_in ioapic unnamed-gpio-in 1 1") == ["OK"]
    assert qt("irq_intercept_in /machine/i440fx/ioapic", "set_irq_in ioapic unnamed-gpio-in 2 1") == \
        ["OK", "IRQ raise 2", "OK"]
    assert "[S +0.000000] IRQ raise 2\n" in qt.log.getvalue()


def test_irq_intercept_errors(qt):
    assert qt("irq_intercept_in nosuch", "set_irq_in nosuch a 1 1") == \
        ["FAIL Unknown device", "FAIL Unknown device"]
    assert qt("irq_intercept_in ioapic", "irq_intercept_out ioapic", "irq_intercept_in i440fx") == \
        ["OK", "OK", "FAIL IRQ intercept already enabled"]


def test_irq_intercept_out(qt):
    outs = qt.h.gpio("/machine/unattached/device[9]").add_out(1)
    got = []
    outs.connect(0, lambda n, level: got.append(level))
    assert qt("irq_intercept_out device[9]") == ["OK"]
    qt.out.clear()
    outs.set(0, 1)
    assert qt.out == ["IRQ raise 0\n"] and got == [1]


def test_set_irq_in_bad_line_aborts(qt):
    with pytest.raises(QtestAbort, match="gpio_list->num_in"):
        qt("set_irq_in ioapic unnamed-gpio-in 30 1")


def test_irq_intercept_of_a_container_aborts(qt):
    with pytest.raises(QtestAbort, match="not an instance of type device"):
        qt("irq_intercept_in /machine")


# ------------------------------------------------------------------ other commands, errors


def test_endianness_module_load_unknown(qt):
    assert qt("endianness", "module_load accel qtest", "INB 0x80", "foo bar", " inb") == \
        ["OK little", "FAIL", "FAIL Unknown command 'INB'", "FAIL Unknown command 'foo'",
         "FAIL Unknown command ''"]


def test_extra_words_are_ignored(qt):
    assert qt("inb 0x80 extra") == ["OK 0x00ff"]


@pytest.mark.parametrize("line,assertion", [
    ("", "command"), ("inb", "words[1]"), ("outb 0x80", "words[1] && words[2]"),
    ("inb  0x80", "ret == 0"), ("inb 0x80x", "ret == 0"), ("inb 0x80\r", "ret == 0"),
    ("readb 0xzz", "ret == 0"), ("write 0x1000", "words[1] && words[2] && words[3]"),
    ("irq_intercept_in", "words[1]"), ("clock_set", "words[1]"), ("module_load x", "words[1] && words[2]"),
    ("set_irq_in ioapic x 1", "words[1] && words[2] && words[3] && words[4]"),
    ("readq 18446744073709551616", "ret == 0"),
])
def test_malformed_lines_abort_like_qemu(qt, line, assertion):
    with pytest.raises(QtestAbort) as e:
        qt(line)
    assert e.value.message == f"assertion failed: ({assertion})"
    assert e.value.signal == signal.SIGABRT


def test_partial_line_waits_and_nul_hides_the_rest(qt):
    assert qt.srv.feed(b"inb 0x8") is None and qt.out == []
    qt.srv.feed(b"0\n")
    assert qt.out == ["OK 0x00ff\n"]
    qt.out.clear()
    qt.srv.feed(b"inb\x000x80\ninb 0x80\n")          # QEMU's strchr stops at the NUL
    assert qt.out == []


def test_log_format(qt):
    qt("endianness")
    qt.srv.closed()
    assert qt.log.getvalue() == ("[I 0.000000] OPENED\n[R +0.000000] endianness\n"
                                 "[S +0.000000] OK little\n[I +0.000000] CLOSED\n")


def test_strtoull_and_base64_helpers():
    assert qemu_strtou64("0x10") == 16 and qemu_strtou64("010") == 8 and qemu_strtou64("-1") == (1 << 64) - 1
    assert qemu_strtou64("\t5") == 5
    for bad in ("", "0x", "1 ", "0x1g", "18446744073709551616"):
        with pytest.raises(ValueError):
            qemu_strtou64(bad)
    assert glib_base64_decode("AAECAw==") == b"\0\1\2\3"
    assert glib_base64_decode("AA*EC") == b"\0\1\2"[:3]
    assert glib_base64_decode("AAE") == b""


# ------------------------------------------------------------------ the process: stdio, sockets


UVIRT = [sys.executable, "-m", "uvirt", "run"]


def run_stdio(script: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(UVIRT + ["-machine", "pc,accel=qtest", "-nodefaults", "-display", "none",
                                   "-qtest", "stdio", *args], input=script.encode(),
                          capture_output=True, timeout=timeout)


def test_stdio_replay_prints_requests_and_replies_and_exits_0_at_eof():
    r = run_stdio("endianness\ninb 0x80\n")
    assert r.returncode == 0
    assert r.stdout == b"OK little\nOK 0x00ff\n"
    err = r.stderr.decode()
    assert "[R +" in err and "] inb 0x80\n" in err and "] OK 0x00ff\n" in err and "CLOSED" in err


def test_stdio_malformed_line_aborts_without_traceback():
    r = run_stdio("inb\ninb 0x80\n", "-qtest-log", "none")
    assert r.returncode == -signal.SIGABRT
    assert r.stdout == b"Bail out! ERROR: uvirt qtest: assertion failed: (words[1])\n"
    assert b"assertion failed: (words[1])" in r.stderr and b"Traceback" not in r.stderr


def test_stdio_replay_from_a_regular_file(tmp_path):
    script = tmp_path / "repro.txt"
    script.write_text("outl 0xcf8 0x80000000\ninl 0xcfc\n")
    with open(script, "rb") as f:
        r = subprocess.run(UVIRT + ["-machine", "pc,accel=qtest", "-qtest", "stdio", "-qtest-log", "none"],
                           stdin=f, capture_output=True, timeout=20)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"OK\nOK 0x12378086\n", b"")


def test_qtest_log_file(tmp_path):
    log = tmp_path / "q.log"
    r = run_stdio("outl 0xcf8 0x80000000\ninl 0xcfc\n", "-qtest-log", str(log))
    assert r.returncode == 0 and r.stderr == b""
    text = log.read_text()
    assert text.startswith("[I 0.000000] OPENED\n") and "] OK 0x12378086\n" in text


def _listen(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(1)
    s.settimeout(20)
    return s


def test_unix_socket_client_mode_and_sigterm_exit_0(tmp_path):
    qpath, mpath = str(tmp_path / "q.sock"), str(tmp_path / "m.sock")
    ql, ml = _listen(qpath), _listen(mpath)
    p = subprocess.Popen(UVIRT + ["-qtest", f"unix:{qpath}", "-qtest-log", "/dev/null",
                                  "-chardev", f"socket,path={mpath},id=char0",
                                  "-mon", "chardev=char0,mode=control", "-display", "none",
                                  "-accel", "qtest"], stderr=subprocess.PIPE)
    try:
        q, _ = ql.accept()
        m, _ = ml.accept()
        q.settimeout(10)
        m.settimeout(10)
        assert m.recv(4096).startswith(b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}')
        q.sendall(b"endianness\n")
        assert q.recv(100) == b"OK little\n"
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        assert b"Traceback" not in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
        ql.close()
        ml.close()


def test_client_disconnecting_mid_command_ends_cleanly(tmp_path):
    qpath = str(tmp_path / "q.sock")
    ql = _listen(qpath)
    p = subprocess.Popen(UVIRT + ["-qtest", f"unix:{qpath}", "-qtest-log", "none", "-accel", "qtest"],
                         stderr=subprocess.PIPE)
    try:
        q, _ = ql.accept()
        q.sendall(b"outl 0xcf8 0x8000")           # no newline: never processed
        q.close()
        assert p.wait(10) == 0
        assert p.stderr.read() == b""
    finally:
        if p.poll() is None:
            p.kill()
        ql.close()


def test_connect_failure_is_one_line_exit_1(tmp_path):
    r = subprocess.run(UVIRT + ["-qtest", f"unix:{tmp_path}/nosuch", "-accel", "qtest"],
                       capture_output=True, timeout=20)
    assert r.returncode == 1
    assert r.stderr.decode() == f"uvirt: Failed to connect to '{tmp_path}/nosuch': No such file or directory\n"


def test_qtest_with_tcg_needs_paused_cpu():
    r = subprocess.run(UVIRT + ["-qtest", "stdio"], capture_output=True, timeout=20, input=b"")
    assert r.returncode == 1 and b"add -S" in r.stderr


def test_machine_none_has_nothing_mapped():
    r = subprocess.run(UVIRT + ["-machine", "none", "-accel", "qtest", "-qtest", "stdio", "-qtest-log", "none"],
                       input=b"outl 0xcf8 0x80000000\ninl 0xcfc\nreadl 0x1000\n", capture_output=True, timeout=20)
    assert r.returncode == 0
    assert r.stdout == b"OK\nOK 0xffffffff\nOK 0x0000000000000000\n"
