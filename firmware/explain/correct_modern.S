# correct_modern.S - a correct modern virtio-rng driver (§3.1.1 in order, FEATURES_OK
# re-read, queue enabled, notify at queue_notify_off * multiplier): explain finds nothing.
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
    call ex_status
    call vio_status_read                # §3.1.1 step 6: is FEATURES_OK still set?
    and eax, VS_FEATURES_OK
    REPORT_TRUE eax, "FEATURES_OK accepted"
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
