# irq_pit.S - the 8254 channel 0 on IRQ 0 through the 8259: a tick waited for in HLT,
# ISR/IRR in the handler and after EOI, IRR bit 0 appearing while IF=0 (masked and
# unmasked), delivery one instruction after STI, read-back status, spurious-free EOI.
.include "uvirt.inc"
.include "irq.inc"

.macro PICSTATE label
    PUTS \label
    PUTS " ISR "
    call pic_read_isr
    call put_hex16
    PUTS " IRR "
    call pic_read_irr
    call put_hex16
    call put_nl
.endm

main:
    mov al, 0x30                        # channel 0 to mode 0, no count: the firmware's
    out 0x43, al                        # 18.2 Hz ticks stop with the output high, so no
    call irq_init                       # edge sets IRR between the PIC's init and its read
    PICSTATE "init"
    PUTS "IMR "
    call pic_read_imr
    call put_hex16
    call put_nl
    mov edx, on_tick
    mov eax, 0x20
    call irq_set_handler
    mov eax, 0                          # 65536: 54.9 ms, mode 2 (slow hosts stay in step)
    call pit_start
    call pit_status
    PUTS "PIT status "
    call put_hex8
    call put_nl
    mov ax, 0xfffe
    call pic_set_mask
    PUTSN "wait in hlt"
    call irq_wait
    PUTSN "woke"
    mov ecx, 3
    mov eax, 3
    call irq_wait_n
    cmp dword ptr [ticks], 4            # one per wait, more if a tick came before the CLI
    setae al
    movzx eax, al
    REPORT_TRUE eax, "at least 4 ticks"

    PUTSN "IF=0, IRQ0 masked"
    mov ax, 0xffff
    call pic_set_mask
    call wait_irr0
    PICSTATE "masked"
    PUTSN "IF=0, IRQ0 unmasked"
    mov ax, 0xfffe
    call pic_set_mask
    PICSTATE "unmasked"
    PUTSN "sti"
    mov dword ptr [verbose], 1
    sti
    nop                                 # the tick arrives after this one (STI shadow)
    cli
    PUTSN "one instruction later"
    ret

# wait (IF=0) until IRR bit 0 is set
wait_irr0:
    push ecx
    mov ecx, 100000000
wait_irr0_loop:
    call pic_read_irr
    test al, 1
    jnz wait_irr0_done
    dec ecx
    jnz wait_irr0_loop
    PUTSN "FAIL: IRR bit 0 never set"
wait_irr0_done:
    pop ecx
    ret

on_tick:
    inc dword ptr [ticks]
    cmp dword ptr [verbose], 0
    je on_tick_v
    PUTSN "TICK"
    mov dword ptr [verbose], 0
on_tick_v:
    cmp dword ptr [ticks], 1
    jne on_tick_quiet
    PICSTATE "handler"
on_tick_quiet:
    mov eax, 0
    call pic_eoi
    cmp dword ptr [ticks], 1
    jne on_tick_done
    PICSTATE "after EOI"
on_tick_done:
    ret

.align 4, 0
ticks: .long 0
verbose: .long 0
