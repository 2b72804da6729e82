"""Device-independent virtio feature bits and the 32-bit page arithmetic transports need.

Bits 24..40 (virtio 1.2 §6 "Reserved Feature Bits"; docs/virtio-pci-facts.md §2.4):

    24 NOTIFY_ON_EMPTY      legacy: interrupt when the queue runs empty even if suppressed
    27 ANY_LAYOUT           legacy: no framing assumptions
    28 RING_INDIRECT_DESC   indirect descriptor tables (spec: VIRTIO_F_INDIRECT_DESC)
    29 RING_EVENT_IDX       used_event / avail_event suppression (spec: VIRTIO_F_EVENT_IDX)
    30 BAD_FEATURE          never negotiated; a legacy driver writing it gets ``bad_features``
    32 VERSION_1            modern device/driver
    33 ACCESS_PLATFORM      DMA through platform translation (ex IOMMU_PLATFORM)
    34 RING_PACKED          packed virtqueues
    35 IN_ORDER             36 ORDER_PLATFORM   37 SR_IOV   38 NOTIFICATION_DATA
    39 NOTIF_CONFIG_DATA    40 RING_RESET

Feature words are exchanged through 32-bit windows selected by ``*_feature_select``
(modern, §4.1.4.3) or are only 32 bits wide (legacy HOST_FEATURES / GUEST_FEATURES).
"""

from __future__ import annotations

from enum import IntFlag

PAGE_BITS = 32
PAGE_MASK = 0xFFFF_FFFF


class VirtioFeature(IntFlag):
    """Transport/ring feature bits with their spec names (virtio 1.2 §6)."""

    NOTIFY_ON_EMPTY = 1 << 24
    ANY_LAYOUT = 1 << 27
    RING_INDIRECT_DESC = 1 << 28
    RING_EVENT_IDX = 1 << 29
    BAD_FEATURE = 1 << 30
    VERSION_1 = 1 << 32
    ACCESS_PLATFORM = 1 << 33
    RING_PACKED = 1 << 34
    IN_ORDER = 1 << 35
    ORDER_PLATFORM = 1 << 36
    SR_IOV = 1 << 37
    NOTIFICATION_DATA = 1 << 38
    NOTIF_CONFIG_DATA = 1 << 39
    RING_RESET = 1 << 40

    # Linux spellings, so either name reads naturally next to a kernel header.
    INDIRECT_DESC = RING_INDIRECT_DESC
    EVENT_IDX = RING_EVENT_IDX
    IOMMU_PLATFORM = ACCESS_PLATFORM


#: Bits that only mean something on the legacy interface (virtio 1.2 §6, "Legacy Interface").
LEGACY_ONLY_FEATURES = VirtioFeature.NOTIFY_ON_EMPTY | VirtioFeature.ANY_LAYOUT

#: The bits a virtqueue engine itself looks at.
RING_FEATURES = (VirtioFeature.NOTIFY_ON_EMPTY | VirtioFeature.RING_INDIRECT_DESC
                 | VirtioFeature.RING_EVENT_IDX | VirtioFeature.RING_PACKED)


def has_feature(features: int, feature: int) -> bool:
    """True when every bit of ``feature`` is set in ``features``."""
    return features & feature == feature


def page(features: int, sel: int) -> int:
    """The 32-bit window ``sel`` of a feature word (``device_feature`` for a given
    ``device_feature_select``).  Windows beyond the 64 bits QEMU keeps read 0, as
    observed on QEMU 7.2 (``device_feature[2] = 0``)."""
    if sel < 0:
        raise ValueError(f"feature page selector must be >= 0, not {sel!r}")
    return (features >> (PAGE_BITS * sel)) & PAGE_MASK


def set_page(features: int, sel: int, value: int) -> int:
    """``features`` with window ``sel`` replaced by the low 32 bits of ``value``
    (a ``driver_feature`` write).  Which selectors are honoured is the transport's
    choice: QEMU's modern transport ignores writes with ``driver_feature_select > 1``."""
    if sel < 0:
        raise ValueError(f"feature page selector must be >= 0, not {sel!r}")
    shift = PAGE_BITS * sel
    return (features & ~(PAGE_MASK << shift)) | ((value & PAGE_MASK) << shift)


def mask_unoffered(offered: int, requested: int) -> tuple[int, int]:
    """Split a driver's feature write into ``(accepted, dropped)``.

    QEMU ``virtio_set_features_nocheck``: bits the device never offered are masked
    off (and the call reports failure); Firecracker's ``ack_features_by_page`` does the
    same.  The caller records a guest error when ``dropped`` is non-zero.
    """
    return requested & offered, requested & ~offered


def legacy_guest_features(value: int, bad_features: int = 0) -> int:
    """What a legacy GUEST_FEATURES write means (QEMU ``virtio_ioport_write``): a driver
    that sets BAD_FEATURE (bit 30) did not negotiate properly, so QEMU replaces the
    whole write with the device's ``bad_features`` set (usually 0)."""
    if value & VirtioFeature.BAD_FEATURE:
        return bad_features
    return value


def feature_names(features: int) -> list[str]:
    """Spec names of the known bits set in ``features``, low bit first; unknown bits
    appear as ``bit<N>`` (for traces and error messages)."""
    names = []
    n = 0
    while features >> n:
        if features >> n & 1:
            try:
                names.append(VirtioFeature(1 << n).name or f"bit{n}")
            except ValueError:
                names.append(f"bit{n}")
        n += 1
    return names
