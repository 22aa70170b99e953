"""batchnb._rules: every batch rule, once, as pure functions that answer by position."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchnb import _rules
from batchnb._rules import GraphProblem, Reference

PACKAGE = Path(__file__).resolve().parent.parent / "batchnb"


def describe(i: int) -> str:
    return f"op {i}"


def messages(problems: list[GraphProblem]) -> list[tuple[int | None, object, str]]:
    return [(p.position, p.field, p.message) for p in problems]


# ---------------------------------------------------------------- methods and names


@pytest.mark.parametrize("method", ["GET", "post", "Put", "DELETE", "patch"])
def test_methods_of_any_case_are_taken(method):
    assert _rules.method_problem(method) is None


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (None, "is required: one of GET, POST, PUT, DELETE, PATCH"),
        ("  ", "is required: one of GET, POST, PUT, DELETE, PATCH"),
        ("FETCH", "unknown method 'FETCH'; use one of GET, POST, PUT, DELETE, PATCH"),
        (7, "must be a string such as 'GET', not int"),
    ],
)
def test_method_problems(method, message):
    assert _rules.method_problem(method) == message


def test_only_get_put_delete_are_idempotent():
    assert [m for m in _rules.METHODS if _rules.is_idempotent_method(m)] == ["GET", "PUT", "DELETE"]


@pytest.mark.parametrize("name", ["co", "add-company", "a.b_c-9", "X"])
def test_valid_names(name):
    assert _rules.name_problem(name) is None


@pytest.mark.parametrize("name", ["", "a b", "co/1", "é", "a:b", 3, "${x}"])
def test_invalid_names(name):
    assert _rules.name_problem(name) == f"{name!r} is not a valid name: use letters, digits, '_', '.', '-'"


def test_no_name_is_fine():
    assert _rules.name_problem(None) is None


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("http://evil.example/x", "must be relative to the API, not an absolute URL"),
        ("companies", "must start with '/'"),
        ("//evil.example/x", "must not start with '//' (that names another host)"),
        ("/a\\b", "must not contain a backslash"),
        ("/a\nb", "must not contain control characters (CR, LF, NUL, …)"),
        ("/a b", "must not contain spaces (percent-encode them as %20)"),
        ("/a/../b", "must not contain '.' or '..' segments"),
        ("/a/%2e%2e/b", "must not contain '.' or '..' segments"),
        ("/a/%252e%252e/b", "must not contain '.' or '..' segments"),  # an upstream that decodes twice
        ("/%2F%2Fevil", "must not start with '//' (that names another host)"),
        ("/a%00b", "must not contain encoded control characters or backslashes"),
        ("", "is required: a path such as '/api/2.1/scheduling/companies'"),
        (None, "is required: a path such as '/api/2.1/scheduling/companies'"),
        (12, "must be a string such as '/api/2.1/scheduling/companies', not int"),
    ],
)
def test_unsafe_paths(path, message):
    assert _rules.path_problem(path) == message


@pytest.mark.parametrize(
    "path", ["/", "/api/2.1/scheduling/companies", "/c/x?limit=5&q=a.b", "/c/caf%C3%A9", "/a.b/c..d"]
)
def test_safe_paths(path):
    assert _rules.path_problem(path) is None


def test_a_path_in_parts_checks_each_stand_in_as_one_segment():
    slot = object()
    assert _rules.path_problem(("/companies/", slot, "/staff")) is None
    # A stand-in cannot rescue a template that is unsafe on its own…
    assert _rules.path_problem((slot, "/staff")) == "must start with '/'"
    assert _rules.path_problem(("/a/", slot, "/../b")) == "must not contain '.' or '..' segments"
    # …and a list is not a path (it comes from a batch's JSON, where a path is text).
    assert _rules.path_problem(["/x"]) == "must be a string such as '/api/2.1/scheduling/companies', not list"
    # …and its literal text is judged as written.
    assert _rules.path_problem(("//", slot)) == "must not start with '//' (that names another host)"


# ---------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("name", "value", "found"),
    [
        ("X-Request-Id", "abc", []),
        ("Authorization", "Bearer t\tx", []),
        ("Host", "x", ["header 'Host' cannot be set per operation"]),
        ("content-length", "1", ["header 'content-length' cannot be set per operation"]),
        ("Bad Name", "x", ["'Bad Name' is not a valid header name"]),
        ("X-A", "line\r\nInjected: 1", ["header value must not contain control characters (CR, LF, NUL, …)"]),
        ("X-A", "東京", ["header value must be ASCII text (percent-encode other characters)"]),
        ("X-A", "café", ["header value must be ASCII text (percent-encode other characters)"]),
        ("X-A", " padded", ["header value must not start or end with a space or a tab"]),
        ("X-A", "padded\t", ["header value must not start or end with a space or a tab"]),
        ("X-A", 5, ["header values must be strings"]),
    ],
)
def test_header_problems(name, value, found):
    assert _rules.header_problems(name, value) == found


def test_header_lines_name_bad_lines_by_number_only():
    headers, bad = _rules.parse_header_lines("Accept: text/plain\r\n\nAuthorization Bearer secret\nX-A:  b ")
    assert headers == {"Accept": "text/plain", "X-A": "b"}
    assert bad == ["line 3 is not of the form 'Name: value'"]
    assert "secret" not in " ".join(bad)


# ---------------------------------------------------------------- size and depth


def test_measure_counts_nested_operations_and_finds_the_deepest_first():
    batch = [{"requests": [{}, {"requests": [{"requests": [{}]}]}]}, {"requests": [{"requests": [{"requests": [{}]}]}]}]
    shape = _rules.measure(batch, lambda d: d.get("requests"))
    assert (shape.size, shape.depth, shape.deepest) == (9, 4, (0, 1, 0, 0))


def test_measure_survives_nesting_far_deeper_than_the_recursion_limit():
    deep: dict = {}
    for _ in range(20_000):
        deep = {"requests": [deep]}
    shape = _rules.measure([deep], lambda d: d.get("requests"))
    assert shape.depth == 20_001 and shape.size == 20_001


@pytest.mark.slow
@pytest.mark.timeout(30)  # linear: a fraction of a second; the quadratic way took minutes at this depth
def test_measure_is_linear_in_depth_and_names_the_deepest_operation():
    deep: dict = {}
    for _ in range(300_000):
        deep = {"requests": [{}, deep]}  # the chain goes on through each level's second child
    shape = _rules.measure([deep], lambda d: d.get("requests"))
    assert shape.depth == 300_001 and shape.size == 600_001
    assert shape.deepest == (0, *[1] * 299_999, 0)  # the first of the two at the bottom


def test_measure_ignores_children_that_are_not_lists():
    assert _rules.measure([{"requests": "no"}, {"requests": None}], lambda d: d.get("requests")) == _rules.Shape(
        2, 1, (0,)
    )
    assert _rules.measure([], lambda d: d.get("requests")) == _rules.Shape(0, 0, ())


def test_limit_messages():
    assert _rules.too_many(51, 50) == "51 operations (nested included); the limit is 50 per batch"
    assert _rules.too_deep(5, 4) == "nested 5 levels deep; the limit is 4"


# ---------------------------------------------------------------- parents


def test_link_parents_by_name():
    up, problems = _rules.link_parents(
        ["a", "b", None, "d", "e"], [None, "a", "b", "zz", "e"], field="parent_col", describe=describe
    )
    assert up == [-1, 0, 1, -1, -1]
    assert messages(problems) == [
        (3, "parent_col", "parent 'zz' is the name of no operation"),
        (4, "parent_col", "parent 'e' is this operation itself"),
    ]


def test_a_parent_must_come_earlier():
    up, problems = _rules.link_parents([None, "later"], ["later", None], describe=describe)
    assert up == [-1, -1]
    assert messages(problems) == [
        (0, "parent", "parent 'later' is op 1, which comes later; a parent must come earlier")
    ]


# ---------------------------------------------------------------- the reference graph


def ref(position, name, field="path"):
    return Reference(position, field, name, f"${{result={name}:$.id}}")


def test_duplicate_names_point_at_the_first_use():
    problems = _rules.check_graph(["a", "b", "a", "a"], [], describe=describe)
    assert messages(problems) == [
        (2, "name", "duplicate name 'a' (first used at op 0)"),
        (3, "name", "duplicate name 'a' (first used at op 0)"),
    ]


def test_unknown_self_and_forward_references():
    problems = _rules.check_graph(
        ["a", "b", "c"], [ref(0, "c"), ref(1, "b", "body"), ref(2, "nope", "headers.X")], describe=describe
    )
    assert messages(problems) == [
        (0, "path", "${result=c:$.id} refers to op 2, which runs later (a forward reference)"),
        (1, "body", "${result=b:$.id} refers to this operation's own result"),
        (2, "headers.X", "${result=nope:$.id} refers to 'nope', which no operation in the batch is named"),
    ]


def test_a_cycle_is_named_as_one():
    problems = _rules.check_graph(["a", "b", "c"], [ref(0, "b"), ref(1, "c"), ref(2, "a")], describe=describe)
    assert messages(problems) == [
        (0, "path", "${result=b:$.id} makes a cycle: op 1 refers back to this operation"),
        (1, "path", "${result=c:$.id} makes a cycle: op 2 refers back to this operation"),
    ]


def test_known_names_come_from_earlier_batches():
    assert _rules.check_graph([None], [ref(0, "earlier")], known={"earlier"}, describe=describe) == []


def test_run_order_follows_nesting_not_positions():
    # Positions: 0 top "a", 1 top "b", 2 child of "a" named "c". Run order: a, c, b.
    parents = [-1, -1, 0]
    assert _rules.check_graph(["a", "b", "c"], [ref(1, "c")], parents=parents, describe=describe) == []
    problems = _rules.check_graph(["a", "b", "c"], [ref(2, "b")], parents=parents, describe=describe)
    assert messages(problems) == [
        (2, "path", "${result=b:$.id} refers to op 1, which runs later (a forward reference)")
    ]
    # A parent may be referenced by its child (it ran), never the other way round.
    assert _rules.check_graph(["a", None, "c"], [ref(2, "a")], parents=parents, describe=describe) == []
    problems = _rules.check_graph(["a", None, "c"], [ref(0, "c")], parents=parents, describe=describe)
    assert "forward reference" in problems[0].message


def test_a_reference_that_stands_in_every_operation():
    refs = [Reference(None, "path", "nope", "${result=nope:$.id}")]
    assert messages(_rules.check_graph([None, None], refs, describe=describe)) == [
        (None, "path", "${result=nope:$.id} refers to 'nope', which no operation in the batch is named")
    ]
    # Known to the graph: every operation that runs before the named one refers forward.
    refs = [Reference(None, "path", "b", "${result=b:$.id}")]
    assert [p.position for p in _rules.check_graph(["a", "b", None], refs, describe=describe)] == [0, 1]


@pytest.mark.slow
def test_a_long_chain_is_checked_without_recursion():
    n = 50_000
    names = [f"n{i}" for i in range(n)]
    chain = [ref(i, f"n{i + 1}") for i in range(n - 1)] + [ref(n - 1, "n0")]  # one big cycle
    problems = _rules.check_graph(names, chain, describe=describe)
    assert len(problems) == n - 1 and all("makes a cycle" in p.message for p in problems)


# ---------------------------------------------------------------- one home


RULE_MESSAGES = [
    "is not a valid name",
    "unknown method",
    "is required: one of",
    "is required: a path such as",
    "must be relative to the API",
    "must not start with '//'",
    "must not contain '.' or '..' segments",
    "cannot be set per operation",
    "is not a valid header name",
    "is not of the form 'Name: value'",
    "must be ASCII text",
    "must not start or end with a space or a tab",
    "header names ignore case",
    "which an API may read as a separator",
    "which runs later (a forward reference)",
    "which no operation in the batch is named",
    "makes a cycle",
    "duplicate name",
    "is the name of no operation",
    "operations (nested included); the limit is",
    "levels deep; the limit is",
]


def _string_literals(path: Path) -> list[str]:
    """The text of every string literal in a module's code (docstrings left out), f-strings' text parts included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


@pytest.mark.slow
@pytest.mark.parametrize("text", RULE_MESSAGES)
def test_each_rule_is_written_once_in_the_package(text):
    where = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        for literal in _string_literals(path)
        if text in literal
    ]
    assert where == ["_rules.py"], f"{text!r} is written in {where}"


@pytest.mark.parametrize(
    "name", ["TE", "Upgrade", "Keep-Alive", "Proxy-Connection", "Trailer", "Expect", "proxy-authorization"]
)
def test_hop_by_hop_headers_cannot_be_set_per_operation(name):
    assert _rules.header_problems(name, "x") == [f"header {name!r} cannot be set per operation"]


def test_a_header_set_twice_in_two_cases_is_refused():
    assert _rules.header_set_problems({"Authorization": "a", "X-A": "1", "authorization": "b"}) == [
        ("authorization", "header 'authorization' repeats 'Authorization' (header names ignore case)")
    ]
    headers, bad = _rules.parse_header_lines("Authorization: a\nauthorization: b")
    assert headers == {"Authorization": "a"} and bad == [
        "line 2: header 'authorization' repeats 'Authorization' (header names ignore case)"
    ]


def test_a_name_nested_deeper_than_the_recursion_limit_is_named_by_its_type():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert _rules.name_problem(deep) == "a list is not a valid name: use letters, digits, '_', '.', '-'"


def test_a_path_given_as_a_list_on_the_wire_is_the_wrong_type():
    assert _rules.path_problem(["/x"]) == "must be a string such as '/api/2.1/scheduling/companies', not list"
    assert _rules.path_problem(("/x",)) is None  # a tuple is a template's parts: a fine path


@given(st.text(alphabet="/._~-aZ09%?# \\", max_size=12))
def test_the_fast_path_for_plain_paths_agrees_with_the_long_way(tail: str) -> None:
    path = "/" + tail
    assert _rules.path_problem(path) == _rules._path_problem(path)


@given(
    st.sampled_from(["X-Note", "Idempotency-Key", "host", "Bad Name", "é", "", "X\n"]),
    st.text(alphabet=' \t\x00\x7f\r\n!~az09é"', max_size=8),
)
def test_the_fast_path_for_plain_headers_agrees_with_the_long_way(name: str, value: str) -> None:
    assert _rules.header_problems(name, value) == _rules._header_problems(name, value)
    assert _rules.header_problems(name, 5) == _rules._header_problems(name, 5)


def test_a_lone_header_cannot_repeat_another_but_a_list_of_names_is_still_compared() -> None:
    assert _rules.header_set_problems({"Authorization": "a"}) == []
    assert _rules.header_set_problems(["Authorization", "authorization"])[0][0] == "authorization"


# ---------------------------------------------------------------- issue 20: rewriting headers, ';' on dots, '#', ASCII


REWRITING_HEADERS = [
    "X-Original-URL",
    "x-rewrite-url",
    "X-Original-URI",
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "x-forwarded-proto",
    "X-Forwarded-Prefix",
    "X-Forwarded",
    "Forwarded",
    "X-Real-IP",
    "X-Client-IP",
    "True-Client-IP",
]


@pytest.mark.parametrize("name", REWRITING_HEADERS)
def test_headers_that_rewrite_the_url_method_or_client_cannot_be_set_per_operation(name: str) -> None:
    found = _rules.header_problems(name, "/admin")
    assert len(found) == 1 and found[0].startswith(f"header {name!r} cannot be set per operation"), found
    assert "URL, method or client" in found[0]
    assert _rules.header_problems(name, "/admin") == _rules._header_problems(name, "/admin")


@pytest.mark.parametrize("name", ["X-Forwarding-Note", "X-Original", "Forwarded-By-Me", "X-Realm", "X-Request-Id"])
def test_names_that_only_look_like_a_rewriting_header_are_fine(name: str) -> None:
    assert _rules.header_problems(name, "x") == []


@pytest.mark.parametrize(
    "path",
    [
        "/a/..;/b",
        "/..;",
        "/a/.;x/b",
        "/a/..;jsessionid=1/b",
        "/a/..;/..;/b",
        "/a/%2e%2e;/b",
        "/a/..%3b/b",
        "/a/..%3B/b",
        "/a/%2E%2e%3B/b",
        "/a/.%3bx",
        "/a/%252e%252e%253b/b",  # an upstream that decodes twice
        "/a/..;x?q=1",
    ],
)
def test_a_dot_segment_with_path_parameters_is_a_dot_segment(path: str) -> None:
    # Servlet containers cut ';…' off a segment before they read it: '..;x' is '..' to them.
    assert _rules.path_problem(path) == "must not contain '.' or '..' segments"


@pytest.mark.parametrize("path", ["/a/b;c", "/a;b/c", "/a/..x;y", "/a/x..;y", "/c/x?q=..;", "/a/;/b", "/a/...;/b"])
def test_path_parameters_on_other_segments_are_fine(path: str) -> None:
    assert _rules.path_problem(path) is None


def test_a_reference_that_fills_in_dots_and_a_semicolon_is_refused_once_filled() -> None:
    from batchnb import _refs

    filled = _refs.render_path("/c/${result=co:$.id}/x", lambda r: ["..;"])
    assert filled == "/c/..%3B/x"
    assert _rules.path_problem(filled) == "must not contain '.' or '..' segments"


@pytest.mark.parametrize("path", ["/a#b", "/a/#", "/#", "/c?x=1#frag", "/c/x?apiKey=k#", "/a#/../b"])
def test_a_fragment_mark_is_refused_in_a_path(path: str) -> None:
    assert _rules.path_problem(path) == "must not contain '#' (a fragment is never sent: percent-encode it as %23)"


def test_an_encoded_fragment_mark_is_fine_and_a_stand_in_cannot_hide_one() -> None:
    assert _rules.path_problem("/tags/C%23") is None
    assert _rules.path_problem(("/a/", object(), "#x")) == (
        "must not contain '#' (a fragment is never sent: percent-encode it as %23)"
    )


@pytest.mark.parametrize("method", ["po\u017ft", "PO\u017fT", "po\ufb05", "po\ufb06", "g\u0435t", "\uff27\uff25\uff34"])
def test_a_method_is_an_ascii_token_whatever_unicode_upper_cases_it_to(method: str) -> None:
    assert _rules.method_problem(method) == f"unknown method {method!r}; use one of GET, POST, PUT, DELETE, PATCH"


def test_header_lines_keep_what_is_not_a_space_or_a_tab_at_either_end() -> None:
    headers, bad = _rules.parse_header_lines("Idempotency-Key: k1\xa0\nX-A:\u3000b \t")
    assert headers == {"Idempotency-Key": "k1\xa0", "X-A": "\u3000b"} and bad == []
    assert _rules.header_problems("Idempotency-Key", headers["Idempotency-Key"]) == [
        "header value must be ASCII text (percent-encode other characters)"
    ]
    # A line of other white space is not an empty line: it has no name.
    assert _rules.parse_header_lines("\xa0") == ({}, ["line 1 is not of the form 'Name: value'"])
