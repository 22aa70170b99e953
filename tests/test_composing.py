"""The Composer's state without a widget: a Draft checks fields, adds, removes, builds the batch, reads frames."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import batchnb._composing as composing
from batchnb import Batch, BatchHTTPError, BatchValidationError, Operation, TransportError
from batchnb._composing import Draft, Fields, describe_error, reference_to
from batchnb._exceptions import Problem

COMPANIES = "/api/2.1/scheduling/companies"
CO_ID = "${result=co:$.id}"


@pytest.fixture()
def draft() -> Draft:
    return Draft()


def with_company(draft: Draft) -> Draft:
    assert draft.add(Fields("POST", COMPANIES, name="co", body='{"name": "Riverside"}')) is None
    return draft


# ---------------------------------------------------------------- no widgets


def test_the_module_imports_nothing_of_ipywidgets():
    tree = ast.parse(Path(composing.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any("ipywidgets" in name or name.endswith("widgets") for name in imported)


@pytest.mark.subprocess
def test_importing_the_state_loads_no_widget_library():
    code = "import sys, batchnb._composing; print('ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- each field's rule


def test_an_unknown_method(draft):
    assert draft.check(Fields("FETCH", COMPANIES)).problems == {
        "method": "unknown method 'FETCH'; use one of GET, POST, PUT, DELETE, PATCH"
    }


def test_a_lower_case_method_is_fine_and_sent_upper_case(draft):
    fields = Fields("patch", COMPANIES)
    assert not draft.check(fields, final=True)
    assert fields.operation().method == "PATCH"


def test_required_fields_are_reported_only_when_final(draft):
    empty = Fields("", "")
    assert draft.check(empty).problems == {}
    assert draft.check(empty, final=True).problems == {
        "method": "is required: one of GET, POST, PUT, DELETE, PATCH",
        "path": "is required: a path such as '/api/2.1/scheduling/companies'",
    }


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("http://x/y", "must be relative to the API, not an absolute URL"),
        ("/x/${result=co", "its reference at character 3 has no ':' between name and JSONPath"),
    ],
)
def test_path_rules(draft, path, message):
    assert draft.check(Fields("GET", path)).problems == {"path": message}


def test_a_reference_to_no_operation(draft):
    with_company(draft)
    check = draft.check(Fields("GET", f"{COMPANIES}/${{result=nope:$.id}}", body='{"id": "${result=ghost:$.id}"}'))
    assert check.problems == {
        "path": "${result=nope:$.id} refers to 'nope', which no operation in the batch is named",
        "body": "${result=ghost:$.id} refers to 'ghost', which no operation in the batch is named",
    }


def test_name_rules(draft):
    with_company(draft)
    assert draft.check(Fields("GET", COMPANIES, name="co")).problems == {
        "name": "duplicate name 'co' (first used at operation 1)"
    }
    assert "is not a valid name" in draft.check(Fields("GET", COMPANIES, name="has space")).problems["name"]
    assert not draft.check(Fields("GET", COMPANIES, name="  other  "))


def test_a_parent_must_name_an_operation(draft):
    assert draft.check(Fields("GET", COMPANIES, parent="ghost")).problems == {
        "parent": "parent 'ghost' is the name of no operation"
    }
    with_company(draft)
    assert not draft.check(Fields("GET", COMPANIES, parent="co"))


def test_the_body_must_be_json_and_may_be_empty(draft):
    assert draft.check(Fields("POST", COMPANIES, body='{"name": }')).problems == {
        "body": "invalid JSON at line 1, column 10: Expecting value"
    }
    assert not draft.check(Fields("POST", COMPANIES, body="   "))


def test_header_rows_are_numbered_and_summed_up(draft):
    fields = Fields(
        "GET",
        COMPANIES,
        headers=(("", ""), ("Host", "example.com"), ("", "value"), ("X-A", "${result=who:$.id}"), ("X-Ok", "1")),
    )
    check = draft.check(fields)
    assert check.header_rows == {
        2: "header 'Host' cannot be set per operation",
        3: "the header needs a name",
        4: "${result=who:$.id} refers to 'who', which no operation in the batch is named",
    }
    assert check.problems == {
        "headers": "header 2 (Host): header 'Host' cannot be set per operation; "
        "header 3 (no name): the header needs a name; "
        "header 4 (X-A): ${result=who:$.id} refers to 'who', which no operation in the batch is named"
    }


def test_a_header_repeating_another_in_another_case(draft):
    check = draft.check(Fields("GET", COMPANIES, headers=(("Authorization", "a"), ("authorization", "b"))))
    assert check.header_rows == {2: "header 'authorization' repeats 'Authorization' (header names ignore case)"}


def test_a_forward_reference_through_nesting_is_refused(draft):
    with_company(draft)
    assert draft.add(Fields("POST", COMPANIES, name="later")) is None
    refusal = draft.add(Fields("GET", f"{COMPANIES}/${{result=later:$.id}}", parent="co"))
    assert refusal is not None and "forward reference" in refusal.messages[0]
    assert len(draft) == 2


# ---------------------------------------------------------------- building the batch


def test_add_builds_the_batch_with_children_nested(draft):
    with_company(draft)
    assert draft.add(Fields("POST", f"{COMPANIES}/{CO_ID}/services", name="sv", parent="co")) is None
    assert draft.add(Fields("GET", COMPANIES, headers=(("X-Trace", "t-1"), ("", "")))) is None
    batch = draft.batch
    assert (len(batch), batch.size, batch.depth) == (2, 3, 2)
    assert batch.requests[1] == Operation("GET", COMPANIES, headers={"X-Trace": "t-1"})
    assert draft.names == ["co", "sv"]
    assert draft.labels() == [
        f"1. co: POST {COMPANIES}",
        f"2. sv: POST {COMPANIES}/{CO_ID}/services  (under co)",
        f"3. GET {COMPANIES}",
    ]


def test_a_refused_add_changes_nothing(draft):
    refusal = draft.add(Fields("GET", ""))
    assert refusal is not None
    assert refusal.title == "Not added: fix the fields marked in red."
    assert refusal.messages == ["path: is required: a path such as '/api/2.1/scheduling/companies'"]
    assert len(draft) == 0 and draft.batch == Batch([])


def test_remove_takes_the_children_along(draft):
    with_company(draft)
    draft.add(Fields("POST", f"{COMPANIES}/{CO_ID}/services", name="sv", parent="co"))
    draft.add(Fields("POST", f"{COMPANIES}/{CO_ID}/staff", name="st", parent="sv"))
    draft.add(Fields("GET", COMPANIES, name="list"))
    assert draft.remove(1) is None
    assert draft.names == ["co", "list"]


def test_remove_is_refused_while_others_use_the_result(draft):
    with_company(draft)
    draft.add(Fields("GET", f"{COMPANIES}/{CO_ID}"))
    refusal = draft.remove(0)
    assert refusal is not None and refusal.messages == [f"2. GET {COMPANIES}/{CO_ID} uses {CO_ID}"]
    assert len(draft) == 2


@pytest.mark.parametrize("index", [None, -1, 3])
def test_remove_needs_an_operation(draft, index):
    with_company(draft)
    refusal = draft.remove(index)
    assert refusal is not None and refusal.messages == ["select an operation in the list first"]


def test_clear(draft):
    with_company(draft).clear()
    assert len(draft) == 0 and draft.names == []


def test_the_wire_json_masks_secrets(draft):
    fields = Fields("GET", "/x?token=abc", headers=(("Authorization", "Bearer abc"),))
    assert draft.add(fields) is None
    assert json.loads(draft.wire_json()) == {
        "requests": [{"method": "GET", "path": "/x?token=***", "headers": {"Authorization": "***"}}]
    }
    assert draft.labels() == ["1. GET /x?token=***"]


# ---------------------------------------------------------------- the reference helper


def test_reference_text_and_its_problems():
    assert reference_to("co", " $.id ") == (CO_ID, None)
    assert reference_to("co", "") == ("${result=co:$}", None)
    text, problem = reference_to("co", "$[?")
    assert text is None and problem is not None and "does not parse" in problem
    assert reference_to("", "$.id")[1] == "name an operation and add it first: only named operations can be referenced"


def test_a_reference_goes_into_path_body_or_last_header():
    fields = Fields("GET", f"{COMPANIES}/", body='{"a": "", "b": ""}', headers=(("X-A", "1"), ("X-B", "")))
    assert fields.with_reference("path", CO_ID).path == f"{COMPANIES}/{CO_ID}"
    assert json.loads(fields.with_reference("body", CO_ID).body) == {"a": CO_ID, "b": ""}
    assert fields.with_reference("header", CO_ID).headers == (("X-A", "1"), ("X-B", CO_ID))
    assert Fields().with_reference("body", CO_ID).body == json.dumps(CO_ID)
    assert Fields(body="[1]").with_reference("body", CO_ID).body == f"[1]{CO_ID}"
    assert Fields().with_reference("header", CO_ID).headers == (("", CO_ID),)


# ---------------------------------------------------------------- frames


def test_a_frame_round_trips(draft):
    with_company(draft)
    draft.add(Fields("POST", f"{COMPANIES}/{CO_ID}/services", name="sv", parent="co", body='{"d": 30}'))
    draft.add(Fields("GET", COMPANIES, headers=(("X-Trace", "t-1"),)))
    frame = draft.to_frame()
    assert frame.columns.tolist() == list(composing.OPERATION_COLUMNS)
    assert frame["parent"].tolist() == [None, "co", None]
    assert frame["headers"].tolist() == [None, None, {"X-Trace": "t-1"}]
    again = Draft.from_frame(frame)
    assert again.batch == draft.batch
    assert again.to_frame().equals(frame)


def test_an_empty_draft_has_an_empty_frame(draft):
    frame = draft.to_frame()
    assert frame.empty and frame.columns.tolist() == list(composing.OPERATION_COLUMNS)


def test_from_frame_names_the_bad_cells():
    df = pd.DataFrame({"method": ["POST", "FETCH"], "path": [COMPANIES, "http://x/y"]})
    with pytest.raises(BatchValidationError) as err:
        Draft.from_frame(df)
    assert "row 1, column method" in err.value.pointers and "row 1, column path" in err.value.pointers


# ---------------------------------------------------------------- what the error area says


def test_describe_error():
    invalid = BatchValidationError([Problem("requests[0].path", "must be relative")])
    assert describe_error(invalid) == (
        ["requests[0].path: must be relative"],
        "The batch is not valid; nothing was sent.",
    )
    lost = TransportError("reset", sent=True)
    assert describe_error(lost)[1] == "The batch could not be delivered; its outcome is unknown."
    assert describe_error(RuntimeError("boom")) == (["RuntimeError: boom"], "Something went wrong.")
    refused = BatchHTTPError(401, "no credentials")
    assert describe_error(refused)[0][0] == "HTTP 401: no credentials"
