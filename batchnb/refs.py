"""References: ``${result=NAME:JSONPATH}`` — one operation's result used in another.

A string is parsed once into a *template*: a tuple of literal text and
:class:`Ref` parts. Resolving a template asks a ``lookup`` callable for the
values a reference stands for; the rules (typed whole-value substitution in a
body, text elsewhere, percent-encoding in a path, ``$${`` as a literal ``${``)
live here and nowhere else, so the server's engine and the client's
cross-batch resolution cannot disagree.

JSONPath is RFC 9535, evaluated by ``jsonpath-rfc9535``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterator
from urllib.parse import quote

import jsonpath_rfc9535 as _jsonpath

from ._exceptions import BatchError, RefSyntaxError
from .rules import NAME_PATTERN, name_problem

__all__ = ["Ref", "RefSyntaxError", "Unresolved", "iter_refs", "parse", "ref", "render", "resolve_json", "segment"]

_OPEN = "${result="
_ESCAPE = "$${"


@dataclass(frozen=True)
class Ref:
    """One parsed reference.

    >>> r = parse('${result=add-company:$.id}')[0]
    >>> (r.name, r.query)
    ('add-company', '$.id')
    """

    name: str
    query: str
    compiled: Any = None

    @property
    def text(self) -> str:
        return f"${{result={self.name}:{self.query}}}"

    def find(self, document: Any) -> list[Any]:
        """Every value the JSONPath selects in ``document``."""
        return [node.value for node in self.compiled.find(document)]

    def __str__(self) -> str:
        return self.text


Template = tuple  # of str | Ref


def ref(name: str, path: str = "$") -> str:
    """The reference text for operation ``name``'s result at JSONPath ``path``.

    >>> ref("add-company", "$.id")
    '${result=add-company:$.id}'
    """
    problem = name_problem("" if name is None else name)
    if problem:
        raise RefSyntaxError(problem)
    _compile(path)
    return f"${{result={name}:{path}}}"


@lru_cache(maxsize=4096)
def _compile(query: str) -> Any:
    try:
        return _jsonpath.compile(query)
    except _jsonpath.JSONPathError as exc:
        raise RefSyntaxError(f"JSONPath {query!r} does not parse: {exc}") from None


def _end_of_query(s: str, start: int) -> int:
    """Index of the ``}`` closing a reference: the first one outside quotes and brackets."""
    depth = 0
    quote_char = ""
    i, n = start, len(s)
    while i < n:
        c = s[i]
        if quote_char:
            if c == "\\":
                i += 1
            elif c == quote_char:
                quote_char = ""
        elif c in "'\"":
            quote_char = c
        elif c in "[(":
            depth += 1
        elif c in "])":
            depth = max(depth - 1, 0)
        elif c == "}" and depth == 0:
            return i
        i += 1
    return -1


@lru_cache(maxsize=65536)
def parse(s: str) -> Template:
    """Split ``s`` into literal text and references.

    >>> parse("/companies/${result=co:$.id}/staff")
    ('/companies/', Ref(name='co', query='$.id', ...), '/staff')

    The literal parts are unescaped (``$${`` became ``${``).
    """
    if "$" not in s:
        return (s,)
    parts: list[Any] = []
    buf: list[str] = []
    i, n = 0, len(s)
    while i < n:
        j = s.find("$", i)
        if j < 0:
            buf.append(s[i:])
            break
        buf.append(s[i:j])
        if s.startswith(_ESCAPE, j):
            buf.append("${")
            i = j + 3
        elif s.startswith(_OPEN, j):
            start = j + len(_OPEN)
            colon = s.find(":", start)
            if colon < 0:
                raise RefSyntaxError(f"its reference at character {j} has no ':' between name and JSONPath")
            name = s[start:colon]
            if not NAME_PATTERN.match(name):
                raise RefSyntaxError(f"its reference at character {j}: {name_problem(name)}")
            end = _end_of_query(s, colon + 1)
            if end < 0:
                raise RefSyntaxError(f"its reference at character {j} is not closed by '}}'")
            query = s[colon + 1 : end]
            literal = "".join(buf)
            if literal:
                parts.append(literal)
            buf = []
            parts.append(Ref(name, query, _compile(query)))
            i = end + 1
        else:
            buf.append("$")
            i = j + 1
    literal = "".join(buf)
    if literal or not parts:
        parts.append(literal)
    return tuple(parts)


# Ref.__repr__ hides the compiled query object, which only adds noise.
Ref.__repr__ = lambda self: f"Ref(name={self.name!r}, query={self.query!r}, ...)"  # type: ignore[method-assign]


def iter_refs(value: Any) -> Iterator[Ref]:
    """Every reference in a JSON value (keys and string values, at any depth).

    >>> [r.name for r in iter_refs({"a": ["${result=x:$.id}", "${result=y:$}"]})]
    ['x', 'y']
    """
    if isinstance(value, str):
        if "${" in value:
            for p in parse(value):
                if isinstance(p, Ref):
                    yield p
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from iter_refs(k)
            yield from iter_refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from iter_refs(v)


class Unresolved(BatchError):
    """A reference that cannot be filled in: the dependent operation must not run.

    >>> str(Unresolved(parse("${result=co:$.id}")[0], "operation 'co' answered 400"))
    "reference ${result=co:$.id} failed: operation 'co' answered 400"
    """

    def __init__(self, ref: Ref, reason: str) -> None:
        self.ref = ref
        self.reason = reason
        super().__init__(f"reference {ref.text} failed: {reason}")


#: ``lookup(ref)`` returns the values a reference stands for, raises
#: :class:`Unresolved`, or (in partial mode) returns None for "not known here".
Lookup = Callable[[Ref], "list[Any] | None"]


def as_text(value: Any) -> str:
    """A value as it reads inside text: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _escape(text: str) -> str:
    return text.replace("${", "$${")


def _escape_json(value: Any) -> Any:
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, dict):
        return {_escape(k): _escape_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_json(v) for v in value]
    return value


def segment(text: str) -> str:
    """Percent-encode text as one path segment (so a value cannot add a ``/``).

    >>> segment("a b/c")
    'a%20b%2Fc'
    """
    return quote(text, safe="-._~")


def render(s: str, lookup: Lookup, *, encode: Callable[[str], str] | None = None, partial: bool = False) -> str:
    """Resolve every reference in ``s`` as text.

    >>> render("/c/${result=co:$.id}/staff", lambda r: ["co 1"], encode=segment)
    '/c/co%201/staff'

    ``encode`` is applied to each substituted value (``segment`` for paths).
    With ``partial``, references the lookup does not know stay as they are and
    the result is still wire text (escapes kept), ready to be sent on.
    """
    if "$" not in s:
        return s
    out: list[str] = []
    for part in parse(s):
        if isinstance(part, str):
            out.append(_escape(part) if partial else part)
            continue
        values = lookup(part)
        if values is None:
            out.append(part.text)
            continue
        text = ",".join(as_text(v) for v in values)
        if encode is not None:
            text = encode(text)
        out.append(_escape(text) if partial else text)
    return "".join(out)


def resolve_json(value: Any, lookup: Lookup, *, partial: bool = False) -> Any:
    """Resolve references anywhere in a JSON value.

    >>> resolve_json({"n": "${result=s:$.n}", "t": "n=${result=s:$.n}"}, lambda r: [45])
    {'n': 45, 't': 'n=45'}

    A string that is exactly one reference takes the value with its JSON type
    (several matches make a list); other strings get text substitution.
    """
    if isinstance(value, str):
        if "$" not in value:
            return value
        parts = parse(value)
        if len(parts) == 1 and isinstance(parts[0], Ref):
            values = lookup(parts[0])
            if values is None:
                return value
            typed = values[0] if len(values) == 1 else values
            return _escape_json(typed) if partial else typed
        return render(value, lookup, partial=partial)
    if isinstance(value, dict):
        return {render(k, lookup, partial=partial): resolve_json(v, lookup, partial=partial) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_json(v, lookup, partial=partial) for v in value]
    return value
