"""The 8254 with a fake clock: counting, latches, read-back status, modes 2 and 3 on
IRQ 0 (lazy edges), port 0x61."""

from uvirt.board.interrupts.pit import PIT_FREQ, Pit8254

NS = 1_000_000_000


class Clock:
    def __init__(self):
        self.t = 10 * NS

    def __call__(self):
        return self.t

    def ticks(self, n):
        self.t += -(-n * NS // PIT_FREQ)


def make():
    clock = Clock()
    levels = []
    pit = Pit8254(irq=levels.append, clock=clock)
    return pit, clock, levels


def program(pit, control, count):
    pit.write(3, 1, control)
    pit.write(0, 1, count & 0xFF)
    pit.write(0, 1, count >> 8)


def test_readback_status_mode2():
    pit, clock, _ = make()
    program(pit, 0x34, 1000)
    pit.write(3, 1, 0xE2)                    # read-back: status of channel 0
    assert pit.read(0, 1) == 0x34


def test_counter_latch_counts_down():
    pit, clock, _ = make()
    program(pit, 0x34, 1000)
    clock.ticks(100)
    pit.write(3, 1, 0x00)                    # latch channel 0
    lo, hi = pit.read(0, 1), pit.read(0, 1)
    assert (hi << 8 | lo) == 900


def test_mode2_rising_edge_each_period_reaches_irq0():
    pit, clock, levels = make()
    program(pit, 0x34, 1000)
    start = clock.t
    assert pit.next_rising_edge() == start + -(-1000 * NS // PIT_FREQ)
    clock.ticks(999)
    pit.sync()
    assert 1 not in levels
    clock.ticks(2)
    pit.sync()
    assert levels[-2:] == [1, 0] or levels[-1] == 1
    n = len(levels)
    clock.ticks(10 * 1000)                   # ten periods later: one edge suffices
    pit.sync()
    assert 1 in levels[n:]


def test_mode3_square_wave_level():
    pit, clock, levels = make()
    program(pit, 0x36, 1000)
    assert pit.channels[0].get_out(clock.t) == 1
    clock.ticks(600)
    assert pit.channels[0].get_out(clock.t) == 0


def test_port61_gate_and_refresh_toggle():
    pit, clock, _ = make()
    sp = pit.speaker_device()
    a, b = sp.read(0, 1), sp.read(0, 1)
    assert (a ^ b) & 0x10 and not a & 1
    sp.write(0, 1, 0x03)
    assert sp.read(0, 1) & 0x03 == 0x03
