"""batchnb.read_csv: every cell reaches the API as the file says it."""

from __future__ import annotations

import io
from decimal import Decimal

import pandas as pd
import pytest

import batchnb as bn
from batchnb import BatchValidationError, from_frame, read_csv


def csv(text: str, **kw):
    return read_csv(io.BytesIO(text.encode("utf-8")), **kw)


def bodies(df: pd.DataFrame) -> list[dict]:
    return [op.body for op in from_frame(df, method="POST", path="/x", body=list(df.columns))]


# ---------------------------------------------------------------- the typing rule


def test_leading_zeros_stay_text():
    df = csv("zip,n\n01234,1\n75001,2\n")
    assert bodies(df)[0] == {"zip": "01234", "n": 1}


def test_an_integer_column_with_an_empty_cell_stays_integers():
    df = csv("age\n30\n\n41\n".replace("\n\n", '\n""\n'))
    assert bodies(df) == [{"age": 30}, {}, {"age": 41}]
    assert all(type(b["age"]) is int for b in bodies(df) if b)


def test_big_integers_with_gaps_are_exact():
    df = csv('id\n9007199254740993\n""\n123456789012345678901234567890\n')
    sent = bodies(df)
    assert sent == [{"id": 9007199254740993}, {}, {"id": 123456789012345678901234567890}]
    wire = bn.Batch(from_frame(df, method="POST", path="/x", body=["id"])).to_json()
    assert b"9007199254740993" in wire and b"123456789012345678901234567890" in wire


def test_path_templates_get_the_integer_as_written():
    df = csv('company,n\n1234,1\n"",2\n5678,3\n')
    with pytest.raises(BatchValidationError) as err:
        from_frame(df, method="GET", path="/x/{company}")
    assert err.value.pointers == ["row 1 (line 3 of <input>), column company"]
    ops = from_frame(df.drop(index=1), method="GET", path="/x/{company}")
    assert [op.path for op in ops] == ["/x/1234", "/x/5678"]


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (["1", "2"], [1, 2]),
        (["+1", "2"], ["+1", "2"]),  # not canonical: text
        (["1.0", "2"], [1.0, 2.0]),  # decimals
        (["007", "8"], ["007", "8"]),
        (["12.50", "3.25"], [12.5, 3.25]),
        (["1e5", "2"], ["1e5", "2"]),  # not a plain decimal: text
        (["true", "FALSE"], [True, False]),
        (["yes", "no"], ["yes", "no"]),
        (["-0", "1"], ["-0", "1"]),
        (["Zoë", "Ōsaka"], ["Zoë", "Ōsaka"]),
    ],
)
def test_each_column_follows_the_rule(cells, expected):
    df = csv("v\n" + "\n".join(cells) + "\n")
    assert [b["v"] for b in bodies(df)] == expected


def test_decimals_that_a_float_cannot_hold_are_sent_digit_for_digit():
    df = csv("price\n3.141592653589793238\n0.1\n")
    assert df["price"].tolist() == [Decimal("3.141592653589793238"), Decimal("0.1")]
    wire = bn.Batch(from_frame(df, method="POST", path="/x", body=["price"])).to_json()
    assert b'"price":3.141592653589793238' in wire and b'"price":0.1' in wire


def test_strings_and_dtype_set_columns_by_hand():
    df = csv("zip,qty,flag\n75001,3,true\n", strings=True)
    assert bodies(df) == [{"zip": "75001", "qty": "3", "flag": "true"}]
    df = csv("zip,qty\n75001,3\n", dtype={"zip": "str"})
    assert bodies(df) == [{"zip": "75001", "qty": 3}]
    with pytest.raises(BatchValidationError) as err:
        csv("zip,qty\n75001,three\n", dtype={"qty": "int", "nope": "str", "zip": "date"})
    assert [str(p) for p in err.value.problems] == [
        "dtype['nope']: <input> has no column 'nope' (it has zip, qty)",
        "dtype['zip']: unknown type 'date'; use one of int, decimal, bool, str",
    ]
    with pytest.raises(BatchValidationError) as err:
        csv("zip,qty\n75001,three\n", dtype={"qty": "int"})
    assert (
        str(err.value.problems[0])
        == "line 2, column qty: 'three' is not an integer (the column is read as int: dtype={'qty': 'int'})"
    )


# ---------------------------------------------------------------- the shapes analysts meet


def test_separators_are_found_from_the_header():
    assert csv("a;b\n1;x,y\n").iloc[0].tolist() == [1, "x,y"]
    assert csv("a\tb\n1\tz\n").iloc[0].tolist() == [1, "z"]
    assert csv('"a;1",b\n1,2\n').columns.tolist() == ["a;1", "b"]
    assert csv("a;b\n1;2\n", sep=",").columns.tolist() == ["a;b"]


def test_an_excel_export_with_bom_crlf_semicolons_and_quotes():
    raw = '\ufeffname;city;note\r\n"Dupont; fils";Paris;"ligne 1\r\nligne 2"\r\nÉlise;Zoë;"dit ""bonjour"""\r\n'.encode(
        "utf-8"
    )
    df = read_csv(io.BytesIO(raw))
    assert df.columns.tolist() == ["name", "city", "note"]
    assert df.iloc[0].tolist() == ["Dupont; fils", "Paris", "ligne 1\r\nligne 2"]
    assert df.iloc[1].tolist() == ["Élise", "Zoë", 'dit "bonjour"']
    # A problem in the third row names the file's line 4: the second row took two lines.
    with pytest.raises(BatchValidationError) as err:
        from_frame(df, method="GET", path="/x/{city}/..", name=False)
    assert err.value.pointers == ["path"]
    df["verb"] = ["GET", "FETCH"]
    with pytest.raises(BatchValidationError) as err:
        from_frame(df, method="verb", path="/x", name=False)
    assert err.value.pointers == ["row 1 (line 4 of <input>), column verb"]


def test_latin1_is_refused_naming_the_byte_and_line_then_read_with_the_flag(tmp_path):
    path = tmp_path / "clients.csv"
    path.write_bytes("name\nAndré\nZoë\n".encode("latin-1"))
    with pytest.raises(BatchValidationError) as err:
        read_csv(path)
    assert str(err.value.problems[0]).startswith("clients.csv, line 2: byte 0xe9 is not utf-8 text")
    assert "encoding='latin-1'" in str(err.value) and "--encoding latin-1" in str(err.value)
    assert read_csv(path, encoding="latin-1")["name"].tolist() == ["André", "Zoë"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "<input>: the file is empty: a CSV of operations needs a header line and a line per operation"),
        ("\n\n", "<input>: the file is empty: a CSV of operations needs a header line and a line per operation"),
        (
            'a,b\n1,2\n3,"never closed\n4,5\n',
            "<input>, line 3: a quoted cell opened here is never closed (a lone '\"')",
        ),
        ("a,b\n1,2,3\n4\n", "<input>, line 2: has 3 cells; the header has 2 (separator ',')"),
        ("a,,a\n1,2,3\n", "<input>, line 1: column 2 has no name in the header"),
    ],
)
def test_broken_files_are_refused_with_their_line(text, message):
    with pytest.raises(BatchValidationError) as err:
        csv(text)
    assert str(err.value.problems[0]) == message


def test_a_missing_file_is_a_problem_not_a_traceback(tmp_path):
    with pytest.raises(BatchValidationError) as err:
        read_csv(tmp_path / "nope.csv")
    assert str(err.value.problems[0]).endswith("nope.csv: no such file")


# ---------------------------------------------------------------- lines in pointers


def test_lines_are_named_only_while_the_frame_keeps_its_rows():
    df = csv("method,path\nGET,/x\n\nFETCH,/y\n")
    with pytest.raises(BatchValidationError) as err:
        from_frame(df)
    assert err.value.pointers == ["row 1 (line 4 of <input>), column method"]
    # A filtered frame is another frame: its rows are named, not the file's lines.
    with pytest.raises(BatchValidationError) as err:
        from_frame(df[df["method"] == "FETCH"])
    assert err.value.pointers == ["row 1, column method"]


def test_a_missing_column_names_the_nearest_one():
    df = csv("name,path\nx,/y\n")
    with pytest.raises(BatchValidationError) as err:
        from_frame(df, method="POST", body=["nam"])
    assert (
        str(err.value.problems[0])
        == "body: the frame has no column 'nam'; did you mean 'name'? (it has 'name', 'path')"
    )
