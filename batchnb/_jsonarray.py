"""JSON values kept as compact JSON text, parsed when a cell is read: the ``json`` dtype.

A result's ``body`` column holds one JSON value per row. As Python objects
a small body of 150 bytes of JSON takes about 800 bytes (a dict, its keys,
its strings, a nested dict), and a million of them do not fit beside the
frame they came from. Here the texts of a column sit end to end in one
buffer with an offset per row; reading a cell parses its text, so every way
of reaching a body stays as it was:

    >>> arr = JSONArray._from_sequence([{"id": 7, "tags": ["a"]}, None, "text"])
    >>> arr[0]["id"], arr[1], arr[2]
    (7, None, 'text')
    >>> import pandas as pd
    >>> s = pd.Series(arr)
    >>> s.map(lambda b: b["id"] if isinstance(b, dict) else b).tolist()
    [7, None, 'text']
    >>> s.dtype, arr.nbytes        # 27 bytes of text, 4 offsets of 8 bytes
    (json, 59)

A cell read is a fresh object each time: change a body by assigning the
cell (``frame.at[row, "body"] = {...}``), not by changing what was read.
Missing cells and the JSON value ``null`` are the same: None.
"""

from __future__ import annotations

import mmap
import numbers
from typing import Any, Iterator, Sequence

import numpy as np
import orjson
import pandas as pd
from pandas.api.extensions import ExtensionArray, ExtensionDtype, register_extension_dtype

from . import _json

__all__ = ["JSONArray", "JSONDtype", "holds_values"]


@register_extension_dtype
class JSONDtype(ExtensionDtype):
    """The dtype of a column of JSON values kept as text (``"json"``).

    >>> pd.Series([{"a": 1}], dtype="json").dtype
    json
    """

    name = "json"
    type = object
    kind = "O"
    na_value = None

    @classmethod
    def construct_array_type(cls) -> type[JSONArray]:
        return JSONArray

    def __repr__(self) -> str:
        return self.name

    def __from_arrow__(self, array: Any) -> JSONArray:
        """A column written from this dtype (Parquet holds its JSON text), read back as JSON values.

        >>> import pyarrow as pa
        >>> JSONDtype().__from_arrow__(pa.chunked_array([['{"id":7}', None]]))[0]
        {'id': 7}
        """
        chunks = getattr(array, "chunks", [array])
        return JSONArray._from_texts([b"" if t is None else t.encode() for c in chunks for t in c.to_pylist()])


def holds_values(column: pd.Series) -> bool:
    """Whether a column's cells are Python values (object dtype) or JSON values (``json``): bodies, not text or numbers.

    >>> holds_values(pd.Series([{"a": 1}])), holds_values(pd.Series([{"a": 1}], dtype="json")), holds_values(pd.Series(["a"]))
    (True, True, False)
    """
    return column.dtype == object or isinstance(column.dtype, JSONDtype)


class JSONArray(ExtensionArray):
    """JSON values as one buffer of compact JSON text and an offset per row.

    >>> JSONArray._from_sequence([[1, 2], {"b": None}]).tolist()
    [[1, 2], {'b': None}]
    """

    _dtype = JSONDtype()
    # Above numpy's, so that ``array == column`` is answered here.
    __array_priority__ = 1000

    def __init__(self, data: np.ndarray, offsets: np.ndarray, long_digits: bool | None = None) -> None:
        # data: uint8, the texts end to end; offsets: int64, n + 1 of them,
        # from 0 to len(data). A row whose text is empty is missing.
        self._data = data
        self._offsets = offsets
        self._view = memoryview(data)
        if long_digits is None:
            long_digits = _json.has_long_digits(self._view)
        self._long_digits = long_digits
        # orjson reads integers past 64 bits as floats: only a buffer with 19
        # digits in a row may hold one and needs the exact (slower) reader.
        self._loads = _exact_loads if long_digits else orjson.loads

    def __reduce__(self) -> tuple[Any, ...]:
        return (JSONArray, (self._data, self._offsets, self._long_digits))

    # ------------------------------------------------------------ building

    @classmethod
    def _from_texts(cls, texts: Sequence[bytes]) -> JSONArray:
        """From one JSON text per row (empty for a missing value)."""
        return cls(*_joined(texts))

    @classmethod
    def _from_values(cls, values: Sequence[Any]) -> JSONArray:
        """From JSON-able Python values; None (and pandas' missing markers) for missing."""
        return cls._from_texts([_text(v) for v in values])

    @classmethod
    def _from_sequence(cls, scalars: Any, *, dtype: Any = None, copy: bool = False) -> JSONArray:
        if isinstance(scalars, JSONArray):
            return scalars.copy() if copy else scalars
        return cls._from_values(list(scalars))

    @classmethod
    def _from_factorized(cls, values: np.ndarray, original: JSONArray) -> JSONArray:
        return cls._from_texts([b"" if v is None else v for v in values])

    @classmethod
    def _concat_same_type(cls, to_concat: Sequence[JSONArray]) -> JSONArray:
        return _concat(list(to_concat))

    # ------------------------------------------------------------ reading

    @property
    def dtype(self) -> JSONDtype:
        return self._dtype

    @property
    def nbytes(self) -> int:
        return len(self._data) + self._offsets.nbytes

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _value(self, i: int) -> Any:
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        return self._loads(self._view[start:end]) if end > start else None

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, numbers.Integral):
            i = int(key)
            n = len(self)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for a column of {n}")
            return self._value(i % n)
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                stop = max(start, stop)
                offsets = self._offsets[start : stop + 1]
                # A view of the same buffer: slicing copies nothing.
                return JSONArray(self._data[offsets[0] : offsets[-1]], offsets - offsets[0], self._long_digits)
            return self.take(np.arange(start, stop, step))
        if key is Ellipsis:
            return self
        key = pd.api.indexers.check_array_indexer(self, key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        return self.take(key)

    def __iter__(self) -> Iterator[Any]:
        loads, view = self._loads, self._view
        offsets = self._offsets.tolist()
        for start, end in zip(offsets, offsets[1:]):
            yield loads(view[start:end]) if end > start else None

    def _texts(self) -> list[bytes]:
        """One JSON text per row (empty for missing)."""
        view = self._view
        offsets = self._offsets.tolist()
        return [view[start:end].tobytes() for start, end in zip(offsets, offsets[1:])]

    def isna(self) -> np.ndarray:
        return self._offsets[1:] == self._offsets[:-1]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.fromiter(self, dtype=object, count=len(self))
        return out if dtype is None or np.dtype(dtype) == object else out.astype(dtype)

    def astype(self, dtype: Any, copy: bool = True) -> Any:
        if isinstance(dtype, JSONDtype) or (isinstance(dtype, str) and dtype == JSONDtype.name):
            return self.copy() if copy else self
        if not isinstance(dtype, ExtensionDtype) and np.dtype(dtype) == object:
            return np.array(self)
        return super().astype(dtype, copy=copy)

    def _formatter(self, boxed: bool = False) -> Any:
        # Inside a frame or a series, None lets pandas show each value as it
        # shows an object column's: a body looks the same either way.
        return None if boxed else repr

    def _values_for_factorize(self) -> tuple[np.ndarray, Any]:
        # Equal texts are equal values (the texts are written one way).
        values = (t or None for t in self._texts())
        return np.fromiter(values, dtype=object, count=len(self)), None

    def unique(self) -> JSONArray:
        # By text, so that bodies (dicts, which do not hash) have distinct values too.
        codes = pd.factorize(self._values_for_factorize()[0], use_na_sentinel=False)[0]
        firsts = np.zeros(int(codes.max(initial=-1)) + 1, dtype=np.intp)
        firsts[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)
        return self.take(firsts)

    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        if isinstance(other, (pd.Series, pd.Index, pd.DataFrame)):
            return NotImplemented
        mine = np.array(self)
        # Any array of the same length compares cell by cell (a str column's array among them).
        if isinstance(other, (ExtensionArray, np.ndarray, list)) and len(other) == len(self):
            theirs = np.fromiter(other, dtype=object, count=len(self))
            return np.array([a == b for a, b in zip(mine, theirs)], dtype=bool)
        return np.array([a == other for a in mine], dtype=bool)

    def __arrow_array__(self, type: Any = None) -> Any:
        # Arrow (Parquet) gets the JSON text: bodies of different shapes make
        # no single Arrow type, and text reads back as it was written.
        import pyarrow as pa

        texts = [t.decode("utf-8") if t else None for t in self._texts()]
        return pa.array(texts, type=type or pa.large_string())

    # ------------------------------------------------------------ changing

    def copy(self) -> JSONArray:
        # The buffer is never written to: sharing it is a copy.
        return JSONArray(self._data, self._offsets.copy(), self._long_digits)

    def take(self, indices: Any, *, allow_fill: bool = False, fill_value: Any = None) -> JSONArray:
        idx = np.asarray(indices, dtype=np.intp)
        n = len(self)
        if allow_fill:
            if fill_value is not None and not _is_missing(fill_value):
                raise ValueError(f"a JSON column fills its gaps with None, not {fill_value!r}")
            if (idx < -1).any():
                raise ValueError("an index below -1 where -1 means missing")
            missing = idx == -1
            src = np.where(missing, 0, idx)
            outside = idx >= n
        else:
            missing = None
            src = np.where(idx < 0, idx + n, idx)
            outside = (src < 0) | (src >= n)
        if outside.any():
            raise IndexError(f"an index is out of bounds for a column of {n}")
        if n == 0:
            # Only missing rows can be taken from nothing.
            return JSONArray(np.empty(0, dtype=np.uint8), np.zeros(len(idx) + 1, dtype=np.int64), False)
        starts = self._offsets[src]
        ends = self._offsets[src + 1]
        if missing is not None:
            ends = np.where(missing, starts, ends)
        return _gather(self._view, starts, ends, self._long_digits)

    def __setitem__(self, key: Any, value: Any) -> None:
        # The buffer is rebuilt: writing cells one at a time into a large
        # column is slow, reading is what the column is for.
        key = pd.api.indexers.check_array_indexer(self, key)
        texts = self._texts()
        positions = np.arange(len(self))[key]
        if np.ndim(positions) == 0:
            texts[int(positions)] = _text(value)
        else:
            if isinstance(value, (JSONArray, np.ndarray, list, pd.Series)):
                values = list(value)
                if len(values) != len(positions):
                    raise ValueError(f"{len(values)} values for {len(positions)} cells")
            else:
                values = [value] * len(positions)
            for i, v in zip(positions.tolist(), values):
                texts[i] = _text(v)
        self.__init__(*_joined(texts))  # type: ignore[misc]


def _exact_loads(text: memoryview) -> Any:
    return _json.loads(text.tobytes())


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _text(value: Any) -> bytes:
    if type(value) is _json.RawJSON:
        return value.text  # already JSON text: taken as it is, never parsed
    if value is None or (not isinstance(value, (dict, list, str)) and _is_missing(value)):
        return b""
    return _json.dumps(value)


#: rows gathered per join: the slices of one block are made and dropped together.
_BLOCK = 65_536


#: buffers from this size on are mapped on their own (see _buffer).
_MAPPED = 256 * 1024


def _buffer(size: int) -> np.ndarray:
    """A writable byte buffer of ``size``.

    A large one is mapped on its own: freed, its memory goes back to the
    system at once. From the C heap it would stay with the process, and a
    result joined from its chunks would hold its bodies twice at the end.
    """
    if size < _MAPPED:
        return np.empty(size, dtype=np.uint8)
    return np.frombuffer(mmap.mmap(-1, size), dtype=np.uint8)


def _joined(texts: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)), out=offsets[1:])
    data = _buffer(int(offsets[-1]))
    data[:] = np.frombuffer(b"".join(texts), dtype=np.uint8)
    return data, offsets


def _gather(view: memoryview, starts: np.ndarray, ends: np.ndarray, long_digits: bool) -> JSONArray:
    """The rows from ``starts`` to ``ends`` of a buffer, in a new buffer."""
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=offsets[1:])
    data = _buffer(int(offsets[-1]))
    out = memoryview(data)
    s, e, o = starts.tolist(), ends.tolist(), offsets.tolist()
    for block in range(0, len(s), _BLOCK):
        stop = min(block + _BLOCK, len(s))
        out[o[block] : o[stop]] = b"".join([view[a:b] for a, b in zip(s[block:stop], e[block:stop])])
    return JSONArray(data, offsets, long_digits)


def _concat(arrays: list[JSONArray | None]) -> JSONArray:
    """The arrays one after another; each is dropped from ``arrays`` once copied.

    A caller that hands over its only references (a result assembled from
    its chunks) needs memory for the result and one chunk, not twice the result.
    """
    present = [a for a in arrays if a is not None]
    data = _buffer(sum(len(a._data) for a in present))
    offsets = np.zeros(sum(len(a) for a in present) + 1, dtype=np.int64)
    long_digits = any(a._long_digits for a in present)
    del present
    at, row = 0, 0
    for k, a in enumerate(arrays):
        if a is None:
            continue
        size, n = len(a._data), len(a)
        data[at : at + size] = a._data
        offsets[row + 1 : row + n + 1] = a._offsets[1:] + at
        at += size
        row += n
        arrays[k] = a = None  # noqa: F841 - the chunk goes as soon as it is copied
    return JSONArray(data, offsets, long_digits)
