"""Protocol input is judged as ASCII: Unicode-aware ``upper()``, ``strip()``, ``isdigit()``, ``float()`` are not HTTP's.

``'poſt'.upper()`` is ``'POST'``, ``'k1\\xa0'.strip()`` is ``'k1'``, ``'²'.isdigit()``
is true (and ``int('²')`` raises), ``float('١٢')`` is 12.0 and ``float('inf')`` is a
number. Each test here is one place of the package that read a header, a status, a
token or a separator that way. The method and the key, the two the issue names, are
tested end to end in ``tests/test_served_rules.py``; the rules themselves in
``tests/test_rules.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import httpx
import pytest

from batchnb import AuthenticationError, BatchValidationError, read_csv
from batchnb._compare import expected_status
from batchnb._ratelimit import advise, retry_after
from batchnb._timing import read_header
from batchnb.auth import ClientCredentials
from batchnb.demo.company import CompanyApp
from batchnb.model import Response
from batchnb.results import to_frame
from batchnb.server import create_app
from batchnb.server.auth import Keyring

NBSP = "\xa0"


def asgi(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> tuple[int, bytes]:
    """One request straight into an ASGI app, headers as given (no client rewrites them): status and body."""
    sent: list[dict] = []
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if delivered:
            await asyncio.sleep(3600)
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


# ---------------------------------------------------------------- the batch server


def test_a_bearer_token_ending_in_a_no_break_space_is_not_the_token() -> None:
    ring = Keyring({"key-a": "tok-a"})
    assert ring.authenticate({"authorization": "Bearer tok-a \t"}, {}) == "key-a"
    for value in (f"Bearer tok-a{NBSP}", f"{NBSP}Bearer tok-a", "Bearer tok-a\u2003", "Bearer tok-a\x1f"):
        assert ring.authenticate({"authorization": value}, {}) is None, repr(value)


def test_a_content_type_ending_in_a_no_break_space_is_not_json() -> None:
    app = create_app(upstream="http://127.0.0.1:9", credentials={"k": "t"})
    ok = [(b"authorization", b"Bearer t"), (b"content-type", b"application/json \t")]
    body = json.dumps({"requests": []}).encode()
    assert asgi(app, "POST", "/api/2.3/batch", ok, body)[0] != 415
    bad = [(b"authorization", b"Bearer t"), (b"content-type", b"application/json\xa0")]
    status, answer = asgi(app, "POST", "/api/2.3/batch", bad, body)
    assert status == 415, answer


@pytest.mark.parametrize("length", [b"\xb2", b"\xb9\xb2"])  # latin-1 '²', '¹²': str.isdigit() is true of them
def test_a_content_length_of_superscript_digits_is_not_a_server_error(length: bytes) -> None:
    app = create_app(upstream="http://127.0.0.1:9", credentials={"k": "t"})
    headers = [(b"authorization", b"Bearer t"), (b"content-type", b"application/json"), (b"content-length", length)]
    status, answer = asgi(app, "POST", "/api/2.3/batch", headers, b'{"requests": []}')
    assert status < 500, answer


# ---------------------------------------------------------------- the demo company API


def test_the_company_api_does_not_read_a_token_without_its_trailing_no_break_space() -> None:
    app = CompanyApp(client_id="analyst", client_secret="s3cret")
    form = b"grant_type=client_credentials&client_id=analyst&client_secret=s3cret"
    status, answer = asgi(app, "POST", "/oauth/token", [(b"content-type", b"application/x-www-form-urlencoded")], form)
    assert status == 200, answer
    token = json.loads(answer)["access_token"].encode()
    assert asgi(app, "GET", "/api/things", [(b"authorization", b"Bearer " + token)])[0] == 200
    assert asgi(app, "GET", "/api/things", [(b"authorization", b"Bearer " + token + b"\xa0")])[0] == 401


# ---------------------------------------------------------------- the client


def _token_answer(body: dict[str, Any]) -> tuple[str, float | None]:
    creds = ClientCredentials("http://idp.test/oauth/token", "analyst", "s3cret")
    return creds._answer(httpx.Response(200, json=body, request=httpx.Request("POST", "http://idp.test/oauth/token")))


@pytest.mark.parametrize("token", [f"t1{NBSP}", f"{NBSP}t1", "t1\u2003", "t1\t", "t\u00e9"])
def test_an_access_token_that_is_not_visible_ascii_is_refused_not_trimmed(token: str) -> None:
    with pytest.raises(AuthenticationError, match="without a usable access_token"):
        _token_answer({"access_token": token, "token_type": "Bearer"})


@pytest.mark.parametrize(
    ("given", "lifetime"),
    [
        (60, 60.0),
        ("5", 5.0),
        ("2.5", 2.5),
        ("inf", None),
        ("nan", None),
        ("1e309", None),
        ("\u0661\u0662\u0660", None),
        (" 60", None),
        ("1_000", None),
        (0, None),
    ],
)
def test_a_token_lifetime_is_a_finite_number_of_ascii_digits(given: Any, lifetime: float | None) -> None:
    assert _token_answer({"access_token": "t1", "token_type": "Bearer", "expires_in": given}) == ("t1", lifetime)


@pytest.mark.parametrize("value", [f"2{NBSP}", f"{NBSP}2", "2\u2003", "\u0662"])
def test_a_retry_after_with_other_than_ascii_digits_and_spaces_is_no_hint(value: str) -> None:
    assert retry_after({"Retry-After": value}) is None
    assert retry_after({"Retry-After": " 2\t"}) == 2.0
    assert advise({"Retry-After": value}).wait is None
    assert advise({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": value}).wait is None
    assert advise({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "2 "}).wait == 2.0


def test_server_timing_durations_are_finite_ascii_numbers() -> None:
    header = "read;dur=0.5, parse;dur=nan, resolve;dur=inf, api;dur=\u0661\u0662, carry;dur=1_0, serialise;dur=2"
    assert read_header(header) == {"read": 0.5, "serialise": 2.0}


def test_a_replayed_header_is_true_only_as_http_writes_it() -> None:
    answers = [
        Response("POST", "/x", 201, headers={"Idempotent-Replayed": "true"}),
        Response("POST", "/x", 201, headers={"Idempotent-Replayed": " TRUE\t"}),
        Response("POST", "/x", 201, headers={"Idempotent-Replayed": f"true{NBSP}"}),
        Response("POST", "/x", 201, headers={"idempotent-replayed": "true\u3000"}),
    ]
    assert to_frame(answers)["replayed"].tolist() == [True, True, False, False]


@pytest.mark.parametrize("value", ["\u00b2\u00b9", "\u0662\u0660\u0661", "\uff12\uff10\uff11"])
def test_an_expected_status_of_other_digits_is_not_a_status(value: str) -> None:
    with pytest.raises(BatchValidationError, match="is not a status"):
        expected_status(value, "row 1, column status")


def test_a_csv_whose_first_line_only_unicode_folds_to_a_separator_hint_keeps_that_line() -> None:
    assert read_csv(io.StringIO("sep=;\nname;n\nAda;1\n")).columns.tolist() == ["name", "n"]
    assert read_csv(io.StringIO("SEP=;\nname;n\nAda;1\n")).columns.tolist() == ["name", "n"]
    # 'ſ' (long s) matches 's' in a case-insensitive Unicode pattern: the line is data, not Excel's hint.
    frame = read_csv(io.StringIO("\u017fep=x\nname\nAda\n"))
    assert frame.columns.tolist() == ["\u017fep=x"] and frame.iloc[:, 0].tolist() == ["name", "Ada"]
