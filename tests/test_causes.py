"""Failures grouped by cause (batchnb._causes): the report's and the command line's first section."""

from __future__ import annotations

import uuid

import pandas as pd

from batchnb._causes import failure_causes, failure_text, reason
from batchnb.model import Response
from batchnb.results import to_frame


def _refused(status: int, field: str, message: str, row: int) -> Response:
    body = {"error": {"code": "x", "message": "refused", "details": [{"field": field, "message": message}]}}
    return Response("POST", "/companies", status, body=body, row=row)


def five_hundred_rows() -> pd.DataFrame:
    """500 rows, 50 failures of three causes whose messages differ only in ids, numbers and quoted values."""
    responses = []
    for i in range(500):
        if i % 20 == 3:  # 25 rows
            responses.append(_refused(400, "name", "must not be empty", i))
        elif i % 25 == 9:  # 20 rows
            responses.append(_refused(409, "name", f"'Acme {i}' is taken by company {uuid.uuid4()}", i))
        elif i % 100 == 11:  # 5 rows
            responses.append(
                Response("GET", f"/companies/{i}", 404, body={"error": {"message": f"company {i} not found"}}, row=i)
            )
        else:
            responses.append(Response("POST", "/companies", 201, body={"id": i}, row=i))
    return to_frame(responses)


def test_500_rows_with_50_failures_are_three_causes_most_rows_first():
    result = five_hundred_rows()
    assert (~result["ok"]).sum() == 50
    assert [str(c) for c in failure_causes(result)] == [
        "400 name: must not be empty — 25 rows: 3, 23, 43, 63, 83, 103, 123, 143, 163, 183, …",
        "409 name: '…' is taken by company <id> — 20 rows: 9, 34, 59, 84, 109, 134, 159, 184, 209, 234, …",
        "404 company <n> not found — 5 rows: 11, 111, 211, 311, 411",
    ]


def test_the_html_report_shows_the_causes_before_the_rows():
    html = five_hundred_rows().batchnb.report().html
    assert "<b>failures by cause</b>: 3 causes" in html
    causes = html.index("batchnb-causes-table")
    rows = html.index("batchnb-result-table")
    assert causes < rows
    section = html[causes:rows]
    for text in (
        "name: must not be empty",
        "name: &#x27;…&#x27; is taken by company &lt;id&gt;",
        "company &lt;n&gt; not found",
    ):
        assert text in section
    assert "<td>25</td><td>3, 23, 43, 63, 83, 103, 123, 143, 163, 183, …</td>" in section
    # Every row still listed after the causes, failed first (the report shows 50 at most).
    assert "<td>3</td>" in html[rows:]


def test_a_cause_said_the_same_way_by_every_row_is_shown_as_said():
    result = to_frame([_refused(409, "name", "'Acme' is taken", i) for i in range(3)])
    (cause,) = failure_causes(result)
    assert str(cause) == "409 name: 'Acme' is taken — 3 rows: 0, 1, 2"


def test_statuses_fields_and_names_with_digits_keep_causes_apart():
    result = to_frame(
        [
            _refused(400, "address2", "must not be empty", 0),
            _refused(400, "address", "must not be empty", 1),
            _refused(422, "address", "must not be empty", 2),
            _refused(400, "items[2].qty", "must be between 1 and 99", 3),
            _refused(400, "items[5].qty", "must be between 1 and 99", 4),
            Response("GET", "/x", None, error="connection reset", row=5),
        ]
    )
    assert [(c.title, c.labels) for c in failure_causes(result)] == [
        ("400 items[<n>].qty: must be between <n> and <n>", [3, 4]),
        ("400 address2: must not be empty", [0]),
        ("400 address: must not be empty", [1]),
        ("422 address: must not be empty", [2]),
        ("no status: connection reset", [5]),
    ]


def test_a_rows_status_is_said_once():
    assert reason(400, "400 address.zip: must be 5 digits") == "address.zip: must be 5 digits"
    assert failure_text(400, "400 address.zip: must be 5 digits") == "400 address.zip: must be 5 digits"
    assert failure_text(401, "HTTP 401: invalid_token") == "401 invalid_token"
    assert failure_text(404, "HTTP 404") == "404"
    assert failure_text(pd.NA, "no status: the operation did not run") == "no status: the operation did not run"
    assert failure_text(500, float("nan")) == "500"
