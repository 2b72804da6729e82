# virtio_flood.S - one request of gigabytes: an indirect table whose entries all name
# the same 4 MiB of RAM.  virtio-rng: 1023 device-writable entries (4 GiB less 4 MiB of
# entropy); virtio-blk: a read of 511 entries (2 GiB less 4 MiB, needs a disk that big);
# virtconsole (virtio-serial port 0, queue 1): 1023 device-readable entries.  Legacy
# transport (-device ...,disable-modern=on).  After the kick the guest polls the used ring
# and prints "done len L" when the request completes; a budget (-uvirt-timeout,
# -uvirt-max-insns) or Ctrl-C normally ends the run first: the device must do the work in
# pieces so that the stop lands at once and memory stays bounded.  With -D SPIN=1 the
# guest only spins (a baseline for how long a run takes to stop with no device work).
.include "uvirt.inc"
.include "virtio.inc"

.set IND, 0x400000                      # the indirect table (1023 * 16 bytes)
.set AREA, 0x1000000                    # the 4 MiB every entry names
.set PIECE, 0x400000
.set HDR, 0x300000
.set STATUSB, 0x300100
.ifndef ENTRIES
.set ENTRIES, 1023                      # rng/console entries; blk takes ENTRIES / 2
.endif
.set BLK_ENTRIES, ENTRIES / 2               # 1023: 511 * 4 MiB, within QEMU's 0x3fffff sectors

.align 4, 0
qidx:   .long 0
entries: .long ENTRIES
seg_flags:  .long VD_WRITE

main:
    mov al, 0xff                        # PICs masked: no interrupt is ever pending, so an
    out 0x21, al                        # instruction budget runs in one stretch
    out 0xa1, al
.ifdef SPIN
    PUTSN "spin"                        # the Ctrl-C baseline waits for this line
spin:                                   # the baseline: same start, no device work
    jmp spin
.endif
    mov eax, 4
    call vio_find
    cmp eax, 0xffffffff
    jne rng
    mov eax, 2
    call vio_find
    cmp eax, 0xffffffff
    jne blk
    mov eax, 3
    call vio_find
    REQUIRE_FOUND "FAIL: no virtio-rng, virtio-blk or virtio-serial"
    PUTSN "device console"
    mov dword ptr [qidx], 1
    mov dword ptr [seg_flags], 0
    jmp setup
rng:
    PUTSN "device rng"
    jmp setup
blk:
    PUTSN "device blk"
    mov dword ptr [entries], BLK_ENTRIES
setup:
    mov eax, [vio_bdf]
    call vio_use_legacy
    call vio_reset
    mov eax, VS_ACK | VS_DRIVER
    call vio_status_write
    mov eax, [qidx]
    xor edx, edx
    call vio_queue_setup
    mov eax, VS_ACK | VS_DRIVER | VS_DRIVER_OK
    call vio_status_write
    # the table: entries * {AREA, PIECE, flags, next}
    mov edi, IND
    xor ecx, ecx
    cmp dword ptr [vio_devid], 0x1001   # blk: header first, status last
    jne fill
    mov dword ptr [HDR], 0              # IN, sector 0
    mov dword ptr [HDR + 4], 0
    mov dword ptr [HDR + 8], 0
    mov dword ptr [HDR + 12], 0
    VQ_DESC edi, HDR, 16, VD_NEXT, 1
    add edi, 16
    inc ecx
fill:
    mov dword ptr [edi], AREA
    mov dword ptr [edi + 4], 0
    mov dword ptr [edi + 8], PIECE
    mov eax, [seg_flags]
    or eax, VD_NEXT
    mov word ptr [edi + 12], ax
    lea eax, [ecx + 1]
    mov word ptr [edi + 14], ax
    add edi, 16
    inc ecx
    mov eax, [entries]
    cmp dword ptr [vio_devid], 0x1001
    jne fill_cmp
    inc eax
fill_cmp:
    cmp ecx, eax
    jb fill
    cmp dword ptr [vio_devid], 0x1001
    jne last
    VQ_DESC edi, STATUSB, 1, VD_WRITE, 0
    add edi, 16
    jmp table_done
last:
    and word ptr [edi - 4], 0xfffe      # the last entry has no NEXT
table_done:
    sub edi, IND                        # table length
    mov eax, [qidx]
    xor edx, edx
    call vq_desc
    VQ_DESC eax, IND, edi, VD_INDIRECT, 0
    mov eax, [qidx]
    xor edx, edx
    call vq_publish
    PUTSN "kick"
    mov eax, [qidx]
    call vq_kick
    mov eax, [qidx]
    call __vq_rec
    mov esi, [ebx + VQS_USED]
wait:
    cmp word ptr [esi + 2], 0
    je wait
    PUTS "done len "
    mov eax, [esi + 8]
    call put_dec
    call put_nl
    EXIT 0
