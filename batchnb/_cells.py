"""One cell as a JSON value: every pandas and numpy type an analyst's frame may hold.

The one conversion for a frame's cells (``from_frame``) and for values
assigned into a ``json`` column:

    >>> import numpy as np
    >>> _json_value({"n": np.int64(3), "at": pd.Timestamp("2024-05-01"), "v": np.array([1.5, np.nan])}, omit=False)
    {'n': 3, 'at': '2024-05-01T00:00:00', 'v': [1.5, None]}
    >>> _is_null(pd.NA), _is_null(float("nan")), _is_null({})
    (True, True, False)
"""

from __future__ import annotations

import datetime as _dt
import decimal
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def _is_null(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, float):  # np.float64 included
        return v != v
    if isinstance(v, np.floating):
        return bool(np.isnan(v))
    if isinstance(v, (np.datetime64, np.timedelta64)):
        return bool(np.isnat(v))
    if isinstance(v, decimal.Decimal):
        return v.is_nan()
    return False


def _json_value(v: Any, omit: bool) -> Any:
    """``v`` as plain JSON-able Python (not null at the top; nested nulls handled)."""
    t = type(v)
    if t is str or t is int or t is bool:
        return v
    if t is float:
        return None if v != v else v
    if isinstance(v, Mapping):
        out: dict[str, Any] = {}
        for k, x in v.items():
            key = k if type(k) is str else str(_json_value(k, omit))
            if _is_null(x):
                if not omit:
                    out[key] = None
            else:
                out[key] = _json_value(x, omit)
        return out
    if isinstance(v, (list, tuple)):
        # A list keeps its length: a null item stays null whatever ``nulls`` says.
        return [None if _is_null(x) else _json_value(x, omit) for x in v]
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "biu":
            return v.tolist()  # already Python ints and bools, and fast
        # tolist() would turn datetime64[ns] into bare integers: go item by item.
        items = v.tolist() if v.dtype.kind == "f" else list(v)
        return [None if _is_null(x) else _json_value(x, omit) for x in items]
    if isinstance(v, np.generic):
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, np.floating):
            f = float(v)
            return None if f != f else f
        if isinstance(v, np.str_):
            return str(v)
        if isinstance(v, np.datetime64):
            return pd.Timestamp(v).isoformat()
        if isinstance(v, np.timedelta64):
            return pd.Timedelta(v).isoformat()
    if isinstance(v, str):
        return str(v)
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return None if v != v else float(v)
    if isinstance(v, (_dt.date, _dt.time)):  # datetime and pd.Timestamp too
        return v.isoformat()
    if isinstance(v, pd.Timedelta):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return pd.Timedelta(v).isoformat()
    if isinstance(v, decimal.Decimal):
        if v.is_nan():
            return None
        if not v.is_finite():
            raise TypeError(f"{v} is not a number JSON can carry")
        f = float(v)
        # A float where it is the very number; else the Decimal, which is written exactly.
        return f if decimal.Decimal(repr(f)) == v else v
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, pd.Period):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        try:
            return bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            raise TypeError("bytes that are not UTF-8 text cannot be sent as JSON") from None
    raise TypeError(f"a value of type {type(v).__name__} cannot be sent as JSON")
