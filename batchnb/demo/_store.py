"""SQLite storage for the demo Scheduling API.

Four resources live here: companies and, under each company, services, staff
and appointments. Every row carries the ``tenant`` (the caller's api_key) and
every query is scoped by it, so another tenant's row is simply "not found".
Objects go in and come out in the API's camelCase shape.

Example:
    >>> with Store(":memory:") as store:
    ...     company = store.create("key-a", "company", {"name": "Salon"})
    ...     store.get("key-b", "company", company["id"]) is None
    True
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from .. import _json
from .._exceptions import BatchValidationError, Problem

__all__ = [
    "DEFAULT_LIMIT",
    "ID_PREFIXES",
    "MAX_LIMIT",
    "InvalidReference",
    "KeyRecord",
    "Kind",
    "Store",
    "WritesLost",
    "new_id",
]

Kind = Literal["company", "service", "staff", "appointment"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

_SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS companies (
    id       TEXT PRIMARY KEY,
    tenant   TEXT NOT NULL,
    name     TEXT NOT NULL,
    address  TEXT,               -- JSON object or NULL
    timezone TEXT,
    phone    TEXT
);
CREATE INDEX IF NOT EXISTS companies_tenant ON companies (tenant);

CREATE TABLE IF NOT EXISTS services (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    company_id TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    duration   INTEGER NOT NULL,
    price,                       -- no affinity, so 10 and 10.5 come back as sent
    currency   TEXT
);
CREATE INDEX IF NOT EXISTS services_company ON services (company_id);

CREATE TABLE IF NOT EXISTS staff (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    company_id TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    first_name TEXT NOT NULL,
    last_name  TEXT NOT NULL,
    email      TEXT
);
CREATE INDEX IF NOT EXISTS staff_company ON staff (company_id);

CREATE TABLE IF NOT EXISTS staff_services (
    staff_id   TEXT NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    service_id TEXT NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    PRIMARY KEY (staff_id, service_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS staff_services_service ON staff_services (service_id);

CREATE TABLE IF NOT EXISTS appointments (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    company_id TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    service_id TEXT NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    staff_id   TEXT NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    start      TEXT NOT NULL,
    customer   TEXT,             -- JSON object or NULL
    status     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS appointments_company ON appointments (company_id);
CREATE INDEX IF NOT EXISTS appointments_service ON appointments (service_id);
CREATE INDEX IF NOT EXISTS appointments_staff ON appointments (staff_id);

-- Idempotency-Key: a request's key, its fingerprint and its first answer, per tenant.
-- A row is written in the same transaction as the request's writes, so one is
-- never kept without the other. (state is always 'done': files written by
-- earlier versions may hold 'running' rows, which are skipped.)
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant      TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT,            -- set when the request is done
    state       TEXT NOT NULL,   -- 'done'
    status      INTEGER,
    body        TEXT,            -- JSON, or NULL for no body
    headers     TEXT,            -- JSON list of [name, value]
    started     REAL NOT NULL,
    expires     REAL NOT NULL,
    PRIMARY KEY (tenant, key)
);
-- No index on expires: every keyed write would pay for it; the sweep (rare) scans.
DROP INDEX IF EXISTS idempotency_keys_expires;
"""


#: seconds between sweeps of expired idempotency keys.
_PURGE_EVERY = 600.0


@dataclass(frozen=True)
class _Spec:
    kind: str
    table: str
    prefix: str
    # (API field, column), in the order fields appear in responses.
    columns: tuple[tuple[str, str], ...]
    json_fields: frozenset[str] = frozenset()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    child: bool = True

    @functools.cached_property
    def insert_sql(self) -> str:
        cols = ["id", "tenant"] + (["company_id"] if self.child else []) + [col for _, col in self.columns]
        return f"INSERT INTO {self.table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"

    @functools.cached_property
    def select_list(self) -> str:
        return ", ".join(["id", "company_id"] if self.child else ["id"]) + "".join(
            f", {col}" for _, col in self.columns
        )


_SPECS: dict[str, _Spec] = {
    "company": _Spec(
        "company",
        "companies",
        "co",
        (("name", "name"), ("address", "address"), ("timezone", "timezone"), ("phone", "phone")),
        json_fields=frozenset({"address"}),
        child=False,
    ),
    "service": _Spec(
        "service",
        "services",
        "sv",
        (("name", "name"), ("duration", "duration"), ("price", "price"), ("currency", "currency")),
        defaults={"duration": 30},
    ),
    "staff": _Spec(
        "staff",
        "staff",
        "st",
        (("firstName", "first_name"), ("lastName", "last_name"), ("email", "email")),
    ),
    "appointment": _Spec(
        "appointment",
        "appointments",
        "ap",
        (
            ("serviceId", "service_id"),
            ("staffId", "staff_id"),
            ("start", "start"),
            ("customer", "customer"),
            ("status", "status"),
        ),
        json_fields=frozenset({"customer"}),
        defaults={"status": "booked"},
    ),
}

#: kind -> the prefix of its ids (``{"company": "co", ...}``): ``co_`` then 12 hex digits.
ID_PREFIXES: dict[str, str] = {kind: spec.prefix for kind, spec in _SPECS.items()}


def new_id(kind: Kind) -> str:
    """Return a fresh id for ``kind``: type prefix + 12 lowercase hex chars.

    The first 6 hex chars are the time in milliseconds (modulo 2**24, about
    4.7 hours), the other 6 random: ids made one after another sort one after
    another, so a new row goes to the end of the id index, and a batch's
    commit writes a few pages of it, not one page per row.

    Example:
        >>> len(new_id("service")), new_id("service")[:3]
        (15, 'sv_')
    """
    return f"{_SPECS[kind].prefix}_{_id_suffix()}"


def _id_suffix() -> str:
    return f"{time.time_ns() // 1_000_000 % (1 << 24):06x}{_IDS.getrandbits(24):06x}"


#: ids need not be secret (every read is scoped to its tenant), only distinct: a
#: generator seeded once, not a system call for each id.
_IDS = random.Random(secrets.token_bytes(16))


class InvalidReference(BatchValidationError):
    """A write named a service or staff member that is not in the company.

    ``details`` is a list of ``{"field": ..., "message": ...}`` entries, as the API answers them.

    >>> err = InvalidReference([{"field": "services[0].id", "message": "service 'sv_1' not found in this company"}])
    >>> err.pointers
    ['services[0].id']
    """

    def __init__(self, details: list[dict[str, str]]) -> None:
        super().__init__(
            [Problem(d["field"], d["message"]) for d in details],
            "; ".join(f"{d['field']}: {d['message']}" for d in details),
        )
        self.details = details


def _spec(kind: str) -> _Spec:
    try:
        return _SPECS[kind]
    except KeyError:
        raise BatchValidationError([Problem("kind", f"unknown resource kind {kind!r}")]) from None


def _dumps(value: Any) -> str:
    try:
        return _json.dumps(value).decode("utf-8")
    except TypeError:  # a lone surrogate: Python's encoder escapes it
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Store:
    """The Scheduling API's data in one SQLite file (WAL mode).

    Every write is committed before the method returns, except inside
    :meth:`group`, which commits its writes together when it ends. All
    methods are thread-safe; they share one connection guarded by a lock.

    ``kind`` is one of ``"company"``, ``"service"``, ``"staff"``,
    ``"appointment"``; the last three need ``company_id``. ``fields`` use the
    API's names (``firstName``, ``serviceId``, ``services=[{"id": ...}]``).

    Example:
        >>> with Store(":memory:") as store:
        ...     co = store.create("k", "company", {"name": "Salon"})
        ...     sv = store.create("k", "service", {"name": "Cut"}, company_id=co["id"])
        ...     sv["duration"], sv["companyId"] == co["id"]
        (30, True)
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 5000) -> None:
        self.path: str = os.fspath(path)
        # Autocommit mode: single statements commit at once, multi-statement
        # writes use explicit BEGIN IMMEDIATE ... COMMIT.
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # Re-entrant: atomic() holds it around writes that take it again.
        self._lock = threading.RLock()
        self._use = _Use(self)
        #: write blocks open in this synchronous step (an inner one joins the outer).
        self._depth = 0
        #: the groups' transaction open on the connection (its generation), 0 for none.
        self._held = 0
        self._held_since = 0.0
        self._generation = 0
        #: generations whose COMMIT failed: the groups that wrote in them must not say their writes were kept.
        self._lost: set[int] = set()
        self._closed = False
        self._purged = float("-inf")
        try:
            conn = self._conn
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL still survives a process kill after COMMIT;
            # only an OS crash or power loss could drop the last commits.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version < _SCHEMA_VERSION:
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except BaseException:
            self._conn.close()
            raise
        self._checkpointer = _Checkpointer.start(self.path, self._conn)
        # Other processes share the file: what groups hold open is handed on in time, whatever they do meanwhile.
        self._handover = _Handover.start(self) if self._checkpointer is not None else None

    # -- lifecycle -------------------------------------------------------

    def close(self) -> None:
        """Close the connection; calling it again does nothing.

        Example:
            >>> store = Store(":memory:")
            >>> store.close(); store.close()
        """
        if self._handover is not None:
            self._handover.stop()  # before the lock: it may be waiting for it
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    if self._held:
                        self._commit_held()
                finally:
                    if self._checkpointer is not None:
                        self._checkpointer.stop()
                    self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.path!r})"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one SQL statement and return all rows (for tests and maintenance).

        Example:
            >>> with Store(":memory:") as store:
            ...     store.execute("PRAGMA foreign_keys")
            [(1,)]
        """
        with self._use:
            return self._conn.execute(sql, params).fetchall()

    # -- public operations -----------------------------------------------

    def company_exists(self, tenant: str, company_id: str) -> bool:
        """Whether ``company_id`` exists for ``tenant``.

        Example:
            >>> with Store(":memory:") as store:
            ...     store.company_exists("k", "co_000000000000")
            False
        """
        with self._use:
            return self._company_exists(tenant, company_id)

    def create(
        self,
        tenant: str,
        kind: Kind,
        fields: Mapping[str, Any],
        *,
        company_id: str | None = None,
    ) -> dict[str, Any] | None:
        """Insert a new object and return it, or ``None`` if the company is unknown.

        Missing optional fields get their defaults (``duration`` 30,
        ``status`` "booked", else null). Raises ``InvalidReference``, a
        :class:`~batchnb.BatchValidationError`, when a referenced service or
        staff member is not in the company.

        Example:
            >>> with Store(":memory:") as store:
            ...     store.create("k", "service", {"name": "Cut"}, company_id="co_000000000000")
        """
        spec = _spec(kind)
        self._check_parent(spec, company_id)
        given = [fields.get(api, spec.defaults.get(api)) for api, _col in spec.columns]
        values = [
            _dumps(v) if v is not None and api in spec.json_fields else v for (api, _col), v in zip(spec.columns, given)
        ]
        with self._use, self._write():
            if spec.child:
                assert company_id is not None
                if not self._company_exists(tenant, company_id):
                    return None
                self._raise_missing_refs(tenant, company_id, fields)
            item_id = self._insert(spec, spec.insert_sql, [tenant, company_id] if spec.child else [tenant], values)
            # What was written, as _get would read it back (no column converts what it holds), without reading it.
            item: dict[str, Any] = {"id": item_id, "companyId": company_id} if spec.child else {"id": item_id}
            item.update(zip((api for api, _col in spec.columns), given))
            if kind == "staff":
                item["services"] = [{"id": s} for s in self._set_staff_services(item_id, fields.get("services") or [])]
            return item

    def get(
        self,
        tenant: str,
        kind: Kind,
        item_id: str,
        *,
        company_id: str | None = None,
    ) -> dict[str, Any] | None:
        """Return one object, or ``None`` if it does not exist for this tenant.

        Example:
            >>> with Store(":memory:") as store:
            ...     store.get("k", "company", "co_000000000000") is None
            True
        """
        spec = _spec(kind)
        self._check_parent(spec, company_id)
        with self._use:
            return self._get(spec, tenant, item_id, company_id)

    def list_items(
        self,
        tenant: str,
        kind: Kind,
        *,
        company_id: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> list[dict[str, Any]] | None:
        """Return up to ``limit`` objects in creation order, skipping ``offset``.

        Returns ``None`` when the parent company is unknown. ``limit`` must be
        in 1..1000 and ``offset`` ≥ 0.

        Example:
            >>> with Store(":memory:") as store:
            ...     _ = store.create("k", "company", {"name": "A"})
            ...     [c["name"] for c in store.list_items("k", "company", limit=10)]
            ['A']
        """
        spec = _spec(kind)
        self._check_parent(spec, company_id)
        if not 1 <= limit <= MAX_LIMIT or offset < 0:
            raise BatchValidationError([Problem("limit", f"must be in 1..{MAX_LIMIT}, with offset >= 0")])
        where = "tenant = ? AND company_id = ?" if spec.child else "tenant = ?"
        params: list[Any] = [tenant, company_id] if spec.child else [tenant]
        page_sql = f"SELECT {spec.select_list} FROM {spec.table} WHERE {where} ORDER BY rowid LIMIT ? OFFSET ?"
        with self._use:
            if spec.child:
                assert company_id is not None
                if not self._company_exists(tenant, company_id):
                    return None
            rows = self._conn.execute(page_sql, [*params, limit, offset]).fetchall()
            items = [self._decode(spec, row) for row in rows]
            if kind == "staff" and items:
                links = self._conn.execute(
                    "SELECT staff_id, service_id FROM staff_services WHERE staff_id IN "
                    f"(SELECT id FROM staff WHERE {where} ORDER BY rowid LIMIT ? OFFSET ?) "
                    "ORDER BY staff_id, position",
                    [*params, limit, offset],
                ).fetchall()
                by_staff: dict[str, list[dict[str, str]]] = {}
                for staff_id, service_id in links:
                    by_staff.setdefault(staff_id, []).append({"id": service_id})
                for item in items:
                    item["services"] = by_staff.get(item["id"], [])
            return items

    def update(
        self,
        tenant: str,
        kind: Kind,
        item_id: str,
        fields: Mapping[str, Any],
        *,
        company_id: str | None = None,
    ) -> dict[str, Any] | None:
        """Set the given fields and return the updated object (``None`` if unknown).

        Only keys present in ``fields`` change; pass every field for a full
        replacement. Raises ``InvalidReference`` like :meth:`create`.

        Example:
            >>> with Store(":memory:") as store:
            ...     co = store.create("k", "company", {"name": "A"})
            ...     store.update("k", "company", co["id"], {"phone": "123"})["phone"]
            '123'
        """
        spec = _spec(kind)
        self._check_parent(spec, company_id)
        sets: list[str] = []
        values: list[Any] = []
        for api, col in spec.columns:
            if api in fields:
                value = fields[api]
                if value is not None and api in spec.json_fields:
                    value = _dumps(value)
                sets.append(f"{col} = ?")
                values.append(value)
        where, params = self._item_where(spec, tenant, item_id, company_id)
        with self._use, self._write():
            # Checked first so an unknown id is "not found" even when the
            # body also names unknown references.
            if self._conn.execute(f"SELECT 1 FROM {spec.table} WHERE {where}", params).fetchone() is None:
                return None
            self._raise_missing_refs(tenant, company_id, fields)
            if sets:
                self._conn.execute(f"UPDATE {spec.table} SET {', '.join(sets)} WHERE {where}", [*values, *params])
            if kind == "staff" and "services" in fields:
                self._conn.execute("DELETE FROM staff_services WHERE staff_id = ?", (item_id,))
                self._set_staff_services(item_id, fields["services"] or [])
            return self._get(spec, tenant, item_id, company_id)

    def delete(
        self,
        tenant: str,
        kind: Kind,
        item_id: str,
        *,
        company_id: str | None = None,
    ) -> bool:
        """Delete an object and everything that depends on it; ``False`` if unknown.

        Deleting a company removes its services, staff and appointments;
        deleting a service or staff member removes its appointments.

        Example:
            >>> with Store(":memory:") as store:
            ...     store.delete("k", "company", "co_000000000000")
            False
        """
        spec = _spec(kind)
        self._check_parent(spec, company_id)
        where, params = self._item_where(spec, tenant, item_id, company_id)
        with self._use, self._write():
            cur = self._conn.execute(f"DELETE FROM {spec.table} WHERE {where}", params)
            return cur.rowcount > 0

    def missing_references(self, tenant: str, company_id: str, fields: Mapping[str, Any]) -> list[dict[str, str]]:
        """Error details for ``services[i].id``/``serviceId``/``staffId`` not in the company.

        Example:
            >>> with Store(":memory:") as store:
            ...     store.missing_references("k", "co_000000000000", {"serviceId": "sv_000000000000"})
            [{'field': 'serviceId', 'message': "service 'sv_000000000000' not found in this company"}]
        """
        with self._use:
            return self._missing_refs(tenant, company_id, fields)

    # -- writes kept together --------------------------------------------

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """Keep the writes made in this context in one transaction, committed once when it ends.

        A commit per write is most of what a write costs (the WAL pages are
        written out at each one); the batch server runs each batch's
        operations in a group, so that a batch commits once. Each write is
        still its own unit inside it (a savepoint): a write that fails undoes
        itself only. The group's end commits before the batch's answer is
        sent, so no one is told of a write that a crash could still lose.
        Requests outside the group commit what is open before they read or
        write, so they never see a write that is not yet kept. Raises
        ``WritesLost``, an ``sqlite3.OperationalError``, when the commit fails.

        Example:
            >>> with Store(":memory:") as store:
            ...     with store.group():
            ...         a = store.create("k", "company", {"name": "A"})
            ...         b = store.create("k", "company", {"name": "B"})
            ...     len(store.list_items("k", "company"))
            2
        """
        group = _Group(self)
        token = _GROUP.set(group)
        try:
            yield
        finally:
            _GROUP.reset(token)
            with self._lock:
                if self._held and self._held in group.generations:
                    try:
                        self._commit_held()
                    except sqlite3.Error as exc:
                        raise WritesLost() from exc
            if group.generations & self._lost:
                raise WritesLost()

    def _grouped(self) -> _Group | None:
        group = _GROUP.get()
        return group if group is not None and group.store is self else None

    def _hold(self, group: _Group) -> None:
        """Join the groups' open transaction, opening one if there is none (caller holds the lock)."""
        if self._held and time.monotonic() - self._held_since > _HOLD_LIMIT:
            # Other processes wait for the write lock this holds: let them in now and then.
            self._commit_held()
        if not self._held:
            self._conn.execute("BEGIN IMMEDIATE")
            self._generation += 1
            self._held, self._held_since = self._generation, time.monotonic()
            if self._handover is not None:
                self._handover.arm(self._held, self._held_since + _HOLD_LIMIT)
        group.generations.add(self._held)

    def _hand_over(self, generation: int) -> None:
        """Commit the groups' open transaction if it is still ``generation`` and no write is under way (from the handover thread)."""
        with self._lock:
            if self._closed or self._held != generation or self._depth:
                return
            # On an error the generation is lost: the groups that wrote in it raise WritesLost as they end.
            with contextlib.suppress(sqlite3.Error):
                self._commit_held()

    def _settle(self) -> None:
        """Commit the groups' open transaction before a request outside them reads or writes (caller holds the lock)."""
        if self._held and self._grouped() is None:
            self._commit_held()

    def _commit_held(self) -> None:
        generation, self._held = self._held, 0
        try:
            self._conn.execute("COMMIT")
        except BaseException:
            self._lost.add(generation)
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _lose_held(self) -> None:
        """The open transaction is gone (SQLite rolled it back after an error): its groups lost their writes."""
        if self._held:
            self._lost.add(self._held)
            self._held = 0

    # -- idempotency keys ------------------------------------------------

    def atomic(self) -> _Atomic:
        """One transaction around several writes: each write inside joins it, and they are kept or undone together.

        Example:
            >>> with Store(":memory:") as store:
            ...     with store.atomic():
            ...         a = store.create("k", "company", {"name": "A"})
            ...         b = store.create("k", "company", {"name": "B"})
            ...     len(store.list_items("k", "company"))
            2
        """
        return _Atomic(self)

    def find_key(self, tenant: str, key: str, *, now: float) -> KeyRecord | None:
        """The first answer kept for ``key``, or None if it has none (never used, or expired).

        Example:
            >>> with Store(":memory:") as store:
            ...     with store.atomic():
            ...         store.keep_key("k", "abc", "9f2c", 201, {"id": "co_1"}, [], now=0, ttl=60)
            ...     store.find_key("k", "abc", now=1).status, store.find_key("k", "abc", now=61)
            True
            (201, None)
        """
        with self._use:
            row = self._conn.execute(
                "SELECT fingerprint, status, body, headers FROM idempotency_keys WHERE tenant = ? AND key = ? AND expires > ? AND state = 'done'",
                (tenant, key, now),
            ).fetchone()
        if row is None:
            return None
        headers = [tuple(h) for h in json.loads(row[3])] if row[3] else []
        return KeyRecord(row[0], row[1], json.loads(row[2]) if row[2] is not None else None, headers)

    def keep_key(
        self,
        tenant: str,
        key: str,
        fingerprint: str,
        status: int,
        body: Any,
        headers: Sequence[tuple[str, str]],
        *,
        now: float,
        ttl: float,
    ) -> bool:
        """Keep the request's fingerprint and first answer under ``key`` for ``ttl`` seconds; False if the key holds one already.

        Call it inside :meth:`atomic`, after the request's writes: a crash
        keeps both or neither, and on False the caller undoes the writes
        (leaves the block with an exception) and answers what
        :meth:`find_key` holds. Looking after writing, in one statement,
        saves a query on every first request; repeats are the rare case.
        """
        with self._use:
            if now - self._purged >= _PURGE_EVERY:
                # Expired keys are replaced below anyway; this only keeps the table small.
                self._conn.execute("DELETE FROM idempotency_keys WHERE expires <= ?", (now,))
                self._purged = now
            cursor = self._conn.execute(
                "INSERT INTO idempotency_keys (tenant, key, fingerprint, state, status, body, headers, started, expires)"
                " VALUES (?, ?, ?, 'done', ?, ?, ?, ?, ?)"
                " ON CONFLICT (tenant, key) DO UPDATE SET fingerprint = excluded.fingerprint, state = 'done',"
                " status = excluded.status, body = excluded.body, headers = excluded.headers,"
                " started = excluded.started, expires = excluded.expires"
                " WHERE idempotency_keys.expires <= excluded.started OR idempotency_keys.state != 'done'",
                (
                    tenant,
                    key,
                    fingerprint,
                    status,
                    None if body is None else _dumps(body),
                    _dumps([list(h) for h in headers]),
                    now,
                    now + ttl,
                ),
            )
            return cursor.rowcount == 1

    # -- internals (caller holds the lock) -------------------------------

    def _write(self) -> _Transaction:
        return _Transaction(self)

    @staticmethod
    def _check_parent(spec: _Spec, company_id: str | None) -> None:
        if spec.child and company_id is None:
            raise BatchValidationError([Problem("company_id", f"a {spec.kind} belongs to a company: give its id")])

    @staticmethod
    def _item_where(spec: _Spec, tenant: str, item_id: str, company_id: str | None) -> tuple[str, list[Any]]:
        if spec.child:
            return "id = ? AND tenant = ? AND company_id = ?", [item_id, tenant, company_id]
        return "id = ? AND tenant = ?", [item_id, tenant]

    def _company_exists(self, tenant: str, company_id: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM companies WHERE id = ? AND tenant = ?", (company_id, tenant)).fetchone()
        return row is not None

    def _insert(self, spec: _Spec, sql: str, head: list[Any], values: list[Any]) -> str:
        for attempt in range(5):
            item_id = f"{spec.prefix}_{_id_suffix()}"
            try:
                self._conn.execute(sql, [item_id, *head, *values])
                return item_id
            except sqlite3.IntegrityError as exc:
                # Only an id collision (24 random bits within a millisecond) is worth another try.
                if "UNIQUE" not in str(exc) or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _set_staff_services(self, staff_id: str, services: Sequence[Mapping[str, str]]) -> list[str]:
        """Link the staff member to ``services`` (first mention of each, in order); the ids linked."""
        seen: set[str] = set()
        rows: list[tuple[str, str, int]] = []
        for ref in services:
            service_id = ref["id"]
            if service_id not in seen:
                seen.add(service_id)
                rows.append((staff_id, service_id, len(rows)))
        if rows:
            self._conn.executemany("INSERT INTO staff_services (staff_id, service_id, position) VALUES (?, ?, ?)", rows)
        return [service_id for _staff, service_id, _pos in rows]

    def _missing_refs(self, tenant: str, company_id: str | None, fields: Mapping[str, Any]) -> list[dict[str, str]]:
        details: list[dict[str, str]] = []
        # ``None`` entries stand for list items the caller already reported
        # as malformed; they keep the indexes of the others right.
        ids = [ref["id"] if ref else None for ref in fields.get("services") or ()]
        wanted = {service_id for service_id in ids if service_id is not None}
        if wanted:
            marks = ", ".join("?" * len(wanted))
            found = {
                row[0]
                for row in self._conn.execute(
                    f"SELECT id FROM services WHERE tenant = ? AND company_id = ? AND id IN ({marks})",
                    [tenant, company_id, *wanted],
                )
            }
            for index, service_id in enumerate(ids):
                if service_id is not None and service_id not in found:
                    details.append(
                        {
                            "field": f"services[{index}].id",
                            "message": f"service '{service_id}' not found in this company",
                        }
                    )
        for api, table, noun in (("serviceId", "services", "service"), ("staffId", "staff", "staff member")):
            ref_id = fields.get(api)
            if ref_id is None:
                continue
            row = self._conn.execute(
                f"SELECT 1 FROM {table} WHERE id = ? AND tenant = ? AND company_id = ?",
                (ref_id, tenant, company_id),
            ).fetchone()
            if row is None:
                details.append({"field": api, "message": f"{noun} '{ref_id}' not found in this company"})
        return details

    def _raise_missing_refs(self, tenant: str, company_id: str | None, fields: Mapping[str, Any]) -> None:
        details = self._missing_refs(tenant, company_id, fields)
        if details:
            raise InvalidReference(details)

    def _get(self, spec: _Spec, tenant: str, item_id: str, company_id: str | None) -> dict[str, Any] | None:
        where, params = self._item_where(spec, tenant, item_id, company_id)
        row = self._conn.execute(f"SELECT {spec.select_list} FROM {spec.table} WHERE {where}", params).fetchone()
        if row is None:
            return None
        item = self._decode(spec, row)
        if spec.kind == "staff":
            item["services"] = [
                {"id": service_id}
                for (service_id,) in self._conn.execute(
                    "SELECT service_id FROM staff_services WHERE staff_id = ? ORDER BY position", (item_id,)
                )
            ]
        return item

    @staticmethod
    def _decode(spec: _Spec, row: Sequence[Any]) -> dict[str, Any]:
        item: dict[str, Any] = {"id": row[0]}
        offset = 1
        if spec.child:
            item["companyId"] = row[1]
            offset = 2
        for index, (api, _col) in enumerate(spec.columns, start=offset):
            value = row[index]
            if value is not None and api in spec.json_fields:
                value = json.loads(value)
            item[api] = value
        return item


@dataclass(frozen=True)
class KeyRecord:
    """What an idempotency key holds: the request's fingerprint and its first answer.

    >>> KeyRecord("9f2c…", 201, {"id": "co_1"}, [("location", "/companies/co_1")]).status
    201
    """

    fingerprint: str
    status: int
    body: Any
    headers: list[tuple[str, str]]


class _Atomic:
    """The store's lock and one transaction, held across several writes."""

    __slots__ = ("_store", "_tx")

    def __init__(self, store: Store) -> None:
        self._store = store
        self._tx = _Transaction(store)

    def __enter__(self) -> None:
        self._store._lock.acquire()
        try:
            self._tx.__enter__()
        except BaseException:
            self._store._lock.release()
            raise

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self._tx.__exit__(exc_type, exc, tb)
        finally:
            self._store._lock.release()


class _Checkpointer:
    """Copies the WAL back into the database file from a thread of its own, every ``interval`` seconds.

    SQLite's own checkpoints run inside whichever commit crosses 1,000 WAL
    pages, and end with an fsync: that commit, and the event loop that made
    it, would wait for the disk. Here writers only append to the WAL
    (``synchronous = NORMAL``: a commit survives a killed process), and this
    thread, on its own connection, moves pages over and syncs them while the
    server goes on. PASSIVE: it never blocks a reader or a writer, and
    another process's checkpointer (``serve --workers``) may skip a turn.
    """

    #: seconds between checkpoints.
    INTERVAL = 0.25

    def __init__(self, path: str) -> None:
        self._path = path
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batchnb-store-checkpoint", daemon=True)

    @classmethod
    def start(cls, path: str, conn: sqlite3.Connection) -> _Checkpointer | None:
        """Take checkpoints over from ``conn``'s commits, for a database in a WAL file; None for one in memory."""
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        if mode != "wal":
            return None
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        # After a checkpoint resets it, the WAL file is cut back to this size.
        conn.execute(f"PRAGMA journal_size_limit = {64 * 1024 * 1024}")
        checkpointer = cls(path)
        checkpointer._thread.start()
        return checkpointer

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 1000")
            while not self._stopped.wait(self.INTERVAL):
                with contextlib.suppress(sqlite3.Error):  # busy or locked: the next turn tries again
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop, after the turn under way; the last connection to close checkpoints what is left."""
        self._stopped.set()
        self._thread.join(10)


class _Handover:
    """Commits the groups' open transaction once it has held the write lock for ``_HOLD_LIMIT``, from a thread of its own.

    A group commits on the way when it writes past the limit, and when it
    ends; between two writes a batch may do other work for seconds (fill in
    references, wait for a slow operation) while other processes on the same
    file wait for the write lock and then fail with "database is locked".
    This thread hands the lock on in time whatever the batch is doing: the
    group's next write opens a new transaction.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cond = threading.Condition()
        #: (generation, when it is due) of the transaction to hand on, if any.
        self._armed: tuple[int, float] | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="batchnb-store-handover", daemon=True)

    @classmethod
    def start(cls, store: Store) -> _Handover:
        handover = cls(store)
        handover._thread.start()
        return handover

    def arm(self, generation: int, due: float) -> None:
        """Hand ``generation`` on at ``due`` (``time.monotonic()``), unless it has ended by then."""
        with self._cond:
            self._armed = (generation, due)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (self._armed is None or self._armed[1] > time.monotonic()):
                    self._cond.wait(None if self._armed is None else self._armed[1] - time.monotonic())
                if self._stopped or self._armed is None:
                    return
                generation, _due = self._armed
                self._armed = None
            # Never while holding the condition: arm() is called with the store's lock held.
            self._store._hand_over(generation)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(10)


class _Transaction:
    """One write: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back if the block raises.

    Inside a write already open (``Store.atomic``), it joins that one: the
    outer block commits or rolls back everything together. (A single
    statement that fails undoes itself; SQLite keeps the transaction.)
    Inside :meth:`Store.group` it is a savepoint in the group's transaction:
    released on success, rolled back to on failure.
    """

    __slots__ = ("_mode", "_store")

    def __init__(self, store: Store) -> None:
        self._store = store
        self._mode = _JOINED

    def __enter__(self) -> None:
        store = self._store
        if store._depth:
            self._mode = _JOINED
        else:
            group = store._grouped()
            if group is not None:
                store._hold(group)
                store._conn.execute("SAVEPOINT batchnb_write")
                self._mode = _SAVEPOINT
            else:
                store._settle()
                # IMMEDIATE takes the write lock up front, so a second process cannot
                # make this transaction fail half-way with SQLITE_BUSY on upgrade.
                store._conn.execute("BEGIN IMMEDIATE")
                self._mode = _OWN
        store._depth += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        store = self._store
        store._depth -= 1
        conn = store._conn
        if self._mode == _JOINED:
            return
        if self._mode == _SAVEPOINT:
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back (an I/O error, a full disk).
                store._lose_held()
                if exc_type is None:
                    raise WritesLost()
                return
            if exc_type is not None:
                conn.execute("ROLLBACK TO batchnb_write")
            conn.execute("RELEASE batchnb_write")
            return
        if exc_type is None:
            try:
                conn.execute("COMMIT")
                return
            except BaseException:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        # SQLite rolls back by itself after some errors; a second ROLLBACK
        # would fail and hide the original exception.
        if self._store._conn.in_transaction:
            self._store._conn.execute("ROLLBACK")


_JOINED, _SAVEPOINT, _OWN = 0, 1, 2

#: seconds the groups' transaction may hold the write lock before a write commits it.
_HOLD_LIMIT = 0.05


class WritesLost(sqlite3.OperationalError):
    """The transaction that held a group's writes could not be committed: they are not kept.

    >>> str(WritesLost())
    'the writes of this group could not be committed and are not kept'
    """

    def __init__(self) -> None:
        super().__init__("the writes of this group could not be committed and are not kept")


@dataclass(eq=False)
class _Group:
    """One :meth:`Store.group`: the generations of the groups' transaction its writes went into."""

    store: Store
    generations: set[int] = field(default_factory=set)


_GROUP: ContextVar[_Group | None] = ContextVar("batchnb_store_group", default=None)


class _Use:
    """The store's lock, and a commit of what groups hold open when the caller is not in one of them."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    def __enter__(self) -> None:
        store = self._store
        store._lock.acquire()
        try:
            if store._held and not store._depth:
                store._settle()
        except BaseException:
            store._lock.release()
            raise

    def __exit__(self, *exc: Any) -> None:
        self._store._lock.release()
