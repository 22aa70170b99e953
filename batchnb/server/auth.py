"""Credential checking shared by the Scheduling API and the batch server.

A tenant is identified by its ``api_key``; each key has exactly one secret
``token``. Requests authenticate either with ``Authorization: Bearer <token>``
or with the query parameters ``apiKey=<api_key>&token=<token>``.

Example:
    >>> ring = Keyring({"key-a": "secret-a"})
    >>> ring.authenticate({"authorization": "Bearer secret-a"}, {})
    'key-a'
    >>> ring.authenticate({}, {"apiKey": "key-a", "token": "nope"}) is None
    True
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from .._exceptions import BatchValidationError, Problem

__all__ = ["Keyring"]


def _digest(secret: str) -> bytes:
    # Comparing fixed-size digests keeps compare_digest's timing independent
    # of the presented secret's length, and no raw token stays in memory.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class Keyring:
    """API credentials the server accepts: ``api_key -> token``. Tenant = api_key.

    Example:
        >>> ring = Keyring({"key-a": "secret-a", "key-b": "secret-b"})
        >>> ring
        Keyring(2 tenants)
        >>> ring.authenticate({}, {"apiKey": "key-b", "token": "secret-b"})
        'key-b'
    """

    __slots__ = ("_entries",)

    def __init__(self, credentials: Mapping[str, str]) -> None:
        entries: list[tuple[str, bytes, bytes]] = []
        seen_tokens: set[bytes] = set()
        for api_key, token in credentials.items():
            if not isinstance(api_key, str) or not api_key:
                raise BatchValidationError([Problem("credentials", "api keys must be non-empty strings")])
            if not isinstance(token, str) or not token:
                raise BatchValidationError([Problem(f"credentials[{api_key!r}]", "a token must be a non-empty string")])
            token_digest = _digest(token)
            # A Bearer token alone must identify one tenant.
            if token_digest in seen_tokens:
                raise BatchValidationError([Problem("credentials", "two api keys share the same token")])
            seen_tokens.add(token_digest)
            entries.append((api_key, _digest(api_key), token_digest))
        self._entries: tuple[tuple[str, bytes, bytes], ...] = tuple(entries)

    def __repr__(self) -> str:
        return f"Keyring({len(self._entries)} tenants)"

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """Return the authenticated tenant's api_key, or ``None``.

        ``headers`` should be case-insensitive (an ASGI server's, say);
        plain dicts work with ``authorization`` or ``Authorization`` keys.
        When an Authorization header is present it decides alone: a wrong
        Bearer token is rejected even if the query holds valid credentials.

        Example:
            >>> Keyring({"k": "t"}).authenticate({"Authorization": "Bearer t"}, {})
            'k'
        """
        header = headers.get("authorization")
        if header is None:
            header = headers.get("Authorization")
        if header is not None:
            # HTTP's white space is spaces and tabs: str.strip() would also take 'tok\xa0' as 'tok'.
            scheme, _, token = header.strip(" \t").partition(" ")
            token = token.strip(" \t")
            if scheme.lower() != "bearer" or not token:
                return None
            return self._match_token(_digest(token))

        api_key = query.get("apiKey")
        token = query.get("token")
        if not api_key or not token:
            return None
        return self._match_pair(_digest(api_key), _digest(token))

    def _match_token(self, presented: bytes) -> str | None:
        matched = None
        # Every entry is compared so the time taken does not reveal which matched.
        for api_key, _key_digest, token_digest in self._entries:
            if hmac.compare_digest(token_digest, presented):
                matched = api_key
        return matched

    def _match_pair(self, presented_key: bytes, presented_token: bytes) -> str | None:
        matched = None
        for api_key, key_digest, token_digest in self._entries:
            # `&` instead of `and`: both comparisons always run.
            if hmac.compare_digest(key_digest, presented_key) & hmac.compare_digest(token_digest, presented_token):
                matched = api_key
        return matched
