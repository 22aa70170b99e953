import pytest

from batchnb import ref
from batchnb.refs import Ref, RefSyntaxError, Unresolved, parse, render, resolve_json, segment


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
    body = {"n": "${result=co:$.n}", "flag": "${result=co:$.flag}", "addr": "${result=co:$.addr}", "null": "${result=co:$.x}"}
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
        ("/c/${result=a b:$.id}", "its reference at character 3: 'a b' is not a valid name: use letters, digits, '_', '.', '-'"),
    ],
)
def test_syntax_messages_read_as_english_and_say_where(text, message):
    with pytest.raises(RefSyntaxError) as err:
        parse(text)
    assert str(err.value) == message
