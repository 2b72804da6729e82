# edu_dma_abort.S - what a guest observes when edu's DMA range check fails: nothing.
# edu_check_range wants the device-buffer range inside [0x40000, 0x41000) with its end
# strictly below 0x41000, so a transfer of the whole 4096-byte buffer fails it; QEMU 7.2
# calls hw_error (prints "qemu: hardware error: EDU: DMA range ...") and aborts.  The
# line before the DMA is the last output; uvirt stops the same way, exit status 134.
# Run with: -device edu.  DMA_COUNT (default 4096) and DMA_DEV (default 0x40000) pick
# the transfer.
.include "uvirt.inc"

.ifndef DMA_COUNT
.set DMA_COUNT, 4096
.endif
.ifndef DMA_DEV
.set DMA_DEV, 0x40000
.endif

main:
    mov eax, 0x11e81234
    call pci_find
    REQUIRE_FOUND "FAIL: no edu device (run with -device edu)"
    mov ebx, eax
    mov edx, 0x10
    call pci_read32
    and eax, 0xfffffff0
    mov esi, eax
    mov eax, ebx
    mov edx, 4
    call pci_read16
    mov ecx, eax
    or ecx, 4                   # bus master
    mov eax, ebx
    call pci_write16
    PUTS "DMA RAM -> device buffer, count "
    mov eax, DMA_COUNT
    call put_hex32
    PUTS " at "
    mov eax, DMA_DEV
    call put_hex32
    call put_nl
    mov dword ptr [esi+0x80], 0x200000
    mov dword ptr [esi+0x88], DMA_DEV
    mov dword ptr [esi+0x90], DMA_COUNT
    mov dword ptr [esi+0x98], 1
    lea eax, [esi+0x98]
    mov edx, 1
    mov ecx, 0
    call poll_mmio32
    REPORT_TRUE eax, "DMA finished"
    ret
