# version_1_missing.S - MISTAKE: a driver of the modern interface that does not accept
# VERSION_1 (feature bit 32, §6.1).
.include "uvirt.inc"
.include "virtio.inc"
.include "explain.inc"

main:
    call ex_find_modern
    call vio_reset
    mov eax, VS_ACK
    call ex_status
    mov eax, VS_ACK | VS_DRIVER
    call ex_status
    xor eax, eax
    xor edx, edx
    call vio_feat_write
    mov eax, 1                          # wrong: word 1 = 0, VERSION_1 not accepted
    xor edx, edx
    call vio_feat_write
    mov eax, VS_ACK | VS_DRIVER | VS_FEATURES_OK
    call ex_status
    call vio_status_read
    call ex_queue
    mov eax, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK
    call ex_status
    mov eax, VD_WRITE
    call ex_add
    xor eax, eax
    call vq_kick
    call ex_wait
    PUTISR "ISR "
    call report_summary
