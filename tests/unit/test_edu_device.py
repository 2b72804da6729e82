"""edu without a CPU: registers, factorial, DMA on the virtual clock, range check, MSI.

The device is built through the ``-device edu`` registry entry on a CPU-less machine, as
``-accel qtest`` does, so its DMA timer runs on the qtest virtual clock."""

import pytest

from uvirt.board.devices.edu import (DMA_START, Edu, EduReg, check_range, factorial32)
from uvirt.launch.device_table import BuildContext, create_device
from uvirt.cpu.machine import Machine

MS = 1_000_000


@pytest.fixture
def board():
    m = Machine(cpu=False)
    errors = []
    m.hardware_error = errors.append
    dev = create_device(m, BuildContext(), "edu", {})
    dev.config_write(0x10, 4, 0xFE000000)          # BAR0
    m.pci.apply(dev, dev.config_write(0x04, 2, 0x0006))   # memory + bus master
    yield m, dev, errors
    m.close()


def rd(m, off):
    return m.memory.read(0xFE000000 + off, 4)


def wr(m, off, value):
    m.memory.write(0xFE000000 + off, 4, value)


def test_identity_and_msi_capability(board):
    _, dev, _ = board
    c = dev.config
    assert (c.get(0, 2), c.get(2, 2), c.get(8, 1)) == (0x1234, 0x11E8, 0x10)
    assert c.get(0x0A, 2) == 0x00FF and c.get(0x3D, 1) == 1
    assert dev.capabilities() == [(0x05, 0x40)]
    assert c.get(0x42, 2) == 0x0080                 # 64-bit, one vector, no masking
    assert dev.bars[0].size == 1 << 20


def test_registers(board):
    m, _, _ = board
    assert rd(m, EduReg.IDENT) == 0x010000ED
    wr(m, EduReg.LIVENESS, 0x0F0F0000)
    assert rd(m, EduReg.LIVENESS) == 0xF0F0FFFF
    for off in (0x0C, 0x60, 0x64, 0x84, 0x100, 0xFFFFC):
        assert rd(m, off) == 0xFFFFFFFF, hex(off)
    assert m.memory.read(0xFE000000, 1) == 0          # .valid 4..8: a byte read is invalid
    wr(m, EduReg.STATUS, 0x81)
    assert rd(m, EduReg.STATUS) == 0x80


@pytest.mark.parametrize("n,want", [(0, 1), (1, 1), (5, 120), (12, 479001600),
                                    (13, 6227020800 % 2**32), (33, 0x80000000), (34, 0),
                                    (0xFFFFFFFF, 0)])
def test_factorial32(n, want):
    assert factorial32(n) == want


def test_factorial_runs_later_and_ignores_writes_meanwhile():
    later = []
    dev = Edu(post=later.append)
    regs = dev.region.device
    regs.write(EduReg.FACTORIAL, 4, 5)
    assert regs.read(EduReg.STATUS, 4) & 1 and regs.read(EduReg.FACTORIAL, 4) == 5
    regs.write(EduReg.FACTORIAL, 4, 7)                # computing: ignored
    later.pop()()
    assert regs.read(EduReg.STATUS, 4) == 0 and regs.read(EduReg.FACTORIAL, 4) == 120


@pytest.mark.parametrize("addr,size,ok", [(0x40000, 4095, True), (0x40000, 4096, False),
                                          (0x40000, 0, False), (0x3FFFF, 2, False),
                                          (0x40FFE, 1, True), (0x40FFF, 1, False),
                                          (2**64 - 1, 2, False)])
def test_check_range_is_edu_check_range(addr, size, ok):
    assert (check_range(addr, size) is None) == ok


def test_dma_on_the_virtual_clock(board):
    m, dev, errors = board
    clock = m.services.clock
    m.memory.guest.write(0x2000, bytes(range(16)))
    wr(m, EduReg.DMA_SRC, 0x2000)
    wr(m, EduReg.DMA_DST, DMA_START + 8)
    wr(m, EduReg.DMA_COUNT, 16)
    wr(m, EduReg.DMA_CMD, 0x5)                          # run, RAM -> device, interrupt
    wr(m, EduReg.DMA_SRC, 0x9999)                       # frozen while running
    clock.step(99 * MS)
    assert rd(m, EduReg.DMA_CMD) == 0x5
    clock.step(1 * MS)
    assert rd(m, EduReg.DMA_CMD) == 0x4 and rd(m, EduReg.DMA_SRC) == 0x2000
    assert bytes(dev.dma_buf[8:24]) == bytes(range(16))
    assert rd(m, EduReg.IRQ_STATUS) == 0x100 and dev.intx_level == 1
    wr(m, EduReg.IRQ_ACK, 0x100)
    assert dev.intx_level == 0 and not errors


def test_dma_out_of_range_is_a_hardware_error(board):
    m, dev, errors = board
    wr(m, EduReg.DMA_DST, DMA_START)
    wr(m, EduReg.DMA_COUNT, 4096)
    wr(m, EduReg.DMA_CMD, 1)
    m.services.clock.step(100 * MS)
    assert errors == ["EDU: DMA range 0x0000000000040000-0x0000000000040fff out of bounds "
                      "(0x0000000000040000-0x0000000000040fff)!"]
    assert dev.dead


def test_dma_address_mask_and_bus_master(board):
    m, dev, _ = board
    logged = []
    dev.log = logged.append
    dev.dma_buf[0:4] = b"abcd"
    wr(m, EduReg.DMA_SRC, DMA_START)
    wr(m, EduReg.DMA_DST, 0x10003000)                   # bit 28: clamped to 0x3000
    wr(m, EduReg.DMA_COUNT, 4)
    wr(m, EduReg.DMA_CMD, 3)
    m.services.clock.step(100 * MS)
    assert m.memory.guest.read(0x3000, 4) == b"abcd"
    assert logged == ["EDU: clamping DMA 0x0000000010003000 to 0x0000000000003000!"]
    m.pci.apply(dev, dev.config_write(0x04, 2, 0x0002))   # bus master off
    m.memory.guest.write(0x4000, b"wxyz")
    wr(m, EduReg.DMA_SRC, 0x4000)
    wr(m, EduReg.DMA_DST, DMA_START)
    wr(m, EduReg.DMA_CMD, 1)
    m.services.clock.step(100 * MS)
    assert bytes(dev.dma_buf[0:4]) == bytes(4)          # reads through a closed master: zeros


def test_msi_message_and_intx_interplay(board):
    m, dev, _ = board
    wr(m, EduReg.IRQ_RAISE, 0x8)
    assert dev.intx_level == 1
    dev.config_write(0x44, 4, 0x5000)                   # address: RAM (no APIC without a CPU)
    dev.config_write(0x4C, 2, 0x0043)
    dev.config_write(0x42, 2, 0x0021)                   # enable, QSIZE 2: clamped to 0
    assert dev.config.get(0x42, 2) == 0x0081
    assert dev.intx_level == 0                          # msi_write_config deasserts INTx
    wr(m, EduReg.IRQ_RAISE, 0)                          # status still 8: a message again
    assert m.memory.guest.read_u32(0x5000) == 0x43


def test_reset_keeps_registers(board):
    m, dev, _ = board
    wr(m, EduReg.LIVENESS, 1)
    wr(m, EduReg.IRQ_RAISE, 2)
    m.pci.reset()
    assert dev.addr4 == 0xFFFFFFFE and dev.irq_status == 2 and dev.intx_level == 0
    assert dev.config.get(0x42, 2) == 0x0080


def test_long_factorial_takes_qemus_time(monkeypatch):
    """Without a CPU thread a factorial is due n * FACT_NS_PER_STEP after the write (QEMU's
    loop); the first access after that finishes it."""
    import uvirt.board.devices.edu as edu_mod
    now = [100.0]
    monkeypatch.setattr(edu_mod.time, "monotonic", lambda: now[0])
    dev = Edu()
    regs = dev.region.device
    regs.write(EduReg.STATUS, 4, 0x80)
    regs.write(EduReg.FACTORIAL, 4, 0x1000000)
    due = 0x1000000 * edu_mod.FACT_NS_PER_STEP * 1e-9
    now[0] += due * 0.99
    assert regs.read(EduReg.STATUS, 4) == 0x81 and regs.read(EduReg.FACTORIAL, 4) == 0x1000000
    now[0] += due * 0.02
    assert regs.read(EduReg.STATUS, 4) == 0x80 and regs.read(EduReg.FACTORIAL, 4) == 0
    assert dev.irq_status == 1
