# ITERS virtio-rng requests of SIZE bytes (default 16) on the legacy transport, one at a
# time: submit one device-writable descriptor, kick, poll the used ring.
.include "uvirt.inc"
.include "virtio.inc"
.set BUF, 0x300000
.ifndef SIZE
.set SIZE, 16
.endif

main:
    mov eax, 4
    call vio_find
    cmp eax, 0xffffffff
    je fail
    call vio_use_legacy
    call vio_legacy_start
    mov esi, ITERS
request_loop:
    xor eax, eax
    mov edx, request
    mov ecx, 1
    call vq_submit
    xor eax, eax
    call vq_poll
    test eax, eax
    jz fail
    dec esi
    jnz request_loop
    ret
fail:
    EXIT 1

request:
    .long BUF, SIZE, 2
