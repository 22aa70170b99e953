"""References: ``${result=NAME:JSONPATH}`` — one operation's result used in another.

A string is parsed once into a *template*: a tuple of literal text and
:class:`Ref` parts. Resolving a template asks a ``lookup`` callable for the
values a reference stands for; the rules (typed whole-value substitution in a
body, text elsewhere, percent-encoding in a path, ``$${`` as a literal ``${``)
live here and nowhere else, so the server's engine and the client's
cross-batch resolution cannot disagree.

JSONPath is RFC 9535, evaluated by ``jsonpath-rfc9535`` in an environment
of our own that bounds what one reference may cost, since both the query (a
batch) and the document (an API's answer) may be hostile:

- a JSONPath is at most :data:`MAX_QUERY_LENGTH` characters and nests at
  most :data:`MAX_QUERY_NESTING` levels (brackets, parentheses, ``!``,
  ``&&``, ``||``), checked before it is compiled;
- evaluating one costs at most ``max_nodes`` units of work (each node a
  selector visits, selects or a filter tests is one; descents and regular
  expressions count too, see :mod:`batchnb._work`), segment by segment
  rather than as a chain of nested generators, so a long query cannot
  exhaust the stack; the same units count against the batch's work budget
  when one is metered (:class:`batchnb._work.Work`);
- ``match`` and ``search`` run their I-Regexp on RE2, in linear time, each
  pattern checked, translated and compiled once (then kept), not once per node;
- a number literal beyond what a double holds (``1e999``) is a syntax error;
- what is kept between calls (parsed strings, compiled queries, regular
  expressions) is bounded by size, not by count.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast
from urllib.parse import quote

import iregexp_check
import re2
from jsonpath_rfc9535 import JSONPathEnvironment, JSONPathError, JSONPathQuery
from jsonpath_rfc9535.exceptions import JSONPathSyntaxError
from jsonpath_rfc9535.filter_expressions import Expression, FilterQuery
from jsonpath_rfc9535.function_extensions import ExpressionType, FilterFunction
from jsonpath_rfc9535.node import JSONPathNode
from jsonpath_rfc9535.parse import Parser
from jsonpath_rfc9535.selectors import FilterSelector, JSONPathSelector, WildcardSelector
from jsonpath_rfc9535.tokens import TokenStream

from . import _work
from ._exceptions import BatchError, RefSyntaxError
from ._rules import NAME_PATTERN, name_problem, path_value_problem

__all__ = [
    "DEFAULT_MAX_NODES",
    "MAX_QUERY_LENGTH",
    "MAX_QUERY_NESTING",
    "BudgetSpent",
    "Ref",
    "RefSyntaxError",
    "Refused",
    "Unresolved",
    "iter_refs",
    "parse",
    "query_problem",
    "ref",
    "render",
    "render_path",
    "resolve_json",
    "segment",
]

_OPEN = "${result="
_ESCAPE = "$${"

#: the longest JSONPath a reference may hold, in characters.
MAX_QUERY_LENGTH = 1000
#: how deeply brackets, parentheses and filter operators (``!``, ``&&``, ``||``) may nest in one.
MAX_QUERY_NESTING = 32
#: units of work (about nodes visited) evaluating one reference may cost, unless told otherwise.
DEFAULT_MAX_NODES = 100_000
#: how deep ``..`` descends (the library's own bound, kept).
_MAX_DESCENT = 100


# ---------------------------------------------------------------- bounded caches

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _SizedCache(Generic[K, V]):
    """A least-recently-used cache bounded by the total weight of its entries, not their number.

    A string key weighs its length: a million distinct one-megabyte strings
    cannot pile up in memory, however few entries that is.
    """

    def __init__(self, max_weight: int, weigh: Callable[[K], int]) -> None:
        self._max = max_weight
        self._weigh = weigh
        self._weight = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, make: Callable[[K], V]) -> V:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit[0]
        value = make(key)
        weight = self._weigh(key)
        if weight <= self._max // 16:  # one entry never takes over the cache
            with self._lock:
                if key not in self._items:
                    self._items[key] = (value, weight)
                    self._weight += weight
                while self._weight > self._max:
                    _key, (_value, w) = self._items.popitem(last=False)
                    self._weight -= w
        return value

    @property
    def weight(self) -> int:
        return self._weight


# ---------------------------------------------------------------- evaluation, bounded


class _OverBudget(Exception):
    pass


class _Budget:
    """Units one evaluation may still cost; each is also counted against the batch's work, when metered."""

    __slots__ = ("left",)

    def __init__(self, nodes: int) -> None:
        self.left = nodes

    def spend(self, nodes: int) -> None:
        self.left -= nodes
        if self.left < 0:
            raise _OverBudget
        _work.spend(nodes)


#: the budget of the evaluation running in this context (evaluation never awaits, so one at a time).
_BUDGET: ContextVar[_Budget | None] = ContextVar("batchnb_jsonpath_budget", default=None)


def _spend(nodes: int) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.spend(nodes)
    else:
        _work.spend(nodes)


class _Counted:
    """A selector that counts its work: one unit a node it is applied to, each node it selects, and each a filter tests.

    The library's own selectors do the selecting; this one stands in their
    place in a compiled query, so that a filter that tests a hundred thousand
    children and selects none still costs a hundred thousand units.
    """

    __slots__ = ("_inner", "_tests_children")

    def __init__(self, inner: JSONPathSelector) -> None:
        self._inner = inner
        self._tests_children = isinstance(inner, (FilterSelector, WildcardSelector))

    def resolve(self, node: JSONPathNode) -> Iterator[JSONPathNode]:
        value = node.value
        _spend(1 + len(value) if self._tests_children and isinstance(value, (dict, list)) else 1)
        for found in self._inner.resolve(node):
            _spend(1)
            yield found

    def __str__(self) -> str:
        return str(self._inner)


def _counted(query: JSONPathQuery) -> JSONPathQuery:
    """``query`` with every selector counted (:class:`_Counted`), in filters' queries too; changed in place."""
    queries = [query]
    while queries:
        q = queries.pop()
        for segment in q.segments:
            for selector in segment.selectors:
                if isinstance(selector, FilterSelector):
                    queries.extend(_queries_in(selector.expression))
            # A _Counted stands in for the selector it wraps (the library only calls resolve() on it).
            segment.selectors = cast("tuple[JSONPathSelector, ...]", tuple(_Counted(s) for s in segment.selectors))
    return query


def _queries_in(expression: Expression) -> Iterator[JSONPathQuery]:
    """Every query a filter expression holds (``@.a``, ``$.b``, arguments of functions), at any depth."""
    stack: list[Any] = [expression]
    while stack:
        item = stack.pop()
        if isinstance(item, FilterQuery):
            yield item.query
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, Expression):
            stack.extend(
                getattr(item, name, None) for cls in type(item).__mro__ for name in getattr(cls, "__slots__", ())
            )


#: RE2 options: no logging to stderr, and a small memory bound per compiled pattern.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 256 * 1024


def _i_regexp_to_re2(pattern: str) -> str:
    """An I-Regexp (RFC 9485) in RE2's syntax.

    The two differ outside character classes only: ``.`` matches any
    character but CR and LF, and ``^`` and ``$`` are plain characters.
    """
    out: list[str] = []
    escaped = in_class = False
    for ch in pattern:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif in_class:
            out.append(ch)
            in_class = ch != "]"
        elif ch == "[":
            out.append(ch)
            in_class = True
        elif ch == ".":
            out.append("[^\\n\\r]")
        elif ch in "^$":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _compile_regexp(pattern: str) -> Any:
    """The compiled RE2 for an I-Regexp, or None when it is not one (then nothing matches)."""
    _spend(1 + len(pattern) // _work.COSTS["pattern_chars"])
    if len(pattern) > MAX_QUERY_LENGTH or not iregexp_check.check(pattern):
        return None
    try:
        return re2.compile(_i_regexp_to_re2(pattern), _RE2_OPTIONS)
    except (re2.error, UnicodeEncodeError):
        return None


#: compiled patterns, each weighed as what RE2 may take for it at most: 16 MB (64 of the largest) in all.
_REGEXPS: _SizedCache[str, Any] = _SizedCache(16 * 1024 * 1024, lambda p: _RE2_OPTIONS.max_mem // 16 + 64 * len(p))


def _regexp(pattern: object) -> Any:
    """The compiled RE2 for an I-Regexp (checked, translated and compiled once, then kept), or None."""
    if not isinstance(pattern, str) or len(pattern) > MAX_QUERY_LENGTH:
        return None
    return _REGEXPS.get(pattern, _compile_regexp)


class _RegexpFunction(FilterFunction):
    """RFC 9535's ``match`` / ``search``, on RE2: linear in the text, whatever the pattern."""

    @property
    def arg_types(self) -> list[ExpressionType]:
        return [ExpressionType.VALUE, ExpressionType.VALUE]

    @property
    def return_type(self) -> ExpressionType:
        return ExpressionType.LOGICAL

    def __init__(self, whole: bool) -> None:
        self._whole = whole

    def __call__(self, string: object, pattern: object) -> bool:
        if not isinstance(string, str):
            return False
        regexp = _regexp(pattern)
        if regexp is None:
            return False
        # RE2 is linear in the text, but its steps per character grow with the
        # compiled pattern (up to one per instruction once its DFA gives up):
        # counted before it runs, it cannot run past the budget.
        _spend(_work.COSTS["regexp_call"] + len(string) * regexp.programsize // _work.COSTS["regexp_steps"])
        try:
            found = regexp.fullmatch(string) if self._whole else regexp.search(string)
        except UnicodeEncodeError:  # a lone surrogate: not text RE2 can read
            return False
        return found is not None


class _Parser(Parser):
    """The library's parser, refusing number literals that a double cannot hold (``1e999``, 400 digits).

    The library reads them as infinity, or fails converting that to an integer.
    """

    def parse_integer_literal(self, stream: TokenStream) -> Expression:
        self._finite(stream)
        return super().parse_integer_literal(stream)

    def parse_float_literal(self, stream: TokenStream) -> Expression:
        self._finite(stream)
        return super().parse_float_literal(stream)

    @staticmethod
    def _finite(stream: TokenStream) -> None:
        token = stream.current
        try:
            number = float(token.value)
        except ValueError:
            return  # the library says what is wrong with it
        if math.isinf(number):
            raise JSONPathSyntaxError(
                f"the number {_shorten(token.value)} is beyond what a double can hold (about 1.8e308)", token=token
            )


def _shorten(text: str, most: int = 24) -> str:
    return text if len(text) <= most else f"{text[: most // 2]}…{text[-most // 2 :]} ({len(text)} characters)"


class _Environment(JSONPathEnvironment):
    """The JSONPath environment of references: RE2 for regular expressions, descents on a budget."""

    parser_class = _Parser

    def setup_function_extensions(self) -> None:
        super().setup_function_extensions()
        self.function_extensions["match"] = _RegexpFunction(whole=True)
        self.function_extensions["search"] = _RegexpFunction(whole=False)

    @property
    def max_recursion_depth(self) -> int:  # type: ignore[override]  # the library's attribute, read as it is spent
        # The descent segment reads this once for every node it visits: the
        # one place where the cost of '..' can be counted as it is spent.
        _spend(1)
        return _MAX_DESCENT


_ENV = _Environment()


def _nesting(query: str) -> int:
    """How deeply brackets, parentheses and filter operators nest in ``query`` (quotes skipped).

    ``!``, ``&&`` and ``||`` count as a level each within their group: the
    JSONPath library parses and evaluates each of them one call deeper.
    """
    operators = [0]  # per open group
    open_operators = deepest = 0
    previous = ""
    for i, c in _outside_quotes(query):
        counted = False
        if c in "[(":
            operators.append(0)
        elif c in "])" and len(operators) > 1:
            open_operators -= operators.pop()
        elif (c == "!" and query[i + 1 : i + 2] != "=") or (c in "&|" and previous == c):
            operators[-1] += 1
            open_operators += 1
            counted = True
        deepest = max(deepest, len(operators) - 1 + open_operators)
        previous = "" if counted else c
    return deepest


def _outside_quotes(s: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """Each character of a JSONPath that stands outside its quoted strings, with its index."""
    quote_char = ""
    escaped = False
    for i in range(start, len(s)):
        c = s[i]
        if quote_char:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote_char:
                quote_char = ""
        elif c in "'\"":
            quote_char = c
        else:
            yield i, c


def query_problem(query: str, max_length: int = MAX_QUERY_LENGTH, max_nesting: int = MAX_QUERY_NESTING) -> str | None:
    """Why a reference's JSONPath is beyond what may be evaluated, or None.

    >>> query_problem("$.id") is None
    True
    >>> query_problem("$" + ".a" * 600)
    'its JSONPath is 1201 characters long; the limit is 1000'
    """
    if len(query) > max_length:
        return f"its JSONPath is {len(query)} characters long; the limit is {max_length}"
    nesting = _nesting(query)
    if nesting > max_nesting:
        return (
            f"its JSONPath nests {nesting} levels deep (brackets, parentheses, !, &&, ||); the limit is {max_nesting}"
        )
    return None


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

    def find(self, document: Any, max_nodes: int = DEFAULT_MAX_NODES) -> list[Any]:
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
        budget = _Budget(max_nodes)
        token = _BUDGET.set(budget)
        try:
            compiled = _COMPILED.get(self.query, _compile_again)
            nodes = [JSONPathNode(value=document, location=(), parent=None, root=document)]
            # Segment by segment: the library chains one generator per segment,
            # which a long query would nest deeper than the stack allows.
            for seg in compiled.segments:
                nodes = list(seg.resolve(nodes))
            return [node.value for node in nodes]
        except _OverBudget:
            raise Unresolved(
                self, f"{self.query} visits more than {max_nodes} nodes of the result of {self.name!r}"
            ) from None
        except _work.OutOfWork as exc:
            raise BudgetSpent(self, str(exc)) from None
        except (JSONPathError, RecursionError):
            raise Unresolved(
                self, f"{self.query} nests too deeply to evaluate on the result of {self.name!r}"
            ) from None
        finally:
            _BUDGET.reset(token)

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
    _compile(path)
    return f"${{result={name}:{path}}}"


def _compile_now(query: str) -> Any:
    problem = query_problem(query)
    if problem:
        raise RefSyntaxError(problem)
    try:
        return _counted(_ENV.compile(query))
    except JSONPathError as exc:
        raise RefSyntaxError(f"JSONPath {query!r} does not parse: {exc}") from None
    except (OverflowError, ValueError) as exc:  # a last guard: the parser refuses what it knows of
        raise RefSyntaxError(f"JSONPath {query!r} does not parse: {exc}") from None
    except RecursionError:  # a last guard: the nesting bound keeps the parser well inside the stack
        raise RefSyntaxError(f"JSONPath {query[:40]!r}… nests too deeply to compile") from None


#: a compiled query of n characters holds about 1.1 n objects in 85 n bytes: 100,000 characters
#: are 8.5 MB, and few enough objects for the garbage collector to walk them in tens of milliseconds.
_COMPILED: _SizedCache[str, Any] = _SizedCache(100_000, len)


def _compile(query: str) -> Any:
    return _COMPILED.get(query, _compile_now)


def _compile_again(query: str) -> Any:
    """A query compiled when it was parsed, and since dropped from the cache: its work counts as evaluation's."""
    _spend(1 + len(query) * _work.COSTS["query_chars"])
    return _compile_now(query)


def _end_of_query(s: str, start: int) -> int:
    """Index of the ``}`` closing a reference: the first one outside quotes and brackets."""
    depth = 0
    for i, c in _outside_quotes(s, start):
        if c in "[(":
            depth += 1
        elif c in "])":
            depth = max(depth - 1, 0)
        elif c == "}" and depth == 0:
            return i
    return -1


#: parsed strings, weighed by length (each is kept about twice: text and parts) and their
#: references (a reference and its strings take about 200 bytes): 16 MB at most.
_PARSED: _SizedCache[str, Template] = _SizedCache(8 * 1024 * 1024, lambda s: len(s) + 100 * s.count("${"))


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
            _compile(query)  # a query that does not compile does not parse
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
