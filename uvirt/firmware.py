"""Guest-program toolchain: assemble ``firmware/*.S`` into multiboot v1 flat images.

A guest program is Intel-syntax x86-32 assembly, assembled by keystone at 0x100000.  The
image starts with the 32-byte multiboot v1 header (emitted by ``firmware/include/uvirt.inc``,
which every program includes first) and is loaded at 1 MiB by QEMU's ``-kernel`` and by
uvirt alike (see docs/qemu-7.2-observed.md).

Keystone is driven through a small preprocessor of our own, because keystone

* has no ``.include`` across files: ``.include "name.inc"`` is expanded here, searching
  the including file's directory, then ``firmware/include/``; every file is included
  at most once (implicit include guard), so libraries may include each other freely;
* silently emits *nothing* for a macro that uses ``\\@`` and reports errors without a
  line number: macros (``.macro NAME a, b=default`` ... ``.endm``, ``\\a``, ``\\@``,
  ``\\()``) are therefore expanded here too, and every line of the flat text keeps its
  origin (file:line, plus the macro it came from) so an error names the source line;
* treats ``;`` as a statement separator: here ``;``, ``#`` and ``//`` start a comment
  (outside string literals);
* silently accepts an unclosed ``[`` (``mov eax, [ebx+`` assembles to ``mov eax, [ebx]``):
  unbalanced brackets are rejected here.

Other keystone facts a program writer needs (checked with capstone in the tests):
``mov eax, label`` loads the *address* (immediate; ``offset`` is not accepted), ``[label]``
loads memory; ``lidt/lgdt/sidt/sgdt`` get a bogus 0x66 prefix (use the ``LIDT``/``LGDT``/
``SIDT``/``SGDT`` macros of uvirt.inc); far ``jmp sel:off`` is rejected (``LJMP`` macro);
``$`` is not supported; GNU numeric local labels (``1:`` ... ``jmp 1b``/``1f``) are
renamed here to unique labels (``_rename_local_labels``), as keystone rejects them;
``.ascii`` knows ``\\n \\t \\\\ \\"`` but not ``\\x41``.  Setting a ``sym_resolver`` makes
keystone read bare numbers as hex (``10`` = 0x10): the real build never sets one.

Errors are reported as a compiler reports them: every error of the file at once, one
``file:line: message: source`` line each (``_locate_errors``), up to ``MAX_ERRORS``.

Build parameters (``defines``) are prepended as ``.set NAME, value`` lines, so a program can
give defaults with ``.ifndef NAME`` / ``.set NAME, default`` / ``.endif``.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from uvirt.errors import FirmwareBuildError, UvirtError

LOAD_ADDR = 0x100000
MB_MAGIC = 0x1BADB002
MB_FLAGS = 0x00010000  # bit 16: the a.out kludge (address fields valid), nothing else
MB_HEADER_SIZE = 32
END_LABEL = "__uvirt_image_end"
# Bump when the preprocessor or the image layout changes: part of the cache key.
TOOLCHAIN_VERSION = "uvirt-fw-4"

_REPO = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = _REPO / "firmware"
INCLUDE_DIR = FIRMWARE_DIR / "include"

_INCLUDE_RE = re.compile(r'^\s*\.include\s+"([^"]+)"\s*$')
_MACRO_RE = re.compile(r"^\s*\.macro\s+([A-Za-z_.$][\w.$]*)\s*(.*)$")
_ENDM_RE = re.compile(r"^\s*\.endm\b")
_LABEL_RE = re.compile(r"^\s*([A-Za-z_.$][\w.$]*)\s*:")
_ANY_LABEL_RE = re.compile(r"^\s*([A-Za-z_.$][\w.$]*|\d+)\s*:")
_LOCAL_DEF_RE = re.compile(r"^(\s*)(\d+)(\s*:)")
_LOCAL_REF_RE = re.compile(r"(?<![\w.$])(\d+)([bf])(?![\w.$])")
_SET_RE = re.compile(r"^\s*\.(?:set|equ)\s+([A-Za-z_.$][\w.$]*)\s*,")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BLOCK_OPEN_RE = re.compile(r"^\s*\.(if\w*|rept|irp\w*)\b")
_BLOCK_CLOSE_RE = re.compile(r"^\s*\.(endif|endr)\b")
_MAX_MACRO_DEPTH = 32
#: a file with more errors than this reports the first MAX_ERRORS (as compilers cap theirs)
MAX_ERRORS = 20


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a line of the flat text came from."""

    file: str
    line: int
    macro: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where} (in macro {self.macro})" if self.macro else where


@dataclass(frozen=True, slots=True)
class _Line:
    text: str
    origin: Origin
    written: str | None = None      # the text before local labels were renamed

    @property
    def shown(self) -> str:
        return (self.written if self.written is not None else self.text).strip()


@dataclass(slots=True)
class _Macro:
    name: str
    params: list[tuple[str, str | None]]  # (name, default)
    body: list[_Line]


# --------------------------------------------------------------------------- lexing


def _strip_comment(text: str) -> str:
    """Drop a ``;``, ``#`` or ``//`` comment that is outside string/char literals."""
    quote = None
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c == '"':
            quote = c
        elif c == "'" and i + 2 < len(text) and text[i + 2] == "'":
            i += 3  # character literal such as 'A' (or ';')
            continue
        elif c in ";#" or text.startswith("//", i):
            return text[:i].rstrip()
        i += 1
    return text.rstrip()


def _brackets_balanced(text: str) -> bool:
    depth = 0
    quote = False
    for c in text:
        if c == '"':
            quote = not quote
        elif quote:
            continue
        elif c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def _split_args(text: str) -> list[str]:
    """Split macro arguments on commas outside quotes and brackets."""
    args: list[str] = []
    cur: list[str] = []
    quote = False
    depth = 0
    for c in text:
        if c == '"':
            quote = not quote
        elif not quote and c in "[(":
            depth += 1
        elif not quote and c in "])":
            depth -= 1
        if c == "," and not quote and depth == 0:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
    tail = "".join(cur).strip()
    if tail or args:
        args.append(tail)
    return args


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(_REPO))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- preprocessing


class _Preprocessor:
    def __init__(self) -> None:
        self.files: list[Path] = []  # every file read, in order (for the cache key)
        self.texts: list[bytes] = []
        self._seen: set[Path] = set()
        self.macros: dict[str, _Macro] = {}
        self._counter = 0
        #: errors that do not stop preprocessing (the rest of the file is still checked)
        self.errors: list[tuple[Origin, str]] = []

    # ---- includes
    def read(self, path: Path, origin: Origin | None = None) -> list[_Line]:
        path = path.resolve()
        if path in self._seen:
            return []  # once semantics: a second .include of the same file is empty
        self._seen.add(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            where = f"{origin}: " if origin else ""
            raise FirmwareBuildError(f"{where}cannot read {path}: {exc.strerror}") from None
        self.files.append(path)
        self.texts.append(data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise FirmwareBuildError(f"{_rel(path)}: not UTF-8 text") from None
        out: list[_Line] = []
        name = _rel(path)
        for n, raw in enumerate(text.splitlines(), 1):
            org = Origin(name, n)
            m = _INCLUDE_RE.match(raw)
            if m:
                out.extend(self.read(self._find_include(m.group(1), path, org), org))
                continue
            line = _strip_comment(raw)
            if ".include" in line.split('"')[0]:
                self.errors.append((org, 'malformed .include (want .include "name.inc")'))
                continue
            if line.strip():
                if not _brackets_balanced(line):
                    self.errors.append((org, f"unbalanced [ ] in {line.strip()!r}"))
                    continue
                out.append(_Line(line, org))
        return out

    @staticmethod
    def _find_include(name: str, including: Path, origin: Origin) -> Path:
        for d in (including.parent, INCLUDE_DIR):
            cand = d / name
            if cand.is_file():
                return cand
        raise FirmwareBuildError(
            f"{origin}: include file {name!r} not found (searched {_rel(including.parent)}, "
            f"{_rel(INCLUDE_DIR)})"
        )

    # ---- macros
    def expand(self, lines: list[_Line], depth: int = 0) -> list[_Line]:
        out: list[_Line] = []
        i = 0
        while i < len(lines):
            ln = lines[i]
            m = _MACRO_RE.match(ln.text)
            if m:
                if depth:
                    raise FirmwareBuildError(f"{ln.origin}: .macro inside a macro is not supported")
                i = self._define(lines, i, m)
                continue
            if _ENDM_RE.match(ln.text):
                raise FirmwareBuildError(f"{ln.origin}: .endm without .macro")
            try:
                out.extend(self._maybe_invoke(ln, depth))
            except FirmwareBuildError as exc:
                if depth:
                    raise
                # a bad invocation is reported with the others; the line is dropped
                text, where = str(exc), f"{ln.origin}: "
                self.errors.append((ln.origin, text[len(where):] if text.startswith(where) else text))
            i += 1
        return out

    def _define(self, lines: list[_Line], i: int, m: re.Match[str]) -> int:
        start = lines[i]
        name = m.group(1)
        params: list[tuple[str, str | None]] = []
        for p in _split_args(m.group(2).replace(" ", ",") if "," not in m.group(2) else m.group(2)):
            if not p:
                continue
            pname, eq, default = p.partition("=")
            pname = pname.strip()
            if not _NAME_RE.match(pname):
                raise FirmwareBuildError(f"{start.origin}: bad macro parameter {pname!r}")
            params.append((pname, default.strip() if eq else None))
        body: list[_Line] = []
        i += 1
        while i < len(lines) and not _ENDM_RE.match(lines[i].text):
            if _MACRO_RE.match(lines[i].text):
                raise FirmwareBuildError(f"{lines[i].origin}: .macro inside .macro {name}")
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise FirmwareBuildError(f"{start.origin}: .macro {name} has no .endm")
        if name in self.macros:
            raise FirmwareBuildError(f"{start.origin}: macro {name} defined twice")
        self.macros[name] = _Macro(name, params, body)
        return i + 1

    def _maybe_invoke(self, ln: _Line, depth: int) -> list[_Line]:
        text = ln.text
        label = ""
        lm = _ANY_LABEL_RE.match(text)
        if lm and not text.lstrip().startswith("."):
            label = text[: lm.end()]
            text = text[lm.end():]
        parts = text.strip().split(None, 1)
        if not parts or parts[0] not in self.macros:
            return [ln]
        if depth >= _MAX_MACRO_DEPTH:
            raise FirmwareBuildError(f"{ln.origin}: macro nesting deeper than {_MAX_MACRO_DEPTH}")
        mac = self.macros[parts[0]]
        args = _split_args(parts[1]) if len(parts) > 1 else []
        if len(args) > len(mac.params):
            raise FirmwareBuildError(
                f"{ln.origin}: macro {mac.name} takes {len(mac.params)} argument(s), got {len(args)}"
            )
        values: dict[str, str] = {}
        for k, (pname, default) in enumerate(mac.params):
            val = args[k] if k < len(args) and args[k] != "" else default
            if val is None:
                raise FirmwareBuildError(f"{ln.origin}: macro {mac.name}: missing argument {pname}")
            values[pname] = val
        self._counter += 1
        count = str(self._counter)

        def subst(s: str) -> str:
            def rep(mm: re.Match[str]) -> str:
                key = mm.group(1)
                if key == "@":
                    return count
                if key == "()":
                    return ""
                if key in values:
                    return values[key]
                raise FirmwareBuildError(f"{ln.origin}: macro {mac.name}: unknown parameter \\{key}")

            return re.sub(r"\\(@|\(\)|[A-Za-z_][A-Za-z0-9_]*)", rep, s)

        body = [_Line(subst(b.text), Origin(ln.origin.file, ln.origin.line, mac.name)) for b in mac.body]
        out = [_Line(label, ln.origin)] if label else []
        return out + self.expand(body, depth + 1)


def _preprocess(source: Path, defines: dict[str, int] | None) -> tuple[list[_Line], _Preprocessor]:
    pp = _Preprocessor()
    head: list[_Line] = []
    for name, value in sorted((defines or {}).items()):
        if not _NAME_RE.match(name):
            raise FirmwareBuildError(f"bad define name {name!r}")
        if not isinstance(value, int) or isinstance(value, bool):
            raise FirmwareBuildError(f"define {name} must be an int, not {value!r}")
        head.append(_Line(f".set {name}, {value & 0xFFFFFFFF:#x}", Origin("<defines>", 0)))
    if not source.is_file():
        why = "is a directory" if source.is_dir() else "No such file or directory"
        raise FirmwareBuildError(f"{source}: {why}")
    lines = head + pp.read(source)
    flat = _rename_local_labels(pp.expand(lines), pp.errors)
    flat.append(_Line(f"{END_LABEL}:", Origin("<end>", 0)))
    return flat, pp


def _outside_strings(text: str, fn) -> str:
    """Apply ``fn`` to the parts of ``text`` outside double-quoted strings."""
    parts = re.split(r'("(?:[^"\\]|\\.)*")', text)
    return "".join(p if i % 2 else fn(p) for i, p in enumerate(parts))


def _rename_local_labels(lines: list[_Line], errors: list[tuple[Origin, str]]) -> list[_Line]:
    """GNU as numeric local labels: ``N:`` may be defined any number of times; ``Nb`` is
    the nearest definition at or before the referring line, ``Nf`` the nearest after it.
    Each definition becomes ``__uvirt_local_N_K`` (K-th definition of N).  A reference to
    an N the file never defines is left alone (``101b`` may be a binary number)."""
    defs: dict[str, list[int]] = {}
    for k, ln in enumerate(lines):
        m = _LOCAL_DEF_RE.match(ln.text)
        if m:
            defs.setdefault(m.group(2), []).append(k)
    if not defs:
        return lines
    import bisect

    out: list[_Line] = []
    for k, ln in enumerate(lines):
        text = ln.text
        m = _LOCAL_DEF_RE.match(text)
        if m:
            n = m.group(2)
            text = f"{m.group(1)}__uvirt_local_{n}_{defs[n].index(k)}{m.group(3)}{text[m.end():]}"
        bad: list[str] = []

        def ref(mm: re.Match[str]) -> str:
            n, direction = mm.group(1), mm.group(2)
            where = defs.get(n)
            if where is None:
                return mm.group(0)
            if direction == "b":
                i = bisect.bisect_right(where, k) - 1
            else:
                i = bisect.bisect_right(where, k)
            if not 0 <= i < len(where):
                bad.append(f"local label {mm.group(0)} has no definition "
                           f"{'before' if direction == 'b' else 'after'} it")
                return mm.group(0)
            return f"__uvirt_local_{n}_{i}"

        head, body = (text[:len(text) - len(text.lstrip())], text.lstrip())
        label = _ANY_LABEL_RE.match(body)
        cut = label.end() if label and not body.startswith(".") else 0
        renamed = head + body[:cut] + _outside_strings(body[cut:], lambda p: _LOCAL_REF_RE.sub(ref, p))
        for b in bad:
            errors.append((ln.origin, f"{b}: {ln.text.strip()}"))
        if bad:                       # reported; keep only a label it defines
            if cut:
                out.append(_Line(head + body[:cut], ln.origin, ln.text))
            continue
        out.append(ln if renamed == ln.text else _Line(renamed, ln.origin, ln.text))
    return out


# --------------------------------------------------------------------------- assembling


def _ks():
    from keystone import KS_ARCH_X86, KS_MODE_32, Ks

    return Ks(KS_ARCH_X86, KS_MODE_32)


def _assemble(lines: list[_Line], pp_errors: list[tuple[Origin, str]] | None = None) -> bytes:
    from keystone import KsError

    text = "\n".join(ln.text for ln in lines)
    try:
        # No sym_resolver here: setting one switches keystone 0.9.2 to radix 16 for bare
        # numbers (`mov al, 10` becomes `mov al, 0x10`).
        enc, _ = _ks().asm(text, LOAD_ADDR)
    except KsError as exc:
        found = _locate_errors(lines, exc)
    else:
        if not pp_errors:
            return bytes(enc or b"")
        found = []
    raise FirmwareBuildError(_report(list(pp_errors or []) + found, lines)) from None


def _report(errors: list[tuple[Origin, str]], lines: list[_Line]) -> str:
    """One ``file:line: message`` line per error, in source order (files in the order
    their text comes in the program), at most MAX_ERRORS."""
    order: dict[str, int] = {}
    for ln in lines:
        order.setdefault(ln.origin.file, len(order))
    for org, _ in errors:
        order.setdefault(org.file, len(order))
    errors = sorted(dict.fromkeys(errors), key=lambda e: (order[e[0].file], e[0].line))
    lines = [f"{org}: {msg}" if org.line else msg for org, msg in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        lines.append(f"... and {len(errors) - MAX_ERRORS} more errors")
    return "\n".join(lines)


def _isolated(fn, *args):
    """Run ``fn(*args)`` in a forked child and return its (JSON-able) result.

    Setting a keystone ``sym_resolver`` switches keystone 0.9.2 to radix 16 for bare
    numbers for the rest of the *process*, not just that Ks instance (seen: after one
    failed build, ``mov al, 10`` assembled as ``mov al, 0x10`` in every later build).  The
    resolver-based error probes therefore run in a child; they are on the error path only.
    """
    import json

    from uvirt.child import run_in_child

    answer = run_in_child(lambda: json.dumps(fn(*args)))
    try:
        return json.loads(answer)
    except ValueError:
        raise RuntimeError(f"firmware error probe failed in its child process: {answer!r}") from None


def _missing_symbols_here(text: str) -> list[str]:
    """Names keystone could not resolve (asked of a recording resolver)."""
    from keystone import KsError

    ks = _ks()
    missing: list[str] = []

    def resolver(sym: bytes, _value) -> bool:  # noqa: ANN001 - keystone callback
        missing.append(sym.decode(errors="replace"))
        return False

    ks.sym_resolver = resolver
    try:
        ks.asm(text, LOAD_ADDR)
    except KsError:
        pass
    return missing


def _try_here(text: str) -> str | None:
    """Assemble ``text`` with every unknown symbol resolving to LOAD_ADDR; error or None.

    (The resolver makes keystone read bare numbers as hex; harmless for finding errors.)
    """
    from keystone import KsError

    ks = _ks()

    def resolver(_sym, value) -> bool:  # noqa: ANN001
        value[0] = LOAD_ADDR
        return True

    ks.sym_resolver = resolver
    try:
        ks.asm(text, LOAD_ADDR)
    except KsError as exc:
        return str(exc)
    return None


def _locate_errors(lines: list[_Line], exc: Exception) -> list[tuple[Origin, str]]:
    """Every line that breaks the build (keystone stops at the first and names no line).

    One child process (see ``_isolated``) bisects over prefixes of the flat text for the
    first failing line, drops it (keeping any label it defines), and goes again; then it
    asks a recording resolver which symbols are still undefined.  The labels of a cut-off
    tail are kept so forward references resolve; cut points lie outside ``.if``/``.rept``.
    """
    texts = [ln.text for ln in lines]
    found, missing = _isolated(_errors_here, texts, MAX_ERRORS + 1)
    out = [(lines[k].origin, f"{message}: {lines[k].shown}") for k, message in found]
    for sym in missing:
        pat = re.compile(rf"(?<![\w.$]){re.escape(sym)}(?![\w.$])")
        first = next((ln for ln in lines if pat.search(ln.text)), None)
        if first is not None:
            out.append((first.origin, f"undefined symbol {sym!r}: {first.shown}"))
        else:
            out.append((Origin("?", 0), f"undefined symbol {sym!r}"))
    if not out:
        out.append((Origin(lines[0].origin.file if lines else "?", 0),
                    f"{lines[0].origin.file if lines else '?'}: keystone: {exc}"))
    return out


def _errors_here(texts: list[str], limit: int) -> tuple[list[tuple[int, str]], list[str]]:
    """(index, keystone message) of each failing line, then the undefined symbols."""
    kept = list(range(len(texts)))
    current = list(texts)
    found: list[tuple[int, str]] = []

    def label_only(text: str) -> str:
        lm = _LABEL_RE.match(text)
        return f"{lm.group(1)}:" if lm and not text.lstrip().startswith(".") else ""

    while len(found) < limit:
        body = [current[k] for k in kept]
        cuts: list[int] = []
        depth = 0
        for pos, text in enumerate(body):
            if depth == 0:
                cuts.append(pos)
            if _BLOCK_OPEN_RE.match(text):
                depth += 1
            elif _BLOCK_CLOSE_RE.match(text):
                depth = max(0, depth - 1)
        cuts.append(len(body))

        def fails(pos: int) -> str | None:
            tail = [label_only(t) for t in body[pos:]]
            return _try_here("\n".join(body[:pos] + [t for t in tail if t]))

        full = fails(len(body))
        if full is None:
            break
        lo, hi = 0, len(cuts) - 1          # fails(cuts[hi]) errs, fails(cuts[lo]=0) does not
        if fails(cuts[lo]) is not None:
            found.append((kept[0], full))
            break
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fails(cuts[mid]) is not None:
                hi = mid
            else:
                lo = mid
        # the block [cuts[lo], cuts[hi]) holds the culprit: its last line, unless blocks
        # nest; report the line whose removal clears this error
        bad_pos = cuts[hi] - 1
        k = kept[bad_pos]
        found.append((k, full))
        current[k] = label_only(current[k])
    missing = _missing_symbols_here("\n".join(current[k] for k in kept)) if len(found) < limit else []
    return found, list(dict.fromkeys(missing))


def _check_image(img: bytes, source: Path) -> None:
    name = _rel(source)
    if len(img) < MB_HEADER_SIZE or struct.unpack_from("<I", img)[0] != MB_MAGIC:
        raise FirmwareBuildError(
            f'{name}: image does not start with the multiboot header (is .include "uvirt.inc" the first line?)'
        )
    magic, flags, csum, hdr, load, load_end, bss_end, entry = struct.unpack_from("<8I", img)
    end = LOAD_ADDR + len(img)
    if (magic + flags + csum) & 0xFFFFFFFF or flags != MB_FLAGS or hdr != LOAD_ADDR or load != LOAD_ADDR:
        raise FirmwareBuildError(f"{name}: malformed multiboot header")
    if load_end != end or bss_end != end:
        raise FirmwareBuildError(f"{name}: multiboot load_end 0x{load_end:x} != image end 0x{end:x}")
    if not LOAD_ADDR + MB_HEADER_SIZE <= entry < end:
        raise FirmwareBuildError(f"{name}: multiboot entry 0x{entry:x} outside the image")


# --------------------------------------------------------------------------- public API


def cache_dir() -> Path:
    env = os.environ.get("UVIRT_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "uvirt"
    return base / "firmware"


def _cache_key(pp: _Preprocessor, defines: dict[str, int] | None) -> str:
    import keystone

    h = hashlib.sha256()
    h.update(TOOLCHAIN_VERSION.encode())
    h.update(hashlib.sha256(Path(__file__).read_bytes()).digest())  # the builder itself
    h.update(str(getattr(keystone, "__version__", "?")).encode())
    for path, data in zip(pp.files, pp.texts):
        h.update(b"\0file\0" + str(path).encode() + b"\0")
        h.update(hashlib.sha256(data).digest())
    for name, value in sorted((defines or {}).items()):
        h.update(f"\0def\0{name}={value & 0xFFFFFFFF}".encode())
    return h.hexdigest()


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0


cache_stats = CacheStats()


def build(source_path: str | os.PathLike[str], *, defines: dict[str, int] | None = None) -> bytes:
    """Assemble a guest program into a multiboot flat image (cached by content hash)."""
    source = Path(source_path)
    flat, pp = _preprocess(source, defines)
    if pp.errors:
        _assemble(flat, pp.errors)             # raises, with the assembler's errors too
    key = _cache_key(pp, defines)
    cpath = cache_dir() / f"{key}.bin"
    try:
        img = cpath.read_bytes()
    except OSError:
        img = None
    if img is not None:
        cache_stats.hits += 1
        return img
    cache_stats.misses += 1
    img = _assemble(flat, pp.errors)
    _check_image(img, source)
    try:
        cpath.parent.mkdir(parents=True, exist_ok=True)
        tmp = cpath.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(img)
        os.replace(tmp, cpath)
    except OSError:
        pass  # a read-only cache is not an error: the build itself succeeded
    return img


def build_to(
    source: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    defines: dict[str, int] | None = None,
) -> Path:
    """Build ``source`` and write the image to ``out_path``; returns the output path."""
    img = build(source, defines=defines)
    out = Path(out_path)
    try:
        out.write_bytes(img)
    except OSError as exc:
        raise FirmwareBuildError(f"cannot write {out}: {exc.strerror}") from None
    return out


def bundled(name: str) -> Path:
    """Path of a program shipped in ``firmware/`` (``"pci_probe"`` or ``"pci_probe.S"``)."""
    cand = FIRMWARE_DIR / (name if name.endswith(".S") else f"{name}.S")
    if not cand.is_file():
        have = ", ".join(sorted(p.stem for p in FIRMWARE_DIR.glob("*.S")))
        raise FirmwareBuildError(f"{name}: No such file or directory, and no bundled guest "
                                 f"program of that name (have: {have})")
    return cand


def _parse_define(text: str) -> tuple[str, int]:
    name, eq, val = text.partition("=")
    if not _NAME_RE.match(name):
        raise FirmwareBuildError(f"bad -D {text!r} (want NAME=VALUE)")
    if not eq:
        return name, 1
    try:
        return name, int(val, 0)
    except ValueError:
        raise FirmwareBuildError(f"bad -D {text!r}: value {val!r} is not an integer") from None


def asm_main(argv: list[str] | None = None) -> int:
    """``uvirt asm PROG -o IMAGE [-D NAME=VALUE]...``; returns the exit code.

    PROG is a path, or the name of a bundled program (``pci_probe``).
    """
    from uvirt.usage import UsageParser

    p = UsageParser(prog="uvirt asm", description="assemble a guest program (a path, or the "
                    "name of a program in firmware/) into a multiboot image")
    p.add_argument("prog")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("-D", "--define", action="append", default=[], metavar="NAME=VALUE")
    try:
        args = p.parse_args(sys.argv[1:] if argv is None else argv)
        defines = dict(_parse_define(d) for d in args.define)
        src = Path(args.prog)
        if not src.exists() and "/" not in args.prog:
            src = bundled(args.prog)
        build_to(src, args.output, defines=defines)
    except UvirtError as exc:                 # a build error: each line as a compiler's
        for line in str(exc).splitlines():
            print(f"uvirt: {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asm_main())
