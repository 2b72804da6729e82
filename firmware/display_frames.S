# display_frames.S - the same test picture, frame after frame, through either display
# design of the 2010 thread (the seed of issue 18), for the tests and for
# `python -m benchmarks gpu_vs_fb`:
#
#   DESIGN 1  virtio-fb (-device virtio-fb-pci,width=W,height=H): the guest draws straight
#             into the framebuffer, a shared memory region behind BAR 2; a flush request
#             on queue 0 tells the device which rectangle changed.
#   DESIGN 2  virtio-gpu (-device virtio-gpu-pci): the guest draws into a shadow in guest
#             RAM (the resource's backing); TRANSFER_TO_HOST_2D copies the rectangle into
#             the host's resource and RESOURCE_FLUSH shows it: two requests, published
#             together, one kick, both answers awaited.
#   DESIGN 0  drawing only, into RAM, nothing presented (the baseline).
#   DESIGN 3  a framebuffer in ivshmem-plain's BAR 2 (-object memory-backend-ram,id=fb,
#             size=... -device ivshmem-plain,memdev=fb): host memory the guest stores
#             into, with no flush at all — the shared-memory design as it can be run on
#             QEMU 7.2 itself, which has no virtio-fb.
#
#   PATTERN 1 full frames: the whole picture is drawn and presented every frame.
#   PATTERN 2 a moving 32x32 sprite over the picture: each frame erases the sprite (the
#             picture's own pixels back), draws it 8 pixels further (rows of 32 pixels,
#             wrapping), and presents the bounding rectangle of old and new.
#   PATTERN 3 presenting alone: nothing is redrawn, the whole screen is presented every
#             frame (what the update mechanism itself costs).
#
# Defines: DESIGN, PATTERN, FRAMES (default 10), W, H (default 320x240), MARK (default 1:
# after the last store of each frame the guest writes '.' to port 0xE9, so the host can
# time-stamp it; '<' and '>' bracket the timed frames).  Before the frames the picture
# is drawn and presented once.  The last lines are "SPRITE x y" (the sprite's final place,
# PATTERN 2) and SUMMARY; the host checks the screen pixel by pixel
# (uvirt.testing.picture).  With HOLD=1 the program prints "SCREEN READY" and halts with
# interrupts off instead of exiting, for a QMP screendump.
.include "uvirt.inc"
.include "gpu.inc"
.include "memregion.inc"
.include "picture.inc"

.ifndef DESIGN
.set DESIGN, 2
.endif
.ifndef PATTERN
.set PATTERN, 1
.endif
.ifndef FRAMES
.set FRAMES, 10
.endif
.ifndef W
.set W, 320
.endif
.ifndef H
.set H, 240
.endif
.ifndef MARK
.set MARK, 1
.endif
.ifndef HOLD
.set HOLD, 0
.endif
.set FB_TYPE, 63
.set SHADOW, 0x400000
.set FB_REQ, 0x380000                   # virtio-fb flush request: rect, then status byte
.set STEP, 8

.align 4, 0
base:     .long SHADOW
stride:   .long W * 4
spr_x:    .long 0
spr_y:    .long 0
bad_answers: .long 0                    # presents the device did not answer OK
old_x:    .long 0
old_y:    .long 0
rect_xy:  .long 0
rect_wh:  .long 0
fb_segs:  .long FB_REQ, 16, 0, FB_REQ + 16, 1, 2
# virtio-gpu: TRANSFER (56 bytes) at GPU_REQ, FLUSH (48) at GPU_REQ+0x100; answers at GPU_RESP
xfer_segs:  .long GPU_REQ, 56, 0, GPU_RESP, 24, 2
flush_segs: .long GPU_REQ + 0x100, 48, 0, GPU_RESP + 0x100, 24, 2

main:
    call mr_mask_irqs
    mov dword ptr [pic_w], W
    mov dword ptr [pic_h], H
.if DESIGN == 1
    call fb_setup
.endif
.if DESIGN == 2
    call gpu_setup
.endif
.if DESIGN == 3
    mov eax, 0x11101af4                 # ivshmem-plain
    call pci_find
    REQUIRE_FOUND "FAIL: no ivshmem-plain"
    mov edx, 0x18
    call pci_read32
    and eax, 0xfffffff0
    mov [base], eax
.endif
    mov eax, [base]
    mov edx, [stride]
    call pic_draw
    mov dword ptr [rect_xy], 0
    mov dword ptr [rect_wh], W | H << 16
    call present
.if PATTERN == 2
    mov eax, [base]
    mov edx, [stride]
    xor ecx, ecx
    call pic_sprite
    mov dword ptr [rect_wh], PIC_SPRITE | PIC_SPRITE << 16
    call present
.endif
    PUTC '<'
    mov esi, FRAMES
frame:
.if PATTERN == 1
    mov eax, [base]
    mov edx, [stride]
    call pic_draw
.endif
.if PATTERN == 2
    call sprite_step
.endif
.if MARK
    PUTC '.'
.endif
    call present
    dec esi
    jnz frame
    PUTC '>'
    call put_nl
    REPORT_EQ [bad_answers], 0, "every present answered OK"
.if PATTERN == 2
    PUTS "SPRITE "
    PUTDEC [spr_x]
    PUTC ' '
    PUTDEC [spr_y]
    call put_nl
.endif
.if HOLD
    PUTSN "SCREEN READY"
    cli
    hlt
.endif
    call report_summary

# erase the sprite, move it, draw it; rect_xy/rect_wh = bounding rectangle of both places
sprite_step:
    push eax
    push ecx
    push edx
    mov eax, [spr_x]
    mov [old_x], eax
    mov eax, [spr_y]
    mov [old_y], eax
    mov dword ptr [pic_rw], PIC_SPRITE
    mov dword ptr [pic_rh], PIC_SPRITE
    mov ecx, [old_y]
    shl ecx, 16
    or ecx, [old_x]
    mov eax, [base]
    mov edx, [stride]
    call pic_rect
    mov eax, [spr_x]
    add eax, STEP
    cmp eax, W - PIC_SPRITE
    jbe __ss_x_ok
    xor eax, eax
    mov ecx, [spr_y]
    add ecx, PIC_SPRITE
    cmp ecx, H - PIC_SPRITE
    jbe __ss_y_ok
    xor ecx, ecx
__ss_y_ok:
    mov [spr_y], ecx
__ss_x_ok:
    mov [spr_x], eax
    mov ecx, [spr_y]
    shl ecx, 16
    or ecx, [spr_x]
    mov eax, [base]
    mov edx, [stride]
    call pic_sprite
    # bounding rectangle: x0 = min, x1 = max + 32, likewise y
    mov eax, [old_x]
    mov ecx, [spr_x]
    cmp eax, ecx
    jbe __ss_minx
    xchg eax, ecx
__ss_minx:                              # eax = min x, ecx = max x
    add ecx, PIC_SPRITE
    sub ecx, eax
    mov [rect_xy], eax
    mov [rect_wh], ecx
    mov eax, [old_y]
    mov ecx, [spr_y]
    cmp eax, ecx
    jbe __ss_miny
    xchg eax, ecx
__ss_miny:
    add ecx, PIC_SPRITE
    sub ecx, eax
    shl eax, 16
    or [rect_xy], eax
    shl ecx, 16
    or [rect_wh], ecx
    pop edx
    pop ecx
    pop eax
    ret

# tell the device what changed: rect_xy, rect_wh
present:
.if DESIGN == 1
    push eax
    push ecx
    push edx
    movzx eax, word ptr [rect_xy]
    mov [FB_REQ], eax
    movzx eax, word ptr [rect_xy+2]
    mov [FB_REQ+4], eax
    movzx eax, word ptr [rect_wh]
    mov [FB_REQ+8], eax
    movzx eax, word ptr [rect_wh+2]
    mov [FB_REQ+12], eax
    xor eax, eax
    mov edx, fb_segs
    mov ecx, 2
    call vq_submit
    xor eax, eax
    call vq_poll
    cmp byte ptr [FB_REQ+16], 0
    je __present_fb_ok
    inc dword ptr [bad_answers]
__present_fb_ok:
    pop edx
    pop ecx
    pop eax
.endif
.if DESIGN == 2
    push eax
    push ecx
    push edx
    push ebx
    # TRANSFER_TO_HOST_2D: hdr, rect, offset = y * stride + x * 4, resource 1
    mov dword ptr [GPU_REQ], GPU_CMD_TRANSFER_TO_HOST_2D
    mov dword ptr [GPU_REQ+0x100], GPU_CMD_RESOURCE_FLUSH
    movzx eax, word ptr [rect_xy]
    mov [GPU_REQ+24], eax
    mov [GPU_REQ+0x100+24], eax
    movzx ebx, word ptr [rect_xy+2]
    mov [GPU_REQ+28], ebx
    mov [GPU_REQ+0x100+28], ebx
    imul ebx, [stride]
    lea ebx, [ebx+eax*4]
    mov [GPU_REQ+40], ebx
    mov dword ptr [GPU_REQ+44], 0
    mov dword ptr [GPU_REQ+48], 1       # resource 1
    mov dword ptr [GPU_REQ+0x100+40], 1
    movzx eax, word ptr [rect_wh]
    mov [GPU_REQ+32], eax
    mov [GPU_REQ+0x100+32], eax
    movzx eax, word ptr [rect_wh+2]
    mov [GPU_REQ+36], eax
    mov [GPU_REQ+0x100+36], eax
    xor eax, eax
    mov edx, xfer_segs
    mov ecx, 2
    call vq_add
    xor eax, eax
    mov edx, flush_segs
    mov ecx, 2
    call vq_add
    xor eax, eax
    call vq_kick
    xor eax, eax
    call vq_poll
    xor eax, eax
    call vq_poll
    cmp dword ptr [GPU_RESP], GPU_RESP_OK_NODATA
    je __present_xfer_ok
    inc dword ptr [bad_answers]
__present_xfer_ok:
    cmp dword ptr [GPU_RESP+0x100], GPU_RESP_OK_NODATA
    je __present_flush_ok
    inc dword ptr [bad_answers]
__present_flush_ok:
    pop ebx
    pop edx
    pop ecx
    pop eax
.endif
    ret

fb_setup:
    push eax
    push edx
    VIO_REQUIRE FB_TYPE, "FAIL: no virtio-fb"
    xor eax, eax
    call vio_find_shm
    REQUIRE_FOUND "FAIL: no shared memory capability with shmid 0"
    mov esi, eax
    mov eax, [vio_bdf]
    lea edx, [esi+8]
    call pci_read32
    push eax
    mov eax, 0x18
    call mr_bar_addr
    pop edx
    add eax, edx
    mov [base], eax
    PUTS "FW framebuffer at "
    call put_hex32
    call put_nl
    mov eax, [vio_bdf]
    call vio_use_modern
    mov eax, 8                          # config: stride
    call vio_cfg_read32
    mov [stride], eax
    call vio_reset
    VIO_ACK_DRIVER
    VIO_VERSION_1_OK
    xor eax, eax
    xor edx, edx
    call vio_queue_setup
    mov eax, VS_ACK | VS_DRIVER | VS_FEATURES_OK | VS_DRIVER_OK
    call vio_status_write
    pop edx
    pop eax
    ret

gpu_setup:
    push eax
    push ecx
    push edx
    call gpu_start
    mov dword ptr [gpu_stride], W * 4
    mov eax, 1
    mov edx, W
    mov ecx, H
    call gpu_create
    REPORT_EQ eax, GPU_RESP_OK_NODATA, "create the resource"
    mov eax, 1
    mov edx, SHADOW
    mov ecx, W * H * 4
    call gpu_attach
    REPORT_EQ eax, GPU_RESP_OK_NODATA, "attach the shadow"
    mov eax, 1
    mov edx, W
    mov ecx, H
    call gpu_scanout
    REPORT_EQ eax, GPU_RESP_OK_NODATA, "set the scanout"
    pop edx
    pop ecx
    pop eax
    ret

