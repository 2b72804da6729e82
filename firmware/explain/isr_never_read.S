# isr_never_read.S - MISTAKE: takes the used buffer but never reads ISR, which is what
# acknowledges the interrupt and lowers INTx (§4.1.4.5).
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
    call ex_add
    xor eax, eax
    call vq_kick
    call ex_wait                        # wrong: no ISR read after this
    call report_summary
