"""The embedded server (batchnb.local.LocalServer): start, stop, its database, its tenants and their clients."""

import sqlite3

import httpx
import pytest

from batchnb import AuthenticationError, Batch, BatchValidationError, Client, LocalServer, LocalServerError, Operation

CO = "/api/2.1/scheduling/companies"


def test_a_server_not_started_has_no_url():
    server = LocalServer()
    assert not server.running
    with pytest.raises(LocalServerError, match="not running"):
        _ = server.url


def test_start_serves_on_loopback_and_a_second_start_changes_nothing():
    with LocalServer() as server:
        url = server.url
        assert url.startswith("http://127.0.0.1:") and server.running
        assert server.start() is server and server.url == url
        assert httpx.get(url + "/api/2.3/batch", trust_env=False).status_code == 200
    assert not server.running


@pytest.mark.slow
def test_a_temporary_database_goes_away_on_stop_and_a_given_one_stays(tmp_path):
    with LocalServer() as server:
        temporary = server.db
        server.client.submit([Operation("POST", CO, {"name": "gone"})], progress=False)
        assert temporary.exists()
    assert not temporary.parent.exists()

    given = tmp_path / "kept.sqlite3"
    with LocalServer(given) as server:
        server.client.submit([Operation("POST", CO, {"name": "kept"})], progress=False)
    with sqlite3.connect(given) as conn:
        assert conn.execute("select name from companies").fetchall() == [("kept",)]


@pytest.mark.slow
def test_each_tenant_has_its_own_fresh_token_and_client():
    with LocalServer(tenants=("first", "second")) as one, LocalServer(tenants=("first", "second")) as two:
        tokens = [s.credentials(k)["token"] for s in (one, two) for k in ("first", "second")]
        assert len(set(tokens)) == 4
        assert one.credentials() == {"api_key": "first", "token": tokens[0]}
        made = one.client_for("second").submit([Operation("POST", CO, {"name": "theirs"})], progress=False)
        company = made.loc[0, "body"]["id"]
        with sqlite3.connect(one.db) as conn:
            assert conn.execute("select tenant from companies where id = ?", (company,)).fetchall() == [("second",)]
        # A token of one server means nothing to another.
        with pytest.raises(AuthenticationError):
            Client(two.url, **one.credentials("second")).send(Batch([Operation("GET", CO)]))


def test_client_options_given_to_the_server_reach_its_clients():
    with LocalServer(max_requests=3) as server:
        assert server.client.limits()["maxRequests"] == 3
        assert server.client_for("other", max_requests=5).limits()["maxRequests"] == 5
        assert server.async_client().concurrency == 4 and server.async_client(concurrency=2).concurrency == 2


@pytest.mark.slow
def test_a_local_gateway_reaches_a_tls_upstream_with_the_ca_it_is_given_and_passes_the_batch_token_on() -> None:
    from batchnb.demo.company import CompanyAPI

    with CompanyAPI(tls=True) as api:
        token = api.token()
        ops = [Operation("POST", "/api/things", {"key": 1})]
        with LocalServer(upstream=api.url, tenants=(), upstream_verify=api.ca_file) as gateway:
            with pytest.raises(BatchValidationError, match="no tenants"):
                gateway.credentials()
            ok = Client(gateway.url, token=token, trust_env=False).submit(ops)
        with LocalServer(upstream=api.url, tenants=(), upstream_verify=True) as gateway:
            refused = Client(gateway.url, token=token, trust_env=False).submit(ops)
        assert list(ok["status"]) == [201]
        assert list(refused["status"]) == [502] and "certificate verify failed" in refused["error"][0]
        assert api.stats()["created"] == 1


def test_the_embedded_server_answers_without_waiting_for_delayed_acks() -> None:
    import socket

    with LocalServer() as server:
        listening = [sock for srv in server._server.servers for sock in srv.sockets]
        # asyncio sets TCP_NODELAY on accepted connections only when the listening socket says it is TCP;
        # without it each answer's body waited for the client's delayed ACK (40 ms a request).
        assert listening and all(sock.proto == socket.IPPROTO_TCP for sock in listening)
