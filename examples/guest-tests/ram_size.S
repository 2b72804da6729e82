# The RAM size the multiboot loader reports (mem_upper: KiB of RAM from 1 MiB up).
# Build parameter RAM_MB: what the test's -m says (default 128).
#
# QEMU's multiboot loader takes mem_upper from the firmware's memory map, and SeaBIOS
# keeps the top 128 KiB of RAM for itself: mem_upper = RAM - 1 MiB - 128 KiB.
.include "uvirt.inc"

.ifndef RAM_MB
.set RAM_MB, 128
.endif

main:
    mov ebx, [boot_ebx]            # the multiboot information structure
    mov eax, [ebx]
    and eax, 0x41
    REPORT_EQ eax, 0x41, "multiboot flags: memory sizes and memory map valid"
    REPORT_EQ [ebx+4], 639, "mem_lower: 639 KiB below the EBDA"
    mov ecx, RAM_MB
    shl ecx, 10                    # KiB
    sub ecx, 1024 + 128
    REPORT_EQ [ebx+8], ecx, "mem_upper is -m less 1 MiB and the firmware's 128 KiB"
    # the memory map's RAM entry at 1 MiB says the same
    mov esi, [ebx+48]              # mmap_addr
    mov edi, esi
    add edi, [ebx+44]              # mmap_length
    xor edx, edx
find_1m:
    cmp esi, edi
    jae found
    cmp dword ptr [esi+4], 0x100000
    jne next_entry
    cmp dword ptr [esi+20], 1      # type 1: RAM
    jne next_entry
    mov edx, [esi+12]              # length, low half
    shr edx, 10
    jmp found
next_entry:
    add esi, [esi]
    add esi, 4
    jmp find_1m
found:
    REPORT_EQ [ebx+8], edx, "mem_upper equals the e820 RAM block at 1 MiB"
    call report_summary
    ret
