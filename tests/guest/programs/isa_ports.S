# Port behaviour of pc -nodefaults' ISA helpers, printed for a differential test:
# debugcon readback and access sizes, debug-exit reads, the PIIX3 reset control register,
# an unclaimed port at every width, unaligned widths.
.include "uvirt.inc"

.macro INB port
    mov dx, \port
    xor eax, eax
    in al, dx
    PUTHEX8 eax
    PUTC ' '
.endm
.macro INW port
    mov dx, \port
    xor eax, eax
    in ax, dx
    PUTHEX16 eax
    PUTC ' '
.endm
.macro IND port
    mov dx, \port
    in eax, dx
    PUTHEX32 eax
    PUTC ' '
.endm

main:
    PUTS "E9 "
    INB 0xe9
    INW 0xe9
    IND 0xe9
    call put_nl
    PUTS "F4 "
    INB 0xf4
    INW 0xf4
    IND 0xf4
    INB 0xf5
    INW 0xf6
    call put_nl
    PUTS "CF9 "
    INB 0xcf9
    INW 0xcf8
    call put_nl
    PUTS "300 "
    INB 0x300
    INW 0x300
    IND 0x300
    INW 0x301
    IND 0x302
    call put_nl
    # debugcon accepts bytes only: a word write prints nothing
    PUTS "W["
    mov dx, 0xe9
    mov ax, 0x4241
    out dx, ax
    mov eax, 0x44434241
    out dx, eax
    PUTSN "]"
    ret
