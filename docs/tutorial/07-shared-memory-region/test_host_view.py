"""Lesson 7, the host's side: after the guest ran, the host reads what it wrote
straight out of the buffer behind the BAR (no device model in between)."""

from pathlib import Path

import pytest

from uvirt.firmware import build

LESSON = Path(__file__).with_name("test_shared_memory.S")


@pytest.mark.uvirt("-device", "virtio-rng-pci,disable-legacy=on,memory-regions=64K")
def test_host_sees_the_guests_bytes(machine):
    (fn,) = [f for f in machine.pci.functions.values() if getattr(f, "regions", None)]
    (_shmid, shm), = fn.regions
    machine.load_kernel(build(LESSON))
    stop = machine.run(timeout=10)
    assert stop.exit_code == 1, machine.debugcon.text
    assert bytes(shm.view[:27]) == b"hello from the guest, host\0"
    assert bytes(shm.view[0xFFFC:0x10000]) == (0x600DCAFE).to_bytes(4, "little")
