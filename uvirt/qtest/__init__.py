"""qtest and QMP: QEMU 7.2's test interfaces, so QEMU's own device tests and fuzz
reproducers drive uvirt's devices.

    session.py   ``-accel qtest``: a board without CPU, the main loop, exit as QEMU does
    server.py    the qtest line protocol (softmmu/qtest.c)
    qmp.py       QMP monitors and commands; jsonlex.py QEMU's JSON reader
    loop.py      select loop and socket/stdio endpoints
    record.py    ``uvirt qtest record``: drive an emulator, write QEMU's -qtest-log format

What they act on lives on the board: the address spaces and how qtest's accesses are
split (uvirt/board/memory/physmem.py), the virtual clock (uvirt/board/clock.py) and the
services devices call (uvirt/board/services.py: IRQ lines, events, hotplug, block back
ends, file descriptors).
"""
