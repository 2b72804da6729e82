"""uvirt/cpu/smm.py without a CPU: QEMU's x86_64 state-save layout (smm_helper.c) and the
descriptors that reproduce a segment cache."""

import struct

from uvirt.cpu import smm
from uvirt.cpu.smm import CpuState, Segment


def _state() -> CpuState:
    flat_code = Segment(0x08, 0, 0xFFFFFFFF, 0x00CF9B00)
    flat_data = Segment(0x10, 0, 0xFFFFFFFF, 0x00CF9300)
    return CpuState(gprs=[1, 2, 3, 4, 0x6C5C, 0x14C40, 0xB, 0x2000000], eip=0xEACED, eflags=0x46,
                    cr0=0x11, cr3=0, cr4=0, dr6=0xFFFF0FF0, dr7=0x400, efer=0,
                    segments=[flat_data, flat_code, flat_data, flat_data, flat_data, flat_data],
                    gdt=(0xF6180, 0x37), idt=(0xF61BE, 0), ldt=Segment(0, 0, 0xFFFF, 0x8200),
                    tr=Segment(0, 0, 0xFFFF, 0x8B00))


def _area(state: CpuState, smbase: int) -> bytearray:
    area = bytearray(0x200)
    for off, data in smm.state_save_writes(state, smbase):
        assert smm.SEG_OFFSET <= off and off + len(data) <= 0x8000
        area[off - smm.SEG_OFFSET:off - smm.SEG_OFFSET + len(data)] = data
    return area


def test_state_save_offsets_are_qemus():
    area = _area(_state(), 0x30000)
    at = lambda off, fmt: struct.unpack_from(fmt, area, off - 0x7E00)[0]
    assert at(0x7E10, "<H") == 0x08 and at(0x7E12, "<H") == 0xC09B      # CS: limit bits dropped
    assert at(0x7E14, "<I") == 0xFFFFFFFF and at(0x7E18, "<Q") == 0
    assert at(0x7E68, "<Q") == 0xF6180 and at(0x7E64, "<I") == 0x37        # GDTR
    assert at(0x7E88, "<Q") == 0xF61BE and at(0x7E84, "<I") == 0           # IDTR
    assert at(0x7E72, "<H") == 0x82 and at(0x7E92, "<H") == 0x8B           # LDT, TR attributes
    assert at(0x7EFC, "<I") == 0x00020064 and at(0x7F00, "<I") == 0x30000
    assert at(0x7F78, "<Q") == 0xEACED and at(0x7F70, "<I") == 0x46
    assert at(0x7FF8, "<Q") == 1 and at(0x7FC0, "<Q") == 0x2000000          # RAX, RDI
    assert at(0x7F58, "<I") == 0x11 and at(0x7F60, "<I") == 0x400 and at(0x7F68, "<I") == 0xFFFF0FF0


def test_rsm_reads_back_what_entry_saved_and_the_relocated_smbase():
    state = _state()
    area = _area(state, 0x30000)
    struct.pack_into("<I", area, 0x7F00 - 0x7E00, 0xA0000)                # the handler relocates
    back, smbase = smm.parse_state_save(bytes(area))
    assert smbase == 0xA0000
    assert (back.gprs, back.eip, back.eflags, back.cr0, back.gdt, back.idt) == \
           (state.gprs, state.eip, state.eflags, state.cr0, state.gdt, state.idt)
    assert back.segments[1] == Segment(0x08, 0, 0xFFFFFFFF, 0x00C09B00)     # as QEMU's RSM loads it
    struct.pack_into("<I", area, 0x7EFC - 0x7E00, 0x00000064)              # no relocation bit
    assert smm.parse_state_save(bytes(area))[1] is None


def test_a_descriptor_gives_back_the_cache():
    for seg in (Segment(0x08, 0, 0xFFFFFFFF, 0x00C09B00), Segment(0xF000, 0xF0000, 0xFFFF, 0x9B00),
                Segment(0x18, 0x12345678, 0xABCDE, 0x00409300),
                *smm.entry_segments(0xA0000)):
        got = smm._decode(smm.descriptor(seg), seg.selector)
        assert (got.base, got.limit, got.flags & 0x00F0FF00) == (seg.base, seg.limit, seg.flags)


def test_entry_segments_are_qemus():
    cs = smm.entry_segments(0xA0000)[1]
    assert (cs.selector, cs.base, cs.limit) == (0xA000, 0xA0000, 0xFFFFFFFF)
    assert cs.flags == smm.DESC_P | smm.DESC_S | smm.DESC_W | smm.DESC_G | smm.DESC_A
