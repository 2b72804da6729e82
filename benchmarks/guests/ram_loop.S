# RAM store+load loop: ITERS iterations of a dword store and a load to one address.
.include "uvirt.inc"
main:
    mov edi, 0x200000
    mov ecx, ITERS
ram_loop:
    mov [edi], ecx
    mov eax, [edi]
    dec ecx
    jnz ram_loop
    ret
