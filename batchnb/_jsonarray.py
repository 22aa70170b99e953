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
cell (``frame.at[row, "body"] = {...}``; numpy and pandas values in it are
converted as ``from_frame`` converts a cell), not by changing what was read.
Missing cells and the JSON value ``null`` are the same: None.
"""

from __future__ import annotations

import builtins
import itertools
import mmap
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, cast

import numpy as np
import orjson
import pandas as pd
from pandas.api.extensions import ExtensionArray, ExtensionDtype, no_default, register_extension_dtype

from . import _json
from ._cells import _is_null, _json_value

__all__ = ["JSONArray", "JSONDtype", "holds_values"]


@register_extension_dtype
class JSONDtype(ExtensionDtype):
    """The dtype of a column of JSON values kept as text (``"json"``).

    >>> pd.Series([{"a": 1}], dtype="json").dtype
    json
    """

    name = "json"
    type = object

    @property
    def kind(self) -> Literal["O"]:
        return "O"

    @property
    def na_value(self) -> None:
        return None

    @classmethod
    def construct_array_type(cls) -> builtins.type[JSONArray]:  # `type` is the class's own attribute here
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
    # pandas 3 marks an array it hands out read-only (an Index's values); pandas 2 has no such mark.
    _readonly = False

    def __init__(self, data: np.ndarray, offsets: np.ndarray, long_digits: bool | None = None) -> None:
        # data: uint8, the texts end to end; offsets: int64, n + 1 of them,
        # from 0 to len(data). A row whose text is empty is missing.
        self._data = data
        self._offsets = offsets
        self._view = data.data  # the buffer's bytes, sliced without copying
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
    def _from_scalars(cls, scalars: Any, *, dtype: Any) -> JSONArray:
        # What a pointwise operation gives (Series.map, Series.combine, a
        # groupby's aggregate): JSON objects and arrays stay here, while numbers,
        # text and booleans go to the dtype pandas infers for them, as from an
        # object column (a str column with its ``.str``, numbers that sum).
        values = list(scalars)
        if not any(isinstance(v, (Mapping, list, tuple, np.ndarray)) for v in values):
            raise TypeError("no JSON object or array among the values")
        return cls._from_values(values)

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
        key = _without_ellipsis(key)
        if isinstance(key, numbers.Integral):
            i = int(key)
            n = len(self)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis 0 with size {n}")
            return self._value(i % n)
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                stop = max(start, stop)
                offsets = self._offsets[start : stop + 1]
                # A view of the same buffer: slicing copies nothing.
                part = JSONArray(self._data[offsets[0] : offsets[-1]], offsets - offsets[0], self._long_digits)
                part._readonly = self._readonly
                return part
            return self.take(np.arange(start, stop, step))
        if key is Ellipsis:
            return self
        if not pd.api.types.is_list_like(key):
            raise IndexError(_BAD_INDEX)
        key = pd.api.indexers.check_array_indexer(self, key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        return self.take(key)

    def __iter__(self) -> Iterator[Any]:
        loads, view = self._loads, self._view
        offsets = self._offsets.tolist()
        for start, end in itertools.pairwise(offsets):
            yield loads(view[start:end]) if end > start else None

    def _texts(self) -> list[bytes]:
        """One JSON text per row (empty for missing)."""
        view = self._view
        offsets = self._offsets.tolist()
        return [view[start:end].tobytes() for start, end in itertools.pairwise(offsets)]

    def isna(self) -> np.ndarray:
        missing: np.ndarray = self._offsets[1:] == self._offsets[:-1]
        return missing

    def __contains__(self, item: object) -> bool:
        if item is None:
            return bool(self.isna().any())
        if pd.api.types.is_scalar(item) and _is_null(item):
            return False  # missing is None here; NaN, pd.NA and NaT are in no JSON column
        return any(value == item for value in self)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if copy is False:
            raise ValueError("a JSON column has no array to share: its values are parsed from text when read")
        out = np.fromiter(self, dtype=object, count=len(self))
        return out if dtype is None or np.dtype(dtype) == object else out.astype(dtype)

    def to_numpy(self, dtype: Any = None, copy: bool = False, na_value: Any = no_default) -> np.ndarray:
        # Always a new array (the values are parsed), so never a read-only view.
        out = np.asarray(self, dtype=dtype)
        if na_value is not no_default:
            out[self.isna()] = na_value
        return out

    def astype(self, dtype: Any, copy: bool = True) -> Any:
        if isinstance(dtype, JSONDtype) or (isinstance(dtype, str) and dtype == JSONDtype.name):
            return self.copy() if copy else self
        if not isinstance(dtype, ExtensionDtype) and np.dtype(dtype) == object:
            return np.array(self)
        return super().astype(cast(Any, dtype), copy=copy)

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

    def __eq__(self, other: Any) -> Any:
        if isinstance(other, (pd.Series, pd.Index, pd.DataFrame)):
            return NotImplemented
        mine = np.array(self)
        # Any array of the same length compares cell by cell (a str column's array among them).
        if isinstance(other, (ExtensionArray, np.ndarray, list)) and len(other) == len(self):
            theirs = np.fromiter(other, dtype=object, count=len(self))
            return np.array([a == b for a, b in zip(mine, theirs)], dtype=bool)
        return np.array([a == other for a in mine], dtype=bool)

    def __ne__(self, other: Any) -> Any:  # an array of booleans, as __eq__
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else ~equal

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
            if n == 0:
                raise IndexError("cannot do a non-empty take from an empty axes.")
            raise IndexError(f"an index is out of bounds for a column of {n}")
        if n == 0:
            # Only missing rows can be taken from nothing.
            taken = JSONArray(np.empty(0, dtype=np.uint8), np.zeros(len(idx) + 1, dtype=np.int64), False)
        else:
            starts = self._offsets[src]
            ends = self._offsets[src + 1]
            if missing is not None:
                ends = np.where(missing, starts, ends)
            taken = _gather(self._view, starts, ends, self._long_digits)
        if missing is not None and missing.any() and not _is_null(fill_value):
            taken._write(np.flatnonzero(missing), [_text(fill_value)])
        return taken

    def fillna(self, value: Any, limit: int | None = None, copy: bool = True) -> JSONArray:
        """The missing cells given ``value``: any one JSON value (a dict or a list too), or one per row in an array.

        >>> JSONArray._from_values([None, 1, None]).fillna({"a": [2]}).tolist()
        [{'a': [2]}, 1, {'a': [2]}]
        """
        if isinstance(value, (np.ndarray, ExtensionArray, pd.Series)):
            return super().fillna(value, limit=limit, copy=copy)
        gaps = np.flatnonzero(self.isna())[:limit]
        out = self.copy() if copy else self
        if len(gaps):
            out._write(gaps, [_text(value)])
        return out

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._readonly:  # before the value is looked at, whatever it is
            raise ValueError("Cannot modify read-only array")
        key = _without_ellipsis(key)
        if isinstance(key, numbers.Integral):
            if isinstance(value, (ExtensionArray, pd.Series, pd.Index, pd.DataFrame)):
                raise ValueError(f"one cell takes one JSON value, not a {type(value).__name__}")
            n = len(self)
            if not -n <= int(key) < n:
                raise IndexError(f"index {int(key)} is out of bounds for axis 0 with size {n}")
            self._write(np.array([int(key) % n]), [_text(value)])
            return
        key = pd.api.indexers.check_array_indexer(self, key)
        positions = np.arange(len(self))[key]
        if isinstance(value, JSONArray):
            texts = value._texts()  # as they are: a value from the wire keeps its text
        elif isinstance(value, (list, tuple, np.ndarray, ExtensionArray, pd.Series, pd.Index)):
            texts = [_text(v) for v in value]
        else:
            texts = [_text(value)]
        if len(texts) != len(positions) and (len(texts) != 1 or not _is_scalar_value(value)):
            raise ValueError(f"{len(texts)} values for {len(positions)} cells")
        self._write(positions, texts)

    def _write(self, positions: np.ndarray, texts: list[bytes]) -> None:
        """The cells at ``positions`` given ``texts`` (one for all, or one each; the last wins for a cell named twice).

        The buffer is rebuilt, never written to (a copy shares it): the texts
        of the other cells are copied as they are, a run of them at a time.
        """
        if self._readonly:
            raise ValueError("Cannot modify read-only array")
        if len(texts) == 1:
            texts = texts * len(positions)
        cells = dict(zip(positions.tolist(), texts))
        if not cells:
            return
        rows = sorted(cells)
        new = [cells[r] for r in rows]
        long_digits = self._long_digits or any(_json.has_long_digits(t) for t in set(new))
        self.__init__(*_spliced(self._data, self._offsets, rows, new), long_digits)  # type: ignore[misc]  # written again in place: the array is rebuilt, as pandas' own arrays do


def _exact_loads(text: memoryview) -> Any:
    return _json.loads(text.tobytes())


#: JSON values orjson writes as they are; anything else may be a missing marker (NaN, pd.NA, NaT).
_PLAIN = (dict, list, str, int, bool)


def _text(value: Any) -> bytes:
    """``value``'s compact JSON text; empty for a missing value (None, NaN, pd.NA, NaT...).

    What orjson cannot write (numpy scalars and arrays, pd.NA inside a
    value, keys that are not text, timestamps) is converted first, as
    ``from_frame`` converts a frame's cells:

    >>> _text({"n": np.int64(3), "v": np.array([0.5, np.nan])}), _text(np.float64("nan"))
    (b'{"n":3,"v":[0.5,null]}', b'')
    """
    if type(value) is _json.RawJSON:
        return value.text  # already JSON text: taken as it is, never parsed
    if value is None or (type(value) not in _PLAIN and _is_null(value)):
        return b""
    try:
        text = _json.dumps(value)
    except TypeError:
        text = _json.dumps(_json_value(value, omit=False))
    # An infinity is written as null: missing, as every null is here.
    return b"" if text == b"null" else text


#: numpy's words for a key that indexes nothing, as pandas' suite expects them.
_BAD_INDEX = (
    "only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) and integer or boolean arrays are valid"
    " indices"
)


def _without_ellipsis(key: Any) -> Any:
    """``arr[..., 2]`` and ``arr[2, ...]`` are ``arr[2]`` for a one-dimensional column."""
    if isinstance(key, tuple):
        rest = [k for k in key if k is not Ellipsis]
        if len(rest) > 1 or len(key) - len(rest) > 1:
            raise IndexError("too many indices for a one-dimensional column")
        return rest[0] if rest else Ellipsis
    return key


def _is_scalar_value(value: Any) -> bool:
    """Whether an assigned value is one JSON value for every cell a key names (a dict is; a list is a value each)."""
    return not isinstance(value, (list, tuple, np.ndarray, ExtensionArray, pd.Series, pd.Index))


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


def _spliced(
    data: np.ndarray, offsets: np.ndarray, rows: list[int], texts: list[bytes]
) -> tuple[np.ndarray, np.ndarray]:
    """A buffer and offsets: the rows ``rows`` (ascending) hold ``texts``, every other row its text in ``data``."""
    lengths = np.diff(offsets)
    lengths[rows] = [len(t) for t in texts]
    new_offsets = np.zeros(len(offsets), dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    out = _buffer(int(new_offsets[-1]))
    done = 0  # rows before this one are in ``out``
    for row, text in zip([*rows, len(offsets) - 1], [*texts, b""]):
        # The unchanged run before ``row`` in one copy, then the new text.
        start, end, at = int(offsets[done]), int(offsets[row]), int(new_offsets[done])
        out[at : at + end - start] = data[start:end]
        if text:
            at = int(new_offsets[row])
            out[at : at + len(text)] = np.frombuffer(text, dtype=np.uint8)
        done = row + 1
    return out, new_offsets


def _gather(view: memoryview, starts: np.ndarray, ends: np.ndarray, long_digits: bool) -> JSONArray:
    """The rows from ``starts`` to ``ends`` of a buffer, in a new buffer."""
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=offsets[1:])
    data = _buffer(int(offsets[-1]))
    out = data.data  # written in place, run by run
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
        arrays[k] = a = None  # the chunk goes as soon as it is copied
    return JSONArray(data, offsets, long_digits)
