# ITERS MSI round trips: the guest raises an MSI (a 32-bit store of the vector to
# 0xFEE00000, exactly what a device's MSI write does on both emulators), waits with IF=1
# until the handler has run (it counts and writes the APIC EOI).  The vector rotates over
# 0x41 .. 0x41+VECTORS-1 (default 1 vector).
.include "uvirt.inc"
.include "irq.inc"
.ifndef VECTORS
.set VECTORS, 1
.endif

main:
    call idt_setup
    mov eax, 0x20                       # PIC out of the way (SeaBIOS left IRQ0 at vector 8)
    mov edx, 0x28
    call pic_init
    xor ebx, ebx
install:
    lea eax, [ebx + 0x41]
    mov edx, on_msi
    call irq_set_handler
    inc ebx
    cmp ebx, VECTORS
    jb install
    mov ecx, ITERS
    test ecx, ecx
    jz done
    xor edi, edi                        # the vector to raise next, 0 .. VECTORS-1
    sti
again:
    mov ebx, [hits]
    lea eax, [edi + 0x41]
    mov [0xfee00000], eax               # the MSI
wait:
    cmp [hits], ebx
    je wait
    inc edi
    cmp edi, VECTORS
    jb same
    xor edi, edi
same:
    dec ecx
    jnz again
    cli
done:
    ret
on_msi:
    inc dword ptr [hits]
    mov dword ptr [0xfee000b0], 0       # EOI
    ret
.align 4, 0
hits: .long 0
