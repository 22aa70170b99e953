"""Responses back to rows: :func:`to_frame` and :func:`expand`.

``to_frame`` turns responses into a DataFrame indexed like the input frame, so
that ``df.join(to_frame(responses))`` lines results up with rows; ``expand``
spreads a column of JSON objects over dotted columns.
"""

from __future__ import annotations

from typing import Any, Hashable, Sequence

import numpy as np
import orjson
import pandas as pd

from . import _display  # noqa: F401 - registers the DataFrame.batchnb accessor (report, summary)
from ._secrets import mask_path
from ._exceptions import BatchValidationError, Problem
from ._gc import gc_paused
from .model import Response

__all__ = ["expand", "to_frame"]


# ---------------------------------------------------------------- to_frame


def _error_text(r: Response) -> str:
    """Why a response is not ok, in words: the fields and reasons the API gave, else its message."""
    if r.error:
        return r.error
    body = r.body
    if isinstance(body, str) and body.startswith("{"):
        body = _json_object(body)  # bodies kept as JSON text (submit(bodies="json"))
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        details = [d for d in err.get("details") or [] if isinstance(d, dict) and d.get("message")]
        where = [str(d.get("field") or d.get("pointer") or "") for d in details]
        if details and any(where):
            shown = "; ".join(f"{w}: {d['message']}" if w else str(d["message"]) for w, d in zip(where, details[:3]))
            more = f"; and {len(details) - 3} more" if len(details) > 3 else ""
            return f"{r.status} {shown}{more}"
        if isinstance(err.get("message"), str) and err["message"]:
            return err["message"]
    if r.status is None:
        return "no status: the operation did not run"
    return f"HTTP {r.status}"


def _nullable_ints(values: list[int | None]) -> pd.arrays.IntegerArray:
    # numpy with a mask is several times faster than pd.array(list, "Int64").
    if None not in values:
        return pd.arrays.IntegerArray(np.array(values, dtype=np.int64), np.zeros(len(values), dtype=bool))
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
    flat: list[Response]
    up: list[int] | None = None
    if any(r.responses for r in responses):
        flat, up = [], []

        def visit(r: Response, parent_pos: int) -> None:
            here = len(flat)
            flat.append(r)
            up.append(parent_pos)  # type: ignore[union-attr]
            for child in r.responses:
                visit(child, here)

        for r in responses:
            visit(r, -1)
    else:
        flat = responses
    n = len(flat)

    if index is not None:
        idx = index if isinstance(index, pd.Index) else pd.Index(index)
        if len(idx) != n:
            raise BatchValidationError([Problem("index", f"has {len(idx)} labels for {n} responses (nested ones included)")])
    else:
        rows = [r.row for r in flat]
        if n and not any(label is None for label in rows):
            idx = pd.Index(rows)
        else:
            idx = pd.RangeIndex(n)

    names = [r.name for r in flat]
    status = _nullable_ints([r.status for r in flat])
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
        "method": _text_array([r.method for r in flat]),
        "path": _text_array([mask_path(r.path) if "?" in r.path else r.path for r in flat]),
        "status": status,
        "ok": ok,
        "duration": np.array([r.duration for r in flat], dtype=np.float64),
        "body": _object_array([r.body for r in flat]),
        "error": _text_array(errors),
        "batch": _nullable_ints([r.batch for r in flat]),
        "attempts": _nullable_ints([r.attempts for r in flat]),
        "replayed": np.fromiter((_replayed(r) for r in flat), dtype=bool, count=n),
        "parent": parents,
    }
    return pd.DataFrame(columns, index=idx)


def _replayed(r: Response) -> bool:
    """Whether the API answered with the stored first answer of an idempotency key."""
    headers = r.headers
    if not headers:
        return False
    value = headers.get("Idempotent-Replayed") or next((v for k, v in headers.items() if k.lower() == "idempotent-replayed"), None)
    return str(value).strip().lower() == "true"


def _object_array(values: list[Any]) -> np.ndarray:
    # fromiter keeps each value as one object (np.array would turn a list of
    # equal-length lists into a 2-D array).
    return np.fromiter(values, dtype=object, count=len(values))


_STR_DTYPE = pd.Series(["x"]).dtype


def _text_array(values: list[str | None]) -> Any:
    """A list of str/None as the frame's default text dtype, without pandas' per-cell checks."""
    if isinstance(_STR_DTYPE, pd.StringDtype) and _STR_DTYPE.storage == "pyarrow":
        import pyarrow as pa

        try:
            # pyarrow converts a million strings several times faster than
            # pandas' own path, which re-checks every cell.
            arr = pa.array(values, type=pa.large_string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # not all text (a name that is a number): let pandas choose
        else:
            return pd.arrays.ArrowStringArray(pa.chunked_array([arr]), dtype=_STR_DTYPE)
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


def _json_object(text: str) -> Any:
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
        raise BatchValidationError([Problem("column", f"the frame has no column {column!r}; it has {list(result.columns)}")])
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
    position = result.columns.get_loc(column)
    left = result.iloc[:, :position]
    right = result.iloc[:, position + 1 :]
    clashes = [c for c in new.columns if c in left.columns or c in right.columns]
    if clashes:
        raise BatchValidationError([Problem("column", f"expanding {column!r} would repeat existing columns: {clashes}")])
    return pd.concat([left, new, right], axis=1)
