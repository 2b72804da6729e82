"""The i8042 keyboard controller at 0x60/0x64 with a PS/2 keyboard and a PS/2 mouse
behind it, as QEMU 7.2 has them (hw/input/pckbd.c, hw/input/ps2.c); no key is ever
pressed and the mouse never moves.

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

Mouse commands (``ps2_write_mouse``, through 0xD4, which also clears the command byte's
aux-disable bit): 0xFF reset (FA AA 00, sample rate 100, resolution 2, standard type),
0xF6 defaults, 0xF4/0xF5 enable/disable reporting, 0xEA stream / 0xF0 remote mode,
0xE6/0xE7 scaling 1:1 / 2:1 (each FA), 0xF2 type (FA, then 0, 3 after the IMPS/2 knock
of sample rates 200 100 80, 4 after the IMEX one 200 200 80), 0xE9 status (FA, status,
resolution, sample rate), 0xF3/0xE8 sample rate / resolution (FA, then FA for the
parameter), 0xEB poll (FA and a packet without motion: 08 00 00, plus 00 for IMPS/2 and
IMEX), 0xEE wrap mode (FA; every byte but 0xEC and 0xFF echoes until 0xEC: FA); any
other byte is ignored.  Not modelled: QEMU's separate keyboard and mouse queues (bytes
go out in the order they were made, and a disabled port does not hold its bytes back).

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


#: the status bits as plain ints for the code: ``IntFlag | IntFlag`` and ``~`` go through
#: enum.py (a microsecond or two each, several per update, and a board's build updates)
_OBF, _SELFTEST, _CMD, _UNLOCKED, _AUX_OBF = (Status.OBF.value, Status.SELFTEST.value,
                                              Status.CMD.value, Status.UNLOCKED.value,
                                              Status.AUX_OBF.value)

MODE_KBD_INT, MODE_MOUSE_INT, MODE_DISABLE_KBD, MODE_DISABLE_MOUSE, MODE_KCC = 0x01, 0x02, 0x10, 0x20, 0x40
OUT_RESET, OUT_A20, OUT_ONES = 0x01, 0x02, 0xCC
ACK, RESEND, BAT_OK = 0xFA, 0xFE, 0xAA


class AuxCmd(IntEnum):
    """PS/2 mouse commands (hw/input/ps2.c ``AUX_*``)."""
    SET_SCALE11 = 0xE6
    SET_SCALE21 = 0xE7
    SET_RES = 0xE8
    GET_SCALE = 0xE9
    SET_STREAM = 0xEA
    POLL = 0xEB
    RESET_WRAP = 0xEC
    SET_WRAP = 0xEE
    SET_REMOTE = 0xF0
    GET_TYPE = 0xF2
    SET_SAMPLE = 0xF3
    ENABLE_DEV = 0xF4
    DISABLE_DEV = 0xF5
    SET_DEFAULT = 0xF6
    RESET = 0xFF


MOUSE_STATUS_REMOTE, MOUSE_STATUS_ENABLED, MOUSE_STATUS_SCALE21 = 0x40, 0x20, 0x10
#: mouse_status bits each command sets (|) or clears (&~), then answers ACK
_AUX_STATUS = {AuxCmd.SET_SCALE11: (0, MOUSE_STATUS_SCALE21), AuxCmd.SET_SCALE21: (MOUSE_STATUS_SCALE21, 0),
               AuxCmd.SET_STREAM: (0, MOUSE_STATUS_REMOTE), AuxCmd.SET_REMOTE: (MOUSE_STATUS_REMOTE, 0),
               AuxCmd.ENABLE_DEV: (MOUSE_STATUS_ENABLED, 0), AuxCmd.DISABLE_DEV: (0, MOUSE_STATUS_ENABLED)}
#: the IMPS/2 (type 3) and IMEX (type 4) knocks: sample rates in a row -> detect state
_KNOCK = {(0, 200): 1, (1, 100): 2, (1, 200): 3}
_KNOCK_TYPE = {(2, 80): 3, (3, 80): 4}


class I8042:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = (
        "mode", "status", "outport", "write_cmd", "queue", "current", "last", "kbd_param",
        "scan_enabled", "scancode_set", "mouse_status", "mouse_resolution", "mouse_sample_rate",
        "mouse_wrap", "mouse_type", "mouse_detect", "mouse_param",
    )

    def __init__(self, set_irq: Callable[[int, int], None], request_reset: Callable[[], None]) -> None:
        self._set_irq = set_irq
        self._request_reset = request_reset
        self.reset()

    def reset(self) -> None:
        self.mode = MODE_KBD_INT | MODE_MOUSE_INT
        self.status = _CMD | _UNLOCKED
        self.outport = OUT_RESET | OUT_A20 | OUT_ONES
        self.write_cmd = 0
        self.queue: collections.deque[tuple[int, bool]] = collections.deque()   # (byte, aux)
        self.current: tuple[int, bool] | None = None
        self.last = 0                # what a read gives with the buffer empty (obdata)
        self.kbd_param = 0           # keyboard command waiting for its parameter
        self.scan_enabled = True
        self.scancode_set = 2
        # ps2_mouse_reset
        self.mouse_status = self.mouse_resolution = self.mouse_sample_rate = 0
        self.mouse_wrap = self.mouse_type = self.mouse_detect = 0
        self.mouse_param = 0         # mouse command waiting for its parameter
        self._irqs = (0, 0)
        self._update()

    def firmware_state(self) -> None:
        """As SeaBIOS leaves it (measured on QEMU 7.2): self test passed, command byte
        0x61 (keyboard interrupt, translation, aux disabled), keyboard scanning."""
        self.status |= _SELFTEST
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
        st = self.status & ~(_OBF | _AUX_OBF)
        irq1 = irq12 = 0
        if self.current is not None:
            st |= _OBF
            if self.current[1]:
                st |= _AUX_OBF
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
            self.status |= _SELFTEST
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
            self.mode &= ~MODE_DISABLE_MOUSE   # "sending data to the mouse reenables" it
            self._mouse(value)
            self._update()
        else:
            self._keyboard(value)

    def _mouse(self, value: int) -> None:
        """ps2_write_mouse (no motion, no buttons)."""
        put = lambda *b: [self._put(x, aux=True) for x in b]
        param, self.mouse_param = self.mouse_param, 0
        if param == AuxCmd.SET_SAMPLE:
            self.mouse_sample_rate = value
            state = _KNOCK.get((self.mouse_detect, value), 0)
            self.mouse_type = _KNOCK_TYPE.get((self.mouse_detect, value), self.mouse_type)
            self.mouse_detect = state
            put(ACK)
            return
        if param == AuxCmd.SET_RES:
            self.mouse_resolution = value
            put(ACK)
            return
        if self.mouse_wrap:
            if value == AuxCmd.RESET_WRAP:
                self.mouse_wrap = 0
                put(ACK)
                return
            if value != AuxCmd.RESET:
                put(value)
                return
        if value in _AUX_STATUS:
            on, off = _AUX_STATUS[AuxCmd(value)]
            self.mouse_status = (self.mouse_status | on) & ~off
            put(ACK)
        elif value == AuxCmd.SET_WRAP:
            self.mouse_wrap = 1
            put(ACK)
        elif value == AuxCmd.GET_TYPE:
            put(ACK, self.mouse_type)
        elif value in (AuxCmd.SET_RES, AuxCmd.SET_SAMPLE):
            self.mouse_param = value
            put(ACK)
        elif value == AuxCmd.GET_SCALE:
            put(ACK, self.mouse_status, self.mouse_resolution, self.mouse_sample_rate)
        elif value == AuxCmd.POLL:
            put(ACK, 0x08, 0, 0, *((0,) if self.mouse_type in (3, 4) else ()))
        elif value in (AuxCmd.SET_DEFAULT, AuxCmd.RESET):
            self.mouse_sample_rate, self.mouse_resolution, self.mouse_status = 100, 2, 0
            if value == AuxCmd.RESET:
                self.mouse_type = 0
                self.queue = collections.deque(b for b in self.queue if not b[1])   # ps2_reset_queue
                put(ACK, BAT_OK, self.mouse_type)
            else:
                put(ACK)

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
