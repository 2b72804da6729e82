"""virtio-gpu in 2D mode, device type 16, as QEMU 7.2 has it (virtio 1.2 §5.7;
hw/display/virtio-gpu.c, virtio-gpu-base.c, virtio-gpu-pci.c).  No virgl, no blob
resources: what a guest driver uses to put a picture on a screen through a queue.

PCI (virtio-gpu-pci: ``virtio_pci_force_virtio_1``, so modern-only whatever
``disable-legacy``/``disable-modern`` say): 1af4:1050 rev 1, class 0x0380, subsystem
1af4:1100; BAR1 MSI-X (3 vectors), BAR4 the modern registers; no legacy BAR0.

Feature bits: VIRTIO_GPU_F_EDID (1) while ``edid=on`` (the default); VIRGL (0) and
RESOURCE_BLOB (3) never (``blob=on`` needs udmabuf, which QEMU refuses without).

Device configuration (``struct virtio_gpu_config``, 16 bytes, little-endian)::

    0x00 le32 events_read   RO  VIRTIO_GPU_EVENT_DISPLAY (1) after a host display change
    0x04 le32 events_clear  WO  bits written clear events_read (QEMU virtio_gpu_set_config)
    0x08 le32 num_scanouts  RO  max_outputs
    0x0C le32 num_capsets   RO  0 (no virgl)

    As in QEMU, a write lands in the config shadow and ``set_config`` clears
    ``events_read & events_clear`` from the shadow; a read refreshes the shadow from the
    device (``get_config``), so events_clear reads back 0.

Queues: 0 controlq (64 entries), 1 cursorq (16).  Every control request starts with
``struct virtio_gpu_ctrl_hdr`` (24 bytes: le32 type, le32 flags, le64 fence_id, le32
ctx_id, u8 ring_idx, 3 pad) and gets one response, written to the device-writable part
of the chain (used length = bytes written).  With VIRTIO_GPU_FLAG_FENCE the response
carries the flag, fence_id and ctx_id back.

Commands (``COMMANDS``; QEMU ``virtio_gpu_simple_process_cmd``) and QEMU's answers:

=======================  ===========================================================
GET_DISPLAY_INFO 0x100   OK_DISPLAY_INFO: 16 x {rect, enabled, flags}; scanout 0
                         enabled at xres x yres (no display front end ever changes it)
RESOURCE_CREATE_2D 0x101 id 0 or in use: INVALID_RESOURCE_ID; format not in
                         ``FORMATS``: INVALID_PARAMETER; past max_hostmem: OUT_OF_MEMORY
RESOURCE_UNREF 0x102     unknown id: INVALID_RESOURCE_ID; disables its scanouts
SET_SCANOUT 0x103        scanout >= max_outputs: INVALID_SCANOUT_ID; resource 0 disables;
                         unknown id: INVALID_RESOURCE_ID; no backing: UNSPEC; rect
                         outside the resource or smaller than 16x16: INVALID_PARAMETER
RESOURCE_FLUSH 0x104     unknown id: INVALID_RESOURCE_ID; rect outside: INVALID_PARAMETER
TRANSFER_TO_HOST_2D 0x105 unknown id: INVALID_RESOURCE_ID; no backing: UNSPEC; rect
                         outside: INVALID_PARAMETER.  Copies backing -> resource row by
                         row (source offset truncated to 32 bits, as QEMU's uint32_t);
                         with x = y = offset = 0 and the full width it copies the WHOLE
                         resource whatever the height (QEMU's fast path)
ATTACH_BACKING 0x106     unknown id: INVALID_RESOURCE_ID; backing present, more than
                         16384 entries, entries past the request, an entry that cannot
                         be mapped (length 0, or outside RAM once the one bounce buffer
                         is taken): UNSPEC.  Zero entries "succeed" with no backing
DETACH_BACKING 0x107     unknown id: INVALID_RESOURCE_ID; no backing: UNSPEC
GET_EDID 0x10A           scanout >= max_outputs: INVALID_PARAMETER; else OK_EDID with
                         1024 bytes of ``uvirt.display.edid.generate`` (offered or not)
CREATE_BLOB, SET_SCANOUT_BLOB  INVALID_PARAMETER (blob off)
anything else            UNSPEC (capsets, 3D, cursor commands on the control queue)
=======================  ===========================================================

QEMU quirks kept: a request shorter than its header is never answered (it waits in
QEMU's fence queue, which 2D mode never drains); one shorter than its command struct
is answered OK_NODATA (the handler returns before setting an error).  Cursor requests
(UPDATE_CURSOR 0x300, MOVE_CURSOR 0x301; 56 bytes) are consumed with used length 0 and
no response; a bad scanout or a short request is ignored.

Backing outside RAM: QEMU's ``dma_memory_map`` gives non-RAM addresses its single
bounce buffer (at most a page, to the end of the section, read once at attach time,
held until detach); uvirt maps the backing through ``GuestMemory.map``
(``address_space_map``), whose one bounce buffer per guest memory is that one.

The host side: ``consoles[i].surface`` is what QMP ``screendump`` and
``-uvirt-screenshot`` save (a view into the resource, as QEMU's display surface is, or
QEMU's placeholder), ``cursors[i]`` the cursor state, ``stats`` the bytes copied and
display updates, ``on_update`` callbacks for each RESOURCE_FLUSH rectangle.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, ClassVar

from uvirt.display.edid import EdidInfo, generate as edid_generate
from uvirt.display.surface import Surface, placeholder
from uvirt.board.memory.guest import Mapping
from uvirt.errors import GuestMemoryError
from uvirt.virtio.device import VirtioDevice

VIRTIO_ID_GPU = 16
VIRTIO_GPU_MAX_SCANOUTS = 16
VIRTIO_GPU_F_EDID = 1 << 1
VIRTIO_GPU_EVENT_DISPLAY = 1
VIRTIO_GPU_FLAG_FENCE = 1
MAX_MAPPING_ENTRIES = 16384
EDID_BLOB_SIZE = 1024
CURSOR_SIZE = 64
CTRL_QUEUE, CURSOR_QUEUE = 0, 1
#: an allocation QEMU's calloc would not get on a machine like this one
HOST_ALLOC_LIMIT = 1 << 31

NOINIT_MSG = "Guest has not initialized the display (yet)."
INACTIVE_MSG = "Display output is not active."


class GpuCmd(IntEnum):
    GET_DISPLAY_INFO = 0x0100
    RESOURCE_CREATE_2D = 0x0101
    RESOURCE_UNREF = 0x0102
    SET_SCANOUT = 0x0103
    RESOURCE_FLUSH = 0x0104
    TRANSFER_TO_HOST_2D = 0x0105
    RESOURCE_ATTACH_BACKING = 0x0106
    RESOURCE_DETACH_BACKING = 0x0107
    GET_CAPSET_INFO = 0x0108
    GET_CAPSET = 0x0109
    GET_EDID = 0x010A
    RESOURCE_ASSIGN_UUID = 0x010B
    RESOURCE_CREATE_BLOB = 0x010C
    SET_SCANOUT_BLOB = 0x010D
    UPDATE_CURSOR = 0x0300
    MOVE_CURSOR = 0x0301


class GpuResp(IntEnum):
    OK_NODATA = 0x1100
    OK_DISPLAY_INFO = 0x1101
    OK_CAPSET_INFO = 0x1102
    OK_CAPSET = 0x1103
    OK_EDID = 0x1104
    ERR_UNSPEC = 0x1200
    ERR_OUT_OF_MEMORY = 0x1201
    ERR_INVALID_SCANOUT_ID = 0x1202
    ERR_INVALID_RESOURCE_ID = 0x1203
    ERR_INVALID_CONTEXT_ID = 0x1204
    ERR_INVALID_PARAMETER = 0x1205


class GpuConfig(IntEnum):
    """``struct virtio_gpu_config`` offsets."""

    EVENTS_READ = 0x00
    EVENTS_CLEAR = 0x04
    NUM_SCANOUTS = 0x08
    NUM_CAPSETS = 0x0C


class GpuFormat(IntEnum):
    """``enum virtio_gpu_formats``: the name is the byte order in memory."""

    B8G8R8A8_UNORM = 1
    B8G8R8X8_UNORM = 2
    A8R8G8B8_UNORM = 3
    X8R8G8B8_UNORM = 4
    R8G8B8A8_UNORM = 67
    X8B8G8R8_UNORM = 68
    A8B8G8R8_UNORM = 121
    R8G8B8X8_UNORM = 134


#: The formats QEMU accepts (``virtio_gpu_get_pixman_format``), each as the Pillow raw
#: mode that reads its R, G, B out of memory (alpha is dropped, as pixman's SRC
#: composite into r8g8b8 does for a screendump).  All are 32 bits per pixel.
FORMATS: dict[int, str] = {
    GpuFormat.B8G8R8A8_UNORM: "BGRX",
    GpuFormat.B8G8R8X8_UNORM: "BGRX",
    GpuFormat.A8R8G8B8_UNORM: "XRGB",
    GpuFormat.X8R8G8B8_UNORM: "XRGB",
    GpuFormat.R8G8B8A8_UNORM: "RGBX",
    GpuFormat.R8G8B8X8_UNORM: "RGBX",
    GpuFormat.X8B8G8R8_UNORM: "XBGR",
    GpuFormat.A8B8G8R8_UNORM: "XBGR",
}
BYTES_PP = 4

_HDR = struct.Struct("<IIQIB3x")          # struct virtio_gpu_ctrl_hdr, 24 bytes
_RECT = "4I"


class _Short(Exception):
    """The request is shorter than the command's struct (QEMU VIRTIO_GPU_FILL_CMD)."""


@dataclass
class Backing:
    """A resource's backing store: the iovec QEMU's ``virtio_gpu_create_mapping_iov``
    builds, one ``GuestMemory.map`` result a piece; RAM pieces are read when a transfer
    runs, the bounce piece holds what was read at attach time."""

    pieces: list[Mapping]
    starts: list[int] = field(default_factory=list)
    total: int = 0

    def __post_init__(self) -> None:
        pos = 0
        self.starts = []
        for m in self.pieces:
            self.starts.append(pos)
            pos += m.length
        self.total = pos

    def copy_into(self, mem, offset: int, size: int, dest: bytearray, at: int) -> int:
        """``iov_to_buf(iov, offset, dest + at, size)``: copies straight from guest RAM
        (one memcpy per piece, no intermediate bytes); fewer bytes when the iovec ends
        first.  Returns the bytes copied."""
        if offset >= self.total or size <= 0:
            return 0
        size = min(size, self.total - offset)
        i = bisect.bisect_right(self.starts, offset) - 1
        done = 0
        while done < size and i < len(self.pieces):
            m = self.pieces[i]
            skip = offset + done - self.starts[i]
            take = min(m.length - skip, size - done)
            dest[at + done:at + done + take] = (m.buffer[skip:skip + take] if m.buffer is not None
                                                else _ram_view(mem, m.addr + skip, take))
            done += take
            i += 1
        return done


def _ram_view(mem, addr: int, size: int):
    """A view of guest RAM (what ``dma_memory_map`` hands QEMU's device): the RAM's own
    bytes (``GuestMemory.ram_window``) when the range lies in one RAM piece, else a copy
    through ``GuestMemory.read``."""
    window = mem.ram_window(addr, size)
    if window is not None:
        o = addr - window.delta
        return window.view[o:o + size]
    return mem.read(addr, size)


@dataclass
class Resource:
    """``struct virtio_gpu_simple_resource`` (2D): a host-side image the guest copies into."""

    resource_id: int
    width: int
    height: int
    format: int
    stride: int
    image: bytearray
    hostmem: int
    backing: Backing | None = None
    scanout_bitmask: int = 0
    #: restored in place (uvirt/cpu/snapshot.py): ``image`` is refilled, so a console
    #: surface that shows it keeps showing the same buffer
    snapshot_state: ClassVar[tuple[str, ...]] = ("resource_id", "width", "height", "format", "stride",
                                                 "image", "hostmem", "backing", "scanout_bitmask")


@dataclass
class Scanout:
    """``struct virtio_gpu_scanout``: which resource, and which rectangle of it."""

    resource_id: int = 0
    width: int = 0
    height: int = 0
    x: int = 0
    y: int = 0
    snapshot_state: ClassVar[tuple[str, ...]] = ("resource_id", "width", "height", "x", "y")


@dataclass
class Cursor:
    """The cursor QEMU keeps per scanout (``s->cursor`` and ``current_cursor``)."""

    resource_id: int = 0
    hot_x: int = 0
    hot_y: int = 0
    x: int = 0
    y: int = 0
    visible: bool = False
    image: bytes | None = None        # 64x64 pixels, the resource's bytes
    snapshot_state: ClassVar[tuple[str, ...]] = ("resource_id", "hot_x", "hot_y", "x", "y", "visible",
                                                 "image")


@dataclass
class Console:
    """What QEMU's QemuConsole holds for a scanout: the current display surface."""

    surface: Surface
    #: the surface object itself is kept (never changed once made, it may show a
    #: resource's image buffer)
    snapshot_state: ClassVar[tuple[str, ...]] = ("surface",)


@dataclass
class GpuStats:
    """Host-side counters for the measurement (benchmarks/bench_gpu_vs_fb.py)."""

    commands: int = 0
    bytes_copied: int = 0          # backing -> resource (TRANSFER_TO_HOST_2D)
    flushes: int = 0               # RESOURCE_FLUSH requests that reached a scanout
    cursor_requests: int = 0


def hostmem_of(width: int, height: int) -> int:
    """QEMU ``calc_image_hostmem`` with its C types: a 32-bit stride computed in
    unsigned arithmetic, stored in an ``int``, multiplied by ``height`` as ``uint32_t``."""
    stride = ((((width * 32) & 0xFFFFFFFF) + 0x1F) & 0xFFFFFFFF) >> 5
    stride = (stride * 4) & 0xFFFFFFFF
    return (height * stride) & 0xFFFFFFFF


def _pixman_can_create(width: int, height: int) -> bool:
    """``pixman_image_create_bits(NULL)`` succeeds: nothing is allocated when either side
    is 0; otherwise width * 32 bits must fit an int, the (int) height must not be
    negative, and the calloc of height * stride must be granted."""
    if width == 0 or height == 0:
        return True
    if width >= 0x7FFFFFFF // 32 or height >= 0x80000000:
        return False
    return height * width * BYTES_PP <= HOST_ALLOC_LIMIT


class VirtioGpu(VirtioDevice):
    device_id = VIRTIO_ID_GPU
    name = "virtio-gpu"
    queue_sizes = (64, 16)
    config_len = 16
    #: what a snapshot holds beyond the virtio core (uvirt/cpu/snapshot.py); the
    #: properties (max_outputs, xres, yres, edid, max_hostmem), the host-side ``stats``
    #: and the ``on_update`` listeners are not guest state
    snapshot_state = ("events_read", "_config_shadow", "resources", "hostmem", "enable",
                      "scanouts", "cursors", "consoles", "unanswered")

    def __init__(self, *, max_outputs: int = 1, xres: int = 1280, yres: int = 800,
                 edid: bool = True, max_hostmem: int = 256 << 20) -> None:
        super().__init__()
        if max_outputs > VIRTIO_GPU_MAX_SCANOUTS:
            raise ValueError(f"invalid max_outputs > {VIRTIO_GPU_MAX_SCANOUTS}")
        self.max_outputs = max_outputs
        self.xres, self.yres = xres, yres
        self.edid = edid
        self.max_hostmem = max_hostmem
        if edid:
            self.host_features |= VIRTIO_GPU_F_EDID
        self.events_read = 0
        self._config_shadow = bytearray(self.config_len)
        self.resources: dict[int, Resource] = {}
        self.hostmem = 0
        self.enable = 0
        self.scanouts = [Scanout() for _ in range(max_outputs)]
        self.cursors = [Cursor() for _ in range(max_outputs)]
        self.consoles = [Console(placeholder(640, 480, NOINIT_MSG)) for _ in range(max_outputs)]
        #: requests QEMU never answers (short header): held in flight until reset
        self.unanswered: list = []
        self.stats = GpuStats()
        self.on_update: list[Callable[[int, tuple[int, int, int, int]], None]] = []

    # ------------------------------------------------------------------ virtio hooks
    def config_bytes(self) -> bytes:
        """``virtio_gpu_get_config``: the device's config copied over the shadow."""
        for field, value in ((GpuConfig.EVENTS_READ, self.events_read), (GpuConfig.EVENTS_CLEAR, 0),
                             (GpuConfig.NUM_SCANOUTS, self.max_outputs), (GpuConfig.NUM_CAPSETS, 0)):
            struct.pack_into("<I", self._config_shadow, field, value)
        return bytes(self._config_shadow)

    def config_write(self, offset: int, data: bytes) -> None:
        """``virtio_gpu_set_config``: the write lands in the shadow; events_clear there
        clears events_read."""
        self._config_shadow[offset:offset + len(data)] = data
        clear = struct.unpack_from("<I", self._config_shadow, GpuConfig.EVENTS_CLEAR)[0]
        if clear:
            self.events_read &= ~clear

    def device_reset(self) -> None:
        """``virtio_gpu_reset``: every resource destroyed (their scanouts disabled), the
        pending requests dropped, then ``virtio_gpu_base_reset``."""
        for res in list(self.resources.values()):
            self._destroy(res)
        self.unanswered.clear()
        self.enable = 0
        for s in self.scanouts:
            s.resource_id = s.width = s.height = s.x = s.y = 0

    def handle_output(self, index: int) -> None:
        if index == CTRL_QUEUE:
            self.handle_ctrl()
        elif index == CURSOR_QUEUE:
            self.handle_cursor()

    # ------------------------------------------------------------------ queues
    def handle_ctrl(self) -> None:
        """``virtio_gpu_handle_ctrl``: pop every request, then process them in order
        (a broken chain ends the popping; what was popped before it is still served)."""
        q = self.queues[CTRL_QUEUE]
        if not q.ready:
            return
        for elem in list(self.popped(CTRL_QUEUE)):
            self._process(elem)

    def handle_cursor(self) -> None:
        """``virtio_gpu_handle_cursor``: each request is consumed with length 0."""
        q = self.queues[CURSOR_QUEUE]
        if not q.ready:
            return
        for elem in self.popped(CURSOR_QUEUE):
            raw = elem.read(self.mem, 56)
            self.stats.cursor_requests += 1
            if len(raw) != 56:
                self.transport.guest_error("gpu_cursor_size", f"virtio-gpu: cursor size incorrect "
                                           f"{len(raw)} vs 56")
            else:
                self._update_cursor(raw)
            self._push(q, elem, 0)
            self.notify(CURSOR_QUEUE)

    def _push(self, q, elem, length: int) -> None:
        if not self.broken:             # QEMU virtqueue_flush does nothing on a broken device
            q.push(elem, length)

    def _process(self, elem) -> None:
        """``virtio_gpu_simple_process_cmd`` and ``virtio_gpu_ctrl_response``."""
        self.stats.commands += 1
        raw = elem.read(self.mem, _HDR.size)
        if len(raw) < _HDR.size:
            self.transport.guest_error("gpu_cmd_size", f"virtio-gpu: command size incorrect "
                                       f"{len(raw)} vs {_HDR.size} (never answered, as QEMU)")
            self.unanswered.append(elem)
            return
        ctype, flags, fence_id, ctx_id, _ring = _HDR.unpack(raw)
        entry = COMMANDS.get(ctype)
        try:
            result = entry(self, elem) if entry is not None else GpuResp.ERR_UNSPEC
        except _Short as e:
            self.transport.guest_error("gpu_cmd_size", f"virtio-gpu: {e}")
            result = None
        if result is None:
            result = GpuResp.OK_NODATA
        if isinstance(result, int):
            if result >= GpuResp.ERR_UNSPEC:
                self.transport.guest_error("gpu_cmd_error", f"virtio-gpu: command 0x{ctype:x} -> "
                                           f"{GpuResp(result).name}")
            resp = bytearray(_HDR.pack(result, 0, 0, 0, 0))
        else:
            resp = bytearray(result)
        if flags & VIRTIO_GPU_FLAG_FENCE:
            rflags = int.from_bytes(resp[4:8], "little") | VIRTIO_GPU_FLAG_FENCE
            struct.pack_into("<IQI", resp, 4, rflags, fence_id, ctx_id)
        n = elem.write(self.mem, bytes(resp))
        if n != len(resp):
            self.transport.guest_error("gpu_resp_size", f"virtio-gpu: response size incorrect "
                                       f"{n} vs {len(resp)}")
        q = self.queues[CTRL_QUEUE]
        self._push(q, elem, n)
        self.notify(CTRL_QUEUE)

    def _fill(self, elem, fmt: str, name: str) -> tuple:
        """VIRTIO_GPU_FILL_CMD: the struct after the header, or ``_Short``."""
        st = struct.Struct("<" + fmt)
        raw = elem.read(self.mem, _HDR.size + st.size)
        if len(raw) != _HDR.size + st.size:
            raise _Short(f"{name}: command size incorrect {len(raw)} vs {_HDR.size + st.size}")
        return st.unpack_from(raw, _HDR.size)

    def _bad(self, kind: str, detail: str, resp: int) -> int:
        self.transport.guest_error(kind, f"virtio-gpu: {detail}")
        return resp

    def _find_check(self, rid: int, require_backing: bool, caller: str) -> Resource | int:
        """``virtio_gpu_find_check_resource``: the resource, or the error code."""
        res = self.resources.get(rid)
        if res is None:
            return self._bad("gpu_invalid_resource", f"{caller}: invalid resource specified {rid}",
                             GpuResp.ERR_INVALID_RESOURCE_ID)
        if require_backing and res.backing is None:
            return self._bad("gpu_no_backing", f"{caller}: no backing storage {rid}", GpuResp.ERR_UNSPEC)
        return res

    # ------------------------------------------------------------------ commands
    def cmd_get_display_info(self, elem) -> bytes:
        out = bytearray(_HDR.pack(GpuResp.OK_DISPLAY_INFO, 0, 0, 0, 0)) + bytes(24 * VIRTIO_GPU_MAX_SCANOUTS)
        # virtio_gpu_base_fill_display_info: only scanout 0 is enabled (enabled_output_bitmask
        # = 1 at realize; only a display front end's ui_info changes it)
        if self.max_outputs:
            struct.pack_into("<4II", out, _HDR.size, 0, 0, self.xres, self.yres, 1)
        return bytes(out)

    def cmd_get_edid(self, elem) -> bytes | int:
        scanout, _pad = self._fill(elem, "2I", "virtio_gpu_get_edid")
        if scanout >= self.max_outputs:
            return GpuResp.ERR_INVALID_PARAMETER
        info = EdidInfo(prefx=self.xres if scanout == 0 else 0, prefy=self.yres if scanout == 0 else 0)
        return (_HDR.pack(GpuResp.OK_EDID, 0, 0, 0, 0) + struct.pack("<II", EDID_BLOB_SIZE, 0)
                + edid_generate(EDID_BLOB_SIZE, info))

    def cmd_resource_create_2d(self, elem) -> int | None:
        rid, fmt, width, height = self._fill(elem, "4I", "virtio_gpu_resource_create_2d")
        if rid == 0:
            return self._bad("gpu_resource_id_zero", "resource id 0 is not allowed",
                             GpuResp.ERR_INVALID_RESOURCE_ID)
        if rid in self.resources:
            return self._bad("gpu_resource_exists", f"resource already exists {rid}",
                             GpuResp.ERR_INVALID_RESOURCE_ID)
        if fmt not in FORMATS:
            return self._bad("gpu_bad_format", f"host couldn't handle guest format {fmt}",
                             GpuResp.ERR_INVALID_PARAMETER)
        hostmem = hostmem_of(width, height)
        if not (hostmem + self.hostmem < self.max_hostmem and _pixman_can_create(width, height)):
            return self._bad("gpu_out_of_memory", f"resource creation failed {rid} {width} {height}",
                             GpuResp.ERR_OUT_OF_MEMORY)
        stride = width * BYTES_PP
        self.resources[rid] = Resource(rid, width, height, fmt, stride, bytearray(stride * height), hostmem)
        self.hostmem += hostmem
        return None

    def cmd_resource_unref(self, elem) -> int | None:
        rid, _pad = self._fill(elem, "2I", "virtio_gpu_resource_unref")
        res = self.resources.get(rid)
        if res is None:
            return self._bad("gpu_invalid_resource", f"virtio_gpu_resource_unref: illegal resource "
                             f"specified {rid}", GpuResp.ERR_INVALID_RESOURCE_ID)
        self._destroy(res)
        return None

    def cmd_set_scanout(self, elem) -> int | None:
        x, y, w, h, scanout_id, rid = self._fill(elem, _RECT + "2I", "virtio_gpu_set_scanout")
        if scanout_id >= self.max_outputs:
            return self._bad("gpu_bad_scanout", f"illegal scanout id specified {scanout_id}",
                             GpuResp.ERR_INVALID_SCANOUT_ID)
        if rid == 0:
            self._disable_scanout(scanout_id)
            return None
        res = self._find_check(rid, True, "virtio_gpu_set_scanout")
        if isinstance(res, int):
            return res
        if (x > res.width or y > res.height or w < 16 or h < 16 or w > res.width or h > res.height
                or x + w > res.width or y + h > res.height):
            return self._bad("gpu_bad_scanout_rect", f"illegal scanout {scanout_id} bounds for resource "
                             f"{rid}, rect ({x},{y})+{w},{h}, fb {res.width} {res.height}",
                             GpuResp.ERR_INVALID_PARAMETER)
        self.enable = 1
        offset = x * BYTES_PP + y * res.stride
        con = self.consoles[scanout_id]
        s = con.surface
        if not (s.buffer is res.image and s.offset == offset and s.width == w and s.height == h):
            con.surface = Surface(w, h, res.stride, FORMATS[res.format], res.image, offset)
        old = self.resources.get(self.scanouts[scanout_id].resource_id)
        if old is not None:
            old.scanout_bitmask &= ~(1 << scanout_id)
        res.scanout_bitmask |= 1 << scanout_id
        sc = self.scanouts[scanout_id]
        sc.resource_id, sc.x, sc.y, sc.width, sc.height = rid, x, y, w, h
        return None

    def cmd_resource_flush(self, elem) -> int | None:
        x, y, w, h, rid, _pad = self._fill(elem, _RECT + "2I", "virtio_gpu_resource_flush")
        res = self._find_check(rid, False, "virtio_gpu_resource_flush")
        if isinstance(res, int):
            return res
        if (x > res.width or y > res.height or w > res.width or h > res.height
                or x + w > res.width or y + h > res.height):
            return self._bad("gpu_bad_flush_rect", f"flush bounds outside resource bounds for resource "
                             f"{rid}: {x} {y} {w} {h} vs {res.width} {res.height}",
                             GpuResp.ERR_INVALID_PARAMETER)
        for i, sc in enumerate(self.scanouts):
            if not res.scanout_bitmask & (1 << i):
                continue
            # pixman_region_intersect of the flush rect and the scanout's, translated
            x1, y1 = max(x, sc.x), max(y, sc.y)
            x2, y2 = min(x + w, sc.x + sc.width), min(y + h, sc.y + sc.height)
            rect = (x1 - sc.x, y1 - sc.y, x2 - x1, y2 - y1) if x2 > x1 and y2 > y1 else (0, 0, 0, 0)
            self.stats.flushes += 1
            for cb in self.on_update:
                cb(i, rect)
        return None

    def cmd_transfer_to_host_2d(self, elem) -> int | None:
        x, y, w, h, offset, rid, _pad = self._fill(elem, _RECT + "QII", "virtio_gpu_transfer_to_host_2d")
        res = self._find_check(rid, True, "virtio_gpu_transfer_to_host_2d")
        if isinstance(res, int):
            return res
        if (x > res.width or y > res.height or w > res.width or h > res.height
                or x + w > res.width or y + h > res.height):
            return self._bad("gpu_bad_transfer_rect", f"transfer bounds outside resource bounds for "
                             f"resource {rid}: {x} {y} {w} {h} vs {res.width} {res.height}",
                             GpuResp.ERR_INVALID_PARAMETER)
        try:
            self._transfer(res, x, y, w, h, offset)
        except GuestMemoryError as e:
            # QEMU mapped the backing at attach time and keeps the host pointer; RAM does
            # not move on uvirt's pc either, so this is a safety net, not a behaviour
            self.transport.guest_error("gpu_backing_unmappable", f"virtio-gpu: transfer: {e}")
        return None

    def _transfer(self, res: Resource, x: int, y: int, w: int, h: int, offset: int) -> None:
        """The copy of ``virtio_gpu_transfer_to_host_2d``: row by row, or the whole
        resource in one go (QEMU's fast path, whatever ``h`` says)."""
        stride, img, backing = res.stride, res.image, res.backing
        if offset or x or y or w != res.width:
            row = w * BYTES_PP
            for line in range(h):
                src = (offset + stride * line) & 0xFFFFFFFF        # uint32_t src_offset
                dst = (y + line) * stride + x * BYTES_PP
                if src > backing.total:
                    # QEMU 7.2 aborts here (iov_to_buf_full: assertion `offset == 0'): a
                    # guest-triggered host crash.  uvirt copies nothing and records it.
                    self.transport.guest_error("gpu_transfer_past_backing", f"virtio-gpu: transfer "
                                               f"source offset {src} past the backing's {backing.total} "
                                               f"bytes (QEMU 7.2 aborts)")
                    continue
                self.stats.bytes_copied += backing.copy_into(self.mem, src, row, img, dst)
        else:
            self.stats.bytes_copied += backing.copy_into(self.mem, 0, stride * res.height, img, 0)

    def cmd_resource_attach_backing(self, elem) -> int | None:
        rid, nr_entries = self._fill(elem, "2I", "virtio_gpu_resource_attach_backing")
        res = self.resources.get(rid)
        if res is None:
            return self._bad("gpu_invalid_resource", f"virtio_gpu_resource_attach_backing: illegal "
                             f"resource specified {rid}", GpuResp.ERR_INVALID_RESOURCE_ID)
        if res.backing is not None:
            return self._bad("gpu_backing_exists", f"resource {rid} already has backing",
                             GpuResp.ERR_UNSPEC)
        pieces = self._create_mapping(elem, nr_entries, _HDR.size + 8)
        if pieces is None:
            return GpuResp.ERR_UNSPEC
        res.backing = Backing(pieces) if pieces else None      # no entries: iov stays NULL
        return None

    def cmd_resource_detach_backing(self, elem) -> int | None:
        rid, _pad = self._fill(elem, "2I", "virtio_gpu_resource_detach_backing")
        res = self._find_check(rid, True, "virtio_gpu_resource_detach_backing")
        if isinstance(res, int):
            return res
        self._cleanup_mapping(res)
        return None

    def cmd_blob_disabled(self, elem) -> int:
        return GpuResp.ERR_INVALID_PARAMETER

    # ------------------------------------------------------------------ helpers
    def _create_mapping(self, elem, nr_entries: int, offset: int) -> list | None:
        """``virtio_gpu_create_mapping_iov``: None where QEMU returns -1."""
        if nr_entries > MAX_MAPPING_ENTRIES:
            self._bad("gpu_too_many_entries", f"nr_entries is too big ({nr_entries} > "
                      f"{MAX_MAPPING_ENTRIES})", 0)
            return None
        esize = 16 * nr_entries
        raw = elem.read(self.mem, offset + esize)[offset:]
        if len(raw) != esize:
            self._bad("gpu_entries_size", f"command data size incorrect {len(raw)} vs {esize}", 0)
            return None
        pieces: list[Mapping] = []
        for e in range(nr_entries):
            addr, length, _pad = struct.unpack_from("<QII", raw, 16 * e)
            while True:
                # dma_memory_map for reading: RAM up to the end of its region; anything
                # else through the one bounce buffer (at most a page, read now); None
                # for 0 bytes or while the bounce is taken
                got = self.mem.map(addr, length, False)
                if got is None:
                    self._bad("gpu_backing_unmappable", f"failed to map MMIO memory for element {e}", 0)
                    self._release(pieces)
                    return None
                pieces.append(got)
                addr += got.length
                length -= got.length
                if length <= 0:
                    break
        return pieces

    def _release(self, pieces: list[Mapping]) -> None:
        """``dma_memory_unmap`` of each piece (nothing was written: the bounce is freed)."""
        for m in pieces:
            self.mem.unmap(m, 0)

    def _cleanup_mapping(self, res: Resource) -> None:
        if res.backing is not None:
            self._release(res.backing.pieces)
        res.backing = None

    def _disable_scanout(self, scanout_id: int) -> None:
        """``virtio_gpu_disable_scanout``: QEMU's "not active" placeholder, the old size."""
        sc = self.scanouts[scanout_id]
        if sc.resource_id == 0:
            return
        res = self.resources.get(sc.resource_id)
        if res is not None:
            res.scanout_bitmask &= ~(1 << scanout_id)
        old = self.consoles[scanout_id].surface
        self.consoles[scanout_id].surface = placeholder(old.width, old.height, INACTIVE_MSG)
        sc.resource_id = sc.width = sc.height = 0

    def _destroy(self, res: Resource) -> None:
        """``virtio_gpu_resource_destroy``."""
        for i in range(self.max_outputs):
            if res.scanout_bitmask & (1 << i):
                self._disable_scanout(i)
        self._cleanup_mapping(res)
        del self.resources[res.resource_id]
        self.hostmem -= res.hostmem

    def _update_cursor(self, raw: bytes) -> None:
        """``update_cursor``."""
        ctype = struct.unpack_from("<I", raw, 0)[0]
        scanout_id, px, py, _pad, rid, hot_x, hot_y = struct.unpack_from("<7I", raw, 24)
        if scanout_id >= self.max_outputs:
            return
        c = self.cursors[scanout_id]
        if ctype != GpuCmd.MOVE_CURSOR:
            c.hot_x, c.hot_y = hot_x, hot_y
            if rid > 0:
                res = self.resources.get(rid)
                if res is None:
                    self.transport.guest_error("gpu_invalid_resource", f"virtio-gpu: "
                                               f"update_cursor_data: invalid resource specified {rid}")
                elif res.width == CURSOR_SIZE and res.height == CURSOR_SIZE:
                    c.image = bytes(res.image[:CURSOR_SIZE * CURSOR_SIZE * 4])
            c.resource_id = rid
        c.x, c.y = px, py
        c.visible = rid != 0

    # ------------------------------------------------------------------ host side
    @property
    def heads(self) -> int:
        return self.max_outputs

    def surface(self, head: int = 0) -> Surface:
        return self.consoles[head].surface


#: command type -> handler (QEMU virtio_gpu_simple_process_cmd's switch); others: UNSPEC
COMMANDS: dict[int, Callable] = {
    GpuCmd.GET_DISPLAY_INFO: VirtioGpu.cmd_get_display_info,
    GpuCmd.GET_EDID: VirtioGpu.cmd_get_edid,
    GpuCmd.RESOURCE_CREATE_2D: VirtioGpu.cmd_resource_create_2d,
    GpuCmd.RESOURCE_CREATE_BLOB: VirtioGpu.cmd_blob_disabled,
    GpuCmd.RESOURCE_UNREF: VirtioGpu.cmd_resource_unref,
    GpuCmd.RESOURCE_FLUSH: VirtioGpu.cmd_resource_flush,
    GpuCmd.TRANSFER_TO_HOST_2D: VirtioGpu.cmd_transfer_to_host_2d,
    GpuCmd.SET_SCANOUT: VirtioGpu.cmd_set_scanout,
    GpuCmd.SET_SCANOUT_BLOB: VirtioGpu.cmd_blob_disabled,
    GpuCmd.RESOURCE_ATTACH_BACKING: VirtioGpu.cmd_resource_attach_backing,
    GpuCmd.RESOURCE_DETACH_BACKING: VirtioGpu.cmd_resource_detach_backing,
}
