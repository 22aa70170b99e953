"""DataFrame workflows against the real loopback server: chains of thousands of rows, aligned results."""

import pandas as pd
import pytest

from batchnb import ref
from tests.support import count

API = "/api/2.1/scheduling"


@pytest.mark.slow
def test_5000_row_chain_companies_then_staff(fresh_server):
    sites = [f"s{i:02d}" for i in range(40)]
    companies = pd.DataFrame(
        {"site": sites, "label": [f"Location {s}" for s in sites]}, index=[f"c-{s}" for s in sites]
    )
    staff = pd.DataFrame(
        {
            "site": [sites[i % 40] for i in range(4960)],
            "first": [f"F{i}" for i in range(4960)],
            "last": [f"L{i}" for i in range(4960)],
        },
        index=pd.RangeIndex(1000, 5960),
    )
    client = fresh_server.client
    ops = pd.concat(
        [
            pd.DataFrame(
                {
                    "method": "POST",
                    "path": f"{API}/companies",
                    "name": [f"co-{s}" for s in sites],
                    "body": [{"name": label} for label in companies["label"]],
                },
                index=companies.index,
            ),
            pd.DataFrame(
                {
                    "method": "POST",
                    "path": [f"{API}/companies/{ref('co-' + s, '$.id')}/staff" for s in staff["site"]],
                    "body": [
                        {"firstName": first, "lastName": last} for first, last in zip(staff["first"], staff["last"])
                    ],
                },
                index=staff.index,
            ),
        ]
    )
    assert len(ops) == 5000
    result = client.submit(ops, progress=False)
    assert result.index.equals(ops.index)  # aligned to the input labels
    assert result["ok"].all(), result.loc[~result["ok"], ["status", "error"]].head()
    assert count(fresh_server.db, "staff") == 4960 and count(fresh_server.db, "companies") == 40
    ids = {label: body["id"] for label, body in result.loc[companies.index, "body"].items()}
    joined = staff.join(result[["path", "status"]])
    for _label, row in joined.sample(50, random_state=1).iterrows():
        assert ids[f"c-{row['site']}"] in row["path"]
    assert result["batch"].nunique() >= 100


def test_template_frame_with_nesting_and_expand(fresh_server):
    import batchnb as bn

    df = pd.DataFrame(
        {
            "name": ["co-a", "svc-a", "co-b"],
            "parent": [None, "co-a", None],
            "method": "POST",
            "path": [f"{API}/companies", f"{API}/companies/{ref('co-a', '$.id')}/services", f"{API}/companies"],
            "body": ['{"name": "A"}', '{"name": "Cut", "duration": 30}', '{"name": "B"}'],
        }
    )
    result = fresh_server.client.submit(df, progress=False)
    assert result["status"].tolist() == [201, 201, 201]
    assert result.loc[1, "parent"] == "co-a"
    wide = bn.expand(result, "body")
    assert wide.loc[1, "body.name"] == "Cut" and wide.loc[1, "body.duration"] == 30


@pytest.mark.slow
def test_a_large_frame_streams_chunk_by_chunk_and_checks_every_chunk_first(fresh_server):
    rows = 12_500  # several chunks of 2,000 rows
    df = pd.DataFrame({"title": [f"T{i}" for i in range(rows)], "city": "Lyon"}, index=pd.RangeIndex(rows) * 2)
    client = fresh_server.client
    opts = dict(method="POST", path=f"{API}/companies", body={"name": "title", "address.city": "city"}, progress=False)
    bad_path = df.copy()
    bad_path.insert(0, "where", "companies")
    bad_path.loc[bad_path.index[-1], "where"] = ".."  # the last row of the last chunk
    import pytest

    from batchnb import BatchValidationError

    with pytest.raises(BatchValidationError) as info:
        client.submit(bad_path, method="POST", path=f"{API}/{{where}}", body={"name": "title"}, progress=False)
    assert info.value.problems[0].pointer.startswith(f"row {bad_path.index[-1]}")
    assert count(fresh_server.db) == 0  # the bad row is in the last chunk: nothing at all was sent
    result = client.submit(df, **opts)
    assert result.index.equals(df.index) and result["ok"].all()
    assert result["batch"].nunique() == rows // 50 and result["batch"].max() == rows // 50 - 1
    assert count(fresh_server.db) == rows


def test_bodies_can_be_kept_as_json_text_or_only_for_failures(fresh_server):
    import batchnb as bn

    df = pd.DataFrame({"title": ["A", "", "C"]})
    opts = dict(method="POST", path=f"{API}/companies", body={"name": "title"}, progress=False)
    as_text = fresh_server.client.submit(df, bodies="json", **opts)
    assert isinstance(as_text.loc[0, "body"], str) and as_text.loc[0, "body"].startswith('{"id":"co_')
    assert bn.expand(as_text).loc[2, "body.name"] == "C"
    slim = fresh_server.client.submit(df, bodies="none", **opts)
    assert slim.loc[0, "body"] is None and slim.loc[1, "body"]["error"]["code"] == "validation_error"
    assert slim["status"].tolist() == [201, 400, 201]


@pytest.mark.slow
def test_a_streamed_frame_interrupted_mid_way_keeps_its_finished_chunks_in_order(fresh_server):
    """Chunks are built and shaped beside the one in flight: an interrupt still gives every row, in the frame's order."""
    from tests.support import interrupted_when

    rows = 12_000  # six chunks of 2,000 rows
    df = pd.DataFrame({"title": [f"S{i}" for i in range(rows)]}, index=pd.RangeIndex(rows)[::-1])
    submit = fresh_server.async_client().submit(
        df, method="POST", path=f"{API}/companies", body={"name": "title"}, progress=False
    )
    partial = interrupted_when(
        submit, lambda: count(fresh_server.db) >= 4_500, "the third chunk never started within 60 s"
    )
    assert partial.index.equals(df.index)
    done = int(partial["ok"].sum())
    assert 4_000 <= done < rows  # rows the server ran but had not answered yet are "outcome unknown"
    assert partial["ok"].iloc[:4_000].all()  # the first two chunks, shaped beside the third
    assert (
        partial.loc[partial["ok"], "body"].map(lambda b: b["name"]).tolist() == df.loc[partial["ok"], "title"].tolist()
    )
    assert partial.loc[~partial["ok"], "error"].str.match(r"not run|outcome unknown").all()
    assert done <= count(fresh_server.db)
