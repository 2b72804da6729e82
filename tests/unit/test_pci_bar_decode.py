"""A config write decodes only the BARs whose registers it touches
(uvirt/board/pci/bus.py ``PciFunction._update_bars``, the BAR-move path): whatever the
writes, the BARs end where QEMU's ``pci_update_mappings`` (every BAR, every time) puts
them, and the changes a write reports are exactly the ones a full decode finds."""

from hypothesis import given, settings, strategies as st

from uvirt.board.memory.regions import MmioRegion, RamRegion
from uvirt.board.pci.bus import PciFunction


class Regs:
    def read(self, offset, size):
        return 0

    def write(self, offset, size, value):
        pass


def _function(layout):
    fn = PciFunction(vendor_id=0x1234, device_id=0x11E8, class_code=0x00FF)
    i = 0
    for kind in layout:
        if i > 5:
            break
        if kind == "m64" and i < 5:
            fn.register_bar(i, RamRegion(f"b{i}", 0x4000), mem64=True, prefetch=True)
            i += 2
            continue
        if kind == "io":
            fn.register_bar(i, MmioRegion(f"b{i}", 32, Regs()), io=True)
        elif kind != "none":
            fn.register_bar(i, MmioRegion(f"b{i}", 0x1000, Regs()))
        i += 1
    fn.register_rom(RamRegion("rom", 0x8000, readonly=True))
    return fn


_layout = st.lists(st.sampled_from(["m32", "m64", "io", "none"]), min_size=6, max_size=6)
_REGS = [0x04, 0x10, 0x14, 0x18, 0x1C, 0x20, 0x24, 0x28, 0x30]
# registers, their last bytes, and anything across them
_offset = st.one_of(st.sampled_from(_REGS + [r + 3 for r in _REGS]), st.integers(0x02, 0x37))
_write = st.tuples(_offset, st.sampled_from([1, 2, 4]),
                   st.one_of(st.integers(0, 0xFFFFFFFF),
                             st.sampled_from([0, 0xFFFFFFFF, 0xE0000000, 0xC001, 0x7, 0x3, 0x1, 0xFEB00000, 0xFEB00001])))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_layout, st.booleans(), st.lists(_write, max_size=25))
def test_a_write_decodes_the_bars_a_full_decode_would_move(layout, decode_on, writes):
    fn, full = _function(layout), _function(layout)
    if decode_on:                                    # memory and I/O decode first, often
        writes = [(0x04, 2, 0x3), *writes]
    for offset, size, value in writes:
        if offset + size > 0x40:
            continue
        changes = fn.config_write(offset, size, value)
        full.config.guest_write(offset, size, value)
        assert changes == full.update_mappings()          # QEMU's pci_update_mappings
        assert fn.bar_addr == full.bar_addr == [fn.bar_address(i) for i in range(7)]


def test_a_bar_registered_after_a_write_is_decoded_by_the_next():
    """Which BARs a write can touch is kept per written range; registering a BAR makes
    it again (a function built in steps, a write before the BAR exists)."""
    fn = PciFunction(vendor_id=0x1234, device_id=0x11E8, class_code=0x00FF)
    fn.config_write(0x04, 2, 0x3)
    assert fn.config_write(0x18, 4, 0xE0000000) == []
    fn.register_bar(2, MmioRegion("late", 0x1000, Regs()))
    changes = fn.config_write(0x18, 4, 0xE0000000)
    assert [(c.index, c.old, c.new) for c in changes] == [(2, None, 0xE0000000)]
