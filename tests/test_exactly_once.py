"""Exactly once: idempotency keys carry every row through a network that loses batches.

A fault-injecting proxy (a real process on loopback, tests/support/fault_proxy.py)
sits between the client and the real server. From a seed it hangs up after
the server has answered, answers 502 without forwarding, or sits on the
answer past the client's timeout. With keys, every row ends with a final
status, nothing is created twice and every reference points at the id that
was first created; without keys (a gateway whose API does not honour them),
nothing is created twice either, and the rows whose outcome is unknown say so.
"""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from batchnb import Client, LocalServer
from tests.support.delivery import companies_and_services, duplicated, fault_proxy
from tests.support.delivery import proxy_stats as stats

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


def test_5000_rows_through_a_faulty_network_arrive_exactly_once(tmp_path):
    n = 2500
    with (
        LocalServer(tmp_path / "demo.sqlite3") as server,
        fault_proxy(server.url, seed=11, drop=0.1, bad_gateway=0.05, stall=0.05, stall_seconds=2.5) as proxy,
    ):
        client = Client(proxy, **server.credentials(), timeout=1.5, retries=12, backoff=0.05, max_backoff=0.5)
        frame = companies_and_services(n, "EO")
        result = client.submit(frame, progress=False)
        seen = stats(proxy)
        with sqlite3.connect(server.db) as conn:
            stored = dict(conn.execute("SELECT name, id FROM companies WHERE name LIKE 'EO %'").fetchall())
            services = dict(
                conn.execute(
                    "SELECT s.name, c.name FROM services s JOIN companies c ON s.company_id = c.id "
                    "WHERE s.name LIKE 'EO cut %'"
                ).fetchall()
            )
        doubles = duplicated(server.db, "EO")
    assert seen["drop"] > 0 and seen["bad-gateway"] > 0 and seen["stall"] > 0, seen
    assert len(result) == 2 * n and result["status"].notna().all()
    unknown = result["error"].fillna("").str.startswith("outcome unknown")
    assert not unknown.any(), result[unknown].head()
    assert result["ok"].all(), result.loc[~result["ok"], ["status", "error"]].head()
    assert not doubles, f"created twice: {list(doubles)[:5]}"
    assert len(stored) == n and len(services) == n
    assert result["replayed"].any()  # some answers were the API's first answer, given again
    for i in range(n):
        company = result.loc[f"co{i}", "body"]
        assert stored[f"EO {i}"] == company["id"]  # the id the run reports is the one that exists
        assert result.loc[f"sv{i}", "body"]["companyId"] == company["id"]  # the reference got the first id
        assert services[f"EO cut {i}"] == f"EO {i}"


def test_the_same_faults_without_keys_create_nothing_twice_and_report_what_is_unknown(tmp_path):
    n = 500
    with (
        LocalServer(tmp_path / "demo.sqlite3") as api,
        LocalServer(upstream=api.url, tenants=("gateway",)) as gateway,
        fault_proxy(gateway.url, seed=5, drop=0.15, bad_gateway=0.05, stall=0.0) as proxy,
    ):
        assert httpx.get(proxy + "/api/2.3/batch", trust_env=False).json()["idempotency"] is False
        client = Client(proxy, **gateway.credentials(), timeout=5, retries=12, backoff=0.05, max_backoff=0.5)
        frame = companies_and_services(n, "AM", headers={"Authorization": f"Bearer {api.credentials()['token']}"})
        result = client.submit(frame, progress=False)
        doubles = duplicated(api.db, "AM")
        with sqlite3.connect(api.db) as conn:
            made = {name for (name,) in conn.execute("SELECT name FROM companies WHERE name LIKE 'AM %'")}
        seen = stats(proxy)
    assert seen["drop"] > 0, seen
    assert not doubles  # at most once
    unknown = result["error"].fillna("").str.startswith("outcome unknown: not resent because it contains POST")
    assert unknown.any()
    assert result.loc[unknown, "status"].isna().all()
    assert result.loc[~unknown, "ok"].all()  # everything else is final and ran
    # "Outcome unknown" is honest: those companies may or may not exist; the others exist once.
    for i in range(n):
        if not unknown[f"co{i}"]:
            assert f"AM {i}" in made
