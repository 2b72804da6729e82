"""The machine as a guest and a host program see it: ISA helpers, exits, resets, BAR
moves, tracing, and uvirt as a plug-in next to a user's own Unicorn hooks."""

from pathlib import Path

import pytest
from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_MODE_32, Uc

from uvirt.backends.chardev import MemoryChardev
from uvirt.cpu.machine import Machine, StopReason
from uvirt.board.memory.regions import MmioRegion, RamRegion
from uvirt.board.pci.bus import PciFunction
from uvirt.testing.guest import comparable, run_uvirt

PROGRAMS = Path(__file__).parent / "programs"


def guest(tmp_path, firmware, body: str) -> Path:
    src = tmp_path / "g.S"
    src.write_text(f'.include "uvirt.inc"\nmain:\n{body}\n    ret\n')
    return firmware(src)


@pytest.mark.qemu
def test_isa_port_behaviour_equals_qemu(firmware, qemu):
    image = firmware(PROGRAMS / "isa_ports.S")
    ref = qemu(image)
    assert comparable(run_uvirt(image).debugcon) == comparable(ref.debugcon)


@pytest.mark.qemu
@pytest.mark.parametrize("insn,value", [("out dx, al", 0x05), ("out dx, ax", 0x0102),
                                         ("out dx, eax", 0x7F)])
def test_debug_exit_status_equals_qemu(tmp_path, firmware, qemu, insn, value):
    image = guest(tmp_path, firmware, f"    mov dx, 0xf4\n    mov eax, {value}\n    {insn}")
    assert run_uvirt(image).exit_code == qemu(image).exit_code == ((value << 1) | 1) & 0xFF


def test_hlt_with_interrupts_off_ends_cleanly(tmp_path, firmware, booted):
    m, _ = booted(guest(tmp_path, firmware, "    cli\n    hlt"))
    stop = m.run(timeout=5)
    assert (stop.reason, stop.exit_code) == (StopReason.HALTED, 0)


def test_reset_control_register_requests_a_reset(tmp_path, firmware, booted):
    m, _ = booted(guest(tmp_path, firmware, "    mov dx, 0xcf9\n    mov al, 6\n    out dx, al\n"
                                            "spin:\n    jmp spin"))
    stop = m.run(timeout=5)
    assert (stop.reason, stop.exit_code) == (StopReason.RESET, 0)


def test_nothing_after_the_exit_write_is_visible(tmp_path, firmware, booted):
    # The stop lands at the end of the translation block: the rest must not print.
    m, con = booted(guest(tmp_path, firmware, "    mov al, 0\n    out 0xf4, al\n    mov al, 0x58\n"
                                              "    out 0xe9, al\n    out 0xe9, al"))
    m.run(timeout=5)
    assert "X" not in con.text


class _Broken:
    """A device model with a bug: its registers raise."""

    def reset(self) -> None:
        pass

    def read(self, offset: int, size: int) -> int:
        raise RuntimeError(f"broken read at +0x{offset:x}")

    def write(self, offset: int, size: int, value: int) -> None:
        raise RuntimeError(f"broken write at +0x{offset:x}")


@pytest.mark.parametrize("access", ["mov dword ptr [0xfe000010], eax", "mov eax, [0xfe000010]"])
def test_a_device_exception_in_an_mmio_access_reaches_the_caller(tmp_path, firmware, booted, access):
    """MMIO callbacks are called by Unicorn directly (uc_hooks.map_mmio(raw=True)) and
    guard themselves: the device's exception stops the CPU and ``run`` raises it, as
    the binding's own wrapper did (a ctypes callback would print and drop it)."""
    m, con = booted(guest(tmp_path, firmware, f"    {access}\nspin:\n    jmp spin"))
    m.memory.add(MmioRegion("broken", 0x1000, _Broken(), valid_sizes=(1, 2, 4)), 0xFE000000)
    with pytest.raises(RuntimeError, match=r"broken (read|write) at \+0x10"):
        m.run(timeout=10)


def test_a_stop_from_another_thread_finishes_before_close_takes_the_engine():
    """The watchdog (or a device thread) may ask a machine to stop just as its run ends
    and the test closes it: close() must not free the engine under that emu_stop (a
    worker crashed with SIGSEGV in emu_stop from the watchdog thread)."""
    import threading
    m = Machine()
    order, inside, release = [], threading.Event(), threading.Event()
    real_stop = m.uc.emu_stop

    def slow_stop():
        inside.set()
        release.wait()
        real_stop()
        order.append("stopped")

    m.uc.emu_stop = slow_stop
    board_close = m.board.close
    m.board.close = lambda: (order.append("closed"), board_close())
    stopper = threading.Thread(target=m._cpu_stop)
    stopper.start()
    inside.wait()
    closer = threading.Thread(target=m.close)
    closer.start()
    closer.join(0.5)                  # without the lock, close() is done by now
    release.set()
    stopper.join()
    closer.join()
    assert order == ["stopped", "closed"]
    m._cpu_stop()                     # and a stop after close() finds no engine


class ShmFunction(PciFunction):
    name = "test-shm"

    def __init__(self) -> None:
        super().__init__(vendor_id=0x1AF4, device_id=0x10F0, class_code=0x0500)
        self.shm = RamRegion("test-shm", 0x2000)
        self.register_bar(2, self.shm, mem64=True, prefetch=True)


MOVE_BAR = """
    mov eax, 0x0018            # 00:03.0
    mov edx, 0x18              # BAR2 low
    call pci_read32
    and eax, 0xfffffff0
    mov ebx, eax
    PUTS "OLD "
    PUTHEX32 [ebx]
    call put_nl
    mov eax, 0x0018
    mov edx, 0x18
    mov ecx, 0xd000000c        # move it to 0xd0000000
    call pci_write32
    PUTS "NEW "
    PUTHEX32 [0xd0000000]
    call put_nl
    mov eax, 0x0018
    mov edx, 0x04
    mov ecx, 0
    call pci_write16           # decode off
    PUTS "OFF "
    PUTHEX32 [0xd0000000]
    call put_nl
"""


def test_guest_moves_a_bar_and_finds_the_data_there(tmp_path, firmware, booted):
    fn = ShmFunction()
    m, con = booted(guest(tmp_path, firmware, MOVE_BAR), pci={3: fn})
    fn.shm.buffer.view[0:4] = (0xCAFEF00D).to_bytes(4, "little")
    m.run(timeout=5)
    assert con.text.splitlines()[1:] == ["OLD cafef00d", "NEW cafef00d", "OFF 00000000"]
    assert fn.bar_addr[2] is None


def test_trace_records_config_and_bar_events(tmp_path, firmware, booted):
    m, _ = booted(firmware("pci_enum"))
    events = m.tracer.record()
    m.run(timeout=5)
    names = {ev.name for ev in events}
    assert {"pio_read", "pio_write", "pci_cfg_read", "pci_cfg_write", "pci_bar_map", "stop"} <= names
    assert str(events[-1]).startswith("stop debug_exit")


def test_plugin_next_to_the_users_own_unicorn_and_hooks(tmp_path, firmware):
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    seen = []
    uc.hook_add(UC_HOOK_CODE, lambda uc, addr, size, _: seen.append(addr), None, 0x100000, 0x100040)
    m = Machine(uc=uc)
    con = MemoryChardev()
    m.add_debugcon(con)
    m.add_debug_exit(0xF4, 4)
    m.load_kernel(firmware("pci_enum").read_bytes())
    stop = m.run(timeout=5)
    assert stop.debug_exit_value == 0 and "DONE 4 functions" in con.text
    assert seen, "the user's own hook ran"
    m.close()
    assert list(uc.mem_regions()) == []          # a user's CPU is left clean and usable


def test_host_write_to_guest_code_is_seen_by_the_cpu(tmp_path, firmware, booted):
    """GuestMemory writes drop translated blocks (docs/unicorn-notes.md §7 items 7-8)."""
    image = guest(tmp_path, firmware, "    mov eax, 0x11\n    out 0xe9, al\n    cli\n    hlt")
    m, con = booted(image)
    m.run(timeout=5)
    entry = m.entry
    code = bytes(m.uc.mem_read(0x100000, 0x1000))
    at = code.index(bytes.fromhex("b811000000"))          # mov eax, 0x11
    m.memory.guest.write(0x100000 + at + 1, b"\x22")
    m.reset()
    m.uc.reg_write(__import__("unicorn").x86_const.UC_X86_REG_EIP, entry)
    m.run(timeout=5)
    assert con.data.count(0x11) == 1 and con.data.count(0x22) == 1


def test_work_posted_just_before_the_cpu_starts_is_not_lost(tmp_path, firmware, booted):
    """A post that arrives after the run loop served its posted work but before emu_start
    began sees no running CPU to stop, and emu_start clears stop requests: the loop must
    look at the queue again and run it before the guest, not at some later stop (the
    PIT's next tick here, 55 ms of guest loop later)."""
    image = guest(tmp_path, firmware, "spin:\n    inc dword ptr [0x300000]\n    jmp spin")
    m, _ = booted(image)
    arm = m._arm_tick
    seen = []

    def stop_and_look():
        seen.append(m.memory.guest.read_u32(0x300000))
        m.interrupt()

    def arm_then_post(watch):                 # runs after _service(), before emu_start
        arm(watch)
        if m.memory.guest.read_u32(0x300000) == 0 and not seen:
            m.call_soon_threadsafe(stop_and_look)
    m._arm_tick = arm_then_post
    stop = m.run(timeout=5)
    m.close()
    assert stop.reason == StopReason.INTERRUPTED, stop.report()
    assert seen == [0]                        # ran before the guest's first round


def test_watchdog_wakes_only_for_an_earlier_deadline():
    """Every run arms a PIT tick: waking the watchdog thread for a tick later than the one
    it already sleeps towards only cost a thread switch and the GIL (a boot's hot path)."""
    import time as _time

    from uvirt.cpu.machine import _Watchdog
    w = _Watchdog()
    pokes = []
    poke = w._poke
    w._poke = lambda: (pokes.append(1), poke())

    class Idle:
        def _timer_fired(self):
            pass
    now = _time.monotonic()
    tokens = [w.register(Idle(), None) for _ in range(3)]
    w.set_tick(tokens[0], now + 30)           # it slept forever: wake it
    deadline = _time.monotonic() + 5
    while w._sleep_until != now + 30 and _time.monotonic() < deadline:
        _time.sleep(0.001)
    assert w._sleep_until == now + 30 and len(pokes) == 1
    w.set_tick(tokens[1], now + 60)           # later than what it waits for: no wake-up
    assert len(pokes) == 1
    w.set_tick(tokens[2], now + 10)           # earlier: wake it
    assert len(pokes) == 2
    while w._sleep_until != now + 10 and _time.monotonic() < deadline:
        _time.sleep(0.001)
    assert w._sleep_until == now + 10
    for t in tokens:
        w.unregister(t)


@pytest.mark.parametrize("cpu", [True, False])
def test_a_closed_machine_is_freed(cpu):
    """Nothing outside a machine keeps it alive once closed: its guest RAM (128 MiB of
    address space) is released with it.  The qtest services used to sit in a module-level
    WeakKeyDictionary whose values led back to the machine, so no machine ever died and
    a test process grew by 128 MiB per machine until fork() failed."""
    import gc
    import weakref

    def make():
        m = Machine(cpu=cpu)
        m.services.gpio("/machine/i440fx/ioapic")      # what -device and qtest reach for
        m.close()
        return weakref.ref(m)
    ref = make()
    gc.collect()
    assert ref() is None


def test_stop_registers_are_what_the_binding_reads(tmp_path, firmware, booted):
    """StopInfo.regs is read through the C API (FastRegs): every value, selectors
    included (Unicorn writes only their 16 bits, after EFLAGS filled the buffer),
    equals the binding's reg_read."""
    from uvirt.cpu.machine import _REGS
    image = guest(tmp_path, firmware, "    mov eax, 0xA1B2C3D4\n    mov ebx, 0x11111111\n"
                  "    mov ecx, 0x22222222\n    mov edx, 0x33333333\n    mov esi, 0x44444444\n"
                  "    mov edi, 0x55555555\n    mov ebp, 0x66666666\n    cli\n    hlt")
    m, _con = booted(image)
    stop = m.run(timeout=5)
    assert stop.regs == {name: m.uc.reg_read(reg) for name, reg in _REGS}
    assert stop.regs["eax"] == 0xA1B2C3D4 and stop.regs["cs"] == 0x08 and stop.regs["ss"] == 0x10


# --- a machine's own CPU gets its view at the first commit (Machine.attach) --------------

from unicorn import x86_const as _X

from uvirt.boot import firmware_step as _bios

_SEGMENT_STATE = (_X.UC_X86_REG_CS, _X.UC_X86_REG_DS, _X.UC_X86_REG_SS, _X.UC_X86_REG_ES,
                  _X.UC_X86_REG_GDTR, _X.UC_X86_REG_IDTR, _X.UC_X86_REG_CR4)


def _cpu_state(m):
    """The guest-physical mappings (not the CPU-private interrupt page above 4 GiB that
    only a machine's own CPU has, uvirt/cpu/irq_line.py; with the register windows its
    own CPU maps at the guest's first unmapped access, uvirt/cpu/uc_memory.py, as Unicorn
    lists an MMIO mapping) and the entry segment state."""
    uc = m.uc
    deferred = [(s.start, s.start + s.size - 1, 3) for s in m.uc_memory.deferred]
    return ([r for r in sorted(list(uc.mem_regions()) + deferred) if r[0] < 1 << 32],
            [uc.reg_read(r) for r in _SEGMENT_STATE])


def test_a_new_machines_cpu_is_what_an_eagerly_mapped_one_is(monkeypatch):
    """Machine() leaves its own CPU's mappings and entry segments to the first commit;
    whoever looks first (``m.uc``) sees exactly what a user's CPU, mapped at attach,
    shows: the same mappings and segment state, right after creation and after a build,
    which then unmaps nothing (the eager CPU maps the reset view, then remaps it)."""
    from uvirt.cpu import uc_memory
    unmaps: dict[int, int] = {}
    real_calls = uc_memory._mapping_calls

    def counting_calls(uc):                  # the memory map unmaps through these only
        map_ptr, unmap = real_calls(uc)

        def counting_unmap(address, size):
            unmaps[id(uc)] = unmaps.get(id(uc), 0) + 1
            return unmap(address, size)
        return map_ptr, counting_unmap

    monkeypatch.setattr(uc_memory, "_mapping_calls", counting_calls)
    lazy, eager = Machine(), Machine(uc=Uc(UC_ARCH_X86, UC_MODE_32))
    built = Machine()
    try:
        assert lazy._view_pending and not eager._view_pending
        assert _cpu_state(lazy) == _cpu_state(eager)       # looking makes the view
        assert not lazy._view_pending
        for m in (built, eager):
            with m.batch():
                m.add_debug_exit(0xF4, 4)
                _bios.firmware_step(m)
        assert not built._view_pending                           # the commit made it
        assert _cpu_state(built) == _cpu_state(eager)
        assert unmaps.get(id(built._uc), 0) == 0 < unmaps[id(eager._uc)]
    finally:
        for m in (lazy, eager, built):
            m.close()


def test_a_new_machines_entry_state_is_installed_once_by_load_kernel(tmp_path, firmware,
                                                                     monkeypatch):
    """The first commit maps a new machine's CPU but leaves the entry segment state to
    ``load_kernel``, which installs it after the image is in place (once per boot, not
    twice); the CPU and the low RAM it uses (the ROM's GDT at 0xC02B8, the scratch copy
    at 0x500) end as on a user's CPU, which gets the state at attach and again there."""
    from uvirt.cpu import machine as machine_module
    installs: dict[int, int] = {}
    real_install = machine_module.Machine._install_gdt

    def counting_install(self, *then):
        installs[id(self)] = installs.get(id(self), 0) + 1
        real_install(self, *then)

    monkeypatch.setattr(machine_module.Machine, "_install_gdt", counting_install)
    image = guest(tmp_path, firmware, "    mov eax, 0x12345678").read_bytes()
    built, eager = Machine(), Machine(uc=Uc(UC_ARCH_X86, UC_MODE_32))
    try:
        for m in (built, eager):
            with m.batch():
                m.add_debug_exit(0xF4, 4)
                _bios.firmware_step(m)
            m.load_kernel(image)
        assert installs[id(built)] == 1 and installs[id(eager)] == 2
        assert _cpu_state(built) == _cpu_state(eager)
        for addr, size in ((machine_module.GDT_ADDR, len(machine_module.GDT)),
                           (machine_module.GDT_SCRATCH, 0x100)):
            assert built.ram.buffer.view[addr:addr + size] == eager.ram.buffer.view[addr:addr + size]
        for m in (built, eager):
            assert m.run(timeout=10).debug_exit_value == 0
    finally:
        for m in (built, eager):
            m.close()


def test_guest_code_larger_than_the_translation_buffer_runs_right(tmp_path, firmware, booted):
    """A small TCG buffer (``-accel tcg,tb-size=1``: 1 MiB); a guest whose translated code
    overflows it runs on, through Unicorn's flush and re-translation, with the same
    result."""
    # 2 passes over 30 000 distinct read-modify-writes of memory: ~200 KiB of guest code,
    # over 1 MiB translated (each access inlines its TLB look-up), so the buffer fills and
    # is flushed in every pass
    body = ("    mov dword ptr [0x8000], 0\n    mov ecx, 2\n1:\n    .rept 30000\n"
            "    add dword ptr [0x8000], 1\n    .endr\n    dec ecx\n    jz 2f\n    jmp 1b\n2:\n"
            "    mov eax, [0x8000]\n"
            "    out 0xe9, al\n    shr eax, 8\n    out 0xe9, al\n    shr eax, 8\n    out 0xe9, al\n")
    image = guest(tmp_path, firmware, body)
    m, con = booted(image, tcg_buffer_size=1 << 20)
    assert m.uc.ctl_get_tcg_buffer_size() == 1 << 20
    stop = m.run(timeout=60)
    assert stop.debug_exit_value == 0, stop.report()
    assert bytes(con.data).endswith((60_000).to_bytes(3, "little"))


@pytest.mark.parametrize("accel, mib", [([], None), (["-accel", "tcg,tb-size=64"], 64),
                                        (["-accel", "tcg,tb-size=0"], None),
                                        (["-accel", "kvm", "-accel", "tcg,tb-size=8"], 8)])
def test_tb_size_sizes_the_translation_buffer_as_on_qemu(accel, mib):
    """``-accel tcg,tb-size=N`` is QEMU's size of the translation buffer in MiB (0: the
    default), and a guest with much hot code asks for more this way on uvirt too."""
    from uvirt.launch.runner import build_machine
    from uvirt.options import parse_argv
    cfg = parse_argv(["-machine", "pc", "-nodefaults", "-display", "none", *accel])
    assert not any("tb-size" in (i.value or "") for i in cfg.ignored)
    m = build_machine(cfg, kernel=False).machine
    try:
        want = mib << 20 if mib else Uc(UC_ARCH_X86, UC_MODE_32).ctl_get_tcg_buffer_size()
        assert m.uc.ctl_get_tcg_buffer_size() == want
    finally:
        m.close()


def _rwx_mappings() -> dict[tuple[int, int], str]:
    """This process's read-write-execute mappings, (start, end) -> their smaps text."""
    out, key = {}, None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 2 and len(head[1]) == 4:
                lo, hi = (int(v, 16) for v in head[0].split("-"))
                key = (lo, hi) if head[1].startswith("rwx") else None
                if key:
                    out[key] = ""
            elif key:
                out[key] += line
    return out


def test_a_new_cpu_sets_up_its_translation_buffer_on_small_pages(tmp_path, firmware, booted):
    """Unicorn maps its translation buffer with MADV_HUGEPAGE and writes its prologue at
    the start while it sets up, which faulted in (and zeroed) a 2 MiB huge page on every
    machine creation.  ``_new_uc`` sets the engine up with the process's transparent huge
    pages off for that moment: after a guest ran, the buffer holds no huge page, and the
    process's own setting is what it was before (off stays off)."""
    import re

    from uvirt.cpu import machine as machine_mod
    prctl = machine_mod._small_pages._prctl
    if prctl is None or prctl(42, 0, 0, 0, 0) < 0:
        pytest.skip("no prctl(PR_GET_THP_DISABLE) on this host (not Linux)")
    before = prctl(42, 0, 0, 0, 0)
    image = guest(tmp_path, firmware, "")
    seen = _rwx_mappings()
    m, _ = booted(image)
    assert prctl(42, 0, 0, 0, 0) == before
    buffers = [k for k in _rwx_mappings() if k not in seen and k[1] - k[0] >= 64 << 20]
    assert len(buffers) == 1, "Unicorn's translation buffer: one new rwx mapping"
    assert m.run(timeout=10).debug_exit_value == 0
    smaps = _rwx_mappings()[buffers[0]]
    assert re.search(r"^Rss:\s+[1-9]", smaps, re.M), "the guest's code was translated there"
    assert re.search(r"^AnonHugePages:\s+0 kB", smaps, re.M), smaps
    prctl(41, 1, 0, 0, 0)           # a process that turned huge pages off keeps them off
    try:
        Machine().close()
        assert prctl(42, 0, 0, 0, 0) == 1
    finally:
        prctl(41, before, 0, 0, 0)


def _booted(tmp_path, firmware, body: str):
    """A machine built as ``uvirt run`` builds one, ``body`` loaded, and its debugcon."""
    out = MemoryChardev()
    m = Machine()
    with m.batch():
        m.add_debugcon(out)
        m.add_debug_exit(0xF4, 4)
        _bios.firmware_step(m)
    m.load_kernel(guest(tmp_path, firmware, body).read_bytes())
    return m, out


def _unicorn_maps(m, address: int) -> bool:
    """Unicorn maps ``address`` now (read through the machine's own handle: the public
    ``uc`` maps every deferred window before handing the engine out)."""
    return any(b <= address <= e for b, e, _ in m._engine.mem_regions())


LAPIC_VERSION = "0x00050014"          # QEMU 7.2's APIC version register, as uvirt's APIC has it


def test_register_windows_are_mapped_at_the_first_unmapped_access(tmp_path, firmware):
    """A machine's own CPU maps the register windows below 4 GiB (the local APIC's) at
    the guest's first data access to an unmapped page (uvirt/cpu/uc_memory.py
    ``defer_mmio``): a guest that never makes one never maps them; the first access, to
    the window itself or to unassigned memory, reads what an eagerly mapped window gives,
    and leaves Unicorn's mappings as they would have been."""
    quiet, _ = _booted(tmp_path, firmware, "    nop")
    try:
        assert quiet.run(timeout=10).debug_exit_value == 0
        assert [s.start for s in quiet.uc_memory.deferred] == [0xFEE00000]
        assert (0xFEE00000, 0x100000, "mmio") in quiet.uc_memory.mapped_spans
        assert not _unicorn_maps(quiet, 0xFEE00000)
    finally:
        quiet.close()
    for first in ("mov eax, [0xfee00030]", "mov eax, [0xfed00000]"):
        m, out = _booted(tmp_path, firmware, f"    {first}\n    PUTHEX32 eax\n"
                                             "    mov eax, [0xfee00030]\n    PUTHEX32 eax")
        try:
            assert m.run(timeout=10).debug_exit_value == 0
            want = "00050014" if "fee" in first else "00000000"
            assert out.text.endswith(want + "00050014")
            assert m.uc_memory.deferred == [] and _unicorn_maps(m, 0xFEE00000)
        finally:
            m.close()


def test_a_callers_unicorn_calls_see_the_register_windows_the_guest_never_touched(tmp_path, firmware):
    """``Machine.uc`` hands out the engine with its whole map: a caller reading a device
    register through Unicorn itself (``m.uc.mem_read``), before the guest touched
    anything unmapped, reads it as from an eagerly mapped window, and the machine maps
    every later window at once from then on."""
    m, _ = _booted(tmp_path, firmware, "    nop")
    try:
        assert [s.start for s in m.uc_memory.deferred] == [0xFEE00000]
        assert bytes(m.uc.mem_read(0xFEE00030, 4)) == int(LAPIC_VERSION, 16).to_bytes(4, "little")
        assert m.uc_memory.deferred == [] and _unicorn_maps(m, 0xFEE00000)
        assert m.run(timeout=10).debug_exit_value == 0
    finally:
        m.close()


def test_register_windows_reached_through_paging_first(tmp_path, firmware):
    """A deferred window first reached through paging, at a linear address over RAM
    (where no unmapped-access hook is): Unicorn checks the hooks' ranges against the
    physical address, so the local APIC read at linear 0x600030 (a 4 MiB page onto
    0xFEC00000) maps the window and answers as at its physical address."""
    m, out = _booted(tmp_path, firmware, """
    mov dword ptr [0x200000], 0x83          # PDE 0: 0-4 MiB identity (PS, RW, P)
    mov dword ptr [0x200004], 0xFEC00083    # PDE 1: 4-8 MiB onto 0xFEC00000
    mov eax, cr4
    or eax, 0x10                            # PSE
    mov cr4, eax
    mov eax, 0x200000
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    mov eax, [0x600030]
    mov ebx, cr0
    and ebx, 0x7fffffff
    mov cr0, ebx
    PUTHEX32 eax""")
    try:
        assert m.run(timeout=10).debug_exit_value == 0
        assert out.text.endswith("00050014")
        assert m.uc_memory.deferred == []
    finally:
        m.close()


def test_a_machines_own_engine_is_the_bindings_x86_engine():
    """``_new_uc`` makes the engine without ``Uc.__new__``'s per-instance checks: still the
    binding's ``UcIntel`` (x86 registers, contexts, hooks through the binding), closed by
    the binding's finalizer."""
    from unicorn.unicorn_py3.arch.intel import UcIntel
    m = Machine()
    try:
        uc = m.uc
        assert isinstance(uc, UcIntel) and isinstance(uc, Uc)
        uc.reg_write(_X.UC_X86_REG_EAX, 0x1234)
        ctx = uc.context_save()
        uc.reg_write(_X.UC_X86_REG_EAX, 0)
        uc.context_restore(ctx)
        assert uc.reg_read(_X.UC_X86_REG_EAX) == 0x1234
        assert len(uc.reg_read(_X.UC_X86_REG_GDTR)) == 4             # the x86 table-register type
    finally:
        m.close()
    assert getattr(uc, "_Uc__finalizer").alive is False


def test_a_new_machines_first_access_to_each_page_reaches_the_tlb_fill(tmp_path, firmware,
                                                                         monkeypatch):
    """TlbFill skips the TLB flush on a CPU that never ran (``fresh``): Unicorn's reset left
    its TLB empty, so every page's first access, fetch or data, still reaches the fill
    hook (which keeps exec_pages, the basis of every native-speed store)."""
    from uvirt.cpu import tlb as tlb_mod
    pages: list[tuple[int, int]] = []
    real_fill = tlb_mod.TlbFill._fill

    def logging_fill(self, handle, vaddr, access, entry_ptr, ud):
        pages.append((vaddr >> 12, access))
        return real_fill(self, handle, vaddr, access, entry_ptr, ud)

    monkeypatch.setattr(tlb_mod.TlbFill, "_fill", logging_fill)
    m, _ = _booted(tmp_path, firmware, "    mov eax, [0x234000]\n    mov dword ptr [0x235000], eax")
    try:
        assert m.run(timeout=10).debug_exit_value == 0
        touched = {p for p, _ in pages}
        assert {0x100, 0x234, 0x235} <= touched                  # code, the load, the store
        assert 0x100 in m.tlb.exec_pages and 0x234 not in m.tlb.exec_pages
    finally:
        m.close()
