"""The json dtype on pandas' own conformance suite for third-party arrays (``pandas.tests.extension.base``).

Every base class that applies runs here, on bodies as an API sends them
(objects, arrays, text, numbers past 64 bits, floats as written). What
fails by design is listed in ``LIMITS``, each an ``xfail(strict=True)``
naming the error it raises and why: should one start to pass, the suite
says so. Left out, and why:

- ``BaseParsingTests``: ``read_csv(dtype="json")``. ``to_csv`` writes a
  body as an object column does (its Python repr, not JSON); a CSV of
  JSON bodies is read by ``batchnb.read_csv`` and ``from_frame``.
- ``BasePlottingTests``: JSON values are not numbers to plot (and the
  import of matplotlib alone takes a second).
- ``Dim2CompatTests``: the array has one dimension, as a column does.

pandas sees a dict (and a list) as a container of values in several places
before the array is asked anything: ``Series.fillna(dict)`` maps labels,
``ser[mask] = dict`` is a sequence of values, ``pd.Series(dict)`` is an
index. It does the same for an object column of bodies; a cell is given a
dict or a list through ``.at``/``.iat`` or the array itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest
from pandas.tests.extension import base

# The fixtures pandas provides for third-party arrays (pytest finds them here by name).
from pandas.tests.extension.conftest import *  # noqa: F403 - every fixture of that conftest, as pandas intends

from batchnb._jsonarray import JSONArray, JSONDtype

if tuple(int(part) for part in pd.__version__.split(".")[:2]) < (3, 1):
    # Each pandas changes its suite, and the limits below name the tests of pandas 3.1's.
    pytest.skip("the conformance suite as pandas 3.1 has it", allow_module_level=True)

# Bodies as they come from the wire, each kept as its text was written (a float's
# spelling, an integer past 64 bits); test_jsonarray.py checks that the texts last.
WIRE = [
    b'{"id":"co_1","n":3}',
    b'[1,2.50,"x"]',
    b'{"big":123456789012345678901234567890}',
    b'"plain text"',
    b'{"error":{"code":"not_found"}}',
    b"1.0e3",
    b'{"tags":["a","b"],"ok":true}',
    b"false",
    b'{"nested":{"deep":[{}]}}',
    b"[]",
]


@pytest.fixture
def dtype() -> JSONDtype:
    return JSONDtype()


@pytest.fixture
def data() -> JSONArray:
    return JSONArray._from_texts(WIRE)


@pytest.fixture
def data_missing() -> JSONArray:
    return JSONArray._from_values([None, {"a": 10}])


@pytest.fixture
def data_for_sorting() -> JSONArray:
    # [B, C, A] for the suite; JSON objects have no order, see ORDER.
    return JSONArray._from_values([{"b": 1}, {"c": 4}, {"a": 2, "c": 3}])


@pytest.fixture
def data_missing_for_sorting() -> JSONArray:
    return JSONArray._from_values([{"b": 1}, None, {"a": 4}])


@pytest.fixture
def data_for_grouping() -> JSONArray:
    b, a, c = {"b": 1}, {"a": 0, "c": 2}, {"c": 2}
    return JSONArray._from_values([b, b, None, None, a, a, b, c])


# ---------------------------------------------------------------- what fails by design, and why

ORDER = (
    "JSON values have no order: Python compares no two objects (nor an object with an array), as in an object "
    "column of bodies; sort, rank or group in order by a field instead (s.map(lambda b: b['id']))"
)
GROUP_ORDER = ORDER + "; groupby(sort=False) groups bodies as they are (test_groupby_extension_no_sort)"
COUNTS_ORDER = ORDER + "; the test sorts the counted bodies, value_counts itself counts them"
DICT_AS_LABELS = "pandas reads a dict given to Series.fillna or DataFrame.fillna as {label: value}, not as one value"
DICT_AS_VALUES = (
    "pandas reads a dict or list assigned through a Series or a frame as a sequence of values (as for an object "
    "column); a cell is given one through .at/.iat or the array, tested here with box_in_series=False"
)
DICT_AS_INDEX = "pandas reads a dict given to the Series constructor as {label: value}, a list of dicts as records"
VIEW = (
    "a cell's new text need not fit where the old one was: a write rebuilds the array's buffer, and a view taken "
    "before keeps the old cells (under copy-on-write pandas never shows a user a view that sees writes)"
)
NONE_IS_MISSING = (
    "the expected frame comes from an object unstack with fill_value=None, which pandas reads as no fill value "
    "and fills with NaN; a JSON column's missing value is None, the JSON null"
)


@dataclass(frozen=True)
class Limit:
    """A test of the suite that fails by design: why, and with which error."""

    reason: str
    raises: type[BaseException]
    #: which parametrizations fail, from their parameters (all of them when None).
    when: Callable[[dict[str, Any]], bool] | None = None


def _boxed(params: dict[str, Any]) -> bool:
    return bool(params["box_in_series"])


def _holes(params: dict[str, Any]) -> bool:
    """Whether unstacking leaves cells with no value (the test keeps the first 10 labels, as many as ``data``)."""
    index = params["index"]
    return len(index[:10]) < len(pd.MultiIndex.from_product(index.levels))


LIMITS: dict[str, Limit] = {
    **{
        name: Limit(ORDER, TypeError)
        for name in [
            "test_argsort",
            "test_argsort_missing",
            "test_argsort_missing_array",
            "test_argmin_argmax",
            "test_nargsort",
            "test_sort_values",
            "test_sort_values_missing",
            "test_sort_values_frame",
            "test_sort_inplace",
            "test_sort_inplace_descending",
            "test_sort_inplace_na_position",
            "test_rank",
            "test_rank_method",
            "test_rank_missing",
            "test_searchsorted",
            "test_combine_le",
        ]
    },
    "test_argreduce_series": Limit(ORDER, TypeError, lambda p: p["skipna"]),
    # pandas answers False when its comparisons raise, so the test's assertion fails.
    "test_is_monotonic_increasing": Limit(ORDER, AssertionError),
    "test_is_monotonic_decreasing": Limit(ORDER, AssertionError),
    "test_value_counts": Limit(COUNTS_ORDER, TypeError, lambda p: p["all_data"] == "data"),
    "test_value_counts_with_normalize": Limit(COUNTS_ORDER, TypeError),
    "test_groupby_extension_agg": Limit(GROUP_ORDER, TypeError),
    "test_groupby_extension_apply": Limit(GROUP_ORDER, TypeError),
    "test_groupby_extension_transform": Limit(GROUP_ORDER, TypeError),
    "test_fillna_raises_with_dict": Limit(
        "a dict is a JSON value: the array fills its gaps with it (Series.fillna still reads {label: value})",
        pytest.fail.Exception,  # the test's "DID NOT RAISE"
    ),
    "test_fillna_series": Limit(DICT_AS_LABELS, AssertionError),
    "test_fillna_frame": Limit(DICT_AS_LABELS, AssertionError),
    "test_fillna_limit_series": Limit(DICT_AS_LABELS, AssertionError),
    "test_fillna_limit_frame": Limit(DICT_AS_LABELS, AssertionError),
    "test_fillna_copy_frame": Limit(DICT_AS_VALUES, ValueError),
    "test_setitem_sequence_broadcasts": Limit(DICT_AS_VALUES, ValueError, _boxed),
    "test_setitem_mask": Limit(DICT_AS_VALUES, ValueError, _boxed),
    "test_setitem_mask_boolean_array_with_na": Limit(DICT_AS_VALUES, ValueError, _boxed),
    "test_setitem_integer_array": Limit(DICT_AS_VALUES, ValueError, _boxed),
    "test_setitem_slice": Limit(DICT_AS_VALUES, ValueError, _boxed),
    "test_setitem_mask_broadcast": Limit(DICT_AS_VALUES, ValueError),
    "test_setitem_loc_scalar_mixed": Limit(DICT_AS_VALUES, ValueError),
    "test_setitem_loc_scalar_multiple_homogoneous": Limit(DICT_AS_VALUES, ValueError),
    "test_setitem_iloc_scalar_mixed": Limit(DICT_AS_VALUES, ValueError),
    "test_setitem_iloc_scalar_multiple_homogoneous": Limit(DICT_AS_VALUES, ValueError),
    "test_setitem_loc_iloc_slice": Limit(DICT_AS_VALUES, AssertionError),
    "test_setitem_2d_values": Limit("pandas compares a row with a dict as with a sequence of values", ValueError),
    "test_series_constructor_scalar_with_index": Limit(DICT_AS_INDEX, AssertionError),
    "test_from_dtype": Limit(DICT_AS_INDEX, TypeError),
    "test_view": Limit(VIEW, AssertionError),
    "test_transpose": Limit(VIEW, AssertionError),
    "test_setitem_preserves_views": Limit(VIEW, AssertionError),
    "test_unstack": Limit(NONE_IS_MISSING, AssertionError, _holes),
    "test_json_roundtrip": Limit(
        "pandas' JSON reader refuses an integer past 64 bits ('Value is too big!'), which a body may hold", ValueError
    ),
}


@pytest.fixture(autouse=True)
def _known_limit(request: pytest.FixtureRequest) -> None:
    limit = LIMITS.get(request.node.originalname)
    params = getattr(request.node, "callspec", None)
    if limit and (limit.when is None or limit.when(params.params if params else {})):
        request.applymarker(pytest.mark.xfail(raises=limit.raises, strict=True, reason=limit.reason))


class TestJSONArray(
    base.BaseDtypeTests,
    base.BaseInterfaceTests,
    base.BaseConstructorsTests,
    base.BaseGetitemTests,
    base.BaseSetitemTests,
    base.BaseMissingTests,
    base.BaseMethodsTests,
    base.BaseCastingTests,
    base.BaseGroupbyTests,
    base.BaseReshapingTests,
    base.BasePrintingTests,
    base.BaseIndexTests,
    base.BaseAccumulateTests,
    base.BaseReduceTests,
    base.BaseArithmeticOpsTests,
    base.BaseComparisonOpsTests,
    base.BaseUnaryOpsTests,
):
    # Reductions, accumulations, arithmetic and ordering comparisons: JSON
    # values have none, and the suite checks that each raises (TypeError).
    def _get_expected_exception(self, op_name: str, obj: Any, other: Any) -> Any:
        if isinstance(obj, pd.DataFrame) and isinstance(other, dict):
            return ValueError  # a frame reads a dict operand as one value per column, and says the lengths differ
        return super()._get_expected_exception(op_name, obj, other)


def _cut(test: Callable[..., None], raises: type[BaseException]) -> Callable[..., None]:
    """``test``, its expected error raised again with a traceback of one line.

    An expected error's traceback runs through pandas' largest modules, and
    pytest parses each of them to show it: 40 s of CPU for these tests, 2 s
    without. Any other error keeps its whole traceback.
    """

    @functools.wraps(test)  # the same parameters and marks
    def run(self: object, *args: Any, **kwargs: Any) -> None:
        try:
            test(self, *args, **kwargs)
        except raises as exc:
            exc.__cause__ = exc.__context__ = None
            raise exc.with_traceback(None) from None

    return run


for _name, _limit in LIMITS.items():
    setattr(TestJSONArray, _name, _cut(getattr(TestJSONArray, _name), _limit.raises))
