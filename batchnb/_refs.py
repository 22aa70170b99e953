"""References: ``${result=NAME:JSONPATH}`` — one operation's result used in another.

A string is parsed once into a *template*: a tuple of literal text and
:class:`Ref` parts. Resolving a template asks a ``lookup`` callable for the
values a reference stands for; the rules (typed whole-value substitution in a
body, text elsewhere, percent-encoding in a path, ``$${`` as a literal ``${``)
live here and nowhere else, so the server's engine and the client's
cross-batch resolution cannot disagree.

A reference's JSONPath is compiled as it is parsed and evaluated within
bounds by :mod:`batchnb._jsonpath` (its length, nesting and cost); parsed
strings are kept in a cache bounded by size, not by count.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from . import _jsonpath, _work
from ._cache import SizedCache
from ._exceptions import BatchError, RefSyntaxError
from ._rules import NAME_PATTERN, name_problem, path_value_problem

__all__ = [
    "BudgetSpent",
    "Ref",
    "RefSyntaxError",
    "Refused",
    "Unresolved",
    "iter_refs",
    "parse",
    "ref",
    "render",
    "render_path",
    "resolve_json",
    "segment",
]

_OPEN = "${result="
_ESCAPE = "$${"


@dataclass(frozen=True, slots=True, repr=False)
class Ref:
    """One parsed reference.

    >>> r = parse('${result=add-company:$.id}')[0]
    >>> (r.name, r.query)
    ('add-company', '$.id')

    Its query was compiled as it was parsed (a query that does not compile
    does not parse); the compiled query is kept in a cache of its own, bounded
    by size, not in the reference, so that parsed strings kept elsewhere do
    not keep compiled queries beyond that bound.
    """

    name: str
    query: str

    def __repr__(self) -> str:
        # As it has always read (the compiled query it once showed is kept elsewhere now).
        return f"Ref(name={self.name!r}, query={self.query!r}, ...)"

    @property
    def text(self) -> str:
        return f"${{result={self.name}:{self.query}}}"

    def find(self, document: Any, max_nodes: int = _jsonpath.DEFAULT_MAX_NODES) -> list[Any]:
        """Every value the JSONPath selects in ``document``, at a cost of at most ``max_nodes`` units.

        >>> parse("${result=co:$.items[*].id}")[0].find({"items": [{"id": 1}, {"id": 2}]})
        [1, 2]

        A unit is a node visited, selected or tested by a filter (regular
        expressions count too: see :mod:`batchnb._work`). Raises
        :class:`Unresolved` when the evaluation would cost more, descend
        deeper than 100 levels or nest calls too deeply, and
        :class:`BudgetSpent` when the batch's work budget (if one is
        metered here) runs out first.
        """
        try:
            return _jsonpath.select(self.query, document, max_nodes)
        except _jsonpath.OverBudget:
            raise Unresolved(
                self, f"{self.query} visits more than {max_nodes} nodes of the result of {self.name!r}"
            ) from None
        except _work.OutOfWork as exc:
            raise BudgetSpent(self, str(exc)) from None
        except _jsonpath.TooNested:
            raise Unresolved(
                self, f"{self.query} nests too deeply to evaluate on the result of {self.name!r}"
            ) from None

    def __str__(self) -> str:
        return self.text


Template = tuple["str | Ref", ...]


def ref(name: str, path: str = "$") -> str:
    """The reference text for operation ``name``'s result at JSONPath ``path``.

    >>> ref("add-company", "$.id")
    '${result=add-company:$.id}'
    """
    problem = name_problem("" if name is None else name)
    if problem:
        raise RefSyntaxError(problem)
    _jsonpath.compile_query(path)
    return f"${{result={name}:{path}}}"


def _end_of_query(s: str, start: int) -> int:
    """Index of the ``}`` closing a reference: the first one outside quotes and brackets."""
    depth = 0
    for i, c in _jsonpath.outside_quotes(s, start):
        if c in "[(":
            depth += 1
        elif c in "])":
            depth = max(depth - 1, 0)
        elif c == "}" and depth == 0:
            return i
    return -1


#: parsed strings, weighed by length (each is kept about twice: text and parts) and their
#: references (a reference and its strings take about 200 bytes): 16 MB at most.
_PARSED: SizedCache[str, Template] = SizedCache(8 * 1024 * 1024, lambda s: len(s) + 100 * s.count("${"))


def parse(s: str) -> Template:
    """Split ``s`` into literal text and references.

    >>> parse("/companies/${result=co:$.id}/staff")
    ('/companies/', Ref(name='co', query='$.id', ...), '/staff')

    The literal parts are unescaped (``$${`` became ``${``).
    """
    if "$" not in s:
        return (s,)
    return _PARSED.get(s, _parse)


def _parse(s: str) -> Template:
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
            _jsonpath.compile_query(query)  # a query that does not compile does not parse
            parts.append(Ref(name, query))
            i = end + 1
        else:
            buf.append("$")
            i = j + 1
    literal = "".join(buf)
    if literal or not parts:
        parts.append(literal)
    return tuple(parts)


def iter_refs(value: Any) -> Iterator[Ref]:
    """Every reference in a JSON value (keys and string values, at any depth).

    >>> [r.name for r in iter_refs({"a": ["${result=x:$.id}", "${result=y:$}"]})]
    ['x', 'y']
    """
    stack = [value]  # not recursion: a hostile body may nest a thousand levels deep
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "${" in item:
                yield from (p for p in parse(item) if isinstance(p, Ref))
        elif isinstance(item, dict):
            for k, v in reversed(list(item.items())):
                stack.append(v)
                stack.append(k)
        elif isinstance(item, list):
            stack.extend(reversed(item))


class Unresolved(BatchError):
    """A reference that cannot be filled in: the dependent operation must not run.

    >>> str(Unresolved(parse("${result=co:$.id}")[0], "operation 'co' answered 400"))
    "reference ${result=co:$.id} failed: operation 'co' answered 400"

    ``status`` and ``code`` are what the operation answers instead (424,
    a failed dependency, unless a subclass says otherwise).
    """

    status = 424
    code = "failed_dependency"

    def __init__(self, ref: Ref, reason: str) -> None:
        self.ref = ref
        self.reason = reason
        super().__init__(f"reference {ref.text} failed: {reason}")


class BudgetSpent(Unresolved):
    """A reference left unresolved because the batch's work budget ran out (``maxBatchWork``): 424.

    >>> err = BudgetSpent(parse("${result=co:$.id}")[0], "the batch's work budget of 1000 units is spent")
    >>> (err.status, err.code)
    (424, 'work_budget_spent')
    """

    code = "work_budget_spent"


class Refused(Unresolved):
    """A reference whose value may not be used where it stands: too large, or unsafe in a path.

    >>> err = Refused(parse("${result=co:$.id}")[0], "too large", 413, "resolved_too_large")
    >>> (err.status, err.code)
    (413, 'resolved_too_large')
    """

    def __init__(self, ref: Ref, reason: str, status: int, code: str) -> None:
        super().__init__(ref, reason)
        self.status = status
        self.code = code


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
    return _render(s, lookup, lambda _ref, text, _in_query: encode(text) if encode is not None else text, partial)


def render_path(s: str, lookup: Lookup, *, partial: bool = False) -> str:
    """Resolve every reference in a path: each value one percent-encoded segment, or a query value.

    >>> render_path("/c/${result=co:$.id}/s?q=${result=co:$.id}", lambda r: ["a b"])
    '/c/a%20b/s?q=a%20b'

    A value that would stand before the ``?`` and holds a ``/`` (or a
    backslash) raises :class:`Refused` (400): an API that decodes ``%2F``
    before it routes would read it as a separator.
    """
    if "$" not in s:
        return s

    def encode(part: Ref, text: str, in_query: bool) -> str:
        problem = None if in_query else path_value_problem(text)
        if problem:
            raise Refused(part, problem, 400, "unsafe_path_value")
        return segment(text)

    return _render(s, lookup, encode, partial)


def _render(s: str, lookup: Lookup, encode: Callable[[Ref, str, bool], str], partial: bool) -> str:
    out: list[str] = []
    in_query = False
    for part in parse(s):
        if isinstance(part, str):
            in_query = in_query or "?" in part
            out.append(_escape(part) if partial else part)
            continue
        values = lookup(part)
        if values is None:
            out.append(part.text)
            continue
        text = encode(part, ",".join(as_text(v) for v in values), in_query)
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
