"""JSON in and out, fast, with numbers kept exact.

orjson is several times faster than the standard library, but it writes no
integer beyond 64 bits (it raises) and reads one as a float (silently
wrong: ``18446744073709551616`` comes back as ``1.8446744073709552e+19``),
and it has no decimals. Here an integer of any size and a
:class:`decimal.Decimal` are written as the exact number they are, and
reading falls back to the standard library, which keeps every integer
exact, only when such an integer is there.

    >>> dumps({"big": 2**70, "price": Decimal("12.50")})
    b'{"big":1180591620717411303424,"price":12.50}'
    >>> loads(b'[18446744073709551616]')
    [18446744073709551616]
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["dumps", "loads"]

#: a run of 19 or more digits may be an integer beyond 64 bits (2**63 has 19 digits).
_LONG_DIGITS = re.compile(rb"\d{19,}")


def _exact(value: Any) -> Any:
    if isinstance(value, Decimal) and value.is_finite():
        return orjson.Fragment(str(value).encode("ascii"))
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON; integers of any size and decimals written exactly."""
    try:
        return orjson.dumps(value, default=_exact)
    except TypeError as exc:
        if "Integer exceeds 64-bit range" not in str(exc):
            raise
    return orjson.dumps(_big_ints_as_fragments(value), default=_exact)


def _big_ints_as_fragments(value: Any) -> Any:
    """A copy of ``value`` with every integer beyond 64 bits as its exact JSON text."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return orjson.Fragment(str(value).encode("ascii"))
    if isinstance(value, dict):
        return {k: _big_ints_as_fragments(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_big_ints_as_fragments(v) for v in value]
    return value


def loads(data: bytes | str) -> Any:
    """Parse JSON; integers beyond 64 bits come back as exact Python ints, not floats."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    value = orjson.loads(raw)
    if _LONG_DIGITS.search(raw) and _has_inexact_number(value):
        return json.loads(raw)
    return value


def _has_inexact_number(value: Any) -> bool:
    """Whether parsing made a float that may stand for a long integer (checked iteratively)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and abs(item) >= 2**63:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
