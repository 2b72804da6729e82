"""QEMU 7.2's value syntax: integers, sizes and booleans, one parser each.

Every number, size or boolean uvirt reads from text goes through this module: option
values, ``-device``/``-object``/``-drive`` properties, the ivshmem server's ``-l``/``-n``.

* ``strtox``: C's ``strtoull``/``strtoll`` through QEMU's ``check_strtox_error``
  (``util/cutils.c``): base 0 means decimal, ``0x`` hex, and a leading ``0`` octal.
* ``qemu_strtosz``: QEMU's ``qemu_strtosz`` (``util/cutils.c``): decimal with an optional
  fraction when a suffix scales it, or ``0x`` hex; suffixes B/K/M/G/T/P/E.
* ``parse_bool``: QEMU's ``qapi_bool_parse`` (on/yes/true/y, off/no/false/n).

The ``parse_*`` functions word their errors as QEMU does for a command-line option
(``Parameter 'iobase' expects integer``), prefixed with the location given to them
(QEMU's ``loc_set_cmdline``: ``-device isa-debug-exit,iobase=x``).  ``strtox`` and
``qemu_strtosz`` raise plain errors (``StrtoxError``, ``ValueError``) for callers that
word their own.
"""

from __future__ import annotations

import re

from uvirt.errors import OptionError

U64 = (1 << 64) - 1


class StrtoxError(Exception):
    def __init__(self, kind: str) -> None:   # "invalid" or "range"
        super().__init__(kind)
        self.kind = kind


_SPACE = " \t\n\v\f\r"
_DIGITS = {8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}


def strtox(text: str, base: int, *, signed: bool, consume_all: bool) -> tuple[int, int]:
    """C's strtoull/strtoll through QEMU's ``check_strtox_error``: returns (value, end).
    Raises StrtoxError("invalid") for no digits, or for trailing text when
    ``consume_all``; StrtoxError("range") on overflow (trailing text wins, as in QEMU)."""
    i, n = 0, len(text)
    while i < n and text[i] in _SPACE:
        i += 1
    neg = False
    if i < n and text[i] in "+-":
        neg = text[i] == "-"
        i += 1
    if base in (0, 16) and text[i:i + 2] in ("0x", "0X") and i + 2 < n and text[i + 2] in _DIGITS[16]:
        i += 2
        base = 16
    elif base == 0:
        base = 8 if text[i:i + 1] == "0" else 10
    start = i
    while i < n and text[i] in _DIGITS[base]:
        i += 1
    if i == start:
        raise StrtoxError("invalid")          # no conversion: endptr = nptr
    if consume_all and i != n:
        raise StrtoxError("invalid")
    mag = int(text[start:i], base)
    if signed:
        val = -mag if neg else mag
        if not -(1 << 63) <= val < (1 << 63):
            raise StrtoxError("range")
        return val, i
    if mag > U64:
        raise StrtoxError("range")
    return ((-mag) & U64 if neg else mag), i


_SUFFIX_POWER = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}


def qemu_strtosz(text: str, *, default_suffix: str = "B", unit: int = 1024,
                 warnings: list[str] | None = None) -> int:
    """QEMU 7.2's ``qemu_strtosz``: decimal (with an optional fraction when a suffix
    scales it: ``1.5G``) or ``0x`` hex, optional suffix B/K/M/G/T/P/E in either case,
    result below 2^64.  Raises ValueError("invalid"|"range")."""
    try:
        val, end = strtox(text, 10, signed=False, consume_all=False)
        if "-" in text[:end]:
            raise StrtoxError("invalid")
        valf = 0
        hexa = False
        if val == 0 and text[end:end + 1] in ("x", "X"):
            val, end = strtox(text, 16, signed=False, consume_all=False)
            if text[end:end + 1] == ".":
                raise StrtoxError("invalid")
            hexa = True
        elif text[end:end + 1] == ".":
            m = re.compile(r"\.(\d+)([eE][+-]?\d+)?").match(text, end)
            if m is None:                      # "1." or "1.k": strtod fails, skip the dot
                end += 1
            elif m.group(2):
                raise StrtoxError("invalid")  # exponents are refused
            else:
                valf = min(int(float("0." + m.group(1)) * 2.0 ** 64), U64)
                end = m.end()
        c = text[end:end + 1].upper()
        if c and c in _SUFFIX_POWER:
            if hexa and warnings is not None:
                warnings.append(f"Using a multiplier suffix on hex numbers is deprecated: {text}")
            mul = unit ** _SUFFIX_POWER[c]
            end += 1
        else:
            mul = unit ** _SUFFIX_POWER[default_suffix.upper()]
        if end != len(text):
            raise StrtoxError("invalid")
        if mul == 1:
            if valf:
                raise StrtoxError("invalid")  # a fraction needs a scale
            return val
        prod = val * mul + ((valf * mul) >> 64) + (((valf * mul) & U64) >> 63)  # round .5 up
        if prod > U64:
            raise StrtoxError("range")
        return prod
    except StrtoxError as e:
        raise ValueError(e.kind) from None


def located(option: str, message: str) -> OptionError:
    return OptionError(f"{option}: {message}" if option else message)


def parse_bool(value: str, *, option: str, key: str) -> bool:
    """QEMU's ``qapi_bool_parse``: on/yes/true/y and off/no/false/n, case-sensitive.
    ``option`` is the location to name (e.g. ``DeviceOpts.origin``)."""
    if value in ("on", "yes", "true", "y"):
        return True
    if value in ("off", "no", "false", "n"):
        return False
    raise located(option, f"Parameter '{key}' expects 'on' or 'off'")


_INT_TYPE_WORD = {(8, False): "uint8_t", (16, False): "uint16_t", (32, False): "uint32_t",
                  (8, True): "int8_t", (16, True): "int16_t", (32, True): "int32_t"}


def parse_int(value: str, *, option: str, key: str, bits: int = 64, signed: bool = False) -> int:
    """An integer device property as QEMU 7.2 reads one from the command line
    (``strtoull``/``strtoll`` base 0: decimal, ``0x`` hex, and — as in C — a leading 0
    means octal; ``-1`` for an unsigned property wraps to 2^64-1 and then fails the
    range check).  Messages: ``Parameter 'iobase' expects integer`` (not a number or
    beyond 64 bits), ``Parameter 'iobase' expects uint32_t`` (out of the type's range)."""
    try:
        val, _ = strtox(value, 0, signed=signed, consume_all=True)
    except StrtoxError:
        raise located(option, f"Parameter '{key}' expects integer") from None
    if bits < 64:
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if not lo <= val <= hi:
            raise located(option, f"Parameter '{key}' expects {_INT_TYPE_WORD[(bits, signed)]}")
    return val


def parse_size(value: str, *, option: str, key: str, expects: str = "a size value") -> int:
    """A size property (``size=1M``), bytes, with QEMU's suffixes (case-insensitive
    K/M/G/T/P/E, powers of 1024; ``B`` or none = bytes).  The default wording is the
    one ``-object`` gives (``Parameter 'size' expects a size value``); QemuOpts lists
    say ``expects a non-negative number below 2^64`` (pass it as ``expects``)."""
    try:
        return qemu_strtosz(value)
    except ValueError as e:
        if str(e) == "range" and expects.startswith("a non-negative"):
            raise located(option, f"Value '{value}' is out of range for parameter '{key}'") from None
        raise located(option, f"Parameter '{key}' expects {expects}") from None


def parse_number(value: str, *, option: str, key: str) -> int:
    """QemuOpts QEMU_OPT_NUMBER (``parse_option_number``)."""
    try:
        return strtox(value, 0, signed=False, consume_all=True)[0]
    except StrtoxError as e:
        if e.kind == "range":
            raise located(option, f"Value '{value}' is too large for parameter '{key}'") from None
        raise located(option, f"Parameter '{key}' expects a number") from None

