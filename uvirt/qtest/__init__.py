"""qtest and QMP: QEMU 7.2's test interfaces, so QEMU's own device tests and fuzz
reproducers drive uvirt's devices.

    session.py   ``-accel qtest``: board without CPU, the main loop, exit as QEMU does
    server.py    the qtest line protocol (softmmu/qtest.c)
    physmem.py   address_space_read/write: how qtest accesses are split
    qmp.py       QMP monitors and commands; jsonlex.py QEMU's JSON reader
    clock.py     the virtual clock (clock_step / clock_set) and timers
    hooks.py     ``hooks(machine)``: what devices call (IRQ lines, timers, events,
                 hotplug, block backends, file descriptors)
    loop.py      select loop and socket/stdio endpoints
    record.py    ``uvirt qtest record``: drive an emulator, write QEMU's -qtest-log format
"""

from uvirt.qtest.hooks import hooks

__all__ = ["hooks"]
