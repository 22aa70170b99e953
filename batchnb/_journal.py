"""The journal: an append-only JSON Lines file of what a submit sent and what came back.

A run opens with the fingerprint of every operation it will send, then
writes two events per batch, each flushed and synced to disk before going on:

    {"event": "run", "version": 2, "rows": {"<row key>": "<fingerprint>", ...}}
    {"event": "send", "batch": 3, "rows": [...], "resendable": false}
    {"event": "done", "batch": 3, "responses": [...]}

Reading it back tells, for every row, whether it has a final outcome (a
``done`` event), was in flight when the run died (a ``send`` with no
``done``: its outcome is unknown), or never left. A ``done`` row that did
not run (answered 401, or "not run": refused credentials, a run that
stopped, a batch never delivered) has no final outcome: a resume, with
fresh credentials, sends it. Resuming sends only the
last kind, plus in-flight batches that are safe to resend (GET/PUT/DELETE),
and only when the rows handed to it are the run's own: a fingerprint of each
operation (method, path, body, name, and headers without credentials) is
compared first. No credentials are written: neither headers nor paths'
credential parameters reach the journal.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ._exceptions import BatchValidationError, Problem
from ._json import RawJSON, dumps
from ._secrets import is_secret_header, mask_path
from .model import Operation, Response

__all__ = ["Journal", "JournalState", "fingerprint", "is_final", "row_key"]

#: the journal's format: 2 opens with a "run" event holding every operation's fingerprint.
VERSION = 2


def row_key(label: Any) -> str:
    """A stable text key for an index label (labels are matched across runs by it).

    >>> import numpy as np
    >>> row_key(np.int64(3)) == row_key(3), row_key("r1")
    (True, '"r1"')
    """
    if hasattr(label, "item"):
        label = label.item()  # numpy scalar
    if type(label) is int:
        return str(label)  # what json.dumps writes, without its machinery (most labels are a RangeIndex's)
    return json.dumps(label, default=str, sort_keys=True)


def fingerprint(op: Operation) -> str:
    """A short digest of what ``op`` asks (not its children): method, path, body, name, headers.

    Credentials are left out (a rotated token does not make another run),
    so the digest says nothing about them.

    >>> fingerprint(Operation("POST", "/c", {"name": "a"})) == fingerprint(Operation("post", "/c", {"name": "a"}))
    True
    >>> fingerprint(Operation("POST", "/c", {"name": "a"})) == fingerprint(Operation("POST", "/c", {"name": "b"}))
    False
    """
    headers = sorted((k.lower(), v) for k, v in (op.headers or {}).items() if not is_secret_header(k))
    try:
        text = orjson.dumps([op.method, mask_path(op.path), op.name, headers, op.body], option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits, decimals
        text = dumps([op.method, mask_path(op.path), op.name, headers, _sorted(op.body)])
    return hashlib.blake2b(text, digest_size=8).hexdigest()


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def fingerprints(ops: Iterable[Operation]) -> dict[str, str]:
    """Row key → fingerprint for every operation, children included, depth first."""
    return {row_key(op.row): fingerprint(op) for top in ops for _p, op in top.walk()}


def _line(event: dict[str, Any]) -> str:
    """An event as one line of JSON: bodies kept as text (RawJSON) written as they came, without being read."""
    try:
        return dumps(event).decode()
    except TypeError:  # what JSON cannot hold (a label of some other type): in words, as before
        return json.dumps(event, default=_plain, separators=(",", ":"))


def _plain(value: Any) -> Any:
    return value.value() if isinstance(value, RawJSON) else str(value)


def response_to_record(resp: Response) -> dict[str, Any]:
    rec = resp.to_wire()
    rec["path"] = mask_path(resp.path)
    rec["row"] = row_key(resp.row)
    rec["error"] = resp.error
    rec["batch"] = resp.batch
    rec["attempts"] = resp.attempts
    rec["responses"] = [response_to_record(c) for c in resp.responses]
    return rec


def response_from_record(rec: dict[str, Any]) -> Response:
    resp = Response.from_wire(rec)
    resp.error = rec.get("error")
    resp.batch = rec.get("batch")
    resp.attempts = rec.get("attempts")
    resp.responses = [response_from_record(c) for c in rec.get("responses") or []]
    resp.row = rec.get("row")  # a key; the caller maps it back to its label
    return resp


def is_final(resp: Response) -> bool:
    """Whether a recorded outcome stands: False for a row that did not run and may be sent again.

    >>> is_final(Response("POST", "/c", 201)), is_final(Response("POST", "/c", 401))
    (True, False)
    >>> is_final(Response("POST", "/c", None, error="not run: unauthorized (invalid_token)"))
    False
    >>> is_final(Response("POST", "/c", None, error="outcome unknown"))
    True
    """
    if resp.status == 401:
        return False  # refused credentials: nothing ran (a child's 401 under a parent that ran stays final)
    return not (resp.status is None and (resp.error or "").startswith("not run"))


@dataclass
class JournalState:
    """What an earlier run left: final responses by row key, and rows caught in flight.

    >>> JournalState().last_batch
    -1
    """

    done: dict[str, Response] = field(default_factory=dict)
    #: row key -> resendable, for batches sent but never answered.
    in_flight: dict[str, bool] = field(default_factory=dict)
    last_batch: int = -1
    #: row key -> fingerprint of every operation of the run (None: no run recorded).
    rows: dict[str, str] | None = None
    #: the run's id (it names the idempotency keys the run numbered).
    run_id: str | None = None
    #: row key -> the idempotency key each row in flight went with: a resume sends it with the same one.
    keys: dict[str, str] = field(default_factory=dict)

    def check(self, ops: dict[str, str], labels: dict[str, Any], where: str) -> None:
        """Refuse to continue with operations that are not this run's (``ops``: row key → fingerprint).

        Raises one BatchValidationError naming the first row that is new or differs.
        """
        if self.rows is None:
            raise BatchValidationError(
                [
                    Problem(
                        "journal",
                        f"{where} records no run to continue (it was not written by this version of batchnb, or is empty)",
                    )
                ]
            )
        for key, print_ in ops.items():
            recorded = self.rows.get(key)
            if recorded is None:
                message = f"is not one of the {len(self.rows)} rows of the run {where} records; resume=True continues exactly that run"
            elif recorded != print_:
                message = f"differs from the operation {where} records for it (method, path, body, name or headers changed); resume=True continues exactly that run"
            else:
                continue
            raise BatchValidationError([Problem(f"row {labels[key]!r}", message)])


class Journal:
    """Appends events to a JSON Lines file, one flushed and fsynced line each.

    A new journal is readable by its owner only (mode 0600): it holds the
    API's answers, which may hold anything.

    >>> j = Journal(tmp / "run.jsonl")
    >>> j.read().done                     # a new journal: nothing done yet
    {}
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: Any = None

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def read(self) -> JournalState:
        """What the journal records; a journal that this version of batchnb did not write so is refused.

        A line that a crash cut short is left out (its batch stays
        unfinished); anything else that is not an event as written here (a
        line edited by hand, another file) raises :class:`BatchValidationError`
        naming the file and the line, before anything is sent.
        """
        state = JournalState()
        if not self.path.exists():
            return state
        sent: dict[int, tuple[list[str], bool, dict[str, str]]] = {}
        with self.path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    event = _event(raw)
                except _Unreadable as exc:
                    where = f"journal {str(self.path)!r}, line {number}"
                    raise BatchValidationError([Problem(where, f"{exc}; {_NOT_OURS}")]) from None
                if event is None:
                    continue
                kind = event["event"]
                if kind == "run":
                    state.rows = dict(event["rows"])
                    state.run_id = event.get("id")
                    continue
                batch = event["batch"]
                state.last_batch = max(state.last_batch, batch)
                if kind == "send":
                    sent[batch] = (event["rows"], event["resendable"], event.get("keys") or {})
                else:
                    sent.pop(batch, None)
                    for rec in event["responses"]:
                        resp = response_from_record(rec)
                        if is_final(resp):
                            state.done[rec["row"]] = resp
        for rows, resendable, keys in sent.values():
            for key in rows:
                if key not in state.done:
                    state.in_flight[key] = resendable
                    if key in keys:
                        state.keys[key] = keys[key]
        return state

    def _write(self, event: dict[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = _open_private(self.path)
        self._file.write(_line(event) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def start(self, rows: dict[str, str], run_id: str | None = None) -> None:
        """Open a run: its id (which names its idempotency keys) and every operation's row key and fingerprint."""
        self._write({"event": "run", "version": VERSION, "id": run_id, "rows": rows})

    def sent(self, batch: int, rows: list[Any], resendable: bool, keys: dict[str, Any] | None = None) -> None:
        """Record a batch before it leaves: its rows, whether it may be resent, and its idempotency keys."""
        event: dict[str, Any] = {
            "event": "send",
            "batch": batch,
            "rows": [row_key(r) for r in rows],
            "resendable": resendable,
        }
        if keys:
            event["keys"] = keys
        self._write(event)

    def done(self, batch: int, responses: list[Response]) -> None:
        self._write({"event": "done", "batch": batch, "responses": [response_to_record(r) for r in responses]})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# ---------------------------------------------------------------- reading a line back


#: how every line the journal writes starts: a line cut short by a crash starts so too.
_HEAD = '{"event":'
#: operations nested deeper than this in one recorded response: not a journal this version wrote.
_MAX_NESTED = 64
_NOT_OURS = "the journal was changed since batchnb wrote it; resume=True continues only a journal as written"


class _Unreadable(Exception):
    """A line of the journal that is not what batchnb writes there (the message says how)."""


def _open_private(path: Path) -> Any:
    """``path`` opened to append, created readable by its owner only.

    A line that a crash cut short is ended first, so that the next event
    starts a line of its own instead of being lost with it.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    file = os.fdopen(fd, "a", encoding="utf-8")
    if os.fstat(fd).st_size:
        with path.open("rb") as tail:
            tail.seek(-1, os.SEEK_END)
            if tail.read(1) != b"\n":
                file.write("\n")
    return file


def _event(raw: bytes) -> dict[str, Any] | None:
    """One line's event, checked to be as written; None for a blank line or one a crash cut short."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _Unreadable("is not UTF-8 text") from None
    if not text:
        return None
    try:
        event = json.loads(text)
    except RecursionError:
        raise _Unreadable("is nested too deeply to be read") from None
    except ValueError:
        if text.startswith(_HEAD) or _HEAD.startswith(text):
            return None  # a line a crash cut short: its batch stays unfinished
        raise _Unreadable("is not JSON") from None
    if not isinstance(event, dict):
        raise _Unreadable(f"is {_kind(event)}, not an event (an object)")
    kind = event.get("event")
    if kind == "run":
        if event.get("version") != VERSION:
            raise _Unreadable(
                f"records a run in format {event.get('version')!r}; this version of batchnb writes {VERSION}"
            )
        _check(event.get("rows"), dict, "rows", "an object of texts", str)
        _check(event.get("id"), (str, _NONE), "id", "a text or null")
        return event
    if kind not in ("send", "done"):
        raise _Unreadable(f"holds the event {kind!r}; a journal holds 'run', 'send' and 'done'")
    batch = event.get("batch")
    if type(batch) is not int or batch < 0:
        raise _Unreadable(f"has batch {batch!r}, not a batch number")
    if kind == "send":
        _check(event.get("rows"), list, "rows", "an array of texts", str)
        _check(event.get("resendable"), bool, "resendable", "true or false")
        _check(event.get("keys", {}), dict, "keys", "an object of texts", str)
    else:
        _check(event.get("responses"), list, "responses", "an array")
        for i, rec in enumerate(event["responses"]):
            _check_record(rec, f"responses[{i}]", 0)
    return event


def _check_record(rec: Any, where: str, depth: int) -> None:
    """A recorded response, as :func:`response_to_record` writes it."""
    _check(rec, dict, where, "an object")
    if depth > _MAX_NESTED:
        raise _Unreadable(f"has responses nested more than {_MAX_NESTED} deep ({where})")
    for name, (kinds, wanted) in _RECORD_FIELDS.items():
        if name in rec or name in _REQUIRED:
            _check(rec.get(name), kinds, f"{where}.{name}", wanted)
    if "headers" in rec:
        _check(rec["headers"], dict, f"{where}.headers", "an object of texts", str)
    for i, child in enumerate(rec.get("responses") or []):
        _check_record(child, f"{where}.responses[{i}]", depth + 1)


_NONE = type(None)
#: what each field of a recorded response is: its types, and how a message says them.
_RECORD_FIELDS: dict[str, tuple[Any, str]] = {
    "row": (str, "a text"),
    "method": (str, "a text"),
    "path": (str, "a text"),
    "status": ((int, _NONE), "a number or null"),
    "name": ((str, _NONE), "a text or null"),
    "duration": ((int, float, _NONE), "a number or null"),
    "error": ((str, _NONE), "a text or null"),
    "batch": ((int, _NONE), "a number or null"),
    "attempts": ((int, _NONE), "a number or null"),
    "responses": ((list, _NONE), "an array or null"),
}
_REQUIRED = frozenset({"row", "method", "path"})


def _check(value: Any, kinds: Any, where: str, wanted: str, items: type | None = None) -> None:
    """Refuse ``value`` unless it is of ``kinds`` (a boolean is no number) and its items and keys of ``items``."""
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise _Unreadable(f"has {where} {_kind(value)}, not {wanted}")
    if items is not None:
        held: Any = value  # a dict or a list: checked just above
        inner = [*held.keys(), *held.values()] if isinstance(held, dict) else held
        odd = next((v for v in inner if not isinstance(v, items)), None)
        if odd is not None or any(v is None for v in inner):
            raise _Unreadable(f"has {where} holding {_kind(odd)}, not {wanted}")


def _kind(value: Any) -> str:
    """A JSON value's kind, as the journal's reader says it: 'an array', 'null', …"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a text", int: "a number", float: "a number"}.get(
        type(value), "a value"
    )
