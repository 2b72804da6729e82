"""virtio-blk and the -drive back ends without a CPU: the device behind the PCI transport's
register methods, rings built by the mock driver (values measured on QEMU 7.2; the
differential tests are in tests/guest/test_virtio_blk_serial.py)."""

from __future__ import annotations

import struct

import pytest

from uvirt.backends.block import NullBackend, RawFile
from uvirt.launch.backends import open_drive, open_drives
from uvirt.errors import OptionError
from uvirt.options import DriveOpts
from uvirt.testing.mock_driver import MockSplitQueue, guest_ram
from uvirt.virtio.blk import VirtioBlk, geometry_guess
from uvirt.virtio.pci import VirtioPci

ACK_DRIVER, DRIVER_OK = 3, 7


def _image(tmp_path, size=64 << 10):
    p = tmp_path / "disk.img"
    p.write_bytes(bytes((i * 7 + (i >> 9)) & 0xFF for i in range(size)))
    return p


def _device(tmp_path, *, readonly=False, modern=True, legacy=True, serial="uvirt0", **kw):
    backend = RawFile(str(_image(tmp_path)), read_only=readonly)
    dev = VirtioBlk(backend, serial=serial, **kw)
    errors = []
    fn = VirtioPci(dev, class_code=0x0100, disable_legacy=not legacy, disable_modern=not modern)
    mem = guest_ram(4 << 20)
    fn.realize(mem)
    fn.guest_error = lambda kind, detail: errors.append((kind, detail))
    dev.transport = fn
    return fn, dev, mem, errors


def _legacy_up(fn, mem, accept=0):
    fn.legacy_write(0x12, 1, 0)
    fn.legacy_write(0x12, 1, 1)
    fn.legacy_write(0x12, 1, ACK_DRIVER)
    fn.legacy_write(0x04, 4, accept)
    drv = MockSplitQueue(mem, 0x10000, 256, data_size=0x100000)
    fn.legacy_write(0x0E, 2, 0)
    fn.legacy_write(0x08, 4, drv.pfn)
    fn.legacy_write(0x12, 1, DRIVER_OK)
    return drv


def _req(rtype, sector=0):
    return struct.pack("<IIQ", rtype, 0, sector)


def _status(drv, chain, used_len):
    return drv.read_written(chain, used_len)[-1]


def test_feature_words(tmp_path):
    fn, dev, _, _ = _device(tmp_path)
    assert fn.legacy_read(0, 4) == 0x79006E54
    fn.dfselect = 0
    assert fn.common_read(0x04, 4) == 0x30006E54
    fn.dfselect = 1
    assert fn.common_read(0x04, 4) == 0x101
    fn, _, _, _ = _device(tmp_path, modern=False)
    assert fn.legacy_read(0, 4) == 0x71006ED4               # SCSI, no ANY_LAYOUT
    fn, _, _, _ = _device(tmp_path, readonly=True)
    assert fn.legacy_read(0, 4) == 0x79006E74               # + RO


def test_ids(tmp_path):
    fn, _, _, _ = _device(tmp_path)
    assert (fn.config.get(0, 2), fn.config.get(2, 2), fn.config.get(0x2E, 2)) == (0x1AF4, 0x1001, 2)
    fn, _, _, _ = _device(tmp_path, legacy=False)
    assert (fn.config.get(2, 2), fn.config.get(8, 1)) == (0x1042, 1)


def test_config_space(tmp_path):
    _, dev, _, _ = _device(tmp_path)
    cfg = bytes(dev.config_read(i, 1) for i in range(64))
    assert cfg.hex() == ("800000000000000000000000fe0000000200103f00020000000000000000000001000100"
                         "ffff3f000100000001000000ffff3f000100000001" + "ff" * 7)
    assert dev.config_read(34, 2) == 1 and dev.config_read(56, 4) == 0xFFFFFFFF
    assert dev.config_read(0, 4) == 0x80


def test_config_len_follows_properties(tmp_path):
    assert _device(tmp_path, write_zeroes=False)[1].config_len == 48
    assert _device(tmp_path, write_zeroes=False, discard=False)[1].config_len == 36


@pytest.mark.parametrize("size,want", [(0, (2, 16, 63)), (64 << 10, (2, 16, 63)),
                                       (1 << 30, (2080, 16, 63)), (16 << 30, (16383, 16, 63))])
def test_geometry_guess(size, want):
    assert geometry_guess(NullBackend(size, read_zeroes=True)) == want


def test_geometry_from_mbr(tmp_path):
    p = tmp_path / "mbr.img"
    buf = bytearray(8 << 20)
    buf[0x1BE + 5], buf[0x1BE + 6] = 3, 32
    buf[0x1BE + 12:0x1BE + 16] = (100).to_bytes(4, "little")
    buf[510:512] = b"\x55\xaa"
    p.write_bytes(buf)
    assert geometry_guess(RawFile(str(p))) == (16384 // 128, 4, 32)


def test_read_write_flush_get_id_unsupp(tmp_path):
    fn, dev, mem, errors = _device(tmp_path)
    drv = _legacy_up(fn, mem)
    c = drv.add_chain([16, (512, True), (1, True)], data=_req(0, 1))
    fn.legacy_write(0x10, 2, 0)
    (e,) = drv.used_entries()
    assert e.len == 0x201
    data = drv.read_written(c, 0x201)
    assert data[:4] == bytes((i * 7 + 1) & 0xFF for i in range(512, 516)) and data[-1] == 0
    assert fn.legacy_read(0x13, 1) == 1 and fn.legacy_read(0x13, 1) == 0
    c = drv.add_chain([16, 512, (1, True)], data=_req(1, 2) + b"\x42" * 512)
    fn.legacy_write(0x10, 2, 0)
    assert drv.used_entries()[0].len == 1 and _status(drv, c, 1) == 0
    assert (tmp_path / "disk.img").read_bytes()[1024:1536] == b"\x42" * 512
    for rtype, want_len, want_status in ((4, 1, 0), (0x55, 17, 2)):
        c = drv.add_chain([16, (16, True), (1, True)] if rtype == 0x55 else [16, (1, True)], data=_req(rtype))
        fn.legacy_write(0x10, 2, 0)
        assert drv.used_entries()[0].len == want_len and _status(drv, c, want_len) == want_status
    c = drv.add_chain([16, (20, True), (1, True)], data=_req(8))
    fn.legacy_write(0x10, 2, 0)
    assert drv.used_entries()[0].len == 0x15
    assert drv.read_written(c, 21)[:7] == b"uvirt0\0"
    assert errors == []


def test_ioerr_past_capacity_writes_nothing(tmp_path):
    fn, dev, mem, _ = _device(tmp_path)
    drv = _legacy_up(fn, mem)
    c = drv.add_chain([16, (512, True), (1, True)], data=_req(0, 128))
    mem.write(c.writable[0][0], b"\xa5" * 512)
    fn.legacy_write(0x10, 2, 0)
    assert drv.used_entries()[0].len == 0x201
    out = drv.read_written(c, 0x201)
    assert out[:512] == b"\xa5" * 512 and out[-1] == 1


def test_write_to_readonly_is_ioerr(tmp_path):
    fn, dev, mem, _ = _device(tmp_path, readonly=True)
    before = (tmp_path / "disk.img").read_bytes()
    drv = _legacy_up(fn, mem)
    c = drv.add_chain([16, 512, (1, True)], data=_req(1, 0) + b"x" * 512)
    fn.legacy_write(0x10, 2, 0)
    assert _status(drv, c, drv.used_entries()[0].len) == 1
    assert (tmp_path / "disk.img").read_bytes() == before


@pytest.mark.parametrize("specs,data,message", [
    ([16, 512], _req(0), "virtio-blk missing headers"),
    ([(512, True), (1, True)], None, "virtio-blk missing headers"),
    ([12, (512, True), (1, True)], _req(0)[:12], "virtio-blk request outhdr too short"),
    ([24, (1, True)], _req(13) + bytes(8), "virtio-blk discard/write_zeroes header too short"),
])
@pytest.mark.parametrize("modern", [False, True])
def test_malformed_request_is_virtio_error(tmp_path, specs, data, message, modern):
    fn, dev, mem, errors = _device(tmp_path)
    drv = _legacy_up(fn, mem, accept=0)
    if modern:                                    # pretend VERSION_1 was negotiated
        dev.guest_features |= 1 << 32
    drv.add_chain(specs, data=data)
    fn.legacy_write(0x10, 2, 0)                   # never an exception out of the hook
    assert drv.used_idx == 0
    assert dev.broken
    assert ("virtio_error", f"virtio-blk: {message}") in errors
    assert bool(dev.status & 0x40) == modern
    drv.add_chain([16, (512, True), (1, True)], data=_req(0))
    fn.legacy_write(0x10, 2, 0)
    assert drv.used_idx == 0                      # ignored until reset


def test_wce_driver_ok_and_reset(tmp_path):
    fn, dev, mem, _ = _device(tmp_path)
    assert dev.config_read(32, 1) == 1
    _legacy_up(fn, mem, accept=0)                 # neither FLUSH nor CONFIG_WCE accepted
    assert dev.config_read(32, 1) == 0
    dev.config_store(32, 1, 1)
    assert dev.config_read(32, 1) == 1
    dev.config_store(0, 4, 0x1234)                # capacity is rebuilt on every read
    assert dev.config_read(0, 4) == 0x80
    fn.legacy_write(0x12, 1, 0)
    assert dev.config_read(32, 1) == 1


def test_driver_ok_kicks_a_published_request(tmp_path):
    fn, dev, mem, _ = _device(tmp_path)
    fn.legacy_write(0x12, 1, 1)
    fn.legacy_write(0x12, 1, ACK_DRIVER)
    drv = MockSplitQueue(mem, 0x10000, 256)
    fn.legacy_write(0x08, 4, drv.pfn)
    drv.add_chain([16, (512, True), (1, True)], data=_req(0))
    fn.legacy_write(0x12, 1, DRIVER_OK)
    assert [e.len for e in drv.used_entries()] == [0x201]


def test_resize_sends_config_change(tmp_path):
    fn, dev, mem, _ = _device(tmp_path)
    _legacy_up(fn, mem)
    gen = dev.generation
    dev.backend.resize(128 << 10)
    assert dev.config_read(0, 4) == 256 and dev.generation == gen + 1
    assert fn.legacy_read(0x13, 1) == 3


# --------------------------------------------------------------------------- -drive


def _drive(tmp_path, spec):
    from uvirt.options import parse_qemu_opts
    pairs = parse_qemu_opts(spec)
    props = {k: v for k, v in pairs if k != "id"}
    return open_drives([DriveOpts("d0", props, spec, "-drive")], warn=lambda m: None)["d0"].backend


@pytest.mark.parametrize("spec,message", [
    ("file=nosuch.img,format=raw,if=none", "Could not open 'nosuch.img': No such file or directory"),
    ("file=IMG,format=bogus,if=none", "Unknown driver 'bogus'"),
    ("file=IMG,format=qcow2,if=none", "Image is not in qcow2 format"),
    ("file=IMG,format=raw,if=none,readonly=maybe", "Parameter 'read-only' expects 'on' or 'off'"),
    ("file=IMG,format=raw,if=none,bogus=1", "Block format 'raw' does not support the option 'bogus'"),
])
def test_drive_errors(tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    _image(tmp_path)
    spec = spec.replace("IMG", "disk.img")
    with pytest.raises(OptionError) as e:
        _drive(tmp_path, spec)
    assert str(e.value) == f"-drive {spec}: {message}"


def test_drive_duplicate_id(tmp_path):
    p = _image(tmp_path)
    d = DriveOpts("d0", {"file": str(p), "format": "raw", "if": "none"}, "x", "-drive")
    with pytest.raises(OptionError, match="Duplicate ID 'd0' for drive"):
        open_drives([d, d])


def test_null_co_and_read_only(tmp_path):
    b = open_drive({"file": "null-co://", "format": "raw", "file.read-zeroes": "on"}, drive_id="d0")
    assert b.sectors == 2 << 20 and b.read(0, 4) == bytes(4)
    b = open_drive({"driver": "null-co", "size": "64K"}, drive_id="d0")
    assert b.sectors == 128 and b.read(0, 4) is None
    p = _image(tmp_path)
    b = open_drive({"file": str(p), "format": "raw", "readonly": "on"}, drive_id="d0")
    assert b.read_only and b.read(0x10000 - 1, 3) == bytes([(0xFFFF * 7 + 127) & 0xFF]) + bytes(2)
    warnings = []
    open_drive({"file": str(p)}, drive_id="d0", warn=warnings.append)
    assert warnings and "probing guessed raw" in warnings[0]


def test_odd_sized_image_rounds_capacity_up(tmp_path):
    p = tmp_path / "odd.img"
    p.write_bytes(b"\x01" * 1000)
    assert RawFile(str(p)).sectors == 2


@pytest.mark.parametrize("specs", [
    [16, (4096, True), (1, True)],                                   # one data piece
    [16] + [(256, True)] * 16 + [(1, True)],                         # 16 pieces in a row
    [16] + [(100, True), (412, True), (1000, True), (2584, True)] + [(1, True)],
    [16, (4096 + 1, True)],                                          # status in the data piece
    [8, 8] + [(512, True)] * 7 + [(513, True)],                      # header in two, status shares
])
def test_read_scatters_like_iov_from_buf(tmp_path, specs):
    """A read lands in the writable pieces in order (QEMU ``iov_from_buf``), however the
    driver splits the buffer (the device joins pieces that continue each other in memory
    into one write); the status byte is the last writable byte, the used length all of
    them."""
    fn, dev, mem, errors = _device(tmp_path)
    drv = _legacy_up(fn, mem)
    total_in = sum(s[0] for s in specs if isinstance(s, tuple))
    c = drv.add_chain(specs, data=_req(0, 3))
    fn.legacy_write(0x10, 2, 0)
    (e,) = drv.used_entries()
    assert e.len == total_in
    got = drv.read_written(c, total_in)
    image = (tmp_path / "disk.img").read_bytes()
    assert got[:-1] == image[3 * 512:3 * 512 + total_in - 1] and got[-1] == 0
    assert errors == []
