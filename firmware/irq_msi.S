# irq_msi.S - MSI messages written straight into the local APIC window (what a device's
# MSI/MSI-X does): IRR/ISR/PPR, priority order, vectors below 16, a destination that is
# not this CPU, logical destination mode, addresses outside the window, narrow writes,
# TPR masking, and a software-disabled APIC (SVR bit 8 clear).
.include "uvirt.inc"
.include "irq.inc"

.macro REG name, off
    PUTS \name
    PUTC ' '
    LAPIC_PUTLN \off
.endm
.macro MSI addr, data
    mov eax, \addr
    mov edx, \data
    call msi_send
.endm
.macro WINDOW
    sti
    nop
    cli
.endm

main:
    call irq_init
    mov edx, on_msi
    mov eax, 0x05
    call irq_set_handler
    mov eax, 0x45
    call irq_set_handler
    mov eax, 0x46
    call irq_set_handler
    mov eax, 0x4a
    call irq_set_handler
    mov eax, 0x61
    call irq_set_handler
    mov edx, on_tick
    mov eax, 0x20
    call irq_set_handler

    PUTSN "vector 5 (below 16) and 0x4a, edge"
    MSI 0xfee00000, 0x05
    MSI 0xfee00000, 0x4a
    REG "IRR0", 0x200
    REG "IRR2", 0x220
    REG "ESR", 0x280
    WINDOW
    PUTSN "level-triggered 0x61 sets TMR"
    MSI 0xfee00000, 0x8061
    REG "TMR3", 0x1b0
    WINDOW
    REG "TMR3", 0x1b0
    PUTSN "not for this CPU: destination 1, logical mode, other addresses, narrow"
    MSI 0xfee01000, 0x46
    MSI 0xfee00004, 0x46
    MSI 0xfef00000, 0x46
    MSI 0xfec01000, 0x46
    MSI 0x00080000, 0x46
    PUTS "RAM "
    PUTHEX32 [0x80000]
    call put_nl
    mov word ptr [0xfee00000], 0x46
    mov byte ptr [0xfee00000], 0x46
    REG "IRR2", 0x220
    PUTSN "broadcast destination 0xff"
    MSI 0xfeeff000, 0x46
    REG "IRR2", 0x220
    WINDOW
    PUTSN "TPR 0x50 holds 0x45 back"
    mov eax, 0x80
    mov edx, 0x50
    call lapic_write
    MSI 0xfee00000, 0x45
    WINDOW
    REG "IRR2", 0x220
    REG "PPR", 0xa0
    mov eax, 0x80
    mov edx, 0
    call lapic_write
    WINDOW
    PUTSN "SVR 0xff: MSI sets IRR, never delivered; the PIC still is"
    mov eax, 0xf0
    mov edx, 0xff
    call lapic_write
    MSI 0xfee00000, 0x46
    REG "IRR2", 0x220
    mov ax, 0xfffe
    call pic_set_mask
    mov eax, 1193
    call pit_start
    call irq_wait
    mov ax, 0xffff
    call pic_set_mask
    REG "IRR2", 0x220
    mov eax, 0xf0
    mov edx, 0x1ff
    call lapic_write
    WINDOW
    REG "IRR2", 0x220
    REG "ISR2", 0x120
    ret

on_msi:
    PUTS "MSI "
    call put_hex8
    push eax
    PUTS " ISR0 "
    mov eax, 0x100
    call lapic_read
    call put_hex32
    PUTS " ISR2 "
    mov eax, 0x120
    call lapic_read
    call put_hex32
    PUTS " PPR "
    mov eax, 0xa0
    call lapic_read
    call put_hex32
    call put_nl
    pop eax
    call lapic_eoi
    ret

on_tick:
    cmp dword ptr [ticked], 0
    jne on_tick_quiet
    PUTSN "PIC IRQ0"                    # once: a stale edge from SeaBIOS's 18.2 Hz may come first
    mov dword ptr [ticked], 1
on_tick_quiet:
    mov eax, 0
    call pic_eoi
    ret

.align 4, 0
ticked: .long 0
