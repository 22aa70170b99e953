"""Bodies kept as JSON text (batchnb._jsonarray): every way an analyst reaches a body still works, and
the column behaves as a pandas column under the operations a result goes through."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import batchnb as bn
from batchnb._jsonarray import JSONArray, JSONDtype, _concat
from batchnb.results import _concat as concat_results
from batchnb.results import _json_bodies

BODIES = [
    {"id": "co_4ba06eb22da7", "name": "Zoë", "address": {"city": "Lyon", "zip": None}, "tags": ["a", "b"]},
    None,
    {"error": {"code": "not_found", "message": "no such company"}},
    [1, 2.5, True, None],
    "plain text",
    {"big": 2**70, "n": -3, "x": 1e-7},
    {},
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


def result_frame(bodies=BODIES, index=None) -> pd.DataFrame:
    n = len(bodies)
    plain = pd.DataFrame(
        {
            "name": [f"r{i}" for i in range(n)],
            "status": pd.array([201] * n, dtype="Int64"),
            "body": np.fromiter(bodies, dtype=object, count=n),
        },
        index=index,
    )
    return _json_bodies(plain.copy())


# ---------------------------------------------------------------- reading, as analysts do


def test_cells_read_back_as_the_values_they_were():
    result = result_frame(index=[f"row{i}" for i in range(len(BODIES))])
    assert result["body"].dtype == JSONDtype()
    assert result["body"].tolist() == BODIES
    assert result.body.iloc[0]["id"] == "co_4ba06eb22da7"
    assert result.body["row0"]["address"]["city"] == "Lyon"
    assert result.loc["row2", "body"]["error"]["code"] == "not_found"
    assert result.at["row5", "body"]["big"] == 2**70  # exact, not a float
    assert result.iloc[1]["body"] is None
    # map gives what it gives for an object column: text here (a str column), bodies stay json.
    ids = result["body"].map(lambda b: b.get("id") if isinstance(b, dict) else None)
    pd.testing.assert_series_equal(
        ids, result["body"].astype(object).map(lambda b: b.get("id") if isinstance(b, dict) else None)
    )
    assert ids.iloc[0] == "co_4ba06eb22da7"
    assert result["body"].map(lambda b: b if isinstance(b, dict) else {}).dtype == JSONDtype()
    assert result["body"].apply(type).tolist() == [dict, type(None), dict, list, str, dict, dict]
    assert [row.body for row in result.itertuples()] == BODIES
    assert [row["body"] for _label, row in result.iterrows()] == BODIES
    assert result.to_dict("records")[0]["body"] == BODIES[0]
    assert list(result["body"]) == BODIES
    assert result["body"].isna().tolist() == [False, True, False, False, False, False, False]


def test_expand_and_stable_read_it_like_objects():
    result = result_frame(BODIES[:3])
    expanded = bn.expand(result)
    assert expanded["body.address.city"].tolist()[0] == "Lyon"
    assert expanded["body.error.code"].tolist()[2] == "not_found"
    view = result.batchnb.stable()
    assert view["body"].tolist()[0]["id"] == "<id1>"


def test_it_prints_and_renders_exactly_as_an_object_column():
    as_objects = pd.DataFrame(
        {"status": [201] * len(BODIES), "body": np.fromiter(BODIES, dtype=object, count=len(BODIES))}
    )
    as_json = as_objects.assign(body=JSONArray._from_values(BODIES))
    assert repr(as_json) == repr(as_objects)
    assert as_json._repr_html_() == as_objects._repr_html_()
    assert repr(as_json["body"]).replace("dtype: json", "dtype: object") == repr(as_objects["body"])
    assert as_json.to_csv() == as_objects.to_csv()


def test_equality_with_values_and_between_columns():
    arr = JSONArray._from_values(BODIES)
    assert (arr == BODIES[0]).tolist() == [True] + [False] * 6
    assert (arr != BODIES[0]).tolist() == [False] + [True] * 6
    assert BODIES[3] in arr and None in arr  # a list is one value here, and None is the missing one
    assert float("nan") not in arr and pd.NA not in arr and [1, 2.5] not in arr
    assert (arr == BODIES).all()
    assert (pd.Series(arr) == pd.Series(JSONArray._from_values(BODIES))).all()
    assert pd.Series(arr).equals(pd.Series(JSONArray._from_values(BODIES)))
    pd.testing.assert_series_equal(pd.Series(arr), pd.Series(JSONArray._from_values(BODIES)))
    pd.testing.assert_series_equal(
        pd.Series(arr).astype(object), pd.Series(np.fromiter(BODIES, dtype=object, count=len(BODIES)))
    )


# ---------------------------------------------------------------- what pandas does with it


def test_selecting_filtering_reindexing_sorting_keep_each_body_with_its_row():
    result = result_frame()
    assert result.head(2)["body"].tolist() == BODIES[:2]
    assert result.iloc[::-2]["body"].tolist() == BODIES[::-2]
    assert result[result["body"].notna()]["body"].tolist() == [b for b in BODIES if b is not None]
    assert result.iloc[[4, 0, 4]]["body"].tolist() == [BODIES[4], BODIES[0], BODIES[4]]
    wider = result.reindex([6, 99, 0])
    assert wider["body"].tolist() == [BODIES[6], None, BODIES[0]]
    assert wider["body"].dtype == JSONDtype()
    assert result.sort_values("name", ascending=False)["body"].tolist() == BODIES[::-1]
    assert result.join(pd.DataFrame({"extra": range(len(BODIES))}))["body"].tolist() == BODIES
    assert result.merge(result[["name"]], on="name")["body"].tolist() == BODIES
    assert result.groupby("status")["body"].first().tolist() == [BODIES[0]]
    assert result.drop_duplicates("status")["body"].tolist() == [BODIES[0]]
    assert result.dropna(subset=["body"]).shape[0] == len(BODIES) - 1
    assert result["body"].fillna({1: {"filled": True}}).tolist()[:3] == [BODIES[0], {"filled": True}, BODIES[2]]
    assert pd.Series(JSONArray._from_values([{"a": 1}, None, {"a": 1}, [1]])).unique().tolist() == [{"a": 1}, None, [1]]


def test_concatenating_copying_pickling():
    result = result_frame()
    both = pd.concat([result, result])
    assert both["body"].tolist() == BODIES + BODIES
    assert both["body"].dtype == JSONDtype()
    assert pickle.loads(pickle.dumps(result))["body"].tolist() == BODIES
    assert result.copy(deep=True)["body"].tolist() == BODIES
    assert pd.concat([result.iloc[:0], result.iloc[:1]])["body"].tolist() == BODIES[:1]


def test_assigning_cells_rewrites_them():
    result = result_frame()
    result.at[1, "body"] = {"now": "set"}
    result.loc[[0, 2], "body"] = None
    assert result["body"].tolist()[:3] == [None, {"now": "set"}, None]
    arr = JSONArray._from_values([1, 2, 3])
    arr[np.array([True, False, True])] = [[9], {"k": 1}]
    assert arr.tolist() == [[9], 2, {"k": 1}]
    arr[0] = {"a": [1]}
    assert arr[0] == {"a": [1]}
    read = arr[0]
    read["a"].append(2)  # what was read is a fresh value: the cell does not change
    assert arr[0] == {"a": [1]}


def test_empty_and_all_missing_columns():
    empty = JSONArray._from_values([])
    assert len(empty) == 0 and empty.tolist() == []
    assert empty.take([-1, -1], allow_fill=True).tolist() == [None, None]
    with pytest.raises(IndexError):
        empty.take([0])
    missing = JSONArray._from_values([None, float("nan"), pd.NA])
    assert missing.isna().all() and missing.tolist() == [None, None, None]
    with pytest.raises(IndexError):
        JSONArray._from_values([1])[1]


def test_a_result_is_joined_from_its_chunks_without_holding_the_bodies_twice():
    pieces = [result_frame(BODIES[:3]), result_frame(BODIES[3:], index=range(3, len(BODIES)))]
    held = [p["body"].array for p in pieces]
    joined = concat_results(pieces)
    assert list(joined.columns) == ["name", "status", "body"]
    assert joined["body"].tolist() == BODIES
    assert "body" not in pieces[0].columns  # handed over
    chunks: list = [JSONArray._from_values([1]), None, JSONArray._from_values([[2]])]
    assert _concat(chunks).tolist() == [1, [2]]
    assert chunks == [None, None, None]
    del held


def test_parquet_gets_the_json_text(tmp_path):
    pytest.importorskip("pyarrow")
    result = result_frame()
    result.to_parquet(tmp_path / "r.parquet")
    import pyarrow.parquet as pq

    stored = pq.read_table(tmp_path / "r.parquet").column("body").to_pylist()
    assert stored[0] == '{"id":"co_4ba06eb22da7","name":"Zoë","address":{"city":"Lyon","zip":null},"tags":["a","b"]}'
    assert stored[1] is None
    # pandas reads the text back as the JSON column it was written from.
    back = pd.read_parquet(tmp_path / "r.parquet")
    assert back["body"].dtype == JSONDtype() and back["body"].tolist() == result["body"].tolist()


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, max_size=12), st.data())
def test_any_json_values_come_back_equal_whatever_is_taken(values, data):
    arr = JSONArray._from_values(values)
    assert arr.tolist() == values
    assert [arr[i] for i in range(len(values))] == values
    if values:
        picks = data.draw(st.lists(st.integers(-1, len(values) - 1), max_size=20))
        taken = arr.take(picks, allow_fill=True)
        assert taken.tolist() == [None if i < 0 else values[i] for i in picks]
        start, stop = sorted(data.draw(st.lists(st.integers(0, len(values)), min_size=2, max_size=2)))
        assert arr[start:stop].tolist() == values[start:stop]
    assert JSONArray._concat_same_type([arr, arr]).tolist() == values + values


def test_a_mapped_body_column_compares_with_a_text_column_row_by_row():
    # Series.map keeps the json dtype; comparing it with a str column compared every cell with the
    # whole other array (a 2-D result, then "Data must be 1-dimensional").
    bodies = pd.Series(JSONArray._from_values([{"name": "A"}, {"name": "B"}]))
    names = bodies.map(lambda b: b["name"])
    assert (names == pd.Series(["A", "X"], dtype="str")).tolist() == [True, False]


# ---------------------------------------------------------------- assigning what an analyst has at hand


def test_numpy_and_pandas_values_in_an_assigned_body_are_converted_as_from_frame_converts_cells():
    cell = {
        "n": np.int64(3),
        "ratio": np.float32(0.5),
        "ok": np.bool_(True),
        "scores": np.array([1.5, np.nan]),
        "ids": np.arange(2),
        "at": pd.Timestamp("2024-05-01 10:00"),
        "gone": pd.NA,
        7: "a key that is not text",
    }
    sent = bn.from_frame(pd.DataFrame({"body": [cell]}), method="POST", path="/x", nulls="null")[0].body
    assert sent == {
        "n": 3,
        "ratio": 0.5,
        "ok": True,
        "scores": [1.5, None],
        "ids": [0, 1],
        "at": "2024-05-01T10:00:00",
        "gone": None,
        "7": "a key that is not text",
    }
    result = result_frame()
    result.at[1, "body"] = cell
    assert result.at[1, "body"] == sent
    result.loc[[0, 2], "body"] = np.int64(5)
    result.iat[3, result.columns.get_loc("body")] = np.array([1, 2])
    assert result["body"].tolist()[:4] == [5, sent, 5, [1, 2]]
    with pytest.raises(TypeError, match="a value of type object cannot be sent as JSON"):
        result.at[4, "body"] = object()
    with pytest.raises(TypeError, match="a value of type object cannot be sent as JSON"):
        result["body"].array[4] = {"x": object()}
    with pytest.raises(ValueError):  # pandas retries a refused dict as a Series of values, and says so
        result.at[4, "body"] = {"x": object()}
    assert result.at[4, "body"] == BODIES[4] and result["body"].dtype == JSONDtype()  # refused: nothing changed


def test_gaps_are_filled_with_any_json_value():
    arr = JSONArray._from_values([None, {"a": 1}, None])
    assert arr.fillna({"b": np.int64(2)}).tolist() == [{"b": 2}, {"a": 1}, {"b": 2}]
    assert arr.fillna([1, 2]).tolist() == [[1, 2], {"a": 1}, [1, 2]]  # a list is one JSON value here
    assert arr.fillna("x", limit=1).tolist() == ["x", {"a": 1}, None]
    assert arr.take([0, -1, 1], allow_fill=True, fill_value={"f": 0}).tolist() == [None, {"f": 0}, {"a": 1}]
    s = pd.Series(arr)
    assert s.reindex([1, 5], fill_value=[0]).tolist() == [{"a": 1}, [0]]
    assert s.where(s.notna(), "none").tolist() == ["none", {"a": 1}, "none"]


def test_the_wire_text_of_every_cell_is_kept_through_assignment_take_fill_and_concat():
    # Numbers as an API wrote them: past 64 bits, a trailing zero, an exponent.
    wire = [b'{"big":123456789012345678901234567890,"price":2.50}', b"", b"1.0e3", b'[1,-0.0,"\\u00e9"]']
    arr = JSONArray._from_texts(wire)
    arr[1] = {"set": np.int64(1)}
    assert arr._texts() == [wire[0], b'{"set":1}', wire[2], wire[3]]
    arr[np.array([False, True, False, False])] = None
    assert arr._texts() == wire
    assert arr.take([3, -1, 0], allow_fill=True, fill_value="f")._texts() == [wire[3], b'"f"', wire[0]]
    assert arr.fillna({"gap": True})._texts() == [wire[0], b'{"gap":true}', wire[2], wire[3]]
    assert JSONArray._concat_same_type([arr, arr[2:]])._texts() == wire + wire[2:]
    assert pd.concat([pd.Series(arr), pd.Series(arr)]).array._texts() == wire + wire
    assert arr[0]["big"] == 123456789012345678901234567890


def test_a_read_only_column_refuses_every_write():
    arr = JSONArray._from_values([1, None])
    view = pd.Index(arr).array  # an Index hands out its values read-only
    for write in (lambda: view.__setitem__(0, 2), lambda: view.fillna(0, copy=False)):
        with pytest.raises(ValueError, match="read-only"):
            write()
    assert view.tolist() == [1, None] and view.fillna(0).tolist() == [1, 0]


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, min_size=1, max_size=12), st.data())
def test_any_assignment_changes_the_cells_it_names_and_keeps_the_text_of_every_other(values, data):
    arr = JSONArray._from_values(values)
    texts = arr._texts()
    n = len(values)
    positions = data.draw(st.lists(st.integers(-n, n - 1), max_size=6))
    new = data.draw(st.lists(json_values, min_size=len(positions), max_size=len(positions)))
    arr[np.array(positions, dtype=np.intp)] = new
    expected = list(values)
    changed = set()
    for p, v in zip(positions, new):  # the last write to a cell wins, as in numpy
        expected[p] = v
        changed.add(p % n)
    assert arr.tolist() == expected
    assert [t for i, t in enumerate(arr._texts()) if i not in changed] == [
        t for i, t in enumerate(texts) if i not in changed
    ]
