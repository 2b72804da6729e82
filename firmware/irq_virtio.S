# irq_virtio.S - a virtio used-buffer interrupt taken through the IDT, via INTx and via
# MSI-X (issue 7's wiring), on a legacy-only virtio-rng (-device virtio-rng-pci,
# disable-modern=on).  Prints what the handlers saw: the ISR value read in the INTx
# handler, PCI status bit 3 before and after, the MSI-X pending bit while the vector is
# masked, and delivery after unmasking.
.include "uvirt.inc"
.include "virtio.inc"
.include "irq.inc"

.set BUF, 0x300000
.set VEC_INTX10, 0x2a                   # IRQ 10 and 11 with the slave PIC at 0x28:
.set VEC_INTX11, 0x2b                   # PIIX routes slot 2 INTA to 10, slot 3 to 11
.set VEC_MSI, 0x41                      # (irq_count + 0x104)

.align 4, 0
isr_seen:   .long 0
line:       .long 0
intx_count: .long 0
status_seen: .long 0
bar1:       .long 0

main:
    call irq_init
    mov eax, 0xf3fb                     # unmask the cascade (2) and IRQs 10, 11
    call pic_set_mask
    mov eax, VEC_INTX10
    mov edx, intx_handler
    call irq_set_handler
    mov eax, VEC_INTX11
    mov edx, intx_handler
    call irq_set_handler
    mov eax, VEC_MSI
    mov edx, msi_handler
    call irq_set_handler

    VIO_REQUIRE 4, "FAIL: no virtio-rng"
    PUTS "FW line "
    mov edx, 0x3c
    call pci_read8
    mov [line], eax
    call put_hex8
    call put_nl
    mov eax, [vio_bdf]
    call vio_use_legacy
    call vio_legacy_start

    PUTSN "-- INTx"
    call pci_status
    PUTS "status bit 3 before "
    call put_hex8
    call put_nl
    call submit
    mov eax, 1
    call irq_wait_n
    PUTS "intx deliveries "
    PUTDEC [intx_count]
    call put_nl
    PUTS "ISR read in handler "
    PUTHEX8 [isr_seen]
    call put_nl
    PUTS "status bit 3 in handler "
    PUTHEX8 [status_seen]
    call put_nl
    call pci_status
    PUTS "status bit 3 after "
    call put_hex8
    call put_nl
    xor eax, eax
    call vq_poll
    PUTS "used len "
    PUTDEC [vq_used_len]
    call put_nl

    PUTSN "-- MSI-X"
    mov eax, [vio_bdf]
    mov edx, 0x14
    call pci_read32
    and eax, 0xfffffff0
    mov [bar1], eax
    mov ebx, eax
    mov dword ptr [ebx], 0xfee00000     # entry 0: address, data, unmasked
    mov dword ptr [ebx + 4], 0
    mov dword ptr [ebx + 8], VEC_MSI
    mov dword ptr [ebx + 12], 0
    mov eax, [vio_bdf]
    mov edx, 0x42
    mov ecx, 0x8000                     # MSI-X enable
    call pci_write16
    mov eax, 22                         # MSI_QUEUE_VECTOR (MSI-X on)
    xor edx, edx
    call vl_out16
    mov eax, 22
    call vl_in16
    PUTS "queue vector "
    call put_hex16
    call put_nl
    call submit
    mov eax, 1
    call irq_wait_n
    PUTS "msi deliveries "
    PUTDEC [irq_count + 0x104]
    call put_nl
    xor eax, eax
    call vq_poll
    PUTS "ISR after MSI-X delivery "
    call vio_isr_read
    call put_hex8
    call put_nl

    PUTSN "-- masked vector"
    mov dword ptr [ebx + 12], 1         # mask entry 0
    call submit
    xor eax, eax
    call vq_poll
    PUTS "used len "
    PUTDEC [vq_used_len]
    call put_nl
    PUTS "PBA "
    PUTHEX32 [ebx + 0x800]
    call put_nl
    PUTS "msi deliveries while masked "
    PUTDEC [irq_count + 0x104]
    call put_nl
    mov dword ptr [ebx + 12], 0         # unmask: the pending message goes out
    PUTS "PBA after unmask "
    PUTHEX32 [ebx + 0x800]
    call put_nl
    mov eax, 1
    call irq_wait_n
    PUTS "msi deliveries after unmask "
    PUTDEC [irq_count + 0x104]
    call put_nl
    ret

# submit one 16-byte device-writable buffer on queue 0 and kick
submit:
    push eax
    push ecx
    push edx
    xor eax, eax
    mov edx, request
    mov ecx, 1
    call vq_submit
    pop edx
    pop ecx
    pop eax
    ret

# -> eax = PCI status bit 3 (interrupt status) of the device
pci_status:
    push edx
    mov eax, [vio_bdf]
    mov edx, 6
    call pci_read16
    shr eax, 3
    and eax, 1
    pop edx
    ret

intx_handler:
    push eax
    inc dword ptr [intx_count]
    call pci_status
    mov [status_seen], eax
    call vio_isr_read                   # reading the ISR deasserts the line
    mov [isr_seen], eax
    mov eax, [line]
    call pic_eoi
    pop eax
    ret

msi_handler:
    call lapic_eoi
    ret

.align 4, 0
request:
    .long BUF, 16, 2
