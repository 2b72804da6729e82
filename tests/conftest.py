"""Shared fixtures.

* ``qemu``: the QEMU 7.2 reference runner (``uvirt.testing.qemu.run_qemu``).  Without
  qemu-system-x86_64 a test using it (or marked ``@pytest.mark.qemu``) is skipped, but
  under ``CI=true`` it FAILS instead: CI must never silently skip differential tests.
* ``firmware``: builds a guest program (bundled name or path) into a temporary image file.
* ``uvirt_plugin_installed``: fails a test whose pytester runs would miss uvirt's plugin.
* ``booted``: a bare ``Machine`` with debugcon and isa-debug-exit, PCI functions plugged,
  the firmware step done and an image loaded, closed at teardown.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from uvirt.testing import qemu as _qemu


def _ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _require_qemu() -> None:
    if _qemu.qemu_available():
        return
    reason = f"{_qemu.QEMU} not installed (scripts/setup --test installs it)"
    if _ci():
        pytest.fail(f"CI=true: differential test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("qemu") is not None:
        _require_qemu()


@pytest.fixture
def qemu() -> Callable[..., _qemu.QemuResult]:
    """``qemu(image, extra_args=(), timeout=30) -> QemuResult(exit_code, debugcon)``."""
    _require_qemu()
    return _qemu.run_qemu


@pytest.fixture
def firmware(tmp_path: Path) -> Callable[..., Path]:
    """``firmware(name_or_path, defines=None) -> Path`` of a built multiboot image."""
    from uvirt import firmware as fw

    def build(prog: str | os.PathLike[str], defines: dict[str, int] | None = None) -> Path:
        src = Path(prog)
        if not src.suffix:
            src = fw.bundled(str(prog))
        out = tmp_path / f"{src.stem}-{len(list(tmp_path.glob('*.bin')))}.bin"
        return fw.build_to(src, out, defines=defines)

    return build


@pytest.fixture
def booted():
    """``booted(image, pci={slot: function}, **machine_kw) -> (Machine, MemoryChardev)``: a
    ``Machine(**machine_kw)`` with the debugcon (port 0xE9) in the returned chardev and
    isa-debug-exit at 0xF4 (4 bytes), the PCI functions plugged at their slots, the
    firmware step done and the image loaded; not yet run.  Closed at teardown."""
    from uvirt.backends.chardev import MemoryChardev
    from uvirt.boot import firmware_step as bios
    from uvirt.cpu.machine import Machine

    made = []

    def boot(image: os.PathLike[str], pci: dict | None = None, **machine_kw):
        m = Machine(**machine_kw)
        made.append(m)
        con = MemoryChardev()
        m.add_debugcon(con)
        m.add_debug_exit(0xF4, 4)
        for slot, fn in (pci or {}).items():
            m.add_pci(fn, slot=slot)
        bios.firmware_step(m)
        m.load_kernel(Path(image).read_bytes())
        return m, con

    yield boot
    for m in made:
        m.close()


@pytest.fixture
def uvirt_plugin_installed() -> None:
    """pytester's inner runs load uvirt's plugin through its pytest11 entry point: a module
    that runs them opts in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    from importlib.metadata import entry_points
    if not any(ep.value == "uvirt.testing.pytest_plugin" for ep in entry_points(group="pytest11")):
        pytest.fail("uvirt's pytest11 entry point is not installed: run scripts/setup --test "
                    "(pyproject.toml changed)", pytrace=False)


@pytest.fixture
def no_fd_leak():
    """The test must close every file descriptor it opened (ivshmem: eventfds, sockets,
    shared memory); modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    from uvirt.testing.ivshmem import open_fds
    before = open_fds()
    yield
    assert open_fds() == before, "file descriptors leaked"
