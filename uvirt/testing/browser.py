"""Headless Chromium for the tests of uvirt's HTML pages (the ring inspector).

Debian's ``chromium`` package (scripts/setup --test installs it) in its own screenshot
mode: no driver library, a fresh profile directory per run, every background service off,
so a screenshot is a pure function of the page.  Running as root needs ``--no-sandbox``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(page: str | os.PathLike[str], png: str | os.PathLike[str], *,
               width: int = 1280, height: int = 1000, timeout: float = 120) -> Path:
    """Render ``page`` (an HTML file) and save a ``width`` x ``height`` PNG."""
    exe = chromium_path()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (scripts/setup --test installs it)")
    png = Path(png).resolve()
    with tempfile.TemporaryDirectory(prefix="uvirt-chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={width},{height}",
               Path(page).resolve().as_uri()]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if r.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium exited {r.returncode} without a screenshot: {r.stderr[-500:]}")
    return png
