"""The 16550A UART behind ``-serial`` (QEMU 7.2 hw/char/serial.c, ISA ``isa-serial``):
serial N at 0x3F8/0x2F8/0x3E8/0x2E8 with IRQ 4/3/4/3, one per ``-serial`` that is not
``none`` (with ``-nodefaults`` QEMU creates no other).

Registers (offset, DLAB = LCR bit 7)
    0 RBR (read) / THR (write); DLL with DLAB     1 IER; DLM with DLAB
    2 IIR (read) / FCR (write)                    3 LCR
    4 MCR (bit 4: loopback)                       5 LSR (THRE|TEMT always: output is
    6 MSR (DCD|DSR|CTS; in loopback from MCR)       written to the chardev at once)
    7 SCR

Reset (``serial_reset``): IER 0, IIR 0x01, LCR 0, LSR 0x60, MSR 0xB0, MCR 0x08 (OUT2),
divisor 12.  Interrupts as ``serial_update_irq``: receiver line status, received data,
THR empty (pending after a transmit or when IER.THRI is enabled with THR empty, cleared
by an IIR read that reports it or a THR write), modem status; IIR bits 6-7 say whether
the FIFOs are on.  Received bytes come only from loopback (no input source yet).
"""

from __future__ import annotations

import collections
from typing import Callable

COM_PORTS = ((0x3F8, 4), (0x2F8, 3), (0x3E8, 4), (0x2E8, 3))

IER_RDI, IER_THRI, IER_RLSI, IER_MSI = 0x01, 0x02, 0x04, 0x08
IIR_NO_INT, IIR_MSI, IIR_THRI, IIR_RDI, IIR_RLSI, IIR_FE = 0x01, 0x00, 0x02, 0x04, 0x06, 0xC0
LSR_DR, LSR_OE, LSR_BI, LSR_THRE, LSR_TEMT = 0x01, 0x02, 0x10, 0x20, 0x40
LSR_INT_ANY = 0x1E
MCR_LOOP, MCR_OUT2 = 0x10, 0x08
MSR_DCD, MSR_DSR, MSR_CTS, MSR_ANY_DELTA = 0x80, 0x20, 0x10, 0x0F
LCR_DLAB = 0x80
FCR_FE, FCR_RFR, FCR_XFR = 0x01, 0x02, 0x04


class Uart16550:
    def __init__(self, write: Callable[[bytes], None], set_irq: Callable[[int], None]) -> None:
        self._write = write
        self._set_irq = set_irq
        self.reset()

    def reset(self) -> None:
        self.ier, self.iir, self.lcr, self.lsr = 0, IIR_NO_INT, 0, LSR_TEMT | LSR_THRE
        self.msr, self.mcr, self.scr, self.fcr = MSR_DCD | MSR_DSR | MSR_CTS, MCR_OUT2, 0, 0
        self.divider = 0x0C
        self.thr_ipending = False
        self.rx: collections.deque[int] = collections.deque()
        self._level = 0
        self._update_irq()

    def _update_irq(self) -> None:
        if self.ier & IER_RLSI and self.lsr & LSR_INT_ANY:
            iir = IIR_RLSI
        elif self.ier & IER_RDI and self.lsr & LSR_DR:
            iir = IIR_RDI
        elif self.ier & IER_THRI and self.thr_ipending:
            iir = IIR_THRI
        elif self.ier & IER_MSI and self.msr & MSR_ANY_DELTA:
            iir = IIR_MSI
        else:
            iir = IIR_NO_INT
        self.iir = iir | (self.iir & 0xF0)
        level = int(iir != IIR_NO_INT)
        if level != self._level:
            self._level = level
            self._set_irq(level)

    def _receive(self, byte: int) -> None:
        if self.fcr & FCR_FE:
            if len(self.rx) >= 16:
                self.lsr |= LSR_OE
            else:
                self.rx.append(byte)
        else:
            if self.lsr & LSR_DR:
                self.lsr |= LSR_OE
            self.rx.clear()
            self.rx.append(byte)
        self.lsr |= LSR_DR
        self._update_irq()

    def read(self, offset: int, size: int) -> int:
        if offset == 0:
            if self.lcr & LCR_DLAB:
                return self.divider & 0xFF
            value = self.rx.popleft() if self.rx else 0
            if not self.rx:
                self.lsr &= ~(LSR_DR | LSR_BI)
            self._update_irq()
            return value
        if offset == 1:
            return (self.divider >> 8) & 0xFF if self.lcr & LCR_DLAB else self.ier
        if offset == 2:
            value = self.iir
            if value & 0x0F == IIR_THRI:
                self.thr_ipending = False
                self._update_irq()
            return value
        if offset == 3:
            return self.lcr
        if offset == 4:
            return self.mcr
        if offset == 5:
            value = self.lsr
            if value & (LSR_BI | LSR_OE):
                self.lsr &= ~(LSR_BI | LSR_OE)
                self._update_irq()
            return value
        if offset == 6:
            if self.mcr & MCR_LOOP:
                m = self.mcr
                return ((m & 0x0C) << 4) | ((m & 0x02) << 3) | ((m & 0x01) << 5)
            value = self.msr
            if self.msr & MSR_ANY_DELTA:
                self.msr &= 0xF0
                self._update_irq()
            return value
        return self.scr

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == 0:
            if self.lcr & LCR_DLAB:
                self.divider = (self.divider & 0xFF00) | value
                return
            self.thr_ipending = False
            self.lsr &= ~LSR_THRE
            self._update_irq()
            if self.mcr & MCR_LOOP:
                self._receive(value)
            else:
                self._write(bytes((value,)))
            self.lsr |= LSR_THRE | LSR_TEMT
            self.thr_ipending = True
            self._update_irq()
        elif offset == 1:
            if self.lcr & LCR_DLAB:
                self.divider = (self.divider & 0x00FF) | value << 8
                return
            changed = (self.ier ^ value) & 0x0F
            self.ier = value & 0x0F
            if changed & IER_THRI:
                self.thr_ipending = bool(self.ier & IER_THRI and self.lsr & LSR_THRE)
            if changed:
                self._update_irq()
        elif offset == 2:
            if (value ^ self.fcr) & FCR_FE:
                value |= FCR_XFR | FCR_RFR
            if value & FCR_RFR:
                self.rx.clear()
                self.lsr &= ~(LSR_DR | LSR_BI)
            self.fcr = value & 0xC9
            self.iir = (self.iir & 0x0F) | (IIR_FE if self.fcr & FCR_FE else 0)
            self._update_irq()
        elif offset == 3:
            self.lcr = value
        elif offset == 4:
            self.mcr = value & 0x1F
        elif offset == 7:
            self.scr = value
