# status_order.S - MISTAKE: STATUS = DRIVER before ACKNOWLEDGE (§3.1.1: ACKNOWLEDGE first).
.include "uvirt.inc"
.include "virtio.inc"
.include "explain.inc"

main:
    call ex_find_legacy
    call vio_reset
    mov eax, VS_DRIVER                  # wrong: ACKNOWLEDGE missing
    call ex_status
    mov eax, VS_ACK | VS_DRIVER
    call ex_status
    xor eax, eax
    xor edx, edx
    call vio_feat_write
    call ex_queue
    mov eax, VS_ACK | VS_DRIVER | VS_DRIVER_OK
    call ex_status
    mov eax, VD_WRITE
    call ex_add
    xor eax, eax
    call vq_kick
    call ex_wait
    PUTISR "ISR "
    call report_summary
