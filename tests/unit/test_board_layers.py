"""The board without a CPU, the CPU side that attaches to it, and the import rules
between them (docs/architecture.md): read from the source with ``ast``, every import
counted (module level, inside functions, under ``TYPE_CHECKING``)."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

from uvirt.board.board import Board
from uvirt.board.devices.pc import pc_board
from uvirt.board.memory import physmem
from uvirt.cpu.machine import Machine

ROOT = pathlib.Path(__file__).resolve().parents[2] / "uvirt"


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports (absolute names, the longest known prefix for uvirt)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            while parts and ".".join(parts) not in MODULES and parts[0] == "uvirt":
                parts.pop()
            if parts:
                out.add(".".join(parts))
    return out


IMPORTS = {name: _imports(path) for name, path in MODULES.items()}

#: Known exceptions, each with its reason; the rules below hold for everything else.
#: ivshmem.py still turns chardev text into values and places its function through the
#: -device table (issue 12 item 3, the options work, takes that out of the model).
PENDING_OPTIONS_WORK = {"uvirt.board.devices.ivshmem"}


def _violations(source: str, forbidden: tuple[str, ...], exempt=frozenset()) -> list[str]:
    return sorted(f"{m} -> {t}" for m, targets in IMPORTS.items()
                  if (m == source or m.startswith(source + ".")) and m not in exempt
                  for t in targets if any(t == f or t.startswith(f + ".") for f in forbidden))


def test_the_board_is_the_bottom_layer():
    """Board modules import the board and uvirt's leaf modules only (back ends, virtio,
    the CPU and everything above are handed in, never imported)."""
    leaves = ("uvirt.board", "uvirt.errors", "uvirt.trace", "uvirt.service_thread")
    outside = sorted(f"{m} -> {t}" for m, targets in IMPORTS.items()
                     if m.startswith("uvirt.board.") and m not in PENDING_OPTIONS_WORK
                     for t in targets if t.startswith("uvirt.")
                     and not any(t == f or t.startswith(f + ".") for f in leaves))
    assert outside == []


def _sibling_cycles(parent: str) -> list[list[str]]:
    """Circles among the children of ``parent`` (QEMU-style layers: import-linter's
    ``acyclic_siblings``), every import counted."""
    depth = parent.count(".") + 2

    def child(m: str) -> str:
        return ".".join(m.split(".")[:depth])
    graph: dict[str, set[str]] = {}
    for m, targets in IMPORTS.items():
        if m.startswith(parent + ".") and m not in PENDING_OPTIONS_WORK:
            graph.setdefault(child(m), set()).update(
                child(t) for t in targets if t.startswith(parent + ".") and child(t) != child(m))
    return _cycles_of(graph)


def test_the_board_parts_form_no_circle():
    """memory/ below pci/ below interrupts/ and devices/; board.py knows no device model."""
    assert _sibling_cycles("uvirt.board") == []


def test_the_board_imports_no_cpu_no_test_protocol_no_command_line():
    assert _violations("uvirt.board", ("unicorn", "uvirt.cpu", "uvirt.qtest", "uvirt.launch",
                                       "uvirt.options", "uvirt.cli", "uvirt.fuzz"),
                       PENDING_OPTIONS_WORK) == []


def test_only_the_cpu_side_imports_unicorn():
    users = sorted(m for m, targets in IMPORTS.items()
                   if any(t == "unicorn" or t.startswith("unicorn.") for t in targets))
    # fuzz/backends.py: the guest backend sets EIP on the machine's CPU
    assert [m for m in users if not m.startswith("uvirt.cpu.")] == ["uvirt.fuzz.backends"]


def test_the_virtio_core_sees_guest_memory_through_the_protocol_only():
    core = [m for m in IMPORTS if m.startswith("uvirt.virtio") and m != "uvirt.virtio.pci"]
    reached = {t for m in core for t in IMPORTS[m] if t.startswith("uvirt.board.memory")}
    # gpu.py's bounce path reads through QEMU's address_space_read (physmem), not yet
    # through GuestMemory.map
    assert reached <= {"uvirt.board.memory.guest", "uvirt.board.memory.physmem"}
    assert _violations("uvirt.virtio", ("unicorn", "uvirt.cpu", "uvirt.qtest", "uvirt.launch",
                                        "uvirt.options", "uvirt.cli")) == []


def test_qtest_is_handed_the_board_and_imports_no_builder():
    assert _violations("uvirt.qtest", ("uvirt.launch", "uvirt.cpu", "unicorn")) == []


def _cycles() -> list[list[str]]:
    return _cycles_of({m: {t for t in ts if t in MODULES and t != m} for m, ts in IMPORTS.items()})


def _cycles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    graph = {v: {w for w in ws if w in graph} for v, ws in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:                 # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("layer", ["uvirt.board", "uvirt.cpu", "uvirt.qtest"])
def test_no_import_circle_through_the_board_cpu_or_qtest(layer):
    mine = [c for c in _cycles() if any(m == layer or m.startswith(layer + ".") for m in c)
            and not PENDING_OPTIONS_WORK & set(c)]
    assert mine == []


def test_the_pure_memory_map_loads_without_unicorn():
    code = ("import sys; import uvirt.board.board, uvirt.board.devices.pc, uvirt.board.memory.guest, "
            "uvirt.board.memory.physmem; uvirt.board.devices.pc.pc_board(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'unicorn' or m.startswith('uvirt.cpu')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------- the board alone
def _cfg_read(board: Board, dfn: int, offset: int) -> int:
    physmem.write(board.io, 0xCF8, (0x80000000 | dfn << 8 | offset).to_bytes(4, "little"))
    return int.from_bytes(physmem.read(board.io, 0xCFC, 4), "little")


def test_a_pc_board_without_cpu_answers_as_qemu_pc():
    board = pc_board()
    try:
        assert board.cpu is None and board.memory.backend is None
        assert _cfg_read(board, 0, 0) == 0x12378086              # i440FX
        assert _cfg_read(board, 8, 0) == 0x70008086              # PIIX3
        assert int.from_bytes(physmem.read(board.io, 0x510, 1), "little") == ord("Q")  # fw_cfg
        assert board.services.gpio("/machine/i440fx/ioapic").path == "/machine/i440fx/ioapic"
        assert board.interrupts is not None and board.rtc is not None
    finally:
        board.close()


def test_a_device_request_without_cpu_stops_the_board_until_end_stop():
    board = pc_board()
    ran = []
    board.work.enter()
    board.work.schedule(lambda: ran.append(1))      # queued: inside a register access
    physmem.write(board.io, 0xCF9, b"\x06")         # PIIX3 RCR: system reset
    assert board.stopped == "guest reset"
    assert board.io.read(0xCFC, 4) == 0xFFFFFFFF       # the CPU's port table: unassigned
    board.work.leave()
    assert ran == [] and board.work.pending              # device work held back
    board.end_stop()
    assert board.stopped is None and _cfg_read(board, 0, 0) == 0x12378086
    board.work.drain()
    assert ran == [1]
    board.close()


def test_a_guest_error_reaches_the_board_through_the_pci_bus():
    board = pc_board()
    board.pci.guest_error("kind", "detail")
    assert board.guest_errors == [("kind", "detail")]
    board.close()


# ---------------------------------------------------------------------- the CPU attached
def test_a_machine_attaches_to_a_board_and_leaves_it_cpu_free():
    board = pc_board()
    m = Machine(board=board)
    try:
        assert board.cpu is m and board.memory.backend is m.uc_memory
        assert m.memory is board.memory and m.pci is board.pci and m.rtc is board.rtc
        m.displays = [("d", object())]                     # written through to the board
        assert board.displays == m.displays
        board.request_reset()                              # the CPU side answers it
        assert m.stop_requested and board.stopped is None
        m.resume_device_work()
        assert not m.stop_requested
    finally:
        m.close()
    assert board.cpu is None and board.memory.backend is None and board.memory.replay is None
    board.request_reset()                                  # the board alone again
    assert board.stopped == "guest reset"


def test_machine_without_builtins_is_a_bare_board():
    m = Machine(cpu=False, builtins=False)
    assert m.interrupts is None and m.lowmem is None and list(m.pci.functions) == []
    m.close()
