# virtio_packed.S - packed virtqueues (virtio 1.2 2.8, VIRTIO_F_RING_PACKED) on virtio-rng
# or virtio-blk over the modern interface, as QEMU 7.2 serves them.  Run with
# -device virtio-rng-pci,packed=on (or with disable-legacy=on), or with the pattern disk of
# uvirt.testing.qemu.virtio_disk_image and -device virtio-blk-pci,drive=d0,packed=on.
# Uses whichever of the two it finds (rng first).  Ring helpers: include/virtio_packed.inc.
#
# Prints: the offered feature words and the accepted set read back (RING_PACKED is bit 34);
# then, on a ring of 8 descriptors with driver event flags ENABLE, more requests than the
# ring holds, one at a time (rng: 16 bytes in one descriptor or 8+8 in two, alternately;
# blk: a 3-descriptor read of one sector, so chains cross the end of the ring), each with
# the used descriptor the device wrote (slot, the driver's used wrap counter, id, length,
# flags with AVAIL/USED), ISR and a data check; a chain through an indirect table (one
# slot); the two event suppression structures; rng: three chains published with one kick
# (the first through a one-entry table);
# driver event flags DISABLE (ISR stays 0).  Then a reset and, with EVENT_IDX too, a ring
# of 6 (not a power of two) with driver event flags DESC and a table of event offsets
# (some in the other lap), printing ISR after each request: when QEMU notifies and when it
# does not.  Last, a reset and a split ring again without RING_PACKED (rng: a chain through
# a one-entry table published with a two-descriptor chain).
.include "uvirt.inc"
.include "virtio.inc"
.include "virtio_packed.inc"

.set BUF, 0x300000                      # rng buffers; blk header
.set BLK_STATUS, 0x300100
.set BLK_DATA, 0x301000
.set ITABLE, 0x302000                   # an indirect descriptor table
.set F1_VERSION_1, 1                    # feature word 1 bits
.set F1_RING_PACKED, 4
.set F0_INDIRECT_DESC, 0x10000000
.set F0_EVENT_IDX, 0x20000000

.align 4, 0
dev_type:   .long 0
req_no:     .long 0
segs:       .fill 48, 1, 0

.macro STATUS msg
    PUTS \msg
    call vio_status_read
    call put_hex8
    call put_nl
.endm

main:
    mov eax, 4
    call vio_find
    mov dword ptr [dev_type], 4
    cmp eax, 0xffffffff
    jne found
    mov eax, 2
    call vio_find
    mov dword ptr [dev_type], 2
    cmp eax, 0xffffffff
    jne found
    PUTSN "FAIL: no virtio-rng or virtio-blk"
    EXIT 1
found:
    call vio_put_ident
    call vio_use_modern
    REPORT_TRUE eax, "common, notify and ISR capabilities found"
    test eax, eax
    jnz caps_ok
    call report_summary
caps_ok:
    mov eax, [vio_bdf]
    call vio_bus_master
    call vio_reset
    STATUS "status after reset "
    xor ebx, ebx
feat_words:
    PUTS "device features word "
    PUTDEC ebx
    PUTC ' '
    mov eax, ebx
    call vio_feat_read
    call put_hex32
    call put_nl
    inc ebx
    cmp ebx, 3
    jb feat_words

    PUTSN "-- packed ring, 8 descriptors, driver event flags ENABLE"
    mov eax, F0_INDIRECT_DESC
    mov edx, 8
    call negotiate
    mov dword ptr [req_no], 0
    mov ecx, 20
p1_loop:
    call request
    dec ecx
    jnz p1_loop
    call put_ring_state
    PUTSN "-- a chain through an indirect table"
    call indirect_request
    call put_ring_state
    cmp dword ptr [dev_type], 4
    jne no_batch
    PUTSN "-- three rng chains (an indirect table of 1, then 2 and 1 descriptors), one kick"
    call rng_batch
    call put_ring_state
no_batch:
    PUTSN "-- driver event flags DISABLE"
    xor eax, eax
    mov edx, VQP_EVENT_DISABLE
    xor ecx, ecx
    call vqp_set_driver_event
    call request
    call request
    call put_ring_state

    PUTSN "-- reset, then packed + EVENT_IDX, 6 descriptors, driver event flags DESC"
    call vio_reset
    STATUS "status after reset "
    mov eax, F0_INDIRECT_DESC | F0_EVENT_IDX
    mov edx, 6
    call negotiate
    mov dword ptr [req_no], 0
    xor esi, esi
p5_loop:
    movzx ecx, word ptr [event_offsets + esi*2]
    PUTS "driver event off_wrap "
    PUTHEX16 ecx
    call put_nl
    xor eax, eax
    mov edx, VQP_EVENT_DESC
    call vqp_set_driver_event
    call request
    xor eax, eax
    call vqp_put_events
    call put_nl
    inc esi
    cmp esi, EVENT_OFFSETS
    jb p5_loop
    call put_ring_state

    PUTSN "-- reset, then a split ring again (VERSION_1 only)"
    call vio_reset
    mov eax, VS_ACK | VS_DRIVER
    call vio_status_write
    xor eax, eax
    xor edx, edx
    call vio_feat_write
    mov eax, 1
    mov edx, F1_VERSION_1
    call vio_feat_write
    mov eax, VS_ACK | VS_DRIVER | VS_FEATURES_OK
    call vio_status_write
    STATUS "status after FEATURES_OK "
    xor eax, eax
    mov edx, 8
    call vio_queue_setup
    PUTS "queue 0 size "
    call put_dec
    call put_nl
    mov eax, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK
    call vio_status_write
    call split_request
    cmp dword ptr [dev_type], 4
    jne no_split_batch
    PUTSN "-- split: an indirect table of 1, then a chain of 2, one kick"
    call split_batch
no_split_batch:
    call report_summary

# eax = feature word 0, edx = queue size: ACK, DRIVER, features (word 1: VERSION_1 and
# RING_PACKED), FEATURES_OK, queue 0 of that size, DRIVER_OK; prints the read-backs
negotiate:
    pushad
    mov esi, eax
    mov edi, edx
    mov eax, VS_ACK
    call vio_status_write
    mov eax, VS_ACK | VS_DRIVER
    call vio_status_write
    xor eax, eax
    mov edx, esi
    call vio_feat_write
    mov eax, 1
    mov edx, F1_VERSION_1 | F1_RING_PACKED
    call vio_feat_write
    mov eax, VS_ACK | VS_DRIVER | VS_FEATURES_OK
    call vio_status_write
    STATUS "status after FEATURES_OK "
    xor ebx, ebx
neg_words:
    PUTS "driver features word "
    PUTDEC ebx
    PUTC ' '
    mov eax, VM_GFSELECT
    mov edx, ebx
    call vm_wr32
    mov eax, VM_GF
    call vm_rd32
    call put_hex32
    call put_nl
    inc ebx
    cmp ebx, 2
    jb neg_words
    xor eax, eax
    mov edx, edi
    call vio_queue_setup
    PUTS "queue 0 size "
    call put_dec
    call put_nl
    xor eax, eax
    call vqp_start
    xor eax, eax
    call vqp_put_events
    call put_nl
    PUTISR "ISR before DRIVER_OK "
    mov eax, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK
    call vio_status_write
    STATUS "status after DRIVER_OK "
    popad
    ret

put_ring_state:
    push eax
    xor eax, eax
    call vqp_put_state
    call put_nl
    call vqp_put_events
    call put_nl
    PUTISR "ISR "
    pop eax
    ret

# one request, waited for and printed: rng 16 bytes (one descriptor for an even request
# number, 8+8 for an odd one), blk a one-sector read (header, data, status)
request:
    pushad
    mov edx, segs
    cmp dword ptr [dev_type], 4
    jne rq_blk
    mov eax, BUF
    xor edx, edx
    mov ecx, 0x40
    call mem_fill
    mov dword ptr [segs], BUF
    mov dword ptr [segs + 8], VD_WRITE
    mov dword ptr [segs + 12], BUF + 8
    mov dword ptr [segs + 16], 8
    mov dword ptr [segs + 20], VD_WRITE
    mov ecx, 1
    mov dword ptr [segs + 4], 16
    test dword ptr [req_no], 1
    jz rq_submit
    mov ecx, 2
    mov dword ptr [segs + 4], 8
    jmp rq_submit
rq_blk:
    call blk_segments
    mov ecx, 3
rq_submit:
    PUTS "req "
    PUTDEC [req_no]
    PUTS " descriptors "
    PUTDEC ecx
    xor eax, eax
    mov edx, segs
    call vqp_submit
    PUTS " id "
    call put_dec
    call put_nl
    call wait_used
    popad
    inc dword ptr [req_no]
    ret

# the segments of a blk read of sector req_no (mod 128), in segs; status and data primed
blk_segments:
    push eax
    push ecx
    push edx
    mov dword ptr [BUF], 0              # VIRTIO_BLK_T_IN
    mov dword ptr [BUF + 4], 0
    mov eax, [req_no]
    and eax, 127
    mov [BUF + 8], eax
    mov dword ptr [BUF + 12], 0
    mov byte ptr [BLK_STATUS], 0xee
    mov eax, BLK_DATA
    mov edx, 0xee
    mov ecx, 0x200
    call mem_fill
    mov dword ptr [segs], BUF
    mov dword ptr [segs + 4], 16
    mov dword ptr [segs + 8], 0
    mov dword ptr [segs + 12], BLK_DATA
    mov dword ptr [segs + 16], 0x200
    mov dword ptr [segs + 20], VD_WRITE
    mov dword ptr [segs + 24], BLK_STATUS
    mov dword ptr [segs + 28], 1
    mov dword ptr [segs + 32], VD_WRITE
    pop edx
    pop ecx
    pop eax
    ret

# poll queue 0, print the used descriptor, ISR and what the buffers hold
wait_used:
    pushad
    xor eax, eax
    call vqp_poll
    test eax, eax
    jz wu_out
    call vqp_put_used
    call put_nl
    PUTISR "ISR "
    cmp dword ptr [dev_type], 4
    jne wu_blk
    mov eax, BUF
    mov ecx, 16
    call mem_count_nonzero
    PUTS "entropy bytes nonzero "
    test eax, eax
    jz wu_zero
    PUTSN "YES"
    jmp wu_guard
wu_zero:
    PUTSN "NO"
wu_guard:
    mov eax, BUF + 16
    mov ecx, 0x30
    call mem_count_nonzero
    REPORT_EQ eax, 0, "nothing written past the buffers"
    jmp wu_out
wu_blk:
    PUTS "status "
    movzx eax, byte ptr [BLK_STATUS]
    call put_hex8
    PUTS " data[0] "
    movzx eax, byte ptr [BLK_DATA]
    call put_hex8
    PUTS " data[511] "
    movzx eax, byte ptr [BLK_DATA + 511]
    call put_hex8
    call put_nl
wu_out:
    popad
    ret

# one request whose only ring descriptor points at a table: rng 8+8 writable entries, blk
# the three descriptors of a read
indirect_request:
    pushad
    mov edi, ITABLE
    cmp dword ptr [dev_type], 4
    jne ir_blk
    mov eax, BUF
    xor edx, edx
    mov ecx, 0x40
    call mem_fill
    mov dword ptr [edi], BUF
    mov dword ptr [edi + 4], 0
    mov dword ptr [edi + 8], 8
    mov dword ptr [edi + 12], VD_WRITE << 16
    mov dword ptr [edi + 16], BUF + 8
    mov dword ptr [edi + 20], 0
    mov dword ptr [edi + 24], 8
    mov dword ptr [edi + 28], VD_WRITE << 16
    mov dword ptr [segs + 4], 32
    jmp ir_submit
ir_blk:
    call blk_segments
    mov esi, segs
    mov ecx, 3
ir_entry:
    mov eax, [esi]
    mov [edi], eax
    mov dword ptr [edi + 4], 0
    mov eax, [esi + 4]
    mov [edi + 8], eax
    mov eax, [esi + 8]
    shl eax, 16                         # flags in the high half (id 0 in the low)
    mov [edi + 12], eax
    add esi, 12
    add edi, 16
    dec ecx
    jnz ir_entry
    mov dword ptr [segs + 4], 48
ir_submit:
    mov dword ptr [segs], ITABLE
    mov dword ptr [segs + 8], VD_INDIRECT
    PUTS "req "
    PUTDEC [req_no]
    PUTS " indirect table of "
    mov eax, [segs + 4]
    shr eax, 4
    call put_dec
    xor eax, eax
    mov edx, segs
    mov ecx, 1
    call vqp_submit
    PUTS " id "
    call put_dec
    call put_nl
    call wait_used
    popad
    inc dword ptr [req_no]
    ret

# The batch's first two chains, in segs for vq_add/vqp_add: an indirect table of one
# 8-byte writable entry (its last dword, eax, in the ring type's descriptor layout),
# then a chain of two 4-byte writable buffers; the 64 bytes at BUF cleared.
batch_chains:
    push eax
    mov eax, BUF
    xor edx, edx
    mov ecx, 0x40
    call mem_fill
    pop eax
    mov dword ptr [ITABLE], BUF
    mov dword ptr [ITABLE + 4], 0
    mov dword ptr [ITABLE + 8], 8
    mov dword ptr [ITABLE + 12], eax
    mov dword ptr [segs], ITABLE
    mov dword ptr [segs + 4], 16
    mov dword ptr [segs + 8], VD_INDIRECT
    mov dword ptr [segs + 12], BUF + 8
    mov dword ptr [segs + 16], 4
    mov dword ptr [segs + 20], VD_WRITE
    mov dword ptr [segs + 24], BUF + 12
    mov dword ptr [segs + 28], 4
    mov dword ptr [segs + 32], VD_WRITE
    ret

# rng: three chains made available, then one kick; the three used descriptors.  The first
# goes through a table of one entry: QEMU counts each later chain's descriptors against N
# again (virtqueue_packed_get_avail_bytes), not against that table's size
rng_batch:
    pushad
    mov eax, VD_WRITE << 16              # packed: le16 id, le16 flags
    call batch_chains
    xor eax, eax
    mov edx, segs
    mov ecx, 1
    call vqp_add
    PUTS "added id "
    call put_dec
    xor eax, eax
    mov edx, segs + 12
    mov ecx, 2
    call vqp_add
    PUTS ", id "
    call put_dec
    mov dword ptr [segs + 36], BUF + 16
    mov dword ptr [segs + 40], 4
    mov dword ptr [segs + 44], VD_WRITE
    xor eax, eax
    mov edx, segs + 36
    mov ecx, 1
    call vqp_add
    PUTS ", id "
    call put_dec
    call put_nl
    xor eax, eax
    call vio_notify
    mov ebx, 3
rb_loop:
    xor eax, eax
    call vqp_poll
    test eax, eax
    jz rb_out
    call vqp_put_used
    call put_nl
    dec ebx
    jnz rb_loop
    PUTISR "ISR "
    PUTISR "ISR again "
    mov eax, BUF
    mov ecx, 20
    call mem_count_nonzero
    PUTS "entropy bytes nonzero "
    test eax, eax
    jz rb_zero
    PUTSN "YES"
    jmp rb_out
rb_zero:
    PUTSN "NO"
rb_out:
    popad
    add dword ptr [req_no], 3
    ret

# after the packed phases: one request on a split ring (vq_submit / vq_poll)
split_request:
    pushad
    mov edx, segs
    cmp dword ptr [dev_type], 4
    jne sr_blk
    mov dword ptr [segs], BUF
    mov dword ptr [segs + 4], 16
    mov dword ptr [segs + 8], VD_WRITE
    mov ecx, 1
    jmp sr_submit
sr_blk:
    mov dword ptr [req_no], 9
    call blk_segments
    mov ecx, 3
sr_submit:
    xor eax, eax
    call vq_submit
    PUTS "split head "
    call put_dec
    call put_nl
    xor eax, eax
    call vq_poll
    test eax, eax
    jz sr_out
    xor eax, eax
    call vq_put_used
    call put_nl
    PUTISR "ISR "
sr_out:
    popad
    ret

# rng on the split ring: a chain through a table of one entry and a chain of two
# descriptors, published together; QEMU counts the second chain's descriptors against N
# again (virtqueue_split_get_avail_bytes), not against the table's size
split_batch:
    pushad
    mov eax, VD_WRITE                    # split: le16 flags, le16 next
    call batch_chains
    xor eax, eax
    mov edx, segs
    mov ecx, 1
    call vq_add
    PUTS "added head "
    call put_dec
    xor eax, eax
    mov edx, segs + 12
    mov ecx, 2
    call vq_add
    PUTS ", head "
    call put_dec
    call put_nl
    xor eax, eax
    call vio_notify
    mov ebx, 2
sb_loop:
    xor eax, eax
    call vq_poll
    test eax, eax
    jz sb_out
    xor eax, eax
    call vq_put_used
    call put_nl
    dec ebx
    jnz sb_loop
    PUTISR "ISR "
    STATUS "status "
sb_out:
    popad
    ret

# driver event offsets (off_wrap: bit 15 the wrap counter, bits 0-14 the descriptor
# offset), one before each request of the EVENT_IDX phase; the ring has 6 slots and rng
# requests take 1 or 2 of them, blk requests 3
.align 2, 0
event_offsets:
    .word 0x8000 | 2, 0x8000 | 2, 0x8000 | 2, 0x8000 | 5, 0x8000 | 5, 0x0000 | 1
    .word 0x0000 | 1, 0x0000 | 4, 0x8000 | 0, 0x8000 | 3, 0x0000 | 5, 0x8000 | 5
    .word 0x8000 | 1, 0x0000 | 0
.set EVENT_OFFSETS, 14
