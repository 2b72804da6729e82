# queue_not_enabled.S - MISTAKE: programs queue 0's size and ring addresses but never writes
# queue_enable = 1 (§4.1.5.1.3), then kicks it.
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
    mov dword ptr [vio_skip_enable], 1   # wrong: vio_queue_setup leaves queue_enable alone
    call ex_queue
    mov eax, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK
    call ex_status
    mov eax, VD_WRITE
    call ex_add
    xor eax, eax
    call vq_kick
    call ex_wait_short
    PUTISR "ISR "
    call report_summary
