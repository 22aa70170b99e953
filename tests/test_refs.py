import json

import pytest

from batchnb import ref
from batchnb._refs import Ref, RefSyntaxError, Unresolved, parse, render, resolve_json, segment


def lookup_from(results):
    def lookup(r: Ref):
        if r.name not in results:
            raise Unresolved(r, "not run")
        values = r.find(results[r.name])
        if not values:
            raise Unresolved(r, "no match")
        return values

    return lookup


RESULTS = {
    "co": {"id": "co_1", "n": 7, "flag": True, "tags": ["a", "b"], "addr": {"city": "Lyon"}, "a:b": "colon", "x": None},
    "list": {"items": [{"id": 1, "x": "}"}, {"id": 2, "x": "y"}]},
}
L = lookup_from(RESULTS)


def test_ref_formats_and_validates():
    assert ref("add-company", "$.id") == "${result=add-company:$.id}"
    with pytest.raises(RefSyntaxError):
        ref("bad name", "$.id")
    with pytest.raises(RefSyntaxError, match="does not parse"):
        ref("ok", "$[")


def test_parse_splits_text_and_refs():
    parts = parse("/c/${result=co:$.id}/s?x=${result=list:$.items[0].id}")
    assert parts[0] == "/c/" and parts[2] == "/s?x="
    assert isinstance(parts[1], Ref) and parts[1].name == "co" and parts[1].query == "$.id"
    assert parts[3].name == "list"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("${result=co:$['a:b']}", "colon"),
        ("${result=list:$.items[?@.x == '}'].id}", 1),
        ('${result=list:$.items[?@.x == "}"].id}', 1),
        ("${result=co:$.addr['city']}", "Lyon"),
    ],
)
def test_selectors_with_braces_colons_quotes(text, expected):
    assert resolve_json(text, L) == expected


def test_typed_whole_value_substitution():
    body = {
        "n": "${result=co:$.n}",
        "flag": "${result=co:$.flag}",
        "addr": "${result=co:$.addr}",
        "null": "${result=co:$.x}",
    }
    assert resolve_json(body, L) == {"n": 7, "flag": True, "addr": {"city": "Lyon"}, "null": None}


def test_text_substitution_inside_longer_strings_and_several_matches():
    assert resolve_json("n=${result=co:$.n}", L) == "n=7"
    assert resolve_json("${result=co:$.tags[*]}", L) == ["a", "b"]
    assert resolve_json("tags: ${result=co:$.tags[*]}", L) == "tags: a,b"
    assert resolve_json("f=${result=co:$.flag}", L) == "f=true"


def test_nested_bodies_and_keys():
    body = {"staff": [{"services": [{"id": "${result=list:$.items[1].id}"}]}], "k-${result=co:$.n}": 1}
    assert resolve_json(body, L) == {"staff": [{"services": [{"id": 2}]}], "k-7": 1}


def test_path_values_are_percent_encoded_as_segments():
    results = {"co": {"id": "a b/../c"}}
    assert render("/x/${result=co:$.id}/y", lookup_from(results), encode=segment) == "/x/a%20b%2F..%2Fc/y"


def test_escape_writes_literal():
    assert resolve_json("price $${result=co:$.id} stays", L) == "price ${result=co:$.id} stays"
    assert render("$${x} and ${result=co:$.id}", L) == "${x} and co_1"
    assert resolve_json("cost $5", L) == "cost $5"


def test_no_match_and_unknown_raise_unresolved():
    with pytest.raises(Unresolved, match="no match"):
        resolve_json("${result=co:$.missing}", L)
    with pytest.raises(Unresolved):
        render("/a/${result=nope:$.id}", L)


def test_partial_resolution_keeps_unknown_refs_and_escapes():
    def partial(r):
        return L(r) if r.name == "co" else None

    s = "/a/${result=co:$.id}/${result=later:$.id}/$${lit}"
    assert render(s, partial, encode=segment, partial=True) == "/a/co_1/${result=later:$.id}/$${lit}"
    # A substituted value that looks like a reference must not become one.
    evil = {"co": {"id": "${result=x:$.y}"}}
    assert resolve_json("${result=co:$.id}", lambda r: lookup_from(evil)(r), partial=True) == "$${result=x:$.y}"


@pytest.mark.parametrize("bad", ["${result=co}", "${result=co:$.id", "${result=:$.id}", "${result=co:$[}"])
def test_bad_syntax_is_an_error(bad):
    with pytest.raises(RefSyntaxError):
        parse(bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/companies/${result=co:$.id/staff", "its reference at character 11 is not closed by '}'"),
        ("/c/${result=co $.id}", "its reference at character 3 has no ':' between name and JSONPath"),
        (
            "/c/${result=a b:$.id}",
            "its reference at character 3: 'a b' is not a valid name: use letters, digits, '_', '.', '-'",
        ),
    ],
)
def test_syntax_messages_read_as_english_and_say_where(text, message):
    with pytest.raises(RefSyntaxError) as err:
        parse(text)
    assert str(err.value) == message


# ---------------------------------------------------------------- bounds: hostile queries and documents


def test_a_jsonpath_longer_than_the_limit_is_refused_before_it_is_compiled():
    with pytest.raises(RefSyntaxError, match="5001 characters long; the limit is 1000"):
        parse("${result=co:$" + ".a" * 2500 + "}")


def test_a_jsonpath_at_the_length_limit_is_evaluated_without_a_chain_of_generators():
    # 499 segments: the library alone nests one generator per segment, deeper than the stack allows.
    doc = leaf = {}
    for _ in range(499):
        leaf["a"] = {}
        leaf = leaf["a"]
    leaf["a"] = "bottom"
    (r,) = parse("${result=d:$" + ".a" * 499 + "}")
    assert r.find(doc) == [{"a": "bottom"}]


@pytest.mark.parametrize(
    ("query", "nesting"),
    [
        ("$.a", 0),
        ("$[0]", 1),
        ("$[?@.a]", 1),
        ("$[?(@.a && @.b)]", 3),
        ("$[?!!@.a]", 3),
        ("$['[[[']", 1),
        ("$[?@[?@[?@]]]", 3),
    ],
)
def test_nesting_counts_brackets_parentheses_and_filter_operators(query, nesting):
    from batchnb._jsonpath import _nesting

    assert _nesting(query) == nesting


@pytest.mark.parametrize(
    "query",
    [
        "$[?" + "!" * 40 + "@.a]",
        "$" + "[?@" * 40 + "]" * 40,
        "$[?" + "(" * 40 + "@" + ")" * 40 + "]",
        "$[?" + " && ".join(["@.a"] * 40) + "]",
    ],
)
def test_deep_jsonpaths_are_refused_not_a_recursion_error(query):
    with pytest.raises(RefSyntaxError, match="the limit is 32"):
        parse("${result=co:" + query + "}")


def test_evaluation_visits_a_bounded_number_of_nodes():
    doc = {"items": [{"k": i, "v": [i] * 10} for i in range(200)]}
    fifty = "[" + ",".join(["*"] * 50) + "]"
    (r,) = parse("${result=big:$.items" + fifty + fifty + "}")
    with pytest.raises(Unresolved, match="visits more than 1000 nodes"):
        r.find(doc, max_nodes=1000)
    (descent,) = parse("${result=big:$..*..*}")
    with pytest.raises(Unresolved, match="visits more than 1000 nodes"):
        descent.find(doc, max_nodes=1000)
    assert len(descent.find({"a": {"b": 1}})) == 1


def test_catastrophic_regular_expressions_run_in_linear_time():
    import threading

    (r,) = parse("${result=s:$[?match(@, '(a|aa|aaa)+[b-z]')]}")
    (s,) = parse("${result=s:$[?search(@, '(x+x+)+y')]}")
    found: list = []
    worker = threading.Thread(target=lambda: found.append((r.find(["a" * 40]), s.find(["x" * 5000]))), daemon=True)
    worker.start()
    worker.join(60)  # a deadline, not a measure: a backtracking engine needs hours here
    assert not worker.is_alive(), "the regular expression is still running after 60 s"
    assert found == [([], [])]


def test_a_filter_counts_every_child_it_tests_not_only_those_it_selects():
    (r,) = parse("${result=s:$[?@ == 'x']}")
    assert r.find(["y"] * 5000 + ["x"]) == ["x"]  # within the default bound
    with pytest.raises(Unresolved, match="visits more than 1000 nodes"):
        r.find(["y"] * 5000 + ["x"], max_nodes=1000)


def test_queries_inside_filters_count_the_nodes_they_visit():
    # Each of 300 children runs a query over all 300: 90,000 nodes, however few are selected.
    (r,) = parse("${result=s:$[?count($[*]) > 1000]}")
    with pytest.raises(Unresolved, match="visits more than 10000 nodes"):
        r.find(list(range(300)), max_nodes=10_000)


def test_regular_expressions_count_what_they_read():
    # 100 calls on 1,000 characters with a pattern RE2 may need many steps a character for.
    (r,) = parse("${result=s:$[?match(@, '[ab]*a" + "[ab]" * 20 + "c')]}")
    with pytest.raises(Unresolved, match="visits more than 10000 nodes"):
        r.find(["ab" * 500] * 100, max_nodes=10_000)
    assert r.find(["ab" * 5] * 100, max_nodes=10_000) == []  # short texts cost little


def test_a_pattern_is_checked_translated_and_compiled_once_not_once_per_node(monkeypatch):
    import iregexp_check

    from batchnb import _jsonpath

    checked: list[str] = []
    real_check = iregexp_check.check
    monkeypatch.setattr(iregexp_check, "check", lambda p: checked.append(p) or real_check(p))
    pattern = "((" + "|".join(f"w{i:03d}" for i in range(193)) + "))+"  # 969 characters
    assert len(pattern) == 969
    (r,) = parse(f"${{result=s:$[?match(@, '{pattern}')]}}")
    assert r.find([f"w{i % 300:03d}" for i in range(3000)]) == [f"w{i % 300:03d}" for i in range(3000) if i % 300 < 193]
    assert checked.count(pattern) <= 1  # 0 when an earlier test compiled it already
    assert pattern in [key for key in _jsonpath._REGEXPS._items]


@pytest.mark.parametrize(
    "number",
    ["1e999", "-1e999", "1.5e999", "1E400", "9" * 400, "-" + "9" * 400, "1" + "0" * 309 + ".5"],
    ids=["1e999", "-1e999", "1.5e999", "1E400", "400 nines", "-400 nines", "310 digits.5"],
)
def test_a_number_beyond_a_double_is_a_syntax_error_not_an_overflow(number):
    from batchnb import BatchValidationError

    with pytest.raises(RefSyntaxError, match="beyond what a double can hold") as info:
        ref("co", f"$[?@.n == {number}]")
    assert isinstance(info.value, BatchValidationError)
    assert ref("co", "$[?@.n == 1e308]") and ref("co", "$[?@.n == 1e-999]")  # within a double, or rounding to 0


@pytest.mark.parametrize(
    ("function", "pattern", "text", "matches"),
    [
        ("match", "a.c", "abc", True),
        ("match", "a.c", "a\nc", False),  # '.' is any character but CR and LF
        ("match", "a.c", "a\rc", False),
        ("match", "b", "abc", False),  # match is the whole string
        ("search", "b", "abc", True),
        ("search", "^a", "^abc", True),  # '^' and '$' are plain characters in I-Regexp
        ("search", "c$", "abc", False),
        ("match", "\\p{Lu}+", "ÉTÉ", True),
        ("match", "[^a]b", "xb", True),
        ("match", "(?:a)", "a", False),  # not I-Regexp: matches nothing
        ("match", "(a", "a", False),
    ],
)
def test_match_and_search_follow_i_regexp(function, pattern, text, matches):
    (r,) = parse(f"${{result=s:$[?{function}(@, {json.dumps(pattern)})]}}")
    assert r.find([text]) == ([text] if matches else [])


@pytest.mark.slow
def test_parsed_strings_are_not_kept_beyond_a_size():
    import gc
    import secrets
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(40):
            parse("/x$" + secrets.token_hex(500_000))  # 1 MB each, every one different
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 10 * 1024 * 1024, f"40 unique 1 MB strings left {kept / 2**20:.0f} MB behind"


@pytest.mark.slow
def test_parsed_strings_do_not_keep_compiled_queries_beyond_their_own_bound():
    import gc

    from jsonpath_rfc9535 import JSONPathQuery

    from batchnb import _jsonpath

    for i in range(8_000):  # 8,000 distinct JSONPaths: more than the compiled queries' cache holds
        parse(f"${{result=L:$.items[?@.name=='kept {i}']}}")
    gc.collect()
    alive = sum(isinstance(o, JSONPathQuery) for o in gc.get_objects())
    # Each compiled query holds others (one inside its filter): twice what the cache holds, at most.
    assert alive <= 2 * len(_jsonpath._COMPILED._items) + 100, alive
    assert len(_jsonpath._COMPILED._items) < 4_000
    (r,) = parse("${result=L:$.items[?@.name=='kept 0']}")  # compiled again, if it was dropped
    assert r.find({"items": [{"name": "kept 0"}]}) == [{"name": "kept 0"}]


def test_references_are_found_in_values_nested_far_deeper_than_the_recursion_limit():
    from batchnb._refs import iter_refs

    value: object = "${result=x:$.id}"
    for _ in range(5000):
        value = [value]
    assert [r.name for r in iter_refs(value)] == ["x"]


def test_a_value_in_a_path_may_not_bring_a_slash_before_the_query():
    from batchnb._refs import Refused, render_path

    lookup = lookup_from({"co": {"id": "co_1/services/sv_2", "q": "a/b"}})
    with pytest.raises(Refused, match="may read as a separator") as info:
        render_path("/companies/${result=co:$.id}", lookup)
    assert info.value.status == 400
    assert render_path("/companies?name=${result=co:$.q}", lookup) == "/companies?name=a%2Fb"
