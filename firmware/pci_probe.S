# pci_probe.S - differential probe of the PCI host bridge and every function on bus 0.
#
# Every line is "KEY fields..." with numbers in hex (no 0x).  Lines whose value the
# FIRMWARE chose (SeaBIOS on QEMU, uvirt's own set-up otherwise) start with "FW "; a
# comparison drops those lines and compares everything else, in order.  Sizing
# read-backs are device behaviour: they are not FW lines.
#
# Per present function (pci_next order):
#   FN bb:dd.f
#   ID vvvv:dddd rev rr class cccccc hdr hh
#   SUBSYS vvvv:dddd                    dword 0x2c
#   PIN p                               0 = none, 1 = INTA#
#   FW LINE ll                          interrupt line (firmware scratch register)
#   FW CMD cccc                         command register as found
#   STATUS ssss
#   FW BARn xxxxxxxx                    n = 0..5 (type 0) / 0..1 (type 1), raw dwords
#   FW ROM xxxxxxxx                     type 0 only
#   BARn on lo hi                       read-back after writing all ones with the decode
#                                       bits as found; hi = read-back of the upper dword
#                                       of a 64-bit memory BAR, else 00000000
#   ROM on lo                           ROM written with orig|fffff800 (enable kept)
#   CMD off cccc                        command after clearing bits 0/1 (Linux sizing)
#   BARn off lo hi / ROM off lo         the same sizing with decode off
#   PASS/FAIL: BARs, ROM and command restored
#   CAPPTR pp | CAPS none               status bit 4 clear -> "CAPS none"
#   CAP oo id ii next nn                each capability (at most 48, Linux's TTL)
#   CAPRAW oo dddddddd ...              its raw dwords: vendor (09): ceil(len/4),
#                                       MSI-X (11): 3, MSI (05): 6, PM (01): 2,
#                                       PCIe (10): 15, others: 4
# Host bridge (HB) and unclaimed resources, after the functions:
#   HB cf8 w32 vvvvvvvv r32 vvvvvvvv    0xCF8 read-back of a written dword
#   HB cf8 after cfb w8 01: vvvvvvvv    a byte write to 0xCFB (Linux's type-1 probe)
#   HB cf8 r8 cf8 xx cf9 xx cfa xx cfb xx / HB cf8 r16 cf8 xxxx cfa xxxx
#   HB disabled r32 xxxxxxxx r8 xx      data port with the enable bit clear
#   HB absent bus1 xxxxxxxx / HB absent slot31 xxxxxxxx
#   HB lane pp r8 xx r16 xxxx r32 xxxxxxxx   00:00.0 offset 0 read at port 0xCFC+lane
#   UNCLAIMED io 0300 r8 xx r16 xxxx r32 xxxxxxxx
#   UNCLAIMED mem e0000000 r8 xx r16 xxxx r32 xxxxxxxx
# and a SUMMARY line (report-style checks: restore, 0xCF8 read-back, Linux probe).
.include "uvirt.inc"

.ifndef UNCLAIMED_PORT
.set UNCLAIMED_PORT, 0x300              # inside 0x1f8-0x375: nothing there on pc -nodefaults
.endif
.ifndef UNCLAIMED_MMIO
.set UNCLAIMED_MMIO, 0xe0000000         # PCI hole, no BAR there
.endif

main:
    mov ebx, 0xffffffff
probe_loop:
    mov eax, ebx
    call pci_next
    cmp eax, 0xffffffff
    je probe_hb
    mov ebx, eax
    call probe_function
    jmp probe_loop
probe_hb:
    call probe_host_bridge
    call probe_unclaimed
    call report_summary                 # exits

# ---------------------------------------------------------------- one function
# ebx = bdf
probe_function:
    pushad
    PUTS "FN "
    mov eax, ebx
    call put_bdf
    call put_nl

    PUTS "ID "
    mov eax, ebx
    call pci_put_ids
    mov [hdr_type], eax
    call put_nl

    PUTS "SUBSYS "
    mov eax, ebx
    mov edx, 0x2c
    call pci_read32
    call put_hex16
    PUTC ':'
    shr eax, 16
    call put_hex16
    call put_nl

    mov edx, 0x3d
    PUTS "PIN "
    mov eax, ebx
    call pci_read8
    call put_hex_digit
    call put_nl
    mov edx, 0x3c
    PUTS "FW LINE "
    mov eax, ebx
    call pci_read8
    call put_hex8
    call put_nl
    mov edx, 0x04
    PUTS "FW CMD "
    mov eax, ebx
    call pci_read16
    mov [saved_cmd], eax
    call put_hex16
    call put_nl
    mov edx, 0x06
    PUTS "STATUS "
    mov eax, ebx
    call pci_read16
    mov [status], eax
    call put_hex16
    call put_nl

    # BAR count from the header layout: 6 (type 0), 2 (type 1), 0 otherwise
    mov eax, [hdr_type]
    and eax, 0x7f
    xor ecx, ecx
    cmp eax, 0
    jne pf_not0
    mov ecx, 6
pf_not0:
    cmp eax, 1
    jne pf_nbars
    mov ecx, 2
pf_nbars:
    mov [nbars], ecx

    # original values (firmware-chosen)
    xor esi, esi
pf_save_loop:
    cmp esi, [nbars]
    jae pf_save_rom
    lea edx, [esi*4+0x10]
    mov eax, ebx
    call pci_read32
    mov [saved_bars+esi*4], eax
    PUTS "FW BAR"
    push eax
    mov eax, esi
    call put_hex_digit
    pop eax
    PUTC ' '
    call put_hex32
    call put_nl
    inc esi
    jmp pf_save_loop
pf_save_rom:
    call has_rom
    jz pf_size_on
    mov eax, ebx
    mov edx, 0x30
    call pci_read32
    mov [saved_rom], eax
    PUTS "FW ROM "
    call put_hex32
    call put_nl

pf_size_on:
    mov eax, msg_on
    call size_all

    # Linux-style: clear I/O and memory decode, size, restore the command
    mov ecx, [saved_cmd]
    and ecx, 0xfffc
    mov eax, ebx
    mov edx, 0x04
    call pci_write16
    PUTS "CMD off "
    call pci_read16
    call put_hex16
    call put_nl
    mov eax, msg_off
    call size_all
    mov eax, ebx
    mov edx, 0x04
    mov ecx, [saved_cmd]
    call pci_write16

    # everything must read back as it was found
    xor edi, edi                        # mismatches
    xor esi, esi
pf_verify_loop:
    cmp esi, [nbars]
    jae pf_verify_rom
    lea edx, [esi*4+0x10]
    mov eax, ebx
    call pci_read32
    cmp eax, [saved_bars+esi*4]
    je pf_verify_next
    inc edi
pf_verify_next:
    inc esi
    jmp pf_verify_loop
pf_verify_rom:
    call has_rom
    jz pf_verify_cmd
    mov eax, ebx
    mov edx, 0x30
    call pci_read32
    cmp eax, [saved_rom]
    je pf_verify_cmd
    inc edi
pf_verify_cmd:
    mov eax, ebx
    mov edx, 0x04
    call pci_read16
    cmp eax, [saved_cmd]
    je pf_verified
    inc edi
pf_verified:
    REPORT_EQ edi, 0, "BARs, ROM and command restored"

    call probe_caps
    popad
    ret

# ZF clear when the function has a type-0 ROM BAR at 0x30 (header type 0)
has_rom:
    push eax
    mov eax, [hdr_type]
    and eax, 0x7f
    cmp eax, 0
    pop eax
    jne has_rom_no
    or esp, esp                         # ZF = 0 (esp is never 0)
    ret
has_rom_no:
    cmp eax, eax                        # ZF = 1
    ret

# ebx = bdf, eax = mode string ("on"/"off"): "BARn <mode> lo hi" and "ROM <mode> lo"
size_all:
    pushad
    mov ebp, eax
    xor esi, esi
sa_loop:
    cmp esi, [nbars]
    jae sa_rom
    lea edx, [esi*4+0x10]
    mov eax, ebx
    call pci_bar_probe
    PUTS "BAR"
    push eax
    mov eax, esi
    call put_hex_digit
    PUTC ' '
    mov eax, ebp
    call puts
    PUTC ' '
    pop eax
    call put_hex32
    PUTC ' '
    mov eax, edx
    call put_hex32
    call put_nl
    mov eax, [saved_bars+esi*4]
    and eax, 7
    cmp eax, 4                          # 64-bit memory BAR: skip its upper half
    jne sa_next
    inc esi
sa_next:
    inc esi
    jmp sa_loop
sa_rom:
    call has_rom
    jz sa_out
    mov eax, ebx
    mov edx, 0x30
    call pci_bar_probe
    PUTS "ROM "
    push eax
    mov eax, ebp
    call puts
    pop eax
    PUTC ' '
    call put_hex32
    call put_nl
sa_out:
    popad
    ret

# ebx = bdf: capability chain with raw dwords
probe_caps:
    pushad
    test dword ptr [status], 0x10
    jnz pc_have
    PUTSN "CAPS none"
    jmp pc_out
pc_have:
    mov eax, ebx
    mov edx, 0x34
    call pci_read8
    mov esi, eax
    PUTS "CAPPTR "
    call put_hex8
    call put_nl
    mov edi, 48                         # Linux's TTL against looping lists
pc_loop:
    and esi, 0xfc
    cmp esi, 0x40
    jb pc_out
    mov eax, ebx
    mov edx, esi
    call pci_read32                     # id | next<<8 | byte2<<16
    mov ebp, eax
    PUTS "CAP "
    mov eax, esi
    call put_hex8
    PUTS " id "
    mov eax, ebp
    call put_hex8
    PUTS " next "
    shr eax, 8
    call put_hex8
    call put_nl
    # dword count by capability id
    mov eax, ebp
    and eax, 0xff
    mov ecx, 4
    cmp eax, 0x11
    jne pc_not_msix
    mov ecx, 3
pc_not_msix:
    cmp eax, 0x05
    jne pc_not_msi
    mov ecx, 6
pc_not_msi:
    cmp eax, 0x01
    jne pc_not_pm
    mov ecx, 2
pc_not_pm:
    cmp eax, 0x10
    jne pc_not_pcie
    mov ecx, 15
pc_not_pcie:
    cmp eax, 0x09
    jne pc_raw
    mov ecx, ebp
    shr ecx, 16
    and ecx, 0xff                       # cap_len
    add ecx, 3
    shr ecx, 2
    jnz pc_raw_clamp
    mov ecx, 1
pc_raw_clamp:
    cmp ecx, 16
    jbe pc_raw
    mov ecx, 16
pc_raw:
    PUTS "CAPRAW "
    mov eax, esi
    call put_hex8
    mov edx, esi
pc_raw_loop:
    cmp edx, 0x100
    jae pc_raw_done                     # never read past the 256-byte space
    PUTC ' '
    mov eax, ebx
    call pci_read32
    call put_hex32
    add edx, 4
    dec ecx
    jnz pc_raw_loop
pc_raw_done:
    call put_nl
    mov esi, ebp
    shr esi, 8
    and esi, 0xff
    dec edi
    jnz pc_loop
pc_out:
    popad
    ret

# ---------------------------------------------------------------- host bridge
.macro CF8_RT value
    mov eax, \value
    call cf8_roundtrip
.endm

probe_host_bridge:
    pushad
    CF8_RT 0x80000000
    REPORT_EQ eax, 0x80000000, "0xCF8 reads back 80000000"
    CF8_RT 0x12345678
    CF8_RT 0xffffffff
    CF8_RT 0x80fffffc
    CF8_RT 0x00000000

    # Linux's type-1 probe (arch/x86/pci/direct.c): byte 01 to 0xCFB, then check 0xCF8
    mov edx, 0xcf8
    mov eax, 0x80000000
    out dx, eax
    mov edx, 0xcfb
    mov al, 1
    out dx, al
    mov edx, 0xcf8
    in eax, dx
    PUTS "HB cf8 after cfb w8 01: "
    call put_hex32
    call put_nl
    REPORT_EQ eax, 0x80000000, "byte write to 0xCFB leaves 0xCF8 alone"

    # narrow reads of the address register (0xCF9 is PIIX3's reset control: read only)
    mov edx, 0xcf8
    mov eax, 0x80123454
    out dx, eax
    PUTS "HB cf8 r8"
    mov ecx, 0xcf8
hb_r8_loop:
    PUTC ' '
    mov eax, ecx
    call put_hex16
    PUTC ' '
    mov edx, ecx
    in al, dx
    call put_hex8
    inc ecx
    cmp ecx, 0xcfc
    jb hb_r8_loop
    call put_nl
    mov edx, 0xcf8
    mov eax, 0x80123454
    out dx, eax
    PUTS "HB cf8 r16 cf8 "
    in ax, dx
    call put_hex16
    PUTS " cfa "
    mov edx, 0xcfa
    in ax, dx
    call put_hex16
    call put_nl

    # data port with the enable bit clear (address of 00:00.0 reg 0 otherwise)
    mov edx, 0xcf8
    xor eax, eax
    out dx, eax
    PUTS "HB disabled r32 "
    mov edx, 0xcfc
    in eax, dx
    call put_hex32
    PUTS " r8 "
    mov edx, 0xcfd
    in al, dx
    call put_hex8
    call put_nl

    PUTS "HB absent bus1 "
    mov eax, 0x0100                     # 01:00.0
    xor edx, edx
    call pci_read32
    call put_hex32
    call put_nl
    PUTS "HB absent slot31 "
    mov eax, 0x00f8                     # 00:1f.0
    call pci_read32
    call put_hex32
    call put_nl

    # the same register (00:00.0 offset 0) through every lane at every width
    mov ecx, 0xcfc
hb_lane_loop:
    mov edx, 0xcf8
    mov eax, 0x80000000
    out dx, eax
    PUTS "HB lane "
    mov eax, ecx
    sub eax, 0xcfc
    call put_hex8
    mov edx, ecx
    call put_port_widths
    inc ecx
    cmp ecx, 0xd00
    jb hb_lane_loop
    popad
    ret

# edx = port: reads it at each width, prints " r8 .. r16 .... r32 ........" and a newline
put_port_widths:
    push eax
    PUTS " r8 "
    in al, dx
    call put_hex8
    PUTS " r16 "
    in ax, dx
    call put_hex16
    PUTS " r32 "
    in eax, dx
    call put_hex32
    call put_nl
    pop eax
    ret

# eax = value: write it to 0xCF8, read back; prints "HB cf8 w32 v r32 r"; eax = read-back
cf8_roundtrip:
    push edx
    PUTS "HB cf8 w32 "
    call put_hex32
    mov edx, 0xcf8
    out dx, eax
    in eax, dx
    PUTS " r32 "
    call put_hex32
    call put_nl
    pop edx
    ret

# ---------------------------------------------------------------- unclaimed resources
probe_unclaimed:
    pushad
    PUTS "UNCLAIMED io "
    mov eax, UNCLAIMED_PORT
    call put_hex16
    mov edx, UNCLAIMED_PORT
    call put_port_widths
    PUTS "UNCLAIMED mem "
    mov eax, UNCLAIMED_MMIO
    call put_hex32
    PUTS " r8 "
    mov eax, UNCLAIMED_MMIO
    call mmio_read8
    call put_hex8
    PUTS " r16 "
    mov eax, UNCLAIMED_MMIO
    call mmio_read16
    call put_hex16
    PUTS " r32 "
    mov eax, UNCLAIMED_MMIO
    call mmio_read32
    call put_hex32
    call put_nl
    popad
    ret

# ---------------------------------------------------------------- data
msg_on:  .asciz "on"
msg_off: .asciz "off"
.align 4, 0
hdr_type:   .long 0
nbars:      .long 0
status:     .long 0
saved_cmd:  .long 0
saved_rom:  .long 0
saved_bars: .long 0, 0, 0, 0, 0, 0
