"""HTTP-level tests for the Scheduling API v2.1 app over a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchnb.demo import idempotency
from batchnb.demo._store import Store
from batchnb.demo.scheduling import scheduling_app
from batchnb.server.auth import Keyring

BASE = "/api/2.1/scheduling"
CREDS = {"key-a": "tok-a", "key-b": "tok-b"}
UNAUTHORIZED = {"error": {"code": "unauthorized", "message": "Authentication is required to execute this request"}}
_UNSET: Any = object()


class Client:
    """Synchronous wrapper: one in-process request per call."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app = app
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: Any = _UNSET,
        *,
        content: bytes | str | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = {} if self.token is None else {"Authorization": f"Bearer {self.token}"}
        all_headers.update(headers or {})
        if body is not _UNSET:
            content = json.dumps(body)
            all_headers.setdefault("content-type", "application/json")

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, path, content=content, params=params, headers=all_headers)

        return asyncio.run(go())

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = _UNSET, **kw: Any) -> httpx.Response:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = _UNSET, **kw: Any) -> httpx.Response:
        return self.request("PUT", path, body, **kw)

    def patch(self, path: str, body: Any = _UNSET, **kw: Any) -> httpx.Response:
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)

    # Shortcuts that assert success and return the created object.
    def company(self, name: str = "Salon", **extra: Any) -> dict:
        return self._created(f"{BASE}/companies", {"name": name, **extra})

    def service(self, company_id: str, name: str = "Cut", **extra: Any) -> dict:
        return self._created(f"{BASE}/companies/{company_id}/services", {"name": name, **extra})

    def staff(self, company_id: str, **extra: Any) -> dict:
        return self._created(
            f"{BASE}/companies/{company_id}/staff", {"firstName": "Ada", "lastName": "Lovelace", **extra}
        )

    def appointment(self, company_id: str, service_id: str, staff_id: str, **extra: Any) -> dict:
        body = {"serviceId": service_id, "staffId": staff_id, "start": "2025-03-01T10:00:00+01:00", **extra}
        return self._created(f"{BASE}/companies/{company_id}/appointments", body)

    def _created(self, path: str, body: dict) -> dict:
        r = self.post(path, body)
        assert r.status_code == 201, r.text
        return r.json()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "api.db") as s:
        yield s


@pytest.fixture
def app(store: Store) -> Any:
    return scheduling_app(store, Keyring(CREDS))


@pytest.fixture
def a(app: Any) -> Client:
    return Client(app, "tok-a")


@pytest.fixture
def b(app: Any) -> Client:
    return Client(app, "tok-b")


def fields_of(r: httpx.Response) -> list[str]:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error"
    return [d["field"] for d in err["details"]]


def assert_json(r: httpx.Response) -> None:
    assert r.headers["content-type"] == "application/json"
    json.loads(r.content)


# -- CRUD per resource ----------------------------------------------------


def test_company_crud(a: Client) -> None:
    address = {"street": "1 Main St", "city": "Oslo", "zip": "0150", "country": "NO"}
    r = a.post(f"{BASE}/companies", {"name": "Salon", "address": address, "timezone": "Europe/Oslo", "phone": "+47"})
    assert r.status_code == 201
    assert_json(r)
    co = r.json()
    assert re.fullmatch(r"co_[0-9a-f]{12}", co["id"])
    assert r.headers["location"] == f"{BASE}/companies/{co['id']}"
    assert co == {"id": co["id"], "name": "Salon", "address": address, "timezone": "Europe/Oslo", "phone": "+47"}

    r = a.get(f"{BASE}/companies/{co['id']}")
    assert r.status_code == 200 and r.json() == co
    r = a.get(f"{BASE}/companies")
    assert r.status_code == 200
    assert r.json() == {"items": [co], "limit": 100, "offset": 0}

    # PUT replaces: omitted optional fields go back to null.
    r = a.put(f"{BASE}/companies/{co['id']}", {"name": "Salon 2", "phone": "+1"})
    assert r.status_code == 200
    assert r.json() == {"id": co["id"], "name": "Salon 2", "address": None, "timezone": None, "phone": "+1"}
    # PATCH only touches what is given; a partial address is normalised.
    r = a.patch(f"{BASE}/companies/{co['id']}", {"address": {"city": "Bergen"}})
    assert r.status_code == 200
    assert r.json()["name"] == "Salon 2"
    assert r.json()["address"] == {"street": None, "city": "Bergen", "zip": None, "country": None}
    assert a.get(f"{BASE}/companies/{co['id']}").json()["address"]["city"] == "Bergen"

    r = a.delete(f"{BASE}/companies/{co['id']}")
    assert r.status_code == 204 and r.content == b""
    r = a.get(f"{BASE}/companies/{co['id']}")
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "not_found", "message": f"company '{co['id']}' not found"}}
    assert a.delete(f"{BASE}/companies/{co['id']}").status_code == 404


def test_service_crud(a: Client) -> None:
    co = a.company()
    r = a.post(f"{BASE}/companies/{co['id']}/services", {"name": "Cut", "price": 25.5, "currency": "EUR"})
    assert r.status_code == 201
    sv = r.json()
    assert re.fullmatch(r"sv_[0-9a-f]{12}", sv["id"])
    assert r.headers["location"] == f"{BASE}/companies/{co['id']}/services/{sv['id']}"
    assert sv == {
        "id": sv["id"],
        "companyId": co["id"],
        "name": "Cut",
        "duration": 30,
        "price": 25.5,
        "currency": "EUR",
    }
    path = f"{BASE}/companies/{co['id']}/services/{sv['id']}"
    assert a.get(path).json() == sv
    assert a.get(f"{BASE}/companies/{co['id']}/services").json()["items"] == [sv]

    r = a.put(path, {"name": "Long cut", "duration": 90})
    assert r.json() == {**sv, "name": "Long cut", "duration": 90, "price": None, "currency": None}
    r = a.patch(path, {"price": 40})
    assert r.status_code == 200 and r.json()["price"] == 40 and r.json()["duration"] == 90

    assert a.delete(path).status_code == 204
    r = a.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == f"service '{sv['id']}' not found"


def test_staff_crud_with_services_of_the_same_company(a: Client) -> None:
    co = a.company()
    s1, s2 = a.service(co["id"], "One"), a.service(co["id"], "Two")
    r = a.post(
        f"{BASE}/companies/{co['id']}/staff",
        {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "email": "ada@example.com",
            "services": [{"id": s1["id"]}, {"id": s2["id"]}],
        },
    )
    assert r.status_code == 201
    staff = r.json()
    assert re.fullmatch(r"st_[0-9a-f]{12}", staff["id"])
    assert r.headers["location"] == f"{BASE}/companies/{co['id']}/staff/{staff['id']}"
    assert staff == {
        "id": staff["id"],
        "companyId": co["id"],
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": "ada@example.com",
        "services": [{"id": s1["id"]}, {"id": s2["id"]}],
    }
    path = f"{BASE}/companies/{co['id']}/staff/{staff['id']}"
    assert a.get(path).json() == staff
    assert a.get(f"{BASE}/companies/{co['id']}/staff").json()["items"] == [staff]

    r = a.patch(path, {"lastName": "King"})
    assert r.json()["lastName"] == "King" and r.json()["services"] == staff["services"]
    r = a.put(path, {"firstName": "Grace", "lastName": "Hopper", "services": [{"id": s2["id"]}]})
    assert r.status_code == 200
    assert r.json() == {
        **staff,
        "firstName": "Grace",
        "lastName": "Hopper",
        "email": None,
        "services": [{"id": s2["id"]}],
    }

    # A service of another company of the same tenant is not acceptable.
    other = a.company("Other")
    foreign = a.service(other["id"])
    r = a.patch(path, {"services": [{"id": s1["id"]}, {"id": foreign["id"]}]})
    assert fields_of(r) == ["services[1].id"]
    assert a.get(path).json()["services"] == [{"id": s2["id"]}]

    assert a.delete(path).status_code == 204
    assert a.get(path).status_code == 404


def test_appointment_crud_and_cancel(a: Client) -> None:
    co = a.company()
    sv = a.service(co["id"])
    staff = a.staff(co["id"], services=[{"id": sv["id"]}])
    body = {
        "serviceId": sv["id"],
        "staffId": staff["id"],
        "start": "2025-03-01T10:00:00+01:00",
        "customer": {"name": "Bob", "email": "bob@example.com"},
    }
    r = a.post(f"{BASE}/companies/{co['id']}/appointments", body)
    assert r.status_code == 201
    ap = r.json()
    assert re.fullmatch(r"ap_[0-9a-f]{12}", ap["id"])
    assert r.headers["location"] == f"{BASE}/companies/{co['id']}/appointments/{ap['id']}"
    assert ap == {"id": ap["id"], "companyId": co["id"], **body, "status": "booked"}
    path = f"{BASE}/companies/{co['id']}/appointments/{ap['id']}"
    assert a.get(path).json() == ap
    assert a.get(f"{BASE}/companies/{co['id']}/appointments").json()["items"] == [ap]

    r = a.put(path, {"serviceId": sv["id"], "staffId": staff["id"], "start": "2025-03-02T09:30:00Z"})
    assert r.status_code == 200
    assert r.json() == {**ap, "start": "2025-03-02T09:30:00Z", "customer": None}

    r = a.patch(path, {"status": "cancelled"})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = a.patch(path, {"status": "booked"})
    assert r.json()["status"] == "booked"

    # DELETE cancels: the appointment remains, marked cancelled.
    r = a.delete(path)
    assert r.status_code == 204 and r.content == b""
    assert a.get(path).json()["status"] == "cancelled"
    missing = f"{BASE}/companies/{co['id']}/appointments/ap_000000000000"
    assert a.delete(missing).status_code == 404


def test_unknown_fields_are_ignored(a: Client) -> None:
    r = a.post(f"{BASE}/companies", {"name": "X", "id": "co_aaaaaaaaaaaa", "companyId": "x", "bogus": {"deep": [1]}})
    assert r.status_code == 201
    assert r.json()["id"] != "co_aaaaaaaaaaaa"
    assert "bogus" not in r.json()


def test_patch_with_empty_object_changes_nothing(a: Client) -> None:
    co = a.company(phone="123")
    r = a.patch(f"{BASE}/companies/{co['id']}", {})
    assert r.status_code == 200 and r.json() == co


# -- validation -----------------------------------------------------------


def test_company_validation_lists_every_field(a: Client) -> None:
    r = a.post(
        f"{BASE}/companies",
        {"name": "", "address": {"city": 5, "zip": [], "street": "ok"}, "phone": 7, "timezone": True},
    )
    assert fields_of(r) == ["name", "address.city", "address.zip", "timezone", "phone"]
    assert r.headers["content-type"] == "application/json"
    details = r.json()["error"]["details"]
    assert all(isinstance(d["message"], str) and d["message"] for d in details)

    assert fields_of(a.post(f"{BASE}/companies", {})) == ["name"]
    assert fields_of(a.post(f"{BASE}/companies", {"name": "x" * 201})) == ["name"]
    assert fields_of(a.post(f"{BASE}/companies", {"name": "   "})) == ["name"]
    assert fields_of(a.post(f"{BASE}/companies", {"name": None})) == ["name"]
    assert fields_of(a.post(f"{BASE}/companies", {"name": "ok", "address": "Main St"})) == ["address"]
    assert a.post(f"{BASE}/companies", {"name": "x" * 200}).status_code == 201


def test_service_validation(a: Client) -> None:
    co = a.company()
    path = f"{BASE}/companies/{co['id']}/services"
    r = a.post(path, {"duration": 0, "price": -1, "currency": "eur"})
    assert fields_of(r) == ["name", "duration", "price", "currency"]
    for duration in (True, False, 1.5, 1441.0, "30", 1441, 0, 10**30, None, [30]):
        assert fields_of(a.post(path, {"name": "Cut", "duration": duration})) == ["duration"], duration
    # JSON has one kind of number, and JSON Schema's "integer" takes 45.0 (a pandas column with a gap sends that).
    assert '"duration":45,' in a.post(path, {"name": "Cut", "duration": 45.0}).text
    for price in (True, "10", -0.01, 10**40, [1]):
        assert fields_of(a.post(path, {"name": "Cut", "price": price})) == ["price"], price
    for currency in ("EU", "EURO", "eur", "€UR", 978):
        assert fields_of(a.post(path, {"name": "Cut", "currency": currency})) == ["currency"], currency
    # Infinity and NaN are not valid prices (the raw JSON literals parse in Python).
    for raw in (
        '{"name": "Cut", "price": 1e999}',
        '{"name": "Cut", "price": NaN}',
        '{"name": "Cut", "price": -Infinity}',
    ):
        assert fields_of(a.post(path, content=raw)) == ["price"]
    ok = a.post(path, {"name": "Cut", "duration": 1440, "price": 0, "currency": "NOK"})
    assert ok.status_code == 201 and ok.json()["duration"] == 1440 and ok.json()["price"] == 0
    # Bools are rejected on PATCH too, and nothing changes.
    sv = ok.json()
    item = f"{path}/{sv['id']}"
    assert fields_of(a.patch(item, {"duration": True})) == ["duration"]
    assert a.get(item).json()["duration"] == 1440


def test_staff_validation(a: Client) -> None:
    co = a.company()
    path = f"{BASE}/companies/{co['id']}/staff"
    r = a.post(
        path,
        {"firstName": "", "email": "nope", "services": [{"id": "sv_000000000000"}, "x", {}, {"id": 5}, {"id": "junk"}]},
    )
    assert fields_of(r) == [
        "firstName",
        "lastName",
        "email",
        "services[1]",
        "services[2].id",
        "services[3].id",
        "services[4].id",
        "services[0].id",
    ]
    for email in ("a@", "@b", "a@b@c", "ab", 5):
        assert fields_of(a.post(path, {"firstName": "A", "lastName": "B", "email": email})) == ["email"], email
    assert fields_of(a.post(path, {"firstName": "A", "lastName": "B", "services": {"id": "sv_000000000000"}})) == [
        "services"
    ]
    assert fields_of(a.post(path, {"firstName": "A", "lastName": "B", "services": [{"id": "sv_0"}] * 101})) == [
        "services"
    ]
    assert a.post(path, {"firstName": "A", "lastName": "B", "services": None}).json()["services"] == []


def test_appointment_validation(a: Client) -> None:
    co = a.company()
    sv = a.service(co["id"])
    staff = a.staff(co["id"])
    path = f"{BASE}/companies/{co['id']}/appointments"
    r = a.post(path, {"serviceId": 1, "start": "tomorrow", "status": "maybe", "customer": {"email": "x"}})
    assert fields_of(r) == ["serviceId", "staffId", "start", "customer.email", "status"]
    r = a.post(path, {"serviceId": "sv_000000000000", "staffId": "st_000000000000", "start": "2025-01-01T10:00:00Z"})
    assert fields_of(r) == ["serviceId", "staffId"]
    good = {"serviceId": sv["id"], "staffId": staff["id"]}
    for start in ("2025-13-01T10:00:00", "", 1735725600, "2025-01-01T25:00", "x" * 100):
        assert fields_of(a.post(path, {**good, "start": start})) == ["start"], start
    assert fields_of(a.post(path, {**good, "start": "2025-01-01T10:00:00+01:00", "status": None})) == ["status"]
    # serviceId and staffId swapped are both wrong.
    assert fields_of(
        a.post(path, {"serviceId": staff["id"], "staffId": sv["id"], "start": "2025-01-01T10:00:00Z"})
    ) == [
        "serviceId",
        "staffId",
    ]
    r = a.post(path, {**good, "start": "2025-01-01T10:00:00Z"})
    assert r.status_code == 201 and r.json()["start"] == "2025-01-01T10:00:00Z"


RFC3339_VALID = [
    "2025-01-31T14:30:00Z",
    "2025-01-31t14:30:00z",
    "2025-01-31T14:30:00+01:00",
    "2025-01-31T14:30:00-00:00",
    "2025-01-31T14:30:00.5Z",
    "2025-01-31T14:30:00.123456789-05:30",
    "2024-02-29T00:00:00Z",
    "2000-02-29T23:59:59+23:59",
    "2016-12-31T23:59:60Z",  # a leap second is the last second of a UTC day…
    "2017-01-01T00:59:60+01:00",  # …wherever the offset puts it
    "0000-01-01T00:00:00Z",
]
RFC3339_INVALID = [
    "2025-01-31X14:30",
    "2025-01-31",
    "2025-W05-5",
    "20250131T1430",
    "2025-01-31T14:30",  # seconds are required
    "2025-01-31T14:30:00",  # so is an offset
    "2025-01-31 14:30:00Z",
    "2025-01-31T14:30:00+0100",
    "2025-01-31T14:30:00+01",
    "2025-01-31T14:30:00.Z",
    "2025-01-31T14:30:00,5Z",
    "2025-02-29T10:00:00Z",
    "1900-02-29T10:00:00Z",
    "2025-04-31T10:00:00Z",
    "2025-00-10T10:00:00Z",
    "2025-01-00T10:00:00Z",
    "2025-01-31T24:00:00Z",
    "2025-01-31T14:60:00Z",
    "2025-01-31T14:30:61Z",
    "2025-01-31T14:30:60Z",
    "2016-12-31T23:59:60+01:00",
    "2025-01-31T14:30:00+24:00",
    "2025-01-31T14:30:00+01:60",
    "\u0662025-01-31T14:30:00Z",
    "2025-01-31T14:30:00Z\n",
    " 2025-01-31T14:30:00Z",
    "+2025-01-31T14:30:00Z",
    "2025-01-31T14:30:00.1" + "0" * 50 + "Z",
]


@pytest.mark.parametrize("start", RFC3339_VALID)
def test_an_appointment_starts_at_an_rfc3339_date_time_kept_as_sent(a: Client, start: str) -> None:
    co = a.company()
    ap = a.appointment(co["id"], a.service(co["id"])["id"], a.staff(co["id"])["id"], start=start)
    assert ap["start"] == start


@pytest.mark.parametrize("start", RFC3339_INVALID)
def test_a_start_that_is_not_an_rfc3339_date_time_is_refused(a: Client, start: str) -> None:
    co = a.company()
    good = {"serviceId": a.service(co["id"])["id"], "staffId": a.staff(co["id"])["id"]}
    path = f"{BASE}/companies/{co['id']}/appointments"
    r = a.post(path, {**good, "start": start})
    assert fields_of(r) == ["start"], start
    assert r.json()["error"]["details"][0]["message"] == (
        "must be an RFC 3339 date-time with seconds and an offset, like 2025-01-31T14:30:00+01:00 or 2025-01-31T14:30:00Z"
    )


def test_put_requires_the_full_object(a: Client) -> None:
    co = a.company()
    sv = a.service(co["id"])
    assert fields_of(a.put(f"{BASE}/companies/{co['id']}", {})) == ["name"]
    assert fields_of(a.put(f"{BASE}/companies/{co['id']}/services/{sv['id']}", {"price": 5})) == ["name"]
    assert a.get(f"{BASE}/companies/{co['id']}/services/{sv['id']}").json() == sv


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "Request body must be valid JSON"),
        ("", "Request body must be valid JSON"),
        (b"\xff\xfe\x00", "Request body must be valid JSON"),
        ("[1, 2]", "Request body must be a JSON object"),
        ('"text"', "Request body must be a JSON object"),
        ("null", "Request body must be a JSON object"),
        ("[" * 100000 + "]" * 100000, "Request body must be valid JSON"),
    ],
)
def test_body_must_be_a_json_object(a: Client, content: str | bytes, message: str) -> None:
    co = a.company()
    for method, path in (("POST", f"{BASE}/companies"), ("PATCH", f"{BASE}/companies/{co['id']}")):
        r = a.request(method, path, content=content)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "validation_error"
        assert r.json()["error"]["message"] == message


def test_oversized_body_is_refused(a: Client) -> None:
    r = a.post(f"{BASE}/companies", {"name": "x", "junk": "y" * (1024 * 1024)})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


def test_lone_surrogates_and_odd_text(a: Client) -> None:
    r = a.post(f"{BASE}/companies", content='{"name": "bad \\ud800 text"}')
    assert fields_of(r) == ["name"]
    r = a.post(f"{BASE}/companies", {"name": "Café \u0000 ☕ 日本"})
    assert r.status_code == 201
    assert a.get(r.headers["location"]).json()["name"] == "Café \u0000 ☕ 日本"


# -- errors, routing, auth ------------------------------------------------


def test_not_found_cases(a: Client) -> None:
    co = a.company()
    for path, message in [
        (f"{BASE}/companies/co_000000000000", "company 'co_000000000000' not found"),
        (f"{BASE}/companies/not-an-id", "company 'not-an-id' not found"),
        (f"{BASE}/companies/co_000000000000/services", "company 'co_000000000000' not found"),
        (f"{BASE}/companies/co_000000000000/staff/st_000000000000", "company 'co_000000000000' not found"),
        (f"{BASE}/companies/{co['id']}/services/sv_000000000000", "service 'sv_000000000000' not found"),
        (f"{BASE}/companies/{co['id']}/staff/sv_000000000000", "staff member 'sv_000000000000' not found"),
        (f"{BASE}/companies/{co['id']}/appointments/ap_000000000000", "appointment 'ap_000000000000' not found"),
    ]:
        r = a.get(path)
        assert r.status_code == 404, path
        assert_json(r)
        assert r.json() == {"error": {"code": "not_found", "message": message}}
    # 404 wins over a bad body when the target does not exist.
    assert a.post(f"{BASE}/companies/co_000000000000/services", content="junk").status_code == 404
    assert a.patch(f"{BASE}/companies/{co['id']}/services/sv_000000000000", {"duration": True}).status_code == 404


def test_unknown_route_and_wrong_method(a: Client) -> None:
    for path in (
        "/nope",
        f"{BASE}/companies/",
        f"{BASE}/widgets",
        f"{BASE}/companies/x/y/z/w",
        f"{BASE}/companiesX",
        f"{BASE}/companies//services",
        f"{BASE}/companies/x/services/",
        f"{BASE}/companies/x/widgets",
        f"{BASE}/companies/x/companies",
        f"{BASE}/companies/x/services//",
        "/api/2.1/scheduling",
    ):
        r = a.get(path)
        assert r.status_code == 404, path
        assert_json(r)
        assert r.json()["error"]["code"] == "not_found"
    r = a.delete(f"{BASE}/companies")
    assert r.status_code == 405
    assert_json(r)
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "GET, HEAD, POST"
    r = a.post(f"{BASE}/companies/co_000000000000", {"name": "x"})
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, PUT, PATCH, DELETE"


def test_authentication(app: Any, a: Client) -> None:
    co = a.company()
    anonymous = Client(app, None)
    wrong = Client(app, "tok-wrong")
    path = f"{BASE}/companies/{co['id']}"
    for client, params in [
        (anonymous, None),
        (wrong, None),
        (anonymous, {"apiKey": "key-a", "token": "tok-b"}),
        (anonymous, {"apiKey": "key-a"}),
        (wrong, {"apiKey": "key-a", "token": "tok-a"}),  # the header decides
    ]:
        for method in ("GET", "DELETE"):
            r = client.request(method, path, params=params)
            assert r.status_code == 401
            assert_json(r)
            assert r.json() == UNAUTHORIZED
    assert anonymous.post(f"{BASE}/companies", {"name": "x"}).status_code == 401
    assert anonymous.get("/unknown").status_code == 401
    # Nothing was deleted by the refused requests.
    assert a.get(path).status_code == 200
    r = anonymous.get(path, params={"apiKey": "key-a", "token": "tok-a"})
    assert r.status_code == 200 and r.json() == co


def test_tenant_isolation(a: Client, b: Client) -> None:
    co = a.company()
    sv = a.service(co["id"])
    staff = a.staff(co["id"], services=[{"id": sv["id"]}])
    ap = a.appointment(co["id"], sv["id"], staff["id"])
    company_path = f"{BASE}/companies/{co['id']}"

    assert b.get(f"{BASE}/companies").json()["items"] == []
    assert b.get(company_path).status_code == 404
    assert b.put(company_path, {"name": "Mine now"}).status_code == 404
    assert b.patch(company_path, {"name": "Mine now"}).status_code == 404
    assert b.delete(company_path).status_code == 404
    for plural, item in (("services", sv), ("staff", staff), ("appointments", ap)):
        assert b.get(f"{company_path}/{plural}").status_code == 404
        assert b.get(f"{company_path}/{plural}/{item['id']}").status_code == 404
        assert b.patch(f"{company_path}/{plural}/{item['id']}", {}).status_code == 404
        assert b.delete(f"{company_path}/{plural}/{item['id']}").status_code == 404
    r = b.post(f"{company_path}/services", {"name": "Sneaky"})
    assert r.status_code == 404
    assert r.json()["error"]["message"] == f"company '{co['id']}' not found"

    # B cannot point at A's service or staff from B's own company.
    own = b.company("B corp")
    r = b.post(
        f"{BASE}/companies/{own['id']}/staff", {"firstName": "X", "lastName": "Y", "services": [{"id": sv["id"]}]}
    )
    assert fields_of(r) == ["services[0].id"]
    r = b.post(
        f"{BASE}/companies/{own['id']}/appointments",
        {"serviceId": sv["id"], "staffId": staff["id"], "start": "2025-01-01T10:00:00Z"},
    )
    assert fields_of(r) == ["serviceId", "staffId"]

    # A's data is untouched.
    assert a.get(company_path).json() == co
    assert a.get(f"{company_path}/appointments/{ap['id']}").json()["status"] == "booked"
    assert [c["id"] for c in a.get(f"{BASE}/companies").json()["items"]] == [co["id"]]


def test_deleting_a_company_deletes_its_children(a: Client, store: Store) -> None:
    co = a.company()
    keep = a.company("Keep")
    sv = a.service(co["id"])
    staff = a.staff(co["id"], services=[{"id": sv["id"]}])
    ap = a.appointment(co["id"], sv["id"], staff["id"])
    kept = a.service(keep["id"])
    assert a.delete(f"{BASE}/companies/{co['id']}").status_code == 204
    for plural, item in (("services", sv), ("staff", staff), ("appointments", ap)):
        assert a.get(f"{BASE}/companies/{co['id']}/{plural}/{item['id']}").status_code == 404
    assert store.execute("SELECT COUNT(*) FROM staff_services") == [(0,)]
    assert store.execute("SELECT COUNT(*) FROM appointments") == [(0,)]
    assert a.get(f"{BASE}/companies/{keep['id']}/services").json()["items"] == [kept]


def test_deleting_a_service_removes_it_from_staff(a: Client) -> None:
    co = a.company()
    s1, s2 = a.service(co["id"], "One"), a.service(co["id"], "Two")
    staff = a.staff(co["id"], services=[{"id": s1["id"]}, {"id": s2["id"]}])
    assert a.delete(f"{BASE}/companies/{co['id']}/services/{s1['id']}").status_code == 204
    assert a.get(f"{BASE}/companies/{co['id']}/staff/{staff['id']}").json()["services"] == [{"id": s2["id"]}]


def test_list_pagination(a: Client) -> None:
    ids = [a.company(f"C{i}")["id"] for i in range(5)]
    r = a.get(f"{BASE}/companies", params={"limit": "2", "offset": "1"})
    assert r.status_code == 200
    assert [c["id"] for c in r.json()["items"]] == ids[1:3]
    assert r.json()["limit"] == 2 and r.json()["offset"] == 1
    assert a.get(f"{BASE}/companies", params={"offset": "4"}).json()["items"][0]["id"] == ids[4]
    assert a.get(f"{BASE}/companies", params={"limit": "1000"}).status_code == 200
    for params, bad in [
        ({"limit": "0"}, ["limit"]),
        ({"limit": "1001"}, ["limit"]),
        ({"limit": "abc", "offset": "-1"}, ["limit", "offset"]),
        ({"limit": "", "offset": "1e3"}, ["limit", "offset"]),
        ({"limit": "99999999999999999999"}, ["limit"]),
    ]:
        assert fields_of(a.get(f"{BASE}/companies", params=params)) == bad


def test_location_respects_root_path(store: Store) -> None:
    client = Client(scheduling_app(store, Keyring(CREDS)), "tok-a")

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app, root_path="/inner")
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await c.post(
                f"/inner{BASE}/companies", json={"name": "x"}, headers={"Authorization": "Bearer tok-a"}
            )

    r = asyncio.run(go())
    assert r.status_code == 201
    assert r.headers["location"] == f"/inner{BASE}/companies/{r.json()['id']}"


def test_data_persists_across_store_reopen(tmp_path: Path) -> None:
    path = tmp_path / "persist.db"
    with Store(path) as store:
        client = Client(scheduling_app(store, Keyring(CREDS)), "tok-a")
        co = client.company()
        sv = client.service(co["id"])
    with Store(path) as store:
        client = Client(scheduling_app(store, Keyring(CREDS)), "tok-a")
        assert client.get(f"{BASE}/companies/{co['id']}").json() == co
        assert client.get(f"{BASE}/companies/{co['id']}/services/{sv['id']}").json() == sv


# -- no input may produce a 500 ---------------------------------------------

_FIELD_NAMES = [
    "name",
    "address",
    "timezone",
    "phone",
    "duration",
    "price",
    "currency",
    "firstName",
    "lastName",
    "email",
    "services",
    "serviceId",
    "staffId",
    "start",
    "customer",
    "status",
    "id",
    "street",
    "city",
]
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**18, max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(
        ["sv_000000000000", "2025-01-01T10:00:00Z", "2025-01-01T10:00", "booked", "cancelled", "EUR", "a@b", ""]
    ),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_FIELD_NAMES) | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=12,
)
_bodies = st.dictionaries(st.sampled_from(_FIELD_NAMES), _json_values, max_size=8) | _json_values


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, list[str]]]:
    with Store(tmp_path_factory.mktemp("fuzz") / "fuzz.db") as store:
        client = Client(scheduling_app(store, Keyring(CREDS)), "tok-a")
        co = client.company()
        sv = client.service(co["id"])
        staff = client.staff(co["id"], services=[{"id": sv["id"]}])
        ap = client.appointment(co["id"], sv["id"], staff["id"])
        c = f"{BASE}/companies/{co['id']}"
        paths = [
            f"{BASE}/companies",
            f"{c}/services",
            f"{c}/staff",
            f"{c}/appointments",
            c,
            f"{c}/services/{sv['id']}",
            f"{c}/staff/{staff['id']}",
            f"{c}/appointments/{ap['id']}",
        ]
        yield client, paths


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_bodies, target=st.integers(min_value=0, max_value=7), method=st.sampled_from(["POST", "PUT", "PATCH"]))
def test_no_input_causes_a_server_error(
    fuzz_target: tuple[Client, list[str]], body: Any, target: int, method: str
) -> None:
    client, paths = fuzz_target
    path = paths[target]
    if method == "POST" and target >= 4:
        method = "PUT"
    if method != "POST" and target < 4:
        method = "POST"
    r = client.request(method, path, content=json.dumps(body))
    assert r.status_code in (200, 201, 400), r.text
    assert_json(r)
    if r.status_code == 400:
        assert r.json()["error"]["code"] == "validation_error"


# -- Idempotency-Key ------------------------------------------------------


def keyed(key: str) -> dict[str, Any]:
    return {"Idempotency-Key": key.encode("latin-1")}


def companies_named(store: Store, name: str) -> int:
    return store.execute("SELECT count(*) FROM companies WHERE name = ?", (name,))[0][0]


def test_the_same_key_and_request_answer_the_first_answer_again(a: Client, store: Store) -> None:
    first = a.post(f"{BASE}/companies", {"name": "Once"}, headers=keyed('"order-1"'))
    again = a.post(f"{BASE}/companies", {"name": "Once"}, headers=keyed('"order-1"'))
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()  # same id
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert companies_named(store, "Once") == 1
    # A first answer that was a refusal is the answer too.
    bad = [a.post(f"{BASE}/companies", {"name": ""}, headers=keyed("order-2")) for _ in range(2)]
    assert [r.status_code for r in bad] == [400, 400] and bad[1].headers["idempotent-replayed"] == "true"


def test_patch_is_keyed_and_put_delete_need_no_key(a: Client, store: Store) -> None:
    co = a.company("Patched")
    for _ in range(2):
        r = a.patch(f"{BASE}/companies/{co['id']}", {"timezone": "Europe/Oslo"}, headers=keyed("patch-1"))
        assert r.status_code == 200
    assert r.headers["idempotent-replayed"] == "true"
    r = a.put(f"{BASE}/companies/{co['id']}", {"name": "Put"}, headers=keyed("patch-1"))
    assert r.status_code == 200 and "idempotent-replayed" not in r.headers  # PUT is idempotent by itself: key ignored


def test_the_same_key_for_another_request_is_422(a: Client, store: Store) -> None:
    assert a.post(f"{BASE}/companies", {"name": "First"}, headers=keyed("k-422")).status_code == 201
    r = a.post(f"{BASE}/companies", {"name": "Second"}, headers=keyed("k-422"))
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [
        {"field": "headers.Idempotency-Key", "message": "was used for another method, path or body"}
    ]
    assert companies_named(store, "Second") == 0


@pytest.mark.parametrize(
    "key", ["", '""', "two words", '"unterminated', "x" * 256, "caf\u00e9", '"a", "b"', "k1\xa0", "\xa0k1", '"k1"\xa0']
)
def test_a_malformed_key_is_400_with_a_pointer(a: Client, store: Store, key: str) -> None:
    r = a.post(f"{BASE}/companies", {"name": "Malformed"}, headers=keyed(key))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["details"][0]["field"] == "headers.Idempotency-Key"
    assert companies_named(store, "Malformed") == 0


def test_two_tenants_may_use_one_key_without_seeing_each_other(a: Client, b: Client, store: Store) -> None:
    ra = a.post(f"{BASE}/companies", {"name": "Tenant A"}, headers=keyed("shared"))
    rb = b.post(f"{BASE}/companies", {"name": "Tenant B"}, headers=keyed("shared"))
    assert ra.status_code == rb.status_code == 201 and ra.json()["id"] != rb.json()["id"]
    assert "idempotent-replayed" not in rb.headers
    assert b.post(f"{BASE}/companies", {"name": "Tenant B"}, headers=keyed("shared")).json() == rb.json()


def test_keys_expire(store: Store) -> None:
    app = scheduling_app(store, Keyring(CREDS), key_ttl=0)  # every key is gone by the next request
    client = Client(app, "tok-a")
    for _ in range(2):
        assert client.post(f"{BASE}/companies", {"name": "Expired"}, headers=keyed("short")).status_code == 201
    assert companies_named(store, "Expired") == 2


def test_the_same_key_while_the_first_request_runs_is_409(app: Any, store: Store) -> None:
    """The first request's body is still arriving when its repeat comes: 409, then the first finishes."""

    def scope(body: bytes) -> dict:
        return {
            "type": "http",
            "method": "POST",
            "path": f"{BASE}/companies",
            "raw_path": f"{BASE}/companies".encode(),
            "query_string": b"",
            "headers": [
                (b"authorization", b"Bearer tok-a"),
                (b"content-type", b"application/json"),
                (b"idempotency-key", b'"slow"'),
                (b"content-length", str(len(body)).encode()),
            ],
        }

    async def call(body: bytes, arrived: asyncio.Event | None = None) -> tuple[int, dict, dict]:
        parts = [body[:5], body[5:]]
        answer: dict = {}

        async def receive() -> dict:
            if arrived is not None:
                reading.set()
            part = parts.pop(0)
            if parts == [] and arrived is not None:
                await arrived.wait()  # the rest of the body is late
            return {"type": "http.request", "body": part, "more_body": bool(parts)}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}
            else:
                answer["body"] = answer.get("body", b"") + message.get("body", b"")

        await app(scope(body), receive, send)
        return answer["status"], json.loads(answer["body"]), answer["headers"]

    reading = asyncio.Event()

    async def both() -> list[tuple[int, dict, dict]]:
        arrived = asyncio.Event()
        body = json.dumps({"name": "Slow"}).encode()
        first = asyncio.create_task(call(body, arrived))
        await asyncio.sleep(0)  # the first has claimed its key and waits for its body
        deadline = asyncio.get_running_loop().time() + 10
        while not reading.is_set():  # the key is claimed before the body is read
            assert asyncio.get_running_loop().time() < deadline, "the first request never started reading its body"
            await asyncio.sleep(0.01)
        second = await call(body)
        arrived.set()
        third_first = await first
        third = await call(body)
        return [second, third_first, third]

    (s409, b409, h409), (s_first, b_first, _), (s_again, b_again, h_again) = asyncio.run(asyncio.wait_for(both(), 30))
    assert s409 == 409 and b409["error"]["code"] == "idempotency_key_in_use" and h409["retry-after"] == "1"
    assert s_first == 201 and s_again == 201 and b_again == b_first and h_again["idempotent-replayed"] == "true"
    assert companies_named(store, "Slow") == 1


def test_the_key_is_kept_in_the_transaction_of_the_write(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """When recording the answer fails, the write it answers is rolled back with it, and the key is free again."""
    client = Client(scheduling_app(store, Keyring(CREDS)), "tok-a")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "keep_key", broken)
    r = client.post(f"{BASE}/companies", {"name": "Atomic"}, headers=keyed("atomic"))
    assert r.status_code == 500
    assert companies_named(store, "Atomic") == 0
    assert store.execute("SELECT count(*) FROM idempotency_keys WHERE key = 'atomic'") == [(0,)]
    monkeypatch.undo()
    assert client.post(f"{BASE}/companies", {"name": "Atomic"}, headers=keyed("atomic")).status_code == 201
    assert companies_named(store, "Atomic") == 1


def test_a_repeat_in_another_process_gets_the_first_answer(tmp_path: Path) -> None:
    """Two server processes on one SQLite file (``serve --workers``): the key is looked up in the transaction of the write."""
    first_store, second_store = Store(tmp_path / "shared.sqlite3"), Store(tmp_path / "shared.sqlite3")
    try:
        one = Client(scheduling_app(first_store, Keyring(CREDS)), "tok-a")
        other = Client(scheduling_app(second_store, Keyring(CREDS)), "tok-a")
        first = one.post(f"{BASE}/companies", {"name": "Across"}, headers=keyed("across"))
        again = other.post(f"{BASE}/companies", {"name": "Across"}, headers=keyed("across"))
        assert first.status_code == again.status_code == 201 and again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert companies_named(second_store, "Across") == 1
    finally:
        first_store.close()
        second_store.close()


@pytest.mark.parametrize(
    "value, expected",
    [
        ('"abc"', "abc"),
        ('"a b"', "a b"),
        ('  "k-1"  ', "k-1"),
        ("tok", "tok"),
        ('"a\\"b"', 'a"b'),
        ('"a\\\\b"', "a\\b"),
        ('"' + "x" * 255 + '"', "x" * 255),
        ('"' + "x" * 256 + '"', None),
        ('""', None),
        ('"', None),
        ('"a\x01"', None),
        ('"\u00e9"', None),
        ('"a"b"', None),
        ('"a\\"', None),
        ("k1\xa0", None),
        ('\u2003"k1"', None),
        ("\tk1 ", "k1"),
    ],
)
def test_an_idempotency_key_is_read_the_same_with_or_without_its_pattern(value, expected):
    """Plain quoted keys take a short way around the pattern; every value reads as the pattern says."""
    from batchnb.demo.idempotency import parse_key

    key, problem = parse_key([value])
    assert key == expected
    assert (problem is None) == (expected is not None)


def test_the_app_answers_lifespan_and_closes_websockets(store: Store) -> None:
    app = scheduling_app(store, Keyring(CREDS))
    sent: list[dict] = []

    async def go(kind: str, incoming: list[dict]) -> None:
        async def receive() -> dict:
            return incoming.pop(0)

        async def send(message: dict) -> None:
            sent.append(message)

        await app({"type": kind, "asgi": {"version": "3.0"}}, receive, send)

    asyncio.run(go("lifespan", [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    sent.clear()
    asyncio.run(go("websocket", [{"type": "websocket.connect"}]))
    assert sent == [{"type": "websocket.close", "code": 1000}]


def test_a_requests_fingerprint_is_the_one_kept_keys_were_stored_with() -> None:
    # Kept keys outlive a server's version: the same request must give the same fingerprint, or its repeat answers 422.
    assert idempotency.fingerprint("post", "/api/2.1/scheduling/companies", b'{"name":"A"}') == (
        "f8cd8e38819268148b0062672dbc73610bbf2d79491bdbc6ca3c0ad9b9ea4488"
    )
    assert idempotency.fingerprint("POST", "/a", b"b") != idempotency.fingerprint("POST", "/ab", b"")


def test_called_directly_the_api_answers_as_it_does_through_asgi(store: Store) -> None:
    # The batch server calls the demo without ASGI (SchedulingApp.dispatch): every answer must be the same.
    from batchnb._dispatch import ASGIDispatcher
    from batchnb.demo.scheduling import MAX_BODY_BYTES

    app = scheduling_app(store, Keyring(CREDS))
    through_asgi = ASGIDispatcher(app, max_response_bytes=10 * MAX_BODY_BYTES)
    auth = [("Authorization", "Bearer tok-a")]
    co = asyncio.run(
        app.dispatch("POST", f"{BASE}/companies", [*auth, ("Content-Type", "application/json")], b'{"name": "A"}')
    )
    assert co.status == 201 and co.headers["location"].endswith(orjson.loads(co.body)["id"])
    co_id = orjson.loads(co.body)["id"]
    cases = [
        ("GET", f"{BASE}/companies", auth, None),
        ("GET", f"{BASE}/companies?limit=1&offset=0", auth, None),
        ("GET", f"{BASE}/companies/{co_id}", auth, None),
        ("GET", f"{BASE}/companies?apiKey=key-a&token=tok-a", [], None),
        ("GET", f"{BASE}/companies/co_000000000000", auth, None),
        ("GET", f"{BASE}/companies/co%2Fx/services", auth, None),
        ("GET", f"{BASE}/companies/%E6%9D%B1", auth, None),
        ("GET", f"{BASE}/companies", [("authorization", "Bearer nope")], None),
        ("GET", f"{BASE}/companies", [], None),
        ("DELETE", f"{BASE}/companies", auth, None),
        ("GET", f"{BASE}/widgets", auth, None),
        ("PATCH", f"{BASE}/companies/{co_id}", auth, b'{"phone": 5}'),
        ("POST", f"{BASE}/companies", auth, b"not json"),
        ("POST", f"{BASE}/companies", auth, b'{"name": "' + b"x" * MAX_BODY_BYTES + b'"}'),
        ("POST", f"{BASE}/companies", [*auth, ("Idempotency-Key", "no quotes, spaces")], b'{"name": "B"}'),
        ("PUT", f"{BASE}/companies/{co_id}", [*auth, ("Idempotency-Key", '"k-put"')], b'{"name": "C"}'),
    ]
    for method, path, headers, body in cases:
        a = asyncio.run(through_asgi(method, path, headers, body))
        d = asyncio.run(app.dispatch(method, path, headers, body))
        assert (d.status, d.headers, d.body) == (a.status, a.headers, a.body), (method, path)
    # A keyed POST sent one way is replayed the other way, with the first answer.
    keyed = [*auth, ("Idempotency-Key", '"k-1"')]
    first = asyncio.run(through_asgi("POST", f"{BASE}/companies", keyed, b'{"name": "K"}'))
    again = asyncio.run(app.dispatch("POST", f"{BASE}/companies", keyed, b'{"name": "K"}'))
    assert (
        first.status == again.status == 201
        and first.body == again.body
        and again.headers["idempotent-replayed"] == "true"
    )
    other = asyncio.run(app.dispatch("POST", f"{BASE}/companies", keyed, b'{"name": "other"}'))
    assert other.status == 422


# -- integers past a double (item 22) ------------------------------------------


def test_integers_past_a_double_are_read_exactly_and_longer_ones_are_refused_saying_where(a: Client) -> None:
    # 400 digits: read as the number it is (orjson alone called it "infinity"), so the field's own rule answers.
    r = a.post(f"{BASE}/companies", content='{"name": "x", "address": {"zip": ' + "9" * 400 + "}}")
    assert fields_of(r) == ["address.zip"] and "must be a string" in r.text
    r = a.post(f"{BASE}/companies", content='{"name": "x", "n": ' + "9" * 4300 + "}")
    assert r.status_code == 201, r.text
    r = a.post(f"{BASE}/companies", content='{"name": "x", "address": {"zip": ' + "9" * 4301 + "}}")
    assert fields_of(r) == ["address.zip"]
    assert r.json()["error"]["details"][0]["message"] == (
        "an integer of 4301 digits; integers are kept exact up to 4300 digits"
    )


# -- HEAD (item 24) --------------------------------------------------------------


def test_head_answers_as_get_does_without_the_body(app: Any, a: Client) -> None:
    # RFC 9110 §9.3.2: the same status and headers as GET, Content-Length included, and no body.
    co = a.company()
    sv = a.service(co["id"])
    for path in (
        f"{BASE}/companies",
        f"{BASE}/companies/{co['id']}",
        f"{BASE}/companies/{co['id']}/services?limit=1",
        f"{BASE}/companies/{co['id']}/services/{sv['id']}",
        f"{BASE}/companies/co_000000000000",
        f"{BASE}/companies?limit=0",
        "/nope",
    ):
        got, head = a.get(path), a.request("HEAD", path)
        assert head.status_code == got.status_code and head.content == b"", (path, head.status_code, head.content)
        assert head.headers["content-length"] == str(len(got.content)) == got.headers["content-length"], path
        assert head.headers["content-type"] == got.headers["content-type"], path
    unauthenticated = Client(app, None).request("HEAD", f"{BASE}/companies")
    assert unauthenticated.status_code == 401 and unauthenticated.content == b""


# -- what a key fingerprints: never the credentials ----------------------------


def test_a_keyed_post_resent_with_other_credentials_is_the_same_request(server: Any) -> None:
    """Credentials in the query, then in a Bearer header (a client that changed how it sends them): a replay."""
    creds = server.credentials()
    url = f"{server.url}{BASE}/companies"
    query = {"apiKey": creds["api_key"], "token": creds["token"]}
    bearer = {"Authorization": f"Bearer {creds['token']}"}
    key = {"Idempotency-Key": "resent-with-bearer"}
    with httpx.Client(trust_env=False, timeout=10) as http:
        first = http.post(url, params=query, json={"name": "Keyed once"}, headers=key)
        again = http.post(url, json={"name": "Keyed once"}, headers={**key, **bearer})
        assert first.status_code == again.status_code == 201, again.text
        assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
        # And the other way round, in a batch: the batch's query credentials reach the operation's query.
        op = {"method": "POST", "path": f"{BASE}/companies", "body": {"name": "Batched once"}}
        op["headers"] = {"Idempotency-Key": "resent-in-a-batch"}
        batch = f"{server.url}/api/2.3/batch"
        answers = [
            http.post(batch, json={"requests": [op]}, headers=bearer).json(),
            http.post(batch, params=query, json={"requests": [op]}).json(),
        ]
        (a,), (b,) = (answer["responses"] for answer in answers)
        assert a["status"] == b["status"] == 201 and a["body"]["id"] == b["body"]["id"], answers
        # What is not a credential still tells two requests apart.
        other = http.post(url, params={**query, "note": "x"}, json={"name": "Keyed once"}, headers=key)
        assert other.status_code == 422, other.text


def test_a_fingerprint_leaves_credential_parameters_out_and_keeps_the_rest() -> None:
    fp = idempotency.fingerprint
    plain = fp("POST", "/c?page=2", b"{}")
    assert fp("POST", "/c?apiKey=k&page=2&token=t", b"{}") == plain == fp("POST", "/c?page=2&%74oken=t2", b"{}")
    assert fp("POST", "/c?page=3&token=t", b"{}") != plain and fp("POST", "/c", b"{}") == fp(
        "POST", "/c?token=t", b"{}"
    )
