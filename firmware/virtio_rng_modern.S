# virtio_rng_modern.S - virtio-rng over the MODERN interface (vendor capabilities, BAR4
# 64-bit MMIO), as QEMU 7.2 does it.  Run with -device virtio-rng-pci,disable-legacy=on
# and with the default transitional -device virtio-rng-pci.
#
# Prints: the capability chain (position, cfg_type, bar, offset, length, notify
# multiplier), every common-cfg register (hex, no 0x) before and after reset, feature
# words for selects 0..3, driver-feature read-back, FEATURES_OK and its re-read (with and
# without VERSION_1), writes after FEATURES_OK, queue select/size/enable/notify_off and
# the address registers, reads through the PCI-cfg access capability, device-config
# reads, requests (16 bytes, 8+8 chain) with used id/len/idx and ISR read-clear, and what
# a reset (status 0) clears.  Resolved MMIO addresses are firmware-chosen: FW lines.
.include "uvirt.inc"
.include "virtio.inc"
.include "pci_caps.inc"

.set BUF, 0x300000

# a common-cfg register read through the PCI cfg access capability, then a newline
.macro PCICFG_REG msg, off, width, put
    PUTS \msg
    mov eax, \off
    add eax, [vio_cap_off + 4]
    mov edx, \width
    call vm_pcicfg_read
    call \put
    call put_nl
.endm

# the selected queue's ring addresses, low and high dwords
.macro QUEUE_ADDRS
    CREG32 "queue_desc lo ", VM_Q_DESC
    CREG32 "queue_desc hi ", VM_Q_DESC + 4
    CREG32 "queue_driver lo ", VM_Q_DRIVER
    CREG32 "queue_driver hi ", VM_Q_DRIVER + 4
    CREG32 "queue_device lo ", VM_Q_DEVICE
    CREG32 "queue_device hi ", VM_Q_DEVICE + 4
.endm

main:
    VIO_REQUIRE 4, "FAIL: no virtio-rng"
    call vio_put_ident
    call print_caps
    VIO_MODERN_OR_SUMMARY "common, notify and ISR capabilities found"
    PUTS "FW common "
    PUTHEX32 [vio_common]
    PUTS " isr "
    PUTHEX32 [vio_isr_addr]
    PUTS " device "
    PUTHEX32 [vio_devcfg]
    PUTS " notify "
    PUTHEX32 [vio_notify_base]
    call put_nl
    PUTS "notify multiplier "
    PUTHEX32 [vio_notify_mult]
    call put_nl
    PUTS "FW at entry: status "
    call vio_status_read
    call put_hex8
    PUTC ' '
    call vio_put_bm
    call put_nl
    mov eax, [vio_bdf]
    call vio_bus_master
    PUTS "after setting command bits 0-2: "
    call vio_put_bm
    call put_nl

    PUTSN "-- common cfg before reset"
    call dump_common
    call vio_reset
    PUTSN "-- common cfg after reset"
    call dump_common
    PUTSN "-- through the PCI cfg access capability"
    PUTS "PCICFG cap at "
    PUTHEX8 [vio_pcicfg_cap]
    call put_nl
    CWR32 VM_DFSELECT, 1
    PCICFG_REG "common+4 w32 (device_feature, select 1) ", VM_DF, 4, put_hex32
    CWR32 VM_DFSELECT, 0
    PCICFG_REG "common+4 w32 (device_feature, select 0) ", VM_DF, 4, put_hex32
    PCICFG_REG "common+18 w16 (num_queues) ", VM_NUM_QUEUES, 2, put_hex16
    PCICFG_REG "common+24 w8 (queue_size low byte) ", VM_Q_SIZE, 1, put_hex8
    PUTS "cap raw after use: "
    mov ebx, [vio_pcicfg_cap]
    mov ecx, 5
pcicfg_raw:
    mov eax, [vio_bdf]
    mov edx, ebx
    call pci_read32
    call put_hex32
    PUTC ' '
    add ebx, 4
    dec ecx
    jnz pcicfg_raw
    call put_nl

    PUTSN "-- device config (rng has none)"
    PUTS "device cfg w8 "
    xor eax, eax
    call vio_cfg_read8
    call put_hex8
    PUTS " w16 "
    xor eax, eax
    call vio_cfg_read16
    call put_hex16
    PUTS " w32 "
    xor eax, eax
    call vio_cfg_read32
    call put_hex32
    call put_nl

    PUTSN "-- FEATURES_OK without VERSION_1"
    VIO_ACK_DRIVER
    CREG8 "status after ACK|DRIVER ", VM_STATUS
    xor eax, eax
    xor edx, edx
    call vio_feat_write
    mov eax, 1
    call vio_feat_write
    mov eax, VS_ACK | VS_DRIVER | VS_FEATURES_OK
    call vio_status_write
    CREG8 "status after FEATURES_OK ", VM_STATUS
    call vio_reset
    CREG8 "status after reset ", VM_STATUS

    PUTSN "-- negotiation"
    mov eax, VS_ACK
    call vio_status_write
    CREG8 "status after ACK ", VM_STATUS
    mov eax, VS_ACK | VS_DRIVER
    call vio_status_write
    CREG8 "status after ACK|DRIVER ", VM_STATUS
    xor ebx, ebx
feat_loop:
    PUTS "device_feature["
    PUTDEC ebx
    PUTS "] "
    mov eax, ebx
    call vio_feat_read
    call put_hex32
    CREG32 " select reads ", VM_DFSELECT
    inc ebx
    cmp ebx, 4
    jb feat_loop
    xor eax, eax
    mov edx, 0xffffffff
    call vio_feat_write
    mov eax, 1
    mov edx, 0xffffffff
    call vio_feat_write
    mov eax, 2
    mov edx, 0xffffffff
    call vio_feat_write
    call dump_driver_features
    xor eax, eax
    xor edx, edx
    call vio_feat_write
    mov eax, 1
    mov edx, 1                          # VERSION_1 only
    call vio_feat_write
    mov eax, 2
    xor edx, edx
    call vio_feat_write
    PUTSN "wrote driver features 0 / 1 / 0"
    call dump_driver_features
    mov eax, VS_ACK | VS_DRIVER | VS_FEATURES_OK
    call vio_status_write
    CREG8 "status after FEATURES_OK ", VM_STATUS
    xor eax, eax
    mov edx, 0x10000000
    call vio_feat_write
    PUTSN "wrote driver_feature[0] = 10000000 after FEATURES_OK"
    call dump_driver_features

    PUTSN "-- queues"
    CREG16 "num_queues ", VM_NUM_QUEUES
    xor ebx, ebx
q_loop:
    PUTS "queue "
    PUTDEC ebx
    CWR16 VM_Q_SELECT, ebx
    PUTREG " select ", VM_Q_SELECT, vm_rd16, put_hex16
    PUTREG " size ", VM_Q_SIZE, vm_rd16, put_hex16
    PUTREG " enable ", VM_Q_ENABLE, vm_rd16, put_hex16
    PUTREG " notify_off ", VM_Q_NOTIFY_OFF, vm_rd16, put_hex16
    CREG16 " msix ", VM_Q_MSIX
    inc ebx
    cmp ebx, 2
    jb q_loop
    CWR16 VM_Q_SELECT, 0
    CWR16 VM_Q_SELECT, 1024
    CREG16 "queue_select after writing 1024 ", VM_Q_SELECT
    CWR16 VM_Q_SELECT, 0
    CWR16 VM_Q_SIZE, 4
    CREG16 "queue 0 size after writing 4 ", VM_Q_SIZE
    CWR16 VM_Q_SIZE, 2048
    CREG16 "queue 0 size after writing 2048 ", VM_Q_SIZE
    CWR16 VM_Q_SIZE, 8
    xor eax, eax
    xor edx, edx
    call vio_queue_setup
    PUTS "queue 0 set up, size "
    call put_dec
    call put_nl
    CREG16 "queue_enable ", VM_Q_ENABLE
    QUEUE_ADDRS
    PUTISR "ISR before DRIVER_OK "
    mov eax, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK
    call vio_status_write
    CREG8 "status after DRIVER_OK ", VM_STATUS
    CREG8 "config_generation ", VM_CFG_GEN

    PUTSN "-- request 1: one 16-byte buffer"
    mov edx, req1
    mov ecx, 1
    call rng_request
    PUTSN "-- request 2: 8+8 chain"
    mov edx, req2
    mov ecx, 2
    call rng_request
    PUTSN "-- request 3: 16 bytes with VRING_AVAIL_F_NO_INTERRUPT"
    xor eax, eax
    call vq_avail
    mov word ptr [eax], 1
    mov edx, req1
    mov ecx, 1
    call rng_request
    xor eax, eax
    call vq_avail
    mov word ptr [eax], 0
    PUTS "used.flags "
    xor eax, eax
    call vq_used
    movzx eax, word ptr [eax]
    call put_hex16
    call put_nl

    PUTSN "-- reset"
    CWR8 VM_STATUS, 0
    call dump_common
    call dump_driver_features
    PUTS "after reset: "
    call vio_put_bm
    call put_nl
    call report_summary

dump_driver_features:
    push ebx
    xor ebx, ebx
ddf_loop:
    CWR32 VM_GFSELECT, ebx
    PUTS "driver_feature["
    PUTDEC ebx
    CREG32 "] ", VM_GF
    inc ebx
    cmp ebx, 3
    jb ddf_loop
    CWR32 VM_GFSELECT, 0
    pop ebx
    ret

# every common-cfg field at its natural width (queue fields for queue_select as found)
dump_common:
    CREG32 "device_feature_select ", VM_DFSELECT
    CREG32 "device_feature ", VM_DF
    CREG32 "driver_feature_select ", VM_GFSELECT
    CREG32 "driver_feature ", VM_GF
    CREG16 "msix_config ", VM_MSIX_CONFIG
    CREG16 "num_queues ", VM_NUM_QUEUES
    CREG8 "device_status ", VM_STATUS
    CREG8 "config_generation ", VM_CFG_GEN
    CREG16 "queue_select ", VM_Q_SELECT
    CREG16 "queue_size ", VM_Q_SIZE
    CREG16 "queue_msix_vector ", VM_Q_MSIX
    CREG16 "queue_enable ", VM_Q_ENABLE
    CREG16 "queue_notify_off ", VM_Q_NOTIFY_OFF
    QUEUE_ADDRS
    CREG16 "common+56 ", 56
    CREG16 "common+58 ", 58
    CREG32 "common+60 ", 60
    PUTISR "ISR "
    ret

# the capability chain as the device presents it
print_caps:
    push eax
    push edx
    mov eax, [vio_bdf]
    mov edx, put_cap
    call pci_put_caps
    pop edx
    pop eax
    ret

# for pci_put_caps: the id, and a vendor capability's fields (virtio_pci_cap)
.macro CAP_FIELD msg, off, rd, put
    PUTS \msg
    lea edx, [esi + \off]
    mov eax, ebx
    call \rd
    call \put
.endm
put_cap:
    PUTS " id "
    mov eax, ebx
    mov edx, esi
    call pci_read8
    call put_hex8
    cmp al, 9
    jne pc_next
    CAP_FIELD " len ", 2, pci_read8, put_hex8
    CAP_FIELD " type ", 3, pci_read8, put_hex8
    mov edi, eax
    CAP_FIELD " bar ", 4, pci_read8, put_hex8
    CAP_FIELD " id ", 5, pci_read8, put_hex8
    CAP_FIELD " off ", 8, pci_read32, put_hex32
    CAP_FIELD " length ", 12, pci_read32, put_hex32
    cmp edi, 2
    jne pc_next
    CAP_FIELD " mult ", 16, pci_read32, put_hex32
pc_next:
    ret

.set RNG_COUNT_USED, 0
.include "rng_request.inc"
