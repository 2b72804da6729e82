# [uvirt]
# groups = tutorial
#
# Lesson 1: hello, guest.  The smallest program: print a line, check one thing, exit.
# uvirt.inc: the multiboot header, an entry stub and the guest library (include it first)
.include "uvirt.inc"

main:                            # the entry stub calls main with a stack and DF clear
    PUTSN "hello, guest"         # bytes to I/O port 0xE9 (debugcon) -> the console
    mov eax, [boot_eax]          # EAX the boot loader left: the multiboot magic
    PUTS "boot loader magic "
    call put_hex32
    call put_nl
    REPORT_EQ [boot_eax], 0x2badb002, "entered through multiboot"
    mov eax, cr0
    and eax, 1
    REPORT_EQ eax, 1, "protected mode is on (CR0.PE)"
    call report_summary          # "SUMMARY: ..." then exit 0 (or 1 if anything failed)
    ret
