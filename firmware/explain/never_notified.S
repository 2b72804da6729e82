# never_notified.S - MISTAKE: publishes the buffer (avail.idx = 1) but never notifies the
# device (no QUEUE_NOTIFY write, §2.7.13.4).
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
    mov eax, VD_WRITE
    call ex_add                         # wrong: no vq_kick after this
    call ex_wait_short
    PUTISR "ISR "
    call report_summary
