# ivshmem doorbell benchmarks (benchmarks/bench_ivshmem.py), peer 1 of a server whose
# host peer is 0.  ITERS rounds; each round rings peer 0 vector 0 and waits for the host
# peer's ring back on our vector 0 (MSI-X, bus master on).
#   MODE 0 (round trip): MSI-X vector 0 points at RAM MSI_RAM, so the ring back is a
#     plain store the guest spins on (no interrupt, no HLT).
#   MODE 2 (round trip, interrupt): MSI-X vector 0 is a real MSI to the local APIC
#     (0xFEE00000, vector 0x41); the guest waits for it with IF=1 in HLT, as an
#     interrupt-driven driver does, and the handler counts it and writes the APIC EOI.
#   MODE 1 (throughput): as MODE 0, and per round the host wrote CHUNK bytes at IN: the
#     guest sums them (dword loads) into the dword at 0 and copies them to OUT (rep movsd).
.include "uvirt.inc"
.include "irq.inc"
.include "ivshmem.inc"

.set MSI_RAM, 0x200000
.set MSI_VECTOR, 0x41
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
.if MODE == 2
    call idt_setup
    mov eax, 0x20                       # PIC out of the way, all masked
    mov edx, 0x28
    call pic_init
    mov eax, MSI_VECTOR
    mov edx, on_msi
    call irq_set_handler
.endif
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
.if MODE == 2
    mov dword ptr [eax], 0xfee00000     # the local APIC, fixed delivery
    mov dword ptr [eax+4], 0
    mov dword ptr [eax+8], MSI_VECTOR
.else
    mov dword ptr [eax], MSI_RAM
    mov dword ptr [eax+4], 0
    mov dword ptr [eax+8], 1
.endif
    mov dword ptr [eax+12], 0           # unmasked
    mov eax, [ivs_bdf]
    lea edx, [ebx+2]
    mov ecx, 0x8000
    call pci_write16                    # MSI-X on
    mov ebp, [ivs_bar0]
    mov esi, ITERS
.if MODE == 2
round_irq:
    mov ebx, [hits]
    mov dword ptr [ebp+0x0c], 0         # ring peer 0, vector 0
wait_irq:
    cmp [hits], ebx                     # IF=0 here: the handler cannot run between
    jne rung_irq                        # this test and the HLT below
    sti
    hlt                                 # the STI shadow: the interrupt wakes this HLT
    cli
    jmp wait_irq
rung_irq:
    dec esi
    jnz round_irq
    ret
on_msi:
    inc dword ptr [hits]
    mov dword ptr [0xfee000b0], 0       # EOI
    ret
.align 4, 0
hits: .long 0
.else
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
.endif
fail:
    EXIT 2
