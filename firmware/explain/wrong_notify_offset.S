# wrong_notify_offset.S - MISTAKE: notifies queue 0 at notify_base + 4 (queue_notify_off 1
# times the multiplier), not at queue 0's own notify address (§4.1.4.4).
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
    call vio_status_read
    call ex_queue
    mov eax, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK
    call ex_status
    mov eax, VD_WRITE
    call ex_add
    mov eax, [vio_notify_base]
    add eax, 4                          # wrong: queue 0's queue_notify_off is 0
    mov word ptr [eax], 0
    call ex_wait_short
    PUTISR "ISR "
    call report_summary
