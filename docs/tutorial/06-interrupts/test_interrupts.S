# [uvirt]
# extra_params = -device edu
# groups = tutorial interrupts
#
# Lesson 6: an interrupt from a device.  QEMU's edu device computes a factorial and,
# with status bit 7 set, raises an interrupt when it is done.  We route it as a message
# signalled interrupt (MSI, PCI 3.0 §6.8.1): a 32-bit write of a vector number to the
# local APIC at 0xfee00000, which the CPU takes through its IDT.
.include "uvirt.inc"
.include "irq.inc"

.set VECTOR, 0x41

.align 4, 0
bar:       .long 0
bdf:       .long 0
delivered: .long 0

on_interrupt:                    # eax = vector, edx = the interrupt frame
    inc dword ptr [delivered]
    PUTS "interrupt, vector "
    call put_hex8
    mov esi, [bar]
    PUTS ", edu interrupt status "
    mov eax, [esi + 0x24]
    call put_hex32
    call put_nl
    mov [esi + 0x64], eax        # acknowledge what we saw
    call lapic_eoi               # end of interrupt: the APIC may deliver the next
    ret

main:
    mov eax, 0x11e81234
    call pci_find
    REQUIRE_FOUND "FAIL: no edu device (run with -device edu)"
    mov [bdf], eax
    mov edx, 0x10
    call pci_read32
    and eax, 0xfffffff0
    mov [bar], eax
    # the IDT: every vector has a stub; ours calls on_interrupt
    call idt_setup
    mov eax, VECTOR
    mov edx, on_interrupt
    call irq_set_handler
    # the 8259 interrupt controllers: the firmware left the timer (IRQ 0) unmasked, at
    # vector 8.  Move their vectors to 0x20-0x2f and mask every line: only our MSI
    # may interrupt the wait below
    mov eax, 0x20
    mov edx, 0x28
    call pic_init
    # find the MSI capability (id 05) and program it: address, data, enable
    mov eax, [bdf]
    mov edx, 0x34
    call pci_read8
    mov esi, eax
    mov eax, [bdf]
    mov edx, esi
    call pci_read8
    REPORT_EQ eax, 0x05, "the first capability is MSI"
    mov eax, [bdf]
    lea edx, [esi + 2]
    call pci_read16
    PUTS "MSI message control "
    call put_hex16
    call put_nl
    mov eax, [bdf]
    lea edx, [esi + 4]
    mov ecx, 0xfee00000          # message address: the local APIC, CPU 0
    call pci_write32
    lea edx, [esi + 8]
    xor ecx, ecx                 # address bits 63:32 (bit 7 of control: 64-bit capable)
    call pci_write32
    lea edx, [esi + 12]
    mov ecx, VECTOR              # message data: the vector
    call pci_write16
    lea edx, [esi + 2]
    mov ecx, 1                   # MSI enable
    call pci_write16
    mov edx, 4                   # an MSI is a memory write by the device: bus master on
    call pci_read16
    mov ecx, eax
    or ecx, 4
    mov eax, [bdf]
    call pci_write16
    # ask for the interrupt, start 5!, and wait for it with interrupts enabled
    mov esi, [bar]
    mov dword ptr [esi + 0x20], 0x80
    mov dword ptr [esi + 0x08], 5
    call irq_wait                # sti; hlt; cli: sleeps until the interrupt arrives
    REPORT_EQ [delivered], 1, "one interrupt was delivered"
    REPORT_EQ [esi + 0x08], 120, "5! = 120"
    REPORT_EQ [esi + 0x24], 0, "interrupt status acknowledged"
    call report_summary
    ret
