"""The incremental commit, without a CPU: a placement change recomputes only the ranges
it touches (uvirt/board/memory/regions.py ``AddressSpace.flatten``), and the Unicorn
backend re-derives only the mappings there (uvirt/cpu/uc_memory.py ``respan``).

Both must end exactly where a rebuild from scratch ends, whatever sequence of adds,
moves, enables, removals and container changes led there (Hypothesis), and the changed
ranges a commit reports must cover every address whose winner changed.
"""

from unittest import mock

from hypothesis import example, given, settings, strategies as st

from uvirt.board.memory import regions as regions_module

from uvirt.board.memory.regions import (PAGE_SIZE, AddressSpace, Container, IoSpace, MemoryMap, MmioRegion,
                                        Piece, RamRegion, _canonical)
from uvirt.cpu.uc_memory import _spans, respan

SPACE = 0x10000


class Dev:
    def read(self, offset, size):
        return 0

    def write(self, offset, size, value):
        pass


def _regions():
    # sizes around a page, so pages get shared (mixed) and RAM spans merge
    out = [RamRegion(f"ram{i}", size) for i, size in enumerate((0x3000, 0x1000, 0x800, 0x2400))]
    out += [MmioRegion(f"mmio{i}", size, Dev()) for i, size in enumerate((0x100, 0x1000, 0x1800))]
    shared = RamRegion("shared", 0x2000)
    out.append(RamRegion("alias", 0x1000, shared.buffer, buffer_offset=0x1000))
    out.append(shared)
    return out


_addr = st.integers(0, SPACE // 0x100 - 1).map(lambda a: a * 0x100)
_op = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 8), _addr, st.integers(-2, 2), st.booleans()),
    st.tuples(st.just("move"), st.integers(0, 15), _addr),
    st.tuples(st.just("enable"), st.integers(0, 15), st.booleans()),
    st.tuples(st.just("remove"), st.integers(0, 15)),
    st.tuples(st.just("child"), st.integers(0, 8), st.integers(0, 0x10) .map(lambda a: a * 0x100)),
    st.tuples(st.just("flatten")),
)


def _apply(space, regions, container, placements, op):
    kind = op[0]
    if kind == "add":
        _, r, addr, prio, enabled = op
        region = container if r == 8 else regions[r]
        placements.append(space.add(region, addr, prio, enabled=enabled))
    elif kind == "flatten":
        space.flatten()
    elif kind == "child":
        _, r, off = op
        region = regions[r % len(regions)]
        if any(c[1] is region for c in container.children):
            container.remove_subregion(region)
        elif off + region.size <= container.size:
            container.add_subregion(off, region, priority=r % 3)
    elif placements:
        p = placements[op[1] % len(placements)]
        if kind == "move":
            p.move(op[2])
        elif kind == "enable":
            p.set_enabled(op[2])
        else:
            p.remove()
            placements.remove(p)


def _winners(pieces, addrs):
    out = {}
    for a in addrs:
        out[a] = next(((pc.region, pc.offset + a - pc.start) for pc in pieces if pc.start <= a < pc.end), None)
    return out


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(_op, max_size=40), st.booleans(), st.sampled_from([regions_module._WIDE, 0x1000, 0x2500]))
# a range's cut-off rest reaching into the next changed range (found by a longer run)
@example([("add", 0, 0, 0, False), ("remove", 0), ("add", 8, 0x3100, 0, True), ("move", 0, 0)], True,
         regions_module._WIDE)
def test_incremental_flatten_equals_a_rebuild(ops, background, wide):
    """``wide``: where the space's placement index keeps placements apart (the board's
    16 MiB never matters in a 64 KiB space; with 0x1000 or 0x2500 most regions are
    narrow or wide, and the index's window must reach back far enough)."""
    with mock.patch.object(AddressSpace, "_wide_at", wide):
        _incremental_flatten_equals_a_rebuild(ops, background)


def _reference_winners(space, addrs):
    """What each address shows, from the placements alone, one address at a time: the
    enabled placement (or container child, recursively) with the highest (priority,
    seq) chain, else the background."""
    def leaves(region, addr, key, out):
        if isinstance(region, Container):
            for off, child, prio, seq in region.children:
                leaves(child, addr + off, key + (prio, seq), out)
        else:
            out.append((key, region, addr))
    every = []
    for p in space.placements:
        if p.enabled:
            leaves(p.region, p.addr, (p.priority, p.seq), every)
    out = {}
    for a in addrs:
        inside = [(key, region, a - base) for key, region, base in every
                  if base <= a < base + region.size]
        if inside:
            _, region, offset = max(inside, key=lambda leaf: leaf[0])
            out[a] = (region, offset)
        else:
            bg = space._background
            out[a] = None if bg is None else (bg, a)
    return out


def _incremental_flatten_equals_a_rebuild(ops, background):
    regions = _regions()
    container = Container("box", 0x3000)
    space = AddressSpace("t", SPACE, MmioRegion("bg", SPACE, Dev()) if background else None)
    placements = []
    probes = range(0, SPACE, 0x80)
    before = _winners(space.flatten(), probes)
    space.take_changes()
    for op in ops:
        _apply(space, regions, container, placements, op)
        if op[0] == "flatten":
            continue
        pieces = list(space.flatten())
        changes = space.take_changes()
        after = _winners(pieces, probes)
        assert after == _reference_winners(space, probes)
        moved = [a for a in probes if before[a] != after[a]]
        if changes is not None:     # every address whose winner changed was reported
            assert all(any(lo <= a < hi for lo, hi in changes) for a in moved)
        before = after
        space._mark_all()
        assert space.flatten() == pieces                # a rebuild ends in the same view
        assert pieces == _canonical(pieces)
        assert all(a.end <= b.start for a, b in zip(pieces, pieces[1:]))


class SpanBackend:
    """A memory-map backend doing what uvirt/cpu/uc_memory.py does with a commit, with
    a dict for Unicorn's mappings."""

    def __init__(self):
        self.mapped = {}

    def publish(self, pieces, changed=None):
        removed, added = respan(sorted(self.mapped.values(), key=lambda sp: sp.start), pieces, changed)
        assert not set(removed) & set(added)                # nothing unmapped and remapped
        for sp in removed:
            assert self.mapped.pop((sp.start, sp.size)) is sp
        for sp in added:
            assert (sp.start, sp.size) not in self.mapped   # unmapped before mapped over
            self.mapped[(sp.start, sp.size)] = sp

    def invalidate_code(self, addr, size):
        pass


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(_op, max_size=30))
def test_respan_equals_spans_from_scratch(ops):
    """The backend's incremental diff: mapped spans after each commit equal the spans a
    full ``_spans(pieces)`` gives (container changes commit by themselves)."""
    regions = _regions()
    container = Container("box", 0x3000)
    mm = MemoryMap()
    backend = mm.backend = SpanBackend()
    placements = []
    for op in ops:
        _apply(mm, regions, container, placements, op)
        mm.commit()
        assert sorted(backend.mapped.values()) == sorted(_spans(mm.flatten()))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(_op, max_size=30))
def test_port_table_updates_equal_a_rebuilt_table(ops):
    """IoSpace.commit rewrites only the ports of changed ranges (and of pieces whose
    region now dispatches elsewhere): the table equals one built from nothing."""
    regions = [MmioRegion(f"io{i}", size, Dev()) for i, size in enumerate((1, 4, 0x20, 0x100, 0x3000, 2, 8, 0x40))]
    container = Container("box", 0x3000)
    io = IoSpace()
    placements = []
    for op in ops:
        _apply(io, regions, container, placements, op)
        io.commit()
        if op[0] == "enable" and placements:             # a device swapped under a placement
            r = placements[op[1] % len(placements)].region
            if isinstance(r, MmioRegion):
                r.read = lambda offset, size: 0x5A
                io.commit()
        table = dict(io.table)
        io.table = {}
        io.commit()
        assert table == io.table


def test_a_bar_move_recomputes_only_its_old_and_new_place():
    mm = MemoryMap()
    ram = RamRegion("ram", 0x100000)
    mm.add(ram, 0)
    bar = mm.add(RamRegion("bar", 0x100000), 0xE0000000, priority=-1)
    mm.flatten()
    assert mm.take_changes() is None                     # the first view: everything
    bar.move(0xE0100000)
    assert mm.take_changes() == [(0xE0000000, 0xE0200000)]
    removed, added = respan(_spans(mm.flatten()) , mm.flatten(), [(0, 0)])
    assert not removed and not added                     # nothing changed there
    bar.move(0xF0000000)
    assert mm.take_changes() == [(0xE0100000, 0xE0200000), (0xF0000000, 0xF0100000)]
    assert [pc for pc in mm.flatten() if pc.region is ram] == [Piece(0, 0x100000, ram, 0)]
    assert PAGE_SIZE == 0x1000


def _points(intervals):
    return {a for s, e in intervals for a in range(s, e)}


_iv = st.tuples(st.integers(0, 64), st.integers(0, 64))


@settings(max_examples=500, deadline=None)
@given(st.lists(_iv, max_size=8), _iv)
def test_union_and_subtract_against_sets_of_points(adds, probe):
    """``_union`` keeps ``covered`` sorted, disjoint and joined where intervals touch;
    ``subtract_ranges`` gives exactly the uncovered points, in order (both bisect into it)."""
    from uvirt.board.memory.regions import _union, subtract_ranges
    covered, points = [], set()
    for s, e in adds:
        covered = _union(covered, s, e)
        points |= set(range(s, e))
        assert _points(covered) == points
        assert all(a[1] < b[0] for a, b in zip(covered, covered[1:]))    # sorted, apart
        assert all(s < e for s, e in covered)
    lo, hi = probe
    out = subtract_ranges(lo, hi, covered)
    assert _points(out) == set(range(lo, hi)) - points
    assert all(a[1] < b[0] for a, b in zip(out, out[1:])) and all(s < e for s, e in out)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 8), _addr, st.integers(-2, 2), st.booleans()),
                min_size=5, max_size=25), st.booleans())
def test_a_batch_of_adds_flattens_as_the_placements_say(adds, background):
    """A batch's commit sees many changed ranges (the build of a board): they are
    recomputed in one pass over their hull, with non-overlapping placements taken
    whole; the view is what the placements say, address by address."""
    regions = _regions()
    container = Container("box", 0x3000)
    container.add_subregion(0x800, regions[1], priority=1)
    space = AddressSpace("t", SPACE, MmioRegion("bg", SPACE, Dev()) if background else None)
    space.add(regions[6], 0x8000)
    space.flatten()
    with space.batch():
        for r, addr, prio, enabled in adds:
            space.add(container if r == 8 else regions[r], addr, prio, enabled=enabled)
    pieces = list(space.flatten())
    probes = range(0, SPACE, 0x80)
    assert _winners(pieces, probes) == _reference_winners(space, probes)
    assert pieces == _canonical(pieces)
    space._mark_all()
    assert space.flatten() == pieces


_batch = st.lists(_op, min_size=1, max_size=6)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(_batch, max_size=12))
def test_painted_port_table_equals_the_placements(batches):
    """A commit of many changes (a board's build, the firmware step) paints the port
    table from the placements, lowest (priority, seq) first, without flattening; the
    view is read off that table when next asked for.  Whatever the mix of batches and
    single changes, every port dispatches to the winner of its overlaps, and the view
    equals a rebuild from scratch."""
    regions = _regions()
    container = Container("box", 0x3000)
    io = IoSpace()
    placements = []
    probes = range(0, SPACE, 0x40)
    for ops in batches:
        with io.batch():
            for op in ops:
                _apply(io, regions, container, placements, op)
                io.commit()                          # deferred to the batch's end
        assert _table_winners(io, probes) == _reference_winners(io, probes)
        assert io.flatten() == _canonical(io._rebuild([(0, SPACE)]))


def _table_winners(io: IoSpace, probes) -> dict:
    """What the port table dispatches each probed port to: (region, offset), or None."""
    got = {}
    for port in probes:
        e = io.table.get(port)
        got[port] = None if e is None else (e.region, port - e.base)
    return got


def test_a_batch_of_port_changes_is_painted_without_a_flatten():
    """The paint path really skips the flatten (and reads the view off the table only
    when something asks for it); a container among the placements takes the flatten."""
    io = IoSpace()
    regions = [MmioRegion(f"r{i}", 4, Dev()) for i in range(4)]
    with mock.patch.object(AddressSpace, "flatten", side_effect=AssertionError("flattened")):
        with io.batch():
            for i, r in enumerate(regions):
                io.add(r, 0x100 + 2 * i, priority=i % 2)
                io.commit()
        assert io.table[0x100].region is regions[0] and io.table[0x103].region is regions[1]
        assert io.table[0x102].region is regions[1] and io.table[0x107].region is regions[3]
        io.commit()                                  # nothing changed: no flatten either
    assert [(pc.start, pc.end, pc.region.name, pc.offset) for pc in io.flatten()] == [
        (0x100, 0x102, "r0", 0), (0x102, 0x106, "r1", 0), (0x106, 0x10A, "r3", 0)]
    box = Container("box", 0x10)
    box.add_subregion(0, MmioRegion("child", 2, Dev()))
    with io.batch():
        io.add(box, 0x200)
        io.add(MmioRegion("x", 1, Dev()), 0x300)
        io.add(MmioRegion("y", 1, Dev()), 0x301)
        io.commit()
    assert io.table[0x200].region.name == "child" and 0x202 not in io.table


_port_op = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 8), st.integers(0, 0x30), st.integers(-1, 1), st.booleans()),
    st.tuples(st.just("move"), st.integers(0, 15), st.integers(0, 0x30)),
    st.tuples(st.just("enable"), st.integers(0, 15), st.booleans()),
    st.tuples(st.just("remove"), st.integers(0, 15)),
    st.tuples(st.just("flatten")),
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.lists(_port_op, min_size=1, max_size=5), max_size=12))
def test_repainted_ranges_equal_a_whole_paint(batches):
    """A commit after a few changes repaints only the ports of the ranges they touched
    (``IoSpace._repaint``: the firmware step, a BAR move); the table then equals one
    painted whole, every port dispatches to the winner of its overlaps, and the view
    read off the table equals a rebuild.  Small regions packed in a few ports, so the
    ranges overlap each other and the repaint (not the whole paint) runs."""
    regions = [MmioRegion(f"io{i}", size, Dev()) for i, size in enumerate((1, 2, 4, 8, 3, 1, 16, 5))]
    container = Container("box", 0x10)           # never placed: ops index regions 0-7
    io = IoSpace()
    io.add(MmioRegion("wide", 0x40, Dev()), 0, priority=-2)
    io.commit()
    placements = []
    probes = range(0, 0x48)
    repaints = []
    real = io._repaint

    def spy(ranges):
        done = real(ranges)
        repaints.append(done)
        return done
    io._repaint = spy
    for ops in batches:
        with io.batch():
            for op in ops:
                if op[0] == "add":
                    op = op[:1] + (op[1] % 8,) + op[2:]
                _apply(io, regions, container, placements, op)
        io.commit()
        assert _table_winners(io, probes) == _reference_winners(io, probes)
        table = dict(io.table)
        assert io.flatten() == _canonical(io._rebuild([(0, 0x10000)]))
        io.table = {}
        io.commit()                                   # a whole paint
        assert io.table == table
    assert all(repaints) or not batches


def test_a_few_port_changes_repaint_only_their_ports():
    """The firmware step's commit (a BAR, the PM block, two ISA devices): no whole paint
    and no flatten, and the table is as a whole paint makes it."""
    io = IoSpace()
    regions = [MmioRegion(f"r{i}", 4, Dev()) for i in range(6)]
    for i, r in enumerate(regions[:4]):
        io.add(r, 0x100 + 8 * i)
    io.add(MmioRegion("fw", 0x100, Dev()), 0x800)
    pm = io.add(MmioRegion("pm", 0x40, Dev()), 0, enabled=False)
    io.commit()
    with mock.patch.object(IoSpace, "_paint", side_effect=AssertionError("painted whole")), \
            mock.patch.object(AddressSpace, "flatten", side_effect=AssertionError("flattened")):
        with io.batch():
            io.add(regions[4], 0x102, priority=1)                 # over r0's upper half
            pm.move(0x600)
            pm.set_enabled(True)
            io.add(regions[5], 0xC000)
            io.commit()                                            # deferred to the end
        assert io.table[0x101].region is regions[0] and io.table[0x102].region is regions[4]
        assert io.table[0x105].region is regions[4] and 0x106 not in io.table
        assert io.table[0x63F].region.name == "pm" and io.table[0xC003].region is regions[5]
        table = dict(io.table)
    io.table = {}
    io.commit()
    assert io.table == table


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(_op, max_size=20), st.lists(_op, min_size=1, max_size=12), st.booleans())
# a change after a lookup, committed before the backend came
@example([("add", 0, 0, 0, True), ("move", 0, 0x8000)], [("add", 1, 0xA000, 0, True)], True)
def test_a_backend_attached_late_sees_every_change(before, after, lookups):
    """A memory map commits without flattening while it has no backend (a board built
    before its CPU attaches), whether or not lookups flattened it in between; a backend
    attached later, as the CPU's is (the changes taken, then the whole view
    published), and every commit after it, end with the spans a rebuild from the
    placements gives."""
    regions = _regions()
    container = Container("box", 0x3000)
    mm = MemoryMap()
    backend = SpanBackend()
    placements = []
    for op in before:
        _apply(mm, regions, container, placements, op)
        mm.commit()
        if lookups:
            mm.lookup(0x1000)
    mm.take_changes()
    mm.backend = backend
    backend.publish(mm.flatten(), None)
    for op in after:
        _apply(mm, regions, container, placements, op)
        mm.commit()
        assert sorted(backend.mapped.values()) == sorted(      # a rebuild's
            _spans(_canonical(mm._rebuild([(0, mm.size)]))))


def test_a_board_built_before_its_cpu_flattens_once():
    """pc_board commits its build with no CPU attached: no flatten then, nor when the
    CPU attaches; the firmware step's commit flattens once, the whole view."""
    from uvirt.board.devices.pc import pc_board
    from uvirt.cpu.machine import Machine
    from uvirt.boot.firmware_step import firmware_step
    real = AddressSpace.flatten
    calls = []

    def counted(self):
        if isinstance(self, MemoryMap) and self._dirty:
            calls.append(self._changed)
        return real(self)
    with mock.patch.object(AddressSpace, "flatten", counted):
        board = pc_board()
        m = Machine(board=board)
        assert calls == []
        with m.batch():
            firmware_step(m)
        assert calls == [None]                       # one flatten, of everything
    m.close()
