"""The OpenAPI document: its patterns agree with batchnb._rules value for value, and it says what the server does.

Each pattern is read twice, as Schemathesis reads it: by Python's ``re`` (its
closing ``$`` as the end of the string, ``re.ASCII``), from which it draws
values, and by ``jsonschema_rs`` (the Rust engine it validates with, close to
ECMA-262). On thousands of generated values, a value matches iff the rule
accepts it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jsonschema
import jsonschema_rs
import pytest

from batchnb import LocalServer, _refs, _rules
from batchnb.demo import create_demo_app, scheduling
from batchnb.server import Limits, create_app
from batchnb.server import _patterns as patterns
from batchnb.server._openapi import OPENAPI_PATH

#: values per pattern; every one is checked under both readings.
N = 4000


def readings(pattern: str) -> list[Callable[[str], bool]]:
    """The pattern as Schemathesis draws from it (Python) and as it validates with it (jsonschema_rs)."""
    assert pattern.endswith("$")
    python = re.compile(pattern[:-1] + r"\Z", re.ASCII)
    rust = jsonschema_rs.validator_for({"type": "string", "pattern": pattern})
    return [lambda v: python.match(v) is not None, rust.is_valid]


def agree(pattern: str, values: Iterator[str], accepted: Callable[[str], bool | None]) -> int:
    """Assert that each value matches iff ``accepted`` says so (None: not a value the pattern speaks of); how many were."""
    read = readings(pattern)
    checked = 0
    for value in values:
        want = accepted(value)
        if want is None:
            continue
        for how, match in zip(("python re", "jsonschema_rs"), read):
            assert match(value) == want, f"{how}: {value!r} matches: {match(value)}, the rule accepts it: {want}"
        checked += 1
    return checked


def strings(
    seed: int, pieces: list[str], *, most: int = 10, prefix: str = "", prefixed: float = 0.0, count: int = N
) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, most)))
        yield prefix + text if rng.random() < prefixed else text


def literal(value: str) -> bool | None:
    """False when ``value`` does not parse as text with references; None when it holds one; else True."""
    try:
        parts = _refs.parse(value)
    except _refs.RefSyntaxError:
        return False
    return None if any(not isinstance(p, str) for p in parts) else True


#: what makes paths interesting: separators, dots, percent-escapes once and twice, references and their escape.
PATH_PIECES = (
    ["/"] * 3
    + [".", "..", "%", "2", "5", "e", "E", "f", "F", "c", "C", "3", "0", "1", "7", "4", "6", "a", "x", ";"]
    + ["?", "#", "\\", " ", "\t", "\x00", "\x01", "\x7f", "\n", "$", "{", "}", "é", "\xa0"]
    + ["%2e", "%2E", "%2f", "%2F", "%25", "%5c", "%5C", "%00", "%1f", "%7f", "%7F", "%32", "%65", "%45", "%66"]
    + ["%46", "%35", "%63", "%30", "%31", "%37", "%c3%a9", "%ff", "${result=", "${result=a:$.id}", "$${"]
)


def test_the_path_pattern_agrees_with_path_problem() -> None:
    def accepted(path: str) -> bool | None:
        plain = literal(path)
        if not plain:
            return plain
        return _rules.path_problem(_refs.parse(path) if "$" in path else path) is None

    values = strings(1, PATH_PIECES, prefix="/", prefixed=0.85)
    assert agree(patterns.operation_path(), values, accepted) > N * 0.9


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("/api/2.1/scheduling/companies?limit=5", True),
        ("/", True),
        ("/a//b", True),
        ("/a/...", True),
        ("/a/.x", True),
        ("/a/b?x=/../y", True),
        ("/a/%25", True),
        ("/a/$${b", True),
        ("//evil.example/x", False),
        ("/%2fevil.example", False),
        ("/%252fevil", False),
        ("/a/../b", False),
        ("/a/%2e%2E", False),
        ("/a/%252e%252e/b", False),
        ("/a/%%32%65/b", False),
        ("/a/.?q", False),
        ("/a/..#f", False),
        ("/a/%5c", False),
        ("/a/%255C", False),
        ("/a/%00", False),
        ("/a b", False),
        ("a/b", False),
        ("http://x/a", False),
        ("/a/${result=co:$.id", False),
    ],
)
def test_the_path_pattern_on_the_known_cases(path: str, ok: bool) -> None:
    for match in readings(patterns.operation_path()):
        assert match(path) is ok, path
    try:
        assert (_rules.path_problem(_refs.parse(path)) is None) is ok, path
    except _refs.RefSyntaxError:
        assert not ok, path


HEADER_NAMES = ["Host", "hOST", "Te", "TE", "Tea", "X-A", "Content-Length", "Content-Lengths", "Proxy-Authorization"]
HEADER_NAMES += [*sorted(_rules.FORBIDDEN_HEADERS), "Upgrade-Insecure-Requests", "Expected", "-", "!#$%&'*+.^_`|~"]
NAME_CHARS = [*list("aZ9-_.!~|^`'*+#$%& :\t\x00\x7f\né\xa0(){}[]\"/@=,;?"), "${result="]


def test_the_header_name_pattern_agrees_with_header_problems() -> None:
    rng = random.Random(2)

    def names() -> Iterator[str]:
        for value in strings(3, NAME_CHARS, most=6):
            yield rng.choice(HEADER_NAMES) if rng.random() < 0.4 else value

    def accepted(name: str) -> bool:
        return _rules.header_problems(name, "x") == []

    assert agree(patterns.header_name(), names(), accepted) == N


VALUE_PIECES = [
    *list("ab9~!\" #%&':;{}$\t\x00\x01\x1f\x7f\n\ré\xa0\u3000"),
    " ",
    "\t",
    "${result=",
    "${result=a:$}",
    "$${",
]


def test_the_header_value_pattern_agrees_with_header_problems() -> None:
    def accepted(value: str) -> bool | None:
        plain = literal(value)
        return plain and _rules.header_problems("X-A", value) == []

    assert agree(patterns.header_value(), strings(4, VALUE_PIECES), accepted) > N * 0.8


def test_the_header_lines_pattern_agrees_with_parse_header_lines() -> None:
    rng = random.Random(5)
    spaces = ["", " ", "\t", "\r", "\xa0", "\u3000", "\x0b", "\x1c", "\x85"]

    def texts() -> Iterator[str]:
        names = strings(6, NAME_CHARS, most=5, count=4 * N)
        values = strings(7, VALUE_PIECES, most=6, count=4 * N)
        for _ in range(N):
            lines = []
            for _ in range(rng.randint(0, 3)):
                name = rng.choice(HEADER_NAMES) if rng.random() < 0.3 else next(names)
                shape = rng.random()
                if shape < 0.1:
                    lines.append(rng.choice(spaces))
                elif shape < 0.15:
                    lines.append(name)  # no colon
                else:
                    pad = [rng.choice(spaces) for _ in range(4)]
                    lines.append(f"{pad[0]}{name}{pad[1]}:{pad[2]}{next(values)}{pad[3]}")
            yield rng.choice(["\n", "\r\n"]).join(lines)

    def accepted(text: str) -> bool | None:
        headers, problems = _rules.parse_header_lines(text)
        if any("(header names ignore case)" in p for p in problems):
            return None  # a name given twice: a rule between lines, which no pattern says
        values = [literal(v) for v in headers.values()]
        if None in values:
            return None
        return not problems and all(values) and all(not _rules.header_problems(k, v) for k, v in headers.items())

    assert agree(patterns.header_lines(), texts(), accepted) > N * 0.5


def test_the_name_and_method_patterns_agree_with_the_rules() -> None:
    chars = [*list("aZ09_.-$ é\n{}:/"), "ſ"]
    assert agree(patterns.operation_name(), strings(8, chars, most=4), lambda v: _rules.name_problem(v) is None) == N
    words = [m.lower() for m in _rules.METHODS] + list(_rules.METHODS) + ["Get", "pOsT", "FETCH", "HEAD", "", " ", "x"]

    def ascii_methods() -> Iterator[str]:
        rng = random.Random(9)
        for word in strings(10, list("GETPOSUDLACHgetposudlach "), most=6):
            yield rng.choice(words) if rng.random() < 0.5 else word

    # ASCII only: 'poſt'.upper() == 'POST' is item 25's, fixed in the rules elsewhere.
    assert agree(patterns.method(), ascii_methods(), lambda v: _rules.method_problem(v) is None) == N


def test_the_text_pattern_is_a_string_without_a_reference() -> None:
    pieces = [*list("ab $${}:.\n\x00é"), "${result=", "${result=a:$.x}", "$${", "${resu", "$$"]
    assert agree(patterns.text(), strings(11, pieces), lambda v: bool(literal(v)) or None) > N * 0.6


# ---------------------------------------------------------------- the document


@pytest.fixture(scope="module")
def demo_document() -> dict[str, Any]:
    return create_demo_app(db=":memory:", credentials={"demo": "demo-token"}).openapi()


def test_every_schema_of_the_document_is_json_schema_2020_12(demo_document: dict[str, Any]) -> None:
    assert demo_document["openapi"] == "3.1.0"
    components = demo_document["components"]
    for schema in components["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema_rs.validator_for({**schema, "components": components})  # every pattern compiles, every $ref leads


def test_every_route_of_the_demo_api_is_described_and_every_link_leads_somewhere(demo_document: dict[str, Any]):
    base = scheduling.API_PREFIX + "/companies"
    kinds = [("services", "service"), ("staff", "staff"), ("appointments", "appointment")]
    expected = {base: {"get", "post"}, base + "/{company_id}": {"get", "put", "patch", "delete"}}
    for plural, kind in kinds:
        expected[f"{base}/{{company_id}}/{plural}"] = {"get", "post"}
        expected[f"{base}/{{company_id}}/{plural}/{{{kind}_id}}"] = {"get", "put", "patch", "delete"}
    described = {p: set(ops) for p, ops in demo_document["paths"].items() if p.startswith(scheduling.API_PREFIX)}
    assert described == expected
    ids = {op["operationId"] for ops in demo_document["paths"].values() for op in ops.values()}
    links = [
        link
        for ops in demo_document["paths"].values()
        for op in ops.values()
        for answer in op["responses"].values()
        for link in answer.get("links", {}).values()
    ]
    assert len(links) > 20 and all(link["operationId"] in ids for link in links)


def test_the_demo_documents_each_field_as_its_check_reads_it(demo_document: dict[str, Any]) -> None:
    # Each field's schema against its own check, on values of every JSON type and edge.
    samples: list[Any] = [None, True, False, 0, 1, 30, 30.0, 1.5, -1, 1440, 1441, 10**12, 10**12 + 1, 10**40, ""]
    samples += [" ", "\u3000", " x ", "x" * 64, "x" * 65, "x" * 201, "a@b", "@b", "a@", "a@b@c", "EUR", "eur"]
    samples += ["EURO", "booked", "cancelled", "sv_0123456789ab", "sv_0123456789AB", "st_0123456789ab", []]
    samples += [[{"id": "sv_0123456789ab"}], [{"id": None}], [{}], [1], {}, {"zip": "1"}, {"zip": 1}, {"email": "a"}]
    samples += ["2025-01-31T14:30:00+01:00", "2025-01-31t14:30:00z", "2025-01-31T14:30", "2025-01-31", "20250131T1430"]
    schemas = demo_document["components"]["schemas"]
    checked = 0
    for kind, fields in scheduling._RULES.items():
        properties = schemas[kind[0].upper() + kind[1:] + "New"]["properties"]
        for field in fields:
            validator = jsonschema_rs.validator_for(properties[field.name])
            for value in samples:
                errors: list[dict[str, str]] = []
                if value is None and field.nullable and not field.required:
                    kept = True  # null: not set
                else:
                    kept = field.check(value, field.name, errors) is not scheduling._INVALID and not errors
                assert validator.is_valid(value) == kept, (kind, field.name, value)
                checked += 1
    assert checked > 500


def test_a_gateway_describes_its_batch_endpoint_only() -> None:
    open_gateway = create_app(upstream="https://api.example").openapi()
    assert set(open_gateway["paths"]) == {"/api/2.3/batch", OPENAPI_PATH}
    assert "security" not in open_gateway["paths"]["/api/2.3/batch"]["post"]
    guarded = create_app(upstream="https://api.example", credentials={"k": "t"}).openapi()
    assert guarded["paths"]["/api/2.3/batch"]["post"]["security"] == [{"bearer": []}, {"apiKey": [], "token": []}]
    assert "401" in guarded["paths"]["/api/2.3/batch"]["post"]["responses"]


def test_the_document_carries_the_servers_limits() -> None:
    limits = Limits(max_requests=7, max_depth=2, max_parallel=3)
    doc = create_app(upstream="https://api.example", limits=limits).openapi()
    schemas = doc["components"]["schemas"]
    assert schemas["Batch"]["properties"]["requests"]["maxItems"] == 7
    assert schemas["Batch"]["properties"]["parallel"]["maximum"] == 3
    assert set(schemas) >= {"Operation1", "Operation2"} and "Operation3" not in schemas
    assert schemas["Operation2"]["properties"]["requests"]["maxItems"] == 0
    wire = {**limits.to_wire(), "idempotency": False}
    assert {k: v["const"] for k, v in schemas["Limits"]["properties"].items()} == wire
    jsonschema.validate(wire, schemas["Limits"])


def test_the_server_answers_its_document_to_get_and_head(server: LocalServer) -> None:
    r = httpx.get(server.url + OPENAPI_PATH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["paths"].keys() >= {"/api/2.3/batch", scheduling.API_PREFIX + "/companies"}
    limits = httpx.get(server.url + "/api/2.3/batch").json()
    assert {k: v["const"] for k, v in doc["components"]["schemas"]["Limits"]["properties"].items()} == limits
    head = httpx.head(server.url + OPENAPI_PATH)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == r.headers["content-length"] == str(len(r.content))
    refused = httpx.post(server.url + OPENAPI_PATH)
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
    assert refused.json()["error"]["code"] == "method_not_allowed"


def test_the_idempotency_key_pattern_agrees_with_parse_key(demo_document: dict[str, Any]) -> None:
    from batchnb.demo import idempotency

    post = demo_document["paths"][scheduling.API_PREFIX + "/companies"]["post"]
    [key] = [p for p in post["parameters"] if p["name"] == "Idempotency-Key"]
    pieces = [*list('ab9~!"\\ \t#'), '"', '\\"', "a" * 100, "é", "\x7f", "\x00"]

    def accepted(value: str) -> bool | None:
        if value.strip(" \t") != value.strip():
            return None  # other white space around the key: Unicode strip() is item 25's, fixed elsewhere
        return idempotency.parse_key([value])[1] is None

    assert agree(key["schema"]["pattern"], strings(12, pieces, most=6), accepted) > N * 0.9
