"""The MMIO callbacks Unicorn calls (uvirt/cpu/uc_memory.py ``_region_callbacks``) hand an
unguarded region's usual accesses straight to its device, without the region's own
accessors in between: they must still do exactly what the region's accessors do (the
access rules, the size mask), follow a guard set later and a device swapped on a mapped
region (the fuzzer does both), and take the region's offset into account."""

from __future__ import annotations

from uvirt.board.dma import DeviceWork, ReentrancyGuard
from uvirt.board.memory.regions import MmioRegion
from uvirt.cpu.uc_memory import ReplayGuard, _region_callbacks


class Recorder:
    def __init__(self, tag: str = "a") -> None:
        self.tag = tag
        self.log: list = []

    def read(self, offset: int, size: int) -> int:
        self.log.append(("r", offset, size))
        return 0x1122334455667788

    def write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("w", offset, size, value))


def _callbacks(region, base_offset=0):
    guard = ReplayGuard()
    guard.armed = False                  # stops at block starts: nothing journaled
    failures = []
    read_cb, write_cb = _region_callbacks(region, base_offset, guard, 0x1000, None, failures.append)
    return read_cb, write_cb, failures


def _same_as_region(region, dev, accesses, base_offset=0):
    """Each access through the callbacks and through the region's own accessors: the
    device sees the same calls and the reads return the same values."""
    read_cb, write_cb, failures = _callbacks(region, base_offset)
    for kind, offset, size in accesses:
        dev.log.clear()
        if kind == "r":
            got = read_cb(None, offset, size, None)
            seen = list(dev.log)
            dev.log.clear()
            assert got == region.read(base_offset + offset, size), (offset, size)
        else:
            write_cb(None, offset, size, 0xAABBCCDDEEFF0011, None)
            seen = list(dev.log)
            dev.log.clear()
            region.write(base_offset + offset, size, 0xAABBCCDDEEFF0011)
        assert seen == dev.log, (kind, offset, size)
    assert failures == []


ACCESSES = [(k, off, size) for k in "rw" for off in (0, 1, 2, 4, 6, 8) for size in (1, 2, 4, 8)]


def test_direct_accesses_equal_the_regions_own():
    for unaligned in (False, True):
        for sizes, impl in (((1, 2, 4, 8), (1, 4)), ((4,), (4, 4)), ((1, 2, 4), (2, 4))):
            dev = Recorder()
            region = MmioRegion("r", 0x100, dev, valid_sizes=sizes, unaligned=unaligned,
                                impl_min=impl[0], impl_max=impl[1])
            errors = []
            region.on_guest_error = lambda kind, detail: errors.append(detail)
            _same_as_region(region, dev, ACCESSES)
            _same_as_region(region, dev, ACCESSES, base_offset=0x40)


def test_the_value_is_masked_to_the_access_size():
    dev = Recorder()
    read_cb, write_cb, _ = _callbacks(MmioRegion("r", 0x100, dev, valid_sizes=(1, 2, 4)))
    write_cb(None, 4, 2, 0x12345678, None)
    assert read_cb(None, 8, 4, None) == 0x55667788
    assert dev.log == [("w", 4, 2, 0x5678), ("r", 8, 4)]


def test_a_guard_set_on_a_mapped_region_is_engaged():
    dev = Recorder()
    region = MmioRegion("r", 0x100, dev, valid_sizes=(1, 2, 4))
    read_cb, write_cb, _ = _callbacks(region)
    guard = ReentrancyGuard("dev", DeviceWork())
    region.set_guard(guard)
    guard.engaged = True                 # the device is inside an access of its own
    write_cb(None, 0, 4, 1, None)
    assert read_cb(None, 0, 4, None) == 0
    assert dev.log == [] and guard.blocked == 2
    guard.engaged = False
    write_cb(None, 0, 4, 1, None)
    assert dev.log == [("w", 0, 4, 1)] and not guard.engaged


def test_a_device_swapped_on_a_mapped_region_gets_the_accesses():
    first, second = Recorder("a"), Recorder("b")
    region = MmioRegion("r", 0x100, first, valid_sizes=(1, 2, 4))
    read_cb, write_cb, _ = _callbacks(region)
    write_cb(None, 0, 4, 1, None)
    region.device = second               # as the fuzzer's proxies (uvirt/fuzz/oracles.py)
    region.read, region.write = region._fast_paths()
    write_cb(None, 4, 4, 2, None)
    read_cb(None, 8, 2, None)
    assert first.log == [("w", 0, 4, 1)]
    assert second.log == [("w", 4, 4, 2), ("r", 8, 2)]
