"""Shared benchmark helpers: every figure is a ratio against a baseline measured in the
same repetition (the machines here are noisy: absolute times vary, ratios hold)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

GUESTS = Path(__file__).resolve().parent / "guests"


@dataclass
class Result:
    name: str
    baseline: str
    ratio: float            # median of per-repetition ratios
    lo: float
    hi: float
    target: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "MISS"
        return (f"{mark} {self.name:<44} {self.ratio:8.3f}x [{self.lo:.3f}-{self.hi:.3f}] "
                f"vs {self.baseline:<28} target {self.target}  {self.detail}")


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def paired(baseline: Callable[[], object], variant: Callable[[], object], reps: int) -> list[float]:
    """variant/baseline time ratio per repetition, baseline and variant back to back."""
    baseline(), variant()                       # warm-up: imports, translation caches
    ratios = []
    for i in range(reps):
        if i % 2:
            v, b = timed(variant), timed(baseline)
        else:
            b, v = timed(baseline), timed(variant)
        ratios.append(v / b)
    return ratios


def summarize(ratios: list[float]) -> tuple[float, float, float]:
    return statistics.median(ratios), min(ratios), max(ratios)


def build_guest(name: str, **defines: int) -> bytes:
    from uvirt.firmware import build
    return build(GUESTS / f"{name}.S", defines=defines or None)
