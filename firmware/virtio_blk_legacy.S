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
    LREG32 " pfn ", VL_QUEUE_PFN
    call vio_reset
    PUTREG "after reset: HOST_FEATURES ", VL_HOST_FEATURES, vl_in32, put_hex32
    PUTREG " GUEST_FEATURES ", VL_GUEST_FEATURES, vl_in32, put_hex32
    PUTREG " QUEUE_PFN ", VL_QUEUE_PFN, vl_in32, put_hex32
    PUTREG " QUEUE_NUM ", VL_QUEUE_NUM, vl_in16, put_hex16
    PUTREG " QUEUE_SEL ", VL_QUEUE_SEL, vl_in16, put_hex16
    LREG8 " ISR ", VL_ISR
    jmp blk_body
