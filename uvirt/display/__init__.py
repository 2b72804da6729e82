"""What the host sees of a guest's display: QEMU's EDID generator, display surfaces,
and the screendump formats (QMP ``screendump``, ``-uvirt-screenshot``)."""
