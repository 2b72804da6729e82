# ivshmem doorbell benchmarks (benchmarks/bench_ivshmem.py), peer 1 of a server whose
# host peer is 0.  MSI-X vector 0 is unmasked and pointed at RAM MSI_RAM (bus master on),
# so a ring from the host shows up as a store the guest polls for.
#   MODE 0 (round trip): ITERS times: clear MSI_RAM, ring peer 0 vector 0, poll MSI_RAM.
#   MODE 1 (throughput): ITERS times: ring the host ("output ready"), poll MSI_RAM (the
#   host wrote CHUNK bytes at IN), sum IN (dword loads) into the dword at 0, copy IN to
#   OUT (rep movsd).
.include "uvirt.inc"
.include "ivshmem.inc"

.set MSI_RAM, 0x200000
.set IN, 0x10000
.set OUT, 0x80000
.ifndef CHUNK
.set CHUNK, 0x40000
.endif
.ifndef MODE
.set MODE, 0
.endif

main:
    call ivs_find
    cmp eax, 0xffffffff
    je fail
    mov eax, [ivs_bdf]
    mov edx, 0x04
    mov ecx, 0x0006                     # memory + bus master
    call pci_write16
    mov edx, 0x34
    call pci_read8
    mov ebx, eax                        # MSI-X capability
    lea edx, [ebx+4]
    mov eax, [ivs_bdf]
    call pci_read32
    and eax, 0xfffffff8
    add eax, [ivs_bar1]
    mov dword ptr [eax], MSI_RAM
    mov dword ptr [eax+4], 0
    mov dword ptr [eax+8], 1
    mov dword ptr [eax+12], 0           # unmasked
    mov eax, [ivs_bdf]
    lea edx, [ebx+2]
    mov ecx, 0x8000
    call pci_write16                    # MSI-X on
    mov ebp, [ivs_bar0]
    mov esi, ITERS
round:
    mov dword ptr [MSI_RAM], 0
    mov dword ptr [ebp+0x0c], 0         # ring peer 0, vector 0
    mov ecx, 0xffffffff
wait:
    cmp dword ptr [MSI_RAM], 0
    jne rung
    dec ecx
    jnz wait
    jmp fail
rung:
    mov eax, MODE
    test eax, eax
    jz next_round
    push esi
    mov esi, [ivs_bar2]
    add esi, IN
    mov ecx, CHUNK / 4
    xor eax, eax
sum_loop:
    add eax, [esi]
    add esi, 4
    dec ecx
    jnz sum_loop
    mov edi, [ivs_bar2]
    mov [edi], eax
    mov esi, [ivs_bar2]
    add esi, IN
    add edi, OUT
    mov ecx, CHUNK / 4
    rep movsd dword ptr es:[edi], dword ptr [esi]
    pop esi
next_round:
    dec esi
    jnz round
    ret
fail:
    EXIT 2
