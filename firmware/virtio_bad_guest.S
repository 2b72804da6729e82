# virtio_bad_guest.S - a misbehaving driver on virtio-rng, and what QEMU 7.2 does about it.
# Run with -device virtio-rng-pci,disable-modern=on (legacy registers in BAR0) and with
# -device virtio-rng-pci,disable-legacy=on (modern common cfg); the transport is chosen
# from the device id (1044 = modern only).
#
#   * queue select out of range (size reads 0), select >= 1024 (ignored?)
#   * notify of queues that do not exist (5, 1023, 2000), then a normal request still works
#   * writes to read-only registers (legacy HOST_FEATURES, QUEUE_NUM, ISR; modern
#     device_feature, num_queues, queue_notify_off, config_generation)
#   * legacy: ring address + features + pending ISR, then reset (status 0) clears them;
#     QUEUE_PFN = 0 resets the whole device
#   * odd access sizes and offsets in BAR0 / the common cfg
#   * a descriptor loop and a `next` out of range: status (modern: DEVICE_NEEDS_RESET 0x40
#     expected), ISR, used.idx, whether a following good request is served, and that a
#     reset makes the device work again
# Unanswered requests are detected with a bounded quiet poll (no FAIL line by itself).
.include "uvirt.inc"
.include "virtio.inc"

.set BUF, 0x300000
.set QUIET, 200000

.macro L_RD w, off
    PUTS "  r"
    PUTS "\w"
    PUTS " @"
    PUTHEX8 \off
    PUTC ' '
    mov eax, \off
    call vl_in\w
    call put_hex32
    call put_nl
.endm
.macro M_RD w, off
    PUTS "  r"
    PUTS "\w"
    PUTS " @"
    PUTHEX8 \off
    PUTC ' '
    mov eax, \off
    call vm_rd\w
    call put_hex32
    call put_nl
.endm
.macro M_WR w, off, val
    VIO_WR vm_wr\w, \off, \val
.endm
.macro L_WR w, off, val
    VIO_WR vl_out\w, \off, \val
.endm

main:
    VIO_REQUIRE 4, "FAIL: no virtio-rng"
    call vio_put_ident
    cmp dword ptr [vio_devid], 0x1044
    je go_modern
    call vio_use_legacy
    PUTSN "transport legacy"
    call legacy_tests
    jmp chains
go_modern:
    call vio_use_modern
    REPORT_TRUE eax, "modern capabilities found"
    mov eax, [vio_bdf]
    call vio_bus_master
    PUTSN "transport modern"
    call modern_tests
chains:
    PUTSN "-- descriptor loop (0 -> 0)"
    xor eax, eax
    call bad_chain
    PUTSN "-- next out of range (0 -> 9, queue size 8)"
    mov eax, 1
    call bad_chain
    call report_summary

# reset, ACK, DRIVER, (modern: VERSION_1 + FEATURES_OK), queue 0, DRIVER_OK
init_dev:
    push eax
    push edx
    call vio_reset
    mov eax, VS_ACK | VS_DRIVER
    call vio_status_write
    cmp dword ptr [vio_mode], 0
    je init_q
    VIO_VERSION_1_OK
init_q:
    xor eax, eax
    xor edx, edx
    call vio_queue_setup
    VIO_DRIVER_OK
    pop edx
    pop eax
    ret

# one good 16-byte request on queue 0; prints "good request: used len L" or "good
# request: no answer"
good_request:
    pushad
    xor eax, eax
    mov edx, seg16
    mov ecx, 1
    call vq_submit
    xor eax, eax
    mov edx, QUIET
    call vq_poll_n
    PUTS "good request: "
    test eax, eax
    jz good_none
    PUTS "used len "
    PUTDEC [vq_used_len]
    call put_nl
    jmp good_out
good_none:
    PUTSN "no answer"
good_out:
    popad
    ret

# eax = 0: descriptor 0 points at itself; 1: descriptor 0 -> next 9 (size 8)
bad_chain:
    pushad
    mov ebx, eax
    call init_dev
    PUTSTATUS "status before "
    xor eax, eax
    xor edx, edx
    call vq_desc
    VQ_DESC eax, BUF, 16, VD_WRITE | VD_NEXT, 0
    test ebx, ebx
    jz bc_publish
    mov word ptr [eax + 14], 9
bc_publish:
    xor eax, eax
    xor edx, edx
    call vq_publish
    xor eax, eax
    call vq_kick
    xor eax, eax
    mov edx, QUIET
    call vq_poll_n
    PUTS "bad chain answered: "
    call put_dec
    PUTS ", used.idx "
    xor eax, eax
    call vq_used_idx
    call put_dec
    call put_nl
    call vio_status_read
    mov esi, eax
    PUTS "status after "
    call put_hex8
    call put_nl
    cmp dword ptr [vio_mode], 0
    je bc_isr
    mov eax, esi
    and eax, VS_NEEDS_RESET
    REPORT_EQ eax, VS_NEEDS_RESET, "modern: DEVICE_NEEDS_RESET set"
    CREG8 "config_generation ", VM_CFG_GEN
bc_isr:
    PUTISR_TWICE "ISR "
    xor eax, eax
    mov edx, 1
    call vq_desc                        # the good request uses descriptor 1
    xor eax, eax
    call vq_rec_set_free1
    call good_request
    PUTSTATUS "status after the good request "
    PUTS "ISR "
    call vio_isr_read
    call put_hex8
    call put_nl
    call vio_reset
    PUTSTATUS "status after reset "
    call init_dev
    call good_request
    PUTSTATUS "status "
    call vio_isr_read
    popad
    ret

# queue 0's next free descriptor = 1 (after a hand-built chain in descriptor 0)
vq_rec_set_free1:
    mov dword ptr [vq_state + VQS_FREE], 1
    ret

# ---------------------------------------------------------------- legacy
legacy_tests:
    pushad
    call vio_reset
    mov eax, VS_ACK | VS_DRIVER
    call vio_status_write
    PUTSN "-- queue select out of range"
    mov ebx, 0
    mov ecx, 8
lq:
    mov edx, [sels + ebx*4]
    mov eax, VL_QUEUE_SEL
    call vl_out16
    PUTS "select "
    PUTDEC edx
    PUTREG ": QUEUE_SEL reads ", VL_QUEUE_SEL, vl_in16, put_hex16
    PUTREG " QUEUE_NUM ", VL_QUEUE_NUM, vl_in16, put_hex16
    LREG32 " QUEUE_PFN ", VL_QUEUE_PFN
    inc ebx
    dec ecx
    jnz lq
    L_WR 16, VL_QUEUE_SEL, 5
    L_WR 32, VL_QUEUE_PFN, 0x250
    LREG32 "PFN write to queue 5 (absent): reads ", VL_QUEUE_PFN
    PUTSTATUS "status "
    L_WR 16, VL_QUEUE_SEL, 0

    PUTSN "-- notify of absent queues"
    call init_dev
    L_WR 16, VL_QUEUE_NOTIFY, 5
    L_WR 16, VL_QUEUE_NOTIFY, 1023
    L_WR 16, VL_QUEUE_NOTIFY, 2000
    L_WR 16, VL_QUEUE_NOTIFY, 0xffff
    PUTSTATUS "status "
    call good_request

    PUTSN "-- writes to read-only registers"
    L_WR 32, VL_HOST_FEATURES, 0
    L_RD 32, VL_HOST_FEATURES
    L_WR 16, VL_QUEUE_NUM, 4
    L_RD 16, VL_QUEUE_NUM
    L_RD 8, VL_ISR
    L_RD 8, VL_ISR
    L_WR 8, VL_ISR, 1
    L_RD 8, VL_ISR
    PUTSTATUS "status "
    call good_request

    PUTSN "-- reset clears PFN, features, ISR"
    L_WR 32, VL_GUEST_FEATURES, 0x10000000
    call good_request                   # leaves ISR = 1
    L_RD 32, VL_GUEST_FEATURES
    L_RD 32, VL_QUEUE_PFN
    L_WR 8, VL_STATUS, 0
    L_RD 8, VL_STATUS
    L_RD 32, VL_GUEST_FEATURES
    L_RD 32, VL_QUEUE_PFN
    L_RD 8, VL_ISR
    PUTSN "-- QUEUE_PFN = 0 resets the device"
    call init_dev
    L_WR 32, VL_GUEST_FEATURES, 0x10000000
    L_WR 32, VL_QUEUE_PFN, 0
    L_RD 8, VL_STATUS
    L_RD 32, VL_GUEST_FEATURES
    L_RD 32, VL_QUEUE_PFN
    PUTSN "-- status written with 8/16/32-bit accesses"
    L_WR 16, VL_STATUS, 0x0103
    L_RD 8, VL_STATUS
    L_RD 8, VL_ISR
    L_WR 8, VL_STATUS, 0
    L_WR 32, VL_STATUS, 0x03
    L_RD 8, VL_STATUS
    L_WR 8, VL_STATUS, 0

    PUTSN "-- odd access sizes and offsets (reads)"
    L_WR 32, VL_GUEST_FEATURES, 0x30000000
    L_WR 8, VL_STATUS, 3
    L_RD 8, 0
    L_RD 8, 1
    L_RD 8, 3
    L_RD 16, 0
    L_RD 16, 1
    L_RD 16, 2
    L_RD 32, 1
    L_RD 32, 2
    L_RD 8, 4
    L_RD 8, 7
    L_RD 16, 6
    L_RD 32, 12
    L_RD 32, 14
    L_RD 8, 12
    L_RD 8, 13
    L_RD 8, 14
    L_RD 32, 16
    L_RD 16, 18
    L_RD 8, 20
    L_RD 16, 22
    L_RD 32, 24
    L_RD 32, 28
    L_RD 8, 31
    PUTSN "-- odd access sizes (writes)"
    L_WR 8, 5, 0x12
    L_RD 32, VL_GUEST_FEATURES
    L_WR 16, 4, 0x0000
    L_RD 32, VL_GUEST_FEATURES
    L_WR 8, 7, 0x10
    L_RD 32, VL_GUEST_FEATURES
    L_WR 8, 14, 1
    L_RD 16, VL_QUEUE_SEL
    L_WR 32, 14, 0x00020000
    L_RD 16, VL_QUEUE_SEL
    L_WR 8, 15, 0
    L_RD 16, VL_QUEUE_SEL
    L_WR 8, VL_STATUS, 0
    popad
    ret

# ---------------------------------------------------------------- modern
modern_tests:
    pushad
    call vio_reset
    mov eax, VS_ACK | VS_DRIVER
    call vio_status_write
    PUTSN "-- queue select out of range"
    xor ebx, ebx
    mov ecx, 8
mq:
    mov edx, [sels + ebx*4]
    mov eax, VM_Q_SELECT
    call vm_wr16
    PUTS "select "
    PUTDEC edx
    PUTREG ": queue_select reads ", VM_Q_SELECT, vm_rd16, put_hex16
    PUTREG " size ", VM_Q_SIZE, vm_rd16, put_hex16
    PUTREG " enable ", VM_Q_ENABLE, vm_rd16, put_hex16
    CREG16 " notify_off ", VM_Q_NOTIFY_OFF
    inc ebx
    dec ecx
    jnz mq
    M_WR 16, VM_Q_SELECT, 5
    M_WR 16, VM_Q_SIZE, 8
    M_WR 32, VM_Q_DESC, 0x250000
    PUTREG "absent queue 5 after size/desc writes: size ", VM_Q_SIZE, vm_rd16, put_hex16
    CREG32 " desc ", VM_Q_DESC
    M_WR 16, VM_Q_SELECT, 0
    M_WR 16, VM_Q_SIZE, 0
    M_RD 16, VM_Q_SIZE
    M_WR 16, VM_Q_SIZE, 3
    M_RD 16, VM_Q_SIZE
    M_WR 16, VM_Q_SIZE, 8
    PUTSTATUS "status "

    PUTSN "-- notify of absent queues"
    call init_dev
    mov eax, 5
    call vio_notify
    mov eax, 2000
    call vio_notify
    mov eax, [vio_notify_base]
    mov word ptr [eax + 8], 2           # queue 2's slot (absent queue)
    PUTS "notify region read w16 "
    movzx eax, word ptr [eax]
    call put_hex16
    call put_nl
    PUTSTATUS "status "
    call good_request

    PUTSN "-- writes to read-only fields"
    M_RD 16, VM_Q_SELECT                # vio_notify(5) selected queue 5 to read its notify_off
    M_WR 16, VM_Q_SELECT, 0
    M_WR 32, VM_DFSELECT, 0
    M_WR 32, VM_DF, 0
    M_RD 32, VM_DF
    M_WR 16, VM_NUM_QUEUES, 7
    M_RD 16, VM_NUM_QUEUES
    M_WR 16, VM_Q_NOTIFY_OFF, 3
    M_RD 16, VM_Q_NOTIFY_OFF
    M_WR 8, VM_CFG_GEN, 9
    M_RD 8, VM_CFG_GEN
    PUTS "ISR read "
    call vio_isr_read
    call put_hex8
    PUTS ", write 1, read "
    mov eax, [vio_isr_addr]
    mov byte ptr [eax], 1
    movzx eax, byte ptr [eax]
    call put_hex8
    call put_nl
    M_WR 16, VM_Q_ENABLE, 0
    PUTSTATUS "status after queue_enable = 0 "
    M_RD 16, VM_Q_ENABLE
    call good_request

    PUTSN "-- reset clears"
    call vio_reset
    M_RD 16, VM_Q_ENABLE
    M_RD 32, VM_Q_DESC
    M_RD 16, VM_Q_SIZE
    M_RD 8, VM_STATUS

    PUTSN "-- odd access sizes and offsets (reads)"
    M_WR 32, VM_DFSELECT, 0
    M_RD 8, 4
    M_RD 8, 7
    M_RD 16, 4
    M_RD 16, 6
    M_RD 32, 2
    M_RD 16, 1
    M_RD 8, 18
    M_RD 32, 18
    M_RD 32, 20
    M_RD 32, 24
    M_RD 8, 24
    M_RD 32, 64
    M_RD 32, 0xffc
    PUTSN "-- odd access sizes (writes)"
    M_WR 8, VM_Q_SELECT, 1
    M_RD 16, VM_Q_SELECT
    M_WR 32, VM_Q_SELECT, 0
    M_RD 16, VM_Q_SELECT
    M_WR 16, VM_DFSELECT, 1
    M_RD 32, VM_DFSELECT
    M_WR 8, VM_STATUS, 1
    M_WR 16, VM_STATUS, 3
    M_RD 8, VM_STATUS
    M_WR 32, VM_STATUS - 0, 0
    M_RD 8, VM_STATUS
    PUTS "ISR region w32 read "
    mov eax, [vio_isr_addr]
    mov eax, [eax]
    call put_hex32
    call put_nl
    call vio_reset
    popad
    ret

.align 4, 0
sels:  .long 0, 1, 2, 7, 1023, 1024, 1025, 0xffff
seg16: .long BUF + 0x100, 16, VD_WRITE
