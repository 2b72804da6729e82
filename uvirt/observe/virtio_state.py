"""The virtio functions on a machine's PCI bus and their driver-visible state, read
without side effects (through ``uvirt.virtio.ring_view``): what a recording keeps at
the end of a run (uvirt/observe/record.py) and what the ring inspector snapshots at
each step (uvirt/observe/inspector.py)."""

from __future__ import annotations

from typing import Any

from uvirt.board.pci.bus import bdf_str
from uvirt.virtio.ring_view import split_ring_view


def virtio_functions(machine) -> dict[str, Any]:
    """bdf -> VirtioPci for every virtio function on the bus."""
    return {bdf_str(dfn): fn for dfn, fn in sorted(machine.pci.functions.items())
            if getattr(fn, "vdev", None) is not None}


def virtio_state(machine) -> list[dict]:
    """Each virtio function's driver-visible state, read without side effects."""
    out = []
    mem = machine.memory.guest
    for bdf, fn in virtio_functions(machine).items():
        d = fn.vdev
        queues = []
        for q in d.queues:
            view = split_ring_view(mem, q)
            view["enabled"] = fn.queue_enabled(q.index)
            queues.append(view)
        out.append({"bdf": bdf, "name": fn.name,
                    "transport": {(True, True): "transitional", (True, False): "legacy",
                                  (False, True): "modern"}[(fn.legacy, fn.modern)],
                    "status": d.status, "host_features": d.host_features,
                    "guest_features": d.guest_features, "isr": d.isr, "broken": d.broken,
                    "msix_enabled": fn.msix_enabled(), "intx_level": fn.intx_level,
                    "queues": queues})
    return out
