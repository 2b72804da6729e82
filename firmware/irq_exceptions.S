# irq_exceptions.S - CPU exceptions and software interrupts through the guest IDT.
#
# Each line shows the frame the handler received: vector, error code (0 when none is
# pushed), EIP relative to the faulting/next instruction label, CS, EFLAGS.
#   #UD (ud2) and #DE (div by 0), twice each (the second must not become #DF);
#   #GP from loading a bad data selector (error code = selector);
#   int3, into, int 0x80 (next EIP), an interrupt gate clearing IF, a trap gate not;
#   a not-present gate for int n and for a hardware interrupt (MSI) -> #NP(vec*8+2);
#   a gate of a bad type -> #GP(vec*8+2); a vector past the IDT limit -> #GP(vec*8+2).
.include "uvirt.inc"
.include "irq.inc"

.macro FRAME name
    PUTS \name
    PUTS " vec "
    call put_hex8
    PUTS " err "
    PUTHEX32 [edx+4]
    PUTS " eip "
    push eax
    mov eax, [edx+8]
    sub eax, [expect_eip]
    call put_hex32
    pop eax
    PUTS " cs "
    PUTHEX16 [edx+12]
    PUTS " fl "
    PUTHEX32 [edx+16]
    call put_nl
.endm

main:
    call irq_init
    mov edx, on_fault
    mov eax, 0
    call irq_set_handler
    mov eax, 6
    call irq_set_handler
    mov eax, 11
    call irq_set_handler
    mov eax, 13
    call irq_set_handler
    mov edx, on_trap
    mov eax, 3
    call irq_set_handler
    mov eax, 4
    call irq_set_handler
    mov eax, 0x80
    call irq_set_handler
    mov eax, 0x81
    call irq_set_handler
    mov eax, 0x42
    call irq_set_handler

    mov dword ptr [skip], 2
    mov dword ptr [expect_eip], l_ud1
l_ud1:
    ud2
    mov dword ptr [expect_eip], l_ud2
l_ud2:
    ud2
    mov ecx, 0
    mov dword ptr [expect_eip], l_de1
    mov eax, 7
    xor edx, edx
l_de1:
    div ecx
    mov dword ptr [expect_eip], l_de2
    mov eax, 7
    xor edx, edx
l_de2:
    div ecx
    mov ax, 0x33
    mov dword ptr [expect_eip], l_gp1
l_gp1:
    .byte 0x8e, 0xd8                    # mov ds, eax (2 bytes; keystone adds a 0x66)
    mov ax, 0x10
    .byte 0x8e, 0xd8

    mov dword ptr [expect_eip], l_bp
    int3
l_bp:
    mov eax, 0x7fffffff
    add eax, 1
    mov dword ptr [expect_eip], l_of
    into
l_of:
    mov dword ptr [expect_eip], l_80
    sti
    int 0x80
l_80:
    cli
    # vector 0x81 as a trap gate: IF stays set in the handler
    or byte ptr [IDT_BASE + 0x81*8 + 5], 0x01
    mov dword ptr [expect_eip], l_81
    sti
    int 0x81
l_81:
    cli

    # not-present gate, software interrupt: #NP(0x20a) at the int
    and byte ptr [IDT_BASE + 0x41*8 + 5], 0x7f
    mov dword ptr [expect_eip], l_np1
l_np1:
    int 0x41
    # not-present gate, hardware interrupt (MSI 0x43): #NP(0x21a) at the interrupted EIP
    and byte ptr [IDT_BASE + 0x43*8 + 5], 0x7f
    mov dword ptr [skip], 0
    mov eax, 0xfee00000
    mov edx, 0x43
    call msi_send
    mov dword ptr [expect_eip], l_np2
    sti
    nop
l_np2:
    cli
    PUTS "ISR2 "
    mov eax, 0x120
    call lapic_read
    call put_hex32
    call put_nl
    call lapic_eoi
    # gate of type 0 -> #GP(0x222)
    mov dword ptr [skip], 2
    mov byte ptr [IDT_BASE + 0x44*8 + 5], 0x80
    mov dword ptr [expect_eip], l_gp2
l_gp2:
    int 0x44
    # IDT limit too small for vector 0x50 -> #GP(0x282)
    mov eax, [__irq_idtr+2]
    mov [small_idtr+2], eax
    LIDT small_idtr
    mov dword ptr [expect_eip], l_gp3
l_gp3:
    int 0x50
    LIDT __irq_idtr
    PUTS "ESP "
    mov eax, esp
    call put_hex32
    call put_nl
    ret

on_fault:
    FRAME "FAULT"
    push eax
    mov eax, [skip]
    add [edx+8], eax
    pop eax
    ret

on_trap:
    FRAME "TRAP"
    ret

.align 4, 0
skip:       .long 0
expect_eip: .long 0
small_idtr: .word 0x27f
            .long 0
            .word 0
