"""QMP, the subset libqtest and libqos use, with QEMU 7.2's wire format and errors.

Framing: one JSON value per message over a byte stream (``jsonlex``); each reply is one
line.  ``{"return": ..., "id": ID}`` for success and ``{"id": ID, "error": {"class",
"desc"}}`` for errors (QEMU's dict order), events ``{"timestamp": {"seconds",
"microseconds"}, "event", "data"}``; events go only to monitors past capabilities
negotiation, as in QEMU.

Commands: ``qmp_capabilities quit query-status query-version query-name query-kvm
query-commands query-machines qom-list-types device_add device_del block_resize
system_reset stop cont screendump``.  Arguments are checked as QAPI's input visitor does (members
in schema order: ``Parameter 'X' is missing``, ``Invalid parameter type for 'X',
expected: string``, then ``Parameter 'Y' is unexpected``).

Error classes: ``GenericError`` (bad JSON, bad request shape, bad arguments, command
failures), ``CommandNotFound`` (unknown command, anything before ``qmp_capabilities``,
``qmp_capabilities`` twice), ``DeviceNotFound`` (``device_del`` of an unknown id).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Protocol

from uvirt import __version__
from uvirt.board.services import BoardServices, Peripheral
from uvirt.errors import OptionError
from uvirt.qtest.jsonlex import Streamer
from uvirt.qtest.qom_types import QEMU_DEVICE_TYPES

QEMU_VERSION = {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": f"uvirt {__version__}"}

#: QEMU 7.2's query-machines entries for the machines uvirt models (field order as QEMU
#: prints them).  q35 is left out on purpose: libqos registers q35-only tests from it.
MACHINES = [
    {"hotpluggable-cpus": True, "name": "pc-i440fx-7.2", "numa-mem-supported": False,
     "default-cpu-type": "qemu64-x86_64-cpu", "is-default": True, "cpu-max": 255,
     "deprecated": False, "default-ram-id": "pc.ram", "alias": "pc"},
    {"hotpluggable-cpus": False, "name": "none", "numa-mem-supported": False, "cpu-max": 1,
     "deprecated": False, "default-ram-id": "ram"},
]

#: Built-in QOM types of uvirt's pc board (not creatable with -device).
BOARD_TYPES = ("i440FX-pcihost", "i440FX", "PIIX3", "piix3-ide", "PIIX4_PM")


class QmpError(Exception):
    def __init__(self, desc: str, cls: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc = desc
        self.cls = cls


_TYPE_NAMES = {"str": "string", "int": "integer", "bool": "boolean", "list": "array",
               "obj": "object", "num": "number"}


def _type_ok(kind: str, v: Any) -> bool:
    if kind == "str":
        return isinstance(v, str)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "list":
        return isinstance(v, list)
    return True


def check_args(args: dict, members: tuple[tuple[str, str, bool], ...], *, extra: bool = False) -> dict:
    """QAPI input visitor: (name, kind, required) in schema order."""
    for name, kind, required in members:
        if name not in args:
            if required:
                raise QmpError(f"Parameter '{name}' is missing")
            continue
        if not _type_ok(kind, args[name]):
            raise QmpError(f"Invalid parameter type for '{name}', expected: {_TYPE_NAMES[kind]}")
    if not extra:
        known = {m[0] for m in members}
        for key in args:
            if key not in known:
                raise QmpError(f"Parameter '{key}' is unexpected")
    return args


class DeviceCatalog(Protocol):
    """The ``-device`` table of a built board, as ``device_add`` and ``qom-list-types``
    use it (``uvirt.launch.device_table.DeviceCatalog``: qtest is handed one)."""

    #: driver name -> its type (``.bus``: "pci", "isa"...)
    types: Mapping[str, Any]

    def create(self, driver: str, props: dict[str, str]) -> Any:
        """Create and plug ``driver`` with ``props`` (``OptionError`` in QEMU's words)."""


class QmpContext:
    """What QMP commands act on; one per uvirt process, shared by all monitors.
    ``hooks`` are the board's services (uvirt/board/services.py)."""

    def __init__(self, hooks: BoardServices, *, machine_type: str = "pc-i440fx-7.2",
                 start_paused: bool = False, name: str | None = None,
                 devices: DeviceCatalog | None = None, reset: Callable[[], None] | None = None,
                 quit: Callable[[], None] | None = None, can_run: bool = True) -> None:
        self.hooks = hooks
        self.machine_type = machine_type
        self.status = "prelaunch" if start_paused else "running"
        self.name = name
        self.devices = devices
        self._reset = reset
        self._quit = quit
        self.can_run = can_run

    # -- commands
    def cmd_quit(self, args: dict) -> dict:
        check_args(args, ())
        self.hooks.emit_event("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
        if self._quit is not None:
            self._quit()
        return {}

    def cmd_query_status(self, args: dict) -> dict:
        check_args(args, ())
        return {"status": self.status, "singlestep": False, "running": self.status == "running"}

    def cmd_stop(self, args: dict) -> dict:
        check_args(args, ())
        if self.status == "running":
            self.status = "paused"
            self.hooks.emit_event("STOP")
        return {}

    def cmd_cont(self, args: dict) -> dict:
        check_args(args, ())
        if self.status != "running":
            self.status = "running"
            self.hooks.emit_event("RESUME")
        return {}

    def cmd_system_reset(self, args: dict) -> dict:
        check_args(args, ())
        self.hooks.emit_event("RESET", {"guest": False, "reason": "host-qmp-system-reset"})
        if self._reset is not None:
            self._reset()
        return {}

    def cmd_query_version(self, args: dict) -> dict:
        check_args(args, ())
        return QEMU_VERSION

    def cmd_query_name(self, args: dict) -> dict:
        check_args(args, ())
        return {"name": self.name} if self.name is not None else {}

    def cmd_query_kvm(self, args: dict) -> dict:
        check_args(args, ())
        return {"enabled": False, "present": False}

    def cmd_query_commands(self, args: dict) -> list:
        check_args(args, ())
        return [{"name": n} for n in COMMANDS]

    def cmd_query_machines(self, args: dict) -> list:
        check_args(args, (("compat-props", "bool", False),))
        return [dict(m) for m in MACHINES]

    def known_types(self) -> dict[str, tuple[str, bool]]:
        names = set(BOARD_TYPES) | set(self.devices.types if self.devices is not None else ())
        out: dict[str, tuple[str, bool]] = {}
        for n in names:
            while n in QEMU_DEVICE_TYPES and n not in out:
                out[n] = QEMU_DEVICE_TYPES[n]
                n = out[n][0]
        return out

    def cmd_qom_list_types(self, args: dict) -> list:
        check_args(args, (("implements", "str", False), ("abstract", "bool", False)))
        types = self.known_types()
        want, abstract = args.get("implements"), args.get("abstract", False)
        result = []
        for name, (parent, is_abstract) in sorted(types.items()):
            if is_abstract and not abstract:
                continue
            if want is not None:
                n = name
                while n is not None and n != want:
                    n = types[n][0] if n in types else None
                if n is None:
                    continue
            entry: dict[str, Any] = {"abstract": True} if is_abstract else {}
            entry.update(name=name, parent=parent)
            result.append(entry)
        return result

    def cmd_device_add(self, args: dict) -> dict:
        check_args(args, (("driver", "str", True), ("bus", "str", False), ("id", "str", False)),
                   extra=True)
        driver = args["driver"]
        devices = self.devices
        dtype = devices.types.get(driver) if devices is not None else None
        if dtype is None:
            raise QmpError(f"'{driver}' is not a valid device model name")
        dev_id = args.get("id")
        if dev_id is not None and dev_id in self.hooks.peripherals:
            raise QmpError(f"Duplicate device ID '{dev_id}'")
        bus = args.get("bus") or f"{dtype.bus}.0"
        handler = self.hooks.hotplug.get(bus)
        if handler is None:
            raise QmpError(f"Bus '{bus}' does not support hotplugging")
        props = {k: _prop_str(v) for k, v in args.items() if k not in ("driver", "bus")}
        try:
            with self.hooks.board.batch():
                device = devices.create(driver, props, hotplugged=True)
        except OptionError as e:
            msg = str(e)
            prefix = f"-device {','.join([driver] + [f'{k}={v}' for k, v in props.items()])}: "
            raise QmpError(msg[len(prefix):] if msg.startswith(prefix) else msg) from None
        entry = Peripheral(dev_id or f"#device{id(device)}", driver, bus, device, props)
        if dev_id is not None:
            self.hooks.peripherals[dev_id] = entry
        handler.plug(entry)
        return {}

    def cmd_device_del(self, args: dict) -> dict:
        check_args(args, (("id", "str", True),))
        dev_id = args["id"]
        entry = self.hooks.peripherals.get(dev_id)
        if entry is None:
            raise QmpError(f"Device '{dev_id}' not found", "DeviceNotFound")
        handler = self.hooks.hotplug.get(entry.bus)
        if handler is None:
            raise QmpError(f"Bus '{entry.bus}' does not support hotplugging")
        if entry.unplug_pending:
            raise QmpError(f"Device {dev_id} is already in the process of unplug")
        entry.unplug_pending = True
        handler.unplug_request(entry)
        return {}

    def cmd_block_resize(self, args: dict) -> dict:
        check_args(args, (("device", "str", False), ("node-name", "str", False), ("size", "int", True)))
        device, node = args.get("device"), args.get("node-name")
        backend = self.hooks.block_backends.get(device) if device is not None else None
        if backend is None:
            raise QmpError(f"Cannot find device='{device or ''}' nor node-name='{node or ''}'")
        if args["size"] < 0:
            raise QmpError("Parameter 'size' expects a >0 size")
        from uvirt.backends.block import BlockError
        try:
            backend.resize(args["size"])
        except (BlockError, OSError) as e:
            raise QmpError(str(e) if isinstance(e, BlockError) else e.strerror or str(e)) from None
        return {}


    def cmd_screendump(self, args: dict) -> dict:
        """QEMU 7.2 ``qmp_screendump`` (ui/console.c): the console of ``device``/``head``,
        or console 0; PPM unless ``format`` is ``png``.  Consoles are the display devices'
        heads in creation order (``machine.displays``: virtio-gpu's scanouts, virtio-fb)."""
        check_args(args, (("filename", "str", True), ("device", "str", False), ("head", "int", False),
                          ("format", "str", False)))
        fmt = args.get("format", "ppm")
        if fmt not in ("ppm", "png"):
            raise QmpError(f"Parameter 'format' does not accept value '{fmt}'")
        displays = list(self.hooks.board.displays)
        if "device" in args:
            dev_id, head = args["device"], args.get("head", 0)
            found = [d for i, d in displays if i == dev_id]
            known = set(self.hooks.peripherals) | {i for i, _ in displays if i}
            if not found and dev_id not in known:
                raise QmpError(f"Device '{dev_id}' not found", "DeviceNotFound")
            if not found or not 0 <= head < found[0].heads:
                raise QmpError(f"Device {dev_id} (head {head}) is not bound to a QemuConsole")
            surface = found[0].surface(head)
        else:
            if "head" in args:
                raise QmpError("'head' must be specified together with 'device'")
            consoles = [(d, h) for _, d in displays for h in range(d.heads)]
            if not consoles:
                raise QmpError("There is no console to take a screendump from")
            surface = consoles[0][0].surface(consoles[0][1])
        try:
            surface.save(args["filename"], fmt)
        except OSError as e:
            raise QmpError(f"failed to open file '{args['filename']}': {e.strerror}") from None
        return {}


def _prop_str(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)


COMMANDS: dict[str, str] = {
    "qmp_capabilities": "", "quit": "cmd_quit", "query-status": "cmd_query_status",
    "stop": "cmd_stop", "cont": "cmd_cont", "system_reset": "cmd_system_reset",
    "query-version": "cmd_query_version", "query-name": "cmd_query_name",
    "query-kvm": "cmd_query_kvm", "query-commands": "cmd_query_commands",
    "query-machines": "cmd_query_machines", "qom-list-types": "cmd_qom_list_types",
    "device_add": "cmd_device_add", "device_del": "cmd_device_del",
    "block_resize": "cmd_block_resize", "screendump": "cmd_screendump",
}


class QmpMonitor:
    """One QMP monitor on one chardev: greeting, negotiation, dispatch, events.
    ``write(bytes)`` sends to the client; the caller feeds received bytes."""

    def __init__(self, ctx: QmpContext, write: Callable[[bytes], None], *, pretty: bool = False) -> None:
        self.ctx = ctx
        self._write = write
        self.pretty = pretty
        self.negotiated = False
        self.oob = False
        self.connected = False
        self.streamer = Streamer(self._message)
        ctx.hooks.event_sinks.append(self._event)

    def close(self) -> None:
        if self._event in self.ctx.hooks.event_sinks:
            self.ctx.hooks.event_sinks.remove(self._event)

    def _send(self, obj: dict) -> None:
        if not self.connected:
            return
        text = json.dumps(obj, indent=4 if self.pretty else None)
        self._write((text + "\n").encode())

    # -- chardev events
    def opened(self) -> None:
        """CHR_EVENT_OPENED: a new client; negotiation starts over."""
        self.connected = True
        self.negotiated = False
        self.oob = False
        self.streamer = Streamer(self._message)
        self._send({"QMP": {"version": QEMU_VERSION, "capabilities": ["oob"]}})

    def closed(self) -> None:
        self.connected = False

    def feed(self, data: bytes) -> None:
        self.streamer.feed(data)

    def _event(self, name: str, data: dict | None, ts: dict) -> None:
        if self.negotiated:
            ev: dict[str, Any] = {"timestamp": ts, "event": name}
            if data is not None:
                ev["data"] = data
            self._send(ev)

    # -- requests
    def _message(self, req: Any, err: str | None) -> None:
        if err is not None:
            self._send({"error": {"class": "GenericError", "desc": err}})
            return
        rid = req.get("id") if isinstance(req, dict) else None
        has_id = isinstance(req, dict) and "id" in req
        try:
            result = self._dispatch(req)
        except QmpError as e:
            rsp: dict[str, Any] = {"id": rid} if has_id else {}
            rsp["error"] = {"class": e.cls, "desc": e.desc}
            self._send(rsp)
            return
        rsp = {"return": result}
        if has_id:
            rsp["id"] = rid
        self._send(rsp)

    def _dispatch(self, req: Any) -> Any:
        if not isinstance(req, dict):
            raise QmpError("QMP input must be a JSON object")
        has_exec = False
        for key, val in req.items():
            if key == "execute" or (key == "exec-oob" and self.oob):
                if not isinstance(val, str):
                    raise QmpError(f"QMP input member '{key}' must be a string")
                has_exec = True
            elif key == "arguments":
                if not isinstance(val, dict):
                    raise QmpError("QMP input member 'arguments' must be an object")
            elif key != "id":
                raise QmpError(f"QMP input member '{key}' is unexpected")
        if not has_exec:
            raise QmpError("QMP input lacks member 'execute'")
        if "execute" in req and "exec-oob" in req:
            raise QmpError("QMP input must not contain both 'execute' and 'exec-oob'")
        command = req.get("execute", req.get("exec-oob"))
        args = req.get("arguments", {})
        if not self.negotiated:
            if command != "qmp_capabilities":
                raise QmpError("Expecting capabilities negotiation with 'qmp_capabilities'",
                               "CommandNotFound")
            check_args(args, (("enable", "list", False),))
            for i, cap in enumerate(args.get("enable", [])):
                if cap != "oob":
                    raise QmpError(f"Parameter 'enable[{i}]' does not accept value '{cap}'"
                                   if isinstance(cap, str) else
                                   f"Invalid parameter type for 'enable[{i}]', expected: string")
            self.oob = "oob" in args.get("enable", [])
            self.negotiated = True
            return {}
        method = COMMANDS.get(command)
        if method is None:
            raise QmpError(f"The command {command} has not been found", "CommandNotFound")
        if command == "qmp_capabilities":
            check_args(args, (("enable", "list", False),))
            raise QmpError("Capabilities negotiation is already complete, command ignored",
                           "CommandNotFound")
        return getattr(self.ctx, method)(args)
