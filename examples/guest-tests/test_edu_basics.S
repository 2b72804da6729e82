# [uvirt]
# extra_params = -device edu
# groups = edu
#
# QEMU's edu device: identification, the liveness register, one factorial.
.include "uvirt.inc"

main:
    mov eax, 0x11e81234            # vendor 0x1234, device 0x11e8
    call pci_find
    REQUIRE_FOUND "FAIL: no edu device"
    mov edx, 0x10                  # BAR0: the 1 MiB register window
    call pci_read32
    and eax, 0xfffffff0
    mov esi, eax
    REPORT_EQ [esi], 0x010000ed, "identification register"
    mov dword ptr [esi+4], 0x0000ffff
    REPORT_EQ [esi+4], 0xffff0000, "liveness register inverts"
    mov dword ptr [esi+8], 6       # start 6!
    lea eax, [esi+0x20]            # status: bit 0 = still computing
    mov edx, 1
    mov ecx, 0
    call poll_mmio32
    REPORT_TRUE eax, "factorial finishes"
    REPORT_EQ [esi+8], 720, "6! is 720"
    call report_summary
    ret
