"""virtio-pci transport without a CPU: registers through the same port and memory
dispatch a guest uses (the CPU-less access path), rings built by the mock driver."""

import pytest

from uvirt.boot import firmware_step as bios
from uvirt.launch.device_table import BuildContext, create_device
from uvirt.cpu.machine import Machine
from uvirt.testing.mock_driver import MockSplitQueue
from uvirt.virtio.pci import CommonCfg, LegacyReg

RING = 0x200000


def rng(props="", slot=3):
    m = Machine(cpu=False)
    fn = create_device(m, BuildContext(), "virtio-rng-pci",
                       dict(kv.split("=") for kv in f"addr={slot}.0,seed=7{props}".split(",") if kv))
    bios.firmware_step(m)
    return m, fn


def legacy(m, fn):
    base = fn.bar_addr[0]
    return (lambda off, size: m.io.read(base + off, size),
            lambda off, size, v: m.io.write(base + off, size, v))


def modern(m, fn):
    base = fn.bar_addr[4]
    return (lambda off, size: m.memory.read(base + off, size),
            lambda off, size, v: m.memory.write(base + off, size, v))


# ------------------------------------------------------------------ legacy registers

def test_legacy_host_features_and_queue_size_as_qemu():
    m, fn = rng(",disable-modern=on")
    rd, wr = legacy(m, fn)
    assert rd(LegacyReg.HOST_FEATURES, 4) == 0x79000000
    assert rd(LegacyReg.QUEUE_NUM, 2) == 8
    wr(LegacyReg.QUEUE_SEL, 2, 5)
    assert rd(LegacyReg.QUEUE_NUM, 2) == 0


def test_legacy_register_read_inside_a_register_is_all_ones_and_unaligned_is_zero():
    m, fn = rng(",disable-modern=on")
    rd, _ = legacy(m, fn)
    assert rd(1, 1) == 0xFF                          # inside HOST_FEATURES: not a register
    assert rd(LegacyReg.QUEUE_NUM, 4) == 8           # exact offset, any size: just the size
    assert rd(LegacyReg.QUEUE_NUM + 1, 2) == 0       # unaligned: memory_region_access_valid


def test_legacy_device_config_of_rng_reads_all_ones():
    m, fn = rng(",disable-modern=on")
    rd, _ = legacy(m, fn)
    assert rd(20, 1) == 0xFF


def test_legacy_ack_driver_sets_bus_master():
    m, fn = rng(",disable-modern=on")
    _, wr = legacy(m, fn)
    assert not fn.command & 4
    wr(LegacyReg.STATUS, 1, 3)
    assert fn.command & 4


def test_legacy_request_fills_buffer_sets_isr_and_isr_read_clears_and_deasserts():
    m, fn = rng(",disable-modern=on")
    rd, wr = legacy(m, fn)
    # reset first: SeaBIOS's command write (bus mastering off) left the device disabled
    # (QEMU virtio_write_config, use-disabled-flag), and ACK|DRIVER turns mastering on
    # without undoing that (firmware/virtio_dma.S "before any reset" shows it on QEMU)
    wr(LegacyReg.STATUS, 1, 0)
    wr(LegacyReg.STATUS, 1, 3)
    q = MockSplitQueue(m.memory.guest, RING, 8)
    wr(LegacyReg.QUEUE_PFN, 4, q.pfn)
    wr(LegacyReg.STATUS, 1, 7)
    chain = q.add_chain([(16, True)])
    wr(LegacyReg.QUEUE_NOTIFY, 2, 0)
    assert [(e.id, e.len) for e in q.used_entries()] == [(chain.head, 16)]
    assert fn.intx_level == 1 and fn.config.get(6, 2) & 0x8
    assert rd(LegacyReg.ISR, 1) == 1
    assert rd(LegacyReg.ISR, 1) == 0
    assert fn.intx_level == 0 and not fn.config.get(6, 2) & 0x8


def test_legacy_no_interrupt_flag_suppresses_isr():
    m, fn = rng(",disable-modern=on")
    rd, wr = legacy(m, fn)
    q = MockSplitQueue(m.memory.guest, RING, 8)
    wr(LegacyReg.QUEUE_PFN, 4, q.pfn)
    wr(LegacyReg.STATUS, 1, 7)
    q.avail_flags = 1
    q.add_chain([(16, True)])
    wr(LegacyReg.QUEUE_NOTIFY, 2, 0)
    assert rd(LegacyReg.ISR, 1) == 0


def test_legacy_reset_clears_pfn_features_isr_keeps_bus_master():
    m, fn = rng(",disable-modern=on")
    rd, wr = legacy(m, fn)
    wr(LegacyReg.STATUS, 1, 3)
    wr(LegacyReg.GUEST_FEATURES, 4, 1 << 28)
    wr(LegacyReg.QUEUE_PFN, 4, RING >> 12)
    wr(LegacyReg.STATUS, 1, 0)
    assert (rd(LegacyReg.QUEUE_PFN, 4), rd(LegacyReg.GUEST_FEATURES, 4), rd(LegacyReg.ISR, 1)) == (0, 0, 0)
    assert fn.command & 4


def test_legacy_pfn_zero_resets_the_device():
    m, fn = rng(",disable-modern=on")
    rd, wr = legacy(m, fn)
    wr(LegacyReg.STATUS, 1, 3)
    wr(LegacyReg.QUEUE_PFN, 4, 0)
    assert rd(LegacyReg.STATUS, 1) == 0


def test_legacy_unoffered_features_are_dropped_and_recorded():
    m, fn = rng(",disable-modern=on")
    rd, wr = legacy(m, fn)
    wr(LegacyReg.GUEST_FEATURES, 4, 0x10000001 | (1 << 28))
    assert rd(LegacyReg.GUEST_FEATURES, 4) == 1 << 28
    assert any(k == "unoffered_features" for k, _ in m.guest_errors)


def test_legacy_write_to_read_only_register_is_a_guest_error_not_a_change():
    m, fn = rng(",disable-modern=on")
    rd, wr = legacy(m, fn)
    wr(LegacyReg.HOST_FEATURES, 4, 0)
    wr(LegacyReg.QUEUE_NUM, 2, 64)
    assert rd(LegacyReg.HOST_FEATURES, 4) == 0x79000000 and rd(LegacyReg.QUEUE_NUM, 2) == 8
    assert [k for k, _ in m.guest_errors].count("virtio_legacy_write") == 2


def test_legacy_msix_enable_moves_device_config_and_exposes_vectors():
    m, fn = rng(",disable-modern=on")
    rd, wr = legacy(m, fn)
    assert rd(LegacyReg.MSI_CONFIG_VECTOR, 2) == 0xFFFF        # device config (none): all ones
    m.pci.config_write(0, fn.devfn, 0x42, 2, 0x8001)          # MSI-X enable
    wr(LegacyReg.MSI_CONFIG_VECTOR, 2, 1)
    assert rd(LegacyReg.MSI_CONFIG_VECTOR, 2) == 1
    wr(LegacyReg.MSI_QUEUE_VECTOR, 2, 5)                      # beyond the table: NO_VECTOR
    assert rd(LegacyReg.MSI_QUEUE_VECTOR, 2) == 0xFFFF


def test_notify_of_missing_queue_is_ignored_and_recorded():
    m, fn = rng(",disable-modern=on")
    _, wr = legacy(m, fn)
    wr(LegacyReg.QUEUE_NOTIFY, 2, 3)
    assert ("notify_missing_queue" in {k for k, _ in m.guest_errors})


def test_descriptor_loop_breaks_the_device_without_raising():
    m, fn = rng(",disable-modern=on")
    _, wr = legacy(m, fn)
    q = MockSplitQueue(m.memory.guest, RING, 8)
    wr(LegacyReg.QUEUE_PFN, 4, q.pfn)
    wr(LegacyReg.STATUS, 1, 7)
    q.write_desc(0, 0x300000, 16, 1 | 2, 1)
    q.write_desc(1, 0x300010, 16, 1 | 2, 0)
    q.publish(0)
    wr(LegacyReg.QUEUE_NOTIFY, 2, 0)
    assert fn.vdev.broken
    assert "virtio_error" in {k for k, _ in m.guest_errors}


# ------------------------------------------------------------------ modern registers

def test_modern_feature_words_and_selects():
    m, fn = rng(",disable-legacy=on")
    rd, wr = modern(m, fn)
    assert rd(CommonCfg.DF, 4) == 0x30000000
    wr(CommonCfg.DFSELECT, 4, 1)
    assert (rd(CommonCfg.DFSELECT, 4), rd(CommonCfg.DF, 4)) == (1, 0x101)
    wr(CommonCfg.DFSELECT, 4, 2)
    assert rd(CommonCfg.DF, 4) == 0


def test_modern_defaults_no_vector_and_queue_state():
    m, fn = rng(",disable-legacy=on")
    rd, _ = modern(m, fn)
    assert rd(CommonCfg.MSIX, 2) == 0xFFFF and rd(CommonCfg.Q_MSIX, 2) == 0xFFFF
    assert (rd(CommonCfg.NUMQ, 2), rd(CommonCfg.Q_SIZE, 2), rd(CommonCfg.Q_NOFF, 2)) == (1, 8, 0)


def test_modern_features_ok_rejected_after_unoffered_then_refused_write_after():
    m, fn = rng(",disable-legacy=on")
    rd, wr = modern(m, fn)
    wr(CommonCfg.GFSELECT, 4, 1)
    wr(CommonCfg.GF, 4, 1)                      # VERSION_1
    wr(CommonCfg.STATUS, 1, 0x0B)
    assert rd(CommonCfg.STATUS, 1) == 0x0B
    wr(CommonCfg.GFSELECT, 4, 0)
    wr(CommonCfg.GF, 4, 1 << 28)                # after FEATURES_OK: refused
    assert fn.vdev.guest_features == 1 << 32


def test_modern_queue_enable_other_than_one_sets_needs_reset_with_version_1():
    m, fn = rng(",disable-legacy=on")
    rd, wr = modern(m, fn)
    wr(CommonCfg.GFSELECT, 4, 1)
    wr(CommonCfg.GF, 4, 1)
    wr(CommonCfg.STATUS, 1, 0x0F)
    wr(CommonCfg.Q_ENABLE, 2, 2)
    assert rd(CommonCfg.STATUS, 1) & 0x40


def test_modern_request_through_staged_rings():
    m, fn = rng(",disable-legacy=on")
    rd, wr = modern(m, fn)
    q = MockSplitQueue(m.memory.guest, RING, 8, layout="modern")
    for reg, v in ((CommonCfg.Q_DESCLO, q.desc_addr), (CommonCfg.Q_AVAILLO, q.avail_addr),
                   (CommonCfg.Q_USEDLO, q.used_addr)):
        wr(reg, 4, v)
    wr(CommonCfg.Q_ENABLE, 2, 1)
    wr(CommonCfg.GFSELECT, 4, 1)
    wr(CommonCfg.GF, 4, 1)
    wr(CommonCfg.STATUS, 1, 0x0F)
    chain = q.add_chain([(8, True), (8, True)])
    m.pci.config_write(0, fn.devfn, 4, 2, 0x0106)              # bus master on
    m.memory.write(fn.bar_addr[4] + 0x3000, 2, 0)              # notify queue 0
    assert [(e.id, e.len) for e in q.used_entries()] == [(chain.head, 16)]
    assert m.memory.read(fn.bar_addr[4] + 0x1000, 1) == 1      # ISR, then cleared
    assert m.memory.read(fn.bar_addr[4] + 0x1000, 1) == 0


def test_modern_reset_clears_enable_and_addresses():
    m, fn = rng(",disable-legacy=on")
    rd, wr = modern(m, fn)
    wr(CommonCfg.Q_DESCLO, 4, 0x1000)
    wr(CommonCfg.Q_ENABLE, 2, 1)
    wr(CommonCfg.STATUS, 1, 0)
    assert (rd(CommonCfg.Q_ENABLE, 2), rd(CommonCfg.Q_DESCLO, 4), rd(CommonCfg.Q_SIZE, 2)) == (0, 0, 8)


def test_pci_cfg_capability_window_reads_common_config():
    m, fn = rng("")
    cap = 0x84
    m.pci.config_write(0, fn.devfn, cap + 4, 1, 4)             # bar
    m.pci.config_write(0, fn.devfn, cap + 8, 4, CommonCfg.DF)  # offset
    m.pci.config_write(0, fn.devfn, cap + 12, 4, 4)            # length
    assert m.pci.config_read(0, fn.devfn, cap + 16, 4) == 0x30000000


@pytest.mark.parametrize("props,ids", [
    ("", (0x1005, 0, 4)), (",disable-legacy=on", (0x1044, 1, 0x1100)), (",disable-modern=on", (0x1005, 0, 4))])
def test_identity_by_transport(props, ids):
    m, fn = rng(props)
    assert (fn.config.get(2, 2), fn.config.get(8, 1), fn.config.get(0x2E, 2)) == ids


# ------------------------------------------------------------------ MSI-X

def test_msix_masked_vector_sets_pba_and_unmask_delivers_it():
    m, fn = rng(",disable-modern=on")
    rd, wr = legacy(m, fn)
    bar1 = fn.bar_addr[1]
    m.pci.config_write(0, fn.devfn, 0x42, 2, 0x8001)
    m.pci.config_write(0, fn.devfn, 4, 2, 0x0107)
    m.memory.add(__import__("uvirt.board.memory.regions", fromlist=["RamRegion"]).RamRegion("sink", 0x1000), 0x7F000000)
    m.memory.write(bar1 + 0, 4, 0x7F000000)                    # entry 0 address
    m.memory.write(bar1 + 8, 4, 0x41)                          # data
    wr(LegacyReg.MSI_QUEUE_VECTOR, 2, 0)
    q = MockSplitQueue(m.memory.guest, RING, 8)
    wr(LegacyReg.QUEUE_PFN, 4, q.pfn)
    wr(LegacyReg.STATUS, 1, 7)
    q.add_chain([(16, True)])
    wr(LegacyReg.QUEUE_NOTIFY, 2, 0)
    assert m.memory.read(bar1 + 0x800, 4) == 1                 # pending while masked
    assert m.memory.read(0x7F000000, 4) == 0
    m.memory.write(bar1 + 12, 4, 0)                            # unmask
    assert m.memory.read(bar1 + 0x800, 4) == 0
    assert m.memory.read(0x7F000000, 4) == 0x41                # the message was written


def test_msix_table_rejects_byte_access():
    m, fn = rng(",disable-modern=on")
    assert m.memory.read(fn.bar_addr[1] + 12, 1) == 0
    assert any(k == "invalid_access" for k, _ in m.guest_errors)


@pytest.mark.parametrize("props", [",disable-modern=on", ",disable-modern=on,vectors=0", ""])
def test_msix_enabled_reads_the_control_words_enable_bit_as_msix_does(props):
    """``msix_enabled`` (every kick's legacy config offset, every interrupt's MSI-X or
    INTx choice) reads the control byte itself: it must answer what ``Msix.enabled``
    answers for every value a driver can write there."""
    m, fn = rng(props)
    for hi in range(256):
        if fn.msix is not None:
            fn.config_write(fn.msix.cap + 3, 1, hi)
            assert fn.msix_enabled() == fn.msix.enabled
        else:
            assert not fn.msix_enabled()
        cfg = 24 if fn.msix_enabled() else 20
        assert fn.legacy_config_offset() == cfg
