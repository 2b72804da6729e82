"""Shared fixtures.

* ``qemu``: the QEMU 7.2 reference runner (``uvirt.testing.qemu.run_qemu``).  Without
  qemu-system-x86_64 a test using it (or marked ``@pytest.mark.qemu``) is skipped, but
  under ``CI=true`` it FAILS instead: CI must never silently skip differential tests.
* ``firmware``: builds a guest program (bundled name or path) into a temporary image file.
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
def no_fd_leak():
    """The test must close every file descriptor it opened (ivshmem: eventfds, sockets,
    shared memory); modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    from uvirt.testing.ivshmem import open_fds
    before = open_fds()
    yield
    assert open_fds() == before, "file descriptors leaked"
