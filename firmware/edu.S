# edu.S - QEMU's educational device (-device edu), register by register, as a course
# driver uses it: identification, liveness, factorial (polled and by interrupt), the
# interrupt status/raise/ack registers over INTx and MSI, DMA both ways with its
# address mask and bus mastering, and the access sizes and offsets the device rejects.
# Run with: -device edu.  Values are printed so a differential test compares them with
# QEMU 7.2 line for line (FW lines: firmware-chosen BAR address and interrupt line).
.include "uvirt.inc"
.include "irq.inc"

.set RAM_SRC, 0x200000
.set RAM_DST, 0x300000
.set RAM_ZERO, 0x380000
.set MSI_VECTOR, 0x51

.macro RD off
    mov eax, [edu_bar]
    mov eax, [eax+\off]
.endm
.macro WR off, val
    push eax
    push edx
    mov edx, \val
    mov eax, [edu_bar]
    mov [eax+\off], edx
    pop edx
    pop eax
.endm
.macro SHOW name, off
    PUTS \name
    PUTC ' '
    RD \off
    call put_hex32
    call put_nl
.endm
.macro SHOW_EAX name
    PUTS \name
    PUTC ' '
    call put_hex32
    call put_nl
.endm
# PCI status bit 3: the device's INTx level, whatever the PIC does with it
.macro SHOW_INTX name
    PUTS \name
    PUTS " intx "
    mov eax, [edu_bdf]
    mov edx, 6
    call pci_read16
    shr eax, 3
    and eax, 1
    call put_hex_digit
    call put_nl
.endm
# PCI command bit 2 (bus master) off (0) or on (1), the other bits kept (EAX, ECX, EDX changed)
.macro BUS_MASTER on
    mov eax, [edu_bdf]
    mov edx, 4
    call pci_read16
    mov ecx, eax
.if \on
    or ecx, 4
.else
    and ecx, 0xfffb
.endif
    mov eax, [edu_bdf]
    mov edx, 4
    call pci_write16
.endm
.macro FACT n
    WR 0x08, \n
    mov eax, [edu_bar]
    add eax, 0x20
    mov edx, 1
    mov ecx, 0
    call poll_mmio32
    REPORT_TRUE eax, "factorial \n finishes (status bit 0 clears)"
    PUTS "fact \n = "
    RD 0x08
    call put_hex32
    call put_nl
.endm
.macro DMA src, dst, cnt, cmd
    WR 0x80, \src
    WR 0x88, \dst
    WR 0x90, \cnt
    WR 0x98, \cmd
    call dma_wait
.endm

main:
    mov eax, 0x11e81234
    call pci_find
    REQUIRE_FOUND "FAIL: no edu device (run with -device edu)"
    mov [edu_bdf], eax
    call pci_put_ids
    call put_nl
    mov eax, [edu_bdf]
    mov edx, 0x10
    call pci_read32
    and eax, 0xfffffff0
    mov [edu_bar], eax
    PUTS "FW bar0 "
    call put_hex32
    call put_nl
    mov eax, [edu_bdf]
    mov edx, 0x3c
    call pci_read8
    mov [edu_line], eax
    PUTS "FW line "
    call put_hex8
    call put_nl
    mov eax, [edu_bdf]
    mov edx, 0x04
    call pci_read16
    SHOW_EAX "command"
    mov eax, [edu_bdf]
    mov edx, 0x10
    call pci_bar_probe
    call bar_size
    SHOW_EAX "bar0 size"
    mov eax, [edu_bdf]
    mov edx, 0x40
    call pci_read32
    SHOW_EAX "cap40"
    mov eax, [edu_bdf]
    mov edx, 0x44
    call pci_read32
    SHOW_EAX "cap44"

    PUTSN "-- registers"
    SHOW "ident", 0x00
    RD 0x00
    REPORT_EQ eax, 0x010000ed, "identification 0x010000ed"
    WR 0x04, 0x12345678
    RD 0x04
    REPORT_EQ eax, 0xedcba987, "liveness returns the inverse"
    WR 0x04, 0
    SHOW "liveness(0)", 0x04
    SHOW "status", 0x20
    SHOW "irq_status", 0x24
    SHOW "off 0x0c", 0x0c
    SHOW "off 0x10", 0x10
    SHOW "off 0x60", 0x60
    SHOW "off 0x64", 0x64
    SHOW "off 0x84", 0x84
    SHOW "off 0x8c", 0x8c
    SHOW "off 0x9c", 0x9c
    SHOW "off 0xa0", 0xa0
    SHOW "off 0xffffc", 0xffffc
    PUTSN "-- access sizes"
    mov eax, [edu_bar]
    movzx eax, byte ptr [eax]
    SHOW_EAX "byte read 0x00"
    mov eax, [edu_bar]
    movzx eax, word ptr [eax]
    SHOW_EAX "word read 0x00"
    mov eax, [edu_bar]
    mov eax, [eax+2]
    SHOW_EAX "dword read 0x02"
    mov eax, [edu_bar]
    movzx eax, byte ptr [eax+0x80]
    SHOW_EAX "byte read 0x80"
    WR 0x04, 0x0f0f0f0f
    mov eax, [edu_bar]
    mov byte ptr [eax+4], 0x55
    mov word ptr [eax+4], 0x5555
    SHOW "liveness after byte/word writes", 0x04
.ifdef EDU_QWORD
    # 8-byte accesses (SSE movq; CR4.OSFXSR on): below 0x80 a read gives all ones and
    # a write is ignored, from 0x80 on the DMA fields are 64 bits wide.  Built only with
    # EDU_QWORD=1: Unicorn 2.1.4 splits an 8-byte MMIO access into two 4-byte ones
    # (docs: README "Known differences"), so uvirt differs from QEMU here.
    mov eax, cr4
    or eax, 0x200
    mov cr4, eax
    mov eax, [edu_bar]
    movq xmm0, qword ptr [eax]
    movq qword ptr [qbuf], xmm0
    PUTS "qword read 0x00 "
    PUTHEX32 [qbuf+4]
    PUTHEX32 [qbuf]
    call put_nl
    mov dword ptr [qbuf], 0x11111111
    mov dword ptr [qbuf+4], 0x22222222
    movq xmm0, qword ptr [qbuf]
    mov eax, [edu_bar]
    movq qword ptr [eax+4], xmm0
    SHOW "liveness after qword write", 0x04
    mov dword ptr [qbuf], 0x89abcdef
    mov dword ptr [qbuf+4], 0x01234567
    movq xmm0, qword ptr [qbuf]
    mov eax, [edu_bar]
    movq qword ptr [eax+0x80], xmm0
    movq xmm1, qword ptr [eax+0x80]
    movq qword ptr [qbuf], xmm1
    PUTS "qword dma src "
    PUTHEX32 [qbuf+4]
    PUTHEX32 [qbuf]
    call put_nl
    SHOW "dword dma src", 0x80
    SHOW "dword dma src+4", 0x84
    WR 0x80, 0x1000
    mov eax, [edu_bar]
    movq xmm1, qword ptr [eax+0x80]
    movq qword ptr [qbuf], xmm1
    PUTS "dword write clears the high half "
    PUTHEX32 [qbuf+4]
    PUTHEX32 [qbuf]
    call put_nl
.endif

    PUTSN "-- factorial, polled"
    FACT 0
    FACT 1
    FACT 5
    FACT 10
    FACT 12
    FACT 13
    FACT 20
    FACT 33
    FACT 34
    FACT 0xffff
    WR 0x20, 0x81
    SHOW "status after writing 0x81", 0x20
    WR 0x20, 0x7f
    SHOW "status after writing 0x7f", 0x20

    PUTSN "-- interrupt status over INTx"
    WR 0x60, 0x1234
    SHOW "irq_status", 0x24
    SHOW_INTX "raise 0x1234"
    WR 0x64, 0x0004
    SHOW "irq_status", 0x24
    SHOW_INTX "ack 0x4"
    WR 0x64, 0xffffffff
    SHOW "irq_status", 0x24
    SHOW_INTX "ack all"
    WR 0x60, 0
    SHOW_INTX "raise 0"
    # deliver through the PIC: the line SeaBIOS routed
    call irq_init
    mov eax, [edu_line]
    add eax, 0x20               # master at 0x20, slave at 0x28: vector = 0x20 + line
    mov [edu_vector], eax
    mov edx, on_intx
    call irq_set_handler
    mov ecx, [edu_line]
    mov eax, 1
    shl eax, cl
    or eax, 0x4                 # the cascade
    not eax
    and eax, 0xffff
    call pic_set_mask
    WR 0x60, 0x40
    call irq_wait
    PUTSN "factorial with status bit 7"
    WR 0x20, 0x80
    WR 0x08, 6
    call irq_wait
    WR 0x20, 0

    PUTSN "-- DMA"
    mov edi, RAM_SRC
    mov ecx, 0
edu_fill:
    mov eax, ecx
    imul eax, eax, 7
    add eax, 3
    mov [edi+ecx], al
    inc ecx
    cmp ecx, 4096
    jb edu_fill
    # bus mastering off: the device reads zeros and its writes are lost
    BUS_MASTER 0
    mov dword ptr [RAM_ZERO], 0xdeadbeef
    DMA RAM_SRC, 0x40800, 16, 1
    DMA 0x40000, RAM_ZERO, 4, 3
    PUTS "no bus master: RAM keeps "
    PUTHEX32 [RAM_ZERO]
    call put_nl
    BUS_MASTER 1
    DMA 0x40800, RAM_ZERO, 16, 3
    PUTS "buffer read without bus master: "
    PUTHEX32 [RAM_ZERO]
    PUTC ' '
    PUTHEX32 [RAM_ZERO+12]
    call put_nl
    # RAM -> device, registers frozen while it runs
    WR 0x80, RAM_SRC
    WR 0x88, 0x40000
    WR 0x90, 256
    WR 0x98, 0xf1
    SHOW "cmd while running", 0x98
    WR 0x80, 0x1234
    WR 0x90, 1
    WR 0x98, 0x3
    SHOW "src while running", 0x80
    SHOW "cnt while running", 0x90
    call dma_wait
    SHOW "cmd after", 0x98
    DMA 0x40000, RAM_DST, 256, 3
    SHOW "cmd after", 0x98
    mov esi, RAM_DST
    mov ecx, 256
    call checksum
    SHOW_EAX "checksum of 256 bytes back"
    # the last 4095 bytes the range check allows
    DMA RAM_SRC, 0x40000, 4095, 1
    DMA 0x40000, RAM_DST, 4095, 3
    mov esi, RAM_DST
    mov ecx, 4095
    call checksum
    SHOW_EAX "checksum of 4095 bytes"
    # a RAM address beyond the 28-bit dma_mask is clamped (QEMU prints that)
    mov dword ptr [RAM_DST], 0
    DMA 0x40004, RAM_DST + 0x10000000, 4, 3
    PUTS "clamped destination got "
    PUTHEX32 [RAM_DST]
    call put_nl
    # a write to 0x98 without bit 0 is ignored
    WR 0x98, 0x6
    SHOW "cmd after writing 0x6", 0x98
    # with an interrupt
    DMA RAM_SRC, 0x40000, 8, 5
    PUTSN "DMA with bit 2"
    call irq_wait
    SHOW "irq_status after ack", 0x24

    PUTSN "-- MSI"
    mov edx, on_msi
    mov eax, MSI_VECTOR
    call irq_set_handler
    mov edx, on_msi
    mov eax, 0x50
    call irq_set_handler
    # INTx raised before MSI is enabled drops when MSI is enabled (msi_write_config)
    mov ax, 0xffff
    call pic_set_mask
    WR 0x60, 0x8
    SHOW_INTX "before MSI"
    mov eax, [edu_bdf]
    mov edx, 0x44
    mov ecx, 0xfee00000
    call pci_write32
    mov eax, [edu_bdf]
    mov edx, 0x48
    mov ecx, 0
    call pci_write32
    mov eax, [edu_bdf]
    mov edx, 0x4c
    mov ecx, MSI_VECTOR
    call pci_write16
    mov eax, [edu_bdf]
    mov edx, 0x42
    mov ecx, 0x0001
    call pci_write16
    SHOW_INTX "MSI enabled"
    mov eax, [edu_bdf]
    mov edx, 0x40
    call pci_read32
    SHOW_EAX "cap40"
    WR 0x64, 0xffffffff
    SHOW_INTX "acked with MSI on"
    mov dword ptr [msi_seen], 0
    WR 0x60, 0x2
    sti
    nop
    cli
    WR 0x60, 0
    sti
    nop
    cli
    PUTS "MSI messages "
    PUTHEX32 [msi_seen]
    call put_nl
    WR 0x64, 0x2
    # QSIZE beyond the one vector edu has is clamped back (msi_write_config)
    mov eax, [edu_bdf]
    mov edx, 0x42
    mov ecx, 0x0021
    call pci_write16
    mov eax, [edu_bdf]
    mov edx, 0x40
    call pci_read32
    SHOW_EAX "cap40 QSIZE 2"
    WR 0x60, 0x1
    sti
    nop
    cli
    WR 0x64, 0x1
    # no bus mastering: the message is lost
    BUS_MASTER 0
    mov dword ptr [msi_seen], 0
    WR 0x60, 0x1
    sti
    nop
    cli
    PUTS "MSI messages without bus master "
    PUTHEX32 [msi_seen]
    call put_nl
    WR 0x64, 0x1
    mov eax, [edu_bdf]
    mov edx, 0x42
    mov ecx, 0
    call pci_write16
    WR 0x64, 0
    SHOW_INTX "MSI off, ack 0"
    call report_summary
    ret

on_intx:
    PUTS "INTx vector "
    call put_hex8
    PUTS " irq_status "
    RD 0x24
    call put_hex32
    PUTS " fact "
    RD 0x08
    call put_hex32
    call put_nl
    RD 0x24
    WR 0x64, eax
    mov eax, [edu_line]
    call pic_eoi
    ret

on_msi:
    PUTS "MSI vector "
    call put_hex8
    PUTS " irq_status "
    RD 0x24
    call put_hex32
    call put_nl
    inc dword ptr [msi_seen]
    call lapic_eoi
    ret

# wait until the DMA command's bit 0 clears (QEMU: 100 ms of virtual time)
dma_wait:
    push eax
    push edx
    push ecx
    mov eax, [edu_bar]
    add eax, 0x98
    mov edx, 1
    mov ecx, 0
    call poll_mmio32
    REPORT_TRUE eax, "DMA finishes (command bit 0 clears)"
    pop ecx
    pop edx
    pop eax
    ret

# esi = address, ecx = length -> eax = sum of bytes * position, mod 2**32
checksum:
    push ebx
    push ecx
    push edx
    xor eax, eax
    xor edx, edx
edu_sum:
    movzx ebx, byte ptr [esi+edx]
    inc edx
    imul ebx, edx
    add eax, ebx
    cmp edx, ecx
    jb edu_sum
    pop edx
    pop ecx
    pop ebx
    ret

.align 8, 0
qbuf:       .long 0, 0
edu_bdf:    .long 0
edu_bar:    .long 0
edu_line:   .long 0
edu_vector: .long 0
msi_seen:   .long 0
