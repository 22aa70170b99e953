"""How batches, plans and results look in a notebook: HTML tables, a summary figure.

Nothing here changes data; every function reads a :class:`~batchnb.Batch`, a
:class:`~batchnb.Plan` or a result DataFrame and returns HTML text or a
matplotlib Figure. Credentials never show: headers go through
``mask_headers`` and paths through ``mask_path``.

Importing this module registers the ``.batchnb`` DataFrame accessor:

    >>> print(result.batchnb.report())     # in a notebook, an HTML report
    3 operations, 0 not ok (201: 3); duration total ...
    >>> result.batchnb.summary()
    <Figure size 900x300 with 2 Axes>
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from ._extras import require
from ._secrets import mask_headers, mask_path
from ._text import operations, plural

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .model import Batch, Operation
    from .plan import Plan

__all__ = ["batch_html", "plan_html", "result_html", "status_colour", "summary"]

GREEN, ORANGE, RED, GREY = "#2e7d32", "#ef6c00", "#c62828", "#757575"

#: the longest body text shown in a table cell before it is cut.
_CELL_CHARS = 120
#: how many rows a result report shows; the rest is counted, not drawn.
_REPORT_ROWS = 50

_STYLE = (
    "<style>"
    ".batchnb-table{border-collapse:collapse;font-size:12px;margin:4px 0}"
    ".batchnb-table th,.batchnb-table td{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}"
    ".batchnb-table th{background:#f5f5f5}"
    ".batchnb-table code{white-space:pre-wrap;word-break:break-all}"
    ".batchnb-badge{display:inline-block;color:#fff;border-radius:3px;padding:0 6px;margin-right:4px}"
    "</style>"
)


# ---------------------------------------------------------------- small pieces


def status_colour(status: Any) -> str:
    """The colour of a status: 2xx green, 3xx grey, 4xx orange, 5xx or none red.

    >>> status_colour(201), status_colour(404), status_colour(None)
    ('#2e7d32', '#ef6c00', '#c62828')
    """
    code = _as_int(status)
    if code is None or code >= 500:
        return RED
    if code >= 400:
        return ORANGE
    if 200 <= code < 300:
        return GREEN
    return GREY


def _as_int(value: Any) -> int | None:
    if value is None or value is pd.NA:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _badge(status: Any, text: str | None = None) -> str:
    code = _as_int(status)
    label = text if text is not None else ("none" if code is None else str(code))
    return (
        f'<span class="batchnb-badge batchnb-status-{code if code is not None else "none"}" '
        f'style="background:{status_colour(code)}">{html.escape(label)}</span>'
    )


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _short_json(value: Any, limit: int = _CELL_CHARS) -> str:
    """JSON text of a value, cut to ``limit`` characters (a table cell is no place for a whole body)."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]], css: str = "") -> str:
    """An HTML table from already escaped cells."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="batchnb-table {css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _ms(value: float | None) -> str:
    # One fixed format for every duration, so that outputs can be sanitised by one narrow rule.
    return "n/a" if value is None or pd.isna(value) else f"{value:.2f} ms"


# ---------------------------------------------------------------- batches and plans


def operation_rows(batch: Batch) -> list[list[str]]:
    """One row of escaped cells per operation, depth first, children indented."""
    rows = []
    for number, (pointer, op) in enumerate(batch.walk(), start=1):
        depth = pointer.count("requests[") - 1
        rows.append(_operation_cells(number, depth, op))
    return rows


def _operation_cells(number: int, depth: int, op: Operation) -> list[str]:
    indent = "&nbsp;&nbsp;&nbsp;" * depth + ("↳ " if depth else "")
    headers = mask_headers(op.headers) if isinstance(op.headers, dict) else op.headers
    return [
        str(number),
        indent + _esc(op.name or ""),
        f"<b>{_esc(op.method)}</b>",
        f"<code>{_esc(mask_path(op.path))}</code>",
        f"<code>{_esc(_short_json(headers))}</code>" if headers else "",
        f"<code>{_esc(_short_json(op.body))}</code>",
    ]


def batch_html(batch: Batch) -> str:
    """A batch as an HTML table of its operations (secrets masked), titled with how many, nested ones included.

    >>> from batchnb.demo import examples
    >>> "add-company" in batch_html(examples.chained())
    True
    >>> from batchnb import Batch, Operation
    >>> nested = Batch([Operation("POST", "/co", name="co", requests=[Operation("POST", "/co/sv")])])
    >>> batch_html(nested).split("</b>: ")[1].split("<")[0]
    '2 operations, 1 nested'
    """
    size = batch.size
    title = f"<b>Batch</b>: {operations(size, len(batch.requests))}"
    if not size:
        return _STYLE + f'<div class="batchnb-batch">{title}</div>'
    table = _table(["#", "name", "method", "path", "headers", "body"], operation_rows(batch), "batchnb-batch-table")
    return _STYLE + f'<div class="batchnb-batch">{title}{table}</div>'


def plan_html(plan: Plan) -> str:
    """A plan as HTML: how many calls, and one row per call.

    >>> from batchnb.plan import make_plan
    >>> from batchnb.demo import examples
    >>> "1 HTTP call" in plan_html(make_plan(examples.chained().requests))
    True
    """
    title = f"<b>Plan</b>: {_esc(plan.summary)}"
    rows = [
        [
            str(b.index),
            str(b.size),
            _esc(_rows_text(b.rows)),
            _esc(", ".join(map(str, sorted(b.depends_on)))),
            _esc(", ".join(f"{n} (earlier result)" if n in plan.known else n for n in sorted(b.client_refs))),
            "yes" if b.resendable else "no",
        ]
        for b in plan.batches
    ]
    table = _table(
        ["batch", "operations", "rows", "waits for", "client refs", "resendable"], rows, "batchnb-plan-table"
    )
    return _STYLE + f'<div class="batchnb-plan">{title}{table}</div>'


def _rows_text(rows: list[Any], limit: int = 6) -> str:
    if len(rows) <= limit:
        return ", ".join(map(str, rows))
    return f"{rows[0]} … {rows[-1]} ({len(rows)} rows)"


# ---------------------------------------------------------------- results


def _statuses(result: pd.DataFrame) -> pd.Series:
    if "status" not in result.columns:
        return pd.Series([pd.NA] * len(result), index=result.index, dtype="Int64")
    return pd.to_numeric(result["status"], errors="coerce").astype("Int64")


def _ok(result: pd.DataFrame) -> pd.Series:
    if "ok" in result.columns:
        return result["ok"].fillna(False).astype(bool)
    status = _statuses(result)
    return ((status >= 200) & (status < 300)).fillna(False).astype(bool)


def status_counts(result: pd.DataFrame) -> pd.Series:
    """How many rows per status, statuses in order, missing ones last as ``<NA>``.

    >>> status_counts(pd.DataFrame({"status": [201, 400, 201]})).tolist()
    [2, 1]
    """
    return _statuses(result).value_counts(dropna=False).sort_index(na_position="last")


def durations(result: pd.DataFrame) -> dict[str, float | None]:
    """Total, median and 95th percentile of the ``duration`` column (milliseconds).

    >>> durations(pd.DataFrame({"duration": [1.0, 3.0]}))["total"]
    4.0
    """
    if "duration" not in result.columns:
        return {"total": None, "p50": None, "p95": None}
    d = pd.to_numeric(result["duration"], errors="coerce").dropna()
    if d.empty:
        return {"total": None, "p50": None, "p95": None}
    return {"total": float(d.sum()), "p50": float(d.quantile(0.5)), "p95": float(d.quantile(0.95))}


def failed_first(result: pd.DataFrame) -> pd.DataFrame:
    """The rows that did not succeed, then the others, each group in its own order."""
    ok = _ok(result)
    return pd.concat([result[~ok], result[ok]])


def result_html(result: pd.DataFrame, *, max_rows: int = _REPORT_ROWS, timings: bool = True) -> str:
    """An HTML report of a result frame: counts by status, durations, failures by cause, failed rows first.

    >>> df = pd.DataFrame({"name": ["a", "b"], "status": [201, 400], "ok": [True, False]})
    >>> "batchnb-status-400" in result_html(df)
    True

    ``timings=False`` leaves the durations out (they change from run to run).
    """
    counts = status_counts(result)
    badges = " ".join(_badge(s, f"{'none' if _as_int(s) is None else s} × {n}") for s, n in counts.items())
    failed = int((~_ok(result)).sum())
    d = durations(result)
    timing = (
        f'<br><span class="batchnb-durations">duration total {_ms(d["total"])}, '
        f"p50 {_ms(d['p50'])}, p95 {_ms(d['p95'])}</span>"
        if timings
        else ""
    )
    head = (
        f'<div class="batchnb-report-head"><b>{len(result)} operation{"s" if len(result) != 1 else ""}</b>, '
        f"{failed} not ok &nbsp; {badges}{timing}</div>"
    )
    rows = failed_first(result)
    shown = rows.head(max_rows)
    table = _result_table(shown)
    more = f"<div>… and {len(rows) - len(shown)} more rows</div>" if len(rows) > len(shown) else ""
    return _STYLE + f'<div class="batchnb-report">{head}{_causes_html(result)}{table}{more}</div>'


def _causes_html(result: pd.DataFrame) -> str:
    """The failures grouped by cause, most rows first (nothing when every row is ok)."""
    from ._causes import failure_causes

    causes = failure_causes(result)
    if not causes:
        return ""
    cells = [[_badge(c.status), _esc(c.text), str(len(c.labels)), _esc(c.labels_text())] for c in causes]
    title = f"<b>failures by cause</b>: {plural(len(causes), 'cause')}"
    table = _table(["status", "cause", "rows", "which"], cells, "batchnb-causes-table")
    return f'<div class="batchnb-causes">{title}{table}</div>'


_RESULT_COLUMNS = ("name", "method", "path", "status", "error", "body")


def _result_table(rows: pd.DataFrame) -> str:
    columns = [c for c in _RESULT_COLUMNS if c in rows.columns]
    cells = []
    statuses = _statuses(rows)
    for (label, row), status in zip(rows.iterrows(), statuses):
        line = [_esc(label)]
        for c in columns:
            line.append(_result_cell(c, row[c], status))
        cells.append(line)
    return _table(["row", *columns], cells, "batchnb-result-table")


def _result_cell(column: str, value: Any, status: Any) -> str:
    if column == "status":
        return _badge(status)
    if column == "path":
        return f"<code>{_esc(mask_path(str(value)))}</code>" if isinstance(value, str) else ""
    if column == "body":
        return f"<code>{_esc(_short_json(value))}</code>"
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return ""
    return _esc(value)


def report_text(result: pd.DataFrame, *, timings: bool = True) -> str:
    """The plain-text twin of :func:`result_html` (what a terminal shows)."""
    counts = ", ".join(f"{'none' if _as_int(s) is None else s}: {n}" for s, n in status_counts(result).items())
    d = durations(result)
    failed = int((~_ok(result)).sum())
    timing = f"; duration total {_ms(d['total'])}, p50 {_ms(d['p50'])}, p95 {_ms(d['p95'])}" if timings else ""
    return f"{plural(len(result), 'operation')}, {failed} not ok ({counts or 'no rows'}){timing}"


class Report:
    """A result report that shows as HTML in a notebook and as one line of text elsewhere.

    >>> r = Report(pd.DataFrame({"status": [201]}))
    >>> str(r).startswith("1 operation,")
    True

    With ``stable=True`` it shows :func:`~batchnb._stable.stable`'s view of
    the result (ids as ``<id1>``, ``<id2>``, …) and no durations: the same
    on every identical run, whatever ids the API makes.
    """

    def __init__(
        self, result: pd.DataFrame, *, stable: bool = False, patterns: Iterable[str] = (), keys: str | None = None
    ) -> None:
        if stable:
            from ._stable import stable as stable_view

            result = stable_view(result, patterns=patterns, keys=keys)
        self.result = result
        self.stable = stable

    @property
    def html(self) -> str:
        return result_html(self.result, timings=not self.stable)

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return report_text(self.result, timings=not self.stable)


def summary(result: pd.DataFrame) -> Figure:
    """A figure of a result: operations per status (bars) and durations (histogram).

    >>> fig = summary(result)
    >>> [ax.get_title() for ax in fig.axes]
    ['operations by status', 'duration per operation']
    >>> fig.savefig(tmp / "summary.png")

    Also available as ``result.batchnb.summary()``.
    """
    plt = require("matplotlib.pyplot", "notebook", "summary()")

    fig: Figure  # pyplot comes through require(): name what it makes
    fig, (bars, hist) = plt.subplots(1, 2, figsize=(9, 3), layout="constrained")
    # The caller gets the figure; pyplot must not show it a second time at the end of the cell.
    plt.close(fig)
    _draw_statuses(bars, status_counts(result))
    _draw_durations(hist, result)
    return fig


def _draw_statuses(ax: Any, counts: pd.Series) -> None:
    labels = ["none" if _as_int(s) is None else str(s) for s in counts.index]
    colours = [status_colour(s) for s in counts.index]
    ax.bar(labels, counts.to_numpy(dtype=float), color=colours)
    ax.set_title("operations by status")
    ax.set_xlabel("status")
    ax.set_ylabel("operations")


def _draw_durations(ax: Any, result: pd.DataFrame) -> None:
    d = (
        pd.to_numeric(result["duration"], errors="coerce").dropna()
        if "duration" in result.columns
        else pd.Series([], dtype=float)
    )
    if d.empty:
        ax.text(0.5, 0.5, "no durations", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.hist(d.to_numpy(dtype=float), bins=min(30, max(5, len(d) // 5)), color=GREEN)
    ax.set_title("duration per operation")
    ax.set_xlabel("milliseconds")
    ax.set_ylabel("operations")


# ---------------------------------------------------------------- the .batchnb accessor


@pd.api.extensions.register_dataframe_accessor("batchnb")
class BatchAccessor:
    """``result.batchnb``: the summary of a result frame (what ``submit`` returned).

    >>> report = result.batchnb.report()     # HTML: counts by status, durations, failures by cause, failed rows
    >>> print(result.batchnb.report(stable=True))   # the same, ids as <id1>, … and no durations: for nbval
    3 operations, 0 not ok (201: 3)
    >>> result.batchnb.summary()    # a matplotlib Figure
    <Figure size 900x300 with 2 Axes>
    >>> len(result.batchnb.failed)  # the rows that did not succeed
    0
    >>> stable = result.batchnb.stable()  # without durations, ids as <id1>, <id2>, …: the same every run
    >>> [body["id"] for body in stable["body"]]
    ['<id1>', '<id2>', '<id3>']

    The accessor takes ``result.batchnb``; the column of that name stays ``result["batch"]``.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    def summary(self) -> Figure:
        """The status bar chart and the duration histogram, as a Figure."""
        return summary(self._frame)

    def report(self, *, stable: bool = False, patterns: Iterable[str] = (), keys: str | None = None) -> Report:
        """The HTML report: counts by status, durations, failures grouped by cause, then failed rows first.

        >>> result = pd.DataFrame({"path": ["/c"], "status": [201], "ok": [True], "duration": [0.4],
        ...                        "body": [{"id": "ord_8f3k29x0"}]})
        >>> result.batchnb.report(stable=True)
        1 operation, 0 not ok (201: 1)
        >>> "ord_8f3k29x0" in result.batchnb.report(stable=True).html
        False

        ``stable=True`` is the report of :meth:`stable`'s view: ids as
        ``<id1>``, ``<id2>``, … (``patterns`` and ``keys`` as there) and no
        durations, so that a regression notebook showing it passes nbval on
        every identical run, whatever ids your API makes.
        """
        return Report(self._frame, stable=stable, patterns=patterns, keys=keys)

    @property
    def failed(self) -> pd.DataFrame:
        """The rows whose status is not 2xx (or that never ran)."""
        return self._frame[~_ok(self._frame)]

    def stable(self, *, patterns: Iterable[str] = (), keys: str | None = None) -> pd.DataFrame:
        """The result without what changes between identical runs: a regression check when shown.

        >>> result = pd.DataFrame({"path": ["/c", "/c/co_4ba06eb22da7/staff"], "status": [201, 201],
        ...                        "duration": [0.4, 0.3], "body": [{"id": "co_4ba06eb22da7"}, {"companyId": "co_4ba06eb22da7"}]})
        >>> result.batchnb.stable()
                     path  status                    body
        0              /c     201         {'id': '<id1>'}
        1  /c/<id1>/staff     201  {'companyId': '<id1>'}

        ``duration`` is dropped; each id (a value under a key such as ``id``,
        ``companyId`` or ``company_id``, a UUID, a demo API id, or text that
        matches one of ``patterns``) becomes ``<id1>``, ``<id2>``, … in order
        of first appearance, the same placeholder wherever the id appears
        (bodies, paths, errors, other columns); creation and change times
        (``createdAt``, ``updated_at``) become ``<time>``. ``keys`` replaces
        the regular expression that says which keys hold ids.
        """
        from ._stable import stable

        return stable(self._frame, patterns=patterns, keys=keys)

    def _repr_html_(self) -> str:
        return result_html(self._frame)

    def __repr__(self) -> str:
        return report_text(self._frame)
