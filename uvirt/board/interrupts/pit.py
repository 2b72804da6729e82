"""The 8254 PIT of QEMU's ``pc`` (``hw/timer/i8254.c``, ``i8254_common.c``) and the
port 0x61 bits of ``pcspk`` that a guest uses to gate channel 2.

Time is the host's monotonic clock, as QEMU's virtual clock under TCG without icount:
the counter runs at ``PIT_FREQ`` = 1 193 182 Hz from the moment a count is loaded.
Counts, latches, read-back (``0xE2`` etc.) and the output formulas are QEMU's, including
its mode 2 output (high for one tick at each period end, ``d % count == 0 and d != 0``).

IRQ 0 is evaluated lazily: QEMU raises and lowers the line at every output transition
from a host timer; here ``sync(now)`` replays the transitions since the last sync (the
PIC's edge detector only needs "was there a rising edge" and the final level), and
``next_rising_edge(now)`` says when the next one is due, so the machine can stop the CPU
then.  Nothing here calls the CPU.
"""

from __future__ import annotations

import time
from typing import Callable

PIT_FREQ = 1193182
NS = 1_000_000_000

RW_LSB, RW_MSB, RW_WORD0, RW_WORD1 = 1, 2, 3, 4


def _ticks(ns: int) -> int:
    return ns * PIT_FREQ // NS if ns > 0 else 0


def _ns(ticks: int) -> int:
    return -(-ticks * NS // PIT_FREQ)          # ceiling: the first ns at which d >= ticks


class PitChannel:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = (
        "count", "latched_count", "count_latched", "status_latched", "status", "read_state",
        "write_state", "rw_mode", "write_latch", "mode", "bcd", "gate", "count_load_time",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.count = 0x10000
        self.latched_count = 0
        self.count_latched = 0
        self.status_latched = 0
        self.status = 0
        self.read_state = self.write_state = self.rw_mode = 0
        self.write_latch = 0
        self.mode = 3
        self.bcd = 0
        self.gate = 1 if index != 2 else 0
        self.count_load_time = 0

    def ticks(self, now: int) -> int:
        return _ticks(now - self.count_load_time)

    def get_count(self, now: int) -> int:
        d = self.ticks(now)
        if self.mode in (0, 1, 4, 5):
            return (self.count - d) & 0xFFFF
        if self.mode == 3:
            return self.count - ((2 * d) % self.count)
        return self.count - (d % self.count)

    def out_at(self, d: int) -> int:
        m, c = self.mode, self.count
        if m == 1:
            return int(d < c)
        if m == 2:
            return int(d % c == 0 and d != 0)
        if m == 3:
            return int(d % c < (c + 1) >> 1)
        if m in (4, 5):
            return int(d == c)
        return int(d >= c)                    # mode 0 and the undefined 6/7 of QEMU's default

    def get_out(self, now: int) -> int:
        return self.out_at(self.ticks(now))

    def rising_edges(self, d0: int, d1: int) -> bool:
        """Was there a rising output edge at some tick in (d0, d1]?"""
        if d1 <= d0:
            return False
        m, c = self.mode & 7, self.count
        if m in (2, 3, 6, 7):
            return d1 // c > d0 // c
        if m in (0, 4, 5):
            return d0 < c <= d1
        return False                          # mode 1 only falls

    def next_rising_ticks(self, d: int) -> int | None:
        m, c = self.mode & 7, self.count
        if m in (2, 3, 6, 7):
            return (d // c + 1) * c
        if m in (0, 4, 5):
            return c if d < c else None
        return None


class Pit8254:
    """Three channels; channel 0 drives ISA IRQ 0 through ``irq(level)``."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("channels", "_synced", "_level", "speaker_data_on", "refresh_clock")

    def __init__(self, irq: Callable[[int], None] = lambda level: None,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.irq = irq
        self.clock = clock
        self.channels = [PitChannel(i) for i in range(3)]
        self._synced = 0
        self._level = 0
        self.speaker_data_on = 0
        self.refresh_clock = 0
        self.reset()

    def reset(self) -> None:
        now = self.clock()
        for ch in self.channels:
            ch.__init__(ch.index)
            ch.count_load_time = now
        self._synced = now
        self._level = self.channels[0].get_out(now)

    # -- IRQ 0, lazily
    def sync(self, now: int | None = None) -> None:
        """Bring IRQ 0 up to ``now``: a rising edge since the last sync reaches the PIC."""
        if now is None:
            now = self.clock()
        ch = self.channels[0]
        d0, d1 = ch.ticks(self._synced), ch.ticks(now)
        self._synced = now
        level = ch.out_at(d1)
        if ch.rising_edges(d0, d1):
            if self._level:
                self.irq(0)
            self.irq(1)
            self._level = 1
        if level != self._level:
            self.irq(level)
            self._level = level

    def next_rising_edge(self, now: int | None = None) -> int | None:
        """Host time (ns, monotonic) of channel 0's next rising output edge."""
        if now is None:
            now = self.clock()
        ch = self.channels[0]
        t = ch.next_rising_ticks(ch.ticks(now))
        return None if t is None else ch.count_load_time + _ns(t)

    # -- ports 0x40-0x43
    def _load_count(self, ch: PitChannel, val: int) -> None:
        if ch.index == 0:
            self.sync()
        ch.count = val or 0x10000
        ch.count_load_time = self.clock()
        if ch.index == 0:
            # QEMU sets the line to the new output at once (pit_irq_timer_update).
            self._synced = ch.count_load_time
            level = ch.get_out(ch.count_load_time)
            if level != self._level:
                self.irq(level)
                self._level = level

    def _latch_count(self, ch: PitChannel) -> None:
        if not ch.count_latched:
            ch.latched_count = ch.get_count(self.clock())
            ch.count_latched = ch.rw_mode

    def write(self, offset: int, size: int, value: int) -> None:
        addr, val = offset & 3, value & 0xFF
        if addr == 3:
            channel = val >> 6
            if channel == 3:                  # read-back command
                for ch in self.channels:
                    if val & (2 << ch.index):
                        if not val & 0x20:
                            self._latch_count(ch)
                        if not val & 0x10 and not ch.status_latched:
                            ch.status = ((ch.get_out(self.clock()) << 7) | (ch.rw_mode << 4)
                                         | (ch.mode << 1) | ch.bcd)
                            ch.status_latched = 1
                return
            ch = self.channels[channel]
            access = (val >> 4) & 3
            if access == 0:
                self._latch_count(ch)
            else:
                if ch.index == 0:
                    self.sync()
                ch.rw_mode = ch.read_state = ch.write_state = access
                ch.mode = (val >> 1) & 7
                ch.bcd = val & 1
            return
        ch = self.channels[addr]
        if ch.write_state == RW_MSB:
            self._load_count(ch, val << 8)
        elif ch.write_state == RW_WORD0:
            ch.write_latch = val
            ch.write_state = RW_WORD1
        elif ch.write_state == RW_WORD1:
            self._load_count(ch, ch.write_latch | (val << 8))
            ch.write_state = RW_WORD0
        else:
            self._load_count(ch, val)

    def read(self, offset: int, size: int) -> int:
        addr = offset & 3
        if addr == 3:
            return 0                          # the control word is write-only
        ch = self.channels[addr]
        if ch.status_latched:
            ch.status_latched = 0
            return ch.status
        if ch.count_latched:
            if ch.count_latched == RW_MSB:
                ch.count_latched = 0
                return (ch.latched_count >> 8) & 0xFF
            if ch.count_latched == RW_WORD0:
                ch.count_latched = RW_MSB
                return ch.latched_count & 0xFF
            ch.count_latched = 0
            return ch.latched_count & 0xFF
        count = ch.get_count(self.clock())
        if ch.read_state == RW_MSB:
            return (count >> 8) & 0xFF
        if ch.read_state == RW_WORD0:
            ch.read_state = RW_WORD1
            return count & 0xFF
        if ch.read_state == RW_WORD1:
            ch.read_state = RW_WORD0
            return (count >> 8) & 0xFF
        return count & 0xFF

    # -- port 0x61 (QEMU pcspk_io_read/write): gate 2, speaker data, refresh toggle, OUT2
    def set_gate(self, index: int, val: int) -> None:
        ch = self.channels[index]
        if ch.mode in (1, 2, 3, 5) and ch.gate < val:
            ch.count_load_time = self.clock()   # restart counting on a rising gate
        ch.gate = val

    def speaker_device(self) -> "_SpeakerPort":
        return _SpeakerPort(self)


class _SpeakerPort:
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, pit: Pit8254) -> None:
        self.pit = pit

    def read(self, offset: int, size: int) -> int:
        p = self.pit
        ch2 = p.channels[2]
        p.refresh_clock ^= 1 << 4
        return ch2.gate | (p.speaker_data_on << 1) | p.refresh_clock | (ch2.get_out(p.clock()) << 5)

    def write(self, offset: int, size: int, value: int) -> None:
        p = self.pit
        p.speaker_data_on = (value >> 1) & 1
        p.set_gate(2, value & 1)
