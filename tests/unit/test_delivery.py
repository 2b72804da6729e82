"""IDT delivery without a CPU: frames, gate kinds, error codes, faults while delivering,
double and triple faults, exactly as QEMU's do_interrupt_protected/check_exception."""

from dataclasses import dataclass, field

import pytest

from uvirt.board.interrupts.delivery import (Delivered, Kind, TripleFault, Unsupported,
                                       check_exception, deliver)

IDT, GDT = 0x1000, 0x2000
GDT_BYTES = bytes.fromhex("0000000000000000ffff0000009acf00ffff00000093cf00")


@dataclass
class Cpu:
    mem: bytearray = field(default_factory=lambda: bytearray(0x10000))
    eflags: int = 0x246
    cs: int = 0x08
    esp: int = 0x9000
    idt: tuple = (IDT, 0x7FF)
    gdt: tuple = (GDT, len(GDT_BYTES) - 1)

    def __post_init__(self):
        self.mem[GDT:GDT + len(GDT_BYTES)] = GDT_BYTES

    def read(self, addr, size):
        return bytes(self.mem[addr:addr + size])

    def gate(self, vec, offset=0x5000, sel=0x08, type_attr=0x8E):
        lo = (sel << 16) | (offset & 0xFFFF)
        hi = (offset & 0xFFFF0000) | (type_attr << 8)
        self.mem[IDT + vec * 8:IDT + vec * 8 + 8] = lo.to_bytes(4, "little") + hi.to_bytes(4, "little")


def words(d: Delivered):
    return [int.from_bytes(d.stack[i:i + 4], "little") for i in range(0, len(d.stack), 4)]


def test_fault_frame_and_interrupt_gate_clears_if():
    cpu = Cpu()
    cpu.gate(6, 0x12345678)
    d = deliver(cpu, 6, Kind.EXCEPTION, eip=0x100000)
    assert isinstance(d, Delivered)
    assert (d.eip, d.cs, d.esp) == (0x12345678, 0x08, 0x9000 - 12)
    assert words(d) == [0x100000, 0x08, 0x246] and d.eflags == 0x046


def test_trap_gate_keeps_if_and_software_int_pushes_next_eip():
    cpu = Cpu()
    cpu.gate(0x80, type_attr=0x8F)
    d = deliver(cpu, 0x80, Kind.SOFTWARE, eip=0x100000, next_eip=0x100002)
    assert words(d)[0] == 0x100002 and d.eflags & 0x200


@pytest.mark.parametrize("vec", [8, 10, 11, 12, 13, 14, 17])
def test_error_code_pushed_for_exceptions_only(vec):
    cpu = Cpu()
    cpu.gate(vec)
    d = deliver(cpu, vec, Kind.EXCEPTION, eip=0x100000, error_code=0x30)
    assert words(d)[0] == 0x30 and len(words(d)) == 4
    for kind in (Kind.HARDWARE, Kind.SOFTWARE):
        assert len(words(deliver(cpu, vec, kind, eip=0x100000))) == 3


def test_not_present_gate_gives_np_with_idt_error_code():
    cpu = Cpu()
    cpu.gate(11)
    cpu.gate(0x41, type_attr=0x0E)
    d = deliver(cpu, 0x41, Kind.SOFTWARE, eip=0x100000, next_eip=0x100002)
    assert d.vector == 11 and words(d)[:2] == [0x20A, 0x100000]       # the int itself
    d = deliver(cpu, 0x41, Kind.HARDWARE, eip=0x100010)
    assert words(d)[:2] == [0x20A, 0x100010]                           # no EXT bit


def test_bad_gate_type_and_limit_give_gp():
    cpu = Cpu()
    cpu.gate(13)
    cpu.gate(0x44, type_attr=0x80)
    assert words(deliver(cpu, 0x44, Kind.SOFTWARE, eip=0, next_eip=2))[0] == 0x222
    cpu.idt = (IDT, 0x27F)
    assert words(deliver(cpu, 0x50, Kind.SOFTWARE, eip=0, next_eip=2))[0] == 0x282


def test_bad_selectors():
    cpu = Cpu()
    cpu.gate(13)
    cpu.gate(0x40, sel=0)
    assert words(deliver(cpu, 0x40, Kind.HARDWARE, eip=0))[0] == 0
    cpu.gate(0x40, sel=0x30)                                           # past the GDT limit
    assert words(deliver(cpu, 0x40, Kind.HARDWARE, eip=0))[0] == 0x30
    cpu.gate(0x40, sel=0x10)                                           # a data segment
    assert words(deliver(cpu, 0x40, Kind.HARDWARE, eip=0))[0] == 0x10


def test_empty_idt_is_a_triple_fault_like_qemu():
    cpu = Cpu()
    cpu.idt = (0x8000, 0x3FF)                                          # zeros: the IVT in uvirt's RAM
    r = deliver(cpu, 6, Kind.EXCEPTION, eip=0x100000)
    assert isinstance(r, TripleFault)
    assert str(r) == "#UD -> #GP(0x32) -> #DF(0x0) -> #GP(0x42)"


def test_double_fault_rules():
    assert check_exception(-1, 6, 0) == (6, 0, -1)
    assert check_exception(13, 11, 5) == (8, 0, 8)
    assert check_exception(14, 14, 5) == (8, 0, 8)
    assert check_exception(14, 6, 5) == (6, 5, 14)
    assert check_exception(8, 13, 0)[0] == -1


def test_task_gate_is_unsupported():
    cpu = Cpu()
    cpu.gate(0x40, type_attr=0x85)
    assert isinstance(deliver(cpu, 0x40, Kind.HARDWARE, eip=0), Unsupported)


def test_real_mode_delivery_through_the_ivt():
    """do_interrupt_real: FLAGS, CS, IP as words; CS:IP from the IVT; IF/TF cleared."""
    from uvirt.board.interrupts.delivery import deliver_real
    cpu = Cpu(eflags=0x0302, cs=0xF000, esp=0x7000, idt=(0, 0x3FF))
    cpu.mem[0x13 * 4:0x13 * 4 + 4] = (0xF000E3FE).to_bytes(4, "little")
    d = deliver_real(cpu, 0x13, Kind.SOFTWARE, eip=0x7C10, next_eip=0x7C12)
    assert isinstance(d, Delivered)
    assert (d.cs, d.eip, d.esp, d.eflags) == (0xF000, 0xE3FE, 0x6FFA, 0x0002)
    assert d.stack == (0x7C12).to_bytes(2, "little") + (0xF000).to_bytes(2, "little") + (0x0302).to_bytes(2, "little")
    d = deliver_real(cpu, 0x08, Kind.HARDWARE, eip=0x7C10)
    assert d.stack[:2] == (0x7C10).to_bytes(2, "little")            # the interrupted IP


def test_real_mode_vector_past_the_ivt_limit_is_a_triple_fault():
    from uvirt.board.interrupts.delivery import deliver_real
    cpu = Cpu(idt=(0, 0x3F))
    assert isinstance(deliver_real(cpu, 0x10, Kind.SOFTWARE, eip=0), TripleFault)
