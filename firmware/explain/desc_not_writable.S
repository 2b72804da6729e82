# desc_not_writable.S - MISTAKE: the buffer for the entropy is not marked device-writable
# (VIRTQ_DESC_F_WRITE missing, §2.7.5); virtio-rng only fills writable buffers.
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
    xor eax, eax                        # wrong: flags 0, should be VD_WRITE
    call ex_add
    xor eax, eax
    call vq_kick
    call ex_wait_short
    PUTISR "ISR "
    call report_summary
