"""batchnb.read_csv: every cell reaches the API as the file says it."""

from __future__ import annotations

import codecs
import io
from decimal import Decimal

import pandas as pd
import pytest

import batchnb as bn
from batchnb import BatchValidationError, from_frame, read_csv
from batchnb.frames import SkippedRowsWarning


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
    # The library speaks Python; the command line says --encoding (tests/test_cli.py).
    assert "read it with encoding='cp1252'" in str(err.value) and "--encoding" not in str(err.value)
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


# ---------------------------------------------------------------- Windows and Excel exports, as they write them


#: what Windows' Excel writes for "CSV (separator: semicolon)": Windows-1252 ("ANSI"), ';', CRLF.
CP1252 = "name;note;price\r\nBœuf;l’été;5 €\r\nZoë;ok;3\r\n".encode("cp1252")


def test_a_cp1252_export_read_as_latin1_is_refused_with_byte_line_and_column(tmp_path):
    path = tmp_path / "ansi.csv"
    path.write_bytes(CP1252)
    with pytest.raises(BatchValidationError) as err:
        read_csv(path)
    # The way out the message gives is the encoding Windows wrote, not one that reads the bytes wrongly.
    assert "byte 0x9c is not utf-8 text" in str(err.value) and "encoding='cp1252'" in str(err.value)
    assert "latin-1" not in str(err.value)
    with pytest.raises(BatchValidationError) as err:
        read_csv(path, encoding="latin-1")
    assert [str(p) for p in err.value.problems] == [
        "ansi.csv, line 2, column name: byte 0x9c is read as U+009C, a control character, not text: "
        "in Windows-1252 (what Windows and Excel write), 0x9c is 'œ'; read it with encoding='cp1252'",
        "ansi.csv, line 2, column note: byte 0x92 is read as U+0092, a control character, not text: "
        "in Windows-1252 (what Windows and Excel write), 0x92 is '’'; read it with encoding='cp1252'",
        "ansi.csv, line 2, column price: byte 0x80 is read as U+0080, a control character, not text: "
        "in Windows-1252 (what Windows and Excel write), 0x80 is '€'; read it with encoding='cp1252'",
    ]
    df = read_csv(path, encoding="cp1252")
    assert df.iloc[0].tolist() == ["Bœuf", "l’été", "5 €"]


def test_a_control_character_is_refused_whatever_the_encoding_and_wherever_the_line():
    # Once converted from cp1252 as if it were Latin-1, then saved as UTF-8: the control is valid UTF-8.
    raw = 'id;note\n1;"two\nlines"\n2;B\u009cuf\n'.encode("utf-8")
    with pytest.raises(BatchValidationError) as err:
        read_csv(io.BytesIO(raw))
    assert [str(p) for p in err.value.problems] == [
        "<input>, line 4, column note: bytes 0xc2 0x9c are read as U+009C, a control character, not text: the file "
        "was probably converted from Windows-1252 as if it were Latin-1 (in Windows-1252, 0x9c is 'œ'); fix it at its source"
    ]


def test_utf16_as_excel_saves_unicode_text_is_read():
    # Excel's "Unicode Text": UTF-16 little-endian with its byte order mark, tabs, CRLF.
    text = "name\tcity\tzip\r\nBœuf\tŌsaka\t01234\r\nZoë\t€\t75001\r\n"
    for raw in (codecs.BOM_UTF16_LE + text.encode("utf-16-le"), codecs.BOM_UTF16_BE + text.encode("utf-16-be")):
        df = read_csv(io.BytesIO(raw))
        assert df.values.tolist() == [["Bœuf", "Ōsaka", "01234"], ["Zoë", "€", "75001"]]
        assert df.attrs["batchnb.csv"].sep == "\t"
    with pytest.raises(BatchValidationError) as err:
        read_csv(io.BytesIO(codecs.BOM_UTF16_LE + text.encode("utf-16-le")), encoding="cp1252")
    assert str(err.value.problems[0]) == (
        "<input>, line 1: starts with a UTF-16 byte order mark (bytes FF FE), so it is UTF-16 text, not cp1252: "
        "leave encoding out to read it"
    )
    # Without its byte order mark, UTF-16 reads as text full of NULs: said once, with the way out.
    with pytest.raises(BatchValidationError) as err:
        read_csv(io.BytesIO("name\tcity\r\nBoeuf\tParis\r\n".encode("utf-16-le")))
    assert [str(p) for p in err.value.problems] == [
        "<input>, line 1, character 2: byte 0x00 is read as U+0000, NUL, not text: "
        "the file may be UTF-16 without its byte order mark (read it with encoding='utf-16-le')"
    ]
    with pytest.raises(BatchValidationError) as err:
        read_csv(io.BytesIO(text.encode("utf-16-le")))
    assert str(err.value.problems[0]).endswith(
        "it holds NUL bytes, so it may be UTF-16 without its byte order mark: read it with encoding='utf-16-le'"
    )
    assert read_csv(io.BytesIO(text.encode("utf-16-le")), encoding="utf-16-le")["zip"].tolist() == ["01234", "75001"]


def test_rows_whose_every_cell_is_empty_are_skipped_with_a_notice_naming_their_lines():
    raw = b"\xef\xbb\xbfmethod;path;name\r\nPOST;/a;x\r\n;;\r\n;;\r\nPOST;/b;\r\n;;\r\n".decode("utf-8-sig")
    with pytest.warns(SkippedRowsWarning) as seen:
        df = csv(raw)
    assert [str(w.message) for w in seen] == ["<input>: skipped 3 empty rows (every cell empty): lines 3, 4, 6"]
    assert df[["method", "path"]].values.tolist() == [["POST", "/a"], ["POST", "/b"]]
    assert df.attrs["batchnb.csv"].skipped == (3, 4, 6)
    # The rows after a skipped one still name their own line.
    with pytest.raises(BatchValidationError) as err:
        from_frame(df, path="/x/{name}")
    assert err.value.pointers == ["row 1 (line 5 of <input>), column name"]
    # A row with one non-empty cell is a row.
    with pytest.warns(SkippedRowsWarning):
        assert len(csv("a;b\n;\n;x\n")) == 1


def test_excels_sep_line_sets_the_separator_and_the_header_is_the_next_line():
    raw = "\ufeffsep=;\r\nname;price\r\nDupont, fils;12,5\r\n;\r\nZoë;3\r\n".encode("utf-8")
    with pytest.warns(SkippedRowsWarning, match="line 4"):
        df = read_csv(io.BytesIO(raw))
    assert df.columns.tolist() == ["name", "price"]
    assert df.values.tolist() == [["Dupont, fils", "12,5"], ["Zoë", "3"]]
    source = df.attrs["batchnb.csv"]
    assert (source.sep, source.encoding, source.lines) == (";", "utf-8-sig", (3, 5))
    with pytest.raises(BatchValidationError) as err:
        read_csv(io.BytesIO(b"sep=,\nname,price\nx,1,2\n"))
    assert str(err.value.problems[0]) == "<input>, line 3: has 3 cells; the header has 2 (separator ',')"
