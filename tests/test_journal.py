"""The journal (batchnb._journal): what a run sent and what came back, read back after a crash to resume."""

import json
import os
import sqlite3
import sys

import numpy as np
import pandas as pd
import pytest

from batchnb import BatchValidationError, Client, Operation
from batchnb._journal import Journal, fingerprints, row_key
from batchnb.model import Response
from tests.support import count

API = "/api/2.1/scheduling"


def companies(n, prefix="co"):
    return [Operation("POST", f"{API}/companies", {"name": f"{prefix} {i}"}, name=f"{prefix}-{i}") for i in range(n)]


def test_journal_resume_sends_only_missing_rows_and_never_resends_posts_in_flight(fresh_server, tmp_path):
    # Without idempotency keys (at most once): a POST batch in flight is never resent.
    journal = tmp_path / "run.jsonl"
    ops = companies(40, "r")
    client = Client(fresh_server.url, **fresh_server.credentials(), max_requests=5)
    first = client.submit(ops, journal=journal, progress=False, idempotency=False)
    assert first["ok"].all() and count(fresh_server.db) == 40
    # Simulate a run killed after three batches, with a fourth (POST) batch sent but never answered.
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    kept = [e for e in events if e["event"] == "run" or (e["batch"] < 4 and (e["event"] == "send" or e["batch"] < 3))]
    journal.write_text("".join(json.dumps(e) + "\n" for e in kept) + '{"event":"done","batch":3,"respo')
    # The database is reset to what the "killed" run had done: rows of the first 3 batches (15) and the in-flight one (5).
    with sqlite3.connect(fresh_server.db) as conn:
        keep = {f"r {i}" for i in range(20)}
        conn.executemany(
            "delete from companies where name = ?", [(f"r {i}",) for i in range(40) if f"r {i}" not in keep]
        )
    resumed = client.submit(ops, journal=journal, resume=True, progress=False, idempotency=False)
    assert count(fresh_server.db) == 40  # nothing created twice, nothing missing
    assert resumed.index.tolist() == list(range(40))
    assert resumed.loc[:14, "ok"].all() and resumed.loc[20:, "ok"].all()
    assert resumed.loc[15:19, "status"].isna().all()
    assert resumed.loc[15:19, "error"].str.startswith("outcome unknown").all()
    assert Journal(journal).read().done.keys() >= {json.dumps(i) for i in range(40) if not 15 <= i < 20}


def answered(rows, status=201):
    return [Response("POST", "/c", status, row=r, batch=0, attempts=1) for r in rows]


def test_a_line_cut_short_by_a_crash_is_ignored_and_its_batch_counts_as_in_flight(tmp_path):
    path = tmp_path / "run.jsonl"
    journal = Journal(path)
    journal.sent(0, ["a", "b"], resendable=False)
    journal.done(0, answered(["a", "b"]))
    journal.sent(1, ["c", "d"], resendable=False)
    journal.close()
    whole = path.read_text()
    done_line = json.dumps({"event": "done", "batch": 1, "responses": [r.to_wire() for r in answered(["c", "d"])]})
    path.write_text(whole + done_line[: len(done_line) // 2])  # the crash came while the answer was being written

    state = Journal(path).read()
    assert set(state.done) == {'"a"', '"b"'} and state.done['"a"'].status == 201
    assert state.in_flight == {'"c"': False, '"d"': False}
    assert state.last_batch == 1


def test_an_answered_batch_is_final_and_a_resendable_one_in_flight_says_so(tmp_path):
    journal = Journal(tmp_path / "run.jsonl")
    journal.sent(0, [1, 2], resendable=True)
    journal.sent(1, [3], resendable=False)
    journal.done(1, answered([3], status=400))
    journal.close()
    state = journal.read()
    assert state.in_flight == {"1": True, "2": True}  # GET/PUT/DELETE only: safe to send again
    assert list(state.done) == ["3"] and state.done["3"].status == 400 and state.done["3"].row == "3"


def test_a_missing_journal_reads_as_a_fresh_start(tmp_path):
    state = Journal(tmp_path / "never-written.jsonl").read()
    assert state.done == {} and state.in_flight == {} and state.last_batch == -1


def test_the_journal_holds_no_credentials(tmp_path):
    path = tmp_path / "run.jsonl"
    journal = Journal(path)
    journal.sent(0, ["a"], resendable=True)
    journal.done(0, [Response("GET", "/c?apiKey=k&token=s3cr3t-value", 200, row="a")])
    journal.close()
    assert "s3cr3t-value" not in path.read_text()
    assert Journal(path).read().done['"a"'].path.startswith("/c?")


def test_resume_continues_only_the_run_the_journal_records(tmp_path):
    ops = [Operation("POST", "/c", {"name": "a"}, row="r0"), Operation("POST", "/c", {"name": "b"}, row="r1")]
    journal = Journal(tmp_path / "run.jsonl")
    journal.start(fingerprints(ops))
    journal.close()
    state = journal.read()

    def check(operations):
        state.check(fingerprints(operations), {row_key(o.row): o.row for o in operations}, "run.jsonl")

    check(ops)  # the same rows: fine
    check(ops[:1])  # fewer rows of the same run: fine
    with pytest.raises(BatchValidationError) as info:
        check([ops[0], Operation("POST", "/c", {"name": "B"}, row="r1")])
    assert info.value.pointers == ["row 'r1'"] and "differs from the operation run.jsonl records" in str(info.value)
    with pytest.raises(BatchValidationError) as info:
        check([*ops, Operation("POST", "/c", {"name": "c"}, row="r2")])
    assert info.value.pointers == ["row 'r2'"] and "is not one of the 2 rows" in str(info.value)
    with pytest.raises(BatchValidationError) as info:
        Journal(tmp_path / "empty.jsonl").read().check(fingerprints(ops), {}, "empty.jsonl")
    assert info.value.pointers == ["journal"]


def test_a_fingerprint_ignores_credentials_but_not_what_is_asked():
    def print_of(**changes):
        fields = {
            "method": "POST",
            "path": "/c?token=one",
            "body": {"n": 1},
            "name": "a",
            "headers": {"Authorization": "Bearer one", "X-Trace": "1"},
        }
        return fingerprints([Operation(**{**fields, **changes}, row=0)])["0"]

    same = print_of()
    assert print_of(path="/c?token=two", headers={"Authorization": "Bearer two", "X-Trace": "1"}) == same
    for change in (
        {"method": "PUT"},
        {"path": "/d?token=one"},
        {"body": {"n": 2}},
        {"name": "b"},
        {"headers": {"X-Trace": "2"}},
    ):
        assert print_of(**change) != same, change


@pytest.mark.parametrize(
    ("numpy_label", "python_label", "key"),
    [
        (np.int64(7), 7, "7"),
        (np.int32(-1), -1, "-1"),
        (np.float64(2.5), 2.5, "2.5"),
        (np.bool_(True), True, "true"),
        (np.str_("r1"), "r1", '"r1"'),
    ],
)
def test_row_key_is_the_same_for_numpy_and_python_labels(numpy_label, python_label, key):
    assert row_key(numpy_label) == row_key(python_label) == key


def test_row_key_tells_labels_of_different_types_apart_and_is_stable():
    keys = [row_key(v) for v in (1, "1", 1.5, None, (1, "a"))]
    assert len(set(keys)) == len(keys)
    index = pd.Index([10, 20, 30])
    assert [row_key(v) for v in index] == [row_key(v) for v in index.tolist()] == ["10", "20", "30"]
    assert row_key(pd.Timestamp("2024-05-01")) == row_key(pd.Timestamp("2024-05-01").to_pydatetime())


def test_a_resumed_run_sends_the_rows_in_flight_with_their_recorded_keys_in_any_order(fresh_server, tmp_path):
    # With keys: the batch in flight ran; resumed from a frame in another order, its rows go with the keys
    # the journal recorded for them, and the API answers with its first answers instead of acting twice.
    journal = tmp_path / "run.jsonl"
    df = pd.DataFrame({"name": [f"k {i}" for i in range(20)]}, index=[f"r{i}" for i in range(20)])
    client = Client(fresh_server.url, **fresh_server.credentials(), max_requests=5)
    first = client.submit(df, method="POST", path=f"{API}/companies", body=["name"], journal=journal, progress=False)
    assert first["ok"].all() and count(fresh_server.db) == 20
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    sends = [e for e in events if e["event"] == "send"]
    assert all(e["resendable"] and len(e["keys"]) == len(e["rows"]) for e in sends)
    journal.write_text("".join(json.dumps(e) + "\n" for e in events if not (e["event"] == "done" and e["batch"] == 3)))
    in_flight = {k: v for e in sends if e["batch"] == 3 for k, v in e["keys"].items()}
    assert len(in_flight) == 5
    assert Journal(journal).read().keys == in_flight  # only the rows in flight: the others are done

    resumed = client.submit(
        df.iloc[::-1],
        method="POST",
        path=f"{API}/companies",
        body=["name"],
        journal=journal,
        resume=True,
        progress=False,
    )
    assert count(fresh_server.db) == 20 and resumed["ok"].all()
    replayed = {row_key(label) for label in resumed.index[resumed["replayed"]]}
    assert replayed == set(in_flight)
    # What the resumed run recorded sending: the same keys for those rows.
    later = [json.loads(line) for line in journal.read_text().splitlines()][len(events) - 1 :]
    assert [e["keys"] for e in later if e["event"] == "send"] == [in_flight]


# ---------------------------------------------------------------- a journal changed by hand


def _lines(path):
    return path.read_text().splitlines()


def _tamperings(lines: list[str]):
    """(what was done, the journal's new text): a bounded set of changes to each line of a real journal."""
    odd = [None, True, -1, "x", [1], {"a": None}]
    for i, line in enumerate(lines):
        event = json.loads(line)

        def whole(changed, i=i):
            return "\n".join([*lines[:i], changed, *lines[i + 1 :]]) + "\n"

        for text in ("[]", "null", "{}", "garbage", "[" * 5000 + "]" * 5000):
            yield f"line {i + 1} is {text[:12]!r}", whole(text)
        yield f"line {i + 1} is not UTF-8", whole(line[:5] + "\udcff" + line[5:]).encode("utf-8", "surrogateescape")
        for key in event:
            yield f"line {i + 1} lacks {key}", whole(json.dumps({k: v for k, v in event.items() if k != key}))
            for value in odd:
                yield f"line {i + 1} has {key}={value!r}", whole(json.dumps({**event, key: value}))
        for rec_key in event.get("responses", [{}])[0]:
            rec = event["responses"][0]
            for value in odd:
                changed = {**event, "responses": [{**rec, rec_key: value}, *event["responses"][1:]]}
                yield f"line {i + 1} has responses[0].{rec_key}={value!r}", whole(json.dumps(changed))
            missing = {k: v for k, v in rec.items() if k != rec_key}
            yield f"line {i + 1} lacks responses[0].{rec_key}", whole(json.dumps({**event, "responses": [missing]}))
        if event["event"] == "done":
            deep: dict = {"row": "0", "method": "GET", "path": "/x"}
            for _ in range(200):
                deep = {"row": "0", "method": "GET", "path": "/x", "responses": [deep]}
            yield f"line {i + 1} nests 200 responses", whole(json.dumps({**event, "responses": [deep]}))
            nested = "[" * 3000 + "]" * 3000
            yield f"line {i + 1} nests a body", whole(line.replace('"body":', f'"body":{nested},"x":', 1))
            yield f"line {i + 1} is cut short", whole(line[: len(line) // 2])


@pytest.mark.slow
def test_a_journal_changed_by_hand_is_refused_naming_its_line_never_with_a_raw_error(server, tmp_path):
    from batchnb import BatchError

    path = tmp_path / "run.jsonl"
    child = Operation("GET", f"{API}/companies/co_000000000000")
    ops = [
        Operation("GET", f"{API}/companies", name="all", requests=[child]),
        Operation("GET", f"{API}/companies/co_000000000001", name="one"),
    ]
    client = Client(server.url, **server.credentials(), max_requests=2)
    assert len(client.submit(ops, journal=path, progress=False)) == 3
    lines = _lines(path)
    assert sorted(json.loads(line)["event"] for line in lines) == ["done", "done", "run", "send", "send"]
    cases = refused = 0
    for what, text in _tamperings(lines):
        cases += 1
        tampered = tmp_path / f"t{cases}.jsonl"
        if isinstance(text, bytes):
            tampered.write_bytes(text)
        else:
            tampered.write_text(text)
        try:
            client.submit(ops, journal=tampered, resume=True, progress=False)
        except BatchError as exc:
            assert isinstance(exc, BatchValidationError), (what, exc)
            refused += 1
            # The line that is not as written, or (a line that reads well) the row it no longer matches.
            named = [
                p for p in exc.pointers if f"{str(tampered)!r}, line " in p or p.startswith("row ") or p == "journal"
            ]
            assert named, (what, exc.pointers)
        except Exception as exc:  # noqa: BLE001 - what this test is for: no other error may leave
            pytest.fail(f"{what}: {type(exc).__name__}: {exc}")
    assert cases > 200 and refused > cases // 2, (cases, refused)


def test_an_event_after_a_line_cut_short_starts_a_line_of_its_own(tmp_path):
    path = tmp_path / "run.jsonl"
    journal = Journal(path)
    journal.sent(0, ["a"], resendable=False)
    journal.close()
    path.write_text(path.read_text() + '{"event":"done","bat')  # the crash came mid-line
    again = Journal(path)
    again.sent(1, ["b"], resendable=True)
    again.done(1, answered(["b"]))
    again.close()
    state = Journal(path).read()
    assert state.in_flight == {'"a"': False} and list(state.done) == ['"b"'] and state.last_batch == 1


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_a_new_journal_is_readable_by_its_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        journal = Journal(tmp_path / "runs" / "run.jsonl")
        journal.sent(0, ["a"], resendable=True)
        journal.close()
    finally:
        os.umask(old)
    assert (tmp_path / "runs" / "run.jsonl").stat().st_mode & 0o777 == 0o600
