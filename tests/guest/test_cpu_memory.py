"""The CPU's TLB handling (uvirt/cpu/tlb.py) and the unmapped-access hooks bounded to
the gaps (uc_memory._GapHooks): invisible to the guest, compared with QEMU 7.2."""

import ctypes
import threading
import time

import pytest

from uvirt.options import parse_argv
from uvirt.launch.runner import build_machine
from uvirt.testing.guest import comparable, run_uvirt
from uvirt.testing.qemu import BASE_ARGS, DATA_DIR, strip_header

CODEPG, DATAPG, FRESHPG = 0x300, 0x301, 0x302      # page numbers used by cpu_memory.S


def _machine(image, tmp_path, *extra):
    con = tmp_path / "con.txt"
    b = build_machine(parse_argv([*BASE_ARGS, *extra, "-debugcon", f"file:{con}", "-kernel", str(image)]))
    return b.machine, con


def test_cpu_memory_program_passes_and_matches_the_stored_qemu_transcript(firmware):
    res = run_uvirt(firmware("cpu_memory"))
    assert res.exit_code == 1, res.debugcon
    assert "SUMMARY: 26 tests, 0 failures" in res.debugcon, res.debugcon
    ref = strip_header((DATA_DIR / "cpu_memory.txt").read_text())
    assert comparable(res.debugcon) == comparable(ref)


@pytest.mark.qemu
def test_cpu_memory_equals_live_qemu(firmware, qemu):
    image = firmware("cpu_memory")
    ref = qemu(image)
    res = run_uvirt(image)
    assert (res.exit_code, comparable(res.debugcon)) == (ref.exit_code, comparable(ref.debugcon))


def test_tlb_follows_paging_and_tracks_code_pages(firmware, tmp_path):
    m, con = _machine(firmware("cpu_memory"), tmp_path)
    try:
        stop = m.run(timeout=30)
        assert stop.exit_code == 1, con.read_text()
        t = m.tlb
        # handed to Unicorn's MMU at CR0.PG=1, taken back at the stop for int 0x80
        assert t.switches == 2 and not t.paging
        assert CODEPG in t.exec_pages and FRESHPG in t.exec_pages
        assert DATAPG not in t.exec_pages                # stores there took the fast path
        assert not t.may_hold_code(DATAPG << 12, 0x1000)
        assert t.may_hold_code((DATAPG << 12) - 2, 4)    # straddles into the code page
    finally:
        m.close()


def test_host_writes_to_data_pages_do_not_stop_the_cpu(firmware, tmp_path):
    """Invalidating translated code is posted to the CPU thread (a stop) only where code
    can exist: a shared region or DMA buffer the guest never ran code from costs nothing."""
    m, con = _machine(firmware("cpu_memory"), tmp_path)
    try:
        m.run(timeout=30)
        posted = []
        m.memory.cpu_thread, m.memory.post_to_cpu = -1, posted.append    # as if running
        m.memory.invalidate_code(DATAPG << 12, 0x1000)
        assert posted == []
        m.memory.invalidate_code(CODEPG << 12, 16)
        assert len(posted) == 1
    finally:
        m.memory.cpu_thread = None
        m.close()


def test_unmapped_hooks_cover_everything_but_ram(firmware, tmp_path):
    """Any memory hook whose range includes a page keeps every store to it on Unicorn's
    slow path: while the guest runs, the unmapped-access hooks cover all but the RAM
    mappings (guest RAM, regions), after every commit (BARs moved by firmware and guest,
    reads-zero pages).  Commits between runs only add hooks where RAM left (a hook may
    then still cover RAM that moved in); the next run starts by making them exact."""
    m, con = _machine(firmware("memregion_modern"), tmp_path, "-device", "virtio-rng-pci,memory-regions=64K:16K")
    try:
        def check(exact):
            spans = sorted((s, s + n) for s, n, kind in m.uc_memory.mapped_spans if kind == "ram")
            gaps = m.uc_memory.unmapped_hook_ranges
            assert all(a[1] <= b[0] for a, b in zip(gaps, gaps[1:]))     # hooks never overlap
            pos = 0
            for start, end in sorted(spans + gaps):
                if exact:                        # a partition of the 32-bit space
                    assert start == pos, (hex(start), hex(pos))
                else:                            # every unmapped byte hooked
                    assert start <= pos, (hex(start), hex(pos))
                pos = max(pos, end)
            assert pos == 1 << 32
        check(exact=False)
        m.uc_memory.settle()
        check(exact=True)
        fn = next(f for f in m.pci.functions.values() if getattr(f, "vdev", None) is not None)
        bar = next(b for b in fn.bars if b is not None and b.region.name.endswith("-shm"))
        home = fn.bar_addr[bar.index]
        reg = fn.bar_reg(bar.index)
        assert any(kind == "ram" and s == home for s, _, kind in m.uc_memory.mapped_spans)
        for addr in (0xE0000000, 0xE0100000, 0xE0000000, home):   # host moves, between runs
            m.pci.config_write(0, fn.devfn, reg, 4, addr)
            check(exact=False)
        assert fn.bar_addr[bar.index] == home
        assert m.run(timeout=30).exit_code == 1, con.read_text()
        check(exact=True)
    finally:
        m.close()


def test_closing_gives_a_users_cpu_back_unchanged(firmware, tmp_path):
    from unicorn import UC_ARCH_X86, UC_MODE_32, Uc
    from uvirt.cpu.machine import Machine
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    m = Machine(uc=uc)
    m.close()
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, bytes.fromhex("c7050020000078563412f4"))   # mov [0x2000], imm; hlt
    uc.mem_map(0x2000, 0x1000)
    uc.emu_start(0x1000, 0x100B)
    assert uc.mem_read(0x2000, 4) == bytes.fromhex("78563412")
    from uvirt.cpu import exits as cpu_exits
    flag = cpu_exits._engine_address(uc) + cpu_exits.flag_offset()
    assert ctypes.string_at(flag, 1) == b"\x00"        # Unicorn's per-access stop checks kept
    assert m.exits is None                               # (a user's hooks may rely on them)


def test_own_cpu_stops_at_block_starts(monkeypatch):
    """A new CPU is switched to block-start stops without a flush (it has translated
    nothing); once it has run, switching flushes, so no block keeps the old checks."""
    from unicorn import Uc
    from uvirt.cpu import exits as cpu_exits
    from uvirt.cpu.machine import Machine
    flushes = []
    real = Uc.ctl_flush_tb
    monkeypatch.setattr(Uc, "ctl_flush_tb", lambda uc: (flushes.append(uc), real(uc)))
    m = Machine()
    try:
        assert m.exits is not None and m.exits.on and not m.memory.replay.armed
        flag = cpu_exits._engine_address(m.uc) + cpu_exits.flag_offset()
        assert ctypes.string_at(flag, 1) == b"\x01" and flushes == []
        m._exact_stops(True)
        assert ctypes.string_at(flag, 1) == b"\x00" and flushes == [m.uc]
        m._exact_stops(False)
        assert m.exits.on and flushes == [m.uc, m.uc]
    finally:
        m.close()


def test_a_host_thread_writing_a_region_meets_a_running_guest(firmware, tmp_path):
    """The guest spins on a mailbox in a region; the host writes it from another thread.
    No code lives there, so the write reaches the guest without stopping the CPU."""
    m, con = _machine(firmware("memregion_legacy", {"HANDSHAKE": 1}), tmp_path,
                      "-device", "virtio-rng-pci,disable-modern=on,memory-regions=64K:16K")
    posts = []                      # code invalidations handed to the CPU thread (a stop each);
    real = m.memory.post_to_cpu     # PIT ticks may stop it too, they are not counted here
    m.memory.post_to_cpu = lambda fn: (posts.append(fn), real(fn))
    try:
        fn = [f for f in m.pci.functions.values() if getattr(f, "regions", None)][0]
        r1 = fn.regions[1][1]
        done = threading.Event()

        def host():
            ok = r1.wait_for(lambda v: int.from_bytes(v[0x3FFC:0x4000], "little") == 0x59444552, timeout=50)
            if ok:
                r1.write(0x3FFC, (0x54534F48).to_bytes(4, "little"))
            done.set()

        t = threading.Thread(target=host)
        t.start()
        stop = m.run(timeout=60)
        t.join()
        text = con.read_text()
        assert "PASS: the host answered in the region while the guest ran" in text, text
        assert stop.exit_code == 1, text
        assert posts == []
    finally:
        m.close()


# --------------------------------------------------------------------------- stops
# uvirt/cpu/exits.py: Unicorn abandons an instruction when a stop is pending after any of
# its memory accesses and runs it again; a stop from another thread landing after a
# read-modify-write's store made it count twice.  Stops now land at block starts.

STOP_FLAG = 0x200000          # guest RAM the host sets when the storm is over


def _stormed_run(m, kicks=2000, period=0.00002):
    """Run ``m`` (then close it) while another thread stops the CPU ``kicks`` times, as
    timer ticks and device threads do, then sets STOP_FLAG for the guest to finish."""
    def storm():
        for _ in range(kicks):
            m.call_soon_threadsafe(lambda: None)
            time.sleep(period)
        m.memory.guest.write_u32(STOP_FLAG, 1)

    t = threading.Thread(target=storm)
    t.start()
    try:
        return m.run(timeout=120)
    finally:
        t.join()
        m.close()


def _storm_guest(tmp_path, firmware, body: str):
    """``body`` runs until STOP_FLAG is set; ECX counts its rounds.  Prints the counter
    and the rounds."""
    src = tmp_path / "storm.S"
    src.write_text(f""".include "uvirt.inc"
counter: .long 0
main:
    xor ecx, ecx
storm_loop:
{body}
    inc ecx
    cmp dword ptr [{STOP_FLAG}], 0
    je storm_loop
    PUTHEX32 [counter]
    PUTC ' '
    PUTHEX32 ecx
    call put_nl
    ret
""")
    return firmware(src)


def _two_numbers(text: str) -> tuple[int, int]:
    a, b = text.split()[-2:]
    return int(a, 16), int(b, 16)


def test_cpu_exits_flag_is_found_in_the_pinned_unicorn():
    from uvirt.cpu import exits as cpu_exits
    assert cpu_exits.flag_offset() is not None
    assert cpu_exits._stop_effect(cpu_exits.flag_offset()) == 0x1234


def test_read_modify_writes_count_once_while_other_threads_stop_the_cpu(firmware, tmp_path):
    image = _storm_guest(tmp_path, firmware, "    inc dword ptr [counter]")
    m, con = _machine(image, tmp_path)
    stop = _stormed_run(m)
    text = con.read_text()
    assert stop.exit_code == 1, text
    counter, rounds = _two_numbers(text)
    assert counter == rounds, text


class _ReadCounter:
    def __init__(self):
        self.reads = 0

    def read(self, offset, size):
        self.reads += 1
        return self.reads

    def write(self, offset, size, value):
        pass


def test_mmio_reads_happen_once_while_other_threads_stop_the_cpu(firmware, tmp_path):
    """No MMIO access is repeated under a stop storm: nothing is restarted any more, and
    ReplayGuard is disarmed (with the guard disarmed but Unicorn's per-access checks
    still compiled in, reads would repeat; the guard's own rare gap hardly ever shows
    here, so this does not measure it)."""
    from uvirt.board.memory.regions import MmioRegion
    image = _storm_guest(tmp_path, firmware, "    mov eax, [0xe0000000]")
    m, con = _machine(image, tmp_path)
    dev = _ReadCounter()
    m.memory.add(MmioRegion("counter", 0x1000, dev, valid_sizes=(4,)), 0xE0000000, priority=1)
    m.memory.commit()
    stop = _stormed_run(m)
    text = con.read_text()
    assert stop.exit_code == 1, text
    assert dev.reads == _two_numbers(text)[1], (dev.reads, text)


def test_unmapping_a_region_leaves_its_pages_data_pages(firmware, tmp_path):
    """Unicorn's mem_unmap looks the region's first page up through the TLB as an
    instruction fetch, to find the translated code to drop (uc_invalidate_tb).  That
    lookup is no fetch by the guest: BAR moves between runs leave the region's pages
    data pages (stores on the fast path, host writes asking nobody to drop code)."""
    m, con = _machine(firmware("memregion_modern"), tmp_path, "-device", "virtio-rng-pci,memory-regions=64K:16K")
    try:
        fn = next(f for f in m.pci.functions.values() if getattr(f, "vdev", None) is not None)
        bar = next(b for b in fn.bars if b is not None and b.region.name.endswith("-shm"))
        home, reg, t = fn.bar_addr[bar.index], fn.bar_reg(bar.index), m.tlb
        fills = t.fills
        for addr in (0xE0000000, 0xE0100000, home):
            m.pci.config_write(0, fn.devfn, reg, 4, addr)
        assert t.fills >= fills + 3                      # each unmap looked its page up
        for addr in (0xE0000000, 0xE0100000, home):
            assert not t.may_hold_code(addr, bar.region.size), hex(addr)
        assert m.run(timeout=30).exit_code == 1, con.read_text()
    finally:
        m.close()


def test_an_unmapped_region_takes_its_translated_code_along():
    """Code run from a region, the region unmapped (mem_unmap's TLB lookup answered by
    the fill hook, above), another region with other code placed at the same address:
    the guest runs the new code."""
    from unicorn.x86_const import UC_X86_REG_EAX
    from uvirt.board.memory.regions import RamRegion
    from uvirt.cpu.machine import Machine
    m = Machine()
    try:
        base, mov_eax = 0xE0000000, bytes.fromhex("b8")          # mov eax, imm32
        old, new = RamRegion("old-code", 0x1000), RamRegion("new-code", 0x1000)
        old.buffer.view[:5] = mov_eax + (0xA).to_bytes(4, "little")
        new.buffer.view[:5] = mov_eax + (0xB).to_bytes(4, "little")
        p = m.memory.add(old, base)
        m.memory.commit()
        m.uc.emu_start(base, base + 5)
        assert m.uc.reg_read(UC_X86_REG_EAX) == 0xA and base >> 12 in m.tlb.exec_pages
        p.set_enabled(False)
        m.memory.commit()
        m.memory.add(new, base)
        m.memory.commit()
        m.uc.emu_start(base, base + 5)
        assert m.uc.reg_read(UC_X86_REG_EAX) == 0xB
    finally:
        m.close()
