"""Snapshot and restore (uvirt/cpu/snapshot.py): a bundled guest program is stopped at an
arbitrary instruction, snapshot, run to its end, restored and run to its end again; the
two endings must be indistinguishable (transcript, exit status, registers, RAM, disk,
every PCI function's config space, every device's declared state)."""

import hashlib
import random

import pytest

from uvirt.backends.chardev import MemoryChardev
from uvirt.options import parse_argv
from uvirt.launch.runner import build_machine
from uvirt.cpu.snapshot import SnapshotError, capture_objects, device_roots, undeclared

#: wall-clock timestamps (the PIT and RTC run on the host's clock, as QEMU's do on its
#: virtual clock): they differ between two runs of the same guest, restored or not
CLOCK_FIELDS = {"_synced", "count_load_time", "last_update", "next_periodic_time",
                "next_alarm_time", "expire", "_fact_deadline", "base_rtc"}
REGS = ("eax", "ebx", "ecx", "edx", "esi", "edi", "esp", "ebp", "eip", "eflags")


def _machine(tmp_path, image, extra):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(range(256)) * 256)
    argv = ["-machine", "pc", "-m", "128M", "-nodefaults", "-display", "none", "-no-reboot",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4", *extra, "-kernel", str(image)]
    argv = [a.replace("DISK", str(disk)) for a in argv]
    m = build_machine(parse_argv(argv)).machine
    con = MemoryChardev()
    m.add_debugcon(con)
    # the PIT and the RTC read the host's clock: stop it, so that two runs of the same
    # guest see the same timer interrupts (QEMU's icount does the same for its clock)
    m.interrupts.pit.clock = lambda: 1_000_000_000
    m.rtc.clock = lambda: 1_000_000_000
    return m, con, disk


def _fingerprint(m):
    """What the guest (and a careful host) can observe."""
    from unicorn import x86_const as X
    regs = tuple(m.uc.reg_read(getattr(X, f"UC_X86_REG_{r.upper()}")) for r in REGS)
    cfg = {dfn: bytes(fn.config_read(o, 1) for o in range(256)) for dfn, fn in m.pci.functions.items()}
    ram = hashlib.sha256(m.ram.buffer.view[:m.ram.size]).hexdigest()
    state = []
    for st in capture_objects(device_roots(m)):
        plain = sorted((k, v) for k, v in st.plain.items()
                       if not hasattr(v, "snapshot_state") and k not in CLOCK_FIELDS)
        if st.obj is m or not (plain or st.buffers or st.shallow or st.deep):
            continue
        state.append((type(st.obj).__qualname__, repr(plain), [bytes(b) for _, b, _ in st.buffers],
                      [repr(v) for _, _, v in st.shallow], [repr(v.getstate() if isinstance(v, random.Random) else v)
                       for _, v in st.deep]))
    state.sort()
    # the guest-visible memory map (Unicorn's reads-zero pages for unclaimed addresses
    # come and go with the CPU's accesses and read the same either way)
    unassigned = m.memory._unassigned
    spans = [(p.start, p.end, p.region.name) for p in m.memory.flatten() if p.region is not unassigned]
    return regs, cfg, ram, state, spans


BLK = ("-drive", "file=DISK,format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0")
CASES = [
    ("virtio_blk_legacy", BLK),
    ("virtio_blk_modern", BLK),
    ("irq_virtio", ("-device", "virtio-rng-pci,seed=7")),
    ("memregion_modern", ("-device", "virtio-rng-pci,seed=7")),
    # virtio-gpu's resources, scanouts, cursor and config shadow
    ("gpu_commands", ("-device", "virtio-gpu-pci")),
    # PAM and SMRAM writes move the low megabyte's windows: the map follows the restore
    ("lowmem_map", ("-object", "memory-backend-ram,id=m,size=128K", "-device", "ivshmem-plain,memdev=m")),
]


@pytest.mark.parametrize("prog,extra", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("at", [3000, 20000, 45000])
def test_restored_machine_is_indistinguishable(tmp_path, firmware, prog, extra, at):
    m, con, disk = _machine(tmp_path, firmware(prog), extra)
    first = m.run(timeout=30, max_insns=at)
    if first.reason.name != "INSN_BUDGET":
        pytest.skip(f"{prog} ended before instruction {at}")
    before = _fingerprint(m)
    snap = m.snapshot()
    con.data.clear()

    def finish():
        stop = m.run(timeout=30)
        out = (stop.reason, stop.exit_code, con.text, disk.read_bytes(), _fingerprint(m))
        con.data.clear()
        return out

    a = finish()
    m.restore(snap)
    assert _fingerprint(m) == before
    b = finish()
    assert a[:4] == b[:4]
    for x, y in zip(a[4], b[4]):
        assert x == y
    m.restore(snap)          # a snapshot can be restored again and again
    assert finish() == a
    m.close()


def test_restore_copies_back_only_written_pages(tmp_path, firmware):
    m, con, _ = _machine(tmp_path, firmware("virtio_blk_legacy"), BLK)
    m.run(timeout=30, max_insns=20000)
    snap = m.snapshot()
    m.run(timeout=30)
    m.restore(snap)
    assert 0 < snap.pages_restored < 64
    m.restore(snap)          # nothing ran since: nothing to copy
    assert snap.pages_restored == 0
    m.close()


def test_host_views_of_ram_stay_valid(tmp_path, firmware):
    m, con, _ = _machine(tmp_path, firmware("virtio_blk_legacy"), BLK)
    m.run(timeout=30, max_insns=20000)
    view = m.ram.buffer.view
    snap = m.snapshot()
    saved = bytes(view[0x100000:0x101000])
    m.memory.guest.write(0x100000, b"\xAA" * 16)      # a host (DMA) write is tracked too
    assert view[0x100000] == 0xAA
    m.restore(snap)
    assert bytes(view[0x100000:0x101000]) == saved   # the same view sees the restored bytes
    m.close()


def test_every_builtin_device_declares_its_state(tmp_path, firmware):
    m, _, _ = _machine(tmp_path, firmware("virtio_blk_legacy"),
                       (*BLK, "-device", "virtio-rng-pci", "-device", "virtio-serial-pci",
                        "-device", "edu", "-device", "virtio-gpu-pci", "-device", "virtio-fb-pci",
                        "-device", "virtio-rng-pci,disable-legacy=on",
                        "-object", "memory-backend-ram,id=m,size=1M", "-device", "ivshmem-plain,memdev=m"))
    assert undeclared(m) == []
    m.close()


def test_every_stateful_class_says_what_it_adds():
    """A class with its own ``__init__``/``reset``/``device_reset`` declares its own
    ``snapshot_state`` (a subclass that only inherits a declaration would have its new
    attributes silently left out of every snapshot): all of uvirt's board, virtio and
    display classes, reached by a machine or not (a packed queue, say)."""
    import importlib
    import inspect
    import pkgutil
    from uvirt.cpu.snapshot import state_names, undeclared_in
    bad = set()
    for pkg in ("uvirt.virtio", "uvirt.board", "uvirt.display"):
        for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + "."):
            mod = importlib.import_module(info.name)
            for cls in vars(mod).values():
                if inspect.isclass(cls) and cls.__module__ == mod.__name__ and state_names(cls) is not None:
                    bad.update(undeclared_in(cls))
    assert sorted(bad) == []


def test_pam_and_smram_follow_a_restore():
    """PAM/SMRAM are host-bridge config bytes, the kvmvapic window is the low megabyte's
    own state: after a restore the memory map is the snapshot's again (no CPU needed)."""
    m = build_machine(parse_argv(["-machine", "pc", "-m", "128M", "-nodefaults", "-display", "none"]),
                      cpu=False, kernel=False).machine

    def spans():
        return [(p.start, p.end, p.region.name, getattr(p.region, "readonly", None)) for p in m.memory.flatten()]

    def cfg_write(off, value):
        m.io.write(0xCF8, 4, 0x80000000 | (off & 0xFC))
        m.io.write(0xCFC + (off & 3), 1, value)
    before, window = spans(), m.lowmem.vapic_at      # the firmware step opened it
    snap = m.snapshot()
    for off, v in ((0x59, 0x30), (0x5A, 0x13), (0x5F, 0x31), (0x72, 0x4A)):
        cfg_write(off, v)
    m.lowmem.vapic_window(True, (0xC8000, 0x2000))
    changed = spans()
    assert changed != before
    m.restore(snap)
    assert spans() == before and m.lowmem.vapic_at == window
    # and the other way: no window at the snapshot, one opened since
    m.lowmem.vapic_window(False)
    cfg_write(0x5A, 0x33)
    closed = spans()
    snap = m.snapshot()
    m.lowmem.vapic_window(True, (0xC0000, 0x3000))
    cfg_write(0x5A, 0x00)
    assert spans() != closed
    m.restore(snap)
    assert spans() == closed and m.lowmem.vapic is None
    m.close()


def test_the_bounce_buffer_follows_a_restore():
    """QEMU has one bounce buffer for DMA outside RAM: while a mapping holds it, a second
    non-RAM map fails ("virtio: bogus descriptor or out of resources").  Who holds it is
    state: a restore to before a device took it frees it, and a restore to while it was
    held gives it back to the same mapping (no CPU needed).  Before the snapshot kept it,
    the fuzzer's two backends disagreed on virtio-gpu after one input left an element
    holding the bounce."""
    m = build_machine(parse_argv(["-machine", "pc", "-m", "128M", "-nodefaults", "-display", "none"]),
                      cpu=False, kernel=False).machine
    dma = m.memory.guest
    unassigned = 0xF0000000
    snap = m.snapshot()
    held = dma.map(unassigned, 16, True)
    assert held is not None and held.buffer is not None and dma.map(unassigned, 16, True) is None
    m.restore(snap)
    again = dma.map(unassigned, 16, True)            # free again after the restore
    assert again is not None
    snap = m.snapshot()                              # taken while `again` holds it
    dma.unmap(again, 0)
    other = dma.map(unassigned, 8, False)
    m.restore(snap)
    assert dma.map(unassigned, 16, True) is None     # held again, by `again`
    dma.unmap(other, 0)                              # a mapping the restore undid frees nothing
    assert dma.map(unassigned, 16, True) is None
    dma.unmap(again, 0)
    assert dma.map(unassigned, 16, True) is not None
    m.close()


def test_an_msi_message_into_ram_is_undone_by_a_restore():
    """An MSI/MSI-X message is a DMA store (QEMU's address_space_stl_le): aimed at RAM
    (libqos does so under qtest; a fuzzer can program any table entry) it must reach the
    snapshot's dirty log like any device write, or a restore leaves it behind and the
    next input starts from different memory.  It went by the memory map's plain write."""
    m = build_machine(parse_argv(["-machine", "pc", "-m", "128M", "-nodefaults", "-display", "none"]),
                      cpu=False, kernel=False).machine
    addr = 0x7000
    before = m.memory.guest.read(addr, 4)
    snap = m.snapshot()
    m.pci.msi_write(addr, 0x4321)
    assert m.memory.guest.read(addr, 4) == (0x4321).to_bytes(4, "little")
    m.restore(snap)
    assert m.memory.guest.read(addr, 4) == before
    m.close()


def test_snapshot_refuses_pending_device_work(tmp_path, firmware):
    m, _, _ = _machine(tmp_path, firmware("virtio_blk_legacy"), BLK)
    m.work.enter()                       # inside a register access: queued, not run
    m.work.schedule(lambda: None)
    with pytest.raises(SnapshotError, match="device work pending"):
        m.snapshot()
    m.work.discard()
    m.work.leave()
    m.close()


def test_restore_needs_the_current_snapshot(tmp_path, firmware):
    m, _, _ = _machine(tmp_path, firmware("virtio_blk_legacy"), BLK)
    old = m.snapshot()
    m.snapshot()
    with pytest.raises(SnapshotError, match="current snapshot"):
        m.restore(old)
    m.close()


def test_why_not_unicorns_memory_snapshots():
    """The measurement behind uvirt/cpu/snapshot.py's choice: with Unicorn's copy-on-write
    memory contexts active, a mem_map_ptr host view no longer sees the guest's writes,
    nor the guest the host's (every shared region and ring view would go stale)."""
    import ctypes
    import mmap
    from unicorn import (UC_ARCH_X86, UC_CTL_CONTEXT_CPU, UC_CTL_CONTEXT_MEMORY, UC_CTL_CONTEXT_MODE,
                         UC_CTL_IO_WRITE, UC_MODE_32, UC_PROT_ALL, Uc)
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    buf = mmap.mmap(-1, 1 << 20)
    pin = ctypes.c_char.from_buffer(buf)
    uc.mem_map_ptr(0x100000, 1 << 20, UC_PROT_ALL, ctypes.addressof(pin))
    code = b"\xc7\x05" + (0x100800).to_bytes(4, "little") + (0x12345678).to_bytes(4, "little")
    buf[0:len(code)] = code
    uc.ctl(UC_CTL_CONTEXT_MODE, UC_CTL_IO_WRITE, UC_CTL_CONTEXT_CPU | UC_CTL_CONTEXT_MEMORY)
    uc.context_save()
    uc.emu_start(0x100000, 0x100000 + len(code))
    assert uc.mem_read(0x100800, 4) == (0x12345678).to_bytes(4, "little")
    assert buf[0x800:0x804] == bytes(4)                      # the host view is stale
    buf[0x900:0x904] = b"\x11\x22\x33\x44"
    assert uc.mem_read(0x100900, 4) == bytes(4)              # and the guest does not see the host
    uc.mem_unmap(0x100000, 1 << 20)
    del pin


def test_shared_memory_restored_through_the_same_host_view():
    """ivshmem-plain's BAR 2 (a memory backend shared with the host): the guest writes it,
    restore brings the old bytes back into the same buffer the host's view reads."""
    from uvirt.fuzz.backends import GuestBackend
    from uvirt.fuzz.ops import Op, OpKind
    from uvirt.fuzz.target import FuzzTarget
    from uvirt.board.memory.regions import RamRegion
    t = FuzzTarget(["-object", "memory-backend-ram,id=hm,size=1M", "-device", "ivshmem-plain,memdev=hm"])
    ram = t.fn.bars[2].region.children[0][1]          # the container's RAM (the backend)
    assert isinstance(ram, RamRegion)
    view = ram.buffer.view
    base = t.fn.bar_address(2)
    before = bytes(view[:16])
    GuestBackend(t).run([Op(OpKind.MMIO_WRITE, "write", (("mem_w", base, 4, 0xCAFEF00D),))])
    assert view[:4] == (0xCAFEF00D).to_bytes(4, "little")       # the host sees the guest's store
    t.reset()
    assert bytes(view[:16]) == before
    t.close()
