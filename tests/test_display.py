"""How batches, plans and results look: HTML tables, the report, the summary figure, the accessor."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from batchnb import Batch, Operation
from batchnb._display import (
    GREEN,
    GREY,
    ORANGE,
    RED,
    Report,
    batch_html,
    durations,
    plan_html,
    report_text,
    result_html,
    status_colour,
    status_counts,
    summary,
)
from batchnb.demo import examples
from batchnb.plan import make_plan


def result_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": ["a", "b", "c", "d"],
            "method": ["POST", "POST", "GET", "GET"],
            "path": ["/x", "/y?token=s3cret", "/z", "/w"],
            "status": pd.array([201, 400, 201, None], dtype="Int64"),
            "ok": [True, False, True, False],
            "duration": [1.0, 2.0, 3.0, None],
            "body": [{"id": 1}, {"error": {"message": "bad <email>"}}, None, None],
            "error": [None, "bad <email>", None, "no status: the operation did not run"],
            "batch": pd.array([0, 0, 1, 1], dtype="Int64"),
        },
        index=["r1", "r2", "r3", "r4"],
    )


@pytest.mark.parametrize(
    ("status", "colour"),
    [
        (200, GREEN),
        (204, GREEN),
        (302, GREY),
        (400, ORANGE),
        (424, ORANGE),
        (500, RED),
        (503, RED),
        (None, RED),
        (pd.NA, RED),
    ],
)
def test_status_colours(status, colour):
    assert status_colour(status) == colour


def test_batch_html_lists_operations_nested_ones_indented():
    out = batch_html(examples.nested())
    for name in ("nest-company", "nest-service", "nest-staff", "bad-company", "never"):
        assert name in out
    assert "5 operations, 3 nested" in out
    assert out.count("↳") == 3


def test_batch_html_masks_credentials_and_escapes_html():
    op = Operation(
        "GET",
        "/api/x?apiKey=demo&token=s3cret",
        body={"note": "<script>alert(1)</script>"},
        headers={"Authorization": "Bearer s3cret", "X-Trace": "abc"},
    )
    out = batch_html(Batch([op]))
    assert "s3cret" not in out
    assert "token=***" in out and "***" in out
    assert "X-Trace" in out and "abc" in out
    assert "<script>" not in out and "&lt;script&gt;" in out


def test_ipython_draws_batches_and_plans_as_tables_the_model_knows_nothing_of():
    from IPython.core.interactiveshell import InteractiveShell

    import batchnb

    shell = InteractiveShell.instance()
    batchnb._register_display()  # what `import batchnb` does inside a running IPython
    batch = examples.chained()
    plan = make_plan(batch.requests)
    assert shell.display_formatter.format(batch)[0]["text/html"] == batch_html(batch)
    assert shell.display_formatter.format(plan)[0]["text/html"] == plan_html(plan)
    assert not hasattr(batch, "_repr_html_") and not hasattr(plan, "_repr_html_")


def test_plan_html_counts_calls_and_client_refs():
    ops = [Operation("POST", "/c", {"n": i}, name=f"c{i}") for i in range(5)]
    ops.append(Operation("GET", "/c/${result=c0:$.id}"))
    plan = make_plan(ops, max_requests=2)
    out = plan_html(plan)
    assert f"in {plan.calls} HTTP calls" in out
    assert out.count("<tr>") == plan.calls + 1


def test_status_counts_and_durations():
    df = result_frame()
    counts = status_counts(df)
    assert counts.loc[201] == 2 and counts.loc[400] == 1
    assert counts.isna().sum() == 0 and counts.sum() == 4
    d = durations(df)
    assert d["total"] == 6.0 and d["p50"] == 2.0
    assert d["p95"] == pytest.approx(2.9)
    assert durations(pd.DataFrame({"status": [201]})) == {"total": None, "p50": None, "p95": None}


def test_result_html_puts_failed_rows_first():
    out = result_html(result_frame())
    # Failed rows r2 and r4 come before the ok rows r1 and r3, each group in order.
    positions = [out.index(f"<td>{label}</td>") for label in ("r2", "r4", "r1", "r3")]
    assert positions == sorted(positions)
    assert "4 operations</b>, 2 not ok" in out


def test_result_html_colours_statuses_and_shows_durations():
    out = result_html(result_frame())
    assert f'batchnb-status-201" style="background:{GREEN}' in out
    assert f'batchnb-status-400" style="background:{ORANGE}' in out
    assert f'batchnb-status-none" style="background:{RED}' in out
    assert "duration total 6.00 ms, p50 2.00 ms, p95 2.90 ms" in out
    assert "s3cret" not in out
    assert "&lt;email&gt;" in out and "<email>" not in out


def test_result_html_cuts_long_reports():
    df = pd.DataFrame({"status": [201] * 120, "ok": [True] * 120})
    out = result_html(df, max_rows=10)
    assert "… and 110 more rows" in out


def test_report_text_is_one_line():
    text = report_text(result_frame())
    assert text == "4 operations, 2 not ok (201: 2, 400: 1, none: 1); duration total 6.00 ms, p50 2.00 ms, p95 2.90 ms"


def test_summary_draws_status_bars_and_a_duration_histogram():
    fig = summary(result_frame())
    assert isinstance(fig, Figure)
    bars_ax, hist_ax = fig.axes
    bars = bars_ax.patches
    assert [b.get_height() for b in bars] == [2, 1, 1]
    assert [to_hex(b.get_facecolor()) for b in bars] == [GREEN, ORANGE, RED]
    assert [t.get_text() for t in bars_ax.get_xticklabels()] == ["201", "400", "none"]
    assert sum(p.get_height() for p in hist_ax.patches) == 3  # three rows have a duration


def test_summary_without_durations_says_so():
    fig = summary(pd.DataFrame({"status": [201]}))
    assert any(t.get_text() == "no durations" for t in fig.axes[1].texts)


def test_accessor_gives_report_summary_and_failed_rows():
    df = result_frame()
    report = df.batchnb.report()
    assert isinstance(report, Report)
    assert report._repr_html_() == result_html(df) == df.batchnb._repr_html_()
    assert repr(df.batchnb) == report_text(df)
    assert df.batchnb.failed.index.tolist() == ["r2", "r4"]
    assert isinstance(df.batchnb.summary(), Figure)
    # The accessor has its own name: the result's `batch` column stays an attribute too.
    assert df.batch.tolist() == [0, 0, 1, 1]


def test_accessor_without_an_ok_column_uses_statuses():
    df = pd.DataFrame({"status": [201, 500]})
    assert df.batchnb.failed.index.tolist() == [1]


def test_a_stable_report_is_the_same_on_every_run_of_an_api_with_its_own_ids():
    import json
    import secrets

    from batchnb import Client
    from tests.support.faults import RecordingUpstream, Reply

    def orders(req):
        sent = json.loads(req.body)
        if not sent.get("name"):
            return Reply(
                400, {"error": {"message": "refused", "details": [{"field": "name", "message": "is required"}]}}
            )
        order = f"ord_{secrets.token_hex(8)}"
        return Reply(201, {"id": order, "name": sent["name"], "self": f"/orders/{order}"})

    rows = pd.DataFrame({"name": ["tea", "", "cake"]})
    with RecordingUpstream(orders) as api:
        client = Client(api.url, mode="direct")
        first, second = (
            client.submit(rows, method="POST", path="/orders", body=["name"], progress=False) for _ in "ab"
        )
    assert first.batchnb.report().html != second.batchnb.report().html  # the ids (and durations) differ
    stable = [r.batchnb.report(stable=True) for r in (first, second)]
    assert stable[0].html == stable[1].html and repr(stable[0]) == repr(stable[1])
    assert "ord_" not in stable[0].html and "&lt;id1&gt;" in stable[0].html
    assert "duration" not in stable[0].html and repr(stable[0]) == "3 operations, 1 not ok (201: 2, 400: 1)"
    # What the guide (docs/regression-tests.md) says to show gives the same: a stable view's report.
    assert first.batchnb.stable().batchnb.report(stable=True).html == stable[0].html
