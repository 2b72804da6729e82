"""A Python program as an ivshmem peer: shared memory, doorbells, join/leave.

    with IvshmemPeer.connect("/tmp/ivshmem_socket", vectors=2, timeout=5.0) as p:
        p.memory[0:5] = b"hello"                 # MAP_SHARED mmap of the whole object
        joined = p.wait_peer_joined(timeout=2.0) # PeerJoin(peer_id, vectors) or None
        p.ring(joined.peer_id, 1)                # -> True if that vector is connected
        p.wait(vector=0, timeout=2.0)            # -> 0, or None on timeout
        p.wait_peer_left(joined.peer_id, timeout=2.0)

Every wait is bounded.  Nothing here starts a thread: waits drive
:meth:`IvshmemClient.poll` and remember what they saw, so a join, a ring and a leave
that all arrive before you look are each still reported, in order.
"""

from __future__ import annotations

import collections
import mmap
import time
from dataclasses import dataclass

from uvirt.polling import PollThenSleep
from uvirt.ivshmem.protocol import (
    DEFAULT_TIMEOUT,
    Event,
    Interrupt,
    IvshmemClient,
    PeerDisconnected,
    PeerVectorConnected,
    ServerGone,
)


@dataclass(frozen=True, slots=True)
class PeerJoin:
    """A peer that joined after us, with the vectors we can ring it on."""

    peer_id: int
    vectors: int


class _Join:
    __slots__ = ("peer_id", "vectors", "complete")

    def __init__(self, peer_id: int) -> None:
        self.peer_id = peer_id
        self.vectors = 0
        self.complete = False


class IvshmemPeer:
    """One peer of an ivshmem server, for host-side programs and tests."""

    def __init__(self, client: IvshmemClient) -> None:
        self.client = client
        self.memory: mmap.mmap | None = None
        self._rung: collections.Counter[int] = collections.Counter()
        self._joins: collections.deque[_Join] = collections.deque()
        self._open_join: _Join | None = None
        self._left: collections.deque[int] = collections.deque()
        #: how ``wait`` polls before it sleeps; ``polling.poll_ns = 0`` never polls
        self.polling = PollThenSleep()
        try:
            self.memory = client.map_shm()
        except BaseException:
            client.close()
            raise

    @classmethod
    def connect(cls, path: str, *, vectors: int = 1, timeout: float = DEFAULT_TIMEOUT) -> IvshmemPeer:
        """Connect, finish set-up and map the shared memory, all within ``timeout`` s."""
        return cls(IvshmemClient.connect(path, vectors=vectors, timeout=timeout))

    # -- state

    @property
    def id(self) -> int:
        return self.client.id

    @property
    def size(self) -> int:
        return self.client.shm_size

    @property
    def vectors(self) -> int:
        return self.client.vectors

    @property
    def peers(self) -> dict[int, int]:
        """Other connected peers: id -> number of vectors we can ring it on."""
        self._pump(0.0)
        return self.client.peers

    @property
    def server_connected(self) -> bool:
        return self.client.server_connected

    # -- doorbells

    def ring(self, peer_id: int, vector: int = 0) -> bool:
        """Ring ``peer_id`` on ``vector``; False if that peer/vector is not connected."""
        self._pump(0.0)                  # a leave already sent makes this False
        return self.client.ring(peer_id, vector)

    def wait(self, vector: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        """Wait until our ``vector`` (any if None) is rung; return it, or None on timeout.

        Rings coalesce as eventfds do: several rings of one vector before a wait are
        reported once.  The wait first looks for up to 200 us (``polling``,
        uvirt/polling.py: a peer's answer usually comes sooner than a sleeping thread is
        woken) and then sleeps; a ring costs one ``epoll_wait`` and one ``read``.
        """
        if self._rung:
            hit = self._take_ring(vector)
            if hit is not None:
                return hit
        deadline = time.monotonic() + timeout
        remaining = timeout
        client = self.client
        while remaining > 0 and not client.closed:
            events = self.polling.poll(lambda: client.poll(0.0), remaining)
            if events:
                self._record(events)
            else:
                self._pump(deadline - time.monotonic())
            if self._rung:
                hit = self._take_ring(vector)
                if hit is not None:
                    return hit
            remaining = deadline - time.monotonic()
        return None

    # -- membership

    def wait_peer_joined(self, timeout: float = DEFAULT_TIMEOUT, *,
                         partial: bool = True) -> PeerJoin | None:
        """The next peer that joined (oldest first), or None if none joins in time.

        A join is reported once all its eventfds are in: as many as our vector count,
        or fewer if another message or the deadline comes first. With ``partial=False``
        the deadline does not end a join whose eventfds are still arriving: a caller
        waiting in short slices gets None and finds the whole join on its next call.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._joins and self._joins[0].complete:
                j = self._joins.popleft()
                return PeerJoin(j.peer_id, j.vectors)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.client.closed:
                if self._joins and self._joins[0].vectors > 0 and (partial or self.client.closed):
                    j = self._joins.popleft()
                    if j is self._open_join:
                        self._open_join = None
                    return PeerJoin(j.peer_id, j.vectors)
                return None
            self._pump(remaining)

    def wait_peer_left(self, peer_id: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        """The id of a peer that left (``peer_id`` only, if given), or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for i, left in enumerate(self._left):
                if peer_id is None or left == peer_id:
                    del self._left[i]
                    return left
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.client.closed:
                return None
            self._pump(remaining)

    # -- lifecycle

    def close(self) -> None:
        if self.memory is not None:
            self.memory.close()
            self.memory = None
        self.client.close()

    def __enter__(self) -> IvshmemPeer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals

    def _take_ring(self, vector: int | None) -> int | None:
        rung = self._rung
        if vector is None:
            vector = min(rung) if rung else None
        if vector is None or vector not in rung:
            return None
        del rung[vector]
        return vector

    def _pump(self, timeout: float) -> None:
        if not self.client.closed:
            self._record(self.client.poll(timeout))

    def _record(self, events: list[Event]) -> None:
        for ev in events:
            if type(ev) is Interrupt and self._open_join is None:      # the common case
                self._rung[ev.vector] += ev.count
                continue
            if isinstance(ev, PeerVectorConnected) and self._open_join is not None \
                    and ev.peer_id == self._open_join.peer_id:
                self._open_join.vectors += 1
                if self._open_join.vectors >= self.client.vectors:
                    self._open_join.complete = True
                    self._open_join = None
                continue
            # Any other message ends the eventfd group of the join in progress.
            if self._open_join is not None:
                self._open_join.complete = True
                self._open_join = None
            if isinstance(ev, PeerVectorConnected):
                j = _Join(ev.peer_id)
                j.vectors = 1
                self._joins.append(j)
                if j.vectors >= self.client.vectors:
                    j.complete = True
                else:
                    self._open_join = j
            elif isinstance(ev, PeerDisconnected):
                self._left.append(ev.peer_id)
            elif isinstance(ev, Interrupt):
                self._rung[ev.vector] += ev.count
            elif isinstance(ev, ServerGone):
                pass
