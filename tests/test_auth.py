"""Tests for batchnb.server.auth.Keyring."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers, QueryParams

from batchnb.server import auth
from batchnb.server.auth import Keyring

CREDS = {"key-a": "tok-a", "key-b": "tok-b", "key-c": "tok-c"}


@pytest.fixture
def ring() -> Keyring:
    return Keyring(CREDS)


def test_bearer_token_identifies_tenant(ring: Keyring) -> None:
    assert ring.authenticate(Headers({"Authorization": "Bearer tok-b"}), QueryParams()) == "key-b"
    assert ring.authenticate(Headers({"authorization": "Bearer tok-c"}), QueryParams()) == "key-c"


def test_bearer_scheme_is_case_insensitive_and_plain_dicts_work(ring: Keyring) -> None:
    assert ring.authenticate({"authorization": "bearer tok-a"}, {}) == "key-a"
    assert ring.authenticate({"Authorization": "BEARER   tok-a  "}, {}) == "key-a"


@pytest.mark.parametrize(
    "value",
    ["Bearer wrong", "Bearer", "Bearer ", "Basic dG9rLWE=", "tok-a", "", "Bearer tok-a extra", "Bearer tök-ä"],
)
def test_bad_authorization_header_is_rejected(ring: Keyring, value: str) -> None:
    assert ring.authenticate({"authorization": value}, {}) is None


def test_query_pair_must_match(ring: Keyring) -> None:
    assert ring.authenticate(Headers(), QueryParams("apiKey=key-a&token=tok-a")) == "key-a"
    assert ring.authenticate(Headers(), QueryParams("apiKey=key-b&token=tok-b")) == "key-b"
    # Another tenant's token, a wrong token, or half a pair are all refused.
    assert ring.authenticate(Headers(), QueryParams("apiKey=key-a&token=tok-b")) is None
    assert ring.authenticate(Headers(), QueryParams("apiKey=key-a&token=nope")) is None
    assert ring.authenticate(Headers(), QueryParams("apiKey=key-a")) is None
    assert ring.authenticate(Headers(), QueryParams("token=tok-a")) is None
    assert ring.authenticate(Headers(), QueryParams("apiKey=&token=")) is None


def test_no_credentials(ring: Keyring) -> None:
    assert ring.authenticate(Headers(), QueryParams()) is None
    assert ring.authenticate({}, {}) is None


def test_authorization_header_is_authoritative(ring: Keyring) -> None:
    query = QueryParams("apiKey=key-a&token=tok-a")
    assert ring.authenticate(Headers({"Authorization": "Bearer wrong"}), query) is None
    assert ring.authenticate(Headers({"Authorization": "Basic abc"}), query) is None
    assert ring.authenticate(Headers({"Authorization": "Bearer tok-b"}), query) == "key-b"


def test_every_entry_is_compared(ring: Keyring, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    # The first entry matches, yet all three are still compared.
    assert ring.authenticate({"authorization": "Bearer tok-a"}, {}) == "key-a"
    assert len(calls) == 3
    calls.clear()
    assert ring.authenticate({}, {"apiKey": "key-a", "token": "tok-a"}) == "key-a"
    assert len(calls) == 6  # key and token, for each of the three entries


def test_repr_hides_secrets(ring: Keyring) -> None:
    text = repr(ring) + str(ring)
    assert text == "Keyring(3 tenants)" * 2
    for api_key, token in CREDS.items():
        assert token not in text and api_key not in text
    assert len(ring) == 3


@pytest.mark.parametrize(
    "creds",
    [{"a": "same", "b": "same"}, {"": "tok"}, {"a": ""}, {"a": None}],
)
def test_bad_credentials_are_refused(creds: dict) -> None:
    with pytest.raises(ValueError):
        Keyring(creds)


def test_non_ascii_and_odd_input_does_not_raise(ring: Keyring) -> None:
    assert ring.authenticate({}, {"apiKey": "k\ud800", "token": "t\udfff"}) is None
    assert ring.authenticate({"authorization": "Bearer \x00\xff"}, {}) is None
    assert Keyring({"ключ": "токен"}).authenticate({}, {"apiKey": "ключ", "token": "токен"}) == "ключ"
