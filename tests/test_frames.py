"""DataFrames to operations (batchnb.frames): shapes, templates, values, references, nesting, problems."""

from __future__ import annotations

import datetime as dt
import decimal

import numpy as np
import orjson
import pandas as pd
import pytest

from batchnb._exceptions import BatchValidationError
from batchnb._refs import ref
from batchnb.frames import from_frame
from batchnb.model import Batch, Operation

COMPANIES = "/api/2.1/scheduling/companies"


def wire(ops: list[Operation]) -> list[dict]:
    # Through real JSON, so that a numpy value or a NaN left in a body shows up.
    return orjson.loads(orjson.dumps([op.to_wire() for op in ops]))


# ---------------------------------------------------------------- from_frame: shapes


def test_canonical_frame_works_as_is():
    df = pd.DataFrame(
        {
            "method": ["post", "GET"],
            "path": [COMPANIES, f"{COMPANIES}/7"],
            "body": [{"name": "Main St"}, None],
            "name": ["add-company", None],
            "headers": ["Accept: application/json", None],
        },
        index=[10, 11],
    )
    ops = from_frame(df)
    assert [op.row for op in ops] == [10, 11]
    assert wire(ops) == [
        {
            "method": "POST",
            "path": COMPANIES,
            "body": {"name": "Main St"},
            "name": "add-company",
            "headers": {"Accept": "application/json"},
        },
        {"method": "GET", "path": f"{COMPANIES}/7"},
    ]
    assert all(isinstance(op, Operation) and op.requests == [] for op in ops)
    Batch(ops)  # the model's own checks agree


def test_frame_without_method_column_says_so():
    df = pd.DataFrame({"path": [COMPANIES]})
    with pytest.raises(BatchValidationError) as err:
        from_frame(df)
    assert err.value.pointers == ["method"]
    assert from_frame(df, method="GET")[0].method == "GET"


def test_path_template_percent_encodes_each_value_as_a_segment():
    df = pd.DataFrame({"site": ["a b/c", "plain", "ünï", "50%"], "n": [1, 2, 3, 4]})
    ops = from_frame(df, method="GET", path="/sites/{site}/staff/{n}")
    assert [op.path for op in ops] == [
        "/sites/a%20b%2Fc/staff/1",
        "/sites/plain/staff/2",
        "/sites/%C3%BCn%C3%AF/staff/3",
        "/sites/50%25/staff/4",
    ]


def test_name_template_is_not_encoded_and_column_beats_template():
    df = pd.DataFrame({"site": ["north", "south"], "path": ["/a", "/b"]})
    ops = from_frame(df, method="POST", name="co-{site}")
    assert [op.name for op in ops] == ["co-north", "co-south"]
    # "path" is a column, so it is used as one, not as a constant.
    assert [op.path for op in ops] == ["/a", "/b"]


def test_template_naming_a_missing_column_is_a_problem_of_the_argument():
    df = pd.DataFrame({"site": ["x"]})
    with pytest.raises(BatchValidationError) as err:
        from_frame(df, method="GET", path="/companies/{company}/staff")
    assert [(p.pointer, p.message) for p in err.value.problems] == [
        ("path", "the template {company}: the frame has no column 'company' (it has 'site')")
    ]


def test_template_values_that_make_the_path_unsafe_are_reported():
    df = pd.DataFrame({"site": ["ok", "..", "%2e%2e"]}, index=["a", "b", "c"])
    with pytest.raises(BatchValidationError) as err:
        from_frame(df, method="GET", path="/sites/{site}/staff")
    assert err.value.pointers == ["row 'b', column site", "row 'c', column site"]
    assert "'.' or '..'" in err.value.problems[0].message


def test_path_column_is_checked_per_value():
    df = pd.DataFrame(
        {"method": "GET", "path": ["/ok", "//evil.example/x", "http://x/y", "/a/../b", "/a b", "/fine/.well-known"]}
    )
    with pytest.raises(BatchValidationError) as err:
        from_frame(df)
    assert err.value.pointers == [f"row {i}, column path" for i in (1, 2, 3, 4)]


def test_body_as_list_of_columns():
    df = pd.DataFrame({"first": ["Ada"], "age": [36], "other": ["not sent"]})
    (op,) = from_frame(df, method="POST", path="/staff", body=["first", "age"])
    assert op.body == {"first": "Ada", "age": 36}


def test_body_as_dotted_mapping_nests():
    df = pd.DataFrame({"nm": ["Main St", "Side St"], "city": ["Oslo", None], "zip": ["0150", None]})
    ops = from_frame(
        df, method="POST", path=COMPANIES, body={"name": "nm", "address.city": "city", "address.zip": "zip"}
    )
    assert ops[0].body == {"name": "Main St", "address": {"city": "Oslo", "zip": "0150"}}
    # Every field of the nested object was null: the object is left out.
    assert ops[1].body == {"name": "Side St"}
    ops = from_frame(df, method="POST", path=COMPANIES, body={"name": "nm", "address.city": "city"}, nulls="null")
    assert ops[1].body == {"name": "Side St", "address": {"city": None}}


def test_body_as_callable_of_the_row():
    df = pd.DataFrame({"first": ["Ada", "Alan"], "age": [36, 41]})
    ops = from_frame(
        df, method="POST", path="/staff", body=lambda row: {"who": row["first"].upper(), "age": row["age"] + 1}
    )
    assert wire(ops)[1]["body"] == {"who": "ALAN", "age": 42}
    assert type(ops[0].body["age"]) is int


def test_body_mapping_naming_a_missing_column():
    df = pd.DataFrame({"a": [1]})
    with pytest.raises(BatchValidationError) as err:
        from_frame(df, method="POST", path="/x", body={"x": "a", "y": "nope"})
    assert err.value.pointers == ["body"]
    assert "'nope'" in err.value.problems[0].message


# ---------------------------------------------------------------- from_frame: value fidelity


def test_integers_stay_integers():
    df = pd.DataFrame({"n": np.array([1, 2**53 + 1], dtype=np.int64), "u": np.array([3, 4], dtype=np.uint32)})
    ops = from_frame(df, method="POST", path="/x", body=["n", "u"])
    assert [op.body for op in ops] == [{"n": 1, "u": 3}, {"n": 2**53 + 1, "u": 4}]
    assert all(type(v) is int for op in ops for v in op.body.values())
    assert b'"n":9007199254740993' in orjson.dumps(ops[1].to_wire())


def test_nullable_int_column_gives_ints_and_omits_na():
    df = pd.DataFrame({"n": pd.array([7, None, 9], dtype="Int64")})
    ops = from_frame(df, method="POST", path="/x", body=["n"])
    assert [op.body for op in ops] == [{"n": 7}, {}, {"n": 9}]
    assert type(ops[0].body["n"]) is int
    ops = from_frame(df, method="POST", path="/x", body=["n"], nulls="null")
    assert ops[1].body == {"n": None}


def test_float_column_with_integral_values_stays_float():
    df = pd.DataFrame({"x": [1.0, np.nan, 2.5]})
    ops = from_frame(df, method="POST", path="/x", body=["x"])
    assert [op.body for op in ops] == [{"x": 1.0}, {}, {"x": 2.5}]
    assert type(ops[0].body["x"]) is float


def test_booleans_numpy_and_nullable():
    df = pd.DataFrame({"a": np.array([True, False]), "b": pd.array([True, None], dtype="boolean")})
    ops = from_frame(df, method="POST", path="/x", body=["a", "b"])
    assert [op.body for op in ops] == [{"a": True, "b": True}, {"a": False}]
    assert type(ops[0].body["a"]) is bool and type(ops[0].body["b"]) is bool


def test_nulls_of_every_kind_are_omitted_or_sent_as_null():
    df = pd.DataFrame(
        {
            "f": [np.nan, 1.5],
            "o": pd.Series([None, "x"], dtype=object),
            "na": pd.Series([pd.NA, "y"], dtype=object),
            "s": pd.Series([None, "z"], dtype="str"),
            "t": pd.to_datetime([None, "2024-03-01"]),
        }
    )
    omitted = from_frame(df, method="POST", path="/x", body=["f", "o", "na", "s", "t"])
    assert omitted[0].body == {}
    assert omitted[1].body == {"f": 1.5, "o": "x", "na": "y", "s": "z", "t": "2024-03-01T00:00:00"}
    sent = from_frame(df, method="POST", path="/x", body=["f", "o", "na", "s", "t"], nulls="null")
    assert wire(sent)[0]["body"] == {"f": None, "o": None, "na": None, "s": None, "t": None}
    with pytest.raises(ValueError):
        from_frame(df, method="POST", path="/x", nulls="drop")


def test_dates_times_decimals_and_arrays():
    df = pd.DataFrame(
        {
            "ts": [pd.Timestamp("2024-05-06 07:08:09")],
            "tz": pd.to_datetime(["2024-05-06 07:08:09"]).tz_localize("UTC"),
            "d": [dt.date(2024, 5, 6)],
            "dec": [decimal.Decimal("1.25")],
            "arr": [np.array([1, 2, 3])],
            "lst": [[np.int64(4), np.float64(np.nan)]],
            "np_scalar": pd.Series([np.float32(0.5)], dtype=object),
            "cat": pd.Series(["b"], dtype="category"),
        }
    )
    (op,) = from_frame(df, method="POST", path="/x", body=list(df.columns))
    assert wire([op])[0]["body"] == {
        "ts": "2024-05-06T07:08:09",
        "tz": "2024-05-06T07:08:09+00:00",
        "d": "2024-05-06",
        "dec": 1.25,
        "arr": [1, 2, 3],
        "lst": [4, None],
        "np_scalar": 0.5,
        "cat": "b",
    }
    assert type(op.body["arr"][0]) is int


def test_body_column_json_text_is_parsed_but_a_body_field_stays_text():
    df = pd.DataFrame({"body": ['{"name": "Main St", "n": 3}', "[1, 2]", None], "note": ['{"a": 1}', "x", "y"]})
    ops = from_frame(df, method="POST", path="/x")
    assert [op.body for op in ops] == [{"name": "Main St", "n": 3}, [1, 2], None]
    ops = from_frame(df, method="POST", path="/x", body=["note"])
    assert ops[0].body == {"note": '{"a": 1}'}


def test_body_column_dict_cells_are_cleaned_too():
    df = pd.DataFrame({"body": [{"n": np.int64(5), "gone": np.nan, "when": pd.Timestamp("2024-01-02")}]})
    (op,) = from_frame(df, method="POST", path="/x")
    assert op.body == {"n": 5, "when": "2024-01-02T00:00:00"}
    assert type(op.body["n"]) is int


def test_headers_forms():
    df = pd.DataFrame(
        {
            "h": [
                {"Authorization": "Bearer a"},
                '{"Authorization": "Bearer b"}',
                "Authorization: Bearer c\nX-Trace: 1",
                None,
            ]
        }
    )
    ops = from_frame(df, method="GET", path="/x", headers="h")
    assert [op.headers for op in ops] == [
        {"Authorization": "Bearer a"},
        {"Authorization": "Bearer b"},
        {"Authorization": "Bearer c", "X-Trace": "1"},
        None,
    ]
    ops = from_frame(df, method="GET", path="/x", headers={"X-Key": "k"})
    assert ops[0].headers == {"X-Key": "k"} and ops[0].headers is not ops[1].headers
    df = pd.DataFrame({"token": ["t1", "t2"]})
    ops = from_frame(df, method="GET", path="/x", headers="Authorization: Bearer {token}")
    assert [op.headers for op in ops] == [{"Authorization": "Bearer t1"}, {"Authorization": "Bearer t2"}]


# ---------------------------------------------------------------- references and nesting


def test_reference_in_a_path_template_value_is_kept_verbatim():
    df = pd.DataFrame(
        {
            "company": ["7", ref("co-7", "$.id")],
            "name": ["co-7", None],
        }
    )
    ops = from_frame(df, method="POST", path=COMPANIES + "/{company}/staff")
    assert ops[0].path == f"{COMPANIES}/7/staff"
    assert ops[1].path == f"{COMPANIES}/${{result=co-7:$.id}}/staff"
    Batch(ops)


def test_reference_in_the_template_itself_must_name_a_row():
    # A reference written in the template is in every row, so it is checked once.
    df = pd.DataFrame({"staff": ["x", "a b"]})
    with pytest.raises(BatchValidationError) as err:
        from_frame(df, method="GET", path=f"/c/{ref('co', '$.id')}/staff/{{staff}}")
    assert err.value.pointers == ["path"]
    assert "which no operation in the batch is named" in err.value.problems[0].message


def test_forty_companies_and_three_thousand_staff_referencing_them():
    sites = [f"s{i:02d}" for i in range(40)]
    companies = pd.DataFrame(
        {"method": "POST", "path": COMPANIES, "name": [f"co-{s}" for s in sites], "title": [f"Site {s}" for s in sites]}
    )
    rng = np.random.default_rng(1)
    staff_sites = [sites[i] for i in rng.integers(0, 40, 3000)]
    staff = pd.DataFrame(
        {
            "method": "POST",
            "path": [f"{COMPANIES}/{ref(f'co-{s}', '$.id')}/staff" for s in staff_sites],
            "first": [f"Person {i}" for i in range(3000)],
            "company": [ref(f"co-{s}", "$.id") for s in staff_sites],
        }
    )
    df = pd.concat([companies, staff], ignore_index=True)
    ops = from_frame(df, body={"name": "title", "firstName": "first", "companyId": "company"})
    assert len(ops) == 3040
    assert ops[0].to_wire() == {"method": "POST", "path": COMPANIES, "body": {"name": "Site s00"}, "name": "co-s00"}
    s = staff_sites[123]
    assert ops[40 + 123].path == f"{COMPANIES}/${{result=co-{s}:$.id}}/staff"
    assert ops[40 + 123].body == {"firstName": "Person 123", "companyId": f"${{result=co-{s}:$.id}}"}
    Batch(ops)  # the model's own reference check agrees

    bad = df.copy()
    bad.loc[3000, "company"] = ref("co-s99", "$.id")
    with pytest.raises(BatchValidationError) as err:
        from_frame(bad, body={"name": "title", "firstName": "first", "companyId": "company"})
    assert err.value.pointers == ["row 3000, column company"]
    assert "'co-s99'" in err.value.problems[0].message


def test_nesting_by_parent_two_levels():
    df = pd.DataFrame(
        {
            "method": ["POST", "POST", "POST", "GET", "POST"],
            "path": [
                COMPANIES,
                f"{COMPANIES}/{ref('co', '$.id')}/services",
                f"/svc/{ref('svc', '$.id')}/x",
                "/other",
                "/last",
            ],
            "name": ["co", "svc", "deep", None, None],
            "parent": [None, "co", "svc", None, "co"],
        },
        index=list("abcde"),
    )
    top = from_frame(df)
    assert [op.row for op in top] == ["a", "d"]
    co = top[0]
    assert [op.row for op in co.requests] == ["b", "e"]
    assert [op.row for op in co.requests[0].requests] == ["c"]
    assert Batch(top).size == 5
    assert top[0].to_wire()["requests"][0]["requests"][0]["name"] == "deep"


def test_parent_must_be_an_earlier_row():
    df = pd.DataFrame({"method": "GET", "path": "/x", "name": ["a", "b", "c"], "parent": ["b", None, "zz"]})
    with pytest.raises(BatchValidationError) as err:
        from_frame(df)
    assert err.value.pointers == ["row 0, column parent", "row 2, column parent"]
    assert "comes later" in err.value.problems[0].message
    assert "is the name of no operation" in err.value.problems[1].message


def test_forward_reference_follows_run_order_not_row_order():
    # 'b' is an earlier row than 'c', but 'c' is a child of 'a' and so runs before 'b'.
    df = pd.DataFrame(
        {
            "method": "GET",
            "path": ["/a", "/b", f"/c/{ref('b', '$.id')}"],
            "name": ["a", "b", "c"],
            "parent": [None, None, "a"],
        }
    )
    with pytest.raises(BatchValidationError) as err:
        from_frame(df)
    assert err.value.pointers == ["row 2, column path"]
    assert "forward reference" in err.value.problems[0].message


def test_every_problem_is_reported_at_once_with_rows_and_columns():
    df = pd.DataFrame(
        {
            "method": ["POST", "FETCH", "GET", "POST", "GET", "POST", "GET", "POST"],
            "path": [
                COMPANIES,
                "/x",
                None,
                COMPANIES,
                f"/c/{ref('nope', '$.id')}",
                COMPANIES,
                f"/c/{ref('late', '$.id')}",
                COMPANIES,
            ],
            "body": ['{"name": "A"}', None, None, '{"name": ', None, None, None, None],
            "name": ["co-1", None, None, None, None, "co-1", None, "late"],
        },
        index=[f"r{i}" for i in range(8)],
    )
    with pytest.raises(BatchValidationError) as err:
        from_frame(df, headers="X-Site: {site_code}")
    by_pointer = {p.pointer: p.message for p in err.value.problems}
    assert set(by_pointer) == {
        "headers",
        "row 'r1', column method",
        "row 'r2', column path",
        "row 'r3', column body",
        "row 'r4', column path",
        "row 'r5', column name",
        "row 'r6', column path",
    }
    assert (
        by_pointer["headers"]
        == "the template {site_code}: the frame has no column 'site_code' (it has 'method', 'path', 'body', 'name')"
    )
    assert "unknown method 'FETCH'" in by_pointer["row 'r1', column method"]
    assert "required" in by_pointer["row 'r2', column path"]
    assert by_pointer["row 'r3', column body"].startswith("is not valid JSON: ")
    assert "'nope'" in by_pointer["row 'r4', column path"]
    assert "duplicate name 'co-1'" in by_pointer["row 'r5', column name"]
    assert "forward reference" in by_pointer["row 'r6', column path"]
    assert len(err.value.problems) == 7


def test_speed_path_is_column_wise(monkeypatch):
    # The row-wise pandas APIs are far too slow for a million rows.
    def refuse(*args, **kwargs):
        raise AssertionError("row-wise access")

    monkeypatch.setattr(pd.DataFrame, "iterrows", refuse)
    monkeypatch.setattr(pd.DataFrame, "itertuples", refuse)
    df = pd.DataFrame({"company": [f"c{i}" for i in range(1000)], "a": range(1000), "b": 1.5})
    ops = from_frame(df, method="POST", path="/companies/{company}/staff", body={"a": "a", "x.b": "b"})
    assert ops[999].to_wire() == {
        "method": "POST",
        "path": "/companies/c999/staff",
        "body": {"a": 999, "x": {"b": 1.5}},
    }


def test_a_percent_in_the_template_gets_every_value_checked():
    df = pd.DataFrame({"v": ["E", "ok"]})
    with pytest.raises(BatchValidationError) as err:
        from_frame(df, method="GET", path="/a/%2{v}/b")
    assert err.value.pointers == ["row 0, column v"]


def test_bad_headers_and_a_failing_body_function_are_reported_per_row():
    df = pd.DataFrame({"h": ["Host: evil", "X-Ok: 1", "no colon here"], "n": [1, 0, 2]})
    with pytest.raises(BatchValidationError) as err:
        from_frame(df, method="GET", path="/x", headers="h", body=lambda row: {"inv": 1 / row["n"]})
    assert err.value.pointers == ["row 0, column h", "row 1, column body", "row 2, column h"]
    assert "ZeroDivisionError" in err.value.problems[1].message


def test_a_name_column_used_as_body_data_is_not_an_operation_name():
    df = pd.DataFrame({"name": ["Site 1", "Site 2"], "city": "Lyon"})
    ops = from_frame(df, method="POST", path=COMPANIES, body=["name", "city"])
    assert [op.name for op in ops] == [None, None]
    assert ops[0].body == {"name": "Site 1", "city": "Lyon"}
    # Asked for explicitly, it is both; False ignores a column outright.
    with pytest.raises(BatchValidationError):
        from_frame(df, method="POST", path=COMPANIES, body=["name"], name="name")
    df = pd.DataFrame({"method": "GET", "path": ["/a"], "name": ["a b"], "body": ["{not json"]})
    (op,) = from_frame(df, name=False, body=False)
    assert op.name is None and op.body is None


def test_a_header_given_twice_in_two_cases_is_refused_up_front():
    df = pd.DataFrame({"h": [{"Authorization": "Bearer a", "authorization": "Bearer b"}, '{"X-A": "1", "x-a": "2"}']})
    with pytest.raises(BatchValidationError) as err:
        from_frame(df, method="GET", path="/x", headers="h")
    assert [str(p) for p in err.value.problems] == [
        "row 0, column h: header 'authorization' repeats 'Authorization' (header names ignore case)",
        "row 1, column h: header 'x-a' repeats 'X-A' (header names ignore case)",
    ]


# ---------------------------------------------------------------- column-wise building: as row by row

from hypothesis import given, settings  # noqa: E402 - the property tests' own imports, with them
from hypothesis import strategies as st  # noqa: E402 - the property tests' own imports, with them

from batchnb import _json  # noqa: E402 - the property tests' own imports, with them

TEXTS = ["a", "b", None, "..", "a b", "x/y", "%2e", "50%", "ü", "${result=co:$.id}", "${result=", "", "E"]
TEMPLATES = ["/s/{t}", "/s/{t}/n/{n}", "/s/{o}-{t}", "/p%2{t}", "/{f}/{t}/{n}", "/c/{n}", "/x/{c}/{t}"]


def _outcome(df: pd.DataFrame, **kw) -> tuple[list[dict] | None, list[tuple[str, str]]]:
    try:
        ops = from_frame(df, known={"co"}, **kw)
    except BatchValidationError as exc:
        return None, [(p.pointer, p.message) for p in exc.problems]
    return [op.to_wire() for op in ops], []


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(TEXTS),
            st.integers(-3, 3),
            st.booleans(),
            st.sampled_from([1, 1.0, True, "1", None, "a/b"]),
            st.sampled_from(["k", "l", None]),
        ),
        min_size=1,
        max_size=12,
    ),
    template=st.sampled_from(TEMPLATES),
    body=st.sampled_from([None, {"t": "t", "x.n": "n"}, ["o", "f"], {"c": "c"}]),
)
def test_a_frame_builds_as_its_rows_each_alone(rows, template, body):
    # Values repeat, and each distinct value is worked out once for all its
    # rows: what every row gets, operations and problems with their
    # pointers, must be what it gets alone.
    df = pd.DataFrame(
        {
            "t": pd.Series([r[0] for r in rows], dtype="str"),
            "n": [r[1] for r in rows],
            "f": [r[2] for r in rows],
            "o": pd.Series([r[3] for r in rows], dtype=object),
            "c": pd.Categorical([r[4] for r in rows]),
        },
        index=[f"r{i}" for i in range(len(rows))],
    )
    kw = {"method": "POST", "path": template, "body": body if body is not None else False}
    whole_ops, whole_problems = _outcome(df, **kw)
    alone = [_outcome(df.iloc[[i]], **kw) for i in range(len(df))]
    assert whole_problems == [p for _ops, problems in alone for p in problems]
    if whole_ops is not None:
        assert whole_ops == [op for ops, _problems in alone for op in ops]


def test_operations_built_column_wise_are_the_operations_of_their_fields():
    df = pd.DataFrame(
        {
            "site": ["a", "b", "a"],
            "n": [1, 2, 3],
            "name": ["x", None, "z"],
            "headers": ["X-A: 1", None, '{"X-B": "2"}'],
            "city": ["Lyon", None, "Nice"],
        },
        index=[10, 11, 12],
    )
    ops = from_frame(df, method="put", path="/s/{site}/{n}", body={"address.city": "city", "n": "n"})
    rebuilt = [Operation(op.method, op.path, body=op.body, name=op.name, headers=op.headers) for op in ops]
    assert ops == rebuilt
    assert [op.row for op in ops] == [10, 11, 12]
    assert [op.to_wire() for op in ops] == [op.to_wire() for op in rebuilt]
    # The bytes the client sends for a batch, either way.
    assert _json.dumps({"requests": [op.to_wire() for op in ops]}) == Batch(rebuilt).to_json()
    assert ops[1].to_wire() == {"method": "PUT", "path": "/s/b/2", "body": {"n": 2}}
    ops[0].requests.append(Operation("GET", "/child"))
    assert ops[2].requests == [] and ops[0].requests[0].path == "/child"


# ---------------------------------------------------------------- issue 20: paths, methods and headers the rules refuse


def test_a_fragment_mark_or_a_dot_segment_with_parameters_in_a_path_column_is_refused_by_row():
    df = pd.DataFrame({"method": "GET", "path": ["/ok", "/a#b", "/c?x=1#y", "/a/..;/b", "/a/.;x", "/t/C%23", "/a;b"]})
    with pytest.raises(BatchValidationError) as err:
        from_frame(df)
    assert err.value.pointers == [f"row {i}, column path" for i in (1, 2, 3, 4)]
    assert "must not contain '#'" in err.value.problems[0].message
    with pytest.raises(BatchValidationError) as err:
        from_frame(pd.DataFrame({"x": [1]}), method="GET", path="/a#b")
    assert err.value.pointers == ["path"]


def test_template_values_of_dots_with_parameters_are_refused_and_a_fragment_mark_is_encoded():
    df = pd.DataFrame({"site": ["ok", "..;", ".;x", "C#"]}, index=["a", "b", "c", "d"])
    with pytest.raises(BatchValidationError) as err:
        from_frame(df, method="GET", path="/sites/{site}/staff")
    assert err.value.pointers == ["row 'b', column site", "row 'c', column site"]
    ops = from_frame(df.loc[["a", "d"]], method="GET", path="/sites/{site}/staff")
    assert [op.path for op in ops] == ["/sites/ok/staff", "/sites/C%23/staff"]


def test_a_method_column_of_unicode_look_alikes_is_refused():
    df = pd.DataFrame({"method": ["post", "po\u017ft", "PO\ufb06"], "path": "/x"})
    with pytest.raises(BatchValidationError) as err:
        from_frame(df)
    assert err.value.pointers == ["row 1, column method", "row 2, column method"]
    with pytest.raises(BatchValidationError) as err:
        from_frame(pd.DataFrame({"x": [1]}), method="po\u017ft", path="/x")
    assert err.value.pointers == ["method"]


def test_a_headers_cell_keeps_a_trailing_no_break_space_and_is_refused_for_it():
    df = pd.DataFrame({"headers": ["Idempotency-Key: k1", "Idempotency-Key: k1\xa0", "X-Original-URL: /admin"]})
    with pytest.raises(BatchValidationError) as err:
        from_frame(df, method="POST", path="/x", headers="headers")
    assert err.value.pointers == ["row 1, column headers", "row 2, column headers"]
    assert "must be ASCII text" in err.value.problems[0].message
    assert "URL, method or client" in err.value.problems[1].message
