# ivshmem_doorbell.S - ivshmem-doorbell with MSI-X, against an ivshmem server and a host
# peer (uvirt.testing.ivshmem runs both).  Run with
#   -chardev socket,path=SOCK,id=c -device ivshmem-doorbell,chardev=c,vectors=2
# The host peer (id 0) joins first and fills the memory with byte i = (i*13+7) & 0xff,
# so this guest is peer 1.
#
# Prints, after what ivshmem_plain.S prints (identity, BARs, registers, memory):
#   IVPOS, the MSI-X capability fields, table entries and PBA as reset left them;
#   PBA after MSI-X is enabled with every vector masked, after rings of the guest's own
#   vectors 0 and 1 (each polled until its pending bit shows), after doorbells to a
#   missing vector and a missing peer, and after unmasking vector 0 with bus mastering
#   off (the pending message is sent nowhere, the bit clears);
#   HOST: the handshake -- the guest writes cafe0001 at 0x10 and rings peer 0 vector 0,
#   the host answers beef0002 at 0x14 and rings the guest's vector 1;
#   MSI: vector 0 unmasked with bus mastering on, pointed at RAM 0x200000: a ring of
#   vector 0 writes its data there; with MSI-X disabled a ring changes nothing;
#   then the guest pattern (checked by the host).
.include "uvirt.inc"
.include "ivshmem.inc"

.set MSI_RAM, 0x200000
.set POLL_SHORT, 200000

msix_cap:  .long 0
msix_tab:  .long 0
msix_pba:  .long 0
own_id:    .long 0

.macro PBA msg
    push eax
    PUTS \msg
    mov eax, [msix_pba]
    mov eax, [eax]
    call put_hex32
    call put_nl
    pop eax
.endm

# eax = doorbell value
ring:
    push edx
    mov edx, [ivs_bar0]
    mov [edx+0x0c], eax
    pop edx
    ret

# eax = PBA mask -> waits (bounded) until those PBA bits are set; prints "WAIT ok/timeout"
wait_pba:
    push ecx
    push edx
    mov edx, eax
    mov ecx, eax
    mov eax, [msix_pba]
    call poll_mmio32
    PUTS "WAIT "
    test eax, eax
    jz wait_pba_to
    PUTSN "ok"
    jmp wait_pba_out
wait_pba_to:
    PUTSN "timeout"
wait_pba_out:
    pop edx
    pop ecx
    ret

# eax = vector, edx = 1 mask / 0 unmask
vec_ctrl:
    push eax
    shl eax, 4
    add eax, [msix_tab]
    mov [eax+12], edx
    pop eax
    ret

# ecx = command bits to set (others cleared from bus master)
set_master:
    push eax
    push edx
    mov eax, [ivs_bdf]
    mov edx, 0x04
    call pci_write16
    pop edx
    pop eax
    ret

main:
    call ivs_find
    REQUIRE_FOUND "FAIL: no ivshmem device"
    call ivs_ident
    call ivs_regs
    mov eax, [ivs_bar0]
    mov eax, [eax+8]
    mov [own_id], eax
    PUTS "IVPOS "
    call put_hex32
    call put_nl
    call ivs_mem_host

    # ---- MSI-X capability
    mov eax, [ivs_bdf]
    mov edx, 0x34
    call pci_read8
    mov [msix_cap], eax
    mov edx, eax
    add edx, 4
    mov eax, [ivs_bdf]
    call pci_read32
    and eax, 0xfffffff8
    add eax, [ivs_bar1]
    mov [msix_tab], eax
    mov eax, [ivs_bdf]
    add edx, 4
    call pci_read32
    and eax, 0xfffffff8
    add eax, [ivs_bar1]
    mov [msix_pba], eax
    mov esi, 0
tab_loop:
    PUTS "TAB "
    mov eax, esi
    call put_hex8
    mov ebx, 0
tab_dw:
    PUTC ' '
    mov eax, esi
    shl eax, 4
    add eax, [msix_tab]
    mov eax, [eax+ebx*4]
    call put_hex32
    inc ebx
    cmp ebx, 4
    jb tab_dw
    call put_nl
    inc esi
    cmp esi, 2
    jb tab_loop
    PBA "PBA reset "

    # ---- rings of our own vectors: nothing while MSI-X is disabled
    mov eax, [own_id]
    shl eax, 16
    call ring
    mov ecx, POLL_SHORT
spin0:
    dec ecx
    jnz spin0
    PBA "PBA msix off, rung 0: "
    mov eax, [ivs_bdf]
    mov edx, [msix_cap]
    add edx, 2
    mov ecx, 0x8000
    call pci_write16
    PUTS "MSIX ctrl "
    call pci_read16
    call put_hex16
    call put_nl
    PBA "PBA enabled "
    mov eax, [own_id]
    shl eax, 16
    call ring
    mov eax, 1
    call wait_pba
    PBA "PBA rung 0: "
    mov eax, [own_id]
    shl eax, 16
    or eax, 1
    call ring
    mov eax, 3
    call wait_pba
    PBA "PBA rung 1: "
    mov eax, [own_id]
    shl eax, 16
    or eax, 0x107                       # vector field 0x107: QEMU uses val & 0xff = 7
    call ring
    mov eax, 0x12340000
    call ring
    mov ecx, POLL_SHORT
spin1:
    dec ecx
    jnz spin1
    PBA "PBA missing vector/peer: "
    mov ecx, [ivs_cmd]
    and ecx, 0xfffb
    or ecx, 2
    call set_master                     # bus master off
    mov eax, 0
    mov edx, 0
    call vec_ctrl
    PBA "PBA unmask 0: "
    mov edx, 1
    call vec_ctrl
    mov eax, 1
    mov edx, 0
    call vec_ctrl
    mov edx, 1
    call vec_ctrl
    PBA "PBA unmask 1: "

    # ---- handshake with the host peer (id 0)
    mov eax, [ivs_bar2]
    mov dword ptr [eax+0x10], 0xcafe0001
    mov eax, 0x00000000                 # peer 0, vector 0
    call ring
    mov eax, 2
    call wait_pba
    PBA "PBA host rang 1: "
    PUTS "HOST reply "
    mov eax, [ivs_bar2]
    mov eax, [eax+0x14]
    call put_hex32
    call put_nl

    # ---- an unmasked vector sends its message: point vector 0 at RAM
    mov dword ptr [MSI_RAM], 0
    mov eax, [msix_tab]
    mov dword ptr [eax], MSI_RAM
    mov dword ptr [eax+4], 0
    mov dword ptr [eax+8], 0x4321
    mov ecx, [ivs_cmd]
    or ecx, 6
    call set_master                     # memory + bus master
    mov eax, 0
    mov edx, 0
    call vec_ctrl
    mov eax, [own_id]
    shl eax, 16
    call ring
    mov eax, MSI_RAM
    mov edx, 0xffffffff
    mov ecx, 0x4321
    call poll_mmio32
    PUTS "MSI delivered "
    call put_hex8
    PUTS " ram "
    mov eax, [MSI_RAM]
    call put_hex32
    call put_nl
    PBA "PBA after MSI: "
    # MSI-X disabled: a ring does nothing, nothing is pending when it comes back on
    mov dword ptr [MSI_RAM], 0
    mov eax, [ivs_bdf]
    mov edx, [msix_cap]
    add edx, 2
    mov ecx, 0
    call pci_write16
    mov eax, [own_id]
    shl eax, 16
    call ring
    mov ecx, POLL_SHORT
spin2:
    dec ecx
    jnz spin2
    mov eax, [ivs_bdf]
    mov ecx, 0x8000
    call pci_write16
    mov ecx, POLL_SHORT
spin3:
    dec ecx
    jnz spin3
    PUTS "MSI disabled ram "
    mov eax, [MSI_RAM]
    call put_hex32
    call put_nl
    PBA "PBA end "
    call ivs_mem_guest
    PUTSN "DONE"
    ret
