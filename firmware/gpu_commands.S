# gpu_commands.S - virtio-gpu-pci (2D) as a guest sees it, for a line-by-line comparison
# with QEMU 7.2:  -device virtio-gpu-pci  (also with edid=off, xres=/yres=, max_outputs=).
#
# Prints: the PCI identity, BAR sizes and the capability chain; the common config
# (features for selects 0..2, queues and their sizes); the device config (events_read,
# events_clear, num_scanouts, num_capsets, past the end) and an events_clear write; then,
# after the driver start, every command of the 2D protocol with its response type and
# used length (GET_DISPLAY_INFO's modes and GET_EDID's 1024 bytes in full), and the bad-
# command catalogue: each wrong request and QEMU's answer; a device reset (resources gone,
# requests served before DRIVER_OK).  Finally the test picture
# (picture.inc, PIC_W x PIC_H) goes through a guest-RAM backing: TRANSFER_TO_HOST_2D of
# one line at 0,0 (QEMU then copies the whole resource), SET_SCANOUT, RESOURCE_FLUSH,
# and "SCREEN READY".  With -D SCREENDUMP=1 the program then halts with interrupts off,
# so the host can take a QMP screendump (QEMU) or -uvirt-screenshot (uvirt) of it.
.include "uvirt.inc"
.include "gpu.inc"
.include "picture.inc"
.include "pci_caps.inc"

.ifndef SCREENDUMP
.set SCREENDUMP, 0
.endif
.set PIC_W, 320
.set PIC_H, 200
.set SHADOW, 0x400000                   # guest-RAM backing of resource 1 (PIC_W*PIC_H*4)
.set CURSOR_BACK, 0x500000              # 64x64 cursor image

.macro RESPDW msg, off
    PUTS \msg
    mov eax, [GPU_RESP+\off]
    call put_hex32
    call put_nl
.endm

main:
    VIO_REQUIRE GPU_TYPE, "FAIL: no virtio-gpu"
    call vio_put_ident
    mov ebx, eax
    call print_bars
    call print_caps
    mov eax, ebx
    call vio_use_modern
    PUTS "modern transport "
    call put_hex8
    call put_nl
    PUTSN "-- common cfg"
    xor ecx, ecx
feat_loop:
    mov eax, 0                          # device_feature_select
    mov edx, ecx
    call vm_wr32
    PUTS "device_feature["
    PUTDEC ecx
    CREG32 "] ", VM_DF
    inc ecx
    cmp ecx, 3
    jb feat_loop
    CREG16 "num_queues ", VM_NUM_QUEUES
    CREG16 "msix_config ", VM_MSIX_CONFIG
    xor ecx, ecx
q_loop:
    mov eax, VM_Q_SELECT
    mov edx, ecx
    call vm_wr16
    PUTS "queue "
    PUTDEC ecx
    PUTREG " size ", VM_Q_SIZE, vm_rd16, put_hex16
    PUTREG " notify_off ", VM_Q_NOTIFY_OFF, vm_rd16, put_hex16
    CREG16 " msix ", VM_Q_MSIX
    inc ecx
    cmp ecx, 3
    jb q_loop
    PUTSN "-- device config"
    CFG32 "events_read ", 0
    CFG32 "events_clear ", 4
    CFG32 "num_scanouts ", 8
    CFG32 "num_capsets ", 12
    CFG32 "config+16 ", 16
    CFG8 "config+12 w8 ", 12
    mov eax, 4
    mov edx, 0xffffffff
    call vio_cfg_write32
    CFG32 "events_clear after writing ffffffff ", 4
    mov eax, 8
    mov edx, 5
    call vio_cfg_write32
    CFG32 "num_scanouts after writing 5 ", 8
    PUTISR "ISR "

    PUTSN "-- driver start"
    call gpu_start
    PUTSTATUS "status "
    PUTS "driver_feature[0] "
    mov eax, VM_GFSELECT
    xor edx, edx
    call vm_wr32
    mov eax, VM_GF
    call vm_rd32
    call put_hex32
    call put_nl

    PUTSN "-- GET_DISPLAY_INFO"
    GREQ GPU_CMD_GET_DISPLAY_INFO, 0
    GSEND "GET_DISPLAY_INFO", 24, 408
    mov esi, 0
di_loop:
    PUTS "pmode "
    PUTDEC esi
    PUTS " "
    mov edi, esi
    imul edi, 24
    add edi, GPU_RESP + 24
    xor ecx, ecx
di_field:
    mov eax, [edi+ecx*4]
    call put_hex32
    PUTC ' '
    inc ecx
    cmp ecx, 6
    jb di_field
    call put_nl
    inc esi
    cmp esi, 16
    jb di_loop
    GREQ GPU_CMD_GET_DISPLAY_INFO, 1
    GSET 8, 0x55667788
    GSET 12, 0x11223344
    GSET 16, 7
    GSET 20, 0x99
    GSEND "GET_DISPLAY_INFO fenced", 24, 408
    RESPDW "resp flags ", 4
    RESPDW "resp fence lo ", 8
    RESPDW "resp fence hi ", 12
    RESPDW "resp ctx ", 16
    RESPDW "resp ring_idx+pad ", 20
    GREQ GPU_CMD_GET_DISPLAY_INFO, 0
    GSEND "GET_DISPLAY_INFO, 8-byte response buffer", 24, 8
    RESPDW "resp+4 ", 4
    RESPDW "resp+8 (not written) ", 8
    GREQ GPU_CMD_GET_DISPLAY_INFO, 0
    GSEND "GET_DISPLAY_INFO, no response buffer", 24, 0

    PUTSN "-- GET_EDID"
    GREQ GPU_CMD_GET_EDID, 0
    GSET 24, 0
    GSEND "GET_EDID 0", 32, 1056
    RESPDW "edid size ", 24
    RESPDW "edid pad ", 28
    xor esi, esi
edid_line:
    PUTS "edid "
    mov eax, esi
    call put_hex16
    PUTC ' '
    xor ecx, ecx
edid_byte:
    movzx eax, byte ptr [GPU_RESP+32+esi]
    call put_hex8
    inc esi
    inc ecx
    cmp ecx, 32
    jb edid_byte
    call put_nl
    cmp esi, 1024
    jb edid_line
    GREQ GPU_CMD_GET_EDID, 0
    GSET 24, 1
    GSEND "GET_EDID 1", 32, 1056
    GREQ GPU_CMD_GET_EDID, 0
    GSET 24, 16
    GSEND "GET_EDID 16", 32, 1056
    GREQ GPU_CMD_GET_EDID, 0
    GSEND "GET_EDID, request without scanout", 24, 1056

    PUTSN "-- RESOURCE_CREATE_2D"
    call create_main
    GREQ GPU_CMD_RESOURCE_CREATE_2D, 0
    GSET 24, 1
    GSET 28, GPU_FORMAT_B8G8R8X8
    GSET 32, 16
    GSET 36, 16
    GSEND "create 1 again", 40, 24
    GREQ GPU_CMD_RESOURCE_CREATE_2D, 0
    GSET 24, 0
    GSET 28, GPU_FORMAT_B8G8R8X8
    GSET 32, 16
    GSET 36, 16
    GSEND "create id 0", 40, 24
    mov esi, formats
fmt_loop:
    mov eax, [esi]
    cmp eax, 0xffffffff
    je fmt_done
    GREQ GPU_CMD_RESOURCE_CREATE_2D, 0
    GSET 24, 50
    mov [GPU_REQ+28], eax
    GSET 32, 16
    GSET 36, 16
    PUTS "format "
    call put_dec
    GSEND "", 40, 24
    GREQ GPU_CMD_RESOURCE_UNREF, 0
    GSET 24, 50
    GSEND "  unref 50", 32, 24
    add esi, 4
    jmp fmt_loop
fmt_done:
    GREQ GPU_CMD_RESOURCE_CREATE_2D, 0
    GSET 24, 3
    GSET 28, GPU_FORMAT_B8G8R8X8
    GSET 32, 16384
    GSET 36, 16384
    GSEND "create 16384x16384 (1 GiB > max_hostmem)", 40, 24
    GREQ GPU_CMD_RESOURCE_CREATE_2D, 0
    GSET 24, 4
    GSET 28, GPU_FORMAT_B8G8R8X8
    GSET 32, 8192
    GSET 36, 8000
    GSEND "create 4 8192x8000 (250 MiB)", 40, 24
    GREQ GPU_CMD_RESOURCE_CREATE_2D, 0
    GSET 24, 7
    GSET 28, GPU_FORMAT_B8G8R8X8
    GSET 32, 2048
    GSET 36, 1024
    GSEND "create 7 2048x1024 with 4 alive (past 256 MiB)", 40, 24
    GREQ GPU_CMD_RESOURCE_UNREF, 0
    GSET 24, 4
    GSEND "unref 4", 32, 24
    GREQ GPU_CMD_RESOURCE_CREATE_2D, 0
    GSET 24, 7
    GSET 28, GPU_FORMAT_B8G8R8X8
    GSET 32, 2048
    GSET 36, 1024
    GSEND "create 7 2048x1024 after unref 4", 40, 24
    GREQ GPU_CMD_RESOURCE_UNREF, 0
    GSET 24, 7
    GSEND "unref 7", 32, 24
    GREQ GPU_CMD_RESOURCE_CREATE_2D, 0
    GSET 24, 5
    GSET 28, GPU_FORMAT_B8G8R8X8
    GSET 32, 64
    GSET 36, 64
    GSEND "create 5 64x64", 40, 24
    GREQ GPU_CMD_RESOURCE_CREATE_2D, 0
    GSET 24, 6
    GSET 28, GPU_FORMAT_B8G8R8X8
    GSET 32, 0
    GSET 36, 0
    GSEND "create 0x0", 40, 24
    GREQ GPU_CMD_RESOURCE_CREATE_2D, 0
    GSET 24, 7
    GSET 28, GPU_FORMAT_B8G8R8X8
    GSET 32, 0x08000000
    GSET 36, 0
    GSEND "create 7 0x8000000 x 0 (no pixels: pixman allocates nothing)", 40, 24
    GREQ GPU_CMD_RESOURCE_CREATE_2D, 0
    GSET 24, 9
    GSET 28, GPU_FORMAT_B8G8R8X8
    GSET 32, 0x08000000
    GSET 36, 1
    GSEND "create 9 0x8000000 x 1 (pixman: width*bpp overflows)", 40, 24
    GREQ GPU_CMD_RESOURCE_CREATE_2D, 0
    GSET 24, 8
    GSET 28, GPU_FORMAT_B8G8R8X8
    GSET 32, 0x40000000
    GSET 36, 4
    GSEND "create 8 0x40000000 x 4 (hostmem wraps to 0)", 40, 24
    GREQ GPU_CMD_RESOURCE_CREATE_2D, 0
    GSET 24, 8
    GSET 28, GPU_FORMAT_B8G8R8X8
    GSET 32, 4
    GSET 36, 0x80000000
    GSEND "create 8 4 x 0x80000000 (a negative int height)", 40, 24
    GREQ GPU_CMD_RESOURCE_CREATE_2D, 0
    GSEND "create, header only", 24, 24

    PUTSN "-- backing"
    GREQ GPU_CMD_TRANSFER_TO_HOST_2D, 0
    GSET 32, 16
    GSET 36, 16
    GSET 48, 1
    GSEND "transfer, no backing", 56, 24
    GREQ GPU_CMD_SET_SCANOUT, 0
    GSET 32, PIC_W
    GSET 36, PIC_H
    GSET 44, 1
    GSEND "set_scanout, no backing", 48, 24
    GREQ GPU_CMD_RESOURCE_DETACH_BACKING, 0
    GSET 24, 1
    GSEND "detach, no backing", 32, 24
    GREQ GPU_CMD_RESOURCE_ATTACH_BACKING, 0
    GSET 24, 9
    GSET 28, 1
    GSET 32, SHADOW
    GSET 40, 0x1000
    GSEND "attach to unknown resource 9", 48, 24
    GREQ GPU_CMD_RESOURCE_ATTACH_BACKING, 0
    GSET 24, 1
    GSET 28, 16385
    GSEND "attach, 16385 entries", 32, 24
    GREQ GPU_CMD_RESOURCE_ATTACH_BACKING, 0
    GSET 24, 1
    GSET 28, 2
    GSET 32, SHADOW
    GSET 40, 0x1000
    GSEND "attach, 2 entries announced, 1 sent", 48, 24
    GREQ GPU_CMD_RESOURCE_ATTACH_BACKING, 0
    GSET 24, 1
    GSET 28, 1
    GSET 32, SHADOW
    GSET 40, 0
    GSEND "attach, entry of length 0", 48, 24
    GREQ GPU_CMD_RESOURCE_ATTACH_BACKING, 0
    GSET 24, 1
    GSET 28, 1
    GSET 32, 0xf0000000
    GSET 40, 0x2000
    GSEND "attach, 8 KiB at f0000000 (not RAM)", 48, 24
    GREQ GPU_CMD_RESOURCE_ATTACH_BACKING, 0
    GSET 24, 1
    GSET 28, 1
    GSET 32, 0xf0000000
    GSET 40, 0x1000
    GSEND "attach, 4 KiB at f0000000 (not RAM)", 48, 24
    GREQ GPU_CMD_RESOURCE_ATTACH_BACKING, 0
    GSET 24, 5
    GSET 28, 1
    GSET 32, 0xf0001000
    GSET 40, 0x1000
    GSEND "attach 5, 4 KiB at f0001000 while the bounce buffer is taken", 48, 24
    GREQ GPU_CMD_RESOURCE_ATTACH_BACKING, 0
    GSET 24, 5
    GSET 28, 1
    GSET 32, 0x07fff000
    GSET 40, 0x2000
    GSEND "attach 5, 8 KiB across the end of RAM (bounce taken)", 48, 24
    GREQ GPU_CMD_RESOURCE_DETACH_BACKING, 0
    GSET 24, 1
    GSEND "detach 1", 32, 24
    GREQ GPU_CMD_RESOURCE_ATTACH_BACKING, 0
    GSET 24, 5
    GSET 28, 1
    GSET 32, 0x07fff000
    GSET 40, 0x2000
    GSEND "attach 5, 8 KiB across the end of RAM", 48, 24
    GSEND "attach 5 again (the same request)", 48, 24
    GREQ GPU_CMD_RESOURCE_DETACH_BACKING, 0
    GSET 24, 5
    GSEND "detach 5", 32, 24
    call attach_main
    GREQ GPU_CMD_RESOURCE_ATTACH_BACKING, 0
    GSET 24, 1
    GSET 28, 1
    GSET 32, SHADOW
    GSET 40, 0x1000
    GSEND "attach 1 again", 48, 24
    GREQ GPU_CMD_RESOURCE_ATTACH_BACKING, 0
    GSET 24, 6
    GSET 28, 0
    GSEND "attach 6, no entries", 32, 24
    GREQ GPU_CMD_TRANSFER_TO_HOST_2D, 0
    GSET 32, 1
    GSET 36, 1
    GSET 48, 6
    GSEND "transfer 6 after attaching no entries", 56, 24
    GREQ GPU_CMD_RESOURCE_ATTACH_BACKING, 0
    GSET 24, 6
    GSET 28, 0
    GSEND "attach 6, no entries, again", 32, 24

    PUTSN "-- TRANSFER_TO_HOST_2D"
    mov esi, xfer_cases
    mov eax, GPU_CMD_TRANSFER_TO_HOST_2D
    mov ecx, 7
    mov edx, 56
    call run_cases
    GREQ GPU_CMD_TRANSFER_TO_HOST_2D, 0
    GSEND "transfer, 40-byte request", 40, 24

    PUTSN "-- SET_SCANOUT"
    mov esi, scanout_cases
    mov eax, GPU_CMD_SET_SCANOUT
    mov ecx, 6
    mov edx, 48
    call run_cases

    PUTSN "-- RESOURCE_FLUSH"
    mov esi, flush_cases
    mov eax, GPU_CMD_RESOURCE_FLUSH
    mov ecx, 5
    mov edx, 48
    call run_cases

    PUTSN "-- commands a 2D device does not serve"
    mov esi, other_types
ot_loop:
    mov eax, [esi]
    cmp eax, 0xffffffff
    je ot_done
    GREQ eax, 0
    PUTS "type "
    call put_hex32
    GSEND "", 64, 24
    add esi, 4
    jmp ot_loop
ot_done:
    mov dword ptr [gpu_poll_max], 20000
    GREQ GPU_CMD_GET_DISPLAY_INFO, 0
    GSEND "GET_DISPLAY_INFO, 16-byte request (shorter than the header)", 16, 408
    mov dword ptr [gpu_poll_max], GPU_POLL
    GREQ GPU_CMD_GET_DISPLAY_INFO, 0
    GSEND "GET_DISPLAY_INFO after it", 24, 408

    PUTSN "-- cursor queue"
    mov esi, cursor_cases
cu_loop:
    mov eax, [esi]
    test eax, eax
    jz cu_done
    mov eax, [esi+4]
    GREQ eax, 0
    mov eax, [esi+8]
    mov [GPU_REQ+24], eax
    mov eax, [esi+12]
    mov [GPU_REQ+28], eax
    mov eax, [esi+16]
    mov [GPU_REQ+32], eax
    mov eax, [esi+20]
    mov [GPU_REQ+40], eax
    mov eax, [esi]
    call puts
    push ecx
    mov eax, [esi+24]
    xor edx, edx
    mov ecx, 1
    call gpu_send
    call gpu_put_resp
    pop ecx
    add esi, 28
    jmp cu_loop
cu_done:
    GREQ GPU_CMD_UPDATE_CURSOR, 0
    GSET 40, 5
    push ecx
    mov eax, 56
    mov edx, 24
    mov ecx, 1
    call gpu_send
    PUTS "UPDATE_CURSOR with a response buffer"
    call gpu_put_resp
    pop ecx

    PUTSN "-- DETACH_BACKING, RESOURCE_UNREF"
    GREQ GPU_CMD_RESOURCE_DETACH_BACKING, 0
    GSET 24, 9
    GSEND "detach 9", 32, 24
    GREQ GPU_CMD_RESOURCE_DETACH_BACKING, 0
    GSET 24, 1
    GSEND "detach 1", 32, 24
    GREQ GPU_CMD_RESOURCE_DETACH_BACKING, 0
    GSET 24, 1
    GSEND "detach 1 again", 32, 24
    GREQ GPU_CMD_TRANSFER_TO_HOST_2D, 0
    GSET 32, 16
    GSET 36, 16
    GSET 48, 1
    GSEND "transfer 1 after detach", 56, 24
    GREQ GPU_CMD_RESOURCE_FLUSH, 0
    GSET 32, 16
    GSET 36, 16
    GSET 40, 1
    GSEND "flush 1 after detach (no backing needed)", 48, 24
    GREQ GPU_CMD_RESOURCE_UNREF, 0
    GSET 24, 9
    GSEND "unref 9", 32, 24
    GREQ GPU_CMD_RESOURCE_UNREF, 0
    GSET 24, 1
    GSEND "unref 1 (shown on scanout 0)", 32, 24
    GREQ GPU_CMD_RESOURCE_UNREF, 0
    GSET 24, 1
    GSEND "unref 1 again", 32, 24
    GREQ GPU_CMD_SET_SCANOUT, 0
    GSEND "set_scanout 0 to resource 0 (disable)", 48, 24
    GREQ GPU_CMD_RESOURCE_UNREF, 0
    GSEND "unref, header only", 24, 24

    PUTSN "-- device reset"
    call create_main
    call vio_reset
    PUTS "status after reset "
    call put_hex8
    call put_nl
    VIO_ACK_DRIVER
    VIO_VERSION_1_OK
    xor eax, eax
    xor edx, edx
    call vio_queue_setup
    mov eax, 1
    xor edx, edx
    call vio_queue_setup
    GREQ GPU_CMD_RESOURCE_UNREF, 0
    GSET 24, 1
    GSEND "unref 1 after the reset, before DRIVER_OK", 32, 24
    GREQ GPU_CMD_GET_DISPLAY_INFO, 0
    GSEND "GET_DISPLAY_INFO before DRIVER_OK", 24, 408
    mov eax, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK
    call vio_status_write
    PUTSTATUS "status "

    PUTSN "-- the picture"
    call create_main
    call attach_main
    mov dword ptr [pic_w], PIC_W
    mov dword ptr [pic_h], PIC_H
    mov dword ptr [gpu_stride], PIC_W * 4
    mov eax, SHADOW
    mov edx, PIC_W * 4
    call pic_draw
    mov eax, 1
    xor edx, edx
    mov ecx, PIC_W | 1 << 16
    call gpu_transfer
    PUTS "transfer of line 0 (QEMU copies the whole resource) -> "
    call put_hex32
    call put_nl
    mov eax, 1
    mov edx, PIC_W
    mov ecx, PIC_H
    call gpu_scanout
    PUTS "set_scanout -> "
    call put_hex32
    call put_nl
.if SCREENDUMP == 2
    GREQ GPU_CMD_SET_SCANOUT, 0
    GSEND "set_scanout 0 to resource 0 (disable)", 48, 24
    PUTSN "SCREEN READY"
    cli
    hlt
.endif
    mov eax, SHADOW
    mov edx, PIC_W * 4
    mov ecx, 40 | 40 << 16
    call pic_sprite
    mov eax, 1
    mov edx, 40 | 40 << 16
    mov ecx, 32 | 32 << 16
    call gpu_transfer
    PUTS "sprite at 40,40 transferred -> "
    call put_hex32
    call put_nl
    mov eax, SHADOW
    mov edx, PIC_W * 4
    mov ecx, 200 | 120 << 16
    call pic_sprite
    PUTSN "sprite at 200,120 drawn in the shadow only"
    mov eax, 1
    xor edx, edx
    mov ecx, PIC_W | PIC_H << 16
    call gpu_flush
    PUTS "flush -> "
    call put_hex32
    call put_nl
    PUTSN "SCREEN READY"
.if SCREENDUMP == 1
    cli
    hlt
.endif
    call report_summary

# resource 1: PIC_W x PIC_H, B8G8R8X8
create_main:
    mov eax, 1
    mov edx, PIC_W
    mov ecx, PIC_H
    call gpu_create
    PUTS "create 1 "
    PUTDEC PIC_W
    PUTC 'x'
    PUTDEC PIC_H
    PUTS " -> "
    call put_hex32
    call put_nl
    ret

# resource 1's backing: SHADOW in two entries (64 KiB, the rest)
attach_main:
    GREQ GPU_CMD_RESOURCE_ATTACH_BACKING, 0
    GSET 24, 1
    GSET 28, 2
    GSET 32, SHADOW
    GSET 40, 0x10000
    GSET 48, SHADOW + 0x10000
    GSET 56, PIC_W * PIC_H * 4 - 0x10000
    GSEND "attach 1, two entries", 64, 24
    ret

# the rows of a case table at esi, up to a zero name: a row is the name's address and
# ecx dwords, the request's from offset 24.  For each: GREQ eax, the dwords, the name,
# then the request (edx bytes) sent with a 24-byte response and the answer printed.
run_cases:
    pushad
    mov ebx, eax
    mov ebp, edx
rc_loop:
    mov eax, [esi]
    test eax, eax
    jz rc_done
    GREQ ebx, 0
    xor edi, edi
rc_arg:
    mov eax, [esi+edi*4+4]
    mov [GPU_REQ+24+edi*4], eax
    inc edi
    cmp edi, ecx
    jb rc_arg
    mov eax, [esi]
    call puts
    GSEND "", ebp, 24
    lea esi, [esi+ecx*4+4]
    jmp rc_loop
rc_done:
    popad
    ret

print_bars:
    pushad
    mov ebx, eax
    mov esi, 0x10
pb_loop:
    mov eax, ebx
    mov edx, esi
    call pci_bar_probe
    push eax
    PUTS "BAR"
    mov eax, esi
    sub eax, 0x10
    shr eax, 2
    call put_dec
    PUTS " readback "
    pop eax
    call put_hex32
    PUTS " "
    mov eax, edx
    call put_hex32
    call put_nl
    add esi, 4
    cmp esi, 0x28
    jb pb_loop
    popad
    ret

print_caps:
    push eax
    push edx
    mov eax, [vio_bdf]
    mov edx, put_cap_raw
    call pci_put_caps
    pop edx
    pop eax
    ret

# for pci_put_caps: the capability's first five dwords
put_cap_raw:
    PUTS " raw "
    xor edi, edi
pc_dw:
    mov eax, ebx
    lea edx, [esi+edi]
    call pci_read32
    call put_hex32
    PUTC ' '
    add edi, 4
    cmp edi, 20
    jb pc_dw
    ret

.align 4, 0
formats: .long 1, 2, 3, 4, 67, 68, 121, 134, 0, 5, 66, 0xfffffffe, 0xffffffff

# name, x, y, width, height, offset lo, offset hi, resource
xfer_cases:
    .long s_x1, 0, 0, 16, 16, 0, 0, 9
    .long s_x2, 321, 0, 1, 1, 0, 0, 1
    .long s_x3, 0, 0, 321, 1, 0, 0, 1
    .long s_x4, 300, 0, 32, 1, 0, 0, 1
    .long s_x5, 0, 190, 16, 16, 0, 0, 1
    .long s_x6, 0xffffffff, 0, 2, 1, 0, 0, 1
    .long s_x7, 320, 200, 0, 0, 0, 0, 1
    .long s_x8, 8, 8, 16, 1, 255990, 0, 1
    .long s_x11, 8, 8, 16, 1, 256000, 0, 1
    .long s_x9, 0, 0, 320, 200, 0, 1, 1
    .long s_x10, 8, 8, 16, 16, 0, 0, 5
    .long 0
s_x1: .asciz "transfer to unknown resource 9"
s_x2: .asciz "transfer x 321 > width"
s_x3: .asciz "transfer width 321"
s_x4: .asciz "transfer 300+32 > 320"
s_x5: .asciz "transfer 190+16 > 200"
s_x6: .asciz "transfer x ffffffff width 2 (sum wraps)"
s_x7: .asciz "transfer empty rect at 320,200"
s_x8: .asciz "transfer offset 255990, one line of 64 bytes (10 left in the backing)"
s_x11: .asciz "transfer offset 256000 (the backing's end)"
s_x9: .asciz "transfer offset 100000000 (truncated to 0)"
s_x10: .asciz "transfer to 5 (no backing)"

# name, x, y, width, height, scanout, resource
scanout_cases:
    .long s_s1, 0, 0, 320, 200, 1, 1
    .long s_s2, 0, 0, 320, 200, 16, 1
    .long s_s3, 0, 0, 15, 16, 0, 1
    .long s_s4, 0, 0, 16, 15, 0, 1
    .long s_s5, 310, 0, 16, 16, 0, 1
    .long s_s6, 0, 0, 320, 201, 0, 1
    .long s_s7, 0, 0, 320, 200, 0, 9
    .long s_s8, 0, 0, 16, 16, 0, 6
    .long s_s9, 0, 0, 320, 200, 0, 1
    .long s_s10, 0, 0, 0, 0, 0, 0
    .long s_s9, 0, 0, 320, 200, 0, 1
    .long 0
s_s1: .asciz "set_scanout 1"
s_s2: .asciz "set_scanout 16"
s_s3: .asciz "set_scanout 15x16"
s_s4: .asciz "set_scanout 16x15"
s_s5: .asciz "set_scanout 310+16 > 320"
s_s6: .asciz "set_scanout height 201"
s_s7: .asciz "set_scanout to unknown resource 9"
s_s8: .asciz "set_scanout to 6 (no backing)"
s_s9: .asciz "set_scanout 0 to resource 1"
s_s10: .asciz "set_scanout 0 to resource 0 (disable)"

# name, x, y, width, height, resource
flush_cases:
    .long s_f1, 0, 0, 16, 16, 9
    .long s_f2, 0, 0, 321, 1, 1
    .long s_f3, 310, 190, 16, 16, 1
    .long s_f4, 0, 0, 320, 200, 1
    .long s_f5, 0, 0, 64, 64, 5
    .long s_f6, 0, 0, 0, 0, 6
    .long 0
s_f1: .asciz "flush unknown resource 9"
s_f2: .asciz "flush width 321"
s_f3: .asciz "flush 310+16 > 320"
s_f4: .asciz "flush 1, whole"
s_f5: .asciz "flush 5 (on no scanout, no backing)"
s_f6: .asciz "flush 6 (0x0), empty rect"

other_types:
    .long 0, 0x108, 0x109, 0x10b, 0x10c, 0x10d, 0x10e, 0x200, 0x204, 0x300, 0x301, 0x1100, 0x999
    .long 0xffffffff

# name, type, scanout, x, y, resource, request length
cursor_cases:
    .long s_c1, GPU_CMD_UPDATE_CURSOR, 0, 10, 20, 5, 56
    .long s_c2, GPU_CMD_MOVE_CURSOR, 0, 30, 40, 5, 56
    .long s_c3, GPU_CMD_UPDATE_CURSOR, 0, 10, 20, 1, 56
    .long s_c4, GPU_CMD_UPDATE_CURSOR, 0, 10, 20, 9, 56
    .long s_c5, GPU_CMD_UPDATE_CURSOR, 3, 10, 20, 5, 56
    .long s_c6, GPU_CMD_UPDATE_CURSOR, 0, 10, 20, 5, 40
    .long s_c7, GPU_CMD_GET_DISPLAY_INFO, 0, 0, 0, 0, 56
    .long 0
s_c1: .asciz "UPDATE_CURSOR 5 (64x64) at 10,20"
s_c2: .asciz "MOVE_CURSOR to 30,40"
s_c3: .asciz "UPDATE_CURSOR 1 (not 64x64)"
s_c4: .asciz "UPDATE_CURSOR unknown resource 9"
s_c5: .asciz "UPDATE_CURSOR scanout 3"
s_c6: .asciz "UPDATE_CURSOR, 40-byte request"
s_c7: .asciz "GET_DISPLAY_INFO on the cursor queue"
