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
