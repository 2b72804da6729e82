"""Snapshot and restore of a machine: ``snap = machine.snapshot()``, ``machine.restore(snap)``.

What a snapshot holds, and why it is held that way:

CPU
    Unicorn's ``context_save`` in its default mode (CPU registers only, including the
    descriptor caches, control registers and FPU/SSE state).  Unicorn's memory mode
    (``UC_CTL_CONTEXT_MEMORY``, copy-on-write pages) is not used: while such a snapshot
    is active a ``mem_map_ptr`` host view no longer sees what the guest writes (the
    write goes to a private copy), so every shared region and every device ring read
    through ``GuestMemory`` would go stale, and ``mem_protect`` is refused meanwhile.

Guest RAM
    A full copy of every writable RAM region at snapshot time, and at restore only the
    pages written since the last restore are copied back.  Which pages: the CPU's own
    stores are seen by the TLB fill (uvirt/cpu/tlb.py): while a snapshot is held a page
    not yet written gets a TLB entry without write permission, so its first store comes
    back to the fill hook as a write fill that marks it dirty; device DMA and loaders
    write through ``GuestMemory``, which reports every RAM write to
    ``MemoryMap.dirty_log``.  Host views (``HostBuffer.view``, a shared-memory file)
    stay valid: restore writes into the same buffers.  If the guest turned paging on
    since the snapshot, Unicorn's own MMU filled the TLB and the dirty set is not
    complete: restore then copies the whole region.
    RAM regions other than the main RAM (a device's shared memory behind a BAR, which
    may move) are copied back whole.

Devices
    Each device model declares its state: a class attribute ``snapshot_state``, a tuple
    of attribute names (the union over the class's bases is used).  A value that is
    itself an object declaring ``snapshot_state`` (a virtqueue, an MSI-X table, a PIC
    chip) is restored in place, so every reference to it stays valid; a ``bytearray``
    (config space, MSI-X table, CMOS) is refilled in place, so views of it stay valid;
    lists, dicts and sets of plain values are copied; anything else is deep-copied.
    Objects are found from the machine: the devices behind every region of the memory
    map and the port space, the PCI functions and the machine's resettables.  A class
    that declares nothing (a user's own device) has its plain-data attributes saved
    (numbers, strings, bytes, containers of those); ``undeclared()`` lists such classes.
    Block back ends keep a journal of the sectors written since the snapshot.
    After the devices, every PCI function's BARs are re-derived from its restored
    config space and applied through the memory map's one commit.

A snapshot is taken between runs, with no device work pending and no interrupt being
single-stepped into place (``SnapshotError`` otherwise).
"""
from __future__ import annotations

import collections
import copy
import enum
import random
from dataclasses import dataclass, field
from typing import Any

from uvirt.errors import UvirtError
from uvirt.board.memory.regions import PAGE_SIZE, Container, MmioRegion, RamRegion
from uvirt.board.pci.bus import PciFunction

PAGE_SHIFT = 12

_IMMUTABLE = (int, float, str, bytes, bool, type(None), enum.Enum, frozenset, complex)
_SHALLOW = {list: list, dict: dict, set: set, collections.deque: collections.deque}


_MISSING = object()
_BASE_UPDATE = PciFunction.update_mappings


class SnapshotError(UvirtError):
    """The machine cannot be snapshot (or restored) in its current state."""


def state_names(cls: type) -> tuple[str, ...] | None:
    """The attribute names ``cls`` and its bases declare, or None if none declares any."""
    names: list[str] = []
    declared = False
    for klass in reversed(cls.__mro__):
        own = klass.__dict__.get("snapshot_state")
        if own is not None:
            declared = True
            names.extend(n for n in own if n not in names)
    return tuple(names) if declared else None


def _plain(v: Any) -> bool:
    if isinstance(v, _IMMUTABLE) or isinstance(v, bytearray):
        return True
    if isinstance(v, (list, tuple, set, collections.deque)):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(_plain(k) and _plain(x) for k, x in v.items())
    return False


def _frozen(v: Any) -> bool:
    """Immutable all the way down (a tuple of numbers, say): shared, never copied."""
    if isinstance(v, tuple):
        return all(_frozen(x) for x in v)
    return isinstance(v, _IMMUTABLE)


def _stateful(v: Any) -> bool:
    return state_names(type(v)) is not None


class _ObjectState:
    """One object's saved attributes, grouped by how they come back."""

    __slots__ = ("obj", "plain", "buffers", "shallow", "deep", "lists", "slots", "states", "dict", "rest")

    def __init__(self, obj: Any, names: tuple[str, ...], found: list) -> None:
        self.obj = obj
        self.plain: dict[str, Any] = {}          # immutable values: one dict.update
        self.buffers: list[tuple[str, bytearray, bytes]] = []
        self.shallow: list[tuple[str, type, Any]] = []
        self.deep: list[tuple[str, Any]] = []
        self.lists: list[tuple[str, list, list]] = []
        self.states: list[tuple[str, Any, Any]] = []    # generators: getstate/setstate in place
        has_dict = hasattr(obj, "__dict__")
        self.slots: dict[str, Any] = {}
        for name in names:
            v = getattr(obj, name, _MISSING)
            if v is _MISSING:          # not there in this configuration (a machine without CPU)
                continue
            if not has_dict or name not in obj.__dict__:
                self.slots[name] = copy.deepcopy(v) if not isinstance(v, _IMMUTABLE) else v
            elif _frozen(v):
                self.plain[name] = v
            elif isinstance(v, bytearray):
                self.buffers.append((name, v, bytes(v)))
            elif isinstance(v, random.Random):
                self.states.append((name, v, v.getstate()))
            elif _stateful(v):
                self.plain[name] = v                # the same object, restored in place
                found.append(v)
            elif isinstance(v, list) and any(_stateful(x) for x in v):
                self.lists.append((name, v, list(v)))
                found.extend(x for x in v if _stateful(x))
            elif isinstance(v, dict) and v and any(_stateful(x) for x in v.values()):
                self.lists.append((name, v, dict(v)))      # restored in place, values too
                found.extend(x for x in v.values() if _stateful(x))
            elif type(v) in _SHALLOW and all(_frozen(x)
                                             for x in (v.values() if isinstance(v, dict) else v)):
                self.shallow.append((name, _SHALLOW[type(v)], _SHALLOW[type(v)](v)))
            else:
                self.deep.append((name, copy.deepcopy(v)))
        self.dict = obj.__dict__ if has_dict else None
        self.rest = bool(self.buffers or self.shallow or self.deep or self.lists or self.states or self.slots)
        if self.dict is None and self.plain:    # __slots__ objects: attribute by attribute
            self.slots.update(self.plain)
            self.plain = {}
            self.rest = True

    def restore(self) -> None:
        plain, d = self.plain, self.dict
        if d is not None:
            if plain:
                d.update(plain)
        elif plain:
            for name, v in plain.items():
                setattr(self.obj, name, v)
        if self.rest:
            self._restore_rest(d)

    def _restore_rest(self, d) -> None:
        for name, buf, saved in self.buffers:
            buf[:] = saved
            d[name] = buf
        for name, ctor, saved in self.shallow:
            d[name] = ctor(saved)
        for name, saved in self.deep:
            # a value equal to the saved one stays (comparing a few small lists costs far
            # less than copying them: the fuzzer restores before every input); the saved
            # value itself is never handed out, so nothing aliases it
            if not _same(d.get(name, _MISSING), saved):
                d[name] = copy.deepcopy(saved)
        for name, lst, saved in self.lists:
            if isinstance(lst, dict):
                lst.clear()
                lst.update(saved)
            else:
                lst[:] = saved
            d[name] = lst
        for name, gen, state in self.states:
            gen.setstate(state)
            d[name] = gen
        for name, saved in self.slots.items():
            setattr(self.obj, name, saved if isinstance(saved, _IMMUTABLE) else copy.deepcopy(saved))


def _same(current: Any, saved: Any) -> bool:
    """``current`` equals ``saved`` (and is of its type); an ``==`` that raises or does
    not answer a plain True (an array, say) counts as different."""
    if type(current) is not type(saved):
        return False
    try:
        return (current == saved) is True
    except Exception:
        return False


def _fallback_names(obj: Any) -> tuple[str, ...]:
    """A class that declares nothing: its plain-data attributes."""
    return tuple(k for k, v in vars(obj).items() if _plain(v)) if hasattr(obj, "__dict__") else ()


def capture_objects(roots: list) -> list[_ObjectState]:
    """Save the declared state of ``roots`` and of every stateful object they name."""
    out: list[_ObjectState] = []
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        obj = todo.pop()
        if id(obj) in seen or obj is None:
            continue
        seen.add(id(obj))
        names = state_names(type(obj))
        if names is None:
            names = _fallback_names(obj)
        found: list = []
        out.append(_ObjectState(obj, names, found))
        todo.extend(found)
    return out


# ---------------------------------------------------------------------- discovery
def _region_devices(space, out: list) -> None:
    def visit(region) -> None:
        if isinstance(region, MmioRegion):
            out.append(region.device)
        elif isinstance(region, Container):
            for child in region.children:
                visit(child[1])
    for p in space.placements:
        visit(p.region)


def device_roots(machine) -> list:
    """The objects whose state a snapshot holds: the machine's own run state, the devices
    behind every region, the PCI functions, the resettables and interrupt controllers."""
    roots: list = [machine, machine.board] if hasattr(machine, "board") else [machine]
    guest = getattr(machine.memory, "guest", None)
    if guest is not None:
        roots.append(guest)                 # the DMA side's bounce buffer
    _region_devices(machine.memory, roots)
    _region_devices(machine.io, roots)
    roots.extend(machine.pci.functions.values())
    roots.extend(machine.resettables)
    if machine.interrupts is not None:
        roots.append(machine.interrupts)
    return roots


def undeclared(machine) -> list[str]:
    """uvirt classes reached from the machine that declare no ``snapshot_state``, or
    that make attributes of their own while only inheriting a declaration
    (``undeclared_in``)."""
    names = set()
    for st in capture_objects(device_roots(machine)):
        cls = type(st.obj)
        if state_names(cls) is None:
            if cls.__module__.startswith("uvirt."):
                names.add(f"{cls.__module__}.{cls.__qualname__}")
        else:
            names.update(undeclared_in(cls))
    return sorted(names)


def undeclared_in(cls: type) -> list[str]:
    """The uvirt classes in ``cls``'s hierarchy with their own ``__init__``, ``reset`` or
    ``device_reset`` (so, attributes of their own) and no ``snapshot_state`` of their
    own: each such class says what it adds, an empty tuple when it is configuration."""
    return [f"{k.__module__}.{k.__qualname__}" for k in cls.__mro__
            if k.__module__.startswith("uvirt.") and "snapshot_state" not in k.__dict__
            and {"__init__", "reset", "device_reset"} & k.__dict__.keys()]


def _ram_regions(machine) -> list[RamRegion]:
    out: dict[int, RamRegion] = {}

    def visit(region) -> None:
        if isinstance(region, RamRegion):
            if not region.readonly:
                out.setdefault(id(region), region)
        elif isinstance(region, Container):
            for child in region.children:
                visit(child[1])
    for p in machine.memory.placements:
        visit(p.region)
    for fn in machine.pci.functions.values():
        for bar in fn.bars:
            if bar is not None:
                visit(bar.region)
    # aliases of the main RAM (the low 640 KiB, the PAM windows) share its buffer at the
    # same offsets as their guest addresses: the main RAM's page tracking covers them
    main = machine.ram.buffer
    return [machine.ram] + [r for r in out.values() if r.buffer is not main]


# ---------------------------------------------------------------------- block back ends
class _DiskJournal:
    """The original bytes of every range a block back end wrote since the snapshot
    (installed on the back-end instance, so callers notice nothing)."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.length = backend.length if hasattr(backend, "length") else None
        self.saved: list[tuple[int, bytes]] = []
        cls = type(backend)
        self._write = cls.write.__get__(backend)
        for name in ("write", "write_zeroes", "discard"):
            orig = getattr(cls, name, None)
            if orig is None:
                continue
            setattr(backend, name, self._journaled(orig.__get__(backend), name))

    def _journaled(self, fn, name: str):
        backend, saved = self.backend, self.saved

        def wrapper(offset: int, arg, *rest, **kw):
            n = len(arg) if name == "write" else arg
            try:
                old = backend.read(offset, n)
            except Exception:
                old = None
            if old is not None:
                saved.append((offset, bytes(old)))
            return fn(offset, arg, *rest, **kw)
        return wrapper

    def rewind(self) -> None:
        while self.saved:
            offset, old = self.saved.pop()
            self._write(offset, old)


def _block_backends(machine) -> list:
    from uvirt.backends.block import BlockBackend
    out: dict[int, Any] = {}
    for fn in machine.pci.functions.values():
        vdev = getattr(fn, "vdev", None)
        b = getattr(vdev, "backend", None)
        if isinstance(b, BlockBackend):
            out.setdefault(id(b), b)
    return list(out.values())


# ---------------------------------------------------------------------- the snapshot
@dataclass(eq=False)
class Snapshot:
    cpu: Any                                   # a UcContext, or None without a CPU
    ram: dict[int, tuple[RamRegion, bytes]]    # id(region) -> (region, contents)
    main: RamRegion
    objects: list[_ObjectState]
    disks: list[_DiskJournal] = field(default_factory=list)
    configs: dict[int, bytes] = field(default_factory=dict)    # id(function) -> config space
    restores: int = 0
    smbase: int | None = None                  # the CPU's SMBASE (uvirt/cpu/smm.py)
    pages_restored: int = 0                    # in the last restore


def take(machine) -> Snapshot:
    if machine.work.pending:
        raise SnapshotError("cannot snapshot with device work pending (run the machine on)")
    if getattr(machine, "_blocked", False):
        raise SnapshotError("cannot snapshot while an interrupt waits for IF=1")
    if getattr(machine, "in_smm", False) or getattr(machine, "_smi_pending", False):
        raise SnapshotError("cannot snapshot in System Management Mode (run the machine on)")
    old = getattr(machine, "_snapshot", None)
    if old is not None:
        for j in old.disks:
            j.rewind = lambda: None
            for name in ("write", "write_zeroes", "discard"):
                j.backend.__dict__.pop(name, None)
    cpu = machine.uc.context_save() if machine.uc is not None else None
    ram = {id(r): (r, bytes(r.buffer.view[r.buffer_offset:r.buffer_offset + r.size]))
           for r in _ram_regions(machine)}
    snap = Snapshot(cpu, ram, machine.ram, capture_objects(device_roots(machine)),
                    [_DiskJournal(b) for b in _block_backends(machine)],
                    {id(fn): bytes(fn.config.data) for fn in machine.pci.functions.values()})
    snap.smbase = getattr(machine, "smbase", None)
    _start_tracking(machine)
    machine._snapshot = snap
    return snap


def _start_tracking(machine) -> None:
    dirty: set[int] = set()
    machine._host_dirty = dirty

    def log(addr: int, size: int) -> None:
        if size > 0:
            dirty.update(range(addr >> PAGE_SHIFT, ((addr + size - 1) >> PAGE_SHIFT) + 1))
    machine.memory.dirty_log = log
    if machine.tlb is not None:
        machine.tlb.track_writes()


def restore(machine, snap: Snapshot) -> None:
    if getattr(machine, "_snapshot", None) is not snap:
        raise SnapshotError("restore: this is not the machine's current snapshot "
                            "(take a new one with machine.snapshot())")
    machine.work.discard()             # work the restored devices never scheduled
    memory = machine.memory
    memory.dirty_log = None
    tlb = machine.tlb
    main = snap.main
    main_saved = snap.ram[id(main)][1]
    exact = tlb is None or tlb.tracking_exact()
    pages = set(machine._host_dirty)
    if tlb is not None and tlb.dirty is not None:
        pages |= tlb.dirty
    view, base = main.buffer.view, main.buffer_offset
    code: list[int] = []
    if exact:
        for page in pages:
            o = page << PAGE_SHIFT
            if o < main.size:          # the main RAM sits at guest-physical 0 (pc)
                view[base + o:base + o + PAGE_SIZE] = main_saved[o:o + PAGE_SIZE]
                code.append(o)
        snap.pages_restored = len(pages)
    else:
        view[base:base + main.size] = main_saved
        snap.pages_restored = main.size >> PAGE_SHIFT
        code = [0]
    for rid, (region, saved) in snap.ram.items():
        if region is not main:
            o = region.buffer_offset
            region.buffer.view[o:o + region.size] = saved
    # BARs follow the config space (every config write re-derives them): only a function
    # whose config bytes differ from the snapshot's needs it after the restore, and one
    # with mappings of its own (the host bridge's PAM windows) is always asked
    moved = [fn for fn in machine.pci.functions.values()
             if fn.config.data != snap.configs.get(id(fn)) or type(fn).update_mappings is not _BASE_UPDATE]
    for st in snap.objects:
        st.restore()
    for j in snap.disks:
        j.rewind()
    # BARs follow the restored config space, through the memory map's one commit
    with machine.batch():
        for fn in moved:
            changes = fn.update_mappings()
            if changes:
                machine.pci.apply(fn, changes)
    if machine.uc is not None:
        machine.uc.context_restore(snap.cpu)
        if snap.smbase is not None:
            machine.smbase = snap.smbase
            machine.in_smm = machine._smi_pending = False     # a snapshot is never taken in SMM
        if exact:
            for o in code:
                if tlb.may_hold_code(o, PAGE_SIZE):
                    memory.invalidate_code(o, PAGE_SIZE)
        else:
            machine.uc.ctl_flush_tb()
    if not machine.io.table:
        machine.io.commit()        # a CPU stop left the port table empty: host accesses need it
    snap.restores += 1
    _start_tracking(machine)
