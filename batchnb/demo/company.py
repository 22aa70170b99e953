"""A demo API guarded the way a company's API is: a private CA, OAuth2 tokens that expire, a rate limit.

    python -m batchnb.demo.company --tls ./company --token-ttl 20 --rate 50

The Scheduling demo is open to anyone on loopback; this one makes a client do
what a real API at work makes it do, so that every such path can be tried on
a laptop (notebook 07, the tests, ``benchmarks/ratelimit.py``):

- **TLS from a private CA** (``--tls DIR``): a CA made on the spot is written
  to ``DIR/ca.pem``; the API serves HTTPS for ``127.0.0.1`` and ``localhost``
  with a certificate it signed, so a client that trusts only the usual CAs
  fails as it would at work.
- **OAuth2 client credentials** (RFC 6749 §4.4): ``POST /oauth/token`` with
  ``grant_type=client_credentials`` and the client's id and secret (HTTP Basic
  or form fields) answers ``{"access_token", "token_type": "Bearer",
  "expires_in"}``; tokens live ``--token-ttl`` seconds. Every ``/api/...``
  request needs a live token, else 401 with ``WWW-Authenticate: Bearer
  error="invalid_token", error_description="..."`` (RFC 6750 §3) and the same
  two fields in a JSON body.
- **A rate limit per client** (``--rate N``): at most N requests to ``/api/...``
  in any second per client id, else 429 with ``Retry-After`` and, per
  ``--ratelimit-headers``, the IETF ``RateLimit-Policy``/``RateLimit`` fields
  or the common ``X-RateLimit-*`` headers (on every answer, as APIs send them).
- **Latency** (``--delay S``): every ``/api/...`` request is answered after S seconds.

The resource is ``/api/things``: ``POST`` creates (201, ``{"id": "th_1", ...body}``),
``GET``/``PUT``/``PATCH``/``DELETE /api/things/{id}``. ``GET /_stats`` (no
token) counts what happened, duplicates included: a created body whose
``"key"`` field an earlier create had. ``POST /_refuse`` with ``{"on": true}``
makes the API refuse every token (a revoked client) until ``{"on": false}``.

The client secret comes from ``BATCHNB_COMPANY_CLIENT_SECRET`` (never an
argument, which ``ps`` would show); :class:`CompanyAPI` runs the process and
knows it.

Not run as a doctest (it starts a process of its own):

    >>> with CompanyAPI(token_ttl=20, rate=50) as api:          # doctest: +SKIP
    ...     api.url, api.token_url, api.client_id
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import itertools
import math
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson

__all__ = ["CompanyAPI", "CompanyApp"]

SECRET_VARIABLE = "BATCHNB_COMPANY_CLIENT_SECRET"
DEFAULT_CLIENT_ID = "analyst"
#: bytes of one request body this API reads.
MAX_BODY = 1024 * 1024
RateLimitHeaders = Literal["ietf", "x", "none"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _Answer(Exception):
    """An answer decided before the handler ran (401, 429, 400...)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


class CompanyApp:
    """The ASGI app: token endpoint, guarded ``/api/things``, stats.

    >>> app = CompanyApp(client_id="analyst", client_secret="s3cret", token_ttl=20, rate=50)
    >>> app.stats()["requests"]
    0
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        token_ttl: float = 3600.0,
        rate: int | None = None,
        ratelimit_headers: RateLimitHeaders = "ietf",
        delay: float = 0.0,
    ) -> None:
        self._client = (client_id, client_secret)
        self.token_ttl = token_ttl
        self.rate = rate
        self.ratelimit_headers = ratelimit_headers
        self.delay = delay
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (client id, expires at)
        self._windows: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._things: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._keys: set[Any] = set()
        self._refusing = False
        self._in_flight = 0
        self._counts: dict[str, Any] = {
            "requests": 0,
            "created": 0,
            "duplicates": 0,
            "tokens": 0,
            "token_requests": 0,
            "max_in_flight": 0,
            "status": collections.Counter(),
        }

    def __repr__(self) -> str:
        return f"CompanyApp(client_id={self._client[0]!r}, token_ttl={self.token_ttl:g}, rate={self.rate})"

    def stats(self) -> dict[str, Any]:
        """What the API has seen: requests, creates, duplicates, tokens issued, answers by status."""
        out = dict(self._counts)
        out["status"] = {str(k): v for k, v in sorted(self._counts["status"].items())}
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            body = await _read(receive)
            if path == "/oauth/token":
                status, answer, extra = self._token(method, headers, body)
            elif path == "/_stats" and method == "GET":
                status, answer, extra = 200, self.stats(), {}
            elif path == "/_refuse" and method == "POST":
                self._refusing = bool(_json(body).get("on", True))
                status, answer, extra = 200, {"refusing": self._refusing}, {}
            elif path == "/api" or path.startswith("/api/"):
                status, answer, extra = await self._api(method, path, headers, body)
            else:
                status, answer, extra = 404, {"error": "not_found", "error_description": f"{path} is not here"}, {}
        except _Answer as a:
            status, answer, extra = a.status, a.body, a.headers
        if path.startswith("/api"):
            self._counts["status"][status] += 1
        await _send(send, status, answer, extra)

    # ------------------------------------------------------------ OAuth2

    def _token(self, method: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        self._counts["token_requests"] += 1
        if method != "POST":
            raise _Answer(405, {"error": "invalid_request", "error_description": "use POST"}, {"allow": "POST"})
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if form.get("grant_type") != "client_credentials":
            raise _Answer(400, {"error": "unsupported_grant_type", "error_description": "only client_credentials"})
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, client_secret = base64.b64decode(value, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                client_id = client_secret = None
        given = (client_id or "", client_secret or "")
        if not (
            secrets.compare_digest(given[0], self._client[0]) and secrets.compare_digest(given[1], self._client[1])
        ):
            challenge = {"www-authenticate": 'Basic realm="company"'}
            raise _Answer(
                401, {"error": "invalid_client", "error_description": "unknown client or wrong secret"}, challenge
            )
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (given[0], time.monotonic() + self.token_ttl)
        self._counts["tokens"] += 1
        answer = {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl}
        if form.get("scope"):
            answer["scope"] = form["scope"]
        return 200, answer, {"cache-control": "no-store"}

    def _client_of(self, headers: dict[str, str]) -> str:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _Answer(
                401,
                {"error": "unauthorized", "error_description": "a Bearer token is required"},
                {"www-authenticate": 'Bearer realm="company"'},
            )
        token = token.strip(" \t")  # HTTP's white space: str.strip() would read 'tok\xa0' as 'tok'
        held = self._tokens.get(token)
        now = time.monotonic()
        # Expired tokens are dropped as they are met: the table holds live tokens and a few dead ones.
        if held is not None and held[1] <= now:
            del self._tokens[token]
        if held is None or held[1] <= now or self._refusing:
            why = (
                "the access token expired"
                if held is not None and not self._refusing
                else "the access token is not valid"
            )
            challenge = f'Bearer realm="company", error="invalid_token", error_description="{why}"'
            raise _Answer(401, {"error": "invalid_token", "error_description": why}, {"www-authenticate": challenge})
        return held[0]

    # ------------------------------------------------------------ the rate limit

    def _admit(self, client: str) -> dict[str, str]:
        """The rate-limit headers for this request, or the 429 that refuses it."""
        if self.rate is None:
            return {}
        window = self._windows[client]
        now = time.monotonic()
        while window and window[0] <= now - 1.0:
            window.popleft()
        reset = max(1, math.ceil(window[0] + 1.0 - now)) if window else 1
        if len(window) >= self.rate:
            headers = self._limit_headers(0, reset)
            headers["retry-after"] = str(reset)
            message = f"more than {self.rate} requests in one second; retry after {reset} s"
            raise _Answer(429, {"error": "rate_limited", "error_description": message}, headers)
        window.append(now)
        return self._limit_headers(self.rate - len(window), reset)

    def _limit_headers(self, remaining: int, reset: int) -> dict[str, str]:
        if self.ratelimit_headers == "ietf":
            return {
                "ratelimit-policy": f'"default";q={self.rate};w=1',
                "ratelimit": f'"default";r={remaining};t={reset}',
            }
        if self.ratelimit_headers == "x":
            return {
                "x-ratelimit-limit": str(self.rate),
                "x-ratelimit-remaining": str(remaining),
                "x-ratelimit-reset": str(reset),
            }
        return {}

    # ------------------------------------------------------------ the resource

    async def _api(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        self._counts["requests"] += 1
        self._in_flight += 1
        self._counts["max_in_flight"] = max(self._counts["max_in_flight"], self._in_flight)
        try:
            client = self._client_of(headers)
            limit = self._admit(client)
            if self.delay:
                await asyncio.sleep(self.delay)
            status, answer, extra = self._things_route(method, path, body)
            return status, answer, {**limit, **extra}
        finally:
            self._in_flight -= 1

    def _things_route(self, method: str, path: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        parts = path.strip("/").split("/")
        if parts[:2] != ["api", "things"] or len(parts) > 3:
            raise _Answer(404, {"error": "not_found", "error_description": f"{path} is not here"})
        if len(parts) == 2:
            if method == "POST":
                data = _json(body)
                key = data.get("key")
                if key is not None:
                    if orjson.dumps(key) in self._keys:
                        self._counts["duplicates"] += 1
                    self._keys.add(orjson.dumps(key))
                thing = {"id": f"th_{next(self._ids)}", **data}
                self._things[thing["id"]] = thing
                self._counts["created"] += 1
                return 201, thing, {"location": f"/api/things/{thing['id']}"}
            if method == "GET":
                return 200, {"things": list(self._things.values())[:100], "total": len(self._things)}, {}
            raise _Answer(
                405, {"error": "method_not_allowed", "error_description": f"{method} {path}"}, {"allow": "GET, POST"}
            )
        thing_id = parts[2]
        if thing_id not in self._things and method != "PUT":
            raise _Answer(404, {"error": "not_found", "error_description": f"no thing {thing_id!r}"})
        if method == "GET":
            return 200, self._things[thing_id], {}
        if method == "PUT":
            self._things[thing_id] = {**_json(body), "id": thing_id}
            return 200, self._things[thing_id], {}
        if method == "PATCH":
            self._things[thing_id] = {**self._things[thing_id], **_json(body), "id": thing_id}
            return 200, self._things[thing_id], {}
        if method == "DELETE":
            del self._things[thing_id]
            return 204, None, {}
        raise _Answer(
            405,
            {"error": "method_not_allowed", "error_description": f"{method} {path}"},
            {"allow": "GET, PUT, PATCH, DELETE"},
        )


async def _read(receive: Receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _Answer(413, {"error": "too_large", "error_description": f"the body is over {MAX_BODY} bytes"})
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _json(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _Answer(400, {"error": "invalid_request", "error_description": f"the body is not JSON: {exc}"}) from None
    if not isinstance(data, dict):
        raise _Answer(400, {"error": "invalid_request", "error_description": "the body must be a JSON object"})
    return data


async def _send(send: Send, status: int, answer: Any, headers: dict[str, str]) -> None:
    body = b"" if answer is None else orjson.dumps(answer)
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if body:
        raw.append((b"content-type", b"application/json"))
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- TLS from a private CA


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA made here and a server certificate it signed for 127.0.0.1 and localhost: (ca.pem, server.pem, server.key)."""
    from .._extras import require

    trustme = require("trustme", "testing", "the demo company API's private CA")
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="batchnb demo company CA")
    issued = ca.issue_cert("127.0.0.1", "localhost", "::1")
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key_file))
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


# ---------------------------------------------------------------- the process


def _serve(args: argparse.Namespace) -> None:
    from .._extras import require

    uvicorn = require("uvicorn", "server", "the demo company API")
    secret = os.environ.get(SECRET_VARIABLE)
    if not secret:
        raise SystemExit(f"company: set {SECRET_VARIABLE} to the client secret")
    app = CompanyApp(
        client_id=args.client_id,
        client_secret=secret,
        token_ttl=args.token_ttl,
        rate=args.rate,
        ratelimit_headers=args.ratelimit_headers,
        delay=args.delay,
    )
    tls: dict[str, Any] = {}
    if args.tls:
        _ca, cert, key = make_certificates(Path(args.tls))
        tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", **tls)
    server = uvicorn.Server(config)
    # The socket listens already: connections made from now on wait in its backlog.
    print(f"listening {sock.getsockname()[1]}", flush=True)
    asyncio.run(server.serve(sockets=[sock]))


def main(argv: list[str] | None = None) -> None:
    """``python -m batchnb.demo.company``: serve the API until killed."""
    p = argparse.ArgumentParser(prog="python -m batchnb.demo.company", description=(__doc__ or "").split("\n")[0])
    p.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one; the first line printed says it)"
    )
    p.add_argument("--tls", metavar="DIR", help="serve HTTPS with a private CA written to DIR/ca.pem")
    p.add_argument("--client-id", default=DEFAULT_CLIENT_ID, help="the OAuth2 client's id")
    p.add_argument("--token-ttl", type=float, default=3600.0, help="seconds a token lives")
    p.add_argument("--rate", type=int, help="requests per second per client on /api (default: no limit)")
    p.add_argument("--ratelimit-headers", choices=["ietf", "x", "none"], default="ietf", help="rate-limit headers sent")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before each /api answer")
    args = p.parse_args(argv)
    if args.token_ttl <= 0 or (args.rate is not None and args.rate <= 0) or args.delay < 0:
        p.error("--token-ttl and --rate must be positive, --delay not negative")
    _serve(args)


class CompanyAPI:
    """Runs the demo company API in a process of its own on loopback; stops it on exit.

    Not run as a doctest (it starts a process of its own):

    >>> with CompanyAPI(tls=True, token_ttl=20, rate=50) as api:     # doctest: +SKIP
    ...     client = bn.Client(api.url, mode="direct", verify=api.ca_file,
    ...                        auth=bn.auth.ClientCredentials(api.token_url, api.client_id, api.client_secret))

    ``tls`` writes a private CA into ``tmp`` (a temporary directory by
    default) and serves HTTPS; ``api.ca_file`` is its path. The client secret
    is random per run and never shown (``repr`` masks it).
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        token_ttl: float = 3600.0,
        rate: int | None = None,
        ratelimit_headers: RateLimitHeaders = "ietf",
        delay: float = 0.0,
        client_id: str = DEFAULT_CLIENT_ID,
        tmp: str | Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.tls = tls
        self.client_id = client_id
        self.client_secret = secrets.token_urlsafe(16)
        self._args = ["--token-ttl", str(token_ttl), "--ratelimit-headers", ratelimit_headers, "--delay", str(delay)]
        self._args += ["--client-id", client_id]
        if rate is not None:
            self._args += ["--rate", str(rate)]
        self._own_tmp = tempfile.TemporaryDirectory(prefix="batchnb-") if tls and tmp is None else None
        self._dir = Path(tmp) if tmp is not None else (Path(self._own_tmp.name) if self._own_tmp else None)
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __repr__(self) -> str:
        state = self.url or "not started"
        return f"CompanyAPI({state}, client_id={self.client_id!r}, client_secret=***)"

    @property
    def token_url(self) -> str:
        """The OAuth2 token endpoint."""
        return self.url + "/oauth/token"

    @property
    def ca_file(self) -> str | None:
        """The private CA's certificate (PEM), with ``tls``; else None."""
        return str(self._dir / "ca.pem") if self.tls and self._dir is not None else None

    def start(self) -> CompanyAPI:
        """Start the process and wait until it listens."""
        args = [sys.executable, "-m", "batchnb.demo.company", *self._args]
        if self.tls and self._dir is not None:
            args += ["--tls", str(self._dir)]
        env = {**os.environ, SECRET_VARIABLE: self.client_secret, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        first: list[str] = []
        reader = threading.Thread(
            target=lambda: first.append(self._proc.stdout.readline() if self._proc and self._proc.stdout else "")
        )
        reader.start()
        reader.join(self._start_timeout)
        line = first[0] if first else ""
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"the demo company API did not start within {self._start_timeout:g} s: {line.strip()}")
        port = int(line.split()[1])
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Stop the process (and remove its temporary directory)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._own_tmp is not None:
            self._own_tmp.cleanup()
            self._own_tmp = None

    def _admin(self, method: str, path: str, **kwargs: Any) -> Any:
        import ssl

        import httpx

        verify: Any = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
        r = httpx.request(method, self.url + path, verify=verify, trust_env=False, timeout=10, **kwargs)
        r.raise_for_status()
        return r.json()

    def stats(self) -> dict[str, Any]:
        """What the API has counted (``GET /_stats``)."""
        result: dict[str, Any] = self._admin("GET", "/_stats")
        return result

    def token(self) -> str:
        """A token for the client by the client-credentials grant (a plain POST, its CA trusted): for tests and benchmarks."""
        grant = {"grant_type": "client_credentials"}
        answer = self._admin("POST", "/oauth/token", data=grant, auth=(self.client_id, self.client_secret))
        return str(answer["access_token"])

    def refuse(self, on: bool = True) -> None:
        """Refuse every token from now on (a revoked client), or stop refusing."""
        self._admin("POST", "/_refuse", json={"on": on})

    def __enter__(self) -> CompanyAPI:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":
    main()
