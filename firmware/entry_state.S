# entry_state.S - the CPU state QEMU's multiboot loader leaves at the entry point.
#
# The entry stub of uvirt.inc saves EAX/EBX/ESP/EFLAGS before touching anything;
# everything else is read here (the stub changes only ESP and DF).  Output:
#     ENTRY eax=.. ebx=.. esp=.. eflags=..
#     ENTRY cr0=.. cr3=.. cr4=..
#     ENTRY cs=.. ds=.. es=.. ss=.. fs=.. gs=..
#     ENTRY gdtr base=.. limit=..
#     ENTRY idtr base=.. limit=..
#     GDT i: hi lo          (each descriptor of the GDT, high dword then low dword)
.include "uvirt.inc"

main:
    PUTS "ENTRY eax="
    PUTHEX32 [boot_eax]
    PUTS " ebx="
    PUTHEX32 [boot_ebx]
    PUTS " esp="
    PUTHEX32 [boot_esp]
    PUTS " eflags="
    PUTHEX32 [boot_eflags]
    call put_nl
    PUTS "ENTRY cr0="
    mov eax, cr0
    call put_hex32
    PUTS " cr3="
    mov eax, cr3
    call put_hex32
    PUTS " cr4="
    mov eax, cr4
    call put_hex32
    call put_nl
    PUTS "ENTRY cs="
    xor eax, eax
    mov ax, cs
    call put_hex16
    PUTS " ds="
    mov ax, ds
    call put_hex16
    PUTS " es="
    mov ax, es
    call put_hex16
    PUTS " ss="
    mov ax, ss
    call put_hex16
    PUTS " fs="
    mov ax, fs
    call put_hex16
    PUTS " gs="
    mov ax, gs
    call put_hex16
    call put_nl
    SGDT gdtr_buf
    SIDT idtr_buf
    PUTS "ENTRY gdtr base="
    PUTHEX32 [gdtr_buf+2]
    PUTS " limit="
    movzx eax, word ptr [gdtr_buf]
    call put_hex16
    call put_nl
    PUTS "ENTRY idtr base="
    PUTHEX32 [idtr_buf+2]
    PUTS " limit="
    movzx eax, word ptr [idtr_buf]
    call put_hex16
    call put_nl
    # the GDT's descriptors
    mov esi, [gdtr_buf+2]
    movzx ecx, word ptr [gdtr_buf]
    inc ecx
    shr ecx, 3                          # descriptor count
    xor ebx, ebx
gdt_loop:
    test ecx, ecx
    jz gdt_done
    PUTS "GDT "
    PUTDEC ebx
    PUTS ": "
    PUTHEX32 [esi+4]
    PUTC ' '
    PUTHEX32 [esi]
    call put_nl
    add esi, 8
    inc ebx
    dec ecx
    jmp gdt_loop
gdt_done:
    ret

.align 4, 0
gdtr_buf: .word 0
          .long 0
          .word 0
idtr_buf: .word 0
          .long 0
          .word 0
