"""docs/batch-api.md says what the code does, where that is cheap to hold: the lists it writes out are the code's."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from batchnb import _engine, _rules, model
from batchnb.server import Limits, create_app

DOC = (Path(__file__).resolve().parents[1] / "docs" / "batch-api.md").read_text()


def ticked(text: str) -> list[str]:
    """The `code` spans of ``text``, in order."""
    return re.findall(r"`([^`]+)`", text)


def between(start: str, end: str) -> str:
    at = DOC.index(start) + len(start)
    return DOC[at : DOC.index(end, at)]


def test_the_limits_listed_are_those_the_server_answers_and_documents() -> None:
    listed = ticked(between("answers the server's limits (", ")"))
    app = create_app(upstream="https://api.example")

    async def limits() -> dict:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return (await client.get("/api/2.3/batch")).json()

    answered = asyncio.run(limits())
    assert listed == list(Limits().to_wire())
    assert set(answered) == {*listed, "idempotency"} and "`idempotency`" in DOC
    documented = app.openapi()["components"]["schemas"]["Limits"]["properties"]
    assert list(documented) == [*listed, "idempotency"]


def test_the_answer_headers_listed_are_those_kept() -> None:
    listed = ticked(between("`headers` (only ", ")"))
    assert [h.lower() for h in listed] == list(_engine.KEPT_HEADERS)


def test_the_fields_listed_are_those_taken() -> None:
    table = between("| field | required | type | notes |", "\n\n")
    assert {row.split("`")[1] for row in table.splitlines() if row.startswith("| `")} == set(model._OP_FIELDS)
    assert ticked(DOC[: DOC.index("any other field of the batch is refused")])[1:3] == [
        '{"requests": [operation, …]}',
        '"parallel"',
    ]
    assert {"requests", "parallel"} == model._BATCH_FIELDS


def test_the_headers_an_operation_may_not_set_are_those_refused() -> None:
    row = next(line for line in DOC.splitlines() if line.startswith("| `headers` |"))
    listed = {h.lower() for h in ticked(row[: row.index(", control characters")])} - {"headers", "name: value"}
    prefixes = {h for h in listed if h.endswith("*")}
    assert listed - prefixes == _rules.FORBIDDEN_HEADERS
    assert {p.rstrip("*") for p in prefixes} == set(_rules.FORBIDDEN_HEADER_PREFIXES)
