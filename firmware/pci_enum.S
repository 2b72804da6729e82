# pci_enum.S - bus 0 enumerator with output close to `lspci -nn -vv`.
#
# Format (all numbers hex without 0x; sizes in bytes, hex):
#   bb:dd.f vvvv:dddd rev rr class cccccc hdr hh subsys vvvv:dddd pin p
#       BARn io addr aaaaaaaa size ssssssss
#       BARn mem32 [pref ]addr aaaaaaaa size ssssssss
#       BARn mem64 [pref ]addr aaaaaaaaaaaaaaaa size ssssssssssssssss
#       ROM addr aaaaaaaa size ssssssss enabled|disabled
#       CAP @oo id ii
#   DONE n functions
# Unimplemented BARs (read-back 0) and an absent ROM are not listed.  BARs are sized as
# Linux does (pci_read_bases): decode bits 0/1 of the command register cleared, each BAR
# saved, written with all ones, read back, restored; then the command is restored.
# "addr" is whatever the firmware assigned (SeaBIOS on QEMU).  pin 0 = none, 1 = INTA#.
.include "uvirt.inc"

main:
    xor edi, edi                        # functions found
    mov ebx, 0xffffffff
enum_loop:
    mov eax, ebx
    call pci_next
    cmp eax, 0xffffffff
    je enum_done
    mov ebx, eax
    inc edi
    call enum_function
    jmp enum_loop
enum_done:
    PUTS "DONE "
    PUTDEC edi
    PUTSN " functions"
    ret

# ebx = bdf
enum_function:
    pushad
    mov eax, ebx
    call put_bdf
    PUTC ' '
    mov eax, ebx
    call pci_put_ids
    mov [hdr_type], eax
    PUTS " subsys "
    mov eax, ebx
    mov edx, 0x2c
    call pci_read32
    call put_hex16
    PUTC ':'
    shr eax, 16
    call put_hex16
    PUTS " pin "
    mov eax, ebx
    mov edx, 0x3d
    call pci_read8
    call put_hex_digit
    call put_nl

    # BAR count from the header layout: 6 (type 0), 2 (type 1 bridge), 0 otherwise
    mov eax, [hdr_type]
    and eax, 0x7f
    xor ecx, ecx
    cmp eax, 0
    jne enum_not0
    mov ecx, 6
enum_not0:
    cmp eax, 1
    jne enum_nbars
    mov ecx, 2
enum_nbars:
    mov [nbars], ecx

    # decode off while sizing (Linux does the same)
    mov eax, ebx
    mov edx, 0x04
    call pci_read16
    mov [cmd], eax
    mov ecx, eax
    and ecx, 0xfffc
    mov eax, ebx
    call pci_write16
    xor esi, esi                        # BAR index
enum_bar_loop:
    cmp esi, [nbars]
    jae enum_rom
    lea edx, [esi*4+0x10]
    mov eax, ebx
    call pci_read32
    mov edi, eax                        # original value (low)
    mov eax, ebx
    call pci_bar_probe                  # eax = low read-back, edx = high read-back
    test eax, eax
    jnz enum_bar_impl
    test edx, edx
    jz enum_bar_next1                   # unimplemented
enum_bar_impl:
    mov ecx, eax                        # ecx = low read-back, edx = high read-back
    PUTS "    BAR"
    mov eax, esi
    call put_hex_digit
    test edi, 1
    jz enum_bar_mem
    PUTS " io addr "
    mov eax, edi
    and eax, 0xfffffffc
    call put_hex32
    PUTS " size "
    mov eax, ecx
    call bar_size
    call put_hex32
    call put_nl
    jmp enum_bar_next1
enum_bar_mem:
    mov eax, edi
    and eax, 6
    cmp eax, 4
    je enum_bar_mem64
    PUTS " mem32 "
    call enum_pref
    PUTS "addr "
    mov eax, edi
    and eax, 0xfffffff0
    call put_hex32
    PUTS " size "
    mov eax, ecx
    call bar_size
    call put_hex32
    call put_nl
    jmp enum_bar_next1
enum_bar_mem64:
    PUTS " mem64 "
    call enum_pref
    PUTS "addr "
    push edx
    mov eax, ebx
    lea edx, [esi*4+0x14]
    call pci_read32                     # high dword of the address
    pop edx
    call put_hex32
    mov eax, edi
    and eax, 0xfffffff0
    call put_hex32
    PUTS " size "
    mov eax, ecx                        # size = lowest set address bit of hi:lo
    call bar_size
    test eax, eax
    jz enum_size_hi
    push eax
    xor eax, eax
    call put_hex32
    pop eax
    call put_hex32
    jmp enum_size_done
enum_size_hi:
    mov eax, edx
    neg eax
    and eax, edx
    call put_hex32
    xor eax, eax
    call put_hex32
enum_size_done:
    call put_nl
    inc esi                             # a 64-bit BAR takes two slots
enum_bar_next1:
    inc esi
    jmp enum_bar_loop

enum_rom:
    mov eax, [hdr_type]
    and eax, 0x7f
    jnz enum_restore
    mov eax, ebx
    mov edx, 0x30
    call pci_read32
    mov edi, eax
    mov eax, ebx
    call pci_bar_probe
    and eax, 0xfffff800
    jz enum_restore                     # no ROM
    mov ecx, eax
    PUTS "    ROM addr "
    mov eax, edi
    and eax, 0xfffff800
    call put_hex32
    PUTS " size "
    mov eax, ecx
    neg eax
    and eax, ecx
    call put_hex32
    test edi, 1
    jz enum_rom_off
    PUTSN " enabled"
    jmp enum_restore
enum_rom_off:
    PUTSN " disabled"

enum_restore:
    mov eax, ebx
    mov edx, 0x04
    mov ecx, [cmd]
    call pci_write16

    # capability list (status bit 4)
    mov eax, ebx
    mov edx, 0x06
    call pci_read16
    test al, 0x10
    jz enum_end
    mov eax, ebx
    mov edx, 0x34
    call pci_read8
    mov esi, eax
    mov ecx, 48                         # Linux's TTL against looping lists
enum_cap_loop:
    and esi, 0xfc
    cmp esi, 0x40
    jb enum_end
    PUTS "    CAP @"
    mov eax, esi
    call put_hex8
    PUTS " id "
    mov eax, ebx
    mov edx, esi
    call pci_read16
    call put_hex8
    call put_nl
    shr eax, 8
    mov esi, eax
    dec ecx
    jnz enum_cap_loop
enum_end:
    popad
    ret

# prints "pref " if bit 3 of edi is set
enum_pref:
    test edi, 8
    jz enum_pref_out
    PUTS "pref "
enum_pref_out:
    ret

.align 4, 0
hdr_type: .long 0
nbars:    .long 0
cmd:      .long 0
