"""Every rule of a Batch API 2.3 batch, written once.

What a valid method, path, header, name and reference graph is, and how a
batch's size and depth are counted. Each check is a pure function that
returns problems *by position* (an index, a field); the callers turn a
position into their own pointer: the wire model says ``requests[2].path``,
:func:`batchnb.from_frame` says ``row 17, column path``, the Composer marks a
field of its form. A change of the spec is one edit here.

    >>> method_problem("fetch")
    "unknown method 'fetch'; use one of GET, POST, PUT, DELETE, PATCH"
    >>> path_problem("/api/2.1/scheduling/companies") is None
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_REQUESTS",
    "FORBIDDEN_HEADERS",
    "FORBIDDEN_HEADER_PREFIXES",
    "IDEMPOTENT_METHODS",
    "METHODS",
    "NAME_PATTERN",
    "GraphProblem",
    "Reference",
    "Shape",
    "check_graph",
    "header_problems",
    "header_set_problems",
    "is_idempotent_method",
    "link_parents",
    "measure",
    "method_problem",
    "name_problem",
    "parallel_problem",
    "parse_header_lines",
    "path_problem",
    "path_value_problem",
    "too_deep",
    "too_many",
]

T = TypeVar("T")

# ---------------------------------------------------------------- methods

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
#: methods whose repetition changes nothing: a batch made only of these may be resent.
IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE"})


def method_problem(method: Any) -> str | None:
    """Why ``method`` is not a method the API takes (any case), or None.

    >>> method_problem("post") is None, method_problem("")
    (True, 'is required: one of GET, POST, PUT, DELETE, PATCH')

    Only ASCII letters change case: ``"po\\u017ft".upper()`` is ``"POST"`` in
    Python, but no HTTP server reads it so.

    >>> method_problem("po\u017ft")
    "unknown method 'poſt'; use one of GET, POST, PUT, DELETE, PATCH"
    """
    if method in METHODS:
        return None  # the common case: one already in upper case
    if method is None or (isinstance(method, str) and not method.strip(_OWS)):
        return "is required: one of " + ", ".join(METHODS)
    if not isinstance(method, str):
        return f"must be a string such as 'GET', not {type(method).__name__}"
    # A method is an ASCII token: str.upper() would read 'poſt' (long s) or 'poﬆ' (a ligature) as POST.
    if not method.isascii() or method.upper() not in METHODS:
        return f"unknown method {method!r}; use one of {', '.join(METHODS)}"
    return None


def is_idempotent_method(method: str) -> bool:
    """True for GET, PUT and DELETE: sending one twice changes nothing more.

    >>> is_idempotent_method("PUT"), is_idempotent_method("POST")
    (True, False)
    """
    return method in IDEMPOTENT_METHODS


# ---------------------------------------------------------------- names

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+\Z")


def name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name an operation, or None (no name at all is fine).

    >>> name_problem("add company")
    "'add company' is not a valid name: use letters, digits, '_', '.', '-'"
    """
    if name is None:
        return None
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        # A container is named by its type, not its repr: a hostile one may nest a thousand levels deep.
        shown = f"a {type(name).__name__}" if isinstance(name, (dict, list, tuple)) else repr(name)
        return f"{shown} is not a valid name: use letters, digits, '_', '.', '-'"
    return None


# ---------------------------------------------------------------- paths

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_OTHER_HOST = "must not start with '//' (that names another host)"
_DOT_SEGMENTS = "must not contain '.' or '..' segments"
_FRAGMENT = "must not contain '#' (a fragment is never sent: percent-encode it as %23)"
#: a path of letters, digits and ``_.~-`` segments, no query: nothing in it decodes to anything else.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_.~-][A-Za-z0-9_.~/-]*\Z|/\Z")
_DOT_SEGMENT = re.compile(r"/\.\.?(?=/|\Z)")
#: what stands in for a value filled in later (a reference, a template slot):
#: one ordinary segment, which is what a percent-encoded value becomes.
_STAND_IN = "x"


def path_problem(path: Any) -> str | None:
    """Why ``path`` is not a safe path relative to the API, or None if it is.

    ``path`` is text, or a tuple of parts: text, and stand-ins (any other
    object) for values filled in later (references, template slots). A value
    is percent-encoded as one segment when it is filled in, so each stand-in
    is checked as one plain segment.

    >>> path_problem("//evil.example/x")
    "must not start with '//' (that names another host)"
    >>> path_problem(("/companies/", object(), "/staff")) is None
    True

    Any other sequence (a list, off the wire) is a value of the wrong type, not parts.
    """
    if isinstance(path, tuple):
        path = "".join(p if isinstance(p, str) else _STAND_IN for p in path)
    if type(path) is str and _PLAIN_PATH.match(path):
        # The common case, decided in one match: nothing here can decode into anything else.
        return _DOT_SEGMENTS if _DOT_SEGMENT.search(path) else None
    return _path_problem(path)


def _path_problem(path: Any) -> str | None:
    """:func:`path_problem` for any path, the long way (also the fast path's reference)."""
    if path is None or (isinstance(path, str) and not path.strip()):
        return "is required: a path such as '/api/2.1/scheduling/companies'"
    if not isinstance(path, str):
        return f"must be a string such as '/api/2.1/scheduling/companies', not {type(path).__name__}"
    if not path.startswith("/"):
        if _SCHEME.match(path):
            return "must be relative to the API, not an absolute URL"
        return "must start with '/'"
    if path.startswith("//"):
        return _OTHER_HOST
    if "\\" in path:
        return "must not contain a backslash"
    if _CONTROL.search(path):
        return "must not contain control characters (CR, LF, NUL, …)"
    if " " in path:
        return "must not contain spaces (percent-encode them as %20)"
    if "#" in path:
        # Nothing after a '#' is sent, and credentials added after it would be lost with it.
        return _FRAGMENT
    route = path.split("?", 1)[0]
    decoded = route
    # Twice: an upstream that decodes once more must not see '..' either.
    for _ in range(2):
        decoded = unquote(decoded)
        if _CONTROL.search(decoded) or "\\" in decoded:
            return "must not contain encoded control characters or backslashes"
        if any(_is_dot_segment(seg) for seg in decoded.split("/")):
            return _DOT_SEGMENTS
        if decoded.startswith("//"):
            return _OTHER_HOST
    return None


def _is_dot_segment(segment: str) -> bool:
    """'.' or '..', also with path parameters (``..;x``): servlet containers drop ``;…`` before reading a segment."""
    return segment.partition(";")[0] in (".", "..")


def path_value_problem(text: str) -> str | None:
    """Why a value filled into a path's route (before any ``?``) cannot be sent, or None.

    A value is percent-encoded as one segment, but an API that decodes
    ``%2F`` before it routes would still read a ``/`` in it as a separator:
    such a value could reach another resource, so it is refused.

    >>> path_value_problem("co_1") is None, path_value_problem("co_1/services/sv_2")
    (True, "a value filled into the path holds '/' or a backslash, which an API may read as a separator")
    """
    if "/" in text or "\\" in text:
        return "a value filled into the path holds '/' or a backslash, which an API may read as a separator"
    return None


# ---------------------------------------------------------------- headers

#: headers that belong to the connection (hop by hop), not to the operation.
_HOP_BY_HOP = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "transfer-encoding",
        "te",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "trailer",
        "expect",
    }
)
#: headers that proxies and frameworks read as the request's real URL, method or client: set by an
#: operation, one would reach a path, or act as a method, that the batch never checked.
_REWRITING = frozenset(
    {
        "x-original-url",
        "x-original-uri",
        "x-rewrite-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "forwarded",
        "x-forwarded",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
    }
)
_REWRITES = ": proxies and frameworks read it as the request's URL, method or client"
#: headers (lower case) an operation may not set: hop by hop, or rewriting the URL, method or client.
FORBIDDEN_HEADERS = _HOP_BY_HOP | _REWRITING
#: ... and every header whose lower-case name starts with one of these (``X-Forwarded-For``, ``-Host``, …).
FORBIDDEN_HEADER_PREFIXES = ("x-forwarded-",)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
#: HTTP's optional white space: what may stand around a header value.
_OWS = " \t"
#: a value of printable ASCII that neither starts nor ends with a space: nothing in it can be a problem.
_PLAIN_VALUE = re.compile(r"(?:[!-~](?:[ -~]*[!-~])?)?\Z")


def header_problems(name: Any, value: Any) -> list[str]:
    """Why one header (name and value) cannot be sent with an operation; empty when it can.

    >>> header_problems("Host", "example.com")
    ["header 'Host' cannot be set per operation"]
    >>> header_problems("X-Original-URL", "/admin")[0].endswith("read it as the request's URL, method or client")
    True
    >>> header_problems("X-Note", "caf\\u00e9")
    ['header value must be ASCII text (percent-encode other characters)']

    A value is what HTTP can carry as it is: ASCII, with no space or tab at
    either end (they would be dropped or refused on the way).
    """
    if (
        type(name) is str
        and type(value) is str
        and _PLAIN_VALUE.match(value)
        and _TOKEN.match(name)
        and not _forbidden(name.lower())
    ):
        return []  # the common case, decided in two matches
    return _header_problems(name, value)


def _forbidden(lower: str) -> bool:
    return lower in FORBIDDEN_HEADERS or lower.startswith(FORBIDDEN_HEADER_PREFIXES)


def _header_problems(name: Any, value: Any) -> list[str]:
    """:func:`header_problems` the long way (also the fast path's reference)."""
    out = []
    if not isinstance(name, str) or not _TOKEN.match(name):
        out.append(f"{name!r} is not a valid header name")
    elif _forbidden(name.lower()):
        why = "" if name.lower() in _HOP_BY_HOP else _REWRITES
        out.append(f"header {name!r} cannot be set per operation{why}")
    if not isinstance(value, str):
        out.append("header values must be strings")
    elif _CONTROL.search(value.replace("\t", " ")):
        out.append("header value must not contain control characters (CR, LF, NUL, …)")
    elif not value.isascii():
        out.append("header value must be ASCII text (percent-encode other characters)")
    elif value != value.strip(_OWS):
        out.append("header value must not start or end with a space or a tab")
    return out


def header_set_problems(names: Iterable[Any]) -> list[tuple[Any, str]]:
    """(name, why) for each header name that repeats an earlier one in another case.

    HTTP header names are case-insensitive: ``Authorization`` and
    ``authorization`` in one operation are the same header set twice, and
    which one the API would see is anybody's guess.

    >>> header_set_problems(["Authorization", "X-A", "authorization"])
    [('authorization', "header 'authorization' repeats 'Authorization' (header names ignore case)")]
    """
    first: dict[str, Any] = {}
    out = []
    for name in names:
        key = name.lower() if isinstance(name, str) else name
        if key in first:
            out.append((name, _repeats(name, first[key])))
        else:
            first[key] = name
    return out


def _repeats(name: str, earlier: str) -> str:
    return f"header {name!r} repeats {earlier!r} (header names ignore case)"


def parse_header_lines(text: str) -> tuple[dict[str, str], list[str]]:
    """``"Name: value"`` lines to a dict, and the problems of lines not of that form.

    A problem names the line by its number only: the line itself may hold a credential.

    >>> parse_header_lines("Accept: text/plain\\nno colon here")
    ({'Accept': 'text/plain'}, ["line 2 is not of the form 'Name: value'"])
    """
    headers: dict[str, str] = {}
    first: dict[str, str] = {}
    bad: list[str] = []
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        # Only spaces and tabs are HTTP's white space: str.strip() would also drop a no-break space
        # (or any Unicode space) from a value, and send 'k1' for 'k1\xa0'.
        if not line.strip(_OWS):
            continue
        name, sep, value = line.partition(":")
        name = name.strip(_OWS)
        if not sep or not name:
            bad.append(f"line {number} is not of the form 'Name: value'")
            continue
        if name.lower() in first:
            bad.append(f"line {number}: {_repeats(name, first[name.lower()])}")
            continue
        first[name.lower()] = name
        headers[name] = value.strip(_OWS)
    return headers, bad


# ---------------------------------------------------------------- operations in flight at once


def parallel_problem(parallel: Any, limit: int | None = None) -> str | None:
    """Why ``parallel`` cannot say how many of a batch's operations run at once, or None.

    >>> parallel_problem(4) is None, parallel_problem(0), parallel_problem(64, limit=16)
    (True, 'must be a whole number, at least 1', 'asks for 64 operations at once; this server runs at most 16')
    """
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        return "must be a whole number, at least 1"
    if limit is not None and parallel > limit:
        return f"asks for {parallel} operations at once; this server runs at most {limit}"
    return None


# ---------------------------------------------------------------- size and depth

#: the spec's limits, used when a server does not announce its own.
DEFAULT_MAX_REQUESTS = 50
DEFAULT_MAX_DEPTH = 4


@dataclass(frozen=True)
class Shape:
    """How many operations a batch holds (nested ones included) and how deep it nests.

    ``deepest`` is the index path of the first operation at the greatest
    depth (``(2, 0)`` is the first child of the third operation).

    >>> Shape(3, 2, (0, 0)).depth
    2
    """

    size: int
    depth: int
    deepest: tuple[int, ...] = ()


def measure(items: Iterable[T], children: Callable[[T], Any]) -> Shape:
    """Count operations and nesting without recursion (hostile input may nest thousands deep).

    ``children(item)`` gives an item's children, or anything that is not a
    list when it has none.

    >>> measure([{"requests": [{}, {"requests": [{}]}]}, {}], lambda d: d.get("requests"))
    Shape(size=5, depth=3, deepest=(0, 1, 0))
    """
    # Each operation keeps only its parent and its place: the deepest one's pointer is rebuilt once at
    # the end, so the work is linear in the operations, however deep they nest.
    size, depth, deepest = 0, 0, -1
    parents: list[int] = []
    places: list[int] = []
    stack: list[tuple[Iterable[T], int, int]] = [(items, -1, 0)]
    while stack:
        level, parent, above = stack.pop()
        kids_of_level = []
        for i, item in enumerate(level):
            node = size
            parents.append(parent)
            places.append(i)
            size += 1
            if above + 1 > depth:
                depth, deepest = above + 1, node
            kids = children(item)
            if isinstance(kids, list) and kids:
                kids_of_level.append((kids, node, above + 1))
        # Reversed so that the first child list is visited first: 'deepest' is the first in order.
        stack.extend(reversed(kids_of_level))
    path = []
    while deepest >= 0:
        path.append(places[deepest])
        deepest = parents[deepest]
    return Shape(size, depth, tuple(reversed(path)))


def too_many(size: int, limit: int) -> str:
    """The message for a batch (or a unit that must travel whole) over the operation limit.

    >>> too_many(60, 50)
    '60 operations (nested included); the limit is 50 per batch'
    """
    return f"{size} operations (nested included); the limit is {limit} per batch"


def too_deep(depth: int, limit: int) -> str:
    """The message for nesting deeper than the limit.

    >>> too_deep(5, 4)
    'nested 5 levels deep; the limit is 4'
    """
    return f"nested {depth} levels deep; the limit is {limit}"


# ---------------------------------------------------------------- the reference graph


@dataclass(frozen=True)
class Reference:
    """One reference found in an operation: where it stands, what it names, how it reads.

    ``position`` is None for a reference that stands in every operation (a
    constant or a template argument of :func:`batchnb.from_frame`).

    >>> Reference(0, "path", "co", "${result=co:$.id}").name
    'co'
    """

    position: int | None
    field: Hashable
    name: str
    text: str


@dataclass(frozen=True)
class GraphProblem:
    """A problem of the graph at ``position`` (None: of every operation), in ``field``.

    >>> GraphProblem(2, "name", "duplicate name 'co'").position
    2
    """

    position: int | None
    field: Hashable
    message: str


def link_parents(
    names: Sequence[str | None],
    parents: Sequence[str | None],
    *,
    field: Hashable = "parent",
    describe: Callable[[int], str],
) -> tuple[list[int], list[GraphProblem]]:
    """Each operation's parent position (-1 at the top level) from the parent's name.

    A parent must be an earlier operation: its children run right after it.

    >>> link_parents(["co", None, "x"], [None, "co", "nope"], describe=lambda i: f"operation {i}")
    ([-1, 0, -1], [GraphProblem(position=2, field='parent', message="parent 'nope' is the name of no operation")])
    """
    first = _first_positions(names)
    up = [-1] * len(parents)
    problems = []
    for i, parent in enumerate(parents):
        if parent is None:
            continue
        j = first.get(parent, -1)
        if j < 0:
            problems.append(GraphProblem(i, field, f"parent {parent!r} is the name of no operation"))
        elif j == i:
            problems.append(GraphProblem(i, field, f"parent {parent!r} is this operation itself"))
        elif j > i:
            problems.append(
                GraphProblem(
                    i, field, f"parent {parent!r} is {describe(j)}, which comes later; a parent must come earlier"
                )
            )
        else:
            up[i] = j
    return up, problems


def check_graph(
    names: Sequence[str | None],
    references: Iterable[Reference],
    *,
    parents: Sequence[int] | None = None,
    known: Collection[str] = (),
    name_field: Hashable = "name",
    describe: Callable[[int], str],
) -> list[GraphProblem]:
    """Duplicate names; references that are unknown, to oneself, forward or in a cycle.

    Operations are given by position: ``names[i]`` is the name of the
    operation at ``i`` and ``parents[i]`` the position of its parent (-1, or
    no ``parents``, at the top level). They run depth first, each child right
    after its parent. A reference must name an operation that runs earlier,
    or one of the ``known`` names (results of earlier batches or runs).
    ``describe(j)`` says how a message names the operation at ``j``.

    >>> refs = [Reference(0, "path", "b", "${result=b:$.id}")]
    >>> [p.message for p in check_graph(["a", "b"], refs, describe=lambda i: f"requests[{i}]")]
    ['${result=b:$.id} refers to requests[1], which runs later (a forward reference)']
    """
    n = len(names)
    first = _first_positions(names)
    problems: list[GraphProblem] = []
    for i, name in enumerate(names):
        if name is not None and first[name] != i:
            problems.append(
                GraphProblem(i, name_field, f"duplicate name {name!r} (first used at {describe(first[name])})")
            )
    order = _run_order(parents) if parents is not None and any(p >= 0 for p in parents) else None
    refs = list(references)
    edges = [(r.position, first[r.name]) for r in refs if r.position is not None and r.name in first]
    cyclic = _cyclic_pairs(edges) if any(_later(order, j, i) for i, j in edges) else set()
    for r in refs:
        if r.name in known:
            continue
        j = first.get(r.name)
        if j is None:
            problems.append(
                GraphProblem(
                    r.position, r.field, f"{r.text} refers to {r.name!r}, which no operation in the batch is named"
                )
            )
            continue
        for i in range(n) if r.position is None else (r.position,):
            if i == j:
                problems.append(GraphProblem(i, r.field, f"{r.text} refers to this operation's own result"))
            elif _later(order, j, i):
                if (i, j) in cyclic:
                    message = f"{r.text} makes a cycle: {describe(j)} refers back to this operation"
                else:
                    message = f"{r.text} refers to {describe(j)}, which runs later (a forward reference)"
                problems.append(GraphProblem(i, r.field, message))
    return problems


def _first_positions(names: Sequence[str | None]) -> dict[str, int]:
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name is not None:
            first.setdefault(name, i)
    return first


def _later(order: list[int] | None, j: int, i: int) -> bool:
    """Whether the operation at ``j`` runs after the one at ``i``."""
    return (order[j] > order[i]) if order is not None else j > i


def _run_order(parents: Sequence[int]) -> list[int]:
    """Each position's place in the order operations run: depth first, children after their parent."""
    n = len(parents)
    children: list[list[int]] = [[] for _ in range(n)]
    tops: list[int] = []
    for i, j in enumerate(parents):
        (children[j] if j >= 0 else tops).append(i)
    order = [0] * n
    k = 0
    stack = tops[::-1]
    while stack:
        i = stack.pop()
        order[i] = k
        k += 1
        stack.extend(children[i][::-1])
    return order


def _cyclic_pairs(edges: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """The edges (i references j) that lie on a cycle: both ends in one strongly connected component.

    Iterative Tarjan, so that a long chain cannot exhaust the stack.
    """
    adjacency: dict[int, list[int]] = {}
    for i, j in edges:
        adjacency.setdefault(i, []).append(j)
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    component: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    counter = 0
    for root in adjacency:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, k = work.pop()
            if k == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            targets = adjacency.get(v, [])
            if k < len(targets):
                work.append((v, k + 1))
                w = targets[k]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component[w] = v
                    if w == v:
                        break
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return {
        (i, j) for i, j in edges if i != j and component.get(i) is not None and component.get(i) == component.get(j)
    }
