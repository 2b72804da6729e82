"""QMP monitors beside a running guest (``uvirt run -qmp unix:SOCK,server=on,wait=off``).

QEMU serves its monitors from the main loop while the vCPU thread runs the guest, and
a command runs under the big lock, between two guest instructions.  uvirt does the
same with one main-loop thread (``MainLoop`` and the endpoints of a qtest session:
``unix:``/``tcp:`` in server or client mode, ``stdio``) and runs each command on the
CPU thread at its next stop (``Machine.call_soon_threadsafe``), so a command never sees
a device in the middle of an access.  Once the guest has stopped, commands run at once.

How the run ends, as with QEMU:

* ``quit`` stops the guest; the run's status is 0; ``system_reset`` too (QEMU under
  ``-no-reboot`` shuts down instead of rebooting, and uvirt never reboots);
* a guest that halts with interrupts off keeps its monitors (QEMU's vCPU just sleeps):
  uvirt keeps serving until ``quit`` or the wall-clock budget, so a host can still take
  a ``screendump`` of what the guest left on the screen;
* any other end (isa-debug-exit, a fault, a reset under -no-reboot) ends the monitors
  with the process, as QEMU exits then.

``wait=on`` (QEMU's default for a server) blocks before the guest starts until a
client connects, with QEMU's message.

``stop`` holds the CPU thread at its next stop (QEMU's vCPU paused: the guest does not
advance, commands then run at once) until ``cont``, ``quit``, ``system_reset``, SIGINT or
the wall-clock budget.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from uvirt.options.config import RunConfig
from uvirt.qtest.loop import MainLoop, open_endpoint
from uvirt.qtest.qmp import QmpContext, QmpMonitor
from uvirt.service_thread import start_service_thread


def control_monitor_chardevs(cfg: RunConfig) -> set[str]:
    return {mon.chardev for mon in cfg.monitors if mon.mode == "control"}


class _OnCpuThread:
    """The QmpContext as the monitors see it: every ``cmd_*`` runs on the CPU thread
    while the guest runs (QEMU's big lock), directly once it has stopped."""

    def __init__(self, ctx: QmpContext, owner: "GuestMonitors") -> None:
        self._ctx = ctx
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._ctx, name)
        if not name.startswith("cmd_"):
            return attr
        if name == "cmd_stop":
            return lambda args: self._owner.stop(attr, args)
        if name == "cmd_cont":
            return lambda args: self._owner.cont(attr, args)
        return lambda args: self._owner.call(attr, args)


class GuestMonitors:
    def __init__(self, built: Any, cfg: RunConfig) -> None:
        self.machine = built.machine
        self.cfg = cfg
        self.loop = MainLoop()
        self.quit_requested = threading.Event()
        self._jobs: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._guest_running = False
        self._resume = threading.Event()
        self.ctx = QmpContext(built.board.services, machine_type=cfg.machine.type,
                              start_paused=cfg.start_paused, name=getattr(cfg, "name", None),
                              devices=built.catalog, reset=self._reset, quit=self._quit)
        self.monitors: list[QmpMonitor] = []
        self._thread: threading.Thread | None = None
        view = _OnCpuThread(self.ctx, self)
        for mon in cfg.monitors:
            if mon.mode != "control":
                continue
            c = next(c for c in cfg.chardevs if c.id == mon.chardev)
            ep = open_endpoint(self.loop, c.backend, c.props, c.id, c.origin)
            qmp = QmpMonitor(view, ep.write, pretty=mon.pretty)    # type: ignore[arg-type]
            ep.on_open, ep.on_data, ep.on_close = qmp.opened, qmp.feed, qmp.closed
            self.monitors.append(qmp)

    # -- commands on the CPU thread
    def call(self, fn, args: dict) -> Any:
        with self._lock:
            direct = not self._guest_running
            if not direct:
                done = threading.Event()
                box: dict[str, Any] = {}
                self._jobs.append((fn, args, box, done))
        if direct:
            return fn(args)
        self.machine.call_soon_threadsafe(self._drain)
        done.wait()
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    return
                fn, args, box, done = self._jobs.popleft()
            try:
                box["result"] = fn(args)
            except BaseException as e:      # QmpError goes back to the monitor
                box["error"] = e
            finally:
                done.set()

    # -- stop / cont: the vCPU held on its own thread
    def stop(self, fn, args: dict) -> Any:
        result = self.call(fn, args)              # status "paused", the STOP event
        with self._lock:
            hold = self._guest_running and self.ctx.status == "paused"
            if hold:
                self._resume.clear()
        if hold:
            self.machine.call_soon_threadsafe(self._hold)
        return result

    def cont(self, fn, args: dict) -> Any:
        result = self.call(fn, args)
        self._resume.set()
        return result

    def _hold(self) -> None:
        """CPU thread: stay here while paused; commands run at once meanwhile."""
        with self._lock:
            if self.ctx.status != "paused":
                return
            self._guest_running = False
        self._drain()
        while not self._resume.wait(0.05):
            if self.machine.stop_requested or self.quit_requested.is_set():
                break
        with self._lock:
            self._guest_running = True

    def _quit(self) -> None:
        self._resume.set()
        self.quit_requested.set()
        self.machine.request_quit()
        self.loop.stop("quit", 0)

    def _reset(self) -> None:
        """QMP ``system_reset``: QEMU under -no-reboot (uvirt always is) shuts down instead
        of rebooting; the guest's own reset request ends the run the same way."""
        self._resume.set()
        self.quit_requested.set()
        self.machine.request_reset()
        self.loop.stop("system_reset", 0)

    # -- life cycle
    def start(self) -> None:
        for ep in self.loop.endpoints:
            ep.start()                       # wait=on blocks here, before the guest runs
        self._guest_running = True
        self._thread = start_service_thread(self._serve, "qmp-main-loop")

    def _serve(self) -> None:
        self.loop.running = True
        while self.loop.running:
            for key, _ in self.loop.sel.select(0.1):
                key.data()
                if not self.loop.running:
                    break

    def guest_stopped(self, halted: bool, deadline: float | None) -> bool:
        """The guest's run ended; commands now run at once.  ``halted``: keep serving
        until ``quit`` or ``deadline`` (monotonic); True if the budget ran out."""
        with self._lock:
            self._guest_running = False
        self._drain()
        if not halted or self.quit_requested.is_set():
            return False
        while not self.quit_requested.wait(0.05):
            if deadline is not None and time.monotonic() >= deadline:
                return True
        return False

    def close(self) -> None:
        self.loop.running = False
        if self._thread is not None:
            self._thread.join(timeout=2)
        for mon in self.monitors:
            mon.close()
        for ep in self.loop.endpoints:
            ep.close()
        self.loop.sel.close()
