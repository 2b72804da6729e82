#!/usr/bin/env python3
"""One ClusterFuzzLite/OSS-Fuzz target: uvirt's device fuzzer (uvirt/fuzz/) on one device,
board backend (no per-input CPU start-up), snapshot reset, every oracle; a finding raises,
so libFuzzer records the input as a crash.  build.sh replaces @DEVICE@."""
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["uvirt"]):
    from uvirt.fuzz.engine import FeatureFeedback, Harness
    from uvirt.fuzz.target import FuzzTarget

DEVICE = "@DEVICE@"


def _target() -> FuzzTarget:
    if DEVICE == "virtio-rng":
        return FuzzTarget(["-device", "virtio-rng-pci,seed=1"], cpu=False)
    if DEVICE == "virtio-blk":
        disk = os.path.join(tempfile.mkdtemp(), "disk.img")
        with open(disk, "wb") as f:
            f.truncate(1 << 20)
        return FuzzTarget(["-drive", f"file={disk},format=raw,if=none,id=d0",
                           "-device", "virtio-blk-pci,drive=d0"], cpu=False)
    return FuzzTarget([], cpu=False, factory="uvirt.fuzz.planted:off_by_one")


HARNESS = Harness(_target(), "board")
FEEDBACK = FeatureFeedback()


class UvirtFinding(Exception):
    pass


def TestOneInput(data: bytes) -> None:
    ex = HARNESS.execute(data)
    FEEDBACK.feed(ex.features)
    if ex.finding is not None:
        raise UvirtFinding(f"{ex.finding.kind}: {ex.finding.detail}")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
