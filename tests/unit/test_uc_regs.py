"""uvirt/cpu/uc_regs.py: the C-API register path gives exactly what the binding gives."""

from __future__ import annotations

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_32, Uc, UcError
from unicorn import x86_const as X

from uvirt.cpu.uc_regs import FastRegs

REGS32 = [X.UC_X86_REG_EAX, X.UC_X86_REG_EBX, X.UC_X86_REG_ECX, X.UC_X86_REG_EDX,
          X.UC_X86_REG_ESI, X.UC_X86_REG_EDI, X.UC_X86_REG_EBP, X.UC_X86_REG_ESP,
          X.UC_X86_REG_EIP, X.UC_X86_REG_EFLAGS]


@pytest.fixture(params=["c-api", "binding"])
def cpu(request):
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x10000)
    regs = FastRegs(uc)
    if request.param == "binding":
        regs._h = None                      # the fallback a moved binding would get
    else:
        assert regs._h is not None          # the pinned binding has what it needs
    return uc, regs


def test_32_bit_registers_round_trip(cpu):
    uc, regs = cpu
    for i, reg in enumerate(REGS32):
        value = 0x80000246 + i * 0x01010100 if reg != X.UC_X86_REG_EFLAGS else 0x246
        regs.write(reg, value)
        assert uc.reg_read(reg) == value == regs.read(reg)
    uc.reg_write(X.UC_X86_REG_EAX, 0xFFFFFFFF)
    assert regs.read(X.UC_X86_REG_EAX) == 0xFFFFFFFF


def test_selector_after_a_wider_read_has_no_stale_bytes(cpu):
    uc, regs = cpu
    regs.read(X.UC_X86_REG_EAX)
    uc.reg_write(X.UC_X86_REG_EAX, 0xDEADBEEF)
    assert regs.read(X.UC_X86_REG_EAX) == 0xDEADBEEF
    assert regs.selector(X.UC_X86_REG_CS) == uc.reg_read(X.UC_X86_REG_CS) & 0xFFFF


def test_descriptor_tables(cpu):
    uc, regs = cpu
    uc.reg_write(X.UC_X86_REG_IDTR, (0, 0x12345000, 0x7FF, 0))
    uc.reg_write(X.UC_X86_REG_GDTR, (0, 0xC0000, 0x27, 0))
    assert regs.table(X.UC_X86_REG_IDTR) == (0x12345000, 0x7FF)
    assert regs.table(X.UC_X86_REG_GDTR) == (0xC0000, 0x27)


def test_memory_and_errors(cpu):
    uc, regs = cpu
    regs.mem_write(0x100, b"\x01\x02\x03")
    assert bytes(uc.mem_read(0x100, 3)) == b"\x01\x02\x03" == regs.mem_read(0x100, 3)
    with pytest.raises(UcError):
        regs.mem_read(0x20000, 4)            # unmapped: the binding's error
    with pytest.raises(UcError):
        regs.mem_write(0x20000, b"x")


def test_set_table_and_segment_loads_match_the_binding(cpu):
    """Machine._install_gdt loads GDTR/IDTR and the segment registers through here: the
    segment load reads the descriptor from guest memory exactly as the binding's does."""
    uc, regs = cpu
    # null, flat 32-bit code (0x08), flat data (0x10) with base 0x1000 to tell them apart
    gdt = bytes(8) + bytes.fromhex("ffff0000009acf00") + bytes.fromhex("ffff0010009fcf00")
    uc.mem_write(0x500, gdt)
    regs.set_table(X.UC_X86_REG_GDTR, 0x500, len(gdt) - 1)
    regs.set_table(X.UC_X86_REG_IDTR, 0, 0x3FF)
    assert uc.reg_read(X.UC_X86_REG_GDTR)[1:3] == (0x500, len(gdt) - 1)
    assert uc.reg_read(X.UC_X86_REG_IDTR)[1:3] == (0, 0x3FF)
    regs.write(X.UC_X86_REG_DS, 0x10)
    assert uc.reg_read(X.UC_X86_REG_DS) == 0x10
    uc.mem_write(0x1000 + 0x40, b"\x5a")
    uc.mem_write(0x2000, b"\xa0\x40\x00\x00\x00\xf4")      # mov al, [0x40] (DS); hlt
    uc.emu_start(0x2000, 0x2005)
    assert uc.reg_read(X.UC_X86_REG_AL) == 0x5A           # the descriptor's base was loaded
    with pytest.raises(UcError):
        regs.write(X.UC_X86_REG_DS, 0x30)                 # beyond the GDT's limit: refused


def test_write_many_and_read_many_match_one_call_per_register(cpu):
    """Machine._install_gdt and load_kernel write the entry state in one batch, and a
    stop reads its registers in one: the same values, in the same order, as the binding's
    one call per register; segment loads see the GDTR written earlier in the batch."""
    uc, regs = cpu
    gdt = bytes(8) + bytes.fromhex("ffff0000009acf00") + bytes.fromhex("ffff0010009fcf00")
    uc.mem_write(0x500, gdt)
    writes = ((X.UC_X86_REG_GDTR, (0x500, len(gdt) - 1)), (X.UC_X86_REG_IDTR, (0x1000, 0x3FF)),
              (X.UC_X86_REG_CS, 0x08), (X.UC_X86_REG_DS, 0x10),
              (X.UC_X86_REG_CR4, 0)) + tuple((reg, 0x11111111 * (i + 1)) for i, reg in enumerate(REGS32[:8]))
    for _ in range(2):                   # the second time through the kept arrays
        regs.write_many(writes)
        assert uc.reg_read(X.UC_X86_REG_GDTR)[1:3] == (0x500, len(gdt) - 1)
        assert uc.reg_read(X.UC_X86_REG_IDTR)[1:3] == (0x1000, 0x3FF)
        assert uc.reg_read(X.UC_X86_REG_CR4) == 0
        ids = tuple(reg for reg, _ in writes[2:])
        assert regs.read_many(ids) == [uc.reg_read(reg) for reg in ids] == [v for _, v in writes[2:]]
        uc.reg_write(X.UC_X86_REG_DS, 0)
        uc.reg_write(X.UC_X86_REG_EAX, 0xFFFFFFFF)
    # read_many leaves no stale bytes above a narrower register's
    regs.read_many((X.UC_X86_REG_EAX,))
    assert regs.read_many((X.UC_X86_REG_CS, X.UC_X86_REG_DS)) == [0x08, 0]


def test_write_many_stops_at_a_refused_write_with_the_earlier_ones_done(cpu):
    uc, regs = cpu
    uc.mem_write(0x500, bytes(8) + bytes.fromhex("ffff00000093cf00"))
    uc.reg_write(X.UC_X86_REG_EBX, 7)
    with pytest.raises(UcError):
        regs.write_many(((X.UC_X86_REG_GDTR, (0x500, 15)), (X.UC_X86_REG_EAX, 5),
                         (X.UC_X86_REG_DS, 0x30), (X.UC_X86_REG_EBX, 6)))
    assert uc.reg_read(X.UC_X86_REG_EAX) == 5
    assert uc.reg_read(X.UC_X86_REG_EBX) == 7


def test_a_batch_longer_than_one_call_takes_several_in_order(cpu):
    uc, regs = cpu
    writes = tuple((reg, 0x1000 * k + i) for k in range(4) for i, reg in enumerate(REGS32[:8]))
    regs.write_many(writes)                  # 32 + 8: two calls, the later values last
    assert [uc.reg_read(reg) for reg in REGS32[:8]] == [0x3000 + i for i in range(8)]
    assert regs.read_many(tuple(REGS32[:8]) * 5) == [0x3000 + i for i in range(8)] * 5
