"""The CPU's interrupt line inside Unicorn (uvirt/cpu/irq_line.py): hardware interrupts
taken by Unicorn's own x86 code at the instruction boundary QEMU takes them, without a
stop per interrupt; and the run loop's delivery, still used when the line is not (an
instruction budget, a CPU the user made, a Unicorn build the probe does not recognise).

Where an interrupt lands is pinned against QEMU 7.2 by firmware/irq_timing.S
(tests/guest/test_interrupts.py runs it against the stored transcript and live QEMU)."""

from __future__ import annotations

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_32, Uc

from uvirt.cpu import irq_line
from uvirt.cpu.machine import Machine
from uvirt.testing.guest import comparable, run_uvirt
from uvirt.testing.qemu import DATA_DIR, strip_header

#: The MSI handler both programs end with: counts in [hits], EOI.
ON_MSI = """
on_msi:
    inc dword ptr [hits]
    call lapic_eoi
    ret
.align 4, 0
hits: .long 0
"""

MSI_LOOP = """
main:
    call irq_init
    mov eax, 0x41
    mov edx, on_msi
    call irq_set_handler
    mov ecx, 200
    sti
again:
    mov ebx, [hits]
    mov dword ptr [0xfee00000], 0x41
wait:
    cmp [hits], ebx
    je wait
    dec ecx
    jnz again
    cli
    PUTS "hits "
    PUTDEC [hits]
    PUTS " isr "
    mov eax, 0x140
    call lapic_read
    call put_hex32
    call put_nl
    ret
""" + ON_MSI


def _image(tmp_path, firmware, body: str):
    src = tmp_path / "g.S"
    src.write_text('.include "uvirt.inc"\n.include "irq.inc"\n' + body)
    return firmware(src)


def test_the_probe_finds_the_line_in_the_pinned_unicorn():
    offs = irq_line.offsets()
    assert offs is not None
    m = Machine()
    try:
        assert m.irq_line is not None and m._engine_irqs()
    finally:
        m.close()


def test_the_acknowledge_window_is_one_radix_leaf_the_guest_cannot_reach():
    """QEMU's memory core rebuilds its dispatch radix tree (4 KiB pages, 9 bits a level)
    at every mem_map/mem_unmap, so the acknowledge window is a whole, aligned entry of the
    level over 1 << 39 (no node of its own: ~2 us of every BAR move), above the 40-bit
    physical addresses the guest can form, and vm_vmcb's vector read lands in it.  It is
    mapped when the line is first raised, not before (a machine that never raises it
    never maps it, nor pays for unmapping it at close); a line raised while the machine
    is built (its CPU not reached yet) gets it when the CPU is reached."""
    def above_4g(m):
        return [(b, e + 1 - b) for b, e, _ in m._uc.mem_regions() if b >= 1 << 32]

    built = Machine()
    try:
        built.irq_line.set(True)                 # the controllers' set-up may do this
        assert above_4g(built) == []
        assert built.uc is not None              # the CPU is reached: the window is there
        assert above_4g(built) == [(irq_line.ACK_PAGE, irq_line.ACK_WINDOW)]
        built.irq_line.set(False)
    finally:
        built.close()
    m = Machine()
    try:
        assert m.irq_line is not None
        assert not [b for b, _e, _ in m.uc.mem_regions() if b >= 1 << 32]
        m.irq_line.set(True)
        m.irq_line.set(False)
        above_4g = [(b, e + 1 - b) for b, e, _ in m.uc.mem_regions() if b >= 1 << 32]
        assert above_4g == [(irq_line.ACK_PAGE, irq_line.ACK_WINDOW)]
        base, size = above_4g[0]
        assert size == 1 << (12 + 9 * 3) and base % size == 0
        assert base >= 1 << 40                       # MAXPHYADDR: PTE bits above are reserved
        assert base <= irq_line._VMCB + irq_line.VMCB_INT_VECTOR < base + size
    finally:
        m.close()


def test_the_probe_confirms_old_exception_among_several_flipped_fields():
    """More than one field may go from -1 to 0 across the probe's #DE (which ones depends
    on the process's earlier allocations): the one whose error-code neighbour holds the
    #GP's code is old_exception; none or two confirmed is no answer (run-loop fallback)."""
    real = 5496
    assert irq_line._the_one([real], lambda c: c == real) == real
    assert irq_line._the_one([0x40, real, 0x2F00], lambda c: c == real) == real
    assert irq_line._the_one([0x40, 0x2F00], lambda c: c == real) is None
    assert irq_line._the_one([real, real + 8], lambda c: True) is None
    assert irq_line._the_one([4], lambda c: True) is None      # its error code would lie before env


def test_interrupts_are_taken_without_stopping_the_cpu(tmp_path, firmware, booted):
    m, con = booted(_image(tmp_path, firmware, MSI_LOOP))
    starts = []
    emu_start = m.uc.emu_start
    m.uc.emu_start = lambda *a: starts.append(a) or emu_start(*a)
    stop = m.run(timeout=30)
    assert stop.debug_exit_value == 0, stop.report()
    assert con.text.splitlines()[1:] == ["hits 200 isr 00000000"]
    # boot and exit, not one run per interrupt (the run loop's delivery needs >= 200)
    assert len(starts) < 20
    # irq.inc's handler tables (0x100xxx) share the APIC page's TLB index, and an evicted
    # MMIO entry is never found in Unicorn's victim TLB: the APIC window is refilled by
    # Unicorn itself (uvirt/cpu/tlb.py HOOKED), not once per interrupt through the hook
    assert m.tlb.fills < 100


def test_an_instruction_budget_delivers_from_the_run_loop(tmp_path, firmware, booted, monkeypatch):
    seen = []
    take = Machine._take_interrupt
    monkeypatch.setattr(Machine, "_take_interrupt", lambda self, *a: seen.append(1) or take(self, *a))
    m, con = booted(_image(tmp_path, firmware, MSI_LOOP))
    stop = m.run(timeout=30, max_insns=10_000_000)
    assert seen == []                    # exact stops (a code hook counts): no line
    assert stop.debug_exit_value == 0, stop.report()
    assert con.text.splitlines()[1:] == ["hits 200 isr 00000000"]


@pytest.mark.parametrize("prog", ["irq_msi", "irq_exceptions", "irq_pit"])
def test_without_the_line_the_run_loop_delivers_as_qemu(firmware, monkeypatch, prog):
    monkeypatch.setattr(irq_line, "_offsets", None)        # as if the probe had failed
    assert Machine(cpu=False).irq_line is None
    ref = strip_header((DATA_DIR / f"{prog}.txt").read_text())
    res = run_uvirt(firmware(prog))
    assert res.exit_code == 1, res.stop.report()
    assert comparable(res.debugcon) == comparable(ref)


def test_a_line_that_falls_before_sti_delivers_nothing(tmp_path, firmware, booted):
    # QEMU's cpu_reset_interrupt: an MSI raised with IF=0 and taken back by a TPR write
    # (the APIC no longer presents it) is not delivered when IF becomes 1; it is once the
    # TPR drops again (QEMU 7.2 prints the same line, measured).
    body = """
main:
    call irq_init
    mov eax, 0x41
    mov edx, on_msi
    call irq_set_handler
    mov dword ptr [0xfee00000], 0x41
    mov dword ptr [0xfee00080], 0xf0
    sti
    nop
    nop
    cli
    PUTS "held "
    PUTDEC [hits]
    mov dword ptr [0xfee00080], 0
    sti
    nop
    cli
    PUTS " released "
    PUTDEC [hits]
    call put_nl
    ret
""" + ON_MSI
    m, con = booted(_image(tmp_path, firmware, body))
    stop = m.run(timeout=30)
    assert stop.debug_exit_value == 0, stop.report()
    assert con.text.splitlines()[1:] == ["held 0 released 1"]


def test_closing_the_machine_gives_a_users_cpu_back_without_the_page():
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    m = Machine(uc=uc)
    assert m.irq_line is None            # a user's CPU keeps Unicorn's stop checks: no line
    m.close()
    m = Machine()
    line = m.irq_line
    line.raise_line()
    m.close()
    assert m.irq_line is None and not line.raised
