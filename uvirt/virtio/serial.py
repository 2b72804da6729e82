"""virtio-serial (virtio console), device type 3 (virtio 1.2 §5.3; QEMU 7.2
hw/char/virtio-serial-bus.c and hw/char/virtio-console.c).

Measured on QEMU 7.2 (tests/guest/test_virtio_blk_serial.py):

* Features: EMERG_WRITE (bit 2, ``emergency-write=on``) and MULTIPORT (bit 1, when
  ``max_ports`` > 1); legacy HOST_FEATURES 0x79000006, modern [0] 0x30000006, [1] 0x101.
* Config (12 bytes; 8 with ``emergency-write=off``): le16 cols 0, le16 rows 0, le32
  max_nr_ports (``max_ports``, default 31), le32 emerg_wr (reads 0).  Reads past the end
  return all ones.
* Queues: 0/1 port 0 rx/tx (128 entries), 2/3 control rx/tx (32), then rx/tx per port
  1..max_ports-1 (128): 2 * max_ports + 2 queues in all.
* MSI-X vectors: 2 (``vectors`` default), BAR0 0x40 bytes.

Ports (``VirtioSerialPort``): ``virtconsole`` (is_console) and ``virtserialport``, each on a
chardev.  The first console without ``nr`` takes id 0; others the first free id from 1
(id 0 is reserved), with QEMU's errors for duplicates, range and names.  A port with a
chardev is host-connected from the start (QEMU sends PORT_OPEN then, and it is lost as
no queue is ready).

Control protocol (guest -> device on queue 3; device -> guest on queue 2), ``struct
virtio_console_control {le32 id; le16 event; le16 value}``:

* DEVICE_READY(1): the device sends PORT_ADD(id, 1) for every port, in plug order.
  DEVICE_READY(0) only logs "Guest failure in adding device".
* PORT_READY(id, 1): CONSOLE_PORT(id, 1) if a console, PORT_NAME(id, 1) + name + NUL if
  named, PORT_OPEN(id, 1) if host-connected.  PORT_READY(id, 0) logs only.
* PORT_OPEN(id, v): records guest_connected.  Unknown port id: logged, ignored.
  Messages shorter than 8 bytes are ignored.
* Every control message the device sends needs a buffer on queue 2; without one (or
  before the queue has rings) it is dropped, as QEMU drops it.  The used length is the
  message length even when the buffer was shorter (QEMU ``send_control_msg``).

Output: a transmit queue's buffers go to the port's chardev in order and are returned
with used length 0; a queue with no port (or a port not host-connected) is drained and
discarded.  A write of a nonzero value to emerg_wr outputs its low byte on the first
host-connected console and clears the field.  Requests are taken whatever the status
(QEMU does not wait for DRIVER_OK).  Input from the chardev to the guest is not
modelled (uvirt's chardevs are output-only): receive queues are never filled.
Requests run as device work after the kick (uvirt/board/dma.py), output in pieces.  Setting DRIVER_OK kicks every queue that
has rings (QEMU starts its ioeventfds then and "kicks right away"), so the transmit and
control queues are processed and notified once: ISR reads 1 right after DRIVER_OK.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from uvirt.errors import UvirtError
from uvirt.board.dma import PIECE
from uvirt.virtio.blk import driver_ok_kick
from uvirt.virtio.device import Status, VirtioDevice

CONSOLE_F_SIZE = 1 << 0
CONSOLE_F_MULTIPORT = 1 << 1
CONSOLE_F_EMERG_WRITE = 1 << 2

DEVICE_READY, PORT_ADD, PORT_REMOVE, PORT_READY = 0, 1, 2, 3
CONSOLE_PORT, RESIZE, PORT_OPEN, PORT_NAME = 4, 5, 6, 7
CONTROL_LEN = 8
BAD_ID = 0xFFFFFFFF
MAX_SUPPORTED_PORTS = 1024 // 2 - 1            # VIRTIO_QUEUE_MAX / 2 - 1
CONTROL_RX, CONTROL_TX = 2, 3


class VirtioSerialError(UvirtError):
    """A virtio-serial device or port that cannot be created, in QEMU's words (its
    realize errors) without the option's location: the -device builder adds it."""


@dataclass
class VirtioSerialPort:
    """A port on a virtio-serial bus (QEMU ``VirtIOSerialPort``)."""

    chardev: Any = None
    name: str | None = None
    is_console: bool = False
    id: int = BAD_ID
    host_connected: bool = False
    guest_connected: bool = False
    bus: Any = None                        # the VirtioSerial it is plugged into

    def have_data(self, data: bytes) -> None:
        """QEMU ``flush_buf``: the guest's bytes to the chardev (a console without one
        swallows them)."""
        if self.chardev is not None:
            self.chardev.write(bytes(data))


def rx_queue(port_id: int) -> int:
    return 0 if port_id == 0 else 2 * port_id + 2


class VirtioSerial(VirtioDevice):
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("_config", "ioeventfd_started")

    device_id = 3
    name = "virtio-serial"
    config_len = 12
    auto_named = False              # bus named virtio-serial-bus.N (no id on the PCI device)
    ioeventfd = True                # the ``ioeventfd`` property: DRIVER_OK kicks every queue
    ioeventfd_started = False

    def __init__(self, *, max_ports: int = 31, emergency_write: bool = True,
                 bus_name: str = "virtio-serial-bus.0") -> None:
        if max_ports == 0:
            raise VirtioSerialError("Maximum number of serial ports not specified")
        if max_ports > MAX_SUPPORTED_PORTS:
            raise VirtioSerialError(f"maximum ports supported: {MAX_SUPPORTED_PORTS}")
        self.device_features = CONSOLE_F_EMERG_WRITE if emergency_write else 0
        super().__init__()
        self.max_ports = max_ports
        self.bus_name = bus_name
        self.queue_sizes = (128, 128, 32, 32) + (128, 128) * (max_ports - 1)
        self.config_len = 12 if emergency_write else 8
        self.ports: list[VirtioSerialPort] = []
        self._config = bytearray(self.config_len)

    # ------------------------------------------------------------------ ports
    def port(self, port_id: int) -> VirtioSerialPort | None:
        for p in self.ports:
            if p.id == port_id:
                return p
        return None

    def _free_id(self) -> int:
        """QEMU ``find_free_port_id``: the first clear bit of a map of 32-bit words with
        bit 0 reserved, which may lie past max_ports (then the range check refuses it)."""
        used = {p.id for p in self.ports} | {0}
        for i in range(((self.max_ports + 31) // 32) * 32):
            if i not in used:
                return i
        return BAD_ID

    def plug(self, port: VirtioSerialPort, nr: int | None = None,
             all_names: set[str] | None = None) -> VirtioSerialPort:
        """QEMU ``virtser_port_device_realize`` + plug, with its errors."""
        port.id = BAD_ID if nr is None else nr
        plugging_port0 = port.is_console and self.port(0) is None
        if self.port(port.id) is not None:
            raise VirtioSerialError(f"virtio-serial-bus: A port already exists at id {port.id}")
        names = all_names if all_names is not None else {p.name for p in self.ports if p.name}
        if port.name is not None and port.name in names:
            raise VirtioSerialError(f"virtio-serial-bus: A port already exists by name {port.name}")
        if port.id == BAD_ID:
            if plugging_port0:
                port.id = 0
            else:
                port.id = self._free_id()
                if port.id == BAD_ID:
                    raise VirtioSerialError("virtio-serial-bus: Maximum port limit for this device reached")
        if port.id >= self.max_ports:
            raise VirtioSerialError(f"virtio-serial-bus: Out-of-range port id specified, max. allowed: "
                              f"{self.max_ports - 1}")
        if port.id == 0 and not port.is_console:
            raise VirtioSerialError("Port number 0 on virtio-serial devices reserved for virtconsole "
                              "devices for backward compatibility.")
        if port.chardev is not None:
            port.host_connected = True     # console: virtio_serial_open; port: CHR_EVENT_OPENED
        self.ports.append(port)
        port.bus = self
        if all_names is not None and port.name:
            all_names.add(port.name)
        # virtser_port_device_plug: PORT_ADD and a config notification (both lost at
        # start-up, when no queue is ready and DRIVER_OK is clear; seen after hotplug)
        if self.queues:
            self.send_control_event(port.id, PORT_ADD, 1)
            self.notify_config()
        return port

    def unplug(self, port: VirtioSerialPort) -> None:
        """QEMU ``remove_port`` + unrealize: drain its transmit queue, PORT_REMOVE."""
        if port not in self.ports:
            return
        tx = rx_queue(port.id) + 1
        if tx < len(self.queues):
            self._discard(tx)
        self.send_control_event(port.id, PORT_REMOVE, 1)
        self.ports.remove(port)

    def _port_by_vq(self, index: int) -> VirtioSerialPort | None:
        if index in (CONTROL_RX, CONTROL_TX):
            return None
        pid = index // 2 if index < 2 else index // 2 - 1
        return self.port(pid)

    # ------------------------------------------------------------------ hooks
    def get_features(self, features: int) -> int:
        if self.max_ports > 1:
            features |= CONSOLE_F_MULTIPORT
        return features

    def config_bytes(self) -> bytes:
        """QEMU ``get_config``: cols and rows 0, max_nr_ports; emerg_wr as last stored."""
        cfg = self._config
        struct.pack_into("<HHI", cfg, 0, 0, 0, self.max_ports)
        return bytes(cfg)

    def config_write(self, offset: int, data: bytes) -> None:
        """QEMU ``set_config``: a nonzero emerg_wr writes its low byte to the first
        host-connected console, and is cleared."""
        cfg = self._config
        cfg[offset:offset + len(data)] = data
        if not self.host_features & CONSOLE_F_EMERG_WRITE or len(cfg) < 12:
            return
        value = int.from_bytes(cfg[8:12], "little")
        if not value:
            return
        cfg[8:12] = bytes(4)
        port = next((p for p in self.ports if p.is_console and p.host_connected), None)
        if port is not None:
            port.have_data(bytes([value & 0xFF]))

    def set_status_hook(self, status: int) -> None:
        """QEMU ``set_status``: a guest without MULTIPORT cannot say it opened port 0;
        leaving DRIVER_OK closes every port on the guest side.  Then the DRIVER_OK kick."""
        port0 = self.port(0)
        if port0 is not None and not self.negotiated(CONSOLE_F_MULTIPORT) and status & Status.DRIVER_OK:
            port0.guest_connected = True
        if not status & Status.DRIVER_OK:
            for p in self.ports:
                p.guest_connected = False
        driver_ok_kick(self, status)

    def device_reset(self) -> None:
        for p in self.ports:
            p.guest_connected = False
        self.ioeventfd_started = False

    def handle_output(self, index: int):
        if self.disabled:
            return None
        if index == CONTROL_TX:
            self._control_out()
        elif index == CONTROL_RX or index % 2 == 0:
            return None                     # control_in / handle_input: nothing to do
        else:
            port = self._port_by_vq(index)
            if port is None or not port.host_connected:
                self._discard(index)
            else:
                return self._flush(index, port)
        return None

    # ------------------------------------------------------------------ queues
    def _discard(self, index: int) -> None:
        """QEMU ``discard_vq_data``."""
        q = self.queues[index]
        if not q.ready:
            return
        for elem in self.popped(index):
            q.push(elem, 0)
        self.notify(index)

    def _flush(self, index: int, port: VirtioSerialPort) -> None:
        """QEMU ``do_flush_queued_data`` (a console never throttles)."""
        q = self.queues[index]
        for elem in self.popped(index):
            total, pos = elem.readable_len, 0
            while pos < total:            # in pieces: a huge buffer never sits in memory
                n = min(PIECE, total - pos)
                port.have_data(elem.read_at(self.mem, pos, n))
                pos += n
                if pos < total:
                    yield
            q.push(elem, 0)
        self.notify(index)

    def _control_out(self) -> None:
        """QEMU ``control_out``: each buffer is one control message."""
        q = self.queues[CONTROL_TX]
        for elem in self.popped(CONTROL_TX):
            # only the 8-byte header matters (QEMU copies all of it, then reads 8)
            self._control_message(elem.read(self.mem, CONTROL_LEN) if elem.readable_len >= CONTROL_LEN
                                  else b"")
            q.push(elem, 0)
        self.notify(CONTROL_TX)

    def _log(self, message: str) -> None:
        self.transport.guest_error("virtio_serial", f"virtio-serial-bus: {message}")

    def _control_message(self, buf: bytes) -> None:
        """QEMU ``handle_control_message``."""
        if len(buf) < CONTROL_LEN:
            return
        port_id, event, value = struct.unpack_from("<IHH", buf)
        if event == DEVICE_READY:
            if not value:
                self._log(f"Guest failure in adding device {self.bus_name}")
                return
            for p in self.ports:
                self.send_control_event(p.id, PORT_ADD, 1)
            return
        port = self.port(port_id)
        if port is None:
            self._log(f"Unexpected port id {port_id} for device {self.bus_name}")
            return
        if event == PORT_READY:
            if not value:
                self._log(f"Guest failure in adding port {port.id} for device {self.bus_name}")
                return
            if port.is_console:
                self.send_control_event(port.id, CONSOLE_PORT, 1)
            if port.name is not None:
                self.send_control_msg(struct.pack("<IHH", port.id, PORT_NAME, 1)
                                      + port.name.encode() + b"\0")
            if port.host_connected:
                self.send_control_event(port.id, PORT_OPEN, 1)
        elif event == PORT_OPEN:
            port.guest_connected = bool(value)

    def send_control_event(self, port_id: int, event: int, value: int) -> int:
        return self.send_control_msg(struct.pack("<IHH", port_id, event, value))

    def send_control_msg(self, msg: bytes) -> int:
        """QEMU ``send_control_msg``: one buffer of queue 2, or the message is lost."""
        if self.broken or self.disabled:
            return 0
        q = self.queues[CONTROL_RX]
        if not q.ready:
            return 0
        elem = self.pop(CONTROL_RX)
        if elem is None:
            return 0
        elem.write(self.mem, msg)
        q.push(elem, len(msg))
        self.notify(CONTROL_RX)
        return len(msg)
