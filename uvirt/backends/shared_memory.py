"""Memory regions a device shares with the guest at native speed (issue 5), and QEMU's
memory back ends (``-object memory-backend-ram|file|memfd``).

A ``SharedMemory`` is a host buffer (anonymous memory, a memfd, or a file such as one
under /dev/shm) that lives as long as the machine.  It is never copied: the memory map
hands its pointer to ``uc.mem_map_ptr`` wherever its BAR is programmed, so guest loads
and stores run at RAM speed and the host sees every byte at once through ``view``.
Its buffer is pinned while mapped (``HostBuffer``): a host program cannot free memory the
guest still uses, it gets an error instead.

Host API, for tests and users::

    shm = machine_region(...)            # or device.shared_regions()
    shm.view[0:4]                        # read while the guest runs
    shm.write(0x100, b"data")            # write (drops stale translated code if mapped)
    shm.wait_for(lambda v: v[0] == 1, timeout=1.0)
    shm.wait_for_change(0, 4, timeout=1.0)
    shm.on_map(lambda addr: ...)         # addr when the guest maps its BAR, None on unmap
"""

from __future__ import annotations

import os
import time
from typing import Callable

from uvirt.errors import UvirtError
from uvirt.board.memory.regions import HostBuffer, RamRegion

MIN_REGION_SIZE = 0x1000



def _memfd_buffer(name: str, size: int) -> HostBuffer:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        return HostBuffer(size, fd=fd, shared=True, name=name)
    finally:
        os.close(fd)


def check_region_size(size: int, what: str) -> None:
    if size < MIN_REGION_SIZE or size & (size - 1):
        raise UvirtError(f"{what}: size 0x{size:x} must be a power of two of at least 0x{MIN_REGION_SIZE:x}")


class SharedMemory:
    """A host buffer a device exposes to the guest (see the module docstring)."""

    def __init__(self, name: str, buffer: HostBuffer, *, backing: str = "anonymous") -> None:
        self.name = name
        self.buffer = buffer
        self.size = buffer.size
        self.backing = backing
        self.region = RamRegion(name, self.size, buffer)
        self.mapped_at: int | None = None
        self._listeners: list[Callable[[int | None], None]] = []
        self._invalidate: Callable[[int, int], None] | None = None

    # -- constructors
    @classmethod
    def anonymous(cls, name: str, size: int) -> "SharedMemory":
        check_region_size(size, name)
        return cls(name, HostBuffer(size, name=name), backing="anonymous")

    @classmethod
    def memfd(cls, name: str, size: int, *, check: bool = True) -> "SharedMemory":
        """A memfd of ``size`` bytes; ``check=False`` for a ``memory-backend-memfd`` (any
        size: a device that maps it checks its own BAR rules)."""
        if check:
            check_region_size(size, name)
        return cls(name, _memfd_buffer(name, size), backing="memfd")

    @classmethod
    def ram(cls, name: str, size: int) -> "SharedMemory":
        """QEMU ``memory-backend-ram``: private anonymous memory of any size."""
        return cls(name, HostBuffer(size, name=name), backing="ram")

    @classmethod
    def from_fd(cls, name: str, fd: int, size: int, *, shared: bool = True) -> "SharedMemory":
        """Map an fd someone else created (an ivshmem server's shared memory)."""
        return cls(name, HostBuffer(size, fd=fd, shared=shared, name=name), backing="fd")

    @classmethod
    def file(cls, name: str, path: str, size: int, *, shared: bool = True) -> "SharedMemory":
        """QEMU ``memory-backend-file``: create the file if needed; an existing file
        smaller than ``size`` is an error, as in QEMU; a larger one is mapped in part."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise UvirtError(f"can't open backing store {path} for guest RAM: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if 0 < st.st_size < size:
                raise UvirtError(f"backing store size 0x{st.st_size:x} does not match 'size' option "
                                 f"0x{size:x}")
            if st.st_size == 0:
                os.ftruncate(fd, size)
            return cls(name, HostBuffer(size, fd=fd, shared=shared, name=path), backing=f"file:{path}")
        finally:
            os.close(fd)

    # -- host side
    @property
    def view(self) -> memoryview:
        return self.buffer.view

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self.view[offset:offset + size])

    def write(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise UvirtError(f"{self.name}: write 0x{offset:x}+0x{len(data):x} outside 0x{self.size:x} bytes")
        self.view[offset:offset + len(data)] = data
        if self.mapped_at is not None and self._invalidate is not None:
            self._invalidate(self.mapped_at + offset, len(data))

    def wait_for(self, predicate: Callable[[memoryview], bool], timeout: float,
                 poll: float = 0.0005) -> bool:
        """Poll ``predicate(view)`` until true or ``timeout`` seconds: the guest writes
        without any callback (that is the point of the region), so the host looks."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self.view):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)

    def wait_for_change(self, offset: int, size: int, timeout: float) -> bytes | None:
        before = self.read(offset, size)
        if self.wait_for(lambda v: bytes(v[offset:offset + size]) != before, timeout):
            return self.read(offset, size)
        return None

    def on_map(self, callback: Callable[[int | None], None]) -> None:
        """``callback(addr)`` when the guest maps the region, ``callback(None)`` on unmap
        (the patch's ``on_map``)."""
        self._listeners.append(callback)

    def _mapped(self, addr: int | None, invalidate: Callable[[int, int], None] | None) -> None:
        self.mapped_at = addr
        self._invalidate = invalidate
        for cb in list(self._listeners):
            cb(addr)

    def __repr__(self) -> str:
        where = "unmapped" if self.mapped_at is None else f"at 0x{self.mapped_at:x}"
        return f"SharedMemory({self.name!r}, 0x{self.size:x}, {self.backing}, {where})"
