"""The ``Idempotency-Key`` request header, as the demo API honours it.

IETF httpapi draft "The Idempotency-Key HTTP Header Field": a client that
may send a POST or PATCH twice (its first answer was lost on the way) sends
the same key both times; the API runs the request once and answers the
second time with the first answer. Per tenant:

- the same key and the same request (method, path, body): the stored
  answer again, same status and body (same ids), with ``Idempotent-Replayed: true``;
- the same key for a different request: 422;
- the same key while the first request still runs: 409;
- a key that is not a string the header can carry: 400 with a pointer.

Keys expire after ``ttl`` seconds (24 hours unless configured).

    >>> parse_key(['"8e03978e-40d5-43e8-bc93-6894a57f9324"'])
    ('8e03978e-40d5-43e8-bc93-6894a57f9324', None)
    >>> parse_key(['a b'])[1]
    'must be a quoted string or a token of visible ASCII characters, 1 to 255 long'
"""

from __future__ import annotations

import hashlib
import re

from .._secrets import is_secret_param

__all__ = ["HEADER", "METHODS", "POINTER", "fingerprint", "parse_key"]

#: the request header that carries the key (names are matched in any case).
HEADER = "idempotency-key"
#: methods a key makes safe to send twice (the others are idempotent already).
METHODS = frozenset({"POST", "PATCH"})
#: where a problem with the key is reported.
POINTER = "headers.Idempotency-Key"
#: 24 hours: long enough for a client to come back after a crash or a kernel restart.
DEFAULT_TTL = 24 * 3600.0

_QUOTED = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_TOKEN = re.compile(r"[\x21\x23-\x7e]+")
_ESCAPE = re.compile(r"\\(.)")
_SHAPE = "must be a quoted string or a token of visible ASCII characters, 1 to 255 long"


def parse_key(values: list[str]) -> tuple[str | None, str | None]:
    """The key from the header's values, or why it is not one.

    A Structured Field string (``"…"``, as the draft writes it) or, as many
    clients send it, a bare token.

    >>> parse_key(["order-42"]), parse_key(['"a", "b"'])[1]
    (('order-42', None), 'must be a quoted string or a token of visible ASCII characters, 1 to 255 long')
    """
    if len(values) != 1:
        return None, "must be given once"
    # HTTP's white space only: str.strip() would read 'k1\xa0' (a no-break space) as the key 'k1'.
    value = values[0].strip(" \t")
    inner = value[1:-1]
    if (
        len(value) >= 2
        and value[0] == value[-1] == '"'
        and inner.isascii()
        and inner.isprintable()
        and '"' not in inner
        and "\\" not in inner
    ):
        key = inner  # the common case, what _QUOTED matches without escapes, read without the pattern
    elif quoted := _QUOTED.fullmatch(value):
        key = quoted.group(1)
        if "\\" in key:
            key = _ESCAPE.sub(r"\1", key)
    elif _TOKEN.fullmatch(value):
        key = value
    else:
        return None, _SHAPE
    if not 1 <= len(key) <= 255:
        return None, _SHAPE
    return key, None


def fingerprint(method: str, target: str, body: bytes) -> str:
    """What makes two requests the same request: method, path with query, body bytes; never credentials.

    >>> fingerprint("POST", "/c", b"{}") == fingerprint("POST", "/c", b"{}") != fingerprint("POST", "/c", b"[]")
    True
    >>> fingerprint("POST", "/c?apiKey=k&token=t", b"{}") == fingerprint("POST", "/c", b"{}")
    True

    Credentials say who asks, not what: the same request sent with its
    credentials in the query, then in an ``Authorization`` header (which
    is not fingerprinted at all), or with a token renewed in between, is
    the same request. Credential parameters are judged by the rule that
    masks them (:func:`batchnb._secrets.is_secret_param`).
    """
    parts = (method.upper().encode(), _without_credentials(target).encode("latin-1", "replace"), body)
    # Each part after its length, so that no two requests run together into the same bytes.
    return hashlib.sha256(b"".join(b for part in parts for b in (len(part).to_bytes(8, "big"), part))).hexdigest()


def _without_credentials(target: str) -> str:
    """``target`` without its credential query parameters (the others kept, in their order)."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    kept = [p for p in query.split("&") if not is_secret_param(p.partition("=")[0])]
    return f"{path}?{'&'.join(kept)}" if kept else path
