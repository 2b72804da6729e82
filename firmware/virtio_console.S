# virtio_console.S - a line out through a virtconsole port of QEMU 7.2's virtio-serial-pci,
# following the spec's multiport control protocol as QEMU's hw/char/virtio-serial-bus.c
# requires.  Run with -device virtio-serial-pci (transitional: the legacy interface is
# used) or -device virtio-serial-pci,disable-legacy=on (the modern one), plus
# -chardev file,id=c0,path=F -device virtconsole,chardev=c0.  The test checks F.
#
# What the guest does (queues: 0/1 = port 0 receive/transmit, 2 = control receive,
# 3 = control transmit; control message = le32 id, le16 event, le16 value):
#   1. reset, ACK, DRIVER; accept MULTIPORT (1) and EMERG_WRITE (2) if offered (modern:
#      also VERSION_1, FEATURES_OK); print the config (cols, rows, max_nr_ports, emerg_wr)
#   2. set up queues 0..3, DRIVER_OK; put 8 64-byte buffers on the control receive queue
#      (QEMU drops control messages when that queue has no buffer)
#   3. DEVICE_READY (id 0, event 0, value 1) -> QEMU answers PORT_ADD for each port
#   4. PORT_READY (port 0, event 3, value 1) -> QEMU answers CONSOLE_PORT and, as the
#      chardev is connected, PORT_OPEN
#   5. PORT_OPEN (port 0, event 6, value 1): the guest side of the port is open
#   6. the line on queue 1; then "!\n" through the emergency-write config field
# Every control message received is printed; "nothing more" is a bounded quiet poll.
.include "uvirt.inc"
.include "virtio.inc"

.set CTL_RX, 0x300000                   # 8 x 64 bytes
.set CTL_TX, 0x301000
.set DATA_TX, 0x302000
.set QUIET, 20000

.macro CTL_SEND id, event, value
    mov dword ptr [CTL_TX], \id
    mov word ptr [CTL_TX + 4], \event
    mov word ptr [CTL_TX + 6], \value
    call ctl_send
.endm

main:
    VIO_REQUIRE 3, "FAIL: no virtio console"
    call vio_put_ident
    cmp dword ptr [vio_devid], 0x1043
    je modern
    call vio_use_legacy
    PUTSN "transport legacy"
    jmp transport_ok
modern:
    call vio_use_modern
    REPORT_TRUE eax, "modern capabilities found"
    mov eax, [vio_bdf]
    call vio_bus_master
    PUTSN "transport modern"
transport_ok:
    call vio_reset
    PUTSTATUS "status after reset "
    VIO_ACK_DRIVER
    PUTSTATUS "status "

    xor eax, eax
    call vio_feat_read
    mov ebx, eax
    PUTS "device features word 0 "
    call put_hex32
    call put_nl
    PUTS "device features word 1 "
    mov eax, 1
    call vio_feat_read
    call put_hex32
    call put_nl
    and ebx, 6                          # MULTIPORT | EMERG_WRITE
    xor eax, eax
    mov edx, ebx
    call vio_feat_write
    PUTS "driver features word 0 "
    PUTHEX32 ebx
    call put_nl
    cmp dword ptr [vio_mode], 0
    je features_done
    VIO_VERSION_1_OK
    PUTSTATUS "status after FEATURES_OK "
features_done:
    PUTS "config cols "
    xor eax, eax
    call vio_cfg_read16
    call put_hex16
    PUTREG " rows ", 2, vio_cfg_read16, put_hex16
    PUTREG " max_nr_ports ", 4, vio_cfg_read32, put_hex32
    CFG32 " emerg_wr ", 8
    PUTS "config w1:"
    xor esi, esi
cfg_bytes:
    PUTC ' '
    mov eax, esi
    call vio_cfg_read8
    call put_hex8
    inc esi
    cmp esi, 16
    jb cfg_bytes
    call put_nl

    PUTS "queue sizes:"
    xor esi, esi
qsizes:
    PUTC ' '
    mov eax, esi
    call vio_queue_max
    call put_dec
    inc esi
    cmp esi, 6
    jb qsizes
    PUTS " q63 "
    mov eax, 63
    call vio_queue_max
    call put_dec
    PUTS " q64 "
    mov eax, 64
    call vio_queue_max
    call put_dec
    call put_nl
    xor esi, esi
qsetup:
    mov eax, esi
    xor edx, edx
    call vio_queue_setup
    inc esi
    cmp esi, 4
    jb qsetup
    mov eax, VS_ACK | VS_DRIVER | VS_DRIVER_OK
    cmp dword ptr [vio_mode], 0
    je set_ok
    or eax, VS_FEATURES_OK
set_ok:
    call vio_status_write
    PUTSTATUS "status after DRIVER_OK "

    # control receive buffers
    mov eax, CTL_RX
    xor edx, edx
    mov ecx, 8 * 64
    call mem_fill
    xor esi, esi
rxpost:
    mov eax, esi
    shl eax, 6
    add eax, CTL_RX
    mov [seg], eax
    mov dword ptr [seg + 4], 64
    mov dword ptr [seg + 8], VD_WRITE
    mov eax, 2
    mov edx, seg
    mov ecx, 1
    call vq_add
    inc esi
    cmp esi, 8
    jb rxpost
    mov eax, 2
    call vq_kick
    PUTSN "posted 8 control receive buffers"
    call drain_ctl

    PUTSN "-- DEVICE_READY"
    CTL_SEND 0, 0, 1
    call drain_ctl
    PUTSN "-- PORT_READY port 0"
    CTL_SEND 0, 3, 1
    call drain_ctl
    PUTSN "-- PORT_OPEN port 0"
    CTL_SEND 0, 6, 1
    call drain_ctl

    PUTSN "-- data on port 0 (queue 1)"
    mov esi, line
    mov edi, DATA_TX
    xor ecx, ecx
copy:
    mov al, [esi + ecx]
    mov [edi + ecx], al
    inc ecx
    test al, al
    jnz copy
    dec ecx                             # without the NUL
    mov dword ptr [seg], DATA_TX
    mov [seg + 4], ecx
    mov dword ptr [seg + 8], 0
    PUTS "sending "
    PUTDEC ecx
    PUTSN " bytes"
    PUTS "ISR before "
    call vio_isr_read
    call put_hex8
    call put_nl
    mov eax, 1
    mov edx, seg
    mov ecx, 1
    call vq_submit
    mov eax, 1
    call vq_poll
    test eax, eax
    jz after_data
    mov eax, 1
    call vq_put_used
    call put_nl
    PUTISR_TWICE "ISR after "
after_data:
    call drain_ctl

    PUTSN "-- emergency write"
    mov eax, 8
    mov edx, '!'
    call vio_cfg_write32
    mov eax, 8
    mov edx, 10
    call vio_cfg_write32
    CFG32 "emerg_wr reads ", 8
    call drain_ctl

    PUTSN "-- reset"
    xor eax, eax
    call vio_status_write
    PUT_STATUS_ISR "status "
    call report_summary

# send the 8-byte control message at CTL_TX on queue 3, wait for it to be used
ctl_send:
    pushad
    mov dword ptr [seg], CTL_TX
    mov dword ptr [seg + 4], 8
    mov dword ptr [seg + 8], 0
    PUTS "send id "
    PUTHEX32 [CTL_TX]
    PUTS " event "
    movzx eax, word ptr [CTL_TX + 4]
    call put_dec
    PUTS " value "
    movzx eax, word ptr [CTL_TX + 6]
    call put_dec
    call put_nl
    mov eax, 3
    mov edx, seg
    mov ecx, 1
    call vq_submit
    mov eax, 3
    call vq_poll
    test eax, eax
    jz ctl_send_out
    mov eax, 3
    call vq_put_used
    call put_nl
ctl_send_out:
    popad
    ret

# print every control message that arrives on queue 2 until a quiet poll times out;
# each consumed buffer is zeroed and given back
drain_ctl:
    pushad
drain_loop:
    mov eax, 2
    mov edx, QUIET
    call vq_poll_n
    test eax, eax
    jz drain_done
    mov esi, [vq_used_id]
    shl esi, 6
    add esi, CTL_RX
    PUTS "recv id "
    PUTHEX32 [esi]
    PUTS " event "
    movzx eax, word ptr [esi + 4]
    call put_dec
    PUTS " value "
    movzx eax, word ptr [esi + 6]
    call put_dec
    PUTS " len "
    PUTDEC [vq_used_len]
    cmp dword ptr [vq_used_len], 8
    jbe drain_nl
    PUTS " extra "
    mov eax, [esi + 8]
    call put_hex32
drain_nl:
    call put_nl
    mov eax, esi
    xor edx, edx
    mov ecx, 64
    call mem_fill
    mov [seg], esi
    mov dword ptr [seg + 4], 64
    mov dword ptr [seg + 8], VD_WRITE
    mov eax, 2
    mov edx, seg
    mov ecx, 1
    call vq_submit
    jmp drain_loop
drain_done:
    PUTSN "(no more control messages)"
    popad
    ret

.align 4, 0
seg:  .long 0, 0, 0
line: .asciz "hello from the uvirt guest\n"
