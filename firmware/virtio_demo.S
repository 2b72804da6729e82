# virtio_demo.S - ONE virtio request, end to end, on the legacy virtio-pci transport.
#
# Run with:  -device virtio-rng-pci   (the default transitional device has the legacy
# I/O interface in BAR0).  The guest asks the entropy device for 16 random bytes:
#
#   1. find the device on the PCI bus (vendor 1af4, device 1005 = transitional rng)
#   2. reset it and say hello: status ACKNOWLEDGE, then DRIVER
#   3. read the device's feature bits and accept none of them
#   4. set up queue 0: ask its size, lay out the ring in guest RAM (descriptor table,
#      available ring, used ring on the next 4 KiB page) and tell the device where
#   5. DRIVER_OK: the device is live
#   6. put ONE buffer in the ring: a descriptor "16 bytes at BUF, device may write",
#      its index in the available ring, then avail.idx = 1
#   7. kick: write the queue number to QUEUE_NOTIFY
#   8. wait until the device moves used.idx, then read how many bytes it wrote
#
# Random bytes differ on every run, so the program prints how many bytes were written
# and whether they are nonzero, never the bytes themselves.  Lines starting "FW " hold
# values the firmware chose (the I/O port SeaBIOS gave BAR0) and are not compared.
.include "uvirt.inc"
.include "virtio.inc"

.set BUF, 0x300000                      # the 16-byte buffer the device fills

main:
    # 1. find it
    mov eax, 4                          # virtio device type 4 = entropy source
    call vio_find
    cmp eax, 0xffffffff
    jne found
    PUTSN "FAIL: no virtio-rng device"
    EXIT 1
found:
    PUTS "found virtio-rng at "
    call put_bdf
    PUTS " device id "
    PUTHEX16 [vio_devid]
    call put_nl
    call vio_use_legacy                 # eax = bdf -> eax = I/O port of BAR0
    PUTS "FW legacy registers at I/O port "
    call put_hex16
    call put_nl

    # 2. reset, ACKNOWLEDGE, DRIVER
    call vio_reset
    mov eax, VS_ACK
    call vio_status_write
    mov eax, VS_ACK | VS_DRIVER
    call vio_status_write
    PUTS "status "
    call vio_status_read
    call put_hex8
    call put_nl

    # 3. features: the device offers, the driver accepts (none here)
    PUTS "device features "
    xor eax, eax
    call vio_feat_read
    call put_hex32
    call put_nl
    xor eax, eax
    xor edx, edx
    call vio_feat_write
    PUTSN "driver features 00000000"

    # 4. queue 0
    xor eax, eax
    xor edx, edx                        # 0 = use the size the device reports
    call vio_queue_setup
    PUTS "queue 0 size "
    call put_dec
    call put_nl
    xor eax, eax
    call vq_area
    PUTS "ring at "
    call put_hex32
    PUTS " (QUEUE_PFN "
    shr eax, 12
    call put_hex32
    PUTSN ")"
    xor eax, eax
    call vq_avail
    PUTS "  available ring at "
    call put_hex32
    call put_nl
    xor eax, eax
    call vq_used
    PUTS "  used ring at "
    call put_hex32
    call put_nl

    # 5. DRIVER_OK
    mov eax, VS_ACK | VS_DRIVER | VS_DRIVER_OK
    call vio_status_write
    PUTS "status "
    call vio_status_read
    call put_hex8
    call put_nl

    # 6. one device-writable descriptor, published in the available ring
    mov eax, BUF
    xor edx, edx
    mov ecx, 16
    call mem_fill                       # zero the buffer first
    xor eax, eax
    mov edx, request                    # segment list: {addr, len, flags}
    mov ecx, 1
    call vq_add                         # -> eax = head descriptor index
    PUTS "descriptor "
    call put_dec
    PUTS ": addr "
    PUTHEX32 BUF
    PUTSN " len 16 flags WRITE"
    PUTS "avail.idx "
    xor eax, eax
    call vq_avail
    movzx eax, word ptr [eax + 2]
    call put_dec
    call put_nl

    # 7. kick
    PUTSN "kick queue 0"
    xor eax, eax
    call vq_kick

    # 8. wait for the used ring (the device answers asynchronously)
    xor eax, eax
    call vq_poll
    test eax, eax
    jz done
    PUTS "used.idx "
    xor eax, eax
    call vq_used_idx
    call put_dec
    PUTS " id "
    PUTDEC [vq_used_id]
    PUTS " length "
    PUTDEC [vq_used_len]
    call put_nl
    REPORT_EQ [vq_used_len], 16, "the device wrote 16 bytes"
    mov eax, BUF
    mov ecx, 16
    call mem_count_nonzero
    PUTS "nonzero bytes: "
    cmp eax, 0
    je zero
    PUTSN "YES"
    jmp isr
zero:
    PUTSN "NO"
isr:
    PUTS "ISR "
    call vio_isr_read                   # reading it acknowledges the interrupt
    call put_hex8
    PUTS ", then "
    call vio_isr_read
    call put_hex8
    call put_nl
done:
    call vio_reset
    call report_summary

.align 4, 0
request:
    .long BUF, 16, VD_WRITE
