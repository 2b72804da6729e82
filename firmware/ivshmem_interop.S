# ivshmem_interop.S - two guests on one ivshmem server (ids 0 and 1; QEMU and uvirt, or
# any two) share memory and ring each other.  Run with
#   -chardev socket,path=SOCK,id=c -device ivshmem-doorbell,chardev=c,vectors=1
#
# Memory layout: slot of peer p at 0x100 + p*0x10: +0 hello (4e110000 | p), +4 "I was
# rung", +8 "my data is written"; data of peer p at 0x2000 + p*0x1000: dword k =
# a0000000 | p<<16 | k.  Each guest, with MSI-X enabled and its vector masked (it polls
# the PBA, as QEMU's ivshmem-test does): writes hello, rings the other peer until it has
# been rung itself AND the other says it was rung, writes its data, waits for the
# other's data and checks it.  Prints IVPOS, "RUNG ok", "PEER RUNG ok", "DATA ok".
.include "uvirt.inc"
.include "ivshmem.inc"

.set OUTER_MAX, 200000
.set INNER_MAX, 2000

own:   .long 0
other: .long 0
pba:   .long 0
got:   .long 0

# eax = peer -> eax = address of its slot
slot:
    shl eax, 4
    add eax, 0x100
    add eax, [ivs_bar2]
    ret

main:
    call ivs_find
    REQUIRE_FOUND "FAIL: no ivshmem device"
    mov eax, [ivs_bdf]
    mov edx, 0x04
    mov ecx, 0x0002
    call pci_write16                    # memory decode, no bus master
    mov eax, [ivs_bar0]
    mov eax, [eax+8]
    mov [own], eax
    xor eax, 1
    mov [other], eax
    PUTS "IVPOS "
    mov eax, [own]
    call put_hex8
    call put_nl
    mov eax, [ivs_bdf]
    mov edx, 0x34
    call pci_read8
    lea edx, [eax+8]
    mov ebx, eax
    mov eax, [ivs_bdf]
    call pci_read32
    and eax, 0xfffffff8
    add eax, [ivs_bar1]
    mov [pba], eax
    mov eax, [ivs_bdf]
    lea edx, [ebx+2]
    mov ecx, 0x8000
    call pci_write16                    # MSI-X on, vector 0 stays masked
    mov eax, [own]
    call slot
    mov ecx, [own]
    or ecx, 0x4e110000
    mov [eax], ecx

    mov esi, OUTER_MAX
outer:
    mov eax, [other]
    shl eax, 16
    mov edx, [ivs_bar0]
    mov [edx+0x0c], eax                 # ring the other peer, vector 0
    mov ecx, INNER_MAX
inner:
    mov eax, [pba]
    test dword ptr [eax], 1
    jnz rung
    dec ecx
    jnz inner
    jmp check
rung:
    mov dword ptr [got], 1
    mov eax, [own]
    call slot
    mov dword ptr [eax+4], 1
check:
    cmp dword ptr [got], 1
    jne next
    mov eax, [other]
    call slot
    cmp dword ptr [eax+4], 1
    je done_ringing
next:
    dec esi
    jnz outer
    PUTSN "FAIL: ring timeout"
    EXIT 2
done_ringing:
    PUTSN "RUNG ok"
    PUTSN "PEER RUNG ok"

    mov edi, [own]
    shl edi, 12
    add edi, 0x2000
    add edi, [ivs_bar2]
    mov ebx, [own]
    shl ebx, 16
    or ebx, 0xa0000000
    xor ecx, ecx
fill:
    lea eax, [ebx+ecx]
    mov [edi+ecx*4], eax
    inc ecx
    cmp ecx, 1024
    jb fill
    mov eax, [own]
    call slot
    mov dword ptr [eax+8], 1

    mov eax, [other]
    call slot
    add eax, 8
    mov edx, 0xffffffff
    mov ecx, 1
    call poll_mmio32
    test eax, eax
    jnz check_data
    PUTSN "FAIL: peer data timeout"
    EXIT 2
check_data:
    mov edi, [other]
    shl edi, 12
    add edi, 0x2000
    add edi, [ivs_bar2]
    mov ebx, [other]
    shl ebx, 16
    or ebx, 0xa0000000
    xor ecx, ecx
    xor edx, edx
verify:
    lea eax, [ebx+ecx]
    cmp [edi+ecx*4], eax
    je verify_ok
    inc edx
verify_ok:
    inc ecx
    cmp ecx, 1024
    jb verify
    PUTS "DATA "
    test edx, edx
    jnz data_bad
    PUTSN "ok"
    ret
data_bad:
    PUTS "bad "
    mov eax, edx
    call put_hex32
    call put_nl
    EXIT 2
