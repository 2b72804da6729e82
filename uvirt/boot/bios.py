"""``uvirt run -bios FILE``: real firmware (SeaBIOS) from the reset vector.

Without ``-bios`` uvirt runs no firmware at all: ``bios.firmware_step`` leaves what
SeaBIOS would leave and ``-kernel`` starts at once (the fast default).  With it:

* the image is mapped as QEMU's ``x86_bios_rom_init`` does (devices/pam.py) and the
  CPU starts in real mode at F000:FFF0 (``Machine.cpu_reset``);
* fw_cfg offers what QEMU 7.2's pc offers this firmware (devices/fw_cfg.py): the RAM
  size and e820 map, ``nographic``, CPU counts, ``etc/boot-fail-wait``, ``bootorder``
  from the devices' ``bootindex=`` properties, QEMU's ACPI and SMBIOS tables
  (devices/acpi_tables.py, devices/smbios.py) and the kvmvapic ROM;
* ``-kernel`` goes the way QEMU's x86 loader sends it (hw/i386/x86.c
  ``x86_load_linux`` -> hw/i386/multiboot.c ``load_multiboot``): the multiboot image,
  its modules and the boot information are built by the host and put in fw_cfg
  (``FW_CFG_KERNEL_*``, ``FW_CFG_INITRD_*``, ``FW_CFG_CMDLINE_*``), and QEMU's own
  ``multiboot_dma.bin`` option ROM (``genroms/``), run by the firmware at boot, copies
  them into place and jumps to the kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uvirt.errors import ImageError
from uvirt.boot.option_roms import find_option_rom

if TYPE_CHECKING:       # boot/ loads images onto a machine; cpu/ imports boot/, not the reverse
    from uvirt.cpu.machine import Machine


def boot_firmware(m: Machine, cfg, ctx) -> None:
    """Load ``cfg.bios`` and everything the firmware reads from fw_cfg."""
    fw = getattr(m, "fw_cfg", None)
    if fw is not None:
        from uvirt.board.devices import fw_cfg as F
        fw.items[F.NOGRAPHIC] = int(bool(cfg.nographic)).to_bytes(2, "little")
        order = boot_order(m)
        if cfg.kernel is not None:
            from uvirt.boot.multiboot_fw_cfg import ROM_BOOT_PATH, offer_multiboot
            offer_multiboot(m, fw, cfg.kernel, cfg.append or "", cfg.initrd)
            order.insert(0, ROM_BOOT_PATH)           # boot index 0
        install_kvmvapic(m, fw)
        if order:
            fw.add_file("bootorder", "".join(p + "\n" for p in order).encode()[:-1] + b"\0")
    if not cfg.pflash:
        m.load_bios_file(cfg.bios)


def boot_order(m: Machine) -> list[str]:
    """QEMU's ``get_boot_devices_list``: the Open Firmware paths of devices with a
    ``bootindex``, by index (virtio-blk on bus 0 slot S: /pci@i0cf8/scsi@S/disk@0,0)."""
    entries = []
    for dfn, fn in sorted(m.pci.functions.items()):
        index = getattr(fn, "bootindex", None)
        if index is None:
            continue
        path = getattr(fn, "boot_device_path", None)
        if path is None:
            continue
        entries.append((index, path(dfn)))
    return [p for _, p in sorted(entries)]


def install_kvmvapic(m: Machine, fw) -> None:
    """QEMU's TCG pc offers ``genroms/kvmvapic.bin`` (boot index -1) and listens on port
    0x7E for it (devices/chipset.py ``KvmVapic``)."""
    from uvirt.board.devices.chipset import KvmVapic
    from uvirt.board.memory.regions import MmioRegion
    with open(find_option_rom("kvmvapic.bin"), "rb") as f:
        fw.add_file("genroms/kvmvapic.bin", f.read())
    vapic = KvmVapic(m.ram.buffer.view, m.cpu_linear_pc,
                     lambda start, size: m.lowmem.vapic_window(True, (start, size)), m.write_ram)
    m.add_isa(MmioRegion("kvmvapic", 1, vapic, valid_sizes=(1, 2, 4)), 0x7E, vapic)


def apply_boot_options(m: Machine, cfg) -> None:
    """``-uuid`` and ``-boot`` where QEMU 7.2 puts them (hw/nvram/fw_cfg.c
    ``fw_cfg_reboot``/``fw_cfg_bootsplash``/``fw_cfg_common_init``, hw/i386/pc.c
    ``set_boot_dev``), with QEMU's checks and wording."""
    import struct
    from uvirt.board.devices import fw_cfg as F
    from uvirt.errors import OptionError
    fw = getattr(m, "fw_cfg", None)
    if fw is None:
        return
    if cfg.uuid is not None:
        fw.items[F.UUID] = cfg.uuid
    boot = cfg.boot
    if boot.menu is not None:
        fw.items[F.BOOT_MENU] = struct.pack("<H", boot.menu)
    if boot.reboot_timeout is not None:
        rt = boot.reboot_timeout
        if rt > 0xFFFF and rt != 0xFFFFFFFFFFFFFFFF:
            raise OptionError("reboot timeout is invalid,it should be a value between -1 and 65535")
        fw.add_file("etc/boot-fail-wait", struct.pack("<I", rt & 0xFFFFFFFF))
    if boot.splash_time is not None:
        st = boot.splash_time
        if not 0 <= st <= 0xFFFF:
            raise OptionError("splash-time is invalid,it should be a value between 0 and 65535")
        fw.add_file("etc/boot-menu-wait", struct.pack("<H", st))
    order = boot.order
    rtc = getattr(m, "rtc", None)
    if order is not None and rtc is not None:
        nibble = {"a": 1, "b": 1, "c": 2, "d": 3, "n": 4}
        if len(order) > 3:
            raise OptionError("Too many boot devices for PC")
        bad = [c for c in order if c not in nibble]
        if bad:
            raise OptionError(f"Invalid boot device for PC: '{bad[0]}'")
        bds = [nibble[c] for c in order] + [0, 0, 0]
        rtc.cmos[0x3D] = bds[1] << 4 | bds[0]
        rtc.cmos[0x38] = bds[2] << 4 | (rtc.cmos[0x38] & 0x0F)


def load_pflash(m: Machine, drives) -> str:
    """``-drive if=pflash,file=F``: QEMU's pc maps the system flash at the top of 4 GiB and
    copies its last 128 KiB into the read-only isa-bios RAM (hw/i386/pc_sysfw.c).  uvirt
    maps the image as a ROM: reads as a CFI flash in read-array mode gives them; the CFI
    command set (program, erase, query) is not modelled, writes are dropped."""
    from uvirt.errors import OptionError
    if len(drives) > 1:
        raise OptionError(f"{drives[1].origin}: uvirt models one pflash unit (unit 0)")
    d = drives[0]
    path = d.props.get("file")
    if path is None:
        raise OptionError(f"{d.origin}: pflash needs file=")
    try:
        with open(path, "rb") as f:
            image = f.read()
    except OSError as e:
        raise ImageError(f"could not open pflash '{path}': {e.strerror}") from None
    if not image or len(image) % 0x1000:
        raise ImageError(f"{path}: system firmware block device has size 0x{len(image):x}, "
                         f"which is not a multiple of 4KiB")
    m.lowmem.load_bios(image)
    m.entry = 0xFFF0
    if m.uc is not None:
        m.cpu_reset()
    return path


def apply_smm(m: Machine, smm: str) -> None:
    """``-machine smm=``: on and auto (QEMU's TCG has SMM) give the CPU System Management
    Mode (uvirt/cpu/smm.py), which bios-256k.bin sets up; ``smm=off`` is QEMU's machine
    without it: PIIX4 starts with DEVACTB.APMC_EN set (config 0x5B bit 1,
    hw/acpi/piix4.c ``piix4_pm_reset``), which tells firmware that SMM is "already
    initialised", so SeaBIOS skips its SMM relocation, and the ACPI tables name no SMI
    command port."""
    from uvirt.board.pci.bus import devfn
    m.board.smm_enabled = smm != "off"      # the ACPI FACP's SMI command follows it
    host = m.pci.find(0, devfn(0, 0))
    if host is not None and hasattr(host, "firmware_smm"):
        host.firmware_smm = smm != "off"     # what the firmware step leaves in SMRAM
    pm = m.pci.find(0, devfn(1, 3))
    if smm == "off" and pm is not None:
        pm.config.data[0x5B] |= 0x02
        pm.freeze_reset_state()
