"""Templates such as ``/companies/{company}/staff``: literal text and ``{column}`` slots."""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .. import _refs

#: a path segment that needs no percent-encoding and cannot form '.', '..' or
#: an empty segment, so a template filled with it stays as safe as the template.
_SIMPLE_SEGMENT = r"[A-Za-z0-9_~-]+"
_simple_segment = re.compile(_SIMPLE_SEGMENT + r"\Z").match
#: a full path that path_problem() would accept without having to decode it:
#: no '%', '\', '$', '#', space or control character, not '//' at the start. A '/.'
#: anywhere (a '.' or '..' segment, maybe, or '..;x') is tested separately.
_PLAIN_PATH = r"/(?:[^/\\%$#\x00-\x20\x7f][^\\%$#\x00-\x20\x7f]*)?"
_plain_path = re.compile(_PLAIN_PATH + r"\Z").match
#: a placeholder: braces around a column name; quotes and ':' are excluded so
#: that JSON text (``{"a": 1}``) is never mistaken for one.
_PLACEHOLDER = re.compile(r"\{([^{}\"':\n]+)\}")


@dataclass(frozen=True)
class _Slot:
    column: Hashable  # the name as written; once resolved against a frame, that frame's own label


@lru_cache(maxsize=512)
def _parse_template(text: str) -> tuple[Any, ...] | None:
    """Literal text and :class:`_Slot` placeholders, or None when ``text`` has none.

    References (``${result=…}``) and escaped ``$${`` are kept as literal text;
    ``{{`` and ``}}`` write literal braces.

    >>> _parse_template("/companies/{company}/staff")
    ('/companies/', _Slot(column='company'), '/staff')
    >>> _parse_template("/companies/7") is None
    True
    """
    parts: list[Any] = []
    buf: list[str] = []
    i, n = 0, len(text)
    found = False
    while i < n:
        c = text[i]
        if c == "$" and text.startswith("$${", i):
            buf.append("$${")
            i += 3
        elif c == "$" and text.startswith("${", i):
            end = _refs._end_of_query(text, i + 2)
            if end < 0:
                buf.append(text[i:])
                break
            buf.append(text[i : end + 1])
            i = end + 1
        elif c == "{" and text.startswith("{{", i):
            buf.append("{")
            i += 2
        elif c == "}" and text.startswith("}}", i):
            buf.append("}")
            i += 2
        elif c == "{" and (m := _PLACEHOLDER.match(text, i)):
            if buf:
                parts.append("".join(buf))
                buf = []
            parts.append(_Slot(m.group(1)))
            found = True
            i = m.end()
        else:
            buf.append(c)
            i += 1
    if not found:
        return None
    if buf:
        parts.append("".join(buf))
    return tuple(parts)
