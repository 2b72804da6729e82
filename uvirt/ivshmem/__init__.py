"""ivshmem: the server protocol (version 0), a compatible server and a host-side peer.

* :mod:`uvirt.ivshmem.protocol` -- wire format, the client state machine and
  :class:`IvshmemClient`, shared by the ``ivshmem-doorbell`` device model and the peer.
* :mod:`uvirt.ivshmem.server` -- ``uvirt ivshmem-server``, compatible with QEMU's
  ``contrib/ivshmem-server``.
* :mod:`uvirt.ivshmem.peer` -- :class:`IvshmemPeer`, a Python program as one more peer.

Nothing here imports unicorn.
"""

from uvirt.ivshmem.protocol import (
    IvshmemClient,
    IvshmemConnectError,
    IvshmemError,
    IvshmemProtocolError,
    IvshmemTimeoutError,
)

__all__ = [
    "IvshmemClient",
    "IvshmemConnectError",
    "IvshmemError",
    "IvshmemProtocolError",
    "IvshmemTimeoutError",
]
