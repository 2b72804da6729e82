# irq_timing.S - where exactly a hardware interrupt lands: the instruction the CPU was
# about to run (the pushed EIP, printed relative to a label: 0 = at the label) and the
# registers the interrupted code had set.  An MSI raised with IF=1 (QEMU's TCG takes it
# right after the store that raised it), raised with IF=0 and released by
# STI (after the one instruction of the STI shadow) or by POPF (at once), held back by
# the TPR and released by a TPR write, a lower vector raised inside a handler (after EOI
# and IRET), an exception raised in the STI shadow with an interrupt pending (the
# exception first), and the same through a trap gate (the interrupt nests at once); a PIC
# IRQ and an MSI pending together (the PIC's first, then the MSI after IRET, or at once
# when the PIC's vector has a trap gate).
.include "uvirt.inc"
.include "irq.inc"

.macro MSI vec
    mov dword ptr [0xfee00000], \vec
.endm
.macro SHOW label
    PUTS " count "
    PUTDEC [rec_count]
    PUTS " eip "
    mov eax, [rec_eip]
    mov edx, \label
    sub eax, edx
    call put_hex32
    PUTS " ebx "
    PUTHEX32 [rec_ebx]
    PUTS " ecx "
    PUTHEX32 [rec_ecx]
    call put_nl
    mov dword ptr [rec_count], 0
    mov dword ptr [rec_eip], 0
.endm

main:
    call irq_init
    mov edx, on_rec
    mov eax, 0x41
    call irq_set_handler
    mov edx, on_nest
    mov eax, 0x51
    call irq_set_handler
    mov edx, on_bp
    mov eax, 3
    call irq_set_handler
    mov edx, on_irq0
    mov eax, 0x20
    call irq_set_handler

    PUTS "IF=1, raised by a store:"
    xor ebx, ebx
    xor ecx, ecx
    sti
    MSI 0x41
    mov ebx, 1
    jmp c1_after
c1_after:
    mov ebx, 0x11
    cli
    SHOW c1_after

    PUTS "IF=0, STI shadow:"
    MSI 0x41
    mov ebx, 2
    sti
    mov ecx, 2
c2_after:
    mov ecx, 0x22
    cli
    SHOW c2_after

    PUTS "IF=0, POPF:"
    xor ecx, ecx
    MSI 0x41
    mov ebx, 3
    pushfd
    or dword ptr [esp], 0x200
    popfd
c3_after:
    mov ecx, 3
    cli
    SHOW c3_after

    PUTS "TPR 0x50 holds 0x41:"
    mov dword ptr [0xfee00080], 0x50
    sti
    MSI 0x41
    mov ebx, 4
    jmp c4_held
c4_held:
    mov ecx, 4
    PUTDEC [rec_count]
    PUTS " released:"
    mov dword ptr [0xfee00080], 0
    jmp c4_after
c4_after:
    mov ecx, 0x44
    cli
    SHOW c4_after

    PUTS "0x41 raised in the 0x51 handler:"
    sti
    MSI 0x51
    jmp c5_after
c5_after:
    cli
    PUTS " log "
    mov eax, [log]
    call put_hex32
    SHOW c5_after

    PUTS "#BP in the STI shadow, 0x41 pending:"
    mov dword ptr [log], 0
    xor ecx, ecx
    MSI 0x41
    sti
    int3
c6_after:
    mov ecx, 6
    cli
    PUTS " log "
    mov eax, [log]
    call put_hex32
    SHOW c6_after

    PUTS "the same, #BP through a trap gate:"
    mov eax, [__irq_idtr + 2]
    mov byte ptr [eax + 3*8 + 5], 0x8f
    mov dword ptr [log], 0
    MSI 0x41
    sti
    int3
c7_after:
    mov ecx, 7
    cli
    PUTS " log "
    mov eax, [log]
    call put_hex32
    SHOW c7_after

    PUTS "PIC IRQ0 and MSI 0x41 pending:"
    call both_pending
    sti
    nop
c8_after:
    cli
    PUTS " log "
    mov eax, [log]
    call put_hex32
    SHOW c8_after

    PUTS "the same, IRQ0 through a trap gate:"
    mov eax, [__irq_idtr + 2]
    mov byte ptr [eax + 0x20*8 + 5], 0x8f
    call both_pending
    sti
    nop
c9_after:
    cli
    PUTS " log "
    mov eax, [log]
    call put_hex32
    SHOW c9_after
    ret

# IRQ0 latched in the PIC's IRR (masked while the PIT ticks), then unmasked with IF=0,
# and MSI 0x41: both pending for the next STI
both_pending:
    mov dword ptr [log], 0
    mov ax, 0xffff
    call pic_set_mask
    mov eax, 0xffff
    call pit_start
both_wait:
    call pic_read_irr
    test al, 1
    jz both_wait
    MSI 0x41
    mov ax, 0xfffe
    call pic_set_mask
    ret

# 0x41: record where it landed (the frame: [edx+8] EIP; pushad below it: EBX at
# [edx-16], ECX at [edx-8]) and append 0x41 to the log
on_rec:
    inc dword ptr [rec_count]
    mov eax, [edx + 8]
    mov [rec_eip], eax
    mov eax, [edx - 16]
    mov [rec_ebx], eax
    mov eax, [edx - 8]
    mov [rec_ecx], eax
    mov al, 0x41
    call log_byte
    call lapic_eoi
    ret

# 0x51: raise 0x41 (lower priority class: waits for this one's EOI, then IF=1)
on_nest:
    mov al, 0x51
    call log_byte
    MSI 0x41
    mov al, 0x5e
    call log_byte
    call lapic_eoi
    mov al, 0xe0
    call log_byte
    ret

on_bp:
    mov al, 0x03
    call log_byte
    ret

on_irq0:
    mov al, 0x20
    call log_byte
    mov ax, 0xffff
    call pic_set_mask
    xor eax, eax
    call pic_eoi
    mov al, 0x2e
    call log_byte
    ret

# log = log << 8 | al
log_byte:
    shl dword ptr [log], 8
    mov byte ptr [log], al
    ret

.align 4, 0
rec_count: .long 0
rec_eip:   .long 0
rec_ebx:   .long 0
rec_ecx:   .long 0
log:       .long 0
