"""Findings of uvirt fuzz's own runs over the built-in devices, each kept as a regression
test with its reproducer (the input bytes, as ``uvirt fuzz --reproduce`` reads them).
A finding that was the oracle's mistake is pinned the same way: the input must give no
finding now, on both backends."""

import pytest

from uvirt.fuzz import planted
from uvirt.fuzz.engine import Harness
from uvirt.fuzz.ops import OpKind, encode
from uvirt.fuzz.target import FuzzTarget

#: virtio-rng-pci (transitional, set up through the legacy registers): the modern
#: transport's queue_desc and queue_avail written, then QUEUE_ENABLE=1.  As in QEMU 7.2
#: (virtio_pci_common_write): the proxy's queue size was never written (0), so
#: virtio_queue_set_num leaves the size alone, and virtio_queue_set_rings moves the used
#: ring to the never-written queue_used, guest address 0.  A request is then served and
#: its used element written at address 0.  The dma-outside-buffer oracle skipped queues
#: whose used ring is at 0 and called the buffer write stray.
USED_RING_AT_ZERO = bytes.fromhex(
    "050102200000000000000146555a5a050102280000008000000146555a5a0501011c0000000146555a5a0a")


@pytest.mark.parametrize("backend", ["board", "guest"])
def test_used_ring_at_address_zero_is_a_used_ring(backend):
    t = FuzzTarget(["-device", "virtio-rng-pci"], cpu=backend == "guest")
    try:
        ex = Harness(t, backend).execute(USED_RING_AT_ZERO)
        assert ex.finding is None, ex.finding
        vq = t.fn.vdev.queues[0]
        assert (vq.desc, vq.avail, vq.used) == (0x1000000, 0x1000080, 0)
        assert any(kind == "virtqueue_bad_queue_size" for kind, _ in t.machine.guest_errors)
    finally:
        t.close()


#: virtio-rng-pci, found in the 10^6-execution run: MSI-X enabled (and function-masked)
#: through a config write to the MSI-X capability, a request served (ISR bit 0 set, the
#: notification going to MSI-X, queue vector NO_VECTOR: no message), MSI-X disabled again.
#: QEMU 7.2 ends the same way: virtio_pci_notify sets no INTx while MSI-X is on, and
#: msix_write_config returns early when MSI-X goes off, so ISR stays 1 with INTx low.
#: The isr-without-interrupt oracle called that a set ISR without a notification.
ISR_AFTER_MSIX_OFF = bytes.fromhex("0102980200fcff46555a5a0a46555a5a010298")


@pytest.mark.parametrize("backend", ["board", "guest"])
def test_isr_left_by_an_msix_notify_is_not_a_missing_interrupt(backend):
    t = FuzzTarget(["-device", "virtio-rng-pci"], cpu=backend == "guest")
    try:
        ex = Harness(t, backend).execute(ISR_AFTER_MSIX_OFF)
        assert ex.finding is None, ex.finding
        fn = t.fn
        assert fn.vdev.isr & 1 and not fn.intx_level and not fn.msix_enabled()   # QEMU's state
    finally:
        t.close()


class _SilentIsr(planted.PlantedDevice):
    """Serves a request and sets ISR, but never notifies: the bug the oracle is for."""

    snapshot_state = ()

    def handle_output(self, index: int) -> None:
        self.isr |= 1


def test_isr_set_without_a_notification_is_still_found():
    def factory(machine):
        from uvirt.virtio.pci import VirtioPci
        fn = VirtioPci(_SilentIsr("clean"), class_code=0x00FF, vectors=2)
        fn.realize(machine.memory.guest)
        machine.add_pci(fn)
        return fn
    t = FuzzTarget([], factory=factory, cpu=False)
    try:
        f = Harness(t, "board").execute(encode(OpKind.CHAIN, bytes([0, 1, 0, 0, 1, 0, 0, 0]))).finding
        assert f is not None and f.kind == "isr-without-interrupt", f
    finally:
        t.close()


#: virtio-serial-pci, found in the 10^6-execution run: DRIVER_OK cleared through the
#: legacy status register, then a control-out request.  QEMU 7.2 serves it too
#: (control_out pops without looking at the status), so the strict oracle reports it,
#: as for virtio-blk.  The minimised input did not reproduce in a fresh process: a
#: virtqueue reads its rings through a RAM window while the memory map is unchanged,
#: bypassing the oracles' GuestMemory wrapper, so the finding depended on whether an
#: earlier input had moved a BAR.  The oracles now turn the windows off.
SERIAL_CONTROL_BEFORE_DRIVER_OK = bytes.fromhex("030000120000000346555a5a0a03")


@pytest.mark.parametrize("backend", ["board", "guest"])
def test_ring_accesses_reach_the_oracles_whatever_came_before(backend):
    t = FuzzTarget(["-device", "virtio-serial-pci"], cpu=backend == "guest")
    try:
        h = Harness(t, backend)
        for _ in range(2):                  # the same verdict on a first and a later run
            f = h.execute(SERIAL_CONTROL_BEFORE_DRIVER_OK).finding
            assert f is not None and f.kind == "dma-before-driver-ok", f
            assert "0x1030202+2" in f.detail          # queue 3's available index
    finally:
        t.close()


def test_used_ring_writes_reach_the_oracles():
    """The used element a built-in device writes is checked (used-len-overflow,
    bad-chain-accepted): it goes through the oracles' wrapper, not a RAM window."""
    t = FuzzTarget(["-device", "virtio-rng-pci"], cpu=False)
    try:
        h = Harness(t, "board")
        seen = []
        check = h.monitor._check_used
        h.monitor._check_used = lambda vq, addr, data: (seen.append((vq.index, addr)), check(vq, addr, data))
        assert h.execute(encode(OpKind.CHAIN, bytes([0, 1, 0, 0, 1, 0, 0, 0]))).finding is None
        assert seen and seen[0][0] == 0
    finally:
        t.close()


@pytest.mark.qemu
def test_serial_control_before_driver_ok_is_what_qemu_does():
    """The reproducer's qtest trace, then the control-out queue's used ring and the
    buffer read back: QEMU 7.2 and uvirt answer alike (the request served, used.idx 1,
    nothing written into the buffer)."""
    import sys

    from uvirt.fuzz.ops import decode
    from uvirt.fuzz.reproducers import qtest_trace
    from uvirt.qtest.record import parse_script, record
    dev = ["-device", "virtio-serial-pci"]
    t = FuzzTarget(dev, cpu=False)
    try:
        q3 = t.layout.queues[3]
        trace = qtest_trace(t.setup_prims, decode(SERIAL_CONTROL_BEFORE_DRIVER_OK, t.layout))
    finally:
        t.close()
    trace += f"readw 0x{q3.used + 2:x}\nreadq 0x{q3.used + 4:x}\nreadb 0x1100000\n"
    requests = parse_script(trace)[0]
    opts = ["-machine", "pc", "-nodefaults", "-display", "none", "-S", *dev]
    ref, _, qstatus = record(requests, ["qemu-system-x86_64"], opts)
    got, _, status = record(requests, [sys.executable, "-m", "uvirt", "run"], opts)
    assert qstatus is None and status is None
    assert [g.reply for g in got] == [r.reply for r in ref]
    assert [r.reply for r in ref[-3:]] == ["OK 0x0000000000000001", "OK 0x0000000000000000",
                                         "OK 0x0000000000000000"]


#: virtio-fb-pci, found in the 10^6-execution run: a request whose buffer lies in BAR2,
#: the framebuffer (plain RAM shared with the host).  The device's write lands in
#: memory, re-entering nothing: dma-into-own-registers now counts only BARs that hold
#: register callbacks.  A buffer in the device's MMIO BARs is still the finding.
FB_BUFFER_IN_FRAMEBUFFER = bytes.fromhex("0a0000490affff05")


@pytest.mark.parametrize("backend", ["board", "guest"])
def test_dma_into_a_ram_bar_is_memory_not_registers(backend):
    t = FuzzTarget(["-device", "virtio-fb-pci"], cpu=backend == "guest")
    try:
        h = Harness(t, backend)
        assert h.execute(FB_BUFFER_IN_FRAMEBUFFER).finding is None
        assert [i for i, _base, _size in h.monitor._memory_bars()] == [1, 4]    # MSI-X, modern
    finally:
        t.close()
