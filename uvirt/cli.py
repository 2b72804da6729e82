"""``uvirt``: the command line.

    uvirt run [QEMU options]       run a multiboot image, QEMU 7.2's options (see README)
    uvirt asm PROG -o IMAGE        assemble a guest program into a multiboot image
    uvirt lspci [device options]   the bus as a guest enumerates it, like lspci -nn -v
    uvirt demo                     bundled guest programs, shown step by step
    uvirt trace [opts] [QEMU options]    run, print every access decoded with the spec's names
    uvirt explain [QEMU options]   run, say what the virtio driver did wrong or left out
    uvirt inspect [--html F] [QEMU options]  run, show the virtqueues at each kick and interrupt
    uvirt ivshmem-server [opts]    QEMU-compatible ivshmem server
    uvirt qtest record [opts]      drive an emulator over qtest, write QEMU's -qtest-log trace

Host mistakes print one line, ``uvirt: ...``, and exit 1 (as QEMU does for its option
errors); set UVIRT_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import os
import sys

from .errors import UvirtError

USAGE = __doc__.split("\n\n")[0]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd == "run":
            from .runner import run_main
            return run_main(rest)
        if cmd == "asm":
            from .firmware import asm_main
            return asm_main(rest)
        if cmd == "lspci":
            from .runner import lspci_main
            return lspci_main(rest)
        if cmd in ("trace", "explain", "inspect"):
            from . import observe
            return getattr(observe, f"{cmd}_main")(rest)
        if cmd == "demo":
            from .demo import demo_main
            return demo_main(rest)
        if cmd == "ivshmem-server":
            from .ivshmem.server import main as server_main
            return server_main(rest)
        if cmd == "qtest":
            from .qtest.record import main as qtest_main
            return qtest_main(rest)
        if cmd in ("--version", "-version", "version"):
            from . import __version__
            print(f"uvirt {__version__} (QEMU 7.2 compatible)")
            return 0
        print(f"uvirt: unknown command '{cmd}' (run, asm, lspci, demo, trace, explain, inspect, ivshmem-server, qtest)", file=sys.stderr)
        return 2
    except UvirtError as e:
        if os.environ.get("UVIRT_DEBUG"):
            raise
        print(f"uvirt: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("uvirt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
