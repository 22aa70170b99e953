"""The one comparison behind assert_result and batchnb run --expect: how rows pair, how values compare, what a file may hold."""

from __future__ import annotations

import pandas as pd
import pytest

import batchnb as bn
from batchnb._compare import Expected, canon, expected_status, frame_differences, status_matches


def _diffs(actual: pd.DataFrame, expected) -> list[tuple[str, str, str, str]]:
    _total, diffs = frame_differences(actual, expected if isinstance(expected, Expected) else Expected.of(expected))
    return [(d.label, d.field, d.expected, d.got) for d in diffs]


@pytest.mark.parametrize(
    "header, by",
    [(",name,status", "label"), ("row,name,status", "label"), ("name,status", "name"), ("status", "position")],
)
def test_rows_pair_by_label_else_by_name_else_by_position(tmp_path, header, by):
    columns = header.split(",")
    rows = {"": ["5", "7"], "row": ["5", "7"], "name": ["a", "b"], "status": ["201", "404"]}
    lines = [header] + [",".join(rows[c][i] for c in columns) for i in range(2)]
    (tmp_path / "e.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected = Expected.read(tmp_path / "e.csv")
    assert expected.by == by
    actual = pd.DataFrame({"name": ["a", "b"], "status": [201, 404]}, index=[5, 7])
    assert _diffs(actual, expected) == []
    swapped = actual.iloc[::-1]
    # By label or by name the order does not matter; by position it does.
    assert (_diffs(swapped, expected) == []) == (by != "position")


def test_names_that_repeat_or_are_missing_fall_back_to_position(tmp_path):
    (tmp_path / "e.csv").write_text("name,status\na,201\na,201\n", encoding="utf-8")
    assert Expected.read(tmp_path / "e.csv").by == "position"
    (tmp_path / "e.csv").write_text("name,status\na,201\n,201\n", encoding="utf-8")
    assert Expected.read(tmp_path / "e.csv").by == "position"


def test_repeated_labels_pair_in_order():
    actual = pd.DataFrame({"name": ["parent", "child"], "status": [201, 424]}, index=[0, 0])
    stored = pd.DataFrame({"name": ["parent", "child"], "status": [201, 201]}, index=[0, 0])
    assert _diffs(actual, stored) == [("0", "status", "201", "424")]


def test_ids_compare_by_the_part_they_play():
    stored = pd.DataFrame(
        {
            "path": ["/c", "/c/co_111111111111/s", "/c/co_222222222222/s"],
            "body": [{"id": "co_111111111111"}, {"id": "sv_000000000001"}, {"id": "sv_000000000002"}],
        }
    )
    same = pd.DataFrame(
        {
            "path": ["/c", "/c/co_abcdefabcdef/s", "/c/co_abcdefabcdef/s"],
            "body": [{"id": "co_abcdefabcdef"}, {"id": "sv_aaaaaaaaaaaa"}, {"id": "sv_bbbbbbbbbbbb"}],
        }
    )
    # Stored, row 2 used a company no row made; now it uses the one row 0 made: a change, whatever the values.
    assert _diffs(same, stored) == [
        ("2", "path", "/c/<id3>/s", "/c/<id1>/s"),
        ("2", "$.id", "'<id4>'", "'<id3>'"),
    ]
    again = pd.DataFrame(
        {
            "path": ["/c", "/c/co_999999999999/s", "/c/co_999999999999/s"],
            "body": [{"id": "co_999999999999"}, {"id": "sv_cccccccccccc"}, {"id": "sv_dddddddddddd"}],
        }
    )
    assert _diffs(again, same) == []  # other values, the same parts


def test_values_compare_whatever_their_type():
    assert canon(1) == canon("1") == canon(1.0) == canon("1.0")
    assert canon("01234") == "01234"  # a zip code is text
    assert canon(9007199254740993) == canon("9007199254740993") == "9007199254740993"
    assert canon(True) == canon("TRUE") and canon(None) == canon(pd.NA) == canon(float("nan")) == ""
    assert canon({"a": 1}) == canon('{"a": 1}') == canon("{'a': 1}")
    assert canon("{not json") == "{not json"


@pytest.mark.parametrize(
    "value, read", [(201, "201"), ("201", "201"), (404.0, "404"), ("2XX", "2xx"), ("none", ""), (None, ""), ("", "")]
)
def test_what_reads_as_a_status(value, read):
    assert expected_status(value, "x") == read


@pytest.mark.parametrize("value", ["created", 42, 700, True, "2xxx", 201.5])
def test_what_does_not(value):
    with pytest.raises(bn.BatchValidationError, match="is not a status"):
        expected_status(value, "x")


def test_a_class_matches_its_statuses_only():
    assert status_matches("2xx", "204") and not status_matches("2xx", "") and not status_matches("4xx", "500")


def test_an_expected_file_is_checked_whole_and_named_by_row(tmp_path):
    (tmp_path / "e.csv").write_text("row,status,$.[,$.ok\n0,201,,\n1,teapot,,\n", encoding="utf-8")
    with pytest.raises(bn.BatchValidationError) as caught:
        Expected.read(tmp_path / "e.csv")
    assert caught.value.pointers == ["e.csv, row 1, column status", "e.csv, column $.["]


def test_an_expected_file_that_is_not_text_is_named(tmp_path):
    (tmp_path / "e.csv").write_bytes(b"name,status\ncaf\xe9,201\n")
    with pytest.raises(bn.BatchValidationError, match="line 2"):
        Expected.read(tmp_path / "e.csv")
    with pytest.raises(bn.BatchValidationError, match="must be a DataFrame or the path"):
        Expected.of(42)  # type: ignore[arg-type]  # a value the annotation does not name, on purpose


def test_jsonpath_columns_query_the_body():
    actual = pd.DataFrame({"status": [200], "body": [{"items": [{"n": 1}, {"n": 2}], "owner": {"name": "Ada"}}]})
    stored = pd.DataFrame({"$.owner.name": ["Ada"], "$.items[*].n": ["[1, 2]"], "$.missing": [None]})
    assert _diffs(actual, stored) == []
    stored["$.owner.name"] = ["Grace"]
    assert _diffs(actual, stored) == [("0", "$.owner.name", "Grace", "Ada")]
