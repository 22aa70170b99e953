"""Tests for batchnb.demo._store.Store against a real SQLite file."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchnb.demo._store import InvalidReference, Store, new_id

A, B = "key-a", "key-b"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "scheduling.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store(db_path) as s:
        yield s


def _company(store: Store, tenant: str = A, name: str = "Salon") -> dict:
    item = store.create(tenant, "company", {"name": name})
    assert item is not None
    return item


def test_pragmas(store: Store, db_path: Path) -> None:
    assert store.execute("PRAGMA journal_mode") == [("wal",)]
    assert store.execute("PRAGMA foreign_keys") == [(1,)]
    assert store.execute("PRAGMA synchronous") == [(1,)]  # NORMAL
    assert store.execute("PRAGMA busy_timeout")[0][0] > 0
    assert store.path == str(db_path)


@pytest.mark.parametrize(
    ("kind", "prefix"), [("company", "co"), ("service", "sv"), ("staff", "st"), ("appointment", "ap")]
)
def test_new_id_format(kind: str, prefix: str) -> None:
    ids = {new_id(kind) for _ in range(50)}  # type: ignore[arg-type]  # a value the annotation does not name, on purpose
    assert len(ids) == 50
    assert all(re.fullmatch(prefix + r"_[0-9a-f]{12}", i) for i in ids)


def test_company_crud_and_tenant_scope(store: Store) -> None:
    address = {"street": "1 Main St", "city": "Oslo", "zip": "0150", "country": "NO"}
    co = store.create(A, "company", {"name": "Salon", "address": address, "timezone": "Europe/Oslo"})
    assert co is not None
    assert re.fullmatch(r"co_[0-9a-f]{12}", co["id"])
    assert co == {"id": co["id"], "name": "Salon", "address": address, "timezone": "Europe/Oslo", "phone": None}
    assert store.get(A, "company", co["id"]) == co

    # Another tenant sees nothing and can change nothing.
    assert store.get(B, "company", co["id"]) is None
    assert store.update(B, "company", co["id"], {"name": "Hijacked"}) is None
    assert store.delete(B, "company", co["id"]) is False
    assert store.list_items(B, "company") == []

    updated = store.update(A, "company", co["id"], {"phone": "+47 1234", "address": None})
    assert updated == {**co, "phone": "+47 1234", "address": None}
    assert store.delete(A, "company", co["id"]) is True
    assert store.get(A, "company", co["id"]) is None
    assert store.delete(A, "company", co["id"]) is False


def test_children_need_an_own_company(store: Store) -> None:
    co = _company(store, A)
    assert store.create(B, "service", {"name": "Cut"}, company_id=co["id"]) is None
    assert store.list_items(B, "service", company_id=co["id"]) is None
    with pytest.raises(ValueError):
        store.create(A, "service", {"name": "Cut"})


def test_service_defaults_and_price_types(store: Store) -> None:
    co = _company(store)
    plain = store.create(A, "service", {"name": "Cut"}, company_id=co["id"])
    assert plain == {
        "id": plain["id"],
        "companyId": co["id"],
        "name": "Cut",
        "duration": 30,
        "price": None,
        "currency": None,
    }
    whole = store.create(A, "service", {"name": "Dye", "price": 10, "currency": "EUR"}, company_id=co["id"])
    half = store.create(A, "service", {"name": "Wash", "price": 10.5}, company_id=co["id"])
    assert type(store.get(A, "service", whole["id"], company_id=co["id"])["price"]) is int
    assert store.get(A, "service", half["id"], company_id=co["id"])["price"] == 10.5


def test_staff_services_keep_order_and_drop_duplicates(store: Store) -> None:
    co = _company(store)
    s1 = store.create(A, "service", {"name": "One"}, company_id=co["id"])
    s2 = store.create(A, "service", {"name": "Two"}, company_id=co["id"])
    staff = store.create(
        A,
        "staff",
        {"firstName": "Ada", "lastName": "L", "services": [{"id": s2["id"]}, {"id": s1["id"]}, {"id": s2["id"]}]},
        company_id=co["id"],
    )
    assert staff["services"] == [{"id": s2["id"]}, {"id": s1["id"]}]
    listed = store.list_items(A, "staff", company_id=co["id"])
    assert listed == [staff]
    # Updating other fields leaves the services alone; passing them replaces them.
    assert (
        store.update(A, "staff", staff["id"], {"email": "a@b.c"}, company_id=co["id"])["services"] == staff["services"]
    )
    again = store.update(A, "staff", staff["id"], {"services": [{"id": s1["id"]}]}, company_id=co["id"])
    assert again["services"] == [{"id": s1["id"]}]


def test_what_create_answers_is_what_is_read_back_for_every_kind(store: Store) -> None:
    # create builds its answer from what it wrote instead of reading the row again: the two must agree, types included.
    co = store.create(
        A,
        "company",
        {
            "name": "Salon",
            "address": {"street": "1 Main", "city": "Köln", "zip": None, "country": "DE"},
            "timezone": "Europe/Berlin",
            "phone": None,
        },
    )
    sv = store.create(
        A, "service", {"name": "Cut", "duration": 45, "price": 10, "currency": "EUR"}, company_id=co["id"]
    )
    sv2 = store.create(A, "service", {"name": "Dye", "price": 12.5}, company_id=co["id"])
    st = store.create(
        A,
        "staff",
        {
            "firstName": "Ada",
            "lastName": "L",
            "email": "a@b.c",
            "services": [{"id": sv2["id"]}, {"id": sv["id"]}, {"id": sv2["id"]}],
        },
        company_id=co["id"],
    )
    ap = store.create(
        A,
        "appointment",
        {
            "serviceId": sv["id"],
            "staffId": st["id"],
            "start": "2025-01-31T14:30:00+01:00",
            "customer": {"name": "Bo", "email": None},
        },
        company_id=co["id"],
    )
    for kind, item in (("company", co), ("service", sv), ("service", sv2), ("staff", st), ("appointment", ap)):
        read = store.get(A, kind, item["id"], company_id=item.get("companyId"))
        assert item == read and list(item) == list(read), kind
        assert [type(v) for v in item.values()] == [type(v) for v in read.values()], kind
    assert st["services"] == [{"id": sv2["id"]}, {"id": sv["id"]}]
    assert ap["status"] == "booked" and type(sv["price"]) is int and sv2["duration"] == 30


def test_references_must_be_in_the_same_company(store: Store) -> None:
    mine = _company(store, A)
    other = _company(store, A, "Other")
    foreign = _company(store, B)
    sv_other = store.create(A, "service", {"name": "X"}, company_id=other["id"])
    sv_foreign = store.create(B, "service", {"name": "Y"}, company_id=foreign["id"])
    sv_mine = store.create(A, "service", {"name": "Z"}, company_id=mine["id"])
    with pytest.raises(InvalidReference) as err:
        store.create(
            A,
            "staff",
            {
                "firstName": "A",
                "lastName": "B",
                "services": [{"id": sv_mine["id"]}, {"id": sv_other["id"]}, {"id": sv_foreign["id"]}],
            },
            company_id=mine["id"],
        )
    assert [d["field"] for d in err.value.details] == ["services[1].id", "services[2].id"]
    # Nothing was written by the failed call.
    assert store.list_items(A, "staff", company_id=mine["id"]) == []

    staff = store.create(A, "staff", {"firstName": "A", "lastName": "B"}, company_id=mine["id"])
    with pytest.raises(InvalidReference) as err:
        store.create(
            A,
            "appointment",
            {"serviceId": sv_foreign["id"], "staffId": "st_000000000000", "start": "2025-01-01T10:00:00"},
            company_id=mine["id"],
        )
    assert [d["field"] for d in err.value.details] == ["serviceId", "staffId"]
    ap = store.create(
        A,
        "appointment",
        {"serviceId": sv_mine["id"], "staffId": staff["id"], "start": "2025-01-01T10:00:00"},
        company_id=mine["id"],
    )
    assert ap["status"] == "booked" and ap["customer"] is None


def test_cascading_deletes(store: Store) -> None:
    co = _company(store)
    keep = _company(store, A, "Keep")
    sv = store.create(A, "service", {"name": "Cut"}, company_id=co["id"])
    sv2 = store.create(A, "service", {"name": "Dye"}, company_id=co["id"])
    st = store.create(
        A,
        "staff",
        {"firstName": "A", "lastName": "B", "services": [{"id": sv["id"]}, {"id": sv2["id"]}]},
        company_id=co["id"],
    )
    store.create(
        A, "appointment", {"serviceId": sv["id"], "staffId": st["id"], "start": "2025-01-01T10:00"}, company_id=co["id"]
    )
    store.create(A, "service", {"name": "Other"}, company_id=keep["id"])

    # Deleting a service removes it from staff and deletes its appointments.
    assert store.delete(A, "service", sv["id"], company_id=co["id"]) is True
    assert store.get(A, "staff", st["id"], company_id=co["id"])["services"] == [{"id": sv2["id"]}]
    assert store.execute("SELECT COUNT(*) FROM appointments") == [(0,)]

    assert store.delete(A, "company", co["id"]) is True
    for table in ("staff", "staff_services", "appointments"):
        assert store.execute(f"SELECT COUNT(*) FROM {table}") == [(0,)]
    assert store.execute("SELECT COUNT(*) FROM services") == [(1,)]  # the other company's


def test_list_pagination(store: Store) -> None:
    names = [f"C{i}" for i in range(7)]
    for name in names:
        _company(store, A, name)
    _company(store, B, "not mine")
    assert [c["name"] for c in store.list_items(A, "company")] == names
    assert [c["name"] for c in store.list_items(A, "company", limit=3)] == names[:3]
    assert [c["name"] for c in store.list_items(A, "company", limit=3, offset=5)] == names[5:]
    assert store.list_items(A, "company", offset=100) == []
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        with pytest.raises(ValueError):
            store.list_items(A, "company", **bad)


def test_data_persists_after_reopen(db_path: Path) -> None:
    with Store(db_path) as store:
        co = _company(store)
        sv = store.create(A, "service", {"name": "Cut", "price": 12.5}, company_id=co["id"])
        st = store.create(
            A, "staff", {"firstName": "A", "lastName": "B", "services": [{"id": sv["id"]}]}, company_id=co["id"]
        )
    with Store(db_path) as store:
        assert store.get(A, "company", co["id"]) == co
        assert store.get(A, "service", sv["id"], company_id=co["id"]) == sv
        assert store.get(A, "staff", st["id"], company_id=co["id"])["services"] == [{"id": sv["id"]}]


def test_writes_survive_a_killed_process(db_path: Path) -> None:
    # The child answers a write, then dies without closing anything.
    script = (
        "import os, signal, sys\n"
        "from batchnb.demo._store import Store\n"
        "s = Store(sys.argv[1])\n"
        "co = s.create('key-a', 'company', {'name': 'Durable'})\n"
        "print(co['id'], flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", script, str(db_path)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
        env={"PYTHONPATH": str(root)},
    )
    assert proc.returncode == -9, proc.stderr
    company_id = proc.stdout.strip()
    with Store(db_path) as store:
        assert store.get(A, "company", company_id)["name"] == "Durable"


def test_committed_rows_are_visible_to_other_connections(store: Store, db_path: Path) -> None:
    co = _company(store)
    other = sqlite3.connect(db_path)
    try:
        assert other.execute("SELECT name FROM companies WHERE id = ?", (co["id"],)).fetchall() == [("Salon",)]
    finally:
        other.close()


def test_close_is_idempotent(db_path: Path) -> None:
    store = Store(db_path)
    store.close()
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.execute("SELECT 1")


@pytest.mark.slow
def test_checkpoints_run_beside_the_writes_not_inside_them(tmp_path: Path) -> None:
    """Commits only append to the WAL; the store's own thread copies it into the file, and stops with the store."""
    from tests.support import wait_until

    db = tmp_path / "ckpt.sqlite3"
    store = Store(db)
    try:
        assert store.execute("PRAGMA wal_autocheckpoint") == [(0,)]
        checkpointer = store._checkpointer._thread
        assert checkpointer.is_alive() and checkpointer.name == "batchnb-store-checkpoint"
        before = db.stat().st_size
        for i in range(2000):
            store.create("k", "company", {"name": f"Checkpointed {i}"})
        wait_until(lambda: db.stat().st_size > before + 100_000, 10, "the WAL was never copied into the database file")
    finally:
        store.close()
    assert not checkpointer.is_alive()
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from companies").fetchone() == (2000,)


def test_a_store_in_memory_has_no_checkpointer() -> None:
    with Store(":memory:") as store:
        assert store._checkpointer is None


# -- writes kept together (Store.group) ------------------------------------


def _names_seen_by_another_connection(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as other:
        return [name for (name,) in other.execute("SELECT name FROM companies ORDER BY name")]


def _statements(store: Store) -> list[str]:
    seen: list[str] = []
    store._conn.set_trace_callback(lambda sql: seen.append(sql.split()[0].upper()))
    return seen


def test_a_group_commits_its_writes_once_when_it_ends(store: Store, db_path: Path) -> None:
    seen = _statements(store)
    with store.group():
        for name in ("A", "B", "C"):
            _company(store, name=name)
        assert _names_seen_by_another_connection(db_path) == []  # not yet kept: no one has been told
        assert [c["name"] for c in store.list_items(A, "company")] == ["A", "B", "C"]  # the group sees its own
    assert _names_seen_by_another_connection(db_path) == ["A", "B", "C"]
    assert seen.count("BEGIN") == 1 and seen.count("COMMIT") == 1 and seen.count("SAVEPOINT") == 3, seen


def test_a_write_that_fails_in_a_group_undoes_itself_only(store: Store, db_path: Path) -> None:
    with store.group():
        co = _company(store, name="Kept")
        with pytest.raises(InvalidReference):
            store.create(
                A,
                "staff",
                {"firstName": "N", "lastName": "O", "services": [{"id": "sv_000000000000"}]},
                company_id=co["id"],
            )
        _company(store, name="Kept too")
    assert _names_seen_by_another_connection(db_path) == ["Kept", "Kept too"]
    assert store.list_items(A, "staff", company_id=co["id"]) == []


def test_a_request_outside_the_group_commits_what_it_holds_first(store: Store, db_path: Path) -> None:
    """A request outside the group never reads a write that a crash could still lose."""
    import contextvars

    with store.group():
        co = _company(store, name="Grouped")
        outside = contextvars.Context()  # another request's context: in no group
        assert outside.run(store.get, A, "company", co["id"]) == co
        assert _names_seen_by_another_connection(db_path) == ["Grouped"]  # committed before it was read
        _company(store, name="Later")
    assert _names_seen_by_another_connection(db_path) == ["Grouped", "Later"]


def test_groups_of_concurrent_tasks_each_commit_before_they_end(store: Store, db_path: Path) -> None:
    import asyncio

    async def batch(name: str, seen_after: dict[str, list[str]]) -> None:
        with store.group():
            _company(store, name=f"{name}1")
            await asyncio.sleep(0)  # the other task writes in between, into the same transaction
            _company(store, name=f"{name}2")
        seen_after[name] = _names_seen_by_another_connection(db_path)

    seen_after: dict[str, list[str]] = {}

    async def main() -> None:
        await asyncio.gather(batch("x", seen_after), batch("y", seen_after))

    asyncio.run(main())
    for name, names in seen_after.items():
        assert {f"{name}1", f"{name}2"} <= set(names), seen_after
    assert _names_seen_by_another_connection(db_path) == ["x1", "x2", "y1", "y2"]


def test_a_group_whose_commit_fails_says_its_writes_are_lost(store: Store, db_path: Path) -> None:
    from batchnb.demo._store import WritesLost

    # A deferred foreign key is checked at COMMIT: the one way to make a real COMMIT fail on demand.
    store.execute("CREATE TABLE parents (id INTEGER PRIMARY KEY)")
    store.execute("CREATE TABLE children (parent INTEGER REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(WritesLost) as caught, store.group():
        _company(store, name="Lost")
        store.execute("INSERT INTO children VALUES (42)")
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert _names_seen_by_another_connection(db_path) == []
    assert _company(store, name="After")["name"] == "After"  # the store goes on
    assert _names_seen_by_another_connection(db_path) == ["After"]


def test_a_group_holds_the_write_lock_for_a_bounded_time(
    store: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process waits for the write lock a group holds: a long group commits on the way, now and then."""
    from batchnb.demo import _store as store_module

    monkeypatch.setattr(store_module, "_HOLD_LIMIT", 0.0)
    seen = _statements(store)
    with store.group():
        _company(store, name="one")
        _company(store, name="two")
    assert seen.count("COMMIT") == 2, seen
    assert _names_seen_by_another_connection(db_path) == ["one", "two"]


def test_a_group_that_stops_writing_hands_the_write_lock_on_by_itself(store: Store, db_path: Path) -> None:
    """A batch busy with something else than writing (filling in references) does not keep other processes waiting.

    The group's open transaction is committed once it has held the write lock
    for the hold limit, by the store's own thread, without waiting for the
    group's next write or its end.
    """
    with store.group():
        _company(store, name="held")
        other = sqlite3.connect(db_path, timeout=2.0, isolation_level=None)  # a generous bound: the limit is 50 ms
        try:
            other.execute("BEGIN IMMEDIATE")  # "database is locked" if the group still held it
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert _names_seen_by_another_connection(db_path) == ["held"]
        _company(store, name="after")
    assert _names_seen_by_another_connection(db_path) == ["after", "held"]
