# pci_dump.S - the full 256-byte configuration space of every function on bus 0.
#
# Output (after the BOOT line), per present function, in lspci -xxx layout:
#     00:01.0 8086:7000
#     00: 86 80 00 70 07 00 00 02 00 00 01 06 00 00 80 00
#     ...
#     f0: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
# then "DONE N functions".  Read with 32-bit config reads only (no side effects on
# QEMU's devices).  Values are what the guest sees at entry, i.e. after SeaBIOS.
.include "uvirt.inc"

main:
    xor ebx, ebx                        # bdf (bus 0)
    xor edi, edi                        # functions found
dump_next:
    mov eax, ebx
    xor edx, edx
    call pci_read32
    cmp ax, 0xffff
    je dump_absent
    inc edi
    mov esi, eax
    mov eax, ebx
    call put_bdf
    PUTC ' '
    PUTHEX16 esi
    PUTC ':'
    mov eax, esi
    shr eax, 16
    call put_hex16
    call put_nl
    call dump_function
    test bl, 7
    jnz dump_step                       # function > 0: keep scanning functions
    mov eax, ebx
    mov edx, 0x0e
    call pci_read8
    test al, 0x80
    jnz dump_step                       # multi-function: scan functions 1..7
    jmp dump_next_slot
dump_absent:
    test bl, 7
    jnz dump_step
dump_next_slot:                         # function 0 absent or single-function device
    or ebx, 7
dump_step:
    inc ebx
    cmp ebx, 0x100
    jb dump_next
    PUTS "DONE "
    PUTDEC edi
    PUTSN " functions"
    ret

# ebx = bdf: 16 lines of 16 bytes
dump_function:
    push esi
    xor esi, esi                        # offset
dump_line:
    mov eax, esi
    call put_hex8
    PUTC ':'
dump_dword:
    mov eax, ebx
    mov edx, esi
    call pci_read32
    mov ecx, 4
dump_byte:
    PUTC ' '
    call put_hex8
    shr eax, 8
    dec ecx
    jnz dump_byte
    add esi, 4
    test esi, 0x0f
    jnz dump_dword
    call put_nl
    cmp esi, 0x100
    jb dump_line
    pop esi
    ret
