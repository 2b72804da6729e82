"""SharedMemory without a CPU: back ends, the host API (view, read, write, wait_for,
wait_for_change, on_map, mapped_at), and how the virtio-pci transport exposes regions
(the proposal's registers on legacy devices, shm capabilities on modern ones)."""

from __future__ import annotations

import threading
import time

import pytest

from uvirt.boot import firmware_step as bios
from uvirt.launch.device_table import BuildContext, create_device
from uvirt.errors import UvirtError
from uvirt.cpu.machine import Machine
from uvirt.backends.shared_memory import SharedMemory


# --------------------------------------------------------------------------- back ends


@pytest.mark.parametrize("size", [0, 0x800, 0x1800, 0x3000, 0x10001])
@pytest.mark.parametrize("make", [SharedMemory.anonymous, SharedMemory.memfd])
def test_size_must_be_a_power_of_two_of_4k(make, size):
    with pytest.raises(UvirtError) as e:
        make("r", size)
    assert str(e.value) == f"r: size 0x{size:x} must be a power of two of at least 0x1000"


@pytest.mark.parametrize("make", [SharedMemory.anonymous, SharedMemory.memfd])
def test_view_is_the_buffer_not_a_copy(make):
    shm = make("r", 0x2000)
    assert shm.size == 0x2000 and shm.mapped_at is None
    assert shm.view.obj is shm.buffer._mmap                     # a view of the mmap itself
    shm.view[0x10:0x14] = b"abcd"
    assert shm.read(0x10, 4) == b"abcd"
    assert shm.region.read(0x10, 4) == int.from_bytes(b"abcd", "little")
    shm.write(0x1FFC, b"WXYZ")
    assert bytes(shm.view[0x1FFC:]) == b"WXYZ"


def test_write_outside_the_region_is_an_error():
    shm = SharedMemory.anonymous("r", 0x1000)
    with pytest.raises(UvirtError, match=r"r: write 0xffe\+0x4 outside 0x1000 bytes"):
        shm.write(0xFFE, b"1234")
    with pytest.raises(UvirtError):
        shm.write(-1, b"x")


def test_file_backend_is_shared_between_mappings(tmp_path):
    path = str(tmp_path / "shm")
    a = SharedMemory.file("a", path, 0x4000)
    b = SharedMemory.file("b", path, 0x4000)
    a.write(0x123, b"shared")
    assert b.read(0x123, 6) == b"shared"
    assert (tmp_path / "shm").read_bytes()[0x123:0x129] == b"shared"
    with pytest.raises(UvirtError, match="backing store size 0x4000 does not match 'size' option 0x8000"):
        SharedMemory.file("c", path, 0x8000)
    part = SharedMemory.file("d", path, 0x1000)                 # a larger file: mapped in part
    assert part.read(0x123, 6) == b"shared"


def test_private_file_mapping_is_not_shared(tmp_path):
    path = str(tmp_path / "shm")
    a = SharedMemory.file("a", path, 0x1000)
    p = SharedMemory.file("p", path, 0x1000, shared=False)
    p.write(0, b"mine")
    assert a.read(0, 4) == b"\0\0\0\0"


# --------------------------------------------------------------------------- waiting


def test_wait_for_sees_another_threads_write():
    shm = SharedMemory.anonymous("r", 0x1000)
    t = threading.Timer(0.05, lambda: shm.view.__setitem__(slice(8, 12), b"done"))
    t.start()
    assert shm.wait_for(lambda v: v[8:12] == b"done", timeout=5)
    t.join()
    assert not shm.wait_for(lambda v: v[0] == 1, timeout=0.02)


def test_wait_for_change_returns_the_new_bytes_or_none():
    shm = SharedMemory.anonymous("r", 0x1000)
    shm.write(0, b"old!")
    t = threading.Timer(0.05, lambda: shm.write(0, b"new!"))
    t.start()
    assert shm.wait_for_change(0, 4, timeout=5) == b"new!"
    t.join()
    start = time.monotonic()
    assert shm.wait_for_change(0, 4, timeout=0.05) is None
    assert time.monotonic() - start >= 0.05


# --------------------------------------------------------------------------- on the bus


def _board(device: str, props: dict[str, str]):
    m = Machine(cpu=False)
    fn = create_device(m, BuildContext(), device, props)
    return m, fn


def test_legacy_regions_are_bars_2_and_3_and_on_map_follows_them():
    m, fn = _board("virtio-rng-pci", {"disable-modern": "on", "memory-regions": "64K:16K"})
    r0, r1 = (shm for _, shm in fn.regions)
    calls0, calls1 = [], []
    r0.on_map(calls0.append)
    r1.on_map(calls1.append)
    assert fn.proposal and [b.index for b in fn.bars if b is not None] == [0, 1, 2, 3]
    assert fn.bars[2].region is r0.region and fn.bars[3].region is r1.region
    assert fn.mem_sel == 0
    bios.firmware_step(m)
    assert calls0 == [r0.mapped_at] and calls1 == [r1.mapped_at] and r0.mapped_at is not None
    assert fn.legacy_read(24, 4) == 0x10000 and fn.legacy_read(28, 4) == r0.mapped_at
    fn.legacy_write(20, 2, 1)
    assert fn.legacy_read(24, 4) == 0x4000 and fn.legacy_read(28, 4) == r1.mapped_at
    m.pci.config_write(0, fn.devfn, 0x1C, 4, 0xE0000000)
    assert calls1[-1] == 0xE0000000 == fn.legacy_read(28, 4)
    m.pci.config_write(0, fn.devfn, 0x04, 2, 0x0101)              # memory decode off
    assert calls0[-1] is None and calls1[-1] is None and fn.legacy_read(28, 4) == 0
    assert r1.mapped_at is None


def test_mem_sel_out_of_range_is_ignored_and_recorded():
    m, fn = _board("virtio-rng-pci", {"disable-modern": "on", "memory-regions": "4K"})
    fn.legacy_write(20, 2, 1)
    fn.legacy_write(20, 4, 0x10000)
    assert fn.mem_sel == 0 and fn.legacy_read(24, 4) == 0x1000
    assert [k for k, _ in m.guest_errors] == ["mem_sel_out_of_range"] * 2
    assert fn.bars[0].region.read(20, 2) == 0xFFFF               # MEM_SEL is write-only


def test_reset_selects_region_0_again():
    m, fn = _board("virtio-rng-pci", {"disable-modern": "on", "memory-regions": "4K:8K"})
    fn.legacy_write(20, 2, 1)
    assert fn.legacy_read(24, 4) == 0x2000
    fn.legacy_write(18, 1, 0)                                     # status 0: device reset
    assert fn.legacy_read(24, 4) == 0x1000


def test_modern_regions_are_capabilities_into_a_64bit_bar2():
    m, fn = _board("virtio-rng-pci", {"memory-regions": "64K:16K"})
    assert not fn.proposal
    caps = [(off, fn.config.get(off + 3, 1)) for cid, off in fn.capabilities() if cid == 0x09]
    shm_caps = sorted(off for off, t in caps if t == 8)
    assert shm_caps == [0xA4, 0xBC]
    c = fn.config
    got = {c.get(off + 5, 1): (c.get(off + 2, 1), c.get(off + 4, 1), c.get(off + 8, 4) | c.get(off + 16, 4) << 32,
                               c.get(off + 12, 4) | c.get(off + 20, 4) << 32) for off in shm_caps}
    assert got == {0: (24, 2, 0, 0x10000), 1: (24, 2, 0x10000, 0x4000)}
    assert fn.bars[2].mem64 and fn.bars[2].prefetch and fn.bars[2].size == 0x20000
    bios.firmware_step(m)
    r0, r1 = (shm for _, shm in sorted(fn.regions))
    base = fn.bar_addr[2]
    assert (r0.mapped_at, r1.mapped_at) == (base, base + 0x10000)
    r1.write(0, b"cap1")
    assert m.memory.read(base + 0x10000, 4) == int.from_bytes(b"cap1", "little")
    assert m.memory.read(base + 0x18000, 4) == 0                  # the gap past the regions
    m.memory.write(base + 4, 4, 0x11223344)
    assert r0.read(4, 4) == bytes.fromhex("44332211")
    m.pci.config_write(0, fn.devfn, 0x1C, 4, 2)                   # high dword: above 4 GiB
    assert r0.mapped_at == (2 << 32) | base
    assert m.memory.lookup(base) is None


def test_fb_declares_its_framebuffer_as_region_0():
    m, fn = _board("virtio-fb-pci", {"width": "100", "height": "50"})
    dev = fn.vdev
    assert fn.regions == [(0, dev.fb)]
    assert dev.fb.size == 0x8000                                  # 100*4*50 = 20000, rounded up
    m2, fn2 = _board("virtio-fb-pci", {"disable-modern": "on"})
    assert fn2.proposal and fn2.bars[2].region is fn2.vdev.fb.region
    assert fn2.legacy_read(32, 4) == 320                          # config at 32: the proposal's layout
