"""The batch rules of ``batchnb._rules`` as regular expressions, for the OpenAPI document.

JSON Schema's ``pattern`` is an ECMA-262 regular expression; each one here
is also read the same way by Python's :mod:`re` (no ``\\d``, ``\\w``, ``\\s``,
no inline flags, lookaheads only), so that a test can hold it to the rule
it stands for on thousands of values. Each describes a value *without*
references: a ``${result=NAME:JSONPATH}`` is fine where the docs say so,
but whether NAME names an earlier operation is no business of a pattern.

    >>> import re
    >>> bool(re.match(operation_path(), "/api/2.1/scheduling/companies?limit=5"))
    True
    >>> bool(re.match(operation_path(), "/api/%252e%252e/admin"))  # '..' once decoded twice
    False
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from .. import _refs, _rules

__all__ = [
    "header_lines",
    "header_name",
    "header_value",
    "method",
    "operation_name",
    "operation_path",
    "text",
    "whole",
]


def whole(body: str) -> str:
    """``body`` anchored at both ends (the closing ``$``: the end of the string, in ECMA-262 and for Schemathesis)."""
    return f"^(?:{body})$"


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _char(code: int) -> str:
    c = chr(code)
    return c if c.isascii() and c.isalnum() else _escape(code)


def char_class(chars: Iterable[str], *, negate: bool = False) -> str:
    """A class of exactly ``chars``, in runs; anything but a letter or digit escaped.

    >>> char_class("abcx-")
    '[\\\\x2da-cx]'
    """
    codes = sorted({ord(c) for c in chars})
    parts = []
    i = 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        parts.append(_char(codes[i]) if j - i < 2 else f"{_char(codes[i])}-{_char(codes[j])}")
        if j - i == 1:
            parts.append(_char(codes[j]))
        i = j + 1
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def _nocase(word: str) -> str:
    """``word`` in any case, letter by letter (ECMA-262 has no inline ``(?i)``)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else _char(ord(c)) for c in word)


def _literal(text: str) -> str:
    return "".join(_char(ord(c)) for c in text)


def _dollar() -> str:
    """A ``$`` that opens no reference, or the escape that writes a literal ``${`` (read as :func:`refs.parse` reads them)."""
    escape, opening = _refs._ESCAPE, _refs._OPEN  # "$${", "${result=": both start with the "$" scanned for
    return f"{_literal(escape)}|\\$(?!{_literal(escape[1:])}|{_literal(opening[1:])})"


# ---------------------------------------------------------------- methods and names


def method() -> str:
    """One of :data:`rules.METHODS`, in any case of ASCII letters."""
    return whole("|".join(_nocase(m) for m in _rules.METHODS))


def operation_name() -> str:
    """What :data:`rules.NAME_PATTERN` matches."""
    source = _rules.NAME_PATTERN.pattern
    assert source.endswith(r"\Z"), "NAME_PATTERN is anchored with \\Z"
    return whole(source[:-2])


# ---------------------------------------------------------------- headers

#: the characters of a header name (RFC 9110 §5.6.2's token), asked of the rule itself.
_TOKEN_CHARS = "".join(c for c in map(chr, range(0x80)) if not _rules.header_problems(c, "x"))


def _name_body() -> str:
    forbidden = "|".join(_nocase(n) for n in sorted(_rules.FORBIDDEN_HEADERS))
    return f"(?!(?:{forbidden})(?!{char_class(_TOKEN_CHARS)})){char_class(_TOKEN_CHARS)}+"


def header_name() -> str:
    """A token that is not one of :data:`rules.FORBIDDEN_HEADERS`, in any case."""
    return whole(_name_body())


#: one character of a value: visible ASCII, space or tab, starting no reference.
_VALUE_UNIT = f"(?:[\\t\\x20-\\x23\\x25-\\x7e]|{_dollar()})"
#: one that is neither a space nor a tab.
_VALUE_EDGE = f"(?:[\\x21-\\x23\\x25-\\x7e]|{_dollar()})"
#: a whole value: nothing, or visible ASCII at both ends.
_VALUE = f"(?:{_VALUE_EDGE}(?:{_VALUE_UNIT}*{_VALUE_EDGE})?)?"


def header_value() -> str:
    """What :func:`rules.header_problems` accepts as a value: ASCII, tabs inside only, no space or tab at either end."""
    return whole(_VALUE)


def _stripped() -> str:
    """The characters that ``"Name: value"`` lines lose around a name and a value, asked of the rule itself."""
    spaces = [chr(c) for c in range(0x3001) if chr(c).isspace() and chr(c) != "\n"]
    return "".join(c for c in spaces if _rules.parse_header_lines(f"{c}X-A{c}:{c}b{c}\n{c}") == ({"X-A": "b"}, []))


def header_lines() -> str:
    """``Name: value`` lines (``\\n`` or ``\\r\\n`` between them) that :func:`rules.parse_header_lines` reads without a problem.

    Names repeated in another case are a problem too, which no pattern says.
    """
    space = char_class(_stripped()) + "*"
    line = f"{space}(?:{_name_body()}{space}:{space}{_VALUE}{space})?"
    return whole(f"{line}(?:\\r?\\n{line})*")


# ---------------------------------------------------------------- paths


def _hex_chars(nibble: int) -> str:
    return f"{nibble:x}{nibble:X}"


def _once(chars: str) -> str:
    """Text that one percent-decoding turns into one of ``chars`` (ASCII): the character, or ``%XX`` in either case."""
    by_high: dict[int, list[int]] = defaultdict(list)
    for code in sorted({ord(c) for c in chars}):
        by_high[code >> 4].append(code & 15)
    escapes = "|".join(
        char_class(_hex_chars(high)) + char_class("".join(_hex_chars(low) for low in lows))
        for high, lows in by_high.items()
    )
    return f"(?:{char_class(chars)}|%(?:{escapes}))"


def _twice(chars: str) -> str:
    """Text that two percent-decodings (as :func:`rules.path_problem` makes) turn into one of ``chars``.

    Decoding is local: ``%`` followed by two hex digits is always an escape,
    and neither ``%`` nor these characters is a hex digit, so a match is
    where the decoded text has the character.
    """
    by_high: dict[int, list[int]] = defaultdict(list)
    for code in sorted({ord(c) for c in chars}):
        by_high[code >> 4].append(code & 15)
    escapes = "|".join(
        _once(_hex_chars(high)) + _once("".join(_hex_chars(low) for low in lows)) for high, lows in by_high.items()
    )
    return f"(?:{_once(chars)}|{_once('%')}(?:{escapes}))"


_CONTROL_CHARS = "".join(map(chr, range(0x20))) + "\x7f"


def operation_path() -> str:
    """What :func:`rules.path_problem` accepts: a path relative to the API.

    It starts with ``/`` and not ``//``; it holds no control character, backslash,
    space or ``#``; and its route (before ``?``), once and twice percent-decoded,
    holds no control character or backslash, no ``.`` or ``..`` segment (with or
    without ``;`` parameters), and does not start with ``//``.
    """
    slash, dot = _twice("/"), _twice(".")
    route = "[^?]*"
    return (
        "^(?=/)"
        f"(?!/{slash})"
        f"(?!{route}{slash}{dot}{dot}?(?:{slash}|{_twice(';')}|[?]|$))"
        f"(?!{route}{_twice(_CONTROL_CHARS + chr(92))})"
        f"(?:{char_class(_CONTROL_CHARS + chr(92) + ' #$', negate=True)}|{_dollar()})*$"
    )


# ---------------------------------------------------------------- text


def text() -> str:
    """Any string that holds no reference (a body's strings and keys)."""
    return whole(f"(?:[^$]|{_dollar()})*")
