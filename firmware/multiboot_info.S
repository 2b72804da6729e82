# multiboot_info.S - the multiboot information QEMU's loader hands a kernel: flags,
# mem_lower, mem_upper and the memory map (e820 entries: base, length, type).
.include "uvirt.inc"
main:
    mov ebx, [boot_ebx]
    PUTS "flags "
    PUTHEX32 [ebx]
    PUTS " lower "
    PUTHEX32 [ebx+4]
    PUTS " upper "
    PUTHEX32 [ebx+8]
    call put_nl
    mov esi, [ebx+48]
    mov ecx, [ebx+44]
    add ecx, esi
e_loop:
    cmp esi, ecx
    jae e_done
    PUTS "e820 "
    PUTHEX32 [esi+8]
    PUTHEX32 [esi+4]
    PUTC ' '
    PUTHEX32 [esi+16]
    PUTHEX32 [esi+12]
    PUTC ' '
    PUTHEX32 [esi+20]
    call put_nl
    add esi, [esi]
    add esi, 4
    jmp e_loop
e_done:
    ret
