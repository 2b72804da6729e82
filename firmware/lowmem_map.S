# lowmem_map.S - QEMU's pc below 1 MiB without a VGA device: what the legacy VGA
# window (0xA0000-0xBFFFF) and the PAM segments (0xC0000-0xFFFFF) show.  Run with
#   -object memory-backend-ram,id=m,size=128K -device ivshmem-plain,memdev=m
# The ivshmem BARs are moved into the low megabyte: BAR2 (128 KiB of RAM) and BAR0
# (registers).  The i440FX decodes 0xA0000-0xBFFFF as PCI space unless SMRAM D_OPEN
# (0x72 bit 6) shows RAM there; each PAM nibble maps its segment to PCI space (0),
# read-only RAM (1: writes dropped) or RAM (2, 3).  In PCI space 0xC0000-0xDFFFF is
# QEMU's pc.rom and 0xE0000-0xFFFFF the BIOS (both over any BAR there).
#
# Prints (hex, no 0x):
#   PAM rr vv | SMRAM 72 vv            i440FX registers as the firmware left them
#   SEG aaaaa ro|rw                    a byte of each PAM segment written and read back
#   VGA ...                            BAR2 / BAR0 / RAM / nothing in the VGA window
#   PCIHOLE aaaaa pam vv hidden|visible  BAR2 placed under a PAM segment
.include "uvirt.inc"

.set IVS_ID, 0x11101af4
.set I440FX, 0

lm_bdf:  .long 0
lm_tmp:  .long 0

# eax = config offset -> eax = i440FX byte
lm_fx_read8:
    push edx
    mov edx, eax
    mov eax, I440FX
    call pci_read8
    pop edx
    ret

# eax = config offset, edx = value
lm_fx_write8:
    push ecx
    push edx
    mov ecx, edx
    mov edx, eax
    mov eax, I440FX
    call pci_write8
    pop edx
    pop ecx
    ret

# eax = command value for the ivshmem function
lm_cmd:
    push ecx
    push edx
    mov ecx, eax
    mov eax, [lm_bdf]
    mov edx, 4
    call pci_write16
    pop edx
    pop ecx
    ret

# eax = address for BAR2 (64-bit: high dword 0), decode off while moving
lm_bar2:
    push ecx
    push edx
    push eax
    xor eax, eax
    call lm_cmd
    pop ecx
    mov eax, [lm_bdf]
    mov edx, 0x18
    call pci_write32
    mov eax, [lm_bdf]
    mov edx, 0x1c
    xor ecx, ecx
    call pci_write32
    mov eax, 2
    call lm_cmd
    pop edx
    pop ecx
    ret

# eax = address for BAR0
lm_bar0:
    push ecx
    push edx
    mov ecx, eax
    mov eax, [lm_bdf]
    mov edx, 0x10
    call pci_write32
    pop edx
    pop ecx
    ret

# eax = segment address: prints "SEG aaaaa ro|rw" (a byte at +0x10 flipped, read back,
# restored)
lm_seg:
    push ebx
    push ecx
    mov ebx, eax
    PUTS "SEG "
    call put_hex24
    PUTC ' '
    mov cl, [ebx + 0x10]
    mov al, cl
    xor al, 0xff
    mov [ebx + 0x10], al
    mov al, [ebx + 0x10]
    mov [ebx + 0x10], cl
    cmp al, cl
    jne lm_seg_rw
    PUTSN "ro"
    jmp lm_seg_out
lm_seg_rw:
    PUTSN "rw"
lm_seg_out:
    pop ecx
    pop ebx
    ret

# eax = address, edx = PAM register, ecx = value: BAR2 at eax, PAM register = ecx,
# prints "PCIHOLE aaaaa pam vv hidden|visible" (visible: the BAR's first dword shows)
lm_hole:
    push ebx
    push esi
    mov ebx, eax
    mov eax, edx
    call lm_fx_read8
    mov esi, eax                 # old PAM value
    mov eax, ebx
    call lm_bar2
    mov eax, edx
    push edx
    mov edx, ecx
    call lm_fx_write8
    pop edx
    PUTS "PCIHOLE "
    mov eax, ebx
    call put_hex24
    PUTS " pam "
    mov eax, ecx
    call put_hex8
    mov eax, [ebx]
    cmp eax, 0x11223344
    jne lm_hole_hidden
    PUTSN " visible"
    jmp lm_hole_out
lm_hole_hidden:
    PUTSN " hidden"
lm_hole_out:
    mov eax, edx                 # PAM back as it was
    mov edx, esi
    call lm_fx_write8
    pop esi
    pop ebx
    ret

main:
    mov eax, IVS_ID
    call pci_find
    REQUIRE_FOUND "FAIL: no ivshmem device"
    mov [lm_bdf], eax

    mov ebx, 0x59
lm_pam_loop:
    PUTS "PAM "
    mov eax, ebx
    call put_hex8
    PUTC ' '
    mov eax, ebx
    call lm_fx_read8
    call put_hex8
    call put_nl
    inc ebx
    cmp ebx, 0x60
    jne lm_pam_loop
    PUTS "SMRAM 72 "
    mov eax, 0x72
    call lm_fx_read8
    call put_hex8
    call put_nl

    mov ebx, 0xc0000
lm_seg_loop:
    mov eax, ebx
    call lm_seg
    add ebx, 0x4000
    cmp ebx, 0x100000
    jne lm_seg_loop

    # BAR2 (RAM) over the whole VGA window
    mov eax, 0xa0000
    call lm_bar2
    mov dword ptr [0xa0000], 0x11223344
    mov dword ptr [0xbfffc], 0x55667788
    PUTS "VGA BAR2 a0000 "
    PUTHEX32 [0xa0000]
    PUTS " bfffc "
    PUTHEX32 [0xbfffc]
    call put_nl

    # SMRAM D_OPEN: RAM shows through
    mov eax, 0x72
    call lm_fx_read8
    mov [lm_tmp], eax
    mov edx, eax
    or edx, 0x40
    mov eax, 0x72
    call lm_fx_write8
    mov dword ptr [0xa0000], 0xcafebabe
    PUTS "VGA D_OPEN a0000 "
    PUTHEX32 [0xa0000]
    call put_nl
    mov eax, 0x72
    mov edx, [lm_tmp]
    call lm_fx_write8
    PUTS "VGA D_CLOSED a0000 "
    PUTHEX32 [0xa0000]
    call put_nl
    mov eax, 0x72
    mov edx, [lm_tmp]
    or edx, 0x40
    call lm_fx_write8
    PUTS "VGA RAM kept a0000 "
    PUTHEX32 [0xa0000]
    call put_nl
    mov eax, 0x72
    mov edx, [lm_tmp]
    call lm_fx_write8

    # nothing decodes the window: reads 0, writes vanish
    xor eax, eax
    call lm_cmd
    mov dword ptr [0xa0100], 0x99999999
    PUTS "VGA empty a0100 "
    PUTHEX32 [0xa0100]
    call put_nl

    # BAR0 (registers) in the window: IntrMask written and read back
    mov eax, 0xb0000
    call lm_bar0
    mov eax, 0x08000000          # BAR2 out of the way
    call lm_bar2
    mov dword ptr [0xb0000], 0x0000ffff
    PUTS "VGA BAR0 b0000 intrmask "
    PUTHEX32 [0xb0000]
    PUTS " ivposition "
    PUTHEX32 [0xb0008]
    call put_nl
    mov eax, 0xfebf0000
    call lm_bar0

    # BAR2 under the PAM segments: PCI space shows only where nothing is above it
    mov eax, 0xa0000
    call lm_bar2
    mov dword ptr [0xa0000], 0x11223344
    mov eax, 0xc0000
    mov edx, 0x5a
    mov ecx, 0x11
    call lm_hole
    mov eax, 0xc0000
    mov edx, 0x5a
    mov ecx, 0x00
    call lm_hole
    mov eax, 0xc0000
    mov edx, 0x5a
    mov ecx, 0x33
    call lm_hole
    mov eax, 0xe0000
    mov edx, 0x5e
    mov ecx, 0x00
    call lm_hole
    mov eax, 0xe0000
    mov edx, 0x5e
    mov ecx, 0x11
    call lm_hole

    xor eax, eax
    call lm_cmd
    PUTSN "DONE"
    ret
