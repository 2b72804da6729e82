"""The i8042 keyboard controller at 0x60/0x64 with a PS/2 keyboard behind it, as QEMU
7.2 has them (hw/input/pckbd.c, hw/input/ps2.c); no key is ever pressed and the mouse
port answers its test but has no mouse model yet.

Ports
    0x60  data: read the output buffer (keyboard or aux byte); a write goes to the
          command that asked for a parameter, else to the keyboard
    0x64  read: status (OBF 0x01, IBF 0x02 never, SELFTEST 0x04, CMD 0x08 always, as
          QEMU never clears it, UNLOCKED 0x10, AUX_OBF 0x20); write: controller command

Controller commands (``KbdCmd``): 0x20 read / 0x60 write the command byte ("mode"),
0xA7/0xA8 aux disable/enable, 0xA9 aux test (0x00), 0xAA self test (0x55, sets
SELFTEST), 0xAB keyboard test (0x00), 0xAD/0xAE keyboard disable/enable, 0xC0 input
port (0x80), 0xD0/0xD1 read/write the output port (bit 0 low resets, bit 1 is A20),
0xD2/0xD3 write the keyboard/aux output buffer, 0xD4 write to the aux device,
0xDD/0xDF A20 off/on, 0xF0-0xFF pulse output lines (bit 0 low: system reset).

Keyboard commands (``ps2_write_keyboard``): 0xFF reset (FA AA), 0xF5 reset and disable
(FA), 0xF4 enable (FA), 0xF6 defaults (FA), 0xF2 identify (FA AB 41 translated / 83),
0xED set LEDs and 0xF3 typematic rate (FA, then FA for the parameter), 0xF0 scan-code
set (FA; parameter 0 answers FA and the set), 0xEE echo (EE); anything else FE.

IRQ 1 is raised while a keyboard byte waits and the command byte enables it (bit 0);
IRQ 12 likewise for aux bytes (bit 1).
"""

from __future__ import annotations

import collections
from enum import IntEnum, IntFlag
from typing import Callable


class KbdCmd(IntEnum):
    READ_MODE = 0x20
    WRITE_MODE = 0x60
    MOUSE_DISABLE = 0xA7
    MOUSE_ENABLE = 0xA8
    TEST_MOUSE = 0xA9
    SELF_TEST = 0xAA
    KBD_TEST = 0xAB
    KBD_DISABLE = 0xAD
    KBD_ENABLE = 0xAE
    READ_INPORT = 0xC0
    READ_OUTPORT = 0xD0
    WRITE_OUTPORT = 0xD1
    WRITE_OBUF = 0xD2
    WRITE_AUX_OBUF = 0xD3
    WRITE_MOUSE = 0xD4
    DISABLE_A20 = 0xDD
    ENABLE_A20 = 0xDF


class Status(IntFlag):
    OBF = 0x01
    SELFTEST = 0x04
    CMD = 0x08
    UNLOCKED = 0x10
    AUX_OBF = 0x20


MODE_KBD_INT, MODE_MOUSE_INT, MODE_DISABLE_KBD, MODE_DISABLE_MOUSE, MODE_KCC = 0x01, 0x02, 0x10, 0x20, 0x40
OUT_RESET, OUT_A20, OUT_ONES = 0x01, 0x02, 0xCC
ACK, RESEND, BAT_OK = 0xFA, 0xFE, 0xAA


class I8042:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = (
        "mode", "status", "outport", "write_cmd", "queue", "current", "last", "kbd_param",
        "scan_enabled", "scancode_set",
    )

    def __init__(self, set_irq: Callable[[int, int], None], request_reset: Callable[[], None]) -> None:
        self._set_irq = set_irq
        self._request_reset = request_reset
        self.reset()

    def reset(self) -> None:
        self.mode = MODE_KBD_INT | MODE_MOUSE_INT
        self.status = Status.CMD | Status.UNLOCKED
        self.outport = OUT_RESET | OUT_A20 | OUT_ONES
        self.write_cmd = 0
        self.queue: collections.deque[tuple[int, bool]] = collections.deque()   # (byte, aux)
        self.current: tuple[int, bool] | None = None
        self.last = 0                # what a read gives with the buffer empty (obdata)
        self.kbd_param = 0           # keyboard command waiting for its parameter
        self.scan_enabled = True
        self.scancode_set = 2
        self._irqs = (0, 0)
        self._update()

    def firmware_state(self) -> None:
        """As SeaBIOS leaves it (measured on QEMU 7.2): self test passed, command byte
        0x61 (keyboard interrupt, translation, aux disabled), keyboard scanning."""
        self.status |= Status.SELFTEST
        self.mode = MODE_KCC | MODE_DISABLE_MOUSE | MODE_KBD_INT
        self.scan_enabled = True
        self._update()

    # -- output buffer
    def _put(self, value: int, aux: bool = False) -> None:
        self.queue.append((value & 0xFF, aux))
        self._update()

    def _update(self) -> None:
        if self.current is None and self.queue:
            self.current = self.queue.popleft()
        st = self.status & ~(Status.OBF | Status.AUX_OBF)
        irq1 = irq12 = 0
        if self.current is not None:
            st |= Status.OBF
            if self.current[1]:
                st |= Status.AUX_OBF
                irq12 = int(bool(self.mode & MODE_MOUSE_INT))
            else:
                irq1 = int(bool(self.mode & MODE_KBD_INT))
        self.status = st
        if (irq1, irq12) != self._irqs:
            self._irqs = (irq1, irq12)
            self._set_irq(1, irq1)
            self._set_irq(12, irq12)

    # -- ports
    def read(self, offset: int, size: int) -> int:
        if offset == 4:
            return int(self.status)
        if self.current is None:
            return self.last
        value = self.last = self.current[0]
        self.current = None
        self._update()
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == 4:                 # QEMU keeps CMD set from reset on
            self._command(value)
        else:
            self._data(value)

    def _command(self, cmd: int) -> None:
        if cmd == KbdCmd.READ_MODE:
            self._put(self.mode)
        elif cmd in (KbdCmd.WRITE_MODE, KbdCmd.WRITE_OBUF, KbdCmd.WRITE_AUX_OBUF,
                     KbdCmd.WRITE_MOUSE, KbdCmd.WRITE_OUTPORT):
            self.write_cmd = cmd
        elif cmd == KbdCmd.MOUSE_DISABLE:
            self.mode |= MODE_DISABLE_MOUSE
        elif cmd == KbdCmd.MOUSE_ENABLE:
            self.mode &= ~MODE_DISABLE_MOUSE
        elif cmd == KbdCmd.TEST_MOUSE:
            self._put(0x00)
        elif cmd == KbdCmd.SELF_TEST:
            self.status |= Status.SELFTEST
            self.outport |= OUT_RESET
            self._put(0x55)
        elif cmd == KbdCmd.KBD_TEST:
            self._put(0x00)
        elif cmd == KbdCmd.KBD_DISABLE:
            self.mode |= MODE_DISABLE_KBD
            self._update()
        elif cmd == KbdCmd.KBD_ENABLE:
            self.mode &= ~MODE_DISABLE_KBD
            self._update()
        elif cmd == KbdCmd.READ_INPORT:
            self._put(0x80)
        elif cmd == KbdCmd.READ_OUTPORT:
            self._put(self.outport)
        elif cmd == KbdCmd.ENABLE_A20:
            self.outport |= OUT_A20
        elif cmd == KbdCmd.DISABLE_A20:
            self.outport &= ~OUT_A20
        elif cmd >= 0xF0:
            if not cmd & 1:
                self._request_reset()

    def _data(self, value: int) -> None:
        cmd, self.write_cmd = self.write_cmd, 0
        if cmd == KbdCmd.WRITE_MODE:
            self.mode = value
            self._update()
        elif cmd == KbdCmd.WRITE_OBUF:
            self._put(value)
        elif cmd == KbdCmd.WRITE_AUX_OBUF:
            self._put(value, aux=True)
        elif cmd == KbdCmd.WRITE_OUTPORT:
            self.outport = value
            if not value & OUT_RESET:
                self._request_reset()
        elif cmd == KbdCmd.WRITE_MOUSE:
            self._put(RESEND, aux=True)        # no mouse model: every command is refused
        else:
            self._keyboard(value)

    def _keyboard(self, value: int) -> None:
        """ps2_write_keyboard."""
        param, self.kbd_param = self.kbd_param, 0
        if param == 0xF0:                       # scan-code set parameter
            if value == 0:
                self._put(ACK)
                self._put({1: 0x43, 2: 0x41, 3: 0x3F}[self.scancode_set])
            elif value in (1, 2, 3):
                self.scancode_set = value
                self._put(ACK)
            else:
                self._put(RESEND)
            return
        if param in (0xED, 0xF3):
            self._put(ACK)
            return
        if value == 0xFF:
            self.scan_enabled, self.scancode_set = True, 2
            self._put(ACK)
            self._put(BAT_OK)
        elif value == 0xF5:
            self.scan_enabled = False
            self._put(ACK)
        elif value == 0xF4:
            self.scan_enabled = True
            self._put(ACK)
        elif value == 0xF6:
            self._put(ACK)
        elif value == 0xF2:
            self._put(ACK)
            self._put(0xAB)
            self._put(0x41 if self.mode & MODE_KCC else 0x83)
        elif value in (0xED, 0xF3, 0xF0):
            self.kbd_param = value
            self._put(ACK)
        elif value == 0xEE:
            self._put(0xEE)
        else:
            self._put(RESEND)


class Port:
    """One of the controller's two ports as its own 1-byte region (0x61, between them,
    is the PC speaker)."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, ctl: I8042, offset: int) -> None:
        self.ctl, self.offset = ctl, offset

    def read(self, offset: int, size: int) -> int:
        return self.ctl.read(self.offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.ctl.write(self.offset, size, value)
