"""QEMU 7.2's two ``key=value`` list syntaxes.

* QemuOpts (``util/qemu-option.c``): ``parse_qemu_opts``, ``format_opts`` (its inverse),
  ``opts_id``, and ``validate_opts`` for lists whose keys QEMU declares with a type.
* keyval (``util/keyval.c``): ``parse_keyval``, for ``-machine`` and ``-display``.

Which option uses which syntax is QEMU's choice; ``uvirt.options.argv`` follows it (see
its module docstring).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from uvirt.options.values import located, parse_bool, parse_number, parse_size

NAME_RE = re.compile(r"[^=,]*")


def get_value(text: str, p: int) -> tuple[str, int]:
    """get_opt_value: read up to a single ',' (",," is a literal comma); returns the
    value and the index of the terminating ',' or the end."""
    out = []
    n = len(text)
    while True:
        q = text.find(",", p)
        if q < 0:
            out.append(text[p:])
            return "".join(out), n
        if q + 1 < n and text[q + 1] == ",":
            out.append(text[p:q + 1])
            p = q + 2
            continue
        out.append(text[p:q])
        return "".join(out), q


def is_help(s: str) -> bool:
    return s in ("help", "?")


def parse_qemu_opts(text: str, *, implied_key: str | None = None, location: str = "",
                    warnings: list[str] | None = None) -> list[tuple[str, str]]:
    """Split a QemuOpts string (``util/qemu-option.c``, ``get_opt_name_value``) into
    (key, value) pairs in order, duplicates kept.  A first element without ``=`` is
    the implied key's value (``,,`` escaping applies); any other element without ``=``
    is a short-form boolean (``x`` → ``x=on``, ``nox`` → ``x=off``) and adds QEMU's
    deprecation warning to ``warnings``."""
    pairs: list[tuple[str, str]] = []
    p, n = 0, len(text)
    first = implied_key
    while p < n:
        ln = NAME_RE.match(text, p).end() - p  # type: ignore[union-attr]
        if p + ln < n and text[p + ln] == "=":
            name = text[p:p + ln]
            value, p = get_value(text, p + ln + 1)
        elif first is not None:
            name = first
            value, p = get_value(text, p)
        else:
            name = text[p:p + ln]
            p += ln
            prefix = ""
            if name.startswith("no"):
                name, value, prefix = name[2:], "off", "no"
            else:
                value = "on"
            if not (value == "on" and is_help(name)) and warnings is not None:
                fix = (f"nodelay={'on' if prefix else 'off'}" if name == "delay"
                       else f"{name}={value}")
                warnings.append(f"{location}: warning: short-form boolean option "
                                f"'{prefix}{name}' deprecated; please use {fix} instead")
        first = None
        pairs.append((name, value))
        if p < n:                      # text[p] == ','
            p += 1
    return pairs


def format_opts(pairs: Iterable[tuple[str, str]], *, implied_key: str | None = None) -> str:
    """The inverse of ``parse_qemu_opts``: ``,`` in values doubled; the implied key is
    left out when its value allows (first pair, no ``=`` in it, not empty)."""
    parts = []
    for i, (k, v) in enumerate(pairs):
        if not k or "," in k or "=" in k:
            raise ValueError(f"key {k!r} cannot be written in QEMU's option syntax")
        esc = v.replace(",", ",,")
        if i == 0 and k == implied_key and v and "=" not in v.split(",", 1)[0]:
            parts.append(esc)
        else:
            parts.append(f"{k}={esc}")
    return ",".join(parts)


_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]*\Z")


def opts_id(text: str, location: str) -> str | None:
    """opts_parse_id: the first ``id=`` (looked for with no implied key, as QEMU does)."""
    for k, v in parse_qemu_opts(text):
        if k == "id":
            if not _ID_RE.match(v):
                raise located(location, "Parameter 'id' expects an identifier")
            return v
    return None



# Types of the keys of QemuOpts lists that declare them (None = any string).
BOOL, NUMBER, SIZE = "bool", "number", "size"


def validate_opts(pairs: list[tuple[str, str]], desc: dict[str, str | None], location: str) -> None:
    """opt_validate for a list with a description: unknown keys and typed values."""
    for k, v in pairs:
        if k == "id":
            continue
        if k not in desc:
            raise located(location, f"Invalid parameter '{k}'")
        kind = desc[k]
        if kind == BOOL:
            parse_bool(v, option=location, key=k)
        elif kind == NUMBER:
            parse_number(v, option=location, key=k)
        elif kind == SIZE:
            parse_size(v, option=location, key=k, expects="a non-negative number below 2^64")


def opts_props(pairs: list[tuple[str, str]], drop: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in pairs:
        if k not in drop:
            out[k] = v
    return out


def last_value(pairs: list[tuple[str, str]], key: str) -> str | None:
    val = None
    for k, v in pairs:
        if k == key:
            val = v
    return val


# --------------------------------------------------------------------------- keyval syntax

def _qapi_name_len(s: str, p: int) -> int:
    """parse_qapi_name(complete=false): length of the QAPI name at s[p:], or 0."""
    q = p
    if s[q:q + 1] == "_":                       # downstream extension prefix __RFQDN_
        if s[q + 1:q + 2] != "_":
            return 0
        q += 2
        while q < len(s) and (s[q].isascii() and s[q].isalnum() or s[q] in "-."):
            q += 1
        if s[q:q + 1] != "_":
            return 0
        q += 1
    if not (q < len(s) and s[q].isascii() and s[q].isalpha()):
        return 0
    while q < len(s) and (s[q].isascii() and s[q].isalnum() or s[q] in "-_"):
        q += 1
    return q - p


def parse_keyval(text: str, *, implied_key: str | None, location: str = "",
                 into: dict[str, str] | None = None) -> tuple[dict[str, str], bool]:
    """``util/keyval.c`` as QEMU 7.2 uses it for ``-machine`` and ``-display``: returns
    (flat dict with dotted keys, help_requested).  ``into`` merges into an existing
    dict, later keys replacing earlier ones (how repeated ``-machine`` options merge)."""
    d: dict[str, str] = {} if into is None else into
    help_wanted = False
    s, n = 0, len(text)
    implied = implied_key
    while s < n:
        ln = NAME_RE.match(text, s).end() - s  # type: ignore[union-attr]
        key_start, key_text = s, None
        val_end = None
        if ln and (s + ln >= n or text[s + ln] != "="):
            word = text[s:s + ln]
            if is_help(word):
                help_wanted = True
                s += ln + (1 if s + ln < n else 0)
                implied = None
                continue
            if implied is not None:
                key_text = implied
                val_end = s + ln
        if key_text is None:
            key_text = text[s:s + ln]
        # check the key, fragment by fragment
        frags = []
        q = 0
        while True:
            if q != 0 and key_text[q:q + 1].isdigit():
                m = re.compile(r"\d+").match(key_text, q)
                fl = m.end() - q
            else:
                fl = _qapi_name_len(key_text, q)
            if not fl or (q + fl < len(key_text) and key_text[q + fl] != "."):
                raise located(location, f"Invalid parameter '{key_text}'")
            if fl >= 128:
                whole = q == 0 and q + fl == len(key_text)
                raise located(location, f"Parameter{'' if whole else ' fragment'} "
                                     f"'{key_text[q:q + fl]}' is too long")
            frags.append(key_text[q:q + fl])
            q += fl
            if q >= len(key_text):
                break
            q += 1                                   # the '.'
        key = ".".join(frags)
        if val_end is not None:
            value = text[s:val_end]
            s = val_end + (1 if val_end < n else 0)
        else:
            s = key_start + ln
            if s >= n or text[s] != "=":
                raise located(location, f"Expected '=' after parameter '{key_text}'")
            value, s = get_value(text, s + 1)
            if s < n:
                s += 1
        # keyval_parse_put: a key is either a value or a prefix of others, never both
        for i in range(1, len(frags)):
            prefix = ".".join(frags[:i])
            if prefix in d:
                raise located(location, f"Parameters '{prefix}.*' used inconsistently")
        if any(k.startswith(key + ".") for k in d):
            raise located(location, f"Parameters '{key}.*' used inconsistently")
        d.pop(key, None)
        d[key] = value
        implied = None
    return d, help_wanted

