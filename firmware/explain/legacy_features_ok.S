# legacy_features_ok.S - MISTAKE: a legacy driver sets FEATURES_OK and waits for it, as if
# the legacy interface had the feature handshake (it has none, §3.1.2).
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
    mov eax, VS_ACK | VS_DRIVER | VS_FEATURES_OK    # wrong on the legacy interface
    call ex_status
    PUTS "status after FEATURES_OK "
    call vio_status_read
    call put_hex8
    call put_nl
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
