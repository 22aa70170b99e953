"""JSONPath (RFC 9535) evaluated within bounds: what one reference's query may cost.

Evaluated by ``jsonpath-rfc9535`` in an environment of our own that bounds
what one query may cost, since both the query (a batch) and the document (an
API's answer) may be hostile:

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
- compiled queries and regular expressions are kept in caches bounded by
  size, not by count.

What a reference is, and how its values are filled in, is :mod:`batchnb._refs`'.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, cast

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
from ._cache import SizedCache
from ._exceptions import RefSyntaxError

__all__ = [
    "DEFAULT_MAX_NODES",
    "MAX_QUERY_LENGTH",
    "MAX_QUERY_NESTING",
    "OverBudget",
    "TooNested",
    "compile_query",
    "outside_quotes",
    "query_problem",
    "select",
]

#: the longest JSONPath a reference may hold, in characters.
MAX_QUERY_LENGTH = 1000
#: how deeply brackets, parentheses and filter operators (``!``, ``&&``, ``||``) may nest in one.
MAX_QUERY_NESTING = 32
#: units of work (about nodes visited) evaluating one reference may cost, unless told otherwise.
DEFAULT_MAX_NODES = 100_000
#: how deep ``..`` descends (the library's own bound, kept).
_MAX_DESCENT = 100


# ---------------------------------------------------------------- evaluation, bounded


class OverBudget(Exception):
    """An evaluation would cost more than its ``max_nodes``."""


class TooNested(Exception):
    """An evaluation would descend or nest calls deeper than it may."""


class _Budget:
    """Units one evaluation may still cost; each is also counted against the batch's work, when metered."""

    __slots__ = ("left",)

    def __init__(self, nodes: int) -> None:
        self.left = nodes

    def spend(self, nodes: int) -> None:
        self.left -= nodes
        if self.left < 0:
            raise OverBudget
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
_REGEXPS: SizedCache[str, Any] = SizedCache(16 * 1024 * 1024, lambda p: _RE2_OPTIONS.max_mem // 16 + 64 * len(p))


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
    for i, c in outside_quotes(query):
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


def outside_quotes(s: str, start: int = 0) -> Iterator[tuple[int, str]]:
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
_COMPILED: SizedCache[str, Any] = SizedCache(100_000, len)


def compile_query(query: str) -> Any:
    """``query`` compiled (once, then kept), or :class:`~batchnb.RefSyntaxError` saying why not.

    >>> compile_query("$.id") is compile_query("$.id")
    True
    """
    return _COMPILED.get(query, _compile_now)


def _compile_again(query: str) -> Any:
    """A query compiled when it was parsed, and since dropped from the cache: its work counts as evaluation's."""
    _spend(1 + len(query) * _work.COSTS["query_chars"])
    return _compile_now(query)


def select(query: str, document: Any, max_nodes: int = DEFAULT_MAX_NODES) -> list[Any]:
    """Every value ``query`` selects in ``document``, at a cost of at most ``max_nodes`` units.

    >>> select("$.items[*].id", {"items": [{"id": 1}, {"id": 2}]})
    [1, 2]

    Raises :class:`OverBudget` past ``max_nodes``, :class:`TooNested` when
    it would descend deeper than 100 levels or nest calls too deeply, and
    :class:`batchnb._work.OutOfWork` when the batch's work budget (if one is
    metered here) runs out first. ``query`` is compiled (and checked) if the
    cache no longer holds it: that work counts too.
    """
    budget = _Budget(max_nodes)
    token = _BUDGET.set(budget)
    try:
        compiled = _COMPILED.get(query, _compile_again)
        nodes = [JSONPathNode(value=document, location=(), parent=None, root=document)]
        # Segment by segment: the library chains one generator per segment,
        # which a long query would nest deeper than the stack allows.
        for seg in compiled.segments:
            nodes = list(seg.resolve(nodes))
        return [node.value for node in nodes]
    except (JSONPathError, RecursionError):
        raise TooNested from None
    finally:
        _BUDGET.reset(token)
