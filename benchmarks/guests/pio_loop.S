# ITERS port reads of a Python device register at port 0x510 (uvirt's bench register).
.include "uvirt.inc"
main:
    mov dx, 0x510
    mov ecx, ITERS
pio_loop:
    in eax, dx
    dec ecx
    jnz pio_loop
    ret
