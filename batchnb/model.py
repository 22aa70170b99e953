"""The wire model of the Batch API 2.3: :class:`Operation`, :class:`Batch`, :class:`Response`.

Everything that can be wrong with a batch is found here, all at once, each
problem with a pointer (``requests[2].requests[0].method``), and raised as one
:class:`~batchnb.BatchValidationError` before anything is sent. The rules
themselves live in ``batchnb._rules``; this module only says where a
problem stands in a batch. It knows nothing of how a batch is drawn.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from . import _json, _refs, _rules
from ._exceptions import BatchValidationError, Problem
from ._secrets import mask_headers, mask_path
from ._text import operations

__all__ = ["BATCH_PATH", "Batch", "Operation", "Response", "check_batch", "is_idempotent"]

#: where a server takes batches (POST) and tells its limits (GET).
BATCH_PATH = "/api/2.3/batch"

_OP_FIELDS = frozenset({"path", "method", "body", "name", "headers", "requests"})
_BATCH_FIELDS = frozenset({"requests", "parallel"})


# ---------------------------------------------------------------- Operation


@dataclass(eq=True)
class Operation:
    """One API operation inside a batch.

    >>> op = Operation("post", "/api/2.1/scheduling/companies", body={"name": "Main St"}, name="add-company")
    >>> op.to_wire()
    {'method': 'POST', 'path': '/api/2.1/scheduling/companies', 'body': {'name': 'Main St'}, 'name': 'add-company'}

    ``headers`` may be a dict or ``"Name: value"`` lines; ``requests`` are child
    operations that run right after this one, only if it succeeds.
    """

    method: str
    path: str
    body: Any = None
    name: str | None = None
    headers: dict[str, str] | None = None
    requests: list[Operation] = field(default_factory=list)
    #: the DataFrame index label this operation came from (never sent).
    row: Any = field(default=None, compare=False, repr=False)
    #: problems of ``headers`` given as text lines that are not ``Name: value``.
    _header_line_problems: Sequence[str] = field(default=(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.method, str):
            self.method = _upper(self.method)
        if isinstance(self.headers, str):
            # Lines that are not "Name: value" are reported by validate().
            self.headers, self._header_line_problems = _rules.parse_header_lines(self.headers)
        self.requests = [op if isinstance(op, Operation) else Operation.from_wire(op) for op in self.requests]

    @classmethod
    def _unchecked(
        cls,
        method: str,
        path: str,
        body: Any = None,
        name: str | None = None,
        headers: dict[str, str] | None = None,
        requests: list[Operation] | None = None,
        row: Any = None,
    ) -> Operation:
        """The one fast path: an operation from fields already checked and normalised.

        ``from_frame`` builds a million of these after checking them column by
        column; ``__init__`` would redo that work row by row. Every field is a
        parameter here, so a new field cannot be forgotten silently.
        """
        op = object.__new__(cls)
        # Attributes one by one keep the instance's compact storage (writing
        # to __dict__ would make a dict per operation); a field left at its
        # default is read from the class.
        op.method = method
        op.path = path
        if body is not None:
            op.body = body
        if name is not None:
            op.name = name
        if headers is not None:
            op.headers = headers
        op.requests = [] if requests is None else requests
        if row is not None:
            op.row = row
        return op

    def to_wire(self) -> dict[str, Any]:
        """The operation as wire JSON (a dict), children included."""
        out: dict[str, Any] = {"method": self.method, "path": self.path}
        if self.body is not None:
            out["body"] = self.body
        if self.name is not None:
            out["name"] = self.name
        if self.headers:
            out["headers"] = dict(self.headers)
        if self.requests:
            out["requests"] = [op.to_wire() for op in self.requests]
        return out

    @classmethod
    def from_wire(cls, data: Mapping[str, Any], pointer: str = "") -> Operation:
        """Parse one wire operation; raises BatchValidationError listing every problem.

        >>> Operation.from_wire({"method": "get", "path": "/x", "headers": "Accept: text/plain"}).headers
        {'Accept': 'text/plain'}
        """
        problems: list[Problem] = []
        op = _parse_operation(data, pointer, problems)
        if problems or op is None:
            raise BatchValidationError(problems)
        return op

    def validate(self, pointer: str = "") -> list[Problem]:
        """The problems of this operation and its children (names and references are checked by Batch)."""
        problems: list[Problem] = []
        for ptr, op in self.walk(pointer):
            _check_fields(op, ptr, problems)
        return problems

    def walk(self, pointer: str = "") -> Iterator[tuple[str, Operation]]:
        """This operation and every descendant, depth first, with pointers."""
        yield pointer, self
        for i, child in enumerate(self.requests):
            yield from child.walk(f"{pointer}.requests[{i}]")

    def references(self) -> Iterator[tuple[str, _refs.Ref]]:
        """Every reference in this operation (not its children), with the field it stands in.

        >>> [(f, r.name) for f, r in Operation("GET", "/c/${result=co:$.id}").references()]
        [('path', 'co')]

        Raises :class:`~batchnb.RefSyntaxError` for a reference that does not parse.
        """
        for fld, value in _ref_fields(self):
            for r in _refs.iter_refs(value):
                yield fld, r

    def referenced_names(self) -> set[str]:
        """The names this one operation (not its children) references."""
        return {r.name for _f, r in self.references()}

    def __repr__(self) -> str:
        parts = [f"{self.method!r}", repr(mask_path(self.path))]
        if self.body is not None:
            parts.append(f"body={self.body!r}")
        if self.name is not None:
            parts.append(f"name={self.name!r}")
        if self.headers:
            parts.append(f"headers={mask_headers(self.headers)!r}")
        if self.requests:
            parts.append(f"requests=[{len(self.requests)} operation(s)]")
        return f"Operation({', '.join(parts)})"


def _upper(method: str) -> str:
    """``method`` in upper case if it is ASCII; else as it is, for the rules to refuse (``'poſt'.upper()`` is POST)."""
    return method.upper() if method.isascii() else method


def _ref_fields(op: Operation) -> Iterator[tuple[str, Any]]:
    """The fields of one operation that may hold references, with their values."""
    if isinstance(op.path, str):
        yield "path", op.path
    if isinstance(op.headers, Mapping):
        for k, v in op.headers.items():
            yield f"headers.{k}", v
    if op.body is not None:
        yield "body", op.body


def _at(pointer: str, fld: str) -> str:
    return f"{pointer}.{fld}" if pointer else fld


def _check_fields(op: Operation, pointer: str, problems: list[Problem]) -> None:
    """The rules for one operation's own fields (not names across the batch, not references' targets)."""
    message = _rules.method_problem(op.method)
    if message:
        problems.append(Problem(_at(pointer, "method"), message))
    if isinstance(op.path, str) and "$" in op.path:
        try:
            message = _rules.path_problem(_refs.parse(op.path))
        except _refs.RefSyntaxError as exc:
            message = str(exc)
    else:
        message = _rules.path_problem(op.path)
    if message:
        problems.append(Problem(_at(pointer, "path"), message))
    message = _rules.name_problem(op.name)
    if message:
        problems.append(Problem(_at(pointer, "name"), message))
    for message in op._header_line_problems:
        problems.append(Problem(_at(pointer, "headers"), message))
    if op.headers is not None:
        if type(op.headers) is not dict and not isinstance(op.headers, Mapping):
            problems.append(Problem(_at(pointer, "headers"), "must be an object or 'Name: value' lines"))
        else:
            for hname, hvalue in op.headers.items():
                for message in _rules.header_problems(hname, hvalue):
                    problems.append(Problem(_at(pointer, f"headers.{hname}"), message))
            if len(op.headers) > 1:
                for hname, message in _rules.header_set_problems(op.headers):
                    problems.append(Problem(_at(pointer, f"headers.{hname}"), message))
    if op.body is not None:
        try:
            _json.dumps(op.body)
        except TypeError as exc:
            reason = "is nested too deeply to send as JSON" if "Recursion" in str(exc) else f"is not JSON: {exc}"
            problems.append(Problem(_at(pointer, "body"), reason))


def _parse_operation(data: Any, pointer: str, problems: list[Problem]) -> Operation | None:
    here = pointer or "requests[?]"
    if type(data) is not dict and not isinstance(data, Mapping):
        problems.append(Problem(here, f"must be an object, not {type(data).__name__}"))
        return None
    if not data.keys() <= _OP_FIELDS:
        for key in data:
            if key not in _OP_FIELDS:
                problems.append(
                    Problem(
                        _at(pointer, str(key)), "unknown field (allowed: path, method, body, name, headers, requests)"
                    )
                )
    headers = data.get("headers")
    if headers is not None and type(headers) is not dict and not isinstance(headers, (str, Mapping)):
        problems.append(Problem(_at(pointer, "headers"), "must be an object or a string of 'Name: value' lines"))
        headers = None
    children_raw = data.get("requests")
    children: list[Operation] = []
    if children_raw is not None:
        if not isinstance(children_raw, list):
            problems.append(Problem(_at(pointer, "requests"), "must be a list of operations"))
        else:
            for i, child in enumerate(children_raw):
                c = _parse_operation(child, f"{pointer}.requests[{i}]", problems)
                if c is not None:
                    children.append(c)
    # Fields of the wrong type go in as they are: the rules say what is wrong with them, once.
    method: Any = data.get("method")
    path: Any = data.get("path")
    fields: Any = headers  # a header text is parsed by __init__; anything else is judged as it came
    if isinstance(headers, str):
        op = Operation(method=method, path=path, body=data.get("body"), name=data.get("name"), headers=fields)
        op.requests = children
    else:
        # What __init__ would do to these fields is upper-casing the method: the short way, checked just below.
        op = Operation._unchecked(
            _upper(method) if isinstance(method, str) else method,
            path,
            data.get("body"),
            data.get("name"),
            fields,
            children,
        )
    _check_fields(op, pointer, problems)
    return op


def _may_hold_references(text: bytes) -> bool:
    """Whether some string of this JSON text may hold ``${``.

    Only a ``\\u`` escape writes a ``$`` or ``{`` that the text does not show as
    itself, so text with neither ``${`` nor ``\\u`` holds no reference.

    >>> _may_hold_references(b'{"path": "/c/${result=co:$.id}"}'), _may_hold_references(b'{"path": "/c/$\\\\u007b"}')
    (True, True)
    >>> _may_hold_references(b'{"path": "/c/{x}", "price": "$5"}')
    False
    """
    return b"${" in text or b"\\u" in text


def is_idempotent(ops: Iterable[Operation]) -> bool:
    """True when every operation (children included) is GET, PUT or DELETE: resending changes nothing.

    >>> is_idempotent([Operation("GET", "/x"), Operation("POST", "/y")])
    False
    """
    return all(_rules.is_idempotent_method(o.method) for top in ops for _p, o in top.walk())


# ---------------------------------------------------------------- the batch as a whole


def check_batch(ops: list[Operation], known: Iterable[str] = (), *, references: bool = True) -> list[Problem]:
    """Duplicate names, and references that do not parse, are unknown, forward or cyclic.

    ``known`` are names that ran before this batch (filled in by the client).
    ``references=False`` says that no operation holds ``${`` anywhere (the
    caller has seen the batch's text), so that only names are checked.

    >>> check_batch([Operation("GET", "/c/${result=co:$.id}")])
    [Problem(pointer='requests[0].path', message="${result=co:$.id} refers to 'co', which no operation in the batch is named")]
    """
    pointers: list[str] = []
    names: list[str | None] = []
    parents: list[int] = []
    found: list[_rules.Reference] = []
    problems: list[Problem] = []
    # Depth first, as they run: a parent's position is known before its children's.
    stack: list[tuple[Operation, str, int]] = [(op, f"requests[{i}]", -1) for i, op in reversed(list(enumerate(ops)))]
    while stack:
        op, pointer, parent = stack.pop()
        here = len(pointers)
        pointers.append(pointer)
        names.append(op.name if isinstance(op.name, str) and op.name else None)
        parents.append(parent)
        for fld, value in _ref_fields(op) if references else ():
            try:
                found.extend(_rules.Reference(here, fld, r.name, r.text) for r in _refs.iter_refs(value))
            except _refs.RefSyntaxError as exc:
                problems.append(Problem(f"{pointer}.{fld}", str(exc)))
        if op.requests:
            stack.extend(
                (child, f"{pointer}.requests[{j}]", here) for j, child in reversed(list(enumerate(op.requests)))
            )
    graph = _rules.check_graph(names, found, parents=parents, known=set(known), describe=pointers.__getitem__)
    problems.extend(Problem(f"{pointers[p.position]}.{p.field}", p.message) for p in graph if p.position is not None)
    return problems


class Batch:
    """A list of operations sent in one call, validated as a whole.

    >>> from batchnb import ref
    >>> b = Batch([
    ...     Operation("POST", "/api/2.1/scheduling/companies", {"name": "Main St"}, name="co"),
    ...     Operation("POST", f"/api/2.1/scheduling/companies/{ref('co', '$.id')}/services", {"name": "Cut"}),
    ... ])
    >>> len(b), b.size
    (2, 2)

    Construction checks every operation, name and reference, and raises one
    BatchValidationError with a pointer per problem. ``parallel`` is how many
    of its operations the server may run at once (1, the spec's order: one at
    a time, depth first); dependencies are kept either way.
    """

    __slots__ = ("parallel", "requests")

    def __init__(
        self, requests: Iterable[Operation | Mapping[str, Any]] = (), *, validate: bool = True, parallel: int = 1
    ) -> None:
        problems: list[Problem] = []
        message = _rules.parallel_problem(parallel)
        if message:
            problems.append(Problem("parallel", message))
        self.parallel = parallel
        ops: list[Operation] = []
        for i, item in enumerate(requests):
            if isinstance(item, Operation):
                ops.append(item)
                if validate:
                    problems.extend(item.validate(f"requests[{i}]"))
            else:
                op = _parse_operation(item, f"requests[{i}]", problems)
                if op is not None:
                    ops.append(op)
        self.requests: list[Operation] = ops
        if validate:
            problems.extend(check_batch(ops))
            if problems:
                raise BatchValidationError(_unique(problems))

    @classmethod
    def from_wire(cls, data: Any, *, text: bytes | None = None) -> Batch:
        """Parse a wire batch (a dict, or JSON text/bytes).

        >>> Batch.from_wire('{"requests": [{"method": "GET", "path": "/x"}]}').size
        1

        ``text``, the JSON text ``data`` was parsed from, lets the parse skip
        looking for references in a batch whose text holds none.
        """
        if isinstance(data, (str, bytes, bytearray)):
            try:
                # A lone surrogate fails to encode: a ValueError, malformed JSON like any other.
                text = data.encode("utf-8") if isinstance(data, str) else bytes(data)
                data = _json.loads_strict(text)
            except (_json.DuplicateKey, _json.IntegerTooLong) as exc:
                raise BatchValidationError([Problem(exc.pointer, exc.message)]) from None
            except ValueError as exc:
                raise BatchValidationError([Problem("", f"malformed JSON: {exc}")]) from None
        if not isinstance(data, Mapping):
            raise BatchValidationError([Problem("", "the batch must be a JSON object with a 'requests' list")])
        reqs = data.get("requests")
        if not isinstance(reqs, list):
            raise BatchValidationError([Problem("requests", "is required and must be a list of operations")])
        problems: list[Problem] = [
            Problem(key, "unknown field (a batch has only 'requests' and 'parallel')")
            for key in data
            if key not in _BATCH_FIELDS
        ]
        parallel: Any = data.get("parallel", 1)  # judged by parallel_problem just below
        if type(parallel) is float and parallel.is_integer():
            parallel = int(parallel)  # JSON has one kind of number: 4.0 is the whole number 4, as JSON Schema says
        message = _rules.parallel_problem(parallel)
        if message:
            problems.append(Problem("parallel", message))
        ops = []
        for i, item in enumerate(reqs):
            op = _parse_operation(item, f"requests[{i}]", problems)
            if op is not None:
                ops.append(op)
        problems.extend(check_batch(ops, references=text is None or _may_hold_references(text)))
        if problems:
            raise BatchValidationError(_unique(problems))
        return cls(ops, validate=False, parallel=cast(int, parallel))

    def validate(self) -> list[Problem]:
        """Every problem of the batch: operations, duplicate names, references."""
        problems: list[Problem] = []
        for i, op in enumerate(self.requests):
            problems.extend(op.validate(f"requests[{i}]"))
        problems.extend(check_batch(self.requests))
        return _unique(problems)

    def walk(self) -> Iterator[tuple[str, Operation]]:
        """Every operation, depth first (the order they run in), with its pointer."""
        for i, op in enumerate(self.requests):
            yield from op.walk(f"requests[{i}]")

    @property
    def shape(self) -> _rules.Shape:
        """How many operations (nested included) and how deep they nest."""
        return _rules.measure(self.requests, _children)

    @property
    def size(self) -> int:
        """How many operations, nested ones included."""
        return self.shape.size

    @property
    def depth(self) -> int:
        """How deep the nesting goes (1 for a flat batch, 0 for an empty one)."""
        return self.shape.depth

    def to_wire(self) -> dict[str, Any]:
        """The batch as the wire JSON of the spec (a dict)."""
        out: dict[str, Any] = {"requests": [op.to_wire() for op in self.requests]}
        if self.parallel != 1:
            out["parallel"] = self.parallel
        return out

    def to_json(self) -> bytes:
        """The batch as wire JSON bytes."""
        return _json.dumps(self.to_wire())

    def __len__(self) -> int:
        return len(self.requests)

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.requests)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Batch) and self.requests == other.requests and self.parallel == other.parallel

    def __repr__(self) -> str:
        return f"Batch({operations(self.size, len(self.requests))})"


def _children(op: Operation) -> list[Operation]:
    return op.requests


def _unique(problems: list[Problem]) -> list[Problem]:
    """Problems in order, each once (a bad reference in a path is found by two checks)."""
    return list(dict.fromkeys(problems))


# ---------------------------------------------------------------- Response


@dataclass
class Response:
    """What one operation answered.

    >>> r = Response.from_wire({"method": "POST", "path": "/x", "status": 201, "duration": "3.5", "response": {"id": 1}})
    >>> (r.ok, r.duration, r.body)
    (True, 3.5, {'id': 1})
    """

    method: str
    path: str
    status: int | None
    name: str | None = None
    duration: float | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    responses: list[Response] = field(default_factory=list)
    # Client-side facts, never on the wire:
    #: why the operation is not ok, in words, when the client knows better than the body.
    error: str | None = field(default=None, compare=False)
    #: which HTTP call (0, 1, …) carried the operation, and how many times it was sent.
    batch: int | None = field(default=None, compare=False)
    attempts: int | None = field(default=None, compare=False)
    #: the DataFrame index label of the operation's row.
    row: Any = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        """True when the status is 2xx."""
        return self.status is not None and 200 <= self.status < 300

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "method": self.method}
        if self.name is not None:
            out["name"] = self.name
        out["status"] = self.status
        out["duration"] = self.duration
        out["body"] = self.body
        if self.headers:
            out["headers"] = self.headers
        if self.responses:
            out["responses"] = [r.to_wire() for r in self.responses]
        return out

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Response:
        """Parse one wire response; tolerant of older servers (``response``, string durations)."""
        duration = data.get("duration")
        if isinstance(duration, str):
            try:
                duration = float(duration)
            except ValueError:
                duration = None
        elif isinstance(duration, (int, float)) and not isinstance(duration, bool):
            duration = float(duration)
        else:
            duration = None
        status = data.get("status")
        # ASCII digits only: str.isdigit() is also true of '²' (int() raises) and of '٢٠٠' (int() reads 200).
        if isinstance(status, str) and status.isascii() and status.isdigit():
            status = int(status)
        if not isinstance(status, int) or isinstance(status, bool):
            status = None
        body = data["body"] if "body" in data else data.get("response")
        given = data.get("headers")
        headers: Mapping[str, str] = given if isinstance(given, Mapping) else {}
        return cls(
            method=_upper(str(data.get("method", ""))),
            path=str(data.get("path", "")),
            status=status,
            name=data.get("name"),
            duration=duration,
            body=body,
            headers=dict(headers),
            responses=[cls.from_wire(r) for r in data.get("responses") or [] if isinstance(r, Mapping)],
        )

    def walk(self, pointer: str = "") -> Iterator[tuple[str, Response]]:
        """This response and its children, depth first, with pointers."""
        yield pointer, self
        for i, child in enumerate(self.responses):
            yield from child.walk(f"{pointer}.responses[{i}]")

    def __repr__(self) -> str:
        name = f" {self.name}" if self.name else ""
        dur = f" {self.duration:.1f}ms" if self.duration is not None else ""
        kids = f" +{len(self.responses)} children" if self.responses else ""
        return f"<Response{name} {self.method} {mask_path(self.path)} → {self.status}{dur}{kids}>"
