"""Issue 5, shown: memory regions from guest code and from the host.

The guest programs (firmware/memregion_legacy.S, memregion_modern.S, fb_draw.S) find the
regions through the 2010 proposal's MEM_SEL/MEM_SIZE/MEM_PFN registers and through the
VIRTIO 1.2 shared-memory capabilities, size the BARs, move them, turn decode off, and
print PASS/FAIL.  The host side checks the same bytes through ``SharedMemory.view`` (the
very buffer Unicorn maps: no copy), before boot, while the guest runs, and after.
Bad input (BARs over RAM or another BAR, a 64-bit BAR above 4 GiB, odd sizes, MEM_SEL out
of range, a BAR moved under running code, a buffer dropped while mapped) has a test each.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from uvirt.errors import MemoryMapError, OptionError
from uvirt.cpu.machine import StopReason
from uvirt.options import parse_argv
from uvirt.launch.runner import build_machine
from uvirt.testing.guest import run_uvirt
from uvirt.testing.qemu import BASE_ARGS
from uvirt.virtio.pci import VirtioPci

LEGACY = "virtio-rng-pci,disable-modern=on,memory-regions=64K:16K"
TRANSITIONAL = "virtio-rng-pci,memory-regions=64K:16K"
MODERN = "virtio-rng-pci,disable-legacy=on,memory-regions=64K:16K"

GOLDEN = 0x9E3779B1
HOST_SEED, SEED0, SEED1 = 0x486F5374, 0x5EED0000, 0x5EED0001
MR_READY, MR_ANSWER = 0x59444552, 0x54534F48
STUB_OFF, MAILBOX_OFF = 0x3FD0, 0x3FFC
MOVE_ADDR = 0xE0000000


def pattern(seed: int, dwords: int) -> bytes:
    """memregion.inc's pattern: dword i = i * 0x9E3779B1 ^ seed."""
    return b"".join((((i * GOLDEN) & 0xFFFFFFFF) ^ seed).to_bytes(4, "little") for i in range(dwords))


def fails(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("FAIL")]


def assert_all_pass(text: str, min_tests: int) -> None:
    assert not fails(text), text
    summary = [ln for ln in text.splitlines() if ln.startswith("SUMMARY: ")]
    assert summary, text
    n = int(summary[0].split()[1])
    assert n >= min_tests and summary[0].endswith(" 0 failures"), text
    assert sum(ln.startswith("PASS: ") for ln in text.splitlines()) == n, text


class Booted:
    """A machine built exactly as ``uvirt run`` builds it, not yet running."""

    def __init__(self, image: Path, device: str, tmp_path: Path, *extra: str) -> None:
        self.con = tmp_path / f"con-{id(self)}.txt"
        argv = [*BASE_ARGS, "-device", device, *extra, "-debugcon", f"file:{self.con}",
                "-kernel", str(image)]
        self.machine = build_machine(parse_argv(argv)).machine
        self.fn = next(f for f in self.machine.pci.functions.values() if isinstance(f, VirtioPci))
        self.shm = [shm for _, shm in sorted(self.fn.regions, key=lambda r: r[0])]
        self.stop = None

    def run(self, timeout: float = 60):
        self.stop = self.machine.run(timeout=timeout)
        return self.stop

    @property
    def text(self) -> str:
        return self.con.read_bytes().decode("latin-1") if self.con.exists() else ""

    def close(self) -> None:
        self.machine.close()


@pytest.fixture
def boot(tmp_path):
    made: list[Booted] = []

    def make(image: Path, device: str, *extra: str) -> Booted:
        b = Booted(image, device, tmp_path, *extra)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


# --------------------------------------------------------------------------- legacy: MEM_SEL


def test_legacy_program_passes(firmware):
    r = run_uvirt(firmware("memregion_legacy"), ["-device", LEGACY])
    assert r.exit_code == 1, r.debugcon
    assert_all_pass(r.debugcon, 50)


def test_legacy_without_regions_keeps_the_standard_layout(firmware):
    """No memory-regions=: the program finds no BAR2 and the layout is the stock one
    (MEM_SEL's offset 20 is device config), so it fails loudly rather than pass."""
    r = run_uvirt(firmware("memregion_legacy"), ["-device", "virtio-rng-pci,disable-modern=on"])
    assert "FAIL: BAR2 (region 0): 64 KiB" in r.debugcon


PROGRAMS = [("memregion_legacy", LEGACY, 50), ("memregion_modern", TRANSITIONAL, 36),
            ("memregion_modern", MODERN, 36)]
PROGRAM_IDS = ["legacy-MEM_SEL", "transitional-shm-cap", "modern-shm-cap"]


@pytest.mark.parametrize("prog,device,n", PROGRAMS[1:], ids=PROGRAM_IDS[1:])
def test_modern_program_passes(prog, device, n, firmware):
    r = run_uvirt(firmware(prog), ["-device", device])
    assert r.exit_code == 1, r.debugcon
    assert_all_pass(r.debugcon, n)
    assert "shm cap @a4 id 0 len 24 bar 2 offset 0000000000000000 length 0000000000010000" in r.debugcon
    assert "shm cap @bc id 1 len 24 bar 2 offset 0000000000010000 length 0000000000004000" in r.debugcon


@pytest.mark.parametrize("prog,device,n", PROGRAMS, ids=PROGRAM_IDS)
def test_no_copy_host_before_and_guest_after(prog, device, n, firmware, boot):
    """The host writes a pattern before boot; the guest verifies it.  The guest writes
    patterns; the host reads them after the run through the same buffer."""
    b = boot(firmware(prog, {"HOST_PATTERN": 1}), device)
    r0, r1 = b.shm
    m = b.machine
    # The view is the mapped buffer itself: same address as the pointer Unicorn maps.
    for shm in (r0, r1):
        pin = ctypes.c_char.from_buffer(shm.view)
        assert ctypes.addressof(pin) == shm.buffer.address
        del pin
        assert shm.mapped_at is not None
        assert (shm.mapped_at, shm.size, "ram") in m.uc_memory.mapped_spans
    r0.view[0:0x8000] = pattern(HOST_SEED, 0x2000)          # a plain store, no API call
    assert bytes(m.uc.mem_read(r0.mapped_at, 0x8000)) == pattern(HOST_SEED, 0x2000)
    stop = b.run()
    assert stop.exit_code == 1, b.text
    assert "PASS: region 0 [0, 32K) holds the host's pattern" in b.text
    assert_all_pass(b.text, n + 1)
    assert r0.read(0, 0x8000) == pattern(HOST_SEED, 0x2000)      # left alone
    assert r0.read(0x8000, 0x8000) == pattern(SEED0, 0x2000)
    assert r1.read(0, 0x3FC0) == pattern(SEED1, 0xFF0)
    assert r1.read(0x3FC0, 8) == bytes.fromhex("11223344efbeadde")
    if prog == "memregion_legacy":
        assert r1.read(STUB_OFF, 1) == b"\x52"                  # the stub: push edx


@pytest.mark.parametrize("prog,device,n", PROGRAMS, ids=PROGRAM_IDS)
def test_host_watches_and_answers_while_the_guest_runs(prog, device, n, firmware, boot):
    b = boot(firmware(prog, {"HANDSHAKE": 1}), device)
    r0, r1 = b.shm
    seen: dict[str, object] = {}

    def host():
        ready = r1.wait_for(lambda v: int.from_bytes(v[MAILBOX_OFF:MAILBOX_OFF + 4], "little") == MR_READY,
                            timeout=50)
        seen["ready"] = ready
        # The guest is still running (spinning on the mailbox): its patterns are there.
        seen["r0"] = r0.read(0x8000, 0x8000) == pattern(SEED0, 0x2000)
        seen["r1"] = r1.read(0, 0x3FC0) == pattern(SEED1, 0xFF0)
        seen["running"] = b.machine.memory.cpu_thread is not None
        r1.write(MAILBOX_OFF, MR_ANSWER.to_bytes(4, "little"))

    t = threading.Thread(target=host)
    t.start()
    stop = b.run()
    t.join()
    assert seen == {"ready": True, "r0": True, "r1": True, "running": True}
    assert stop.exit_code == 1, b.text
    assert "PASS: the host answered in the region while the guest ran" in b.text
    assert_all_pass(b.text, n + 1)


def test_wait_for_change_sees_a_guest_write(firmware, boot):
    b = boot(firmware("memregion_legacy", {"HANDSHAKE": 1}), LEGACY)
    r1 = b.shm[1]
    got: list = []

    def host():
        got.append(r1.wait_for_change(MAILBOX_OFF, 4, timeout=50))
        r1.write(MAILBOX_OFF, MR_ANSWER.to_bytes(4, "little"))

    t = threading.Thread(target=host)
    t.start()
    b.run()
    t.join()
    assert got == [MR_READY.to_bytes(4, "little")]


@pytest.mark.parametrize("prog,device,n", PROGRAMS[:2], ids=PROGRAM_IDS[:2])
def test_on_map_follows_the_guest(prog, device, n, firmware, boot):
    """The patch's on_map: the address on every map, None on unmap, as the guest sizes,
    moves and disables the BARs."""
    b = boot(firmware(prog), device)
    calls: list = []
    b.shm[1].on_map(calls.append)
    home = b.shm[1].mapped_at
    b.run()
    assert calls[0] is None                      # sizing (decode off) unmaps first
    assert home in calls and MOVE_ADDR + (0x10000 if "modern" in prog else 0) in calls
    assert calls[-1] == b.shm[1].mapped_at
    if prog == "memregion_modern":               # the high dword set: decodes above 4 GiB
        assert any(a is not None and a >= 1 << 32 for a in calls)


# --------------------------------------------------------------------------- bad input


def test_bar_over_ram_ram_wins(firmware):
    r = run_uvirt(firmware("memregion_legacy"), ["-device", LEGACY])
    for line in ("PASS: RAM wins: the guest reads RAM", "PASS: region 1 untouched by the write to RAM",
                 "PASS: the write went to RAM"):
        assert line in r.debugcon


def test_bar_over_ram_from_the_host(firmware, boot):
    b = boot(firmware("memregion_legacy"), LEGACY)
    m, r1 = b.machine, b.shm[1]
    r1.view[0:4] = b"REGN"
    m.memory.guest.write(0x400000, b"RAM!")
    m.pci.config_write(0, b.fn.devfn, 0x1C, 4, 0x400000)
    assert r1.mapped_at == 0x400000                       # the BAR decodes there ...
    assert m.memory.lookup(0x400000).region.buffer is m.ram.buffer   # ... but RAM (priority 0) wins
    assert bytes(m.uc.mem_read(0x400000, 4)) == b"RAM!"
    m.uc.mem_write(0x400000, b"ram2")
    assert r1.read(0, 4) == b"REGN"


def test_bar_over_another_bar_last_mapped_wins(firmware, boot):
    b = boot(firmware("memregion_legacy"), LEGACY)
    m, (r0, r1) = b.machine, b.shm
    r0.view[0:4], r1.view[0:4] = b"ZERO", b"ONE!"
    dfn = b.fn.devfn
    m.pci.config_write(0, dfn, 0x18, 4, MOVE_ADDR)
    m.pci.config_write(0, dfn, 0x1C, 4, MOVE_ADDR)        # BAR3 mapped last
    assert bytes(m.uc.mem_read(MOVE_ADDR, 4)) == b"ONE!"
    assert m.memory.lookup(MOVE_ADDR + 0x4000).region is r0.region
    m.pci.config_write(0, dfn, 0x04, 2, 0x0101)           # decode off: both gone
    assert m.memory.lookup(MOVE_ADDR) is None and m.memory.read(MOVE_ADDR, 4) == 0
    assert not any(s <= MOVE_ADDR < s + n for s, n, _ in m.uc_memory.mapped_spans)
    m.pci.config_write(0, dfn, 0x04, 2, 0x0103)           # on again: both re-enabled, in BAR order
    assert m.memory.lookup(MOVE_ADDR).region is r1.region
    r = run_uvirt(firmware("memregion_legacy"), ["-device", LEGACY])
    assert "PASS: BAR3 mapped last: region 1 shows at the overlap" in r.debugcon
    assert "PASS: BAR2 moved back on top, mapped last: region 0 shows" in r.debugcon


def test_mem_sel_out_of_range_ignored_and_recorded(firmware, boot):
    b = boot(firmware("memregion_legacy"), LEGACY)
    b.run()
    assert "PASS: MEM_SEL 2 (out of range) ignored: region 1 still selected" in b.text
    errors = [d for k, d in b.machine.guest_errors if k == "mem_sel_out_of_range"]
    assert errors == ["virtio-rng: MEM_SEL 2 ignored (2 memory regions)",
                      "virtio-rng: MEM_SEL 65535 ignored (2 memory regions)"]


def test_bar_moved_under_running_code(firmware, boot):
    """Code in region 1 moves region 1's own BAR and falls through: the rest of its
    translation block runs (eax = 600d600d), the next fetch at the old address finds
    nothing and the run stops with a guest fault, exit status 2; the host is fine and
    the region's data is intact at the new address.  (The well-behaved variant, which
    jumps to the new address, passes in the main program.)"""
    b = boot(firmware("memregion_legacy", {"MOVE_UNDER_CODE": 1}), LEGACY)
    old = b.shm[1].mapped_at
    stop = b.run()
    assert stop.reason is StopReason.FAULT and stop.exit_code == 2, stop.report()
    assert "instruction fetch from unmapped memory" in stop.detail
    assert old <= stop.eip < old + 0x4000
    assert stop.regs["eax"] == 0x600D600D
    assert "UNREACHED" not in b.text
    assert b.shm[1].mapped_at == MOVE_ADDR
    assert bytes(b.machine.uc.mem_read(MOVE_ADDR + STUB_OFF, 2)) == b"\x66\xba"   # mov dx, 0xcf8: the stub
    r = run_uvirt(firmware("memregion_legacy", {"SELF_MOVE": 1}), ["-device", LEGACY])
    assert r.exit_code == 2 or "PASS: the stub continued at the new address" in r.debugcon


def test_code_in_a_region_that_moves_its_own_bar_never_crashes_the_host(firmware, boot):
    """Issue 5's bad input: the BAR moves under the code running in it.  Either the stub's
    translated block finishes and it continues at the new address (what QEMU does), or a
    stop landed right after its BAR write and the CPU resumes at the old, now unmapped,
    address: a clean guest fault.  Never a host crash."""
    b = boot(firmware("memregion_legacy", {"SELF_MOVE": 1}), LEGACY)
    stop = b.run()
    if stop.exit_code == 1:
        assert "PASS: the stub continued at the new address" in b.text
        assert_all_pass(b.text, 54)
    else:
        assert stop.exit_code == 2 and "instruction fetch from unmapped memory" in stop.detail, b.text


def test_buffer_cannot_be_dropped_while_mapped(firmware, boot):
    b = boot(firmware("memregion_legacy"), LEGACY)
    r0 = b.shm[0]
    assert r0.buffer.mapped_count == 1
    with pytest.raises(MemoryMapError, match="still mapped into the guest"):
        r0.buffer.close()
    with pytest.raises(BufferError):
        r0.buffer._mmap.close()                             # pinned: no use-after-free
    del r0
    b.shm = None
    import gc
    gc.collect()
    stop = b.run()                                          # the machine keeps it alive
    assert stop.exit_code == 1 and not fails(b.text), b.text


def test_buffer_can_be_closed_once_unmapped(firmware, tmp_path):
    b = Booted(firmware("memregion_legacy"), LEGACY, tmp_path)
    shm = b.shm[0]
    b.close()
    assert shm.buffer.mapped_count == 0
    shm.buffer.close()


@pytest.mark.parametrize("spec,word", [("48K", "0xc000"), ("1K", "0x400"), ("4M:100K", "0x19000"),
                                       ("0", "0x0")])
def test_size_not_a_power_of_two_is_a_one_line_error(spec, word):
    argv = [*BASE_ARGS, "-device", f"virtio-rng-pci,disable-modern=on,memory-regions={spec}",
            "-kernel", "/dev/null"]
    with pytest.raises(OptionError) as e:
        build_machine(parse_argv(argv))
    msg = str(e.value)
    assert "\n" not in msg and f"size {word} must be a power of two of at least 0x1000" in msg


def test_size_error_through_the_cli(tmp_path):
    r = subprocess.run([sys.executable, "-m", "uvirt", "run", *BASE_ARGS, "-device",
                        "virtio-rng-pci,disable-modern=on,memory-regions=4M:3M", "-kernel", "/dev/null"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "uvirt: -device virtio-rng-pci,disable-modern=on,memory-regions=4M:3M: memory region 1 "
        "size 0x300000 must be a power of two of at least 0x1000"]          # the option as written


@pytest.mark.parametrize("device,word", [
    ("virtio-rng-pci,disable-modern=on,memory-regions=4K:4K:4K:4K:4K", "at most 4"),
    ("virtio-rng-pci,memory-regions=4K:4K:4K:4K", "at most 3"),
])
def test_too_many_regions_is_a_clear_error(device, word):
    argv = [*BASE_ARGS, "-device", device, "-kernel", "/dev/null"]
    with pytest.raises(OptionError, match=word):
        build_machine(parse_argv(argv))


def test_64bit_bar_above_4g_is_not_mapped(firmware, boot):
    """A 64-bit BAR with its high dword set decodes above 4 GiB: nothing a 32-bit guest
    can reach, so nothing is mapped in Unicorn; no crash, host writes still work, and
    the region comes back when the high dword is cleared."""
    b = boot(firmware("memregion_modern"), TRANSITIONAL)
    m, (r0, r1) = b.machine, b.shm
    low = r0.mapped_at
    m.pci.config_write(0, b.fn.devfn, 0x1C, 4, 1)
    assert r0.mapped_at == (1 << 32) | low and r1.mapped_at == (1 << 32) | (low + 0x10000)
    assert not any(s <= low < s + n for s, n, _ in m.uc_memory.mapped_spans)
    assert m.memory.read(low, 4) == 0
    r1.write(0, b"4GiB")                            # invalidation above 4 GiB: harmless
    m.pci.config_write(0, b.fn.devfn, 0x1C, 4, 0)
    assert bytes(m.uc.mem_read(low + 0x10000, 4)) == b"4GiB"
    r = run_uvirt(firmware("memregion_modern"), ["-device", TRANSITIONAL])
    for line in ("PASS: region 1 unreachable: reads 0", "PASS: region 0 unreachable: reads 0",
                 "PASS: high dword 0 again: region 1 back, the write above 4 GiB went nowhere"):
        assert line in r.debugcon


# --------------------------------------------------------------------------- host threads


SPIN_GUEST = """
.include "uvirt.inc"
.include "virtio.inc"
main:
    mov eax, 4
    call vio_find
    mov edx, 0x1c
    call pci_read32
    and eax, 0xfffffff0
    mov esi, eax                            # region 1
    mov byte ptr [esi + 0x100], 0xb8        # mov eax, 1; ret  at +0x100
    mov dword ptr [esi + 0x101], 1
    mov byte ptr [esi + 0x105], 0xc3
    mov dword ptr [esi + 0x3ffc], 0x59444552
    mov ecx, 0xffffffff                     # bounded by the run's wall clock in practice
spin:
    lea eax, [esi + 0x100]
    call eax                                # the code the host rewrites
    cmp eax, 2
    je done
    mov ebx, [esi + 0x200]                  # the data the host hammers
    dec ecx
    jnz spin
    PUTSN "FAIL: still running the old code"
    ret
done:
    PUTSN "PASS: the host's new code ran"
    ret
"""

HOST_SIDE = """
import sys, threading, time
from uvirt.options import parse_argv
from uvirt.launch.runner import build_machine
from uvirt.testing.qemu import BASE_ARGS
image, con = sys.argv[1], sys.argv[2]
m = build_machine(parse_argv([*BASE_ARGS, "-device", "{device}", "-debugcon", "file:" + con,
                              "-kernel", image])).machine
fn = [f for f in m.pci.functions.values() if getattr(f, "regions", None)][0]
shm = fn.regions[1][1]
def host():
    assert shm.wait_for(lambda v: v[0x3ffc:0x4000] == b"REDY", 50)
    end = time.monotonic() + 0.7
    n = 0
    while time.monotonic() < end:                 # data writes under the running guest
        shm.write(0x200, n.to_bytes(4, "little"))
        n += 1
    shm.write(0x101, (2).to_bytes(4, "little"))   # new code under the running guest
t = threading.Thread(target=host)
t.start()
stop = m.run(timeout=90)
t.join()
print(stop.summary())
m.close()
"""


@pytest.mark.parametrize("device", [LEGACY, TRANSITIONAL])
def test_host_writes_while_the_guest_runs(device, firmware, tmp_path):
    """SharedMemory.write from a host thread while the guest runs.  It drops translated
    code for the range it wrote; Unicorn's uc_ctl is not thread-safe, so calling it from
    the host thread under a running CPU crashed the process (SIGSEGV or "stack smashing
    detected", about one run in two).  The machine now posts the invalidation to the
    CPU thread.  In a subprocess, so a crash is a failure and not a lost worker."""
    src = tmp_path / "spin.S"
    src.write_text(SPIN_GUEST)
    image = firmware(src)
    if "disable-modern" not in device:
        # region 1 lives at BAR2 + 0x10000 on modern devices: same program, other BAR math
        src.write_text(SPIN_GUEST.replace("    mov edx, 0x1c\n    call pci_read32\n    and eax, 0xfffffff0\n",
                                          "    mov edx, 0x18\n    call pci_read32\n    and eax, 0xfffffff0\n"
                                          "    add eax, 0x10000\n"))
        image = firmware(src)
    con = tmp_path / "con.txt"
    script = HOST_SIDE.replace("{device}", device)
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", script, str(image), str(con)], capture_output=True,
                           text=True, timeout=180, cwd=Path(__file__).parents[2])
        assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
        assert "debug-exit" in r.stdout, r.stdout
        assert con.read_text().splitlines()[-1] == "PASS: the host's new code ran"


# --------------------------------------------------------------------------- virtio-fb


FB_BARS = (0xC0C0C0, 0xC0C000, 0x00C0C0, 0x00C000, 0xC000C0, 0xC00000, 0x0000C0, 0x000000)


def fb_picture(w: int, h: int):
    """fb_draw.S's test picture, computed independently."""
    from PIL import Image

    def px(x: int, y: int) -> int:
        if x < 2 or y < 2 or x >= w - 2 or y >= h - 2:
            return 0xFFFFFF
        if y * 3 < 2 * h:
            return FB_BARS[x * 8 // w]
        return (x * 256 // w) * 0x010101

    img = Image.new("RGB", (w, h))
    img.putdata([(c >> 16, (c >> 8) & 0xFF, c & 0xFF) for y in range(h) for x in range(w)
                 for c in (px(x, y),)])
    return img


@pytest.mark.parametrize("device,w,h,via", [
    ("virtio-fb-pci", 320, 240, "the shared memory capability"),
    ("virtio-fb-pci,disable-modern=on", 320, 240, "MEM_SEL / MEM_PFN"),
    ("virtio-fb-pci,disable-legacy=on,width=123,height=45", 123, 45, "the shared memory capability"),
    ("virtio-fb-pci,disable-modern=on,width=64,height=32", 64, 32, "MEM_SEL / MEM_PFN"),
], ids=["transitional", "legacy", "modern-123x45", "legacy-64x32"])
def test_fb_screenshot_matches_the_picture(device, w, h, via, firmware, tmp_path):
    from PIL import Image, ImageChops

    png = tmp_path / "shot.png"
    r = run_uvirt(firmware("fb_draw"), ["-device", device, "-screenshot", str(png)])
    assert r.exit_code == 1, r.debugcon
    assert f"-- framebuffer through {via}" in r.debugcon
    assert f"mode {w}x{h} stride {w * 4}" in r.debugcon
    assert_all_pass(r.debugcon, 13)
    shot = Image.open(png)
    assert shot.format == "PNG" and shot.mode == "RGB" and shot.size == (w, h)
    want = fb_picture(w, h)
    diff = [(x, y) for y in range(h) for x in range(w) if shot.getpixel((x, y)) != want.getpixel((x, y))]
    assert diff == [], f"{len(diff)} pixels differ, first {diff[:5]}"
    assert ImageChops.difference(shot.convert("RGB"), want).getbbox() is None


def test_fb_host_api_sees_the_guest_drawing(firmware, boot):
    """The framebuffer is the region's buffer: the device's image() reads the guest's
    stores with no copy into the device, and the flushes are counted."""
    b = boot(firmware("fb_draw"), "virtio-fb-pci")
    dev = b.machine.framebuffers[0]
    assert b.shm == [dev.fb] and dev.fb.mapped_at is not None
    b.run()
    assert dev.flushes == 2 and dev.last_rect == (10, 10, 20, 20)
    assert dev.image().tobytes() == fb_picture(320, 240).tobytes()
    assert dev.fb.read(0, 4) == b"\xff\xff\xff\x00"          # XRGB8888: B, G, R, X
    assert dev.fb.read((100 * 320 + 50) * 4, 4) == b"\x00\xc0\xc0\x00"   # bar 1: c0c000 (yellow)
