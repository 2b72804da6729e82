"""ivshmem-plain / ivshmem-doorbell device model without a CPU (uvirt/board/devices/ivshmem.py).

Expected config images were read from QEMU 7.2 over qtest (no firmware): see the module
docstring of uvirt.board.devices.ivshmem."""

from __future__ import annotations

import os
import select
import threading
import time

import pytest

from uvirt.board.devices.ivshmem import Ivshmem, msix_exclusive_layout
from uvirt.ivshmem.peer import IvshmemPeer
from uvirt.ivshmem.server import IvshmemServer
from uvirt.cpu.machine import Machine
from uvirt.options import parse_argv
from uvirt.launch.runner import build_machine
from uvirt.backends.shared_memory import SharedMemory
from uvirt.polling import PollThenSleep

# 00:04.0 at reset on QEMU 7.2, first 0x50 bytes
_ROW0 = "f41a1011000000000100000500000000"
_ROW1 = "00000000000000000c00000000000000"
_ROW2 = "000000000000000000000000f41a0011"
PLAIN_RESET = bytes.fromhex(_ROW0 + _ROW1 + _ROW2 + "00" * 32)
DOORBELL3_RESET = bytes.fromhex("f41a1011000010000100000500000000" + _ROW1 + _ROW2
                                + "00000000400000000000000000000000"
                                + "11000200010000000108000000000000")


def _plain(size=0x10000) -> tuple[Machine, Ivshmem]:
    m = Machine(cpu=False)
    fn = Ivshmem("ivshmem-plain", SharedMemory.anonymous("t", size), owns_shm=True)
    m.add_pci(fn, 4)
    return m, fn


def test_plain_config_at_reset_is_qemus():
    m, fn = _plain(1 << 20)
    assert bytes(fn.config.data[:0x50]) == PLAIN_RESET[:0x50]
    assert fn.capabilities() == []
    fn.close()


def test_bar_sizing_readbacks():
    m, fn = _plain(1 << 20)
    for reg in (0x10, 0x14, 0x18, 0x1C):
        m.pci.config_write(0, fn.devfn, reg, 4, 0xFFFFFFFF)
    got = [m.pci.config_read(0, fn.devfn, reg, 4) for reg in (0x10, 0x14, 0x18, 0x1C)]
    assert got == [0xFFFFFF00, 0, 0xFFF0000C, 0xFFFFFFFF]
    fn.close()


def test_registers_as_qemu():
    m, fn = _plain()
    r = fn.regs_region
    r.write(0, 4, 0xFFFFFFFF)
    assert r.read(0, 4) == 0xFFFFFFFF
    assert r.read(1, 1) == 0                 # exact-offset reads
    r.write(1, 1, 0x5A)                      # widened to 4 at offset 1, offset & 0xfc = 0
    assert r.read(0, 4) == 0x5A
    r.write(2, 2, 0xABCD)
    assert r.read(0, 4) == 0xABCD
    r.write(4, 4, 5)
    assert (r.read(4, 4), r.read(4, 4)) == (5, 0)          # read clears
    r.write(8, 4, 0x1234)
    assert r.read(8, 4) == 0                 # IVPosition read-only, 0 for plain
    r.write(0x10, 4, 0xFFFFFFFF)
    assert r.read(0x10, 4) == 0 and r.read(0xFC, 4) == 0
    r.write(0x0C, 4, 0)                      # doorbell without a server: ignored
    assert fn.rings_ignored == 1
    assert r.read(0, 8) == 0                 # 8-byte access is not valid: reads 0
    m.reset()
    assert fn.intrmask == 0 and fn.intrstatus == 0
    fn.close()


@pytest.mark.parametrize("n, layout", [(1, (0x1000, 0x800)), (128, (0x1000, 0x800)),
                                       (129, (0x1000, 0x810)), (256, (0x2000, 0x1000)), (200, (0x1000, 0xC80)),
                                       (2048, (0x10000, 0x8000))])
def test_msix_exclusive_bar_layout(n, layout):
    assert msix_exclusive_layout(n) == layout


def test_not_power_of_two_refused():
    from uvirt.errors import UvirtError
    from uvirt.board.memory.regions import HostBuffer
    with pytest.raises(UvirtError, match="0x3000 is not a power of two"):
        Ivshmem("x", SharedMemory("x", HostBuffer(0x3000)))


def test_close_unmaps_and_releases_the_buffer():
    m, fn = _plain()
    fn.config_write(0x18, 4, 0xE0000000)
    fn.config_write(0x04, 2, 2)
    m.pci.apply(fn, fn.update_mappings())
    fn.close()
    assert fn.bar2.children == []
    with pytest.raises(ValueError):
        fn.shm.buffer.view[0]                # released
    fn.close()                               # idempotent


@pytest.fixture
def server(tmp_path):
    sock = str(tmp_path / "s")
    srv = IvshmemServer(sock, size=0x4000, vectors=3).start()
    srv.start_thread()
    yield srv
    srv.close()


def test_doorbell_config_and_rings(server, tmp_path):
    fds = len(os.listdir("/proc/self/fd"))
    with IvshmemPeer.connect(server.socket_path, vectors=3, timeout=5) as peer:
        b = build_machine(parse_argv(["-machine", "pc", "-nodefaults", "-chardev",
                                      f"socket,path={server.socket_path},id=c", "-device",
                                      "ivshmem-doorbell,chardev=c,vectors=3,addr=4", "-accel", "qtest"]))
        m = b.machine
        fn = b.devices[-1][1]
        assert bytes(fn.config.data[:0x50]) == DOORBELL3_RESET
        assert fn.vm_id == 1 and fn.regs_region.read(8, 4) == 1
        assert fn.bar2.size == 0x4000 and fn.msix_region.size == 0x1000
        peer.memory[0:4] = b"\x11\x22\x33\x44"
        assert fn.shm.read(0, 4) == b"\x11\x22\x33\x44"
        # host rings us while MSI-X is disabled: nothing
        peer.ring(1, 2)
        deadline = time.monotonic() + 5          # until the device has taken the ring...
        while fn.interrupts < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fn.msix.pba[0] == 0 and fn.interrupts == 1   # ...which did nothing
        fn.config_write(0x42, 2, 0x8000)         # MSI-X enable, vectors masked
        peer.ring(1, 2)
        deadline = time.monotonic() + 5
        while fn.msix.pba[0] != 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fn.msix.pba[0] == 4
        # the guest rings the host on vector 1 with a byte store at 0x0d (QEMU: val 1 -> peer 0 vector 1)
        fn.regs_region.write(0x0D, 1, 1)
        assert peer.wait(timeout=2) == 1
        m.reset()
        assert fn.msix.pba[0] == 0 and not fn.msix.enabled
        m.close()
        assert fn.closed and fn.client.closed
        assert peer.wait_peer_left(1, timeout=5) == 1
    deadline = time.monotonic() + 5          # the in-process server drops its copies too
    while len(os.listdir("/proc/self/fd")) != fds and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(os.listdir("/proc/self/fd")) == fds


def test_own_ring_is_answered_before_the_write_returns(server, tmp_path):
    """QEMU answers a ring of its own eventfd within microseconds; uvirt answers it in the
    doorbell write itself, so a loaded host cannot let it land after the guest's next
    step (an MSI-X enable would turn it into a pending bit QEMU never shows)."""
    b = build_machine(parse_argv(["-machine", "pc", "-nodefaults", "-chardev",
                                  f"socket,path={server.socket_path},id=c", "-device",
                                  "ivshmem-doorbell,chardev=c,vectors=3,addr=4", "-accel", "qtest"]))
    fn = b.devices[-1][1]
    try:
        fn.regs_region.write(0x0C, 4, (fn.vm_id << 16) | 2)      # own id, vector 2, MSI-X off
        assert fn.interrupts == 1 and fn.msix.pba[0] == 0
        fn.config_write(0x42, 2, 0x8000)                         # MSI-X on, vectors masked
        time.sleep(0.05)                                         # nothing arrives late
        assert fn.msix.pba[0] == 0 and fn.interrupts == 1
        fn.regs_region.write(0x0C, 4, (fn.vm_id << 16) | 2)
        assert fn.msix.pba[0] == 4 and fn.interrupts == 2
        fn.regs_region.write(0x0C, 4, (fn.vm_id << 16) | 3)      # no such vector: ignored
        assert fn.interrupts == 2 and fn.rings_ignored == 1
    finally:
        b.machine.close()



@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU allowed: nothing to follow")
def test_the_service_thread_follows_the_thread_that_rings(server):
    """The ring back a doorbell asks for wakes the service thread: it runs on the CPU of
    the thread that rang (the vCPU's; uvirt/affinity.py), so its message preempts the
    spinning guest instead of contending for the GIL from another CPU."""
    with IvshmemPeer.connect(server.socket_path, vectors=1, timeout=5) as peer:
        b = build_machine(parse_argv(["-machine", "pc", "-nodefaults", "-chardev",
                                      f"socket,path={server.socket_path},id=c", "-device",
                                      "ivshmem-doorbell,chardev=c,vectors=1,addr=4", "-accel", "qtest"]))
        fn = b.devices[-1][1]
        try:
            follower = fn.cpu_follower
            tid = fn._thread.native_id
            deadline = time.monotonic() + 5
            while follower.tid != tid and time.monotonic() < deadline:
                time.sleep(0.01)                 # the thread has started following
            assert follower.tid == tid
            fn.regs_region.write(0x0C, 4, 0 << 16)   # ring the host peer, vector 0
            assert peer.wait(timeout=5) == 0
            assert follower.moves == 1 and os.sched_getaffinity(tid) == {follower.cpu}
            fn.regs_region.write(0x0C, 4, 5 << 16)   # no such peer: nothing rung, nobody moved
            assert fn.rings_ignored == 1 and follower.moves == 1
        finally:
            b.machine.close()
        assert follower.tid == -1                # its thread ended: never moved again


def _watched_events(epoll) -> dict[int, int]:
    """What an epoll set asks for each fd it holds (the kernel's fdinfo: ``tfd: N events: M``)."""
    with open(f"/proc/self/fdinfo/{epoll.fileno()}") as f:
        rows = [line.split() for line in f if line.startswith("tfd:")]
    return {int(r[1]): int(r[3], 16) for r in rows}


def _doorbell_board(server, vectors=1):
    b = build_machine(parse_argv(["-machine", "pc", "-nodefaults", "-chardev",
                                  f"socket,path={server.socket_path},id=c", "-device",
                                  f"ivshmem-doorbell,chardev=c,vectors={vectors},addr=4", "-accel", "qtest"]))
    return b, b.devices[-1][1]


def test_the_cpu_thread_takes_a_quick_answer_to_its_doorbell_itself(server):
    """After a doorbell to a peer the CPU thread looks for the ring back (``_poll_answer``)
    with the service thread standing aside: an answer that comes meanwhile is taken
    before the doorbell write returns, as the service thread would take it."""
    with IvshmemPeer.connect(server.socket_path, vectors=1, timeout=5) as peer:
        b, fn = _doorbell_board(server)
        assert fn.answer_polling is None                 # no CPU (qtest): nobody looks
        seen = []

        def answer() -> None:                            # the host peer: ring back at once
            if peer.wait(vector=0, timeout=10) == 0:
                deadline = time.monotonic() + 10         # the ring comes just before the look
                while fn._watched and time.monotonic() < deadline:
                    time.sleep(0.001)
                seen.append(fn._watched)                 # the service thread stood aside
                peer.ring(1, 0)
        try:
            fn.is_cpu_thread = lambda: True              # this thread plays the CPU's
            fn.answer_polling = PollThenSleep(poll_ns=20 * 10**9, busy_ns=20 * 10**9)
            fn.config_write(0x42, 2, 0x8000)             # MSI-X on, vector masked: PBA bit
            t = threading.Thread(target=answer)
            t.start()
            fn.regs_region.write(0x0C, 4, 0 << 16)       # ring the host peer, vector 0
            assert fn.interrupts_polled == fn.interrupts == 1 and fn.msix.pba[0] == 1
            t.join(10)
            assert seen == [False] and fn._watched       # ... and watches again
            asked = _watched_events(fn._watch)
            assert all(asked[fd] & select.EPOLLIN for fd in fn.client.own_eventfds())
        finally:
            b.machine.close()


def test_a_look_that_finds_no_answer_leaves_the_ring_to_the_service_thread(server):
    """No answer within the look: the doorbell returns, the service thread watches again
    and takes the late ring, and the next doorbell does not look (back-off)."""
    with IvshmemPeer.connect(server.socket_path, vectors=1, timeout=5) as peer:
        b, fn = _doorbell_board(server)
        try:
            fn.is_cpu_thread = lambda: True
            fn.answer_polling = p = PollThenSleep(poll_ns=10**6, busy_ns=10**12)
            fn.config_write(0x42, 2, 0x8000)
            fn.regs_region.write(0x0C, 4, 0 << 16)
            assert peer.wait(vector=0, timeout=5) == 0
            assert (p.won, p.lost) == (0, 1) and fn._watched and fn.interrupts == 0
            peer.ring(1, 0)                              # late: the service thread's
            deadline = time.monotonic() + 5
            while fn.interrupts < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert fn.interrupts == 1 and fn.interrupts_polled == 0 and fn.msix.pba[0] == 1
            fn.regs_region.write(0x0C, 4, 0 << 16)       # skipped: no look, no pause
            assert (p.won, p.lost) == (0, 1) and fn._watched
        finally:
            b.machine.close()


def test_a_halted_cpu_takes_the_ring_while_the_service_thread_stands_aside(server):
    """While the guest is in HLT the CPU thread watches the client's fd itself
    (uvirt/cpu/halt_wake.py) and the service thread's wait set does not hold it, so one
    ring wakes one thread; the message is sent on the CPU thread, as posted work would be."""
    with IvshmemPeer.connect(server.socket_path, vectors=3, timeout=5) as peer:
        b = build_machine(parse_argv(["-machine", "pc", "-nodefaults", "-chardev",
                                      f"socket,path={server.socket_path},id=c", "-device",
                                      "ivshmem-doorbell,chardev=c,vectors=3,addr=4", "-accel", "qtest"]))
        fn = b.devices[-1][1]
        try:
            efd = fn.client.fileno()
            src = fn.halt_source
            assert src.fileno() == efd
            own = fn.client.own_eventfds()               # the service thread waits on these
            assert own == {fd: v for v, fd in enumerate(fn.client.state.eventfds[fn.vm_id])}
            assert sorted(own.values()) == [0, 1, 2]
            asked = _watched_events(fn._watch)           # itself, not nested in the client's epoll
            assert all(asked[fd] & select.EPOLLIN for fd in own) and efd not in asked
            fn.config_write(0x42, 2, 0x8000)             # MSI-X on, vectors masked
            src.pause()
            asked = _watched_events(fn._watch)
            assert not any(asked[fd] & select.EPOLLIN for fd in own)   # the service thread does not watch them
            assert asked[fn.client.server_fileno()] & select.EPOLLIN     # the server stays
            assert peer.wait_peer_joined(timeout=5).peer_id == 1
            peer.ring(1, 2)
            assert select.select([efd], [], [], 5)[0] == [efd]
            src.ready()                                  # the halted CPU's wait services it
            assert fn.msix.pba[0] == 4 and fn.interrupts == fn.interrupts_in_halt == 1
            src.resume()
            asked = _watched_events(fn._watch)
            assert all(asked[fd] & select.EPOLLIN for fd in own)   # watched again
            peer.ring(1, 1)                              # ... which takes the next ring
            deadline = time.monotonic() + 5
            while fn.interrupts < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert fn.msix.pba[0] == 6 and fn.interrupts_in_halt == 1
        finally:
            b.machine.close()
        assert src.fileno() == -1                        # closed: a halted CPU ignores it
        src.pause(), src.resume()                        # and these do nothing


def test_messages_off_the_cpu_thread_go_to_ram_directly_and_elsewhere_through_the_cpu(server):
    """The service thread's sender (``Ivshmem._send``): a message RAM decodes is written
    there at once, as the bus's msi_write would; one to the local APIC (or above 4 GiB,
    where nothing decodes) is posted to the CPU thread, which checks again; with bus
    mastering off nothing goes out; a masked vector only sets its PBA bit."""
    from uvirt.board.devices.ivshmem import SocketChardev, create_doorbell
    fds = len(os.listdir("/proc/self/fd"))
    m = Machine()                                       # a CPU side, not run
    try:
        chardev = SocketChardev(server.socket_path, chardev_id="c")
        m.board.chardevs.append(chardev)                # closed (with its device) by m.close()
        fn = create_doorbell(m.board, {"chardev": chardev, "vectors": 3, "master": "off",
                                       "addr": (4, 0)})
        posted = []
        fn.deliver = posted.append
        targets = [0x5000, 0xFEE00000, 0x1_0000_5000]
        for v, addr in enumerate(targets):
            fn.msix_region.write(16 * v, 4, addr & 0xFFFFFFFF)
            fn.msix_region.write(16 * v + 4, 4, addr >> 32)
            fn.msix_region.write(16 * v + 8, 4, 0x40 + v)
            fn.msix_region.write(16 * v + 12, 4, 0)         # unmasked
        fn.config_write(0x42, 2, 0x8000)                    # MSI-X on
        fn.config_write(4, 2, 0x0)                          # bus mastering off
        fn._vector_notify(0)
        assert m.memory.read(0x5000, 4) == 0 and not posted and fn.msix.pba[0] == 0
        fn.config_write(4, 2, 0x4)                          # bus master
        fn._vector_notify(0)
        assert m.memory.read(0x5000, 4) == 0x40 and not posted and fn.outstanding == 0
        fn._vector_notify(1)
        fn._vector_notify(2)
        assert len(posted) == 2 and fn.outstanding == 2
        m.memory.write(0x5000, 4, 0)
        posted[1]()                                         # >4 GiB: dropped on the CPU thread
        assert fn.outstanding == 1 and m.memory.read(0x5000, 4) == 0
        fn.msix_region.write(12, 4, 1)                      # vector 0 masked
        fn._vector_notify(0)
        assert fn.msix.pba[0] == 1 and m.memory.read(0x5000, 4) == 0 and len(posted) == 2
        assert fn.interrupts == 5
    finally:
        m.close()
    deadline = time.monotonic() + 5          # the in-process server drops its copies too
    while len(os.listdir("/proc/self/fd")) != fds and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(os.listdir("/proc/self/fd")) == fds


def test_a_ram_message_is_the_bus_write_and_follows_the_memory_map():
    """``Ivshmem.ram_write`` (a message from the service thread or the CPU thread's look)
    keeps the RAM piece it last wrote as a window: each store must still be what the
    bus's 32-bit ``msi_write`` makes -- logged for a held snapshot, dropped on ROM, cut
    at a piece's end -- and a changed map must be seen at the next message."""
    from uvirt.board.devices.ivshmem import _ram_writer
    from uvirt.board.memory.regions import MmioRegion, RamRegion
    m = Machine(cpu=False)
    mem = m.memory
    try:
        ram_write = _ram_writer(mem)
        logged = []
        mem.dirty_log = lambda addr, size: logged.append((addr, size))
        assert ram_write(0x5000, 0x1_1223_3445)                   # 32 bits of data
        assert ram_write(0x5008, 0x55667788)                      # the same piece again
        assert mem.guest.read(0x5000, 12) == bytes.fromhex("45342312 00000000 88776655")
        assert logged == [(0x5000, 4), (0x5008, 4)]
        over = RamRegion("over", 0x1000)                          # new RAM over the page
        p = mem.add(over, 0x5000, priority=1)
        mem.commit()
        assert ram_write(0x5000, 0xAABBCCDD)
        assert over.buffer.view[0:4] == bytes.fromhex("DDCCBBAA")
        p.remove()
        rom = RamRegion("rom", 0x1000, readonly=True)             # ROM over it: dropped
        p = mem.add(rom, 0x5000, priority=1)
        mem.commit()
        assert ram_write(0x5000, 0x01020304) and bytes(rom.buffer.view[0:4]) == bytes(4)
        p.remove()
        mem.commit()
        assert mem.guest.read(0x5000, 4) == bytes.fromhex("45342312")   # nor under it
        regs = []
        dev = type("Dev", (), {"read": lambda s, o, n: 0,
                               "write": lambda s, o, n, v: regs.append((o, n, v))})()
        p = mem.add(MmioRegion("regs", 0x1000, dev), 0x5000, priority=1)
        mem.commit()
        assert not ram_write(0x5000, 7) and regs == []            # not RAM: the caller posts it
        p.remove()
        mem.commit()
        assert ram_write(0x5000, 0x0BADF00D)
        assert mem.guest.read(0x5000, 4) == bytes.fromhex("0DF0AD0B")
        end = mem.ram_piece(0x5000).end           # across the piece's end: the bus's write
        before = mem.guest.read(end - 2, 4)
        logged.clear()
        assert ram_write(end - 2, 0x11223344) and logged[0] == (end - 2, 2)
        after = mem.guest.read(end - 2, 4)
        mem.guest.write(end - 2, before)
        mem.guest.write(end - 2, bytes.fromhex("44332211"))
        assert after == mem.guest.read(end - 2, 4) and after[:2] == bytes.fromhex("4433")
        assert not ram_write(0x1_0000_5000, 1)                    # nothing decodes above 4 GiB
        p = mem.add(RamRegion("later", 0x1000), 0x5000, priority=1)    # not committed yet
        assert ram_write(0x5000, 0x12345678) and mem._dirty       # written, the map not flattened here
        p.remove()
        mem.commit()
    finally:
        m.close()


def test_the_look_lets_the_peer_run_before_its_first_look(server, monkeypatch):
    """Right after the ring the answer cannot be there yet, and a peer sharing the CPU
    thread's CPU only runs when that thread gives the CPU away: the look yields first,
    then looks (``Ivshmem._poll_answer``)."""
    with IvshmemPeer.connect(server.socket_path, vectors=1, timeout=5) as peer:
        b, fn = _doorbell_board(server)
        try:
            fn.is_cpu_thread = lambda: True
            fn.answer_polling = PollThenSleep(poll_ns=10**6, busy_ns=10**12)
            calls = []
            look, real_yield = fn._look_now, os.sched_yield
            fn._look_now = lambda: calls.append("look") or look()
            monkeypatch.setattr(os, "sched_yield", lambda: calls.append("yield") or real_yield())
            fn.regs_region.write(0x0C, 4, 0 << 16)       # ring the host peer: no answer comes
            assert peer.wait(vector=0, timeout=5) == 0
            assert calls[:3] == ["yield", "look", "yield"] and fn._watched
        finally:
            b.machine.close()
