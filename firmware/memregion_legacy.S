# memregion_legacy.S - the 2010 proposal's memory regions (MEM_SEL 20 / MEM_SIZE 24 /
# MEM_PFN 28, region i = 32-bit memory BAR 2+i) on a legacy-only virtio device:
#
#     -device virtio-rng-pci,disable-modern=on,memory-regions=64K:16K
#
# Finds the regions through the registers and the BARs, sizes the BARs, checks the moved
# MSI-X vector registers (32/34), MEM_SEL out of range (ignored), writes and reads
# patterns (memregion.inc: dword i = i*0x9E3779B1 ^ seed) at 1/2/4-byte widths, runs
# code from a region, moves BAR 2 (data still there, MEM_PFN follows, the old address
# reads 0), turns memory decode off (reads 0, writes dropped, MEM_PFN 0) and on again,
# programs BAR 3 over RAM (RAM wins) and over BAR 2 (the BAR mapped last wins), and
# leaves patterns for the host to check.  PASS/FAIL lines, then SUMMARY.
#
# What the host finds after the run (tests/guest/test_memory_regions.py):
#   region 0 [0x8000, 0x10000): pattern MR_SEED0;  region 1 [0, 0x3FC0): pattern MR_SEED1;
#   region 1 +0x3FC0: 44332211 deadbeef (width tests); +0x3FD0: the code stub.
# Build parameters (-D):
#   HOST_PATTERN=1  region 0 [0, 0x8000) must hold pattern HOST_SEED, written by the host
#                   before boot; the guest checks it and leaves it alone
#   HANDSHAKE=1     the guest stores MR_READY at region 1 +0x3FFC and waits (no exits)
#                   until the host stores MR_ANSWER there while the guest runs
#   MOVE_UNDER_CODE=1  only the bad-input case: code running in region 1 moves region
#                   1's own BAR and falls through to the next instruction at the old
#                   address (see the end of this file)
.include "uvirt.inc"
.include "virtio.inc"
.include "memregion.inc"

.ifndef SELF_MOVE
.set SELF_MOVE, 0
.endif
.ifndef MOVE_UNDER_CODE
.set MOVE_UNDER_CODE, 0
.endif
.set MOVE_ADDR, 0xE0000000              # free in the PCI hole (firmware packs down from 0xFEC00000)
.set RAM_ADDR, 0x400000
.set MEM_SEL, 20
.set MEM_SIZE, 24
.set MEM_PFN, 28
.set PROP_MSI_CONFIG, 32
.set PROP_MSI_QUEUE, 34
.set STUB_OFF, 0x3FD0

.align 4, 0
bar2_orig: .long 0
bar3_orig: .long 0
r0:        .long 0                      # where region 0 is now
r1:        .long 0

# MEM_SEL := sel, then REPORT_EQ on register reg
.macro SEL_EXPECT sel, reg, want, msg
    push eax
    push edx
    mov eax, MEM_SEL
    mov edx, \sel
    call vl_out16
    mov eax, \reg
    call vl_in32
    REPORT_EQ eax, \want, \msg
    pop edx
    pop eax
.endm

main:
    call mr_mask_irqs
    VIO_REQUIRE 4, "FAIL: no virtio-rng"
    call vio_put_ident
    call vio_use_legacy
    REPORT_TRUE eax, "BAR0 is an I/O BAR"
    mov eax, 0x18
    call mr_bar_addr
    mov [bar2_orig], eax
    mov [r0], eax
    mov eax, 0x1c
    call mr_bar_addr
    mov [bar3_orig], eax
    mov [r1], eax
    PUTS "FW region 0 at "
    PUTHEX32 [r0]
    PUTS ", region 1 at "
    PUTHEX32 [r1]
    call put_nl
.if MOVE_UNDER_CODE
    jmp move_under_code
.endif

    PUTSN "-- BAR sizes (decode off while sizing)"
    mov eax, 0x10
    call mr_bar_size
    REPORT_EQ eax, 64, "BAR0: 64 bytes of I/O (36 bytes of registers, rounded up)"
    mov eax, 0x18
    call mr_bar_size
    REPORT_EQ eax, 0x10000, "BAR2 (region 0): 64 KiB"
    and edx, 0xf
    REPORT_EQ edx, 0, "BAR2: 32-bit non-prefetchable memory"
    mov eax, 0x1c
    call mr_bar_size
    REPORT_EQ eax, 0x4000, "BAR3 (region 1): 16 KiB"
    and edx, 0xf
    REPORT_EQ edx, 0, "BAR3: 32-bit non-prefetchable memory"
    mov eax, 0x20
    call mr_bar_size
    REPORT_EQ edx, 0, "BAR4: not implemented (two regions)"
    mov eax, 0x18
    call mr_bar_addr
    REPORT_EQ eax, [bar2_orig], "BAR2 restored after sizing"

    PUTSN "-- MEM_SEL / MEM_SIZE / MEM_PFN"
    SEL_EXPECT 0, MEM_SIZE, 0x10000, "MEM_SEL 0: MEM_SIZE = 64 KiB"
    SEL_EXPECT 0, MEM_PFN, [bar2_orig], "MEM_SEL 0: MEM_PFN = BAR2 address"
    SEL_EXPECT 1, MEM_SIZE, 0x4000, "MEM_SEL 1: MEM_SIZE = 16 KiB"
    SEL_EXPECT 1, MEM_PFN, [bar3_orig], "MEM_SEL 1: MEM_PFN = BAR3 address"
    SEL_EXPECT 2, MEM_SIZE, 0x4000, "MEM_SEL 2 (out of range) ignored: region 1 still selected"
    SEL_EXPECT 0xffff, MEM_SIZE, 0x4000, "MEM_SEL ffff ignored"
    mov eax, MEM_SEL
    call vl_in32
    REPORT_EQ eax, 0xffffffff, "MEM_SEL reads all ones (write-only)"
    mov eax, MEM_SIZE + 2
    call vl_in16
    REPORT_EQ eax, 0xffff, "a read inside MEM_SIZE reads all ones"
    SEL_EXPECT 0, MEM_SIZE, 0x10000, "MEM_SEL 0 again"
    mov eax, MEM_SEL
    mov edx, 1
    call vl_out8
    mov eax, MEM_SIZE
    call vl_in32
    REPORT_EQ eax, 0x4000, "MEM_SEL accepts a byte write"

    PUTSN "-- MSI-X vectors at 32/34"
    mov eax, PROP_MSI_CONFIG
    call vl_in16
    REPORT_EQ eax, 0xffff, "MSI-X off: offset 32 is device config (rng has none: all ones)"
    mov eax, [vio_bdf]
    mov edx, 0x42
    call pci_read16
    mov ecx, eax
    or ecx, 0x8000                      # MSI-X enable
    mov eax, [vio_bdf]
    call pci_write16
    mov eax, PROP_MSI_CONFIG
    mov edx, 1
    call vl_out16
    mov eax, PROP_MSI_CONFIG
    call vl_in16
    REPORT_EQ eax, 1, "MSI-X on: config vector at 32"
    mov eax, VL_QUEUE_SEL
    xor edx, edx
    call vl_out16
    mov eax, PROP_MSI_QUEUE
    xor edx, edx
    call vl_out16
    mov eax, PROP_MSI_QUEUE
    call vl_in16
    REPORT_EQ eax, 0, "MSI-X on: queue 0 vector at 34"
    mov eax, PROP_MSI_QUEUE
    mov edx, 7
    call vl_out16
    mov eax, PROP_MSI_QUEUE
    call vl_in16
    REPORT_EQ eax, 0xffff, "vector 7 beyond the table reads NO_VECTOR"
    mov eax, MEM_SIZE
    call vl_in32
    REPORT_EQ eax, 0x4000, "MSI-X on: MEM_SIZE still at 24"
    and ecx, 0x7fff
    mov eax, [vio_bdf]
    mov edx, 0x42
    call pci_write16                    # MSI-X off again

    MR_PATTERN_STEPS [r0], [r1]
    mov ebx, [r1]
    movzx eax, word ptr [ebx+0x3FC1]
    REPORT_EQ eax, 0x3322, "unaligned word read"

    MR_HANDSHAKE_STEP [r1]

    PUTSN "-- code in a region"
    call copy_stub
    mov eax, [r1]
    add eax, STUB_OFF + (stub_ret - stub)
    call eax
    REPORT_EQ eax, 0x600d600d, "code copied into region 1 runs"

    PUTSN "-- move BAR2"
    mov eax, 0x18
    mov edx, MOVE_ADDR
    call mr_bar_write
    mov eax, 0x18
    call mr_bar_addr
    REPORT_EQ eax, MOVE_ADDR, "BAR2 reprogrammed"
    mov dword ptr [r0], MOVE_ADDR
    SEL_EXPECT 0, MEM_PFN, MOVE_ADDR, "MEM_PFN follows the BAR"
    MR_EXPECT_PATTERN MOVE_ADDR + 0x8000, MR_SEED0, 0x2000, "the data moved with the BAR"
    REPORT_EQ [MOVE_ADDR], R0_WORD0, "the first dword moved too"
    mov ebx, [bar2_orig]
    REPORT_EQ [ebx+0x8000], 0, "the old address reads 0"
    mov eax, ebx
    mov ecx, 0x4000
    call mr_count_nonzero
    REPORT_EQ eax, 0, "nothing left at the old address"

    PUTSN "-- memory decode off"
    xor eax, eax
    call mr_decode
    REPORT_EQ [MOVE_ADDR + 0x8000], 0, "decode off: region 0 reads 0"
    mov ebx, [r1]
    REPORT_EQ [ebx], 0, "decode off: region 1 reads 0"
    SEL_EXPECT 0, MEM_PFN, 0, "decode off: MEM_PFN 0 (unmapped)"
    SEL_EXPECT 0, MEM_SIZE, 0x10000, "decode off: MEM_SIZE unchanged"
    mov dword ptr [MOVE_ADDR + 0x8000], 0xaaaaaaaa
    mov eax, 1
    call mr_decode
    MR_EXPECT_PATTERN MOVE_ADDR + 0x8000, MR_SEED0, 0x2000, "decode on: data back, the write made while off was dropped"
    SEL_EXPECT 0, MEM_PFN, MOVE_ADDR, "decode on: MEM_PFN back"

    PUTSN "-- BAR3 over RAM"
    mov dword ptr [RAM_ADDR], 0xcafebabe
    mov eax, 0x1c
    mov edx, RAM_ADDR
    call mr_bar_write
    REPORT_EQ [RAM_ADDR], 0xcafebabe, "RAM wins: the guest reads RAM"
    mov dword ptr [RAM_ADDR], 0x0badf00d
    SEL_EXPECT 1, MEM_PFN, RAM_ADDR, "MEM_PFN reports the BAR address, hidden or not"
    mov eax, 0x1c
    mov edx, [bar3_orig]
    call mr_bar_write
    MR_EXPECT_PATTERN [r1], MR_SEED1, MR_R1_DWORDS, "region 1 untouched by the write to RAM"
    REPORT_EQ [RAM_ADDR], 0x0badf00d, "the write went to RAM"

    PUTSN "-- BAR3 over BAR2"
    mov eax, 0x1c
    mov edx, MOVE_ADDR
    call mr_bar_write
    REPORT_EQ [MOVE_ADDR], MR_SEED1, "BAR3 mapped last: region 1 shows at the overlap"
    MR_EXPECT_PATTERN MOVE_ADDR, MR_SEED1, MR_R1_DWORDS, "all of region 1 shows"
    MR_EXPECT_PATTERN MOVE_ADDR + 0x8000, MR_SEED0, 0x2000, "region 0 still shows past region 1's 16 KiB"
    mov eax, 0x18
    mov edx, [bar2_orig]
    call mr_bar_write
    mov eax, 0x18
    mov edx, MOVE_ADDR
    call mr_bar_write
    REPORT_EQ [MOVE_ADDR], R0_WORD0, "BAR2 moved back on top, mapped last: region 0 shows"
    mov eax, 0x1c
    mov edx, [bar3_orig]
    call mr_bar_write
    MR_EXPECT_PATTERN [r1], MR_SEED1, MR_R1_DWORDS, "BAR3 back home, region 1 intact"

.if SELF_MOVE
.else
    # Only in the SELF_MOVE=1 build: whether the stub continues depends on Unicorn's
    # translation cache, and any stop (a timer, a host thread's kick) landing right after
    # the stub's BAR write resumes at the old, now unmapped address: a clean guest fault.
    # QEMU would finish the block.  tests/guest/test_memory_regions.py accepts both.
    jmp report_summary
.endif
    PUTSN "-- code in a region moves its own BAR and jumps to the new address"
    mov eax, [vio_bdf]
    shl eax, 8
    or eax, 0x8000001c                  # CONFIG_ADDRESS of BAR3
    mov ecx, MOVE_ADDR + 0x40000        # new BAR3 value
    mov ebx, MOVE_ADDR + 0x40000 + STUB_OFF + (stub_ret - stub)
    mov edx, [r1]
    add edx, STUB_OFF
    call edx
    REPORT_EQ eax, 0x600d600d, "the stub continued at the new address"
    mov eax, 0x1c
    call mr_bar_addr
    REPORT_EQ eax, MOVE_ADDR + 0x40000, "BAR3 moved by code running in region 1"
    mov dword ptr [r1], MOVE_ADDR + 0x40000
    MR_EXPECT_PATTERN [r1], MR_SEED1, MR_R1_DWORDS, "region 1 intact at its new address"
    SEL_EXPECT 1, MEM_PFN, MOVE_ADDR + 0x40000, "MEM_PFN follows"
    jmp report_summary

# The stub copied to region 1 +STUB_OFF.  Called at `stub` with eax = CONFIG_ADDRESS of
# its BAR, ecx = the BAR's new value, ebx = where to continue: it moves its own BAR
# (two OUTs), then jumps (the translation block it runs in was made before the move).
# Called at `stub_ret` it just returns 0x600D600D.
stub:
    push edx
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    mov eax, ecx
    out dx, eax
    pop edx
    jmp ebx
stub_ret:
    mov eax, 0x600d600d
    ret
stub_end:

copy_stub:
    push ecx
    push esi
    push edi
    mov esi, stub
    mov edi, [r1]
    add edi, STUB_OFF
    mov ecx, stub_end - stub
    rep movsb
    pop edi
    pop esi
    pop ecx
    ret

# MOVE_UNDER_CODE=1: the stub moves region 1's BAR and falls through.  The rest of its
# translation block still runs (old code); the next instruction is fetched at the old
# address, where nothing is mapped any more.  uvirt stops the run there with a guest
# fault (exit status 2, "instruction fetch from unmapped memory", EIP = that address);
# QEMU would execute the zeros unassigned memory reads.  "UNREACHED" is never printed.
move_under_code:
    mov esi, fall_stub
    mov edi, [r1]
    add edi, STUB_OFF
    mov ecx, fall_stub_end - fall_stub
    rep movsb
    PUTSN "-- code in region 1 moves its own BAR and falls through"
    mov eax, [vio_bdf]
    shl eax, 8
    or eax, 0x8000001c
    mov ecx, MOVE_ADDR
    mov edx, [r1]
    add edx, STUB_OFF
    call edx
    PUTSN "UNREACHED: the stub returned"
    jmp report_summary

fall_stub:
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    mov eax, ecx
    out dx, eax
    mov eax, 0x600d600d
    jmp fall_stub_next                  # ends the block; the target is at the old address
fall_stub_next:
    ret
fall_stub_end:
