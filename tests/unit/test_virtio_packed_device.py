"""packed=on without a CPU: a driver that accepts VIRTIO_F_RING_PACKED gets a packed ring
(virtio 1.2 §2.8), one that does not gets a split ring, and a reset goes back to split.
The device sits behind the modern virtio-pci registers; rings are built by the mock
driver.  The same behaviour against QEMU 7.2: firmware/virtio_packed.S in
tests/guest/test_virtio_differential.py."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvirt.backends.block import RawFile
from uvirt.testing.mock_driver import MockPackedQueue, MockSplitQueue, guest_ram
from uvirt.virtio.blk import VirtioBlk
from uvirt.virtio.features import VirtioFeature as F
from uvirt.virtio.packed import (VRING_PACKED_EVENT_FLAG_DESC, VRING_PACKED_EVENT_FLAG_DISABLE,
                                 VRING_PACKED_EVENT_FLAG_ENABLE, PackedQueue)
from uvirt.virtio.pci import CommonCfg as C
from uvirt.virtio.pci import VirtioPci
from uvirt.virtio.queue import SplitQueue
from uvirt.virtio.rng import VirtioRng

RING = 0x10000
VERSION_1, RING_PACKED = 1, 4              # feature word 1 bits
ACK_DRIVER, FEATURES_OK, DRIVER_OK = 3, 0x0B, 0x0F


def _rng(packed=True):
    dev = VirtioRng(seed=1)
    if packed:
        dev.host_features |= F.RING_PACKED
    return _plug(dev, 0x00FF00)


def _blk(tmp_path, packed=True):
    img = tmp_path / "disk.img"
    img.write_bytes(bytes((s * 3 + i + 1) & 0xFF for s in range(16) for i in range(512)))
    dev = VirtioBlk(RawFile(str(img), read_only=False), serial="uvirt0")
    if packed:
        dev.host_features |= F.RING_PACKED
    return _plug(dev, 0x010000)


def _plug(dev, class_code):
    fn = VirtioPci(dev, class_code=class_code, disable_legacy=True)
    mem = guest_ram(4 << 20)
    fn.realize(mem)
    errors = []
    fn.guest_error = lambda kind, detail: errors.append((kind, detail))
    dev.transport = fn
    return fn, dev, mem, errors


def _negotiate(fn, word0=0, word1=VERSION_1 | RING_PACKED):
    fn.common_write(C.STATUS, 1, ACK_DRIVER)
    fn.common_write(C.GFSELECT, 4, 0)
    fn.common_write(C.GF, 4, word0)
    fn.common_write(C.GFSELECT, 4, 1)
    fn.common_write(C.GF, 4, word1)
    fn.common_write(C.STATUS, 1, FEATURES_OK)


def _rings(fn, drv):
    """queue_size, the three area addresses and queue_enable, as a driver writes them."""
    fn.common_write(C.Q_SELECT, 2, 0)
    fn.common_write(C.Q_SIZE, 2, drv.size)
    for lo, addr in ((C.Q_DESCLO, drv.desc_addr), (C.Q_AVAILLO, drv.driver_addr
                     if isinstance(drv, MockPackedQueue) else drv.avail_addr),
                     (C.Q_USEDLO, drv.device_addr if isinstance(drv, MockPackedQueue)
                      else drv.used_addr)):
        fn.common_write(lo, 4, addr)
    fn.common_write(C.Q_ENABLE, 2, 1)


def _up(fn, mem, size=8, word0=0):
    _negotiate(fn, word0)
    drv = MockPackedQueue(mem, RING, size)
    _rings(fn, drv)
    fn.common_write(C.STATUS, 1, DRIVER_OK)
    return drv


def _kick(fn):
    fn.notify_write(0, 2, 0)


def test_packed_on_offers_ring_packed_and_off_does_not():
    for packed, word1 in ((True, 0x105), (False, 0x101)):
        fn, *_ = _rng(packed)
        fn.common_write(C.DFSELECT, 4, 1)
        assert fn.common_read(C.DF, 4) == word1


def test_accepting_ring_packed_makes_the_queue_packed_and_reset_makes_it_split():
    fn, dev, _, _ = _rng()
    assert isinstance(dev.queues[0], SplitQueue)
    _negotiate(fn)
    assert isinstance(dev.queues[0], PackedQueue)
    fn.common_write(C.STATUS, 1, 0)
    assert isinstance(dev.queues[0], SplitQueue)
    _negotiate(fn, word1=VERSION_1)
    assert isinstance(dev.queues[0], SplitQueue)


def test_ring_packed_not_offered_cannot_be_accepted():
    fn, dev, _, errors = _rng(packed=False)
    _negotiate(fn)
    assert not dev.guest_features & F.RING_PACKED
    assert isinstance(dev.queues[0], SplitQueue)
    assert [k for k, _ in errors] == ["unoffered_features"]


def test_rng_requests_wrap_the_packed_ring_with_ids_lengths_and_isr():
    fn, dev, mem, errors = _rng()
    drv = _up(fn, mem)
    for n in range(3 * drv.size):
        chain = drv.add_chain([(16, True)] if n % 2 else [(8, True), (8, True)])
        _kick(fn)
        used = drv.used_entries()
        assert [(e.id, e.len) for e in used] == [(chain.head, 16)]
        assert any(drv.read_written(chain, 16))
        assert fn.read_isr() == 1 and fn.read_isr() == 0
    q = dev.queues[0]
    assert (q.last_avail_idx, q.last_avail_wrap_counter) == (drv.next_avail, drv.avail_wrap)
    assert (q.used_idx, q.used_wrap_counter) == (drv.next_used, drv.used_wrap)
    assert q.inuse == 0 and not errors


def test_rng_batch_fills_in_order_and_notifies_once():
    fn, dev, mem, _ = _rng()
    drv = _up(fn, mem, size=5)
    drv.add_chain([(4, True)])
    chains = [drv.add_chain([(8, True)]), drv.add_chain([(4, True), (4, True)]),
              drv.add_indirect_chain([(4, True), (12, True)])]
    _kick(fn)
    assert [(e.id, e.len) for e in drv.used_entries()][1:] == [(c.head, n) for c, n in
                                                              zip(chains, (8, 8, 16))]
    assert (drv.next_used, drv.used_wrap) == (0, False)     # 1 + 1 + 2 + 1 slots of 5
    assert fn.read_isr() == 1 and fn.read_isr() == 0


@pytest.mark.parametrize("flags,isr", [(VRING_PACKED_EVENT_FLAG_ENABLE, 1),
                                       (VRING_PACKED_EVENT_FLAG_DISABLE, 0)])
def test_driver_event_flags_decide_the_interrupt(flags, isr):
    fn, _, mem, _ = _rng()
    drv = _up(fn, mem)
    drv.set_driver_event(flags)
    for _ in range(10):
        drv.add_chain([(16, True)])
        _kick(fn)
        assert len(drv.used_entries()) == 1
        assert fn.read_isr() == isr


def test_event_idx_desc_mode_interrupts_when_the_used_index_passes_the_offset():
    fn, _, mem, _ = _rng()
    drv = _up(fn, mem, size=6, word0=int(F.RING_EVENT_IDX))
    isrs = []
    for _ in range(8):
        drv.set_driver_event(VRING_PACKED_EVENT_FLAG_DESC, off_wrap=3 | 1 << 15)
        drv.add_chain([(16, True)])
        _kick(fn)
        drv.used_entries()
        isrs.append(fn.read_isr())
    # the first is unconditional; the fourth moves the used index past slot 3 of lap 1;
    # the sixth wraps the ring, which makes it unconditional again (QEMU clears
    # signalled_used_valid on a wrap); offset 3 of lap 1 is then behind
    assert isrs == [1, 0, 0, 1, 0, 1, 0, 0]


def _blk_read(drv, sector, nsect=1):
    return drv.add_chain([(16, False), (512 * nsect, True), (1, True)],
                         data=struct.pack("<IIQ", 0, 0, sector))


def test_blk_reads_cross_the_ring_end_and_set_device_event_flags(tmp_path):
    fn, dev, mem, errors = _blk(tmp_path)
    drv = _up(fn, mem)
    for n in range(9):                               # 3 slots each: 27 slots of 8
        chain = _blk_read(drv, n)
        _kick(fn)
        assert [(e.id, e.len) for e in drv.used_entries()] == [(chain.head, 513)]
        data = drv.read_written(chain, 513)
        assert data[0] == (3 * n + 1) & 0xFF and data[-1] == 0
    assert drv.device_event() == (0, VRING_PACKED_EVENT_FLAG_ENABLE)
    assert not errors


def test_blk_with_event_idx_asks_for_the_next_kick_at_the_shadow_index(tmp_path):
    fn, dev, mem, _ = _blk(tmp_path)
    drv = _up(fn, mem, size=6, word0=int(F.RING_EVENT_IDX))
    for n in range(3):
        _blk_read(drv, n)
        _kick(fn)
        drv.used_entries()
        q = dev.queues[0]
        off_wrap = q.shadow_avail_idx | int(q.shadow_avail_wrap_counter) << 15
        assert drv.device_event() == (off_wrap, VRING_PACKED_EVENT_FLAG_DESC)
    assert drv.device_event() == (3, VRING_PACKED_EVENT_FLAG_DESC)   # slot 3, lap 0


def test_blk_bad_chain_breaks_the_device_and_sets_needs_reset(tmp_path):
    fn, dev, mem, errors = _blk(tmp_path)
    drv = _up(fn, mem)
    drv.add_chain([(16, True), (8, False)])          # readable after writable
    _kick(fn)
    assert dev.broken and fn.common_read(C.STATUS, 1) & 0x40
    assert ("virtio_error", "virtio-blk: Incorrect order for descriptors") in errors


def test_split_after_packed_reset(tmp_path):
    fn, dev, mem, _ = _rng()
    drv = _up(fn, mem)
    drv.add_chain([(16, True)])
    _kick(fn)
    fn.common_write(C.STATUS, 1, 0)
    _negotiate(fn, word1=VERSION_1)
    split = MockSplitQueue(mem, RING, 8, layout="modern")
    _rings(fn, split)
    fn.common_write(C.STATUS, 1, DRIVER_OK)
    chain = split.add_chain([(16, True)])
    _kick(fn)
    assert [(e.id, e.len) for e in split.used_entries()] == [(chain.head, 16)]


def test_feature_change_after_ring_setup_keeps_the_queue_configuration():
    """QEMU keeps one VirtQueue and reads it as packed once the bit is accepted: size and
    ring addresses set before the feature write stay."""
    fn, dev, mem, _ = _rng()
    drv = MockPackedQueue(mem, RING, 4)
    fn.common_write(C.STATUS, 1, ACK_DRIVER)
    _rings(fn, drv)
    split = dev.queues[0]
    _negotiate(fn)
    q = dev.queues[0]
    assert isinstance(q, PackedQueue) and q is not split
    assert (q.size, q.desc, q.avail, q.used) == (4, drv.desc_addr, drv.driver_addr, drv.device_addr)
    fn.common_write(C.STATUS, 1, DRIVER_OK)
    chain = drv.add_chain([(16, True)])
    _kick(fn)
    assert [(e.id, e.len) for e in drv.used_entries()] == [(chain.head, 16)]


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 9), chains=st.lists(st.integers(1, 3), min_size=1, max_size=40))
def test_any_ring_size_and_chain_lengths_come_back_in_order(size, chains):
    """Requests of 1..3 descriptors, one at a time, on rings of 1..9 descriptors (no
    power of two needed): each comes back once, with its id and length, in the slot
    after the previous one."""
    fn, dev, mem, errors = _rng()
    drv = _up(fn, mem, size=size)
    for n in chains:
        n = min(n, size)
        chain = drv.add_chain([(4, True)] * n)
        _kick(fn)
        assert [(e.id, e.len) for e in drv.used_entries()] == [(chain.head, 4 * n)]
    assert dev.queues[0].inuse == 0 and not errors


def test_snapshot_of_a_packed_device_restores_its_wrap_counters_and_ring_type():
    """A snapshot taken on a packed ring, restored after the ring wrapped and after a
    reset made it split: the next requests come back in the same slots, with the same
    wrap bits, as the first time."""
    from uvirt.cpu.snapshot import capture_objects

    fn, dev, mem, _ = _rng()
    drv = _up(fn, mem, size=3)
    for _ in range(2):
        drv.add_chain([(4, True)])
        _kick(fn)
        drv.used_entries()
    saved = capture_objects([fn])
    ring = mem.read(RING, 0x1000)
    driver_state = (drv.next_avail, drv.avail_wrap, drv.next_used, drv.used_wrap,
                    list(drv.free_ids), dict(drv.ndescs), drv.in_flight)

    def serve(n):
        out = []
        for _ in range(n):
            drv.add_chain([(4, True)])
            _kick(fn)
            slot = drv.next_used
            out.append((slot, drv.used_entries(), drv.read_desc(slot).flags))
        return out

    first = serve(3)
    fn.common_write(C.STATUS, 1, 0)
    assert isinstance(dev.queues[0], SplitQueue)
    for s in saved:
        s.restore()
    mem.write(RING, ring)
    (drv.next_avail, drv.avail_wrap, drv.next_used, drv.used_wrap, drv.free_ids, drv.ndescs,
     drv.in_flight) = driver_state
    assert isinstance(dev.queues[0], PackedQueue)
    assert serve(3) == first


def test_blk_read_completing_after_a_bad_request_broke_the_device(tmp_path):
    """A read popped in the same kick as a malformed request completes after
    virtio_error: QEMU drops its used descriptor (the device is broken) and goes on."""
    fn, dev, mem, errors = _blk(tmp_path)
    drv = _up(fn, mem)
    _blk_read(drv, 1)
    drv.add_chain([(16, True)])                      # no readable header
    _kick(fn)
    assert dev.broken and fn.common_read(C.STATUS, 1) & 0x40
    assert ("virtio_error", "virtio-blk: virtio-blk missing headers") in errors
    assert drv.used_entries() == []
