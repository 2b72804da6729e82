"""MC146818 RTC and CMOS (uvirt/board/devices/rtc.py) without a CPU."""

import calendar

from uvirt.board.devices.rtc import Rtc, pc_cmos_memory

T0 = calendar.timegm((2026, 12, 5, 13, 45, 30, 0, 0, 0))


class Clock:
    def __init__(self):
        self.ns = 0

    def __call__(self):
        return self.ns


def rtc():
    c = Clock()
    return Rtc(pc_cmos_memory(128 << 20, 0), clock=c, base_utc=T0), c


def rd(r, i):
    r.write(0, 1, 0x80 | i)
    return r.read(1, 1)


def wr(r, i, v):
    r.write(0, 1, i)
    r.write(1, 1, v)


def test_cmos_contents_as_pc_cmos_init():
    r, _ = rtc()
    assert [rd(r, i) for i in (0x0A, 0x0B, 0x0C, 0x0D)] == [0x26, 0x02, 0x00, 0x80]
    assert (rd(r, 0x15), rd(r, 0x16)) == (0x80, 0x02)              # 640 KiB
    assert (rd(r, 0x17), rd(r, 0x18)) == (0xFF, 0xFF)              # 127 MiB: capped at 65535 KiB
    assert (rd(r, 0x34), rd(r, 0x35)) == (0x00, 0x07)              # 112 MiB in 64 KiB
    assert (rd(r, 0x3D), rd(r, 0x38), rd(r, 0x14), rd(r, 0x5F)) == (0x12, 0x30, 0x06, 0)
    assert r.read(0, 1) == 0xFF


def test_time_in_bcd_and_binary_24_and_12_hour():
    r, clk = rtc()
    assert [rd(r, i) for i in (0, 2, 4, 6, 7, 8, 9, 0x32)] == [0x30, 0x45, 0x13, 0x07, 0x05, 0x12, 0x26, 0x20]
    clk.ns += 2_000_000_000
    assert rd(r, 0) == 0x32
    wr(r, 0x0B, 0x06)                                             # binary, 24 h
    assert (rd(r, 0), rd(r, 4)) == (32, 13)
    wr(r, 0x0B, 0x04)                                             # binary, 12 h: 1 PM
    assert rd(r, 4) == 0x81


def test_set_stops_the_clock_and_writes_start_it():
    r, clk = rtc()
    wr(r, 0x0B, 0x82)
    wr(r, 0x00, 0x00)
    wr(r, 0x02, 0x00)
    wr(r, 0x04, 0x00)
    clk.ns += 5_000_000_000
    assert rd(r, 0) == 0x00                                       # stopped while SET
    wr(r, 0x0B, 0x02)
    clk.ns += 3_000_000_000
    assert (rd(r, 4), rd(r, 2), rd(r, 0)) == (0x00, 0x00, 0x03)


def test_uip_in_the_last_244_us_of_a_second_and_reg_c_clears():
    r, clk = rtc()
    assert not rd(r, 0x0A) & 0x80
    clk.ns += 999_900_000
    assert rd(r, 0x0A) & 0x80
    r.cmos[0x0C] = 0x90
    assert rd(r, 0x0C) == 0x90 and rd(r, 0x0C) == 0


def test_any_register_values_keep_the_chip_working():
    """rtc-test's fuzz-registers: random writes and reads of registers 0-15 (years past
    9999 included) never raise."""
    import random
    for seed in range(8):
        rnd = random.Random(seed)
        r, clk = rtc()
        for _ in range(300):
            reg, val = rnd.randrange(16), rnd.randrange(256)
            wr(r, reg, val)
            rd(r, reg)
            clk.ns += rnd.randrange(10**9)


def test_periodic_interrupt_on_a_lazy_timer():
    levels = []
    c = Clock()
    r = Rtc(clock=c, base_utc=T0, set_irq=levels.append)
    wr(r, 0x0A, 0x26)                    # rate 6: 1024 Hz
    wr(r, 0x0B, 0x42)                    # PIE
    c.ns += 2_000_000
    assert rd(r, 0x0C) & 0xC0 == 0xC0     # IRQF | PF
    assert 1 in levels and levels[-1] == 0


def test_gmtime_matches_the_c_library():
    import time
    from uvirt.board.devices.rtc import days_from_civil, gmtime
    for t in (0, 86399, 951782400, T0, 4102444800, -86400 * 400):
        assert tuple(gmtime(t))[:7] == tuple(time.gmtime(t))[:7]
    assert days_from_civil(2026, 12, 5) * 86400 == calendar.timegm((2026, 12, 5, 0, 0, 0))


def test_pc_cmos_memory_is_shared_values_but_each_call_gets_its_own_dict():
    """pc's CMOS contents are a pure function of the configuration (made once): a caller
    changing its dict changes nothing for the next one; another size gives other bytes."""
    first = pc_cmos_memory(128 << 20, 0)
    assert (first[0x34], first[0x35]) == (0x00, 0x07)       # (128 - 16) MiB in 64 KiB
    first[0x34] = 0xEE
    assert pc_cmos_memory(128 << 20, 0)[0x34] == 0x00
    assert pc_cmos_memory(256 << 20, 0)[0x35] == 0x0F
