# interrupts_suppressed.S - MISTAKE: sets VIRTQ_AVAIL_F_NO_INTERRUPT (§2.7.7) and then
# waits for the interrupt (ISR bit 0), which the device therefore never raises.
.include "uvirt.inc"
.include "virtio.inc"
.include "explain.inc"

main:
    call ex_find_legacy
    call vio_reset
    mov eax, VS_ACK
    call ex_status
    mov eax, VS_ACK | VS_DRIVER
    call ex_status
    xor eax, eax
    xor edx, edx
    call vio_feat_write
    call ex_queue
    mov eax, VS_ACK | VS_DRIVER | VS_DRIVER_OK
    call ex_status
    xor eax, eax
    call vq_avail
    mov word ptr [eax], 1               # wrong: avail.flags = NO_INTERRUPT
    mov eax, VD_WRITE
    call ex_add
    xor eax, eax
    call vq_kick
    call ex_wait
    call vio_isr_read                   # the driver expected an interrupt
    and eax, 1
    REPORT_TRUE eax, "an interrupt was raised (ISR bit 0)"
    call report_summary
