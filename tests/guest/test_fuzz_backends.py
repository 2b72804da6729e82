"""The fuzzer's two backends (uvirt/fuzz/backends.py) run the same operations to the same
result: random operation streams (Hypothesis, derandomized: the same examples on every
run) on virtio-rng and virtio-blk (legacy transport) and on modern-only virtio-rng and
virtio-gpu (the modern transport: common configuration, per-queue notify addresses), once
as guest code the CPU executes and once as direct board calls, from the same snapshot;
every value read, every device's state, every config space, the DMA area and the memory
map must agree."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uvirt.fuzz.backends import BoardBackend, GuestBackend, compile_ops
from uvirt.fuzz.ops import (CODE_BASE, SEPARATOR, OpKind, decode, encode, split_commands)
from uvirt.fuzz.target import FuzzTarget, observe

command = st.builds(lambda k, rest: encode(OpKind(k), rest),
                    st.sampled_from([int(k) for k in OpKind]), st.binary(min_size=0, max_size=24))
stream = st.lists(command, min_size=1, max_size=12).map(SEPARATOR.join)


MODERN = {"rng-modern": ["-device", "virtio-rng-pci,seed=5,disable-legacy=on"],
          "gpu": ["-device", "virtio-gpu-pci"]}


@pytest.fixture(scope="module", params=["rng", "blk", *MODERN])
def target(request, tmp_path_factory):
    if request.param == "rng":
        argv = ["-device", "virtio-rng-pci,seed=5"]
    elif request.param in MODERN:
        argv = MODERN[request.param]
    else:
        disk = tmp_path_factory.mktemp("fuzz") / "disk.img"
        disk.write_bytes(bytes(range(256)) * 1024)
        argv = ["-drive", f"file={disk},format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0"]
    t = FuzzTarget(argv)
    yield t
    t.close()


def _run(target, backend, ops):
    target.reset()
    result = backend.run(ops)
    return result, observe(target.machine)


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=stream)
def test_guest_code_and_board_calls_agree(target, data):
    ops = decode(data, target.layout)
    board, b_obs = _run(target, BoardBackend(target), ops)
    guest, g_obs = _run(target, GuestBackend(target), ops)
    assert guest.stop.reason.name == "HALTED", guest.stop.summary()
    assert guest.reads == board.reads
    for name, g, b in zip(("device state", "config space", "DMA area", "memory map"), g_obs, b_obs):
        assert g == b, name


def test_a_valid_request_completes_on_both(target):
    chain = encode(OpKind.CHAIN, bytes([0, 2, 0, 5, 0x55, 0, 0, 1]))
    used = encode(OpKind.USED_READ, b"\0")
    ops = decode(SEPARATOR.join([chain, used]), target.layout)
    for backend in (BoardBackend(target), GuestBackend(target)):
        result, _ = _run(target, backend, ops)
        assert result.reads == [1]          # the device used the chain


def test_modern_only_devices_get_the_queue_operations():
    """A modern-only device is set up through the common configuration and its queue
    operations notify at each queue's own address in the notify region (virtio 1.2
    §4.1.4.4: queue_notify_off x notify_off_multiplier)."""
    from uvirt.virtio.pci import NOTIFY_OFFSET, NOTIFY_OFF_MULTIPLIER
    t = FuzzTarget(MODERN["gpu"])
    try:
        vdev, L = t.fn.vdev, t.layout
        assert int(vdev.status) == 0xF and vdev.guest_features >> 32 & 1     # VERSION_1
        assert [q.index for q in L.queues] == [0, 1] and t.machine.guest_errors == []
        modern = t.fn.bar_address(4)
        assert [q.notify for q in L.queues] == [
            ("mem", modern + NOTIFY_OFFSET + i * NOTIFY_OFF_MULTIPLIER, 2) for i in (0, 1)]
        for q, vq in zip(L.queues, vdev.queues):
            assert (vq.desc, vq.avail, vq.used) == (q.desc, q.avail, q.used)
        # a reset op replays the modern driver's set-up
        ops = decode(SEPARATOR.join([encode(OpKind.RESET, b"\x01"), encode(OpKind.CHAIN, bytes(8)),
                                     encode(OpKind.USED_READ, b"\x01")]), L)
        assert all(p[0] in ("mem_w", "ram") for op in ops for p in op.prims[:-1])
        result, _ = _run(t, BoardBackend(t), ops)
        assert int(vdev.status) == 0xF and result.reads == [0]   # queue 1 untouched
    finally:
        t.close()


def test_commands_survive_insertions():
    """Bytes inserted inside one command leave the others' meaning alone."""
    a, b, c = (encode(OpKind.IO_READ, b"\0\0\x13"), encode(OpKind.WAIT), encode(OpKind.NOTIFY, b"\0"))
    assert split_commands(SEPARATOR.join([a, b + b"\xff\xff", c]))[::2] == [a, c]


def test_compiled_code_ends_in_a_halt():
    code, resumes, nread = compile_ops([])
    assert code == b"\xFA\xF4" and resumes == {} and nread == 0
    assert CODE_BASE % 0x1000 == 0


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=stream, prefix=stream)
def test_decoded_commands_kept_decode_the_same(target, data, prefix):
    """decode() keeps decoded commands (a command's meaning depends on its bytes and,
    for the ring operations, on the available indexes before it): an input decodes the
    same with the cache empty and after other inputs filled it."""
    import dataclasses
    cold = dataclasses.replace(target.layout, decoded={})
    expect = decode(data, cold)
    decode(prefix + SEPARATOR + data, target.layout)
    assert decode(data, target.layout) == expect
    assert decode(data, cold) == expect
    # compiled code counts its instructions: one stretch per wait, and the final halt
    c = compile_ops(expect)
    assert len(c.insns) == 1 + sum(p[0] == "wait" for op in expect for p in op.prims)
