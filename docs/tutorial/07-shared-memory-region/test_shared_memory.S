# [uvirt]
# extra_params = -device virtio-rng-pci,disable-legacy=on,memory-regions=64K
# groups = tutorial virtio memory
# qemu = no
#
# Lesson 7: a shared memory region (VIRTIO 1.2 §2.10, on PCI §4.1.4.7): memory the
# device hands the driver behind a BAR.  Guest loads and stores go straight to a host
# buffer, no device code in between, and the host sees every byte at once.
# (memory-regions= is uvirt's own property: QEMU 7.2's virtio-rng has no regions.)
.include "uvirt.inc"

.set SHARED_MEMORY_CFG, 8        # cfg_type of VIRTIO_PCI_CAP_SHARED_MEMORY_CFG
# struct virtio_pci_cap64: virtio_pci_cap, then the upper halves of offset and length
.set CFG_TYPE, 3
.set CAP_BAR, 4
.set SHMID, 5                    # "id": which region
.set OFFSET_LO, 8
.set LENGTH_LO, 12
.set OFFSET_HI, 16
.set LENGTH_HI, 20

.align 4, 0
bdf:    .long 0
region: .long 0

main:
    mov eax, 0x10441af4
    call pci_find
    REQUIRE_FOUND "FAIL: no modern virtio-rng-pci"
    mov [bdf], eax
    mov edx, 0x34
    call pci_read8
    mov esi, eax
find:
    and esi, 0xfc
    jz not_found
    mov eax, [bdf]
    mov edx, esi
    call pci_read16              # id (low byte) and next (high byte)
    mov ebx, eax
    cmp bl, 0x09
    jne next
    mov eax, [bdf]
    lea edx, [esi + CFG_TYPE]
    call pci_read8
    cmp eax, SHARED_MEMORY_CFG
    je found
next:
    movzx esi, bh
    jmp find
not_found:
    PUTSN "FAIL: no shared memory capability (run with memory-regions=64K)"
    EXIT 1
found:
    PUTS "shared memory capability at "
    mov eax, esi
    call put_hex8
    PUTS ": shmid "
    mov eax, [bdf]
    lea edx, [esi + SHMID]
    call pci_read8
    call put_dec
    PUTS " bar "
    mov eax, [bdf]
    lea edx, [esi + CAP_BAR]
    call pci_read8
    mov edi, eax
    call put_dec
    PUTS " offset "
    mov eax, [bdf]
    lea edx, [esi + OFFSET_HI]
    call pci_read32
    call put_hex32
    mov eax, [bdf]
    lea edx, [esi + OFFSET_LO]
    call pci_read32
    mov ecx, eax
    call put_hex32
    PUTS " length "
    mov eax, [bdf]
    lea edx, [esi + LENGTH_HI]
    call pci_read32
    call put_hex32
    mov eax, [bdf]
    lea edx, [esi + LENGTH_LO]
    call pci_read32
    call put_hex32
    call put_nl
    # the region's address: its BAR (64-bit, below 4 GiB here) plus the offset
    mov eax, [bdf]
    lea edx, [edi*4 + 0x10]
    call pci_read32
    and eax, 0xfffffff0
    add eax, ecx
    mov [region], eax
    PUTS "FW region 0 at "
    call put_hex32
    call put_nl
    # it is memory: plain stores and loads, no registers, no notification
    mov edi, [region]
    mov esi, message
    mov ecx, message_end - message
    rep movsb
    mov edi, [region]
    mov dword ptr [edi + 0xfffc], 0x600dcafe   # the last dword of 64 KiB
    REPORT_EQ [edi + 0xfffc], 0x600dcafe, "the last dword reads back"
    PUTS "the region now starts with: "
    mov eax, [region]
    call puts
    call put_nl
    call report_summary
    ret

message:
    .asciz "hello from the guest, host"
message_end:
