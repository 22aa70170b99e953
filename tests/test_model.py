import json

import pytest

from batchnb import Batch, BatchValidationError, Operation, Response, ref

API = "/api/2.1/scheduling/companies"


def test_operation_to_wire_is_exactly_the_spec():
    op = Operation(
        "post",
        API,
        {"name": "X"},
        name="co",
        headers={"X-Trace": "1"},
        requests=[Operation("GET", f"{API}/{ref('co', '$.id')}")],
    )
    assert op.to_wire() == {
        "method": "POST",
        "path": API,
        "body": {"name": "X"},
        "name": "co",
        "headers": {"X-Trace": "1"},
        "requests": [{"method": "GET", "path": API + "/${result=co:$.id}"}],
    }


def test_from_wire_accepts_header_lines_any_method_case_and_any_body():
    b = Batch.from_wire(
        json.dumps(
            {
                "requests": [
                    {"method": "delete", "path": "/x", "headers": "Accept: text/plain\r\nX-A: b", "body": 5},
                    {
                        "method": "Put",
                        "path": "/y",
                        "body": "raw text",
                        "requests": [{"method": "get", "path": "/z", "body": [1, None]}],
                    },
                ]
            }
        )
    )
    assert [op.method for _p, op in b.walk()] == ["DELETE", "PUT", "GET"]
    assert b.requests[0].headers == {"Accept": "text/plain", "X-A": "b"}
    assert b.requests[1].requests[0].body == [1, None]
    assert Batch.from_wire(b.to_wire()) == b


def test_validation_collects_every_problem_with_pointers():
    with pytest.raises(BatchValidationError) as info:
        Batch.from_wire(
            {
                "requests": [
                    {"method": "GET", "path": "/ok", "name": "a"},
                    {"method": "FETCH", "path": "http://evil/x"},
                    {
                        "method": "GET",
                        "path": "/p",
                        "name": "a",
                        "headers": {"Host": "x", "X-Bad": "a\r\nb"},
                        "requests": [{"path": "/q", "method": 3}, "nope"],
                    },
                    {"method": "GET", "path": "/${result=ghost:$.id}", "body": "${result=a:$[}", "extra": 1},
                ]
            }
        )
    pointers = info.value.pointers
    for expected in [
        "requests[1].method",
        "requests[1].path",
        "requests[2].name",
        "requests[2].headers.Host",
        "requests[2].headers.X-Bad",
        "requests[2].requests[0].method",
        "requests[2].requests[1]",
        "requests[3].path",
        "requests[3].body",
        "requests[3].extra",
    ]:
        assert expected in pointers, (expected, pointers)
    assert "nothing was sent" in str(info.value)


def test_forward_and_cyclic_references_are_rejected():
    with pytest.raises(BatchValidationError) as info:
        Batch(
            [
                Operation("GET", "/a", body=ref("b", "$.id"), name="a"),
                Operation("GET", "/b", body=ref("a", "$.id"), name="b"),
            ]
        )
    msgs = " ".join(p.message for p in info.value.problems)
    assert "cycle" in msgs
    with pytest.raises(BatchValidationError, match="runs later"):
        Batch([Operation("GET", "/a", body=ref("b", "$.id")), Operation("GET", "/b", name="b")])


def test_references_to_ancestors_and_earlier_siblings_children_are_fine():
    Batch(
        [
            Operation(
                "POST", "/a", name="a", requests=[Operation("POST", "/a/c", name="child", body=ref("a", "$.id"))]
            ),
            Operation("GET", f"/b/{ref('child', '$.id')}"),
        ]
    )


@pytest.mark.parametrize(
    "path",
    [
        "http://evil.example/x",
        "//evil.example/x",
        "/a/../../etc",
        "/a/%2e%2e/b",
        "/a/%252e%252e/b",
        "/a\\b",
        "/a\r\nHost: x",
        "/a%00b",
        "relative/path",
        "/a b",
        "/a/%2E%2E%2Fb",
    ],
)
def test_a_batch_refuses_an_unsafe_path_wherever_it_is(path):
    for ops, pointer in [
        ([Operation("GET", path)], "requests[0].path"),
        ([Operation("GET", "/ok", requests=[Operation("GET", path)])], "requests[0].requests[0].path"),
    ]:
        with pytest.raises(BatchValidationError) as info:
            Batch(ops)
        assert pointer in info.value.pointers, (path, info.value.pointers)
    with pytest.raises(BatchValidationError) as info:
        Batch.from_wire({"requests": [{"method": "GET", "path": path}]})
    assert "requests[0].path" in info.value.pointers


@pytest.mark.parametrize("path", ["/api/2.1/scheduling/companies?limit=5", "/a/b.c/d..e", "/a/%20b"])
def test_a_batch_takes_safe_paths(path):
    assert Batch([Operation("GET", path)]).requests[0].path == path


def test_reprs_mask_credentials():
    op = Operation(
        "GET", "/x?apiKey=k1&token=SECRET", headers={"Authorization": "Bearer SECRET", "X-Api-Key": "SECRET"}
    )
    assert "SECRET" not in repr(op)
    assert "SECRET" not in repr(Batch([op]))


def test_response_from_wire_tolerates_older_servers():
    r = Response.from_wire(
        {
            "method": "GET",
            "path": "/x",
            "status": "200",
            "duration": "1.5",
            "response": {"a": 1},
            "responses": [{"method": "GET", "path": "/y", "status": 424}],
        }
    )
    assert (r.status, r.duration, r.body, r.ok) == (200, 1.5, {"a": 1}, True)
    assert r.responses[0].ok is False


def test_one_mistake_is_reported_once():
    with pytest.raises(BatchValidationError) as err:
        Batch.from_wire({"requests": [{"method": 7, "path": ["/x"]}]})
    assert [str(p) for p in err.value.problems] == [
        "requests[0].method: must be a string such as 'GET', not int",
        "requests[0].path: must be a string such as '/api/2.1/scheduling/companies', not list",
    ]
    assert repr(Batch([Operation("GET", "/x")])) == "Batch(1 operation)"


def test_a_batch_read_from_json_text_refuses_a_key_written_twice():
    with pytest.raises(BatchValidationError) as info:
        Batch.from_wire('{"requests": [{"method": "DELETE", "method": "GET", "path": "/x"}]}')
    assert info.value.problems[0].pointer == "requests[0]"
    assert "'method' appears twice" in info.value.problems[0].message


@pytest.mark.parametrize(
    "path", ["/c/${result=nope:$.id}", "/c/$\\u007bresult=nope:$.id}", "/c/\\u0024{result=nope:$.id}"]
)
def test_a_reference_is_checked_however_its_text_is_escaped(path: str) -> None:
    """The parse skips looking for references only in text that cannot hold one: an escaped ``${`` is still one."""
    raw = (f'{{"requests": [{{"method": "GET", "path": "{path}"}}]}}').encode()
    for parse in (lambda: Batch.from_wire(raw), lambda: Batch.from_wire(json.loads(raw), text=raw)):
        with pytest.raises(BatchValidationError) as info:
            parse()
        assert [p.pointer for p in info.value.problems] == ["requests[0].path"]
        assert "nope" in info.value.problems[0].message


def test_wire_text_that_cannot_be_utf8_is_malformed_json_with_a_pointer() -> None:
    with pytest.raises(BatchValidationError) as info:
        Batch.from_wire('{"requests": ["\ud800"]}')
    assert [p.pointer for p in info.value.problems] == [""]
    assert info.value.problems[0].message.startswith("malformed JSON")


# ---------------------------------------------------------------- issue 20: what the client refuses before sending


@pytest.mark.parametrize("method", ["po\u017ft", "PO\u017fT", "po\ufb06"])
def test_a_method_that_only_unicode_upper_cases_to_post_is_refused(method):
    with pytest.raises(BatchValidationError) as info:
        Batch([Operation(method, "/x")])
    assert info.value.pointers == ["requests[0].method"]
    with pytest.raises(BatchValidationError) as info:
        Batch.from_wire({"requests": [{"method": "GET", "path": "/x", "requests": [{"method": method, "path": "/y"}]}]})
    assert info.value.pointers == ["requests[0].requests[0].method"]
    assert "unknown method" in info.value.problems[0].message


@pytest.mark.parametrize("path", ["/a/..;/b", "/a/..%3B/b", "/a/%2e%2e;x/b", "/a/.;/b", "/a#b", "/c?q=1#x"])
def test_dot_segments_with_parameters_and_fragment_marks_are_refused_wherever_they_are(path):
    for ops, pointer in [
        ([Operation("GET", path)], "requests[0].path"),
        ([Operation("GET", "/ok", requests=[Operation("GET", path)])], "requests[0].requests[0].path"),
        ([Operation("GET", "/ok", name="a"), Operation("GET", path + ref("a", "$.id"))], "requests[1].path"),
    ]:
        with pytest.raises(BatchValidationError) as info:
            Batch(ops)
        assert info.value.pointers == [pointer], (path, info.value.pointers)


@pytest.mark.parametrize("name", ["X-Original-URL", "X-Rewrite-URL", "X-HTTP-Method-Override", "X-Forwarded-For"])
def test_a_header_that_rewrites_the_url_or_method_is_refused_with_its_pointer(name):
    with pytest.raises(BatchValidationError) as info:
        Batch([Operation("GET", "/x"), Operation("GET", "/y", headers={name: "/admin"})])
    assert info.value.pointers == [f"requests[1].headers.{name}"]
    with pytest.raises(BatchValidationError) as info:
        Batch.from_wire({"requests": [{"method": "GET", "path": "/y", "headers": f"X-A: 1\r\n{name}: DELETE"}]})
    assert info.value.pointers == [f"requests[0].headers.{name}"]


def test_a_key_ending_in_a_no_break_space_is_not_read_as_the_key_without_it():
    with pytest.raises(BatchValidationError) as info:
        Batch.from_wire({"requests": [{"method": "POST", "path": "/y", "headers": "Idempotency-Key: k1\xa0"}]})
    assert info.value.pointers == ["requests[0].headers.Idempotency-Key"]
    assert "must be ASCII text" in info.value.problems[0].message


@pytest.mark.parametrize("status", ["\u00b2", "\u0662\u0660\u0660", "\uff12\uff10\uff10", " 200"])
def test_a_status_of_other_than_ascii_digits_reads_as_no_status(status):
    r = Response.from_wire({"method": "po\u017ft", "path": "/x", "status": status, "body": None})
    assert r.status is None and r.method == "po\u017ft"
    assert Response.from_wire({"method": "post", "path": "/x", "status": "201"}).status == 201


def test_an_integer_longer_than_the_server_reads_is_refused_before_sending() -> None:
    # The same bound as the server's and the demo API's (batchnb._json.MAX_INT_DIGITS): found here, not there.
    from batchnb import _json

    with pytest.raises(BatchValidationError) as info:
        Batch([Operation("POST", "/x", body={"n": 10**_json.MAX_INT_DIGITS})])
    [problem] = info.value.problems
    assert problem.pointer == "requests[0].body" and "more than 4300 digits" in problem.message
    assert Batch([Operation("POST", "/x", body={"n": 10**_json.MAX_INT_DIGITS - 1})]).size == 1
    with pytest.raises(BatchValidationError) as info:
        Batch.from_wire(b'{"requests": [{"method": "POST", "path": "/x", "body": ' + b"1" * 4301 + b"}]}")
    assert [p.pointer for p in info.value.problems] == ["requests[0].body"]


def test_parallel_written_with_a_zero_fraction_is_the_whole_number() -> None:
    # JSON has one kind of number, and JSON Schema's "integer" (the OpenAPI document's) takes 4.0.
    batch = Batch.from_wire({"requests": [], "parallel": 4.0})
    assert batch.parallel == 4 and type(batch.parallel) is int
    for bad in (4.5, True, "4", 0.0):
        with pytest.raises(BatchValidationError) as info:
            Batch.from_wire({"requests": [], "parallel": bad})
        assert [p.pointer for p in info.value.problems] == ["parallel"], bad
