"""fw_cfg on the pc machine without a CPU, through the port space as qtest reaches it.

Expected values were read from QEMU 7.2.22 over qtest (``-machine pc -nodefaults -S``):
items, the directory entries uvirt serves, the port access rules and a DMA read;
tests/guest/test_qtest_suite.py runs libqos's own fw_cfg reads against uvirt.
"""

from __future__ import annotations

import struct

import pytest

from uvirt.board.devices import fw_cfg as F
from uvirt.cpu.machine import Machine
from uvirt.board.memory import physmem


@pytest.fixture
def m():
    machine = Machine(cpu=False)
    yield machine
    machine.close()


def inb(m, port):
    return int.from_bytes(physmem.read(m.io, port, 1), "little")


def inl(m, port):
    return int.from_bytes(physmem.read(m.io, port, 4), "little")


def outw(m, port, v):
    physmem.write(m.io, port, v.to_bytes(2, "little"))


def outl(m, port, v):
    physmem.write(m.io, port, v.to_bytes(4, "little"))


def item(m, key, n):
    outw(m, 0x510, key)
    return bytes(inb(m, 0x511) for _ in range(n))


def test_libqos_reads_ram_size_little_endian(m):
    assert item(m, F.RAM_SIZE, 8) == struct.pack("<Q", 128 << 20)
    big = Machine(cpu=False, ram_size=512 << 20)
    try:
        assert item(big, F.RAM_SIZE, 8) == struct.pack("<Q", 512 << 20)
    finally:
        big.close()


@pytest.mark.parametrize("key, data", [
    (F.SIGNATURE, b"QEMU"), (F.ID, bytes.fromhex("03000000")), (F.UUID, bytes(16)),
    (F.NOGRAPHIC, bytes(2)), (F.NB_CPUS, b"\x01\x00"), (F.MAX_CPUS, b"\x01\x00"),
    (F.BOOT_MENU, bytes(2)), (F.IRQ0_OVERRIDE, b"\x01\x00\x00\x00"),
    (F.HPET, bytes.fromhex("0101a286800000d0fe00000000000000") + bytes(20)),
    (F.ACPI_TABLES, bytes(4)), (0x4000, b"QEMU"),            # write-channel bit ignored
    (0x99, bytes(4)), (F.MAX_ENTRY, bytes(4)),               # past the slots: nothing
])
def test_items_read_as_on_qemu(m, key, data):
    assert item(m, key, len(data)) == data


def test_reads_past_the_end_give_zero(m):
    assert item(m, F.SIGNATURE, 8) == b"QEMU\0\0\0\0"


def test_file_directory_sorted_with_select_keys_in_name_order(m):
    count = int.from_bytes(item(m, F.FILE_DIR, 4), "big")
    raw = item(m, F.FILE_DIR, 4 + 64 * count)[4:]
    entries = [struct.unpack(">IHH56s", raw[i:i + 64]) for i in range(0, len(raw), 64)]
    names = [e[3].rstrip(b"\0").decode() for e in entries]
    assert names == sorted(names)
    assert [e[1] for e in entries] == list(range(0x20, 0x20 + count))
    files = {n: (size, key) for (size, key, _, _), n in zip(entries, names)}
    # QEMU 7.2 pc, 128 MiB: same names, sizes and contents
    assert files["etc/e820"][0] == 40 and files["etc/boot-fail-wait"][0] == 4
    assert files["bootorder"][0] == 0 and files["etc/system-states"][0] == 6
    assert item(m, files["etc/e820"][1], 40) == bytes.fromhex(
        "00000000fd000000" "0000000003000000" "02000000"
        "0000000000000000" "0000000800000000" "01000000")
    assert item(m, files["etc/boot-fail-wait"][1], 4) == b"\xff\xff\xff\xff"
    assert item(m, files["etc/system-states"][1], 6) == bytes.fromhex("800000818280")


def test_port_access_rules(m):
    outw(m, 0x510, F.SIGNATURE)
    assert inb(m, 0x510) == ord("Q")                   # both ports read data
    assert int.from_bytes(physmem.read(m.io, 0x510, 2), "little") == 0     # word read: invalid
    assert inl(m, 0x510) == 0                          # one invalid 4-byte access
    physmem.write(m.io, 0x511, b"\x05")                # byte write: ignored
    assert inb(m, 0x511) == ord("E")
    physmem.write(m.io, 0x511, b"\x01\x00")            # unaligned word: invalid
    assert inb(m, 0x511) == ord("M")
    outl(m, 0x510, 1)                                  # dword write: invalid
    assert inb(m, 0x511) == ord("U")
    assert inb(m, 0x512) == 0xFF and inb(m, 0x51C) == 0xFF


def test_dma_window_reads_signature_big_endian(m):
    assert inl(m, 0x514) == 0x554D4551 and inl(m, 0x518) == 0x47464320
    assert inb(m, 0x515) == ord("E")
    assert inl(m, 0x512) == 0x4551FFFF                 # split: unassigned, then the window


def test_dma_select_and_read_skip_and_write_error(m):
    mem = m.memory
    desc, dest = 0x1000, 0x2000
    physmem.write(mem, desc, struct.pack(">IIQ", F.RAM_SIZE << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_READ,
                                         8, dest))
    outl(m, 0x514, 0)
    outl(m, 0x518, int.from_bytes(desc.to_bytes(4, "big"), "little"))
    assert physmem.read(mem, dest, 8) == struct.pack("<Q", 128 << 20)
    assert physmem.read(mem, desc, 4) == bytes(4)      # control cleared: done, no error
    # read past the end zero-fills
    physmem.write(mem, dest, b"\xAA" * 16)
    physmem.write(mem, desc, struct.pack(">IIQ", F.SIGNATURE << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_READ,
                                         16, dest))
    outl(m, 0x518, int.from_bytes(desc.to_bytes(4, "big"), "little"))
    assert physmem.read(mem, dest, 16) == b"QEMU" + bytes(12)
    # skip then a port read continues after it
    physmem.write(mem, desc, struct.pack(">IIQ", F.SIGNATURE << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_SKIP,
                                         2, 0))
    outl(m, 0x518, int.from_bytes(desc.to_bytes(4, "big"), "little"))
    assert inb(m, 0x511) == ord("M")
    # writes: nothing is writable
    physmem.write(mem, desc, struct.pack(">IIQ", F.DMA_CTL_WRITE, 4, dest))
    outl(m, 0x518, int.from_bytes(desc.to_bytes(4, "big"), "little"))
    assert physmem.read(mem, desc, 4) == struct.pack(">I", F.DMA_CTL_ERROR)


def test_reset_selects_the_signature(m):
    outw(m, 0x510, F.RAM_SIZE)
    inb(m, 0x511)
    m.reset()
    assert inb(m, 0x511) == ord("Q")


def test_add_file_keeps_names_sorted():
    fw = F.FwCfg({}, {"b": b"1", "d": b"22"})
    assert fw.add_file("a", b"333") == 0x20
    assert fw.file("b") == b"1" and dict(fw.files) == {"a": 0x20, "b": 0x21, "d": 0x22}
    assert fw.items[F.FILE_DIR][:4] == b"\0\0\0\x03"


def test_files_added_in_groups_read_as_one_group_and_after_a_read():
    """The keys and directory are built when first looked at (FwCfg._build_directory):
    a guest sees the same directory whether the files came in one group or several, and
    files added after a read (and a replaced one) show up in the next read."""
    one = F.FwCfg({}, {"b": b"1", "d": b"22", "a": b"333", "c": b""})
    grouped = F.FwCfg({}, {"d": b"22"})
    grouped.add_files({"b": b"1"})
    grouped.add_files({"c": b"", "a": b"0"})
    grouped.add_files({"a": bytearray(b"333")})       # replaced before anyone looked
    for fw in (one, grouped):
        fw.select(F.FILE_DIR)
        raw = fw.read_data(4).to_bytes(4, "big") + bytes(fw.read_data(1) for _ in range(4 * 64))
        assert raw == one.items[F.FILE_DIR]
        assert raw[:4] == b"\0\0\0\x04" and raw[4 + 8:4 + 9] == b"a"
    assert grouped.items == one.items and grouped.files == one.files
    grouped.select(0x20)                              # "a"
    assert [grouped.read_data(1) for _ in range(3)] == list(b"333")
    grouped.add_files({"aa": b"4444"})                # after a read: keys move, as on QEMU
    assert dict(grouped.files) == {"a": 0x20, "aa": 0x21, "b": 0x22, "c": 0x23, "d": 0x24}
    grouped.select(F.FILE_DIR)
    assert grouped.read_data(4) == 5 and grouped.file("aa") == b"4444"
    with pytest.raises(ValueError, match="no free file slot"):
        grouped.add_files({f"f{i}": b"" for i in range(F.FILE_SLOTS)})
    assert len(grouped.files) == 5                    # a refused group adds nothing


def test_ram_split_at_3g_above_lowmem_limit():
    assert F.pc_ram_split(0xE0000000) == (0xC0000000, 0x20000000)
    assert F.pc_ram_split(128 << 20) == (128 << 20, 0)


def test_pc_items_are_shared_values_but_each_call_gets_its_own_dicts():
    """pc's items are a pure function of the options (cached): two calls give equal
    contents, a caller changing its dicts changes nothing for the next one, and other
    options give other contents."""
    items, files = F.pc_items(128 << 20)
    items[F.SIGNATURE] = b"XXXX"
    files["etc/e820"] = b""
    again, files2 = F.pc_items(128 << 20)
    assert again[F.SIGNATURE] == b"QEMU" and len(files2["etc/e820"]) == 40
    assert all(isinstance(v, bytes) for v in [*again.values(), *files2.values()])
    big, _ = F.pc_items(0xE0000000, nographic=True)
    assert big[F.RAM_SIZE] == struct.pack("<Q", 0xE0000000) and big[F.NOGRAPHIC] == b"\x01\x00"


def test_added_files_are_copies_of_mutable_buffers():
    fw = F.FwCfg({})
    data = bytearray(b"abc")
    fw.add_files({"etc/x": data, "etc/y": b"xyz"})
    data[0] = 0x5A
    assert fw.file("etc/x") == b"abc" and fw.file("etc/y") == b"xyz"
    assert type(fw.file("etc/x")) is bytes
