# [uvirt]
# extra_params = -device virtio-rng-pci,disable-legacy=on
# groups = tutorial virtio
#
# Lesson 5: a modern (virtio 1.x) device has no I/O BAR; it describes where its
# registers are with vendor-specific PCI capabilities (VIRTIO 1.2 §4.1.4).  Walk them,
# find the common configuration structure, and negotiate VERSION_1 with FEATURES_OK.
.include "uvirt.inc"

# struct virtio_pci_cap (§4.1.4): a vendor capability (id 0x09)
.set CAP_VNDR, 0                 # 0x09
.set CAP_NEXT, 1
.set CAP_LEN, 2
.set CFG_TYPE, 3                 # 1 common, 2 notify, 3 ISR, 4 device, 5 PCI cfg access
.set CAP_BAR, 4
.set CAP_OFFSET, 8
.set CAP_LENGTH, 12
# struct virtio_pci_common_cfg (§4.1.4.3)
.set DEVICE_FEATURE_SELECT, 0x00
.set DEVICE_FEATURE, 0x04
.set DRIVER_FEATURE_SELECT, 0x08
.set DRIVER_FEATURE, 0x0c
.set NUM_QUEUES, 0x12
.set DEVICE_STATUS, 0x14
.set ACKNOWLEDGE, 1
.set DRIVER, 2
.set FEATURES_OK, 8

.align 4, 0
bdf:     .long 0
common:  .long 0                 # guest-physical address of the common cfg

# eax = BAR index -> eax = its memory address (the low 32 bits; SeaBIOS puts small
# 64-bit BARs below 4 GiB)
bar_address:
    push edx
    lea edx, [eax*4 + 0x10]
    mov eax, [bdf]
    call pci_read32
    and eax, 0xfffffff0
    pop edx
    ret

main:
    mov eax, 0x10441af4          # modern-only entropy device: 0x1040 + type 4
    call pci_find
    REQUIRE_FOUND "FAIL: no modern virtio-rng-pci (run with disable-legacy=on)"
    mov [bdf], eax
    mov edx, 0x06
    call pci_read16
    and eax, 0x10
    REPORT_EQ eax, 0x10, "status bit 4: the function has a capability list"
    mov eax, [bdf]
    mov edx, 0x34                # capabilities pointer
    call pci_read8
    mov esi, eax
walk:
    and esi, 0xfc
    jz walk_done
    mov eax, [bdf]
    mov edx, esi
    call pci_read8               # capability id
    mov ebx, eax
    PUTS "cap at "
    mov eax, esi
    call put_hex8
    PUTS " id "
    mov eax, ebx
    call put_hex8
    cmp ebx, 0x09
    jne not_virtio
    PUTS " virtio cfg_type "
    mov eax, [bdf]
    lea edx, [esi + CFG_TYPE]
    call pci_read8
    mov ebx, eax
    call put_hex_digit
    PUTS " bar "
    mov eax, [bdf]
    lea edx, [esi + CAP_BAR]
    call pci_read8
    mov edi, eax
    call put_hex_digit
    PUTS " offset "
    mov eax, [bdf]
    lea edx, [esi + CAP_OFFSET]
    call pci_read32
    mov ecx, eax
    call put_hex32
    PUTS " length "
    mov eax, [bdf]
    lea edx, [esi + CAP_LENGTH]
    call pci_read32
    call put_hex32
    cmp ebx, 1                   # the common configuration: remember where it is
    jne not_virtio
    mov eax, edi
    call bar_address
    add eax, ecx
    mov [common], eax
not_virtio:
    call put_nl
    mov eax, [bdf]
    lea edx, [esi + CAP_NEXT]
    call pci_read8
    mov esi, eax
    jmp walk
walk_done:
    PUTS "FW common cfg at "
    PUTHEX32 [common]
    call put_nl

    mov esi, [common]
    mov byte ptr [esi + DEVICE_STATUS], 0            # reset
    mov byte ptr [esi + DEVICE_STATUS], ACKNOWLEDGE | DRIVER
    PUTS "num_queues "
    movzx eax, word ptr [esi + NUM_QUEUES]
    call put_dec
    call put_nl
    # 64 feature bits, read 32 at a time through the select register
    mov dword ptr [esi + DEVICE_FEATURE_SELECT], 1
    mov eax, [esi + DEVICE_FEATURE]
    PUTS "device features 63:32 "
    call put_hex32
    call put_nl
    and eax, 1
    REPORT_EQ eax, 1, "the device offers VIRTIO_F_VERSION_1 (bit 32)"
    mov dword ptr [esi + DEVICE_FEATURE_SELECT], 0
    PUTS "device features 31:0  "
    PUTHEX32 [esi + DEVICE_FEATURE]
    call put_nl
    # accept VERSION_1 only, then FEATURES_OK: the device keeps the bit if it can work
    # with what we accepted (§3.1.1 step 5-6)
    mov dword ptr [esi + DRIVER_FEATURE_SELECT], 0
    mov dword ptr [esi + DRIVER_FEATURE], 0
    mov dword ptr [esi + DRIVER_FEATURE_SELECT], 1
    mov dword ptr [esi + DRIVER_FEATURE], 1
    mov byte ptr [esi + DEVICE_STATUS], ACKNOWLEDGE | DRIVER | FEATURES_OK
    movzx eax, byte ptr [esi + DEVICE_STATUS]
    PUTS "status after FEATURES_OK "
    call put_hex8
    call put_nl
    REPORT_EQ eax, 0x0b, "FEATURES_OK accepted"
    # without VERSION_1: the spec lets a device refuse ("MAY fail to operate further",
    # §6.1); QEMU 7.2 keeps FEATURES_OK, so a driver cannot use it as a check
    mov byte ptr [esi + DEVICE_STATUS], 0
    mov byte ptr [esi + DEVICE_STATUS], ACKNOWLEDGE | DRIVER
    mov dword ptr [esi + DRIVER_FEATURE_SELECT], 1
    mov dword ptr [esi + DRIVER_FEATURE], 0
    mov byte ptr [esi + DEVICE_STATUS], ACKNOWLEDGE | DRIVER | FEATURES_OK
    movzx eax, byte ptr [esi + DEVICE_STATUS]
    PUTS "status without VERSION_1 "
    call put_hex8
    call put_nl
    REPORT_EQ eax, 0x0b, "QEMU 7.2 accepts FEATURES_OK even without VERSION_1"
    mov byte ptr [esi + DEVICE_STATUS], 0
    call report_summary
    ret
