# [uvirt]
# extra_params = -device virtio-rng-pci -device edu
# groups = tutorial pci
#
# Lesson 2: find every PCI function on bus 0 through configuration mechanism #1.
.include "uvirt.inc"

# eax = bus/device/function/offset packed as below -> eax = the config dword
#   0x80000000 | bus << 16 | device << 11 | function << 8 | (offset & 0xfc)
cfg_read:
    push edx
    mov dx, 0xcf8                # CONFIG_ADDRESS: which function, which register
    out dx, eax
    mov dx, 0xcfc                # CONFIG_DATA: the register itself
    in eax, dx
    pop edx
    ret

main:
    xor ebx, ebx                 # ebx = device << 11 | function << 8
next_function:
    mov eax, ebx
    or eax, 0x80000000           # enable bit, bus 0, offset 0: vendor | device << 16
    call cfg_read
    cmp ax, 0xffff               # nobody answers: all ones (a master abort)
    je skip
    mov esi, eax
    PUTS "00:"
    mov eax, ebx
    shr eax, 11
    call put_hex8                # device number
    PUTC '.'
    mov eax, ebx
    shr eax, 8
    and eax, 7
    call put_hex_digit           # function number
    PUTC ' '
    movzx eax, si
    call put_hex16               # vendor id
    PUTC ':'
    mov eax, esi
    shr eax, 16
    call put_hex16               # device id
    PUTS " class "
    mov eax, ebx
    or eax, 0x80000008           # offset 8: revision | class code << 8
    call cfg_read
    shr eax, 8
    call put_hex24
    call put_nl
skip:
    # function 0 of a device whose header type has bit 7 clear has no functions 1-7
    test ebx, 0x700
    jnz advance
    mov eax, ebx
    or eax, 0x8000000c           # offset 0x0c: header type in bits 23:16
    call cfg_read
    test eax, 0x00800000
    jnz advance
    add ebx, 0x700               # skip functions 1..7
advance:
    add ebx, 0x100
    cmp ebx, 0x10000             # 32 devices x 8 functions
    jb next_function

    mov eax, 0x10051af4
    call pci_find                # the library's version of the same walk: bdf or -1
    cmp eax, 0xffffffff
    setne al
    movzx eax, al
    REPORT_TRUE eax, "pci_find finds the virtio entropy device 1af4:1005"
    call report_summary
    ret
