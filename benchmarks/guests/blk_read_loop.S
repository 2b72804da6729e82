# ITERS sequential 4 KiB reads from virtio-blk (legacy transport), one request at a
# time: header, the 4096-byte data buffer split over CHAIN descriptors (default 1; a
# power of two up to 64), status byte; the sector wraps at DISK_SECTORS.
.include "uvirt.inc"
.include "virtio.inc"
.set HDR, 0x300000
.set DATA, 0x301000
.set STATUS, 0x303000
.ifndef CHAIN
.set CHAIN, 1
.endif
.ifndef DISK_SECTORS
.set DISK_SECTORS, 8
.endif

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
    mov eax, 4096                       # seg = 4096 / CHAIN
    xor edx, edx
    mov ecx, CHAIN
    div ecx
    mov ebp, eax
    mov edi, data_segments              # {DATA + i*seg, seg, device-writable} for i < CHAIN
    mov eax, DATA
segment:
    mov [edi], eax
    mov [edi + 4], ebp
    mov dword ptr [edi + 8], 2
    add eax, ebp
    add edi, 12
    loop segment
    mov dword ptr [edi], STATUS
    mov dword ptr [edi + 4], 1
    mov dword ptr [edi + 8], 2
    xor ebx, ebx                        # sector
    mov esi, ITERS
read_loop:
    mov [HDR + 8], ebx
    mov byte ptr [STATUS], 0xff
    xor eax, eax
    mov edx, request
    mov ecx, CHAIN + 2
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

.align 4, 0
request:
    .long HDR, 16, 0
data_segments:
    .fill 12 * 65, 1, 0
