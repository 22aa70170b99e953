"""How a request leaves batchnb: connection settings in, ``httpx.AsyncClient`` out, failures in words.

Every sender builds its HTTP client here: the client's batch and direct
modes, the gateway (``batchnb serve --upstream``), ``batchnb run`` and the
dask workers. The settings are httpx's, with httpx's names and meanings:

- ``verify``: True (the system's or certifi's CAs; with ``trust_env``,
  ``SSL_CERT_FILE`` or else ``SSL_CERT_DIR`` as httpx reads them), False (no
  check at all), a CA file or directory, or an ``ssl.SSLContext``;
- ``cert``: a client certificate (a PEM file holding certificate and key, or
  a ``(cert, key)`` pair of files);
- ``proxy``: a proxy URL (``http``, ``https``, ``socks5``, ``socks5h``) or an
  ``httpx.Proxy``; with ``trust_env`` and no ``proxy``, ``HTTP_PROXY``,
  ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` decide, as httpx does;
- ``http2``, ``event_hooks`` (sync or async callables alike).

A failure to reach the API is described by :func:`unreached`: a certificate
that does not verify, a proxy that refuses, a host that does not resolve say
so, and are marked as not worth a retry.
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import inspect
import os
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from typing import Any, Union

import httpx

from ._exceptions import BatchValidationError, Problem
from ._secrets import mask_url

__all__ = ["Connection", "Unreached", "mask_url", "unreached"]

Verify = Union[bool, str, "os.PathLike[str]", ssl.SSLContext]
Cert = Union[str, "os.PathLike[str]", tuple[Union[str, "os.PathLike[str]"], Union[str, "os.PathLike[str]"]]]

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
HOOK_KINDS = ("request", "response")
#: the variables httpx reads for proxies (any case), with trust_env.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class Unreached(Exception):
    """A request that never reached the API: the connection, TLS or the proxy failed first.

    ``transient`` says whether trying again may help (a refused connection
    may be a server restarting; a certificate that does not verify will not
    verify next time). The httpx exception is its ``__cause__``.

    >>> Unreached("could not connect to http://127.0.0.1:9 (ConnectError)", transient=True).transient
    True
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


@dataclass(frozen=True)
class Connection:
    """The settings every HTTP client of a run is made with.

    >>> Connection(verify=False).problems()
    []
    >>> [str(p) for p in Connection(verify="no/such/ca.pem").problems()]
    ["verify: 'no/such/ca.pem' does not exist: give the CA bundle's file (PEM) or a directory of CA files"]
    >>> Connection(proxy="http://alice:s3cret@proxy.corp:3128")
    Connection(proxy='http://***@proxy.corp:3128')
    """

    verify: Verify = True
    cert: Cert | None = None
    proxy: str | httpx.Proxy | None = None
    trust_env: bool = True
    http2: bool = False
    event_hooks: Mapping[str, Sequence[Callable[..., Any]]] | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        shown = self.settings()
        return f"Connection({', '.join(f'{k}={v}' for k, v in shown.items())})"

    def settings(self) -> dict[str, str]:
        """The settings that differ from httpx's defaults, as they may be shown (no password)."""
        shown: dict[str, str] = {}
        if self.verify is not True:
            if isinstance(self.verify, ssl.SSLContext):
                shown["verify"] = "<ssl.SSLContext>"
            else:
                shown["verify"] = repr(self.verify if isinstance(self.verify, bool) else _text(self.verify))
        if self.cert is not None:
            shown["cert"] = repr(
                tuple(_text(c) for c in self.cert) if isinstance(self.cert, tuple) else _text(self.cert)
            )
        if self.proxy is not None:
            shown["proxy"] = repr(mask_url(_proxy_url(self.proxy)))
        if not self.trust_env:
            shown["trust_env"] = "False"
        if self.http2:
            shown["http2"] = "True"
        if self.event_hooks:
            shown["event_hooks"] = repr({k: len(v) for k, v in self.event_hooks.items()})
        return shown

    # ------------------------------------------------------------ checking

    def problems(self, names: Mapping[str, str] | None = None) -> list[Problem]:
        """Every problem of these settings, found before anything is sent (files, schemes, packages).

        ``names`` renames the pointers (``{"verify": "--cacert"}`` for the command line).
        """
        name = {k: k for k in ("verify", "cert", "proxy", "trust_env", "http2", "event_hooks")}
        name["key"] = "cert[1]"
        name.update(names or {})
        found: list[Problem] = []
        found += self._verify_problems(name["verify"])
        found += self._cert_problems(name["cert"], name["key"])
        found += self._proxy_problems(name["proxy"])
        if not isinstance(self.trust_env, bool):
            found.append(Problem(name["trust_env"], f"must be True or False, not {self.trust_env!r}"))
        if not isinstance(self.http2, bool):
            found.append(Problem(name["http2"], f"must be True or False, not {self.http2!r}"))
        elif self.http2 and importlib.util.find_spec("h2") is None:
            found.append(Problem(name["http2"], "needs the h2 package: pip install 'httpx[http2]'"))
        found += _hook_problems(self.event_hooks, name["event_hooks"])
        if not found and self._given_tls():
            # Read every file now, as the client will: a file that is not PEM, a key that does not match.
            try:
                self.ssl_context()
            except _EncryptedKey:
                found.append(Problem(name["key"], "the key is encrypted: give a key file without a passphrase"))
            except (ssl.SSLError, OSError, ValueError) as exc:
                where = name["cert"] if self.cert is not None else name["verify"]
                found.append(Problem(where, f"could not be loaded: {_ssl_reason(exc)}"))
        return found

    def check(self, names: Mapping[str, str] | None = None) -> None:
        """Raise :class:`~batchnb.BatchValidationError` with every problem, if there is one."""
        found = self.problems(names)
        if found:
            raise BatchValidationError(found)

    def _given_tls(self) -> bool:
        return self.cert is not None or isinstance(self.verify, (str, os.PathLike))

    def _verify_problems(self, pointer: str) -> list[Problem]:
        verify = self.verify
        if isinstance(verify, (bool, ssl.SSLContext)):
            if verify is True and self.trust_env:
                variable, value = _env_ca()
                if variable == "SSL_CERT_FILE" and not os.path.isfile(value):
                    return [
                        Problem("SSL_CERT_FILE", f"{value!r} is not a file: set it to a CA bundle (PEM), or unset it")
                    ]
                if variable == "SSL_CERT_DIR" and not os.path.isdir(value):
                    return [Problem("SSL_CERT_DIR", f"{value!r} is not a directory of CA files, or unset it")]
            return []
        if not isinstance(verify, (str, os.PathLike)):
            return [
                Problem(
                    pointer,
                    f"must be True, False, a CA file or directory, or an ssl.SSLContext, not {type(verify).__name__}",
                )
            ]
        if not os.path.exists(verify):
            return [
                Problem(
                    pointer,
                    f"{_text(verify)!r} does not exist: give the CA bundle's file (PEM) or a directory of CA files",
                )
            ]
        return []

    def _cert_problems(self, pointer: str, key_pointer: str) -> list[Problem]:
        cert = self.cert
        if cert is None:
            return []
        if isinstance(cert, tuple):
            if len(cert) != 2:
                return [Problem(pointer, "must be a file, or a (certificate, key) pair of files")]
            pairs = [(pointer, cert[0]), (key_pointer, cert[1])]
        else:
            pairs = [(pointer, cert)]
        found = []
        for where, path in pairs:
            if not isinstance(path, (str, os.PathLike)):
                found.append(Problem(where, f"must be a file's path, not {type(path).__name__}"))
            elif not os.path.isfile(path):
                found.append(Problem(where, f"{_text(path)!r} is not a file"))
        if not found and isinstance(self.verify, ssl.SSLContext):
            found.append(
                Problem(pointer, "with verify=<ssl.SSLContext>, load the certificate into it (ctx.load_cert_chain)")
            )
        return found

    def _proxy_problems(self, pointer: str) -> list[Problem]:
        if self.proxy is not None:
            if not isinstance(self.proxy, (str, httpx.Proxy)):
                return [Problem(pointer, f"must be a URL or an httpx.Proxy, not {type(self.proxy).__name__}")]
            return _proxy_url_problems(_proxy_url(self.proxy), pointer)
        if not self.trust_env:
            return []
        found = []
        for variable, value in _proxy_variables():
            url = value if "://" in value else f"http://{value}"  # as httpx reads it
            found += _proxy_url_problems(url, variable)
        return found

    # ------------------------------------------------------------ making clients

    def ssl_context(self) -> ssl.SSLContext:
        """One context holding the CAs and the client certificate.

        httpx 0.29 drops ``cert=`` when ``verify`` is a path: everything goes
        into one context, handed to httpx as ``verify``.
        """
        verify = self.verify
        if isinstance(verify, ssl.SSLContext):
            return verify
        if verify is False:
            trust: tuple[Any, ...] = ("none",)
        elif verify is True:
            variable, value = _env_ca() if self.trust_env else ("", "")
            if variable:
                trust = (variable, value, _stamp(value))
            else:
                import certifi

                trust = ("SSL_CERT_FILE", certifi.where(), _stamp(certifi.where()))
        else:
            path = os.fspath(verify)
            trust = ("SSL_CERT_DIR" if os.path.isdir(path) else "SSL_CERT_FILE", path, _stamp(path))
        cert: tuple[Any, ...] = ()
        if self.cert is not None:
            certfile, keyfile = self.cert if isinstance(self.cert, tuple) else (self.cert, None)
            paths = (os.fspath(certfile), None if keyfile is None else os.fspath(keyfile))
            cert = (*paths, _stamp(paths[0]), _stamp(paths[1]))
        return _context(trust, self.http2, cert)

    def client(
        self,
        *,
        timeout: float | httpx.Timeout,
        transport: httpx.AsyncBaseTransport | None = None,
        cookies: CookieJar | None = None,
        limits: httpx.Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` with these settings; a ``transport`` given wins over them (as in httpx).

        ``limits`` sizes its pool (httpx's default without), and ``ssl_context``
        is :meth:`ssl_context` made once by a caller that makes many clients.
        """
        hooks = _async_hooks(self.event_hooks)
        if transport is not None:
            return httpx.AsyncClient(
                timeout=timeout, transport=transport, trust_env=False, cookies=cookies, event_hooks=hooks
            )
        return httpx.AsyncClient(
            timeout=timeout,
            verify=ssl_context or self.ssl_context(),
            proxy=self.proxy,
            limits=limits or httpx.Limits(max_connections=100, max_keepalive_connections=20),  # httpx's own default
            trust_env=self.trust_env,
            http2=self.http2,
            cookies=cookies,
            event_hooks=hooks,
        )

    def proxy_for(self, url: str) -> str | None:
        """The proxy a request to ``url`` goes through (masked), or None."""
        if self.proxy is not None:
            return mask_url(_proxy_url(self.proxy))
        if not self.trust_env:
            return None
        try:
            # httpx's own reading of the environment (NO_PROXY included), matched as httpx matches mounts.
            from httpx._utils import URLPattern, get_environment_proxies

            target = httpx.URL(url)
            for pattern, proxy in sorted((URLPattern(k), v) for k, v in get_environment_proxies().items()):
                if pattern.matches(target):
                    return None if proxy is None else mask_url(proxy)
        except Exception:  # noqa: BLE001 - a private helper that moved: the proxy stays unnamed
            return None
        return None


# ---------------------------------------------------------------- what went wrong, in words


def unreached(exc: BaseException, url: str, proxy: str | None = None) -> Unreached:
    """What a connection failure means, for a request to ``url`` (its origin is named, never its query).

    >>> import httpx
    >>> unreached(httpx.ConnectError("[Errno 111] Connection refused"), "http://127.0.0.1:9/x?token=t").message
    'could not connect to http://127.0.0.1:9 (ConnectError: [Errno 111] Connection refused)'

    The result's ``__cause__`` is ``exc``.
    """
    origin = _origin(url)
    verify = _in_chain(exc, ssl.SSLCertVerificationError)
    resolve = _in_chain(exc, socket.gaierror)
    tls = _in_chain(exc, ssl.SSLError)
    if verify is not None:
        reason = getattr(verify, "verify_message", None) or _ssl_reason(verify)
        if getattr(verify, "verify_code", None) == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
            hint = "the certificate is for another host name: use the name it was issued for"
        else:
            hint = 'pass verify="ca.pem" (the CA that issued it) or set SSL_CERT_FILE'
        out = Unreached(f"certificate verify failed for {origin}: {reason}; {hint}", transient=False)
    elif isinstance(exc, httpx.ProxyError):
        who = f"the proxy {proxy}" if proxy else "the proxy"
        text = _scrub(str(exc)) or type(exc).__name__
        if text.startswith("407"):
            out = Unreached(
                f"{who} refused the request to {origin}: {text} (check the proxy's user and password)",
                transient=False,
            )
        else:
            out = Unreached(f"{who} could not open a tunnel to {origin}: {text}", transient=True)
    elif resolve is not None:
        # EAI_AGAIN: the resolver could not answer this time; any other answer is final.
        transient = resolve.errno == getattr(socket, "EAI_AGAIN", None)
        out = Unreached(
            f"the host {httpx.URL(url).host!r} could not be resolved ({resolve.strerror or resolve}); check the URL",
            transient=transient,
        )
    elif tls is not None:
        out = Unreached(f"the TLS handshake with {origin} failed: {_ssl_reason(tls)}", transient=False)
    else:
        text = _scrub(str(exc))
        through = f" through the proxy {proxy}" if proxy else ""
        refused = isinstance(_in_chain(exc, OSError), ConnectionRefusedError) or (
            getattr(_in_chain(exc, OSError), "errno", None) == errno.ECONNREFUSED
        )
        what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        out = Unreached(
            f"could not connect to {origin}{through} ({'connection refused' if refused and not text else what})",
            transient=True,
        )
    out.__cause__ = exc
    return out


class ProxyRefused(httpx.ProxyError):
    """A proxy that answered 407 to a request forwarded through it (httpx raises nothing for those)."""


def proxy_refused(response: httpx.Response) -> ProxyRefused | None:
    """407 means a proxy wants credentials: the request never reached the API (RFC 9110 §15.5.8)."""
    if response.status_code != 407:
        return None
    return ProxyRefused(f"407 {response.reason_phrase or 'Proxy Authentication Required'}")


def _in_chain(exc: BaseException, kind: type[BaseException]) -> Any:
    """The first exception of ``kind`` in ``exc``'s chain of causes and contexts, or None."""
    for e in _chain(exc):
        if isinstance(e, kind):
            return e
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen and len(seen) < 20:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _origin(url: str) -> str:
    try:
        u = httpx.URL(url)
        default = {"http": 80, "https": 443}.get(u.scheme)
        port = f":{u.port}" if u.port is not None and u.port != default else ""
        host = f"[{u.host}]" if ":" in u.host else u.host
        return f"{u.scheme}://{host}{port}"
    except Exception:  # noqa: BLE001 - a URL httpx cannot read: show it masked
        return mask_url(url)


def _scrub(text: str) -> str:
    """An exception's text as it may be shown: URLs masked, and not a page long."""
    text = mask_url(text.strip())
    return text if len(text) <= 300 else text[:300] + "…"


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(exc, ssl.SSLError) and isinstance(reason, str) and reason:
        return reason.replace("_", " ").lower() if reason.isupper() else reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _scrub(str(exc)) or type(exc).__name__


# ---------------------------------------------------------------- helpers


class _EncryptedKey(Exception):
    """A key file that wants a passphrase: never prompted for (a notebook has no terminal)."""


def _no_password() -> str:
    raise _EncryptedKey()


def _text(path: Any) -> str:
    return os.fspath(path) if isinstance(path, os.PathLike) else str(path)


def _proxy_url(proxy: str | httpx.Proxy) -> str:
    if isinstance(proxy, httpx.Proxy):
        return str(proxy.url)
    return str(proxy)


def _proxy_url_problems(url: str, pointer: str) -> list[Problem]:
    try:
        u = httpx.URL(url)
    except Exception:  # noqa: BLE001 - anything httpx cannot parse
        return [Problem(pointer, f"{mask_url(url)!r} is not a URL")]
    if u.scheme not in PROXY_SCHEMES or not u.host:
        return [
            Problem(pointer, f"{mask_url(url)!r} is not a proxy URL: use http://, https://, socks5:// or socks5h://")
        ]
    if u.scheme.startswith("socks") and importlib.util.find_spec("socksio") is None:
        return [Problem(pointer, "a SOCKS proxy needs the socksio package: pip install 'httpx[socks]'")]
    return []


def _proxy_variables() -> list[tuple[str, str]]:
    """The proxy variables set in the environment, under the name they were set with."""
    out = []
    for name in PROXY_VARIABLES:
        for variable in (name, name.lower()):
            value = os.environ.get(variable)
            if value:
                out.append((variable, value))
                break
    return out


def _stamp(path: str | None) -> int | None:
    """When ``path`` last changed: a CA file replaced on disk makes a new context, not a stale one."""
    try:
        return os.stat(path).st_mtime_ns if path else None
    except OSError:
        return None


@functools.lru_cache(maxsize=32)
def _context(trust: tuple[Any, ...], http2: bool, cert: tuple[Any, ...]) -> ssl.SSLContext:
    """The SSL context for these settings, made once per process.

    Loading a CA bundle takes tens of milliseconds, and every sync call
    makes a client of its own: contexts are shared (an ``ssl.SSLContext``
    serves any number of connections), keyed by the files' paths and the
    times they last changed.
    """
    if trust[0] == "none":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif trust[0] == "SSL_CERT_DIR":
        ctx = ssl.create_default_context(capath=trust[1])
    else:
        ctx = ssl.create_default_context(cafile=trust[1])
    if http2:
        ctx.set_alpn_protocols(["http/1.1", "h2"])
    if cert:
        ctx.load_cert_chain(cert[0], cert[1], password=_no_password)
    return ctx


def _env_ca() -> tuple[str, str]:
    """The CA variable httpx reads with trust_env and verify=True (SSL_CERT_FILE first), and its value."""
    for variable in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        value = os.environ.get(variable)
        if value:
            return variable, value
    return "", ""


def _hook_problems(hooks: Any, pointer: str) -> list[Problem]:
    if hooks is None:
        return []
    if not isinstance(hooks, Mapping):
        return [Problem(pointer, "must be a dict such as {'request': [f], 'response': [g]}")]
    found = []
    for kind, fns in hooks.items():
        if kind not in HOOK_KINDS:
            found.append(Problem(f"{pointer}[{kind!r}]", "must be 'request' or 'response'"))
        elif not isinstance(fns, (list, tuple)) or not all(callable(f) for f in fns):
            found.append(Problem(f"{pointer}[{kind!r}]", "must be a list of functions"))
    return found


def _async_hooks(hooks: Mapping[str, Sequence[Callable[..., Any]]] | None) -> dict[str, list[Callable[..., Any]]]:
    """The hooks as ``httpx.AsyncClient`` calls them: a plain function works as well as a coroutine function."""

    def wrapped(fn: Callable[..., Any]) -> Callable[..., Any]:
        async def call(x: Any) -> None:
            result = fn(x)
            if inspect.isawaitable(result):
                await result

        return call

    return {kind: [wrapped(f) for f in fns] for kind, fns in (hooks or {}).items()}
