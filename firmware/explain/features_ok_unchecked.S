# features_ok_unchecked.S - MISTAKE: writes FEATURES_OK and goes on without re-reading
# STATUS to see whether the device accepted the features (§3.1.1 step 6).
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
    mov eax, VS_ACK | VS_DRIVER | VS_FEATURES_OK
    call ex_status                      # wrong: no vio_status_read after this
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
