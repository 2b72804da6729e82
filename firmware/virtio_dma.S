# virtio_dma.S - where a virtio device's DMA may land, and what QEMU 7.2 does with it.
# Run with one of: -device virtio-rng-pci,disable-modern=on | virtio-rng-pci,disable-legacy=on
# | virtio-blk-pci,...,disable-modern=on | virtio-blk-pci,...,disable-legacy=on (disk from
# uvirt.testing.qemu: byte i of sector s is (3s + i + 1) & 0xff), -m 128M.
#
# Buffers (QEMU address_space_map: RAM directly, anything else through one bounce page):
#   rng: 16 bytes at 0xFFFFF000 (BIOS ROM), in the PCI hole, above 4 GiB, straddling the
#        end of RAM; a zero-length entry in an indirect table (pop fails after the entropy
#        arrived: notify anyway)
#   blk: read into the PCI hole, across the end of RAM, into its own notify region
#        (modern), write from the PCI hole (the disk gets zeros), a 0xffffffff-byte data
#        descriptor, a zero-length indirect entry
# Rings (QEMU virtio_init_region_cache: any single region is fine, crossing one is not):
#   modern: descriptor table at 0xFFFFF000, used ring above 4 GiB, all three in the PCI
#           hole, used ring crossing the end of RAM, used ring just past RAM
#   legacy: QUEUE_PFN 0xFFFFF (rings at 0xFFFFF000 and above 4 GiB), a PFN that puts the
#           used ring just past RAM (the request is still served: ISR 1)
# Each case prints one "answered ... used.idx ... status ... ISR ..." line (dma_report).
.include "uvirt.inc"
.include "virtio.inc"
.include "virtio_dma.inc"

.set HOLE, 0xC0000000                   # PCI hole, nothing decodes it
.set BUF, 0x300000
.set STATUSB, 0x300800
.set IND, 0x310000
.set DATA, 0x320000

.align 4, 0
seg:    .fill 64, 1, 0
rings:  .fill 24, 1, 0

.macro SEG i, lo, hi, len, flags
    push eax
    mov eax, \lo
    mov dword ptr [seg + 16*\i], eax
    pop eax
    mov dword ptr [seg + 16*\i + 4], \hi
    mov dword ptr [seg + 16*\i + 8], \len
    mov dword ptr [seg + 16*\i + 12], \flags
.endm

.macro RNG_CASE msg, lo, hi, len
    PUTSN \msg
    call dma_init
    SEG 0, \lo, \hi, \len, VD_WRITE
    mov edx, seg
    mov ecx, 1
    call dma_request
.endm

# blk: header (type, sector) at BUF, then the data segment, then the status byte
.macro BLK_CASE msg, type, sector, lo, hi, len, flags
    PUTSN \msg
    call dma_init
    mov dword ptr [BUF], \type
    mov dword ptr [BUF + 4], 0
    mov dword ptr [BUF + 8], \sector
    mov dword ptr [BUF + 12], 0
    mov byte ptr [STATUSB], 0xee
    SEG 0, BUF, 0, 16, 0
    SEG 1, \lo, \hi, \len, \flags
    SEG 2, STATUSB, 0, 1, VD_WRITE
    mov edx, seg
    mov ecx, 3
    call dma_request
    call put_blk_status
.endm

.macro RING_CASE msg, dlo, dhi, alo, ahi, ulo, uhi
    PUTSN \msg
    mov dword ptr [rings], \dlo
    mov dword ptr [rings + 4], \dhi
    mov dword ptr [rings + 8], \alo
    mov dword ptr [rings + 12], \ahi
    mov dword ptr [rings + 16], \ulo
    mov dword ptr [rings + 20], \uhi
    call ring_case
.endm

main:
    call dma_open
    cmp dword ptr [dma_is_blk], 0
    jne blk_cases
    call before_reset

    RNG_CASE "-- rng: 16 bytes at 0xFFFFF000 (BIOS ROM)", 0xFFFFF000, 0, 16
    RNG_CASE "-- rng: 16 bytes in the PCI hole", HOLE, 0, 16
    RNG_CASE "-- rng: 16 bytes above 4 GiB", 0x1000, 1, 16
    PUTSN "-- rng: 16 bytes straddling the end of RAM"
    mov eax, RAM_END - 8
    xor edx, edx
    mov ecx, 8
    call mem_fill
    call dma_init
    SEG 0, RAM_END - 8, 0, 16, VD_WRITE
    mov edx, seg
    mov ecx, 1
    call dma_request
    mov eax, RAM_END - 8
    mov ecx, 8
    xor edx, edx
    call dma_put_written
    PUTSN "-- rng: zero-length entry in an indirect table"
    call dma_init
    VQ_DESC IND, BUF, 0, VD_WRITE | VD_NEXT, 1
    VQ_DESC IND + 16, BUF, 16, VD_WRITE, 0
    SEG 0, IND, 0, 32, VD_INDIRECT
    mov edx, seg
    mov ecx, 1
    call dma_request
    cmp dword ptr [vio_mode], 0
    je rng_rings
    RNG_CASE "-- rng: 16 bytes into its own notify region", [vio_notify_base], 0, 16
rng_rings:
    PUTSN "-- rng: a failing chain, then a good one, in one kick"
    call dma_init
    SEG 0, IND, 0, 32, VD_INDIRECT      # the zero-length indirect entry again
    mov edx, seg
    mov ecx, 1
    call dma_add
    SEG 0, DATA, 0, 16, VD_WRITE
    call after_error_tail
    call rings_cases
    jmp done

blk_cases:
    BLK_CASE "-- blk: read into the PCI hole", 0, 1, HOLE, 0, 512, VD_WRITE
    PUTSN "-- blk: read across the end of RAM"
    mov eax, RAM_END - 512
    xor edx, edx
    mov ecx, 512
    call mem_fill
    BLK_CASE "blk read", 0, 2, RAM_END - 512, 0, 1024, VD_WRITE
    PUTS "RAM part: "
    mov eax, [RAM_END - 512]
    call put_hex32
    PUTC ' '
    mov eax, [RAM_END - 4]
    call put_hex32
    call put_nl
    cmp dword ptr [vio_mode], 0
    je blk_no_notify
    BLK_CASE "-- blk: read into its own notify region", 0, 3, [vio_notify_base], 0, 512, VD_WRITE
    call own_isr_case
    jmp blk_write
blk_no_notify:
    PUTSN "-- blk: own notify region: none in memory space (legacy)"
blk_write:
    BLK_CASE "-- blk: write from the PCI hole (sector 5)", 1, 5, HOLE, 0, 512, 0
    mov eax, DATA
    mov edx, 0x55
    mov ecx, 512
    call mem_fill
    BLK_CASE "sector 5 read back", 0, 5, DATA, 0, 512, VD_WRITE
    mov eax, DATA
    mov ecx, 512
    mov edx, 0
    call dma_put_changed
    BLK_CASE "-- blk: 0xffffffff-byte data descriptor", 0, 1, DATA, 0, 0xffffffff, VD_WRITE
    PUTSN "-- blk: zero-length entry in an indirect table"
    call dma_init
    mov dword ptr [BUF], 0
    mov dword ptr [BUF + 8], 1
    VQ_DESC IND, BUF, 16, VD_NEXT, 1
    VQ_DESC IND + 16, DATA, 0, VD_WRITE | VD_NEXT, 2
    VQ_DESC IND + 32, STATUSB, 1, VD_WRITE, 0
    SEG 0, IND, 0, 48, VD_INDIRECT
    mov edx, seg
    mov ecx, 1
    call dma_request
    PUTSN "-- blk: two reads into the PCI hole in one kick (one bounce buffer)"
    call dma_init
    mov dword ptr [BUF], 0              # IN sector 1
    mov dword ptr [BUF + 8], 1
    SEG 0, BUF, 0, 16, 0
    SEG 1, HOLE, 0, 512, VD_WRITE
    SEG 2, STATUSB, 0, 1, VD_WRITE
    mov edx, seg
    mov ecx, 3
    call dma_add
    mov dword ptr [BUF + 0x40], 0       # IN sector 2
    mov dword ptr [BUF + 0x48], 2
    SEG 0, BUF + 0x40, 0, 16, 0
    SEG 1, HOLE + 0x1000, 0, 512, VD_WRITE
    SEG 2, STATUSB + 1, 0, 1, VD_WRITE
    call after_error_tail
    PUTSN "-- blk: a request without headers, then a good one, in one kick"
    call dma_init
    SEG 0, BUF, 0, 16, 0                # readable only: "missing headers"
    mov edx, seg
    mov ecx, 1
    call dma_add
    mov dword ptr [BUF + 0x40], 8       # GET_ID
    mov dword ptr [BUF + 0x48], 0
    SEG 0, BUF + 0x40, 0, 16, 0
    SEG 1, DATA, 0, 20, VD_WRITE
    SEG 2, STATUSB, 0, 1, VD_WRITE
    call after_error_tail
    call rings_cases
done:
    call report_summary


# modern blk: a request completes (ISR 1, not read), then a write whose data is the
# device's own ISR register (sector 6).  From the main loop (ioeventfd=on) the DMA read
# is an ordinary ISR read: it returns 1 and clears ISR; inside the kick (ioeventfd=off)
# QEMU's re-entrancy guard drops it: zeros, ISR stays 1.
own_isr_case:
    PUTSN "-- blk: write from its own ISR register (sector 6)"
    call dma_init
    mov dword ptr [BUF], 8              # GET_ID
    mov dword ptr [BUF + 8], 0
    SEG 0, BUF, 0, 16, 0
    SEG 1, DATA, 0, 20, VD_WRITE
    SEG 2, STATUSB, 0, 1, VD_WRITE
    mov edx, seg
    mov ecx, 3
    call dma_request_nowait
    call dma_wait
    xor eax, eax
    mov edx, 1
    call vq_poll_n
    PUTS "GET_ID answered "
    call put_dec
    call put_nl
    mov dword ptr [BUF], 1              # OUT sector 6 from the ISR register
    mov dword ptr [BUF + 8], 6
    SEG 0, BUF, 0, 16, 0
    SEG 1, [vio_isr_addr], 0, 512, 0
    SEG 2, STATUSB, 0, 1, VD_WRITE
    mov edx, seg
    mov ecx, 3
    call dma_request_nowait_at3
    call dma_wait_report
    call put_blk_status
    mov eax, DATA
    mov edx, 0x55
    mov ecx, 512
    call mem_fill
    BLK_CASE "sector 6 read back", 0, 6, DATA, 0, 512, VD_WRITE
    PUTS "sector 6 starts "
    mov eax, [DATA]
    call put_hex32
    call put_nl
    ret

# the segments at seg (count in ecx... set here: 1 for rng, 3 for blk) as a second
# chain, one kick for both, then every used entry and the state
after_error_tail:
    mov ecx, 1
    cmp dword ptr [dma_is_blk], 0
    je aet_add
    mov ecx, 3
aet_add:
    mov edx, seg
    call dma_add
    xor eax, eax
    call vq_kick
    call quiet_wait
    PUTS "used.idx "
    xor eax, eax
    call vq_used_idx
    call put_dec
    PUT_STATUS_ISR " status "
    xor eax, eax
    mov edx, 4
    call vq_poll_n
    test eax, eax
    jz aet_out
    PUTS "used id "
    PUTDEC [vq_used_id]
    PUTS " len "
    PUTDEC [vq_used_len]
    call put_nl
aet_out:
    ret

# rng: a driver that starts without resetting the device: SeaBIOS's command-register write
# (bus mastering off) disabled it (QEMU virtio_write_config with use-disabled-flag), and
# a legacy ACK|DRIVER sets bus mastering without undoing that: a disabled device pops
# nothing (virtio_device_disabled), but rng still notifies.  The modern path (the
# library turns bus mastering on through config space) is not disabled.  (Not for blk:
# SeaBIOS drives virtio-blk itself and leaves it bus-mastering, which uvirt's firmware
# step does not model for the legacy interface.)
before_reset:
    PUTSN "-- a request before any reset"
    PUTS "command "
    mov eax, [vio_bdf]
    mov edx, 4
    call pci_read16
    and eax, 7
    call put_hex16
    call put_nl
    call dma_features
    xor eax, eax
    xor edx, edx
    call vio_queue_setup
    VIO_DRIVER_OK
    SEG 0, DATA, 0, 16, VD_WRITE
    mov edx, seg
    mov ecx, 1
    call dma_request
    ret

put_blk_status:
    PUTS "blk status byte "
    movzx eax, byte ptr [STATUSB]
    call put_hex8
    call put_nl
    ret

rings_cases:
    cmp dword ptr [vio_mode], 0
    je legacy_rings
    RING_CASE "-- modern rings: descriptor table at 0xFFFFF000", 0xFFFFF000, 0, 0x300000, 0, 0x301000, 0
    RING_CASE "-- modern rings: used ring above 4 GiB", 0x300000, 0, 0x302000, 0, 0x1000, 1
    RING_CASE "-- modern rings: all three in the PCI hole", HOLE, 0, HOLE + 0x4000, 0, HOLE + 0x8000, 0
    RING_CASE "-- modern rings: used ring crossing the end of RAM", 0x300000, 0, 0x302000, 0, RAM_END - 8, 0
    RING_CASE "-- modern rings: used ring just past RAM", 0x300000, 0, 0x302000, 0, RAM_END, 0
    ret
legacy_rings:
    PUTSN "-- legacy rings: QUEUE_PFN 0xFFFFF"
    mov eax, 0xFFFFF
    call legacy_pfn_case
    PUTSN "-- legacy rings: used ring just past RAM"
    mov eax, RAM_END - 0x1000
    cmp dword ptr [dma_is_blk], 0
    je lr_rng
    mov eax, RAM_END - 0x2000           # blk: 256 entries, used ring at desc + 0x2000
lr_rng:
    shr eax, 12
    call legacy_pfn_case
    ret

# the ring addresses from [rings]; a request only where desc and avail are in RAM
ring_case:
    pushad
    call vio_reset
    call dma_features
    mov eax, VM_Q_SELECT
    xor edx, edx
    call vm_wr16
    xor ecx, ecx
rc_addr:                                # queue_desc, queue_driver, queue_device: lo, hi
    lea eax, [VM_Q_DESC + ecx*4]
    mov edx, [rings + ecx*4]
    call vm_wr32
    inc ecx
    cmp ecx, 6
    jb rc_addr
    mov eax, VM_Q_ENABLE
    mov edx, 1
    call vm_wr16
    PUTSTATUS "status after enable "
    VIO_DRIVER_OK
    mov eax, [rings]
    cmp eax, 0x300000
    jne rc_nokick
    mov eax, VM_Q_SIZE
    call vm_rd16
    mov ebp, eax                        # N
    mov edi, [rings + 8]                # avail
    call build_one_request
    xor eax, eax
    call vio_notify
rc_nokick:
    call quiet_wait
    PUT_STATUS_ISR "after kick: status "
    popad
    ret

# ebp = queue size, edi = avail ring; desc table at 0x300000: one request in slot 0
build_one_request:
    push eax
    mov eax, DATA
    xor edx, edx
    mov ecx, 16
    call mem_fill
    mov dword ptr [0x300000], DATA
    mov dword ptr [0x300004], 0
    mov dword ptr [0x300008], 16
    mov word ptr [0x30000c], VD_WRITE
    mov word ptr [0x30000e], 0
    cmp dword ptr [dma_is_blk], 0
    je bor_publish
    mov dword ptr [BUF], 0              # blk: IN sector 1, 512 bytes, status
    mov dword ptr [BUF + 8], 1
    mov dword ptr [0x300000], BUF
    mov dword ptr [0x300008], 16
    mov word ptr [0x30000c], VD_NEXT
    mov word ptr [0x30000e], 1
    mov dword ptr [0x300010], DATA
    mov dword ptr [0x300014], 0
    mov dword ptr [0x300018], 512
    mov word ptr [0x30001c], VD_WRITE | VD_NEXT
    mov word ptr [0x30001e], 2
    mov dword ptr [0x300020], STATUSB
    mov dword ptr [0x300024], 0
    mov dword ptr [0x300028], 1
    mov word ptr [0x30002c], VD_WRITE
    mov word ptr [0x30002e], 0
bor_publish:
    mov word ptr [edi], 0
    mov word ptr [edi + 4], 0
    mov word ptr [edi + 2], 1
    pop eax
    ret

quiet_wait:
    jmp dma_spin

# eax = PFN: desc/avail where they fall (a request is built only when they are RAM)
legacy_pfn_case:
    pushad
    mov ebx, eax
    call vio_reset
    call dma_features
    mov eax, VL_QUEUE_SEL
    xor edx, edx
    call vl_out16
    mov eax, VL_QUEUE_NUM
    call vl_in16
    mov ebp, eax
    mov eax, VL_QUEUE_PFN
    mov edx, ebx
    call vl_out32
    VIO_DRIVER_OK
    PUTSTATUS "status "
    cmp ebx, 0xFFFFF
    je lp_nokick
    mov esi, ebx
    shl esi, 12                         # desc
    mov edi, ebp
    shl edi, 4
    add edi, esi                        # avail = desc + 16N
    push esi
    mov eax, esi
    xor edx, edx
    mov ecx, 0x1000
    call mem_fill
    pop esi
    # the request's descriptors go in this ring's table
    VQ_DESC esi, DATA, 16, VD_WRITE, 0
    cmp dword ptr [dma_is_blk], 0
    je lp_publish
    mov dword ptr [BUF], 0
    mov dword ptr [BUF + 8], 1
    mov dword ptr [esi], BUF
    mov dword ptr [esi + 8], 16
    mov word ptr [esi + 12], VD_NEXT
    mov word ptr [esi + 14], 1
    mov dword ptr [esi + 16], DATA
    mov dword ptr [esi + 20], 0
    mov dword ptr [esi + 24], 512
    mov word ptr [esi + 28], VD_WRITE | VD_NEXT
    mov word ptr [esi + 30], 2
    mov dword ptr [esi + 32], STATUSB
    mov dword ptr [esi + 36], 0
    mov dword ptr [esi + 40], 1
    mov word ptr [esi + 44], VD_WRITE
    mov word ptr [esi + 46], 0
lp_publish:
    mov eax, DATA
    xor edx, edx
    mov ecx, 16
    call mem_fill
    mov byte ptr [STATUSB], 0xee
    mov word ptr [edi], 0
    mov word ptr [edi + 4], 0
    mov word ptr [edi + 2], 1
    mov eax, VL_QUEUE_NOTIFY
    xor edx, edx
    call vl_out16
lp_nokick:
    call quiet_wait
    PUT_STATUS_ISR "after kick: status "
    cmp ebx, 0xFFFFF
    je lp_out
    mov eax, DATA
    mov ecx, 16
    xor edx, edx
    call dma_put_written
    cmp dword ptr [dma_is_blk], 0
    je lp_out
    call put_blk_status
lp_out:
    popad
    ret
