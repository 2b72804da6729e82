# memregion_modern.S - VIRTIO 1.2 shared memory regions on the PCI transport
# (VIRTIO_PCI_CAP_SHARED_MEMORY_CFG, cfg_type 8, struct virtio_pci_cap64) on a modern
# or transitional virtio device:
#
#     -device virtio-rng-pci,memory-regions=64K:16K                     (transitional)
#     -device virtio-rng-pci,disable-legacy=on,memory-regions=64K:16K   (modern only)
#
# Walks the capability list as Linux's vp_get_shm_region does (vendor caps, cfg_type 8,
# cap_len 24, shmid, bar < 6, 64-bit offset/length inside the BAR), sizes the 64-bit
# prefetchable BAR, checks that the standard modern capabilities still work, writes
# and reads patterns (memregion.inc) at 1/2/4-byte widths, checks the BAR's gap past the
# regions reads 0, moves the BAR, turns decode off and on, and sets the BAR's high dword
# (above 4 GiB: unreachable for a 32-bit guest, reads 0, writes dropped) and back.
# PASS/FAIL lines, then SUMMARY.
#
# What the host finds after the run (tests/guest/test_memory_regions.py): the same as
# memregion_legacy.S (region 0 [0x8000, 0x10000) MR_SEED0; region 1 [0, 0x3FC0) MR_SEED1 and
# 44332211 deadbeef at +0x3FC0).  Build parameters HOST_PATTERN and HANDSHAKE as there.
.include "uvirt.inc"
.include "virtio.inc"
.include "memregion.inc"

.set MOVE_ADDR, 0xE0000000
.set SHM_CFG, 8

.align 4, 0
shm_count: .long 0
shm_pos:   .long 0, 0                   # config-space offset of the cap, per shmid 0..1
shm_bar:   .long 0, 0
shm_off:   .long 0, 0
shm_offhi: .long 0, 0
shm_len:   .long 0, 0
shm_lenhi: .long 0, 0
shm_caplen: .long 0, 0
bar_base:  .long 0
bar_sz:    .long 0
r0:        .long 0
r1:        .long 0

main:
    call mr_mask_irqs
    VIO_REQUIRE 4, "FAIL: no virtio-rng"
    call vio_put_ident
    mov ebx, eax                        # bdf
    call vio_use_modern
    REPORT_TRUE eax, "common, notify and ISR capabilities found (standard layout intact)"

    PUTSN "-- shared memory capabilities"
    call walk_shm_caps
    REPORT_EQ [shm_count], 2, "two cfg_type 8 capabilities"
    REPORT_EQ [shm_caplen], 24, "shmid 0: cap_len 24 (virtio_pci_cap64)"
    REPORT_EQ [shm_caplen+4], 24, "shmid 1: cap_len 24"
    REPORT_EQ [shm_bar], 2, "shmid 0 in BAR 2"
    REPORT_EQ [shm_bar+4], 2, "shmid 1 in BAR 2"
    REPORT_EQ [shm_len], 0x10000, "shmid 0: length 64 KiB"
    REPORT_EQ [shm_lenhi], 0, "shmid 0: length_hi 0"
    REPORT_EQ [shm_len+4], 0x4000, "shmid 1: length 16 KiB"
    REPORT_EQ [shm_offhi], 0, "shmid 0: offset_hi 0"
    REPORT_EQ [shm_offhi+4], 0, "shmid 1: offset_hi 0"
    mov eax, [shm_off]
    and eax, 0xffff
    REPORT_EQ eax, 0, "shmid 0: offset aligned to its size"
    mov eax, [shm_off+4]
    and eax, 0x3fff
    REPORT_EQ eax, 0, "shmid 1: offset aligned to its size"

    PUTSN "-- BAR 2"
    mov eax, [vio_bdf]
    mov edx, 0x18
    call pci_read32
    and eax, 0xf
    REPORT_EQ eax, 0xc, "BAR2: 64-bit prefetchable memory"
    mov eax, 0x18
    call mr_bar_size
    mov [bar_sz], eax
    REPORT_EQ eax, 0x20000, "BAR2: 128 KiB (64K + 16K, rounded up)"
    mov eax, [vio_bdf]
    mov edx, 0x1c
    call pci_read32
    REPORT_EQ eax, 0, "BAR2 high dword 0: below 4 GiB"
    mov eax, [shm_off]
    add eax, [shm_len]
    cmp eax, [bar_sz]
    setbe al
    movzx eax, al
    REPORT_TRUE eax, "shmid 0 lies inside BAR2"
    mov eax, [shm_off+4]
    add eax, [shm_len+4]
    cmp eax, [bar_sz]
    setbe al
    movzx eax, al
    REPORT_TRUE eax, "shmid 1 lies inside BAR2"
    mov eax, 0x18
    call mr_bar_addr
    mov [bar_base], eax
    mov ecx, eax
    add ecx, [shm_off]
    mov [r0], ecx
    mov ecx, eax
    add ecx, [shm_off+4]
    mov [r1], ecx
    PUTS "FW BAR2 at "
    PUTHEX32 [bar_base]
    PUTS ", shmid 0 at "
    PUTHEX32 [r0]
    PUTS ", shmid 1 at "
    PUTHEX32 [r1]
    call put_nl
    mov eax, [vio_devid]
    cmp eax, 0x1005
    jne modern_only
    mov eax, 0x10
    call mr_bar_size
    REPORT_EQ eax, 32, "transitional: legacy BAR0 keeps the standard 32-byte layout (no MEM_SEL)"
    jmp bars_done
modern_only:
    mov eax, 0x10
    call mr_bar_size
    REPORT_EQ edx, 0, "modern only: no BAR0"
bars_done:

    MR_PATTERN_STEPS [r0], [r1]
    mov ebx, [bar_base]
    mov dword ptr [ebx+0x18000], 0x12345678
    REPORT_EQ [ebx+0x18000], 0, "BAR2 past the regions: reads 0, writes dropped"

    MR_HANDSHAKE_STEP [r1]

    PUTSN "-- move BAR2"
    mov eax, 0x18
    mov edx, MOVE_ADDR | 0xc
    call mr_bar_write
    mov eax, MOVE_ADDR
    add eax, [shm_off]
    mov [r0], eax
    mov eax, MOVE_ADDR
    add eax, [shm_off+4]
    mov [r1], eax
    MR_EXPECT_PATTERN [r0], MR_SEED0, 0x2000, "region 0's data moved with the BAR", 0x8000
    MR_EXPECT_PATTERN [r1], MR_SEED1, MR_R1_DWORDS, "region 1's data moved with the BAR"
    mov ebx, [r0]
    REPORT_EQ [ebx], R0_WORD0, "region 0's first dword moved too"
    mov eax, [bar_base]
    mov ecx, 0x8000
    call mr_count_nonzero
    REPORT_EQ eax, 0, "the old address reads 0"

    PUTSN "-- memory decode off"
    xor eax, eax
    call mr_decode
    mov ebx, [r0]
    REPORT_EQ [ebx+0x8000], 0, "decode off: region 0 reads 0"
    mov ebx, [r1]
    REPORT_EQ [ebx], 0, "decode off: region 1 reads 0"
    mov dword ptr [ebx], 0xaaaaaaaa
    mov eax, 1
    call mr_decode
    MR_EXPECT_PATTERN [r1], MR_SEED1, MR_R1_DWORDS, "decode on: data back, the write made while off was dropped"

    PUTSN "-- BAR2 high dword set: above 4 GiB"
    mov eax, 0x1c
    mov edx, 1
    call mr_bar_write
    mov eax, [vio_bdf]
    mov edx, 0x1c
    call pci_read32
    REPORT_EQ eax, 1, "BAR2 high dword reads back 1"
    mov ebx, [r1]
    REPORT_EQ [ebx], 0, "region 1 unreachable: reads 0"
    mov dword ptr [ebx], 0xaaaaaaaa
    mov ebx, [r0]
    REPORT_EQ [ebx+0x8000], 0, "region 0 unreachable: reads 0"
    mov eax, 0x1c
    xor edx, edx
    call mr_bar_write
    MR_EXPECT_PATTERN [r1], MR_SEED1, MR_R1_DWORDS, "high dword 0 again: region 1 back, the write above 4 GiB went nowhere"
    MR_EXPECT_PATTERN [r0], MR_SEED0, 0x2000, "region 0 back", 0x8000
    jmp report_summary

# walk_shm_caps: the capability field at config offset esi+off, read with `read`, into
# table[shmid] (shmid in ecx, device in ebx)
.macro SHM_FIELD off, read, table
    mov eax, ebx
    lea edx, [esi+\off]
    call \read
    mov [\table+ecx*4], eax
.endm

# Records every vendor capability with cfg_type 8, by shmid (0..1; others are a FAIL).
walk_shm_caps:
    push eax
    push ebx
    push ecx
    push edx
    push esi
    mov ebx, [vio_bdf]
    mov eax, ebx
    mov edx, 0x34
    call pci_read8
    mov esi, eax
    mov ecx, 48                         # TTL, as Linux
__walk_loop:
    and esi, 0xfc
    jz __walk_out
    mov eax, ebx
    mov edx, esi
    call pci_read8
    cmp al, 0x09
    jne __walk_next
    mov eax, ebx
    lea edx, [esi+3]
    call pci_read8
    cmp eax, SHM_CFG
    jne __walk_next
    inc dword ptr [shm_count]
    push ecx
    mov eax, ebx
    lea edx, [esi+5]
    call pci_read8                      # cap.id = shmid
    mov ecx, eax
    PUTS "shm cap @"
    PUTHEX8 esi
    PUTS " id "
    PUTDEC ecx
    cmp ecx, 2
    jb __walk_known
    PUTSN " FAIL: unexpected shmid"
    inc dword ptr [report_failures]
    pop ecx
    jmp __walk_next
__walk_known:
    mov [shm_pos+ecx*4], esi
    SHM_FIELD 2, pci_read8, shm_caplen
    SHM_FIELD 4, pci_read8, shm_bar
    SHM_FIELD 8, pci_read32, shm_off
    SHM_FIELD 12, pci_read32, shm_len
    SHM_FIELD 16, pci_read32, shm_offhi
    SHM_FIELD 20, pci_read32, shm_lenhi
    PUTS " len "
    PUTDEC [shm_caplen+ecx*4]
    PUTS " bar "
    PUTDEC [shm_bar+ecx*4]
    PUTS " offset "
    PUTHEX32 [shm_offhi+ecx*4]
    PUTHEX32 [shm_off+ecx*4]
    PUTS " length "
    PUTHEX32 [shm_lenhi+ecx*4]
    PUTHEX32 [shm_len+ecx*4]
    call put_nl
    pop ecx
__walk_next:
    mov eax, ebx
    lea edx, [esi+1]
    call pci_read8
    mov esi, eax
    dec ecx
    jnz __walk_loop
__walk_out:
    pop esi
    pop edx
    pop ecx
    pop ebx
    pop eax
    ret
