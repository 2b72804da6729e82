# avail_idx_not_advanced.S - MISTAKE: fills the descriptor and avail.ring[0], kicks, but
# never advances avail.idx (§2.7.13.3), so the device sees no new buffer.
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
    xor eax, eax
    xor edx, edx
    call vq_desc                        # descriptor 0: 16 device-writable bytes
    mov dword ptr [eax], EX_BUF
    mov dword ptr [eax + 4], 0
    mov dword ptr [eax + 8], 16
    mov word ptr [eax + 12], VD_WRITE
    xor eax, eax
    call vq_avail
    mov word ptr [eax + 4], 0           # avail.ring[0] = 0 ... and avail.idx stays 0
    xor eax, eax
    call vq_kick
    call ex_wait_short
    PUTISR "ISR "
    call report_summary
