"""Keeping credentials out of reprs, logs, result frames and error messages."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

MASK = "***"

_SECRET_HEADER = re.compile(r"authorization|cookie|api[-_]?key|token|secret|password|session", re.I)
#: query parameters that carry credentials, by their name as a server reads it (decoded, any case).
_SECRET_PARAMS = frozenset(
    {
        "apikey",
        "api_key",
        "api-key",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "key",
        "secret",
        "client_secret",
        "password",
        "passwd",
        "pwd",
        "sig",
        "signature",
    }
)
#: one ``name=value`` parameter of a query, as written. A value ends where a server's parser ends it, at
#: '&' or '#', or at a blank (a URL holds none: in a log line or a message, a blank ends the URL); a quote
#: or any other character is part of it.
_PARAM = re.compile(r"([?&])([^=&#\s?]*)=([^&#\s]*)")
#: the ``user:password@`` of a URL, up to its last '@' before the host (a password may hold an '@').
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#]*@")


def is_secret_header(name: str) -> bool:
    """True for headers that carry credentials (``Authorization``, ``X-Api-Key``, …)."""
    return bool(_SECRET_HEADER.search(name))


def is_secret_param(name: str) -> bool:
    """True for query parameters that carry credentials, by the name a server reads (percent-decoded, any case).

    >>> is_secret_param("apiKey"), is_secret_param("%74oken"), is_secret_param("page")
    (True, True, False)
    """
    return unquote_plus(name).strip().lower() in _SECRET_PARAMS


def mask_headers(headers: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if headers is None:
        return None
    return {k: (MASK if is_secret_header(k) else v) for k, v in headers.items()}


def mask_path(path: str) -> str:
    """Hide credential query parameters: ``/x?apiKey=k&token=t`` → ``/x?apiKey=***&token=***``.

    A name is judged as the server reads it, percent-decoded: ``%74oken`` is
    ``token``, and its value is hidden too, to its end (``&``, ``#``, a blank
    or the end of the text): ``token=Zq"9x`` hides ``Zq"9x``. A URL's
    ``user:password@`` is hidden as well (see :func:`mask_url`).

    >>> mask_path('/x?token=Zq"9xK2-tail&page=2#top')
    '/x?token=***&page=2#top'
    """
    if "@" in path:
        path = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", path)
    if "?" not in path:
        return path
    query_at = path.index("?")

    def hide(m: re.Match[str]) -> str:
        if is_secret_param(m.group(2)):
            return f"{m.group(1)}{m.group(2)}={MASK}"
        return m.group(0)

    return path[:query_at] + _PARAM.sub(hide, path[query_at:])


def mask_url(url: object) -> str:
    """A URL (or a text holding URLs) as it may be shown: no ``user:password@``, no credential parameters.

    The whole ``user:password@`` goes: a user name alone may be a token
    (``https://TOKEN@host``).

    >>> mask_url("http://alice:s3cret@proxy.corp:3128")
    'http://***@proxy.corp:3128'
    >>> mask_url("https://api.example/x?token=t&page=2")
    'https://api.example/x?token=***&page=2'
    """
    return mask_path(str(url))


def scrub(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of each secret in ``text``."""
    for s in secrets:
        if s:
            text = text.replace(s, MASK)
    return text


class MaskCredentials(logging.Filter):
    """Masks credentials in log records' arguments (request lines and URLs): query parameters, ``user:password@``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                mask_path(str(a)) if isinstance(a, str) or type(a).__name__ == "URL" else a for a in record.args
            )
        return True


def mask_logger(name: str) -> None:
    """Install :class:`MaskCredentials` on logger ``name`` (once).

    httpx logs each request's URL at INFO and uvicorn each request line; with
    ``?apiKey=…&token=…`` credentials, or a ``user:password@`` URL, both would
    write them.
    """
    logger = logging.getLogger(name)
    if not any(isinstance(f, MaskCredentials) for f in logger.filters):
        logger.addFilter(MaskCredentials())
