"""virtio-gpu without a CPU: the device driven through mock rings, QEMU's EDID, QMP
screendump.  (The guest-visible behaviour is pinned against QEMU 7.2 by
firmware/gpu_commands.S in test_virtio_differential.py.)"""

from __future__ import annotations

import struct

import pytest

from uvirt.display.edid import EdidInfo, generate
from uvirt.testing.mock_driver import MockSplitQueue, guest_ram
from uvirt.virtio.gpu import GpuCmd, GpuResp, VirtioGpu

SHADOW = 0x40000


class _Transport:
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def notify_vector(self, vector: int) -> None:
        pass

    def guest_error(self, kind: str, detail: str) -> None:
        self.errors.append((kind, detail))


@pytest.fixture
def gpu():
    mem = guest_ram(1 << 20)
    dev = VirtioGpu()
    t = _Transport()
    dev.realize(mem, t)
    drv = MockSplitQueue(mem, 0x10000, 64, layout="legacy")
    drv.configure(dev.queues[0])
    dev.drv, dev.t = drv, t
    return dev


def _hdr(ctype: int, flags: int = 0) -> bytes:
    return struct.pack("<IIQIB3x", ctype, flags, 0, 0, 0)


def _send(dev, request: bytes, resp_len: int = 24) -> tuple[int, bytes]:
    chain = dev.drv.add_chain([(len(request), False), (resp_len, True)], data=request)
    dev.queue_notify(0)
    entry = dev.drv.used_entries()[-1]
    return entry.len, dev.drv.read_written(chain, entry.len)


def _type(resp: bytes) -> int:
    return struct.unpack_from("<I", resp)[0]


def test_transfer_past_the_backing_is_a_guest_error_not_a_crash(gpu):
    """QEMU 7.2 aborts (iov_to_buf assertion) when a transfer's source offset is past the
    backing; uvirt answers OK as QEMU would have for the part it could copy, and records it."""
    assert _type(_send(gpu, _hdr(GpuCmd.RESOURCE_CREATE_2D) + struct.pack("<4I", 1, 2, 16, 16))[1]) == GpuResp.OK_NODATA
    gpu.mem.write(SHADOW, bytes(range(256)) * 4)
    attach = _hdr(GpuCmd.RESOURCE_ATTACH_BACKING) + struct.pack("<II", 1, 1) + struct.pack("<QII", SHADOW, 1024, 0)
    assert _type(_send(gpu, attach)[1]) == GpuResp.OK_NODATA
    t2d = _hdr(GpuCmd.TRANSFER_TO_HOST_2D) + struct.pack("<4IQII", 0, 0, 16, 4, 960, 1, 0)
    assert _type(_send(gpu, t2d)[1]) == GpuResp.OK_NODATA
    assert any(kind == "gpu_transfer_past_backing" for kind, _ in gpu.t.errors)
    res = gpu.resources[1]
    assert res.image[:64] == (bytes(range(256)) * 4)[960:1024]       # the first line, from 960
    assert res.image[64:] == bytes(len(res.image) - 64)


def test_fence_and_short_requests(gpu):
    n, resp = _send(gpu, struct.pack("<IIQIB3x", GpuCmd.GET_DISPLAY_INFO, 1, 0x1122334455667788, 9, 3), 408)
    assert n == 408 and _type(resp) == GpuResp.OK_DISPLAY_INFO
    assert struct.unpack_from("<IQIB", resp, 4) == (1, 0x1122334455667788, 9, 0)
    assert struct.unpack_from("<4III", resp, 24) == (0, 0, 1280, 800, 1, 0)
    # shorter than the header: never answered (QEMU leaves it in its fence queue)
    before = gpu.drv.used_idx
    gpu.drv.add_chain([(16, False), (24, True)], data=bytes(16))
    gpu.queue_notify(0)
    assert gpu.drv.used_idx == before and len(gpu.unanswered) == 1
    # header only for a command with a body: OK_NODATA (QEMU's handler returns early)
    assert _type(_send(gpu, _hdr(GpuCmd.RESOURCE_CREATE_2D))[1]) == GpuResp.OK_NODATA
    assert not gpu.resources


def test_unref_of_the_shown_resource_shows_qemus_placeholder(gpu):
    _send(gpu, _hdr(GpuCmd.RESOURCE_CREATE_2D) + struct.pack("<4I", 7, 2, 64, 32))
    _send(gpu, _hdr(GpuCmd.RESOURCE_ATTACH_BACKING) + struct.pack("<II", 7, 1) + struct.pack("<QII", SHADOW, 8192, 0))
    assert _type(_send(gpu, _hdr(GpuCmd.SET_SCANOUT) + struct.pack("<4III", 0, 0, 64, 32, 0, 7))[1]) == GpuResp.OK_NODATA
    assert (gpu.surface().width, gpu.surface().height) == (64, 32)
    _send(gpu, _hdr(GpuCmd.RESOURCE_UNREF) + struct.pack("<II", 7, 0))
    s = gpu.surface()
    # "Display output is not active." centred by C division: cells -10.. on row 0, so
    # "ut is no" shows in the top 16 lines
    rgb = s.rgb()
    assert (s.width, s.height) == (64, 32) and set(rgb) == {0, 0xAA}
    assert rgb[64 * 16 * 3:] == bytes(64 * 16 * 3)
    assert gpu.scanouts[0].resource_id == 0 and gpu.hostmem == 0


def test_reset_destroys_resources(gpu):
    _send(gpu, _hdr(GpuCmd.RESOURCE_CREATE_2D) + struct.pack("<4I", 3, 1, 16, 16))
    assert gpu.hostmem == 16 * 16 * 4
    gpu.reset()
    assert not gpu.resources and gpu.hostmem == 0


def test_edid_default_is_qemus():
    """QEMU 7.2's EDID for 1280x800 (as GET_EDID returned it in gpu_commands__default.txt)."""
    e = generate(1024)
    assert e[:8] == b"\x00\xff\xff\xff\xff\xff\xff\x00" and e[8:10] == b"\x49\x14"   # RHT
    assert sum(e[:128]) % 256 == 0 and sum(e[128:256]) % 256 == 0
    assert e[126] == 1 and e[256:] == bytes(768)
    assert b"QEMU Monitor\n" in e[:128]


def test_edid_large_screen_has_displayid():
    e = generate(1024, EdidInfo(prefx=5120, prefy=2160))
    assert e[126] == 2 and e[256] == 0x70 and sum(e[256:384]) % 256 == 0


def test_qmp_screendump(tmp_path):
    from uvirt.board.services import BoardServices
    from uvirt.qtest.qmp import QmpContext, QmpError
    from uvirt.virtio.fb import VirtioFb

    class Board:
        pass

    m = Board()
    gpu = VirtioGpu(max_outputs=2)
    fb = VirtioFb(width=40, height=30)
    fb.fb.view[0:4] = b"\x01\x02\x03\x00"
    m.displays = [("g", gpu), (None, fb)]
    ctx = QmpContext(BoardServices(m))
    ctx.cmd_screendump({"filename": str(tmp_path / "a.ppm")})
    assert (tmp_path / "a.ppm").read_bytes()[:15] == b"P6\n640 480\n255\n"
    ctx.cmd_screendump({"filename": str(tmp_path / "b.png"), "device": "g", "head": 1, "format": "png"})
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    m.displays = [(None, fb)]
    ctx.cmd_screendump({"filename": str(tmp_path / "c.ppm")})
    assert (tmp_path / "c.ppm").read_bytes()[13:16] == b"\x03\x02\x01"
    cases = [({"filename": "x", "device": "nosuch"}, "DeviceNotFound", "Device 'nosuch' not found"),
             ({"filename": "x", "head": 1}, "GenericError", "'head' must be specified together with 'device'"),
             ({"filename": "x", "format": "bmp"}, "GenericError", "Parameter 'format' does not accept value 'bmp'"),
             ({"filename": str(tmp_path / "no" / "x")}, "GenericError", None)]
    for args, cls, desc in cases:
        with pytest.raises(QmpError) as e:
            ctx.cmd_screendump(args)
        assert e.value.cls == cls and (desc is None or e.value.desc == desc)
    m.displays = []
    with pytest.raises(QmpError, match="There is no console"):
        ctx.cmd_screendump({"filename": "x"})


from hypothesis import HealthCheck, given, settings, strategies as st

_TYPES = [int(c) for c in GpuCmd] + [0, 0x1100, 0x999, 0xFFFFFFFF]


@st.composite
def _requests(draw):
    ctype = draw(st.sampled_from(_TYPES))
    flags = draw(st.sampled_from([0, 1, 0xFFFFFFFF]))
    small = st.integers(0, 70) | st.sampled_from([0xFFFFFFFF, 0x80000000, 16384, 16385])
    body = b"".join(struct.pack("<I", draw(small)) for _ in range(draw(st.integers(0, 12))))
    if ctype == GpuCmd.RESOURCE_ATTACH_BACKING and draw(st.booleans()):
        body = struct.pack("<II", draw(st.integers(0, 4)), 1) + struct.pack(
            "<QII", draw(st.sampled_from([SHADOW, 0xF0000000, 0xFFFFF000, 0xFFFFFFFFFFFFF000])),
            draw(st.sampled_from([0, 64, 0x1000, 0x10000])), 0)
    raw = struct.pack("<IIQIB3x", ctype, flags, 7, 3, 0) + body
    cut = draw(st.integers(0, len(raw)))
    return raw[:cut] if draw(st.integers(0, 9)) == 0 else raw, draw(st.sampled_from([0, 8, 24, 1056]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reqs=st.lists(_requests(), min_size=1, max_size=12))
def test_random_requests_never_escape_into_the_host(reqs):
    """Whatever a guest sends on either queue, the device answers or ignores it as QEMU
    would; nothing raises."""
    mem = guest_ram(1 << 20)
    dev = VirtioGpu(max_hostmem=1 << 20)
    dev.realize(mem, _Transport())
    drivers = [MockSplitQueue(mem, 0x10000, 64, layout="legacy"), MockSplitQueue(mem, 0x20000, 16, layout="legacy")]
    drivers[0].configure(dev.queues[0])
    drivers[1].configure(dev.queues[1])
    for i, (raw, resp) in enumerate(reqs):
        q = i % 2 if len(raw) >= 56 else 0
        specs = [(max(len(raw), 1), False)] + ([(resp, True)] if resp else [])
        drivers[q].add_chain(specs, data=raw or b"\0")
        dev.queue_notify(q)
    assert dev.hostmem == sum(r.hostmem for r in dev.resources.values())
    dev.reset()
    assert not dev.resources and dev.hostmem == 0


def _attach(rid: int, addr: int, length: int) -> bytes:
    return (_hdr(GpuCmd.RESOURCE_ATTACH_BACKING) + struct.pack("<II", rid, 1)
            + struct.pack("<QII", addr, length, 0))


def test_backing_outside_ram_takes_the_one_bounce_buffer_until_detach(gpu):
    """virtio_gpu_create_mapping_iov maps each entry with dma_memory_map: outside RAM that
    is address_space_map's single bounce buffer, held until DETACH_BACKING unmaps it; a
    second entry outside RAM meanwhile fails ("failed to map MMIO memory"), also after
    the device's state was snapshot and restored (the mapping is a handle, not copied)."""
    import copy
    outside = 2 << 20                                   # past the 1 MiB of RAM: unassigned
    for rid in (1, 2):
        _send(gpu, _hdr(GpuCmd.RESOURCE_CREATE_2D) + struct.pack("<4I", rid, 2, 16, 16))
    assert _type(_send(gpu, _attach(1, outside, 0x1000))[1]) == GpuResp.OK_NODATA
    assert gpu.mem.bounce is not None and gpu.resources[1].backing.pieces[0].bounced
    assert _type(_send(gpu, _attach(2, outside + 0x1000, 0x1000))[1]) == GpuResp.ERR_UNSPEC
    assert ("gpu_backing_unmappable", "virtio-gpu: failed to map MMIO memory for element 0") in gpu.t.errors
    gpu.resources = copy.deepcopy(gpu.resources)        # what a snapshot's restore does
    _send(gpu, _hdr(GpuCmd.RESOURCE_DETACH_BACKING) + struct.pack("<II", 1, 0))
    assert gpu.mem.bounce is None
    assert _type(_send(gpu, _attach(2, outside + 0x1000, 0x1000))[1]) == GpuResp.OK_NODATA


def test_backing_in_ram_is_read_at_transfer_time_not_copied_at_attach(gpu):
    """RAM entries map directly (the device keeps QEMU's host pointer): a transfer copies
    what the guest wrote after attaching, and no bounce buffer is taken."""
    _send(gpu, _hdr(GpuCmd.RESOURCE_CREATE_2D) + struct.pack("<4I", 1, 2, 4, 2))
    assert _type(_send(gpu, _attach(1, SHADOW, 32))[1]) == GpuResp.OK_NODATA
    assert gpu.mem.bounce is None and not gpu.resources[1].backing.pieces[0].bounced
    gpu.mem.write(SHADOW, bytes(range(32)))
    t2d = _hdr(GpuCmd.TRANSFER_TO_HOST_2D) + struct.pack("<4IQII", 0, 0, 4, 2, 0, 1, 0)
    assert _type(_send(gpu, t2d)[1]) == GpuResp.OK_NODATA
    assert bytes(gpu.resources[1].image) == bytes(range(32))
