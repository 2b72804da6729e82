# virtio_blk_legacy.S - virtio-blk over the LEGACY interface (I/O BAR0), as QEMU 7.2 does
# it.  Run with -drive file=disk.img,format=raw,if=none,id=d0 (optionally readonly=on)
# -device virtio-blk-pci,drive=d0,serial=uvirt0 on the 64 KiB pattern image made by
# uvirt.testing.qemu.virtio_disk_image.  The requests and checks are in
# include/virtio_blk_body.inc; this file finds the device, prints the BAR0 header
# registers as found (status left by SeaBIOS is firmware-chosen: FW) and resets it.
.include "uvirt.inc"
.include "virtio.inc"
.include "virtio_blk_body.inc"

main:
    VIO_REQUIRE 2, "FAIL: no virtio-blk"
    call vio_put_ident
    call vio_use_legacy
    PUTS "FW IOBASE "
    call put_hex16
    call put_nl
    PUTS "FW at entry: status "
    call vio_status_read
    call put_hex8
    PUTS " pfn "
    mov eax, VL_QUEUE_PFN
    call vl_in32
    call put_hex32
    call put_nl
    call vio_reset
    PUTS "after reset: HOST_FEATURES "
    mov eax, VL_HOST_FEATURES
    call vl_in32
    call put_hex32
    PUTS " GUEST_FEATURES "
    mov eax, VL_GUEST_FEATURES
    call vl_in32
    call put_hex32
    PUTS " QUEUE_PFN "
    mov eax, VL_QUEUE_PFN
    call vl_in32
    call put_hex32
    PUTS " QUEUE_NUM "
    mov eax, VL_QUEUE_NUM
    call vl_in16
    call put_hex16
    PUTS " QUEUE_SEL "
    mov eax, VL_QUEUE_SEL
    call vl_in16
    call put_hex16
    PUTS " ISR "
    mov eax, VL_ISR
    call vl_in8
    call put_hex8
    call put_nl
    jmp blk_body
