# lib_selftest.S - checks the guest library itself (report-style; on any machine with
# the pc built-ins).  Printer output is checked by the host against the transcript:
#   HEX 5a 1234 89abcdef | DEC 0 7 4294967295 | BDF 00:01.3 | KEEP 42 66
# Build parameters: FIND_ID (dword 0 to look for, default PIIX4 PM 8086:7113),
# FIND_BDF (where it must be, default 00:01.3 = 0x000b).
.set POLL_MAX, 100000                   # before the include: emits no bytes
.include "uvirt.inc"

.ifndef FIND_ID
.set FIND_ID, 0x71138086
.endif
.ifndef FIND_BDF
.set FIND_BDF, 0x000b
.endif

main:
    PUTS "HEX "
    PUTHEX8 0x15a                       # only the low byte
    PUTC ' '
    PUTHEX16 0x1234
    PUTC ' '
    PUTHEX32 0x89abcdef
    call put_nl
    PUTS "DEC "
    PUTDEC 0
    PUTC ' '
    PUTDEC 7
    PUTC ' '
    PUTDEC 0xffffffff
    call put_nl
    PUTS "BDF "
    mov eax, FIND_BDF
    call put_bdf
    call put_nl

    # registers survive library calls
    mov ebx, 0x11111111
    mov ecx, 0x22222222
    mov edx, 0x33333333
    mov esi, 0x44444444
    mov edi, 0x55555555
    mov ebp, 0x66666666
    PUTS "KEEP "
    mov eax, 0x42
    call put_hex8
    PUTC ' '
    call put_dec
    call put_nl
    xor eax, eax
    call pci_read32                     # 00:00.0 at offset edx & 0xfc
    mov eax, 0x00f8                     # write to an absent function: dropped
    call pci_write32
    mov eax, 0x80
    call bar_size
    call pci_find
    mov eax, 0x000b
    call pci_next
    mov eax, scratch
    call mmio_read32
    REPORT_EQ ebx, 0x11111111, "ebx preserved"
    REPORT_EQ ecx, 0x22222222, "ecx preserved"
    REPORT_EQ edx, 0x33333333, "edx preserved"
    REPORT_EQ esi, 0x44444444, "esi preserved"
    REPORT_EQ edi, 0x55555555, "edi preserved"
    REPORT_EQ ebp, 0x66666666, "ebp preserved"

    # PCI accessors, every width and lane
    xor eax, eax
    xor edx, edx
    call pci_read32
    REPORT_EQ eax, 0x12378086, "pci_read32 00:00.0 0x00"
    xor eax, eax
    mov edx, 2
    call pci_read16
    REPORT_EQ eax, 0x1237, "pci_read16 00:00.0 0x02"
    xor eax, eax
    mov edx, 3
    call pci_read8
    REPORT_EQ eax, 0x12, "pci_read8 00:00.0 0x03"
    mov eax, FIND_ID
    call pci_find
    REPORT_EQ eax, FIND_BDF, "pci_find finds the device"
    mov eax, 0xdeadbeef
    call pci_find
    REPORT_EQ eax, 0xffffffff, "pci_find of an absent id returns -1"

    # write and read back the interrupt-line scratch register of 00:01.3, all widths
    mov eax, 0x000b
    mov edx, 0x3c
    call pci_read8
    mov esi, eax                        # saved
    mov eax, 0x000b
    mov ecx, 0xa5
    call pci_write8
    call pci_read8
    REPORT_EQ eax, 0xa5, "pci_write8 / pci_read8 interrupt line"
    mov eax, 0x000b
    mov ecx, esi
    call pci_write8

    # the PIIX3's IDE BAR4 sizes to 16 bytes of I/O, and is restored
    mov eax, 0x0009                     # 00:01.1
    mov edx, 0x20
    call pci_read32
    mov esi, eax
    mov eax, 0x0009
    call pci_bar_probe
    REPORT_EQ edx, 0, "pci_bar_probe high half of a 32-bit BAR is 0"
    REPORT_EQ eax, 0xfffffff1, "pci_bar_probe IDE BAR4 read-back"
    call bar_size
    REPORT_EQ eax, 0x10, "bar_size of IDE BAR4"
    mov eax, 0x0009
    mov edx, 0x20
    call pci_read32
    REPORT_EQ eax, esi, "IDE BAR4 restored"

    # the enumerator visits exactly the four built-ins
    xor esi, esi
    mov eax, 0xffffffff
enum:
    call pci_next
    cmp eax, 0xffffffff
    je enum_done
    inc esi
    jmp enum
enum_done:
    REPORT_EQ esi, 4, "pci_next visits 4 functions"

    # MMIO helpers on RAM, polling
    mov eax, scratch
    mov edx, 0x12345678
    call mmio_write32
    call mmio_read32
    REPORT_EQ eax, 0x12345678, "mmio_write32 / mmio_read32"
    mov eax, scratch
    mov edx, 0xabcd
    call mmio_write16
    call mmio_read32
    REPORT_EQ eax, 0x1234abcd, "mmio_write16 writes 2 bytes"
    mov eax, scratch+3
    mov edx, 0x99
    call mmio_write8
    call mmio_read8
    REPORT_EQ eax, 0x99, "mmio_write8 / mmio_read8"
    mov eax, scratch
    mov edx, 0xff000000
    mov ecx, 0x99000000
    call poll_mmio32
    REPORT_EQ eax, 1, "poll_mmio32 sees a set value"
    mov eax, scratch
    mov edx, 0xff
    mov ecx, 0x01
    call poll_mmio32
    REPORT_EQ eax, 0, "poll_mmio32 gives up after POLL_MAX reads"
    mov dword ptr [countdown], 5
    mov eax, tick
    mov ecx, 100
    call poll_call
    REPORT_EQ eax, 1, "poll_call done"
    REPORT_EQ ecx, 100, "poll_call preserves ecx"
    mov dword ptr [countdown], 500
    mov eax, tick
    mov ecx, 100
    call poll_call
    REPORT_EQ eax, 0, "poll_call bound"
    REPORT_EQ [countdown], 400, "poll_call called 100 times"

    # the report counters themselves (before this check: 26 tests, 0 failures)
    REPORT_EQ [report_tests], 26, "report counts tests"
    call report_summary

tick:                                   # eax = 1 when countdown reaches 0
    dec dword ptr [countdown]
    setz al
    movzx eax, al
    ret

.align 4, 0
scratch:   .long 0
countdown: .long 0
