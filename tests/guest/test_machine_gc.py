"""A closed machine is freed by reference counts alone: no cycle is left for Python's
cyclic garbage collector.  A pc board is some 600 objects wired to each other (devices'
callbacks into the board and the interrupt controllers, placements and their spaces, the
PCI bus and its functions, Unicorn's hook tables); left as one cyclic graph, freeing it
cost a collector pass of about 170 us per machine (`python -m benchmarks bench_boot`).
``Machine.close`` and ``Board.close`` cut those back-links (uvirt/board/board.py
``_unwire``); devices keep their state."""

import gc
import time
import weakref
from contextlib import contextmanager

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_32, Uc

from uvirt.backends.chardev import MemoryChardev
from uvirt.board.board import Board
from uvirt.boot import firmware_step as bios
from uvirt.cpu.machine import Machine
from uvirt.errors import MemoryMapError
from uvirt.testing.guest import run_uvirt

EXIT_0 = "    mov dx, 0xf4\n    mov al, 0\n    out dx, al\n"


def _image(tmp_path, firmware, body: str = EXIT_0):
    src = tmp_path / "g.S"
    src.write_text(f'.include "uvirt.inc"\nmain:\n{body}\n    ret\n')
    return firmware(src)


@pytest.fixture
def freed(monkeypatch):
    """``with freed() as garbage:`` runs its body with the cyclic collector off and
    checks, afterwards, that every Machine and Board made inside was freed by reference
    counts alone (not only left as cycles: kept alive by anything counts as not freed);
    ``garbage`` then holds the uvirt objects only the cyclic collector would free."""
    made: list[weakref.ref] = []
    for cls in (Machine, Board):
        init = cls.__init__

        def record(self, *a, __init=init, **kw):
            made.append(weakref.ref(self))
            __init(self, *a, **kw)
        monkeypatch.setattr(cls, "__init__", record)

    @contextmanager
    def run():
        found: list = []
        was_enabled = gc.isenabled()
        gc.collect()
        gc.disable()
        made.clear()
        try:
            yield found
            assert made, "no machine was made"
            # The watchdog thread may still be in its pass over the machines it woke for
            # (uvirt/cpu/machine.py _loop): give it time; a cycle is never freed here.
            for _ in range(1000):
                alive = [type(r()).__name__ for r in made if r() is not None]
                if not alive:
                    break
                time.sleep(0.01)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            found.extend(type(o).__module__ + "." + type(o).__qualname__ for o in gc.garbage
                         if type(o).__module__.startswith("uvirt"))
            assert alive == [], f"not freed by reference counts: {alive}"
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            if was_enabled:
                gc.enable()
    return run


def _boot(image: bytes, **kw) -> tuple[Machine, MemoryChardev]:
    m = Machine(**kw)
    con = MemoryChardev()
    with m.batch():
        m.add_debugcon(con)
        m.add_debug_exit(0xF4, 4)
        bios.firmware_step(m)
    m.load_kernel(image)
    stop = m.run(timeout=30)
    assert stop.debug_exit_value == 0, stop.report()
    return m, con


def test_a_closed_machine_leaves_no_cycle(tmp_path, firmware, freed):
    image = _image(tmp_path, firmware).read_bytes()
    _boot(image)[0].close()             # the first machine of a process builds caches
    with freed() as garbage:
        m, _ = _boot(image)
        m.close()
        del m
    assert garbage == []


def test_a_machine_dropped_after_close_leaves_no_cycle(tmp_path, firmware, freed):
    image = _image(tmp_path, firmware).read_bytes()
    with freed() as garbage:
        _boot(image)[0].close()
    assert garbage == []


def test_uvirt_run_leaves_no_cycle(tmp_path, firmware, freed):
    image = _image(tmp_path, firmware)
    run_uvirt(image)
    with freed() as garbage:
        assert run_uvirt(image).exit_code == 1
    assert garbage == []


def test_a_machine_on_a_users_cpu_leaves_no_cycle(tmp_path, firmware, freed):
    image = _image(tmp_path, firmware).read_bytes()
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    with freed() as garbage:
        _boot(image, uc=uc)[0].close()
    assert garbage == []
    uc.mem_map(0x1000, 0x1000)          # the user's CPU lives on
    uc.mem_write(0x1000, b"\x90")


def test_devices_keep_their_state_after_close(tmp_path, firmware):
    # An interrupt-controller and CMOS state the guest set stays readable after close.
    body = ("    mov al, 0x11\n    out 0x20, al\n    mov al, 0x48\n    out 0x21, al\n"
            "    mov al, 0x04\n    out 0x21, al\n    mov al, 0x01\n    out 0x21, al\n"
            "    mov al, 0xfa\n    out 0x21, al\n"
            "    mov al, 0x34\n    out 0x70, al\n    mov al, 0x5a\n    out 0x71, al\n"
            "    mov al, 'k'\n    out 0xe9, al\n" + EXIT_0)
    m, con = _boot(_image(tmp_path, firmware, body).read_bytes())
    board = m.board
    m.close()
    assert con.text.endswith("k")
    assert board.interrupts.pic.master.imr == 0xFA
    assert board.interrupts.pic.master.irq_base == 0x48
    assert board.rtc.cmos[0x34] == 0x5A
    assert board.guest_errors == []
    # guest memory went with the memory map: a one-line host error, not an AttributeError
    with pytest.raises(MemoryMapError, match="the machine is closed"):
        m.memory.guest.read(0x1000, 4)


#: what a pc board is made of: none may be left to the cyclic collector
BOARD_PARTS = {"uvirt.cpu.machine.Machine", "uvirt.board.board.Board",
               "uvirt.board.memory.regions.MemoryMap", "uvirt.board.memory.regions.IoSpace",
               "uvirt.board.pci.bus.PciBus", "uvirt.board.interrupts.InterruptController"}


@pytest.mark.parametrize("args", [
    ["-device", "edu"],
    ["-device", "virtio-rng-pci"],
    ["-drive", "file={disk},if=none,id=d0,format=raw", "-device", "virtio-blk-pci,drive=d0"],
    ["-device", "virtio-serial-pci"],
    ["-device", "virtio-gpu-pci"],
    ["-object", "memory-backend-ram,id=hm,size=1M", "-device", "ivshmem-plain,memdev=hm"],
], ids=["edu", "virtio-rng", "virtio-blk", "virtio-serial", "virtio-gpu", "ivshmem"])
def test_a_closed_board_with_devices_is_freed_by_reference_counts(tmp_path, firmware, freed, args):
    # A device's own small cycles (a function and its MSI/MSI-X state, a region and its
    # register file) may remain; nothing may reach back to the board and keep it.
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 16))
    args = [a.format(disk=disk) for a in args]
    image = _image(tmp_path, firmware)
    assert run_uvirt(image, args).exit_code == 1
    with freed() as garbage:
        assert run_uvirt(image, args).exit_code == 1
    assert BOARD_PARTS.isdisjoint(garbage)
