"""The local APIC of QEMU's TCG CPU (``hw/intc/apic.c``, ``apic_common.c``, QEMU 7.2),
enough for MSI/MSI-X delivery and for what a guest reads.

Window: ``apic-msi``, 1 MiB at 0xFEE00000 over everything else (QEMU's region is
``APIC_SPACE_SIZE`` = 1 MiB, priority 0x1000).  Accesses narrower than 32 bits read 0
and are dropped.  A 32-bit write with offset > 0xFFF or register index 0 is an MSI
message (address = offset, data = value): destination ID in address bits 19:12,
destination mode in bit 2, vector in data bits 7:0, delivery mode in 10:8, trigger in 15.
That is also how a device's MSI arrives: ``PciBus.msi_write`` stores through the memory map.

Measured on QEMU 7.2 (tests/guest/test_interrupts.py): a vector below 16 is accepted,
sets IRR and is delivered like any other (no ESR error); a message to destination 1 or
in logical mode (LDR is 0) reaches nobody; with SVR bit 8 clear an MSI sets IRR but is
never delivered.  Unknown registers read 0 and set ESR bit 7 (illegal register address).

The PIC reaches the CPU through LINT0 (ExtINT) and takes precedence over APIC vectors,
as ``apic_get_interrupt``.  Not modelled: the APIC timer counts (its registers are
storage), LINT0/LINT1 in fixed/NMI modes, IPIs other than a fixed self-IPI, the APIC
base MSR (always 0xFEE00900: enabled, BSP).
"""

from __future__ import annotations

from typing import Callable

APIC_BASE = 0xFEE00000
APIC_SPACE_SIZE = 0x100000
APIC_VERSION = 0x14
APIC_LVT_NB = 6
LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR = range(6)
LVT_MASKED = 1 << 16
SV_ENABLE = 1 << 8
ESR_ILLEGAL_ADDRESS = 1 << 7
DM_FIXED, DM_LOWPRI, DM_SMI, DM_NMI, DM_INIT, DM_SIPI, DM_EXTINT = 0, 1, 2, 4, 5, 6, 7


def _highest(bits: int) -> int:
    return bits.bit_length() - 1          # -1 when empty


class LocalApic:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = (
        "id", "apicbase", "tpr", "spurious_vec", "log_dest", "dest_mode", "isr", "tmr", "irr",
        "esr", "icr", "lvt", "divide_conf", "initial_count",
    )

    def __init__(self) -> None:
        #: Called when an APIC interrupt may have become pending (IRR/ISR/TPR/SVR changed).
        self.on_change: Callable[[], None] = lambda: None
        #: register-window accesses so far (InterruptController.touched; not guest state)
        self.accesses = 0
        self.reset()

    def reset(self) -> None:
        """``apic_reset_common`` for the BSP: LINT0 = ExtINT (0x700), all else masked."""
        self.id = 0
        self.apicbase = APIC_BASE | 0x900
        self.tpr = 0
        self.spurious_vec = 0xFF
        self.log_dest = 0
        self.dest_mode = 0xF
        self.isr = self.tmr = self.irr = 0
        self.esr = 0
        self.icr = [0, 0]
        self.lvt = [LVT_MASKED] * APIC_LVT_NB
        self.lvt[LVT_LINT0] = 0x700
        self.divide_conf = 0
        self.initial_count = 0

    # -- state
    def ppr(self) -> int:
        isrv = max(_highest(self.isr), 0) >> 4
        tpr = self.tpr >> 4
        return self.tpr if tpr >= isrv else isrv << 4

    def irq_pending(self) -> int:
        """>0 the vector to deliver, 0 nothing, <0 masked by the processor priority.
        (``ppr()`` inline, without builtins: this runs for every MSI, acknowledge and EOI,
        where a call to ``max`` alone cost a tenth of the APIC's share.)"""
        irr = self.irr
        if not irr or not self.spurious_vec & SV_ENABLE:
            return 0
        irrv = irr.bit_length() - 1
        ppr = self.tpr
        isr = self.isr
        if isr:
            isrv = (isr.bit_length() - 1) >> 4
            if ppr >> 4 < isrv:
                ppr = isrv << 4
        if ppr and (irrv & 0xF0) <= (ppr & 0xF0):
            return -1
        return irrv

    def accept_pic_intr(self) -> bool:
        lvt0 = self.lvt[LVT_LINT0]
        return not self.apicbase & 0x800 or not lvt0 & LVT_MASKED

    def get_interrupt(self, pic_output: int) -> int:
        """``apic_get_interrupt``: an APIC vector (IRR -> ISR), or -1 to ask the PIC.
        (``irq_pending()`` inline: this is every interrupt's acknowledge.)"""
        irr = self.irr
        if not irr or not self.spurious_vec & SV_ENABLE:
            return -1                         # nothing pending, or the APIC disabled
        intno = irr.bit_length() - 1
        ppr = self.tpr
        isr = self.isr
        if isr:
            isrv = (isr.bit_length() - 1) >> 4
            if ppr >> 4 < isrv:
                ppr = isrv << 4
        if ppr and (intno & 0xF0) <= (ppr & 0xF0):
            intno = -1                        # masked by the processor priority
        if intno == 0 or (pic_output and self.accept_pic_intr()):
            return -1
        if intno < 0:
            return self.spurious_vec & 0xFF
        bit = 1 << intno
        self.irr = irr ^ bit
        self.isr = isr | bit
        return intno

    def set_irq(self, vector: int, trigger: int) -> None:
        bit = 1 << (vector & 0xFF)
        self.irr |= bit
        if trigger:
            self.tmr |= bit
        elif self.tmr:
            self.tmr &= ~bit
        self.on_change()

    # -- messages
    def _accepts(self, dest: int, dest_mode: int) -> bool:
        if dest_mode == 0:
            return dest == 0xFF or dest == self.id
        if self.dest_mode == 0xF:             # flat logical
            return bool(dest & self.log_dest)
        if self.dest_mode == 0x0:             # cluster
            return (dest & 0xF0) == (self.log_dest & 0xF0) and bool(dest & self.log_dest & 0x0F)
        return False

    def deliver_irq(self, dest: int, dest_mode: int, delivery: int, vector: int, trigger: int) -> None:
        if dest_mode == 0:
            if dest != 0xFF and dest != self.id:
                return
        elif not self._accepts(dest, dest_mode):
            return
        if delivery in (DM_FIXED, DM_LOWPRI):
            self.set_irq(vector, trigger)
        # SMI, NMI, INIT, ExtINT: not modelled (a guest test never sends them).

    # -- the register window
    def read(self, offset: int, size: int) -> int:
        self.accesses += 1
        if size < 4:
            return 0
        index = (offset >> 4) & 0xFF
        if index == 0x02:
            return self.id << 24
        if index == 0x03:
            return APIC_VERSION | ((APIC_LVT_NB - 1) << 16)
        if index == 0x08:
            return self.tpr
        if index == 0x09:
            return 0                          # arbitration priority
        if index == 0x0A:
            return self.ppr()
        if index == 0x0B:
            return 0
        if index == 0x0D:
            return self.log_dest << 24
        if index == 0x0E:
            return (self.dest_mode << 28) | 0x0FFFFFFF
        if index == 0x0F:
            return self.spurious_vec
        if 0x10 <= index <= 0x17:
            return (self.isr >> (32 * (index & 7))) & 0xFFFFFFFF
        if 0x18 <= index <= 0x1F:
            return (self.tmr >> (32 * (index & 7))) & 0xFFFFFFFF
        if 0x20 <= index <= 0x27:
            return (self.irr >> (32 * (index & 7))) & 0xFFFFFFFF
        if index == 0x28:
            return self.esr
        if index in (0x30, 0x31):
            return self.icr[index & 1]
        if 0x32 <= index <= 0x37:
            return self.lvt[index - 0x32]
        if index == 0x38:
            return self.initial_count
        if index == 0x39:
            return 0                          # current count: the timer is not modelled
        if index == 0x3E:
            return self.divide_conf
        self.esr |= ESR_ILLEGAL_ADDRESS
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.accesses += 1
        if size < 4:
            return
        value &= 0xFFFFFFFF
        if offset > 0xFFF or offset < 0x10:
            # MSI and the APIC registers share the window (apic_mem_write's comment):
            # register index 0, or beyond the 4 KiB of registers.  apic_send_msi (the
            # address is the offset, the data the value), here rather than a method of
            # its own: every device's MSI takes this path, and a frame is a tenth of it
            dest = (offset >> 12) & 0xFF
            if not offset & 4 and not value & 0x700 and (dest == 0xFF or dest == self.id):
                # deliver_irq's usual case (physical, fixed, to this CPU), set_irq inline
                bit = 1 << (value & 0xFF)
                self.irr |= bit
                if value & 0x8000:
                    self.tmr |= bit
                elif self.tmr:
                    self.tmr &= ~bit
                self.on_change()
            else:
                self.deliver_irq(dest, (offset >> 2) & 1, (value >> 8) & 7, value & 0xFF,
                                 (value >> 15) & 1)
            return
        index = offset >> 4
        if index == 0x0B:                     # EOI (apic_eoi; first: once per interrupt)
            isr = self.isr
            if isr:
                self.isr = isr ^ (1 << (isr.bit_length() - 1))
                if self.irr:                  # with IRR empty nothing can become pending
                    self.on_change()
        elif index == 0x02:
            self.id = value >> 24
        elif index == 0x08:
            self.tpr = value & 0xFF
            self.on_change()
        elif index == 0x0D:
            self.log_dest = value >> 24
        elif index == 0x0E:
            self.dest_mode = value >> 28
        elif index == 0x0F:
            self.spurious_vec = value & 0x1FF
            self.on_change()
        elif index == 0x30:
            self.icr[0] = value
            self._ipi()
        elif index == 0x31:
            self.icr[1] = value
        elif 0x32 <= index <= 0x37:
            self.lvt[index - 0x32] = value
            if index - 0x32 == LVT_LINT0:
                self.on_change()
        elif index == 0x38:
            self.initial_count = value
        elif index == 0x3E:
            self.divide_conf = value & 0xB
        elif index in (0x03, 0x09, 0x0A, 0x39) or 0x10 <= index <= 0x28:
            pass                              # read-only
        else:
            self.esr |= ESR_ILLEGAL_ADDRESS

    def _ipi(self) -> None:
        low = self.icr[0]
        shorthand = (low >> 18) & 3
        delivery = (low >> 8) & 7
        if delivery not in (DM_FIXED, DM_LOWPRI):
            return
        vector, trigger = low & 0xFF, (low >> 15) & 1
        if shorthand == 0:
            self.deliver_irq((self.icr[1] >> 24) & 0xFF, (low >> 11) & 1, delivery, vector, trigger)
        elif shorthand in (1, 2):             # self, all including self
            self.set_irq(vector, trigger)
