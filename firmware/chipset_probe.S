# chipset_probe.S - the pc chipset pieces firmware programs, as a guest finds them after
# the firmware and as they answer it: CMOS/RTC (0x70/0x71), PM timer (PMBA + 8), port
# 0x92, APM (0xB2/0xB3), i8042 (0x60/0x64), the 8237 DMA registers, COM1 (0x3F8).
# Run with "-serial file:F" for a UART at COM1 (without it 0x3F8 reads all ones).
#
# Prints (hex, no 0x); time-dependent values are only compared, never printed:
#   CMOS rr vv           CMOS bytes the firmware and pc_cmos_init leave
#   RTC ...              the clock frozen with SET and read in each mode
#   PMTMR ...            whether the PM timer advances, and its 24-bit wrap
#   P92 / APM / KBC / DMA / COM1 ...   register read-backs
.include "uvirt.inc"

.set CMOS_IDX, 0x70
.set CMOS_DATA, 0x71

# al = index -> al = CMOS byte (NMI stays disabled, as SeaBIOS leaves it)
cmos_rd:
    or al, 0x80
    out CMOS_IDX, al
    in al, CMOS_DATA
    ret

# al = index, ah = value
cmos_wr:
    or al, 0x80
    out CMOS_IDX, al
    mov al, ah
    out CMOS_DATA, al
    ret

# ebx = index: prints "CMOS rr vv"
put_cmos:
    PUTS "CMOS "
    mov eax, ebx
    call put_hex8
    PUTC ' '
    mov eax, ebx
    call cmos_rd
    movzx eax, al
    call put_hex8
    call put_nl
    ret

# prints " hh:mm:ss" of the frozen clock (raw register bytes)
put_time:
    PUTC ' '
    mov al, 4
    call cmos_rd
    movzx eax, al
    call put_hex8
    PUTC ':'
    mov al, 2
    call cmos_rd
    movzx eax, al
    call put_hex8
    PUTC ':'
    mov al, 0
    call cmos_rd
    movzx eax, al
    call put_hex8
    ret

# i8042: wait for input buffer empty, send al to port dx
kbc_send:
    push ecx
    push eax
    mov ecx, 100000
kbc_send_wait:
    in al, 0x64
    test al, 2
    jz kbc_send_go
    loop kbc_send_wait
kbc_send_go:
    pop eax
    out dx, al
    pop ecx
    ret

# -> eax = next output byte, or 0x100 + status if none arrives
kbc_recv:
    push ecx
    mov ecx, 100000
kbc_recv_wait:
    in al, 0x64
    test al, 1
    jnz kbc_recv_got
    loop kbc_recv_wait
    movzx eax, al
    or eax, 0x100
    pop ecx
    ret
kbc_recv_got:
    in al, 0x60
    movzx eax, al
    pop ecx
    ret

main:
    # ---- CMOS bytes
    mov ebx, 0x0a
cmos_loop:
    cmp ebx, 0x0c
    je cmos_skip
    call put_cmos
cmos_skip:
    inc ebx
    cmp ebx, 0x40
    jne cmos_loop
    mov ebx, 0x5b
cmos_loop2:
    call put_cmos
    inc ebx
    cmp ebx, 0x60
    jne cmos_loop2
    PUTS "CMOS idx read "
    in al, CMOS_IDX
    movzx eax, al
    call put_hex8
    call put_nl

    # ---- RTC: freeze with SET, write 23:59:58 BCD 24 h, read back in each format
    mov al, 0x0b
    call cmos_rd
    mov bl, al                      # old REG_B
    mov ah, 0x82
    mov al, 0x0b
    call cmos_wr
    mov ax, 0x2300 | 4
    call cmos_wr
    mov ax, 0x5900 | 2
    call cmos_wr
    mov ax, 0x5800 | 0
    call cmos_wr
    PUTS "RTC bcd24"
    call put_time
    call put_nl
    mov ax, 0x8600 | 0x0b           # SET | DM | 24h: the registers keep their bytes
    call cmos_wr
    PUTS "RTC dm24 "
    mov al, 0x0b
    call cmos_rd
    movzx eax, al
    call put_hex8
    call put_time
    call put_nl
    mov ax, 0x8000 | 0x0b           # SET, BCD, 12 h
    call cmos_wr
    mov ax, 0x9100 | 4              # 11 PM
    call cmos_wr
    PUTS "RTC bcd12"
    call put_time
    call put_nl
    mov ax, 0x0200 | 0x0b           # run again (24 h BCD), then stop at once
    call cmos_wr
    mov ax, 0x8200 | 0x0b
    call cmos_wr
    PUTS "RTC restart hour "
    mov al, 4
    call cmos_rd
    movzx eax, al
    call put_hex8
    call put_nl
    mov ah, bl
    and ah, 0x7f
    mov al, 0x0b
    call cmos_wr
    PUTS "RTC regc "
    mov al, 0x0c
    call cmos_rd
    mov al, 0x0c
    call cmos_rd
    movzx eax, al
    call put_hex8
    PUTS " regd "
    mov al, 0x0d
    call cmos_rd
    movzx eax, al
    call put_hex8
    call put_nl

    # ---- PM timer (PIIX4 PMBA from config 0x40)
    mov eax, 0x0b               # 00:01.3
    mov edx, 0x40
    call pci_read32
    and eax, 0xffc0
    lea edx, [eax + 8]
    PUTS "PMBA "
    call put_hex16
    in eax, dx
    mov ebx, eax
    mov ecx, 200000
pm_spin:
    in eax, dx
    cmp eax, ebx
    jne pm_moved
    loop pm_spin
pm_moved:
    PUTS " moves "
    cmp eax, ebx
    setne al
    movzx eax, al
    call put_hex8
    PUTS " 24bit "
    in eax, dx
    shr eax, 24
    call put_hex8
    call put_nl

    # ---- port 0x92, APM
    PUTS "P92 "
    in al, 0x92
    movzx eax, al
    call put_hex8
    PUTS " APM "
    mov al, 0x5a
    out 0xb3, al
    in al, 0xb3
    movzx eax, al
    call put_hex8
    PUTC ' '
    in al, 0xb2
    movzx eax, al
    call put_hex8
    call put_nl

    # ---- i8042
    PUTS "KBC status "
    in al, 0x64
    movzx eax, al
    and eax, 0xfd
    call put_hex8
    mov edx, 0x64
    mov al, 0x20
    call kbc_send
    PUTS " cmdbyte "
    call kbc_recv
    call put_hex16
    mov al, 0xaa
    call kbc_send
    PUTS " selftest "
    call kbc_recv
    call put_hex16
    mov al, 0xab
    call kbc_send
    PUTS " kbdtest "
    call kbc_recv
    call put_hex16
    mov edx, 0x60
    mov al, 0xee
    call kbc_send
    PUTS " echo "
    call kbc_recv
    call put_hex16
    mov al, 0xf2
    call kbc_send
    PUTS " id "
    call kbc_recv
    call put_hex16
    call kbc_recv
    call put_hex16
    call kbc_recv
    call put_hex16
    call put_nl

    # ---- the PS/2 mouse behind it (0xD4 sends a byte to it)
    PUTS "MOUSE"
    mov esi, mouse_cmds
mouse_loop:
    movzx ebx, byte ptr [esi]           # bytes to send, then how many answers to read
    test ebx, ebx
    jz mouse_done
    inc esi
mouse_send:
    mov edx, 0x64
    mov al, 0xd4
    call kbc_send
    mov edx, 0x60
    mov al, [esi]
    call kbc_send
    inc esi
    dec ebx
    jnz mouse_send
    PUTS " |"
    movzx ebx, byte ptr [esi]
    inc esi
    test ebx, ebx
    jz mouse_loop
    PUTS " st "
    in al, 0x64
    movzx eax, al
    and eax, 0xfd
    call put_hex8
mouse_recv:
    PUTC ' '
    call kbc_recv
    call put_hex16
    dec ebx
    jnz mouse_recv
    jmp mouse_loop
mouse_done:
    call put_nl

    # ---- 8237
    PUTS "DMA mask "
    in al, 0x09
    movzx eax, al
    call put_hex8
    PUTC ' '
    in al, 0xd2
    movzx eax, al
    call put_hex8
    out 0x0c, al
    mov al, 0x34
    out 0x02, al
    mov al, 0x12
    out 0x02, al
    out 0x0c, al
    in al, 0x02
    mov ah, al
    in al, 0x02
    xchg al, ah
    PUTS " ch1addr "
    movzx eax, ax
    call put_hex16
    mov al, 0x56
    out 0x83, al
    PUTS " page "
    in al, 0x83
    movzx eax, al
    call put_hex8
    PUTS " w81 "
    in ax, 0x82
    movzx eax, ax
    call put_hex16
    PUTS " l81 "
    in eax, 0x81
    call put_hex32
    call put_nl

    # ---- COM1
    mov edx, 0x3f8
    PUTS "COM1"
    mov ecx, 8
    xor ebx, ebx
com_loop:
    PUTC ' '
    lea edx, [0x3f8 + ebx]
    in al, dx
    movzx eax, al
    call put_hex8
    inc ebx
    loop com_loop
    mov edx, 0x3f9
    mov al, 0x02
    out dx, al
    mov edx, 0x3fa
    PUTS " thri "
    in al, dx
    movzx eax, al
    call put_hex8
    PUTC ' '
    in al, dx
    movzx eax, al
    call put_hex8
    mov edx, 0x3f9
    xor eax, eax
    out dx, al
    mov edx, 0x3ff
    mov al, 0xa5
    out dx, al
    PUTS " scr "
    in al, dx
    movzx eax, al
    call put_hex8
    call put_nl
    PUTSN "DONE"
    ret

# the mouse session: count, bytes sent through 0xD4, answers expected
mouse_cmds:
    .byte 1, 0xff, 3                    # reset: FA AA 00
    .byte 1, 0xf2, 2                    # type: FA 00
    .byte 1, 0xe9, 4                    # status: FA, status, resolution 2, rate 100
    .byte 6, 0xf3, 200, 0xf3, 100, 0xf3, 80, 6      # the IMPS/2 knock: FA each
    .byte 1, 0xf2, 2                    # type 3 now
    .byte 5, 0xe8, 3, 0xe7, 0xf0, 0xf4, 5           # resolution 3, 2:1, remote, enable
    .byte 1, 0xe9, 4
    .byte 1, 0xeb, 5                    # poll: FA and a 4-byte packet without motion
    .byte 3, 0xee, 0x55, 0xec, 3        # wrap mode: 0x55 echoes, 0xEC ends it
    .byte 4, 0xe6, 0xea, 0xf5, 0xf6, 4  # 1:1, stream, disable, defaults
    .byte 1, 0xe9, 4
    .byte 0

