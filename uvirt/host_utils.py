"""Integer helpers QEMU keeps in ``include/qemu/host-utils.h``, written once for uvirt."""

from __future__ import annotations


def pow2ceil(n: int) -> int:
    """The smallest power of two >= ``n`` (1 for n <= 1), as QEMU's ``pow2ceil``."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
