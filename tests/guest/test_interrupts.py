"""Interrupts on a booted guest: the bundled irq_* programs against QEMU 7.2 (live and the
stored transcripts), PCI INTx through PIIX3 routing and the 8259 with a test device,
level-interrupt storms, MSI from a device, triple faults, HLT with nothing to wake it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from unicorn.x86_const import UC_X86_REG_EFLAGS, UC_X86_REG_EIP

from uvirt.cpu.machine import Machine, StopReason
from uvirt.board.memory.regions import MmioRegion
from uvirt.board.pci.bus import PciFunction
from uvirt.testing.guest import comparable, run_uvirt
from uvirt.testing.qemu import DATA_DIR, strip_header

PROGRAMS = ["irq_exceptions", "irq_seabios", "irq_msi", "irq_pit", "irq_timing"]


@pytest.mark.parametrize("prog", PROGRAMS)
def test_irq_program_matches_stored_qemu_transcript(firmware, prog):
    ref = strip_header((DATA_DIR / f"{prog}.txt").read_text())
    res = run_uvirt(firmware(prog))
    assert res.exit_code == 1, res.stop.report()
    assert comparable(res.debugcon) == comparable(ref)


@pytest.mark.qemu
def test_virtio_used_buffer_interrupt_via_intx_and_msix_equals_qemu(firmware, qemu):
    """Issue 7's wiring: a virtio-rng request taken through the IDT via INTx (ISR read in the
    handler deasserts the line) and via MSI-X (masked vector -> PBA bit, unmask delivers)."""
    image = firmware("irq_virtio")
    args = ("-device", "virtio-rng-pci,disable-modern=on")
    ref = qemu(image, args)
    res = run_uvirt(image, args)
    assert ref.exit_code == res.exit_code == 1, res.stop.report()
    assert comparable(res.debugcon) == comparable(ref.debugcon)
    assert "msi deliveries after unmask 2" in res.debugcon and "ISR read in handler 01" in res.debugcon
    ref_file = strip_header((DATA_DIR / "irq_virtio.txt").read_text())
    assert comparable(ref_file) == comparable(ref.debugcon)


@pytest.mark.qemu
@pytest.mark.parametrize("prog", PROGRAMS)
def test_irq_program_equals_live_qemu(firmware, qemu, prog):
    image = firmware(prog)
    ref = qemu(image)
    res = run_uvirt(image)
    assert (res.exit_code, comparable(res.debugcon)) == (ref.exit_code, comparable(ref.debugcon))


def _guest(tmp_path, firmware, body: str, name: str = "g") -> Path:
    src = tmp_path / f"{name}.S"
    src.write_text(f'.include "uvirt.inc"\n.include "irq.inc"\n{body}\n')
    return firmware(src)


@pytest.mark.qemu
def test_exception_without_an_idt_is_a_triple_fault(tmp_path, firmware, qemu):
    # The entry IDTR is the real-mode IVT (base 0, limit 0x3ff): its "gates" are garbage,
    # so #UD -> #GP -> #DF -> triple fault.  QEMU (-no-reboot) shuts down with status 0;
    # uvirt stops with the chain and status 2 (README "How a run ends").
    image = _guest(tmp_path, firmware, "main:\n    PUTSN \"ud2\"\n    ud2\n    ret")
    ref = qemu(image)
    res = run_uvirt(image)
    assert ref.exit_code == 0 and res.debugcon == ref.debugcon == "BOOT eax=2badb002\nud2\n"
    assert res.stop.reason is StopReason.TRIPLE_FAULT and res.exit_code == 2
    assert "#UD -> #GP(0x32) -> #DF(0x0) -> #GP(0x42)" in res.stop.detail
    assert res.stop.insn.endswith("ud2")


def test_hlt_with_interrupts_enabled_and_no_source_ends_at_the_budget(tmp_path, firmware):
    image = _guest(tmp_path, firmware, "main:\n    mov ax, 0xffff\n    call pic_set_mask\n"
                                       "    sti\n    hlt\n    ret")
    t = time.monotonic()
    res = run_uvirt(image, timeout=0.5)
    assert time.monotonic() - t < 5
    assert res.stop.reason is StopReason.TIMEOUT and res.exit_code == 124


SEABIOS = "/usr/share/seabios/bios.bin"


@pytest.mark.parametrize("args", [(), ("-bios", SEABIOS)], ids=["fast-default", "seabios"])
def test_a_kick_racing_a_hlt_does_not_skip_it(firmware, monkeypatch, args):
    """A kick (a timer tick, posted work) that lands in the run ending at ``sti; hlt`` left
    the HLT skipped: irq_pit under SeaBIOS printed "woke" where QEMU prints its handler's
    line (the PIT tick armed for the firmware's 18.2 Hz timer fired as the guest halted,
    under load).  Here the race is made certain: every run that ends at a HLT ends kicked.
    Under SeaBIOS it still failed about 1 run in 10 under load for another reason: an STI
    shadow recorded at a stop inside SeaBIOS (its ``sti; nop; cli`` yields, while IRQ 0
    waited) stayed recorded while the CPU ran on, so the pending tick at the guest's HLT was
    held back for one more instruction, the ``cli`` (test_a_stale_sti_shadow_...)."""
    if args and not Path(SEABIOS).exists():
        pytest.skip(f"{SEABIOS} missing")
    finish = Machine._finish_restarted_access

    def kicked_at_every_hlt(self):
        finish(self)
        if self._halted():
            self._kicked = True

    monkeypatch.setattr(Machine, "_finish_restarted_access", kicked_at_every_hlt)
    res = run_uvirt(firmware("irq_pit"), args, timeout=30)
    assert res.exit_code == 1, res.stop.report()
    assert res.debugcon.splitlines() == strip_header((DATA_DIR / "irq_pit.txt").read_text()).splitlines()


def test_a_stale_sti_shadow_does_not_hold_back_an_interrupt():
    """The shadow a stop right after STI recorded belongs to that EIP only: once the CPU
    has run on (polling a blocked interrupt runs it free), a later stop elsewhere is not
    in it, or the interrupt waits for one more instruction (a ``cli`` after ``hlt``)."""
    m = Machine()
    m.write_ram(0x8000, bytes([0xFB, 0x90, 0x90, 0xF4, 0xFA]))      # sti; nop; nop; hlt; cli
    m.uc.reg_write(UC_X86_REG_EFLAGS, 0x202)
    m.uc.reg_write(UC_X86_REG_EIP, 0x8001)
    m._step_budget = 0                     # past the step budget: the poll mode
    m._blocked = True
    m._step_touched = m.interrupts.touched
    m._enter_blocked()
    assert m._in_shadow() is True          # the stop right after STI: the nop is shadowed
    m.uc.reg_write(UC_X86_REG_EIP, 0x8004)  # the CPU ran on to after the hlt
    assert m._in_shadow() is False
    m._leave_blocked()


LOST_KICK_PROGRAM = """
main:
    call irq_init
    mov edx, on_tick
    mov eax, 0x20
    call irq_set_handler
    mov eax, 0x2000                     # about 6.9 ms, mode 2
    call pit_start
    mov ax, 0xfffe
    call pic_set_mask
    sti
spin:                                   # no device access: only a timer kick stops this
    cmp dword ptr [ticks], 0
    je spin
    cli
    PUTSN "ticked"
    ret
on_tick:
    inc dword ptr [ticks]
    mov eax, 0
    call pic_eoi
    ret
.align 4, 0
ticks: .long 0
"""


def test_a_kick_unicorn_drops_is_sent_again(tmp_path, firmware, monkeypatch):
    """A stop sent from another thread while ``emu_start`` is still in its prologue is
    dropped by Unicorn (the run has not begun); the guest above spins with IF=1 and no
    device access, so only the tick's kick can stop it.  Every first stop from the
    watchdog is dropped here: the watchdog sends it again while the same run goes on."""
    import threading
    from unicorn import Uc
    real_stop = Uc.emu_stop
    dropped = []

    def emu_stop(uc):
        if threading.current_thread() is not threading.main_thread() and len(dropped) % 2 == 0:
            dropped.append(1)
            return None
        dropped.append(0)
        return real_stop(uc)

    monkeypatch.setattr(Uc, "emu_stop", emu_stop)
    res = run_uvirt(_guest(tmp_path, firmware, LOST_KICK_PROGRAM), timeout=30)
    assert res.exit_code == 1, res.stop.report()
    assert "ticked" in res.debugcon and 1 in dropped


def test_a_dropped_kick_does_not_hide_a_later_interrupt(firmware, monkeypatch):
    """A kick whose stop Unicorn dropped left ``_kicked`` set for the whole run, and an
    unmask in that run then did not stop the CPU (it took the flag for a stop on its way):
    irq_pit lost its "TICK" after ``sti; nop``.  Every run here starts so marked."""
    from unicorn import Uc
    real_start = Uc.emu_start

    def emu_start(uc, begin, until, timeout=0, count=0):
        for m in machines:
            if m._in_cpu and count == 0:
                m._kicked = True
        return real_start(uc, begin, until, timeout, count)

    machines = []
    real_init = Machine.__init__

    def init(self, *a, **k):
        machines.append(self)
        real_init(self, *a, **k)

    monkeypatch.setattr(Machine, "__init__", init)
    monkeypatch.setattr(Uc, "emu_start", emu_start)
    res = run_uvirt(firmware("irq_pit"), timeout=30)
    assert res.exit_code == 1, res.stop.report()
    assert res.debugcon.splitlines() == strip_header((DATA_DIR / "irq_pit.txt").read_text()).splitlines()


@pytest.mark.parametrize("before, halted", [(0xFB, True), (0x90, True), (0x75, False), (0xE2, False),
                                            (0xCD, False)])
def test_a_kicked_stop_after_f4_is_a_hlt_unless_it_ends_a_branch(before, halted):
    """``sti; hlt`` and ``nop; hlt`` ran a HLT; ``jnz``/``loop`` of -12 and ``int 0xf4`` end
    in the same byte and also end a block, where a kick's stop can land: not a HLT."""
    m = Machine()
    m.write_ram(0x8000, bytes([before, 0xF4]))
    m.uc.reg_write(UC_X86_REG_EIP, 0x8002)
    m.uc.reg_write(UC_X86_REG_EFLAGS, 0x202)
    assert m._kicked_at_hlt() is halted
    m.uc.reg_write(UC_X86_REG_EFLAGS, 0x002)            # IF=0: never taken for a halt
    assert m._kicked_at_hlt() is False


# ---------------------------------------------------------------- a PCI INTx/MSI device

class IrqTestDevice(PciFunction):
    """00:03.0, pin A, a 16-byte I/O BAR: write 1 to +0 asserts INTx, reading +0 returns
    and clears the "ISR" (deasserting, like legacy virtio); a write to +4 sends an MSI
    with that data to 0xFEE00000."""

    name = "irq-test"

    def __init__(self) -> None:
        super().__init__(vendor_id=0x1AF4, device_id=0x10FE, class_code=0x00FF, interrupt_pin=1)
        self.isr = 0
        self.register_bar(0, MmioRegion("irq-test", 16, self, valid_sizes=(1, 2, 4)), io=True)

    def read(self, offset: int, size: int) -> int:
        if offset == 0:
            value, self.isr = self.isr, 0
            self.set_intx(0)
            return value
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0 and value:
            self.isr = 1
            self.set_intx(1)
        elif offset == 4:
            self.msi_write(0xFEE00000, value)


INTX_PROGRAM = """
main:
    call idt_setup
    mov eax, 0x20
    mov edx, 0x28
    call pic_init
    mov eax, 0x2b                       # IRQ 11 = PIRQC of slot 3
    mov edx, on_intx
    call irq_set_handler
    mov eax, 0x41
    mov edx, on_msi
    call irq_set_handler
    mov ax, 0xf7fb                      # IRQ 2 (cascade) and 11 unmasked
    call pic_set_mask
    mov eax, 0x18
    mov edx, 0x10
    call pci_read32
    and eax, 0xfffc
    mov [iobase], eax
    PUTS "ELCR "
    call elcr_read
    call put_hex16
    call put_nl
    mov edx, [iobase]
    mov al, 1
    out dx, al
    PUTSN "raised"
    sti
    nop
    cli
    PUTS "main count "
    PUTDEC [count]
    call put_nl
    mov eax, 0x18                       # bus master on, then an MSI from the device
    mov edx, 4
    mov ecx, 0x0107
    call pci_write16
    mov edx, [iobase]
    add edx, 4
    mov eax, 0x41
    out dx, eax
    sti
    nop
    cli
    PUTSN "done"
    ret

on_intx:
    inc dword ptr [count]
    cmp dword ptr [count], 1
    jne on_intx_quiet
    PUTS "INTX ISR "
    call pic_read_isr
    call put_hex16
    PUTS " IRR "
    call pic_read_irr
    and eax, 0xfffe                     # IRQ0: SeaBIOS's PIT keeps running, masked
    call put_hex16
    PUTS " status "
    mov eax, 0x18
    mov edx, 6
    call pci_read16
    call put_hex16
    call put_nl
on_intx_quiet:
.if @ACK@
    mov edx, [iobase]
    in al, dx
    PUTS "ACK IRR "
    call pic_read_irr
    and eax, 0xfffe
    call put_hex16
    call put_nl
.else
    cmp dword ptr [count], @GUARD@
    jne on_intx_eoi
    PUTSN "storm guard"
    mov ax, 0xffff
    call pic_set_mask
.endif
on_intx_eoi:
    mov eax, 11
    call pic_eoi
    ret

on_msi:
    PUTS "MSI "
    call put_hex8
    call put_nl
    call lapic_eoi
    ret

.align 4, 0
iobase: .long 0
count:  .long 0
"""


def run_intx(tmp_path, firmware, booted, *, ack: int, guard: int = 16, timeout: float = 10.0):
    image = _guest(tmp_path, firmware, INTX_PROGRAM.replace("@ACK@", str(ack)).replace("@GUARD@", str(guard)))
    m, con = booted(image, pci={3: IrqTestDevice()})
    stop = m.run(timeout=timeout)
    return stop, con.text.splitlines()[1:]


def test_intx_reaches_irq11_level_triggered_and_ack_deasserts(tmp_path, firmware, booted):
    # docs/qemu-7.2-observed.md "Interrupts": in the handler the slave ISR bit and the cascade
    # bit are set, the line's IRR bit is 1 and PCI status bit 3 is 1; acknowledging the
    # device deasserts at once and nothing more arrives.
    stop, lines = run_intx(tmp_path, firmware, booted, ack=1)
    assert stop.debug_exit_value == 0, stop.report()
    assert lines == ["ELCR 0c00", "raised", "INTX ISR 0804 IRR 0800 status 0008",
                     "ACK IRR 0000", "main count 1", "MSI 41", "done"]


def test_level_interrupt_never_acknowledged_storms_until_guarded(tmp_path, firmware, booted):
    # QEMU: the handler is re-entered right after every EOI; the main code runs again
    # only once the guard has masked the line.
    stop, lines = run_intx(tmp_path, firmware, booted, ack=0, guard=16)
    assert stop.debug_exit_value == 0, stop.report()
    assert lines[:4] == ["ELCR 0c00", "raised", "INTX ISR 0804 IRR 0800 status 0008", "storm guard"]
    assert lines[4] == "main count 16"


def test_unguarded_storm_ends_at_the_budget(tmp_path, firmware, booted):
    t = time.monotonic()
    stop, lines = run_intx(tmp_path, firmware, booted, ack=0, guard=0, timeout=1.0)
    assert time.monotonic() - t < 6
    assert stop.reason is StopReason.TIMEOUT and stop.exit_code == 124
    assert "main count" not in "\n".join(lines)


def test_device_raising_from_another_thread_wakes_hlt(tmp_path, firmware, booted):
    image = _guest(tmp_path, firmware, """
main:
    call idt_setup
    mov eax, 0x20
    mov edx, 0x28
    call pic_init
    mov eax, 0x2b
    mov edx, on_intx
    call irq_set_handler
    mov ax, 0xf7fb
    call pic_set_mask
    PUTSN "waiting"
    call irq_wait
    PUTSN "woken"
    ret
on_intx:
    PUTSN "INTX"
    push eax
    push edx
    mov eax, 0x18
    mov edx, 0x10
    call pci_read32
    and eax, 0xfffc
    mov edx, eax
    in al, dx
    mov eax, 11
    call pic_eoi
    pop edx
    pop eax
    ret
""")
    import threading
    dev = IrqTestDevice()
    m, con = booted(image, pci={3: dev})

    def later():                       # once the guest says it waits (then it halts)
        deadline = time.monotonic() + 10
        while "waiting" not in con.text and time.monotonic() < deadline:
            time.sleep(0.005)
        m.call_soon_threadsafe(lambda: dev.write(0, 1, 1))

    threading.Thread(target=later).start()
    stop = m.run(timeout=5)
    assert stop.debug_exit_value == 0, stop.report()
    assert con.text.splitlines()[1:] == ["waiting", "INTX", "woken"]
