"""The qtest line protocol, as QEMU 7.2's ``softmmu/qtest.c`` serves it.

Requests are lines of words separated by single spaces (``g_strsplit(line, " ")``: two
spaces make an empty word); numbers are C ``strtoul``/``strtoull``/``strtoll`` with base
0 (``0x`` hex, leading-0 octal, a ``-`` wraps).  Replies::

    outb/outw/outl ADDR VALUE            OK
    inb/inw/inl ADDR                     OK 0x%04x
    writeb/w/l/q ADDR VALUE              OK
    readb/w/l/q ADDR                     OK 0x%016x
    read ADDR SIZE                       OK 0x<2*SIZE hex digits>
    b64read ADDR SIZE                    OK <base64>
    write ADDR SIZE 0xDATA               OK             (ERR invalid argument size: DATA < 3 chars)
    b64write ADDR SIZE B64               OK             (ERR ... likewise; length mismatch logged)
    memset ADDR SIZE BYTE                OK
    endianness                           OK little
    clock_step [NS] / clock_set NS       OK <ns>        (only under -accel qtest)
    irq_intercept_in/out QOM-PATH        OK | FAIL Unknown device | FAIL IRQ intercept already enabled
    set_irq_in QOM-PATH NAME N LEVEL     OK | FAIL Unknown device
    module_load TYPE NAME                FAIL           (uvirt has no loadable modules)
    anything else                        FAIL Unknown command 'WORD'

and, after an intercept, asynchronous ``IRQ raise N`` / ``IRQ lower N`` lines before any
reply.  Memory and port accesses take ``address_space_read/write``'s path
(``uvirt.board.memory.physmem``), through the same regions a guest reaches.

Malformed requests (a missing word, a number ``strtoul`` rejects, ``inb 0x10000``,
``read ADDR 0``, an empty line) fail one of QEMU's ``g_assert``s and QEMU aborts; the
server raises ``QtestAbort`` naming the same assertion, and ``uvirt`` ends the same way
(message on stderr, SIGABRT).  ``ERR`` replies and ``FAIL`` lines keep QEMU's quirks:
``ERR`` is written without the log's ``[S +t]`` prefix.

Log (``-qtest-log FILE``; stderr without the option, nothing for ``none``)::

    [I 0.000000] OPENED
    [R +0.000402] outl 0xcf8 0x80000000
    [S +0.000431] OK
    [I +1.234567] CLOSED
"""

from __future__ import annotations

import base64
import signal
import string
import time
from typing import IO, Callable

from uvirt.board.memory import physmem
from uvirt.board.services import BoardServices, GpioList
from uvirt.board.memory.regions import RamRegion

MAX_IRQ = 256
#: uvirt's ceiling for ``read``/``b64read``/``memset`` buffers; QEMU's ``g_malloc`` aborts
#: only when the host cannot allocate, uvirt stops earlier (Python would need 3x).
MAX_BUFFER = 1 << 28
_ULONG = (1 << 64) - 1

#: QOM paths that name containers, not devices: ``DEVICE(obj)`` aborts on them.
NON_DEVICE_PATHS = frozenset({"/machine", "/machine/unattached", "/machine/peripheral",
                              "/machine/peripheral-anon", "/machine/i440fx/pci.0"})


class QtestAbort(Exception):
    """QEMU would abort() on this request: ``message`` is its assertion text."""

    def __init__(self, message: str, request: str = "", sig: int = signal.SIGABRT) -> None:
        super().__init__(message)
        self.message = message
        self.request = request
        self.signal = sig


class _Assert(Exception):
    pass


def _check(cond: bool, text: str) -> None:
    if not cond:
        raise _Assert(text)


# --------------------------------------------------------------------------- numbers


def _c_strtou(s: str) -> tuple[int, str]:
    """glibc strtoull(s, &end, 0): (magnitude with sign applied, rest); raises _Assert
    on no digits.  Overflow is checked by the callers (they know the range)."""
    i, n = 0, len(s)
    while i < n and s[i] in " \t\n\v\f\r":
        i += 1
    neg = False
    if i < n and s[i] in "+-":
        neg = s[i] == "-"
        i += 1
    base = 10
    if s[i:i + 2].lower() == "0x" and i + 2 < n and s[i + 2] in string.hexdigits:
        base, i = 16, i + 2
    elif s[i:i + 1] == "0":
        base = 8
    digits = {10: string.digits, 16: string.hexdigits, 8: "01234567"}[base]
    j = i
    while j < n and s[j] in digits:
        j += 1
    if j == i:
        raise ValueError("EINVAL")
    value = int(s[i:j], base)
    return (-value if neg else value), s[j:]


def qemu_strtou64(s: str) -> int:
    """``qemu_strtou64(s, NULL, 0, &v) == 0`` or ValueError (EINVAL/ERANGE)."""
    v, rest = _c_strtou(s)
    if rest:
        raise ValueError("EINVAL")
    if abs(v) > _ULONG:
        raise ValueError("ERANGE")
    return v & _ULONG


def qemu_strtoi64(s: str, bits: int = 64) -> int:
    v, rest = _c_strtou(s)
    if rest:
        raise ValueError("EINVAL")
    if not -(1 << (bits - 1)) <= v < (1 << (bits - 1)):
        raise ValueError("ERANGE")
    return v


def _u64(word: str) -> int:
    try:
        return qemu_strtou64(word)
    except ValueError:
        raise _Assert("ret == 0") from None


def _i64(word: str, bits: int = 64) -> int:
    try:
        return qemu_strtoi64(word, bits)
    except ValueError:
        raise _Assert("ret == 0" if bits == 64 else "!ret") from None


# --------------------------------------------------------------------------- base64


_B64_RANK = {c: i for i, c in enumerate(string.ascii_uppercase + string.ascii_lowercase
                                        + string.digits + "+/")}
_B64_RANK["="] = 0


def glib_base64_decode(text: str) -> bytes:
    """``g_base64_decode_step``: skips characters outside the alphabet, no padding
    rules, a trailing partial quantum is dropped."""
    out = bytearray()
    v = i = 0
    last = ["", ""]
    for c in text:
        rank = _B64_RANK.get(c)
        if rank is None:
            continue
        last[1], last[0] = last[0], c
        v = ((v << 6) | rank) & 0xFFFFFFFF
        i += 1
        if i == 4:
            out.append((v >> 16) & 0xFF)
            if last[1] != "=":
                out.append((v >> 8) & 0xFF)
            if last[0] != "=":
                out.append(v & 0xFF)
            i = 0
    return bytes(out)


def _hex2nib(c: str) -> int:
    if "0" <= c <= "9":
        return ord(c) - 48
    if "a" <= c <= "f":
        return ord(c) - 87
    if "A" <= c <= "F":
        return ord(c) - 55
    return -1


# --------------------------------------------------------------------------- server


class QtestServer:
    """One qtest chardev's protocol state.  ``send(text)`` writes to the client; the
    caller feeds received bytes with ``feed`` and reports ``opened``/``closed``."""

    def __init__(self, memory, io, hooks: BoardServices, send: Callable[[str], None], *,
                 log: IO[str] | None = None, clock_enabled: bool = True,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self.memory = memory
        self.io = io
        self.hooks = hooks
        self._send = send
        self.log = log
        self.clock_enabled = clock_enabled
        self._timer = timer
        self._t0: float | None = None
        self.is_open = False
        self.inbuf = bytearray()
        self.irq_levels = [0] * MAX_IRQ
        self.intercept_dev: str | None = None
        self.requests = 0

    # -- chardev events (QEMU qtest_event)
    def _elapsed(self) -> float:
        return 0.0 if self._t0 is None else self._timer() - self._t0

    def opened(self) -> None:
        self.irq_levels = [0] * MAX_IRQ
        self._t0 = self._timer()
        self.is_open = True
        self._log(f"[I {0.0:.6f}] OPENED\n")

    def closed(self) -> None:
        if not self.is_open:
            return
        self.is_open = False
        self._log(f"[I +{self._elapsed():.6f}] CLOSED\n")
        self._t0 = None
        self.inbuf.clear()

    # -- output
    def _log(self, text: str) -> None:
        if self.log is not None:
            self.log.write(text)
            self.log.flush()

    def _prefix(self) -> None:
        if self.log is not None and self.is_open:
            self.log.write(f"[S +{self._elapsed():.6f}] ")

    def send(self, text: str) -> None:
        self._send(text)
        if self.log is not None and self.is_open:
            self.log.write(text)
            self.log.flush()

    def reply(self, text: str) -> None:
        self._prefix()
        self.send(text + "\n")

    def irq_handler(self, n: int, level: int) -> None:
        """``qtest_irq_handler``: report an intercepted line when its level changes."""
        if n < MAX_IRQ and self.irq_levels[n] != level:
            self.irq_levels[n] = level
            self._prefix()
            self.send(f"IRQ {'raise' if level else 'lower'} {n}\n")

    # -- input
    def feed(self, data: bytes) -> None:
        """Append received bytes and process every complete line (``qtest_process_inbuf``).
        As in QEMU, the buffer is a C string: a NUL hides everything after it."""
        self.inbuf += data
        while True:
            nul = self.inbuf.find(b"\0")
            end = self.inbuf.find(b"\n", 0, nul if nul >= 0 else len(self.inbuf))
            if end < 0:
                return
            line = bytes(self.inbuf[:end]).decode("latin-1")
            del self.inbuf[:end + 1]
            self.process(line)

    def process(self, line: str) -> None:
        words = line.split(" ") if line else []
        self.requests += 1
        if self.log is not None:
            self.log.write(f"[R +{self._elapsed():.6f}]" + "".join(" " + w for w in words) + "\n")
            self.log.flush()
        try:
            _check(bool(words), "command")
            self._dispatch(words)
        except _Assert as e:
            raise QtestAbort(f"assertion failed: ({e})", line) from None

    # -- commands
    def _trace(self, name: str, addr: int, size: int, value: int) -> None:
        """A sized qtest access as the declared trace event a guest's would be (the
        machine's tracer hangs off its memory map; RAM accesses are not register
        accesses and are not traced, as a guest's are not)."""
        tracer = getattr(self.memory, "tracer", None)
        if tracer is None or not tracer.enabled:
            return
        if name.startswith("pio"):
            tracer.emit(name, port=addr, size=size, value=value)
            return
        piece = self.memory.lookup(addr)
        if piece is not None and isinstance(piece.region, RamRegion):
            return
        tracer.emit(name, addr=addr, size=size, value=value)

    def _dispatch(self, w: list[str]) -> None:
        cmd = w[0]
        arg = lambda i: w[i] if i < len(w) else None  # noqa: E731
        if cmd in ("irq_intercept_out", "irq_intercept_in"):
            _check(arg(1) is not None, "words[1]")
            self._irq_intercept(cmd, w[1])
        elif cmd == "set_irq_in":
            _check(len(w) >= 5, "words[1] && words[2] && words[3] && words[4]")
            self._set_irq_in(w[1], w[2], w[3], w[4])
        elif cmd in ("outb", "outw", "outl"):
            _check(len(w) >= 3, "words[1] && words[2]")
            addr, value = _u64(w[1]), _u64(w[2])
            _check(addr <= 0xFFFF, "addr <= 0xffff")
            size = {"b": 1, "w": 2, "l": 4}[cmd[3]]
            value &= (1 << (8 * size)) - 1
            self._trace("pio_write", addr, size, value)
            physmem.write(self.io, addr, value.to_bytes(size, "little"))
            self.reply("OK")
        elif cmd in ("inb", "inw", "inl"):
            _check(len(w) >= 2, "words[1]")
            addr = _u64(w[1])
            _check(addr <= 0xFFFF, "addr <= 0xffff")
            size = {"b": 1, "w": 2, "l": 4}[cmd[2]]
            value = int.from_bytes(physmem.read(self.io, addr, size), "little")
            self._trace("pio_read", addr, size, value)
            self.reply(f"OK 0x{value:04x}")
        elif cmd in ("writeb", "writew", "writel", "writeq"):
            _check(len(w) >= 3, "words[1] && words[2]")
            addr, value = _u64(w[1]), _u64(w[2])
            size = {"b": 1, "w": 2, "l": 4, "q": 8}[cmd[5]]
            value &= (1 << (8 * size)) - 1
            self._trace("mmio_write", addr, size, value)
            physmem.write(self.memory, addr, value.to_bytes(size, "little"))
            self.reply("OK")
        elif cmd in ("readb", "readw", "readl", "readq"):
            _check(len(w) >= 2, "words[1]")
            addr = _u64(w[1])
            size = {"b": 1, "w": 2, "l": 4, "q": 8}[cmd[4]]
            value = int.from_bytes(physmem.read(self.memory, addr, size), "little")
            self._trace("mmio_read", addr, size, value)
            self.reply(f"OK 0x{value:016x}")
        elif cmd == "read":
            _check(len(w) >= 3, "words[1] && words[2]")
            addr, length = _u64(w[1]), _u64(w[2])
            _check(length != 0, "len")
            self._alloc(length)
            self.reply("OK 0x" + physmem.read(self.memory, addr, length).hex())
        elif cmd == "b64read":
            _check(len(w) >= 3, "words[1] && words[2]")
            addr, length = _u64(w[1]), _u64(w[2])
            self._alloc(length)
            data = physmem.read(self.memory, addr, length)
            self.reply("OK " + base64.b64encode(data).decode())
        elif cmd == "write":
            if (args := self._data_args(w)) is None:
                return
            addr, length, text = args
            self._alloc(length)
            data = bytearray(length)
            for i in range(min(length, (len(text) - 2) // 2)):
                data[i] = ((_hex2nib(text[2 * i + 2]) << 4) | _hex2nib(text[2 * i + 3])) & 0xFF
            physmem.write(self.memory, addr, data)
            self.reply("OK")
        elif cmd == "memset":
            _check(len(w) >= 4, "words[1] && words[2] && words[3]")
            addr, length, pattern = _u64(w[1]), _u64(w[2]), _u64(w[3])
            if length:
                self._alloc(length)
                physmem.write(self.memory, addr, bytes([pattern & 0xFF]) * length)
            self.reply("OK")
        elif cmd == "b64write":
            if (args := self._data_args(w)) is None:
                return
            addr, length, text = args
            decoded = glib_base64_decode(text)
            if len(decoded) != length:
                self._prefix()
                self._log(f"b64write: data length mismatch (told {length}, found {len(decoded)})\n")
            self._alloc(length)
            # QEMU decodes in place and writes SIZE bytes of that buffer: the decoded
            # bytes, then what is left of the text, its NUL, then heap bytes (0 here).
            buf = bytearray(text.encode("latin-1")) + b"\0"
            buf[:len(decoded)] = decoded
            data = bytes(buf[:length]).ljust(length, b"\0")
            physmem.write(self.memory, addr, data)
            self.reply("OK")
        elif cmd == "endianness":
            self.reply("OK little")
        elif self.clock_enabled and cmd == "clock_step":
            ns = _i64(w[1]) if len(w) > 1 else None
            self.reply(f"OK {self.hooks.clock.step(ns)}")
        elif cmd == "module_load":
            _check(len(w) >= 3, "words[1] && words[2]")
            self.reply("FAIL")
        elif self.clock_enabled and cmd == "clock_set":
            _check(len(w) >= 2, "words[1]")
            self.reply(f"OK {self.hooks.clock.warp(_i64(w[1]))}")
        else:
            self.reply(f"FAIL Unknown command '{cmd}'")

    def _data_args(self, w: list[str]) -> tuple[int, int, str] | None:
        """``write``/``b64write ADDR SIZE DATA``: address, size and data text; None, after
        QEMU's ``ERR invalid argument size``, when the data is shorter than 3 characters."""
        _check(len(w) >= 4, "words[1] && words[2] && words[3]")
        addr, length = _u64(w[1]), _u64(w[2])
        text = w[3]
        if len(text) < 3:
            self.send("ERR invalid argument size\n")
            return None
        return addr, length, text

    def _alloc(self, length: int) -> None:
        if length > MAX_BUFFER:
            raise QtestAbort(f"failed to allocate {length} bytes", sig=signal.SIGTRAP)

    def _device(self, path: str) -> str | None:
        resolved = self.hooks.resolve(path)
        if resolved is not None and resolved.rstrip("/") in NON_DEVICE_PATHS | {""}:
            raise _Assert(f"object '{resolved}' is not an instance of type device")
        return resolved

    def _irq_intercept(self, cmd: str, path: str) -> None:
        dev = self._device(path)
        if dev is None:
            self.reply("FAIL Unknown device")
            return
        if self.intercept_dev is not None:
            self.reply("OK" if self.intercept_dev == dev else "FAIL IRQ intercept already enabled")
            return
        gdev = self.hooks.gpio_devices.get(dev)
        direction = "out" if cmd[14] == "o" else "in"
        for gl in (gdev.lists if gdev is not None else []):
            if gl.name is None and gl.direction == direction:    # named lists: not supported
                gl.intercept = self.irq_handler
        self.intercept_dev = dev
        self.reply("OK")

    def _set_irq_in(self, path: str, name: str, num_s: str, level_s: str) -> None:
        dev = self._device(path)
        if dev is None:
            self.reply("FAIL Unknown device")
            return
        list_name = None if name == "unnamed-gpio-in" else name
        num, level = _i64(num_s, 32), _i64(level_s, 32)
        gdev = self.hooks.gpio_devices.get(dev)
        gl: GpioList | None = gdev.find(list_name, "in") if gdev is not None else None
        _check(gl is not None and 0 <= num < gl.count, "n >= 0 && n < gpio_list->num_in")
        assert gl is not None
        gl.set(num, level)
        self.reply("OK")
