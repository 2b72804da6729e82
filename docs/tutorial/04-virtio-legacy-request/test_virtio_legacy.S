# [uvirt]
# extra_params = -device virtio-rng-pci,disable-modern=on
# groups = tutorial virtio
#
# Lesson 4: one request to a virtio entropy device over the legacy transport, every
# register and ring write spelled out (VIRTIO 1.2 §4.1.4.8 "Legacy Interfaces: A Note on
# PCI Device Layout", §2.7 split virtqueues, §3.1.1 driver initialization).
.include "uvirt.inc"

# Legacy header in BAR0 (I/O ports), offsets from the BAR's base
.set DEVICE_FEATURES, 0          # 32 bits, read-only
.set GUEST_FEATURES, 4           # 32 bits
.set QUEUE_PFN, 8                # 32 bits: ring address >> 12
.set QUEUE_SIZE, 12              # 16 bits, read-only
.set QUEUE_SELECT, 14            # 16 bits
.set QUEUE_NOTIFY, 16            # 16 bits
.set DEVICE_STATUS, 18           # 8 bits
.set ISR_STATUS, 19              # 8 bits, reading clears it
# Device status bits (§2.1)
.set ACKNOWLEDGE, 1
.set DRIVER, 2
.set DRIVER_OK, 4
# Where this guest puts things in its RAM
.set RING, 0x200000              # the ring, 4 KiB aligned (QUEUE_PFN counts pages)
.set BUFFER, 0x300000            # 16 bytes for the device to fill

.align 4, 0
iobase:     .long 0
qsize:      .long 0
avail:      .long 0
used:       .long 0

.macro OUTB reg, value
    mov edx, [iobase]
    add edx, \reg
    mov al, \value
    out dx, al
.endm
.macro INB reg                   # -> eax
    mov edx, [iobase]
    add edx, \reg
    xor eax, eax
    in al, dx
.endm

main:
    # the transitional/legacy entropy device is 1af4:1005; BAR0 is its I/O window
    mov eax, 0x10051af4
    call pci_find
    REQUIRE_FOUND "FAIL: no virtio-rng-pci (run with -device virtio-rng-pci)"
    mov edx, 0x10
    call pci_read32
    and eax, 0xfffffffc          # bits 1:0 of an I/O BAR are flags
    mov [iobase], eax
    PUTS "FW BAR0 I/O base "
    call put_hex16
    call put_nl

    # 1. reset (status 0), then ACKNOWLEDGE ("I see you") and DRIVER ("I can drive you")
    OUTB DEVICE_STATUS, 0
    OUTB DEVICE_STATUS, ACKNOWLEDGE
    OUTB DEVICE_STATUS, ACKNOWLEDGE | DRIVER
    # 2. features: read what the device offers, accept none.  A legacy device has no
    #    FEATURES_OK step (§3.1.1: legacy drivers skip it)
    mov edx, [iobase]
    in eax, dx                   # DEVICE_FEATURES is at offset 0
    PUTS "device features "
    call put_hex32
    call put_nl
    mov edx, [iobase]
    add edx, GUEST_FEATURES
    xor eax, eax
    out dx, eax
    # 3. queue 0: select it, read its size, lay the ring out in our RAM
    mov edx, [iobase]
    add edx, QUEUE_SELECT
    xor eax, eax
    out dx, ax
    mov edx, [iobase]
    add edx, QUEUE_SIZE
    in ax, dx
    movzx eax, ax
    mov [qsize], eax
    PUTS "queue 0 size "
    call put_dec
    call put_nl
    #    descriptor table: 16 bytes per entry; available ring right after it:
    #    flags, idx, ring[size], used_event (all 16-bit); used ring on the next 4 KiB
    #    boundary: flags, idx, ring[size] of {id, len} (32-bit each)
    mov eax, [qsize]
    shl eax, 4
    add eax, RING
    mov [avail], eax
    mov eax, [qsize]
    lea eax, [eax*2 + 6]
    add eax, [avail]
    add eax, 0xfff
    and eax, 0xfffff000
    mov [used], eax
    PUTS "descriptors at "
    PUTHEX32 RING
    PUTS ", available ring at "
    PUTHEX32 [avail]
    PUTS ", used ring at "
    PUTHEX32 [used]
    call put_nl
    mov edi, RING                # the device expects zeroed rings
    mov ecx, 0x3000
    xor eax, eax
    rep stosb
    mov edx, [iobase]
    add edx, QUEUE_PFN
    mov eax, RING >> 12
    out dx, eax                  # the device now knows where the ring is
    # 4. DRIVER_OK: the device may start using the queue
    OUTB DEVICE_STATUS, ACKNOWLEDGE | DRIVER | DRIVER_OK
    INB DEVICE_STATUS
    PUTS "status "
    call put_hex8
    call put_nl

    # 5. one buffer: descriptor 0 = {addr BUFFER, len 16, flags WRITE (2): the device
    #    writes it, next 0}
    mov dword ptr [RING + 0], BUFFER     # addr, low half
    mov dword ptr [RING + 4], 0          # addr, high half
    mov dword ptr [RING + 8], 16         # len
    mov word ptr [RING + 12], 2          # flags: VIRTQ_DESC_F_WRITE
    mov word ptr [RING + 14], 0          # next (unused without F_NEXT)
    #    publish it: avail.ring[0] = descriptor 0, then avail.idx = 1 (the index
    #    is written last: the device may look as soon as it changes)
    mov ebx, [avail]
    mov word ptr [ebx + 4], 0
    mov word ptr [ebx + 2], 1
    PUTSN "avail.idx = 1"
    # 6. notify: write the queue number to QUEUE_NOTIFY
    mov edx, [iobase]
    add edx, QUEUE_NOTIFY
    xor eax, eax
    out dx, ax
    PUTSN "notified queue 0"
    # 7. the device answers asynchronously: wait until used.idx moves
    mov ebx, [used]
    mov ecx, 10000000
wait_used:
    cmp word ptr [ebx + 2], 0
    jne got_used
    pause
    dec ecx
    jnz wait_used
got_used:
    movzx eax, word ptr [ebx + 2]
    REPORT_EQ eax, 1, "used.idx moved to 1"
    PUTS "used.ring[0]: id "
    PUTDEC [ebx + 4]
    PUTS ", len "
    PUTDEC [ebx + 8]
    call put_nl
    REPORT_EQ [ebx + 8], 16, "the device wrote 16 random bytes"
    # 8. the interrupt status: bit 0 = "a used buffer was added"; reading clears it
    INB ISR_STATUS
    PUTS "ISR "
    call put_hex8
    INB ISR_STATUS
    PUTS ", read again "
    call put_hex8
    call put_nl
    OUTB DEVICE_STATUS, 0        # reset: the device forgets the queue
    call report_summary
    ret
