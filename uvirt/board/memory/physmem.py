"""QEMU's ``address_space_read``/``address_space_write``: the path qtest's accesses take.

A guest CPU access is decided by its first byte (TCG's ``io_readx``, the x86 port
helpers), which is what ``AddressSpace.read/write`` model.  qtest's ``readq``, ``read
ADDR SIZE``, ``outl`` and the rest go through ``flatview_read/write_continue``
(softmmu/physmem.c) instead, which walks the flattened view:

* a RAM piece is copied in one go, up to the end of the piece;
* an MMIO piece gets accesses of ``memory_access_size(mr, l, addr1)`` bytes: at most
  the region's ``valid.max_access_size`` (4 when the region declares none), at most the
  alignment of the offset inside the region unless the region handles unaligned
  accesses, rounded down to a power of two; each piece of the split is then dispatched
  with the region's own access rules (``MmioRegion.read/write``: ``.valid`` check and
  ``.impl`` adjustment);
* nothing mapped: QEMU's unassigned region (reads 0 in memory, all ones in port space;
  at most 4 bytes per access, aligned); past 0xFFFF the port space has no section and
  reads 0 (``inl 0xfffe`` is 0x0000ffff on QEMU).

So an 8-byte ``readq`` of a register window limited to 4 bytes is two 4-byte reads, and
``inl`` of an unclaimed odd port is three accesses that each read all ones, where a CPU
``in eax, dx`` would read 0 (its single 4-byte access is unaligned).  Data is
little-endian (x86: ``ldn_he_p`` on a little-endian host).
"""

from __future__ import annotations

from uvirt.board.memory.regions import AddressSpace, IoSpace, MmioRegion, RamRegion, Region

#: QEMU's default when a region's ops leave ``valid.max_access_size`` 0 (physmem.c).
DEFAULT_MAX_ACCESS = 4


def _pow2floor(n: int) -> int:
    return 1 << (n.bit_length() - 1)


def memory_access_size(region: Region, length: int, offset: int) -> int:
    """softmmu/physmem.c ``memory_access_size``: how many bytes one dispatch may take."""
    if isinstance(region, MmioRegion):
        max_size = max(region.valid_sizes) if region.valid_sizes else DEFAULT_MAX_ACCESS
        unaligned = region.unaligned
    else:
        max_size, unaligned = DEFAULT_MAX_ACCESS, False
    if not unaligned:
        align = offset & -offset
        if align and align < max_size:
            max_size = align
    return _pow2floor(min(length, max_size))


class _Unassigned:
    """QEMU's unassigned memory: ``unassigned_mem_ops`` declare no sizes (4 max), aligned."""
    valid_sizes = (1, 2, 4)
    unaligned = False


def _next_start(space: AddressSpace, addr: int) -> int | None:
    for pc in space.flatten():
        if pc.start > addr:
            return pc.start
    return None


def _accesses(space: AddressSpace, addr: int, length: int):
    """``flatview_read/write_continue``: (kind, region, offset, count) along the range.

    Only RAM is clamped to the end of its section (``address_space_translate_internal``:
    "MMIO registers can be expected to perform full-width accesses based only on their
    address" — the 0xCF8 latch sees a whole ``outl`` although 0xCF9 is another region);
    MMIO takes ``memory_access_size`` bytes from the region holding the first byte."""
    io = isinstance(space, IoSpace)
    while length > 0:
        inside = addr < space.size
        pc = space.lookup(addr) if inside else None
        if pc is not None and isinstance(pc.region, RamRegion):
            n = min(length, pc.end - addr)
            yield "ram", pc.region, pc.offset + addr - pc.start, n
        elif pc is not None:
            region, offset = pc.region, pc.offset + addr - pc.start
            n = memory_access_size(region, length, offset)
            yield "mmio", region, offset, n
        elif io and inside:
            n = memory_access_size(space.unassigned, length, addr)
            yield "mmio", space.unassigned, addr, n
        else:
            # Past the end of the port space QEMU's flatview has no section at all:
            # io_mem_unassigned, which reads 0 (not the port space's all ones).
            nxt = _next_start(space, addr) if inside else None
            if nxt is None or nxt >= addr + length:
                n = length                       # nothing but unassigned: reads 0
            else:
                n = memory_access_size(_Unassigned, length, addr)    # type: ignore[arg-type]
            yield "unassigned", None, addr, n
        addr += n
        length -= n


def read(space: AddressSpace, addr: int, length: int) -> bytes:
    """``address_space_read(as, addr, buf, length)``."""
    out = bytearray()
    for kind, region, offset, n in _accesses(space, addr, length):
        if kind == "ram":
            o = region.buffer_offset + offset
            out += region.buffer.view[o:o + n]
        elif kind == "mmio":
            out += (region.read(offset, n) & ((1 << (8 * n)) - 1)).to_bytes(n, "little")
        else:
            out += bytes(n)
    return bytes(out)


def write(space: AddressSpace, addr: int, data: bytes | bytearray) -> None:
    """``address_space_write(as, addr, buf, len(data))``."""
    pos = 0
    for kind, region, offset, n in _accesses(space, addr, len(data)):
        chunk = data[pos:pos + n]
        pos += n
        if kind == "ram":
            if not region.readonly:
                o = region.buffer_offset + offset
                region.buffer.view[o:o + n] = chunk
        elif kind == "mmio":
            region.write(offset, n, int.from_bytes(chunk, "little"))
    if not isinstance(space, IoSpace) and len(data) and addr < space.size:
        inv = getattr(space, "invalidate_code", None)
        if inv is not None:
            inv(addr, min(len(data), space.size - addr))
