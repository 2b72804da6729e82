"""Error types.

Two families, never mixed:

* ``UvirtError`` and subclasses are *host* mistakes (a bad option, a bad image, a missing
  file, a programming error in a device model).  They propagate, and the CLI prints
  ``uvirt: <message>`` on one line and exits 1, as QEMU does for its own option errors.
  Messages name the offending value, numbers in hex.
* ``GuestMemoryError`` is raised by guest-memory accessors for a request no guest access
  could make (a negative size).  Device DMA itself never raises: like QEMU's
  ``address_space_rw``, unassigned memory reads 0 and drops writes (uvirt/board/memory/regions.py
  ``GuestMemory``).  Device code that catches it applies its guest-error reaction; it
  never escapes a hook.
"""

from __future__ import annotations


class UvirtError(Exception):
    """A host-side error: bad configuration, bad input file, misuse of the API."""


class OptionError(UvirtError):
    """A command-line option or device property that uvirt cannot accept."""


class UsageError(UvirtError):
    """A command line the CLI cannot parse (unknown command, bad flag, missing argument)."""


class ImageError(UvirtError):
    """A kernel image that cannot be loaded."""


class MemoryMapError(UvirtError):
    """A region placement the memory map cannot honour (host-side programming error)."""


class FirmwareBuildError(UvirtError):
    """A guest program that does not assemble."""


class GuestMemoryError(Exception):
    """A guest-physical access that hits no RAM (out of range, wrapping, or MMIO).

    Not a UvirtError: it describes a guest mistake and is caught by device code.
    """

    def __init__(self, addr: int, size: int, reason: str) -> None:
        super().__init__(f"guest memory access 0x{addr:x}+0x{size:x}: {reason}")
        self.addr = addr
        self.size = size
        self.reason = reason
