"""Connections as httpx makes them (verify, cert, proxy, the environment), in every mode, and failures in words.

Real parts: the demo company API over HTTPS from a CA made here, a logging
forward proxy (absolute-form and CONNECT, optionally asking for a password),
a mutual-TLS API, the gateway and the CLI as processes, a dask cluster.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import batchnb as bn
from batchnb import AsyncClient, BatchValidationError, Client, TransportError
from batchnb._connect import Connection, mask_url, unreached
from batchnb.demo.company import CompanyAPI

from .support import free_port, stop, wait_for_http
from .support.proxy import LoggingProxy
from .support.tls import MutualTLS, TLSServer

PROXY_USER = "analyst"
PROXY_PASSWORD = "pr0xy-s3cret-pw"
ROWS = pd.DataFrame({"name": [f"thing {i}" for i in range(6)], "key": [f"k{i}" for i in range(6)]})
THINGS = {"method": "POST", "path": "/api/things", "body": ["name", "key"]}


@pytest.fixture(scope="module")
def tls_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CompanyAPI, str]]:
    with CompanyAPI(tls=True, tmp=tmp_path_factory.mktemp("company")) as api:
        yield api, api.token()


@pytest.fixture(scope="module")
def plain_api() -> Iterator[tuple[CompanyAPI, str]]:
    with CompanyAPI() as api:
        yield api, api.token()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The test process's own proxy variables unset, whatever the machine has."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def _created(api: CompanyAPI) -> int:
    return int(api.stats()["created"])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


# ---------------------------------------------------------------- the settings, checked up front


@pytest.mark.slow
def test_a_missing_ca_file_is_refused_naming_verify_before_anything_is_sent(tls_api: Any, no_proxy_env: Any) -> None:
    api, token = tls_api
    with LoggingProxy() as proxy:
        with pytest.raises(BatchValidationError) as info:
            Client(api.url, token=token, mode="direct", verify="no/such/ca.pem", proxy=proxy.url)
        assert proxy.seen == []
    assert info.value.pointers == ["verify"] and "'no/such/ca.pem' does not exist" in str(info.value)


def test_every_setting_problem_is_found_at_once(tmp_path: Path) -> None:
    problems = Connection(
        verify=str(tmp_path / "ca.pem"),
        cert=(str(tmp_path / "c.pem"), str(tmp_path / "k.pem")),
        proxy="ftp://proxy.corp",
        event_hooks={"sent": [print]},
    ).problems()
    assert [p.pointer for p in problems] == ["verify", "cert", "cert[1]", "proxy", "event_hooks['sent']"]


def test_a_ca_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(BatchValidationError) as info:
        AsyncClient("https://api.example", verify=bad)
    assert info.value.pointers == ["verify"] and "could not be loaded" in str(info.value)


def test_the_environment_is_checked_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "gone.pem"))
    monkeypatch.setenv("HTTPS_PROXY", "ftp://proxy.corp")
    with pytest.raises(BatchValidationError) as info:
        Client("https://api.example")
    assert info.value.pointers == ["SSL_CERT_FILE", "HTTPS_PROXY"]
    Client("https://api.example", trust_env=False)  # not read at all: nothing to refuse


def test_http2_needs_h2(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    if importlib.util.find_spec("h2") is not None:
        pytest.skip("h2 is installed here")
    with pytest.raises(BatchValidationError) as info:
        Client("https://api.example", http2=True)
    assert info.value.pointers == ["http2"] and "pip install 'httpx[http2]'" in str(info.value)


def test_an_ssl_context_with_a_cert_is_refused() -> None:
    with pytest.raises(BatchValidationError) as info:
        Client("https://api.example", verify=ssl.create_default_context(), cert=__file__)
    assert "ctx.load_cert_chain" in str(info.value)


def test_repr_masks_a_proxy_password_and_url_credentials() -> None:
    client = Client(
        "https://bob:hunter2@api.example", token="tok-123", proxy=f"http://{PROXY_USER}:{PROXY_PASSWORD}@p:3128"
    )
    text = repr(client)
    assert PROXY_PASSWORD not in text and "hunter2" not in text and "tok-123" not in text
    assert "proxy='http://***@p:3128'" in text
    assert mask_url("socks5://u:p@h:1/x?token=t") == "socks5://***@h:1/x?token=***"


# ---------------------------------------------------------------- direct mode, against TLS and through proxies


def test_direct_mode_reaches_a_private_ca_api_with_verify_and_through_a_proxy(tls_api: Any, no_proxy_env: Any) -> None:
    api, token = tls_api
    before = _created(api)
    with LoggingProxy() as proxy:
        client = Client(api.url, token=token, mode="direct", verify=api.ca_file, proxy=proxy.url)
        result = client.submit(ROWS, **THINGS)
    assert result["ok"].all(), result["error"].tolist()
    assert _created(api) - before == len(ROWS)
    host = api.url.removeprefix("https://")
    assert proxy.seen and set(proxy.seen) == {("CONNECT", host)}


def test_ssl_cert_file_and_https_proxy_from_the_environment(tls_api: Any, no_proxy_env: Any) -> None:
    api, token = tls_api
    with LoggingProxy() as proxy:
        no_proxy_env.setenv("SSL_CERT_FILE", api.ca_file)
        no_proxy_env.setenv("HTTPS_PROXY", proxy.url)
        result = Client(api.url, token=token, mode="direct").submit(ROWS, **THINGS)
        assert result["ok"].all(), result["error"].tolist()
        assert proxy.targets("CONNECT")
        # NO_PROXY lets loopback through on its own, as httpx reads it.
        seen = len(proxy.seen)
        no_proxy_env.setenv("NO_PROXY", "127.0.0.1,localhost")
        result = Client(api.url, token=token, mode="direct").submit(ROWS, **THINGS)
        assert result["ok"].all() and len(proxy.seen) == seen
        # trust_env=False reads none of it: the private CA is unknown again.
        no_proxy_env.delenv("NO_PROXY")
        with pytest.raises(TransportError, match="certificate verify failed"):
            Client(api.url, token=token, mode="direct", trust_env=False).submit(ROWS, **THINGS)
        assert len(proxy.seen) == seen


@pytest.mark.slow
def test_every_plain_http_request_goes_through_the_proxy(plain_api: Any, no_proxy_env: Any) -> None:
    api, token = plain_api
    with LoggingProxy(auth=f"{PROXY_USER}:{PROXY_PASSWORD}") as proxy:
        url = proxy.url_with(f"{PROXY_USER}:{PROXY_PASSWORD}")
        result = Client(api.url, token=token, mode="direct", proxy=url).submit(ROWS, **THINGS)
    assert result["ok"].all(), result["error"].tolist()
    assert proxy.targets("POST") == [api.url + "/api/things"] * len(ROWS)


@pytest.mark.slow
def test_a_client_certificate_with_a_ca_path_is_presented(tmp_path: Path, no_proxy_env: Any) -> None:
    # httpx 0.29 alone drops cert= when verify is a path: here both go into one context.
    with MutualTLS(tmp_path) as api:
        ops = [bn.Operation("GET", "/hello")]
        client = Client(api.url, mode="direct", verify=api.ca_file, cert=(api.client_cert, api.client_key))
        assert client.submit(ops)["status"].tolist() == [200]
        # Without it the server closes the connection (with TLS 1.3, once the request is on its way).
        refused = Client(api.url, mode="direct", verify=api.ca_file).submit(ops)
        assert refused["status"].tolist() != [200], refused.to_dict("records")


def test_event_hooks_see_every_request_plain_functions_or_async(plain_api: Any, no_proxy_env: Any) -> None:
    api, token = plain_api
    seen: list[str] = []

    async def on_response(response: httpx.Response) -> None:
        seen.append(f"{response.status_code}")

    hooks = {"request": [lambda request: seen.append(request.method)], "response": [on_response]}
    result = Client(api.url, token=token, mode="direct", event_hooks=hooks).submit(ROWS, **THINGS)
    assert result["ok"].all()
    assert seen.count("POST") == len(ROWS) and seen.count("201") == len(ROWS)


# ---------------------------------------------------------------- failures that say what happened


def test_a_certificate_failure_says_so_is_not_retried_and_keeps_the_cause(tls_api: Any, no_proxy_env: Any) -> None:
    api, token = tls_api
    with LoggingProxy() as proxy:
        client = Client(api.url, token=token, mode="direct", proxy=proxy.url, retries=3)
        with pytest.raises(TransportError) as info:
            client.submit(ROWS, **THINGS)
    err = info.value
    port = api.url.rsplit(":", 1)[1]
    assert f"certificate verify failed for https://127.0.0.1:{port}: " in str(err)
    assert 'pass verify="ca.pem"' in str(err) and "not retried" in str(err)
    assert isinstance(err.__cause__, httpx.ConnectError) and err.transient is False and err.sent is False
    assert len(proxy.targets("CONNECT")) == len(ROWS)  # one attempt per operation, none again
    assert err.partial["status"].isna().all()
    assert err.partial["error"].str.startswith("not run: certificate verify failed").all()
    assert token not in str(err) and not err.partial["error"].str.contains(token).any()


def test_a_certificate_failure_in_batch_mode_is_not_retried(tls_api: Any, no_proxy_env: Any) -> None:
    api, token = tls_api
    with LoggingProxy() as proxy, pytest.raises(TransportError) as info:
        Client(api.url, token=token, proxy=proxy.url, retries=3).submit(ROWS, **THINGS)
    assert "certificate verify failed" in str(info.value) and isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(proxy.targets("CONNECT")) == 2  # the limits, then the one batch, once


def test_a_proxy_that_asks_for_a_password_says_so_and_names_the_proxy(
    tls_api: Any, plain_api: Any, no_proxy_env: Any
) -> None:
    with LoggingProxy(auth=f"{PROXY_USER}:{PROXY_PASSWORD}") as proxy:
        wrong = proxy.url_with(f"{PROXY_USER}:not-the-{PROXY_PASSWORD}")
        for api, token in (tls_api, plain_api):  # CONNECT (httpx.ProxyError), and a forwarded request's 407
            with pytest.raises(TransportError) as info:
                Client(api.url, token=token, mode="direct", proxy=wrong, retries=3).submit(ROWS, **THINGS)
            text = str(info.value)
            assert f"the proxy http://***@127.0.0.1:{proxy.port} refused the request" in text
            assert "407" in text and PROXY_PASSWORD not in text and info.value.transient is False
            assert isinstance(info.value.__cause__, httpx.ProxyError)
        assert len(proxy.seen) == 2 * len(ROWS)


def test_a_host_that_does_not_resolve_says_so(no_proxy_env: Any) -> None:
    with pytest.raises(TransportError) as info:
        Client("https://api.nowhere.invalid", token="t", mode="direct", retries=3).submit(ROWS, **THINGS)
    assert "the host 'api.nowhere.invalid' could not be resolved" in str(info.value)
    assert info.value.transient is False and isinstance(info.value.__cause__, httpx.ConnectError)


def test_a_refused_connection_stays_transient_and_is_retried(no_proxy_env: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TransportError) as info:
        Client(url, mode="direct", retries=1, backoff=0.01).submit(ROWS, **THINGS)
    assert info.value.transient is True and "after 1 retry" in str(info.value)
    assert info.value.partial["attempts"].tolist() == [2] * len(ROWS)


def test_direct_mode_with_some_operations_delivered_keeps_them() -> None:
    """Only what never left is "not run"; the rest is the API's answer (a stub transport, for the mix)."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return httpx.Response(201, json={"id": calls})

    client = Client("http://api.example", mode="direct", transport=httpx.MockTransport(handler))
    result = client.submit([bn.Operation("POST", "/x", body={}) for _ in range(3)])
    assert result["status"].tolist()[0::2] == [201, 201] and pd.isna(result["status"].iloc[1])
    assert result["error"].iloc[1].startswith("not run: could not connect to http://api.example")


def test_unreached_names_the_origin_never_the_query() -> None:
    exc = httpx.ConnectError("boom http://u:pw@h/x?token=tok")
    message = unreached(exc, "https://api.example:8443/x?token=tok&apiKey=k").message
    assert message.startswith("could not connect to https://api.example:8443 (")
    assert "tok" not in message.replace("token", "") and "pw" not in message


# ---------------------------------------------------------------- the gateway


@contextlib.contextmanager
def _gateway(upstream: str, *args: str, env: dict[str, str] | None = None, log: Path) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "batchnb.cli", "serve", "--upstream", upstream, "--port", str(port), *args]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env or _env())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/api/2.3/batch", proc, 60, log.read_text)
        yield url
    finally:
        stop(proc)


@pytest.mark.slow
def test_the_gateway_reaches_a_private_ca_api_through_the_environments_proxy(
    tls_api: Any, tmp_path: Path, no_proxy_env: Any
) -> None:
    api, token = tls_api
    before = _created(api)
    with LoggingProxy() as proxy:
        env = _env(HTTPS_PROXY=proxy.url)
        with _gateway(api.url, "--upstream-cacert", api.ca_file, env=env, log=tmp_path / "gw.log") as gw:
            result = Client(gw, token=token, trust_env=False).submit(ROWS, **THINGS)
    assert result["ok"].all(), result["error"].tolist()
    assert _created(api) - before == len(ROWS)
    assert proxy.targets("CONNECT") and set(proxy.targets()) == {api.url.removeprefix("https://")}


@pytest.mark.slow
def test_the_gateway_with_upstream_proxy(plain_api: Any, tmp_path: Path, no_proxy_env: Any) -> None:
    api, token = plain_api
    with LoggingProxy() as proxy, _gateway(api.url, "--upstream-proxy", proxy.url, log=tmp_path / "gw.log") as gw:
        result = Client(gw, token=token).submit(ROWS, **THINGS)
    assert result["ok"].all(), result["error"].tolist()
    assert proxy.targets("POST") == [api.url + "/api/things"] * len(ROWS)


@pytest.mark.slow
def test_the_gateways_502_says_why_and_the_server_logs_it_once(tls_api: Any, tmp_path: Path, no_proxy_env: Any) -> None:
    api, token = tls_api
    log = tmp_path / "gw.log"
    with _gateway(api.url, log=log) as gw:  # no --upstream-cacert: the private CA is unknown
        result = Client(gw, token=token, max_requests=3).submit(ROWS, **THINGS)
    assert result["status"].tolist() == [502] * len(ROWS)
    message = result["body"].iloc[0]["error"]["message"]
    assert message.startswith(f"certificate verify failed for {api.url}: ")
    assert result["body"].iloc[0]["error"]["code"] == "upstream_unreachable"
    text = log.read_text()
    assert text.count("certificate verify failed") == 1, text
    assert token not in text


@pytest.mark.slow
def test_serve_refuses_a_missing_upstream_ca(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchnb.cli",
            "serve",
            "--upstream",
            "https://api.example",
            "--upstream-cacert",
            str(tmp_path / "ca.pem"),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert proc.returncode == 2 and "--upstream-cacert" in proc.stderr and "does not exist" in proc.stderr


def test_serve_does_not_put_a_proxy_password_in_the_workers_environment() -> None:
    from batchnb import _serving

    settings = _serving.ServeSettings(upstream="https://api.example", upstream_proxy=f"http://u:{PROXY_PASSWORD}@p:1")
    with pytest.raises(BatchValidationError) as info:
        _serving.to_environment(settings, None)
    assert "HTTPS_PROXY" in str(info.value) and PROXY_PASSWORD not in str(info.value)
    settings.upstream_proxy = "http://p:1"
    assert "http://p:1" in _serving.to_environment(settings, None)[_serving.SETTINGS_VARIABLE]


# ---------------------------------------------------------------- the command line


def _run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchnb.cli", "run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
    )


@pytest.fixture
def ops_csv(tmp_path: Path) -> Path:
    path = tmp_path / "ops.csv"
    ROWS.to_csv(path, index=False)
    return path


CLI_THINGS = ["--method", "POST", "--path", "/api/things", "--body-columns", "name,key", "--direct"]


@pytest.mark.slow
def test_cli_with_cacert_and_with_ssl_cert_file(tls_api: Any, ops_csv: Path, tmp_path: Path) -> None:
    api, token = tls_api
    env = _env(BATCHNB_TOKEN=token)
    done = _run_cli([str(ops_csv), "--url", api.url, "--cacert", api.ca_file, *CLI_THINGS], env, tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    assert f"{len(ROWS)} of {len(ROWS)} rows ok" in done.stdout
    done = _run_cli([str(ops_csv), "--url", api.url, *CLI_THINGS], {**env, "SSL_CERT_FILE": api.ca_file}, tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    failed = _run_cli([str(ops_csv), "--url", api.url, *CLI_THINGS], env, tmp_path)
    assert failed.returncode == 1 and "certificate verify failed" in failed.stderr
    assert token not in failed.stdout + failed.stderr


@pytest.mark.slow
def test_cli_with_proxy_and_with_https_proxy(tls_api: Any, ops_csv: Path, tmp_path: Path) -> None:
    api, token = tls_api
    env = _env(BATCHNB_TOKEN=token, SSL_CERT_FILE=api.ca_file)
    with LoggingProxy(auth=f"{PROXY_USER}:{PROXY_PASSWORD}") as proxy:
        url = proxy.url_with(f"{PROXY_USER}:{PROXY_PASSWORD}")
        done = _run_cli([str(ops_csv), "--url", api.url, "--proxy", url, *CLI_THINGS], env, tmp_path)
        assert done.returncode == 0, done.stderr + done.stdout
        first = len(proxy.seen)
        assert first >= 1
        done = _run_cli([str(ops_csv), "--url", api.url, *CLI_THINGS], {**env, "HTTPS_PROXY": url}, tmp_path)
        assert done.returncode == 0, done.stderr + done.stdout
        assert len(proxy.seen) > first and set(proxy.targets()) == {api.url.removeprefix("https://")}
        wrong = proxy.url_with(f"{PROXY_USER}:nope")
        refused = _run_cli([str(ops_csv), "--url", api.url, "--proxy", wrong, *CLI_THINGS], env, tmp_path)
    assert refused.returncode == 1 and "407" in refused.stderr
    for out in (done, refused):
        assert PROXY_PASSWORD not in out.stdout + out.stderr and token not in out.stdout + out.stderr


@pytest.mark.slow
def test_cli_insecure_warns_loudly(tls_api: Any, ops_csv: Path, tmp_path: Path) -> None:
    api, token = tls_api
    done = _run_cli([str(ops_csv), "--url", api.url, "--insecure", *CLI_THINGS], _env(BATCHNB_TOKEN=token), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "WARNING: --insecure: TLS certificates are NOT checked" in done.stderr


@pytest.mark.slow
def test_cli_refuses_bad_connection_settings_before_sending(ops_csv: Path, tmp_path: Path) -> None:
    done = _run_cli(
        [str(ops_csv), "--url", "https://api.example", "--cacert", "missing.pem", "--proxy", "ftp://p", *CLI_THINGS],
        _env(),
        tmp_path,
    )
    assert done.returncode == 2
    assert "--cacert: 'missing.pem' does not exist" in done.stderr and "--proxy:" in done.stderr
    done = _run_cli([str(ops_csv), "--url", "https://api.example", "--key", "k.pem", *CLI_THINGS], _env(), tmp_path)
    assert done.returncode == 2 and "--cert" in done.stderr


# ---------------------------------------------------------------- dask


@pytest.mark.slow
def test_dask_workers_use_the_ca_and_a_proxy_whose_password_stays_out_of_the_graph(
    plain_api: Any, no_proxy_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers reach a batch gateway served over HTTPS from a private CA, through a proxy that wants a password."""
    distributed = pytest.importorskip("distributed")
    import dask.dataframe as dd

    import batchnb.dask

    api, token = plain_api
    before = _created(api)
    specs = _SPECS
    specs.clear()
    _RUN_PARTITION[:] = [batchnb.dask._submit_partition]
    monkeypatch.setattr(batchnb.dask, "_submit_partition", _watched)
    gateway = bn.server.create_app(upstream=api.url)
    with (
        LoggingProxy(auth=f"{PROXY_USER}:{PROXY_PASSWORD}") as proxy,
        TLSServer(gateway, tmp_path) as server,
        distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as dc,
    ):
        result = batchnb.dask.submit(
            dd.from_pandas(ROWS, npartitions=2),
            server.url,
            token=token,
            verify=server.ca_file,
            proxy=proxy.url_with(f"{PROXY_USER}:{PROXY_PASSWORD}"),
            journal=tmp_path / "journal",
            client=dc,
            **THINGS,
        ).compute()
    assert result["ok"].all(), result["error"].tolist()
    assert _created(api) - before == len(ROWS)
    assert proxy.targets("CONNECT") and all(c and c.startswith("Basic ") for c in proxy.credentials)
    assert len(specs) == 2 and not any(PROXY_PASSWORD.encode() in s or token.encode() in s for s in specs)
    assert all(server.ca_file.encode() in s for s in specs)


#: what each partition's task got (pickled), and the function that runs it: module globals, since
#: a task may be pickled by value on its way to the worker (a closure's list would be a copy).
_SPECS: list[bytes] = []
_RUN_PARTITION: list[Any] = []


def _watched(pdf: pd.DataFrame, spec: Any, partition_info: dict | None = None) -> pd.DataFrame:
    import cloudpickle

    _SPECS.append(cloudpickle.dumps(spec))
    return _RUN_PARTITION[0](pdf, spec, partition_info)


def test_dask_refuses_an_ssl_context_naming_verify() -> None:
    pytest.importorskip("distributed")
    from batchnb.dask import _connection_for_workers

    with pytest.raises(BatchValidationError) as info:
        _connection_for_workers(ssl.create_default_context(), None, None, True, False)
    assert info.value.pointers == ["verify"] and "verify='ca.pem'" in str(info.value)
    settings, secret = _connection_for_workers(True, None, f"http://u:{PROXY_PASSWORD}@p:1", True, False)
    assert "proxy" not in settings and secret is not None
    settings, secret = _connection_for_workers(False, None, "http://p:1", True, False)
    assert settings["proxy"] == "http://p:1" and settings["verify"] is False and secret is None


def test_the_token_request_of_an_auth_flow_goes_the_same_way(tls_api: Any, no_proxy_env: Any) -> None:
    api = tls_api[0]
    flow = bn.auth.ClientCredentials(api.token_url, api.client_id, api.client_secret)
    with LoggingProxy() as proxy:
        result = Client(api.url, mode="direct", verify=api.ca_file, proxy=proxy.url, auth=flow).submit(ROWS, **THINGS)
    assert result["ok"].all(), result["error"].tolist()
    assert proxy.targets("CONNECT")
    flow = bn.auth.ClientCredentials(api.token_url, api.client_id, api.client_secret)
    with pytest.raises(TransportError, match="certificate verify failed") as info:
        Client(api.url, mode="direct", auth=flow).submit(ROWS, **THINGS)
    assert api.client_secret not in str(info.value)


def test_an_ssl_context_is_made_once_per_settings_and_again_when_the_ca_file_changes(tmp_path: Path) -> None:
    from batchnb.demo.company import make_certificates

    ca, _cert, _key = make_certificates(tmp_path / "one")
    first = Connection(verify=str(ca)).ssl_context()
    assert Connection(verify=str(ca)).ssl_context() is first  # every sync call makes a client: one CA load
    assert Connection(verify=str(ca), http2=True).ssl_context() is not first  # httpcore sets ALPN on its context
    assert Connection(verify=False).ssl_context().verify_mode == ssl.CERT_NONE
    other, _cert, _key = make_certificates(tmp_path / "two")
    os.replace(other, ca)  # the CA file replaced on disk: a new context, never the stale one
    os.utime(ca, ns=(1, 1))
    assert Connection(verify=str(ca)).ssl_context() is not first
