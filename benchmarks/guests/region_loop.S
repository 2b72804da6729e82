# Load/store loop over a 16 KiB window, ITERS iterations, the same instructions whatever
# the window is (benchmarks/bench_regions.py):
#   TARGET=0  guest RAM at 0x200000
#   TARGET=1  BAR 2 of the first 1af4:1005 device (a legacy virtio-rng with
#             memory-regions=: region 0, mapped with mem_map_ptr; or whatever the
#             benchmark placed over it)
#   MODE=0    a dword store and a dword load per iteration (the unicorn-notes "pair")
#   MODE=1    eight dword loads per iteration
.include "uvirt.inc"
.ifndef TARGET
.set TARGET, 0
.endif
.ifndef MODE
.set MODE, 0
.endif
main:
    mov eax, 0x10051af4
    call pci_find
    mov edx, 0x18
    call pci_read32
    and eax, 0xfffffff0
    mov edi, eax
.if TARGET == 0
    mov edi, 0x200000
.endif
    mov ecx, ITERS
    xor esi, esi
region_loop:
.if MODE == 0
    mov [edi+esi], ecx
    mov eax, [edi+esi+4]
.else
    mov eax, [edi+esi]
    mov ebx, [edi+esi+4]
    mov edx, [edi+esi+8]
    mov eax, [edi+esi+12]
    mov ebx, [edi+esi+16]
    mov edx, [edi+esi+20]
    mov eax, [edi+esi+24]
    mov ebx, [edi+esi+28]
.endif
    add esi, 32
    and esi, 0x3fe0
    dec ecx
    jnz region_loop
    ret
