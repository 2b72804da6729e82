# [uvirt]
# extra_params = -device virtio-rng-pci
# groups = virtio pci
#
# A transitional virtio-rng-pci: its PCI identity as a legacy driver sees it.
.include "uvirt.inc"

main:
    mov eax, 0x10051af4            # 1af4:1005, the transitional entropy device
    call pci_find
    REQUIRE_FOUND "FAIL: no virtio-rng-pci"
    mov ebx, eax
    mov edx, 0x08
    call pci_read32
    shr eax, 8
    REPORT_EQ eax, 0x00ff00, "class code: other, unclassified"
    mov eax, ebx
    mov edx, 0x2c
    call pci_read32
    REPORT_EQ eax, 0x00041af4, "subsystem 1af4:0004 (virtio device type 4: entropy)"
    mov eax, ebx
    mov edx, 0x10
    call pci_read32
    and eax, 1
    REPORT_EQ eax, 1, "BAR0 is an I/O BAR (the legacy interface)"
    call report_summary
    ret
