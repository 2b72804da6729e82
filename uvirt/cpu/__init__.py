"""The CPU side: a Unicorn x86 CPU attached to a board, its run loop, stops,
exception delivery, TLB fill and snapshots.  Only this package and the memory
map's Unicorn backend import Unicorn (docs/architecture.md)."""
