"""``ivshmem-plain`` and ``ivshmem-doorbell`` as QEMU 7.2 presents them (hw/misc/ivshmem.c).

Identity (measured over qtest on QEMU 7.2, no firmware)
    1af4:1110 revision 1, class 0x0500, subsystem 1af4:1100, interrupt pin 0 for both
    variants, command 0x0000: QEMU's realize presets I/O + memory decode, but the
    machine reset that follows (``pci_do_device_reset``) clears it before the guest runs,
    so uvirt does not preset it.  The doorbell variant has one capability, MSI-X at 0x40.

BARs
    BAR0  256-byte 32-bit MMIO register window (``ivshmem-mmio``).
    BAR1  doorbell only: MSI-X exclusive BAR (``msix_init_exclusive_bar``): 4 KiB, table
          at 0, PBA at 0x800; more than 128 vectors move the PBA to vectors*16 and grow
          the BAR to the next power of two.
    BAR2  64-bit prefetchable: the shared memory.  A ``Container`` of the memory's size
          whose one subregion is the ``SharedMemory.region`` (a ``mem_map_ptr`` mapping,
          guest loads and stores at native speed, the host sees every byte at once).

Registers (BAR0, ``ivshmem_io_read/write``; ``.impl`` 4 bytes, ``.valid`` 1..4 aligned)
    0x00 IntrMask    plain R/W storage (rev 1: no INTx, pin 0)
    0x04 IntrStatus  R/W storage, a read returns it and clears it
    0x08 IVPosition  own peer id (0 for ivshmem-plain)
    0x0C Doorbell    write: bits 31:16 destination peer, vector = ``val & 0xff``
    other offsets    read 0, writes ignored
    Reads dispatch on the exact offset (a byte read at 0x09 reads 0), writes on
    ``offset & 0xfc`` with the written value unshifted (a byte store of 1 at 0x0D rings
    peer 0, vector 1) -- QEMU's ``access_with_adjusted_size`` widening, which the
    ``MmioRegion`` (impl 4..4) reproduces.  A doorbell to a peer or vector that is not
    connected is ignored; ringing one's own id is allowed.

Doorbell (``-chardev socket,path=SOCK,id=c -device ivshmem-doorbell,chardev=c,vectors=N``)
    The socket chardev connects when it is created (QEMU: ``Failed to connect to
    'SOCK': No such file or directory``).  The device is an ``IvshmemClient``: before the
    guest runs it waits -- bounded by ``SETUP_TIMEOUT`` seconds, where QEMU would wait
    forever -- for version, id, the shared-memory fd and its own eventfds.  Afterwards a
    service thread sleeps on the server socket and the own eventfds (one epoll set; it
    runs on the CPU of the thread that rings, uvirt/affinity.py) and hands every event to
    the device under ``self.lock``: peers joining or leaving update the peer table; a
    ring on an own eventfd calls ``Msix.notify(vector)`` when MSI-X is enabled (PBA bit
    while masked, the message otherwise) and does nothing when it is disabled, as QEMU's
    ``ivshmem_vector_notify``.  While the guest is in ``hlt`` the CPU thread watches the
    client's fd itself (``halt_source``, uvirt/cpu/halt_wake.py) and the service thread
    does not: a ring then wakes one thread, not two, and the message is sent right there.
    After a doorbell to a peer the CPU thread looks for the ring back for up to
    ``ANSWER_POLL_NS`` with the service thread set aside (``_poll_answer``): a quick
    answer is taken before the guest's next instruction, with no thread woken.  Every
    guest-side entry point (BAR0, BAR1, config writes) takes the same lock.  Messages
    are sent through ``self.deliver(callable)``: direct by default, or the machine's
    ``call_soon_threadsafe`` when it has one, so delivery can move onto the CPU thread
    without touching this file.

Lifetime
    ``close()`` stops the thread, unmaps BAR2 from the guest, closes the mapping, the
    eventfds, the shared-memory fd and the socket.  The machine reaches it through
    ``machine.chardevs`` (``Machine.close()`` closes every entry): the doorbell's socket
    chardev closes its device, ivshmem-plain registers a small ``DeviceCloser``.
"""

from __future__ import annotations

import functools
import logging
import os
import select
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from uvirt.backends.chardev import Chardev, ChardevError
from uvirt.errors import UvirtError
from uvirt.ivshmem.protocol import (
    MAX_VECTORS,
    Interrupt,
    IvshmemClient,
    IvshmemError,
    VectorDropped,
    drain_eventfd,
)
from uvirt.board.memory.regions import Container, MmioRegion
from uvirt.board.pci.bus import PciFunction
from uvirt.board.pci.msix import ENTRY_SIZE, EXCLUSIVE_BAR_SIZE, Msix
from uvirt.backends.shared_memory import SharedMemory
from uvirt.affinity import CpuFollower
from uvirt.polling import PollThenSleep
from uvirt.service_thread import start_service_thread

if TYPE_CHECKING:
    from uvirt.board.board import Board as Machine   # a board, or a Machine attached to one

log = logging.getLogger("uvirt.ivshmem")

VENDOR_ID = 0x1AF4
DEVICE_ID = 0x1110
REVISION = 1
CLASS_MEMORY_RAM = 0x0500
REG_BAR_SIZE = 0x100
MSIX_CAP = 0x40
REG_BAR, MSIX_BAR, SHM_BAR = 0, 1, 2
MAX_MSIX_VECTORS = 0x800            # PCI_MSIX_FLAGS_QSIZE + 1

INTRMASK, INTRSTATUS, IVPOSITION, DOORBELL = 0x0, 0x4, 0x8, 0xC
_U32 = struct.Struct("<I")           # an MSI message: a 32-bit little-endian store

#: Bound on the wait for the server's set-up messages (QEMU waits forever).
SETUP_TIMEOUT = 5.0
#: How often a message posted to the CPU thread (``deliver``) is kicked again until it ran.
RETRY_KICK = 0.002
#: How long the CPU thread looks for the answer to a doorbell before the guest runs on
#: (``Ivshmem._poll_answer``): a quarter of KVM's halt_poll_ns, as the vCPU is not idle.
ANSWER_POLL_NS = 50_000


def msix_exclusive_layout(nvectors: int) -> tuple[int, int]:
    """QEMU ``msix_init_exclusive_bar``: (BAR size, PBA offset) for ``nvectors``."""
    bar_size = EXCLUSIVE_BAR_SIZE
    pba_offset = bar_size // 2
    pba_size = ((nvectors + 63) // 64) * 8
    if nvectors * ENTRY_SIZE > pba_offset:
        pba_offset = nvectors * ENTRY_SIZE
    if pba_offset + pba_size > EXCLUSIVE_BAR_SIZE:
        bar_size = pba_offset + pba_size
    return 1 << (bar_size - 1).bit_length(), pba_offset


class _Locked:
    """A register window whose accesses run under the device lock."""

    def __init__(self, device: Any, lock: threading.RLock) -> None:
        self.device = device
        self.lock = lock

    def read(self, offset: int, size: int) -> int:
        with self.lock:
            return self.device.read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        with self.lock:
            self.device.write(offset, size, value)


class _Registers:
    """BAR0 (``ivshmem_mmio_ops``); called with offsets only, 4 bytes at a time."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ()

    def __init__(self, dev: "Ivshmem") -> None:
        self.dev = dev

    def read(self, offset: int, size: int) -> int:
        d = self.dev
        with d.lock:
            if offset == INTRMASK:
                return d.intrmask
            if offset == INTRSTATUS:
                value, d.intrstatus = d.intrstatus, 0
                return value
            if offset == IVPOSITION:
                return d.vm_id
            return 0

    def write(self, offset: int, size: int, value: int) -> None:
        d = self.dev
        offset &= 0xFC
        with d.lock:
            if offset == INTRMASK:
                d.intrmask = value & 0xFFFFFFFF
            elif offset == INTRSTATUS:
                d.intrstatus = value & 0xFFFFFFFF
            elif offset == DOORBELL:
                d.doorbell((value >> 16) & 0xFFFF, value & 0xFF)


class IvshmemSetupError(UvirtError):
    """An ivshmem device that cannot be created, in QEMU's words (``ivshmem_realize``)
    without the option's location: the -device builder adds it."""


class Ivshmem(PciFunction):
    """One ivshmem function.  ``shm`` is the memory (a backend, or the server's fd
    mapped); ``client`` is the connected server client (doorbell) or None (plain)."""
    #: what a snapshot holds (uvirt/cpu/snapshot.py)
    snapshot_state = ("intrmask", "intrstatus", "msix")

    def __init__(self, name: str, shm: SharedMemory, *, client: IvshmemClient | None = None,
                 vectors: int = 0, owns_shm: bool = False) -> None:
        super().__init__(vendor_id=VENDOR_ID, device_id=DEVICE_ID, class_code=CLASS_MEMORY_RAM,
                         revision=REVISION)
        size = shm.size
        self.check_bar_size(size)
        self.name = name
        self.lock = threading.RLock()
        self.shm = shm
        self.owns_shm = owns_shm
        self.client = client
        self.vm_id = client.id if client is not None else 0
        self.intrmask = 0
        self.intrstatus = 0
        self.rings_sent = 0
        self.rings_ignored = 0
        self.interrupts = 0
        self.interrupts_in_halt = 0       # ... of them taken by a halted CPU's own wait
        self.interrupts_polled = 0        # ... by the CPU thread's look after a doorbell
        self.outstanding = 0              # messages handed to ``deliver`` and not sent yet
        self.closed = False
        #: how a message (``Msix.notify`` of an unmasked vector) gets sent: called with a
        #: zero-argument callable from the service thread.
        self.deliver: Callable[[Callable[[], None]], None] = lambda f: f()
        #: called on the CPU thread after a doorbell rang a peer (see ``create_doorbell``).
        self.after_ring: Callable[[], None] | None = None
        #: whether the CPU thread is in its run loop (posted messages get run): the
        #: service thread only re-kicks then.
        self.cpu_running: Callable[[], bool] = lambda: False
        #: ``ram_write(addr, data)``: if RAM decodes the 32-bit message at ``addr``, write
        #: it there -- what ``msi_write`` would do, without its lookups -- and return
        #: True.  Any thread may make such a write while the guest runs (QEMU's I/O
        #: thread writes RAM without a vCPU kick); anything else (the local APIC) goes
        #: through ``deliver``.
        self.ram_write: Callable[[int, int], bool] = lambda addr, data: False
        self.regs_region = MmioRegion("ivshmem-mmio", REG_BAR_SIZE, _Registers(self),
                                      valid_sizes=(1, 2, 4), impl_min=4, impl_max=4)
        self.register_bar(REG_BAR, self.regs_region)
        self.msix: Msix | None = None
        if client is not None:
            bar_size, pba_offset = msix_exclusive_layout(vectors)
            self.msix = Msix(self, vectors, bar=MSIX_BAR, cap_offset=MSIX_CAP, pba_offset=pba_offset)
            inner = self.msix.exclusive_bar_region("ivshmem-msix")
            self.msix_region = MmioRegion("ivshmem-msix", bar_size, _Locked(inner.device, self.lock),
                                          valid_sizes=(1, 2, 4, 8))
            self.register_bar(MSIX_BAR, self.msix_region)
        self.bar2 = Container("ivshmem.bar2", size)
        self.bar2.add_subregion(0, shm.region)
        self.register_bar(SHM_BAR, self.bar2, mem64=True, prefetch=True)
        self.freeze_reset_state()
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._watch: select.epoll | None = None     # the service thread's wait set
        self._look: select.epoll | None = None      # the own eventfds alone (``_poll_answer``)
        self._look_now: Callable[[], list] | None = None    # ... one look at them: epoll_wait(0)
        self._own_fds: dict[int, int] = {}          # ... its own eventfds: fd -> vector
        self._watched = False                       # ... holds them now (not paused)
        #: what a halted CPU watches for this device (Machine.watch_while_halted)
        self.halt_source = _HaltSource(self)
        #: keeps the service thread on the CPU of the thread that rings (the vCPU's), so
        #: the ring back it services preempts the spinning guest instead of contending
        #: for the GIL from another CPU (uvirt/affinity.py)
        self.cpu_follower = CpuFollower()
        #: how the CPU thread looks for the answer to a doorbell (``_poll_answer``); None
        #: (no CPU: qtest, a board) does not look
        self.answer_polling: PollThenSleep | None = None
        #: whether the caller is the CPU thread of a running machine
        self.is_cpu_thread: Callable[[], bool] = lambda: False

    # ------------------------------------------------------------------ guest side
    @staticmethod
    def check_bar_size(size: int) -> None:
        if size & (size - 1) or size < 16:
            # QEMU 7.2 aborts here (pci_register_bar: Assertion `is_power_of_2(size)').
            raise IvshmemSetupError(f"ivshmem BAR2 size 0x{size:x} is not a power of two of at "
                                    f"least 0x10 (QEMU 7.2 aborts on this)")

    def config_write(self, offset: int, size: int, value: int):
        with self.lock:
            changes = super().config_write(offset, size, value)
            if self.msix is not None:
                self.msix.config_written(offset, size)
            return changes

    def doorbell(self, dest: int, vector: int) -> None:
        """A guest doorbell write (lock held): ring ``dest``'s eventfd ``vector`` if both exist.

        A ring of our own vector is answered here, on the CPU thread.  QEMU writes its own
        eventfd and its main loop answers within microseconds, long before a guest's next
        steps; through uvirt's service thread a loaded host could answer after the guest
        had already changed its MSI-X state (seen: a pending bit set for a ring made while
        MSI-X was off).  Same checks as a ring of a peer: the vector must exist (a closed
        client has no eventfds left)."""
        client = self.client
        if client is None or client.state.eventfd(dest, vector) < 0:
            self.rings_ignored += 1
            return
        self.rings_sent += 1
        if dest == self.vm_id:
            self._vector_notify(vector)
            return
        polling = self.answer_polling
        look = (polling is not None and self._watched and self.is_cpu_thread()
                and not polling.skip())
        if look:                    # open (it has eventfds), running and watching: pause
            # before the ring: its answer must not wake the thread
            self._watch_rings(False)
        client.ring(dest, vector)
        if self.after_ring is not None:
            self.after_ring()
        if not (look and self._poll_answer(polling)):
            # An answer still to come wakes the service thread: have it wake on this CPU
            # (uvirt/affinity.py)
            self.cpu_follower.here()

    def _poll_answer(self, polling: PollThenSleep) -> bool:
        """The CPU thread, right after the guest rang a peer: look for a ring back for a
        short while (``ANSWER_POLL_NS``) and, if it comes, take it here, as the service
        thread would have.  A peer that answers a doorbell within microseconds (a host
        RPC, the request/response use ivshmem doorbells have) is then answered without
        waking the service thread at all: no thread wake-up, no GIL hand-over, the
        message in RAM before the guest's next instruction.  The guest's store is
        complete; only its next instruction waits, as if the host had preempted it.  A
        look that finds nothing skips the next 1, 2, 4 ... doorbells' looks
        (uvirt/polling.py), so a peer that answers late, or never, costs the guest one
        ``ANSWER_POLL_NS`` per up to ``BACKOFF_MAX`` doorbells.  The service thread
        stands aside meanwhile (paused by ``doorbell`` before the ring), so a ring wakes
        one thread; this resumes it.  Whether an answer was taken."""
        own = self._own_fds
        took = 0
        try:
            # The peer cannot have answered yet: let it run first if it shares this CPU
            # (it is runnable now, woken or polling), then look.
            os.sched_yield()
            ready = polling.look_for(self._look_now) if own else None
            for fd, _mask in ready or ():
                took += self._rung(fd, own[fd], True)
        finally:
            if not self.closed:
                self._watch_rings(True)
        self.interrupts_polled += took
        return took > 0

    def reset(self):
        """QEMU ``ivshmem_reset`` + ``pci_do_device_reset``: registers, MSI-X, config."""
        with self.lock:
            changes = super().reset()
            self.intrstatus = 0
            self.intrmask = 0
            if self.msix is not None:
                self.msix.reset()
            return changes

    # ------------------------------------------------------------------ server events
    def handle_events(self, events, on_cpu: bool = False) -> None:
        """Apply client events (lock held by the caller or taken here).  ``on_cpu``: the
        caller is the CPU thread between two runs (a halted CPU's wait), where posted
        work would run: messages are sent at once."""
        with self.lock:
            for ev in events:
                if isinstance(ev, Interrupt):
                    self.interrupts_in_halt += on_cpu
                    self._vector_notify(ev.vector, on_cpu)
                elif isinstance(ev, VectorDropped):
                    # QEMU: error_report("Too many eventfd received, device has %d vectors")
                    log.warning("Too many eventfd received, device has %d vectors",
                                self.client.vectors if self.client else 0)

    def _vector_notify(self, vector: int, on_cpu: bool = False) -> None:
        """QEMU ``ivshmem_vector_notify``: MSI-X only, and only while it is enabled."""
        self.interrupts += 1
        m = self.msix
        if m is not None:
            # On the CPU thread everything is sent here; elsewhere ``notify`` makes every
            # check (a masked vector's PBA bit is set right away) and ``_send`` decides.
            m.notify(vector, None if on_cpu else self._send)

    def _send(self, vector: int, addr: int, data: int) -> None:
        """An unmasked vector's message, off the CPU thread: a RAM write is made here (no
        CPU stop needed, as QEMU's I/O thread writes RAM without a vCPU kick); anything
        else (the local APIC) is posted to the CPU thread, where ``notify`` runs again on
        the state it finds then."""
        if not self.bus_master():           # QEMU msi_send_message: dropped
            return
        if not self.ram_write(addr, data):
            self.outstanding += 1
            self.deliver(lambda: self._notify_locked(vector))

    def _notify_locked(self, vector: int) -> None:
        with self.lock:
            self.outstanding -= 1
            if self.msix is not None and not self.closed:
                self.msix.notify(vector)

    def start_service(self) -> None:
        """Start the thread that services the server socket and own eventfds."""
        client = self.client
        if client is None or self._thread is not None or client.closed:
            return
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        # The thread sleeps on its own epoll set, which holds the own eventfds themselves
        # (not the client's epoll fd: a ring then costs one epoll_wait and one read, and
        # the thread knows the vector from the fd).  A halted CPU, or the CPU thread looking
        # for a doorbell's answer, stops it watching them (``pause``), so one ring wakes one
        # thread.
        # The server socket stays: its rare messages may wake both, serviced under the
        # lock by whichever comes first.
        self._watch = select.epoll()
        self._look = select.epoll()
        self._look_now = functools.partial(self._look.poll, 0)
        self._watch.register(self._wake_r, select.EPOLLIN)
        sfd = client.server_fileno()
        if sfd >= 0:
            self._watch.register(sfd, select.EPOLLIN)
        self._watched = True
        self._watch_own()
        self._thread = start_service_thread(self._serve, f"{self.name}-service")

    def _watch_own(self) -> None:
        """Take own eventfds the server sent since the last call into the wait sets (they
        only ever grow); while paused, with no events asked until ``resume``."""
        own = self._own_fds
        for fd, vector in self.client.own_eventfds().items():
            if fd not in own:
                own[fd] = vector
                self._look.register(fd, select.EPOLLIN)
                self._watch.register(fd, select.EPOLLIN if self._watched else 0)

    def _serve(self) -> None:
        client = self.client
        assert client is not None and self._watch is not None
        watch, wake_r = self._watch, self._wake_r
        self.cpu_follower.follow()
        try:
            self._serve_loop(watch, wake_r)
        finally:
            self.cpu_follower.stop()

    def _serve_loop(self, watch: select.epoll, wake_r: int) -> None:
        own = self._own_fds
        while True:
            # A message posted to the CPU thread and not run yet is kicked again every
            # RETRY_KICK seconds: a kick that lands while the run loop is between two
            # emu_start calls is otherwise only noticed at the guest's next exit.
            timeout = RETRY_KICK if self.outstanding and self.cpu_running() else -1
            try:
                ready = watch.poll(timeout)
            except (OSError, ValueError):
                return
            if not ready:
                if self.outstanding and not self.closed and self.cpu_running():
                    self.deliver(_nothing)
                continue
            for fd, _mask in ready:
                vector = own.get(fd)
                if vector is not None:
                    self._rung(fd, vector)          # the common case: a peer rang us
                elif fd == wake_r:
                    return
                else:                               # the server: a peer joined or left
                    self.service_once()
                    with self.lock:
                        if not self.closed:
                            self._watch_own()

    def _rung(self, fd: int, vector: int, on_cpu: bool = False) -> bool:
        """An own eventfd is readable (service thread, or the CPU thread's look after a
        doorbell, ``on_cpu``): QEMU's ``ivshmem_vector_notify`` for its vector, if a ring
        is still there (a halted CPU may have taken it).  Whether there was one.

        On the CPU thread the message is sent right there, to RAM or to the local APIC,
        as a guest's own store to the APIC's MSI window is (inside the doorbell's MMIO
        callback: the interrupt is taken before the guest's next instruction, as if the
        doorbell's write had been the MSI), not posted to a later stop of the run."""
        with self.lock:
            if not self.closed and drain_eventfd(fd):
                self._vector_notify(vector, on_cpu)
                return True
            return False

    # -- the halted CPU's view (uvirt/cpu/halt_wake.py): it watches the client's fd
    # itself while the guest is in ``hlt``, and this thread does not.
    def halt_fileno(self) -> int:
        client = self.client
        if client is None or client.closed or self.closed or self._watch is None:
            return -1
        return client.fileno()

    # The own eventfds stay in the service thread's set, with no events asked while paused:
    # a change of mask costs a third of a removal and a new registration (each doorbell's
    # look pays a pause and a resume).
    def pause(self) -> None:
        with self.lock:
            if self._watched and self._watch is not None and not self.closed:
                self._watch_rings(False)

    def resume(self) -> None:
        with self.lock:
            if not self._watched and self._watch is not None and not self.closed:
                self._watch_rings(True)

    def _watch_rings(self, on: bool) -> None:
        """``pause``/``resume`` without their checks (lock held, service running, open).
        An fd already readable when watched again wakes the thread at once: nothing is lost."""
        modify, events = self._watch.modify, select.EPOLLIN if on else 0
        for fd in self._own_fds:
            modify(fd, events)
        self._watched = on

    def service_once(self, timeout: float = 0.0, on_cpu: bool = False) -> None:
        """Service pending events on the calling thread: the service thread, a halted
        CPU thread (``halt_source``, ``on_cpu``), tests without a thread."""
        if self.client is None:
            return
        with self.lock:
            if self.closed or self.client.closed:
                return
            try:
                events = self.client.poll(timeout)
            except Exception as e:          # never let a thread die silently
                log.warning("ivshmem: %s", e)
                return
            self.handle_events(events, on_cpu)

    # ------------------------------------------------------------------ host side
    @property
    def peers(self) -> dict[int, int]:
        with self.lock:
            return {} if self.client is None or self.client.closed else self.client.peers

    def close(self) -> None:
        """Stop the service thread; unmap and release the memory, the eventfds, the socket."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
        if self._thread is not None:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass
            self._thread.join(timeout=5.0)
            self._thread = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        with self.lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
                self._look.close()
        with self.lock:
            if self.client is not None:
                self.client.close()
            # Take the memory out of the guest's map so its buffer can be released now.
            if self.shm.region in [c[1] for c in self.bar2.children]:
                self.bar2.remove_subregion(self.shm.region)
            if self.owns_shm:
                _close_shm(self.shm)


def _close_shm(shm: SharedMemory) -> None:
    try:
        shm.buffer.close()
    except (UvirtError, BufferError, ValueError) as e:
        log.debug("ivshmem: buffer %s not released: %s", shm.name, e)


class _HaltSource:
    """A doorbell device as a halted CPU's wake source (uvirt/cpu/halt_wake.py)."""

    __slots__ = ("dev",)

    def __init__(self, dev: Ivshmem) -> None:
        self.dev = dev

    def fileno(self) -> int:
        return self.dev.halt_fileno()

    def pause(self) -> None:
        self.dev.pause()

    def resume(self) -> None:
        self.dev.resume()

    def ready(self) -> None:
        self.dev.service_once(on_cpu=True)


class DeviceCloser(Chardev):
    """An entry of ``machine.chardevs`` whose ``close()`` closes a device (the machine
    closes every chardev in ``Machine.close()``; it has no other closer hook yet)."""

    def __init__(self, close: Callable[[], None], label: str = "") -> None:
        self._close = close
        self.id = label

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            close()


class BackendCloser(DeviceCloser):
    """Releases ``-object memory-backend-*`` buffers that no device took over."""

    def __init__(self, backends: dict[str, SharedMemory], used: set[str]) -> None:
        def close() -> None:
            for key, shm in backends.items():
                if key not in used:
                    _close_shm(shm)
        super().__init__(close, "memory-backends")


# --------------------------------------------------------------------------- socket chardev


class SocketChardev(Chardev):
    """``-chardev socket,path=SOCK,id=ID`` as a client: connects when created, as QEMU.

    ivshmem-doorbell takes the connected socket (``take_socket``) and attaches its
    device, which this chardev closes with itself.  Other users get a byte stream.
    """

    def __init__(self, path: str, *, chardev_id: str = "") -> None:
        self.id = chardev_id
        self.path = path
        self.device: Ivshmem | None = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as e:
            sock.close()
            raise ChardevError(f"Failed to connect to '{path}': {e.strerror or e}") from None
        self._sock: socket.socket | None = sock

    def take_socket(self) -> socket.socket:
        sock, self._sock = self._sock, None
        if sock is None:
            raise UvirtError(f"chardev '{self.id}' has no connection left")
        return sock

    def write(self, data: bytes) -> None:
        if self._sock is not None:
            try:
                self._sock.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# --------------------------------------------------------------------------- factories


def _place(machine: "Machine", fn: Ivshmem, v: dict[str, Any]) -> None:
    from uvirt.board.board import place_pci
    place_pci(machine, fn, v)


def _stop_after_ring(machine: "Machine", hook: Callable[[Callable[[], None]], None]) -> Callable[[], None]:
    """While Unicorn checks for stops after every access, a doorbell write ends the CPU's
    run slice (a stop requested by the MMIO callback itself).

    The peer answers within microseconds and its answer stops the CPU from the service
    thread (``deliver``).  With per-access stop checks on (exact stops: code hooks, or a
    Unicorn build without the block-start switch, uvirt/cpu/exits.py), a stop from
    another thread that lands just after an MMIO callback returned makes Unicorn execute
    the store again, and the replay guard cannot see it (uc_memory.ReplayGuard, "known
    gap"): the doorbell would ring twice.  Stopping from inside the callback puts the
    store in the guard's journal first, so a restart of it is absorbed whoever asked for
    the stop.  With stops at block starts (the default) no store is restarted, and the
    doorbell costs no stop.
    """
    memory = machine.memory

    def after_ring() -> None:
        replay = memory.replay           # the CPU's ReplayGuard (uvirt/cpu/uc_memory.py)
        if replay is not None and replay.armed and memory.cpu_thread == threading.get_ident():
            hook(_nothing)
    return after_ring


def _nothing() -> None:
    pass


def _ram_writer(memory) -> Callable[[int, int], bool]:
    """``Ivshmem.ram_write`` for a machine's memory map: the bus's ``msi_write`` (a
    32-bit write; nothing decodes above 4 GiB) when RAM decodes the address, False
    (nothing written) otherwise.

    Every polled doorbell round writes its message here, mostly to the same address, so
    the RAM piece it lands in is kept as a ``RamWindow`` (valid until the address space
    changes) and the store is one ``pack_into``, followed by what ``GuestMemory.write``
    does after its copy (``invalidate_code``: the snapshot's dirty log, translated code).
    Anything the window does not hold -- another piece, a piece end, ROM, a changed
    map, one not flattened yet -- takes ``GuestMemory.write`` itself, the reference.
    Callers hold the device lock (one writer at a time)."""
    guest, ram_piece = memory.guest, memory.ram_piece
    store, invalidate_code = _U32.pack_into, memory.invalidate_code
    window = None

    def ram_write(addr: int, data: int) -> bool:
        nonlocal window
        w = window
        if (w is None or not w.lo <= addr <= w.hi - 4 or memory._dirty
                or memory.generation != w.gen):
            if addr >> 32 or ram_piece(addr) is None:
                return False
            # A change not flattened yet (the CPU thread between a placement change and
            # its commit): the general write, and no window, whose making would flatten
            # the map from this thread.
            w = window = None if memory._dirty else guest.ram_window(addr, 4)
            if w is None:          # that, past the piece's end, or ROM: the general write
                guest.write(addr, (data & 0xFFFFFFFF).to_bytes(4, "little"))
                return True
        store(w.view, addr - w.delta, data & 0xFFFFFFFF)
        invalidate_code(addr, 4)       # a DMA store, as msi_write's
        return True
    return ram_write


def create_plain(machine: "Machine", v: dict[str, Any], shm: SharedMemory) -> Ivshmem:
    """``-device ivshmem-plain`` over ``shm`` (the ``memdev`` the builder looked up)."""
    fn = Ivshmem("ivshmem-plain", shm, owns_shm=True)
    machine.chardevs.append(DeviceCloser(fn.close, "ivshmem-plain"))
    _place(machine, fn, v)
    return fn


def create_doorbell(machine: "Machine", v: dict[str, Any], timeout: float | None = None) -> Ivshmem:
    """``-device ivshmem-doorbell``: set-up with the server happens here, bounded.
    ``v`` holds typed properties (``chardev`` the back end itself)."""
    chardev = v["chardev"]
    if chardev is None:
        raise IvshmemSetupError("You must specify a 'chardev'")
    vectors = v["vectors"]
    if not 1 <= vectors <= MAX_MSIX_VECTORS:
        raise IvshmemSetupError("Failed to initialize interrupts: The number of MSI-X vectors is invalid")
    if not isinstance(chardev, SocketChardev):
        # QEMU reads the set-up messages from any chardev and waits forever on one
        # that never sends them (null, file): refuse instead.
        raise IvshmemSetupError(f"chardev '{getattr(chardev, 'id', '?')}' is not a socket "
                                f"connected to an ivshmem server")
    timeout = SETUP_TIMEOUT if timeout is None else timeout
    sock = chardev.take_socket()
    try:
        # The protocol layer tracks at most MAX_VECTORS eventfds per peer (the reference
        # server's limit); the MSI-X table still has ``vectors`` entries.
        client = IvshmemClient(sock, min(vectors, MAX_VECTORS), chardev.path)
        client._timeout = timeout           # the bound its timeout error names
        client.setup(deadline=time.monotonic() + timeout)
    except IvshmemError as e:
        raise IvshmemSetupError(str(e)) from None
    try:
        if v["master"] == "on" and client.id != 0:
            raise IvshmemSetupError("master must connect to the server before any peers")
        try:
            shm = SharedMemory.from_fd("ivshmem.bar2", client.shm_fd, client.shm_size)
        except (UvirtError, OSError, ValueError) as e:
            raise IvshmemSetupError(f"can't map shared memory sent by server "
                                    f"(size 0x{client.shm_size:x}): {e}") from None
        try:
            fn = Ivshmem("ivshmem-doorbell", shm, client=client, vectors=vectors, owns_shm=True)
        except UvirtError as e:
            _close_shm(shm)
            raise IvshmemSetupError(str(e)) from None
    except BaseException:
        client.close()
        raise
    chardev.device = fn
    cpu = machine.cpu                   # the CPU side running the board, if any
    if cpu is not None:
        # With a CPU, messages are sent on its thread; without one (qtest) directly.
        hook = cpu.call_soon_threadsafe
        fn.deliver = hook
        fn.after_ring = _stop_after_ring(machine, hook)
        fn.cpu_running = lambda: getattr(machine.memory, "cpu_thread", None) is not None
        memory = machine.memory
        fn.is_cpu_thread = lambda: getattr(memory, "cpu_thread", None) == threading.get_ident()
        # A yield that ran another thread is no reason to stop looking here: it may well
        # have been the peer answering (on a busy host it shares this CPU); the window
        # bounds the look.
        fn.answer_polling = PollThenSleep(ANSWER_POLL_NS, busy_ns=ANSWER_POLL_NS * 1000)
        fn.ram_write = _ram_writer(machine.memory)
        watch = getattr(cpu, "watch_while_halted", None)     # a Machine has it
        if watch is not None:
            watch(fn.halt_source)
    try:
        _place(machine, fn, v)
    except BaseException:
        fn.close()
        chardev.device = None
        raise
    fn.start_service()
    return fn
