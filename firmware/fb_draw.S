# fb_draw.S - draws a test picture into virtio-fb's framebuffer (uvirt's device type 63,
# uvirt/virtio/fb.py) and asks the device to present it:
#
#     -device virtio-fb-pci[,width=W,height=H]                 (shared memory capability)
#     -device virtio-fb-pci,disable-modern=on[,width=,height=] (the proposal's MEM_SEL)
#
# Finds the framebuffer through a VIRTIO_PCI_CAP_SHARED_MEMORY_CFG capability with
# shmid 0 when the device has one (modern/transitional: BAR 2 + offset), else through
# MEM_SEL 0 / MEM_PFN / MEM_SIZE (legacy-only: BAR 2); reads the mode from device
# config (modern: the device-config window; legacy with memory regions: BAR0 offset 32),
# draws with plain stores, then sends flush requests on queue 0: the whole screen, a
# rectangle past the edge (status 1) and a small one.  PASS/FAIL lines, then SUMMARY.
#
# The picture (firmware/include/picture.inc; tests/guest/test_memory_regions.py computes
# the same, pixel by pixel):
#   a 2-pixel white (ffffff) border; inside it, the top two thirds (y*3 < 2*H) are eight
#   vertical 75% colour bars, bar = x*8/W: c0c0c0 c0c000 00c0c0 00c000 c000c0 c00000
#   0000c0 000000; the bottom third a grey ramp, v = x*256/W, colour v*0x010101.
# Pixels are XRGB8888 dwords 0x00RRGGBB (bytes B, G, R, X).
.include "uvirt.inc"
.include "virtio.inc"
.include "memregion.inc"
.include "picture.inc"

.set FB_TYPE, 63
.set MEM_SEL, 20
.set MEM_SIZE, 24
.set MEM_PFN, 28
.set PROP_CONFIG, 32                    # device config, proposal layout, MSI-X off
.set CFG_WIDTH, 0
.set CFG_HEIGHT, 4
.set CFG_STRIDE, 8
.set CFG_FORMAT, 12
.set CFG_SHMID, 16
.set CFG_FLUSHES, 20
.set REQ, 0x300000                      # flush request: rect at REQ, status byte at REQ+16

.align 4, 0
use_shm:  .long 0                       # 1: found through the capability
fb:       .long 0
fb_len:   .long 0
width:    .long 0
height:   .long 0
stride:   .long 0
segs:     .long REQ, 16, 0, REQ + 16, 1, 2

main:
    call mr_mask_irqs
    VIO_REQUIRE FB_TYPE, "FAIL: no virtio-fb"
    call vio_put_ident
    mov ebx, eax
    xor eax, eax
    call vio_find_shm                   # eax = cap position or 0xffffffff
    cmp eax, 0xffffffff
    je legacy_path

    PUTSN "-- framebuffer through the shared memory capability (shmid 0)"
    mov esi, eax
    mov dword ptr [use_shm], 1
    mov eax, ebx
    lea edx, [esi+4]
    call pci_read8
    REPORT_EQ eax, 2, "shmid 0 is in BAR 2"
    mov eax, ebx
    lea edx, [esi+16]
    call pci_read32
    REPORT_EQ eax, 0, "offset_hi 0"
    mov eax, ebx
    mov edx, 0x1c
    call pci_read32
    REPORT_EQ eax, 0, "BAR2 below 4 GiB"
    mov eax, 0x18
    call mr_bar_addr
    mov ecx, eax
    mov eax, ebx
    lea edx, [esi+8]
    call pci_read32
    add eax, ecx
    mov [fb], eax
    mov eax, ebx
    lea edx, [esi+12]
    call pci_read32
    mov [fb_len], eax
    mov eax, ebx
    call vio_use_modern
    REPORT_TRUE eax, "modern capabilities found"
    mov eax, CFG_WIDTH
    call vio_cfg_read32
    mov [width], eax
    mov eax, CFG_HEIGHT
    call vio_cfg_read32
    mov [height], eax
    mov eax, CFG_STRIDE
    call vio_cfg_read32
    mov [stride], eax
    mov eax, CFG_FORMAT
    call vio_cfg_read32
    REPORT_EQ eax, 1, "format 1: XRGB8888"
    mov eax, CFG_SHMID
    call vio_cfg_read32
    REPORT_EQ eax, 0, "config names shmid 0"
    jmp have_fb

legacy_path:
    PUTSN "-- framebuffer through MEM_SEL / MEM_PFN (no shared memory capability)"
    mov eax, ebx
    call vio_use_legacy
    REPORT_TRUE eax, "BAR0 is an I/O BAR"
    mov eax, MEM_SEL
    xor edx, edx
    call vl_out16
    mov eax, MEM_PFN
    call vl_in32
    mov [fb], eax
    mov eax, MEM_SIZE
    call vl_in32
    mov [fb_len], eax
    mov eax, 0x18
    call mr_bar_addr
    REPORT_EQ eax, [fb], "MEM_PFN = BAR2 address"
    mov eax, PROP_CONFIG + CFG_WIDTH
    call vl_in32
    mov [width], eax
    mov eax, PROP_CONFIG + CFG_HEIGHT
    call vl_in32
    mov [height], eax
    mov eax, PROP_CONFIG + CFG_STRIDE
    call vl_in32
    mov [stride], eax
    mov eax, PROP_CONFIG + CFG_FORMAT
    call vl_in32
    REPORT_EQ eax, 1, "format 1: XRGB8888 (config at 32: the proposal's layout)"

have_fb:
    PUTS "mode "
    PUTDEC [width]
    PUTC 'x'
    PUTDEC [height]
    PUTS " stride "
    PUTDEC [stride]
    call put_nl
    PUTS "FW framebuffer at "
    PUTHEX32 [fb]
    PUTS " size "
    PUTHEX32 [fb_len]
    call put_nl
    mov eax, [width]
    shl eax, 2
    cmp eax, [stride]
    setbe al
    movzx eax, al
    REPORT_TRUE eax, "stride holds a line"
    mov eax, [stride]
    imul eax, [height]
    cmp eax, [fb_len]
    setbe al
    movzx eax, al
    REPORT_TRUE eax, "the region holds the screen"
    cmp dword ptr [report_failures], 0
    je draw_it
    PUTSN "FAIL: mode unusable, not drawing"
    jmp report_summary
draw_it:
    call draw
    mov eax, [fb]
    REPORT_EQ [eax], 0xffffff, "top-left pixel reads back white"

    PUTSN "-- driver set-up"
    call vio_reset
    VIO_ACK_DRIVER
    xor eax, eax
    xor edx, edx
    call vio_feat_write
    cmp dword ptr [use_shm], 0
    je setup_queue
    VIO_VERSION_1_OK
    call vio_status_read
    and eax, VS_FEATURES_OK
    REPORT_EQ eax, VS_FEATURES_OK, "FEATURES_OK accepted"
setup_queue:
    xor eax, eax
    xor edx, edx
    call vio_queue_setup
    REPORT_EQ eax, 16, "flush queue: 16 entries"
    VIO_DRIVER_OK

    PUTSN "-- flush requests"
    xor ecx, ecx                        # whole screen: rect 0,0,0,0
    xor edx, edx
    xor esi, esi
    xor edi, edi
    call flush
    REPORT_EQ eax, 0, "flush of the whole screen: status 0"
    REPORT_EQ [vq_used_len], 1, "used length 1 (the status byte)"
    mov eax, CFG_FLUSHES
    call cfg_read
    REPORT_EQ eax, 1, "config: 1 flush served"
    xor ecx, ecx
    xor edx, edx
    mov esi, [width]
    inc esi
    mov edi, 1
    call flush
    REPORT_EQ eax, 1, "a rectangle wider than the screen: status 1"
    mov ecx, 10
    mov edx, 10
    mov esi, 20
    mov edi, 20
    call flush
    REPORT_EQ eax, 0, "a 20x20 rectangle at 10,10: status 0"
    mov eax, CFG_FLUSHES
    call cfg_read
    REPORT_EQ eax, 2, "config: 2 flushes served"
    jmp report_summary

# eax = config offset -> eax, through whichever transport was chosen
cfg_read:
    cmp dword ptr [use_shm], 0
    je __cfg_read_legacy
    jmp vio_cfg_read32
__cfg_read_legacy:
    add eax, PROP_CONFIG
    jmp vl_in32

# ecx, edx, esi, edi = x, y, w, h -> eax = the status byte the device wrote (0xff: none)
flush:
    push edx
    mov [REQ], ecx
    mov [REQ+4], edx
    mov [REQ+8], esi
    mov [REQ+12], edi
    mov byte ptr [REQ+16], 0xff
    xor eax, eax
    mov edx, segs
    mov ecx, 2
    call vq_submit
    xor eax, eax
    call vq_poll
    movzx eax, byte ptr [REQ+16]
    pop edx
    ret

# The picture (see the top of this file): picture.inc's, at this mode.
draw:
    push eax
    push edx
    mov eax, [width]
    mov [pic_w], eax
    mov eax, [height]
    mov [pic_h], eax
    mov eax, [fb]
    mov edx, [stride]
    call pic_draw
    pop edx
    pop eax
    ret
