"""Composing a batch by hand in a notebook: the :class:`Composer` form.

    >>> composer = Composer(server.client)
    >>> composer                  # in a notebook, the last line of a cell shows the form
    Composer(0 operations)

Fill in an operation (method, path, name, headers, body), press *Add*, repeat,
then *Submit*. Every field is checked as you type and a field with a problem
blocks *Add*; the reference helper writes ``${result=NAME:PATH}`` for you.
*Submit* runs in a background thread, so the kernel stays responsive, and the
results table appears when the batch is done. The same form is driven from
code by setting widget values and calling ``button.click()``; ``wait()``
returns the result frame once the submit has finished.

Every widget carries a CSS class ``batchnb-…`` (``batchnb-submit``,
``batchnb-results``, …) so that a page can be tested in a real browser.
"""

from __future__ import annotations

import asyncio
import functools
import html
import json
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import ipywidgets as w

from . import _rules
from ._composing import FIELD_NAMES, Check, Draft, Fields, Refusal, describe_error, reference_to
from ._composing import OPERATION_COLUMNS as OPERATION_COLUMNS  # read from here before the state moved
from ._composing import masked_wire as masked_wire
from ._composing import parse_body as parse_body
from ._display import batch_html, result_html
from ._exceptions import WaitTimeout
from ._text import plural
from .model import Batch

if TYPE_CHECKING:
    import pandas as pd

    from .client import AsyncClient, Client

__all__ = ["Composer"]

_NONE = ""  # the parent Dropdown's "no parent" value (a Dropdown cannot hold None reliably)
_INTO = (("path", "path"), ("body", "body"), ("header value", "header"))
_LABEL = {"description_width": "70px"}


# ---------------------------------------------------------------- widget helpers


_W = TypeVar("_W", bound="w.DOMWidget")


def _classed(widget: _W, *classes: str) -> _W:
    for css in classes:
        widget.add_class(css)
    return widget


def _row(*children: w.Widget) -> w.HBox:
    return _classed(w.HBox(list(children)), "batchnb-row")


def _error_html(messages: Iterable[str]) -> str:
    items = "".join(f"<li>{html.escape(m, quote=False)}</li>" for m in messages)
    return f'<ul style="color:#c62828;margin:2px 0">{items}</ul>' if items else ""


def _field_error_html(message: str | None) -> str:
    return f'<span style="color:#c62828">{html.escape(message, quote=False)}</span>' if message else ""


def _safely(method: Callable[..., Any]) -> Callable[..., Any]:
    """A button handler that puts any error in the form's error area instead of a traceback."""

    @functools.wraps(method)
    def handler(self: Composer, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - shown to the user, not raised into the kernel log
            self._show_error(exc)
            return None

    return handler


# ---------------------------------------------------------------- header rows


class _HeaderRow:
    """One key/value header row of the form, with its own remove button and error label."""

    def __init__(
        self, key: str, value: str, on_change: Callable[..., None], on_remove: Callable[[_HeaderRow], None]
    ) -> None:
        self.key = _classed(
            w.Text(value=key, placeholder="Header-Name", layout=w.Layout(width="200px")), "batchnb-header-key"
        )
        self.value = _classed(
            w.Text(value=value, placeholder="value", layout=w.Layout(width="360px")), "batchnb-header-value"
        )
        self.remove = _classed(
            w.Button(description="✕", tooltip="remove this header", layout=w.Layout(width="36px")),
            "batchnb-header-remove",
        )
        self.error = _classed(w.HTML(), "batchnb-error", "batchnb-error-header")
        self.key.observe(on_change, names="value")
        self.value.observe(on_change, names="value")
        self.remove.on_click(lambda _b: on_remove(self))
        self.box = _classed(w.HBox([self.key, self.value, self.remove, self.error]), "batchnb-header-row")


# ---------------------------------------------------------------- the form


class Composer:
    """A form to compose a batch operation by operation, preview it, and submit it.

    >>> composer = Composer(server.client)
    >>> composer.fill(method="POST", path="/api/2.1/scheduling/companies",
    ...               name="co", body={"name": "Riverside"})
    Composer(0 operations)
    >>> composer.add_button.click()        # what pressing *Add* does
    >>> composer.submit_button.click(); composer.wait(30).status.tolist()
    [201]

    ``client`` is a :class:`~batchnb.Client`, an :class:`~batchnb.AsyncClient`
    or anything with a ``.client`` (a :class:`~batchnb.LocalServer`); without one
    the form composes and previews but cannot submit. ``composer.batch`` is what
    was composed, ``composer.result`` the result frame of the last submit.
    """

    def __init__(self, client: Client | AsyncClient | Any = None) -> None:
        self.client = _client_of(client)
        # The operations composed so far and the rules the fields follow: plain Python, tested without a browser.
        self._draft = Draft()
        self._header_rows: list[_HeaderRow] = []
        self._thread: threading.Thread | None = None
        self._runs = 0
        #: the result frame of the last submit (None before one finished).
        self.result: pd.DataFrame | None = None
        #: the responses of the last submit, nested as the server sent them.
        self.responses: list[Any] | None = None
        #: the messages now shown in the error area.
        self.errors: list[str] = []
        self._build()
        self._refresh()

    # ------------------------------------------------------------ building the widgets

    def _build(self) -> None:
        self._build_fields()
        self._build_reference_helper()
        self._build_actions()
        self._build_outputs()
        self.widget = _classed(
            w.VBox(
                [
                    _classed(
                        w.HTML(
                            "<b>Batch composer</b> — one operation at a time; <i>Add</i> puts it in the batch below."
                        ),
                        "batchnb-title",
                    ),
                    _row(self.method, self.method_error),
                    _row(self.path, self.path_error),
                    _row(self.name, self.name_error),
                    _row(self.parent, self.parent_error),
                    _row(
                        _classed(w.Label("headers", layout=w.Layout(width="74px")), "batchnb-label"),
                        self.add_header_button,
                    ),
                    self.headers,
                    self.body,
                    self.body_error,
                    self.reference_box,
                    _row(
                        self.add_button, self.remove_button, self.clear_button, self.preview_button, self.submit_button
                    ),
                    self.error_area,
                    self.selected,
                    self.operations,
                    self.preview,
                    _row(self.progress, self.status),
                    self.results,
                ]
            ),
            "batchnb-composer",
        )

    def _build_fields(self) -> None:
        self.method = _classed(
            w.Combobox(
                value="GET",
                options=list(_rules.METHODS),
                ensure_option=False,
                description="method",
                style=_LABEL,
                layout=w.Layout(width="220px"),
            ),
            "batchnb-method",
        )
        self.path = _classed(
            w.Text(
                placeholder="/api/2.1/scheduling/companies",
                description="path",
                style=_LABEL,
                layout=w.Layout(width="620px"),
            ),
            "batchnb-path",
        )
        self.name = _classed(
            w.Text(
                placeholder="optional: a name other operations can reference",
                description="name",
                style=_LABEL,
                layout=w.Layout(width="420px"),
            ),
            "batchnb-name",
        )
        self.parent = _classed(
            w.Dropdown(
                options=[("(none)", _NONE)],
                value=_NONE,
                description="parent",
                style=_LABEL,
                layout=w.Layout(width="320px"),
            ),
            "batchnb-parent",
        )
        self.headers = _classed(w.VBox([]), "batchnb-headers")
        self.add_header_button = _classed(
            w.Button(description="+ header", layout=w.Layout(width="90px")), "batchnb-header-add"
        )
        self.body = _classed(
            w.Textarea(
                placeholder='{"name": "My Location"}',
                description="body",
                style=_LABEL,
                rows=6,
                layout=w.Layout(width="620px"),
            ),
            "batchnb-body",
        )
        self.method_error, self.path_error, self.name_error, self.parent_error, self.body_error = (
            _classed(w.HTML(), "batchnb-error", f"batchnb-error-{f}")
            for f in ("method", "path", "name", "parent", "body")
        )
        for field in (self.method, self.path, self.name, self.body, self.parent):
            field.observe(self._on_field_change, names="value")
        self.add_header_button.on_click(lambda _b: self._safe_add_header())

    def _build_reference_helper(self) -> None:
        self.ref_name = _classed(
            w.Dropdown(options=[], description="result of", style=_LABEL, layout=w.Layout(width="260px")),
            "batchnb-ref-name",
        )
        self.ref_path = _classed(
            w.Text(value="$.id", description="JSONPath", style=_LABEL, layout=w.Layout(width="220px")),
            "batchnb-ref-path",
        )
        self.ref_into = _classed(
            w.Dropdown(
                options=list(_INTO), value="path", description="into", style=_LABEL, layout=w.Layout(width="200px")
            ),
            "batchnb-ref-into",
        )
        self.insert_button = _classed(
            w.Button(
                description="Insert",
                tooltip='appends to the path or header value; in the body, fills the first "" (else appends)',
            ),
            "batchnb-ref-insert",
        )
        self.ref_error = _classed(w.HTML(), "batchnb-error", "batchnb-error-ref")
        self.insert_button.on_click(lambda _b: self.insert_reference())
        self.reference_box = _classed(
            w.VBox(
                [
                    _classed(w.HTML("<i>Reference an earlier result</i>"), "batchnb-label"),
                    _row(self.ref_name, self.ref_path, self.ref_into, self.insert_button),
                    self.ref_error,
                ]
            ),
            "batchnb-references",
        )

    def _build_actions(self) -> None:
        self.add_button = _classed(w.Button(description="Add", button_style="success", icon="plus"), "batchnb-add")
        self.remove_button = _classed(w.Button(description="Remove selected", icon="minus"), "batchnb-remove")
        self.clear_button = _classed(w.Button(description="Clear", icon="trash"), "batchnb-clear")
        self.preview_button = _classed(w.Button(description="Preview", icon="eye"), "batchnb-preview-button")
        self.submit_button = _classed(
            w.Button(description="Submit", button_style="primary", icon="paper-plane"), "batchnb-submit"
        )
        self.add_button.on_click(lambda _b: self.add())
        self.remove_button.on_click(lambda _b: self.remove())
        self.clear_button.on_click(lambda _b: self.clear())
        self.preview_button.on_click(lambda _b: self.show_preview())
        self.submit_button.on_click(lambda _b: self.submit())

    def _build_outputs(self) -> None:
        self.error_area = _classed(w.HTML(), "batchnb-errors")
        self.selected = _classed(
            w.Select(options=[], rows=4, description="selected", style=_LABEL, layout=w.Layout(width="620px")),
            "batchnb-selected",
        )
        self.operations = _classed(w.HTML(), "batchnb-operations")
        self.preview = _classed(w.HTML(), "batchnb-preview")
        self.progress = _classed(
            w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="200px")), "batchnb-progress"
        )
        self.status = _classed(w.HTML(), "batchnb-status")
        self.results = _classed(w.HTML(), "batchnb-results")

    # ------------------------------------------------------------ showing it

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        # The widget's own text fallback lists every child widget; this one stays short and stable.
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        return f"Composer({plural(len(self._draft), 'operation')})"

    # ------------------------------------------------------------ reading the form

    @property
    def names(self) -> list[str]:
        """The names of the composed operations, in order."""
        return self._draft.names

    def _fields(self) -> Fields:
        """The form's values as they are now."""
        return Fields(
            method=self.method.value,
            path=self.path.value,
            name=self.name.value,
            body=self.body.value,
            headers=tuple((row.key.value, row.value.value) for row in self._header_rows),
            parent=self.parent.value or "",
        )

    def _check_fields(self, *, final: bool) -> Check:
        """The draft's check of the form's fields, each header row's message shown next to it."""
        check = self._draft.check(self._fields(), final=final)
        for i, row in enumerate(self._header_rows, start=1):
            row.error.value = _field_error_html(check.header_rows.get(i))
        return check

    @property
    def field_errors(self) -> dict[str, str]:
        """The problems now shown next to the fields (empty required fields are not counted yet).

        >>> composer = Composer()
        >>> composer.body.value = '{"name": }'
        >>> composer.field_errors
        {'body': 'invalid JSON at line 1, column 10: Expecting value'}
        """
        return self._check_fields(final=False).problems

    def _show_field_errors(self, check: Check) -> None:
        for fld in FIELD_NAMES:
            getattr(self, f"{fld}_error").value = _field_error_html(check.problems.get(fld))

    def _on_field_change(self, _change: Any = None) -> None:
        check = self._check_fields(final=False)
        self._show_field_errors(check)
        self.add_button.disabled = bool(check)

    # ------------------------------------------------------------ changing the form

    def fill(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        name: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        parent: str | None = None,
    ) -> Composer:
        """Set the form's fields from code (a dict body is written as JSON); returns the composer.

        >>> composer = Composer()
        >>> print(composer.fill("POST", "/api/2.1/scheduling/companies", body={"name": "Riverside"}).body.value)
        {
          "name": "Riverside"
        }
        """
        if method is not None:
            self.method.value = method
        if path is not None:
            self.path.value = path
        if name is not None:
            self.name.value = name
        if body is not None:
            self.body.value = body if isinstance(body, str) else json.dumps(body, indent=2, ensure_ascii=False)
        if headers is not None:
            self._set_headers(headers)
        if parent is not None:
            self.parent.value = parent
        return self

    def add_header(self, key: str = "", value: str = "") -> Any:
        """Add a key/value row to the headers; returns the row (``row.key``, ``row.value``, ``row.remove``)."""
        row = _HeaderRow(key, value, self._on_field_change, self._remove_header)
        self._header_rows.append(row)
        self.headers.children = tuple(r.box for r in self._header_rows)
        self._on_field_change()
        return row

    @_safely
    def _safe_add_header(self) -> None:
        self.add_header()

    def _remove_header(self, row: _HeaderRow) -> None:
        self._header_rows = [r for r in self._header_rows if r is not row]
        self.headers.children = tuple(r.box for r in self._header_rows)
        self._on_field_change()

    def _set_headers(self, headers: dict[str, str]) -> None:
        self._header_rows = []
        self.headers.children = ()
        for key, value in headers.items():
            self.add_header(key, value)

    def _reset_form(self) -> None:
        self.path.value = ""
        self.name.value = ""
        self.body.value = ""
        self.parent.value = _NONE
        self._set_headers({})
        self._on_field_change()

    @_safely
    def insert_reference(self) -> str | None:
        """Insert ``${result=NAME:PATH}`` (from the helper's fields) into the field chosen in *into*.

        In the path and a header value the reference is appended; in the body it
        fills the first empty string ``""``, or is appended when there is none.
        """
        text, problem = reference_to(self.ref_name.value, self.ref_path.value)
        self.ref_error.value = _field_error_html(problem)
        if text is None:
            return None
        target = str(self.ref_into.value)
        filled = self._fields().with_reference(target, text)
        if target == "path":
            self.path.value = filled.path
        elif target == "body":
            self.body.value = filled.body
        else:
            row = self._header_rows[-1] if self._header_rows else self.add_header()
            row.value.value = filled.headers[-1][1]
        return text

    # ------------------------------------------------------------ the batch

    @property
    def batch(self) -> Batch:
        """The composed operations as a validated :class:`~batchnb.Batch` (children nested under parents).

        >>> composer = Composer()
        >>> for name in ("riverside", "hilltop"):
        ...     _ = composer.fill("POST", "/api/2.1/scheduling/companies", name=name, body={"name": name}).add()
        >>> composer.batch
        Batch(2 operations)
        """
        return self._draft.batch

    @_safely
    def add(self) -> bool:
        """Add the form's operation to the batch if every field is right; returns whether it was added."""
        self._show_field_errors(self._check_fields(final=True))
        refusal = self._draft.add(self._fields())
        if refusal is not None:
            self._refuse(refusal)
            return False
        self._set_errors([])
        self._reset_form()
        self._refresh()
        return True

    @_safely
    def remove(self, index: int | None = None) -> bool:
        """Remove the selected operation (or the one at ``index``) and the operations nested under it."""
        refusal = self._draft.remove(self.selected.value if index is None else index)
        if refusal is not None:
            self._refuse(refusal)
            return False
        self._set_errors([])
        self._refresh()
        return True

    @_safely
    def clear(self) -> None:
        """Empty the batch, the form, the preview and the results."""
        self._draft.clear()
        self.result = None
        self.responses = None
        self.preview.value = ""
        self.results.value = ""
        self.status.value = ""
        self.progress.value = 0
        self._set_errors([])
        self._reset_form()
        self._refresh()

    def _refresh(self) -> None:
        # Nothing to send, or a submit on its way: the button says so before a click does.
        self.submit_button.disabled = not self._draft or self.running
        draft = self._draft
        self.operations.value = batch_html(draft.unchecked_batch()) if draft else "<i>No operations yet.</i>"
        self.selected.options = [(label, i) for i, label in enumerate(draft.labels())]
        names = self.names
        keep = self.parent.value if self.parent.value in names else _NONE
        self.parent.options = [("(none)", _NONE), *[(n, n) for n in names]]
        self.parent.value = keep
        ref_keep = self.ref_name.value if self.ref_name.value in names else (names[-1] if names else None)
        self.ref_name.options = names
        self.ref_name.value = ref_keep
        if self.preview.value:
            self.show_preview()

    def wire_json(self) -> str:
        """The batch as the JSON sent on the wire, secrets masked, indented."""
        return self._draft.wire_json()

    @_safely
    def show_preview(self) -> str:
        """Show the wire JSON (secrets masked) under the form; returns it."""
        text = self.wire_json()
        self.preview.value = f"<b>Wire JSON</b> (secrets masked)<pre>{html.escape(text)}</pre>"
        return text

    def to_frame(self) -> pd.DataFrame:
        """The composed operations, one row each: name, method, path, body, headers, parent.

        >>> composer = Composer().fill("POST", "/api/2.1/scheduling/companies", body={"name": "Riverside"})
        >>> composer.add()
        True
        >>> composer.to_frame().columns.tolist()
        ['name', 'method', 'path', 'body', 'headers', 'parent']
        """
        return self._draft.to_frame()

    @classmethod
    def from_frame(cls, df: pd.DataFrame, client: Client | AsyncClient | Any = None, **columns: Any) -> Composer:
        """A composer that starts with the operations of ``df`` (the columns of :meth:`to_frame`).

        >>> import pandas as pd
        >>> ops = pd.DataFrame({"method": ["POST"], "path": ["/api/2.1/scheduling/companies"],
        ...                     "body": [{"name": "Riverside"}], "name": ["co"]})
        >>> Composer.from_frame(ops).batch
        Batch(1 operation)

        The rows are read by :func:`batchnb.from_frame` (``columns`` go to it:
        ``method=``, ``path=``, ``body=``, …): ``method`` and ``path`` are
        required, ``name``, ``body``, ``headers`` and ``parent`` (the name of an
        earlier row) optional. Raises BatchValidationError naming the row and
        column of every problem.
        """
        draft = Draft.from_frame(df, **columns)
        composer = cls(client)
        composer._draft = draft
        composer._refresh()
        return composer

    # ------------------------------------------------------------ submitting

    @property
    def running(self) -> bool:
        """True while a submit is on its way."""
        return self._thread is not None and self._thread.is_alive()

    @_safely
    def submit(self, block: bool = False, timeout: float | None = None) -> pd.DataFrame | None:
        """Send the batch in a background thread; with ``block``, wait and return the result frame.

        >>> composer = Composer(server.client).fill("POST", "/api/2.1/scheduling/companies", body={"name": "Riverside"})
        >>> composer.add()
        True
        >>> composer.submit(block=True, timeout=30)[["method", "status", "ok"]]
          method  status    ok
        0   POST     201  True

        The kernel stays responsive while it runs; the results table replaces
        the form's results when it is done. Errors show in the error area.
        """
        if self.running:
            self._set_errors(["a submit is already running; wait for it to finish"], title="Not sent.")
            return None
        if not self._draft:
            self._set_errors(["add an operation first"], title="Nothing to submit.")
            return None
        if self.client is None:
            self._set_errors(["this composer has no client: make it with Composer(client)"], title="Not sent.")
            return None
        batch = self.batch
        self._runs += 1
        self._start(batch, self._runs)
        return self.wait(timeout) if block else None

    def _start(self, batch: Batch, run: int) -> None:
        self._set_errors([])
        self.results.value = ""
        self.progress.max, self.progress.value, self.progress.bar_style = max(batch.size, 1), 0, "info"
        self.status.value = f"Submit {run}: sending {plural(batch.size, 'operation')}…"
        self.submit_button.disabled = True
        # The kernel's own thread must stay free: the batch goes out from a worker thread.
        self._thread = threading.Thread(target=self._run, args=(batch, run), name="batchnb-composer", daemon=True)
        self._thread.start()

    def _run(self, batch: Batch, run: int) -> None:
        try:
            responses = _send(self.client, batch)
            from .results import to_frame

            frame = to_frame(responses)
            self.responses, self.result = responses, frame
            self._show_result(frame, run)
        except Exception as exc:  # noqa: BLE001 - shown in the form, never as a traceback
            self.progress.bar_style = "danger"
            self.status.value = f"Submit {run}: failed"
            self._show_error(exc)
        finally:
            self.submit_button.disabled = not self._draft

    def _show_result(self, frame: pd.DataFrame, run: int) -> None:
        failed = int((~frame["ok"].fillna(False).astype(bool)).sum()) if "ok" in frame.columns else 0
        self.progress.value = self.progress.max
        self.progress.bar_style = "success" if not failed else "warning"
        verdict = "all ok" if not failed else f"{failed} not ok"
        self.status.value = f"Submit {run}: {plural(len(frame), 'operation')}, {verdict}"
        self.results.value = (
            f'<div class="batchnb-results-run" data-run="{run}"><b>Result of submit {run}</b></div>'
            + result_html(frame)
        )

    def wait(self, timeout: float | None = None) -> pd.DataFrame | None:
        """Wait for the running submit; returns the result frame (None if the submit failed: see ``errors``).

        >>> composer = Composer(server.client)
        >>> for name in ("Riverside Clinic", "Hilltop Dental"):
        ...     _ = composer.fill("POST", "/api/2.1/scheduling/companies", body={"name": name}).add()
        >>> composer.submit_button.click()           # what pressing *Submit* does
        >>> composer.wait(30).status.tolist()
        [201, 201]

        Raises :class:`~batchnb.WaitTimeout` (a TimeoutError) when it is still running after ``timeout`` seconds.
        """
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise WaitTimeout(f"the submit is still running after {timeout} s")
        return self.result

    # ------------------------------------------------------------ errors

    def _set_errors(self, messages: list[str], title: str = "") -> None:
        self.errors = list(messages)
        heading = f"<b style='color:#c62828'>{html.escape(title)}</b>" if title and messages else ""
        self.error_area.value = heading + _error_html(messages)

    def _refuse(self, refusal: Refusal) -> None:
        self._set_errors(refusal.messages, title=refusal.title)

    def _show_error(self, exc: BaseException) -> None:
        self._set_errors(*describe_error(exc))


def _client_of(obj: Any) -> Any:
    # A LocalServer has no submit of its own: use the client it hands out.
    if obj is not None and not hasattr(obj, "submit") and hasattr(obj, "client"):
        return obj.client
    return obj


def _send(client: Any, batch: Batch) -> list[Any]:
    """Submit ``batch`` from a worker thread (no event loop runs there) and return its responses."""
    from .client import AsyncClient

    if isinstance(client, AsyncClient):
        return asyncio.run(_send_async(client, batch))
    responses: list[Any] = client.submit(batch, progress=False)
    return responses


async def _send_async(client: Any, batch: Batch) -> list[Any]:
    try:
        responses: list[Any] = await client.submit(batch, progress=False)
        return responses
    finally:
        # Its connections belong to this thread's loop, which ends here; the client opens new ones on next use.
        await client.aclose()
