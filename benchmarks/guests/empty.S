# Boots and exits at once: the create + boot + exit benchmark.
.include "uvirt.inc"
main:
    ret
