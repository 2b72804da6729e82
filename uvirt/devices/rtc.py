"""The MC146818 RTC and CMOS memory at 0x70/0x71, as QEMU 7.2 has them
(hw/rtc/mc146818rtc.c, CMOS contents from hw/i386/pc.c ``pc_cmos_init`` and
hw/i386/x86.c ``x86_rtc_set_cpus_count``).

Ports
    0x70  index (bit 7, the NMI mask, is ignored as in QEMU); reads give 0xFF
    0x71  the indexed byte

Registers (``RtcReg``)
    0x00-0x09  seconds, alarm seconds, minutes, alarm minutes, hours, alarm hours, day of
               week, day of month, month, year: BCD unless REG_B.DM, 12-hour (bit 7 =
               PM) unless REG_B.24H; read from the guest clock, written while REG_B.SET
               stops updates (clearing SET starts the clock at the written time)
    0x0A  REG_A: UIP (bit 7, set during the last 244 µs of each second while the
          oscillator runs), divider, rate; reset 0x26
    0x0B  REG_B: SET, PIE, AIE, UIE, SQWE, DM, 24H, DSE; reset 0x02
    0x0C  REG_C: IRQF, PF, AF, UF; reading clears it
    0x0D  REG_D: VRT (0x80, "valid RAM"), read-only
    0x0E-0x7F  CMOS memory: 0x0F shutdown status, 0x10 floppy types, 0x14 equipment,
          0x15/0x16 base memory (KiB), 0x17/0x18 and 0x30/0x31 memory above 1 MiB (KiB,
          at most 65535), 0x34/0x35 memory above 16 MiB (64 KiB units), 0x5B-0x5D memory
          above 4 GiB, 0x5F CPUs - 1, 0x38/0x3D boot order ("cad": 30 / 12), 0x32 century

Time is the guest's virtual time (the host's monotonic clock, as the PIT and the PM
timer), starting at the host's UTC time when the machine is built (QEMU ``-rtc
base=utc``).  Not modelled yet: the alarm, periodic and update-ended interrupts (IRQ 8)
and their REG_C flags.
"""

from __future__ import annotations

import calendar
import time
from enum import IntEnum, IntFlag
from typing import Callable

NS = 1_000_000_000
UIP_HOLD_NS = 8 * NS // 32768          # QEMU's UIP_HOLD_LENGTH


class RtcReg(IntEnum):
    SECONDS = 0x00
    SECONDS_ALARM = 0x01
    MINUTES = 0x02
    MINUTES_ALARM = 0x03
    HOURS = 0x04
    HOURS_ALARM = 0x05
    DAY_OF_WEEK = 0x06
    DAY_OF_MONTH = 0x07
    MONTH = 0x08
    YEAR = 0x09
    REG_A = 0x0A
    REG_B = 0x0B
    REG_C = 0x0C
    REG_D = 0x0D
    SHUTDOWN = 0x0F
    CENTURY = 0x32


class RegB(IntFlag):
    DSE = 0x01
    H24 = 0x02
    DM = 0x04
    SQWE = 0x08
    UIE = 0x10
    AIE = 0x20
    PIE = 0x40
    SET = 0x80


REG_A_UIP = 0x80
REG_D_VRT = 0x80
CMOS_SIZE = 128


def pc_cmos_memory(ram_below_4g: int, ram_above_4g: int, cpus: int = 1,
                   boot_order: str = "cad") -> dict[int, int]:
    """What pc_cmos_init writes (no floppy, no IDE disk, PS/2 mouse, FPU)."""
    nibble = {"a": 1, "b": 1, "c": 2, "d": 3, "n": 4}
    bds = [nibble[c] for c in boot_order] + [0, 0, 0]
    base = min(ram_below_4g // 1024, 640)
    ext = min(max(ram_below_4g - (1 << 20), 0) // 1024, 65535)
    high = min(max(ram_below_4g - (16 << 20), 0) // 65536, 65535)
    above = ram_above_4g // 65536
    return {0x10: 0, 0x12: 0, 0x14: 0x06, 0x15: base & 0xFF, 0x16: base >> 8,
            0x17: ext & 0xFF, 0x18: ext >> 8, 0x30: ext & 0xFF, 0x31: ext >> 8,
            0x34: high & 0xFF, 0x35: high >> 8, 0x5B: above & 0xFF, 0x5C: (above >> 8) & 0xFF,
            0x5D: (above >> 16) & 0xFF, 0x5F: cpus - 1, 0x3D: bds[1] << 4 | bds[0],
            0x38: bds[2] << 4, 0x39: 0}


class Rtc:
    """The chip and its CMOS (ports 0x70/0x71 through ``read``/``write``)."""

    def __init__(self, cmos: dict[int, int] | None = None, *,
                 clock: Callable[[], int] = time.monotonic_ns, base_utc: float | None = None) -> None:
        self.clock = clock
        self.cmos = bytearray(CMOS_SIZE)
        for k, v in (cmos or {}).items():
            self.cmos[k] = v
        self.cmos[RtcReg.REG_A] = 0x26
        self.cmos[RtcReg.REG_B] = RegB.H24
        self.cmos[RtcReg.REG_C] = 0
        self.cmos[RtcReg.REG_D] = REG_D_VRT
        self.index = 0
        base = time.time() if base_utc is None else base_utc
        # guest time (ns since the epoch) = clock() + offset
        self.offset = int(base * NS) - clock()
        self._stopped_at: int | None = None     # guest ns frozen while REG_B.SET
        self._store_time(self.guest_ns())
        self.cmos[RtcReg.CENTURY] = self._to_reg(self._tm()[0] // 100)

    # -- time
    def guest_ns(self) -> int:
        if self._stopped_at is not None:
            return self._stopped_at
        return self.clock() + self.offset

    def _tm(self) -> time.struct_time:
        return time.gmtime(self.guest_ns() // NS)

    def _to_reg(self, v: int) -> int:
        if self.cmos[RtcReg.REG_B] & RegB.DM:
            return v & 0xFF
        return ((v // 10) << 4 | v % 10) & 0xFF

    def _from_reg(self, v: int) -> int:
        if self.cmos[RtcReg.REG_B] & RegB.DM:
            return v
        return ((v >> 4) & 0xF) * 10 + (v & 0xF)

    def _hour_to_reg(self, h: int) -> int:
        if self.cmos[RtcReg.REG_B] & RegB.H24:
            return self._to_reg(h)
        pm = h >= 12
        h12 = h % 12 or 12
        return self._to_reg(h12) | (0x80 if pm else 0)

    def _hour_from_reg(self, v: int) -> int:
        if self.cmos[RtcReg.REG_B] & RegB.H24:
            return self._from_reg(v)
        h = self._from_reg(v & 0x7F) % 12
        return h + 12 if v & 0x80 else h

    def _store_time(self, ns: int) -> None:
        t = time.gmtime(ns // NS)
        c = self.cmos
        c[RtcReg.SECONDS] = self._to_reg(t.tm_sec)
        c[RtcReg.MINUTES] = self._to_reg(t.tm_min)
        c[RtcReg.HOURS] = self._hour_to_reg(t.tm_hour)
        c[RtcReg.DAY_OF_WEEK] = self._to_reg((t.tm_wday + 1) % 7 + 1)
        c[RtcReg.DAY_OF_MONTH] = self._to_reg(t.tm_mday)
        c[RtcReg.MONTH] = self._to_reg(t.tm_mon)
        c[RtcReg.YEAR] = self._to_reg(t.tm_year % 100)

    def _set_time_from_cmos(self) -> None:
        """rtc_set_time: the guest wrote the clock; it runs from there."""
        c = self.cmos
        year = self._from_reg(c[RtcReg.YEAR]) + 100 * self._from_reg(c[RtcReg.CENTURY] or 0x20)
        try:
            secs = calendar.timegm((year, max(1, self._from_reg(c[RtcReg.MONTH])),
                                    max(1, self._from_reg(c[RtcReg.DAY_OF_MONTH])),
                                    self._hour_from_reg(c[RtcReg.HOURS]),
                                    self._from_reg(c[RtcReg.MINUTES]),
                                    self._from_reg(c[RtcReg.SECONDS]), 0, 0, 0))
        except (ValueError, OverflowError):
            return
        self.offset = secs * NS - self.clock()

    def update_in_progress(self) -> bool:
        if self.cmos[RtcReg.REG_B] & RegB.SET or (self.cmos[RtcReg.REG_A] & 0x70) != 0x20:
            return False
        return self.guest_ns() % NS >= NS - UIP_HOLD_NS

    # -- the chip
    def reset(self) -> None:
        c = self.cmos
        c[RtcReg.REG_B] &= ~(RegB.PIE | RegB.AIE | RegB.SQWE) & 0xFF
        c[RtcReg.REG_C] = 0
        self.index = 0

    def read(self, offset: int, size: int) -> int:
        if offset == 0:
            return 0xFF
        i = self.index
        c = self.cmos
        if i <= RtcReg.YEAR and i not in (RtcReg.SECONDS_ALARM, RtcReg.MINUTES_ALARM,
                                          RtcReg.HOURS_ALARM):
            if not c[RtcReg.REG_B] & RegB.SET:
                self._store_time(self.guest_ns())
            return c[i]
        if i == RtcReg.REG_A:
            return (c[i] & 0x7F) | (REG_A_UIP if self.update_in_progress() else 0)
        if i == RtcReg.REG_C:
            v = c[i]
            c[i] = 0
            return v
        return c[i]

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == 0:
            self.index = value & 0x7F
            return
        i = self.index
        c = self.cmos
        if i <= RtcReg.YEAR:
            if i in (RtcReg.SECONDS_ALARM, RtcReg.MINUTES_ALARM, RtcReg.HOURS_ALARM):
                c[i] = value
                return
            c[i] = value
            if not c[RtcReg.REG_B] & RegB.SET:
                self._set_time_from_cmos()
            return
        if i == RtcReg.REG_A:
            c[i] = (value & 0x7F) | (c[i] & REG_A_UIP)
            return
        if i == RtcReg.REG_B:
            old = c[i]
            if value & RegB.SET and not old & RegB.SET:
                self._store_time(self.guest_ns())
                self._stopped_at = self.guest_ns()
            if value & RegB.SET:
                value &= ~RegB.UIE & 0xFF           # QEMU: SET clears UIE
            new_mode = value & (RegB.DM | RegB.H24)
            if (old & (RegB.DM | RegB.H24)) != new_mode and not value & RegB.SET:
                pass
            c[i] = value
            if old & RegB.SET and not value & RegB.SET:
                self._stopped_at = None
                self._set_time_from_cmos()
            return
        if i in (RtcReg.REG_C, RtcReg.REG_D):
            return                                   # read-only
        c[i] = value
