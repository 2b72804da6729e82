# virtio_rng_legacy.S - virtio-rng over the LEGACY interface (I/O BAR0), as QEMU 7.2 does it.
# Run with -device virtio-rng-pci,disable-modern=on (legacy only) and with the default
# transitional -device virtio-rng-pci: the legacy interface must look the same on both.
#
# Prints every BAR0 register read during initialisation (hex, no 0x), the bus-master
# quirk of status 3, feature write/read-back (including bit 30, QEMU's bad-feature bit),
# queue sizes, PFN, four requests (16 bytes; an 8+8 chain; 64 bytes; 16 bytes with
# VRING_AVAIL_F_NO_INTERRUPT) with used id/len/idx, ISR before and after each (ISR reads
# clear it), a guard check past the buffer, and the effects of reset (status 0).
# Random bytes are never printed: "bytes nonzero YES" means at least one nonzero byte.
.include "uvirt.inc"
.include "virtio.inc"

.set BUF, 0x300000

main:
    VIO_REQUIRE 4, "FAIL: no virtio-rng"
    call vio_put_ident
    call vio_use_legacy
    PUTS "FW IOBASE "
    call put_hex16
    call put_nl
    REPORT_TRUE eax, "BAR0 is an I/O BAR"
    PUTREG "FW at entry: status ", VL_STATUS, vl_in8, put_hex8
    PUTC ' '
    call vio_put_bm
    call put_nl

    PUTSN "-- registers before reset"
    call dump_regs
    call vio_reset
    PUTSN "-- registers after reset"
    call dump_regs
    LREG8 "config[0] ", VL_CONFIG
    LREG16 "config[0] w16 ", VL_CONFIG
    LREG32 "config[0] w32 ", VL_CONFIG

    PUTSN "-- status"
    mov eax, VS_ACK
    call vio_status_write
    LREG8 "status after ACK ", VL_STATUS
    mov eax, VS_ACK | VS_DRIVER
    call vio_status_write
    LREG8 "status after ACK|DRIVER ", VL_STATUS
    PUTS "after status 3: "
    call vio_put_bm
    call put_nl

    PUTSN "-- features"
    LREG32 "host features ", VL_HOST_FEATURES
    mov eax, VL_GUEST_FEATURES
    mov edx, 0x30000000
    call vl_out32
    LREG32 "guest features after writing 30000000 ", VL_GUEST_FEATURES
    mov eax, VL_GUEST_FEATURES
    mov edx, 0x0f000001
    call vl_out32
    LREG32 "guest features after writing 0f000001 ", VL_GUEST_FEATURES
    mov eax, VL_GUEST_FEATURES
    mov edx, 0x40000000
    call vl_out32
    LREG32 "guest features after writing 40000000 ", VL_GUEST_FEATURES
    mov eax, VL_GUEST_FEATURES
    mov edx, 0xffffffff
    call vl_out32
    LREG32 "guest features after writing ffffffff ", VL_GUEST_FEATURES
    mov eax, VL_GUEST_FEATURES
    xor edx, edx
    call vl_out32
    LREG32 "guest features after writing 00000000 ", VL_GUEST_FEATURES
    LREG32 "host features again ", VL_HOST_FEATURES

    PUTSN "-- queues"
    mov ebx, 0
q_loop:
    PUTS "queue "
    PUTDEC ebx
    PUTS " num "
    mov eax, ebx
    call vio_queue_max
    call put_hex16
    PUTREG " pfn ", VL_QUEUE_PFN, vl_in32, put_hex32
    LREG16 " sel ", VL_QUEUE_SEL
    inc ebx
    cmp ebx, 3
    jb q_loop
    mov eax, 0
    xor edx, edx
    call vio_queue_setup
    PUTS "queue 0 set up, size "
    call put_dec
    call put_nl
    LREG16 "QUEUE_SEL ", VL_QUEUE_SEL
    LREG32 "QUEUE_PFN ", VL_QUEUE_PFN
    LREG16 "QUEUE_NUM ", VL_QUEUE_NUM
    mov eax, VL_QUEUE_SEL
    mov edx, 1
    call vl_out16
    LREG32 "QUEUE_PFN of queue 1 ", VL_QUEUE_PFN
    mov eax, VL_QUEUE_SEL
    xor edx, edx
    call vl_out16
    PUTISR "ISR before DRIVER_OK "
    mov eax, VS_ACK | VS_DRIVER | VS_DRIVER_OK
    call vio_status_write
    LREG8 "status after DRIVER_OK ", VL_STATUS

    PUTSN "-- request 1: one 16-byte buffer"
    mov edx, req1
    mov ecx, 1
    call rng_request
    PUTSN "-- request 2: 8+8 chain"
    mov edx, req2
    mov ecx, 2
    call rng_request
    PUTSN "-- request 3: one 64-byte buffer"
    mov edx, req3
    mov ecx, 1
    call rng_request
    PUTSN "-- request 4: 16 bytes with VRING_AVAIL_F_NO_INTERRUPT"
    xor eax, eax
    call vq_avail
    mov word ptr [eax], 1
    mov edx, req1
    mov ecx, 1
    call rng_request
    xor eax, eax
    call vq_used
    PUTS "used.flags "
    movzx eax, word ptr [eax]
    call put_hex16
    call put_nl
    xor eax, eax
    call vq_avail
    mov word ptr [eax], 0

    PUTSN "-- reset"
    mov eax, VS_ACK | VS_DRIVER | VS_DRIVER_OK
    call vio_status_write               # (status unchanged)
    mov eax, VL_GUEST_FEATURES
    mov edx, 0x10000000
    call vl_out32                       # something to clear
    mov eax, VL_STATUS
    xor edx, edx
    call vl_out8
    call dump_regs
    PUTS "after reset: "
    call vio_put_bm
    call put_nl
    PUTS "used.idx in RAM after reset "
    xor eax, eax
    call vq_used_idx
    call put_dec
    call put_nl
    call report_summary

# print every readable BAR0 header register; ISR last (it clears)
dump_regs:
    LREG32 "HOST_FEATURES ", VL_HOST_FEATURES
    LREG32 "GUEST_FEATURES ", VL_GUEST_FEATURES
    LREG32 "QUEUE_PFN ", VL_QUEUE_PFN
    LREG16 "QUEUE_NUM ", VL_QUEUE_NUM
    LREG16 "QUEUE_SEL ", VL_QUEUE_SEL
    LREG8 "STATUS ", VL_STATUS
    PUTISR "ISR "
    ret

.set RNG_COUNT_USED, 1
.include "rng_request.inc"
