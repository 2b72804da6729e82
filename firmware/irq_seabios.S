# irq_seabios.S - the interrupt controllers as SeaBIOS leaves them before -kernel runs:
# PIC IMR/ISR (IRR depends on time), ELCR, PIT channel 0 status (read-back 0xE2), port 0x61, the local
# APIC registers (unknown registers read 0 and set ESR bit 7), narrow APIC reads.
.include "uvirt.inc"
.include "irq.inc"

.macro LAPIC off
    PUTS "LAPIC "
    PUTHEX16 \off
    PUTC ' '
    LAPIC_PUTLN \off
.endm

main:
    PUTS "PIC IMR "
    call pic_read_imr
    call put_hex16
    PUTS " ISR "
    call pic_read_isr
    call put_hex16
    PUTS " ELCR "
    call elcr_read
    call put_hex16
    call put_nl
    call pit_status
    PUTS "PIT status "
    call put_hex8
    call put_nl
    PUTS "PORT61 "                      # OUT2 (bit 5) depends on time: left out
    in al, 0x61
    and al, 0x13
    call put_hex8
    PUTC ' '
    in al, 0x61
    and al, 0x13
    call put_hex8
    call put_nl
    LAPIC 0x20
    LAPIC 0x30
    LAPIC 0x80
    LAPIC 0xa0
    LAPIC 0xd0
    LAPIC 0xe0
    LAPIC 0xf0
    LAPIC 0x100
    LAPIC 0x180
    LAPIC 0x200
    LAPIC 0x280
    LAPIC 0x300
    LAPIC 0x310
    LAPIC 0x320
    LAPIC 0x330
    LAPIC 0x340
    LAPIC 0x350
    LAPIC 0x360
    LAPIC 0x370
    LAPIC 0x380
    LAPIC 0x3e0
    LAPIC 0x400
    LAPIC 0x280
    PUTS "LAPIC byte "
    movzx eax, byte ptr [0xfee00030]
    call put_hex8
    PUTS " word "
    movzx eax, word ptr [0xfee00030]
    call put_hex16
    call put_nl
    ret
