"""The Composer without a kernel: set widget values, click buttons, read what the form shows."""

from __future__ import annotations

import json
import threading

import httpx
import ipywidgets as w
import pandas as pd
import pytest

from batchnb import AsyncClient, Batch, BatchValidationError, Client, Operation
from batchnb.widgets import Composer, parse_body

API = "/api/2.1/scheduling"
COMPANIES = f"{API}/companies"
CO_ID = "${result=co:$.id}"


def add(composer: Composer, method: str, path: str, **fields) -> bool:
    composer.fill(method, path, **fields)
    composer.add_button.click()
    return len(composer.errors) == 0


def three_ops(composer: Composer) -> None:
    assert add(composer, "POST", COMPANIES, name="co", body={"name": "Riverside"})
    assert add(
        composer, "POST", f"{COMPANIES}/{CO_ID}/services", name="sv", body={"name": "Cut", "duration": 30}, parent="co"
    )
    assert add(
        composer,
        "POST",
        f"{COMPANIES}/{CO_ID}/staff",
        name="st",
        parent="sv",
        body={"firstName": "Ada", "lastName": "Lovelace", "services": [{"id": "${result=sv:$.id}"}]},
    )


@pytest.fixture()
def composer() -> Composer:
    return Composer()


# ---------------------------------------------------------------- fields


def test_parse_body_reports_line_and_column():
    assert parse_body("") == (None, None)
    assert parse_body('[1, "a"]') == ([1, "a"], None)
    _value, problem = parse_body('{\n  "name": "x",\n  "price": 12,,\n}')
    assert problem == "invalid JSON at line 3, column 15: Expecting property name enclosed in double quotes"


def test_method_field_uses_the_rules():
    composer = Composer()
    composer.method.value = "patch"
    assert "method" not in composer.field_errors
    composer.method.value = "fetch"
    assert composer.field_errors["method"] == "unknown method 'fetch'; use one of GET, POST, PUT, DELETE, PATCH"
    composer.method.value = ""
    assert "method" not in composer.field_errors  # while typing, an empty field is not yet a problem


def test_invalid_json_is_shown_next_to_the_body_and_blocks_add(composer):
    composer.fill("POST", COMPANIES, body='{"name": }')
    assert composer.field_errors == {"body": "invalid JSON at line 1, column 10: Expecting value"}
    assert "line 1, column 10" in composer.body_error.value
    assert composer.add_button.disabled
    composer.add_button.click()
    assert len(composer.batch) == 0
    assert composer.errors == ["body: invalid JSON at line 1, column 10: Expecting value"]
    composer.body.value = '{"name": "ok"}'
    assert composer.field_errors == {} and composer.body_error.value == ""
    assert not composer.add_button.disabled


def test_unknown_method_blocks_add(composer):
    composer.fill("FETCH", COMPANIES)
    assert "unknown method 'FETCH'" in composer.method_error.value
    assert composer.add() is False
    assert len(composer.batch) == 0


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("http://evil.example/x", "must be relative to the API, not an absolute URL"),
        ("//evil.example/x", "must not start with '//' (that names another host)"),
        ("/api/../../etc", "must not contain '.' or '..' segments"),
        ("companies", "must start with '/'"),
    ],
)
def test_non_relative_paths_block_add(composer, path, message):
    composer.fill("GET", path)
    assert composer.field_errors == {"path": message}
    assert composer.add() is False


def test_empty_path_is_reported_on_add_not_while_typing(composer):
    assert composer.field_errors == {}
    assert composer.add() is False
    assert composer.errors == ["path: is required: a path such as '/api/2.1/scheduling/companies'"]
    assert "is required" in composer.path_error.value


def test_reference_to_a_name_that_does_not_exist(composer):
    assert add(composer, "POST", COMPANIES, name="co", body={"name": "Riverside"})
    composer.fill(
        "POST", f"{COMPANIES}/${{result=nope:$.id}}/services", body={"name": "x", "id": "${result=ghost:$.id}"}
    )
    errors = composer.field_errors
    assert errors["path"] == "${result=nope:$.id} refers to 'nope', which no operation in the batch is named"
    assert errors["body"] == "${result=ghost:$.id} refers to 'ghost', which no operation in the batch is named"
    assert composer.add() is False
    assert len(composer.batch) == 1


def test_bad_names_and_headers(composer):
    assert add(composer, "POST", COMPANIES, name="co", body={"name": "a"})
    composer.fill("GET", COMPANIES, name="co")
    assert composer.field_errors == {"name": "duplicate name 'co' (first used at operation 1)"}
    composer.name.value = "has space"
    assert "is not a valid name" in composer.field_errors["name"]
    composer.name.value = ""
    row = composer.add_header("Host", "example.com")
    assert "cannot be set per operation" in composer.field_errors["headers"]
    assert "cannot be set per operation" in row.error.value
    row.key.value = "X-Trace"
    row.value.value = "${result=who:$.id}"
    assert "refers to 'who'" in composer.field_errors["headers"]
    row.remove.click()
    assert composer.field_errors == {}
    assert composer.add() is True


def test_add_builds_the_batch_and_resets_the_form(composer):
    composer.method.value = "post"
    composer.path.value = COMPANIES
    composer.name.value = "co"
    composer.body.value = '{"name": "Riverside"}'
    composer.add_header("X-Trace", "t-1")
    composer.add_button.click()
    assert composer.errors == []
    assert composer.batch == Batch(
        [Operation("POST", COMPANIES, {"name": "Riverside"}, name="co", headers={"X-Trace": "t-1"})]
    )
    assert (composer.path.value, composer.name.value, composer.body.value) == ("", "", "")
    assert composer.headers.children == ()
    assert "Riverside" in composer.operations.value
    assert repr(composer) == "Composer(1 operation)"


def test_parents_nest_operations(composer):
    three_ops(composer)
    assert [label for label, _ in composer.parent.options] == ["(none)", "co", "sv", "st"]
    batch = composer.batch
    assert (len(batch), batch.size, batch.depth) == (1, 3, 3)
    assert batch.requests[0].requests[0].requests[0].name == "st"


def test_forward_reference_through_nesting_is_refused(composer):
    assert add(composer, "POST", COMPANIES, name="co", body={"name": "a"})
    assert add(composer, "POST", COMPANIES, name="later", body={"name": "b"})
    # A child of "co" runs before "later": it cannot use its result.
    assert not add(composer, "GET", f"{COMPANIES}/${{result=later:$.id}}", parent="co")
    assert "forward reference" in composer.errors[0]
    assert composer.batch.size == 2


# ---------------------------------------------------------------- reference helper


def test_insert_reference_into_path_body_and_header(composer):
    assert add(composer, "POST", COMPANIES, name="co", body={"name": "a"})
    assert composer.ref_name.options == ("co",) and composer.ref_name.value == "co"
    composer.path.value = f"{COMPANIES}/"
    composer.ref_into.value = "path"
    composer.insert_button.click()
    assert composer.path.value == f"{COMPANIES}/{CO_ID}"
    composer.body.value = '{"companyId": ""}'
    composer.ref_into.value = "body"
    composer.insert_button.click()
    assert json.loads(composer.body.value) == {"companyId": CO_ID}
    composer.ref_path.value = "$.name"
    composer.ref_into.value = "header"
    composer.insert_button.click()
    assert composer._header_rows[-1].value.value == "${result=co:$.name}"
    composer._header_rows[-1].key.value = "X-Company"
    assert composer.field_errors == {}


def test_insert_reference_with_a_bad_jsonpath(composer):
    assert add(composer, "POST", COMPANIES, name="co", body={"name": "a"})
    composer.ref_path.value = "$[?"
    composer.insert_button.click()
    assert "does not parse" in composer.ref_error.value
    assert composer.path.value == ""


def test_insert_reference_needs_a_named_operation(composer):
    composer.insert_button.click()
    assert "name an operation" in composer.ref_error.value


# ---------------------------------------------------------------- remove, clear, preview


def test_remove_selected_takes_its_children_along(composer):
    three_ops(composer)
    assert add(composer, "GET", COMPANIES, name="list")
    composer.selected.value = 1  # "sv", parent of "st"
    composer.remove_button.click()
    assert composer.errors == []
    assert composer.names == ["co", "list"]


def test_remove_is_refused_while_others_use_the_result(composer):
    assert add(composer, "POST", COMPANIES, name="co", body={"name": "a"})
    assert add(composer, "GET", f"{COMPANIES}/{CO_ID}")
    composer.selected.value = 0
    composer.remove_button.click()
    assert composer.names == ["co"] and len(composer.batch) == 2
    assert composer.errors == [f"2. GET {COMPANIES}/{CO_ID} uses {CO_ID}"]
    assert "remove them first" in composer.error_area.value


def test_remove_without_selection(composer):
    composer.remove_button.click()
    assert composer.errors == ["select an operation in the list first"]


def test_clear_empties_everything(composer):
    three_ops(composer)
    composer.fill("GET", "/x", name="draft")
    composer.clear_button.click()
    assert len(composer.batch) == 0
    assert composer.path.value == "" and composer.name.value == ""
    assert composer.parent.options == (("(none)", ""),)


def test_preview_masks_secrets(composer):
    composer.fill(
        "GET", f"{COMPANIES}?apiKey=demo&token=s3cret", headers={"Authorization": "Bearer s3cret", "X-Trace": "t"}
    )
    composer.add_button.click()
    composer.preview_button.click()
    assert "s3cret" not in composer.preview.value
    wire = json.loads(composer.wire_json())
    assert wire == {
        "requests": [
            {
                "method": "GET",
                "path": f"{COMPANIES}?apiKey=***&token=***",
                "headers": {"Authorization": "***", "X-Trace": "t"},
            }
        ]
    }
    # The batch itself keeps the real value: only what is shown is masked.
    assert composer.batch.requests[0].headers["Authorization"] == "Bearer s3cret"


@pytest.mark.slow
def test_an_idempotency_key_set_in_the_form_travels_with_its_operation(server):
    composer = Composer(server.client)
    composer.fill("POST", COMPANIES, body={"name": "Keyed by hand"})
    composer.add_header("Idempotency-Key", '"by-hand-1"')
    assert composer.field_errors == {}
    composer.add_button.click()
    assert composer.batch.requests[0].headers == {"Idempotency-Key": '"by-hand-1"'}
    first = composer.submit(block=True, timeout=30)
    again = composer.submit(block=True, timeout=30)
    assert first["status"].tolist() == again["status"].tolist() == [201]
    assert again.loc[0, "body"]["id"] == first.loc[0, "body"]["id"] and bool(again.loc[0, "replayed"])


# ---------------------------------------------------------------- frames


def test_to_frame_and_from_frame_round_trip(composer):
    three_ops(composer)
    frame = composer.to_frame()
    assert frame.columns.tolist() == ["name", "method", "path", "body", "headers", "parent"]
    assert frame["parent"].tolist() == [None, "co", "sv"]
    again = Composer.from_frame(frame)
    assert again.batch == composer.batch
    assert again.to_frame().equals(frame)


def test_from_frame_names_the_bad_cells():
    df = pd.DataFrame({"method": ["POST", "FETCH"], "path": [COMPANIES, "http://x/y"], "body": [{"name": "a"}, None]})
    with pytest.raises(BatchValidationError) as err:
        Composer.from_frame(df)
    pointers = err.value.pointers
    assert "row 1, column method" in pointers and "row 1, column path" in pointers


# ---------------------------------------------------------------- display


def all_widgets(root: w.Widget) -> list[w.Widget]:
    found = [root]
    for child in getattr(root, "children", ()):
        found.extend(all_widgets(child))
    return found


def test_every_widget_has_a_batchnb_class(composer):
    composer.add_header("X-A", "1")
    missing = [
        type(x).__name__
        for x in all_widgets(composer.widget)
        if not any(c.startswith("batchnb-") for c in x._dom_classes)
    ]
    assert missing == []
    classes = {c for x in all_widgets(composer.widget) for c in x._dom_classes}
    assert {"batchnb-submit", "batchnb-results", "batchnb-add", "batchnb-body", "batchnb-errors"} <= classes


def test_display_bundle_has_a_short_stable_text(composer):
    bundle = composer._repr_mimebundle_()
    assert bundle["text/plain"] == "Composer(0 operations)"
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == composer.widget.model_id


# ---------------------------------------------------------------- submit


def test_submit_against_a_real_server(server):
    composer = Composer(server.client)
    three_ops(composer)
    assert composer.submit(block=True, timeout=30) is not None
    result = composer.result
    assert result["status"].tolist() == [201, 201, 201]
    assert result["parent"].tolist()[1:] == ["co", "sv"] and pd.isna(result["parent"].iloc[0])
    assert "batchnb-status-201" in composer.results.value and "Result of submit 1" in composer.results.value
    assert composer.status.value == "Submit 1: 3 operations, all ok"
    assert composer.progress.value == composer.progress.max == 3
    assert composer.errors == []


def test_submit_button_and_wait(server):
    composer = Composer(server)  # a LocalServer stands for its client
    assert add(composer, "POST", COMPANIES, name="co", body={"name": "Clicked"})
    assert add(
        composer, "POST", f"{COMPANIES}/{CO_ID}/staff", body={"firstName": "A", "lastName": "B", "email": "nope"}
    )
    composer.submit_button.click()
    result = composer.wait(30)
    assert result["status"].tolist() == [201, 400]
    assert "1 not ok" in composer.status.value
    assert "batchnb-status-400" in composer.results.value
    composer.submit_button.click()
    composer.wait(30)
    assert "Result of submit 2" in composer.results.value


def test_submit_with_an_async_client(server):
    composer = Composer(server.async_client())
    assert add(composer, "POST", COMPANIES, name="co", body={"name": "Async"})
    assert composer.submit(block=True, timeout=30)["status"].tolist() == [201]
    assert composer.submit(block=True, timeout=30)["status"].tolist() == [201]  # reusable afterwards


def test_submit_does_not_block_the_caller():
    release = threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"maxRequests": 50, "maxDepth": 4})
        release.wait(10)
        return httpx.Response(
            200, json={"responses": [{"method": "GET", "path": "/x", "status": 200, "duration": 1, "body": {}}]}
        )

    composer = Composer(Client("http://test", token="t", transport=httpx.MockTransport(slow)))
    assert add(composer, "GET", "/x")
    composer.submit_button.click()
    assert composer.running and composer.submit_button.disabled
    assert "sending 1 operation" in composer.status.value
    composer.submit_button.click()
    assert composer.errors == ["a submit is already running; wait for it to finish"]
    with pytest.raises(TimeoutError):
        composer.wait(0.05)
    release.set()
    assert composer.wait(10)["status"].tolist() == [200]
    assert not composer.submit_button.disabled


def test_wrong_credentials_show_in_the_error_area(server):
    composer = Composer(Client(server.url, token="wrong"))
    assert add(composer, "GET", COMPANIES)
    assert composer.submit(block=True, timeout=30) is None
    assert composer.errors[0] == "HTTP 401: Authentication is required to execute this request"
    assert "nothing in it ran" in composer.error_area.value
    assert composer.result is None


def test_server_refusal_shows_message_and_pointers():
    def refuse(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"maxRequests": 50, "maxDepth": 4})
        error = {
            "code": "bad_request",
            "message": "the batch is not valid",
            "details": [{"pointer": "requests[0].path", "message": "no such route"}],
        }
        return httpx.Response(400, json={"error": error})

    composer = Composer(AsyncClient("http://test", token="t", transport=httpx.MockTransport(refuse)))
    assert add(composer, "GET", "/x")
    composer.submit(block=True, timeout=10)
    assert composer.errors == ["HTTP 400: the batch is not valid", "requests[0].path: no such route"]


def test_errors_in_handlers_never_escape():
    class Broken:
        def submit(self, *args, **kwargs):
            raise RuntimeError("boom")

    composer = Composer(Broken())
    assert add(composer, "GET", "/x")
    composer.submit_button.click()
    composer.wait(10)
    assert composer.errors == ["RuntimeError: boom"]
    assert "failed" in composer.status.value


def test_submit_needs_operations_and_a_client(server):
    composer = Composer(server.client)
    assert composer.submit_button.disabled
    composer.submit_button.click()  # a browser sends no click for a disabled button; Python still can
    assert composer.errors == ["add an operation first"]
    lonely = Composer()
    assert add(lonely, "GET", "/x")
    lonely.submit_button.click()
    assert "no client" in lonely.errors[0]


def test_a_header_row_repeating_another_in_another_case_is_marked(composer):
    composer.fill("GET", COMPANIES)
    composer.add_header("Authorization", "Bearer a")
    composer.add_header("authorization", "Bearer b")
    assert composer.field_errors == {
        "headers": "header 2 (authorization): header 'authorization' repeats 'Authorization' (header names ignore case)"
    }
    assert composer.add() is False


def test_the_batch_title_counts_every_operation_then_the_nested_ones(composer):
    assert add(composer, "POST", COMPANIES, name="co", body={"name": "Riverside"})
    assert "<b>Batch</b>: 1 operation<" in composer.operations.value
    assert add(composer, "POST", f"{COMPANIES}/{CO_ID}/services", body={"name": "Cut", "duration": 30}, parent="co")
    assert "<b>Batch</b>: 2 operations, 1 nested<" in composer.operations.value
    assert add(composer, "POST", COMPANIES, body={"name": "Harbour"})
    assert "<b>Batch</b>: 3 operations, 1 nested<" in composer.operations.value


def test_submit_is_disabled_while_there_is_nothing_to_send(server):
    composer = Composer(server.client)
    assert composer.submit_button.disabled
    assert add(composer, "POST", COMPANIES, name="co", body={"name": "Riverside"})
    assert not composer.submit_button.disabled
    composer.selected.value = 0
    composer.remove_button.click()
    assert composer.submit_button.disabled
    assert add(composer, "POST", COMPANIES, name="co", body={"name": "Riverside"})
    composer.submit_button.click()
    assert composer.wait(30)["status"].tolist() == [201]
    assert not composer.submit_button.disabled  # sendable again once the submit is done
    composer.clear_button.click()
    assert composer.submit_button.disabled
    assert Composer.from_frame(pd.DataFrame({"method": ["GET"], "path": ["/x"]})).submit_button.disabled is False
