"""A qtest/QMP session: ``uvirt run -accel qtest -qtest ... -mon/-qmp ...``.

The board is built without a CPU and without the firmware step (QEMU runs no firmware
under qtest: every BAR starts unassigned, config space holds reset values), then the
main loop serves the qtest chardev and the QMP monitors until QMP ``quit``, SIGTERM,
SIGINT or SIGHUP (exit status 0, as QEMU), or until every client is gone (QEMU keeps
running after its qtest client closes; uvirt ends with status 0 so that a replay
through ``-qtest stdio < FILE`` terminates).  ``-uvirt-timeout S`` adds a wall-clock
budget (status 124); without it there is none.

A request that QEMU would abort on (``QtestAbort``) ends uvirt the same way: the
assertion on stderr, then SIGABRT.

The runner (uvirt/launch/runner.py) hands the session what builds the board, and this
package imports nothing from uvirt.launch: the session sees the built board, its
services and its ``-device`` catalog.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import IO, Any, Callable

from uvirt.board.services import Peripheral
from uvirt.options.config import ChardevOpts, ChardevRef, RunConfig
from uvirt.qtest.loop import Endpoint, MainLoop, open_endpoint
from uvirt.qtest.qmp import QmpContext, QmpMonitor
from uvirt.qtest.server import QtestAbort, QtestServer

IOAPIC_PATH = "/machine/i440fx/ioapic"
IOAPIC_PINS = 24


def _board_paths(board: Any, cfg: RunConfig) -> None:
    h = board.services
    if cfg.machine.type == "none":
        return
    h.qom_paths |= {"/machine/i440fx", "/machine/i440fx/pci.0", "/machine/fw_cfg"}
    if IOAPIC_PATH not in h.gpio_devices:
        # Until the interrupt controllers register theirs: 24 inputs that go nowhere,
        # so libqos's "irq_intercept_in ioapic" is answered OK as on QEMU.
        h.gpio(IOAPIC_PATH).add_in(IOAPIC_PINS, lambda n, level: None)


def _open_log(path: str | None) -> IO[str] | None:
    if path is None:
        return sys.stderr
    if path == "none":
        return None
    return open(path, "w+")


def _chardev(cfg: RunConfig, chardev_id: str) -> ChardevOpts:
    for c in cfg.chardevs:
        if c.id == chardev_id:
            return c
    raise AssertionError(chardev_id)


class Session:
    """``build()`` builds the board (``uvirt.launch.runner.build_machine`` without a CPU):
    a ``Built`` with ``board``, ``catalog`` (the ``-device`` table), ``devices``,
    ``chardevs`` and ``close()``."""

    def __init__(self, cfg: RunConfig, build: Callable[[], Any]) -> None:
        self.cfg = cfg
        self.built = build()
        self.board = board = self.built.board
        self.hooks = h = board.services
        _board_paths(board, cfg)
        types = self.built.catalog.types
        for opts, device in self.built.devices:
            if opts.id is not None:
                dtype = types.get(opts.driver)
                bus = f"{dtype.bus}.0" if dtype is not None else "main-system-bus"
                h.peripherals[opts.id] = Peripheral(opts.id, opts.driver, opts.props.get("bus", bus),
                                                    device, dict(opts.props))
        self.loop = MainLoop()
        h.attach_loop(self.loop)
        self.log: IO[str] | None = None
        self.qtest: QtestServer | None = None
        self.monitors: list[QmpMonitor] = []
        self.aborted = False
        self.ctx = QmpContext(h, machine_type=cfg.machine.type, start_paused=cfg.start_paused,
                              devices=self.built.catalog, reset=self._reset,
                              quit=lambda: self.loop.stop("quit", 0))

    def _reset(self) -> None:
        self.board.reset()

    def _open(self) -> list[Endpoint]:
        cfg, loop = self.cfg, self.loop
        endpoints: list[Endpoint] = []
        if cfg.qtest is not None:
            spec = cfg.qtest
            if isinstance(spec, ChardevRef):
                spec = _chardev(cfg, spec.id)
            if spec.backend not in ("null", "none"):
                self.log = _open_log(cfg.qtest_log)
                ep = open_endpoint(loop, spec.backend, spec.props, "qtest", spec.origin)
                server = QtestServer(self.board.memory, self.board.io, self.hooks,
                                     lambda text, ep=ep: ep.write(text.encode("latin-1")), log=self.log,
                                     clock_enabled=cfg.accelerator == "qtest")
                ep.on_open, ep.on_data, ep.on_close = server.opened, server.feed, server.closed
                self.qtest = server
                endpoints.append(ep)
        for mon in cfg.monitors:
            if mon.mode != "control":
                continue
            c = _chardev(cfg, mon.chardev)
            ep = open_endpoint(loop, c.backend, c.props, c.id, c.origin)
            qmp = QmpMonitor(self.ctx, ep.write, pretty=mon.pretty)
            ep.on_open, ep.on_data, ep.on_close = qmp.opened, qmp.feed, qmp.closed
            self.monitors.append(qmp)
            endpoints.append(ep)
        return endpoints

    def run(self) -> int:
        """Serve until quit/signal/every client gone; the exit status.  Raises
        ``QtestAbort`` (after cleaning up) when QEMU would have aborted."""
        try:
            endpoints = self._open()
            self.loop.install_signals()
            for ep in endpoints:
                ep.start()
            try:
                self.loop.run(timeout=self.cfg.uvirt.timeout or None)
            except QtestAbort:
                self.aborted = True           # QEMU dies here: no CLOSED line
                raise
            if self.loop.exit_code == 124:
                print(f"uvirt: {self.loop.stop_reason}", file=sys.stderr)
            return self.loop.exit_code
        finally:
            self.close()

    def close(self) -> None:
        if self.qtest is not None and not self.aborted:
            self.qtest.closed()
        for mon in self.monitors:
            mon.close()
        self.loop.close()
        if self.log is not None and self.log is not sys.stderr:
            self.log.close()
        elif self.log is sys.stderr:
            sys.stderr.flush()
        for ch in self.built.chardevs:
            ch.flush()
        self.built.close()


def main_serve(cfg: RunConfig, build: Callable[[], Any]) -> int:
    """``uvirt run`` under qtest: build the board (``build()``), serve, and end as QEMU
    would (status or abort)."""
    try:
        return Session(cfg, build).run()
    except OSError as e:                   # a chardev the host refuses: one line, as QEMU
        print(f"uvirt: {e.strerror or e}", file=sys.stderr)
        return 1
    except QtestAbort as e:
        where = f" in request '{e.request}'" if e.request else ""
        # glib's g_assert: "**\nERROR:..." on stderr, "Bail out! ERROR:..." on stdout
        print(f"**\nERROR: uvirt qtest: {e.message}{where}", file=sys.stderr)
        print(f"Bail out! ERROR: uvirt qtest: {e.message}", file=sys.stdout)
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(e.signal, signal.SIG_DFL)
        os.kill(os.getpid(), e.signal)
        return 128 + e.signal
