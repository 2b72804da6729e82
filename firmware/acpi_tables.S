# acpi_tables.S - the ACPI tables the firmware left in memory, as a guest OS finds them:
# the RSDP found by scanning 0xE0000-0xFFFFF on 16-byte boundaries, the RSDT's entries
# (address, signature, length, revision, byte sum: 00 when the checksum is right), the
# FACP's fields an OS reads (FACS/DSDT pointers, SCI, SMI command, PM1a/PM timer/GPE0
# blocks and lengths, century, flags), the FACS and DSDT headers, the MADT's entry types.
# Run under -bios (real firmware installs the tables); without firmware there are none.
.include "uvirt.inc"

main:
    mov esi, 0xe0000
find_rsdp:
    cmp dword ptr [esi], 0x20445352     # "RSD "
    jne find_next
    cmp dword ptr [esi + 4], 0x20525450 # "PTR "
    je found_rsdp
find_next:
    add esi, 16
    cmp esi, 0x100000
    jb find_rsdp
    PUTSN "no RSDP"
    ret

found_rsdp:
    PUTS "RSDP at "
    PUTHEX32 esi
    PUTS " oem "
    lea eax, [esi + 9]
    mov ecx, 6
    call put_chars
    PUTS " rev "
    movzx eax, byte ptr [esi + 15]
    call put_hex8
    PUTS " rsdt "
    mov eax, [esi + 16]
    call put_hex32
    PUTS " sum "
    mov ecx, 20
    call byte_sum
    call put_hex8
    call put_nl
    mov ebx, [esi + 16]                 # RSDT
    mov esi, ebx
    call table_line
    mov ecx, [ebx + 4]
    sub ecx, 36
    shr ecx, 2
    lea edi, [ebx + 36]
rsdt_entry:
    test ecx, ecx
    jz rsdt_done
    mov esi, [edi]
    call table_line
    cmp dword ptr [esi], 0x50434146     # "FACP"
    jne 1f
    call fadt_fields
1:
    cmp dword ptr [esi], 0x43495041     # "APIC"
    jne 2f
    call madt_entries
2:
    add edi, 4
    dec ecx
    jmp rsdt_entry
rsdt_done:
    ret

# esi = table: "SIGN at ADDRESS len LENGTH rev R oem OEMID table TABLEID sum S"
table_line:
    push eax
    push ecx
    mov eax, esi
    mov ecx, 4
    call put_chars
    PUTS " at "
    PUTHEX32 esi
    PUTS " len "
    PUTHEX32 [esi + 4]
    PUTS " rev "
    movzx eax, byte ptr [esi + 8]
    call put_hex8
    PUTS " oem "
    lea eax, [esi + 10]
    mov ecx, 6
    call put_chars
    lea eax, [esi + 16]
    mov ecx, 8
    call put_chars
    PUTS " sum "
    mov ecx, [esi + 4]
    call byte_sum
    call put_hex8
    call put_nl
    pop ecx
    pop eax
    ret

# esi = FACP
fadt_fields:
    push eax
    push esi
    PUTS "  FACS "
    PUTHEX32 [esi + 36]
    PUTS " DSDT "
    PUTHEX32 [esi + 40]
    PUTS " SCI "
    movzx eax, word ptr [esi + 46]
    call put_hex16
    PUTS " SMI_CMD "
    PUTHEX32 [esi + 48]
    PUTS " enable "
    movzx eax, byte ptr [esi + 52]
    call put_hex8
    PUTS " disable "
    movzx eax, byte ptr [esi + 53]
    call put_hex8
    call put_nl
    PUTS "  PM1a_EVT "
    PUTHEX32 [esi + 56]
    PUTS " PM1a_CNT "
    PUTHEX32 [esi + 64]
    PUTS " PM_TMR "
    PUTHEX32 [esi + 76]
    PUTS " GPE0 "
    PUTHEX32 [esi + 80]
    PUTS " lens "
    PUTHEX32 [esi + 88]
    PUTS " century "
    movzx eax, byte ptr [esi + 108]
    call put_hex8
    PUTS " flags "
    PUTHEX32 [esi + 112]
    call put_nl
    mov esi, [esi + 36]                 # FACS: signature and length, no checksum
    PUTS "  "
    mov eax, esi
    mov ecx, 4
    call put_chars
    PUTS " len "
    PUTHEX32 [esi + 4]
    call put_nl
    pop esi
    push esi
    mov esi, [esi + 40]                 # DSDT
    PUTS "  "
    call table_line
    pop esi
    pop eax
    ret

# esi = APIC: local APIC address, flags, then "type/length" of each entry
madt_entries:
    push eax
    push ecx
    push edx
    PUTS "  LAPIC "
    PUTHEX32 [esi + 36]
    PUTS " flags "
    PUTHEX32 [esi + 40]
    PUTS " entries"
    lea edx, [esi + 44]
    mov ecx, esi
    add ecx, [esi + 4]
madt_next:
    cmp edx, ecx
    jae madt_done
    PUTC ' '
    movzx eax, byte ptr [edx]
    call put_hex8
    PUTC '/'
    movzx eax, byte ptr [edx + 1]
    call put_hex8
    movzx eax, byte ptr [edx + 1]
    test eax, eax
    jz madt_done
    add edx, eax
    jmp madt_next
madt_done:
    call put_nl
    pop edx
    pop ecx
    pop eax
    ret

# esi = address, ecx = length -> eax = byte sum & 0xff
byte_sum:
    push ecx
    push edx
    xor eax, eax
    mov edx, esi
byte_sum_loop:
    test ecx, ecx
    jz byte_sum_done
    add al, [edx]
    inc edx
    dec ecx
    jmp byte_sum_loop
byte_sum_done:
    pop edx
    pop ecx
    ret

# eax = address, ecx = count: the bytes as characters ('.' outside printable ASCII)
put_chars:
    push eax
    push ecx
    push edx
    mov edx, eax
put_chars_loop:
    test ecx, ecx
    jz put_chars_done
    mov al, [edx]
    cmp al, 0x20
    jb put_chars_dot
    cmp al, 0x7e
    jbe put_chars_out
put_chars_dot:
    mov al, '.'
put_chars_out:
    call putc
    inc edx
    dec ecx
    jmp put_chars_loop
put_chars_done:
    pop edx
    pop ecx
    pop eax
    ret
