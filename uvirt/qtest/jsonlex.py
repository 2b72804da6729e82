"""QEMU's QMP JSON reader (qobject/json-lexer.c, json-streamer.c, json-parser.c, 7.2).

QMP input is a byte stream, not lines: the lexer turns bytes into tokens, the streamer
collects tokens until braces and brackets balance (or a scalar stands alone) and hands
them to the parser.  QEMU's extensions and error texts are kept, since a client sees
them in ``GenericError`` replies: single-quoted strings, ``JSON parse error, stray
'@'`` for a byte the lexer rejects (then it skips to the next structural or control
character), ``invalid keyword 'garbage'``, ``expecting value``, ``expected separator
in dict``, ``missing : in object pair``, ``key is not a string in object``, ``duplicate
key``; the first error of a message wins.
"""

from __future__ import annotations

from typing import Any, Callable

MAX_TOKEN_SIZE = 64 << 20
MAX_TOKEN_COUNT = 2 << 20
MAX_NESTING = 1 << 10

LCURLY, RCURLY, LSQUARE, RSQUARE, COLON, COMMA = "{", "}", "[", "]", ":", ","
INTEGER, FLOAT, KEYWORD, STRING, ERROR = "int", "float", "keyword", "string", "error"

_STRUCTURAL = "{}[],:"
_WS = " \t\r\n"
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n",
            "r": "\r", "t": "\t"}


class JsonError(Exception):
    pass


class Lexer:
    """Byte-at-a-time lexer; ``emit(type, text)`` per token."""

    def __init__(self, emit: Callable[[str, str], None]) -> None:
        self.emit = emit
        self.state = "start"
        self.tok = ""
        self.quote = ""
        self.hex_left = 0

    def feed(self, data: bytes) -> None:
        for ch in data.decode("latin-1"):
            self._char(ch)

    def _error(self, ch: str) -> None:
        self.emit(ERROR, self.tok + ch)
        self.tok = ""
        self.state = "recovery"

    def _end(self, kind: str) -> None:
        text, self.tok, self.state = self.tok, "", "start"
        self.emit(kind, text)

    def _char(self, ch: str) -> None:
        o = ord(ch)
        st = self.state
        if st == "recovery":
            if ch in _STRUCTURAL or (o < 0x20 and ch != "\t") or o >= 0xFE:
                self.state = "start"
                self._char(ch)
            return
        if st == "start":
            if ch in _WS:
                return
            if ch in _STRUCTURAL:
                self.emit(ch, ch)
            elif ch in "\"'":
                self.state, self.quote, self.tok = "string", ch, ch
            elif ch == "-":
                self.state, self.tok = "minus", ch
            elif ch == "0":
                self.state, self.tok = "zero", ch
            elif "1" <= ch <= "9":
                self.state, self.tok = "int", ch
            elif "a" <= ch <= "z":
                self.state, self.tok = "keyword", ch
            else:
                self._error(ch)
            return
        if st == "string":
            if ch == "\\":
                self.tok += ch
                self.state = "escape"
            elif ch == self.quote:
                self.tok += ch
                self._end(STRING)
            elif o < 0x20 or o >= 0xFE:
                self._error(ch)
            else:
                self.tok += ch
            return
        if st == "escape":
            if ch == "u":
                self.tok += ch
                self.state, self.hex_left = "hex", 4
            elif ch in _ESCAPES:
                self.tok += ch
                self.state = "string"
            else:
                self._error(ch)
            return
        if st == "hex":
            if ch in "0123456789abcdefABCDEF":
                self.tok += ch
                self.hex_left -= 1
                if not self.hex_left:
                    self.state = "string"
            else:
                self._error(ch)
            return
        if st == "keyword":
            if "a" <= ch <= "z":
                self.tok += ch
            else:
                self._end(KEYWORD)
                self._char(ch)
            return
        # numbers: states that need a digit, and states that may end
        need_digit = {"minus": "intish", "dot": "frac", "exp": None, "exp_sign": "exp_digits"}
        if st in need_digit:
            if st == "exp" and ch in "+-":
                self.tok += ch
                self.state = "exp_sign"
            elif ch.isdigit() and ch.isascii():
                self.tok += ch
                nxt = need_digit[st] or "exp_digits"
                if st == "minus":
                    nxt = "zero" if ch == "0" else "int"
                self.state = nxt
            else:
                self._error(ch)
            return
        if st in ("zero", "int", "frac", "exp_digits"):
            if st != "zero" and ch.isascii() and ch.isdigit():
                self.tok += ch
            elif ch == "." and st in ("zero", "int"):
                self.tok += ch
                self.state = "dot"
            elif ch in "eE" and st in ("zero", "int", "frac"):
                self.tok += ch
                self.state = "exp"
            else:
                self._end(INTEGER if st in ("zero", "int") else FLOAT)
                self._char(ch)
            return
        raise AssertionError(st)


class Streamer:
    """json-streamer.c: ``on_message(value, error)`` per complete JSON value."""

    def __init__(self, on_message: Callable[[Any, str | None], None]) -> None:
        self.on_message = on_message
        self.lexer = Lexer(self._token)
        self.tokens: list[tuple[str, str]] = []
        self.brace = self.bracket = self.size = 0

    def feed(self, data: bytes) -> None:
        self.lexer.feed(data)

    def _emit(self, value: Any, err: str | None) -> None:
        self.brace = self.bracket = self.size = 0
        self.tokens = []
        self.on_message(value, err)

    def _token(self, kind: str, text: str) -> None:
        if kind == LCURLY:
            self.brace += 1
        elif kind == RCURLY:
            self.brace -= 1
        elif kind == LSQUARE:
            self.bracket += 1
        elif kind == RSQUARE:
            self.bracket -= 1
        elif kind == ERROR:
            self._emit(None, f"JSON parse error, stray '{text}'")
            return
        if self.size + len(text) + 1 > MAX_TOKEN_SIZE:
            self._emit(None, "JSON token size limit exceeded")
            return
        if len(self.tokens) + 1 > MAX_TOKEN_COUNT:
            self._emit(None, "JSON token count limit exceeded")
            return
        if self.brace + self.bracket > MAX_NESTING:
            self._emit(None, "JSON nesting depth limit exceeded")
            return
        self.tokens.append((kind, text))
        self.size += len(text)
        if (self.brace > 0 or self.bracket > 0) and self.brace >= 0 and self.bracket >= 0:
            return
        try:
            value = _Parser(self.tokens).parse()
        except JsonError as e:
            self._emit(None, f"JSON parse error, {e}")
            return
        self._emit(value, None)


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.toks = tokens
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def pop(self) -> tuple[str, str]:
        t = self.peek()
        if t is None:
            raise JsonError("premature EOI")
        self.i += 1
        return t

    def parse(self) -> Any:
        return self.value()

    def value(self) -> Any:
        t = self.peek()
        if t is None:
            raise JsonError("premature EOI")
        kind, text = t
        if kind == LCURLY:
            return self.obj()
        if kind == LSQUARE:
            return self.arr()
        if kind == STRING:
            self.i += 1
            return _unescape(text)
        if kind == INTEGER:
            self.i += 1
            v = int(text)
            return v if -(1 << 63) <= v < (1 << 64) else float(text)
        if kind == FLOAT:
            self.i += 1
            return float(text)
        if kind == KEYWORD:
            self.i += 1
            if text in ("true", "false", "null"):
                return {"true": True, "false": False, "null": None}[text]
            raise JsonError(f"invalid keyword '{text}'")
        raise JsonError("expecting value")

    def obj(self) -> dict:
        self.pop()
        d: dict = {}
        t = self.peek()
        if t is None:
            raise JsonError("premature EOI")
        if t[0] == RCURLY:
            self.pop()
            return d
        while True:
            self.pair(d)
            t = self.pop()
            if t[0] == RCURLY:
                return d
            if t[0] != COMMA:
                raise JsonError("expected separator in dict")

    def pair(self, d: dict) -> None:
        if self.peek() is None:
            raise JsonError("premature EOI")
        key = self.value()
        if not isinstance(key, str):
            raise JsonError("key is not a string in object")
        t = self.pop()
        if t[0] != COLON:
            raise JsonError("missing : in object pair")
        try:
            value = self.value()
        except JsonError as e:
            raise e
        if key in d:
            raise JsonError("duplicate key")
        d[key] = value

    def arr(self) -> list:
        self.pop()
        out: list = []
        t = self.peek()
        if t is None:
            raise JsonError("premature EOI")
        if t[0] == RSQUARE:
            self.pop()
            return out
        while True:
            out.append(self.value())
            t = self.pop()
            if t[0] == RSQUARE:
                return out
            if t[0] != COMMA:
                raise JsonError("expected separator in list")


def _unescape(tok: str) -> str:
    body = tok[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            e = body[i + 1]
            if e == "u":
                out.append(chr(int(body[i + 2:i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES[e])
            i += 2
            continue
        out.append(c)
        i += 1
    raw = "".join(out)
    try:        # bytes arrived as latin-1; QMP strings are UTF-8
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw
