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

Time follows QEMU's model (``get_guest_rtc_ns``: base_rtc seconds + clock - last_update
+ offset): the clock is the guest's virtual time (the host's monotonic clock, as the PIT
and the PM timer; under ``-accel qtest`` with ``-rtc clock=vm`` the qtest clock that
``clock_step`` moves), starting at the host's UTC time (``-rtc base=utc``).  Divider
reset (REG_A DV = 11x) stops the clock and the first update after it comes 500 ms later;
SET stops updates of the registers.  The update-ended/alarm timer (``check_update_timer``,
``rtc_update_timer``, ``get_next_alarm`` with don't-care values 0xC0-0xFF) and the
periodic timer (rates 3-15 of REG_A, lost ticks discarded: QEMU's default policy) set
REG_C's UF/AF/PF and raise IRQ 8 with IRQF when REG_B enables them; reading REG_C lowers
it.  Timers are ``timer(callback)`` objects (qtest: the virtual clock's; otherwise
``LazyTimer``s that fire when the guest next touches the chip, in deadline order).
"""

from __future__ import annotations

import time
from enum import IntEnum, IntFlag
from functools import lru_cache
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


#: the REG_B bits as plain ints for the code: ``int & IntFlag`` makes a new flag through
#: enum.py (~1.5 us a test, a dozen when a board is built)
_H24, _DM, _SET = RegB.H24.value, RegB.DM.value, RegB.SET.value
_PIE, _AIE, _SQWE, _UIE = RegB.PIE.value, RegB.AIE.value, RegB.SQWE.value, RegB.UIE.value

REG_A_UIP = 0x80
#: QEMU's RTC_IBM_PS2_CENTURY_BYTE: an access there is an access to 0x32 (and the index
#: moves there)
IBM_PS2_CENTURY = 0x37
REG_D_VRT = 0x80
CMOS_SIZE = 128


def pc_cmos_memory(ram_below_4g: int, ram_above_4g: int, cpus: int = 1,
                   boot_order: str = "cad") -> dict[int, int]:
    """What pc_cmos_init writes (no floppy, no IDE disk, PS/2 mouse, FPU)."""
    return dict(_pc_cmos_memory(ram_below_4g, ram_above_4g, cpus, boot_order))


@lru_cache(maxsize=16)
def _pc_cmos_memory(ram_below_4g: int, ram_above_4g: int, cpus: int,
                    boot_order: str) -> tuple[tuple[int, int], ...]:
    """``pc_cmos_memory`` as (offset, value) pairs: a pure function of the machine's
    configuration, made once for every machine of one configuration."""
    nibble = {"a": 1, "b": 1, "c": 2, "d": 3, "n": 4}
    bds = [nibble[c] for c in boot_order] + [0, 0, 0]
    base = min(ram_below_4g // 1024, 640)
    ext = min(max(ram_below_4g - (1 << 20), 0) // 1024, 65535)
    high = min(max(ram_below_4g - (16 << 20), 0) // 65536, 65535)
    above = ram_above_4g // 65536
    return tuple({0x10: 0, 0x12: 0, 0x14: 0x06, 0x15: base & 0xFF, 0x16: base >> 8,
                  0x17: ext & 0xFF, 0x18: ext >> 8, 0x30: ext & 0xFF, 0x31: ext >> 8,
                  0x34: high & 0xFF, 0x35: high >> 8, 0x5B: above & 0xFF,
                  0x5C: (above >> 8) & 0xFF, 0x5D: (above >> 16) & 0xFF, 0x5F: cpus - 1,
                  0x3D: bds[1] << 4 | bds[0], 0x38: bds[2] << 4, 0x39: 0}.items())



REG_C_IRQF, REG_C_PF, REG_C_AF, REG_C_UF, REG_C_MASK = 0x80, 0x40, 0x20, 0x10, 0x70
RTC_CLOCK_RATE = 32768
SEC_PER_MIN, MIN_PER_HOUR, HOUR_PER_DAY, SEC_PER_DAY = 60, 60, 24, 86400


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date, any year (H. Hinnant's
    algorithm; ``calendar.timegm`` stops at year 9999, QEMU's mktimegm does not)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def gmtime(secs: int) -> time.struct_time:
    """``gmtime_r`` for any number of seconds (the inverse of days_from_civil)."""
    z, rem = divmod(secs, 86400)
    wday = (z + 3) % 7                      # 1970-01-01 was a Thursday; Monday = 0
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    y += m <= 2
    return time.struct_time((y, m, d, rem // 3600, rem // 60 % 60, rem % 60, wday, 0, 0))


class LazyTimer:
    """A timer that fires when its owner polls (``Rtc._poll``), not asynchronously."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("expire",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.expire: int | None = None

    @property
    def pending(self) -> bool:
        return self.expire is not None

    def mod(self, expire_ns: int) -> None:
        self.expire = expire_ns

    def delete(self) -> None:
        self.expire = None


def periodic_period_to_clock(code: int) -> int:
    if not code:
        return 0
    if code <= 2:
        code += 7
    return 1 << (code - 1)


def periodic_clock_to_ns(clocks: int) -> int:
    return clocks * NS // RTC_CLOCK_RATE


#: the registers as plain ints for the code (an IntEnum member costs an attribute
#: lookup through enum's metaclass at every use)
_CENTURY = RtcReg.CENTURY.value
_DAY_OF_MONTH = RtcReg.DAY_OF_MONTH.value
_DAY_OF_WEEK = RtcReg.DAY_OF_WEEK.value
_HOURS = RtcReg.HOURS.value
_HOURS_ALARM = RtcReg.HOURS_ALARM.value
_MINUTES = RtcReg.MINUTES.value
_MINUTES_ALARM = RtcReg.MINUTES_ALARM.value
_MONTH = RtcReg.MONTH.value
_REG_A = RtcReg.REG_A.value
_REG_B = RtcReg.REG_B.value
_REG_C = RtcReg.REG_C.value
_REG_D = RtcReg.REG_D.value
_SECONDS = RtcReg.SECONDS.value
_SECONDS_ALARM = RtcReg.SECONDS_ALARM.value
_SHUTDOWN = RtcReg.SHUTDOWN.value
_YEAR = RtcReg.YEAR.value


class Rtc:
    """The chip and its CMOS (ports 0x70/0x71 through ``read``/``write``)."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = (
        "cmos", "index", "period", "next_periodic_time", "next_alarm_time", "base_rtc",
        "last_update", "offset", "update_timer", "periodic_timer",
    )

    def __init__(self, cmos: dict[int, int] | None = None, *,
                 clock: Callable[[], int] = time.monotonic_ns, base_utc: float | None = None,
                 set_irq: Callable[[int], None] | None = None,
                 timer: Callable[[Callable[[], None]], object] | None = None) -> None:
        self.cmos = bytearray(CMOS_SIZE)
        for k, v in (cmos or {}).items():
            self.cmos[k] = v
        self.cmos[_REG_A] = 0x26
        self.cmos[_REG_B] = _H24
        self.cmos[_REG_C] = 0
        self.cmos[_REG_D] = REG_D_VRT
        self.index = 0
        self.set_irq = set_irq or (lambda level: None)
        self.period = 0
        self.next_periodic_time = 0
        self.next_alarm_time = 0
        self._lazy: list[LazyTimer] = []
        self.use_clock(clock, timer)
        base = time.time() if base_utc is None else base_utc
        self._set_date(int(base))
        self.check_update_timer()

    def use_clock(self, clock: Callable[[], int], timer=None) -> None:
        """Switch the time source (qtest's virtual clock); the time read stays the same."""
        old = getattr(self, "clock", None)
        now_guest = self.guest_ns() if old is not None else None
        self.clock = clock
        self._lazy = []
        make = timer or self._lazy_timer
        self.update_timer = make(self._update_timer_fired)
        self.periodic_timer = make(self._periodic_timer_fired)
        if now_guest is not None:
            self.base_rtc, self.offset = now_guest // NS, now_guest % NS
            self.last_update = clock()
            self.check_update_timer()

    def _lazy_timer(self, callback):
        t = LazyTimer(callback)
        self._lazy.append(t)
        return t

    def _poll(self) -> None:
        """Run the lazy timers that fell due, in deadline order (each sees its own
        deadline as "now" only approximately: the guest's access time)."""
        while True:
            due = [t for t in self._lazy if t.expire is not None and t.expire <= self.clock()]
            if not due:
                return
            t = min(due, key=lambda t: t.expire)
            t.expire = None
            t.callback()

    def _set_date(self, secs: int) -> None:
        """rtc_set_date_from_host."""
        self.base_rtc = secs
        self.last_update = self.clock()
        self.offset = 0
        self._set_cmos(gmtime(secs))

    # -- QEMU's time model
    def running(self) -> bool:
        return not self.cmos[_REG_B] & _SET and (self.cmos[_REG_A] & 0x70) <= 0x20

    def guest_ns(self) -> int:
        return self.base_rtc * NS + self.clock() - self.last_update + self.offset

    def _to_bcd(self, v: int) -> int:
        if self.cmos[_REG_B] & _DM:
            return v & 0xFF
        return ((v // 10) << 4 | v % 10) & 0xFF

    def _from_bcd(self, v: int) -> int:
        if v & 0xC0 == 0xC0:
            return -1
        if self.cmos[_REG_B] & _DM:
            return v
        return (v >> 4) * 10 + (v & 0x0F)

    def _set_cmos(self, t: time.struct_time) -> None:
        c = self.cmos
        c[_SECONDS] = self._to_bcd(t.tm_sec)
        c[_MINUTES] = self._to_bcd(t.tm_min)
        if c[_REG_B] & _H24:
            c[_HOURS] = self._to_bcd(t.tm_hour)
        else:
            c[_HOURS] = self._to_bcd(t.tm_hour % 12 or 12) | (0x80 if t.tm_hour >= 12 else 0)
        c[_DAY_OF_WEEK] = self._to_bcd((t.tm_wday + 1) % 7 + 1)
        c[_DAY_OF_MONTH] = self._to_bcd(t.tm_mday)
        c[_MONTH] = self._to_bcd(t.tm_mon)
        c[_YEAR] = self._to_bcd(t.tm_year % 100)
        c[_CENTURY] = self._to_bcd(t.tm_year // 100)

    def _get_time(self) -> int:
        """rtc_get_time + mktimegm: the registers as seconds since the epoch."""
        c = self.cmos
        hour = self._from_bcd(c[_HOURS] & 0x7F)
        if not c[_REG_B] & _H24:
            hour %= 12
            if c[_HOURS] & 0x80:
                hour += 12
        year = self._from_bcd(c[_YEAR]) + self._from_bcd(c[_CENTURY]) * 100
        mon = self._from_bcd(c[_MONTH])
        # mktimegm normalises like timegm: days/months out of range roll over
        days = days_from_civil(year + (mon - 1) // 12, (mon - 1) % 12 + 1, 1)
        days += self._from_bcd(c[_DAY_OF_MONTH]) - 1
        return days * 86400 + hour * 3600 + self._from_bcd(c[_MINUTES]) * 60 \
            + self._from_bcd(c[_SECONDS])

    def set_time(self) -> None:
        self.base_rtc = self._get_time()
        self.last_update = self.clock()

    def update_time(self) -> None:
        if not self.cmos[_REG_B] & _SET:
            self._set_cmos(gmtime(self.guest_ns() // NS))

    def update_in_progress(self) -> bool:
        if not self.running():
            return False
        t = self.update_timer
        if t.pending and t.expire is not None and self.clock() >= t.expire - UIP_HOLD_NS:
            self.cmos[_REG_A] |= REG_A_UIP
            return True
        return self.guest_ns() % NS >= NS - UIP_HOLD_NS

    def _convert_hour(self, hour: int) -> int:
        if not self.cmos[_REG_B] & _H24:
            hour %= 12
            if self.cmos[_HOURS] & 0x80:
                hour += 12
        return hour

    def _next_alarm(self) -> int:
        """get_next_alarm: seconds until the alarm (1..86400)."""
        self.update_time()
        c = self.cmos
        a_sec = self._from_bcd(c[_SECONDS_ALARM])
        a_min = self._from_bcd(c[_MINUTES_ALARM])
        a_hour = self._from_bcd(c[_HOURS_ALARM])
        a_hour = -1 if a_hour == -1 else self._convert_hour(a_hour)
        c_sec = self._from_bcd(c[_SECONDS])
        c_min = self._from_bcd(c[_MINUTES])
        c_hour = self._convert_hour(self._from_bcd(c[_HOURS]))
        if a_hour == -1:
            a_hour = c_hour
            if a_min == -1:
                a_min = c_min
                if a_sec == -1:
                    a_sec = c_sec + 1
                elif c_sec > a_sec:
                    a_min += 1
            elif c_min == a_min:
                if a_sec == -1:
                    a_sec = c_sec + 1
                elif c_sec > a_sec:
                    a_hour += 1
                if a_sec == SEC_PER_MIN:
                    a_sec = 0
                    a_hour += 1
            elif c_min > a_min:
                a_hour += 1
        elif c_hour == a_hour:
            if a_min == -1:
                a_min = c_min
                if a_sec == -1:
                    a_sec = c_sec + 1
                elif c_sec > a_sec:
                    a_min += 1
                if a_sec == SEC_PER_MIN:
                    a_sec = 0
                    a_min += 1
                a_min %= MIN_PER_HOUR
            elif c_min == a_min:
                if a_sec == -1:
                    a_sec = c_sec + 1
                a_sec %= SEC_PER_MIN
        if a_min == -1:
            a_min = 0
        if a_sec == -1:
            a_sec = 0
        if a_sec == SEC_PER_MIN:
            a_sec = 0
            a_min += 1
        if a_min == MIN_PER_HOUR:
            a_min = 0
            a_hour += 1
        a_hour %= HOUR_PER_DAY
        sec = ((a_hour - c_hour) * MIN_PER_HOUR + a_min - c_min) * SEC_PER_MIN + a_sec - c_sec
        return sec + SEC_PER_DAY if sec <= 0 else sec

    def check_update_timer(self) -> None:
        c = self.cmos
        if c[_REG_A] & 0x60 == 0x60:
            self.update_timer.delete()
            return
        guest_nsec = self.guest_ns() % NS
        next_update = self.clock() + NS - guest_nsec
        self.next_alarm_time = next_update + (self._next_alarm() - 1) * NS
        if not c[_REG_A] & REG_A_UIP and c[_REG_C] & REG_C_UF:
            if c[_REG_B] & _SET or c[_REG_C] & REG_C_AF:
                self.update_timer.delete()
                return
            next_update = self.next_alarm_time
        if next_update != self.update_timer.expire:
            self.update_timer.mod(next_update)

    def _update_timer_fired(self) -> None:
        c = self.cmos
        self.update_time()
        c[_REG_A] &= ~REG_A_UIP & 0xFF
        irqs = REG_C_UF
        if self.clock() >= self.next_alarm_time:
            irqs |= REG_C_AF
        new = irqs & ~c[_REG_C]
        c[_REG_C] |= irqs
        if new & c[_REG_B]:
            c[_REG_C] |= REG_C_IRQF
            self.set_irq(1)
        self.check_update_timer()

    def _periodic_ticks(self) -> int:
        if not self.cmos[_REG_B] & _PIE:
            return 0
        return periodic_period_to_clock(self.cmos[_REG_A] & 0x0F)

    def _periodic_update(self, current: int, old_period: int, period_change: bool) -> None:
        period = self.period = self._periodic_ticks()
        if not period:
            self.periodic_timer.delete()
            return
        cur_clock = current * RTC_CLOCK_RATE // NS
        lost = 0
        if old_period and period_change:
            next_clock = self.next_periodic_time * RTC_CLOCK_RATE // NS
            lost = max(0, cur_clock - (next_clock - old_period))
        lost = min(lost, period)
        self.next_periodic_time = periodic_clock_to_ns(cur_clock + period - lost) + 1
        self.periodic_timer.mod(self.next_periodic_time)

    def _periodic_timer_fired(self) -> None:
        self._periodic_update(self.next_periodic_time, self.period, False)
        c = self.cmos
        c[_REG_C] |= REG_C_PF
        if c[_REG_B] & _PIE:
            c[_REG_C] |= REG_C_IRQF
            self.set_irq(1)

    # -- the chip
    def reset(self) -> None:
        c = self.cmos
        if c[_SHUTDOWN] != 0xFE:
            c[_SHUTDOWN] = 0
        c[_REG_B] &= ~(_PIE | _AIE | _SQWE) & 0xFF
        c[_REG_C] &= ~(REG_C_UF | REG_C_IRQF | REG_C_PF | REG_C_AF) & 0xFF
        self.check_update_timer()
        self.set_irq(0)
        self.index = 0

    def read(self, offset: int, size: int) -> int:
        if offset == 0:
            return 0xFF
        self._poll()
        if self.index == IBM_PS2_CENTURY:
            self.index = _CENTURY
        i, c = self.index, self.cmos
        if i in (_SECONDS, _MINUTES, _HOURS, _DAY_OF_WEEK,
                 _DAY_OF_MONTH, _MONTH, _YEAR, _CENTURY):
            if self.running():
                self.update_time()
            return c[i]
        if i == _REG_A:
            return c[i] | (REG_A_UIP if self.update_in_progress() else 0)
        if i == _REG_C:
            v = c[i]
            self.set_irq(0)
            c[i] = 0
            if v & (REG_C_UF | REG_C_AF):
                self.check_update_timer()
            return v
        return c[i]

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == 0:
            self.index = value & 0x7F
            return
        self._poll()
        if self.index == IBM_PS2_CENTURY:
            self.index = _CENTURY
        i, c = self.index, self.cmos
        if i in (_SECONDS_ALARM, _MINUTES_ALARM, _HOURS_ALARM):
            c[i] = value
            self.check_update_timer()
        elif i in (_CENTURY, _SECONDS, _MINUTES, _HOURS, _DAY_OF_WEEK,
                   _DAY_OF_MONTH, _MONTH, _YEAR):
            c[i] = value
            if self.running():
                self.set_time()
                self.check_update_timer()
        elif i == _REG_A:
            change = (c[i] ^ value) & 0x0F
            old_period = self._periodic_ticks()
            if value & 0x60 == 0x60:
                if self.running():
                    self.update_time()
                c[i] &= ~REG_A_UIP & 0xFF
            elif c[i] & 0x60 == 0x60 and value & 0x70 <= 0x20:
                if not c[_REG_B] & _SET:
                    self.offset = 500_000_000
                    self.set_time()
                c[i] &= ~REG_A_UIP & 0xFF
            c[i] = (value & ~REG_A_UIP & 0xFF) | (c[i] & REG_A_UIP)
            if change:
                self._periodic_update(self.clock(), old_period, True)
            self.check_update_timer()
        elif i == _REG_B:
            change = (c[i] ^ value) & _PIE
            old_period = self._periodic_ticks()
            if value & _SET:
                if self.running():
                    self.update_time()
                c[_REG_A] &= ~REG_A_UIP & 0xFF
                value &= ~_UIE & 0xFF
            elif c[i] & _SET and (c[_REG_A] & 0x70) <= 0x20:
                self.offset = self.guest_ns() % NS
                self.set_time()
            if value & c[_REG_C] & REG_C_MASK:
                c[_REG_C] |= REG_C_IRQF
                self.set_irq(1)
            else:
                c[_REG_C] &= ~REG_C_IRQF & 0xFF
                self.set_irq(0)
            c[i] = value
            if change:
                self._periodic_update(self.clock(), old_period, True)
            self.check_update_timer()
        elif i in (_REG_C, _REG_D):
            pass                                     # read-only
        else:
            c[i] = value
