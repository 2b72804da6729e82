# virtio_dma_huge.S - a 0xffffffff-byte device-writable descriptor on virtio-rng (legacy
# or modern: -device virtio-rng-pci,disable-modern=on | disable-legacy=on), -m 128M.
#
# QEMU 7.2 asks its back end for 4 GiB of entropy (virtqueue_get_avail_bytes counts the
# descriptor's length), and once it arrived pops the element: the RAM part maps directly,
# the rest needs the one bounce page, then a second bounce fails ("bogus descriptor or
# out of resources"): virtio_error, and chr_read notifies anyway.  The guest waits for
# ISR (QEMU takes seconds here: it allocates and fills 4 GiB), then reports the state and
# whether a fresh device still serves a normal request.
.include "uvirt.inc"
.include "virtio.inc"
.include "virtio_dma.inc"

.set BUF, 0x300000
.set WAIT_MAX, 400000000

.align 4, 0
seg:    .long BUF, 0, 0xffffffff, VD_WRITE
seg16:  .long BUF, 0, 16, VD_WRITE
isr:    .long 0

main:
    call dma_open
    cmp dword ptr [dma_is_blk], 0
    je go
    PUTSN "FAIL: virtio_dma_huge wants virtio-rng"
    EXIT 1
go:
    PUTSN "-- rng: one 0xffffffff-byte descriptor"
    call dma_init
    mov edx, seg
    mov ecx, 1
    call dma_request_nowait
    mov ecx, WAIT_MAX
wait:
    call vio_isr_read
    test eax, eax
    jnz got
    dec ecx
    jnz wait
got:
    mov [isr], eax
    PUTS "ISR "
    call put_hex8
    PUTS " used.idx "
    xor eax, eax
    call vq_used_idx
    call put_dec
    PUTSTATUS " status "
    PUTSN "-- a normal request after a reset"
    call dma_init
    mov edx, seg16
    mov ecx, 1
    call dma_request
    call report_summary
