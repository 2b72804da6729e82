"""System Management Mode (uvirt/cpu/smm.py) seen from a guest: an SMI raised through
APM port 0xB2 runs the firmware's SMI handler and RSM returns to the guest with every
register, flag, segment and descriptor table as it was, on QEMU 7.2 and on uvirt (the
fast default's stand-in handler, and SeaBIOS's bios-256k.bin with its own)."""

from __future__ import annotations

import os

import pytest

from uvirt.testing.guest import run_uvirt

BIOS_256K = "/usr/share/seabios/bios-256k.bin"

PROGRAM = """
.macro SHOW label, reg
    PUTS "\\label "
    PUTHEX32 \\reg
    call put_nl
.endm

main:
    mov al, 0x32                        # CMOS index: the century byte
    out 0x70, al
    mov ecx, 2
again:
    push ecx
    mov ebx, 0x22222222
    mov ecx, 0x33333333
    mov edx, 0x44444444
    mov esi, 0x55555555
    mov edi, 0x66666666
    mov ebp, 0x77777777
    mov eax, 0x11111100
    add eax, 0xc4                       # EAX 111111c4, CF=0 ZF=0 SF=0
    stc
    std
    out 0xb2, al                        # an APM command: an SMI where APMC_EN is set
    pushfd
    cld
    mov [r_eax], eax
    mov [r_ebx], ebx
    mov [r_ecx], ecx
    mov [r_edx], edx
    mov [r_esi], esi
    mov [r_edi], edi
    mov [r_ebp], ebp
    pop eax
    mov [r_fl], eax
    PUTSN "back from the SMI"
    SHOW eax, [r_eax]
    SHOW ebx, [r_ebx]
    SHOW ecx, [r_ecx]
    SHOW edx, [r_edx]
    SHOW esi, [r_esi]
    SHOW edi, [r_edi]
    SHOW ebp, [r_ebp]
    SHOW eflags, [r_fl]
    mov [saved], esp
    SHOW esp, [saved]
    xor eax, eax
    mov ax, cs
    mov [saved], eax
    SHOW cs, [saved]
    mov ax, ds
    mov [saved], eax
    SHOW ds, [saved]
    mov ax, ss
    mov [saved], eax
    SHOW ss, [saved]
    mov ax, es
    mov [saved], eax
    SHOW es, [saved]
    sgdt [dt]
    SHOW gdt, [dt + 2]
    sidt [dt]
    movzx eax, word ptr [dt]
    mov [saved], eax
    SHOW idt-limit, [saved]
    xor eax, eax
    in al, 0xb2
    mov [saved], eax
    SHOW apm-cnt, [saved]
    SHOW image, [0x100000]              # the flat 4 GiB data segment still there
    xor eax, eax
    in al, 0x71                         # which CMOS byte the handler left selected
    mov [saved], eax
    SHOW cmos, [saved]
    pop ecx
    dec ecx
    jnz again
    ret

.align 4, 0
saved: .long 0
r_eax: .long 0
r_ebx: .long 0
r_ecx: .long 0
r_edx: .long 0
r_esi: .long 0
r_edi: .long 0
r_ebp: .long 0
r_fl: .long 0
dt: .quad 0
"""

CASES = {"fast-default": (), "bios-256k": ("-bios", BIOS_256K), "bios": ("-bios", "/usr/share/seabios/bios.bin")}


@pytest.fixture
def image(tmp_path, firmware):
    src = tmp_path / "smi.S"
    src.write_text('.include "uvirt.inc"\n' + PROGRAM)
    return firmware(src)


@pytest.mark.qemu
@pytest.mark.parametrize("case", list(CASES))
def test_an_smi_from_the_guest_returns_as_on_qemu(image, qemu, case):
    args = CASES[case]
    if args and not os.path.exists(args[1]):
        pytest.skip(f"{args[1]} missing")
    ref = qemu(image, args)
    res = run_uvirt(image, args, timeout=60)
    assert ref.exit_code == res.exit_code == 1, res.stop.report()
    assert res.debugcon == ref.debugcon
    assert res.debugcon.count("back from the SMI") == 2
    assert "eflags 00000403" in res.debugcon                 # CF and DF as they were


def test_the_fast_default_takes_the_smi_at_smbase_a0000(image, monkeypatch):
    """The firmware step leaves SMM as bios-256k.bin does: SMBASE 0xA0000, and the SMI
    runs the handler there (in SMRAM, which the guest outside SMM cannot see)."""
    from uvirt.cpu.machine import Machine
    seen = []
    enter = Machine._smm_enter

    def counting(self):
        seen.append((self.smbase, self.uc.reg_read(__import__("unicorn").x86_const.UC_X86_REG_EIP)))
        enter(self)

    monkeypatch.setattr(Machine, "_smm_enter", counting)
    res = run_uvirt(image, timeout=30)
    assert res.exit_code == 1, res.stop.report()
    assert [s for s, _ in seen] == [0xA0000, 0xA0000]


@pytest.mark.qemu
@pytest.mark.parametrize("smm", ["auto", "off"])
def test_the_fast_default_leaves_smram_as_qemus_firmware_does(firmware, qemu, smm):
    """bios-256k.bin sets SMM up (SMRAM 0x0a, G_SMRAME) unless smm=off, where PIIX4 says
    it is done and SMRAM keeps its reset value 0x02: the whole config space of bus 0 as
    firmware/pci_dump.S prints it is QEMU's either way."""
    image = firmware("pci_dump")
    args = ("-machine", f"pc,smm={smm}")
    ref = qemu(image, args)
    res = run_uvirt(image, args, timeout=30)
    assert ref.exit_code == res.exit_code
    assert res.debugcon == ref.debugcon
    assert ("00:00.0" in res.debugcon)


def test_a_restore_leaves_smm(image):
    """A run stopped inside the SMI handler, then a restore of the snapshot taken before:
    the CPU is out of SMM, SMRAM hidden again, and the guest runs as before."""
    from uvirt.backends.chardev import MemoryChardev
    from uvirt.boot import firmware_step as bios
    from uvirt.cpu.machine import Machine
    with Machine() as m:
        con = MemoryChardev()
        m.add_debugcon(con)
        m.add_debug_exit(0xF4, 4)
        bios.firmware_step(m)
        m.load_kernel(image.read_bytes())
        snap = m.snapshot()
        enter = m._smm_enter

        def enter_and_stop():
            enter()
            m.interrupt()
        m._smm_enter = enter_and_stop
        m.run(timeout=30)
        assert m.in_smm and m.lowmem.smm
        m.restore(snap)
        assert not m.in_smm and not m.lowmem.smm and m.smbase == 0xA0000
        del m._smm_enter
        before = con.text.count("back from the SMI")
        stop = m.run(timeout=30)
        assert stop.exit_code == 1, stop.report()
        assert con.text.count("back from the SMI") == before + 2
