"""Auth flows for ``Client(auth=...)``: OAuth2 client credentials that refresh themselves.

    >>> from batchnb.auth import ClientCredentials
    >>> auth = ClientCredentials("https://login.example/oauth/token", "analyst", "s3cret", scope="things")
    >>> auth
    ClientCredentials(token_url='https://login.example/oauth/token', client_id='analyst', scope='things')

:class:`ClientCredentials` is an ``httpx.Auth``: the client sends its token
request itself, through the same connection settings as the API's requests
(CA, client certificate, proxy, timeout). It asks for a token on first use,
asks again shortly before ``expires_in`` runs out, and once when the API
answers 401. Requests in flight at the same time share one token request.

Any ``httpx.Auth`` may be given to a client. One with an ``invalidate(token)``
method (as this one has) is told when operations inside a batch were
refused with the token it set, so that batchnb can send them again once
with a fresh one.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import math
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Any, Literal
from urllib.parse import quote_plus, urlencode

import httpx
import orjson

from ._exceptions import AuthenticationError, BatchValidationError, Problem
from ._secrets import mask_path, mask_url, scrub

__all__ = ["ClientCredentials"]

#: at most this many seconds before a token runs out, it is replaced (less for short-lived tokens).
DEFAULT_MARGIN = 30.0
#: after the token endpoint refuses the client, requests this many seconds later get the same answer without asking.
REFUSAL_MEMORY = 5.0
#: an access token as a Bearer header carries it: visible ASCII (RFC 6749's characters, less the space).
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
#: expires_in given as text: ASCII digits, maybe a fraction.
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class _Wait:
    """A step of the flow: wait until another request's token request is done."""

    def __init__(self, future: concurrent.futures.Future[None], seconds: float) -> None:
        self.future = future
        self.seconds = seconds


class ClientCredentials(httpx.Auth):
    """OAuth2 client credentials (RFC 6749 §4.4) as an ``httpx.Auth`` that keeps its token fresh.

    >>> auth = ClientCredentials(token_url="https://login.example/oauth/token", client_id="analyst",
    ...                          client_secret="s3cret")
    >>> "s3cret" in repr(auth) or "s3cret" in str(auth)
    False

    The token request is ``POST token_url`` with ``grant_type=client_credentials``
    (and ``scope``, when given), the client's id and secret sent by HTTP Basic
    (``client_auth="basic"``, the default) or as form fields (``"form"``). The
    answer's ``access_token`` is sent as ``Authorization: Bearer``; it is
    replaced ``refresh_margin`` seconds before its ``expires_in`` runs out
    (default: 30 s, or a quarter of its lifetime when that is shorter), and
    once when the API answers 401 (the request then goes again with the new
    one). A token endpoint that refuses raises :class:`~batchnb.AuthenticationError`
    with its ``error`` and ``error_description``.

    One object may serve many clients, threads and event loops at once
    (each sync ``Client`` call runs in a loop of its own): the token is
    kept across them, and requests that need a new one wait for one token
    request. The client secret and the tokens never appear in a repr, an
    error message, or a pickle's token cache: pickling keeps the
    configuration (the secret included, which a ``batchnb.dask`` worker
    needs) and drops the tokens.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        *,
        refresh_margin: float | None = None,
        client_auth: Literal["basic", "form"] = "basic",
    ) -> None:
        problems = _problems(token_url, client_id, client_secret, scope, refresh_margin, client_auth)
        if problems:
            raise BatchValidationError(problems)
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self.refresh_margin = refresh_margin
        self.client_auth = client_auth
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._token: str | None = None
        #: time.monotonic() values: replace the token from then on; it stops working then (None: not known).
        self._refresh_at: float | None = None
        self._expires_at: float | None = None
        #: the token request in progress, which every other request that needs a token waits for.
        self._pending: concurrent.futures.Future[None] | None = None
        self._refused: tuple[float, AuthenticationError] | None = None
        #: how many tokens this object was given.
        self.tokens_fetched = 0

    def __repr__(self) -> str:
        scope = f", scope={self.scope!r}" if self.scope is not None else ""
        return f"{type(self).__name__}(token_url={mask_path(self.token_url)!r}, client_id={self.client_id!r}{scope})"

    def __getstate__(self) -> dict[str, Any]:
        # The configuration only: tokens and locks belong to this process.
        return {
            "token_url": self.token_url,
            "client_id": self.client_id,
            "client_secret": self._secret,
            "scope": self.scope,
            "refresh_margin": self.refresh_margin,
            "client_auth": self.client_auth,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]  # unpickling rebuilds the flow from its configuration

    # ------------------------------------------------------------ the token

    def invalidate(self, token: str | None = None) -> None:
        """Forget the token, so that the next request asks for a new one.

        >>> ClientCredentials("https://login.example/token", "id", "secret").invalidate()

        ``token`` (the access token, or the ``Authorization`` value that
        carried it) forgets it only if it is still the current one: forty
        operations refused with the same old token cause one new token.
        """
        with self._lock:
            if self._token is None:
                return
            if token is None or token == self._token or token.partition(" ")[2] == self._token:
                self._token = None

    def _claim(self) -> tuple[str | None, concurrent.futures.Future[None] | None, bool]:
        """(the Authorization value to send, None, False), or (None, a token request to wait for, whether it is ours)."""
        now = time.monotonic()
        with self._lock:
            if self._refused is not None and now - self._refused[0] < REFUSAL_MEMORY:
                raise _again(self._refused[1])
            token = self._token
            if token is not None and (self._refresh_at is None or now < self._refresh_at):
                return f"Bearer {token}", None, False
            if self._pending is not None:
                if token is not None and self._expires_at is not None and now < self._expires_at:
                    return f"Bearer {token}", None, False  # still good while another request replaces it
                return None, self._pending, False
            self._pending = concurrent.futures.Future()
            return None, self._pending, True

    def _settle(
        self,
        future: concurrent.futures.Future[None],
        *,
        token: tuple[str, float | None, float] | None = None,
        error: AuthenticationError | None = None,
    ) -> None:
        with self._lock:
            if token is not None:
                value, lifetime, asked_at = token
                self._token = value
                self.tokens_fetched += 1
                self._refused = None
                if lifetime is None:
                    self._refresh_at = self._expires_at = None
                else:
                    self._expires_at = asked_at + lifetime
                    self._refresh_at = self._expires_at - self._margin(lifetime)
            if error is not None:
                self._refused = (time.monotonic(), error)
            if self._pending is future:
                self._pending = None
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(None)  # a waiter that finds no token (this request was abandoned) asks itself

    def _drop(self, future: concurrent.futures.Future[None]) -> None:
        """A token request that has taken longer than any request may: the next claim asks again."""
        with self._lock:
            if self._pending is future:
                self._pending = None

    def _margin(self, lifetime: float) -> float:
        if self.refresh_margin is not None:
            return min(self.refresh_margin, lifetime)
        return min(DEFAULT_MARGIN, lifetime / 4)

    def _token_request(self, request: httpx.Request) -> httpx.Request:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if self.client_auth == "basic":
            # RFC 6749 §2.3.1: id and secret are form-encoded before they are joined.
            pair = f"{quote_plus(self.client_id)}:{quote_plus(self._secret)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        else:
            form.update(client_id=self.client_id, client_secret=self._secret)
        # The API request's timeout bounds the token request too.
        extensions = {"timeout": request.extensions["timeout"]} if "timeout" in request.extensions else {}
        return httpx.Request(
            "POST", self.token_url, headers=headers, content=urlencode(form).encode(), extensions=extensions
        )

    def _answer(self, response: httpx.Response) -> tuple[str, float | None]:
        """The token and its lifetime from the token endpoint's answer; else AuthenticationError."""
        where = f"the token endpoint {mask_path(self.token_url)}"
        try:
            body = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            body = {}
        if response.status_code == 200:
            token = body.get("access_token")
            kind = body.get("token_type", "Bearer")
            # RFC 6749: visible ASCII. Anything else is refused, not trimmed into another token.
            if not isinstance(token, str) or not _VISIBLE_ASCII.fullmatch(token):
                raise AuthenticationError(401, f"{where} answered without a usable access_token")
            if not isinstance(kind, str) or kind.lower() != "bearer":
                shown = kind if isinstance(kind, str) else type(kind).__name__
                raise AuthenticationError(
                    401, f"{where} issued a token of type {shown[:40]!r}; only Bearer tokens can be sent"
                )
            return token, _lifetime(body.get("expires_in"))
        error, description = body.get("error"), body.get("error_description")
        if isinstance(error, str) and error:
            why = error if not isinstance(description, str) or not description else f"{error}: {description}"
        else:
            why = f"HTTP {response.status_code}"
        why = scrub(why[:500], [self._secret])
        status = response.status_code if 400 <= response.status_code < 600 else 401
        raise AuthenticationError(
            status,
            f"{where} refused client {self.client_id!r} ({why})",
            code=error if isinstance(error, str) else None,
        )

    # ------------------------------------------------------------ the flow

    def _flow(self, request: httpx.Request) -> Generator[httpx.Request | _Wait, httpx.Response | None, None]:
        """The steps of one request, for both drivers: a request to send, or a token request to wait for."""
        for attempt in (1, 2):
            while True:
                header, future, ours = self._claim()
                if header is not None:
                    break
                assert future is not None
                if not ours:
                    yield _Wait(future, _seconds(request))
                    continue
                try:
                    asked_at = time.monotonic()
                    response = yield self._token_request(request)
                    assert response is not None
                    token, lifetime = self._answer(response)
                except AuthenticationError as exc:
                    self._settle(future, error=exc)
                    raise
                except BaseException:
                    self._settle(future)
                    raise
                self._settle(future, token=(token, lifetime, asked_at))
                header = f"Bearer {token}"
                break
            request.headers["Authorization"] = header
            response = yield request
            if response is None or response.status_code != 401 or attempt == 2:
                return
            # Refused: this token is spent (unless another request has replaced it already).
            self.invalidate(header)

    # Both drivers are written out (httpx's default drives ``auth_flow`` and reads every answer in full when
    # ``requires_response_body`` is set): waiting for another request's token differs between threads and
    # event loops, and only the token answer is read here, so that the API's answer stays the caller's to
    # read within its bounds.

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self._flow(request)
        try:
            step = next(flow)
            while True:
                reply: httpx.Response | None = None
                if isinstance(step, _Wait):
                    if not _wait(step):
                        self._drop(step.future)
                else:
                    reply = yield step
                    if step is not request:
                        reply.read()  # the token answer; the API's answer is the caller's to read
                step = flow.send(reply)
        except StopIteration:
            return
        finally:
            flow.close()

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self._flow(request)
        try:
            step = next(flow)
            while True:
                reply: httpx.Response | None = None
                if isinstance(step, _Wait):
                    if not await _wait_async(step):
                        self._drop(step.future)
                else:
                    reply = yield step
                    if step is not request:
                        await reply.aread()
                step = flow.send(reply)
        except StopIteration:
            return
        finally:
            flow.close()


def _wait(step: _Wait) -> bool:
    """Wait for another request's token request; False when it took too long (it is stuck)."""
    try:
        step.future.result(timeout=step.seconds)
    except concurrent.futures.TimeoutError:
        return False
    except AuthenticationError as exc:
        raise _again(exc) from None
    return True


async def _wait_async(step: _Wait) -> bool:
    # Shielded: a waiter that is cancelled must not cancel the token request others wait for.
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(step.future)), step.seconds)
    except TimeoutError:
        return False
    except AuthenticationError as exc:
        raise _again(exc) from None
    return True


def _again(exc: AuthenticationError) -> AuthenticationError:
    """The same refusal as a new exception: each request that meets it raises its own."""
    return AuthenticationError(exc.status, exc.message, code=exc.code)


def _seconds(request: httpx.Request) -> float:
    """How long a token request sent like ``request`` may take at most (else 5 minutes)."""
    timeout = request.extensions.get("timeout") or {}
    values = [v for v in timeout.values() if v is not None] if isinstance(timeout, dict) else []
    return sum(values) if values and len(values) == len(timeout) else 300.0


def _lifetime(value: Any) -> float | None:
    """``expires_in`` as seconds: a positive finite number, or its text in ASCII digits; else None (not said)."""
    if isinstance(value, str):
        # float() would also read 'inf', '1_000' and '١٢٠'.
        if not _SECONDS.fullmatch(value):
            return None
        value = float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf:
        return float(value)
    return None


def _problems(
    token_url: Any, client_id: Any, client_secret: Any, scope: Any, refresh_margin: Any, client_auth: Any
) -> list[Problem]:
    problems = []
    if not isinstance(token_url, str) or not token_url.lower().startswith(("http://", "https://")):
        shown = mask_url(token_url) if isinstance(token_url, str) else token_url
        problems.append(Problem("token_url", f"must be an http(s) URL, not {shown!r}"))
    if not isinstance(client_id, str) or not client_id:
        problems.append(Problem("client_id", "is required: the OAuth2 client's id"))
    if not isinstance(client_secret, str) or not client_secret:
        problems.append(Problem("client_secret", "is required: the OAuth2 client's secret (a text)"))
    if scope is not None and not isinstance(scope, str):
        problems.append(Problem("scope", f"must be a text (scopes separated by spaces), not {type(scope).__name__}"))
    if refresh_margin is not None and (
        not isinstance(refresh_margin, (int, float)) or isinstance(refresh_margin, bool) or not refresh_margin >= 0
    ):
        problems.append(Problem("refresh_margin", f"must be a number of seconds ≥ 0, not {refresh_margin!r}"))
    if client_auth not in ("basic", "form"):
        problems.append(Problem("client_auth", f"must be 'basic' or 'form', not {client_auth!r}"))
    return problems


# ---------------------------------------------------------------- what Client(auth=...) accepts


class _HeaderAuth(httpx.Auth):
    """A callable that returns headers, as an ``httpx.Auth``: called for every request."""

    def __init__(self, make: Callable[[], Mapping[str, str]]) -> None:
        self._make = make

    def __repr__(self) -> str:
        return f"{describe(self._make)}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        headers = self._make()
        if not isinstance(headers, Mapping):
            raise BatchValidationError(
                [Problem("auth", f"the callable must return a mapping of headers, not {type(headers).__name__}")]
            )
        request.headers.update({str(k): str(v) for k, v in headers.items()})
        yield request


def auth_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as ``Client(auth=...)``, or None.

    >>> auth_problem("query")
    "'query' is now written credentials_in='query'; auth= takes an httpx.Auth"
    """
    if value is None or isinstance(value, httpx.Auth):
        return None
    if isinstance(value, str) and value in ("header", "query"):
        return f"{value!r} is now written credentials_in={value!r}; auth= takes an httpx.Auth"
    if callable(value):
        return None
    return f"must be an httpx.Auth or a callable returning headers, not {type(value).__name__}"


def as_auth(value: Any) -> httpx.Auth | None:
    """What ``Client(auth=value)`` sends with: an ``httpx.Auth`` as it is, a callable wrapped."""
    problem = auth_problem(value)
    if problem is not None:
        raise BatchValidationError([Problem("auth", problem)])
    if value is None or isinstance(value, httpx.Auth):
        return value
    return _HeaderAuth(value)


def describe(value: Any) -> str:
    """How a repr names an auth: its type (or function) only, never what it holds.

    >>> describe(ClientCredentials("https://login.example/token", "id", "secret"))
    'ClientCredentials(...)'
    """
    if isinstance(value, _HeaderAuth):
        return describe(value._make)
    if isinstance(value, httpx.Auth):
        return f"{type(value).__name__}(...)"
    name = getattr(value, "__qualname__", None) or type(value).__name__
    return f"{name}()"


def refreshes(auth: Any) -> bool:
    """Whether ``auth`` can be told that its token was refused (it has ``invalidate``)."""
    return callable(getattr(auth, "invalidate", None))
