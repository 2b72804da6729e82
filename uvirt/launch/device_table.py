"""``-device`` drivers uvirt knows, with QEMU's property names, types and defaults.

A driver declares its properties once (``Prop``); ``create_device`` checks the user's
``key=value`` pairs against that table with QEMU's error wordings (``Property
'isa-debug-exit.foo' not found``, ``Parameter 'iobase' expects integer``) before the
factory runs, so factories receive typed values only.  Later device issues add rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from uvirt.board.board import place_pci
from uvirt.errors import OptionError, UvirtError
from uvirt.options.keyval import opts_id
from uvirt.options.values import (StrtoxError, located, parse_bool, parse_int, parse_size,
                                  qemu_strtosz, strtox)

if TYPE_CHECKING:
    from uvirt.board.pci.bus import PciPlugError
    from uvirt.cpu.machine import Machine


@dataclass(frozen=True)
class Prop:
    name: str
    kind: str                  # "uint8" | "uint16" | "uint32" | "uint64" | "int32" | "bool" | "str" |
    #                            "onoffauto" | "chardev" | "pci-addr" | "size32" | "blocksize" |
    #                            a key of ENUMS
    default: Any = None


@dataclass
class BuildContext:
    """What factories may look up: chardevs by id, memory backends, drives (later issues)."""

    chardevs: dict[str, Any] = field(default_factory=dict)
    used_chardevs: set[str] = field(default_factory=set)
    drives: dict[str, Any] = field(default_factory=dict)          # -drive id -> uvirt.backends.block.Drive
    virtio_serial_buses: list[Any] = field(default_factory=list)  # VirtioSerial, in creation order
    raw: str = ""                     # the -device argument being created (for error messages)
    #: ``-object memory-backend-*`` by id (``uvirt.backends.shared_memory.SharedMemory``), and the
    #: ids a device has taken (QEMU ``host_memory_backend_is_mapped``).
    memdevs: dict[str, Any] = field(default_factory=dict)
    used_memdevs: set[str] = field(default_factory=set)
    #: QEMU's warnings (``-device X: warning: ...``): the device is created anyway
    warnings: list[str] = field(default_factory=list)
    #: ``-global driver.prop=value`` defaults by driver: every device created, QMP
    #: ``device_add`` included, gets them first
    globals: dict[str, dict[str, str]] = field(default_factory=dict)


Factory = Callable[["Machine", dict[str, Any], BuildContext], Any]


@dataclass(frozen=True)
class DeviceType:
    name: str
    bus: str                   # "isa" | "pci"
    description: str
    props: tuple[Prop, ...]
    factory: Factory
    #: QEMU's device category (``-device help`` groups by it): "Storage", "Network",
    #: "Input", "Display", "Misc"... (uvirt.launch.help.CATEGORIES)
    category: str = "Misc"


_COMMON = (Prop("id", "str"),)
_PCI_COMMON = (Prop("addr", "pci-addr"), Prop("multifunction", "bool", False),
               Prop("romfile", "str"), Prop("rombar", "uint32", 1))

#: QAPI enum property kinds -> their values (QEMU's DEFINE_PROP_*: the kind is the type name)
ENUMS = {"BlockdevOnError": ("report", "ignore", "enospc", "stop", "auto")}

#: integer property kinds -> bit width (QEMU's DEFINE_PROP_UINT*)
_UINT_BITS = {"uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64}


def parse_pci_addr(value: str) -> tuple[int, int] | None:
    """``slot[.fn]`` in hex, as QEMU's ``set_pci_devfn`` reads it (``strtoul`` base 16 for
    each part: an optional ``0x``, no trailing text; slot <= 0x1f, function <= 7)."""
    slot_s, dot, fn_s = value.partition(".")
    try:
        slot = strtox(slot_s, 16, signed=False, consume_all=True)[0]
        fn = strtox(fn_s, 16, signed=False, consume_all=True)[0] if dot else 0
    except StrtoxError:
        return None
    if slot > 0x1F or fn > 7:
        return None
    return slot, fn


def _convert(dev: DeviceType, prop: Prop, value: str, where: str, *, qom: bool = False) -> Any:
    """A property's text as a typed value.  ``qom``: read as QOM's string input visitor
    reads a ``-global`` default (``object_property_parse``), whose words for a value that
    is not a number differ from QemuOpts' (``expects uint64``, ``expects int64``, ``expects
    a non-negative number below 2^64``)."""
    if prop.kind in _UINT_BITS or prop.kind == "int32":
        signed = prop.kind == "int32"
        try:
            return parse_int(value, option=where, key=prop.name, signed=signed,
                             bits=32 if signed else _UINT_BITS[prop.kind])
        except OptionError as e:
            if qom and str(e).endswith("expects integer"):
                raise located(where, f"Parameter '{prop.name}' expects "
                                     f"{'int64' if signed else 'uint64'}") from None
            raise
    if prop.kind == "bool":
        return parse_bool(value, option=where, key=prop.name)
    if prop.kind in ("size32", "blocksize"):
        return _size_prop(dev, prop, value, where, qom=qom)
    if prop.kind == "size":
        return parse_size(value, option=where, key=prop.name,
                          expects="a non-negative number below 2^64" if qom else "size")
    if prop.kind == "onoffauto" or prop.kind in ENUMS:
        if value in ENUMS.get(prop.kind, ("on", "off", "auto")):
            return value
        raise located(where, f"Parameter '{prop.name}' does not accept value '{value}'")
    if prop.kind == "pci-addr":
        addr = parse_pci_addr(value)
        if addr is None:
            raise located(where, f"Property '{dev.name}.{prop.name}' doesn't take value '{value}'")
        return addr
    return value


def device_props(dev: DeviceType) -> tuple[Prop, ...]:
    """Every property ``-device`` accepts for ``dev``: its own, then the common ones."""
    return dev.props + _COMMON + (_PCI_COMMON if dev.bus == "pci" else ())


def _size_prop(dev: DeviceType, prop: Prop, value: str, where: str, *, qom: bool = False) -> int:
    """QEMU's ``size32`` and block-size property types: a size with suffixes, at most
    2^32 - 1; a block size is a power of two between 512 B and 2 MiB.  QEMU names the
    owner in the range message (the virtio device behind a ``-pci`` proxy) except for
    block sizes, whose message has an empty type name."""
    try:
        n = qemu_strtosz(value)
    except ValueError:
        expects = "a non-negative number below 2^64" if qom else "size"
        raise located(where, f"Parameter '{prop.name}' expects {expects}") from None
    if prop.kind == "blocksize":
        if n and not 512 <= n <= 2 << 20:           # 0: unset, the drive's own size
            raise located(where, f"Property .{prop.name} doesn't take value {n} "
                                 f"(minimum: 512, maximum: 2097152)")
        if n & (n - 1):
            raise located(where, f"Property .{prop.name} doesn't take value '{value}', "
                                 f"it's not a power of 2")
    elif n > 0xFFFFFFFF:
        owner = dev.name.removesuffix("-pci") + "-device" if dev.name.startswith("virtio-") else dev.name
        raise located(where, f"Property {owner}.{prop.name} doesn't take value {n} "
                             f"(maximum: 4294967295)")
    return n


def create_device(machine: "Machine", ctx: BuildContext, driver: str, props: dict[str, str],
                  raw: str | None = None, globals_: dict[str, str] | None = None, *,
                  hotplugged: bool = False) -> Any:
    """``-device driver,props`` (``raw`` the argument as written); ``globals_`` are the
    ``-global driver.prop=value`` defaults (``ctx.globals`` if not given), applied first as
    QEMU applies them: an error in one is QEMU's ``can't apply global``, even where the
    -device sets the property, except for a ``hotplugged`` device (QMP ``device_add``),
    for which QEMU's ``object_apply_global_props`` skips a global it cannot apply."""
    raw = raw if raw is not None else ",".join([driver] + [f"{k}={v}" for k, v in props.items()])
    ctx = ctx if ctx is not None else BuildContext()      # a board built without the runner
    dev = DEVICE_TYPES.get(driver)
    if dev is None:
        raise OptionError(f"-device {raw}: '{driver}' is not a valid device model name")
    props = _check_bus(dev, props, raw)
    schema = {p.name: p for p in device_props(dev)}
    values = {name: p.default for name, p in schema.items()}
    if globals_ is None:
        globals_ = ctx.globals.get(driver, {})
    for key, value in globals_.items():
        prop = schema.get(key)
        try:
            if prop is None:
                raise OptionError(f"Property '{driver}.{key}' not found")
            if value == "" and (prop.kind == "chardev" or key in _LINKS):
                values[key] = None
                continue
            values[key] = _convert(dev, prop, value, "", qom=True)
        except OptionError as e:
            if hotplugged:
                continue
            raise OptionError(f"-device {raw}: can't apply global {driver}.{key}={value}: {e}") from None
    for key, value in props.items():
        prop = schema.get(key)
        if prop is None:
            raise OptionError(f"-device {raw}: Property '{driver}.{key}' not found")
        if value == "" and (prop.kind == "chardev" or key in _LINKS):
            values[key] = None          # QEMU: an empty link or chardev name is no link
            continue
        values[key] = _convert(dev, prop, value, f"-device {raw}")
    for name, prop in schema.items():
        if prop.kind == "chardev" and values[name] is not None:
            if values[name] not in ctx.chardevs:
                raise OptionError(f"-device {raw}: Property '{driver}.{name}' can't find value "
                                  f"'{values[name]}'")
            if values[name] in ctx.used_chardevs:
                raise OptionError(f"-device {raw}: Property '{driver}.{name}' can't take value "
                                  f"'{values[name]}': Device '{values[name]}' is in use")
            ctx.used_chardevs.add(values[name])
            values[name] = ctx.chardevs[values[name]]
    if values.get("rng") is not None:           # a link to an -object rng-*: uvirt has none
        raise OptionError(f"-device {raw}: Device '{values['rng']}' not found")
    ctx.raw = raw
    ident = values.get("id") or opts_id(raw, "")
    from uvirt.board.pci.bus import PciFunction, PciPlugError
    try:
        created = dev.factory(machine, values, ctx)
    except PciPlugError as e:
        raise OptionError(f"-device {raw}: {pci_plug_words(e, driver)}") from None
    if values.get("romfile"):                   # QEMU pci_add_option_rom, after realize
        import os.path
        if not os.path.isfile(values["romfile"]):
            raise OptionError(f"-device {raw}: failed to find romfile \"{values['romfile']}\"")
        raise OptionError(f"-device {raw}: romfile: uvirt does not load option ROMs")
    if isinstance(created, PciFunction):
        created.qom_type, created.qdev_id = driver, ident
    return created


def pci_plug_words(e: "PciPlugError", driver: str) -> str:
    """QEMU 7.2's message (``do_pci_register_device``) for a ``-device driver`` the PCI bus
    refused; the function already there is named by its QOM type and id, as QEMU does
    (``in use by virtio-rng-pci,id=(null)``)."""
    if e.kind == "full":
        return f"PCI: no slot/function available for {driver}, all in use or reserved"
    slot, fn = e.devfn >> 3 & 0x1F, e.devfn & 7
    if e.kind == "in-use":
        o = e.other
        return (f"PCI: slot {slot} function {fn} not available for {driver}, in use by "
                f"{o.qom_type or o.name},id={o.qdev_id if o.qdev_id is not None else '(null)'}")
    if e.kind == "single-function":
        return (f"PCI: {slot:x}.0 indicates single function, but {slot:x}."
                f"{e.other.devfn & 7:x} is already populated.")
    return f"PCI: single function device can't be populated in function {slot:x}.{fn:x}"


#: properties that name another object (QEMU link and drive properties: empty = none)
_LINKS = frozenset(("drive", "memdev", "rng"))


#: the one bus of each kind uvirt's pc has, by QEMU's name
_BUSES = {"pci.0": "pci", "isa.0": "isa"}


def _check_bus(dev: DeviceType, props: dict[str, str], raw: str) -> dict[str, str]:
    """``bus=`` for PCI and ISA devices (QEMU ``qdev_device_add`` resolves it before any
    property): ``pci.0`` and ``isa.0`` exist; taken out of the properties."""
    if dev.bus not in ("pci", "isa") or "bus" not in props:
        return props
    name = props["bus"]
    kind = _BUSES.get(name)
    if kind is None:
        raise OptionError(f"-device {raw}: Bus '{name}' not found")
    if kind != dev.bus:
        raise OptionError(f"-device {raw}: Device '{dev.name}' can't go on {kind.upper()} bus")
    return {k: v for k, v in props.items() if k != "bus"}


# --------------------------------------------------------------------------- ISA helpers


def _debug_exit(machine: "Machine", v: dict[str, Any], ctx: BuildContext):
    if v["iosize"] not in (1, 2, 4) and v["iosize"] > 0x10000:
        raise OptionError(f"-device {ctx.raw}: iosize 0x{v['iosize']:x} is too large")
    if v["iosize"] == 0:
        raise OptionError(f"-device {ctx.raw}: iosize 0x0 must be at least 1")
    from uvirt.board.devices.isa import add_debug_exit
    return add_debug_exit(machine, v["iobase"], v["iosize"])


def _debugcon(machine: "Machine", v: dict[str, Any], ctx: BuildContext):
    if v["chardev"] is None:                    # QEMU debugcon_realize_core
        raise OptionError(f"-device {ctx.raw}: Can't create debugcon device, empty char device")
    from uvirt.board.devices.isa import add_debugcon
    return add_debugcon(machine, v["chardev"], v["iobase"], readback=v["readback"])


def _virtio_common_props() -> tuple[Prop, ...]:
    return (Prop("disable-legacy", "onoffauto", "auto"), Prop("disable-modern", "bool", False),
            Prop("vectors", "uint32", None), Prop("ioeventfd", "bool", True),
            Prop("event_idx", "bool", True), Prop("indirect_desc", "bool", True),
            Prop("notify_on_empty", "bool", True), Prop("any_layout", "bool", True),
            Prop("packed", "bool", False), Prop("queue_reset", "bool", True),
            Prop("iommu_platform", "bool", False), Prop("x-pcie-lnkctl-init", "bool", True),
            Prop("memory-regions", "str", None))


def _memory_regions(v: dict[str, Any], name: str, raw_origin: str) -> list:
    """``memory-regions=4M:1M`` (uvirt's own property): anonymous shared regions."""
    from uvirt.backends.shared_memory import MIN_REGION_SIZE, SharedMemory

    spec = v["memory-regions"]
    if not spec:
        return []
    regions = []
    for i, part in enumerate(spec.split(":")):
        size = parse_size(part, option=raw_origin, key="memory-regions")
        if size < MIN_REGION_SIZE or size & (size - 1):
            raise OptionError(f"{raw_origin}: memory region {i} size 0x{size:x} must be a power of two "
                              f"of at least 0x{MIN_REGION_SIZE:x}")
        regions.append(SharedMemory.anonymous(f"{name}-mem{i}", size))
    return regions


#: QEMU's MSI-X limit (PCI_MSIX_FLAGS_QSIZE + 1)
MAX_MSIX_VECTORS = 0x800


def _virtio_pci(machine: "Machine", v: dict[str, Any], device, *, class_code: int,
                default_vectors: int, raw: str | None = None, ctx: BuildContext | None = None):
    from uvirt.virtio.features import VirtioFeature as F
    from uvirt.virtio.pci import VirtioPci

    legacy_off = v["disable-legacy"] == "on"
    toggles = {"event_idx": F.RING_EVENT_IDX, "indirect_desc": F.RING_INDIRECT_DESC,
               "notify_on_empty": F.NOTIFY_ON_EMPTY, "any_layout": F.ANY_LAYOUT,
               "packed": F.RING_PACKED, "queue_reset": F.RING_RESET,
               "iommu_platform": F.ACCESS_PLATFORM}
    for prop, bit in toggles.items():
        if v[prop]:
            device.host_features |= bit
        else:
            device.host_features &= ~bit
    vectors = default_vectors if v["vectors"] is None else v["vectors"]
    if vectors > MAX_MSIX_VECTORS:    # QEMU virtio_pci_device_plugged: no MSI-X at all then
        if ctx is not None:
            ctx.warnings.append(f"-device {raw or device.name + '-pci'}: warning: unable to init "
                                f"msix vectors to {vectors}")
        vectors = 0
    if not legacy_off and v["iommu_platform"]:          # virtio_pci_device_plugged
        raise OptionError(f"-device {raw or device.name + '-pci'}: VIRTIO_F_IOMMU_PLATFORM was "
                          f"supported by neither legacy nor transitional device")
    if legacy_off and v["disable-modern"]:
        raise OptionError(f"-device {raw or device.name + '-pci'}: device cannot work as neither "
                          f"modern nor legacy mode is enabled")
    origin = f"-device {raw or device.name + '-pci'}"
    try:
        fn = VirtioPci(device, class_code=class_code, disable_legacy=legacy_off,
                       disable_modern=v["disable-modern"], vectors=vectors,
                       memory_regions=_memory_regions(v, device.name, origin))
    except UvirtError as e:
        if isinstance(e, OptionError):
            raise
        raise OptionError(f"{origin}: {e}") from None
    fn.realize(machine.memory.guest)
    place_pci(machine, fn, v)
    return fn


def _virtio_rng_pci(machine: "Machine", v: dict[str, Any], ctx: BuildContext):
    from uvirt.virtio.rng import VirtioRng
    where = f"-device {ctx.raw}"
    if v["period"] == 0:                        # virtio_rng_device_realize
        raise OptionError(f"{where}: 'period' parameter expects a positive integer")
    if v["max-bytes"] is not None and v["max-bytes"] >= 1 << 63:
        raise OptionError(f"{where}: 'max-bytes' parameter must be non-negative, and less than 2^63")
    return _virtio_pci(machine, v, VirtioRng(seed=v["seed"]), class_code=0x00FF, default_vectors=2,
                       raw=ctx.raw if ctx else None, ctx=ctx)


def _virtio_fb_pci(machine: "Machine", v: dict[str, Any], ctx: BuildContext):
    from uvirt.virtio.fb import VirtioFb
    try:
        dev = VirtioFb(width=v["width"], height=v["height"])
    except UvirtError as e:
        raise OptionError(f"-device {ctx.raw or 'virtio-fb-pci'}: {e}") from None
    fn = _virtio_pci(machine, v, dev, class_code=0x0380, default_vectors=2, raw=ctx.raw if ctx else None, ctx=ctx)
    machine.framebuffers = getattr(machine, "framebuffers", []) + [dev]
    machine.displays = getattr(machine, "displays", []) + [(v["id"], dev)]
    return fn


def _virtio_gpu_pci(machine: "Machine", v: dict[str, Any], ctx: BuildContext):
    """QEMU's virtio-gpu-pci: ``virtio_pci_force_virtio_1`` makes it modern-only whatever
    disable-legacy/disable-modern say; realize errors in QEMU's words."""
    from uvirt.virtio.gpu import VIRTIO_GPU_MAX_SCANOUTS, VirtioGpu
    origin = f"-device {ctx.raw or 'virtio-gpu-pci'}"
    if v["max_outputs"] > VIRTIO_GPU_MAX_SCANOUTS:
        raise OptionError(f"{origin}: invalid max_outputs > {VIRTIO_GPU_MAX_SCANOUTS}")
    if v["blob"]:
        raise OptionError(f"{origin}: cannot enable blob resources without udmabuf")
    dev = VirtioGpu(max_outputs=v["max_outputs"], xres=v["xres"], yres=v["yres"], edid=v["edid"],
                    max_hostmem=v["max_hostmem"])
    dev.ioeventfd = v["ioeventfd"]
    fn = _virtio_pci(machine, {**v, "disable-legacy": "on", "disable-modern": False}, dev,
                     class_code=0x0380, default_vectors=3, raw=ctx.raw, ctx=ctx)
    machine.displays = getattr(machine, "displays", []) + [(v["id"], dev)]
    return fn


def _ivshmem_plain(machine: "Machine", v: dict[str, Any], ctx: BuildContext):
    """QEMU ``ivshmem_plain_realize``: the memdev must exist and be free."""
    from uvirt.board.devices.ivshmem import Ivshmem, IvshmemSetupError, create_plain
    where = f"-device {ctx.raw or 'ivshmem-plain'}"
    memdev = v["memdev"]
    if memdev is None:
        raise OptionError(f"{where}: You must specify a 'memdev'")
    if memdev not in ctx.memdevs:
        raise OptionError(f"{where}: Device '{memdev}' not found")
    if memdev in ctx.used_memdevs:
        raise OptionError(f"{where}: can't use already busy memdev: {memdev}")
    shm = ctx.memdevs[memdev]
    try:
        Ivshmem.check_bar_size(shm.size)
    except IvshmemSetupError as e:
        raise OptionError(f"{where}: {e}") from None
    ctx.used_memdevs.add(memdev)        # the device owns (and closes) it from here on
    return create_plain(machine, v, shm)


def _ivshmem_doorbell(machine: "Machine", v: dict[str, Any], ctx: BuildContext):
    from uvirt.board.devices.ivshmem import IvshmemSetupError, create_doorbell
    try:
        return create_doorbell(machine, v)
    except IvshmemSetupError as e:
        raise OptionError(f"-device {ctx.raw or 'ivshmem-doorbell'}: {e}") from None


def _edu(machine: "Machine", v: dict[str, Any], ctx: BuildContext):
    from uvirt.board.devices.edu import create_edu
    return create_edu(machine, v, ctx)


#: QEMU's BDRV_REQUEST_MAX_SECTORS (the limit of max-discard-sectors, max-write-zeroes-sectors)
BDRV_REQUEST_MAX_SECTORS = 4194303


def _virtio_blk_pci(machine: "Machine", v: dict[str, Any], ctx: BuildContext):
    """``-device virtio-blk-pci,drive=ID``: QEMU 7.2's checks, in its order."""
    from uvirt.virtio.blk import VirtioBlk
    if v["drive"] is None:
        raise OptionError(f"-device {ctx.raw}: drive property not set")
    drive = ctx.drives.get(v["drive"])
    if drive is None:
        raise OptionError(f"-device {ctx.raw}: Property 'virtio-blk-device.drive' "
                          f"can't find value '{v['drive']}'")
    if drive.used_by is not None:
        raise OptionError(f"-device {ctx.raw}: Drive '{drive.id}' is already in use "
                          f"by another device")
    from uvirt.backends.block import EmptyDrive
    if isinstance(drive.backend, EmptyDrive):
        raise OptionError(f"-device {ctx.raw}: Device needs media, but drive is empty")
    where = f"-device {ctx.raw}"
    # virtio_blk_device_realize, in its order
    if v["num-queues"] == 0:
        raise OptionError(f"{where}: num-queues property must be larger than 0")
    qs = v["queue-size"]
    if qs <= 2:
        raise OptionError(f"{where}: invalid queue-size property ({qs}), must be > 2")
    if qs > 1024 or qs & (qs - 1):
        raise OptionError(f"{where}: invalid queue-size property ({qs}), must be a power of 2 (max 1024)")
    if v["cyls"] or v["heads"] or v["secs"]:                 # blkconf_geometry
        for k, top in (("cyls", 65535), ("heads", 255), ("secs", 255)):
            if not 1 <= v[k] <= top:
                raise OptionError(f"{where}: {k} must be between 1 and {top}")
    logical = v["logical_block_size"] or 512                 # blkconf_blocksizes: the drive's
    physical = v["physical_block_size"] or 512
    if logical > physical:
        raise OptionError(f"{where}: logical_block_size > physical_block_size not supported")
    for k in ("min_io_size", "opt_io_size"):
        if v[k] % logical:
            raise OptionError(f"{where}: {k} must be a multiple of logical_block_size")
    for k, feature in (("max-discard-sectors", "discard"), ("max-write-zeroes-sectors", "write-zeroes")):
        if v[feature] and not 1 <= v[k] <= BDRV_REQUEST_MAX_SECTORS:
            raise OptionError(f"{where}: invalid {k} property ({v[k]}), must be between 1 and "
                              f"{BDRV_REQUEST_MAX_SECTORS}")
    if v["scsi"] and not v["disable-modern"]:                # virtio_blk_get_features
        raise OptionError(f"{where}: Please set scsi=off for virtio-blk devices in order to use "
                          f"virtio 1.0")
    # what QEMU accepts and uvirt does not model
    if v["scsi"]:
        raise OptionError(f"{where}: scsi=on (SCSI passthrough) is not supported by uvirt")
    if v["num-queues"] not in (1, 0xFFFF):
        raise OptionError(f"{where}: num-queues other than 1 is not supported by uvirt")
    for k in ("logical_block_size", "physical_block_size"):
        if v[k] not in (0, 512):
            raise OptionError(f"{where}: {k}={v[k]} is not supported by uvirt (512 only)")
    backend = drive.backend
    if v["write-cache"] != "auto":
        backend.write_cache = v["write-cache"] == "on"
    dev = VirtioBlk(backend, serial=v["serial"], queue_size=v["queue-size"], cyls=v["cyls"],
                    heads=v["heads"], secs=v["secs"], config_wce=v["config-wce"], discard=v["discard"],
                    write_zeroes=v["write-zeroes"], max_discard_sectors=v["max-discard-sectors"],
                    max_write_zeroes_sectors=v["max-write-zeroes-sectors"],
                    seg_max_adjust=v["seg-max-adjust"], min_io_size=v["min_io_size"],
                    opt_io_size=v["opt_io_size"])
    dev.ioeventfd = v["ioeventfd"]
    cls = v["class"] if v["class"] in (0x0100, 0x0180) else 0x0100
    fn = _virtio_pci(machine, v, dev, class_code=cls, default_vectors=2, raw=ctx.raw if ctx else None, ctx=ctx)
    if v["bootindex"] is not None:       # firmware_boot.boot_order: the bootorder file
        fn.bootindex = v["bootindex"]
        # QEMU's qdev_get_fw_dev_path: class 0x0100 is "scsi", virtio-blk's "disk@0,0"
        fn.boot_device_path = lambda dfn: (f"/pci@i0cf8/scsi@{dfn >> 3:x}"
                                           + (f",{dfn & 7:x}" if dfn & 7 else "") + "/disk@0,0")
    drive.used_by = "virtio-blk-pci"
    machine.services.block_backends[drive.id] = backend     # QMP block_resize
    return fn


def _virtio_serial_pci(machine: "Machine", v: dict[str, Any], ctx: BuildContext):
    from uvirt.virtio.serial import VirtioSerial, VirtioSerialError
    dev_id = v["id"] or (opts_id(ctx.raw, "") if ctx.raw else None)
    if dev_id:
        bus_name = f"{dev_id}.0"
    else:
        auto = sum(1 for b in ctx.virtio_serial_buses if b.auto_named)
        bus_name = f"virtio-serial-bus.{auto}"
    try:
        dev = VirtioSerial(max_ports=v["max_ports"], emergency_write=v["emergency-write"],
                           bus_name=bus_name)
    except VirtioSerialError as e:
        raise OptionError(f"-device {ctx.raw}: {e}") from None
    dev.auto_named = not dev_id
    dev.ioeventfd = v["ioeventfd"]
    cls = v["class"] if v["class"] in (0x0780, 0x0380, 0x00FF) else 0x0780
    fn = _virtio_pci(machine, v, dev, class_code=cls, default_vectors=2, raw=ctx.raw if ctx else None, ctx=ctx)
    ctx.virtio_serial_buses.append(dev)
    h = machine.services
    handler = _VirtioSerialHotplug(machine)
    h.hotplug[bus_name] = handler
    h.hotplug["virtio-serial.0"] = handler       # QMP device_add without bus=
    return fn


class _VirtioSerialHotplug:
    """QMP device_add/device_del of ports: the factory already plugged the port (PORT_ADD
    and a config notification, as QEMU); unplug is immediate (QEMU's bus unplugs at
    once: PORT_REMOVE, then DEVICE_DELETED)."""

    def __init__(self, machine: "Machine") -> None:
        self.machine = machine

    def plug(self, entry) -> None:
        pass

    def unplug_request(self, entry) -> None:
        port = entry.device
        if getattr(port, "bus", None) is not None:
            port.bus.unplug(port)
        self.machine.services.device_deleted(entry)


def _virtio_serial_port(machine: "Machine", v: dict[str, Any], ctx: BuildContext, *, driver: str,
                        console: bool):
    """``virtconsole`` / ``virtserialport`` on a virtio-serial bus (QEMU picks the most
    recently created bus when ``bus`` is not given)."""
    from uvirt.virtio.serial import VirtioSerialError, VirtioSerialPort
    origin = f"-device {ctx.raw or driver}"
    if v["bus"] is not None:
        bus = next((b for b in ctx.virtio_serial_buses if b.bus_name == v["bus"]), None)
        if bus is None:
            raise OptionError(f"{origin}: Bus '{v['bus']}' not found")
    elif ctx.virtio_serial_buses:
        bus = ctx.virtio_serial_buses[-1]
    else:
        raise OptionError(f"{origin}: No 'virtio-serial-bus' bus found for device '{driver}'")
    names = {p.name for b in ctx.virtio_serial_buses for p in b.ports if p.name}
    port = VirtioSerialPort(chardev=v["chardev"], name=v["name"], is_console=console)
    try:
        return bus.plug(port, v["nr"], names)
    except VirtioSerialError as e:
        raise OptionError(f"{origin}: {e}") from None


def _virtconsole(machine: "Machine", v: dict[str, Any], ctx: BuildContext):
    return _virtio_serial_port(machine, v, ctx, driver="virtconsole", console=True)


def _virtserialport(machine: "Machine", v: dict[str, Any], ctx: BuildContext):
    return _virtio_serial_port(machine, v, ctx, driver="virtserialport", console=False)


def _virtio_serial_port_props() -> tuple[Prop, ...]:
    return (Prop("chardev", "chardev"), Prop("name", "str"), Prop("nr", "uint32", None),
            Prop("bus", "str"))


DEVICE_TYPES: dict[str, DeviceType] = {
    "virtio-blk-pci": DeviceType(
        "virtio-blk-pci", "pci", "virtio block device on a -drive (transitional by default)",
        _virtio_common_props() + (
            Prop("drive", "str"), Prop("serial", "str"), Prop("cyls", "uint32", 0),
            Prop("heads", "uint32", 0), Prop("secs", "uint32", 0), Prop("config-wce", "bool", True),
            Prop("discard", "bool", True), Prop("write-zeroes", "bool", True),
            Prop("max-discard-sectors", "uint32", 0x3FFFFF),
            Prop("max-write-zeroes-sectors", "uint32", 0x3FFFFF), Prop("num-queues", "uint16", 0xFFFF),
            Prop("queue-size", "uint16", 256), Prop("seg-max-adjust", "bool", True),
            Prop("scsi", "bool", False), Prop("request-merging", "bool", True),
            Prop("write-cache", "onoffauto", "auto"), Prop("share-rw", "bool", False),
            Prop("logical_block_size", "blocksize", 0), Prop("physical_block_size", "blocksize", 0),
            Prop("min_io_size", "size32", 0), Prop("opt_io_size", "size32", 0),
            Prop("bootindex", "int32"), Prop("class", "uint32", 0),
            Prop("werror", "BlockdevOnError", "auto"), Prop("rerror", "BlockdevOnError", "auto")),
        _virtio_blk_pci, category="Storage"),
    "virtio-serial-pci": DeviceType(
        "virtio-serial-pci", "pci", "virtio console/serial device: ports are virtconsole and "
        "virtserialport devices on its bus (ID.0)",
        _virtio_common_props() + (Prop("max_ports", "uint32", 31), Prop("emergency-write", "bool", True),
                                  Prop("class", "uint32", 0)),
        _virtio_serial_pci, category="Input"),
    "virtconsole": DeviceType(
        "virtconsole", "virtio-serial", "a console port on a virtio-serial bus (port 0 unless nr=)",
        _virtio_serial_port_props(), _virtconsole, category="Input"),
    "virtserialport": DeviceType(
        "virtserialport", "virtio-serial", "a serial port on a virtio-serial bus (ports 1..)",
        _virtio_serial_port_props(), _virtserialport, category="Input"),
    "ivshmem-plain": DeviceType(
        "ivshmem-plain", "pci", "Inter-VM shared memory: BAR2 is a -object memory-backend-*",
        (Prop("master", "onoffauto", "off"), Prop("memdev", "str")), _ivshmem_plain),
    "ivshmem-doorbell": DeviceType(
        "ivshmem-doorbell", "pci", "Inter-VM shared memory and doorbells from an ivshmem server",
        (Prop("chardev", "chardev"), Prop("vectors", "uint32", 1), Prop("ioeventfd", "bool", True),
         Prop("master", "onoffauto", "off")), _ivshmem_doorbell),
    "virtio-fb-pci": DeviceType(
        "virtio-fb-pci", "pci", "uvirt's virtio framebuffer (device type 63): mode in config, "
        "pixels in a shared memory region",
        _virtio_common_props() + (Prop("width", "uint32", 320), Prop("height", "uint32", 240)),
        _virtio_fb_pci, category="Display"),
    "virtio-gpu-pci": DeviceType(
        "virtio-gpu-pci", "pci", "virtio GPU, 2D (modern-only, as QEMU forces it): resources in host "
        "memory, guest-RAM backing, TRANSFER_TO_HOST_2D + RESOURCE_FLUSH",
        tuple(Prop("ioeventfd", "bool", False) if p.name == "ioeventfd" else p   # QEMU: off here
              for p in _virtio_common_props())
        + (Prop("max_outputs", "uint32", 1), Prop("edid", "bool", True),
                                  Prop("xres", "uint32", 1280), Prop("yres", "uint32", 800),
                                  Prop("max_hostmem", "size", 256 << 20), Prop("blob", "bool", False)),
        _virtio_gpu_pci, category="Display"),
    "virtio-rng-pci": DeviceType(
        "virtio-rng-pci", "pci", "virtio entropy device (transitional by default)",
        _virtio_common_props() + (Prop("rng", "str"), Prop("max-bytes", "uint64", None),
                                  Prop("period", "uint32", None), Prop("seed", "uint64", None)),
        _virtio_rng_pci),
    "edu": DeviceType(
        "edu", "pci", "QEMU's educational device (1234:11e8): factorial, DMA, INTx and MSI",
        (Prop("dma_mask", "uint64"),), _edu),   # no default shown: edu_instance_init sets it
    "isa-debug-exit": DeviceType(
        "isa-debug-exit", "isa", "ISA debug exit device: a write of v ends the run with status (v<<1)|1",
        (Prop("iobase", "uint32", 0x501), Prop("iosize", "uint32", 2)), _debug_exit),
    "isa-debugcon": DeviceType(
        "isa-debugcon", "isa", "ISA debug console: bytes written to iobase go to a chardev",
        (Prop("iobase", "uint32", 0xE9), Prop("chardev", "chardev"),
         Prop("readback", "uint32", 0xE9)), _debugcon),
}


class DeviceCatalog:
    """The ``-device`` table bound to one built board: what QMP ``device_add`` and
    ``qom-list-types`` use (uvirt.qtest.qmp.DeviceCatalog), handed to qtest by the runner."""

    types = DEVICE_TYPES

    def __init__(self, board: Any, ctx: BuildContext) -> None:
        self.board = board
        self.ctx = ctx

    def create(self, driver: str, props: dict[str, str], *, hotplugged: bool = False) -> Any:
        return create_device(self.board, self.ctx, driver, props, hotplugged=hotplugged)


# --------------------------------------------------------------------------- Python API


def add_virtio_blk_pci(machine: "Machine", image: Any, *, readonly: bool = False, drive_id: str = "d0",
                       ctx: BuildContext | None = None, **props: str) -> Any:
    """A ``virtio-blk-pci`` on ``machine`` without a command line: ``image`` is a path (raw)
    or a ``uvirt.backends.block.BlockBackend``; ``props`` are -device properties as strings
    (``serial="x"``, ``disable-legacy="on"``...).  Returns the PCI function."""
    from uvirt.backends.block import BlockBackend, Drive, RawFile
    ctx = ctx if ctx is not None else BuildContext()
    backend = image if isinstance(image, BlockBackend) else RawFile(str(image), read_only=readonly)
    backend.id = drive_id
    ctx.drives[drive_id] = Drive(drive_id, backend, f"file={image},if=none,id={drive_id}")
    machine.chardevs.append(backend)                        # closed with the machine
    return create_device(machine, ctx, "virtio-blk-pci", {"drive": drive_id, **props})


def add_virtio_serial_pci(machine: "Machine", *, ctx: BuildContext | None = None, **props: str) -> Any:
    """A ``virtio-serial-pci``; returns the PCI function (``fn.vdev`` is the VirtioSerial,
    pass the same ``ctx`` to ``add_virtio_serial_port``)."""
    ctx = ctx if ctx is not None else BuildContext()
    fn = create_device(machine, ctx, "virtio-serial-pci", {k.replace("_", "-") if k != "max_ports" else k: v
                                                           for k, v in props.items()})
    fn.build_ctx = ctx
    return fn


def add_virtio_serial_port(serial_fn: Any, chardev: Any = None, *, console: bool = True,
                           nr: int | None = None, name: str | None = None) -> Any:
    """A ``virtconsole`` (or ``virtserialport``) on the bus of ``serial_fn``, writing to
    ``chardev`` (a ``uvirt.backends.chardev.Chardev``); returns the port."""
    from uvirt.virtio.serial import VirtioSerialPort
    bus = serial_fn.vdev
    names = {p.name for p in bus.ports if p.name}
    return bus.plug(VirtioSerialPort(chardev=chardev, name=name, is_console=console), nr, names)
