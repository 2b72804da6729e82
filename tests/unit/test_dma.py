"""Device work (uvirt/board/dma.py) and device DMA that lands in device registers, without a CPU.

QEMU 7.2.22 (Debian's, with the 8.0 re-entrancy guard backported) runs virtio request
processing from its main loop (ioeventfd), where no device is inside an access: a DMA
write into a device's notify register only signals its eventfd.  uvirt queues the work
behind the current piece instead of recursing; an access to a device's registers from
inside an access of the same device is dropped (QEMU ``access_with_adjusted_size``).
"""

from __future__ import annotations

import inspect

import pytest

from uvirt.boot import firmware_step as bios
from uvirt.launch.device_table import BuildContext, create_device
from uvirt.board.dma import DeviceWork, ReentrancyGuard
from uvirt.cpu.machine import Machine
from uvirt.board.memory.regions import MemoryMap, MmioRegion, RamRegion
from uvirt.testing.mock_driver import MockSplitQueue
from uvirt.virtio.queue import VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE
from uvirt.virtio.pci import CommonCfg, LegacyReg

RING = 0x200000


# ------------------------------------------------------------------ the work queue

def test_work_outside_an_access_runs_at_once_inside_one_after_it():
    w = DeviceWork()
    log = []
    w.schedule(lambda: log.append("now"))
    assert log == ["now"]
    w.enter()
    w.schedule(lambda: log.append("later"))
    assert log == ["now"]
    w.leave()
    assert log == ["now", "later"]


def test_work_scheduled_by_work_runs_after_it_fifo_never_nested():
    w = DeviceWork()
    log, depth = [], [0, 0]

    def job(n):
        def run():
            depth[0] += 1
            depth[1] = max(depth[1], depth[0])
            log.append(n)
            if n < 50:
                w.schedule(job(n + 1))            # a DMA write that kicks again
            depth[0] -= 1
        return run

    w.schedule(job(0))
    assert log == list(range(51)) and depth[1] == 1


def test_pieces_yield_to_the_budget_and_continue_later():
    w = DeviceWork()
    later = []
    w.continue_later = lambda: later.append(True)
    done = []

    def job():
        for i in range(10):
            done.append(i)
            yield
    w.enter()
    w.schedule(job)
    assert done == []
    w.run(budget=0)                              # a spent budget: one piece, then later
    assert done == [0] and later == [True] and w.pending
    w.continue_later = None                      # no machine: the rest runs at once
    w.leave()
    assert done == list(range(10)) and not w.pending


def test_a_pending_stop_ends_a_run_between_pieces():
    w = DeviceWork()
    stop = [False]
    w.should_stop = lambda: stop[0]
    w.continue_later = lambda: None
    done = []

    def job():
        for i in range(10):
            done.append(i)
            if i == 2:
                stop[0] = True
            yield
    w.schedule(job)
    assert done == [0, 1, 2] and w.pending


def test_cancel_drops_a_devices_work():
    w = DeviceWork()
    w.enter()
    w.schedule(lambda: pytest.fail("cancelled work ran"), owner="dev")
    w.cancel("dev")
    w.leave()
    assert not w.pending


# ------------------------------------------------------------------ the guard

class SelfDma:
    """A device whose register write makes it read its own registers through DMA."""

    def __init__(self, mem, addr):
        self.mem, self.addr, self.seen = mem, addr, []

    def read(self, offset, size):
        return 0x5A

    def write(self, offset, size, value):
        self.seen.append(self.mem.read(self.addr, 1))


def test_dma_into_the_same_device_from_inside_its_access_is_dropped():
    mm = MemoryMap()
    mm.add(RamRegion("ram", 0x10000), 0)
    errors = []
    mm.on_guest_error = lambda kind, detail: errors.append(kind)
    g = mm.guest
    a = SelfDma(g, 0x20000)
    ra = MmioRegion("a", 0x1000, a)
    guard = ReentrancyGuard("a", g.work)
    guard.on_blocked = lambda detail: errors.append("reentrant_io")
    ra.set_guard(guard)
    mm.add(ra, 0x20000)
    b = SelfDma(g, 0x30000)                        # b's write reads a: a is not engaged
    rb = MmioRegion("b", 0x1000, b)
    rb.set_guard(ReentrancyGuard("b", g.work))
    mm.add(rb, 0x30000)
    mm.write(0x20000, 4, 1)                        # a guest write to a: a reads itself
    assert a.seen == [bytes(1)] and errors == ["reentrant_io"] and guard.blocked == 1
    b.addr = 0x20000
    mm.write(0x30000, 4, 1)                        # b reads a: allowed
    assert b.seen == [b"\x5a"]
    assert g.read(0x20000, 1) == b"\x5a"           # outside any access: allowed


# ------------------------------------------------------------------ virtio devices

def machine_with(*devices):
    m = Machine(cpu=False)
    fns = [create_device(m, BuildContext(), name, dict(kv.split("=") for kv in props.split(",") if kv))
           for name, props in devices]
    bios.firmware_step(m)
    return m, fns


def modern_rng_up(m, fn, ring=RING):
    base = fn.bar_addr[4]
    wr = lambda off, size, v: m.memory.write(base + off, size, v)
    q = MockSplitQueue(m.memory.guest, ring, 8, layout="modern")
    for reg, v in ((CommonCfg.Q_DESCLO, q.desc_addr), (CommonCfg.Q_AVAILLO, q.avail_addr),
                   (CommonCfg.Q_USEDLO, q.used_addr)):
        wr(reg, 4, v)
    wr(CommonCfg.Q_ENABLE, 2, 1)
    wr(CommonCfg.GFSELECT, 4, 1)
    wr(CommonCfg.GF, 4, 1)
    wr(CommonCfg.STATUS, 1, 0x0F)
    m.pci.config_write(0, fn.devfn, 4, 2, 0x0106)
    return q, base


def test_rng_dma_into_its_own_notify_register_completes_without_recursion():
    """Each buffer's write-back lands in the notify register: a kick queued behind the
    current work, as QEMU's ioeventfd.  Eight in one batch, the stack never grows."""
    m, (fn,) = machine_with(("virtio-rng-pci", "disable-legacy=on,seed=1"))
    q, base = modern_rng_up(m, fn)
    notify = base + 0x3000
    vdev = fn.vdev
    depths = []
    orig = vdev.handle_output
    vdev.handle_output = lambda i: (depths.append(len(inspect.stack())), orig(i))[1]
    for _ in range(8):
        q.write_desc(q._take(1)[0], notify, 16, VRING_DESC_F_WRITE)
    for head in range(8):
        q.publish(head)
    m.memory.write(notify, 2, 0)
    assert [(e.id, e.len) for e in q.used_entries()] == [(h, 16) for h in range(8)]
    assert len(set(depths)) == 1 and len(depths) >= 2       # re-kicked, never nested


def test_rng_dma_into_another_devices_notify_kicks_that_device():
    """A's buffer is B's notify register: B serves the buffer it had published but not
    kicked; A completes as usual."""
    m, (a, b) = machine_with(("virtio-rng-pci", "disable-legacy=on,seed=1,addr=3.0"),
                             ("virtio-rng-pci", "disable-legacy=on,seed=2,addr=4.0"))
    qa, base_a = modern_rng_up(m, a)
    qb, base_b = modern_rng_up(m, b, ring=0x280000)
    hb = qb.add_chain([(16, True)]).head
    qa.write_desc(0, base_b + 0x3000, 4, VRING_DESC_F_WRITE)
    qa.publish(0)
    m.memory.write(base_a + 0x3000, 2, 0)
    assert [(e.id, e.len) for e in qa.used_entries()] == [(0, 4)]
    assert [(e.id, e.len) for e in qb.used_entries()] == [(hb, 16)]


@pytest.mark.parametrize("legacy", [True, False])
def test_rng_notifies_after_a_pop_that_fails_once_entropy_arrived(legacy):
    """A zero-length entry in an indirect table: avail_bytes counts 16 bytes, the pop
    fails (virtio_error), chr_read notifies anyway: ISR 1 (legacy), 3 with the config
    change (modern).  The device is broken: a good buffer in the same batch is not
    served (virtio_device_disabled)."""
    props = "disable-modern=on,seed=1" if legacy else "disable-legacy=on,seed=1"
    m, (fn,) = machine_with(("virtio-rng-pci", props))
    if legacy:
        base = fn.bar_addr[0]
        rd = lambda off, size: m.io.read(base + off, size)
        wr = lambda off, size, v: m.io.write(base + off, size, v)
        q = MockSplitQueue(m.memory.guest, RING, 8)
        wr(LegacyReg.STATUS, 1, 0)         # reset: SeaBIOS's command write left it disabled
        wr(LegacyReg.STATUS, 1, 3)         # (QEMU virtio_write_config, use-disabled-flag)
        wr(LegacyReg.QUEUE_PFN, 4, q.pfn)
        wr(LegacyReg.STATUS, 1, 7)
        isr = lambda: rd(LegacyReg.ISR, 1)
    else:
        q, base = modern_rng_up(m, fn)
        isr = lambda: m.memory.read(base + 0x1000, 1)
    table = 0x300000
    q.write_table(table, [(0x310000, 0, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1),
                          (0x310000, 16, VRING_DESC_F_WRITE, 0)])
    q.write_desc(0, table, 32, VRING_DESC_F_INDIRECT)
    q.write_desc(1, 0x320000, 16, VRING_DESC_F_WRITE)
    q.publish(0)
    q.publish(1)
    if legacy:
        wr(LegacyReg.QUEUE_NOTIFY, 2, 0)
    else:
        m.memory.write(base + 0x3000, 2, 0)
    assert q.used_idx == 0
    assert isr() == (1 if legacy else 3)
    assert fn.vdev.broken
