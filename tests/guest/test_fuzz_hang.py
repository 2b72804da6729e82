"""The hang oracle counts work, not wall-clock time (uvirt/fuzz/engine.py): the guest's
budget is an instruction count, a device model's own Python loop is bounded by the
process's CPU time.  A loop is still found; an input that is slow on the wall clock but
finite (here the device sleeps, as a process does on a loaded machine: wall time passes,
CPU time does not) is not a hang.  No assertion here depends on how long anything took."""

import time

import pytest

from uvirt.fuzz import planted
from uvirt.fuzz.engine import Harness
from uvirt.fuzz.ops import CODE_BASE, SEPARATOR, OpKind, encode
from uvirt.fuzz.target import FuzzTarget

CHAIN = encode(OpKind.CHAIN, bytes([0, 1, 0, 0, 0x01, 0, 0, 0]))
WAIT = encode(OpKind.WAIT, b"\x01\x00")
ISR_READ = encode(OpKind.IO_READ, bytes([0, 0, 0x13, 0, 0, 0]))
LOOP = encode(OpKind.CHAIN, bytes([0, 1, 0, 0, 1, 0, 1, 0]))       # planted.loop's trigger


class _Sleepy(planted.PlantedDevice):
    """The control device, each request served after a sleep of longer than the whole
    CPU budget the test gives an input."""

    snapshot_state = ()
    nap = 0.15

    def handle_output(self, index: int) -> None:
        time.sleep(self.nap)
        super().handle_output(index)


class _CodeWriter(planted.PlantedDevice):
    """Answers a notify by writing over the guest's code area (a device DMA with a wild
    address): a NOP slide that jumps back to its start, so the guest loops forever."""

    snapshot_state = ()

    def handle_output(self, index: int) -> None:
        slide = b"\x90" * (0x1000 - 5) + b"\xE9" + (-0x1000).to_bytes(4, "little", signed=True)
        self.mem.write(CODE_BASE, slide)


def _factory(cls):
    def factory(machine):
        from uvirt.virtio.pci import VirtioPci
        fn = VirtioPci(cls("clean"), class_code=0x00FF, vectors=2)
        fn.realize(machine.memory.guest)
        machine.add_pci(fn)
        return fn
    return factory


@pytest.fixture(scope="module")
def sleepy():
    t = FuzzTarget([], factory=_factory(_Sleepy))
    yield t
    t.close()


@pytest.mark.parametrize("backend", ["board", "guest"])
def test_slow_but_finite_input_is_not_a_hang(sleepy, backend):
    """Three requests, each served after 0.15 s asleep, within a budget of 0.05 s of CPU:
    the old wall-clock timer (ITIMER_REAL) called this a hang; it is not one."""
    h = Harness(sleepy, backend, budget=0.05)
    data = SEPARATOR.join([CHAIN, WAIT, CHAIN, WAIT, CHAIN, WAIT, ISR_READ])
    ex = h.execute(data)
    assert ex.finding is None, ex.finding
    assert ex.result.reads == [1]                  # all served: the ISR is set


@pytest.mark.parametrize("backend", ["board", "guest"])
def test_device_loop_is_a_hang_by_cpu_time(backend):
    t = FuzzTarget([], factory="uvirt.fuzz.planted:loop")
    try:
        f = Harness(t, backend, budget=0.2).execute(LOOP).finding
        assert f is not None and f.kind == "hang", f
        assert "more than 0.2 s of CPU time" in f.detail and "planted.py" in f.detail, f.detail
    finally:
        t.close()


def test_guest_loop_is_a_hang_by_instruction_count():
    """The device rewrites the guest's code while it waits; the guest then loops.  The
    CPU budget is far away (60 s): the instruction count ends the input."""
    t = FuzzTarget([], factory=_factory(_CodeWriter))
    try:
        h = Harness(t, "guest", oracles=["exception", "hang"], budget=60.0)
        ex = h.execute(SEPARATOR.join([CHAIN, WAIT, ISR_READ]))
        assert ex.finding is not None and ex.finding.kind == "hang", ex.finding
        assert "instruction budget" in ex.finding.detail, ex.finding.detail
        assert ex.result.stop.reason.name == "INSN_BUDGET"
        # the next input starts from the snapshot: the code area is the fuzzer's again
        assert h.execute(ISR_READ).finding is None
    finally:
        t.close()


def test_a_plain_input_runs_within_its_instruction_count():
    """The count is exact for the compiled code: a long input of plain accesses (over a
    thousand instructions in one stretch) finishes inside it."""
    t = FuzzTarget([], factory="uvirt.fuzz.planted:clean")
    try:
        h = Harness(t, "guest")
        ex = h.execute(SEPARATOR.join([ISR_READ] * 400 + [CHAIN]))
        assert ex.finding is None and ex.result.stop.reason.name == "HALTED"
        assert len(ex.result.reads) == 400
    finally:
        t.close()


def test_a_swallowed_hang_is_raised_again():
    """The budget's SIGPROF can land while the collector runs a finalizer, which swallows
    what it raises ("Exception ignored in ..."): the input must still end as a hang
    (a one-shot timer let the planted loop run, and allocate, until the kernel killed the
    worker at 24 GB).  Here the backend swallows the first Hang itself."""
    from uvirt.fuzz.engine import Hang
    t = FuzzTarget([], factory="uvirt.fuzz.planted:clean")
    try:
        h = Harness(t, "board", budget=0.05)
        swallowed = []

        def run(ops, on_op=None):
            give_up = time.process_time() + 5          # the old timer never fired again
            while time.process_time() < give_up:
                try:
                    while time.process_time() < give_up:
                        pass
                except Hang:
                    if swallowed:
                        raise
                    swallowed.append(1)
            return None

        h.backend.run = run
        f = h.execute(b"").finding
        assert swallowed and f is not None and f.kind == "hang", f
    finally:
        t.close()
