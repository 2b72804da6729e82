"""A boot sector guest program for real firmware (``-bios``): INT 13h reads from the
boot disk, printed on port 0xE9, then exit through isa-debug-exit (0xF4).

The disk (``disk_image``): sector s, byte i = (s * 7 + i) & 0xFF, except sector 0 (the
boot sector).  The program prints, numbers in hex:

    MBR dl=80                      the drive SeaBIOS booted from
    CHS c=0 h=0 s=2 cf ah bytes    AH=02 read of one sector (LBA 1), first 4 bytes
    EXT41 cf bx cx                 AH=41 extensions check
    LBA 5 cf ah bytes              AH=42 read of LBA 5
    LBA END cf ah                  AH=42 read of the sector one past the end: must fail

``pci_disk_image`` holds a second boot sector (``PCI_SOURCE``): it prints the whole
configuration space of every function on bus 0 as the firmware left it, read through
0xCF8/0xCFC with 32-bit accesses (a "bb:dd.f" line, then 16 lines of four dwords).
"""

from __future__ import annotations

SECTORS = 2048                     # 1 MiB

#: The print routines every boot sector here ends its code with: hex16/hex8 (AX/AL as
#: hex digits), putc (AL to the debug console, port 0xE9) and nl.
PRINT = r"""
hex16:
    push ax
    mov al, ah
    call hex8
    pop ax
hex8:
    push ax
    shr al, 4
    call hexd
    pop ax
    push ax
    and al, 0x0f
    call hexd
    pop ax
    ret
hexd:
    add al, 0x30
    cmp al, 0x39
    jbe hexd_out
    add al, 0x27
hexd_out:
putc:
    out 0xe9, al
    ret
nl:
    mov al, 0x0a
    jmp putc
"""

SOURCE = r"""
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7000
    mov [drive], dl
    mov si, s_mbr
    call puts
    mov al, dl
    call hex8
    call nl

    ; AH=02: CHS 0/0/2 -> 0x8000
    mov ax, 0x0201
    mov cx, 0x0002
    mov dh, 0
    mov dl, [drive]
    mov bx, 0x8000
    int 0x13
    mov si, s_chs
    call puts
    call result
    mov si, 0x8000
    call bytes4
    call nl

    ; AH=41: extensions
    mov ah, 0x41
    mov bx, 0x55aa
    mov dl, [drive]
    int 0x13
    mov si, s_ext
    call puts
    call cf
    mov ax, bx
    call hex16
    mov al, 0x20
    call putc
    mov ax, cx
    call hex16
    call nl

    ; AH=42: LBA 5 -> 0x8200
    mov dword ptr [dap_lba], 5
    call lba_read
    mov si, s_lba5
    call puts
    call result
    mov si, 0x8200
    call bytes4
    call nl

    ; AH=42: one past the end
    mov dword ptr [dap_lba], END_LBA
    call lba_read
    mov si, s_end
    call puts
    call result
    call nl

    mov al, 0
    out 0xf4, al
    hlt

lba_read:
    mov si, dap
    mov ah, 0x42
    mov dl, [drive]
    mov word ptr [dap_count], 1
    int 0x13
    ret

; prints "cf ah " from the flags and AH of the last call (flags saved first)
result:
    pushf
    push ax
    call cf
    pop ax
    popf
    push ax
    mov al, ah
    call hex8
    mov al, 0x20
    call putc
    pop ax
    ret

cf:
    pushf
    mov al, 0x30
    jnc cf_out
    mov al, 0x31
cf_out:
    call putc
    mov al, 0x20
    call putc
    popf
    ret

bytes4:
    mov cx, 4
b4_loop:
    lodsb
    call hex8
    loop b4_loop
    ret

""" + PRINT + r"""
puts:
    lodsb
    test al, al
    jz puts_out
    call putc
    jmp puts
puts_out:
    ret

drive: .byte 0
dap: .byte 0x10, 0
dap_count: .word 1
dap_buf: .word 0x8200, 0
dap_lba: .long 0, 0
s_mbr: .asciz "MBR dl="
s_chs: .asciz "CHS c=0 h=0 s=2 "
s_ext: .asciz "EXT41 "
s_lba5: .asciz "LBA 5 "
s_end: .asciz "LBA END "
"""


PCI_SOURCE = r"""
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7000
    xor bx, bx
fn_loop:
    xor di, di
    call cfg_read
    cmp ax, 0xffff
    je fn_next
    mov al, 0
    call hex8
    mov al, 0x3a
    call putc
    mov al, bl
    shr al, 3
    call hex8
    mov al, 0x2e
    call putc
    mov al, bl
    and al, 7
    call hexd
    call nl
dump:
    call cfg_read
    push eax
    shr eax, 16
    call hex16
    pop eax
    call hex16
    add di, 4
    test di, 15
    jz dump_nl
    mov al, 0x20
    call putc
    jmp dump_next
dump_nl:
    call nl
dump_next:
    cmp di, 256
    jb dump
fn_next:
    inc bx
    cmp bx, 256
    jb fn_loop
    mov al, 0
    out 0xf4, al
    hlt

cfg_read:
    mov eax, 0x800000
    or ax, bx
    shl eax, 8
    or ax, di
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    in eax, dx
    ret

""" + PRINT


MOUSE_SOURCE = r"""
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7000
    sti
    mov si, calls
next:
    lodsw
    test ax, ax
    jz done
    mov cx, ax
    lodsw
    mov bx, ax
    mov ax, cx
    xor cx, cx
    xor dx, dx
    push si
    int 0x15
    pop si
    pushf
    push ax
    mov al, 0x43
    call putc
    pop ax
    popf
    push ax
    mov al, 0x30
    adc al, 0
    call putc
    mov al, 0x20
    call putc
    pop ax
    mov al, ah
    call hex8
    mov al, 0x20
    call putc
    mov ax, bx
    call hex16
    mov al, 0x20
    call putc
    mov ax, cx
    call hex16
    mov al, 0x20
    call putc
    mov ax, dx
    call hex16
    call nl
    jmp next
done:
    cli
    mov al, 0
    out 0xf4, al
    hlt

""" + PRINT + r"""
calls:
    .word 0xc205, 0x0300
    .word 0xc201, 0x0000
    .word 0xc204, 0x0000
    .word 0xc206, 0x0000
    .word 0xc203, 0x0200
    .word 0xc202, 0x0600
    .word 0xc206, 0x0000
    .word 0xc200, 0x0100
    .word 0xc206, 0x0000
    .word 0xc200, 0x0000
    .word 0
"""


def mouse_disk_image(path) -> None:
    """A 1 MiB disk whose boot sector asks SeaBIOS's INT 15h C2 (the PS/2 mouse: init,
    reset, type, status, resolution, sample rate, enable, disable) and prints
    "C<cf> ah bx cx dx" after each call (MOUSE_SOURCE)."""
    _write_disk(path, _assemble(MOUSE_SOURCE))


def _assemble(src: str) -> bytes:
    from keystone import KS_ARCH_X86, KS_MODE_16, Ks
    # keystone's 16-bit mode: ';' comments are not understood
    src = "\n".join(line.split(";")[0] for line in src.splitlines())
    code, _ = Ks(KS_ARCH_X86, KS_MODE_16).asm(src, 0x7C00)
    code = bytes(code)
    if len(code) > 510:
        raise ValueError(f"boot sector too large: {len(code)} bytes")
    return code.ljust(510, b"\0") + b"\x55\xaa"


def _write_disk(path, sector0: bytes) -> None:
    """A disk of SECTORS sectors: ``sector0``, then zeros."""
    with open(path, "wb") as f:
        f.write(sector0 + bytes(SECTORS * 512 - 512))


def pci_disk_image(path) -> None:
    """A 1 MiB disk whose boot sector prints bus 0's configuration space (PCI_SOURCE)."""
    _write_disk(path, _assemble(PCI_SOURCE))


def boot_sector() -> bytes:
    return _assemble(SOURCE.replace("END_LBA", str(SECTORS)))


def disk_byte(sector: int, i: int) -> int:
    return (sector * 7 + i) & 0xFF


def disk_image(path) -> None:
    data = bytearray(boot_sector())
    for s in range(1, SECTORS):
        data += bytes(disk_byte(s, i) for i in range(512))
    with open(path, "wb") as f:
        f.write(data)
