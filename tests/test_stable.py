"""result.batchnb.stable(): the same view from two identical runs, ids as placeholders in order of first appearance."""

from __future__ import annotations

import pandas as pd
import pytest

import batchnb as bn
from batchnb._stable import Stabiliser
from batchnb.demo import examples


def _chained(server: bn.LocalServer) -> pd.DataFrame:
    return bn.to_frame(server.client.submit(examples.chained()))


@pytest.mark.slow
def test_two_runs_of_the_same_batch_look_the_same(tmp_path):
    with bn.LocalServer(tmp_path / "one.sqlite3") as first, bn.LocalServer(tmp_path / "two.sqlite3") as second:
        one, two = _chained(first), _chained(second)
    assert one["body"].tolist() != two["body"].tolist()  # the server made other ids
    assert one.batchnb.stable().to_string() == two.batchnb.stable().to_string()
    assert one.batchnb.stable().to_html() == two.batchnb.stable().to_html()


def test_durations_go_and_every_other_column_stays(server):
    result = _chained(server)
    view = result.batchnb.stable()
    assert list(view.columns) == [c for c in result.columns if c != "duration"]
    assert view["status"].tolist() == result["status"].tolist()
    assert view.index.equals(result.index)


def test_the_same_id_has_the_same_placeholder_everywhere_numbered_by_first_appearance(server):
    result = _chained(server)
    company, service, staff = (body["id"] for body in result["body"])
    view = result.batchnb.stable()
    bodies = view["body"].tolist()
    assert bodies[0]["id"] == "<id1>"
    assert bodies[1]["id"] == "<id2>" and bodies[1]["companyId"] == "<id1>"
    assert (
        bodies[2]["id"] == "<id3>" and bodies[2]["companyId"] == "<id1>" and bodies[2]["services"] == [{"id": "<id2>"}]
    )
    assert view["path"].tolist()[1:] == [
        "/api/2.1/scheduling/companies/<id1>/services",
        "/api/2.1/scheduling/companies/<id1>/staff",
    ]
    shown = view.to_string() + repr(bodies)
    assert not any(i in shown for i in (company, service, staff))


def test_ids_of_any_api_under_id_keys_in_paths_and_in_id_named_columns():
    frame = pd.DataFrame(
        {
            "path": ["/orders", "/orders/8412/lines", "/orders/8412"],
            "status": [201, 201, 404],
            "body": [
                {"id": 8412, "ref": "A-1"},
                {"lineId": "ln-77", "order_id": 8412, "qty": 8412},
                {"error": {"message": "order 8412 was removed"}},
            ],
            "customer_id": ["cu-9", "cu-9", None],
        }
    )
    view = frame.batchnb.stable()
    # Row 0: 8412 under "id" (<id1>), then the customer column (<id2>); row 1: the line's id.
    assert view["body"].tolist()[0] == {"id": "<id1>", "ref": "A-1"}
    assert view["customer_id"].tolist()[:2] == ["<id2>", "<id2>"] and pd.isna(view["customer_id"][2])
    assert view["body"].tolist()[1] == {"lineId": "<id3>", "order_id": "<id1>", "qty": 8412}  # a count is not an id
    assert view["path"].tolist() == ["/orders", "/orders/<id1>/lines", "/orders/<id1>"]
    # Free text keeps numbers: only pattern ids (UUIDs, demo ids, patterns=) are found inside prose.
    assert view["body"].tolist()[2] == {"error": {"message": "order 8412 was removed"}}


def test_patterns_keys_uuids_and_creation_times():
    frame = pd.DataFrame(
        {
            "body": [
                {
                    "ref": "ord_Ab12Cd34Ef56Gh78",
                    "trace": "4f6c1f2e-1d3a-4b8e-9a51-2c7d9e0f3b11",
                    "createdAt": "2026-11-29T05:51:17.283091Z",
                    "start": "2026-12-01T09:00:00",
                }
            ],
            "error": ["see ord_Ab12Cd34Ef56Gh78 and 4f6c1f2e-1d3a-4b8e-9a51-2c7d9e0f3b11"],
        }
    )
    view = frame.batchnb.stable(patterns=[r"ord_[A-Za-z0-9]{16}"])
    # The body comes first in the row (columns in order): the UUID inside it is the first id met.
    assert view["body"][0] == {"ref": "<id1>", "trace": "<id2>", "createdAt": "<time>", "start": "2026-12-01T09:00:00"}
    assert view["error"][0] == "see <id1> and <id2>"
    assert frame.batchnb.stable(keys=r"^ref$")["body"][0]["ref"] == "<id1>"


def test_bodies_kept_as_json_text_are_read_as_json(server):
    frame = pd.DataFrame({"company": ["Text Bodies"]})
    result = server.client.submit(
        frame, method="POST", path="/api/2.1/scheduling/companies", body={"name": "company"}, bodies="json"
    )
    assert isinstance(result["body"][0], str)
    view = result.batchnb.stable()
    assert '"id":"<id1>"' in view["body"][0]


def test_an_empty_result_has_an_empty_stable_view():
    view = bn.to_frame([]).batchnb.stable()
    assert view.empty and list(view.columns) == [c for c in bn.to_frame([]).columns if c != "duration"]


def test_a_stable_view_of_a_stable_view_is_itself(server):
    view = _chained(server).batchnb.stable()
    assert view.batchnb.stable().to_string() == view.to_string()


def test_learning_one_frame_finds_its_ids_in_another():
    bodies = pd.DataFrame({"body": [{"id": "X-1"}, {"id": "X-2"}]})
    paths = pd.DataFrame({"path": ["/things/X-2", "/things/X-1"]})
    stabiliser = Stabiliser().learn(bodies)
    assert stabiliser.apply(paths)["path"].tolist() == ["/things/<id1>", "/things/<id2>"]


def test_every_id_the_demo_api_makes_is_known():
    from batchnb.demo._store import ID_PREFIXES, new_id

    frame = pd.DataFrame({"note": [" ".join(new_id(kind) for kind in ID_PREFIXES)]})
    assert frame.batchnb.stable()["note"][0] == " ".join(f"<id{i}>" for i in range(1, len(ID_PREFIXES) + 1))
