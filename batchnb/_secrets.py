"""Keeping credentials out of reprs, logs, result frames and error messages."""

from __future__ import annotations

import logging
import re
from typing import Any, Mapping
from urllib.parse import unquote_plus

MASK = "***"

_SECRET_HEADER = re.compile(r"authorization|cookie|api[-_]?key|token|secret|password|session", re.I)
#: query parameters that carry credentials, by their name as a server reads it (decoded, any case).
_SECRET_PARAMS = frozenset({"apikey", "api_key", "token", "access_token", "key", "secret", "password"})
#: one ``name=value`` parameter of a query, as written (a value ends at '&', '#' or a blank).
_PARAM = re.compile(r"([?&])([^=&#\s?]*)=([^&#\s\"]*)")


def is_secret_header(name: str) -> bool:
    """True for headers that carry credentials (``Authorization``, ``X-Api-Key``, …)."""
    return bool(_SECRET_HEADER.search(name))


def mask_headers(headers: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if headers is None:
        return None
    return {k: (MASK if is_secret_header(k) else v) for k, v in headers.items()}


def mask_path(path: str) -> str:
    """Hide credential query parameters: ``/x?apiKey=k&token=t`` → ``/x?apiKey=***&token=***``.

    A name is judged as the server reads it, percent-decoded: ``%74oken`` is
    ``token``, and its value is hidden too.
    """
    if "?" not in path:
        return path
    query_at = path.index("?")

    def hide(m: re.Match[str]) -> str:
        if unquote_plus(m.group(2)).strip().lower() in _SECRET_PARAMS:
            return f"{m.group(1)}{m.group(2)}={MASK}"
        return m.group(0)

    return path[:query_at] + _PARAM.sub(hide, path[query_at:])


def scrub(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of each secret in ``text``."""
    for s in secrets:
        if s:
            text = text.replace(s, MASK)
    return text


class MaskCredentials(logging.Filter):
    """Masks credential query parameters in log records' arguments (request lines and URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                mask_path(str(a)) if isinstance(a, str) or type(a).__name__ == "URL" else a for a in record.args
            )
        return True


def mask_logger(name: str) -> None:
    """Install :class:`MaskCredentials` on logger ``name`` (once).

    httpx logs each request's URL at INFO and uvicorn each request line; with
    ``?apiKey=…&token=…`` credentials, both would write the token.
    """
    logger = logging.getLogger(name)
    if not any(isinstance(f, MaskCredentials) for f in logger.filters):
        logger.addFilter(MaskCredentials())
