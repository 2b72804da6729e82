# virtio_blk_modern.S - virtio-blk over the MODERN interface (capabilities, BAR4 MMIO), as
# QEMU 7.2 does it.  Run with -drive file=disk.img,format=raw,if=none,id=d0 (optionally
# readonly=on) -device virtio-blk-pci,drive=d0,serial=uvirt0 (transitional, or with
# disable-legacy=on) on the pattern image of uvirt.testing.qemu.virtio_disk_image.  The
# requests and checks are in include/virtio_blk_body.inc; this file finds the device,
# prints the vendor capabilities and the common-cfg registers, sets bus master and resets.
.include "uvirt.inc"
.include "virtio.inc"
.include "virtio_blk_body.inc"

main:
    VIO_REQUIRE 2, "FAIL: no virtio-blk"
    call vio_put_ident
    VIO_MODERN_OR_SUMMARY "common, notify and ISR capabilities found"
    mov ebx, 1
caps:
    PUTS "cap type "
    PUTDEC ebx
    PUTS " at "
    PUTHEX8 [vio_cap_pos + ebx*4]
    PUTS " bar "
    PUTHEX8 [vio_cap_bar + ebx*4]
    PUTS " off "
    PUTHEX32 [vio_cap_off + ebx*4]
    PUTS " len "
    PUTHEX32 [vio_cap_len + ebx*4]
    call put_nl
    inc ebx
    cmp ebx, 6
    jb caps
    PUTS "notify multiplier "
    PUTHEX32 [vio_notify_mult]
    call put_nl
    PUTSTATUS "FW at entry: status "
    mov eax, [vio_bdf]
    call vio_bus_master
    mov eax, VM_DFSELECT                # known values in the select registers: reset
    mov edx, 1                          # does not clear them on QEMU (SeaBIOS leaves
    call vm_wr32                        # its own values there otherwise)
    mov eax, VM_GFSELECT
    call vm_wr32
    call vio_reset
    PUTREG "after reset: driver_feature_select ", VM_GFSELECT, vm_rd32, put_hex32
    call put_nl
    PUTREG "after reset: device_feature_select ", VM_DFSELECT, vm_rd32, put_hex32
    PUTREG " msix_config ", VM_MSIX_CONFIG, vm_rd16, put_hex16
    PUTREG " num_queues ", VM_NUM_QUEUES, vm_rd16, put_hex16
    PUTREG " config_generation ", VM_CFG_GEN, vm_rd8, put_hex8
    PUTREG " queue_select ", VM_Q_SELECT, vm_rd16, put_hex16
    PUTREG " queue_size ", VM_Q_SIZE, vm_rd16, put_hex16
    PUTREG " queue_msix_vector ", VM_Q_MSIX, vm_rd16, put_hex16
    PUTREG " queue_enable ", VM_Q_ENABLE, vm_rd16, put_hex16
    PUTREG " queue_notify_off ", VM_Q_NOTIFY_OFF, vm_rd16, put_hex16
    PUTREG " queue_desc ", VM_Q_DESC, vm_rd32, put_hex32
    call put_nl
    jmp blk_body
