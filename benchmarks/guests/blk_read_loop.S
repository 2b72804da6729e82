# ITERS sequential 4 KiB reads from virtio-blk (legacy transport), one request at a
# time: header, 4096-byte data buffer, status byte; the sector wraps at DISK_SECTORS.
.include "uvirt.inc"
.include "virtio.inc"
.set HDR, 0x300000
.set DATA, 0x301000
.set STATUS, 0x303000

main:
    mov eax, 2
    call vio_find
    cmp eax, 0xffffffff
    je fail
    call vio_use_legacy
    call vio_legacy_start
    mov dword ptr [HDR], 0              # VIRTIO_BLK_T_IN
    mov dword ptr [HDR + 4], 0
    mov dword ptr [HDR + 12], 0
    xor ebx, ebx                        # sector
    mov esi, ITERS
read_loop:
    mov [HDR + 8], ebx
    mov byte ptr [STATUS], 0xff
    xor eax, eax
    mov edx, request
    mov ecx, 3
    call vq_submit
    xor eax, eax
    call vq_poll
    test eax, eax
    jz fail
    cmp byte ptr [STATUS], 0
    jne fail
    add ebx, 8
    cmp ebx, DISK_SECTORS
    jb next
    xor ebx, ebx
next:
    dec esi
    jnz read_loop
    ret
fail:
    EXIT 1

request:
    .long HDR, 16, 0
    .long DATA, 4096, 2
    .long STATUS, 1, 2
