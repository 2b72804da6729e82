# no_features_ok.S - MISTAKE: a modern driver goes from DRIVER to DRIVER_OK without the
# FEATURES_OK step (§3.1.1 steps 5-6).
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
    call ex_features_modern
    call ex_queue                       # wrong: FEATURES_OK never written
    mov eax, VS_ACK | VS_DRIVER | VS_DRIVER_OK
    call ex_status
    mov eax, VD_WRITE
    call ex_add
    xor eax, eax
    call vq_kick
    call ex_wait
    PUTISR "ISR "
    call report_summary
