"""Responses back to rows: :func:`to_frame` and :func:`expand`.

``to_frame`` turns responses into a DataFrame indexed like the input frame, so
that ``df.join(to_frame(responses))`` lines results up with rows; ``expand``
spreads a column of JSON objects over dotted columns.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import orjson
import pandas as pd

from . import _display  # noqa: F401 - registers the DataFrame.batchnb accessor (report, summary)
from ._exceptions import BatchValidationError, Problem
from ._gc import gc_paused
from ._json import RawJSON
from ._jsonarray import JSONArray, JSONDtype
from ._jsonarray import _concat as _concat_json
from ._secrets import mask_path
from .model import Response

__all__ = ["expand", "to_frame"]


# ---------------------------------------------------------------- to_frame


def _error_text(r: Response) -> str:
    """Why a response is not ok, in words: the fields and reasons the API gave, else its message."""
    if r.error:
        return r.error
    body = r.body
    if isinstance(body, RawJSON):
        body = _json_object(body.text)  # a body as it came, read now that it explains an error
    elif isinstance(body, str) and body.startswith("{"):
        body = _json_object(body)  # bodies kept as JSON text (submit(bodies="json"))
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        details = [d for d in err.get("details") or [] if isinstance(d, dict) and d.get("message")]
        where = [str(d.get("field") or d.get("pointer") or "") for d in details]
        if details and any(where):
            shown = "; ".join(f"{w}: {d['message']}" if w else str(d["message"]) for w, d in zip(where, details[:3]))
            more = f"; and {len(details) - 3} more" if len(details) > 3 else ""
            return f"{r.status} {shown}{more}"
        message = err.get("message")
        if isinstance(message, str) and message:
            return message
    oauth = _oauth_error(body, r.headers)
    if oauth:
        return f"HTTP {r.status}: {oauth}"
    if r.status is None:
        return "no status: the operation did not run"
    return f"HTTP {r.status}"


_CHALLENGE_PARAM = re.compile(r'(error|error_description)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))', re.I)


def _oauth_error(body: Any, headers: Mapping[str, str] | None) -> str:
    """``error: error_description`` as OAuth2 APIs say it (RFC 6750 §3): in the JSON body, else in ``WWW-Authenticate``.

    >>> _oauth_error({"error": "invalid_token", "error_description": "the access token expired"}, {})
    'invalid_token: the access token expired'
    >>> _oauth_error(None, {"WWW-Authenticate": 'Bearer realm="api", error="invalid_token"'})
    'invalid_token'
    """
    fields: dict[str, str] = {}
    if isinstance(body, dict):
        fields = {k: v[:300] for k in ("error", "error_description") if isinstance(v := body.get(k), str) and v}
    if not fields:
        challenge = next((v for k, v in (headers or {}).items() if k.lower() == "www-authenticate"), "")
        for m in _CHALLENGE_PARAM.finditer(challenge or ""):
            value = m.group(2) if m.group(2) is not None else m.group(3)
            fields.setdefault(m.group(1).lower(), value.replace('\\"', '"')[:300])
    return ": ".join(fields[k] for k in ("error", "error_description") if k in fields)


def _nullable_ints(values: list[int | None]) -> pd.arrays.IntegerArray:
    # numpy with a mask is several times faster than pd.array(list, "Int64").
    try:
        data = np.fromiter(values, dtype=np.int64, count=len(values))
    except TypeError:  # a None among them
        pass
    else:
        return pd.arrays.IntegerArray(data, np.zeros(len(values), dtype=bool))
    mask = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    data = np.array([0 if v is None else v for v in values], dtype=np.int64)
    return pd.arrays.IntegerArray(data, mask)


def to_frame(responses: Sequence[Response], index: Sequence[Hashable] | pd.Index | None = None) -> pd.DataFrame:
    """The responses as a DataFrame: one row per response, nested ones included.

    Columns: ``name, method, path, status`` (Int64), ``ok`` (bool),
    ``duration`` (float, ms), ``body``, ``error`` (why, in words, when not
    ok), ``batch``, ``attempts`` (Int64), ``replayed`` (True when the API
    answered a resent operation with its first answer, by its idempotency
    key) and ``parent`` (the parent's name, or its row label when it has
    none). Nested responses follow their parent, depth first. The index is ``index`` when given, else the operations'
    ``row`` labels when every response has one (so ``df.join(result)`` lines
    up with the input frame), else 0, 1, 2, …

    >>> rs = [Response("POST", "/x", 201, name="a", body={"id": 7}, row="r1"),
    ...       Response("GET", "/y", 404, body={"error": {"message": "no such company"}}, row="r2")]
    >>> out = to_frame(rs)
    >>> out[["status", "ok", "error"]]
        status     ok            error
    r1     201   True              NaN
    r2     404  False  no such company
    """
    with gc_paused():
        return _to_frame(list(responses), index)


def _to_frame(responses: list[Response], index: Any) -> pd.DataFrame:
    flat = responses
    up: list[int] | None = None
    if any(r.responses for r in responses):
        flat, parents_at = [], []

        def visit(r: Response, parent_pos: int) -> None:
            here = len(flat)
            flat.append(r)
            parents_at.append(parent_pos)
            for child in r.responses:
                visit(child, here)

        for r in responses:
            visit(r, -1)
        up = parents_at
    fields = _Fields(flat)
    n = len(flat)

    if index is not None:
        idx = index if isinstance(index, pd.Index) else pd.Index(index)
        if len(idx) != n:
            raise BatchValidationError(
                [Problem("index", f"has {len(idx)} labels for {n} responses (nested ones included)")]
            )
    elif n and None not in fields.rows:
        idx = _index(fields.rows)
    else:
        idx = pd.RangeIndex(n)

    names = fields.names
    status = _nullable_ints(fields.statuses)
    status_values = status.to_numpy(dtype=np.int64, na_value=0)
    ok = (status_values >= 200) & (status_values < 300)
    # Failures are few: explain only those.
    errors: list[str | None] = [None] * n
    for i in np.flatnonzero(~ok).tolist():
        errors[i] = _error_text(flat[i])
    if up is None:
        parents: Any = np.full(n, None, dtype=object)
    else:
        labels = idx.tolist()
        parents = _object_array([None if j < 0 else (names[j] if names[j] is not None else labels[j]) for j in up])
    columns = {
        "name": _text_array(names),
        "method": _text_array(fields.methods),
        "path": _paths(fields.paths),
        "status": status,
        "ok": ok,
        "duration": np.fromiter(fields.durations, dtype=np.float64, count=n),
        "body": _object_array(fields.bodies),
        "error": _text_array(errors),
        "batch": _nullable_ints(fields.batches),
        "attempts": _nullable_ints(fields.attempts),
        "replayed": _replayed_flags(fields.headers),
        "parent": parents,
    }
    # Every array above is new: the frame may take them as they are.
    return pd.DataFrame(columns, index=idx, copy=False)


class _Fields:
    """Each field of the responses as a list.

    Made in one pass: a million responses visited once each cost less than
    once per field.
    """

    def __init__(self, responses: list[Response]) -> None:
        n = len(responses)
        self.names: list[str | None] = [None] * n
        self.methods: list[str] = [""] * n
        self.paths: list[str] = [""] * n
        self.statuses: list[int | None] = [None] * n
        self.durations: list[float | None] = [None] * n
        self.bodies: list[Any] = [None] * n
        self.batches: list[int | None] = [None] * n
        self.attempts: list[int | None] = [None] * n
        self.headers: list[dict[str, str]] = [{}] * n
        self.rows: list[Hashable] = [None] * n
        names, methods, paths, statuses, durations, bodies = (
            self.names,
            self.methods,
            self.paths,
            self.statuses,
            self.durations,
            self.bodies,
        )
        batches, attempts, headers, rows = self.batches, self.attempts, self.headers, self.rows
        for i, r in enumerate(responses):
            names[i] = r.name
            methods[i] = r.method
            paths[i] = r.path
            statuses[i] = r.status
            durations[i] = r.duration
            bodies[i] = r.body
            batches[i] = r.batch
            attempts[i] = r.attempts
            headers[i] = r.headers
            rows[i] = r.row


def _paths(paths: list[str]) -> Any:
    """Paths as text, credentials masked (only a path with a query can hold one)."""
    if any(map(operator.contains, paths, itertools.repeat("?"))):
        paths = [mask_path(p) if "?" in p else p for p in paths]
    return _text_array(paths)


def _index(labels: list[Hashable]) -> pd.Index:
    """The row labels as an index; integer labels (the usual RangeIndex of a frame) without pandas' per-label inference."""
    if set(map(type, labels)) == {int}:
        try:
            return pd.Index(np.fromiter(labels, dtype=np.int64, count=len(labels)))
        except OverflowError:
            pass
    return pd.Index(labels)


def _replayed_flags(headers: list[dict[str, str]]) -> np.ndarray:
    flags = np.zeros(len(headers), dtype=bool)
    # Most responses carry no headers: look only at those that do.
    if any(headers):
        for i in np.flatnonzero(np.fromiter(map(bool, headers), dtype=bool, count=len(headers))).tolist():
            flags[i] = _replayed(headers[i])
    return flags


def _json_bodies(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its bodies kept as JSON text, each parsed when it is read (a result's default).

    A body that came as JSON text (:class:`~batchnb._json.RawJSON`) goes in as that text, never parsed.
    """
    frame["body"] = JSONArray._from_values(frame["body"].tolist())
    return frame


def _concat(pieces: list[pd.DataFrame]) -> pd.DataFrame:
    """``pd.concat(pieces)`` for the chunks of one result; the chunks lose their JSON columns.

    Each chunk's bodies are freed as soon as they are copied, so that joining
    a million rows does not hold their bodies twice.
    """
    columns = list(pieces[0].columns)
    moved = [c for c in columns if isinstance(pieces[0][c].dtype, JSONDtype)]
    held = {c: [p.pop(c).array for p in pieces] for c in moved}
    frame = pd.concat(pieces)
    for c in moved:
        # In its place again (selecting the columns in order would copy them all).
        frame.insert(columns.index(c), c, cast(Any, _concat_json(held.pop(c))))  # stubs know no extension arrays
    return frame


def _replayed(headers: dict[str, str]) -> bool:
    """Whether the API answered with the stored first answer of an idempotency key."""
    value = headers.get("Idempotent-Replayed") or next(
        (v for k, v in headers.items() if k.lower() == "idempotent-replayed"), None
    )
    return str(value).strip(" \t").lower() == "true"  # HTTP's white space only: not 'true\xa0'.


def _object_array(values: Sequence[Any]) -> np.ndarray:
    # fromiter keeps each value as one object (np.array would turn a list of
    # equal-length lists into a 2-D array).
    return np.fromiter(values, dtype=object, count=len(values))


_STR_DTYPE = pd.Series(["x"]).dtype


def _text_array(values: Sequence[str | None]) -> Any:
    """A list of str/None as the frame's default text dtype, missing cells as that dtype's marker.

    The marker is the same whether pandas keeps text in pyarrow or in Python
    objects (``NaN`` under pandas 3), so that a stored notebook output reads
    the same on a machine with pyarrow and on one without.

    >>> pd.Series(_text_array(["a", None])).tolist()
    ['a', nan]
    """
    if isinstance(_STR_DTYPE, pd.StringDtype) and _STR_DTYPE.storage == "pyarrow":
        import pyarrow as pa

        try:
            # pyarrow converts a million strings several times faster than
            # pandas' own path, which re-checks every cell.
            arr = pa.array(values, type=pa.large_string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # not all text (a name that is a number): kept as it is, below
        else:
            return pd.arrays.ArrowStringArray(pa.chunked_array([arr]), dtype=_STR_DTYPE)  # type: ignore[call-arg]  # pandas 3 takes it; the stubs lag
    elif isinstance(_STR_DTYPE, pd.StringDtype) and all(v is None or type(v) is str for v in values):
        return pd.array(values, dtype=_STR_DTYPE)
    # Not all text: pandas' text dtype would turn a number into its digits.
    return _object_array(values)


# ---------------------------------------------------------------- expand


def _flatten_into(value: dict[Any, Any], prefix: str, i: int, n: int, columns: dict[str, list[Any]]) -> None:
    for k, v in value.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            _flatten_into(v, key, i, n, columns)
            continue
        col = columns.get(key)
        if col is None:
            col = columns[key] = [None] * n
        col[i] = v


def _typed(values: list[Any]) -> Any:
    """The tightest dtype for one expanded column, missing cells as NA."""
    kinds = {type(v) for v in values}
    missing = type(None) in kinds
    kinds.discard(type(None))
    if kinds == {int}:
        try:
            return _nullable_ints(values) if missing else np.array(values, dtype=np.int64)
        except OverflowError:
            return np.fromiter(values, dtype=object, count=len(values))
    if kinds == {bool}:
        return pd.array(values, dtype="boolean") if missing else np.array(values, dtype=bool)
    if kinds and kinds <= {int, float}:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if kinds == {str}:
        return pd.array(values, dtype="str")
    return np.fromiter(values, dtype=object, count=len(values))


def _json_object(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def expand(result: pd.DataFrame, column: Hashable = "body", *, prefix: str | None = None) -> pd.DataFrame:
    """Spread a column of JSON objects over dotted columns, in its place.

    Cells may be objects or JSON text of objects (``submit(bodies="json")``).
    Nested objects give ``body.address.city``-style names (``prefix`` replaces
    the column name in front; ``prefix=""`` leaves it out). Cells that are not
    objects, and keys a row lacks, are NA. Integers stay integers (``Int64``
    when some are missing). Lists stay as they are, one cell each.

    >>> import pandas as pd
    >>> res = pd.DataFrame({"status": [201, 404], "body": [{"id": 7, "address": {"city": "Oslo"}}, "not found"]})
    >>> expand(res)
       status  body.id body.address.city
    0     201        7              Oslo
    1     404     <NA>               NaN
    """
    if column not in result.columns:
        raise BatchValidationError(
            [Problem("column", f"the frame has no column {column!r}; it has {list(result.columns)}")]
        )
    cells = result[column]
    if isinstance(cells, pd.DataFrame):
        raise BatchValidationError([Problem("column", f"{column!r} appears more than once in the frame")])
    lead = str(column) if prefix is None else prefix
    n = len(result)
    columns: dict[str, list[Any]] = {}
    with gc_paused():
        for i, cell in enumerate(cells.tolist()):
            if isinstance(cell, str) and cell.startswith("{"):
                cell = _json_object(cell)  # bodies kept as JSON text (submit(bodies="json"))
            if isinstance(cell, dict):
                _flatten_into(cell, lead, i, n, columns)
        new = pd.DataFrame({key: _typed(values) for key, values in columns.items()}, index=result.index)
    position = cast(int, result.columns.get_loc(column))  # one column of that name: checked above
    left: pd.DataFrame = result.iloc[:, :position]
    right: pd.DataFrame = result.iloc[:, position + 1 :]
    clashes = [c for c in new.columns if c in left.columns or c in right.columns]
    if clashes:
        raise BatchValidationError(
            [Problem("column", f"expanding {column!r} would repeat existing columns: {clashes}")]
        )
    return pd.concat([left, new, right], axis=1)
