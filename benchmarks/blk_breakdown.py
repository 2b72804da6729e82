"""Where one virtio-blk 4 KiB read spends its time (issue 14), by substitution, while
benchmarks/guests/blk_read_loop.S runs (legacy transport, as ``bench_blk_reads``).

    python -m benchmarks.blk_breakdown [N [REPS]]

Each row is CPU microseconds per request: a run of N requests minus a run of 100 (boot
and exit cancel out), the minimum over REPS runs, in-process.  The rows replace parts by
stand-ins, so the differences are what those parts cost:

* uvirt as it is, and the Python calls one request makes (cProfile, the same difference);
* the block back end's ``pread`` replaced by a ready 4 KiB buffer (the host's syscall);
* the device model replaced by a minimal handler: the ring fields through one memoryview
  with ``struct``, the ``pread``, the status byte, the used ring, ISR and INTx, no checks
  (what is left is the guest, Unicorn's exit, the port dispatch and the kick's device-work
  hop); and that handler without the ``pread``.

CPU time, because on a shared machine it is what other processes disturb least.
"""
from __future__ import annotations

import cProfile
import os
import pstats
import struct
import sys
import tempfile
import time

from uvirt.backends import block
from uvirt.testing.guest import run_uvirt
from uvirt.virtio import blk

from .bench_virtio import blk_read_images

N0 = 100
_READY = os.urandom(4096)


def _ready_read(orig):
    def read(self, offset: int, n: int) -> bytes:
        return _READY if n == len(_READY) else orig(self, offset, n)
    return read


def _minimal_handler(with_pread: bool):
    """Only what the guest needs to see its read complete (no validation at all)."""
    def handle_output(self, index):
        q = self.queues[0]
        w = q._win
        v, d = w.view, w.delta
        avail_idx = struct.unpack_from("<H", v, q.avail + 2 - d)[0]
        while q.last_avail_idx != avail_idx:
            head = struct.unpack_from("<H", v, q.avail + 4 + 2 * (q.last_avail_idx % q.size) - d)[0]
            q.last_avail_idx = (q.last_avail_idx + 1) & 0xFFFF
            a0, _l0, _f0, n0 = struct.unpack_from("<QIHH", v, q.desc + 16 * head - d)
            a1, l1, _f1, n1 = struct.unpack_from("<QIHH", v, q.desc + 16 * n0 - d)
            a2, _l2, _f2, _n2 = struct.unpack_from("<QIHH", v, q.desc + 16 * n1 - d)
            sector = struct.unpack_from("<Q", v, a0 + 8 - d)[0]
            v[a1 - d:a1 - d + l1] = os.pread(self.backend.fd, l1, sector * 512) if with_pread else _READY
            v[a2 - d] = 0
            struct.pack_into("<II", v, q.used + 4 + 8 * (q.used_idx % q.size) - d, head, l1 + 1)
            q.used_idx = (q.used_idx + 1) & 0xFFFF
            struct.pack_into("<H", v, q.used + 2 - d, q.used_idx)
        self.isr |= 1
        self.transport.notify_vector(self.vectors[0])
    return handle_output


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 3000
    reps = int(argv[1]) if len(argv) > 1 else 5
    with tempfile.TemporaryDirectory() as tmp:
        args, paths = blk_read_images(tmp, (N0, n))      # the images bench_blk_reads runs

        def run(p):
            r = run_uvirt(p, args)
            assert r.exit_code == 1, r

        def per_request() -> float:
            best = float("inf")
            for _ in range(reps):
                times = []
                for p in paths:
                    t = time.process_time()
                    run(p)
                    times.append(time.process_time() - t)
                best = min(best, (times[1] - times[0]) / (n - N0))
            return best * 1e6

        def calls() -> float:
            counts = []
            for p in paths:
                prof = cProfile.Profile()
                prof.runcall(run, p)
                counts.append(pstats.Stats(prof).total_calls)
            return (counts[1] - counts[0]) / (n - N0)

        run(paths[0])                                   # warm-up
        orig_handler, orig_read = blk.VirtioBlk.handle_output, block.RawFile.read
        rows = [("uvirt as it is", {}),
                ("  back end pread replaced by a ready buffer", {"read": _ready_read(orig_read)}),
                ("minimal handler (ring via struct, pread, INTx)", {"handler": _minimal_handler(True)}),
                ("  minimal handler without the pread", {"handler": _minimal_handler(False)})]
        print(f"virtio-blk 4 KiB read, CPU us per request (min of {reps}, {n} - {N0} requests)")
        for name, patch in rows:
            blk.VirtioBlk.handle_output = patch.get("handler", orig_handler)
            block.RawFile.read = patch.get("read", orig_read)
            try:
                line = f"{name:<50} {per_request():7.2f} us"
                if not patch:
                    line += f"   {calls():.0f} Python calls per request"
            finally:
                blk.VirtioBlk.handle_output, block.RawFile.read = orig_handler, orig_read
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
