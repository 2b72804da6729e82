# [uvirt]
# extra_params = -device virtio-rng-pci -device edu
# groups = tutorial pci
#
# Lesson 3: how big is each BAR?  Write all ones, read back, restore (PCI 3.0 §6.2.5.1).
.include "uvirt.inc"

.align 4, 0
bdf:      .long 0
command:  .long 0

# eax = BAR offset (0x10..0x24).  Prints the read-back and the size; returns in eax the
# number of registers the BAR used (2 for a 64-bit memory BAR, else 1).
size_bar:
    push ebx
    push ecx
    push edx
    push esi
    push edi
    mov esi, eax                 # esi = BAR offset
    PUTS "BAR"
    mov eax, esi
    sub eax, 0x10
    shr eax, 2
    call put_hex_digit
    mov eax, [bdf]
    mov edx, esi
    call pci_read32
    mov edi, eax                 # edi = the address the firmware gave the BAR
    mov eax, [bdf]
    mov ecx, 0xffffffff
    call pci_write32             # all ones: the device keeps only the bits it decodes
    call pci_read32
    mov ebx, eax                 # ebx = read-back
    mov eax, [bdf]
    mov ecx, edi
    call pci_write32             # put the address back
    mov eax, ebx
    test eax, eax
    jnz implemented
    PUTSN " not implemented (reads 0)"
    mov eax, 1
    jmp out
implemented:
    PUTS " read-back "
    call put_hex32
    test ebx, 1                  # bit 0 set: an I/O BAR, bits 1:0 are flags
    jz memory
    PUTS " I/O    size "
    and eax, 0xfffffffc
    neg eax                      # size = ~(read-back & mask) + 1 = -(read-back & mask)
    call put_dec
    call put_nl
    mov eax, 1
    jmp out
memory:
    mov ecx, ebx
    and ecx, 6                   # bits 2:1: type, 0 = 32-bit, 2 = 64-bit
    and eax, 0xfffffff0          # bits 3:0 are flags (type, prefetchable)
    cmp ecx, 4
    je memory64
    PUTS " memory size "
    neg eax
    call put_dec
    call put_nl
    mov eax, 1
    jmp out
memory64:
    # the next register holds the upper 32 address bits: all ones read back there
    # means the size fits in the lower half
    push eax
    mov eax, [bdf]
    lea edx, [esi+4]
    call pci_read32
    mov ecx, eax
    mov eax, [bdf]
    push ecx
    mov ecx, 0xffffffff
    call pci_write32
    call pci_read32
    pop ecx
    push eax
    mov eax, [bdf]
    call pci_write32             # restore the upper half
    pop ecx                      # ecx = upper read-back
    pop eax
    PUTS " 64-bit memory, upper read-back "
    push eax
    mov eax, ecx
    call put_hex32
    pop eax
    test ebx, 8
    jz not_prefetch
    PUTS " prefetchable"
not_prefetch:
    PUTS " size "
    neg eax
    call put_dec
    call put_nl
    mov eax, 2
out:
    pop edi
    pop esi
    pop edx
    pop ecx
    pop ebx
    ret

# eax = vendor | device << 16: size every BAR of the first such function
size_all:
    push ebx
    call pci_find
    mov [bdf], eax
    call pci_put_ids
    call put_nl
    # Decode off while the BARs hold all ones, or the device would answer at address
    # 0xfff... for a moment (Linux's __pci_read_base does the same)
    mov eax, [bdf]
    mov edx, 4
    call pci_read16
    mov [command], eax
    mov ecx, eax
    and ecx, 0xfffc
    mov eax, [bdf]
    call pci_write16
    mov ebx, 0x10
bar_loop:
    mov eax, ebx
    call size_bar
    lea ebx, [ebx+eax*4]
    cmp ebx, 0x28
    jb bar_loop
    mov eax, [bdf]
    mov edx, 4
    mov ecx, [command]
    call pci_write16             # decode back on
    pop ebx
    ret

main:
    mov eax, 0x10051af4          # virtio-rng-pci (transitional)
    call size_all
    mov eax, 0x11e81234          # edu
    call size_all
    mov eax, [bdf]
    mov edx, 0x10
    call pci_bar_probe           # the library's helper: read-back of BAR0
    call bar_size
    REPORT_EQ eax, 0x100000, "edu BAR0 is 1 MiB"
    call report_summary
    ret
