"""Responses back to rows (batchnb.results): to_frame and expand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batchnb.frames import from_frame
from batchnb.model import Response
from batchnb.results import expand, to_frame

# ---------------------------------------------------------------- to_frame


def _responses() -> list[Response]:
    child = Response("POST", "/svc", 201, name="svc", duration=1.0, body={"id": 3}, row="b", batch=0, attempts=1)
    unnamed_parent = Response("GET", "/p", 200, duration=0.5, body={}, row="d", batch=1, attempts=1)
    unnamed_parent.responses = [
        Response("GET", "/p/kid", 424, row="e", batch=1, attempts=1, body={"error": {"message": "reference failed"}})
    ]
    return [
        Response(
            "POST", "/co", 201, name="co", duration=2.5, body={"id": 1}, row="a", batch=0, attempts=2, responses=[child]
        ),
        Response("GET", "/missing", 404, duration=3.0, body="not here", row="c", batch=0, attempts=1),
        unnamed_parent,
        Response("GET", "/never", None, error="connection reset", row="f"),
    ]


def test_to_frame_columns_dtypes_and_index():
    out = to_frame(_responses())
    assert list(out.columns) == [
        "name",
        "method",
        "path",
        "status",
        "ok",
        "duration",
        "body",
        "error",
        "batch",
        "attempts",
        "replayed",
        "parent",
    ]
    assert list(out.index) == ["a", "b", "c", "d", "e", "f"]
    assert str(out["status"].dtype) == "Int64"
    assert out["ok"].dtype == bool
    assert out["duration"].dtype == np.float64
    assert out["body"].dtype == object
    assert str(out["batch"].dtype) == "Int64" and str(out["attempts"].dtype) == "Int64"
    assert out["ok"].tolist() == [True, True, False, True, False, False]
    assert out["status"].isna().tolist() == [False] * 5 + [True]
    assert out.loc["a", "attempts"] == 2 and pd.isna(out.loc["f", "batch"])
    assert np.isnan(out.loc["e", "duration"])
    assert out.loc["a", "body"] == {"id": 1}


def test_to_frame_nested_rows_and_parent_column():
    out = to_frame(_responses())
    # The child of a named parent points at its name; of an unnamed one, at its row label.
    assert [None if pd.isna(v) else v for v in out["parent"]] == [None, "co", None, None, "d", None]
    # Row labels that are not text stay as they are.
    rs = [Response("GET", "/p", 200, row=7, responses=[Response("GET", "/k", 200, row=8)])]
    assert to_frame(rs)["parent"].tolist()[1] == 7
    assert out.loc["b", "path"] == "/svc"


def test_to_frame_error_text():
    out = to_frame(_responses())
    errors = out["error"].tolist()
    assert pd.isna(errors[0]) and pd.isna(errors[1]) and pd.isna(errors[3])
    assert errors[2] == "HTTP 404"
    assert errors[4] == "reference failed"
    assert errors[5] == "connection reset"


def test_to_frame_joins_back_onto_the_input_frame():
    df = pd.DataFrame({"method": "GET", "path": ["/a", "/b"]}, index=[5, 9])
    ops = from_frame(df)
    responses = [Response(op.method, op.path, 200, body={"n": i}, row=op.row) for i, op in enumerate(ops)]
    joined = df.join(to_frame(responses)[["status", "body"]])
    assert joined.loc[9, "body"] == {"n": 1}


def test_to_frame_index_argument_and_default():
    rs = [Response("GET", "/a", 200), Response("GET", "/b", 500)]
    assert isinstance(to_frame(rs).index, pd.RangeIndex)
    assert list(to_frame(rs, index=["x", "y"]).index) == ["x", "y"]
    with pytest.raises(ValueError):
        to_frame(rs, index=["x"])
    assert len(to_frame([])) == 0


# ---------------------------------------------------------------- expand


def test_expand_flattens_dicts_in_place():
    res = pd.DataFrame(
        {
            "status": [201, 404, 201],
            "body": [{"id": 1, "address": {"city": "Oslo"}, "tags": ["a"]}, "not found", {"id": 2}],
            "ok": [True, False, True],
        },
        index=["a", "b", "c"],
    )
    out = expand(res)
    assert list(out.columns) == ["status", "body.id", "body.address.city", "body.tags", "ok"]
    assert list(out.index) == ["a", "b", "c"]
    assert str(out["body.id"].dtype) == "Int64"
    assert out["body.id"].tolist()[0] == 1 and pd.isna(out.loc["b", "body.id"])
    assert out.loc["a", "body.address.city"] == "Oslo" and pd.isna(out.loc["c", "body.address.city"])
    assert out.loc["a", "body.tags"] == ["a"]
    assert list(expand(res, prefix="").columns) == ["status", "id", "address.city", "tags", "ok"]


def test_expand_after_to_frame():
    out = expand(to_frame(_responses()))
    assert "body.id" in out.columns and "body" not in out.columns
    assert out.loc["e", "body.error.message"] == "reference failed"


# ---------------------------------------------------------------- with and without pyarrow

_SUBMIT = """
import sys
if sys.argv[1] == "without":
    sys.modules["pyarrow"] = None  # as on a machine without it: pandas keeps text in Python objects
import pandas as pd
import batchnb as bn

sites = pd.DataFrame({"site": ["lyon", "nantes", "brest"], "name": ["Lyon", "Nantes", ""]})
with bn.LocalServer() as server:
    for rows in (sites, sites[:2]):  # one row refused, then every row ok (no error at all)
        result = server.client.submit(
            rows, method="POST", path="/api/2.1/scheduling/companies", name="co-{site}", body=["name"], progress=False
        )
        print(result[["name", "method", "status", "error"]].to_string())
print(pd.api.types.is_string_dtype(result["error"]), sys.modules.get("pyarrow") is not None)
"""


@pytest.mark.slow
def test_text_columns_mark_missing_values_the_same_with_or_without_pyarrow():
    import subprocess
    import sys

    outputs = {}
    for how in ("with", "without"):
        done = subprocess.run(
            [sys.executable, "-c", _SUBMIT, how], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        outputs[how] = done.stdout.splitlines()
    # A stored notebook output made on one machine passes on the other.
    assert outputs["with"][:-1] == outputs["without"][:-1]
    assert outputs["with"][-1] == "True True"
    assert outputs["without"][-1] == "True False"
    assert outputs["with"][-2].endswith("NaN"), outputs["with"]
