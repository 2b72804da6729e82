"""Seeds from the bundled guest programs (uvirt/fuzz/seeds.py): a program's register
accesses to the device become commands, its virtio set-up keeps the fuzz target's ring
layout, its notifies become requests, and the seeds run on the target to a device that
served requests."""

import hashlib

import pytest

from uvirt.fuzz.engine import Harness
from uvirt.fuzz.ops import OpKind, decode
from uvirt.fuzz.seeds import MAX_SEED, Access, record, translate
from uvirt.fuzz.target import FuzzTarget

RNG = ["-device", "virtio-rng-pci,seed=3"]
RNG_MODERN = ["-device", "virtio-rng-pci,seed=3,disable-legacy=on"]


@pytest.fixture(scope="module", params=["legacy", "modern"])
def rng(request):
    argv = RNG if request.param == "legacy" else RNG_MODERN
    t = FuzzTarget(argv)
    yield request.param, argv, t
    t.close()


def _served(h, data) -> int:
    """The most used elements the device had published at any point of the input."""
    vq = h.target.fn.vdev.queues[0]
    most = [0]
    ex = h.execute(data, on_op=lambda op, reads: most.__setitem__(0, max(most[0], vq.used_idx)))
    assert ex.finding is None, ex.finding
    return most[0]


def test_a_programs_accesses_become_a_drivers_session(rng):
    flavour, argv, t = rng
    program = f"virtio_rng_{flavour}"
    seeds = translate(record(program, argv), t)
    assert seeds and all(len(s) <= MAX_SEED for s in seeds)
    ops = [op for s in seeds for op in decode(s, t.layout)]
    kinds = {op.kind for op in ops}
    # the program's PCI probing, its register accesses, its resets and its requests
    assert {OpKind.CFG_READ, OpKind.RESET, OpKind.CHAIN} <= kinds
    assert (OpKind.IO_WRITE if flavour == "legacy" else OpKind.MMIO_WRITE) in kinds
    h = Harness(t, "board")
    assert max(_served(h, s) for s in seeds) >= 1      # the device served a request


def test_queue_addresses_follow_the_target():
    """The program's own ring addresses are replaced by the target's: a legacy
    QUEUE_PFN write carries the target's page, a notify becomes a request and a wait, a
    status write of 0 becomes a reset, a BAR write is left out."""
    t = FuzzTarget(RNG)
    try:
        q = t.layout.queues[0]
        accesses = [Access("cfg", -1, 0x10, 4, 0xFFFFFFFF, True),      # BAR0 sizing: dropped
                    Access("cfg", -1, 0x04, 2, 0x7, True),
                    Access("bar", 0, 0x12, 1, 0, True),                # STATUS = 0
                    Access("bar", 0, 0x0E, 2, 0, True),                # QUEUE_SEL = 0
                    Access("bar", 0, 0x08, 4, 0x3F0, True),            # QUEUE_PFN (the program's)
                    Access("bar", 0, 0x13, 1, 1, False),               # ISR read
                    Access("bar", 0, 0x13, 1, 1, False),               # ... polled: kept once
                    Access("bar", 0, 0x10, 2, 0, True)]                # QUEUE_NOTIFY 0
        [seed] = translate(accesses, t)
        ops = decode(seed, t.layout)
        assert [op.kind for op in ops] == [OpKind.CFG_WRITE, OpKind.RESET, OpKind.IO_WRITE,
                                           OpKind.IO_WRITE, OpKind.IO_READ, OpKind.CHAIN, OpKind.WAIT]
        assert ops[3].prims[0][3] == q.desc >> 12
        assert ops[5].text.startswith("queue 0 chain")
    finally:
        t.close()


def test_recording_leaves_the_disk_image_alone(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(range(256)) * 256)
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    argv = ["-drive", f"file={disk},format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0"]
    accesses = record("virtio_blk_legacy", argv)
    assert any(a.write and a.space == "bar" and a.offset == 0x10 for a in accesses)   # a notify
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before
