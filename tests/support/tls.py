"""An ASGI app served over HTTPS on loopback, from a private CA made here; optionally asking for client certificates.

    with TLSServer(app, tmp_path) as server:             # any ASGI app (a batch gateway, say)
        server.url, server.ca_file
    with MutualTLS(tmp_path) as api:                     # a tiny API that wants a client certificate
        api.url, api.ca_file, api.client_cert, api.client_key

The tiny API answers every request ``200 {"ok": true, "path": ...}``; a
client that shows no certificate signed by its CA is refused.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from typing import Any

from . import free_port, wait_until

__all__ = ["MutualTLS", "TLSServer"]


async def _echo(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = ('{{"ok": true, "path": "{}"}}'.format(scope["path"])).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class TLSServer:
    """uvicorn in a thread, serving ``app`` with a certificate from a CA made by trustme."""

    def __init__(self, app: Any, directory: Path, *, require_client_cert: bool = False) -> None:
        import trustme

        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("analyst@example.org")
        self.ca_file = str(directory / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        self._server_pem = str(directory / "server.pem")
        server.private_key_and_cert_chain_pem.write_to_path(self._server_pem)
        self.client_cert = str(directory / "client-cert.pem")
        self.client_key = str(directory / "client-key.pem")
        for blob in client.cert_chain_pems:
            blob.write_to_path(self.client_cert, append=True)
        client.private_key_pem.write_to_path(self.client_key)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self._app = app
        self._require = require_client_cert
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TLSServer:
        import uvicorn

        mutual = {"ssl_ca_certs": self.ca_file, "ssl_cert_reqs": ssl.CERT_REQUIRED} if self._require else {}
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=self._server_pem,
            **mutual,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="mutual-tls")
        self._thread.start()
        wait_until(lambda: self._server.started, 20, "the HTTPS server did not start within 20 s")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)


class MutualTLS(TLSServer):
    """The tiny API that answers only clients showing a certificate signed by its CA."""

    def __init__(self, directory: Path) -> None:
        super().__init__(_echo, directory, require_client_cert=True)
