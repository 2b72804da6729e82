"""Debian's SeaBIOS on uvirt (``uvirt run -bios FILE``): reset vector, real mode, the
call32/call16 trampolines, PAM shadowing, fw_cfg DMA, the PM timer and the RTC.

SeaBIOS's own debug log (port 0x402) says what it found and where it stops.
"""

import os
from pathlib import Path

import pytest

from uvirt.options import parse_argv
from uvirt.launch.runner import run_config

BIOS = "/usr/share/seabios/bios.bin"
pytestmark = pytest.mark.skipif(not os.path.exists(BIOS), reason=f"{BIOS} missing (Debian seabios)")


def seabios_log(tmp_path: Path, *extra: str, timeout: float = 30) -> tuple[str, object]:
    log = tmp_path / "seabios.log"
    argv = ["-machine", "pc", "-m", "128M", "-nodefaults", "-nographic", "-no-reboot",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-bios", BIOS,
            "-chardev", f"file,id=seabios,path={log}",
            "-device", "isa-debugcon,iobase=0x402,chardev=seabios", *extra,
            "-uvirt-timeout", str(timeout)]
    stop = run_config(parse_argv(argv))
    return log.read_text(errors="replace"), stop


def test_seabios_runs_to_its_boot_menu_without_a_disk(tmp_path):
    log, _stop = seabios_log(tmp_path, timeout=20)
    for line in ("Running on QEMU (i440fx)", "QEMU fw_cfg DMA interface supported",
                 "qemu/e820: addr 0x0000000000000000 len 0x0000000008000000 [RAM]",
                 "Found 4 PCI devices", "PIIX3/PIIX4 init: elcr=00 0c",
                 "Found 1 cpu(s) max supported 1 cpu(s)", "sercon: using ioport 0x3f8",
                 "e820 map has 7 items:", "No bootable device."):
        assert line in log, line


def test_reset_state_is_real_mode_at_f000_fff0():
    from unicorn import x86_const as X
    from uvirt.cpu.machine import Machine
    with Machine() as m:
        m.load_bios_file(BIOS)
        uc = m.uc
        assert uc.reg_read(X.UC_X86_REG_CR0) == 0x60000010
        assert (uc.reg_read(X.UC_X86_REG_CS), uc.reg_read(X.UC_X86_REG_EIP)) == (0xF000, 0xFFF0)
        assert uc.reg_read(X.UC_X86_REG_EDX) == 0x663
        image = Path(BIOS).read_bytes()
        assert bytes(uc.mem_read(0xFFFF0, 16)) == image[-16:]          # isa-bios
        assert bytes(uc.mem_read(0xFFFFFFF0, 16)) == image[-16:]       # pc.bios


def test_bad_bios_image_is_a_one_line_error(tmp_path):
    from uvirt.errors import ImageError
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"x" * 1000)
    with pytest.raises(ImageError, match="0x3e8"):
        run_config(parse_argv(["-bios", str(bad)]))


# ---------------------------------------------------------------- INT 13h from virtio-blk

TRANSPORTS = ["", ",disable-modern=on", ",disable-legacy=on"]


def boot_args(disk: Path, transport: str, con: Path) -> list[str]:
    return ["-machine", "pc", "-m", "128M", "-nodefaults", "-nographic", "-display", "none",
            "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-bios", BIOS,
            "-drive", f"file={disk},format=raw,if=none,id=d0",
            "-device", f"virtio-blk-pci,drive=d0,addr=0x3,bootindex=1{transport}",
            "-debugcon", f"file:{con}"]


def stored_int13() -> str:
    from uvirt.testing.qemu import DATA_DIR, strip_header
    return strip_header((DATA_DIR / "seabios_int13.txt").read_text())


@pytest.mark.parametrize("transport", TRANSPORTS, ids=["transitional", "legacy", "modern"])
def test_seabios_boots_the_mbr_from_virtio_blk(tmp_path, transport):
    """SeaBIOS's own virtio-blk driver finds the disk, the boot sector's INT 13h reads
    (CHS, LBA, one past the end) print what QEMU 7.2's run printed."""
    from uvirt.testing.bootsector import disk_image
    disk, con = tmp_path / "disk.img", tmp_path / "con.txt"
    disk_image(disk)
    stop = run_config(parse_argv(boot_args(disk, transport, con) + ["-uvirt-timeout", "60"]))
    assert stop.exit_code == 1, stop.report()
    assert con.read_text() == stored_int13()


@pytest.mark.qemu
@pytest.mark.parametrize("transport", TRANSPORTS, ids=["transitional", "legacy", "modern"])
def test_stored_int13_transcript_is_qemus(tmp_path, transport):
    import subprocess
    from uvirt.testing.bootsector import disk_image
    disk, con = tmp_path / "disk.img", tmp_path / "con.txt"
    disk_image(disk)
    proc = subprocess.run(["qemu-system-x86_64", *boot_args(disk, transport, con), "-serial", "none"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert con.read_text() == stored_int13()


def _serial_boot(tmp_path: Path, emulator: str | None) -> bytes:
    import subprocess
    from uvirt.testing.bootsector import disk_image
    disk, con, ser = tmp_path / "disk.img", tmp_path / "con.txt", tmp_path / "serial.txt"
    disk_image(disk)
    args = boot_args(disk, "", con) + ["-serial", f"file:{ser}"]
    if emulator is None:
        stop = run_config(parse_argv(args + ["-uvirt-timeout", "60"]))
        assert stop.exit_code == 1, stop.report()
    else:
        assert subprocess.run([emulator, *args], capture_output=True, timeout=60).returncode == 1
    return ser.read_bytes()


def test_serial_console_carries_seabios_screen(tmp_path):
    """-nographic: SeaBIOS's sercon writes its screen to the 16550 that -serial made."""
    out = _serial_boot(tmp_path, None)
    assert b"SeaBIOS (version 1.16.2" in out and b"Booting from Hard Disk" in out


@pytest.mark.qemu
def test_serial_console_bytes_equal_qemus(tmp_path):
    """Byte for byte up to where the shorter one ends: SeaBIOS's sercon queues output
    and flushes while LSR says THR is empty; QEMU's UART takes a character time per
    byte (uvirt's THR empties at once), so how much of the queue went out before the
    boot sector ran varies from run to run."""
    ours, qemu = _serial_boot(tmp_path, None), _serial_boot(tmp_path, "qemu-system-x86_64")
    n = min(len(ours), len(qemu))
    assert ours[:n] == qemu[:n]
    assert b"Booting from Hard Disk" in ours[:n]


BIOS_256K = "/usr/share/seabios/bios-256k.bin"


@pytest.mark.parametrize("smm", [(), ("-machine", "pc,smm=off")], ids=["default", "smm-off"])
def test_bios_256k_boots_the_mbr_with_and_without_smm(tmp_path, smm):
    """QEMU's default firmware, as a user runs it (``-bios bios-256k.bin``, smm=auto: on
    under TCG): its SMM relocation SMI and the SMIs of its 16-to-32-bit calls run
    (uvirt/cpu/smm.py), SMBASE ends at 0xA0000, and the INT 13h transcript is QEMU's; with
    smm=off (PIIX4 says SMM is set up) SeaBIOS raises no SMI."""
    from uvirt.cpu.machine import Machine
    from uvirt.testing.bootsector import disk_image
    if not os.path.exists(BIOS_256K):
        pytest.skip(f"{BIOS_256K} missing")
    disk, con = tmp_path / "disk.img", tmp_path / "con.txt"
    disk_image(disk)
    args = [a if a != BIOS else BIOS_256K for a in boot_args(disk, "", con)] + list(smm)
    seen = []
    enter = Machine._smm_enter

    def counting(self):
        seen.append(self.smbase)
        enter(self)

    import unittest.mock
    with unittest.mock.patch.object(Machine, "_smm_enter", counting):
        stop = run_config(parse_argv(args + ["-uvirt-timeout", "60"]))
    assert stop.exit_code == 1, stop.report()
    assert con.read_text() == stored_int13()
    if smm:
        assert seen == []
    else:
        assert seen[0] == 0x30000 and len(seen) > 1 and set(seen[1:]) == {0xA0000}


@pytest.mark.qemu
@pytest.mark.parametrize("transport", TRANSPORTS, ids=["transitional", "legacy", "modern"])
def test_bios_256k_int13_transcript_equals_qemus(tmp_path, transport):
    """The same boot sector under bios-256k.bin with QEMU's defaults, on both."""
    import subprocess
    from uvirt.testing.bootsector import disk_image
    if not os.path.exists(BIOS_256K):
        pytest.skip(f"{BIOS_256K} missing")
    disk, con_q, con_u = tmp_path / "disk.img", tmp_path / "q.txt", tmp_path / "u.txt"
    disk_image(disk)
    args = lambda con: [a if a != BIOS else BIOS_256K for a in boot_args(disk, transport, con)]
    proc = subprocess.run(["qemu-system-x86_64", *args(con_q), "-serial", "none"],
                          capture_output=True, timeout=60)
    stop = run_config(parse_argv(args(con_u) + ["-uvirt-timeout", "60"]))
    assert proc.returncode == stop.exit_code == 1, (proc.stderr, stop.report())
    assert con_u.read_text() == con_q.read_text() == stored_int13()


@pytest.mark.qemu
@pytest.mark.parametrize("bios", [BIOS, BIOS_256K], ids=["bios.bin", "bios-256k.bin"])
@pytest.mark.parametrize("transport", TRANSPORTS, ids=["transitional", "legacy", "modern"])
def test_pci_state_seabios_leaves_at_the_boot_sector_equals_qemus(tmp_path, transport, bios):
    """The boot sector prints bus 0's whole configuration space as SeaBIOS left it (BARs,
    commands, interrupt lines, PAM, SMRAM, PIRQ, PM and SMBus bases, capabilities): the
    same bytes on QEMU 7.2 and uvirt, for each transport and firmware."""
    import subprocess
    from uvirt.testing.bootsector import pci_disk_image
    if not os.path.exists(bios):
        pytest.skip(f"{bios} missing")
    disk, con_q, con_u = tmp_path / "disk.img", tmp_path / "q.txt", tmp_path / "u.txt"
    pci_disk_image(disk)
    args = lambda con: [a if a != BIOS else bios for a in boot_args(disk, transport, con)]
    proc = subprocess.run(["qemu-system-x86_64", *args(con_q), "-serial", "none"],
                          capture_output=True, timeout=60)
    stop = run_config(parse_argv(args(con_u) + ["-uvirt-timeout", "60"]))
    assert proc.returncode == stop.exit_code == 1, (proc.stderr, stop.report())
    want = con_q.read_text()
    assert want.count(".") == 5 and "00:03.0\n" in want          # five functions, the disk at 3
    assert con_u.read_text() == want


@pytest.mark.qemu
@pytest.mark.parametrize("bios", [BIOS, BIOS_256K], ids=["bios.bin", "bios-256k.bin"])
@pytest.mark.parametrize("transport", TRANSPORTS, ids=["transitional", "legacy", "modern"])
def test_seabios_debug_log_equals_qemus(tmp_path, transport, bios):
    """SeaBIOS's own log (port 0x402) from reset to the boot sector's exit: what it found
    (devices, virtio mode, memory, tables, SMM set-up under bios-256k.bin), line for line
    QEMU 7.2's, with QEMU's defaults (smm=auto)."""
    import subprocess
    from uvirt.testing.bootsector import disk_image
    if not os.path.exists(bios):
        pytest.skip(f"{bios} missing")
    disk = tmp_path / "disk.img"
    disk_image(disk)

    def args(log):
        return [a if a != BIOS else bios for a in boot_args(disk, transport, tmp_path / "con.txt")] + [
            "-serial", "none", "-chardev", f"file,id=seabios,path={log}",
            "-device", "isa-debugcon,iobase=0x402,chardev=seabios"]
    proc = subprocess.run(["qemu-system-x86_64", *args(tmp_path / "q.log")], capture_output=True, timeout=60)
    stop = run_config(parse_argv(args(tmp_path / "u.log") + ["-uvirt-timeout", "60"]))
    assert proc.returncode == stop.exit_code == 1, (proc.stderr, stop.report())
    want = (tmp_path / "q.log").read_text(errors="replace")
    assert "Booting from Hard Disk" in want
    assert (tmp_path / "u.log").read_text(errors="replace") == want


@pytest.mark.qemu
@pytest.mark.parametrize("bios", [BIOS, BIOS_256K], ids=["bios.bin", "bios-256k.bin"])
def test_int15_mouse_services_equal_qemus(tmp_path, bios):
    """SeaBIOS's INT 15h C2 (the PS/2 mouse behind the i8042: init, reset, type, status,
    resolution, sample rate, enable without a handler, disable) answers a boot sector as
    on QEMU 7.2; without a mouse model every call failed with AH=04."""
    import subprocess
    from uvirt.testing.bootsector import mouse_disk_image
    if not os.path.exists(bios):
        pytest.skip(f"{bios} missing")
    disk, con_q, con_u = tmp_path / "disk.img", tmp_path / "q.txt", tmp_path / "u.txt"
    mouse_disk_image(disk)
    args = lambda con: [a if a != BIOS else bios for a in boot_args(disk, "", con)]
    proc = subprocess.run(["qemu-system-x86_64", *args(con_q), "-serial", "none"],
                          capture_output=True, timeout=60)
    stop = run_config(parse_argv(args(con_u) + ["-uvirt-timeout", "60"]))
    assert proc.returncode == stop.exit_code == 1, (proc.stderr, stop.report())
    want = con_q.read_text()
    assert want.splitlines()[1] == "C0 00 00aa 0000 0000"          # reset: BAT passed, id 0
    assert con_u.read_text() == want
