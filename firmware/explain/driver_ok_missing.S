# driver_ok_missing.S - MISTAKE: kicks the queue without ever setting DRIVER_OK.
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
    mov eax, VD_WRITE                   # wrong: no STATUS = ...|DRIVER_OK before this
    call ex_add
    xor eax, eax
    call vq_kick
    call ex_wait_short
    PUTISR "ISR "
    call report_summary
