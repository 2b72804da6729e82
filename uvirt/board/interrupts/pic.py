"""The 8259A pair of QEMU's ``pc`` (``hw/intc/i8259.c``, ``i8259_common.c``, QEMU 7.2).

Two chips, master at 0x20/0x21 and slave at 0xA0/0xA1, the slave's INT output on the
master's IRQ 2; ELCR at 0x4D0 (master, writable mask 0xF8) and 0x4D1 (slave, 0xDE).
Everything a guest can see follows QEMU's model, including its simplifications:

* ICW1 resets the chip (IRR keeps only level-triggered bits, IMR 0, ISR 0, base 0) but
  not the ELCR; ICW1 bit 3 (LTIM) is ignored, as in 7.2 (logged as unimplemented there).
* Edge-triggered lines set IRR on a rising level; level-triggered lines (ELCR) follow the
  level, and acknowledging does not clear their IRR bit.
* OCW3 selects IRR/ISR for reads of the command port and the poll mode; reads of the
  data port return IMR.  Specific and rotating EOIs, auto-EOI and special mask are as QEMU.
* ``read_irq()`` is the CPU's interrupt acknowledge: the vector, or IRQ 7 (15 on the
  slave) as the spurious interrupt when nothing is pending any more.

Pure Python, no CPU: ``set_irq`` drives lines, ``output`` is the INT pin, and
``on_output(level)`` is called whenever the pin may have changed.
"""

from __future__ import annotations

from typing import Callable


class I8259:
    """One 8259A chip (QEMU's ``PICCommonState``)."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = (
        "elcr", "last_irr", "irr", "imr", "isr", "priority_add", "irq_base", "read_reg_select",
        "poll", "special_mask", "init_state", "auto_eoi", "rotate_on_auto_eoi",
        "special_fully_nested_mode", "init4", "single_mode",
    )

    def __init__(self, *, master: bool, elcr_mask: int) -> None:
        self.master = master
        self.elcr_mask = elcr_mask
        self.elcr = 0
        self.on_output: Callable[[int], None] = lambda level: None
        self.last_irr = self.irr = self.imr = self.isr = 0
        self.priority_add = self.irq_base = self.read_reg_select = self.poll = 0
        self.special_mask = self.init_state = self.auto_eoi = self.rotate_on_auto_eoi = 0
        self.special_fully_nested_mode = self.init4 = self.single_mode = 0
        self.reset()

    # -- state
    def reset(self) -> None:
        """Device reset (``pic_reset``): ELCR cleared too."""
        self.elcr = 0
        self._init_reset()

    def _init_reset(self) -> None:
        """``pic_reset_common`` + update: what ICW1 does."""
        self.last_irr = 0
        self.irr &= self.elcr
        self.imr = self.isr = 0
        self.priority_add = self.irq_base = self.read_reg_select = self.poll = 0
        self.special_mask = self.init_state = self.auto_eoi = self.rotate_on_auto_eoi = 0
        self.special_fully_nested_mode = self.init4 = self.single_mode = 0
        self.update()

    def _priority(self, mask: int) -> int:
        if not mask:
            return 8
        p = 0
        while not mask & (1 << ((p + self.priority_add) & 7)):
            p += 1
        return p

    def get_irq(self) -> int:
        """The IRQ this chip would present, or -1 (``pic_get_irq``)."""
        mask = self.irr & ~self.imr
        if not mask:                          # (_priority(0) is 8: nothing requested)
            return -1
        priority = self._priority(mask)
        if priority == 8:
            return -1
        mask = self.isr
        if self.special_mask:
            mask &= ~self.imr
        if self.special_fully_nested_mode and self.master:
            mask &= ~(1 << 2)
        if priority < self._priority(mask):
            return (priority + self.priority_add) & 7
        return -1

    @property
    def output(self) -> int:
        return 1 if self.get_irq() >= 0 else 0

    def update(self) -> None:
        self.on_output(1 if self.get_irq() >= 0 else 0)      # self.output, inline

    def set_irq(self, irq: int, level: int) -> None:
        mask = 1 << irq
        if self.elcr & mask:                  # level triggered
            if level:
                self.irr |= mask
                self.last_irr |= mask
            else:
                self.irr &= ~mask
                self.last_irr &= ~mask
        else:                                 # edge triggered
            if level:
                if not self.last_irr & mask:
                    self.irr |= mask
                self.last_irr |= mask
            else:
                self.last_irr &= ~mask
        self.update()

    def intack(self, irq: int) -> None:
        if self.auto_eoi:
            if self.rotate_on_auto_eoi:
                self.priority_add = (irq + 1) & 7
        else:
            self.isr |= 1 << irq
        if not self.elcr & (1 << irq):        # a level-triggered request stays in IRR
            self.irr &= ~(1 << irq)
        self.update()

    # -- ports (offset 0 = command, 1 = data)
    def port_write(self, addr: int, val: int) -> None:
        val &= 0xFF
        if addr == 0:
            if val & 0x10:                    # ICW1
                self._init_reset()
                self.init_state = 1
                self.init4 = val & 1
                self.single_mode = val & 2
            elif val & 0x08:                  # OCW3
                if val & 0x04:
                    self.poll = 1
                if val & 0x02:
                    self.read_reg_select = val & 1
                if val & 0x40:
                    self.special_mask = (val >> 5) & 1
            else:                             # OCW2
                cmd = val >> 5
                if cmd in (0, 4):
                    self.rotate_on_auto_eoi = cmd >> 2
                elif cmd in (1, 5):           # non-specific EOI (rotating for 5)
                    priority = self._priority(self.isr)
                    if priority != 8:
                        irq = (priority + self.priority_add) & 7
                        self.isr &= ~(1 << irq)
                        if cmd == 5:
                            self.priority_add = (irq + 1) & 7
                        self.update()
                elif cmd == 3:                # specific EOI
                    self.isr &= ~(1 << (val & 7))
                    self.update()
                elif cmd == 6:                # set priority
                    self.priority_add = (val + 1) & 7
                    self.update()
                elif cmd == 7:                # rotate on specific EOI
                    irq = val & 7
                    self.isr &= ~(1 << irq)
                    self.priority_add = (irq + 1) & 7
                    self.update()
            return
        if self.init_state == 0:              # OCW1
            self.imr = val
            self.update()
        elif self.init_state == 1:            # ICW2
            self.irq_base = val & 0xF8
            self.init_state = (3 if self.init4 else 0) if self.single_mode else 2
        elif self.init_state == 2:            # ICW3
            self.init_state = 3 if self.init4 else 0
        else:                                 # ICW4
            self.special_fully_nested_mode = (val >> 4) & 1
            self.auto_eoi = (val >> 1) & 1
            self.init_state = 0

    def port_read(self, addr: int) -> int:
        if self.poll:
            ret = self.get_irq()
            if ret >= 0:
                self.intack(ret)
                ret |= 0x80
            else:
                ret = 0
            self.poll = 0
            return ret
        if addr == 0:
            return self.isr if self.read_reg_select else self.irr
        return self.imr

    def elcr_write(self, val: int) -> None:
        self.elcr = val & self.elcr_mask

    def elcr_read(self) -> int:
        return self.elcr


class PicPair:
    """Master + slave as wired on ``pc`` (``i8259_init``), with ``read_irq`` for the CPU."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("master", "slave")

    def __init__(self) -> None:
        self.master = I8259(master=True, elcr_mask=0xF8)
        self.slave = I8259(master=False, elcr_mask=0xDE)
        self.on_output: Callable[[int], None] = lambda level: None
        #: Called before every guest access to a PIC port: lazy time sources (the PIT)
        #: bring their lines up to date first.
        self.before_access: Callable[[], None] = lambda: None
        self.slave.on_output = lambda level: self.master.set_irq(2, level)
        self.master.on_output = lambda level: self.on_output(level)

    def reset(self) -> None:
        self.slave.reset()
        self.master.reset()

    def set_irq(self, irq: int, level: int) -> None:
        """ISA IRQ line 0-15."""
        if irq < 8:
            self.master.set_irq(irq, level)
        else:
            self.slave.set_irq(irq - 8, level)

    @property
    def output(self) -> int:
        return self.master.output

    def read_irq(self) -> int:
        """Interrupt acknowledge (``pic_read_irq``): the vector the CPU receives."""
        m, s = self.master, self.slave
        irq = m.get_irq()
        if irq >= 0:
            if irq == 2:
                irq2 = s.get_irq()
                if irq2 >= 0:
                    s.intack(irq2)
                else:
                    irq2 = 7                  # spurious IRQ on the slave
                intno = s.irq_base + irq2
            else:
                intno = m.irq_base + irq
            m.intack(irq)
        else:
            intno = m.irq_base + 7            # spurious IRQ on the master
        return intno

    # -- MmioRegion devices (QEMU: impl 1 byte, so wider accesses are split)
    def chip_device(self, chip: I8259) -> "_ChipPorts":
        return _ChipPorts(self, chip)

    def elcr_device(self, chip: I8259) -> "_ElcrPort":
        return _ElcrPort(self, chip)


class _ChipPorts:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, pair: PicPair, chip: I8259) -> None:
        self.pair, self.chip = pair, chip

    def read(self, offset: int, size: int) -> int:
        self.pair.before_access()
        return self.chip.port_read(offset)

    def write(self, offset: int, size: int, value: int) -> None:
        self.pair.before_access()
        self.chip.port_write(offset, value)


class _ElcrPort:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, pair: PicPair, chip: I8259) -> None:
        self.pair, self.chip = pair, chip

    def read(self, offset: int, size: int) -> int:
        return self.chip.elcr_read()

    def write(self, offset: int, size: int, value: int) -> None:
        self.pair.before_access()
        self.chip.elcr_write(value)
