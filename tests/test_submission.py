"""batchnb._submission: each submit keeps its own state, so submits on one client never mix."""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import pytest

from batchnb import BatchValidationError, LocalServer, Operation
from batchnb._submission import Submission, SubmitOptions

API = "/api/2.1/scheduling"


def chain(tag: str, sites: int) -> pd.DataFrame:
    """Companies and a service at each, the service naming its company by a reference.

    Both submits below use the same operation names ("co-0", "sv-0", …): only
    the state of the submit they belong to may resolve them.
    """
    companies = pd.DataFrame(
        {
            "method": "POST",
            "path": f"{API}/companies",
            "name": [f"co-{i}" for i in range(sites)],
            "body": [{"name": f"{tag} site {i}"} for i in range(sites)],
        },
        index=[f"{tag}-co-{i}" for i in range(sites)],
    )
    services = pd.DataFrame(
        {
            "method": "POST",
            "path": [f"{API}/companies/${{result=co-{i}:$.id}}/services" for i in range(sites)],
            "name": [f"sv-{i}" for i in range(sites)],
            "body": [{"name": f"{tag} cut {i}", "duration": 30} for i in range(sites)],
        },
        index=[f"{tag}-sv-{i}" for i in range(sites)],
    )
    return pd.concat([companies, services])


@pytest.mark.parametrize("mode", ["batch", "direct"])
def test_two_concurrent_submits_on_one_client_keep_their_own_names(tmp_path, mode):
    sites = 6
    with LocalServer(tmp_path / "demo.sqlite3") as server:
        # One operation per batch: every service's reference crosses batches
        # and is filled in by the client from its own submit's results.
        client = server.async_client(mode=mode, max_requests=1, max_depth=4, concurrency=3)

        async def both() -> list[pd.DataFrame]:
            async with client:
                return await asyncio.gather(
                    client.submit(chain("north", sites), progress=False),
                    client.submit(chain("south", sites), progress=False),
                )

        results = asyncio.run(asyncio.wait_for(both(), 60))

    for tag, result in zip(("north", "south"), results):
        assert result["ok"].all(), result.loc[~result["ok"], ["status", "error"]]
        for i in range(sites):
            company = result.loc[f"{tag}-co-{i}", "body"]
            service_path = result.loc[f"{tag}-sv-{i}", "path"]
            assert company["name"] == f"{tag} site {i}"
            assert service_path == f"{API}/companies/{company['id']}/services", (tag, i, service_path)


def test_every_problem_is_raised_before_anything_is_sent():
    sent: list[list[Operation]] = []

    async def sender(ops):  # pragma: no cover - must never be called
        sent.append(ops)
        raise AssertionError("sent")

    frame = pd.DataFrame({"method": ["GET", "FETCH"], "path": ["/x", "relative"]})
    with pytest.raises(BatchValidationError) as err:
        Submission(frame, {}, {"maxRequests": 50, "maxDepth": 4}, sender, SubmitOptions())
    assert err.value.pointers == ["row 1, column method", "row 1, column path"]
    with pytest.raises(BatchValidationError) as err:
        Submission(frame.iloc[:1], {}, {"maxRequests": 50, "maxDepth": 4}, sender, SubmitOptions(bodies="xml"))
    assert err.value.pointers == ["bodies"]
    assert sent == []


def test_frame_options_apply_to_frames_only():
    async def sender(ops):  # pragma: no cover
        raise AssertionError("sent")

    with pytest.raises(BatchValidationError) as err:
        Submission(
            [Operation("GET", "/x")],
            {"method": "POST", "path": None, "nulls": "omit"},
            {"maxRequests": 50, "maxDepth": 4},
            sender,
            SubmitOptions(),
        )
    assert [str(p) for p in err.value.problems] == [
        "method: applies to a DataFrame's rows, not to a list of operations"
    ]


def test_known_fills_in_references_to_an_earlier_results_names(tmp_path):
    with LocalServer(tmp_path / "demo.sqlite3") as server:
        client = server.client
        first = client.submit(
            pd.DataFrame(
                {
                    "method": "POST",
                    "path": f"{API}/companies",
                    "name": ["co-ok", "co-bad"],
                    "body": [{"name": "Kept"}, {"name": ""}],
                }
            ),
            progress=False,
        )
        assert first["status"].tolist() == [201, 400]
        fixed = pd.DataFrame(
            {
                "method": "POST",
                "path": [
                    f"{API}/companies/${{result=co-ok:$.id}}/services",
                    f"{API}/companies/${{result=co-bad:$.id}}/services",
                ],
                "body": [{"name": "Cut", "duration": 30}] * 2,
            },
            index=["r1", "r2"],
        )
        with pytest.raises(BatchValidationError):
            client.submit(fixed, dry_run=True)  # without known=, the names are nobody's
        plan = client.submit(fixed, known=first, dry_run=True)
        assert sorted(name for _b, name in plan.from_known) == ["co-bad", "co-ok"]
        assert "2 of them from earlier results" in repr(plan)
        again = client.submit(fixed, known=first, progress=False)
        company = first.loc[0, "body"]["id"]
        assert again.loc["r1", "path"] == f"{API}/companies/{company}/services" and again.loc["r1", "status"] == 201
        # A name whose operation failed earlier cannot be filled in: 424 here, never sent.
        assert again.loc["r2", "status"] == 424 and "operation 'co-bad' answered 400" in again.loc["r2", "error"]
        # JSON-text bodies (bodies="json") are read the same way.
        as_text = client.submit(
            pd.DataFrame({"method": "POST", "path": f"{API}/companies", "name": ["co-text"], "body": [{"name": "T"}]}),
            bodies="json",
            progress=False,
        )
        via_text = client.submit(
            pd.DataFrame({"method": "GET", "path": [f"{API}/companies/${{result=co-text:$.id}}"]}),
            known=as_text,
            progress=False,
        )
        assert via_text["status"].tolist() == [200]
        with pytest.raises(BatchValidationError) as err:
            client.submit(
                pd.DataFrame(
                    {"method": "POST", "path": f"{API}/companies", "name": ["co-ok"], "body": [{"name": "Again"}]}
                ),
                known=first,
            )
        assert "like an operation of the earlier result given as known=" in str(err.value)
        with pytest.raises(BatchValidationError) as err:
            client.submit(fixed, known=pd.DataFrame({"x": [1]}))
        assert err.value.pointers == ["known"]


def test_a_server_that_cannot_be_reached_raises_with_the_frame_in_partial():
    from batchnb import Client, TransportError
    from tests.support import free_port

    frame = pd.DataFrame({"name": ["a", "b"]})
    client = Client(f"http://127.0.0.1:{free_port()}", token="t", retries=1, backoff=0.01, max_requests=50, max_depth=4)
    with pytest.raises(TransportError) as err:
        client.submit(frame, method="POST", path="/x", body=["name"], progress=False)
    assert str(err.value).startswith("no batch was delivered: could not connect to") and err.value.sent is False
    assert err.value.partial["error"].str.startswith("not run:").all() and len(err.value.partial) == 2


def test_when_some_batches_arrived_the_frame_comes_back():
    import httpx

    from batchnb import Client

    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(
                200, json={"responses": [{"method": "POST", "path": "/x", "status": 201, "body": {"id": 1}}]}
            )
        raise httpx.ConnectError("refused", request=request)

    client = Client(
        "http://api.test",
        token="t",
        retries=1,
        backoff=0.01,
        max_requests=1,
        max_depth=4,
        concurrency=1,
        transport=httpx.MockTransport(handler),
    )
    result = client.submit(pd.DataFrame({"name": ["a", "b"]}), method="POST", path="/x", body=["name"], progress=False)
    assert result["status"].iloc[0] == 201 and pd.isna(result["status"].iloc[1])
    assert result["error"].iloc[1].startswith("not run: could not connect")


def test_a_key_set_per_row_by_a_headers_template_is_sent_as_is_and_makes_the_batch_resendable():
    from batchnb import TransportError
    from batchnb._senders import Reply
    from batchnb.model import Response

    sent = []

    async def sender(ops):
        sent.append([dict(op.headers or {}) for op in ops])
        if len(sent) == 1:
            raise TransportError("the connection failed after the batch was sent", sent=True)
        return Reply(200, {}, [Response(op.method, op.path, 201, body={"ok": 1}) for op in ops])

    frame = pd.DataFrame({"order": ["A-1", "A-2"], "total": [10, 20]})
    limits = {"maxRequests": 50, "maxDepth": 4, "idempotency": True}
    submission = Submission(
        frame,
        {"method": "POST", "path": "/orders", "body": ["total"], "headers": "Idempotency-Key: order-{order}"},
        limits,
        sender,
        SubmitOptions(backoff=0.01),
    )
    assert submission.plan.batches[0].delivery.startswith("exactly once")
    result = asyncio.run(submission.run())
    assert sent[0] == sent[1] == [{"Idempotency-Key": "order-A-1"}, {"Idempotency-Key": "order-A-2"}]
    assert result["status"].tolist() == [201, 201] and result["attempts"].tolist() == [2, 2]


def test_a_streamed_frame_with_parallel_goes_in_full_batches_chunk_after_chunk():
    """Chunks hold a whole number of batches filled to a multiple of parallel: only the very last batch is short."""
    from batchnb._senders import Reply
    from batchnb.model import Response

    sizes: list[int] = []

    async def sender(ops):
        sizes.append(len(ops))
        return Reply(200, {}, [Response(op.method, op.path, 200, body={"ok": 1}) for op in ops])

    rows = 5_000  # more than a chunk (2,112 rows: 11 rounds of 4 batches of 48): streamed
    frame = pd.DataFrame({"n": range(rows)})
    submission = Submission(
        frame,
        {"method": "GET", "path": "/t/{n}"},
        {"maxRequests": 50, "maxDepth": 4},
        sender,
        SubmitOptions(parallel=16, progress=False),
    )
    result = asyncio.run(submission.run())
    assert result["ok"].all() and len(result) == rows and result.index.equals(frame.index)
    assert sum(sizes) == rows and set(sizes[:-1]) == {48} and sizes[-1] == rows % 48


def test_known_parses_only_what_it_knows_to_be_json_text():
    from batchnb import Client
    from tests.support.faults import RecordingUpstream, Reply

    def respond(request):
        if request.target == "/text":  # a text body that merely looks like JSON
            return Reply(200, b"{not json", {"content-type": "text/plain"})
        if request.target == "/quoted":  # a JSON string whose content is JSON text
            return Reply(200, "[1, 2]")
        return Reply(201, {"seen": request.target})

    with RecordingUpstream(respond) as api:
        client = Client(api.url, mode="direct", trust_env=False)
        earlier = client.submit(
            pd.DataFrame({"method": "GET", "path": ["/text", "/quoted"], "name": ["text", "quoted"]}), progress=False
        )
        assert earlier["body"].tolist() == ["{not json", "[1, 2]"]
        later = client.submit(
            pd.DataFrame(
                {
                    "method": "POST",
                    "path": ["/a", "/b"],
                    "body": [{"t": "${result=text:$}"}, {"q": "${result=quoted:$}"}],
                }
            ),
            known=earlier,
            progress=False,
        )
        assert later["ok"].all(), later["error"].tolist()
        sent = [json.loads(r.body) for r in api.requests[-2:]]
        assert sent == [{"t": "{not json"}, {"q": "[1, 2]"}]  # strings stay strings, never parsed again
        # A column of bodies kept as text holds JSON text: a cell that is not JSON is named, not a decoder's error.
        as_text = earlier.assign(body=['{"id": 1}', "{oops"])
        with pytest.raises(BatchValidationError) as err:
            client.submit(later.head(0), known=as_text, dry_run=True)
        assert err.value.pointers == ["known, row 1, column body"]


# ---------------------------------------------------------------- bodies nested deeper than JSON can be written again


def _deep(levels: int) -> bytes:
    return b"[" * levels + b'"x"' + b"]" * levels


def _deep_answers(req):
    from tests.support.faults import Reply

    if req.method == "GET":
        return Reply(200, {"maxRequests": 50, "maxDepth": 4})
    # 300 and 1,000 levels: a parser reads them (orjson: up to 1,024), nothing writes them again (254).
    return Reply(
        200,
        b'{"responses": ['
        + b",".join(
            b'{"method": "GET", "path": "/x", "status": 200, "duration": 1.0, "body": ' + body + b"}"
            for body in (_deep(300), _deep(1000), b'{"ok": true}')
        )
        + b"]}",
    )


@pytest.mark.parametrize("bodies", ["parsed", "json", "none"])
def test_a_body_nested_too_deeply_to_write_again_is_kept_as_text_and_the_journal_resumes(tmp_path, bodies):
    from batchnb import Client
    from tests.support.faults import RecordingUpstream

    rows = pd.DataFrame({"n": [1, 2, 3]}, index=["a", "b", "c"])
    journal = str(tmp_path / "run.jsonl")
    with RecordingUpstream(_deep_answers) as srv:
        client = Client(srv.url, token="t")
        first = client.submit(rows, method="GET", path="/x", journal=journal, bodies=bodies)
        again = client.submit(rows, method="GET", path="/x", journal=journal, resume=True, bodies=bodies)
        posts = sum(q.method == "POST" for q in srv.requests)
    for result in (first, again):
        assert result["ok"].tolist() == [True, True, True], result["error"].tolist()
        if bodies != "none":
            # As text: the JSON the server sent, as a string (in a "json" column, that string's JSON).
            texts = [json.loads(t) for t in result["body"][:2]] if bodies == "json" else list(result["body"][:2])
            assert texts == [_deep(300).decode(), _deep(1000).decode()]
    assert posts == 1, "the journal did not record the run, and resume sent it again"


def test_a_batch_of_responses_hands_back_a_deep_body_as_text():
    from batchnb import Batch, Client
    from tests.support.faults import RecordingUpstream

    with RecordingUpstream(_deep_answers) as srv:
        out = Client(srv.url, token="t").submit(Batch([Operation("GET", "/x")] * 3))
    assert [r.body for r in out] == [_deep(300).decode(), _deep(1000).decode(), {"ok": True}]


# ---------------------------------------------------------------- the steps of a run, each alone


LIMITS = {"maxRequests": 50, "maxDepth": 4}


async def never_sent(ops):  # pragma: no cover - the steps below send nothing
    raise AssertionError("sent")


class Delivery:
    """What a runner knows at the end of a run about what reached the server."""

    def __init__(self, delivered: int = 0, undelivered=None, fatal=None) -> None:
        self.delivered, self.undelivered, self.fatal = delivered, undelivered, fatal


def test_a_run_where_no_batch_arrived_raises_with_the_result_in_partial():
    from batchnb import TransportError

    submission = Submission([Operation("GET", "/x")], {}, LIMITS, never_sent, SubmitOptions(retries=2))
    result = pd.DataFrame({"ok": [False]})
    cause = TransportError("could not connect", sent=False, transient=True)
    with pytest.raises(TransportError) as err:
        submission._delivered(result, Delivery(undelivered=cause))
    assert str(err.value) == "no batch was delivered: could not connect (after 2 retries)"
    assert err.value.partial is result and err.value.__cause__ is cause
    final = TransportError("refused by policy", sent=False, transient=False)
    with pytest.raises(TransportError, match=r"\(not retried\)$"):
        submission._delivered(result, Delivery(undelivered=final))
    # One batch arrived: a result, its rows never sent saying so themselves.
    assert submission._delivered(result, Delivery(delivered=1, undelivered=cause)) is result


def test_a_run_stopped_by_a_refusal_raises_it_with_the_result_in_partial():
    from batchnb import BatchHTTPError

    submission = Submission([Operation("GET", "/x")], {}, LIMITS, never_sent, SubmitOptions())
    refusal = BatchHTTPError(401, "no credentials")
    with pytest.raises(BatchHTTPError) as err:
        submission._delivered(["responses"], Delivery(delivered=1, fatal=refusal))
    assert err.value is refusal and refusal.partial == ["responses"]


def test_an_interrupted_run_marks_the_rows_never_sent_and_says_how_to_resume(tmp_path):
    frame = pd.DataFrame({"name": ["a", "b"]}, index=["r1", "r2"])
    journal = str(tmp_path / "run.jsonl")
    options = {"method": "POST", "path": "/x", "body": ["name"]}
    submission = Submission(frame, options, LIMITS, never_sent, SubmitOptions(journal=journal))
    error = submission._interrupted([])
    assert str(error).endswith(f"; resume with journal={journal!r}, resume=True")
    assert error.partial.index.tolist() == ["r1", "r2"] and not error.partial["ok"].any()
    assert (error.partial["error"] == "not run: interrupted before it was sent").all()


def test_a_journal_is_started_only_for_a_run_of_its_own(tmp_path):
    submission = Submission([Operation("GET", "/x")], {}, LIMITS, never_sent, SubmitOptions())
    assert submission._start_journal() is None
    path = tmp_path / "run.jsonl"
    journaled = Submission([Operation("GET", "/x")], {}, LIMITS, never_sent, SubmitOptions(journal=str(path)))
    journal = journaled._start_journal()
    assert journal is not None
    journal.close()
    assert path.stat().st_size > 0
