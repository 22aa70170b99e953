"""The demo company API: a private CA, OAuth2 tokens that expire, a per-client rate limit, all over real loopback."""

from __future__ import annotations

import ssl

import httpx
import pytest

from batchnb.demo.company import CompanyAPI

from .support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


def _token(api: CompanyAPI, http: httpx.Client, secret: str | None = None) -> str:
    r = http.post(
        api.token_url,
        data={"grant_type": "client_credentials"},
        auth=(api.client_id, secret if secret is not None else api.client_secret),
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


def test_tls_from_a_private_ca_tokens_that_expire_and_what_a_401_says() -> None:
    with CompanyAPI(tls=True, token_ttl=1.0) as api:
        assert api.url.startswith("https://127.0.0.1:") and api.ca_file is not None
        assert api.client_secret not in repr(api)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(api.url + "/_stats", trust_env=False)
        with httpx.Client(verify=ssl.create_default_context(cafile=api.ca_file), trust_env=False) as http:
            assert (
                http.post(
                    api.token_url, data={"grant_type": "client_credentials"}, auth=(api.client_id, "wrong")
                ).status_code
                == 401
            )
            token = _token(api, http)
            created = http.post(api.url + "/api/things", json={"key": 1}, headers={"Authorization": f"Bearer {token}"})
            assert created.status_code == 201 and created.json()["id"] == "th_1"
            assert http.post(api.url + "/api/things", json={"key": 1}).status_code == 401

            # The token dies after its lifetime: the API says so in the header and the body (RFC 6750 §3).
            def expired() -> httpx.Response | None:
                r = http.get(api.url + "/api/things/th_1", headers={"Authorization": f"Bearer {token}"})
                return r if r.status_code == 401 else None

            r = wait_until(expired, 10, "a 1-s token still worked after 10 s")
            assert 'error="invalid_token"' in r.headers["www-authenticate"]
            assert r.json() == {"error": "invalid_token", "error_description": "the access token expired"}
            fresh = _token(api, http)
            again = http.post(api.url + "/api/things", json={"key": 1}, headers={"Authorization": f"Bearer {fresh}"})
            assert again.status_code == 201
            api.refuse()
            assert http.get(api.url + "/api/things", headers={"Authorization": f"Bearer {fresh}"}).status_code == 401
        stats = api.stats()
        assert stats["tokens"] == 2 and stats["created"] == 2 and stats["duplicates"] == 1


@pytest.mark.parametrize(
    ("style", "names"),
    [
        ("ietf", {"ratelimit-policy", "ratelimit"}),
        ("x", {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}),
        ("none", set()),
    ],
)
def test_a_client_past_its_rate_gets_429_with_retry_after_and_the_headers_it_asked_for(
    style: str, names: set[str]
) -> None:
    with CompanyAPI(rate=3, ratelimit_headers=style) as api, httpx.Client(trust_env=False) as http:  # type: ignore[arg-type]  # a value the annotation does not name, on purpose
        auth = {"Authorization": f"Bearer {_token(api, http)}"}
        answers = [http.post(api.url + "/api/things", json={"n": i}, headers=auth) for i in range(12)]
        statuses = [r.status_code for r in answers]
        # Twelve requests in about a second on loopback: three pass in any second, the rest wait.
        assert statuses.count(201) >= 3 and 429 in statuses, statuses
        refused = next(r for r in answers if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert names <= set(refused.headers) and names <= set(answers[0].headers)
        if style == "ietf":
            assert refused.headers["ratelimit-policy"] == '"default";q=3;w=1'
            assert refused.headers["ratelimit"].startswith('"default";r=0;t=')
        # The window moves on: the client may send again.
        wait_until(
            lambda: http.post(api.url + "/api/things", json={}, headers=auth).status_code == 201,
            10,
            "the rate limit never let the client send again",
            interval=0.2,
        )
        assert api.stats()["status"]["429"] >= statuses.count(429)
