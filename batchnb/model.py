"""The wire model of the Batch API 2.3: :class:`Operation`, :class:`Batch`, :class:`Response`.

Everything that can be wrong with a batch is found here, all at once, each
problem with a pointer (``requests[2].requests[0].method``), and raised as one
:class:`~batchnb.BatchValidationError` before anything is sent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import unquote

import orjson

from . import refs
from ._exceptions import BatchValidationError, Problem
from ._secrets import mask_headers, mask_path

__all__ = ["Batch", "Operation", "Response", "METHODS"]

#: where a server takes batches (POST) and tells its limits (GET).
BATCH_PATH = "/api/2.3/batch"

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
#: methods whose repetition changes nothing: a batch made only of these may be resent.
IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE"})
FORBIDDEN_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_OP_FIELDS = frozenset({"path", "method", "body", "name", "headers", "requests"})


# ---------------------------------------------------------------- checks


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a safe path relative to the API, or None if it is.

    >>> path_problem("/api/2.1/scheduling/companies") is None
    True
    >>> path_problem("//evil.example/x")
    "must not start with '//' (that names another host)"
    """
    if not path.startswith("/"):
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", path):
            return "must be relative to the API, not an absolute URL"
        return "must start with '/'"
    if path.startswith("//"):
        return "must not start with '//' (that names another host)"
    if "\\" in path:
        return "must not contain a backslash"
    if _CONTROL.search(path):
        return "must not contain control characters (CR, LF, NUL, …)"
    if " " in path:
        return "must not contain spaces (percent-encode them as %20)"
    route = path.split("?", 1)[0].split("#", 1)[0]
    decoded = route
    # Twice: an upstream that decodes once more must not see '..' either.
    for _ in range(2):
        decoded = unquote(decoded)
        if _CONTROL.search(decoded) or "\\" in decoded:
            return "must not contain encoded control characters or backslashes"
        if any(seg in (".", "..") for seg in decoded.split("/")):
            return "must not contain '.' or '..' segments"
        if decoded.startswith("//"):
            return "must not start with '//' (that names another host)"
    return None


def _template_path_problem(path: str) -> str | None:
    # References are filled in later (percent-encoded); check the path with each
    # one standing for an ordinary segment.
    if "${" not in path:
        return path_problem(path)
    shape = "".join(p if isinstance(p, str) else "x" for p in refs.parse(path))
    return path_problem(shape)


def header_problems(name: str, value: Any) -> list[tuple[str, str]]:
    """Problems of one header as (sub-pointer, message) pairs."""
    out = []
    if not _TOKEN.match(name):
        out.append(("", f"{name!r} is not a valid header name"))
    elif name.lower() in FORBIDDEN_HEADERS:
        out.append(("", f"header {name!r} cannot be set per operation"))
    if not isinstance(value, str):
        out.append(("", "header values must be strings"))
    elif _CONTROL.search(value.replace("\t", " ")):
        out.append(("", "header value must not contain control characters (CR, LF, NUL, …)"))
    else:
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            out.append(("", "header value must be Latin-1 text (percent-encode other characters)"))
    return out


def parse_header_lines(text: str) -> tuple[dict[str, str], list[str]]:
    """``"Name: value"`` lines to a dict; also which lines (by number) are not of that form."""
    headers: dict[str, str] = {}
    bad: list[str] = []
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            # Only the line number: the line itself may hold a credential.
            bad.append(f"line {number}")
            continue
        headers[name.strip()] = value.strip()
    return headers, bad


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

    def __post_init__(self) -> None:
        if isinstance(self.method, str):
            self.method = self.method.upper()
        if isinstance(self.headers, str):
            parsed, _bad = parse_header_lines(self.headers)
            # Lines that are not "Name: value" are reported by validate().
            self._bad_header_lines = _bad
            self.headers = parsed
        self.requests = [op if isinstance(op, Operation) else Operation.from_wire(op) for op in self.requests]

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
        _check_operation(self, pointer, problems)
        for i, child in enumerate(self.requests):
            problems.extend(child.validate(f"{pointer}.requests[{i}]" if pointer else f"requests[{i}]"))
        return problems

    def walk(self, pointer: str = "") -> Iterator[tuple[str, Operation]]:
        """This operation and every descendant, depth first, with pointers."""
        yield pointer, self
        for i, child in enumerate(self.requests):
            yield from child.walk(f"{pointer}.requests[{i}]")

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


def _check_operation(op: Operation, pointer: str, problems: list[Problem]) -> None:
    def add(fld: str, message: str) -> None:
        problems.append(Problem(f"{pointer}.{fld}" if pointer else fld, message))

    if not isinstance(op.method, str) or not op.method:
        add("method", "is required and must be a string such as 'GET'")
    elif op.method not in METHODS:
        add("method", f"unknown method {op.method!r}; use one of {', '.join(METHODS)}")
    if not isinstance(op.path, str) or not op.path:
        add("path", "is required and must be a string such as '/api/2.1/scheduling/companies'")
    else:
        try:
            msg = _template_path_problem(op.path)
        except refs.RefSyntaxError as exc:
            msg = str(exc)
        if msg:
            add("path", msg)
    if op.name is not None and (not isinstance(op.name, str) or not refs.NAME_PATTERN.match(op.name)):
        add("name", f"{op.name!r} is not a valid name: use letters, digits, '_', '.', '-'")
    for line in getattr(op, "_bad_header_lines", ()):
        add("headers", f"{line} is not of the form 'Name: value'")
    if op.headers is not None:
        if not isinstance(op.headers, Mapping):
            add("headers", "must be an object or 'Name: value' lines")
        else:
            for hname, hvalue in op.headers.items():
                for _sub, message in header_problems(str(hname), hvalue):
                    add(f"headers.{hname}", message)
    if op.body is not None:
        try:
            orjson.dumps(op.body)
        except TypeError as exc:
            reason = "is nested too deeply to send as JSON" if "Recursion" in str(exc) else f"is not JSON: {exc}"
            add("body", reason)


def _parse_operation(
    data: Any, pointer: str, problems: list[Problem]
) -> Operation | None:
    here = pointer or "requests[?]"
    if not isinstance(data, Mapping):
        problems.append(Problem(here, f"must be an object, not {type(data).__name__}"))
        return None
    for key in data:
        if key not in _OP_FIELDS:
            problems.append(Problem(f"{pointer}.{key}", "unknown field (allowed: path, method, body, name, headers, requests)"))
    method = data.get("method")
    path = data.get("path")
    if "method" in data and not isinstance(method, str):
        problems.append(Problem(f"{pointer}.method", f"must be a string, not {type(method).__name__}"))
        method = ""
    if "path" in data and not isinstance(path, str):
        problems.append(Problem(f"{pointer}.path", f"must be a string, not {type(path).__name__}"))
        path = ""
    headers = data.get("headers")
    if headers is not None and not isinstance(headers, (str, Mapping)):
        problems.append(Problem(f"{pointer}.headers", "must be an object or a string of 'Name: value' lines"))
        headers = None
    children_raw = data.get("requests")
    children: list[Operation] = []
    if children_raw is not None:
        if not isinstance(children_raw, list):
            problems.append(Problem(f"{pointer}.requests", "must be a list of operations"))
        else:
            for i, child in enumerate(children_raw):
                c = _parse_operation(child, f"{pointer}.requests[{i}]", problems)
                if c is not None:
                    children.append(c)
    name = data.get("name")
    op = Operation(method=method or "", path=path or "", body=data.get("body"), name=name, headers=headers)
    op.requests = children
    _check_operation(op, pointer, problems)
    return op


# ---------------------------------------------------------------- Batch


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
    BatchValidationError with a pointer per problem.
    """

    __slots__ = ("requests",)

    def __init__(self, requests: Iterable[Operation | Mapping[str, Any]] = (), *, validate: bool = True) -> None:
        problems: list[Problem] = []
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
            problems.extend(check_names_and_refs(ops))
            if problems:
                raise BatchValidationError(_unique(problems))

    @classmethod
    def from_wire(cls, data: Any) -> Batch:
        """Parse a wire batch (a dict, or JSON text/bytes).

        >>> Batch.from_wire('{"requests": [{"method": "GET", "path": "/x"}]}').size
        1
        """
        if isinstance(data, (str, bytes, bytearray)):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise BatchValidationError([Problem("", f"malformed JSON: {exc}")]) from None
        if not isinstance(data, Mapping):
            raise BatchValidationError([Problem("", "the batch must be a JSON object with a 'requests' list")])
        reqs = data.get("requests")
        if not isinstance(reqs, list):
            raise BatchValidationError([Problem("requests", "is required and must be a list of operations")])
        problems: list[Problem] = [
            Problem(key, "unknown field (a batch has only 'requests')") for key in data if key != "requests"
        ]
        ops = []
        for i, item in enumerate(reqs):
            op = _parse_operation(item, f"requests[{i}]", problems)
            if op is not None:
                ops.append(op)
        batch = cls(ops, validate=False)
        problems.extend(check_names_and_refs(ops))
        if problems:
            raise BatchValidationError(_unique(problems))
        return batch

    def validate(self) -> list[Problem]:
        """Every problem of the batch: operations, duplicate names, references."""
        problems: list[Problem] = []
        for i, op in enumerate(self.requests):
            problems.extend(op.validate(f"requests[{i}]"))
        problems.extend(check_names_and_refs(self.requests))
        return problems

    def walk(self) -> Iterator[tuple[str, Operation]]:
        """Every operation, depth first (the order they run in), with its pointer."""
        for i, op in enumerate(self.requests):
            yield from op.walk(f"requests[{i}]")

    @property
    def size(self) -> int:
        """How many operations, nested ones included."""
        return sum(1 for _ in self.walk())

    @property
    def depth(self) -> int:
        """How deep the nesting goes (1 for a flat batch, 0 for an empty one)."""

        def d(op: Operation) -> int:
            return 1 + max((d(c) for c in op.requests), default=0)

        return max((d(op) for op in self.requests), default=0)

    def to_wire(self) -> dict[str, Any]:
        """The batch as the wire JSON of the spec (a dict)."""
        return {"requests": [op.to_wire() for op in self.requests]}

    def to_json(self) -> bytes:
        """The batch as wire JSON bytes."""
        return orjson.dumps(self.to_wire())

    def __len__(self) -> int:
        return len(self.requests)

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.requests)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Batch) and self.requests == other.requests

    def __repr__(self) -> str:
        return f"Batch({len(self.requests)} operations, {self.size} with nested)"

    def _repr_html_(self) -> str:
        from ._display import batch_html

        return batch_html(self)


def _unique(problems: list[Problem]) -> list[Problem]:
    """Problems in order, each once (a bad reference in a path is found by two checks)."""
    return list(dict.fromkeys(problems))


def check_names_and_refs(ops: list[Operation], known: Iterable[str] = ()) -> list[Problem]:
    """Duplicate names; unknown, forward and cyclic references; bad reference syntax.

    ``known`` are names that ran before this batch (resolved by the client).
    """
    problems: list[Problem] = []
    flat: list[tuple[str, Operation]] = []
    for i, op in enumerate(ops):
        flat.extend(op.walk(f"requests[{i}]"))
    first_at: dict[str, str] = {}
    for ptr, op in flat:
        if isinstance(op.name, str) and op.name:
            if op.name in first_at:
                problems.append(Problem(f"{ptr}.name", f"duplicate name {op.name!r} (first used at {first_at[op.name]})"))
            else:
                first_at[op.name] = ptr
    seen = set(known)
    for ptr, op in flat:
        for where, value in _ref_fields(op):
            try:
                rs = list(refs.iter_refs(value))
            except refs.RefSyntaxError as exc:
                problems.append(Problem(f"{ptr}.{where}", str(exc)))
                continue
            for r in rs:
                if r.name in seen:
                    continue
                if r.name == op.name:
                    msg = f"references its own result ({r.text})"
                elif r.name in first_at:
                    msg = f"{r.text} refers to {first_at[r.name]}, which runs later (a forward reference)"
                    if _reaches(first_at[r.name], op.name, flat, first_at):
                        msg = f"{r.text} makes a cycle: {first_at[r.name]} refers back to this operation"
                else:
                    msg = f"{r.text} refers to {r.name!r}, which no operation in the batch is named"
                problems.append(Problem(f"{ptr}.{where}", msg))
        if isinstance(op.name, str) and op.name:
            seen.add(op.name)
    return problems


def _reaches(start_ptr: str, target: str | None, flat: list[tuple[str, Operation]], first_at: dict[str, str]) -> bool:
    if not target:
        return False
    by_ptr = dict(flat)
    stack, visited = [start_ptr], set()
    while stack:
        p = stack.pop()
        if p in visited or p not in by_ptr:
            continue
        visited.add(p)
        for _w, value in _ref_fields(by_ptr[p]):
            try:
                names = {r.name for r in refs.iter_refs(value)}
            except refs.RefSyntaxError:
                continue
            if target in names:
                return True
            stack.extend(first_at[n] for n in names if n in first_at)
    return False


def is_idempotent(ops: Iterable[Operation]) -> bool:
    """True when every operation (children included) is GET, PUT or DELETE: resending changes nothing."""
    return all(o.method in IDEMPOTENT_METHODS for top in ops for _p, o in top.walk())


def referenced_names(op: Operation) -> set[str]:
    """The names this one operation (not its children) references."""
    return {r.name for _w, value in _ref_fields(op) for r in refs.iter_refs(value)}


def _ref_fields(op: Operation) -> Iterator[tuple[str, Any]]:
    if isinstance(op.path, str):
        yield "path", op.path
    if isinstance(op.headers, Mapping):
        for k, v in op.headers.items():
            yield f"headers.{k}", v
    if op.body is not None:
        yield "body", op.body


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
        if isinstance(status, str) and status.isdigit():
            status = int(status)
        if not isinstance(status, int) or isinstance(status, bool):
            status = None
        body = data["body"] if "body" in data else data.get("response")
        headers = data.get("headers") if isinstance(data.get("headers"), Mapping) else {}
        return cls(
            method=str(data.get("method", "")).upper(),
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
